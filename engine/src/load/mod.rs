//! Loading a workflow file: YAML → checked, template-rendered, built [`Workflow`].
//!
//! Every check runs and every problem is collected (with its line and column) before
//! anything is reported, so one `validate` shows all of them.
//!
//! `Loader::load` reads the top-level fields in one pass, each by its own function
//! (`fields.rs`, `schedule.rs`; `channels:`, `notify:` and `tasks:` are kept for later),
//! then does what needs several of them: the params and their overrides, the backend,
//! the templates' values (`templates.rs`), the channels and `notify:` (`channels.rs`),
//! the tasks and their DAG (`tasks.rs`), the schedule. `report.rs` is how problems are
//! worded and placed.

mod channels;
mod fields;
mod report;
mod schedule;
mod schema;
mod tasks;
mod templates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

use crate::arrival::FileTrigger;
use crate::backend::{AwsBlock, Backend};
use crate::channel::Channel;
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::Workflow;
use crate::schedule::{Catchup, Concurrency, Dst, Expr};
use crate::task::Registry;
use crate::template::Renderer;
use crate::yaml::{self, Node, Pos};

pub use schema::workflow_schema;
pub use tasks::{COMMON_TASK_FIELDS, MAX_ID_LEN};

/// Every top-level field, for suggestions.
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
    "lineage",
    "plugins",
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
        lineage: None,
        workflow: String::new(),
        file: path,
        source: &source,
        reads: Vec::new(),
        plugins: BTreeMap::new(),
    }
    .load();
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

struct Loader<'a, 'e> {
    opts: &'a LoadOptions<'a>,
    errs: &'e mut Vec<Diagnostic>,
    warns: &'e mut Vec<Diagnostic>,
    /// Where the data tasks run, for their `BuildContext`.
    backend: Backend,
    aws: Option<AwsBlock>,
    channels: BTreeMap<String, Channel>,
    /// `lineage:` (the workflow's, or the shared channels file's).
    lineage: Option<crate::lineage::Lineage>,
    /// The workflow's `name:` (empty if missing or invalid), for its tasks' `BuildContext`.
    workflow: String,
    /// The file (its directory is the workflow's) and its text, to point config errors
    /// inside a field's value.
    file: &'e Path,
    source: &'e str,
    /// The upstream outputs (`tasks.ID.outputs.NAME`) the task being read refers to, with
    /// where: checked against the DAG once every task is read.
    reads: Vec<(String, Pos)>,
    /// `plugins:`: kind to executable (as written) and where it is written.
    plugins: BTreeMap<String, (PathBuf, Pos)>,
}

/// The top-level fields as read, before the checks and the work that need several of
/// them. `None`: not given, or given and invalid (reported).
#[derive(Default)]
struct Top<'n> {
    name: Option<String>,
    description: Option<String>,
    params: Option<BTreeMap<String, String>>,
    max_parallel: Option<usize>,
    max_active_runs: Option<usize>,
    sla: Option<Duration>,
    retention: Option<Duration>,
    warehouse: Option<PathBuf>,
    defaults: Option<tasks::DefaultsSpec>,
    backend: Option<(Backend, Pos)>,
    aws: Option<(AwsBlock, Pos)>,
    schedule: Option<Vec<Expr>>,
    timezone: Option<(Tz, Pos)>,
    dst: Option<(Dst, Pos)>,
    deadline: Option<(chrono::NaiveTime, Pos)>,
    start_date: Option<chrono::DateTime<chrono::Utc>>,
    catchup: Option<Catchup>,
    max_catchup: Option<usize>,
    concurrency: Option<Concurrency>,
    resume_interrupted: Option<bool>,
    on_files: Option<FileTrigger>,
    /// Read once the params are known (templates) and the channels defined.
    channels: Option<&'n Node>,
    notify: Option<&'n Node>,
    lineage: Option<&'n Node>,
    tasks: Option<&'n Node>,
}

/// Keeps what a field's function read; a field given twice (an error already) keeps the
/// last valid value.
fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

impl Loader<'_, '_> {
    fn load(&mut self) -> Option<Workflow> {
        let root = self.root()?;
        let entries = root.as_map()?;
        self.check_duplicate_keys(&root, true);
        let mut top = Top::default();
        for (k, v) in entries {
            self.field(&mut top, k, v);
        }
        if top.name.is_none() && !entries.iter().any(|(k, _)| k.as_str() == Some("name")) {
            self.err(Some(root.pos), "missing field `name`").help =
                Some("add `name: my_workflow` (lowercase letters, digits, `_`, `-`)".into());
        }
        let params = self.params_with_overrides(top.params.take().unwrap_or_default());
        self.choose_backend(&top, &root);
        self.workflow = top.name.clone().unwrap_or_default();

        let task_entries = self.task_entries(top.tasks, &root)?;
        let vars = self.template_vars(&params);
        let renderer = Renderer::new(&vars);
        self.all_channels(top.channels, top.lineage, &renderer);
        let notify = top.notify.map(|n| self.notify(n)).unwrap_or_default();
        let base_dir = self
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let defaults = top.defaults.take().unwrap_or_default();
        let task_renderer = Renderer::for_task_config(&vars);
        let pending = self.tasks(task_entries, &defaults, &task_renderer, &base_dir);
        let dag = self.dag(&pending);
        if let Some(dag) = &dag {
            self.check_reads(&pending, dag);
        }
        let schedule = self.schedule(&top);

        let dag = dag?;
        if !self.errs.is_empty() {
            return None;
        }
        let tasks: Vec<_> = pending.into_iter().map(|t| t.def).collect::<Option<_>>()?;
        Some(Workflow {
            ids: tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), i))
                .collect(),
            name: top.name.take()?,
            description: top.description.take(),
            path: self.file.to_path_buf(),
            source: self.source.to_string(),
            params,
            max_parallel: top.max_parallel.unwrap_or_else(default_parallelism),
            max_active_runs: top.max_active_runs.unwrap_or(1),
            backend: self.backend,
            aws: self.aws.clone(),
            lake: top
                .warehouse
                .as_ref()
                .and_then(|w| w.to_str())
                .filter(|w| w.starts_with("s3://") && self.backend == Backend::Local)
                .map(|w| w.trim_end_matches('/').to_string()),
            warehouse: match top.warehouse.take() {
                Some(w) if w.to_str().is_some_and(|w| w.starts_with("s3://")) => {
                    self.opts.default_warehouse.clone()
                }
                Some(w) if w.is_absolute() => w,
                Some(w) => base_dir.join(w),
                None => self.opts.default_warehouse.clone(),
            },
            channels: self.channels.clone(),
            lineage: self.lineage.take(),
            channels_file: self.opts.channels_file.clone(),
            trigger_files: self.opts.trigger_files.clone(),
            notify,
            sla: top.sla,
            retention: top.retention,
            tasks,
            dag,
            schedule,
            policy: schedule::policy(&top),
            on_files: top.on_files.take(),
            warnings: Vec::new(),
        })
    }

    /// The document's root mapping, or `None` with the error (empty, bad YAML, not a
    /// mapping).
    fn root(&mut self) -> Option<Node> {
        let root = match yaml::parse(self.source) {
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
        if root.as_map().is_none() {
            self.err(
                Some(root.pos),
                format!("a workflow must be a mapping, found {}", root.describe()),
            );
            return None;
        }
        Some(root)
    }

    /// One top-level field, read by its own function into `top`.
    fn field<'n>(&mut self, top: &mut Top<'n>, key: &Node, v: &'n Node) {
        match key.as_str().unwrap_or_default() {
            "name" => set(&mut top.name, self.name(v)),
            "description" => set(&mut top.description, self.description(v)),
            "params" => set(&mut top.params, self.params(v)),
            "plugins" => {
                if let Some(p) = self.plugins(v) {
                    self.plugins = p;
                }
            }
            "max_parallel" => set(&mut top.max_parallel, self.max_parallel(v)),
            "max_active_runs" => set(&mut top.max_active_runs, self.max_active_runs(v)),
            "sla" => set(&mut top.sla, self.sla(v)),
            "retention" => set(&mut top.retention, self.retention(v)),
            "warehouse" => set(&mut top.warehouse, self.warehouse(v)),
            "defaults" => set(&mut top.defaults, self.defaults(v)),
            "backend" => set(&mut top.backend, self.backend(v)),
            "aws" => set(&mut top.aws, self.aws(v)),
            "schedule" => top.schedule = Some(self.schedule_exprs(v)),
            "timezone" => set(&mut top.timezone, self.timezone(v)),
            "dst" => set(&mut top.dst, self.dst(v)),
            "deadline" => set(&mut top.deadline, self.deadline(v)),
            "start_date" => set(&mut top.start_date, self.start_date(v)),
            "catchup" => set(&mut top.catchup, self.catchup(v)),
            "max_catchup" => set(&mut top.max_catchup, self.max_catchup(v)),
            "concurrency" => set(&mut top.concurrency, self.concurrency(v)),
            "resume_interrupted" => set(&mut top.resume_interrupted, self.resume_interrupted(v)),
            "on" => set(&mut top.on_files, self.on(v)),
            "channels" => top.channels = Some(v),
            "notify" => top.notify = Some(v),
            "lineage" => top.lineage = Some(v),
            "tasks" => top.tasks = Some(v),
            other => self.unknown_top_field(key, other),
        }
    }
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::report::pos_in_value;
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
        registry.register::<crate::testkit::Noop>();
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
    fn an_s3_warehouse_holds_published_tables_and_work_tables_stay_local() {
        let wf = load("name: w\nwarehouse: s3://lake/wh/\ntasks:\n  a:\n    kind: noop\n").unwrap();
        assert_eq!(wf.lake.as_deref(), Some("s3://lake/wh"));
        assert_eq!(wf.warehouse, Path::new("/tmp/wh"));
        let wf = load("name: w\nwarehouse: lake\ntasks:\n  a:\n    kind: noop\n").unwrap();
        assert_eq!(
            (wf.lake, wf.warehouse),
            (None, Path::new("/tmp/lake").into())
        );
        let e = load("name: w\nwarehouse: s3:///wh\ntasks:\n  a:\n    kind: noop\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("w.yaml:2:12: `warehouse: s3:///wh` names no bucket"),
            "{e}"
        );
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
