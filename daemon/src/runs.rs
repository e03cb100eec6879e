//! Runs: started or resumed in their own tasks, recorded when they end, `retention:`
//! applied after each.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use orchestrator_engine::executor::{Event, Observer};
use orchestrator_engine::runner::{self, Env};
use orchestrator_engine::state::{FileRecord, RunStatus, Write};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::Workflow;
use tokio_util::sync::CancellationToken;

use crate::api::RunParams;
use crate::event_loop::{Daemon, Msg};
use crate::policy::Due;

/// What a run task does: start a new run, or resume an interrupted one.
pub(crate) enum Job {
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

pub(crate) struct Active {
    pub(crate) run_id: String,
    pub(crate) cancel: CancellationToken,
}

/// Logs a run's task transitions, prefixed with the workflow and run.
pub(crate) struct LogObserver {
    pub(crate) workflow: String,
    pub(crate) run_id: String,
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

impl Daemon {
    /// Loads the workflow for this run (templates rendered with its id, date and fire
    /// time) and starts it in its own task. Returns the run id, or why it did not start.
    pub(crate) fn start(&mut self, name: &str, due: Due) -> Result<String, String> {
        let Some(entry) = self.entries.get(name) else {
            return Err(format!("workflow {name} is not scheduled any more"));
        };
        let run_id = runner::new_run_id_in(&self.store);
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
        let late = (chrono::Utc::now() - due.at).to_std().unwrap_or_default();
        orchestrator_engine::metrics::fired(name, late);
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
    pub(crate) fn spawn(&mut self, name: &str, run_id: String, job: Job) {
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
    pub(crate) fn resume_interrupted(&mut self, ids: Vec<String>) {
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

    pub(crate) fn finished(&mut self, workflow: &str, run_id: &str, status: Option<RunStatus>) {
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
    pub(crate) fn apply_retention(&self, workflow: &str) {
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
}
