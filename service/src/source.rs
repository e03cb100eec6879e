//! The data source of the web UI and the HTTP API: [`orchestrator_web::Source`] over this
//! process's store and, in the daemon, its command channel. Answers in the CLI's `--json`
//! shapes, rendered by the same functions (`report`, `ops::inspect`), so a page and the
//! API show what `show` prints.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use orchestrator_engine::state::{RunStatus, Store};
use orchestrator_web::api::{self, BackfillStarted, Cancelled, Output, Started, Text};
use orchestrator_web::RunFilter;
use serde_json::{json, Value};

use crate::backfill::{backfill_json, backfills_output, start_in_daemon};
use crate::render;
use crate::store::{find_run, from_refused};
use crate::{report, Context, Error};

pub struct StoreSource {
    ctx: Context,
    store: Arc<Store>,
    commands: Option<orchestrator_daemon::Commands>,
    /// Task graphs by workflow definition (runs of one version share it); bounded.
    upstream: Mutex<HashMap<String, Value>>,
    /// Each workflow's last success, read from the store at the first scrape.
    last_success: Arc<std::sync::OnceLock<HashMap<String, f64>>>,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::failed(e.to_string())
}

impl StoreSource {
    pub fn new(
        ctx: Context,
        store: Arc<Store>,
        commands: Option<orchestrator_daemon::Commands>,
    ) -> StoreSource {
        StoreSource {
            ctx,
            store,
            commands,
            upstream: Mutex::new(HashMap::new()),
            last_success: Arc::default(),
        }
    }

    /// `{task: [upstream tasks]}` from the run's stored definition.
    fn upstream_of(&self, run: &orchestrator_engine::state::RunRecord) -> Value {
        if let Some(v) = self
            .upstream
            .lock()
            .ok()
            .and_then(|cache| cache.get(&run.definition).cloned())
        {
            return v;
        }
        let graph = match crate::notify::load_run_workflow(run, self.ctx.dir()) {
            Ok(wf) => {
                let map: serde_json::Map<String, Value> = wf
                    .tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let ups: Vec<&str> = wf
                            .dag
                            .upstream(i)
                            .iter()
                            .map(|&u| wf.tasks[u].id.as_str())
                            .collect();
                        (t.id.clone(), json!(ups))
                    })
                    .collect();
                Value::Object(map)
            }
            // The graph is drawn without edges; the tasks are still listed.
            Err(_) => json!({}),
        };
        if let Ok(mut cache) = self.upstream.lock() {
            // A few versions are in use at a time; a long-lived daemon must not grow.
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(run.definition.clone(), graph.clone());
        }
        graph
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(
            tokio::sync::oneshot::Sender<Result<T, orchestrator_daemon::Refused>>,
        ) -> orchestrator_daemon::Command,
    ) -> Result<T, Error> {
        let commands = self.commands.as_ref().ok_or_else(no_daemon)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        commands.send(command(reply)).map_err(|_| stopping())?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(from_refused(why)),
            Err(_) => Err(stopping()),
        }
    }
}

#[async_trait::async_trait]
impl orchestrator_web::Source for StoreSource {
    async fn runs(&self, f: &RunFilter) -> Result<Value, Error> {
        const STATUSES: [RunStatus; 6] = [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Interrupted,
            RunStatus::Skipped,
        ];
        let status = match f.status.as_deref() {
            Some(s) => Some(
                STATUSES
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| Error::invalid(format!("no run status `{s}`")))?,
            ),
            None => None,
        };
        let keep = |r: &orchestrator_engine::state::RunRecord| {
            status.is_none_or(|s| s == r.status)
                && f.date.as_ref().is_none_or(|d| *d == r.logical_date)
        };
        let cursor = match (&f.before, &f.after) {
            (Some(id), _) => Some((id, true)),
            (None, Some(id)) => Some((id, false)),
            (None, None) => None,
        };
        let (runs, more, newer) = match cursor {
            Some((id, older)) => {
                let Some((runs, beyond)) = self
                    .store
                    .runs_from(f.workflow.as_deref(), keep, id, older, f.limit)
                    .map_err(failed)?
                else {
                    return Err(Error::not_found(format!(
                        "no run `{id}` to page from; start from the first page"
                    )));
                };
                // Coming from one side, there is more on that side.
                if older {
                    (runs, beyond, true)
                } else {
                    (runs, true, beyond)
                }
            }
            None => {
                let (runs, more) = self
                    .store
                    .runs_page(f.workflow.as_deref(), keep, f.offset, f.limit)
                    .map_err(failed)?;
                (runs, more, f.offset > 0)
            }
        };
        let list: Value = serde_json::from_str(&report::runs_json(&runs)).map_err(failed)?;
        Ok(json!({"runs": list, "more": more, "newer": newer}))
    }

    async fn run(&self, id: &str) -> Result<Value, Error> {
        let run = find_run(&self.store, id)?;
        let upstream = self.upstream_of(&run);
        let details = report::RunDetails::load(&self.store, run).map_err(failed)?;
        let mut v = details.json();
        v["upstream"] = upstream;
        // A running attempt's output so far (kept in memory by this process's executor).
        let run_id = id.to_string();
        for t in v["tasks"].as_array_mut().into_iter().flatten() {
            let Some(task_id) = t["id"].as_str().map(String::from) else {
                continue;
            };
            if let Some(last) = t["history"].as_array_mut().and_then(|h| h.last_mut()) {
                if last["status"] == "running" {
                    if let Some(tail) = orchestrator_engine::task::live_tail(&run_id, &task_id) {
                        last["output_tail"] = Value::String(tail);
                    }
                    // What a plugin says of how far it is.
                    if let Some(p) = orchestrator_engine::task::live_progress(&run_id, &task_id) {
                        t["progress"] = json!({"fraction": p.fraction, "message": p.message});
                    }
                }
            }
        }
        Ok(v)
    }

    async fn workflows(&self) -> Result<Value, Error> {
        let Some(status) = self.daemon_status().await? else {
            return Ok(json!({"daemon": false, "workflows": [], "invalid": []}));
        };
        let workflows: Vec<Value> = status
            .workflows
            .iter()
            .map(|w| {
                let wf = &w.workflow;
                let schedule = wf.schedule.as_ref().map(|s| {
                    json!({
                        "exprs": s.exprs.iter().map(|e| e.text.clone()).collect::<Vec<_>>(),
                        "timezone": s.tz.name(),
                    })
                });
                let tz = wf.schedule.as_ref().map(|s| s.tz);
                json!({
                    "name": w.name,
                    "path": w.path.display().to_string(),
                    "description": wf.description,
                    "schedule": schedule,
                    "next": w.next.iter().map(|t| json!({
                        "utc": t.format("%a %Y-%m-%d %H:%M UTC").to_string(),
                        "local": tz.map(|tz| t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z").to_string()),
                    })).collect::<Vec<_>>(),
                    "active_run": w.active_run,
                    "queued": w.queued,
                    "pending_files": w.pending_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    "on_files": wf.on_files.as_ref().map(|f| json!({
                        "path": f.path.display().to_string(), "pattern": f.pattern,
                    })),
                    "params": wf.params,
                    "tasks": wf.task_ids(),
                })
            })
            .collect();
        let invalid: Vec<Value> = status
            .invalid
            .iter()
            .map(|(path, error)| {
                json!({
                    "path": path.display().to_string(),
                    "error": error,
                    "kept": status.workflows.iter().any(|w| &w.path == path),
                })
            })
            .collect();
        Ok(json!({
            "daemon": true,
            "workflows_dir": status.workflows_dir.display().to_string(),
            "workflows": workflows,
            "invalid": invalid,
        }))
    }

    async fn alerts(&self, limit: usize) -> Result<Value, Error> {
        let notifications = self.store.outbox_recent(limit).map_err(failed)?;
        let sent = self.store.sent_recent(limit).map_err(failed)?;
        let ts = |t| report::ts(Some(t));
        Ok(json!({
            "notifications": notifications.iter().map(|n| json!({
                "id": n.id, "run_id": n.run_id, "workflow": n.workflow, "event": n.event,
                "channel": n.channel, "status": n.status.as_str(), "attempts": n.attempts,
                "created_at": ts(n.created_at), "delivered_at": report::ts(n.delivered_at),
                "last_error": n.last_error,
            })).collect::<Vec<_>>(),
            "sent": sent.iter().map(|s| json!({
                "key": s.key, "run_id": s.run_id, "at": ts(s.at),
            })).collect::<Vec<_>>(),
        }))
    }

    async fn tables(&self) -> Result<Value, Error> {
        let tables = self.store.tables().map_err(failed)?;
        serde_json::to_value(tables).map_err(failed)
    }

    async fn table_history(&self, name: &str) -> Result<Value, Error> {
        use orchestrator_tasks::data::{delta, on_engine, DELTA};
        let Some(t) = self.store.table(name).map_err(failed)? else {
            return Err(Error::not_found(format!(
                "no table `{name}` in the catalog"
            )));
        };
        if t.format != DELTA {
            return Ok(Value::Null);
        }
        let dir = std::path::PathBuf::from(&t.location);
        let versions = on_engine(async move { delta::history(&dir).await })
            .await
            .map_err(failed)?
            .map_err(failed)?;
        serde_json::to_value(versions).map_err(failed)
    }

    fn version(&self) -> Option<u64> {
        Some(
            self.store
                .commit_count()
                .wrapping_add(orchestrator_engine::task::output_lines()),
        )
    }

    async fn query_trusted(&self, sql: &str) -> Result<Value, Error> {
        let batches = orchestrator_tasks::data::query(self.store.clone(), sql.to_string())
            .await
            .map_err(|e| Error::invalid(e.to_string()))?;
        orchestrator_tasks::data::rows_json(&batches)
            .map(Value::Array)
            .map_err(failed)
    }

    async fn query(&self, sql: &str) -> Result<Value, Error> {
        use orchestrator_tasks::data::isolated;
        // In a child process: the worst query cannot take the daemon down.
        let batches = isolated::query(
            self.store.as_ref(),
            sql.to_string(),
            &isolated::Limits::from_env(),
        )
        .await
        .map_err(|e| Error::invalid(e.to_string()))?;
        orchestrator_tasks::data::rows_json(&batches)
            .map(Value::Array)
            .map_err(failed)
    }

    async fn rerun(&self, id: &str, from: Option<&str>) -> Result<Started, Error> {
        let (run_id, from) = (id.to_string(), from.map(String::from));
        let id = self
            .ask(|reply| orchestrator_daemon::Command::Rerun {
                run_id,
                from,
                reply,
            })
            .await?;
        Ok(Started { run_id: id })
    }

    async fn cancel(&self, id: &str) -> Result<Cancelled, Error> {
        let run_id = id.to_string();
        self.ask(|reply| orchestrator_daemon::Command::Cancel { run_id, reply })
            .await?;
        Ok(Cancelled {
            cancelled: id.to_string(),
        })
    }

    async fn trigger(
        &self,
        workflow: &str,
        params: BTreeMap<String, String>,
        date: Option<String>,
    ) -> Result<Started, Error> {
        let workflow = workflow.to_string();
        let run_id = self
            .ask(|reply| orchestrator_daemon::Command::Trigger {
                workflow,
                params,
                date,
                reply,
            })
            .await?;
        Ok(Started { run_id })
    }

    async fn run_file(&self, request: api::RunRequest) -> Result<Started, Error> {
        let run_id = self
            .ask(|reply| orchestrator_daemon::Command::Run {
                path: request.path,
                params: request.params,
                date: request.date,
                trigger: None,
                reply,
            })
            .await?;
        Ok(Started { run_id })
    }

    async fn backfills(&self) -> Result<Value, Error> {
        let text = backfills_output(&self.store, true)?;
        serde_json::from_str(&text).map_err(failed)
    }

    async fn backfill(&self, id: &str) -> Result<Value, Error> {
        let text = backfill_json(&self.store, id)?;
        serde_json::from_str(&text).map_err(failed)
    }

    async fn start_backfill(
        &self,
        request: api::BackfillRequest,
    ) -> Result<BackfillStarted, Error> {
        let commands = self.commands.clone().ok_or_else(no_daemon)?;
        start_in_daemon(&self.ctx, self.store.clone(), commands, request)
    }

    async fn output(&self, output: Output) -> Result<String, Error> {
        let json = output.json;
        match output.what {
            Text::Runs { workflow, limit } => {
                render::runs_output(&self.store, workflow.as_deref(), limit, json)
            }
            Text::Run(id) => render::show_output(&self.store, &id, json),
            Text::Tables => Ok(render::tables_output(&self.store, json)?),
            // In a child process: the worst query cannot take this process down.
            Text::Query(sql) => render::query_output(self.store.clone(), sql, json, true).await,
            Text::Backfills => backfills_output(&self.store, json),
        }
    }

    async fn metrics(&self) -> Result<String, Error> {
        // A stopping daemon still answers from the store.
        let known = match self.daemon_status().await {
            Ok(Some(status)) => status.workflows,
            Ok(None) | Err(_) => Vec::new(),
        };
        let (store, seed) = (self.store.clone(), self.last_success.clone());
        // The first scrape reads the run history once (the last successes).
        let scrape = tokio::task::spawn_blocking(move || {
            let workflows: Vec<_> = known
                .iter()
                .map(|w| (w.name.as_str(), &w.workflow))
                .collect();
            crate::metrics::scrape(&store, &workflows, &seed)
        })
        .await
        .map_err(failed)?;
        Ok(orchestrator_engine::metrics::encode(&scrape))
    }
}

impl StoreSource {
    /// The daemon's view of its workflows; `None` without a daemon.
    async fn daemon_status(&self) -> Result<Option<orchestrator_daemon::Status>, Error> {
        let Some(commands) = &self.commands else {
            return Ok(None);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        commands
            .send(orchestrator_daemon::Command::Status { reply })
            .map_err(|_| stopping())?;
        answer.await.map(Some).map_err(|_| stopping())
    }
}

fn no_daemon() -> Error {
    Error::unsupported(
        "no daemon owns this state dir, so nothing can start runs from here; start `orchestrator daemon`, or use the CLI",
    )
}

fn stopping() -> Error {
    Error::unavailable("the daemon is stopping")
}
