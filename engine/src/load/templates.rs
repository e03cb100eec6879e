//! Templates in a workflow: the values they see, rendering them in place, and warnings
//! about params put into commands or SQL unquoted.

use super::Loader;
use crate::diag::Diagnostic;
use crate::template::{Renderer, TemplateVars};
use crate::yaml::{Node, NodeKind, Pos};

impl Loader<'_, '_> {
    /// What templates see: the params (overrides applied) and the load's options.
    pub(super) fn template_vars(
        &self,
        params: &std::collections::BTreeMap<String, String>,
    ) -> TemplateVars {
        TemplateVars {
            params: params.clone(),
            run_id: self.opts.run_id.clone(),
            date: self.opts.date.clone(),
            scheduled_at: self.opts.scheduled_at.clone().unwrap_or_else(|| {
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            trigger_files: self.opts.trigger_files.clone(),
            env: self.opts.env.clone(),
        }
    }

    /// Renders every template in `node` (a task's kind-specific config, `channels:`), in
    /// place. `whose` names it in errors (`task `load``); `field` is the name of the
    /// nearest enclosing key.
    pub(super) fn render(
        &mut self,
        node: &mut Node,
        renderer: &Renderer,
        whose: &str,
        field: Option<&str>,
    ) {
        match &mut node.kind {
            NodeKind::Scalar { value, plain } => {
                if let Some(field @ ("command" | "sql")) = field {
                    self.warn_unquoted(value, node.pos, field, whose);
                }
                for var in crate::template::output_vars(value) {
                    self.reads.push((var, node.pos));
                }
                match renderer.render(value) {
                    // A template must be quoted in YAML (`{` starts a mapping), but what it
                    // renders to is typed like a plain scalar: `"{{ params.n }}"` can be a
                    // number.
                    Ok(std::borrow::Cow::Owned(v)) => {
                        *value = v;
                        *plain = true;
                    }
                    Ok(std::borrow::Cow::Borrowed(_)) => {}
                    Err(errors) => {
                        for e in errors {
                            self.errs.push(
                                Diagnostic::new(
                                    Some(node.pos),
                                    format!("{} in {whose}", e.message),
                                )
                                .maybe_help(e.help),
                            );
                        }
                    }
                }
            }
            NodeKind::Seq(items) => {
                for item in items {
                    self.render(item, renderer, whose, field);
                }
            }
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    let key = k.as_str().map(str::to_string);
                    self.render(v, renderer, whose, key.as_deref());
                }
            }
        }
    }

    /// Warns when a param goes into a shell command or SQL without a quoting filter:
    /// `--param` values are user input, and unquoted they can change the command.
    pub(super) fn warn_unquoted(&mut self, text: &str, pos: Pos, field: &str, whose: &str) {
        let (what, filter) = match field {
            "command" => ("shell command", "shell_quote"),
            _ => ("SQL", "sql_string"),
        };
        for input in crate::template::unquoted_inputs(text) {
            let warning = match input.strip_prefix("params.") {
                Some(name) => Diagnostic::new(
                    Some(pos),
                    format!(
                        "param `{name}` is put into the {what} of {whose} unquoted: a value with spaces, quotes or `;` would change the {what}"
                    ),
                )
                .maybe_help(Some(format!("quote it: {{{{ params.{name} | {filter} }}}}"))),
                None => Diagnostic::new(
                    Some(pos),
                    format!(
                        "`trigger.files` is put into the {what} of {whose} unquoted: whoever names a file in the watched directory (`x;rm -rf ~;.csv`) would change the {what}"
                    ),
                )
                .maybe_help(Some(format!(
                    "quote each file: {{{{ trigger.files | {filter} }}}}"
                ))),
            };
            self.warns.push(warning);
        }
    }
}
