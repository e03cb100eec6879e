//! The daemon's interface: what the binary configures, the commands other processes
//! send, and the answers they get.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator_engine::diag::Diagnostics;
use orchestrator_engine::workflow::Workflow;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a workflow is loaded for: a run's id, logical date, fire instant, and (for a
/// resumed run) the params it ran with.
#[derive(Debug, Clone)]
pub struct RunParams {
    pub run_id: String,
    pub date: String,
    pub scheduled_at: Option<String>,
    pub inherited: BTreeMap<String, String>,
    /// The files that started a file-triggered run.
    pub trigger_files: Vec<String>,
    /// `--param` overrides of a triggered run.
    pub overrides: BTreeMap<String, String>,
}

/// Why the daemon did not do what another process asked: the kind decides the answer
/// (an HTTP status, whether to wait and ask again), the message is for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub kind: RefusedKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// The request itself is wrong (a bad date, a workflow that does not load).
    Invalid,
    /// What it names does not exist here (a run, a workflow, a run in progress).
    NotFound,
    /// The workflow has a run in progress: ask again when it has ended.
    Busy,
}

impl Refused {
    pub fn not_found(message: impl Into<String>) -> Refused {
        Refused {
            kind: RefusedKind::NotFound,
            message: message.into(),
        }
    }

    pub fn busy(message: impl Into<String>) -> Refused {
        Refused {
            kind: RefusedKind::Busy,
            message: message.into(),
        }
    }
}

impl From<String> for Refused {
    fn from(message: String) -> Refused {
        Refused {
            kind: RefusedKind::Invalid,
            message,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Requests to a running daemon from other processes (through the binary's local API).
pub enum Command {
    /// Start a run of a workflow the daemon knows, now (subject to `concurrency:`).
    /// Replies with the run id, or why not.
    Trigger {
        workflow: String,
        params: BTreeMap<String, String>,
        date: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<String, Refused>>,
    },
    /// Start a run of a workflow file now (`orchestrator run FILE` while the daemon owns
    /// the state dir). Replies with the run id, or why not.
    Run {
        path: PathBuf,
        params: BTreeMap<String, String>,
        date: String,
        /// What started it, recorded with the run (default `manual`), e.g. `backfill ID`.
        trigger: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<String, Refused>>,
    },
    /// Resume a run as `orchestrator rerun` would (with `--from TASK`, that task and
    /// everything downstream too). Replies with the run id, or why not.
    Rerun {
        run_id: String,
        from: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<String, Refused>>,
    },
    /// Cancel a run in progress in this daemon.
    Cancel {
        run_id: String,
        reply: tokio::sync::oneshot::Sender<Result<(), Refused>>,
    },
    /// What the daemon has scheduled and watches, and which files it could not load.
    Status {
        reply: tokio::sync::oneshot::Sender<Status>,
    },
}

/// The daemon's view of its workflows directory (for the web UI's workflows page).
#[derive(Debug, Clone)]
pub struct Status {
    pub workflows_dir: PathBuf,
    /// Scheduled or file-triggered workflows, by name.
    pub workflows: Vec<WorkflowStatus>,
    /// Files whose latest text does not validate, with the loader's diagnostics
    /// (file:line). A workflow that validated before keeps running its previous version.
    pub invalid: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone)]
pub struct WorkflowStatus {
    pub name: String,
    pub path: PathBuf,
    /// The version in force.
    pub workflow: Workflow,
    /// The next fire times (up to 5), in UTC.
    pub next: Vec<DateTime<Utc>>,
    /// The run in progress, if any.
    pub active_run: Option<String>,
    /// Due runs waiting for it.
    pub queued: usize,
    /// Files that arrived and wait for the debounce to start a run.
    pub pending_files: Vec<PathBuf>,
}

/// Sends [`Command`]s to a running daemon.
pub type Commands = mpsc::UnboundedSender<Command>;

/// A channel for [`run`](crate::run)'s `commands`.
pub fn commands() -> (Commands, mpsc::UnboundedReceiver<Command>) {
    mpsc::unbounded_channel()
}

/// Loads a workflow from a file's text for a run.
pub type Loader =
    Arc<dyn Fn(&Path, String, &RunParams) -> Result<Workflow, Diagnostics> + Send + Sync>;

/// Checks made before a run starts; an `Err` says why it cannot.
pub type Prepare = Arc<dyn Fn(&Workflow) -> Result<(), String> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Config {
    pub workflows_dir: PathBuf,
    /// On shutdown, how long running tasks may go on before they are cancelled.
    pub grace: Duration,
    /// Runs at once, over all workflows.
    pub max_runs: usize,
    /// Fire schedules and file triggers, resume interrupted runs. Off for `orchestrator
    /// ui`: every workflow of the directory is known, and runs start only when asked
    /// (trigger, rerun, run).
    pub schedule: bool,
    /// Cancelled to end the grace period early (a second SIGTERM or SIGINT): running
    /// tasks are cancelled at once.
    pub hurry: CancellationToken,
}

/// Why the daemon stopped other than by `shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// It could not start (e.g. the workflows directory cannot be watched).
    #[error("{0}")]
    Setup(String),
    /// The state store failed to record (a full disk, an I/O error): runs were cancelled
    /// and the daemon stopped, for its supervisor to restart it.
    #[error("the state store could not record ({0}); the daemon stopped")]
    Store(String),
}
