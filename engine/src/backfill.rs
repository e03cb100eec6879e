//! Backfills: which logical dates a range holds, and what to do for each.
//!
//! The logical dates of a range are the dates the workflow's schedule fires on, in its
//! time zone (weekdays for `cron(0 22 ? * MON-FRI *)`), or every day when it has no
//! schedule or `--calendar daily` is asked for. Both ends of the range are included.
//! Holidays are not removed: their runs end early on their own (short-circuit).
//!
//! What happens to a date depends on the runs it already has (`--reprocess`, after
//! Airflow's `reprocess_behavior`): `none` leaves every date that has a finished run
//! alone, `failed` resumes the failed ones (`rerun`: only what did not succeed, same run
//! id), `all` starts a new run for every date.

use chrono::{Duration, NaiveDate, TimeZone};
use orchestrator_state::{RunRecord, RunStatus};

use crate::model::Workflow;

/// Where the logical dates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    /// The workflow's schedule (every day if it has none).
    Schedule,
    Daily,
}

impl Calendar {
    pub fn parse(s: &str) -> Result<Calendar, String> {
        match s {
            "schedule" => Ok(Calendar::Schedule),
            "daily" => Ok(Calendar::Daily),
            _ => Err(format!(
                "`{s}` is not a calendar: use `schedule` or `daily`"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Calendar::Schedule => "schedule",
            Calendar::Daily => "daily",
        }
    }
}

/// Which dates with runs already are run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reprocess {
    None,
    Failed,
    All,
}

impl Reprocess {
    pub fn parse(s: &str) -> Result<Reprocess, String> {
        match s {
            "none" => Ok(Reprocess::None),
            "failed" => Ok(Reprocess::Failed),
            "all" => Ok(Reprocess::All),
            _ => Err(format!(
                "`{s}` is not a reprocess behaviour: use `none`, `failed` or `all`"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reprocess::None => "none",
            Reprocess::Failed => "failed",
            Reprocess::All => "all",
        }
    }
}

/// At most this many logical dates in one backfill.
pub const MAX_DATES: usize = 100_000;

/// The logical dates from `from` to `to`, both included, oldest first.
pub fn logical_dates(
    wf: &Workflow,
    from: NaiveDate,
    to: NaiveDate,
    calendar: Calendar,
) -> Result<Vec<NaiveDate>, String> {
    if from > to {
        return Err(format!(
            "--from {from} is after --to {to}; give the earlier date first"
        ));
    }
    let days = (to - from).num_days() + 1;
    let schedule = match (calendar, &wf.schedule) {
        (Calendar::Schedule, Some(s)) => s,
        _ => {
            if days as usize > MAX_DATES {
                return Err(format!(
                    "{from}..{to} holds {days} dates; a backfill takes at most {MAX_DATES}"
                ));
            }
            return Ok(from.iter_days().take(days as usize).collect());
        }
    };
    // Fire times from the first instant of `from` to the last of `to`, in the schedule's
    // time zone; each fire's local date is a logical date (as the daemon dates its runs).
    let start = schedule
        .tz
        .from_local_datetime(&from.and_hms_opt(0, 0, 0).unwrap_or_default())
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok_or_else(|| format!("{from} has no midnight in {}", schedule.tz))?;
    let mut out: Vec<NaiveDate> = Vec::new();
    let mut at = start - Duration::seconds(1);
    let mut fires = 0usize;
    while let Some(next) = schedule.next_after(at) {
        let date = next.with_timezone(&schedule.tz).date_naive();
        if date > to {
            break;
        }
        if date >= from && out.last() != Some(&date) {
            out.push(date);
        }
        fires += 1;
        if fires > 10 * MAX_DATES {
            return Err(format!(
                "the schedule fires more than {} times in {from}..{to}; use --calendar daily or a shorter range",
                10 * MAX_DATES
            ));
        }
        at = next;
    }
    Ok(out)
}

/// What a backfill does for one date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a new run.
    Run,
    /// Resume this run (as `rerun`): what did not succeed runs again, same run id.
    Resume(String),
    /// Leave the date alone, for this reason.
    Skip(String),
}

/// The action for a date, given the workflow's runs of that date (any order) and the
/// reprocess behaviour.
pub fn action(runs: &[&RunRecord], reprocess: Reprocess) -> Action {
    let latest = runs
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .max_by(|a, b| a.started_at.cmp(&b.started_at));
    let Some(latest) = latest else {
        return Action::Run;
    };
    let succeeded = runs.iter().find(|r| r.status == RunStatus::Succeeded);
    match (reprocess, latest.status) {
        (_, RunStatus::Running) => Action::Skip(format!(
            "run {} is in progress; wait for it, or `orchestrator cancel {}`",
            latest.id, latest.id
        )),
        (Reprocess::All, _) => Action::Run,
        (_, RunStatus::Succeeded) => {
            Action::Skip(format!("already succeeded in run {}", latest.id))
        }
        (Reprocess::Failed, _) => Action::Resume(latest.id.clone()),
        (Reprocess::None, status) => match succeeded {
            Some(ok) => Action::Skip(format!("already succeeded in run {}", ok.id)),
            None => Action::Skip(format!(
                "run {} {status}; `--reprocess failed` resumes it",
                latest.id
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(extra: &str) -> Workflow {
        crate::load::tests::load(&format!("name: w\n{extra}tasks:\n  a:\n    kind: noop\n"))
            .unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn dates(v: Vec<NaiveDate>) -> Vec<String> {
        v.into_iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn weekday_schedule_gives_weekdays_with_both_ends_included() {
        let w = wf("schedule: \"cron(0 22 ? * MON-FRI *)\"\ntimezone: UTC\n");
        // Thu 2025-07-03 .. Tue 2025-07-08: across the weekend and the July 4th holiday
        // (a weekday: its run short-circuits by itself).
        let got = logical_dates(&w, d("2025-07-03"), d("2025-07-08"), Calendar::Schedule).unwrap();
        assert_eq!(
            dates(got),
            ["2025-07-03", "2025-07-04", "2025-07-07", "2025-07-08"]
        );
        let got = logical_dates(&w, d("2025-07-05"), d("2025-07-06"), Calendar::Schedule).unwrap();
        assert!(got.is_empty());
        let got = logical_dates(&w, d("2025-07-04"), d("2025-07-07"), Calendar::Daily).unwrap();
        assert_eq!(
            dates(got),
            ["2025-07-04", "2025-07-05", "2025-07-06", "2025-07-07"]
        );
        // A single day range is that day.
        let got = logical_dates(&w, d("2025-07-07"), d("2025-07-07"), Calendar::Schedule).unwrap();
        assert_eq!(dates(got), ["2025-07-07"]);
        assert!(
            logical_dates(&w, d("2025-07-08"), d("2025-07-07"), Calendar::Daily)
                .unwrap_err()
                .contains("is after")
        );
    }

    #[test]
    fn no_schedule_means_every_day_and_local_dates_follow_the_time_zone() {
        let w = wf("");
        let got = logical_dates(&w, d("2026-02-27"), d("2026-03-02"), Calendar::Schedule).unwrap();
        assert_eq!(
            dates(got),
            ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
        );
        // 23:30 in Tokyo every day: the logical date is Tokyo's.
        let w = wf("schedule: \"30 23 * * *\"\ntimezone: Asia/Tokyo\n");
        let got = logical_dates(&w, d("2026-03-01"), d("2026-03-02"), Calendar::Schedule).unwrap();
        assert_eq!(dates(got), ["2026-03-01", "2026-03-02"]);
    }

    fn run(id: &str, status: RunStatus, minute: u32) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: "w".into(),
            workflow_path: "w.yaml".into(),
            definition: String::new(),
            params: Default::default(),
            logical_date: "2026-01-02".into(),
            status,
            started_at: chrono::Utc
                .with_ymd_and_hms(2026, 1, 3, 0, minute, 0)
                .unwrap(),
            ended_at: None,
            pid: 1,
            reruns: 0,
            task_order: vec![],
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
    fn reprocess_decides_per_date_from_its_runs() {
        let ok = run("a", RunStatus::Succeeded, 1);
        let bad = run("b", RunStatus::Failed, 2);
        let skipped = run("c", RunStatus::Skipped, 3);
        assert_eq!(action(&[], Reprocess::None), Action::Run);
        assert_eq!(action(&[&skipped], Reprocess::None), Action::Run);
        assert_eq!(
            action(&[&ok], Reprocess::None),
            Action::Skip("already succeeded in run a".into())
        );
        assert_eq!(
            action(&[&ok], Reprocess::Failed),
            Action::Skip("already succeeded in run a".into())
        );
        assert_eq!(action(&[&ok], Reprocess::All), Action::Run);
        assert_eq!(
            action(&[&bad], Reprocess::None),
            Action::Skip("run b failed; `--reprocess failed` resumes it".into())
        );
        assert_eq!(
            action(&[&bad], Reprocess::Failed),
            Action::Resume("b".into())
        );
        // A success before a later failure: `none` keeps the success.
        assert_eq!(
            action(&[&ok, &bad], Reprocess::None),
            Action::Skip("already succeeded in run a".into())
        );
    }
}
