//! OpenLineage run events (spec 2-0-2): one job per task (`WORKFLOW.TASK`), one
//! OpenLineage run per task attempt, the workflow run as its `parent`; START when an
//! attempt starts, COMPLETE, FAIL or ABORT when it ends, each with the datasets the task
//! kind names ([`crate::task::Task::lineage`]).
//!
//! **Delivery:** an event is an outbox record (channel [`CHANNEL`]) written in the same
//! commit as the transition it reports, so a crash neither loses nor duplicates it: the
//! record id (`RUN/lineage/TASK.ATTEMPT.TYPE/@lineage`) is the same on every retry, and
//! so is the payload, built once. `notify/` delivers it like a notification.
//!
//! **Ids are stable:** OpenLineage wants UUIDs; ours are derived from the run id, task and
//! attempt (FNV-1a, 128 bits, as a version-8 UUID), so the workflow run's id in the
//! `parent` facet is the same for every task of the run and across its reruns.
//!
//! **Dataset names** follow OpenLineage's naming spec: local files and tables are `file`
//! datasets named by absolute path (a table by `{warehouse}/{table}`, where the local
//! catalog places it); on AWS, S3 objects are `s3://BUCKET` datasets named by key, and
//! tables are Athena's (`awsathena://athena.REGION.amazonaws.com`,
//! `AwsDataCatalog.DATABASE.TABLE`).

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use orchestrator_state::{DeliveryStatus, OutboxRecord, RunRecord};
use serde_json::{json, Map, Value};

/// The reserved channel name under which a workflow's lineage target is kept (a channel
/// name cannot start with `@`, so it never meets a user's).
pub const CHANNEL: &str = "@lineage";

const SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PARENT: &str =
    "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet";
const ERROR: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const JOB_TYPE: &str =
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const ASSERTIONS: &str = "https://openlineage.io/spec/facets/1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";
const OUTPUT_STATS: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";

/// Who produced the events (OpenLineage's `producer` and every facet's `_producer`).
pub fn producer() -> String {
    format!(
        "https://github.com/orchestrator/orchestrator/tree/v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A workflow's `lineage:` (or the shared channels file's): where its events go (the
/// channel [`CHANNEL`]) and the namespace of its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Lineage {
    /// The jobs' namespace (`namespace:`, default `orchestrator`).
    pub namespace: String,
}

/// One dataset, as OpenLineage names it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub namespace: String,
    pub name: String,
    /// `inputFacets` of an input, `outputFacets` of an output.
    pub io_facets: Map<String, Value>,
}

impl Dataset {
    /// A local file or directory: `file`, its absolute path (`.` and `..` resolved
    /// lexically: the path need not exist).
    pub fn file(path: &Path) -> Dataset {
        Dataset {
            namespace: "file".into(),
            name: normalize(path).display().to_string(),
            ..Dataset::default()
        }
    }

    /// An `s3://bucket/key` URL: namespace `s3://bucket`, name the key.
    pub fn s3(url: &str) -> Option<Dataset> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(Dataset {
            namespace: format!("s3://{bucket}"),
            name: key.trim_end_matches('/').to_string(),
            ..Dataset::default()
        })
    }

    /// A table of the local catalog: where the catalog places it, `{warehouse}/{table}`.
    pub fn local_table(warehouse: &Path, table: &str) -> Dataset {
        Dataset::file(&warehouse.join(table))
    }

    /// A table of Athena's default catalog.
    pub fn athena_table(region: &str, database: &str, table: &str) -> Dataset {
        Dataset {
            namespace: format!("awsathena://athena.{region}.amazonaws.com"),
            name: format!("AwsDataCatalog.{database}.{table}"),
            ..Dataset::default()
        }
    }

    /// Adds the `dataQualityAssertions` input facet: `(rule, column, success)` each.
    pub fn with_assertions(mut self, assertions: &[(String, Option<String>, bool)]) -> Dataset {
        let list: Vec<Value> = assertions
            .iter()
            .map(|(rule, column, success)| {
                let kind = rule.split('(').next().unwrap_or(rule).trim();
                let mut a = json!({"assertion": kind, "success": success, "name": rule});
                if let Some(c) = column {
                    a["column"] = Value::from(c.clone());
                }
                a
            })
            .collect();
        self.io_facets.insert(
            "dataQualityAssertions".into(),
            json!({"_producer": producer(), "_schemaURL": ASSERTIONS, "assertions": list}),
        );
        self
    }

    /// Adds the `outputStatistics` output facet.
    pub fn with_row_count(mut self, rows: u64) -> Dataset {
        self.io_facets.insert(
            "outputStatistics".into(),
            json!({"_producer": producer(), "_schemaURL": OUTPUT_STATS, "rowCount": rows}),
        );
        self
    }

    fn to_json(&self, io_key: &str) -> Value {
        let mut v = json!({"namespace": self.namespace, "name": self.name, "facets": {}});
        if !self.io_facets.is_empty() {
            v[io_key] = Value::Object(self.io_facets.clone());
        }
        v
    }
}

/// What a task reads and writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Datasets {
    pub inputs: Vec<Dataset>,
    pub outputs: Vec<Dataset>,
}

/// Where a task's tables are, for [`crate::task::Task::lineage`].
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The local warehouse (absolute).
    pub warehouse: &'a Path,
}

/// How an attempt's OpenLineage run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Start,
    Complete,
    Fail,
    Abort,
}

impl Transition {
    fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "START",
            Transition::Complete => "COMPLETE",
            Transition::Fail => "FAIL",
            Transition::Abort => "ABORT",
        }
    }
}

/// One event of a task attempt.
pub struct Event<'a> {
    pub lineage: &'a Lineage,
    pub run: &'a RunRecord,
    pub task: &'a str,
    pub attempt: u32,
    pub transition: Transition,
    pub datasets: &'a Datasets,
    /// FAIL's error (already redacted).
    pub error: Option<&'a str>,
    pub at: DateTime<Utc>,
}

impl Event<'_> {
    /// The event as OpenLineage JSON.
    pub fn to_json(&self) -> Value {
        let producer = producer();
        let run_id = uuid(&[&self.run.id, self.task, &self.attempt.to_string()]);
        let mut run_facets = json!({
            "parent": {
                "_producer": producer, "_schemaURL": PARENT,
                "run": {"runId": uuid(&[&self.run.id])},
                "job": {"namespace": self.lineage.namespace, "name": self.run.workflow},
            },
        });
        if let Some(message) = self.error {
            run_facets["errorMessage"] = json!({
                "_producer": producer, "_schemaURL": ERROR,
                "message": message, "programmingLanguage": "rust",
            });
        }
        json!({
            "eventType": self.transition.as_str(),
            "eventTime": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "producer": producer,
            "schemaURL": SCHEMA,
            "run": {"runId": run_id, "facets": run_facets},
            "job": {
                "namespace": self.lineage.namespace,
                "name": format!("{}.{}", self.run.workflow, self.task),
                "facets": {"jobType": {
                    "_producer": producer, "_schemaURL": JOB_TYPE,
                    "processingType": "BATCH", "integration": "ORCHESTRATOR", "jobType": "TASK",
                }},
            },
            "inputs": self.datasets.inputs.iter().map(|d| d.to_json("inputFacets")).collect::<Vec<_>>(),
            "outputs": self.datasets.outputs.iter().map(|d| d.to_json("outputFacets")).collect::<Vec<_>>(),
        })
    }

    /// The outbox record that delivers it; its id is the same however often this
    /// transition is written.
    pub fn outbox(&self) -> OutboxRecord {
        let id = format!(
            "{}/lineage/{}.{}.{}/{CHANNEL}",
            self.run.id,
            self.task,
            self.attempt,
            self.transition.as_str()
        );
        OutboxRecord {
            id,
            run_id: self.run.id.clone(),
            workflow: self.run.workflow.clone(),
            event: "lineage".into(),
            channel: CHANNEL.into(),
            payload: self.to_json(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            created_at: self.at,
            next_at: self.at,
            delivered_at: None,
            last_error: None,
            workflow_path: None,
        }
    }
}

/// A version-8 UUID from the FNV-1a 128-bit hash of `parts`: stable across processes
/// and releases.
pub fn uuid(parts: &[&str]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(PRIME);
        }
        for b in part.bytes() {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    let mut bytes = h.to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `path` absolute, with `.` and `..` resolved without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_well_formed_and_tell_parts_apart() {
        let a = uuid(&["20261206T000000-abcd", "publish", "1"]);
        assert_eq!(a, uuid(&["20261206T000000-abcd", "publish", "1"]));
        assert_ne!(a, uuid(&["20261206T000000-abcd", "publish", "2"]));
        assert_ne!(uuid(&["ab", "c"]), uuid(&["a", "bc"]));
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert_eq!(&a[14..15], "8", "version 8: {a}");
        assert!("89ab".contains(&a[19..20]), "RFC 4122 variant: {a}");
    }

    #[test]
    fn datasets_are_named_as_the_naming_spec_says() {
        let d = Dataset::file(Path::new("/srv/x/../landing/./bars"));
        assert_eq!(
            (d.namespace.as_str(), d.name.as_str()),
            ("file", "/srv/landing/bars")
        );
        let s = Dataset::s3("s3://lake/warehouse/stock_daily/").unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str()),
            ("s3://lake", "warehouse/stock_daily")
        );
        let t = Dataset::athena_table("us-east-1", "stock", "stock_raw");
        assert_eq!(t.namespace, "awsathena://athena.us-east-1.amazonaws.com");
        assert_eq!(t.name, "AwsDataCatalog.stock.stock_raw");
    }
}
