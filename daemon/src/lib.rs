//! The daemon: one long-running process that starts every scheduled workflow on time.
//!
//! **Interface.** [`run`] takes the workflows directory, the open store, a [`Loader`]
//! (the binary's: it knows the task registry and the environment) and a [`Prepare`]
//! hook (checks before a run, e.g. warehouse ownership), and returns when `shutdown` is
//! cancelled and every run has stopped.
//!
//! **Shape.** One event loop owns all scheduling state: it sleeps until the earliest fire
//! time, a file change in the workflows directory (notify; no polling), a finished run,
//! or shutdown. Runs execute in their own tokio tasks through the engine's runner, at
//! most `max_runs` at once, and report back on a channel.
//!
//! **Invariants.**
//! - A fire time is persisted as handled (`ScheduleRecord`) before its run starts, so a
//!   restart never starts it twice; catch-up after downtime starts from it.
//! - A workflow never has two runs at once: a due run is skipped (recorded `skipped`
//!   with the reason), queued, or replaces the running one, per `concurrency:`.
//! - An edit that does not validate never unschedules a workflow: the previous valid
//!   version stays in force, and the error is logged with file:line.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator_engine::arrival::FileTrigger;
use orchestrator_engine::diag::Diagnostics;
use orchestrator_engine::executor::{Event, Observer};
use orchestrator_engine::runner::{self, Env};
use orchestrator_engine::schedule::{Catchup, Concurrency};
use orchestrator_engine::state::{FileRecord, RunStatus, ScheduleRecord, Store, Write};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::Workflow;
use tokio::sync::{mpsc, Semaphore};
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

/// A channel for [`run`]'s `commands`.
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

/// One scheduled workflow file.
struct Entry {
    path: PathBuf,
    /// The last text that validated; runs are loaded from it.
    source: String,
    /// Loaded from `source` for scheduling (templates rendered with placeholder values).
    wf: Workflow,
    next: Option<DateTime<Utc>>,
    /// When to check the day's `deadline:` next.
    deadline_at: Option<DateTime<Utc>>,
}

/// A due run waiting for the workflow's current run to end.
#[derive(Debug, Clone)]
struct Due {
    at: DateTime<Utc>,
    trigger: String,
    /// For a file-triggered run: the files, with their size and modification time.
    files: Vec<(PathBuf, u64, i64)>,
    /// For a triggered run: `--param` overrides and the logical date, if given.
    overrides: BTreeMap<String, String>,
    date: Option<String>,
}

/// Files that arrived for a workflow and have not started a run yet.
struct Pending {
    files: BTreeMap<PathBuf, (u64, i64)>,
    /// Start the run when this passes (the directory has been quiet for `debounce`).
    deadline: tokio::time::Instant,
}

/// What a run task does: start a new run, or resume an interrupted one.
enum Job {
    Start {
        wf: Box<Workflow>,
        date: String,
        trigger: String,
    },
    Resume {
        wf: Box<Workflow>,
        run: Box<orchestrator_engine::state::RunRecord>,
        from: Option<String>,
    },
}

struct Active {
    run_id: String,
    cancel: CancellationToken,
}

enum Msg {
    Finished {
        workflow: String,
        run_id: String,
        status: Option<RunStatus>,
    },
    Changed,
    /// Something happened to `path` in a file-triggered workflow's directory.
    File {
        workflow: String,
        path: PathBuf,
    },
}

struct Daemon {
    config: Config,
    store: Arc<Store>,
    loader: Loader,
    prepare: Prepare,
    /// By workflow name.
    entries: BTreeMap<String, Entry>,
    active: BTreeMap<String, Active>,
    queued: BTreeMap<String, VecDeque<Due>>,
    slots: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Msg>,
    /// Cancelled after the grace period: stops every run.
    stop_runs: CancellationToken,
    /// File-triggered workflows' watchers, by workflow, with the trigger they watch for.
    file_watchers: BTreeMap<String, (FileTrigger, Box<dyn notify::Watcher + Send>)>,
    pending: BTreeMap<String, Pending>,
    /// Runs being cancelled by `concurrency: replace`, with the note to record.
    replaced: BTreeMap<String, String>,
    /// Files whose latest text does not validate, with the diagnostics.
    invalid: BTreeMap<PathBuf, String>,
    /// The latest fire time handled per workflow (started, skipped, queued), and what the
    /// schedule record says (see [`Daemon::record_point`]).
    handled: BTreeMap<String, DateTime<Utc>>,
    recorded: BTreeMap<String, DateTime<Utc>>,
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

/// Runs the daemon until `shutdown` is cancelled; then stops starting runs, lets running
/// tasks finish for `grace`, cancels what is left, and returns once every run is recorded.
/// `interrupted` are the runs the store found interrupted when it was opened.
pub async fn run(
    config: Config,
    store: Arc<Store>,
    loader: Loader,
    prepare: Prepare,
    interrupted: Vec<String>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) -> Result<(), Stopped> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watcher = watch(&config.workflows_dir, tx.clone()).map_err(Stopped::Setup)?;
    let mut d = Daemon {
        slots: Arc::new(Semaphore::new(config.max_runs.max(1))),
        config,
        store,
        loader,
        prepare,
        entries: BTreeMap::new(),
        active: BTreeMap::new(),
        queued: BTreeMap::new(),
        tx,
        stop_runs: CancellationToken::new(),
        file_watchers: BTreeMap::new(),
        pending: BTreeMap::new(),
        replaced: BTreeMap::new(),
        invalid: BTreeMap::new(),
        handled: BTreeMap::new(),
        recorded: BTreeMap::new(),
    };
    d.rescan();
    if d.config.schedule {
        // Runs this open found interrupted, and those another command found first
        // (`runs` typed after a crash): both wait for a resume.
        let mut pending = interrupted;
        for id in d.store.runs_awaiting_resume() {
            if !pending.contains(&id) {
                pending.push(id);
            }
        }
        d.resume_interrupted(pending);
        d.files_at_start();
        let now = Utc::now();
        let names: Vec<String> = d.entries.keys().cloned().collect();
        for name in names {
            d.catch_up(&name, now);
        }
    }
    if d.config.schedule {
        tracing::info!(
            "daemon ready: {} scheduled workflow{} in {}",
            d.entries.len(),
            if d.entries.len() == 1 { "" } else { "s" },
            d.config.workflows_dir.display()
        );
    } else {
        // `orchestrator ui`: nothing fires by itself.
        tracing::info!(
            "ready: {} workflow{} in {}, started only when asked (nothing is scheduled)",
            d.entries.len(),
            if d.entries.len() == 1 { "" } else { "s" },
            d.config.workflows_dir.display()
        );
    }
    loop {
        let wake = d
            .entries
            .values()
            .flat_map(|e| [e.next, e.deadline_at])
            .flatten()
            .min();
        let mut sleep = match wake {
            Some(t) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            // Nothing scheduled: wait for a file change or shutdown.
            None => Duration::from_secs(24 * 3600),
        };
        if let Some(p) = d.pending.values().map(|p| p.deadline).min() {
            sleep = sleep.min(p.saturating_duration_since(tokio::time::Instant::now()));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(cmd) = commands.recv() => d.command(cmd),
            _ = tokio::time::sleep(sleep) => {
                d.fire_due();
                d.check_deadlines();
                d.flush_files();
            }
            msg = rx.recv() => match msg {
                Some(Msg::Finished { workflow, run_id, status }) => d.finished(&workflow, &run_id, status),
                Some(Msg::File { workflow, path }) => d.file_event(&workflow, path),
                Some(Msg::Changed) => {
                    // Editors write in several steps; let them finish, then look once.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let mut pending = Vec::new();
                    while let Ok(m) = rx.try_recv() {
                        pending.push(m);
                    }
                    for m in pending {
                        match m {
                            Msg::Finished { workflow, run_id, status } => {
                                d.finished(&workflow, &run_id, status)
                            }
                            Msg::File { workflow, path } => d.file_event(&workflow, path),
                            Msg::Changed => {}
                        }
                    }
                    d.rescan();
                }
                None => break,
            },
        }
        // A store that cannot record (a full disk, an I/O error) cannot be trusted with
        // the next run: its fire times, files and transitions would be lost. Stop, and
        // exit non-zero so that a supervisor restarts the daemon; opening the store again
        // waits for room and resumes what was cut short.
        if let Some(why) = d.store.write_failure() {
            tracing::error!(
                "daemon: the state store cannot record: {why}; cancelling runs and exiting (status 1) so that a supervisor restarts the daemon once the cause is fixed"
            );
            d.stop_runs.cancel();
            d.shut_down(&mut rx).await;
            return Err(Stopped::Store(why));
        }
    }
    d.shut_down(&mut rx).await;
    // Runs write recovery points at most once a minute; make the last one complete.
    if let Err(e) = d.store.write_recovery_point() {
        tracing::warn!("daemon: cannot write a recovery point: {e}");
    }
    Ok(())
}

/// The next instant after `after` at which `wf`'s `deadline:` is checked.
fn next_deadline(wf: &Workflow, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = wf.schedule.as_ref()?;
    s.next_time_of_day(wf.policy.deadline?, after)
}

/// Watches the workflows directory; every change is one `Changed` message.
fn watch(dir: &Path, tx: mpsc::UnboundedSender<Msg>) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(Msg::Changed);
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| {
            format!(
                "cannot watch workflows directory {}: {e}; check it exists (--workflows DIR)",
                dir.display()
            )
        })?;
    Ok(watcher)
}

/// Watches a file-triggered workflow's directory, recursively; every path created or
/// modified is one `File` message. With `poll`, notify's polling watcher (for network
/// file systems, where kernel notifications do not arrive).
fn watch_files(
    name: &str,
    trigger: &FileTrigger,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<Box<dyn notify::Watcher + Send>, String> {
    let workflow = name.to_string();
    let handler = move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = ev {
            if e.kind.is_create() || e.kind.is_modify() {
                for path in e.paths {
                    let _ = tx.send(Msg::File {
                        workflow: workflow.clone(),
                        path,
                    });
                }
            }
        }
    };
    let dir = &trigger.path;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create watched directory {}: {e}", dir.display()))?;
    let mut watcher: Box<dyn notify::Watcher + Send> = match trigger.poll {
        Some(every) => Box::new(
            notify::PollWatcher::new(handler, notify::Config::default().with_poll_interval(every))
                .map_err(|e| format!("cannot poll {}: {e}", dir.display()))?,
        ),
        None => Box::new(
            notify::recommended_watcher(handler)
                .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?,
        ),
    };
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(watcher)
}

/// Placeholder run values for loading a workflow to read its schedule.
fn probe() -> RunParams {
    RunParams {
        run_id: "daemon".into(),
        date: Utc::now().format("%Y-%m-%d").to_string(),
        scheduled_at: None,
        inherited: BTreeMap::new(),
        trigger_files: Vec::new(),
        overrides: BTreeMap::new(),
    }
}

impl Daemon {
    /// (Re)reads the workflows directory: new and changed files are validated and
    /// (re)scheduled, deleted ones unscheduled; an invalid file keeps its previous version.
    fn rescan(&mut self) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.config.workflows_dir) {
            Ok(d) => d
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                // Channels shared by the workflows, not a workflow.
                .filter(|p| {
                    p.file_name()
                        .is_none_or(|n| n != orchestrator_engine::workflow::SHARED_CHANNELS)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(
                    "daemon: cannot read {}: {e}",
                    self.config.workflows_dir.display()
                );
                return;
            }
        };
        files.sort();
        // Unschedule workflows whose file is gone.
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !files.contains(&e.path))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            tracing::info!("daemon: workflow {name}: file removed; unscheduled");
            self.entries.remove(&name);
        }
        self.invalid.retain(|p, _| files.contains(p));
        for path in files {
            let source = match std::fs::read_to_string(&path) {
                Ok(s) => s,
                // Deleted between the listing and now: the next rescan unschedules it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Not UTF-8, unreadable: said, and listed as invalid like a bad edit.
                    let current = self.entries.values().any(|e| e.path == path);
                    let kept = if current {
                        "the previous version stays scheduled"
                    } else {
                        "not scheduled"
                    };
                    let why = if e.kind() == std::io::ErrorKind::InvalidData {
                        "it is not UTF-8 text; save it as UTF-8".to_string()
                    } else {
                        format!("it cannot be read: {e}")
                    };
                    if self.invalid.get(&path) != Some(&why) {
                        tracing::warn!("daemon: {} is invalid; {kept}: {why}", path.display());
                        self.invalid.insert(path.clone(), why);
                    }
                    continue;
                }
            };
            let current = self.entries.values().find(|e| e.path == path);
            if current.is_some_and(|e| e.source == source) {
                continue;
            }
            let wf = match (self.loader)(&path, source.clone(), &probe()) {
                Ok(wf) => wf,
                Err(diags) => {
                    let kept = if current.is_some() {
                        "the previous version stays scheduled"
                    } else {
                        "not scheduled"
                    };
                    tracing::warn!("daemon: {} is invalid; {kept}:\n{diags}", path.display());
                    self.invalid.insert(path.clone(), diags.to_string());
                    continue;
                }
            };
            self.invalid.remove(&path);
            let old_name = current.map(|e| e.wf.name.clone());
            if let Some(old) = old_name.as_ref().filter(|o| **o != wf.name) {
                self.entries.remove(old);
            }
            if self.config.schedule && wf.schedule.is_none() && wf.on_files.is_none() {
                if old_name.is_some() {
                    tracing::info!(
                        "daemon: workflow {}: no `schedule:` or `on:` any more; unscheduled",
                        wf.name
                    );
                    self.entries.remove(&wf.name);
                }
                continue;
            }
            if let Some(other) = self.entries.get(&wf.name).filter(|e| e.path != path) {
                tracing::warn!(
                    "daemon: {} defines workflow `{}`, which {} already defines; not scheduled (rename one)",
                    path.display(),
                    wf.name,
                    other.path.display()
                );
                continue;
            }
            let name = wf.name.clone();
            let reloaded = old_name.is_some();
            let last_fire = self.last_fire(&name);
            let mut wf = wf;
            // A `rate()` without `start_date:` is a grid anchored at the first fire time
            // this store recorded, so a restart does not move it (with `start_date:`, the
            // grid starts there).
            if let Some(s) = wf.schedule.as_mut().filter(|s| s.start.is_none()) {
                s.start = last_fire;
            }
            let from = last_fire.unwrap_or_else(Utc::now).max(Utc::now());
            let (next, deadline_at) = if self.config.schedule {
                (
                    wf.schedule.as_ref().and_then(|s| s.next_after(from)),
                    next_deadline(&wf, Utc::now()),
                )
            } else {
                (None, None)
            };
            self.entries.insert(
                name.clone(),
                Entry {
                    path: path.clone(),
                    source,
                    wf,
                    next,
                    deadline_at,
                },
            );
            self.log_next(&name, if reloaded { "reloaded" } else { "scheduled" });
        }
        if self.config.schedule {
            self.sync_file_watchers();
        }
    }

    /// One watcher per file-triggered workflow, on its directory; rebuilt when the
    /// trigger changes, dropped when the workflow goes.
    fn sync_file_watchers(&mut self) {
        let wanted: BTreeMap<String, FileTrigger> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.wf.on_files.clone().map(|f| (n.clone(), f)))
            .collect();
        self.file_watchers
            .retain(|n, (f, _)| wanted.get(n) == Some(&*f));
        self.pending.retain(|n, _| wanted.contains_key(n));
        for (name, trigger) in wanted {
            if self.file_watchers.contains_key(&name) {
                continue;
            }
            match watch_files(&name, &trigger, self.tx.clone()) {
                Ok(w) => {
                    tracing::info!(
                        "daemon: workflow {name} watches {} for `{}` (debounce {:?}, max_batch {}{})",
                        trigger.path.display(),
                        trigger.pattern,
                        trigger.debounce,
                        trigger.max_batch,
                        trigger
                            .poll
                            .map(|p| format!(", polling every {p:?}"))
                            .unwrap_or_default()
                    );
                    self.file_watchers.insert(name, (trigger, w));
                }
                Err(e) => tracing::warn!("daemon: workflow {name}: {e}"),
            }
        }
    }

    /// Files that arrived while the daemon was down (matching, never handled): one run.
    fn files_at_start(&mut self) {
        let triggers: Vec<(String, FileTrigger)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.wf.on_files.clone().map(|f| (n.clone(), f)))
            .collect();
        for (name, trigger) in triggers {
            let mut stack = vec![trigger.path.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        self.file_event(&name, p);
                    }
                }
            }
            if let Some(p) = self.pending.get_mut(&name) {
                p.deadline = tokio::time::Instant::now();
                tracing::info!(
                    "daemon: workflow {name}: {} file(s) arrived while the daemon was stopped",
                    p.files.len()
                );
            }
        }
    }

    /// A file changed in a file-triggered workflow's directory: new or changed matching
    /// files wait for the directory to be quiet for `debounce`, or for `max_batch`.
    fn file_event(&mut self, name: &str, path: PathBuf) {
        let Some(trigger) = self.entries.get(name).and_then(|e| e.wf.on_files.clone()) else {
            return;
        };
        // One spelling per file (`wf/../in/x.csv` is `in/x.csv`).
        let path = orchestrator_engine::arrival::normalize(&path);
        if !trigger.matches(&path) {
            return;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let key = path.display().to_string();
        match self.store.file_record(name, &key) {
            Ok(Some(r)) if r.size == meta.len() && r.modified_ns == modified => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: cannot read file records: {e}");
                return;
            }
        }
        let now = tokio::time::Instant::now();
        let p = self
            .pending
            .entry(name.to_string())
            .or_insert_with(|| Pending {
                files: BTreeMap::new(),
                deadline: now,
            });
        p.files.insert(path, (meta.len(), modified));
        p.deadline = now + trigger.debounce;
        if p.files.len() >= trigger.max_batch {
            p.deadline = now;
        }
    }

    /// Starts a run for each workflow whose arrived files are due, unless it is busy (then
    /// they wait for its run to end).
    fn flush_files(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(n, p)| p.deadline <= now && !self.active.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(p) = self.pending.remove(&name) else {
                continue;
            };
            let max = self
                .entries
                .get(&name)
                .and_then(|e| e.wf.on_files.as_ref())
                .map_or(usize::MAX, |f| f.max_batch);
            // A file deleted (or renamed away) before its run starts is not handed to
            // the run: it would list a path that does not exist.
            let (present, gone): (Vec<_>, Vec<_>) =
                p.files.into_iter().partition(|(f, _)| f.is_file());
            for (f, _) in &gone {
                tracing::info!(
                    "daemon: workflow {name}: {} is gone before its run started; not passed to the run",
                    f.display()
                );
            }
            if present.is_empty() {
                continue;
            }
            let mut files: Vec<(PathBuf, u64, i64)> =
                present.into_iter().map(|(f, (s, m))| (f, s, m)).collect();
            if files.len() > max {
                // The rest go in the next run.
                let rest = files.split_off(max);
                self.pending.insert(
                    name.clone(),
                    Pending {
                        files: rest.into_iter().map(|(f, s, m)| (f, (s, m))).collect(),
                        deadline: now,
                    },
                );
            }
            let n = files.len();
            // `start` logs why a run could not start.
            let _ = self.start(
                &name,
                Due {
                    at: Utc::now(),
                    trigger: format!("files ({n} arrived)"),
                    files,
                    overrides: BTreeMap::new(),
                    date: None,
                },
            );
        }
    }

    fn log_next(&self, name: &str, what: &str) {
        if !self.config.schedule {
            // `orchestrator ui` fires nothing: fire times would mislead.
            tracing::info!("workflow {name} {what}: can be triggered from the UI");
            return;
        }
        let Some(e) = self.entries.get(name) else {
            return;
        };
        let Some(s) = &e.wf.schedule else { return };
        let exprs: Vec<&str> = s.exprs.iter().map(|x| x.text.as_str()).collect();
        match e.next {
            Some(t) => tracing::info!(
                "daemon: workflow {name} {what} ({}): {} in {}; next run {} ({})",
                e.path.display(),
                exprs.join(" + "),
                s.tz.name(),
                t.format("%Y-%m-%dT%H:%M:%SZ"),
                t.with_timezone(&s.tz).format("%Y-%m-%dT%H:%M:%S%:z")
            ),
            None => tracing::info!(
                "daemon: workflow {name} {what} ({}): {} has no future fire time",
                e.path.display(),
                exprs.join(" + ")
            ),
        }
    }

    fn last_fire(&self, name: &str) -> Option<DateTime<Utc>> {
        match self.store.schedule_record(name) {
            Ok(r) => r.map(|r| r.last_fire),
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: cannot read its schedule record: {e}");
                None
            }
        }
    }

    /// A fire time is handled (about to start, skipped, or queued).
    fn remember(&mut self, name: &str, at: DateTime<Utc>) {
        let h = self.handled.entry(name.to_string()).or_insert(at);
        *h = (*h).max(at);
        self.record_point(name);
    }

    /// Writes the workflow's schedule record: the point catch-up resumes from after a
    /// crash. It is the latest fire time handled, but stops short of the oldest one still
    /// queued (`concurrency: queue`, `catchup: all`): a queued run lost with the process
    /// is a missed fire time at the next start, handled per `catchup:`, not lost.
    fn record_point(&mut self, name: &str) {
        let Some(&handled) = self.handled.get(name) else {
            return;
        };
        let point = match self
            .queued
            .get(name)
            .and_then(|q| q.iter().map(|d| d.at).min())
        {
            Some(oldest) => handled.min(oldest - chrono::Duration::nanoseconds(1)),
            None => handled,
        };
        if self.recorded.get(name) == Some(&point) {
            return;
        }
        let record = ScheduleRecord {
            workflow: name.to_string(),
            last_fire: point,
        };
        match self.store.commit(&[Write::Schedule(record)]) {
            Ok(()) => {
                self.recorded.insert(name.to_string(), point);
            }
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: cannot record fire time {point}: {e}")
            }
        }
    }

    /// On a graceful stop, queued runs are not started: each is recorded as a `skipped`
    /// run saying so (and logged), never dropped silently.
    fn drop_queued(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        for (name, dues) in queued {
            let Some(entry) = self.entries.get(&name) else {
                continue;
            };
            for due in dues {
                let why = format!(
                    "due at {}, queued, and the daemon stopped before it could start",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                self.record_skipped(&name, &entry.wf, &due, &why);
            }
            self.record_point(&name);
        }
    }

    /// Records `due` as a run that was not started, saying `why`, and logs it.
    fn record_skipped(&self, name: &str, wf: &Workflow, due: &Due, why: &str) {
        let run_id = runner::new_run_id();
        let date = due
            .date
            .clone()
            .unwrap_or_else(|| self.logical_date(name, due.at));
        match runner::record_skipped(&self.store, wf, &run_id, &date, &due.trigger, why) {
            Ok(_) => tracing::info!("daemon: workflow {name}: run {run_id} skipped: {why}"),
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: {why}, and it cannot be recorded: {e}")
            }
        }
    }

    /// Starts the next queued run of `name`, recording that its fire time is handled
    /// first (durable before it exists).
    fn start_queued(&mut self, name: &str) -> bool {
        let Some(due) = self.queued.get_mut(name).and_then(|q| q.pop_front()) else {
            return false;
        };
        self.record_point(name);
        let _ = self.start(name, due); // `start` logs failures
        true
    }

    /// Fire times missed while the daemon was down, handled per `catchup:`.
    fn catch_up(&mut self, name: &str, now: DateTime<Utc>) {
        let Some(e) = self.entries.get(name) else {
            return;
        };
        let Some(schedule) = e.wf.schedule.clone() else {
            return;
        };
        let policy = e.wf.policy;
        let Some(since) = self.last_fire(name).or(policy.start) else {
            return; // A new schedule starts from now.
        };
        // Before `start_date`, nothing runs.
        let since = policy
            .start
            .map_or(since, |s| since.max(s - chrono::Duration::nanoseconds(1)));
        let keep = match policy.catchup {
            Catchup::All => policy.max_catchup,
            Catchup::None | Catchup::Latest => 1,
        };
        let missed = schedule.missed(since, now, keep);
        let Some(&latest) = missed.recent.last() else {
            return;
        };
        let starts: Vec<DateTime<Utc>> = match policy.catchup {
            Catchup::None => Vec::new(),
            Catchup::Latest => vec![latest],
            Catchup::All => missed.recent.clone(),
        };
        let count = if missed.exact {
            missed.count.to_string()
        } else {
            format!("more than {}", missed.count)
        };
        tracing::info!(
            "daemon: workflow {name}: {count} fire time{} missed since {}; catchup: {:?} starts {}",
            if missed.count == 1 && missed.exact {
                ""
            } else {
                "s"
            },
            since.format("%Y-%m-%dT%H:%M:%SZ"),
            policy.catchup,
            starts.len()
        );
        // Catch-up runs go one after another, whatever `concurrency:` says: all are
        // queued (the schedule record stops short of them), and the first starts now
        // unless a run is going.
        for at in starts {
            let due = Due {
                at,
                trigger: format!("catch-up {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                files: Vec::new(),
                overrides: BTreeMap::new(),
                date: None,
            };
            self.queued
                .entry(name.to_string())
                .or_default()
                .push_back(due);
        }
        self.remember(name, latest);
        if !self.active.contains_key(name) {
            self.start_queued(name);
        }
        if let Some(e) = self.entries.get_mut(name) {
            e.next = schedule.next_after(latest.max(now));
        }
    }

    /// For each workflow whose `deadline:` has come: if its schedule fired that day and no
    /// run of that logical date succeeded, queues its `sla_miss` notifications (the
    /// deliverer sends them).
    fn check_deadlines(&mut self) {
        let now = Utc::now();
        let due: Vec<(String, DateTime<Utc>)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.deadline_at.filter(|t| *t <= now).map(|t| (n.clone(), t)))
            .collect();
        for (name, at) in due {
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            e.deadline_at = next_deadline(&e.wf, at);
            let Some(s) = e.wf.schedule.as_ref() else {
                continue;
            };
            if !s.fired_that_day_before(at) {
                continue;
            }
            let day = at.with_timezone(&s.tz).format("%Y-%m-%d").to_string();
            let runs: Vec<_> = match self.store.runs(Some(&name), 1000) {
                Ok(r) => r.into_iter().filter(|r| r.logical_date == day).collect(),
                Err(err) => {
                    tracing::warn!("daemon: workflow {name}: cannot check its deadline: {err}");
                    continue;
                }
            };
            if runs.iter().any(|r| r.status == RunStatus::Succeeded) {
                continue;
            }
            let records = orchestrator_engine::notify::deadline_outbox(&e.wf, &day, at, &runs, now);
            tracing::info!(
                "daemon: workflow {name}: no successful run for {day} by its deadline{}",
                if records.is_empty() {
                    " (no channel subscribes to sla_miss)"
                } else {
                    ""
                }
            );
            let writes: Vec<_> = records
                .into_iter()
                .map(orchestrator_engine::state::Write::Outbox)
                .collect();
            if let Err(err) = self.store.commit(&writes) {
                tracing::warn!(
                    "daemon: workflow {name}: cannot queue its deadline notification: {err}"
                );
            }
        }
    }

    /// Starts (or skips, queues, replaces) every run whose fire time has come.
    fn fire_due(&mut self) {
        let now = Utc::now();
        let due: Vec<(String, DateTime<Utc>)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.next.filter(|t| *t <= now).map(|t| (n.clone(), t)))
            .collect();
        for (name, at) in due {
            self.remember(&name, at);
            let next = self
                .entries
                .get(&name)
                .and_then(|e| e.wf.schedule.as_ref())
                .and_then(|s| s.next_after(at.max(now)));
            if let Some(e) = self.entries.get_mut(&name) {
                e.next = next;
            }
            let due = Due {
                at,
                trigger: format!("schedule {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                files: Vec::new(),
                overrides: BTreeMap::new(),
                date: None,
            };
            self.due(&name, due);
        }
    }

    /// A run is due: start it, or apply `concurrency:` if the previous one is going.
    fn due(&mut self, name: &str, due: Due) {
        let Some(active) = self.active.get(name) else {
            let _ = self.start(name, due); // `start` logs failures
            return;
        };
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        let prev = active.run_id.clone();
        match entry.wf.policy.concurrency {
            Concurrency::Forbid => {
                let why = format!(
                    "due at {}, but run {prev} was still running (concurrency: forbid)",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                self.record_skipped(name, &entry.wf, &due, &why);
            }
            Concurrency::Queue => {
                tracing::info!(
                    "daemon: workflow {name}: run due at {} queued behind run {prev}",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                let due = Due {
                    trigger: format!("{} (queued behind run {prev})", due.trigger),
                    ..due
                };
                self.queued
                    .entry(name.to_string())
                    .or_default()
                    .push_back(due);
                self.record_point(name);
            }
            Concurrency::Replace => {
                tracing::info!(
                    "daemon: workflow {name}: run {prev} replaced by the run due at {} (concurrency: replace); cancelling it",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                active.cancel.cancel();
                self.replaced.insert(
                    prev.clone(),
                    format!(
                        "replaced by the run due at {} (concurrency: replace)",
                        due.at.format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                );
                // Start the new run as soon as the old one has recorded its end.
                let q = self.queued.entry(name.to_string()).or_default();
                q.clear();
                q.push_back(due);
                self.record_point(name);
            }
        }
    }

    fn logical_date(&self, name: &str, at: DateTime<Utc>) -> String {
        let tz = self
            .entries
            .get(name)
            .and_then(|e| e.wf.schedule.as_ref())
            .map_or(chrono_tz_utc(), |s| s.tz);
        at.with_timezone(&tz).format("%Y-%m-%d").to_string()
    }

    /// Handles a request from another process.
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Trigger {
                workflow,
                params,
                date,
                reply,
            } => {
                if !self.entries.contains_key(&workflow) {
                    let known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
                    let _ = reply.send(Err(Refused::not_found(format!(
                        "the daemon runs no workflow `{workflow}` (it runs: {}); only workflows in {} with `schedule:` or `on:` can be triggered",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") },
                        self.config.workflows_dir.display()
                    ))));
                    return;
                }
                // The API's callers are not the CLI: the date is checked here, once,
                // before it reaches a template (`../../x` would become a path).
                if let Some(Err(why)) = date.as_deref().map(runner::parse_logical_date) {
                    let _ = reply.send(Err(format!("date {why}").into()));
                    return;
                }
                let due = Due {
                    at: Utc::now(),
                    trigger: "manual (trigger)".into(),
                    files: Vec::new(),
                    overrides: params,
                    date,
                };
                if let Err(why) = self.idle(&workflow) {
                    let _ = reply.send(Err(why));
                    return;
                }
                let _ = reply.send(self.start(&workflow, due).map_err(Refused::from));
            }
            Command::Run {
                path,
                params,
                date,
                trigger,
                reply,
            } => {
                if let Err(why) = runner::parse_logical_date(&date) {
                    let _ = reply.send(Err(format!("date {why}").into()));
                    return;
                }
                let trigger = trigger.unwrap_or_else(|| "manual".into());
                let _ = reply.send(self.run_file(&path, params, date, trigger));
            }
            Command::Rerun {
                run_id,
                from,
                reply,
            } => {
                let _ = reply.send(self.rerun(&run_id, from));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Cancel { run_id, reply } => {
                match self.active.values().find(|a| a.run_id == run_id) {
                    Some(a) => {
                        tracing::info!("daemon: run {run_id}: cancel requested");
                        a.cancel.cancel();
                        let _ = reply.send(Ok(()));
                    }
                    None => {
                        let _ = reply.send(Err(Refused::not_found(format!(
                            "run {run_id} is not in progress in this daemon; `orchestrator runs` lists runs"
                        ))));
                    }
                }
            }
        }
    }

    fn status(&self) -> Status {
        let workflows = self
            .entries
            .iter()
            .map(|(name, e)| {
                let mut next = Vec::new();
                let mut at = e.next;
                while let (Some(t), true) = (at, next.len() < 5) {
                    next.push(t);
                    at = e.wf.schedule.as_ref().and_then(|s| s.next_after(t));
                }
                WorkflowStatus {
                    name: name.clone(),
                    path: e.path.clone(),
                    workflow: e.wf.clone(),
                    next,
                    active_run: self.active.get(name).map(|a| a.run_id.clone()),
                    queued: self.queued.get(name).map_or(0, VecDeque::len),
                    pending_files: self
                        .pending
                        .get(name)
                        .map(|p| p.files.keys().cloned().collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Status {
            workflows_dir: self.config.workflows_dir.clone(),
            workflows,
            invalid: self
                .invalid
                .iter()
                .map(|(p, d)| (p.clone(), d.clone()))
                .collect(),
        }
    }

    /// `Err` (saying which) when `workflow` has a run in progress: requests from others
    /// never start a second one.
    fn idle(&self, workflow: &str) -> Result<(), Refused> {
        match self.active.get(workflow) {
            Some(a) => Err(Refused::busy(format!(
                "workflow `{workflow}` has run {} in progress; wait for it, or `orchestrator cancel {}`",
                a.run_id, a.run_id
            ))),
            None => Ok(()),
        }
    }

    /// Resumes a finished run (see [`Command::Rerun`]).
    fn rerun(&mut self, id: &str, from: Option<String>) -> Result<String, Refused> {
        let run = self
            .store
            .run(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                Refused::not_found(format!("no run `{id}`; list runs with `orchestrator runs`"))
            })?;
        self.idle(&run.workflow)?;
        let path = PathBuf::from(&run.workflow_path);
        let source = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let params = RunParams {
            run_id: run.id.clone(),
            date: run.logical_date.clone(),
            scheduled_at: None,
            inherited: run.params.clone(),
            trigger_files: run.trigger_files.clone(),
            overrides: BTreeMap::new(),
        };
        let wf = (self.loader)(&path, source, &params).map_err(|d| d.to_string())?;
        if wf.name != run.workflow {
            return Err(format!(
                "run {id} belongs to workflow `{}`, but {} now defines workflow `{}`; start a new run",
                run.workflow, run.workflow_path, wf.name
            )
            .into());
        }
        // Refusals (`already succeeded`, unknown `--from`) come from the planner, now,
        // rather than from a task that has already been spawned.
        let previous = self
            .store
            .tasks(id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect();
        runner::plan_rerun(&wf, &run, &previous, from.as_deref()).map_err(|e| e.to_string())?;
        (self.prepare)(&wf)?;
        let name = run.workflow.clone();
        tracing::info!("daemon: workflow {name}: run {id} resumed (rerun)");
        self.spawn(
            &name,
            id.to_string(),
            Job::Resume {
                wf: Box::new(wf),
                run: Box::new(run),
                from,
            },
        );
        Ok(id.to_string())
    }

    /// Starts a run of the workflow in `path` (any file, scheduled here or not).
    fn run_file(
        &mut self,
        path: &Path,
        overrides: BTreeMap<String, String>,
        date: String,
        trigger: String,
    ) -> Result<String, Refused> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let run_id = runner::new_run_id();
        let params = RunParams {
            run_id: run_id.clone(),
            date: date.clone(),
            scheduled_at: None,
            inherited: BTreeMap::new(),
            trigger_files: Vec::new(),
            overrides,
        };
        let wf = (self.loader)(path, source, &params).map_err(|d| d.to_string())?;
        self.idle(&wf.name)?;
        (self.prepare)(&wf)?;
        let name = wf.name.clone();
        tracing::info!(
            "daemon: workflow {name}: run {run_id} started ({trigger}, logical date {date})"
        );
        self.spawn(
            &name,
            run_id.clone(),
            Job::Start {
                wf: Box::new(wf),
                date,
                trigger,
            },
        );
        Ok(run_id)
    }

    /// Loads the workflow for this run (templates rendered with its id, date and fire
    /// time) and starts it in its own task. Returns the run id, or why it did not start.
    fn start(&mut self, name: &str, due: Due) -> Result<String, String> {
        let Some(entry) = self.entries.get(name) else {
            return Err(format!("workflow {name} is not scheduled any more"));
        };
        let run_id = runner::new_run_id();
        let date = due
            .date
            .clone()
            .unwrap_or_else(|| self.logical_date(name, due.at));
        let params = RunParams {
            run_id: run_id.clone(),
            date: date.clone(),
            scheduled_at: Some(due.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            inherited: BTreeMap::new(),
            trigger_files: due
                .files
                .iter()
                .map(|(f, _, _)| f.display().to_string())
                .collect(),
            overrides: due.overrides.clone(),
        };
        let wf = match (self.loader)(&entry.path, entry.source.clone(), &params) {
            Ok(wf) => wf,
            Err(diags) => {
                tracing::warn!("daemon: workflow {name}: cannot start a run:\n{diags}");
                return Err(diags.to_string());
            }
        };
        if let Err(e) = (self.prepare)(&wf) {
            tracing::warn!("daemon: workflow {name}: cannot start a run: {e}");
            return Err(e);
        }
        if !due.files.is_empty() {
            // Recorded before the run starts: a file never starts two runs.
            let records: Vec<Write> = due
                .files
                .iter()
                .map(|(f, size, modified)| {
                    Write::File(FileRecord {
                        workflow: name.to_string(),
                        path: f.display().to_string(),
                        size: *size,
                        modified_ns: *modified,
                        run_id: run_id.clone(),
                    })
                })
                .collect();
            if let Err(e) = self.store.commit(&records) {
                tracing::warn!("daemon: workflow {name}: cannot record the arrived files: {e}");
                return Err(e.to_string());
            }
        }
        tracing::info!(
            "daemon: workflow {name}: run {run_id} started ({}, logical date {date})",
            due.trigger
        );
        self.spawn(
            name,
            run_id.clone(),
            Job::Start {
                wf: Box::new(wf),
                date,
                trigger: due.trigger,
            },
        );
        Ok(run_id)
    }

    /// Runs `job` in its own task, as the workflow's active run, within a `--max-runs`
    /// slot; reports back with `Finished`.
    fn spawn(&mut self, name: &str, run_id: String, job: Job) {
        let cancel = self.stop_runs.child_token();
        self.active.insert(
            name.to_string(),
            Active {
                run_id: run_id.clone(),
                cancel: cancel.clone(),
            },
        );
        let (store, slots, tx) = (self.store.clone(), self.slots.clone(), self.tx.clone());
        let workflow = name.to_string();
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let observer = LogObserver {
                workflow: workflow.clone(),
                run_id: run_id.clone(),
            };
            let env = Env {
                store: &store,
                catalog: store.clone(),
                cancel,
                redactor: Arc::new(Redactor::from_env()),
                observer: &observer,
            };
            let result = match job {
                Job::Start { wf, date, trigger } => {
                    runner::start_as(env, &wf, &run_id, &date, &trigger).await
                }
                Job::Resume { wf, run, from } => {
                    runner::resume(env, &wf, *run, from.as_deref()).await
                }
            };
            let status = match result {
                Ok(run) => Some(run.status),
                Err(e) => {
                    tracing::warn!("daemon: workflow {workflow}: run {run_id}: {e}");
                    None
                }
            };
            let _ = tx.send(Msg::Finished {
                workflow,
                run_id,
                status,
            });
        });
    }

    /// Resumes runs a crash left `interrupted`, as `rerun` would, once.
    fn resume_interrupted(&mut self, ids: Vec<String>) {
        for id in ids {
            let run = match self.store.run(&id) {
                Ok(Some(r)) => r,
                _ => continue,
            };
            let Some(entry) = self.entries.get(&run.workflow) else {
                tracing::info!(
                    "daemon: run {id} of workflow {} was interrupted; it is not scheduled here, so resume it with `orchestrator rerun {id}`",
                    run.workflow
                );
                continue;
            };
            if !entry.wf.policy.resume_interrupted {
                tracing::info!(
                    "daemon: run {id} was interrupted; resume_interrupted is false, so it stays so"
                );
                continue;
            }
            let path = PathBuf::from(&run.workflow_path);
            let source = match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        "daemon: run {id} was interrupted, but {} cannot be read: {e}",
                        path.display()
                    );
                    continue;
                }
            };
            let params = RunParams {
                run_id: run.id.clone(),
                date: run.logical_date.clone(),
                scheduled_at: None,
                inherited: run.params.clone(),
                trigger_files: run.trigger_files.clone(),
                overrides: BTreeMap::new(),
            };
            let wf = match (self.loader)(&path, source, &params) {
                Ok(wf) => wf,
                Err(diags) => {
                    tracing::warn!("daemon: run {id} was interrupted, but its workflow is invalid now:\n{diags}");
                    continue;
                }
            };
            let name = run.workflow.clone();
            tracing::info!("daemon: workflow {name}: run {id} was interrupted; resuming it");
            self.spawn(
                &name,
                id,
                Job::Resume {
                    wf: Box::new(wf),
                    run: Box::new(run),
                    from: None,
                },
            );
        }
    }

    fn finished(&mut self, workflow: &str, run_id: &str, status: Option<RunStatus>) {
        if let Some(status) = status {
            tracing::info!("daemon: workflow {workflow}: run {run_id} {status}");
        }
        if let Some(note) = self.replaced.remove(run_id) {
            // `runs` and `show` say why it was cancelled.
            if let Ok(Some(mut run)) = self.store.run(run_id) {
                run.note = Some(note);
                if let Err(e) = self.store.commit(&[Write::Run(run)]) {
                    tracing::warn!("daemon: run {run_id}: cannot record why it was replaced: {e}");
                }
            }
        }
        if self
            .active
            .get(workflow)
            .is_some_and(|a| a.run_id == run_id)
        {
            self.active.remove(workflow);
        }
        self.apply_retention(workflow);
        if self.stop_runs.is_cancelled() {
            return;
        }
        if !self.start_queued(workflow) {
            self.flush_files();
        }
    }

    /// `retention:`: deletes the workflow's runs older than it that nothing needs any more
    /// (see `orchestrator_engine::retention`). The db is not compacted here (sled reuses
    /// the space); `orchestrator gc` does that.
    fn apply_retention(&self, workflow: &str) {
        let Some(keep) = self.entries.get(workflow).and_then(|e| e.wf.retention) else {
            return;
        };
        let Ok(age) = chrono::Duration::from_std(keep) else {
            return;
        };
        let plan = (|| -> Result<_, orchestrator_engine::state::StateError> {
            let runs = self.store.runs(Some(workflow), usize::MAX)?;
            let backfills = self.store.backfills()?;
            let undelivered = self
                .store
                .outbox_pending()?
                .into_iter()
                .map(|o| o.run_id)
                .collect();
            let plan = orchestrator_engine::retention::plan(
                &runs,
                &backfills,
                &undelivered,
                Utc::now()
                    .checked_sub_signed(age)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
                Some(workflow),
            );
            self.store.delete_runs(&plan.runs, &plan.backfills)?;
            Ok(plan)
        })();
        match plan {
            Ok(p) if !p.runs.is_empty() => tracing::info!(
                "daemon: workflow {workflow}: retention {}d: deleted {} old runs",
                keep.as_secs() / 86_400,
                p.runs.len()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("daemon: workflow {workflow}: retention: {e}"),
        }
    }

    /// Stops starting runs; lets running ones go on for the grace period, then cancels
    /// them, and waits until each has recorded its end.
    async fn shut_down(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        self.drop_queued();
        if self.active.is_empty() {
            tracing::info!("daemon: stopping; no run in progress");
            return;
        }
        tracing::info!(
            "daemon: stopping; {} run(s) in progress get {:?} to finish, then are cancelled",
            self.active.len(),
            self.config.grace
        );
        let deadline = tokio::time::Instant::now() + self.config.grace;
        while !self.active.is_empty() {
            let hurry = self.config.hurry.clone();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline), if !self.stop_runs.is_cancelled() => {
                    tracing::info!("daemon: grace period over; cancelling {} run(s)", self.active.len());
                    self.stop_runs.cancel();
                }
                _ = hurry.cancelled(), if !self.stop_runs.is_cancelled() => {
                    tracing::info!("daemon: asked again to stop; cancelling {} run(s) now", self.active.len());
                    self.stop_runs.cancel();
                }
                msg = rx.recv() => match msg {
                    Some(Msg::Finished { workflow, run_id, status }) => {
                        self.finished(&workflow, &run_id, status);
                    }
                    Some(Msg::Changed | Msg::File { .. }) => {}
                    None => break,
                },
            }
        }
    }
}

fn chrono_tz_utc() -> chrono_tz::Tz {
    chrono_tz::Tz::UTC
}

/// Logs a run's task transitions, prefixed with the workflow and run.
struct LogObserver {
    workflow: String,
    run_id: String,
}

impl Observer for LogObserver {
    fn event(&self, event: &Event<'_>) {
        let (w, r) = (&self.workflow, &self.run_id);
        match event {
            Event::Started { task, attempt } => {
                tracing::info!("{w} {r}: {task}: started (attempt {attempt})")
            }
            Event::Succeeded { task, attempt, .. } => {
                tracing::info!("{w} {r}: {task}: succeeded (attempt {attempt})")
            }
            Event::Failed {
                task,
                attempt,
                error,
                ..
            } => tracing::info!("{w} {r}: {task}: failed (attempt {attempt}): {error}"),
            Event::Skipped { task, reason } => tracing::info!("{w} {r}: {task}: skipped: {reason}"),
            Event::Cancelled { task } => tracing::info!("{w} {r}: {task}: cancelled"),
        }
    }
}
