//! The event loop: one `Daemon` owns every workflow's scheduling state and wakes on the
//! earliest timer, a changed workflow file, an arrived file, a finished run, a command or
//! shutdown; then stops gracefully (`shut_down`), or at once when the store cannot record.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator_engine::arrival::FileTrigger;
use orchestrator_engine::state::{RunStatus, Store};
use orchestrator_engine::workflow::Workflow;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{Command, Config, Loader, Prepare, Stopped};
use crate::files::Pending;
use crate::policy::{self, Due, Timers};
use crate::reload::watch;
use crate::runs::Active;

/// One scheduled workflow file.
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    /// The last text that validated; runs are loaded from it.
    pub(crate) source: String,
    /// Loaded from `source` for scheduling (templates rendered with placeholder values).
    pub(crate) wf: Workflow,
    /// Its next fire time and `deadline:` check (none for `orchestrator ui`).
    pub(crate) timers: Timers,
}

pub(crate) enum Msg {
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

pub(crate) struct Daemon {
    pub(crate) config: Config,
    pub(crate) store: Arc<Store>,
    pub(crate) loader: Loader,
    pub(crate) prepare: Prepare,
    /// By workflow name.
    pub(crate) entries: BTreeMap<String, Entry>,
    pub(crate) active: BTreeMap<String, Active>,
    pub(crate) queued: BTreeMap<String, VecDeque<Due>>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    /// Cancelled after the grace period: stops every run.
    pub(crate) stop_runs: CancellationToken,
    /// File-triggered workflows' watchers, by workflow, with the trigger they watch for.
    pub(crate) file_watchers: BTreeMap<String, (FileTrigger, Box<dyn notify::Watcher + Send>)>,
    pub(crate) pending: BTreeMap<String, Pending>,
    /// Runs being cancelled by `concurrency: replace`, with the note to record.
    pub(crate) replaced: BTreeMap<String, String>,
    /// Files whose latest text does not validate, with the diagnostics.
    pub(crate) invalid: BTreeMap<PathBuf, String>,
    /// The latest fire time handled per workflow (started, skipped, queued), and what the
    /// schedule record says (see [`Daemon::record_point`]).
    pub(crate) handled: BTreeMap<String, DateTime<Utc>>,
    pub(crate) recorded: BTreeMap<String, DateTime<Utc>>,
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
        let wake = policy::wake(d.entries.values().map(|e| e.timers));
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

impl Daemon {
    /// Stops starting runs; lets running ones go on for the grace period, then cancels
    /// them, and waits until each has recorded its end.
    pub(crate) async fn shut_down(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
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
