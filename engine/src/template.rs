//! `{{ ... }}` templates in task configs, and masking of secrets.
//!
//! Templates are rendered once per run (and per rerun) when the workflow is loaded, with
//! `params`, `run.id`, `run.date` and `env` in scope. Before rendering, every variable a
//! template refers to is checked against that context, so an unknown variable is a
//! validation error naming the variable — never an empty string.
//!
//! A task's field may also read what an upstream task produced:
//! `{{ tasks.publish.outputs.inserted }}`. Those values exist only once the upstream task
//! has run, so such a field is rendered twice: at load with each reference standing in
//! as `0` (to check the rest of the config, [`Renderer::for_task_config`]), and when the
//! task starts with the real outputs ([`Renderer::with_outputs`], see [`crate::late`]).
//!
//! Rendering is bounded: a template gets [`FUEL`] steps (nine nested loops over a short
//! string used to run for minutes and take gigabytes). Two filters quote values for the
//! places they are interpolated into: `shell_quote` (a POSIX shell word) and `sql_string`
//! (a SQL string literal); `--param` values are user input, and unquoted they can inject
//! commands or SQL.

use std::borrow::Cow;
use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};

/// What templates can see.
#[derive(Debug, Clone)]
pub struct TemplateVars {
    pub params: BTreeMap<String, String>,
    pub run_id: String,
    /// Logical date, `YYYY-MM-DD`.
    pub date: String,
    /// The fire instant of a scheduled run, RFC 3339 (a manual run: when it was loaded).
    pub scheduled_at: String,
    /// The files that started a file-triggered run (`{{ trigger.files }}`); else empty.
    pub trigger_files: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl TemplateVars {
    /// Variables for a run: the process environment, the given run id and date.
    pub fn for_run(params: BTreeMap<String, String>, run_id: &str, date: &str) -> Self {
        TemplateVars {
            params,
            run_id: run_id.into(),
            date: date.into(),
            scheduled_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            trigger_files: Vec::new(),
            env: std::env::vars().collect(),
        }
    }
}

/// A template problem: message and an optional "did you mean" hint.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub message: String,
    pub help: Option<String>,
}

pub struct Renderer<'a> {
    env: Environment<'static>,
    vars: &'a TemplateVars,
    ctx: minijinja::Value,
    outputs: TaskOutputs,
}

/// A task's outputs (the engine's `task::Outputs`, named here without importing the
/// plugin boundary, which imports this module).
type Outputs = serde_json::Map<String, serde_json::Value>;

/// What `{{ tasks.ID.outputs.NAME }}` renders to.
enum TaskOutputs {
    /// Nothing: `tasks` is unknown (`channels:`, or anything not a task's field).
    None,
    /// At load, in a task's field: each reference stands in as `0`.
    StandIn,
    /// When the task starts: the upstream tasks' outputs, by task id.
    Values(BTreeMap<String, Outputs>),
}

/// The stand-in for an upstream output while the workflow loads: a number, so that a
/// template doing arithmetic or `| int` checks, and text filters take it too.
const STAND_IN: i64 = 0;

/// A reference to an upstream task's outputs in a template: `tasks.ID.outputs.NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef {
    /// The upstream task's id.
    pub task: String,
    /// The output's name; `None` for `tasks.ID.outputs` (all of them).
    pub name: Option<String>,
    /// Keys read inside the output's value (`tasks.ID.outputs.NAME.a.b`: `a`, `b`).
    pub path: Vec<String>,
}

impl OutputRef {
    /// Reads a variable path (`tasks.publish.outputs.inserted`); an error says how to
    /// write one when it is not of that shape.
    pub fn parse(var: &str) -> Result<OutputRef, TemplateError> {
        let parts: Vec<&str> = var.split('.').collect();
        match parts.as_slice() {
            ["tasks", task, "outputs", rest @ ..] => Ok(OutputRef {
                task: task.to_string(),
                name: rest.first().map(|s| s.to_string()),
                path: rest.iter().skip(1).map(|s| s.to_string()).collect(),
            }),
            _ => Err(TemplateError {
                message: format!("template variable `{var}` does not name an upstream output"),
                help: Some(
                    "a task's fields can read an upstream task's outputs as `tasks.ID.outputs.NAME` (a task id with `-` cannot be written there: name the task with `_`)"
                        .into(),
                ),
            }),
        }
    }
}

/// Makes `slot` hold `path`, ending in the stand-in: `outputs.rows.count` stands in as
/// `{rows: {count: 0}}`.
fn stand_in(slot: &mut serde_json::Value, path: &[String]) {
    let Some((key, rest)) = path.split_first() else {
        return;
    };
    if !slot.is_object() {
        *slot = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(map) = slot {
        stand_in(map.entry(key.clone()).or_insert(STAND_IN.into()), rest);
    }
}

/// `text` cut to 80 characters, for a value quoted in a message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The `tasks.…` variables `text` refers to, if it is a template that parses (a
/// syntax error is reported by [`Renderer::render`]).
pub fn output_vars(text: &str) -> Vec<String> {
    if !text.contains("tasks") || !(text.contains("{{") || text.contains("{%")) {
        return Vec::new();
    }
    let env = Environment::new();
    let Ok(tmpl) = env.template_from_str(text) else {
        return Vec::new();
    };
    let mut vars: Vec<String> = tmpl
        .undeclared_variables(true)
        .into_iter()
        .filter(|v| v == "tasks" || v.starts_with("tasks."))
        .collect();
    vars.sort();
    vars
}

/// Steps (minijinja "fuel") one template may take. A field rendering a few variables
/// takes tens; loops over lists of hundreds of items take thousands.
pub const FUEL: u64 = 1_000_000;

/// Untrusted values interpolated into `text` without a quoting filter as the expression's
/// last step: `params.NAME` (`--param` values are user input) and `trigger.files` (file
/// names are chosen by whoever writes into the watched directory). `{{ params.x }}` is
/// reported, `{{ params.x | shell_quote }}` is not.
pub fn unquoted_inputs(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let expr = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let last_filter = expr.rsplit('|').next().unwrap_or("").trim();
        let quoted = expr.contains('|') && matches!(last_filter, "shell_quote" | "sql_string");
        if !quoted {
            let mut s = expr;
            while let Some(i) = s.find("params.") {
                let name: String = s[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                let input = format!("params.{name}");
                if !name.is_empty() && !found.contains(&input) {
                    found.push(input);
                }
                s = &s[i + 7 + name.len()..];
            }
            if expr.contains("trigger") && !found.iter().any(|f| f == "trigger.files") {
                found.push("trigger.files".to_string());
            }
        }
        rest = &after[end + 2..];
    }
    found
}

/// A value as a word for the shell: a string in single quotes; a list (`trigger.files`)
/// as one quoted word per item, separated by spaces.
fn shell_quote_value(value: minijinja::Value) -> String {
    quote_each(value, shell_quote, " ")
}

/// A value as SQL: a string literal; a list as literals separated by commas (for `IN`).
fn sql_string_value(value: minijinja::Value) -> String {
    quote_each(value, sql_string, ", ")
}

/// `quote` applied to a string, or to each item of a list, joined by `sep`.
fn quote_each(value: minijinja::Value, quote: fn(&str) -> String, sep: &str) -> String {
    match value.try_iter() {
        Ok(items) if value.as_str().is_none() => items
            .map(|v| quote(&v.to_string()))
            .collect::<Vec<_>>()
            .join(sep),
        _ => quote(&value.to_string()),
    }
}

/// `value` as one POSIX shell word: in single quotes, each `'` written `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// `{{ run.date | add_days(-45) }}`: a `YYYY-MM-DD` date moved by `days`.
fn add_days(date: String, days: i64) -> Result<String, minijinja::Error> {
    let bad = |why: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why);
    let d = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map_err(|_| bad(format!("add_days: `{date}` is not a date like 2026-01-31")))?;
    d.checked_add_signed(chrono::Duration::try_days(days).unwrap_or(chrono::Duration::MAX))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| {
            bad(format!(
                "add_days: {date} moved by {days} days is out of range"
            ))
        })
}

/// `value` as a SQL string literal: in single quotes, each `'` doubled.
pub fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl<'a> Renderer<'a> {
    pub fn new(vars: &'a TemplateVars) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(FUEL));
        env.add_filter("shell_quote", shell_quote_value);
        env.add_filter("sql_string", sql_string_value);
        env.add_filter("add_days", add_days);
        let ctx = minijinja::context! {
            params => vars.params.clone(),
            run => minijinja::context! {
                id => vars.run_id.clone(),
                date => vars.date.clone(),
                scheduled_at => vars.scheduled_at.clone(),
            },
            trigger => minijinja::context! { files => vars.trigger_files.clone() },
            env => vars.env.clone(),
        };
        Renderer {
            env,
            vars,
            ctx,
            outputs: TaskOutputs::None,
        }
    }

    /// A renderer for a task's fields at load: upstream outputs stand in as `0`.
    pub fn for_task_config(vars: &'a TemplateVars) -> Self {
        Renderer {
            outputs: TaskOutputs::StandIn,
            ..Renderer::new(vars)
        }
    }

    /// A renderer for a task's fields when it starts: `tasks.ID.outputs` are `outputs`'
    /// (the upstream tasks that succeeded).
    pub fn with_outputs(vars: &'a TemplateVars, outputs: BTreeMap<String, Outputs>) -> Self {
        Renderer {
            outputs: TaskOutputs::Values(outputs),
            ..Renderer::new(vars)
        }
    }

    /// What the templates see.
    pub fn vars(&self) -> &TemplateVars {
        self.vars
    }

    /// The context for a template that refers to `refs`: `self.ctx`, plus `tasks` when
    /// this renderer has outputs to give. Errors: a reference not of the right shape, or
    /// (when the task starts) an output its task did not produce.
    fn context_for(&self, refs: &[String]) -> Result<minijinja::Value, Vec<TemplateError>> {
        if refs.is_empty() {
            return Ok(self.ctx.clone());
        }
        let mut errors = Vec::new();
        // At load, the stand-ins for what `refs` read.
        let mut stand_ins: BTreeMap<String, Outputs> = BTreeMap::new();
        for var in refs {
            let r = match OutputRef::parse(var) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match &self.outputs {
                TaskOutputs::None => {}
                TaskOutputs::StandIn => {
                    let entry = stand_ins.entry(r.task).or_default();
                    if let Some(name) = r.name {
                        stand_in(entry.entry(name).or_insert(STAND_IN.into()), &r.path);
                    }
                }
                TaskOutputs::Values(values) => match (values.get(&r.task), &r.name) {
                    (None, _) => errors.push(TemplateError {
                        message: format!(
                            "`{var}`: task `{}` has no outputs in this run (it did not succeed)",
                            r.task
                        ),
                        help: Some(format!(
                            "read outputs only of tasks this one runs after when they succeed (its `trigger:` lets it run after `{}` did not)",
                            r.task
                        )),
                    }),
                    (Some(outputs), Some(name)) if !outputs.contains_key(name) => {
                        let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
                        errors.push(TemplateError {
                            message: format!("`{var}`: task `{}` has no output `{name}`", r.task),
                            help: Some(
                                match crate::suggest::closest(name, names.iter().copied()) {
                                    Some(s) => format!("did you mean `tasks.{}.outputs.{s}`?", r.task),
                                    None if names.is_empty() => format!("task `{}` set no outputs", r.task),
                                    None => format!("its outputs: {}", names.join(", ")),
                                },
                            ),
                        })
                    }
                    (Some(outputs), name) => {
                        // A key read inside a value must be there too.
                        let mut value = name.as_ref().and_then(|n| outputs.get(n));
                        let mut walked = format!("tasks.{}.outputs.{}", r.task, name.as_deref().unwrap_or(""));
                        for key in &r.path {
                            let next = value.and_then(|v| v.get(key));
                            if next.is_none() {
                                errors.push(TemplateError {
                                    message: format!("`{var}`: `{walked}` has no `{key}`"),
                                    help: value.map(|v| format!("`{walked}` is {}", shorten(&v.to_string()))),
                                });
                                break;
                            }
                            walked = format!("{walked}.{key}");
                            value = next;
                        }
                    }
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let outputs = match &self.outputs {
            TaskOutputs::Values(values) => values,
            _ => &stand_ins,
        };
        let tasks: BTreeMap<&str, BTreeMap<&str, &Outputs>> = outputs
            .iter()
            .map(|(id, o)| (id.as_str(), BTreeMap::from([("outputs", o)])))
            .collect();
        Ok(minijinja::context! { tasks => tasks, ..self.ctx.clone() })
    }

    /// Renders `text` if it holds template syntax; otherwise returns it as is. Every
    /// unknown variable is reported, each with its own suggestion.
    pub fn render<'t>(&self, text: &'t str) -> Result<Cow<'t, str>, Vec<TemplateError>> {
        if !(text.contains("{{") || text.contains("{%") || text.contains("{#")) {
            return Ok(Cow::Borrowed(text));
        }
        let tmpl = self.env.template_from_str(text).map_err(|e| {
            vec![TemplateError {
                message: format!("template syntax error: {}", detail(&e)),
                help: Some(
                    "templates use `{{ name }}`; write `{% raw %}{{{% endraw %}` for a literal `{{`"
                        .into(),
                ),
            }]
        })?;
        let (mut refs, mut unknown): (Vec<String>, Vec<String>) = tmpl
            .undeclared_variables(true)
            .into_iter()
            .filter(|v| !self.is_known(v))
            .partition(|v| {
                !matches!(self.outputs, TaskOutputs::None)
                    && (v == "tasks" || v.starts_with("tasks."))
            });
        unknown.sort();
        if !unknown.is_empty() {
            return Err(unknown.iter().map(|v| self.unknown_variable(v)).collect());
        }
        refs.sort();
        let ctx = self.context_for(&refs)?;
        tmpl.render(&ctx).map(Cow::Owned).map_err(|e| {
            vec![if e.kind() == minijinja::ErrorKind::OutOfFuel {
                TemplateError {
                    message: format!(
                        "template takes more than {FUEL} steps to render (loops nested too deep?)"
                    ),
                    help: Some("simplify the template; templates are for filling in values".into()),
                }
            } else {
                TemplateError {
                    message: format!("template error: {}", detail(&e)),
                    help: None,
                }
            }]
        })
    }

    fn is_known(&self, var: &str) -> bool {
        let (root, rest) = match var.split_once('.') {
            Some((r, rest)) => (r, Some(rest)),
            None => (var, None),
        };
        let first = rest.map(|r| r.split('.').next().unwrap_or(r));
        match (root, first) {
            ("params" | "run" | "env" | "trigger", None) => true,
            ("trigger", Some(k)) => k == "files",
            ("params", Some(k)) => self.vars.params.contains_key(k),
            ("run", Some(k)) => matches!(k, "id" | "date" | "scheduled_at"),
            ("env", Some(k)) => self.vars.env.contains_key(k),
            _ => false,
        }
    }

    fn unknown_variable(&self, var: &str) -> TemplateError {
        let (root, key) = var.split_once('.').unwrap_or((var, ""));
        let key = key.split('.').next().unwrap_or(key);
        let (message, candidates): (String, Vec<String>) = match root {
            "params" => (
                format!("unknown template variable `{var}`"),
                self.vars
                    .params
                    .keys()
                    .map(|k| format!("params.{k}"))
                    .collect(),
            ),
            "run" => (
                format!("unknown template variable `{var}`"),
                vec![
                    "run.id".into(),
                    "run.date".into(),
                    "run.scheduled_at".into(),
                ],
            ),
            "tasks" => {
                return TemplateError {
                    message: format!("unknown template variable `{var}`"),
                    help: Some(
                        "upstream outputs (`tasks.ID.outputs.NAME`) can be read only in a task's fields"
                            .into(),
                    ),
                }
            }
            "env" => {
                return TemplateError {
                    message: format!(
                        "environment variable `{key}` is not set (template variable `{var}`)"
                    ),
                    help: Some(format!("set it (`export {key}=...`) before running")),
                }
            }
            _ => (
                format!("unknown template variable `{var}`"),
                self.vars
                    .params
                    .keys()
                    .map(|k| format!("params.{k}"))
                    .chain([
                        "run.id".into(),
                        "run.date".into(),
                        "run.scheduled_at".into(),
                        "trigger.files".into(),
                    ])
                    .collect(),
            ),
        };
        let help = crate::suggest::closest(var, candidates.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| {
                Some("templates can use params.NAME (declared under `params:`), run.id, run.date, run.scheduled_at, trigger.files and env.NAME".into())
            });
        let help = match (root, help) {
            ("params", Some(h)) => Some(format!("no param `{key}` is declared; {h}")),
            (_, h) => h,
        };
        TemplateError { message, help }
    }
}

fn detail(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{d} ({})", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Masks the values of secret-looking environment variables.
///
/// A variable is secret when its name contains KEY, SECRET, TOKEN, PASSWORD or WEBHOOK
/// (any case). Values shorter than [`Redactor::MIN_LEN`] are not masked: they would
/// mangle ordinary output and are not credentials anyway.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub const MIN_LEN: usize = 4;

    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(name, value)| is_secret_name(name) && value.len() >= Self::MIN_LEN)
            .map(|(_, value)| value)
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// This redactor, also masking `extra` (a channel's URL and secret, say).
    pub fn with(mut self, extra: impl IntoIterator<Item = String>) -> Self {
        self.secrets
            .extend(extra.into_iter().filter(|s| s.len() >= Self::MIN_LEN));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets.dedup();
        self
    }

    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        out
    }
}

pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "SECRET", "TOKEN", "PASSWORD", "WEBHOOK"]
        .iter()
        .any(|w| upper.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        TemplateVars {
            params: [("greeting".to_string(), "hello".to_string())].into(),
            run_id: "r1".into(),
            date: "2026-01-02".into(),
            scheduled_at: "2026-01-02T22:00:00Z".into(),
            trigger_files: vec!["/land/a.csv".into()],
            env: [("HOME".to_string(), "/root".to_string())].into(),
        }
    }

    #[test]
    fn renders_known_variables() {
        let v = vars();
        let r = Renderer::new(&v);
        assert_eq!(
            r.render("{{ params.greeting }} {{ run.id }} {{ run.date }} {{ env.HOME }}\n")
                .unwrap(),
            "hello r1 2026-01-02 /root\n"
        );
        assert_eq!(
            r.render("{{ trigger.files | join(' ') }}").unwrap(),
            "/land/a.csv"
        );
        assert!(matches!(r.render("plain"), Ok(Cow::Borrowed("plain"))));
    }

    /// The only error of a render that must fail with one.
    fn one_error(r: &Renderer, text: &str) -> TemplateError {
        let mut errs = r.render(text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.remove(0)
    }

    #[test]
    fn unknown_variables_are_errors_with_suggestions() {
        let v = vars();
        let r = Renderer::new(&v);
        let e = one_error(&r, "{{ params.greting }}");
        assert_eq!(e.message, "unknown template variable `params.greting`");
        assert_eq!(
            e.help.as_deref(),
            Some("no param `greting` is declared; did you mean `params.greeting`?")
        );
        let e = one_error(&r, "{{ parms.greeting }}");
        assert_eq!(e.help.as_deref(), Some("did you mean `params.greeting`?"));
        let e = one_error(&r, "{{ env.NOPE_NOT_SET }}");
        assert!(
            e.message.contains("`NOPE_NOT_SET` is not set"),
            "{}",
            e.message
        );
        let e = one_error(&r, "{{ run.dat }}");
        assert_eq!(e.help.as_deref(), Some("did you mean `run.date`?"));
        assert!(one_error(&r, "{{ oops").message.contains("syntax"));
        // Every variable is named when nothing is close.
        let e = one_error(&r, "{{ zzzzzz }}");
        let help = e.help.unwrap_or_default();
        assert!(
            help.contains("run.scheduled_at") && help.contains("trigger.files"),
            "{help}"
        );
        let e = one_error(&r, "{{ triger.files }}");
        assert_eq!(e.help.as_deref(), Some("did you mean `trigger.files`?"));
    }

    #[test]
    fn every_unknown_variable_of_a_field_is_reported() {
        let v = vars();
        let r = Renderer::new(&v);
        let errs = r
            .render("echo {{ params.a }} {{ params.b }} {{ parms.greeting }}")
            .unwrap_err();
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "unknown template variable `params.a`",
                "unknown template variable `params.b`",
                "unknown template variable `parms.greeting`"
            ]
        );
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let v = vars();
        let r = Renderer::new(&v);
        let mut t = String::new();
        for i in 0..9 {
            t.push_str(&format!("{{% for i{i} in 'abcdefghijklmnopqrstuvwxyz' %}}"));
        }
        t.push('x');
        t.push_str(&"{% endfor %}".repeat(9));
        let e = one_error(&r, &t);
        assert!(e.message.contains("more than 1000000 steps"), "{e:?}");
        // An ordinary loop is fine.
        let ok = r
            .render("{% for c in 'abc' %}{{ c }}{{ params.greeting }} {% endfor %}")
            .unwrap();
        assert_eq!(ok, "ahello bhello chello ");
    }

    #[test]
    fn add_days_moves_dates_across_months_and_rejects_non_dates() {
        let v = vars();
        let r = Renderer::new(&v);
        let mut v2 = v.clone();
        v2.date = "2026-03-01".into();
        let r2 = Renderer::new(&v2);
        assert_eq!(
            r2.render("{{ run.date | add_days(-45) }}").unwrap(),
            "2026-01-15"
        );
        assert_eq!(
            r2.render("{{ run.date | add_days(1) }}").unwrap(),
            "2026-03-02"
        );
        let e = one_error(&r, "{{ params.greeting | add_days(1) }}");
        assert!(e.message.contains("is not a date like"), "{e:?}");
    }

    #[test]
    fn quoting_filters_make_hostile_values_inert() {
        let mut v = vars();
        let hostile = "'; rm -rf / #\n$(id) `id` \\";
        v.params.insert("x".into(), hostile.into());
        let r = Renderer::new(&v);
        let sh = r.render("printf %s {{ params.x | shell_quote }}").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(sh.as_ref())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), hostile);
        assert_eq!(
            r.render("{{ params.x | sql_string }}").unwrap(),
            format!("'{}'", hostile.replace('\'', "''"))
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(sql_string("it's"), "'it''s'");
    }

    #[test]
    fn finds_params_interpolated_without_quoting() {
        assert_eq!(
            unquoted_inputs("echo {{ params.a }} {{ params.b | shell_quote }} {{params.c|upper}}"),
            ["params.a", "params.c"]
        );
        assert!(
            unquoted_inputs("WHERE d = {{ params.d | sql_string }} AND {{ run.date }}").is_empty()
        );
        assert_eq!(
            unquoted_inputs("wc -l {{ trigger.files | join(' ') }}"),
            ["trigger.files"]
        );
        assert!(unquoted_inputs("wc -l {{ trigger.files | shell_quote }}").is_empty());
    }

    #[test]
    fn quoting_filters_quote_each_file_of_a_list() {
        let mut vars = TemplateVars::for_run(BTreeMap::new(), "r", "2026-01-02");
        vars.trigger_files = vec!["/in/x;touch PWNED;.csv".into(), "/in/it's.csv".into()];
        let r = Renderer::new(&vars);
        assert_eq!(
            r.render("wc -l {{ trigger.files | shell_quote }}").unwrap(),
            r"wc -l '/in/x;touch PWNED;.csv' '/in/it'\''s.csv'"
        );
        assert_eq!(
            r.render("IN ({{ trigger.files | sql_string }})").unwrap(),
            "IN ('/in/x;touch PWNED;.csv', '/in/it''s.csv')"
        );
        assert_eq!(r.render("{{ 'a b' | shell_quote }}").unwrap(), "'a b'");
    }

    #[test]
    fn redacts_secret_values_only() {
        let r = Redactor::from_vars([
            ("ALPHAVANTAGE_API_KEY".to_string(), "sekrit123".to_string()),
            ("db_password".to_string(), "hunter22".to_string()),
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("SHORT_TOKEN".to_string(), "ab".to_string()),
        ]);
        assert_eq!(
            r.redact("key=sekrit123 pw=hunter22 path=/usr/bin ab"),
            "key=*** pw=*** path=/usr/bin ab"
        );
    }
}
