//! Loading a workflow file: YAML → checked, template-rendered, built [`Workflow`].
//!
//! Every check runs and every problem is collected (with its line and column) before
//! anything is reported, so one `validate` shows all of them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::dag::Dag;
use crate::diag::{Diagnostic, Diagnostics};
use crate::suggest::closest;
use crate::task::{BuildContext, BuildError, Registry, Task};
use crate::template::{Renderer, TemplateVars};
use crate::trigger::TriggerRule;
use crate::yaml::{self, DeError, Node, NodeKind, Pos};

/// Keys every task has, whatever its kind; the rest of a task's mapping is the kind's.
pub const COMMON_TASK_FIELDS: &[&str] = &[
    "kind",
    "description",
    "after",
    "trigger",
    "retries",
    "retry_delay",
    "retry_backoff",
    "timeout",
    "short_circuit",
];

const TOP_FIELDS: &[&str] = &[
    "name",
    "description",
    "params",
    "max_parallel",
    "max_active_runs",
    "backend",
    "aws",
    "channels",
    "notify",
    "sla",
    "retention",
    "deadline",
    "warehouse",
    "defaults",
    "schedule",
    "timezone",
    "dst",
    "catchup",
    "max_catchup",
    "concurrency",
    "resume_interrupted",
    "start_date",
    "on",
    "tasks",
];

/// A validated workflow, ready to execute.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// The file's text.
    pub source: String,
    /// Declared params with `--param` overrides applied.
    pub params: BTreeMap<String, String>,
    pub max_parallel: usize,
    /// Runs of this workflow that may execute at once in a backfill (`max_active_runs:`,
    /// default 1: a write-audit-publish pipeline's runs share its temp table).
    pub max_active_runs: usize,
    /// Where its data tasks run.
    pub backend: Backend,
    /// The `aws:` block, if any.
    pub aws: Option<AwsBlock>,
    /// Where created tables are written (absolute): `warehouse:`, relative to the file's
    /// directory, or `{state-dir}/warehouse`.
    pub warehouse: PathBuf,
    /// `channels:`, by name (templates rendered), over the shared channels file's.
    pub channels: BTreeMap<String, Channel>,
    /// `--channels FILE`, when given (see [`LoadOptions::channels_file`]).
    pub channels_file: Option<PathBuf>,
    /// `{{ trigger.files }}` it was loaded with (recorded with the run, so that a rerun
    /// or a resumed run sees the same files).
    pub trigger_files: Vec<String>,
    /// `notify:`: which run events go to which channels.
    pub notify: Vec<crate::notify::Subscription>,
    /// `sla:`: a run still going after this long notifies `sla_miss` (once per execution).
    pub sla: Option<Duration>,
    /// `retention:`: runs older than this are deleted (by the daemon after each run, and
    /// by `orchestrator gc` without `--older-than`), as [`crate::retention`] allows.
    pub retention: Option<Duration>,
    /// In file order.
    pub tasks: Vec<TaskDef>,
    /// Task id to index in `tasks` (see [`Workflow::index_of`]).
    ids: std::collections::HashMap<String, usize>,
    pub dag: Dag,
    /// When the workflow starts by itself (`schedule:`, `timezone:`, `dst:`).
    pub schedule: Option<Schedule>,
    /// How the daemon runs it (`catchup:`, `max_catchup:`, `concurrency:`,
    /// `resume_interrupted:`, `start_date:`).
    pub policy: DaemonPolicy,
    /// Start a run when files arrive (`on: files:`).
    pub on_files: Option<FileTrigger>,
    /// Problems that do not make the workflow invalid (e.g. an unquoted `--param` in a
    /// command); see [`Workflow::warnings_text`].
    pub warnings: Vec<Diagnostic>,
}

impl Workflow {
    /// The warnings rendered like validation errors (`warning: FILE:LINE:COL: ...`), or
    /// `None` when there are none.
    pub fn warnings_text(&self) -> Option<String> {
        (!self.warnings.is_empty()).then(|| {
            crate::diag::Warnings {
                file: &self.path,
                source: &self.source,
                items: &self.warnings,
            }
            .to_string()
        })
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    pub fn task_ids(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.id.as_str()).collect()
    }

    /// The workflow's directory; relative paths in task configs resolve against it.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

#[derive(Debug, Clone)]
pub struct TaskDef {
    pub id: String,
    pub kind: String,
    pub description: Option<String>,
    pub trigger: TriggerRule,
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    /// May end its branch early ("nothing to do"): see [`crate::task::SHORT_CIRCUIT`].
    pub short_circuit: bool,
    pub task: Arc<dyn Task>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub retries: u32,
    pub delay: Duration,
    pub backoff: f64,
}

impl RetryPolicy {
    /// Delay before attempt `next` (2 = first retry): `delay * backoff^(next-2)`, with
    /// ±10% jitter so many retrying tasks do not hit a service in lockstep.
    pub fn delay_before(&self, next: u32) -> Duration {
        let base = self.delay.as_secs_f64() * self.backoff.powi(next.saturating_sub(2) as i32);
        let jitter = 0.9 + 0.2 * fastrand::f64();
        Duration::from_secs_f64((base * jitter).min(86_400.0))
    }
}

/// What the loader needs besides the file.
pub struct LoadOptions<'a> {
    pub registry: &'a Registry,
    /// `--param k=v`; each must name a declared param.
    pub overrides: BTreeMap<String, String>,
    /// Params carried over from an earlier execution (a rerun): applied where the file
    /// still declares them, ignored otherwise.
    pub inherited: BTreeMap<String, String>,
    pub run_id: String,
    pub date: String,
    /// `{{ run.scheduled_at }}`: the fire instant of a scheduled run (RFC 3339); the
    /// load time when `None` (a manual run).
    pub scheduled_at: Option<String>,
    /// `{{ trigger.files }}`: the files that started a file-triggered run.
    pub trigger_files: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The warehouse when the file sets none (absolute): `{state-dir}/warehouse`.
    pub default_warehouse: PathBuf,
    /// `--backend`: overrides the file's `backend:`.
    pub backend: Option<Backend>,
    /// `--channels FILE`: the shared channels file, instead of `channels.yaml` beside the
    /// workflow.
    pub channels_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read workflow file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Workflow, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let source = std::fs::read_to_string(path).map_err(read_err)?;
    let abs = std::path::absolute(path).map_err(read_err)?;
    load_str(&abs, source, opts).map_err(LoadError::Invalid)
}

/// Loads a workflow from text; `path` is used in messages and as the base directory.
pub fn load_str(path: &Path, source: String, opts: &LoadOptions) -> Result<Workflow, Diagnostics> {
    // A byte-order mark some editors write is not part of the first key.
    let source = match source.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => source,
    };
    let mut errs = Vec::new();
    let mut warns = Vec::new();
    let result = Loader {
        opts,
        errs: &mut errs,
        warns: &mut warns,
        backend: Backend::Local,
        aws: None,
        channels: BTreeMap::new(),
        workflow: String::new(),
        file: path,
        source: &source,
    }
    .load(path, &source);
    match result {
        Some(mut wf) if errs.is_empty() => {
            warns.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
            wf.warnings = warns;
            Ok(wf)
        }
        _ => Err(Diagnostics {
            items: {
                // Errors without a position (e.g. --param) first, then in file order.
                errs.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
                errs
            },
            file: path.to_path_buf(),
            source,
        }),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsSpec {
    retries: Option<u32>,
    retry_delay: Option<Dur>,
    retry_backoff: Option<f64>,
    timeout: Option<Timeout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonSpec {
    kind: String,
    description: Option<String>,
    // Read from the node directly to keep each entry's position.
    #[allow(dead_code)]
    after: Option<serde::de::IgnoredAny>,
    trigger: Option<TriggerRule>,
    retries: Option<u32>,
    retry_delay: Option<Dur>,
    retry_backoff: Option<f64>,
    timeout: Option<Timeout>,
    short_circuit: Option<bool>,
}

use crate::arrival::FileTrigger;
use crate::schedule::{self, Catchup, Concurrency, DaemonPolicy, Dst, Expr, Schedule};
use crate::task::{Dur, Timeout};
use chrono_tz::Tz;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnSpec {
    files: Option<FilesSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesSpec {
    path: String,
    pattern: Option<String>,
    debounce: Option<Dur>,
    max_batch: Option<usize>,
    poll: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DstSpec {
    gap: Option<String>,
    overlap: Option<String>,
}

struct Loader<'a, 'e> {
    opts: &'a LoadOptions<'a>,
    errs: &'e mut Vec<Diagnostic>,
    warns: &'e mut Vec<Diagnostic>,
    /// Where the data tasks run, for their `BuildContext`.
    backend: Backend,
    aws: Option<AwsBlock>,
    channels: BTreeMap<String, Channel>,
    /// The workflow's `name:` (empty if missing or invalid), for its tasks' `BuildContext`.
    workflow: String,
    /// The file and its text, to point config errors inside a field's value.
    file: &'e Path,
    source: &'e str,
}

/// Where a workflow's data tasks run (`backend:`, or `run --backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// DataFusion, the catalog in the state store, local directories.
    #[default]
    Local,
    /// Athena, the Glue Data Catalog, S3.
    Aws,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend, String> {
        match s {
            "local" => Ok(Backend::Local),
            "aws" => Ok(Backend::Aws),
            _ => Err(format!("`{s}` is not a backend: use `local` or `aws`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Aws => "aws",
        }
    }
}

/// The file beside workflows whose `channels:` they all may use.
pub const SHARED_CHANNELS: &str = "channels.yaml";

/// Where messages go (`channels:`): alerts from `kind: alert` tasks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Channel {
    /// Appends one JSON object per message to a file (a relative path is in the state
    /// dir).
    File { path: PathBuf },
    /// POSTs each message as JSON; `format: slack` sends Slack's `{"text": ...}`.
    Webhook {
        url: String,
        #[serde(default)]
        format: Option<String>,
        /// Signs the body: `X-Orchestrator-Signature: sha256=HEX` (HMAC-SHA256).
        #[serde(default)]
        secret: Option<String>,
    },
    /// Runs `sh -c COMMAND` with the message's JSON on stdin; exit 0 is delivered.
    Command { command: String },
    /// Sends an email through an SMTP server: `smtp://HOST:PORT` (plain),
    /// `smtp://HOST:PORT?tls=required` (STARTTLS), `smtps://HOST` (TLS); credentials as
    /// `smtps://USER:PASSWORD@HOST`.
    Email {
        smtp: String,
        from: String,
        to: Vec<String>,
        /// Default: `[orchestrator] ` and the message.
        #[serde(default)]
        subject: Option<String>,
    },
    /// Publishes to an SNS topic (the event's JSON as the message). The region is the
    /// ARN's unless `region:` says otherwise; credentials come from the standard chain.
    Sns {
        topic_arn: String,
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        profile: Option<String>,
    },
}

/// The `aws:` block: where the AWS backend's work goes. Checked without calling AWS;
/// `orchestrator doctor --backend aws` makes the calls.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsBlock {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Athena workgroup (default `primary`).
    pub workgroup: Option<String>,
    /// The Glue database tables live in.
    pub database: Option<String>,
    /// `s3://...` for Athena's query results.
    pub output_location: Option<String>,
    /// `s3://...` where created tables live.
    pub warehouse: Option<String>,
}

struct PendingTask {
    id: String,
    pos: Pos,
    after: Vec<(String, Pos)>,
    def: Option<TaskDef>,
}

impl Loader<'_, '_> {
    fn err(&mut self, pos: Option<Pos>, message: impl Into<String>) -> &mut Diagnostic {
        self.errs.push(Diagnostic::new(pos, message));
        let last = self.errs.len() - 1;
        &mut self.errs[last]
    }

    /// Records a typed-config error, with a suggestion for unknown keys.
    /// A task's own `retry_backoff` must be 1.0 or more.
    fn check_backoff(&mut self, task: &Node, id: &str, b: f64) {
        if !(b >= 1.0 && b.is_finite()) {
            let pos = task.get("retry_backoff").map(|n| n.pos);
            self.err(
                pos,
                format!("`retry_backoff` of task `{id}` must be 1.0 or more, found {b}"),
            );
        }
    }

    fn de_err(&mut self, e: DeError, context: &str, extra_fields: &[&str]) {
        let context = context.trim();
        let (message, help) = match &e.unknown_field {
            Some(u) => {
                let candidates: Vec<&str> =
                    u.expected.iter().chain(extra_fields).copied().collect();
                let help = match closest(&u.field, candidates.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("allowed fields: {}", candidates.join(", ")),
                };
                (format!("unknown field `{}` {context}", u.field), Some(help))
            }
            None => {
                let what = for_people(&e.message);
                match &e.key {
                    Some(key) => (format!("invalid `{key}` {context}: {what}"), None),
                    None => (format!("{context}: {what}"), None),
                }
            }
        };
        self.errs
            .push(Diagnostic::new(e.pos, message).maybe_help(help));
    }

    fn load(&mut self, path: &Path, source: &str) -> Option<Workflow> {
        let root = match yaml::parse(source) {
            Ok(Some(root)) => root,
            Ok(None) => {
                self.err(None, "the file is empty").help =
                    Some("a workflow needs at least `name:` and `tasks:`".into());
                return None;
            }
            Err(e) => {
                let d = self.err(Some(e.pos), format!("YAML syntax error: {}", e.message));
                if e.pos.col > 1024 {
                    // YAML limits an unquoted key to 1024 characters.
                    d.help = Some(
                        "a key may be at most 1024 characters long (task ids at most 128)".into(),
                    );
                }
                return None;
            }
        };
        let Some(entries) = root.as_map() else {
            self.err(
                Some(root.pos),
                format!("a workflow must be a mapping, found {}", root.describe()),
            );
            return None;
        };
        self.check_duplicate_keys(&root, true);

        let mut name = None;
        let mut description = None;
        let mut params = BTreeMap::new();
        let mut max_parallel = None;
        let mut max_active_runs = None;
        let mut warehouse = None;
        let mut defaults = DefaultsSpec::default();
        let mut tasks_node = None;
        let mut channels_node = None;
        let mut sla = None;
        let mut retention = None;
        let mut notify_node = None;
        let mut exprs: Option<Vec<Expr>> = None;
        let mut timezone: Option<(Tz, Pos)> = None;
        let mut dst: Option<(Dst, Pos)> = None;
        let mut policy = DaemonPolicy::default();
        let mut deadline_at: Option<Pos> = None;
        let mut on_files: Option<FileTrigger> = None;
        let mut backend: Option<(Backend, Pos)> = None;
        let mut aws: Option<(AwsBlock, Pos)> = None;
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            match key {
                "name" => match v.parse::<String>() {
                    Ok(n) if is_valid_name(&n, false) => name = Some(n),
                    Ok(n) => {
                        self.err(Some(v.pos), format!("invalid workflow name `{n}`"))
                            .help = Some("use lowercase letters, digits, `_` and `-`".into());
                    }
                    Err(e) => self.de_err(e, "in `name`", &[]),
                },
                "description" => match v.parse::<Option<String>>() {
                    Ok(d) => description = d,
                    Err(e) => self.de_err(e, "in `description`", &[]),
                },
                "params" => match v.parse::<Option<BTreeMap<String, String>>>() {
                    Ok(p) => params = p.unwrap_or_default(),
                    Err(e) => self.de_err(e, "in `params` (a mapping of name: value)", &[]),
                },
                "max_parallel" => match v.parse::<usize>() {
                    Ok(0) => {
                        self.err(Some(v.pos), "`max_parallel` must be at least 1");
                    }
                    Ok(n) => max_parallel = Some(n),
                    Err(e) => self.de_err(e, "in `max_parallel`", &[]),
                },
                "sla" => match v.parse::<crate::task::Dur>() {
                    Ok(t) if t.0.is_zero() => {
                        self.err(
                            Some(v.pos),
                            "`sla` must be longer than 0s: it is how long a run may take before `sla_miss` is notified; leave it out for none",
                        );
                    }
                    Ok(t) => sla = Some(t.0),
                    Err(e) => self.de_err(e, "in `sla` (e.g. sla: 45m)", &[]),
                },
                "retention" => match v.parse::<crate::task::Dur>() {
                    Ok(t) if t.0 < Duration::from_secs(86_400) => {
                        self.err(
                            Some(v.pos),
                            "`retention` must be at least 1d: it is how long runs are kept",
                        );
                    }
                    Ok(t) => retention = Some(t.0),
                    Err(e) => self.de_err(e, "in `retention` (e.g. retention: 90d)", &[]),
                },
                "max_active_runs" => match v.parse::<usize>() {
                    Ok(0) => {
                        self.err(Some(v.pos), "`max_active_runs` must be at least 1");
                    }
                    Ok(n) => max_active_runs = Some(n),
                    Err(e) => self.de_err(e, "in `max_active_runs`", &[]),
                },
                "defaults" => match v.parse::<Option<DefaultsSpec>>() {
                    Ok(d) => defaults = d.unwrap_or_default(),
                    Err(e) => self.de_err(e, "in `defaults`", &[]),
                },
                "warehouse" => match v.parse::<String>() {
                    Ok(w) if !w.trim().is_empty() => warehouse = Some(PathBuf::from(w)),
                    Ok(_) => {
                        self.err(
                            Some(v.pos),
                            "`warehouse` is empty; give a directory or leave it out",
                        );
                    }
                    Err(e) => self.de_err(e, "in `warehouse`", &[]),
                },
                "schedule" => exprs = Some(self.schedule_exprs(v)),
                "timezone" => match v.parse::<String>() {
                    Ok(name) => match schedule::parse_timezone(&name) {
                        Ok(tz) => timezone = Some((tz, v.pos)),
                        Err(e) => {
                            self.err(Some(v.pos), e);
                        }
                    },
                    Err(e) => self.de_err(e, "in `timezone`", &[]),
                },
                "dst" => match v.parse::<DstSpec>() {
                    Ok(spec) => {
                        let mut d = Dst::default();
                        if let Some(g) = spec.gap {
                            match g.parse() {
                                Ok(g) => d.gap = Some(g),
                                Err(e) => {
                                    let at = v.get("gap").map_or(v.pos, |n| n.pos);
                                    self.err(Some(at), e);
                                }
                            }
                        }
                        if let Some(o) = spec.overlap {
                            match o.parse() {
                                Ok(o) => d.overlap = Some(o),
                                Err(e) => {
                                    let at = v.get("overlap").map_or(v.pos, |n| n.pos);
                                    self.err(Some(at), e);
                                }
                            }
                        }
                        dst = Some((d, v.pos));
                    }
                    Err(e) => self.de_err(e, "in `dst` (a mapping with `gap` and `overlap`)", &[]),
                },
                "backend" => match v.parse::<Backend>() {
                    Ok(b) => backend = Some((b, v.pos)),
                    Err(e) => self.de_err(e, "in `backend` (local or aws)", &[]),
                },
                "channels" => channels_node = Some(v),
                "notify" => notify_node = Some(v),
                "aws" => match v.parse::<AwsBlock>() {
                    Ok(block) => {
                        for (field, value) in [
                            ("output_location", &block.output_location),
                            ("warehouse", &block.warehouse),
                        ] {
                            if let Some(url) = value.as_deref().filter(|u| !u.starts_with("s3://"))
                            {
                                let at = v.get(field).map_or(v.pos, |n| n.pos);
                                self.err(
                                    Some(at),
                                    format!("`aws: {field}:` `{url}` is not an s3:// URL"),
                                )
                                .help = Some("write it as s3://bucket/prefix/".to_string());
                            }
                        }
                        aws = Some((block, v.pos));
                    }
                    Err(e) => self.de_err(
                        e,
                        "in `aws`",
                        &[
                            "region",
                            "profile",
                            "workgroup",
                            "database",
                            "output_location",
                            "warehouse",
                        ],
                    ),
                },
                "catchup" => match v.parse::<Catchup>() {
                    Ok(c) => policy.catchup = c,
                    Err(e) => self.de_err(e, "in `catchup` (none, latest or all)", &[]),
                },
                "max_catchup" => match v.parse::<usize>() {
                    Ok(0) => {
                        self.err(
                            Some(v.pos),
                            "`max_catchup` must be at least 1 (use `catchup: none` for none)",
                        );
                    }
                    Ok(n) => policy.max_catchup = n,
                    Err(e) => self.de_err(e, "in `max_catchup`", &[]),
                },
                "concurrency" => match v.parse::<Concurrency>() {
                    Ok(c) => policy.concurrency = c,
                    Err(e) => self.de_err(e, "in `concurrency` (forbid, queue or replace)", &[]),
                },
                "resume_interrupted" => match v.parse::<bool>() {
                    Ok(b) => policy.resume_interrupted = b,
                    Err(e) => self.de_err(e, "in `resume_interrupted`", &[]),
                },
                "deadline" => match v.parse::<String>() {
                    Ok(t) => match chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M:%S")
                        .or_else(|_| chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M"))
                    {
                        Ok(t) => {
                            policy.deadline = Some(t);
                            deadline_at = Some(v.pos);
                        }
                        Err(_) => {
                            self.err(
                                Some(v.pos),
                                format!("`deadline` `{t}` is not a time of day; write e.g. \"23:30\" (in the workflow's `timezone:`)"),
                            );
                        }
                    },
                    Err(e) => self.de_err(e, "in `deadline`", &[]),
                },
                "start_date" => match v.parse::<String>() {
                    Ok(t) => match schedule::parse_start(&t) {
                        Ok(t) => policy.start = Some(t),
                        Err(e) => {
                            self.err(Some(v.pos), e);
                        }
                    },
                    Err(e) => self.de_err(e, "in `start_date`", &[]),
                },
                "on" => match v.parse::<OnSpec>() {
                    Ok(OnSpec { files: Some(f) }) => {
                        let base = path.parent().unwrap_or(Path::new("."));
                        let dir = base.join(&f.path);
                        let max_batch = f.max_batch.unwrap_or(FileTrigger::DEFAULT_MAX_BATCH);
                        let files_at = v.get("files").map(|n| n.pos);
                        let at = |key: &str| {
                            v.get("files")
                                .and_then(|f| f.get(key))
                                .map(|n| n.pos)
                                .or(files_at)
                        };
                        if max_batch == 0 {
                            self.err(at("max_batch"), "`max_batch` must be at least 1");
                        }
                        if f.poll.is_some_and(|p| p.0 < FileTrigger::MIN_POLL) {
                            self.err(
                                at("poll"),
                                "`poll` must be at least 100ms: polling more often keeps a core busy while nothing arrives",
                            );
                        }
                        if f.debounce.is_some_and(|d| d.0 < FileTrigger::MIN_DEBOUNCE) {
                            self.err(
                                at("debounce"),
                                "`debounce` must be at least 100ms: with none, a file still being written starts a run half-written",
                            );
                        }
                        if let Some(p) = f.pattern.as_deref() {
                            if p.is_empty() || p.contains(['[', ']', '{', '}', '/', '\\']) {
                                self.err(
                                    at("pattern"),
                                    format!("`pattern` `{p}` is not a file-name pattern: write a name with `*` (any characters) and `?` (one), e.g. \"*.csv\"; `[...]`, `{{...}}` and `/` are not supported"),
                                );
                            }
                        }
                        if std::path::absolute(&dir)
                            .unwrap_or_else(|_| dir.clone())
                            .parent()
                            .is_none()
                        {
                            self.err(
                                at("path"),
                                format!("`path` `{}` is the root of the file system: watching all of it is never meant; give the landing directory", f.path),
                            );
                        }
                        on_files = Some(FileTrigger {
                            path: crate::arrival::normalize(&dir),
                            pattern: f.pattern.unwrap_or_else(|| "*".into()),
                            debounce: f.debounce.map_or(FileTrigger::DEFAULT_DEBOUNCE, |d| d.0),
                            max_batch: max_batch.max(1),
                            poll: f.poll.map(|d| d.0),
                        });
                    }
                    Ok(OnSpec { files: None }) => {
                        self.err(Some(v.pos), "`on` names no trigger").help =
                            Some("write `on: { files: { path: DIR, pattern: \"*.csv\" } }`".into());
                    }
                    Err(e) => self.de_err(e, "in `on`", &[]),
                },
                "tasks" => tasks_node = Some(v),
                other => {
                    let help = match closest(other, TOP_FIELDS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("allowed fields: {}", TOP_FIELDS.join(", ")),
                    };
                    self.err(
                        Some(k.pos),
                        format!("unknown field `{other}` at the top level"),
                    )
                    .help = Some(help);
                }
            }
        }
        if name.is_none() && !entries.iter().any(|(k, _)| k.as_str() == Some("name")) {
            self.err(Some(root.pos), "missing field `name`").help =
                Some("add `name: my_workflow` (lowercase letters, digits, `_`, `-`)".into());
        }
        if let Some(b) = defaults.retry_backoff {
            if !(b >= 1.0 && b.is_finite()) {
                let pos = root
                    .get("defaults")
                    .and_then(|d| d.get("retry_backoff"))
                    .map(|n| n.pos);
                self.err(
                    pos,
                    format!("`retry_backoff` must be 1.0 or more, found {b}"),
                );
            }
        }

        for (k, v) in &self.opts.inherited {
            if let Some(p) = params.get_mut(k) {
                p.clone_from(v);
            }
        }
        // --param overrides must name declared params.
        for (k, v) in &self.opts.overrides {
            if params.contains_key(k) {
                params.insert(k.clone(), v.clone());
            } else {
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                let help = match closest(k, declared.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if declared.is_empty() => {
                        "this workflow declares no params; add it under `params:` first".into()
                    }
                    None => format!("declared params: {}", declared.join(", ")),
                };
                self.err(
                    None,
                    format!("--param {k}: the workflow declares no param `{k}`"),
                )
                .help = Some(help);
            }
        }

        let chosen = self
            .opts
            .backend
            .or(backend.map(|(b, _)| b))
            .unwrap_or_default();
        if chosen == Backend::Aws {
            let at = backend.map(|(_, p)| p).or(aws.as_ref().map(|(_, p)| *p));
            let block = aws.as_ref().map(|(b, _)| b.clone()).unwrap_or_default();
            let missing: Vec<&str> = [
                ("database", &block.database),
                ("output_location", &block.output_location),
                ("warehouse", &block.warehouse),
            ]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                self.err(
                    at.or(Some(root.pos)),
                    format!(
                        "the aws backend needs `aws:` with {}",
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .help = Some(
                    "e.g. aws: { region: us-east-1, database: lake, output_location: s3://my-athena-results/, warehouse: s3://my-lake/warehouse/ }".into(),
                );
            }
        }
        self.backend = chosen;
        self.aws = aws.map(|(b, _)| b);
        self.workflow = name.clone().unwrap_or_default();

        let Some(tasks_node) = tasks_node else {
            self.err(Some(root.pos), "missing field `tasks`").help =
                Some("add a `tasks:` mapping of task id to task".into());
            return None;
        };
        let Some(task_entries) = tasks_node.as_map() else {
            self.err(
                Some(tasks_node.pos),
                format!(
                    "`tasks` must be a mapping of task id to task, found {}",
                    tasks_node.describe()
                ),
            );
            return None;
        };
        if task_entries.is_empty() {
            self.err(
                Some(tasks_node.pos),
                "`tasks` is empty; a workflow needs at least one task",
            );
            return None;
        }

        let vars = TemplateVars {
            params: params.clone(),
            run_id: self.opts.run_id.clone(),
            date: self.opts.date.clone(),
            scheduled_at: self.opts.scheduled_at.clone().unwrap_or_else(|| {
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            trigger_files: self.opts.trigger_files.clone(),
            env: self.opts.env.clone(),
        };
        let renderer = Renderer::new(&vars);
        if let Some(node) = channels_node {
            self.channels(node, &renderer);
        }
        if let Some(file) = &self.opts.channels_file {
            // Named on purpose: a missing file is an error, not "no shared channels".
            self.shared_channels(file, &renderer);
        } else if let Some(shared) = path
            .parent()
            .map(|d| d.join(SHARED_CHANNELS))
            .filter(|p| p.is_file() && p != path)
        {
            self.shared_channels(&shared, &renderer);
        }
        let notify = notify_node.map(|n| self.notify(n)).unwrap_or_default();
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let pending: Vec<PendingTask> = task_entries
            .iter()
            .map(|(k, v)| self.task(k, v, &defaults, &renderer, &base_dir))
            .collect();

        // Resolve `after` names to indices.
        let index: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut upstream = vec![Vec::new(); pending.len()];
        for (i, t) in pending.iter().enumerate() {
            for (dep, pos) in &t.after {
                match index.get(dep.as_str()) {
                    Some(&j) if upstream[i].contains(&j) => {
                        self.err(
                            Some(*pos),
                            format!("task `{}` lists `{dep}` twice in `after`", t.id),
                        );
                    }
                    Some(&j) => upstream[i].push(j),
                    None => {
                        let help = closest(dep, index.keys().copied())
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| {
                                format!(
                                    "tasks in this file: {}",
                                    pending
                                        .iter()
                                        .map(|t| t.id.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            });
                        self.err(
                            Some(*pos),
                            format!("task `{}` depends on unknown task `{dep}`", t.id),
                        )
                        .help = Some(help);
                    }
                }
            }
        }
        let dag = match Dag::new(upstream) {
            Ok(dag) => Some(dag),
            Err(cycles) => {
                for cycle in cycles {
                    let chain: Vec<&str> = cycle.iter().map(|&i| pending[i].id.as_str()).collect();
                    self.err(
                        Some(pending[cycle[0]].pos),
                        format!("dependency cycle: {}", chain.join(" -> ")),
                    )
                    .help = Some("remove one of these `after` entries".into());
                }
                None
            }
        };

        let schedule = match exprs {
            Some(exprs) => Some(Schedule {
                exprs,
                tz: timezone.map_or(chrono_tz::Tz::UTC, |(tz, _)| tz),
                dst: dst.map(|(d, _)| d).unwrap_or_default(),
                start: policy.start,
            }),
            None => {
                for (field, at) in [
                    ("timezone", timezone.map(|t| t.1)),
                    ("dst", dst.map(|d| d.1)),
                    ("deadline", deadline_at),
                ] {
                    if let Some(at) = at {
                        self.err(Some(at), format!("`{field}` is set, but there is no `schedule:`"))
                            .help = Some(
                            "add a schedule, e.g. `schedule: \"cron(0 22 ? * MON-FRI *)\"`, or remove it".into(),
                        );
                    }
                }
                None
            }
        };

        let dag = dag?;
        if !self.errs.is_empty() {
            return None;
        }
        let tasks: Vec<TaskDef> = pending.into_iter().map(|t| t.def).collect::<Option<_>>()?;
        Some(Workflow {
            ids: tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), i))
                .collect(),
            name: name?,
            description,
            path: path.to_path_buf(),
            source: source.to_string(),
            params,
            max_parallel: max_parallel.unwrap_or_else(default_parallelism),
            max_active_runs: max_active_runs.unwrap_or(1),
            backend: self.backend,
            aws: self.aws.clone(),
            warehouse: match warehouse {
                Some(w) if w.is_absolute() => w,
                Some(w) => base_dir.join(w),
                None => self.opts.default_warehouse.clone(),
            },
            channels: self.channels.clone(),
            channels_file: self.opts.channels_file.clone(),
            trigger_files: self.opts.trigger_files.clone(),
            notify,
            sla,
            retention,
            tasks,
            dag,
            schedule,
            policy,
            on_files,
            warnings: Vec::new(),
        })
    }

    fn task(
        &mut self,
        key: &Node,
        node: &Node,
        defaults: &DefaultsSpec,
        renderer: &Renderer,
        base_dir: &Path,
    ) -> PendingTask {
        let id = key.as_str().unwrap_or_default().to_string();
        let mut pending = PendingTask {
            id: id.clone(),
            pos: key.pos,
            after: Vec::new(),
            def: None,
        };
        if id.len() > MAX_ID_LEN {
            // Say it once, without echoing the id, and look no further at this task:
            // every other message would quote it.
            let start: String = id.chars().take(20).collect();
            self.err(
                Some(key.pos),
                format!(
                    "task id `{start}…` is {} characters long; task ids have at most {MAX_ID_LEN}",
                    id.chars().count()
                ),
            )
            .help = Some("use a short name of letters, digits, `_` and `-`".into());
            pending.id = format!("{start}…");
            return pending;
        }
        if !is_valid_name(&id, true) {
            self.err(Some(key.pos), format!("invalid task id `{id}`"))
                .help = Some("use letters, digits, `_` and `-`".into());
        }
        let Some(entries) = node.as_map() else {
            self.err(
                Some(node.pos),
                format!(
                    "task `{id}` must be a mapping with at least `kind:`, found {}",
                    node.describe()
                ),
            );
            return pending;
        };

        // `after:` is a list of ids or a single id.
        if let Some(after) = node.get("after") {
            match &after.kind {
                NodeKind::Seq(items) => {
                    for item in items {
                        match item.as_str() {
                            Some(s) => pending.after.push((s.to_string(), item.pos)),
                            None => {
                                self.err(
                                    Some(item.pos),
                                    format!(
                                        "`after` entries of task `{id}` must be task ids, found {}",
                                        item.describe()
                                    ),
                                );
                            }
                        }
                    }
                }
                NodeKind::Scalar { .. } if after.is_null() => {}
                NodeKind::Scalar { value, .. } => pending.after.push((value.clone(), after.pos)),
                NodeKind::Map(_) => {
                    self.err(
                        Some(after.pos),
                        format!("`after` of task `{id}` must be a list of task ids"),
                    );
                }
            }
        }

        let (common, config): (Vec<_>, Vec<_>) = entries
            .iter()
            .cloned()
            .partition(|(k, _)| k.as_str().is_some_and(|k| COMMON_TASK_FIELDS.contains(&k)));
        let common_node = Node {
            kind: NodeKind::Map(common),
            pos: node.pos,
        };
        let context = format!("in task `{id}`");
        let spec: CommonSpec = match common_node.parse() {
            Ok(s) => s,
            Err(e) => {
                // serde stops at the first bad field: look at each field on its own so
                // that every one is reported at once.
                let kind = node
                    .get("kind")
                    .cloned()
                    .unwrap_or_else(|| Node::scalar("noop", node.pos));
                let mut found = false;
                for (k, v) in common_node.as_map().unwrap_or_default() {
                    if k.as_str() == Some("kind") {
                        continue;
                    }
                    let one = Node {
                        kind: NodeKind::Map(vec![
                            (Node::scalar("kind", k.pos), kind.clone()),
                            (k.clone(), v.clone()),
                        ]),
                        pos: node.pos,
                    };
                    if let Err(e) = one.parse::<CommonSpec>() {
                        self.de_err(e, &context, COMMON_TASK_FIELDS);
                        found = true;
                    }
                }
                if !found {
                    self.de_err(e, &context, COMMON_TASK_FIELDS);
                }
                if let Some(b) = node
                    .get("retry_backoff")
                    .and_then(|n| n.parse::<f64>().ok())
                {
                    self.check_backoff(node, &id, b);
                }
                return pending;
            }
        };
        let mut config_node = Node {
            kind: NodeKind::Map(config),
            pos: node.pos,
        };
        let before = self.errs.len();
        self.render(&mut config_node, renderer, &format!("task `{id}`"), None);
        let templates_ok = self.errs.len() == before;
        let Some(kind) = self.opts.registry.get(&spec.kind) else {
            let kind_pos = node.get("kind").map(|n| n.pos);
            let names: Vec<&str> = self.opts.registry.names().collect();
            let help = match closest(&spec.kind, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known kinds: {}", names.join(", ")),
            };
            self.err(
                kind_pos,
                format!("unknown task kind `{}` in task `{id}`", spec.kind),
            )
            .help = Some(help);
            return pending;
        };
        let retry_backoff = spec.retry_backoff.or(defaults.retry_backoff).unwrap_or(2.0);
        // Checked where it is written: an inherited one was reported once, at `defaults:`.
        if let Some(b) = spec.retry_backoff {
            self.check_backoff(node, &id, b);
        }

        if !templates_ok {
            return pending;
        }
        let ctx = BuildContext {
            task_id: id.clone(),
            workflow: self.workflow.clone(),
            base_dir: base_dir.to_path_buf(),
            backend: self.backend,
            backend_overridden: self.opts.backend.is_some(),
            aws: self.aws.clone(),
            channels: self.channels.clone(),
            file: self.file.to_path_buf(),
            field_lines: config_node
                .as_map()
                .unwrap_or_default()
                .iter()
                .filter_map(|(k, _)| Some((k.as_str()?.to_string(), k.pos.line)))
                .collect(),
        };
        let task = match kind.build(&config_node, &ctx) {
            Ok(t) => t,
            Err(BuildError::Config(e)) => {
                let context = format!("in task `{id}` (kind {})", spec.kind);
                self.de_err(e, &context, COMMON_TASK_FIELDS);
                return pending;
            }
            Err(BuildError::Invalid(mut invalid)) => {
                let more = std::mem::take(&mut invalid.more);
                for invalid in std::iter::once(invalid).chain(more) {
                    let pos = invalid
                        .at
                        .and_then(|at| {
                            let (key, value) = config_node
                                .as_map()?
                                .iter()
                                .find(|(k, _)| k.as_str() == Some(at.field))?;
                            Some(pos_in_value(self.source, key, value, at))
                        })
                        .unwrap_or(node.pos);
                    self.err(Some(pos), format!("task `{id}`: {}", invalid.message))
                        .help = invalid.help;
                }
                return pending;
            }
        };
        pending.def = Some(TaskDef {
            id,
            kind: spec.kind,
            description: spec.description,
            trigger: spec.trigger.unwrap_or_default(),
            retry: RetryPolicy {
                retries: spec.retries.or(defaults.retries).unwrap_or(0),
                delay: spec
                    .retry_delay
                    .or(defaults.retry_delay)
                    .map_or(Duration::from_secs(5), |d| d.0),
                backoff: retry_backoff,
            },
            timeout: spec.timeout.or(defaults.timeout).map(|d| d.0),
            short_circuit: spec.short_circuit.unwrap_or(false),
            task,
        });
        pending
    }

    /// Renders templates in every scalar of a task's kind-specific config, in place.
    /// `field` is the name of the nearest enclosing key.
    /// Renders every template in `node`; `whose` names it in errors (`task `load``).
    fn render(&mut self, node: &mut Node, renderer: &Renderer, whose: &str, field: Option<&str>) {
        match &mut node.kind {
            NodeKind::Scalar { value, plain } => {
                if let Some(field @ ("command" | "sql")) = field {
                    self.warn_unquoted(value, node.pos, field, whose);
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

    /// `channels:`, rendered (a webhook URL usually comes from `{{ env.NAME }}`) and checked.
    fn channels(&mut self, node: &Node, renderer: &Renderer) {
        let mut node = node.clone();
        let before = self.errs.len();
        self.render(&mut node, renderer, "`channels`", None);
        if self.errs.len() != before {
            return;
        }
        // Each channel on its own, so one bad channel does not hide the others' problems.
        let Some(entries) = node.as_map() else {
            self.err(
                Some(node.pos),
                format!(
                    "`channels` must be a mapping of names to channels (NAME: {{kind: webhook | file | command | email | sns, ...}}), found {}",
                    node.describe()
                ),
            );
            return;
        };
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = k.as_str() else { continue };
            match v.parse::<Channel>() {
                Ok(ch) => {
                    map.insert(name.to_string(), ch);
                }
                Err(e) => self.de_err(
                    e,
                    &format!(
                        "in channel `{name}` ({{kind: webhook | file | command | email | sns, ...}})"
                    ),
                    &[],
                ),
            }
        }
        for (name, ch) in map {
            let field = |f: &str| {
                let entry = node.get(&name);
                entry
                    .and_then(|n| n.get(f))
                    .or(entry)
                    .map_or(node.pos, |n| n.pos)
            };
            if let Channel::Webhook { url, format, .. } = &ch {
                // The URL is often a secret (Slack's are): never echo it.
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.err(
                        Some(field("url")),
                        format!("channel `{name}`: `url` is not an http:// or https:// URL"),
                    )
                    .help = Some(
                        "e.g. url: \"{{ env.SLACK_WEBHOOK_URL }}\" with the variable set".into(),
                    );
                }
                if format
                    .as_deref()
                    .is_some_and(|f| f != "slack" && f != "json")
                {
                    self.err(
                        Some(field("format")),
                        format!("channel `{name}`: `format` is `json` (the default) or `slack`"),
                    );
                }
            }
            if let Channel::Email { smtp, to, .. } = &ch {
                if !(smtp.starts_with("smtp://") || smtp.starts_with("smtps://")) {
                    self.err(
                        Some(field("smtp")),
                        format!("channel `{name}`: `smtp` is not an smtp:// or smtps:// URL"),
                    )
                    .help = Some("e.g. smtp: \"smtps://{{ env.SMTP_USER }}:{{ env.SMTP_PASSWORD }}@smtp.example.com\"".into());
                }
                if to.is_empty() {
                    self.err(
                        Some(field("to")),
                        format!("channel `{name}`: `to` is empty; give at least one address"),
                    );
                }
            }
            if let Channel::Sns { topic_arn, .. } = &ch {
                if !(topic_arn.starts_with("arn:aws") && topic_arn.split(':').count() == 6) {
                    self.err(
                        Some(field("topic_arn")),
                        format!("channel `{name}`: `topic_arn` is not an SNS topic ARN"),
                    )
                    .help = Some(
                        "e.g. topic_arn: arn:aws:sns:us-east-1:123456789012:pipeline-alerts".into(),
                    );
                }
            }
            // A file channel's relative path is in the state dir, whoever delivers.
            let ch = match ch {
                Channel::File { path } if path.is_relative() => Channel::File {
                    path: self
                        .opts
                        .default_warehouse
                        .parent()
                        .map_or_else(|| path.clone(), |dir| dir.join(&path)),
                },
                other => other,
            };
            self.channels.insert(name, ch);
        }
    }

    /// `channels.yaml` beside the workflow: channels every workflow of the directory may
    /// use; the workflow's own `channels:` win on a name both define. Its problems name
    /// its own file, line and column.
    fn shared_channels(&mut self, file: &Path, renderer: &Renderer) {
        let shown = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                self.err(None, format!("cannot read shared channels {shown} ({e})"));
                return;
            }
        };
        let node = match crate::yaml::parse(&text) {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                self.err(
                    None,
                    format!("{shown}:{}:{}: {}", e.pos.line, e.pos.col, e.message),
                );
                return;
            }
        };
        let Some(channels) = node.get("channels") else {
            self.err(
                None,
                format!("{shown}: expected `channels:` at the top, a mapping of channel name to channel"),
            );
            return;
        };
        let own = std::mem::take(&mut self.channels);
        let before = self.errs.len();
        self.channels(channels, renderer);
        for e in &mut self.errs[before..] {
            let at = e.pos.take().map_or_else(
                || shown.clone(),
                |p| format!("{shown}:{}:{}", p.line, p.col),
            );
            e.message = format!("{at}: {}", e.message);
        }
        self.channels.extend(own);
    }

    /// `notify:`: a list of `{on: EVENT | [EVENTS], to: CHANNEL | [CHANNELS]}`; channels
    /// must be defined under `channels:`.
    fn notify(&mut self, node: &Node) -> Vec<crate::notify::Subscription> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany<T> {
            One(T),
            Many(Vec<T>),
        }
        impl<T> OneOrMany<T> {
            fn list(self) -> Vec<T> {
                match self {
                    OneOrMany::One(t) => vec![t],
                    OneOrMany::Many(v) => v,
                }
            }
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            on: OneOrMany<crate::notify::NotifyEvent>,
            to: OneOrMany<String>,
        }
        let Some(items) = node.as_seq() else {
            self.err(
                Some(node.pos),
                format!("`notify` must be a list, found {}", node.describe()),
            )
            .help = Some("e.g. notify: [{ on: [failure], to: ops }]".into());
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let spec = match item.parse::<Spec>() {
                Ok(s) => s,
                Err(e) => {
                    self.de_err(
                        e,
                        "in `notify` (on: failure | success | retry | interrupted | sla_miss, to: CHANNEL)",
                        &[],
                    );
                    continue;
                }
            };
            let sub = crate::notify::Subscription {
                on: spec.on.list(),
                to: spec.to.list(),
            };
            for name in &sub.to {
                if !self.channels.contains_key(name) {
                    let known: Vec<&str> = self.channels.keys().map(String::as_str).collect();
                    let at = item.get("to").map_or(item.pos, |n| n.pos);
                    self.err(
                        Some(at),
                        format!("`notify` sends to `{name}`, which is not defined under `channels:`"),
                    )
                    .help = Some(match closest(name, known.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if known.is_empty() => {
                            "define it, e.g. channels: { ops: { kind: webhook, url: \"{{ env.SLACK_WEBHOOK_URL }}\", format: slack } }".into()
                        }
                        None => format!("channels: {}", known.join(", ")),
                    });
                }
            }
            out.push(sub);
        }
        out
    }

    /// `schedule:`: one expression or a list; each parsed, errors at its own position.
    fn schedule_exprs(&mut self, v: &Node) -> Vec<Expr> {
        let items: Vec<&Node> = match &v.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        if items.is_empty() {
            self.err(
                Some(v.pos),
                "`schedule` is an empty list; give at least one expression",
            );
        }
        let mut exprs = Vec::new();
        for item in items {
            match item.as_str() {
                Some(text) => match Expr::parse(text) {
                    // A schedule that can never fire (`0 0 30 2 *`, an interval past the
                    // calendar) would be accepted and do nothing.
                    Ok(e)
                        if e.next_after(
                            chrono::DateTime::UNIX_EPOCH,
                            chrono_tz::Tz::UTC,
                            Dst::default(),
                        )
                        .is_none() =>
                    {
                        self.err(
                            Some(item.pos),
                            format!("schedule `{text}` never fires: it has no fire time at all"),
                        )
                        .help = Some("check the day of month and the month (`0 0 30 2 *` asks for February 30th); `orchestrator next FILE` lists the fire times".into());
                    }
                    Ok(e) => {
                        // Only past fire times (`cron(0 0 1 1 ? 2020)`): catch-up may still
                        // want them, but nothing will fire live; say so.
                        if e.next_after(chrono::Utc::now(), chrono_tz::Tz::UTC, Dst::default())
                            .is_none()
                        {
                            self.warns.push(Diagnostic::new(
                                Some(item.pos),
                                format!("schedule `{text}` has no fire time after now: the daemon will only catch up past ones (per `catchup:`), never fire it live"),
                            ));
                        }
                        exprs.push(e)
                    }
                    Err(e) => {
                        self.err(Some(item.pos), format!("invalid schedule: {e}"));
                    }
                },
                None => {
                    self.err(
                        Some(item.pos),
                        format!(
                            "a schedule is a string like \"cron(0 22 ? * MON-FRI *)\", found {}",
                            item.describe()
                        ),
                    );
                }
            }
        }
        exprs
    }

    /// Warns when a param goes into a shell command or SQL without a quoting filter:
    /// `--param` values are user input, and unquoted they can change the command.
    fn warn_unquoted(&mut self, text: &str, pos: Pos, field: &str, whose: &str) {
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

    /// Reports keys that appear twice in one mapping, anywhere in the document. The
    /// keys of the top-level `tasks` mapping are task ids, and are reported as such.
    fn check_duplicate_keys(&mut self, node: &Node, top: bool) {
        match &node.kind {
            NodeKind::Map(entries) => {
                let mut seen: HashMap<&str, Pos> = HashMap::new();
                for (k, v) in entries {
                    if let Some(key) = k.as_str() {
                        if let Some(first) = seen.insert(key, k.pos) {
                            self.err(
                                Some(k.pos),
                                format!("duplicate key `{key}` (first at line {})", first.line),
                            );
                        }
                    }
                    if top && k.as_str() == Some("tasks") {
                        self.check_duplicate_task_ids(v);
                    } else {
                        self.check_duplicate_keys(v, false);
                    }
                }
            }
            NodeKind::Seq(items) => {
                for item in items {
                    self.check_duplicate_keys(item, false);
                }
            }
            NodeKind::Scalar { .. } => {}
        }
    }

    fn check_duplicate_task_ids(&mut self, tasks: &Node) {
        let Some(entries) = tasks.as_map() else {
            return;
        };
        let mut first_at: HashMap<&str, Pos> = HashMap::new();
        for (k, v) in entries {
            let id = k.as_str().unwrap_or_default();
            match first_at.get(id) {
                Some(first) => {
                    let line = first.line;
                    self.err(
                        Some(k.pos),
                        format!("duplicate task id `{id}` (first defined at line {line})"),
                    )
                    .help = Some("task ids must be unique; rename one of them".into());
                }
                None => {
                    first_at.insert(id, k.pos);
                }
            }
            self.check_duplicate_keys(v, false);
        }
    }
}

/// Longest task id accepted: ids appear in every log line, message and key.
pub const MAX_ID_LEN: usize = 128;

fn is_valid_name(s: &str, allow_upper: bool) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || (allow_upper && c.is_ascii_uppercase())
        })
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get())
}

/// Where line `at.line`, column `at.column` of a string value's text is in the YAML file.
/// A block scalar (`sql: |`) keeps its lines: text line k is the k-th line after the
/// key's line, shifted by the block's indentation. A one-line scalar starts at its own
/// position (after the quote). Anything else (a folded multi-line plain scalar, a line
/// a template changed) points at the value's start or the line's first character.
fn pos_in_value(source: &str, key: &Node, value: &Node, at: crate::task::At) -> Pos {
    let text = value.as_str().unwrap_or_default();
    let Some(first) = source.lines().nth(value.pos.line.saturating_sub(1)) else {
        return value.pos;
    };
    let indicator = first.chars().nth(value.pos.col.saturating_sub(1));
    let wanted = text
        .lines()
        .nth(at.line.saturating_sub(1))
        .unwrap_or_default();
    let header = source
        .lines()
        .nth(key.pos.line.saturating_sub(1))
        .and_then(|l| l.split_once(':'))
        .map(|(_, rest)| rest.trim_start());
    if value.pos.line > key.pos.line && header.is_some_and(|h| h.starts_with(['|', '>'])) {
        let line = key.pos.line + at.line;
        let Some(yaml) = source.lines().nth(line - 1) else {
            return value.pos;
        };
        let (yaml_len, wanted_len) = (yaml.chars().count(), wanted.chars().count());
        let col = if yaml.ends_with(wanted) && yaml_len >= wanted_len {
            yaml_len - wanted_len + at.column
        } else {
            yaml.chars().take_while(|c| c.is_whitespace()).count() + 1
        };
        return Pos { line, col };
    }
    if at.line == 1 && !text.contains('\n') {
        let quoted = matches!(indicator, Some('"' | '\''));
        let rest: String = first
            .chars()
            .skip(value.pos.col - 1 + quoted as usize)
            .collect();
        if rest.starts_with(wanted) {
            return Pos {
                line: value.pos.line,
                col: value.pos.col + quoted as usize + at.column - 1,
            };
        }
    }
    value.pos
}

/// serde's wording of a type error, as a person would say it: `expected usize` and
/// `untagged enum` mean nothing to someone writing YAML.
fn for_people(message: &str) -> String {
    let found = message
        .strip_prefix("invalid type: ")
        .and_then(|r| r.split_once(", expected "));
    if let Some((got, want)) = found {
        let got = got
            .strip_prefix("string ")
            .map_or_else(|| got.to_string(), |s| format!("`{}`", s.trim_matches('"')));
        let want = match want {
            "a boolean" => "true or false",
            "usize" | "u32" | "u64" | "u16" | "u8" => "a whole number (0 or more)",
            "i64" | "i32" => "a whole number",
            "f64" | "f32" => "a number",
            "a string" => "text",
            "a sequence" => "a list",
            "a map" => "a mapping (`key: value` lines)",
            other => other,
        };
        return format!("{got} is not {want}");
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((got, want)) = rest.split_once(", expected ") {
            let want = match want {
                "usize" | "u32" | "u64" => "a whole number (0 or more) that fits",
                other => other,
            };
            return format!("{got} is not {want}");
        }
    }
    if message.contains("did not match any variant of untagged enum OneOrMany") {
        return "expected one value or a list of them".into();
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((got, allowed)) = rest.split_once(", expected ") {
            return format!("{got} is not one of {}", allowed.replace("one of ", ""));
        }
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("{field} is missing");
    }
    message.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::task::At;

    /// The position of `at` inside `config`'s `sql:` value.
    fn sql_pos(config: &str, line: usize, column: usize) -> (usize, usize) {
        let root = yaml::parse(config).unwrap().unwrap();
        let (key, value) = root
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some("sql"))
            .unwrap();
        let at = At {
            field: "sql",
            line,
            column,
        };
        let p = pos_in_value(config, key, value, at);
        (p.line, p.col)
    }

    /// Loads `text` with the test `noop` kind, as the other engine tests do.
    pub(crate) fn load(text: &str) -> Result<Workflow, Diagnostics> {
        let mut registry = crate::task::Registry::default();
        registry.register::<crate::backfill::tests::Noop>();
        load_with(text, &registry)
    }

    /// Loads `text` with the kinds of `registry`.
    pub(crate) fn load_with(
        text: &str,
        registry: &crate::task::Registry,
    ) -> Result<Workflow, Diagnostics> {
        let opts = LoadOptions {
            registry,
            overrides: Default::default(),
            inherited: Default::default(),
            run_id: "r".into(),
            date: "2026-01-01".into(),
            scheduled_at: None,
            trigger_files: Vec::new(),
            env: Default::default(),
            default_warehouse: "/tmp/wh".into(),
            backend: None,
            channels_file: None,
        };
        load_str(Path::new("/tmp/w.yaml"), text.to_string(), &opts)
    }

    #[test]
    fn retention_is_a_duration_of_at_least_a_day() {
        let wf = load("name: w\nretention: 90d\ntasks:\n  a:\n    kind: noop\n").unwrap();
        assert_eq!(wf.retention, Some(Duration::from_secs(90 * 86_400)));
        let e = load("name: w\nretention: 1h\ntasks:\n  a:\n    kind: noop\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("w.yaml:2:12: `retention` must be at least 1d"),
            "{e}"
        );
        let e = load("name: w\nretention: soon\ntasks:\n  a:\n    kind: noop\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention"), "{e}");
    }

    #[test]
    fn positions_inside_sql_values() {
        // Block scalars keep lines: text line 2 is the file's line 3, after the indent.
        assert_eq!(
            sql_pos("kind: x\nsql: |\n  SELECT 1,\n    count(*\n", 2, 9),
            (4, 11)
        );
        assert_eq!(sql_pos("sql: >-\n  SELECT a\n", 1, 8), (2, 10));
        // One-line scalars: after the quote, if any.
        assert_eq!(sql_pos("sql: SELECT count(* FROM t\n", 1, 16), (1, 21));
        assert_eq!(sql_pos("sql: \"SELECT count(* FROM t\"\n", 1, 16), (1, 22));
        assert_eq!(sql_pos("sql: 'SELECT x'\n", 1, 8), (1, 14));
        // A line the text does not match (a template changed it): its first character.
        assert_eq!(sql_pos("sql: |\n  SELECT 1\n", 1, 9).0, 2);
    }
}
