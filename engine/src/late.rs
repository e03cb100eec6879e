//! Task fields that read upstream outputs: `{{ tasks.publish.outputs.inserted }}`.
//!
//! Such a task is checked when the workflow loads, with each upstream output standing in
//! as `0` (so a bad field or unknown variable is still a validation error with its
//! line), and the loader checks that every task it reads from is upstream of it. Its
//! config is kept as written in a [`Late`]; when the task starts, the executor renders
//! it with the outputs its upstream tasks recorded (in this execution, or kept from an
//! earlier one by `rerun`) and builds the task again. A problem then (an output the
//! upstream task did not set, a rendered value the kind refuses) fails the attempt with
//! a message naming the task and the output.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::task::{BuildContext, BuildError, Outputs, Task, TaskKind};
use crate::template::{Renderer, TemplateError, TemplateVars};
use crate::yaml::{Node, NodeKind};

/// A task's config whose templates read upstream outputs, to be rendered when it starts.
pub struct Late {
    /// The kind's fields as written (no template rendered).
    config: Node,
    vars: TemplateVars,
    kind: Arc<dyn TaskKind>,
    ctx: BuildContext,
    /// The upstream tasks whose outputs the templates read, without repeats.
    pub reads: Vec<String>,
}

impl fmt::Debug for Late {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Late")
            .field("task", &self.ctx.task_id)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

impl Late {
    pub fn new(
        config: Node,
        vars: TemplateVars,
        kind: Arc<dyn TaskKind>,
        ctx: BuildContext,
        mut reads: Vec<String>,
    ) -> Late {
        reads.sort();
        reads.dedup();
        Late {
            config,
            vars,
            kind,
            ctx,
            reads,
        }
    }

    /// The task, its fields rendered with `outputs` (by upstream task id: those of
    /// [`Late::reads`] that succeeded). The error is the attempt's failure message.
    pub fn build(&self, outputs: BTreeMap<String, Outputs>) -> Result<Arc<dyn Task>, String> {
        let id = &self.ctx.task_id;
        let renderer = Renderer::with_outputs(&self.vars, outputs);
        let mut config = self.config.clone();
        let mut errors = Vec::new();
        render(&mut config, &renderer, &mut errors);
        if !errors.is_empty() {
            let lines: Vec<String> = errors
                .into_iter()
                .map(|e| match e.help {
                    Some(h) => format!("{} (help: {h})", e.message),
                    None => e.message,
                })
                .collect();
            return Err(format!(
                "task `{id}`: cannot fill in upstream outputs: {}",
                lines.join("; ")
            ));
        }
        self.kind.build(&config, &self.ctx).map_err(|e| {
            let (message, help) = match e {
                BuildError::Config(e) => (
                    match e.key {
                        Some(key) => format!("invalid `{key}`: {}", e.message),
                        None => e.message,
                    },
                    None,
                ),
                BuildError::Invalid(i) => (i.message, i.help),
                BuildError::Problems(ps) => (
                    ps.iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                    ps.into_iter().find_map(|p| p.help),
                ),
            };
            let help = help.map(|h| format!(" (help: {h})")).unwrap_or_default();
            format!("task `{id}`: with upstream outputs filled in, its config is invalid: {message}{help}")
        })
    }
}

/// Renders every scalar of `node` in place, as the loader does: a rendered template is
/// typed like a plain scalar (`"{{ tasks.a.outputs.n }}"` can be a number).
fn render(node: &mut Node, renderer: &Renderer, errors: &mut Vec<TemplateError>) {
    match &mut node.kind {
        NodeKind::Scalar { value, plain } => match renderer.render(value) {
            Ok(std::borrow::Cow::Owned(v)) => {
                *value = v;
                *plain = true;
            }
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Err(e) => errors.extend(e),
        },
        NodeKind::Seq(items) => {
            for item in items {
                render(item, renderer, errors);
            }
        }
        NodeKind::Map(entries) => {
            for (_, v) in entries {
                render(v, renderer, errors);
            }
        }
    }
}
