//! Retention: which runs `orchestrator gc` (and a workflow's `retention:`) may delete.
//!
//! A pure function of the records, so the rules are table-tested. A run older than the
//! cutoff is deleted unless something still needs it:
//! - it is still `running`;
//! - a `rerun` may still resume it: it did not succeed (failed, cancelled, interrupted)
//!   and no later run of the same workflow and logical date has replaced it;
//! - a backfill that did not succeed lists it (`backfill --resume` reruns it);
//! - one of its notifications is still being delivered.
//!
//! Succeeded backfills older than the cutoff go with their runs. The catalog, schedule
//! and file-trigger records, usage counters and sent data alerts are never touched:
//! deleting them would change what runs next, not just what history shows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use orchestrator_state::{BackfillRecord, BackfillStatus, RunRecord, RunStatus};

/// What to delete, and why the other old runs are kept.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Run ids to delete.
    pub runs: Vec<String>,
    /// Backfill ids to delete.
    pub backfills: Vec<String>,
    /// Old runs kept, by reason.
    pub kept_running: usize,
    pub kept_for_rerun: usize,
    pub kept_for_backfill: usize,
    pub kept_for_notifications: usize,
}

/// Plans deleting runs started before `cutoff` (of `workflow` only, if given).
/// `undelivered` holds the ids of runs with notifications still pending.
pub fn plan(
    runs: &[RunRecord],
    backfills: &[BackfillRecord],
    undelivered: &BTreeSet<String>,
    cutoff: DateTime<Utc>,
    workflow: Option<&str>,
) -> Plan {
    // The newest run of each (workflow, logical date): only it can still be rerun.
    let mut newest: BTreeMap<(&str, &str), (&DateTime<Utc>, &str)> = BTreeMap::new();
    for r in runs {
        let key = (r.workflow.as_str(), r.logical_date.as_str());
        let this = (&r.started_at, r.id.as_str());
        if newest.get(&key).is_none_or(|n| *n < this) {
            newest.insert(key, this);
        }
    }
    let open_backfills: BTreeSet<&str> = backfills
        .iter()
        .filter(|b| b.status != BackfillStatus::Succeeded)
        .flat_map(|b| b.dates.iter().filter_map(|d| d.run_id.as_deref()))
        .collect();
    let mut plan = Plan::default();
    for r in runs {
        if r.started_at >= cutoff || workflow.is_some_and(|w| w != r.workflow) {
            continue;
        }
        let latest = newest
            .get(&(r.workflow.as_str(), r.logical_date.as_str()))
            .is_some_and(|n| n.1 == r.id);
        if r.status == RunStatus::Running {
            plan.kept_running += 1;
        } else if latest
            && matches!(
                r.status,
                RunStatus::Failed | RunStatus::Cancelled | RunStatus::Interrupted
            )
        {
            plan.kept_for_rerun += 1;
        } else if open_backfills.contains(r.id.as_str()) {
            plan.kept_for_backfill += 1;
        } else if undelivered.contains(&r.id) {
            plan.kept_for_notifications += 1;
        } else {
            plan.runs.push(r.id.clone());
        }
    }
    plan.backfills = backfills
        .iter()
        .filter(|b| {
            b.status == BackfillStatus::Succeeded
                && b.created_at < cutoff
                && workflow.is_none_or(|w| w == b.workflow)
        })
        .map(|b| b.id.clone())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(id: &str, date: &str, day: u32, status: RunStatus) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: "daily".into(),
            workflow_path: "/w/daily.yaml".into(),
            definition: String::new(),
            params: Default::default(),
            logical_date: date.into(),
            status,
            started_at: Utc.with_ymd_and_hms(2026, 1, day, 22, 0, 0).unwrap(),
            ended_at: None,
            pid: 1,
            reruns: 0,
            task_order: Vec::new(),
            trigger: None,
            note: None,
            backend: None,
            channels_file: None,
            trigger_files: Vec::new(),
            resume_pending: false,
            execution_started_at: None,
        }
    }

    #[test]
    fn keeps_what_a_rerun_backfill_or_delivery_needs() {
        use RunStatus::*;
        let runs = vec![
            run("old-ok", "2026-01-01", 1, Succeeded),
            // Failed, then replaced by a later run of the same date: deletable.
            run("old-failed-replaced", "2026-01-02", 2, Failed),
            run("old-replacement", "2026-01-02", 3, Succeeded),
            // Failed and never replaced: a rerun may still resume it.
            run("old-failed", "2026-01-04", 4, Failed),
            run("old-interrupted", "2026-01-05", 5, Interrupted),
            run("old-running", "2026-01-06", 6, Running),
            run("old-in-backfill", "2026-01-07", 7, Succeeded),
            run("old-notifying", "2026-01-08", 8, Succeeded),
            run("new-failed", "2026-01-20", 20, Failed),
        ];
        let backfill = |id: &str, status, run_id: &str| BackfillRecord {
            id: id.into(),
            workflow: "daily".into(),
            workflow_path: String::new(),
            from: String::new(),
            to: String::new(),
            calendar: "daily".into(),
            reprocess: "none".into(),
            max_active_runs: 1,
            backwards: false,
            params: Default::default(),
            dates: vec![orchestrator_state::BackfillDate {
                date: String::new(),
                run_id: Some(run_id.into()),
                skipped: None,
            }],
            status,
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            ended_at: None,
            pid: 1,
        };
        let backfills = vec![
            backfill("bf-failed", BackfillStatus::Failed, "old-in-backfill"),
            backfill("bf-done", BackfillStatus::Succeeded, "old-ok"),
        ];
        let undelivered = BTreeSet::from(["old-notifying".to_string()]);
        let cutoff = Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap();
        let p = plan(&runs, &backfills, &undelivered, cutoff, None);
        assert_eq!(p.runs, ["old-ok", "old-failed-replaced", "old-replacement"]);
        assert_eq!(p.backfills, ["bf-done"]);
        assert_eq!(
            (
                p.kept_running,
                p.kept_for_rerun,
                p.kept_for_backfill,
                p.kept_for_notifications
            ),
            (1, 2, 1, 1)
        );
        // Another workflow's filter deletes nothing of this one.
        let p = plan(&runs, &backfills, &undelivered, cutoff, Some("hourly"));
        assert!(p.runs.is_empty() && p.backfills.is_empty());
    }
}
