//! The web UI's data source: [`orchestrator_web::Source`] over this process's store and,
//! in the daemon, its command channel. Answers in the CLI's `--json` shapes, rendered by
//! the same functions (`report`, `commands::inspect`), so a page shows what `show` prints.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrator_engine::state::{RunStatus, Store};
use orchestrator_engine::CancellationToken;
use orchestrator_web::{Error, RunFilter};
use serde_json::{json, Value};

use crate::commands::{find_run, Fail};
use crate::report;

/// `daemon --listen/--no-ui/--auth/--dashboards`.
pub struct UiArgs {
    /// `None` with `--no-ui`.
    pub listen: Option<SocketAddr>,
    pub auth: Option<PathBuf>,
    pub dashboards: Option<PathBuf>,
}

pub struct StoreSource {
    store: Arc<Store>,
    state_dir: PathBuf,
    commands: Option<orchestrator_daemon::Commands>,
    /// Task graphs by workflow definition (runs of one version share it); bounded.
    upstream: Mutex<HashMap<String, Value>>,
}

fn from_fail(f: Fail) -> Error {
    let (status, message) = crate::api::fail_status(&f);
    Error { status, message }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

impl StoreSource {
    pub fn new(
        store: Arc<Store>,
        state_dir: &Path,
        commands: Option<orchestrator_daemon::Commands>,
    ) -> StoreSource {
        StoreSource {
            store,
            state_dir: state_dir.to_path_buf(),
            commands,
            upstream: Mutex::new(HashMap::new()),
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
        let graph = match crate::notify::load_run_workflow(run, &self.state_dir) {
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
        let Some(commands) = &self.commands else {
            return Err(Error {
                status: 501,
                message: "no daemon owns this state dir, so nothing can start runs from here; start `orchestrator daemon`, or use the CLI".into(),
            });
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopping = || Error {
            status: 503,
            message: "the daemon is stopping".into(),
        };
        commands.send(command(reply)).map_err(|_| stopping())?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(Error {
                status: crate::api::refused_status(&why).as_u16(),
                message: why.message,
            }),
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
                    .ok_or_else(|| Error::bad_request(format!("no run status `{s}`")))?,
            ),
            None => None,
        };
        let keep = |r: &orchestrator_engine::state::RunRecord| {
            status.is_none_or(|s| s == r.status)
                && f.date.as_ref().is_none_or(|d| *d == r.logical_date)
        };
        let (runs, more) = self
            .store
            .runs_page(f.workflow.as_deref(), keep, f.offset, f.limit)
            .map_err(internal)?;
        let list: Value = serde_json::from_str(&report::runs_json(&runs)).map_err(internal)?;
        Ok(json!({"runs": list, "more": more}))
    }

    async fn run(&self, id: &str) -> Result<Value, Error> {
        let run = find_run(&self.store, id).map_err(from_fail)?;
        let upstream = self.upstream_of(&run);
        let details = report::RunDetails::load(&self.store, run).map_err(internal)?;
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
                }
            }
        }
        Ok(v)
    }

    async fn workflows(&self) -> Result<Value, Error> {
        let Some(commands) = &self.commands else {
            return Ok(json!({"daemon": false, "workflows": [], "invalid": []}));
        };
        let stopping = |_| Error {
            status: 503,
            message: "the daemon is stopping".into(),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        commands
            .send(orchestrator_daemon::Command::Status { reply })
            .map_err(|_| stopping(()))?;
        let status = answer.await.map_err(|_| stopping(()))?;
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
        let notifications = self.store.outbox_recent(limit).map_err(internal)?;
        let sent = self.store.sent_recent(limit).map_err(internal)?;
        let ts = |t| crate::report::ts(Some(t));
        Ok(json!({
            "notifications": notifications.iter().map(|n| json!({
                "id": n.id, "run_id": n.run_id, "workflow": n.workflow, "event": n.event,
                "channel": n.channel, "status": n.status.as_str(), "attempts": n.attempts,
                "created_at": ts(n.created_at), "delivered_at": crate::report::ts(n.delivered_at),
                "last_error": n.last_error,
            })).collect::<Vec<_>>(),
            "sent": sent.iter().map(|s| json!({
                "key": s.key, "run_id": s.run_id, "at": ts(s.at),
            })).collect::<Vec<_>>(),
        }))
    }

    async fn tables(&self) -> Result<Value, Error> {
        let tables = self.store.tables().map_err(internal)?;
        serde_json::to_value(tables).map_err(internal)
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
            .map_err(Error::bad_request)?;
        orchestrator_tasks::data::rows_json(&batches)
            .map(Value::Array)
            .map_err(internal)
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
        .map_err(Error::bad_request)?;
        orchestrator_tasks::data::rows_json(&batches)
            .map(Value::Array)
            .map_err(internal)
    }

    async fn rerun(&self, id: &str, from: Option<&str>) -> Result<Value, Error> {
        let (run_id, from) = (id.to_string(), from.map(String::from));
        let id = self
            .ask(|reply| orchestrator_daemon::Command::Rerun {
                run_id,
                from,
                reply,
            })
            .await?;
        Ok(json!({"run_id": id}))
    }

    async fn cancel(&self, id: &str) -> Result<Value, Error> {
        let run_id = id.to_string();
        self.ask(|reply| orchestrator_daemon::Command::Cancel { run_id, reply })
            .await?;
        Ok(json!({"cancelled": id}))
    }

    async fn trigger(
        &self,
        workflow: &str,
        params: BTreeMap<String, String>,
        date: Option<String>,
    ) -> Result<Value, Error> {
        let workflow = workflow.to_string();
        let id = self
            .ask(|reply| orchestrator_daemon::Command::Trigger {
                workflow,
                params,
                date,
                reply,
            })
            .await?;
        Ok(json!({"run_id": id}))
    }
}

/// Checked before anything starts: the address and the `--auth` file.
pub fn prepare(args: &UiArgs) -> Result<Option<orchestrator_web::Auth>, Fail> {
    let auth = args
        .auth
        .as_deref()
        .map(orchestrator_web::Auth::load)
        .transpose()
        .map_err(|e| Fail::input(format!("error: {e}")))?;
    if let Some(addr) = args.listen {
        orchestrator_web::check_listen(addr, auth.as_ref())
            .map_err(|e| Fail::input(format!("error: {e}")))?;
    }
    Ok(auth)
}

/// Serves the UI until `stop`; returns the URL it serves on.
pub async fn serve(
    source: StoreSource,
    addr: SocketAddr,
    auth: Option<orchestrator_web::Auth>,
    dashboards: Option<PathBuf>,
    stop: CancellationToken,
) -> Result<String, Fail> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Fail::input(format!(
            "error: cannot serve the web UI on {addr}: {e}; pick another address with --listen, or --no-ui"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Fail::failed(format!("error: web UI address: {e}")))?;
    let app = orchestrator_web::router(
        Arc::new(source),
        orchestrator_web::Options {
            auth,
            dashboards_dir: dashboards,
            shutdown: stop.clone(),
            listen: bound,
        },
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::warn!("web UI stopped: {e}");
        }
    });
    Ok(format!("http://{bound}"))
}
