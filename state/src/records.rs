//! The persisted records. Field names are part of the on-disk format: add fields with
//! `#[serde(default)]`, never rename or repurpose one without bumping
//! [`crate::SCHEMA_VERSION`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
    /// Never executed: the daemon did not start it (e.g. `concurrency: forbid` while the
    /// previous run was still going); `RunRecord::note` says why.
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    /// Absolute path of the workflow file; `rerun` reads its current content.
    pub workflow_path: String,
    /// The workflow file's text as last executed (templates unrendered, so no secrets).
    pub definition: String,
    /// Resolved params (defaults from the file overridden by `--param`).
    pub params: BTreeMap<String, String>,
    /// Logical date, `YYYY-MM-DD`.
    pub logical_date: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Process that last executed the run.
    pub pid: u32,
    /// How many times `rerun` resumed this run.
    #[serde(default)]
    pub reruns: u32,
    /// Task ids in the workflow's order (file order), as last executed.
    #[serde(default)]
    pub task_order: Vec<String>,
    /// What started it: `manual`, `schedule 2026-03-08T07:00:00Z`, `catch-up ...`.
    #[serde(default)]
    pub trigger: Option<String>,
    /// Why a run was skipped, or replaced; for people.
    #[serde(default)]
    pub note: Option<String>,
    /// Where its data tasks ran (`local`, `aws`); a rerun runs there too.
    #[serde(default)]
    pub backend: Option<String>,
    /// `--channels FILE` (absolute) when the run was started with one: its deliveries,
    /// reruns and restarts resolve channels from that file too.
    #[serde(default)]
    pub channels_file: Option<String>,
    /// `{{ trigger.files }}` of a file-triggered run: a rerun or a resumed run sees the
    /// same files (they are already marked handled, so nothing else would start them).
    #[serde(default)]
    pub trigger_files: Vec<String>,
    /// Set when a crash left the run `interrupted` (by whichever process opened the store
    /// first), cleared when it is resumed: the daemon resumes such runs at its start even
    /// if another command saw the crash first.
    #[serde(default)]
    pub resume_pending: bool,
    /// When the latest execution started: a rerun's own start (`None` until the first
    /// rerun; then `started_at` stays the first start).
    #[serde(default)]
    pub execution_started_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    /// When the latest execution started (the run's start, or its latest rerun's).
    pub fn execution_start(&self) -> DateTime<Utc> {
        self.execution_started_at.unwrap_or(self.started_at)
    }
}

/// The daemon's memory of one scheduled workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub workflow: String,
    /// The latest fire time handled (started, queued or skipped): catch-up after downtime
    /// starts from here.
    pub last_fire: DateTime<Utc>,
}

/// The current state of one task in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub run_id: String,
    pub task_id: String,
    pub status: TaskStatus,
    /// Attempts made so far, across reruns.
    pub attempts: u32,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed, was skipped or cancelled.
    #[serde(default)]
    pub error: Option<String>,
    /// Outputs of the last successful attempt.
    #[serde(default)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

/// One attempt at one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub run_id: String,
    pub task_id: String,
    /// 1-based, counting across reruns.
    pub attempt: u32,
    pub status: TaskStatus,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error: Option<String>,
    /// The last bytes of the task's output (stdout and stderr interleaved), secrets masked.
    #[serde(default)]
    pub output_tail: String,
    #[serde(default)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

/// A table in the catalog (the local stand-in for the Glue Data Catalog).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    pub name: String,
    /// Absolute path of the directory holding the table's files.
    pub location: String,
    /// `csv`, `json` (newline-delimited) or `parquet`.
    pub format: String,
    /// Columns of the files, in order (partition columns not included).
    pub columns: Vec<ColumnRecord>,
    /// Hive-style partition columns (`dt=2025-04-09/`), in directory order; read as strings.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// Partition directories known, e.g. `dt=2025-04-09`.
    #[serde(default)]
    pub partitions: Vec<String>,
    /// Files known (relative to `location`), for crawls to tell what is new.
    #[serde(default)]
    pub files: Vec<String>,
    /// Rows of each of `files`, in the same order, when a crawl counted them file by file
    /// (CSV); empty when not known. Lets a crawl subtract the files that have gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_rows: Vec<u64>,
    #[serde(default)]
    pub row_count: Option<u64>,
    /// True when the warehouse owns the files (created by orchestrator): `DROP TABLE`
    /// deletes them. Crawled tables are external: dropping them leaves the files.
    #[serde(default)]
    pub managed: bool,
    /// `RUN_ID/TASK_ID` of the task that created a managed table: re-executing that task
    /// in that run (a retry or a rerun) may replace it.
    #[serde(default)]
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub last_crawled_at: Option<DateTime<Utc>>,
    /// A Delta table's (`format: delta`) version as of its last publish or restore: `state
    /// check` compares it with the table's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Publishes that `tables restore` undid, so `show` of their runs can say so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undone: Vec<UndonePublish>,
}

/// A publish undone by `orchestrator tables restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndonePublish {
    pub run_id: String,
    pub task_id: String,
    /// The version the publish committed.
    pub version: u64,
    /// Rows it had added.
    pub rows: u64,
    /// The version the restore committed.
    pub restored_in: u64,
    /// The version the table was restored to.
    pub restored_to: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnRecord {
    pub name: String,
    /// Arrow data type as text, e.g. `Float64`, `Utf8`, `Date32`.
    pub data_type: String,
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

/// A file that started a run of a file-triggered workflow: the same path with the same
/// size and modification time never starts another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub workflow: String,
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (i64 covers 1678 to 2262).
    /// Not i128: the record codec (serde's flatten, which buffers) cannot read one back.
    pub modified_ns: i64,
    pub run_id: String,
}

/// Calls made to an external service on one UTC day (e.g. Alpha Vantage's 25 a day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// What is counted, e.g. `alpha_vantage`.
    pub counter: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub calls: u64,
}

/// One `orchestrator backfill`: a run per logical date of a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillRecord {
    pub id: String,
    pub workflow: String,
    /// Absolute path of the workflow file; `backfill --resume` reads it again.
    pub workflow_path: String,
    /// The range, inclusive at both ends, `YYYY-MM-DD`.
    pub from: String,
    pub to: String,
    /// `schedule` (the workflow's fire dates) or `daily`.
    pub calendar: String,
    /// `none`, `failed` or `all`.
    pub reprocess: String,
    pub max_active_runs: u32,
    pub backwards: bool,
    /// `--param` overrides given to every run.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// In the order they are run.
    pub dates: Vec<BackfillDate>,
    pub status: BackfillStatus,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Process that last drove it.
    pub pid: u32,
}

/// One logical date of a backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillDate {
    pub date: String,
    /// The run made for this date (set before the run starts executing).
    #[serde(default)]
    pub run_id: Option<String>,
    /// Why no run was made, e.g. "already succeeded in run X".
    #[serde(default)]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackfillStatus {
    Running,
    Succeeded,
    /// Finished, and at least one of its runs failed.
    Failed,
    /// Its process stopped before it finished; `backfill --resume ID` continues it.
    Interrupted,
    Cancelled,
}

impl BackfillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillStatus::Running => "running",
            BackfillStatus::Succeeded => "succeeded",
            BackfillStatus::Failed => "failed",
            BackfillStatus::Interrupted => "interrupted",
            BackfillStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for BackfillStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message sent once (an alert for one row): rerunning or retrying never sends it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRecord {
    pub key: String,
    pub at: DateTime<Utc>,
    /// The run that sent it.
    pub run_id: String,
}

/// Where a notification is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not tried yet.
    Pending,
    Delivered,
    /// The last attempt failed (`last_error` says why); tried again at `next_at`. Shown
    /// as `failed` because that is what a person needs to know: the message has not
    /// arrived. Delivery stays at least once, so it is not given up yet.
    #[serde(alias = "retrying")]
    Failed,
    /// Given up after the last of `MAX_ATTEMPTS` attempts (about a day); `last_error`
    /// says why. `orchestrator notify deliver --again` would be the way back (not built).
    GaveUp,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::GaveUp => "gave_up",
        }
    }
}

/// A notification in the outbox: written in the same commit as what it reports (a run
/// that ended, a retry), delivered afterwards, at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// `RUN/EVENT/N/CHANNEL`: also the idempotency key the receiver sees.
    pub id: String,
    pub run_id: String,
    pub workflow: String,
    /// `failure`, `success`, `retry`, `interrupted`, `sla_miss`.
    pub event: String,
    /// A channel name of the run's workflow (resolved when delivering: the record holds
    /// no URL or secret).
    pub channel: String,
    /// The event as sent (no secrets: it is built from run records).
    pub payload: serde_json::Value,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// While pending or retrying: not tried before this.
    pub next_at: DateTime<Utc>,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Set when the notification is about a day rather than a run (a missed `deadline:`):
    /// the workflow file whose channels deliver it; `run_id` may then name no run.
    #[serde(default)]
    pub workflow_path: Option<String>,
}
