//! The plugin boundary: what a task kind implements and what it is given.
//!
//! A kind is a typed config struct (`#[serde(deny_unknown_fields)]`) implementing
//! [`TaskConfig`]; its `build` makes the runnable [`Task`]. Registering it is one line:
//! `registry.register::<ShellConfig>()`. The engine reads the task's YAML mapping, minus
//! the keys common to every task (`kind`, `after`, `trigger`, `retries`, ...), into
//! that struct, after rendering its templates.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use tokio_util::sync::CancellationToken;

use crate::backend::{AwsBlock, Backend};
use crate::catalog::Catalog;
use crate::channel::Channel;
use crate::sent::SentMessages;
use crate::template::Redactor;
use crate::usage::UsageCounters;
use crate::yaml::{DeError, Node};

/// Named values a task produces; stored with the attempt and shown by `show`.
pub type Outputs = serde_json::Map<String, serde_json::Value>;

/// The output key by which a successful attempt says "nothing to do": its value is the
/// reason. The engine then skips every task downstream of it (whatever their trigger
/// rules, like Airflow's ShortCircuitOperator) and the run can still succeed. A kind only
/// sets it when the task has `short_circuit: true` ([`TaskContext::short_circuit`]);
/// otherwise "nothing to do" is the kind's to report as a failure.
pub const SHORT_CIRCUIT: &str = "short_circuit";

/// A runnable task, built once per run from its config.
#[async_trait::async_trait]
pub trait Task: Send + Sync + fmt::Debug {
    /// Runs one attempt.
    ///
    /// Must return soon after `ctx.cancel` fires (timeout or run cancellation), having
    /// stopped everything it started (child processes, queries); the engine records why
    /// it was cancelled. Write progress and diagnostics with `ctx.output`.
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure>;

    /// The logical date a manual run should take when none is given, if this task knows
    /// better than today (e.g. an ingest that reads a bundled sample offline: the
    /// sample's newest day). Asked after loading, without running anything.
    fn default_date(&self) -> Option<DefaultDate> {
        None
    }

    /// The datasets this task reads and writes, for OpenLineage events
    /// ([`crate::lineage`]): asked when an attempt starts (`outputs` is `None`) and when
    /// it ends (its outputs, a failure's too), so a kind may add what it learnt (a
    /// quality check's results, the rows a publish inserted). Most kinds name none.
    fn lineage(
        &self,
        _place: crate::lineage::Place<'_>,
        _outputs: Option<&Outputs>,
    ) -> crate::lineage::Datasets {
        crate::lineage::Datasets::default()
    }
}

/// A task's answer to [`Task::default_date`].
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultDate {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Why, for the first line the run prints.
    pub why: String,
}

/// Why an attempt failed, in words a user can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    pub message: String,
    pub exit_code: Option<i32>,
    /// What the attempt found before failing (e.g. each audit rule's result); stored with
    /// the attempt like a success's outputs.
    pub outputs: Outputs,
    /// Whether the task's `retries:` apply. `false` when another attempt would fail the
    /// same way (a plugin that answered `failed`, or broke the protocol).
    pub retryable: bool,
}

impl TaskFailure {
    pub fn new(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            exit_code: None,
            outputs: Outputs::new(),
            retryable: true,
        }
    }

    /// This failure, not retried whatever the task's `retries:`.
    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything an attempt may know about where it runs.
#[derive(Clone)]
pub struct TaskContext {
    pub run_id: String,
    pub task_id: String,
    /// 1-based, counting across reruns.
    pub attempt: u32,
    /// `YYYY-MM-DD`.
    pub logical_date: String,
    /// The workflow file's directory: relative paths in the config resolve against it.
    pub base_dir: PathBuf,
    /// Where tables created by the workflow are written (absolute).
    pub warehouse: PathBuf,
    /// Where published tables go when the warehouse is on S3 (`s3://bucket/prefix`).
    pub lake: Option<String>,
    pub catalog: Arc<dyn Catalog>,
    /// Daily counters of calls to external services (quotas), across runs.
    pub usage: Arc<dyn UsageCounters>,
    /// The messages already sent (by key), so that none is sent twice.
    pub sent: Arc<dyn SentMessages>,
    /// The task has `short_circuit: true`: it may end its branch with [`SHORT_CIRCUIT`].
    pub short_circuit: bool,
    pub cancel: CancellationToken,
    pub output: OutputSink,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("run_id", &self.run_id)
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// Where a task writes its output: each line is masked, streamed to the log prefixed by
/// the task id, and its tail kept for the attempt record.
#[derive(Clone)]
pub struct OutputSink {
    task_id: Arc<str>,
    redactor: Arc<Redactor>,
    tail: Arc<Mutex<Tail>>,
    progress: Arc<Mutex<Option<Progress>>>,
}

/// How far a running attempt says it is (a plugin's `progress` message): shown by the
/// CLI as an output line and by the web UI beside the running task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    /// 0.0 to 1.0.
    pub fraction: f64,
    pub message: String,
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSink")
            .field("task_id", &self.task_id)
            .finish()
    }
}

#[derive(Default)]
struct Tail {
    text: String,
    dropped: bool,
}

impl OutputSink {
    /// Bytes of output kept per attempt (the tail; older output is dropped).
    pub const TAIL_BYTES: usize = 16 * 1024;

    pub fn new(task_id: &str, redactor: Arc<Redactor>) -> Self {
        OutputSink {
            task_id: task_id.into(),
            redactor,
            tail: Arc::default(),
            progress: Arc::default(),
        }
    }

    /// This sink (same tail, same progress) also masking `secrets`: a plugin's secret
    /// values, whatever their names.
    pub fn masking(&self, secrets: impl IntoIterator<Item = String>) -> OutputSink {
        OutputSink {
            redactor: Arc::new(self.redactor.as_ref().clone().with(secrets)),
            ..self.clone()
        }
    }

    /// Masks the secrets this sink masks in `text`.
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        self.redactor.redact(text)
    }

    /// Records the attempt's progress (clamped to 0..=1) and writes it as an output line.
    pub fn progress(&self, fraction: f64, message: &str) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let message = self.redactor.redact(message).into_owned();
        self.line(&format!(
            "[progress {:.0}%] {message}",
            (fraction * 100.0).floor()
        ));
        if let Ok(mut p) = self.progress.lock() {
            *p = Some(Progress { fraction, message });
        }
    }

    /// The last progress reported, if any.
    pub fn last_progress(&self) -> Option<Progress> {
        self.progress.lock().ok()?.clone()
    }

    pub fn line(&self, line: &str) {
        OUTPUT_LINES.fetch_add(1, std::sync::atomic::Ordering::Release);
        let line = self.redactor.redact(line);
        tracing::info!(target: "task", "{} | {}", self.task_id, line);
        let Ok(mut tail) = self.tail.lock() else {
            return;
        };
        tail.text.push_str(&line);
        tail.text.push('\n');
        if tail.text.len() > 2 * Self::TAIL_BYTES {
            let mut cut = tail.text.len() - Self::TAIL_BYTES;
            while !tail.text.is_char_boundary(cut) {
                cut += 1;
            }
            tail.text.drain(..cut);
            tail.dropped = true;
        }
    }

    /// The kept tail of the output, at most [`Self::TAIL_BYTES`].
    pub fn tail(&self) -> String {
        let Ok(tail) = self.tail.lock() else {
            return String::new();
        };
        let text = &tail.text;
        let mut cut = text.len().saturating_sub(Self::TAIL_BYTES);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        if tail.dropped || cut > 0 {
            format!("[... earlier output dropped]\n{}", &text[cut..])
        } else {
            text.clone()
        }
    }
}

static OUTPUT_LINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Lines of task output written in this process so far: live pages re-read a running
/// task's output only when it grows.
pub fn output_lines() -> u64 {
    OUTPUT_LINES.load(std::sync::atomic::Ordering::Acquire)
}

/// The output of attempts in progress in this process, by run and task: what the web UI
/// shows while a task runs (the store gets the tail when the attempt ends; writing every
/// line durably would cost a disk sync per line).
static LIVE: std::sync::OnceLock<Mutex<std::collections::HashMap<(String, String), OutputSink>>> =
    std::sync::OnceLock::new();

fn live() -> &'static Mutex<std::collections::HashMap<(String, String), OutputSink>> {
    LIVE.get_or_init(Default::default)
}

/// The output so far of task `task_id`'s attempt in progress in run `run_id`, if one is
/// running in this process.
pub fn live_tail(run_id: &str, task_id: &str) -> Option<String> {
    let map = live().lock().ok()?;
    map.get(&(run_id.to_string(), task_id.to_string()))
        .map(OutputSink::tail)
}

/// The progress the attempt in progress of task `task_id` in run `run_id` last reported,
/// if one is running in this process and reported any.
pub fn live_progress(run_id: &str, task_id: &str) -> Option<Progress> {
    let map = live().lock().ok()?;
    map.get(&(run_id.to_string(), task_id.to_string()))?
        .last_progress()
}

/// Registers an attempt's output for [`live_tail`] until dropped.
pub struct LiveOutput {
    key: (String, String),
}

impl LiveOutput {
    pub fn register(run_id: &str, task_id: &str, sink: &OutputSink) -> LiveOutput {
        let key = (run_id.to_string(), task_id.to_string());
        if let Ok(mut map) = live().lock() {
            map.insert(key.clone(), sink.clone());
        }
        LiveOutput { key }
    }
}

impl Drop for LiveOutput {
    fn drop(&mut self) {
        if let Ok(mut map) = live().lock() {
            map.remove(&self.key);
        }
    }
}

/// What a config's `build` can use.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub task_id: String,
    /// The workflow's `name:`.
    pub workflow: String,
    /// The workflow file's directory.
    pub base_dir: PathBuf,
    /// Where the workflow's data tasks run.
    pub backend: Backend,
    /// The backend was chosen by `--backend` (or a rerun's recorded one), not the file.
    pub backend_overridden: bool,
    /// The workflow's `aws:` block (checked: with the aws backend it has a database, an
    /// output location and a warehouse).
    pub aws: Option<AwsBlock>,
    /// The workflow's `channels:`, by name.
    pub channels: BTreeMap<String, Channel>,
    /// The workflow file, for [`BuildContext::location`].
    pub file: PathBuf,
    /// The line of each top-level config field's value in the file.
    pub field_lines: BTreeMap<String, usize>,
}

impl BuildContext {
    /// `FILE:LINE` of a config field's value, for errors the task finds when it runs
    /// (e.g. an unknown column in `sql:`).
    pub fn location(&self, field: &str) -> Option<String> {
        let line = self.field_lines.get(field)?;
        Some(format!("{}:{line}", self.file.display()))
    }

    /// A path from the task's config: relative to the workflow file's directory (so a
    /// workflow runs the same from any working directory), an absolute one as it is.
    pub fn resolve(&self, path: impl AsRef<std::path::Path>) -> PathBuf {
        // `join` keeps an absolute argument whole.
        self.base_dir.join(path)
    }
}

/// Why a task's config is invalid. Plain messages are reported at the task's line; with
/// [`Invalid::at`], at the exact line and column inside one field's text (a SQL syntax
/// error points into the YAML block that holds the SQL).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub message: String,
    pub help: Option<String>,
    pub at: Option<At>,
    /// Further independent problems of the same config, reported with this one.
    pub more: Vec<Invalid>,
}

/// A place inside a string field's value: 1-based line and character column of the
/// value's text (after YAML's own indentation is removed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct At {
    pub field: &'static str,
    pub line: usize,
    pub column: usize,
}

impl Invalid {
    pub fn at(message: impl Into<String>, at: At) -> Self {
        Invalid {
            message: message.into(),
            help: None,
            at: Some(at),
            more: Vec::new(),
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The first of `problems` carrying the rest, or `None` if there are none.
    pub fn all(mut problems: Vec<Invalid>) -> Option<Invalid> {
        if problems.is_empty() {
            return None;
        }
        let mut first = problems.remove(0);
        first.more.extend(problems);
        Some(first)
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid {
            message,
            help: None,
            at: None,
            more: Vec::new(),
        }
    }
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// A kind's typed config: the deserialized YAML is the factory. Its JSON Schema
/// (`schemars`, from the same struct) is what `plugins describe` and `orchestrator
/// schema` show, so the two cannot drift.
pub trait TaskConfig: DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static {
    /// The `kind:` name.
    const KIND: &'static str;

    /// The outputs an attempt may set, each with what it holds (for `plugins describe`).
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[];

    /// Whether the kind honours `short_circuit: true` ([`SHORT_CIRCUIT`]).
    const SHORT_CIRCUIT: bool = false;

    /// Makes the task. An `Err` is a validation error reported at the task's line, or
    /// inside a field's value when it says where.
    fn build(self, ctx: &BuildContext) -> Result<Arc<dyn Task>, Invalid>;
}

/// Where a kind comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindSource {
    Builtin,
    /// A plugin executable (absolute path).
    Plugin(PathBuf),
}

impl fmt::Display for KindSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KindSource::Builtin => f.write_str("builtin"),
            KindSource::Plugin(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a kind says of itself: `plugins describe`, and the workflow's JSON Schema.
#[derive(Debug, Clone)]
pub struct KindInfo {
    pub kind: String,
    pub source: KindSource,
    pub description: Option<String>,
    /// A JSON Schema (draft 2020-12) of the kind's own fields: an object schema whose
    /// refs point into `#/$defs/` (a plugin's schema holds its own; a built-in kind's
    /// are in the generator it was made with).
    pub fields: serde_json::Value,
    /// Output name and what it holds.
    pub outputs: Vec<(String, String)>,
    pub short_circuit: bool,
}

/// A registered kind, type-erased.
pub trait TaskKind: Send + Sync {
    fn build(&self, config: &Node, ctx: &BuildContext) -> Result<Arc<dyn Task>, BuildError>;

    /// Its description; built-in kinds add their schema's definitions to `generator`.
    fn info(&self, generator: &mut schemars::SchemaGenerator) -> KindInfo;
}

#[derive(Debug)]
pub enum BuildError {
    Config(DeError),
    Invalid(Invalid),
    /// Problems at exact places in the file (a plugin's fields checked against its
    /// schema), each reported as it is.
    Problems(Vec<Problem>),
}

/// One problem of a task's config at a place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub pos: crate::yaml::Pos,
    pub message: String,
    pub help: Option<String>,
}

struct ConfigKind<C>(std::marker::PhantomData<fn() -> C>);

impl<C: TaskConfig> TaskKind for ConfigKind<C> {
    fn build(&self, config: &Node, ctx: &BuildContext) -> Result<Arc<dyn Task>, BuildError> {
        let config: C = config.parse().map_err(BuildError::Config)?;
        config.build(ctx).map_err(BuildError::Invalid)
    }

    fn info(&self, generator: &mut schemars::SchemaGenerator) -> KindInfo {
        let mut fields = generator.root_schema_for::<C>().to_value();
        let description = fields
            .as_object_mut()
            .and_then(|o| {
                // Definitions stay in the generator, shared by every kind.
                o.remove("$defs");
                o.remove("$schema");
                o.remove("title");
                o.remove("description")
            })
            .and_then(|d| d.as_str().map(str::to_string));
        KindInfo {
            kind: C::KIND.to_string(),
            source: KindSource::Builtin,
            description,
            fields,
            outputs: C::OUTPUTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            short_circuit: C::SHORT_CIRCUIT,
        }
    }
}

/// Finds task kinds that are not built in: plugins (`orchestrator_tasks::plugin`).
pub trait PluginFinder: Send + Sync {
    /// Kind `kind` for a workflow in `workflow_dir`: from `path` when the workflow's
    /// `plugins:` names one, else from the plugins directory. `None`: no such plugin;
    /// `Some(Err)`: found but unusable (its `describe` failed), in words that say what
    /// to do.
    fn find(
        &self,
        kind: &str,
        path: Option<&std::path::Path>,
        workflow_dir: &std::path::Path,
    ) -> Option<Result<Arc<dyn TaskKind>, String>>;

    /// Where plugins are looked for, for a workflow in `workflow_dir` (for messages).
    fn dirs(&self, workflow_dir: &std::path::Path) -> Vec<PathBuf>;
}

/// The task kinds a workflow may use: the built-in ones, and plugins through a
/// [`PluginFinder`].
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn TaskKind>>,
    plugins: Option<Arc<dyn PluginFinder>>,
}

impl Registry {
    pub fn register<C: TaskConfig>(&mut self) -> &mut Self {
        self.kinds.insert(
            C::KIND.to_string(),
            Arc::new(ConfigKind::<C>(std::marker::PhantomData)),
        );
        self
    }

    /// With plugins found by `finder` for kinds that are not built in.
    pub fn with_plugins(mut self, finder: Arc<dyn PluginFinder>) -> Self {
        self.plugins = Some(finder);
        self
    }

    /// A built-in kind.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn TaskKind>> {
        self.kinds.get(kind)
    }

    /// A plugin kind (see [`PluginFinder::find`]).
    pub fn plugin(
        &self,
        kind: &str,
        path: Option<&std::path::Path>,
        workflow_dir: &std::path::Path,
    ) -> Option<Result<Arc<dyn TaskKind>, String>> {
        self.plugins.as_ref()?.find(kind, path, workflow_dir)
    }

    /// Where plugins are looked for, for a workflow in `workflow_dir`.
    pub fn plugin_dirs(&self, workflow_dir: &std::path::Path) -> Vec<PathBuf> {
        self.plugins
            .as_ref()
            .map(|p| p.dirs(workflow_dir))
            .unwrap_or_default()
    }

    /// The built-in kinds' names.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.kinds.keys().map(String::as_str)
    }

    /// The built-in kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn TaskKind>> + '_ {
        self.kinds.values()
    }
}

/// A timeout: a [`Dur`] greater than zero (a zero timeout would fail every attempt at
/// once; leave `timeout` out for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub std::time::Duration);

impl<'de> serde::Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Dur(d0) = Dur::deserialize(d)?;
        if d0.is_zero() {
            return Err(serde::de::Error::custom(
                "a timeout must be greater than 0; leave `timeout` out for none",
            ));
        }
        Ok(Timeout(d0))
    }
}

/// A duration in a config, written like `500ms`, `30s`, `5m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration; write a number and a unit, e.g. 500ms, 30s, 5m, 1h30m"
            ))
        })
    }
}

/// A duration's schema: a string written `500ms`, `30s`, `5m`, `1h30m`.
fn duration_schema(description: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": r"^\s*([0-9]+\s*[a-zA-Z]+\s*)+$",
        "description": description,
    })
}

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        duration_schema("A duration: a number and a unit, e.g. 500ms, 30s, 5m, 1h30m.")
    }
}

impl schemars::JsonSchema for Timeout {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timeout".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        duration_schema(
            "How long an attempt may take before it is killed and fails, e.g. 30s, 5m, 1h30m; greater than 0.",
        )
    }
}
