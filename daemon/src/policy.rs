//! The daemon's scheduling decisions, as pure functions of a workflow's settings
//! (`schedule:`, `timezone:`, `dst:`, `concurrency:`, `catchup:`, `max_catchup:`,
//! `start_date:`, `deadline:`), the daemon's records (the schedule record, the run in
//! progress, the queue, the day's runs) and `now`.
//!
//! Nothing here reads the clock, the store or the disk, logs, or spawns: `firing.rs`
//! asks, then applies the answer (commits, logs, starts, cancels). The schedule
//! arithmetic itself (cron, EventBridge, `rate()`, daylight saving, missed fire times) is
//! the engine's [`Schedule`]. The table tests in `policy/tests.rs` drive these functions
//! on a fake clock.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use orchestrator_engine::schedule::{Catchup, Concurrency, Schedule};
use orchestrator_engine::state::{RunRecord, RunStatus};
use orchestrator_engine::workflow::Workflow;

/// A run due to start: a fire time, a trigger, arrived files.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Due {
    pub(crate) at: DateTime<Utc>,
    pub(crate) trigger: String,
    /// For a file-triggered run: the files, with their size and modification time.
    pub(crate) files: Vec<(PathBuf, u64, i64)>,
    /// For a triggered run: `--param` overrides and the logical date, if given.
    pub(crate) overrides: BTreeMap<String, String>,
    pub(crate) date: Option<String>,
}

impl Due {
    /// The schedule's fire time `at`.
    pub(crate) fn fire(at: DateTime<Utc>) -> Due {
        Due::new(at, format!("schedule {}", stamp(at)))
    }

    /// The fire time `at`, missed while the daemon was down.
    pub(crate) fn catch_up(at: DateTime<Utc>) -> Due {
        Due::new(at, format!("catch-up {}", stamp(at)))
    }

    /// A run at `at`, started by `trigger`, with no files, overrides or date.
    pub(crate) fn new(at: DateTime<Utc>, trigger: String) -> Due {
        Due {
            at,
            trigger,
            files: Vec::new(),
            overrides: BTreeMap::new(),
            date: None,
        }
    }
}

/// An instant as the daemon writes it in logs, triggers and notes.
pub(crate) fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// When a scheduled workflow next needs the daemon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timers {
    /// Its next fire time.
    pub(crate) next: Option<DateTime<Utc>>,
    /// When to check the day's `deadline:` next.
    pub(crate) deadline_at: Option<DateTime<Utc>>,
}

/// When the event loop must wake for schedules: the earliest timer of any workflow.
pub(crate) fn wake(timers: impl IntoIterator<Item = Timers>) -> Option<DateTime<Utc>> {
    timers
        .into_iter()
        .flat_map(|t| [t.next, t.deadline_at])
        .flatten()
        .min()
}

/// A `rate()` without `start_date:` is a grid anchored at the fire time the schedule
/// record holds (`last_fire`, a point of the grid), so a restart does not move it; with
/// `start_date:`, the grid starts there.
pub(crate) fn anchor(schedule: &mut Schedule, last_fire: Option<DateTime<Utc>>) {
    if schedule.start.is_none() {
        schedule.start = last_fire;
    }
}

/// The timers of a workflow (re)loaded at `now` whose schedule record says `last_fire`:
/// the first fire time after both (a fire time already handled never fires again), and
/// the first `deadline:` check after now.
pub(crate) fn timers(
    wf: &Workflow,
    last_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Timers {
    let from = last_fire.unwrap_or(now).max(now);
    Timers {
        next: wf.schedule.as_ref().and_then(|s| s.next_after(from)),
        deadline_at: next_deadline(wf, now),
    }
}

/// The next instant after `after` at which `wf`'s `deadline:` is checked.
fn next_deadline(wf: &Workflow, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = wf.schedule.as_ref()?;
    s.next_time_of_day(wf.policy.deadline?, after)
}

/// What the daemon does with a run that is due.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// No run of the workflow is going: start it.
    Start(Due),
    /// `concurrency: forbid`: record it as a `skipped` run, saying why.
    Skip { due: Due, why: String },
    /// `concurrency: queue`: start it when run `behind` (and the runs queued before it)
    /// has ended; its trigger says so.
    Queue { due: Due, behind: String },
    /// `concurrency: replace`: cancel run `cancel`, recording `note` on it, and start
    /// this one, instead of anything queued, once it has ended.
    Replace {
        due: Due,
        cancel: String,
        note: String,
    },
}

/// A run is due while `active` is the workflow's run in progress, if any: start it, or
/// apply `concurrency:`.
pub(crate) fn admit(concurrency: Concurrency, due: Due, active: Option<&str>) -> Action {
    let Some(prev) = active else {
        return Action::Start(due);
    };
    let prev = prev.to_string();
    match concurrency {
        Concurrency::Forbid => Action::Skip {
            why: format!(
                "due at {}, but run {prev} was still running (concurrency: forbid)",
                stamp(due.at)
            ),
            due,
        },
        Concurrency::Queue => Action::Queue {
            due: Due {
                trigger: format!("{} (queued behind run {prev})", due.trigger),
                ..due
            },
            behind: prev,
        },
        Concurrency::Replace => Action::Replace {
            note: format!(
                "replaced by the run due at {} (concurrency: replace)",
                stamp(due.at)
            ),
            due,
            cancel: prev,
        },
    }
}

/// A fire time that has come.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fire {
    pub(crate) at: DateTime<Utc>,
    /// The workflow's next fire time: the first after `at` and after now (fire times that
    /// passed while the daemon could not wake are not run late, one after another).
    pub(crate) next: Option<DateTime<Utc>>,
    pub(crate) action: Action,
}

/// Whether `wf`'s fire time `next` has come by `now` and, if so, what to do, with
/// `active` its run in progress.
pub(crate) fn fire(
    wf: &Workflow,
    next: Option<DateTime<Utc>>,
    active: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Fire> {
    let at = next.filter(|t| *t <= now)?;
    Some(Fire {
        at,
        next: wf.schedule.as_ref().and_then(|s| s.next_after(at.max(now))),
        action: admit(wf.policy.concurrency, Due::fire(at), active),
    })
}

/// What `catchup:` does with the fire times missed while the daemon was down.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CatchUp {
    /// Missed fire times were looked for after this instant.
    pub(crate) since: DateTime<Utc>,
    /// How many were missed: all of them when `exact`, else at least this many.
    pub(crate) count: u64,
    pub(crate) exact: bool,
    /// The runs to start for them, oldest first: queued, and run one after another
    /// whatever `concurrency:` says.
    pub(crate) runs: Vec<Due>,
    /// The latest fire time missed: handled now, whether it runs or not.
    pub(crate) latest: DateTime<Utc>,
    /// The next fire time after it and after now.
    pub(crate) next: Option<DateTime<Utc>>,
}

/// The fire times of `wf` missed between its schedule record (`last_fire`; without one,
/// `start_date:`; without either, a new schedule starts from now) and `now`, handled per
/// `catchup:` and `max_catchup:`. `None` when none was missed.
pub(crate) fn catch_up(
    wf: &Workflow,
    last_fire: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<CatchUp> {
    let schedule = wf.schedule.as_ref()?;
    let policy = wf.policy;
    let since = last_fire.or(policy.start)?;
    // Before `start_date`, nothing runs.
    let since = policy
        .start
        .map_or(since, |s| since.max(s - chrono::Duration::nanoseconds(1)));
    let keep = match policy.catchup {
        Catchup::All => policy.max_catchup,
        Catchup::None | Catchup::Latest => 1,
    };
    let missed = schedule.missed(since, now, keep);
    let latest = *missed.recent.last()?;
    let starts = match policy.catchup {
        Catchup::None => Vec::new(),
        Catchup::Latest => vec![latest],
        Catchup::All => missed.recent,
    };
    Some(CatchUp {
        since,
        count: missed.count,
        exact: missed.exact,
        runs: starts.into_iter().map(Due::catch_up).collect(),
        latest,
        next: schedule.next_after(latest.max(now)),
    })
}

/// Where the schedule record (the point catch-up resumes from after a crash) stands: the
/// latest fire time handled, but short of the oldest one still `queued`
/// (`concurrency: queue`, `catchup: all`), so that a queued run lost with the process is
/// a missed fire time at the next start, handled per `catchup:`, not lost.
pub(crate) fn record_point(
    handled: Option<DateTime<Utc>>,
    queued: impl IntoIterator<Item = DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let handled = handled?;
    Some(match queued.into_iter().min() {
        Some(oldest) => handled.min(oldest - chrono::Duration::nanoseconds(1)),
        None => handled,
    })
}

/// Why a queued run never started: the daemon stopped gracefully first (it is recorded
/// as `skipped`, never dropped silently).
pub(crate) fn stopped_before_start(due: &Due) -> String {
    format!(
        "due at {}, queued, and the daemon stopped before it could start",
        stamp(due.at)
    )
}

/// A `deadline:` that has come.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeadlineCheck {
    /// The deadline.
    pub(crate) at: DateTime<Utc>,
    /// When to check next.
    pub(crate) next: Option<DateTime<Utc>>,
    /// The local day (the logical date) whose runs must include a success; `None` when
    /// the schedule did not fire that day before the deadline: nothing was due.
    pub(crate) day: Option<String>,
}

/// Whether `wf`'s deadline check `deadline_at` has come by `now` and, if so, which day it
/// checks.
pub(crate) fn deadline_check(
    wf: &Workflow,
    deadline_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DeadlineCheck> {
    let at = deadline_at.filter(|t| *t <= now)?;
    let day = wf
        .schedule
        .as_ref()
        .filter(|s| s.fired_that_day_before(at))
        .map(|s| at.with_timezone(&s.tz).format("%Y-%m-%d").to_string());
    Some(DeadlineCheck {
        at,
        next: next_deadline(wf, at),
        day,
    })
}

/// The deadline for `day` is missed when no run of that logical date (among the
/// workflow's `runs`) succeeded: then, that day's runs (for the notification to say what
/// happened to them). `None` when it was met.
pub(crate) fn deadline_missed(day: &str, runs: Vec<RunRecord>) -> Option<Vec<RunRecord>> {
    let runs: Vec<RunRecord> = runs.into_iter().filter(|r| r.logical_date == day).collect();
    if runs.iter().any(|r| r.status == RunStatus::Succeeded) {
        return None;
    }
    Some(runs)
}

/// A run's logical date: the local date of `at` in the schedule's zone (UTC without a
/// schedule).
pub(crate) fn logical_date(schedule: Option<&Schedule>, at: DateTime<Utc>) -> String {
    let tz = schedule.map_or(chrono_tz::Tz::UTC, |s| s.tz);
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests;
