//! Requests from other processes (`trigger`, `run`, `rerun`, `cancel`, the UI's status),
//! handled in the event loop.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use chrono::Utc;
use orchestrator_engine::runner;

use crate::api::{Command, Refused, RunParams, Status, WorkflowStatus};
use crate::event_loop::Daemon;
use crate::policy::Due;
use crate::runs::Job;

impl Daemon {
    /// Handles a request from another process.
    pub(crate) fn command(&mut self, cmd: Command) {
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

    pub(crate) fn status(&self) -> Status {
        let workflows = self
            .entries
            .iter()
            .map(|(name, e)| {
                let mut next = Vec::new();
                let mut at = e.timers.next;
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
    pub(crate) fn idle(&self, workflow: &str) -> Result<(), Refused> {
        match self.active.get(workflow) {
            Some(a) => Err(Refused::busy(format!(
                "workflow `{workflow}` has run {} in progress; wait for it, or `orchestrator cancel {}`",
                a.run_id, a.run_id
            ))),
            None => Ok(()),
        }
    }

    /// Resumes a finished run (see [`Command::Rerun`]).
    pub(crate) fn rerun(&mut self, id: &str, from: Option<String>) -> Result<String, Refused> {
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
    pub(crate) fn run_file(
        &mut self,
        path: &Path,
        overrides: BTreeMap<String, String>,
        date: String,
        trigger: String,
    ) -> Result<String, Refused> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let run_id = runner::new_run_id_in(&self.store);
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
}
