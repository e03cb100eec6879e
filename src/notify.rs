//! The binary's side of notifications: resolving an outbox record's channel from its
//! run's workflow, queueing `interrupted` events for runs found interrupted, and
//! delivering (after a run, at start, and in the daemon). Delivery itself is
//! `orchestrator_notify`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use orchestrator_engine::notify as events;
use orchestrator_engine::state::{OutboxRecord, RunRecord, Store, Write};
use orchestrator_engine::workflow::{self as wf, Channel, LoadOptions, Workflow};

use crate::out::errln;

/// Loads run `run`'s workflow as it ran (its stored definition, params, date), with
/// today's environment (channel URLs and secrets come from it, never from the store).
pub fn load_run_workflow(run: &RunRecord, state_dir: &Path) -> Result<Workflow, String> {
    let registry = orchestrator_tasks::registry();
    let opts = LoadOptions {
        registry: &registry,
        overrides: Default::default(),
        inherited: run.params.clone(),
        run_id: run.id.clone(),
        date: run.logical_date.clone(),
        scheduled_at: None,
        trigger_files: Vec::new(),
        env: std::env::vars().collect(),
        default_warehouse: state_dir.join("warehouse"),
        backend: None,
    };
    wf::load_str(Path::new(&run.workflow_path), run.definition.clone(), &opts).map_err(|d| {
        format!(
            "the definition of run {} no longer loads: {}",
            run.id,
            d.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// A run's channels, or why they cannot be had.
type Channels = Result<Arc<std::collections::BTreeMap<String, Channel>>, String>;

/// Channels by run, loaded once per process.
pub struct Resolver {
    store: Arc<Store>,
    state_dir: PathBuf,
    cache: Mutex<HashMap<String, Channels>>,
}

impl Resolver {
    pub fn new(store: Arc<Store>, state_dir: &Path) -> Resolver {
        Resolver {
            store,
            state_dir: std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolve(&self, rec: &OutboxRecord) -> Result<Channel, String> {
        let channels = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .entry(rec.run_id.clone())
                .or_insert_with(|| {
                    let run = self
                        .store
                        .run(&rec.run_id)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("run {} is not in the store", rec.run_id))?;
                    load_run_workflow(&run, &self.state_dir).map(|w| Arc::new(w.channels))
                })
                .clone()?
        };
        channels.get(&rec.channel).cloned().ok_or_else(|| {
            format!(
                "the workflow of run {} defines no channel `{}`",
                rec.run_id, rec.channel
            )
        })
    }
}

/// Queues the `interrupted` notifications of runs the store found interrupted.
pub fn queue_interrupted(store: &Store, state_dir: &Path, ids: &[String]) {
    for id in ids {
        let queued = (|| -> Result<usize, String> {
            let Some(run) = store.run(id).map_err(|e| e.to_string())? else {
                return Ok(0);
            };
            let workflow = load_run_workflow(&run, state_dir)?;
            let tasks = store.tasks(id).map_err(|e| e.to_string())?;
            let event = events::NotifyEvent::Interrupted;
            let payload = events::run_payload(event, &run, &tasks);
            let records = events::outbox(
                &workflow.notify,
                event,
                &run,
                (run.reruns + 1).to_string(),
                &payload,
                Utc::now(),
            );
            let n = records.len();
            store
                .commit(&records.into_iter().map(Write::Outbox).collect::<Vec<_>>())
                .map_err(|e| e.to_string())?;
            Ok(n)
        })();
        if let Err(e) = queued {
            errln!("warning: no `interrupted` notification for run {id}: {e}");
        }
    }
}

/// Delivers what is due (every run's, or all of `run_id`'s) and says what could not be.
pub async fn deliver(store: &Arc<Store>, state_dir: &Path, run_id: Option<&str>) {
    deliver_at(store, state_dir, run_id, Utc::now()).await
}

/// [`deliver`], with what counts as due: everything waiting until `now`.
pub async fn deliver_at(
    store: &Arc<Store>,
    state_dir: &Path,
    run_id: Option<&str>,
    now: chrono::DateTime<Utc>,
) {
    // Lets a test kill the process after a run's end is recorded, before delivery.
    if let (Some(hook), Some(_)) = (
        orchestrator_tasks::data::PauseHook::from_env("notify"),
        run_id,
    ) {
        hook.reached("before-deliver").await;
    }
    let resolver = Resolver::new(store.clone(), state_dir);
    let resolve = |r: &OutboxRecord| resolver.resolve(r);
    match orchestrator_notify::deliver_due(store, &resolve, now, run_id).await {
        Ok(report) => {
            for rec in report.failed {
                errln!(
                    "warning: notification {} to `{}` not delivered (attempt {}): {}; {}",
                    rec.id,
                    rec.channel,
                    rec.attempts,
                    rec.last_error.as_deref().unwrap_or("unknown error"),
                    if rec.status == orchestrator_engine::state::DeliveryStatus::Failed {
                        "given up".to_string()
                    } else {
                        format!(
                            "tried again from {} by the daemon, the next run or rerun, or `orchestrator notify deliver`",
                            rec.next_at.format("%H:%M:%S UTC")
                        )
                    }
                );
            }
        }
        Err(e) => errln!("warning: notifications not delivered: {e}"),
    }
}
