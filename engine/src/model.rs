//! The workflow model: what a loaded workflow is, as plain values. Building one from a
//! file (reading, checking, rendering templates) is [`crate::load`]'s job; running one is
//! [`crate::executor`]'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::arrival::FileTrigger;
use crate::backend::{AwsBlock, Backend};
use crate::channel::Channel;
use crate::dag::Dag;
use crate::diag::Diagnostic;
use crate::schedule::{DaemonPolicy, Schedule};
use crate::task::Task;
use crate::trigger::TriggerRule;

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
    /// `warehouse: s3://bucket/prefix` with the local backend: where published (Delta)
    /// tables are stored; work tables stay in `warehouse` (`{state-dir}/warehouse`).
    pub lake: Option<String>,
    /// `channels:`, by name (templates rendered), over the shared channels file's.
    pub channels: BTreeMap<String, Channel>,
    /// `lineage:`: OpenLineage events go to the channel [`crate::lineage::CHANNEL`].
    pub lineage: Option<crate::lineage::Lineage>,
    /// `--channels FILE`, when given (see [`crate::load::LoadOptions::channels_file`]).
    pub channels_file: Option<PathBuf>,
    /// `{{ trigger.files }}` it was loaded with (recorded with the run, so that a rerun
    /// or a resumed run sees the same files).
    pub trigger_files: Vec<String>,
    /// `notify:`: which run events go to which channels.
    pub notify: Vec<Subscription>,
    /// `sla:`: a run still going after this long notifies `sla_miss` (once per execution).
    pub sla: Option<Duration>,
    /// `retention:`: runs older than this are deleted (by the daemon after each run, and
    /// by `orchestrator gc` without `--older-than`), as [`crate::retention`] allows.
    pub retention: Option<Duration>,
    /// In file order.
    pub tasks: Vec<TaskDef>,
    /// Task id to index in `tasks` (see [`Workflow::index_of`]); the loader fills it.
    pub(crate) ids: HashMap<String, usize>,
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
    /// Built from the config with any upstream outputs standing in as `0`; the task
    /// itself when [`TaskDef::late`] is `None`.
    pub task: Arc<dyn Task>,
    /// Fields that read upstream outputs (`{{ tasks.ID.outputs.NAME }}`): the task is
    /// built again from them when it starts (see [`crate::late`]).
    pub late: Option<Arc<crate::late::Late>>,
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

/// What a subscription listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A run ended `failed` (or `cancelled`).
    Failure,
    /// A run ended `succeeded`.
    Success,
    /// A task attempt failed and will be retried.
    Retry,
    /// A run was found interrupted (the process died) when the state dir was opened.
    Interrupted,
    /// A run was still going `sla:` after it started.
    SlaMiss,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failure => "failure",
            NotifyEvent::Success => "success",
            NotifyEvent::Retry => "retry",
            NotifyEvent::Interrupted => "interrupted",
            NotifyEvent::SlaMiss => "sla_miss",
        }
    }
}

/// One entry of `notify:`: these events go to these channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub on: Vec<NotifyEvent>,
    pub to: Vec<String>,
}
