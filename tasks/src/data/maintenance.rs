//! A published table's upkeep: compaction (`optimize`) and file retention (`vacuum`),
//! run by hand (`orchestrator tables optimize|vacuum`) or by a `publish` task's
//! `maintenance:` policy right after its commit.
//!
//! The policy runs inside the publish task, after the commit and under the same
//! per-table lock, so it never runs while the table is being written, and it runs
//! wherever the publish runs (`orchestrator run`, `backfill`, the daemon). A failure of
//! the upkeep does not fail the publish: the rows are committed and audited; the next
//! publish tries the upkeep again, and the task's output says what went wrong.

use std::path::Path;

use chrono::Utc;
use orchestrator_engine::task::{Dur, Invalid};
use serde::Deserialize;
use serde_json::{json, Value};

use super::delta::{self, Committer, DeltaError};

/// `maintenance:` of a `publish` task.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Compact the table after this many publishes that committed rows since the last
    /// compaction.
    pub optimize_every: Option<u32>,
    /// Z-order the compacted files by these columns (sorts rows that are read together
    /// into the same files), instead of bin-packing them in table order.
    #[serde(default)]
    pub zorder_by: Vec<String>,
    /// After each publish that commits, delete the files that left the table (through
    /// a compaction or a restore) more than this long ago. At least 7 days.
    pub vacuum_older_than: Option<Dur>,
}

impl Policy {
    /// Checked when the workflow loads.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.optimize_every == Some(0) {
            return Err(
                "`maintenance.optimize_every` must be at least 1 (publishes between compactions); leave it out to never compact".into(),
            );
        }
        if let Some(Dur(d)) = self.vacuum_older_than {
            let min = delta::VACUUM_MINIMUM.to_std().unwrap_or_default();
            if d < min {
                return Err(format!(
                    "`maintenance.vacuum_older_than` is {}, under the safe minimum of 7d: a reader still on an older version could lose its files",
                    humantime::format_duration(d)
                )
                .into());
            }
        }
        if !self.zorder_by.is_empty() && self.optimize_every.is_none() {
            return Err(
                "`maintenance.zorder_by` needs `optimize_every`: Z-ordering happens when the table is compacted".into(),
            );
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.optimize_every.is_none() && self.vacuum_older_than.is_none()
    }
}

/// Publishes that committed rows since the table's last compaction (history is newest
/// first). A publish a restore undid still counts: its files were written.
fn publishes_since_optimize(history: &[delta::Version]) -> u32 {
    history
        .iter()
        .take_while(|v| v.operation != "OPTIMIZE")
        .filter(|v| v.is_publish() && v.rows_added.unwrap_or(0) > 0)
        .count() as u32
}

/// Applies `policy` to the table at `dir` after a publish by `who` committed. Returns
/// what it did (for the task's outputs), or `None` when nothing was due, and the
/// table's version after it.
pub async fn apply(
    dir: &Path,
    policy: &Policy,
    who: &Committer,
) -> Result<(Option<Value>, u64), DeltaError> {
    let mut done = serde_json::Map::new();
    if let Some(every) = policy.optimize_every {
        // The newest commits only: a table published every minute has thousands. Whether
        // a compaction is due is known once `every` publishes or an OPTIMIZE are found;
        // only a run of other commits (restores, vacuums) longer than the slack makes
        // the whole history worth reading.
        let window = (every as usize).saturating_add(16);
        let mut history = delta::newest(dir, Some(window)).await?;
        if history.len() >= window
            && publishes_since_optimize(&history) < every
            && !history.iter().any(|v| v.operation == "OPTIMIZE")
        {
            history = delta::history(dir).await?;
        }
        if publishes_since_optimize(&history) >= every {
            let o = delta::optimize(dir, &policy.zorder_by, Some(who)).await?;
            done.insert("optimized".into(), json!(o));
        }
    }
    if let Some(Dur(d)) = policy.vacuum_older_than {
        let older_than = chrono::Duration::from_std(d).unwrap_or(delta::VACUUM_MINIMUM);
        let v = delta::vacuum(dir, older_than, Utc::now(), false).await?;
        if !v.files.is_empty() {
            done.insert("vacuumed_files".into(), json!(v.files.len()));
        }
    }
    let version = delta::version_of(&delta::read(dir, None).await?);
    Ok(((!done.is_empty()).then_some(Value::Object(done)), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, operation: &str, run: Option<&str>, rows: u64) -> delta::Version {
        delta::Version {
            version,
            time: None,
            operation: operation.into(),
            run_id: run.map(str::to_string),
            task_id: None,
            rows_added: Some(rows),
            restored_to: None,
        }
    }

    #[test]
    fn compaction_is_due_after_n_publishes_that_wrote_rows() {
        let h = vec![
            v(5, "WRITE", Some("r5"), 10),
            v(4, "WRITE", Some("r4"), 10),
            v(3, "OPTIMIZE", None, 0),
            v(2, "WRITE", Some("r2"), 10),
            v(1, "CREATE TABLE", Some("r1"), 10),
        ];
        assert_eq!(publishes_since_optimize(&h), 2);
        assert_eq!(publishes_since_optimize(&h[2..]), 0);
        assert_eq!(publishes_since_optimize(&h[3..]), 2);
    }

    #[test]
    fn a_policy_is_checked_when_the_workflow_loads() {
        let p = |v: Value| serde_json::from_value::<Policy>(v).map_err(|e| e.to_string());
        assert!(p(json!({"optimize_every": 20, "vacuum_older_than": "30d"}))
            .unwrap()
            .check()
            .is_ok());
        for (bad, says) in [
            (json!({"optimize_every": 0}), "at least 1"),
            (json!({"vacuum_older_than": "1d"}), "safe minimum of 7d"),
            (json!({"zorder_by": ["symbol"]}), "needs `optimize_every`"),
        ] {
            let e = p(bad.clone()).unwrap().check().unwrap_err().message;
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(p(json!({"optimise_every": 3}))
            .unwrap_err()
            .contains("unknown field"));
    }
}
