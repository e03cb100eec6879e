//! The service's side of notifications: resolving an outbox record's channel from its
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

use crate::console::errln;
use crate::Context;

/// Loads run `run`'s workflow as it ran (its stored definition, params, date), with
/// today's environment (channel URLs and secrets come from it, never from the store).
pub fn load_run_workflow(run: &RunRecord, state_dir: &Path) -> Result<Workflow, String> {
    let registry = orchestrator_tasks::registry();
    let opts = options(
        &registry,
        run.params.clone(),
        &run.id,
        &run.logical_date,
        state_dir,
        // The file the run was started with, whatever this process was given.
        run.channels_file.as_ref().map(PathBuf::from),
    );
    wf::load_str(Path::new(&run.workflow_path), run.definition.clone(), &opts).map_err(|d| {
        format!(
            "the definition of run {} no longer loads: {}",
            run.id,
            d.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// What loading a workflow to find its channels needs: today's environment (channel URLs
/// and secrets come from it), no overrides. The binary's one `LoadOptions` builder:
/// `commands::load_on` sets its overrides and backend over it.
pub(crate) fn options<'r>(
    registry: &'r orchestrator_engine::task::Registry,
    inherited: std::collections::BTreeMap<String, String>,
    run_id: &str,
    date: &str,
    state_dir: &Path,
    channels_file: Option<PathBuf>,
) -> LoadOptions<'r> {
    LoadOptions {
        registry,
        overrides: Default::default(),
        inherited,
        run_id: run_id.to_string(),
        date: date.to_string(),
        scheduled_at: None,
        trigger_files: Vec::new(),
        env: std::env::vars().collect(),
        default_warehouse: state_dir.join("warehouse"),
        backend: None,
        channels_file,
    }
}

/// A run's channels, or why they cannot be had.
type Channels = Result<Arc<std::collections::BTreeMap<String, Channel>>, String>;

/// Loads a workflow file as it is now, with its declared params.
fn load_workflow_file(path: &Path, ctx: &Context) -> Result<Workflow, String> {
    let registry = orchestrator_tasks::registry();
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let opts = options(
        &registry,
        Default::default(),
        "notify",
        &today,
        ctx.dir(),
        ctx.channels.clone(),
    );
    wf::load_file(path, &opts).map_err(|e| {
        format!(
            "{} does not load: {}",
            path.display(),
            e.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// Channels by run, loaded once per process.
pub struct Resolver {
    store: Arc<Store>,
    /// The state dir made absolute, the channels file, and where warnings go.
    ctx: Context,
    cache: Mutex<HashMap<String, Channels>>,
}

impl Resolver {
    pub fn new(store: Arc<Store>, ctx: &Context) -> Resolver {
        let mut ctx = ctx.clone();
        if let Ok(abs) = std::path::absolute(&ctx.state_dir) {
            ctx.state_dir = abs;
        }
        Resolver {
            store,
            ctx,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolve(&self, rec: &OutboxRecord) -> Result<Channel, String> {
        let channels = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .entry(rec.run_id.clone())
                .or_insert_with(|| {
                    match self.store.run(&rec.run_id).map_err(|e| e.to_string())? {
                        Some(run) => load_run_workflow(&run, self.ctx.dir()),
                        // About a day, not a run (a missed deadline): the file as it is.
                        None => match &rec.workflow_path {
                            Some(path) => load_workflow_file(Path::new(path), &self.ctx),
                            None => Err(format!("run {} is not in the store", rec.run_id)),
                        },
                    }
                    .map(|w| Arc::new(w.channels))
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
pub fn queue_interrupted(ctx: &Context, store: &Store, ids: &[String]) {
    for id in ids {
        let queued = (|| -> Result<usize, String> {
            let Some(run) = store.run(id).map_err(|e| e.to_string())? else {
                return Ok(0);
            };
            let workflow = load_run_workflow(&run, ctx.dir())?;
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
            errln!(
                ctx,
                "warning: no `interrupted` notification for run {id}: {e}"
            );
        }
    }
}

/// Delivers what is due (every run's) and says what could not be.
pub async fn deliver(ctx: &Context, store: &Arc<Store>) {
    let now = Utc::now();
    deliver_some(
        store,
        &Resolver::new(store.clone(), ctx),
        &|r| orchestrator_notify::due(r, now),
        true,
    )
    .await;
}

/// How long `run` and `rerun` wait for a finished run's notifications, in all.
pub const RUN_DELIVERY_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// Delivers a finished run's notifications: up to 3 attempts within about 3 s in all (a
/// webhook that answers 500 once still gets it now; one that never answers holds the
/// command no longer), then says what could not be delivered; the outbox keeps it for
/// the daemon, the next start or `notify deliver`.
pub async fn deliver_run(ctx: &Context, store: &Arc<Store>, run_id: &str) {
    // Lets a test kill the process after a run's end is recorded, before delivery.
    if let Some(hook) = orchestrator_tasks::data::PauseHook::from_env("notify") {
        hook.reached("before-deliver").await;
    }
    // One resolver for every try: the run's workflow is loaded once.
    let resolver = Resolver::new(store.clone(), ctx);
    let deadline = tokio::time::Instant::now() + RUN_DELIVERY_BUDGET;
    for wait in [1, 1, 0] {
        let left_time = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last = wait == 0 || left_time <= std::time::Duration::from_secs(wait);
        let select = |r: &OutboxRecord| r.run_id == run_id;
        let left = deliver_within(store, &resolver, &select, last, Some(left_time)).await;
        if left == 0 || last {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
}

/// Runs the deliverer while `fut` (run `run_id`) goes on, so that `retry` and `sla_miss`
/// notifications go out during the run, and stops it before returning. The run's own end
/// is left to [`deliver_run`].
pub async fn delivering_during<T>(
    ctx: &Context,
    store: &Arc<Store>,
    run_id: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let stop = orchestrator_engine::CancellationToken::new();
    let deliverer = {
        let (store, stop, run_id) = (store.clone(), stop.clone(), run_id.to_string());
        let resolver = Resolver::new(store.clone(), ctx);
        tokio::spawn(async move {
            let resolve = |r: &OutboxRecord| resolver.resolve(r);
            let during = |r: &OutboxRecord| {
                r.run_id != run_id || matches!(r.event.as_str(), "retry" | "sla_miss")
            };
            orchestrator_notify::run_deliverer(
                &store,
                &resolve,
                &during,
                std::time::Duration::from_millis(500),
                stop,
            )
            .await;
        })
    };
    let out = fut.await;
    stop.cancel();
    // The deliverer finishes the delivery it is in: none is sent twice.
    let _ = deliverer.await;
    out
}

/// Delivers the pending notifications `select` picks; with `report`, says what could not
/// be delivered. Returns how many of them are still waiting.
pub async fn deliver_some(
    store: &Arc<Store>,
    resolver: &Resolver,
    select: &orchestrator_notify::Select<'_>,
    report: bool,
) -> usize {
    deliver_within(store, resolver, select, report, None).await
}

/// [`deliver_some`] within `budget`.
async fn deliver_within(
    store: &Arc<Store>,
    resolver: &Resolver,
    select: &orchestrator_notify::Select<'_>,
    report: bool,
    budget: Option<std::time::Duration>,
) -> usize {
    let ctx = &resolver.ctx;
    let resolve = |r: &OutboxRecord| resolver.resolve(r);
    match orchestrator_notify::deliver_due_within(store, &resolve, select, budget).await {
        Ok(outcome) => {
            let left = outcome.failed.len();
            for rec in outcome.failed.into_iter().filter(|_| report) {
                errln!(
                    ctx,
                    "warning: notification {} to `{}` not delivered (attempt {}): {}; {}",
                    rec.id,
                    rec.channel,
                    rec.attempts,
                    rec.last_error.as_deref().unwrap_or("unknown error"),
                    if rec.status == orchestrator_engine::state::DeliveryStatus::GaveUp {
                        "given up".to_string()
                    } else {
                        format!(
                            "tried again from {} by the daemon, the next run or rerun, or `orchestrator notify deliver`",
                            rec.next_at.format("%H:%M:%S UTC")
                        )
                    }
                );
            }
            left
        }
        Err(e) => {
            errln!(ctx, "warning: notifications not delivered: {e}");
            1
        }
    }
}
