//! What `/metrics` reads from the store and the daemon when it is scraped
//! ([`orchestrator_engine::metrics::Scrape`]); the counters themselves are recorded where
//! things happen (`orchestrator_engine::metrics`).
//!
//! **Cost:** a scrape reads the pending outbox index, the catalog and the db directory's
//! sizes, never the run history, except once per process: each workflow's last success
//! is found by one scan of the runs when first scraped, and kept up to date in memory
//! after that (a run that succeeds here sets it).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use orchestrator_engine::metrics::{Scrape, TableGauges, WorkflowGauges};
use orchestrator_engine::state::{DeliveryStatus, RunStatus, Store};
use orchestrator_engine::workflow::Workflow;

/// How many fire times ahead the period is taken over: enough to include a weekend of a
/// weekdays-only schedule.
const PERIOD_FIRES: usize = 8;

/// Seconds since the epoch, with milliseconds.
fn unix(t: chrono::DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The newest succeeded run's end per workflow, from one scan of the store.
fn last_successes(store: &Store) -> HashMap<String, f64> {
    let mut last = HashMap::new();
    // Newest first: the first success seen per workflow is its last.
    for run in store.runs(None, usize::MAX).unwrap_or_default() {
        if run.status == RunStatus::Succeeded {
            if let Some(ended) = run.ended_at {
                last.entry(run.workflow).or_insert(unix(ended));
            }
        }
    }
    last
}

/// The longest gap between a schedule's next fire times.
fn period(wf: &Workflow) -> Option<Duration> {
    let schedule = wf.schedule.as_ref()?;
    let next = schedule.upcoming(Utc::now(), PERIOD_FIRES);
    next.windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .max()
}

/// What the store holds now, for the workflows the daemon knows (`workflows`).
pub(crate) fn scrape(
    store: &Store,
    workflows: &[(&str, &Workflow)],
    seed: &OnceLock<HashMap<String, f64>>,
) -> Scrape {
    let seed = seed.get_or_init(|| last_successes(store));
    let mut names: BTreeMap<String, Option<Duration>> = workflows
        .iter()
        .map(|(name, wf)| (name.to_string(), period(wf)))
        .collect();
    for name in seed.keys() {
        names.entry(name.clone()).or_insert(None);
    }
    let mut scrape = Scrape {
        workflows: names
            .into_iter()
            .map(|(name, period)| WorkflowGauges {
                last_success: seed.get(&name).copied(),
                name,
                period,
            })
            .collect(),
        store_bytes: store.size_on_disk(),
        free_bytes: orchestrator_engine::state::disk::free_bytes(store.dir()).ok(),
        replication_lag: store
            .replication_lag()
            .ok()
            .flatten()
            .map(|d| d.as_secs_f64()),
        ..Scrape::default()
    };
    let mut outbox: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for n in store.outbox_pending().unwrap_or_default() {
        let state = match n.status {
            DeliveryStatus::Pending => "waiting",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Delivered | DeliveryStatus::GaveUp => continue,
        };
        *outbox.entry((n.channel.clone(), state)).or_default() += 1;
        let created = unix(n.created_at);
        if scrape.outbox_oldest.is_none_or(|o| created < o) {
            scrape.outbox_oldest = Some(created);
        }
    }
    scrape.outbox = outbox
        .into_iter()
        .map(|((channel, state), n)| (channel, state.to_string(), n))
        .collect();
    scrape.tables = store
        .tables()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.format == "delta")
        .map(|t| TableGauges {
            name: t.name,
            rows: t.row_count,
            updated: unix(t.updated_at),
        })
        .collect();
    scrape
}
