//! The process's Prometheus metrics: what happened in this process (counters and
//! histograms, recorded where it happens) and what the store holds now (gauges, read when
//! scraped and handed to [`encode`] as a [`Scrape`]).
//!
//! **Why counters live in memory:** a counter that resets when the process restarts is
//! what Prometheus expects (`rate()` and `increase()` handle resets), and recording one
//! costs a lock-free add, so the executor's per-task path stays at microseconds. What must
//! survive a restart (the last success of a workflow, the outbox, the tables) is read
//! from the store at scrape time instead.
//!
//! **Labels are bounded:** workflow names, task ids, channel names, table names and fixed
//! status words; never a run id, a date or an error text.
//!
//! Only this module knows `prometheus-client`; the rest of the workspace calls the
//! recording functions below.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowStatus {
    workflow: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    workflow: String,
    task: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskOnly {
    workflow: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowOnly {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelOutcome {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelState {
    channel: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowChannel {
    workflow: String,
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableOnly {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Task attempts take from microseconds (noop) to hours (a Glue job).
fn task_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
    ])
}

/// A fire is late by milliseconds when the daemon is healthy, by the downtime when it
/// catches up.
fn delay_buckets() -> Histogram {
    Histogram::new([0.01, 0.1, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 86400.0])
}

/// The process's counters and histograms.
struct Recorded {
    runs_finished: Family<WorkflowStatus, Counter>,
    runs_in_progress: Family<WorkflowOnly, Gauge>,
    task_seconds: Histograms<TaskLabels>,
    retries: Family<TaskOnly, Counter>,
    fire_delay: Histograms<WorkflowOnly>,
    notifications: Family<ChannelOutcome, Counter>,
    alerts_sent: Family<WorkflowChannel, Counter>,
    published_rows: Family<TableOnly, Counter>,
    last_success: Family<WorkflowOnly, FloatGauge>,
}

static RECORDED: LazyLock<Recorded> = LazyLock::new(|| Recorded {
    runs_finished: Family::default(),
    runs_in_progress: Family::default(),
    task_seconds: Family::new_with_constructor(task_buckets),
    retries: Family::default(),
    fire_delay: Family::new_with_constructor(delay_buckets),
    notifications: Family::default(),
    alerts_sent: Family::default(),
    published_rows: Family::default(),
    last_success: Family::default(),
});

/// The run statuses a run ends with (`runs_finished_total`'s `status`).
pub const RUN_ENDS: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// A run of `workflow` started executing (a new run, a rerun or a resume).
pub fn run_started(workflow: &str) {
    RECORDED
        .runs_in_progress
        .get_or_create(&WorkflowOnly {
            workflow: workflow.to_string(),
        })
        .inc();
}

/// A run of `workflow` stopped executing with `status` (`succeeded`, `failed`,
/// `cancelled`) at `ended` (seconds since the epoch).
pub fn run_finished(workflow: &str, status: &str, ended: f64) {
    let w = WorkflowOnly {
        workflow: workflow.to_string(),
    };
    RECORDED.runs_in_progress.get_or_create(&w).dec();
    RECORDED
        .runs_finished
        .get_or_create(&WorkflowStatus {
            workflow: workflow.to_string(),
            status: status.to_string(),
        })
        .inc();
    if status == "succeeded" {
        RECORDED.last_success.get_or_create(&w).set(ended);
    }
}

/// An attempt of `task` ended with `status` (`succeeded`, `failed`, `cancelled`) after
/// `elapsed`.
pub fn attempt_finished(workflow: &str, task: &str, status: &str, elapsed: Duration) {
    RECORDED
        .task_seconds
        .get_or_create(&TaskLabels {
            workflow: workflow.to_string(),
            task: task.to_string(),
            status: status.to_string(),
        })
        .observe(elapsed.as_secs_f64());
}

/// A failed attempt of `task` is followed by another.
pub fn retried(workflow: &str, task: &str) {
    RECORDED
        .retries
        .get_or_create(&TaskOnly {
            workflow: workflow.to_string(),
            task: task.to_string(),
        })
        .inc();
}

/// The daemon started a run of `workflow` `delay` after it was due.
pub fn fired(workflow: &str, delay: Duration) {
    RECORDED
        .fire_delay
        .get_or_create(&WorkflowOnly {
            workflow: workflow.to_string(),
        })
        .observe(delay.as_secs_f64());
}

/// A delivery to `channel` ended: `delivered`, `failed` (will be retried) or `gave_up`.
pub fn notification(channel: &str, outcome: &str) {
    RECORDED
        .notifications
        .get_or_create(&ChannelOutcome {
            channel: channel.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// A data alert of `workflow` was delivered to `channel`.
pub fn alert_sent(workflow: &str, channel: &str) {
    RECORDED
        .alerts_sent
        .get_or_create(&WorkflowChannel {
            workflow: workflow.to_string(),
            channel: channel.to_string(),
        })
        .inc();
}

/// A publish inserted `rows` into `table`.
pub fn published(table: &str, rows: u64) {
    RECORDED
        .published_rows
        .get_or_create(&TableOnly {
            table: table.to_string(),
        })
        .inc_by(rows);
}

/// What the store and the daemon hold now, read when `/metrics` is scraped.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    /// Every workflow the process knows (so that its counters exist at 0 before the
    /// first failure: `increase()` cannot see a series that starts at 1).
    pub workflows: Vec<WorkflowGauges>,
    /// Undelivered notifications by channel and state (`waiting`, `failed`).
    pub outbox: Vec<(String, String, u64)>,
    /// When the oldest undelivered notification was created (seconds since the epoch).
    pub outbox_oldest: Option<f64>,
    pub tables: Vec<TableGauges>,
    /// Bytes of the state store on disk, and free on its file system.
    pub store_bytes: u64,
    pub free_bytes: Option<u64>,
    /// Seconds since the newest change that replication shipped, when replicating.
    pub replication_lag: Option<f64>,
}

#[derive(Debug, Default, Clone)]
pub struct WorkflowGauges {
    pub name: String,
    /// The longest gap between its next fire times, for "has not succeeded within its
    /// period" rules; none without a schedule.
    pub period: Option<Duration>,
    /// Its newest succeeded run's end, from the store (seconds since the epoch).
    pub last_success: Option<f64>,
}

#[derive(Debug, Default, Clone)]
pub struct TableGauges {
    pub name: String,
    pub rows: Option<u64>,
    /// When it last changed: its last publish (seconds since the epoch).
    pub updated: f64,
}

/// The metrics in the OpenMetrics text format (which Prometheus scrapes), each name
/// prefixed `orchestrator_`.
pub fn encode(scrape: &Scrape) -> String {
    let r = &*RECORDED;
    for w in &scrape.workflows {
        for status in RUN_ENDS {
            let _ = r.runs_finished.get_or_create(&WorkflowStatus {
                workflow: w.name.clone(),
                status: status.to_string(),
            });
        }
        let labels = WorkflowOnly {
            workflow: w.name.clone(),
        };
        let _ = r.runs_in_progress.get_or_create(&labels);
        if let Some(at) = w.last_success {
            let gauge = r.last_success.get_or_create(&labels);
            if gauge.get() < at {
                gauge.set(at);
            }
        }
    }
    let mut reg = Registry::with_prefix("orchestrator");
    let build: Family<Build, Gauge> = Family::default();
    build
        .get_or_create(&Build {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
    reg.register(
        "build_info",
        "The running binary's version (always 1)",
        build,
    );
    reg.register(
        "runs_finished",
        "Runs that ended, by workflow and status",
        r.runs_finished.clone(),
    );
    reg.register(
        "runs_in_progress",
        "Runs executing in this process",
        r.runs_in_progress.clone(),
    );
    reg.register_with_unit(
        "task_duration",
        "Task attempts by how long they took, by workflow, task and status",
        Unit::Seconds,
        r.task_seconds.clone(),
    );
    reg.register(
        "task_retries",
        "Failed attempts followed by another attempt",
        r.retries.clone(),
    );
    reg.register_with_unit(
        "workflow_last_success_timestamp",
        "When the workflow's newest succeeded run ended (Unix time)",
        Unit::Seconds,
        r.last_success.clone(),
    );
    let period: Family<WorkflowOnly, FloatGauge> = Family::default();
    for w in &scrape.workflows {
        if let Some(p) = w.period {
            period
                .get_or_create(&WorkflowOnly {
                    workflow: w.name.clone(),
                })
                .set(p.as_secs_f64());
        }
    }
    reg.register_with_unit(
        "workflow_schedule_period",
        "The longest gap between the workflow's next fire times",
        Unit::Seconds,
        period,
    );
    reg.register_with_unit(
        "schedule_fire_delay",
        "How long after its due time the daemon started a run",
        Unit::Seconds,
        r.fire_delay.clone(),
    );
    reg.register(
        "notifications",
        "Notification deliveries by channel and outcome (delivered, failed, gave_up)",
        r.notifications.clone(),
    );
    let outbox: Family<ChannelState, Gauge> = Family::default();
    for (channel, state, n) in &scrape.outbox {
        outbox
            .get_or_create(&ChannelState {
                channel: channel.clone(),
                state: state.clone(),
            })
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register(
        "outbox_messages",
        "Undelivered notifications by channel and state (waiting, failed)",
        outbox,
    );
    seconds(
        &mut reg,
        "outbox_oldest_created_timestamp",
        "When the oldest undelivered notification was created (Unix time)",
        scrape.outbox_oldest,
    );
    reg.register(
        "alerts_sent",
        "Data alert messages delivered, by workflow and channel",
        r.alerts_sent.clone(),
    );
    reg.register(
        "published_rows",
        "Rows publishes inserted, by table",
        r.published_rows.clone(),
    );
    let rows: Family<TableOnly, Gauge> = Family::default();
    let updated: Family<TableOnly, FloatGauge> = Family::default();
    for t in &scrape.tables {
        let labels = TableOnly {
            table: t.name.clone(),
        };
        if let Some(n) = t.rows {
            rows.get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        updated.get_or_create(&labels).set(t.updated);
    }
    reg.register("table_rows", "Rows in each published table", rows);
    reg.register_with_unit(
        "table_last_publish_timestamp",
        "When each published table last changed (Unix time)",
        Unit::Seconds,
        updated,
    );
    bytes(
        &mut reg,
        "state_store_size",
        "The state store's size on disk",
        Some(scrape.store_bytes),
    );
    bytes(
        &mut reg,
        "state_disk_free",
        "Free space on the state store's file system",
        scrape.free_bytes,
    );
    seconds(
        &mut reg,
        "replication_lag",
        "How far behind the store's newest commit the replica is",
        scrape.replication_lag,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &reg);
    text
}

/// A gauge of one value in seconds, registered when there is a value.
fn seconds(reg: &mut Registry, name: &str, help: &str, value: Option<f64>) {
    if let Some(v) = value {
        let g = FloatGauge::default();
        g.set(v);
        reg.register_with_unit(name, help, Unit::Seconds, g);
    }
}

/// A gauge of one value in bytes, registered when there is a value.
fn bytes(reg: &mut Registry, name: &str, help: &str, value: Option<u64>) {
    if let Some(v) = value {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        reg.register_with_unit(name, help, Unit::Bytes, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text a real scraper reads: names, labels, types and values.
    #[test]
    fn encodes_recorded_and_scraped_values_with_bounded_labels() {
        run_started("m_wf");
        attempt_finished("m_wf", "load", "failed", Duration::from_millis(20));
        retried("m_wf", "load");
        run_finished("m_wf", "failed", 1_700_000_000.0);
        published("m_table", 42);
        let text = encode(&Scrape {
            workflows: vec![WorkflowGauges {
                name: "m_wf".into(),
                period: Some(Duration::from_secs(86400)),
                last_success: Some(1_600_000_000.0),
            }],
            outbox: vec![("ops".into(), "waiting".into(), 3)],
            outbox_oldest: Some(1_650_000_000.0),
            tables: vec![TableGauges {
                name: "m_table".into(),
                rows: Some(7),
                updated: 1_690_000_000.0,
            }],
            store_bytes: 1234,
            free_bytes: Some(99),
            replication_lag: None,
        });
        for line in [
            "orchestrator_runs_finished_total{workflow=\"m_wf\",status=\"failed\"} 1",
            "orchestrator_runs_finished_total{workflow=\"m_wf\",status=\"succeeded\"} 0",
            "orchestrator_runs_in_progress{workflow=\"m_wf\"} 0",
            "orchestrator_task_duration_seconds_count{workflow=\"m_wf\",task=\"load\",status=\"failed\"} 1",
            "orchestrator_task_retries_total{workflow=\"m_wf\",task=\"load\"} 1",
            "orchestrator_workflow_last_success_timestamp_seconds{workflow=\"m_wf\"} 1600000000.0",
            "orchestrator_workflow_schedule_period_seconds{workflow=\"m_wf\"} 86400.0",
            "orchestrator_outbox_messages{channel=\"ops\",state=\"waiting\"} 3",
            "orchestrator_published_rows_total{table=\"m_table\"} 42",
            "orchestrator_table_rows{table=\"m_table\"} 7",
            "orchestrator_state_store_size_bytes 1234",
            "orchestrator_state_disk_free_bytes 99",
            "orchestrator_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        assert!(!text.contains("replication_lag"), "{text}");
    }
}
