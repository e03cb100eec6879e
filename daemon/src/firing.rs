//! Fire times: what is due, `concurrency:`, `catchup:`, `deadline:`, and the schedule
//! record catch-up resumes from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use orchestrator_engine::runner;
use orchestrator_engine::schedule::{Catchup, Concurrency};
use orchestrator_engine::state::{RunStatus, ScheduleRecord, Write};
use orchestrator_engine::workflow::Workflow;

use crate::event_loop::*;

/// A due run waiting for the workflow's current run to end.
#[derive(Debug, Clone)]
pub(crate) struct Due {
    pub(crate) at: DateTime<Utc>,
    pub(crate) trigger: String,
    /// For a file-triggered run: the files, with their size and modification time.
    pub(crate) files: Vec<(PathBuf, u64, i64)>,
    /// For a triggered run: `--param` overrides and the logical date, if given.
    pub(crate) overrides: BTreeMap<String, String>,
    pub(crate) date: Option<String>,
}

/// The next instant after `after` at which `wf`'s `deadline:` is checked.
pub(crate) fn next_deadline(wf: &Workflow, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = wf.schedule.as_ref()?;
    s.next_time_of_day(wf.policy.deadline?, after)
}

pub(crate) fn chrono_tz_utc() -> chrono_tz::Tz {
    chrono_tz::Tz::UTC
}

impl Daemon {
    /// A fire time is handled (about to start, skipped, or queued).
    pub(crate) fn remember(&mut self, name: &str, at: DateTime<Utc>) {
        let h = self.handled.entry(name.to_string()).or_insert(at);
        *h = (*h).max(at);
        self.record_point(name);
    }

    /// Writes the workflow's schedule record: the point catch-up resumes from after a
    /// crash. It is the latest fire time handled, but stops short of the oldest one still
    /// queued (`concurrency: queue`, `catchup: all`): a queued run lost with the process
    /// is a missed fire time at the next start, handled per `catchup:`, not lost.
    pub(crate) fn record_point(&mut self, name: &str) {
        let Some(&handled) = self.handled.get(name) else {
            return;
        };
        let point = match self
            .queued
            .get(name)
            .and_then(|q| q.iter().map(|d| d.at).min())
        {
            Some(oldest) => handled.min(oldest - chrono::Duration::nanoseconds(1)),
            None => handled,
        };
        if self.recorded.get(name) == Some(&point) {
            return;
        }
        let record = ScheduleRecord {
            workflow: name.to_string(),
            last_fire: point,
        };
        match self.store.commit(&[Write::Schedule(record)]) {
            Ok(()) => {
                self.recorded.insert(name.to_string(), point);
            }
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: cannot record fire time {point}: {e}")
            }
        }
    }

    /// On a graceful stop, queued runs are not started: each is recorded as a `skipped`
    /// run saying so (and logged), never dropped silently.
    pub(crate) fn drop_queued(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        for (name, dues) in queued {
            let Some(entry) = self.entries.get(&name) else {
                continue;
            };
            for due in dues {
                let why = format!(
                    "due at {}, queued, and the daemon stopped before it could start",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                self.record_skipped(&name, &entry.wf, &due, &why);
            }
            self.record_point(&name);
        }
    }

    /// Records `due` as a run that was not started, saying `why`, and logs it.
    pub(crate) fn record_skipped(&self, name: &str, wf: &Workflow, due: &Due, why: &str) {
        let run_id = runner::new_run_id();
        let date = due
            .date
            .clone()
            .unwrap_or_else(|| self.logical_date(name, due.at));
        match runner::record_skipped(&self.store, wf, &run_id, &date, &due.trigger, why) {
            Ok(_) => tracing::info!("daemon: workflow {name}: run {run_id} skipped: {why}"),
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: {why}, and it cannot be recorded: {e}")
            }
        }
    }

    /// Starts the next queued run of `name`, recording that its fire time is handled
    /// first (durable before it exists).
    pub(crate) fn start_queued(&mut self, name: &str) -> bool {
        let Some(due) = self.queued.get_mut(name).and_then(|q| q.pop_front()) else {
            return false;
        };
        self.record_point(name);
        let _ = self.start(name, due); // `start` logs failures
        true
    }

    /// Fire times missed while the daemon was down, handled per `catchup:`.
    pub(crate) fn catch_up(&mut self, name: &str, now: DateTime<Utc>) {
        let Some(e) = self.entries.get(name) else {
            return;
        };
        let Some(schedule) = e.wf.schedule.clone() else {
            return;
        };
        let policy = e.wf.policy;
        let Some(since) = self.last_fire(name).or(policy.start) else {
            return; // A new schedule starts from now.
        };
        // Before `start_date`, nothing runs.
        let since = policy
            .start
            .map_or(since, |s| since.max(s - chrono::Duration::nanoseconds(1)));
        let keep = match policy.catchup {
            Catchup::All => policy.max_catchup,
            Catchup::None | Catchup::Latest => 1,
        };
        let missed = schedule.missed(since, now, keep);
        let Some(&latest) = missed.recent.last() else {
            return;
        };
        let starts: Vec<DateTime<Utc>> = match policy.catchup {
            Catchup::None => Vec::new(),
            Catchup::Latest => vec![latest],
            Catchup::All => missed.recent.clone(),
        };
        let count = if missed.exact {
            missed.count.to_string()
        } else {
            format!("more than {}", missed.count)
        };
        tracing::info!(
            "daemon: workflow {name}: {count} fire time{} missed since {}; catchup: {:?} starts {}",
            if missed.count == 1 && missed.exact {
                ""
            } else {
                "s"
            },
            since.format("%Y-%m-%dT%H:%M:%SZ"),
            policy.catchup,
            starts.len()
        );
        // Catch-up runs go one after another, whatever `concurrency:` says: all are
        // queued (the schedule record stops short of them), and the first starts now
        // unless a run is going.
        for at in starts {
            let due = Due {
                at,
                trigger: format!("catch-up {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                files: Vec::new(),
                overrides: BTreeMap::new(),
                date: None,
            };
            self.queued
                .entry(name.to_string())
                .or_default()
                .push_back(due);
        }
        self.remember(name, latest);
        if !self.active.contains_key(name) {
            self.start_queued(name);
        }
        if let Some(e) = self.entries.get_mut(name) {
            e.next = schedule.next_after(latest.max(now));
        }
    }

    /// For each workflow whose `deadline:` has come: if its schedule fired that day and no
    /// run of that logical date succeeded, queues its `sla_miss` notifications (the
    /// deliverer sends them).
    pub(crate) fn check_deadlines(&mut self) {
        let now = Utc::now();
        let due: Vec<(String, DateTime<Utc>)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.deadline_at.filter(|t| *t <= now).map(|t| (n.clone(), t)))
            .collect();
        for (name, at) in due {
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            e.deadline_at = next_deadline(&e.wf, at);
            let Some(s) = e.wf.schedule.as_ref() else {
                continue;
            };
            if !s.fired_that_day_before(at) {
                continue;
            }
            let day = at.with_timezone(&s.tz).format("%Y-%m-%d").to_string();
            let runs: Vec<_> = match self.store.runs(Some(&name), 1000) {
                Ok(r) => r.into_iter().filter(|r| r.logical_date == day).collect(),
                Err(err) => {
                    tracing::warn!("daemon: workflow {name}: cannot check its deadline: {err}");
                    continue;
                }
            };
            if runs.iter().any(|r| r.status == RunStatus::Succeeded) {
                continue;
            }
            let records = orchestrator_engine::notify::deadline_outbox(&e.wf, &day, at, &runs, now);
            tracing::info!(
                "daemon: workflow {name}: no successful run for {day} by its deadline{}",
                if records.is_empty() {
                    " (no channel subscribes to sla_miss)"
                } else {
                    ""
                }
            );
            let writes: Vec<_> = records
                .into_iter()
                .map(orchestrator_engine::state::Write::Outbox)
                .collect();
            if let Err(err) = self.store.commit(&writes) {
                tracing::warn!(
                    "daemon: workflow {name}: cannot queue its deadline notification: {err}"
                );
            }
        }
    }

    /// Starts (or skips, queues, replaces) every run whose fire time has come.
    pub(crate) fn fire_due(&mut self) {
        let now = Utc::now();
        let due: Vec<(String, DateTime<Utc>)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.next.filter(|t| *t <= now).map(|t| (n.clone(), t)))
            .collect();
        for (name, at) in due {
            self.remember(&name, at);
            let next = self
                .entries
                .get(&name)
                .and_then(|e| e.wf.schedule.as_ref())
                .and_then(|s| s.next_after(at.max(now)));
            if let Some(e) = self.entries.get_mut(&name) {
                e.next = next;
            }
            let due = Due {
                at,
                trigger: format!("schedule {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
                files: Vec::new(),
                overrides: BTreeMap::new(),
                date: None,
            };
            self.due(&name, due);
        }
    }

    /// A run is due: start it, or apply `concurrency:` if the previous one is going.
    pub(crate) fn due(&mut self, name: &str, due: Due) {
        let Some(active) = self.active.get(name) else {
            let _ = self.start(name, due); // `start` logs failures
            return;
        };
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        let prev = active.run_id.clone();
        match entry.wf.policy.concurrency {
            Concurrency::Forbid => {
                let why = format!(
                    "due at {}, but run {prev} was still running (concurrency: forbid)",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                self.record_skipped(name, &entry.wf, &due, &why);
            }
            Concurrency::Queue => {
                tracing::info!(
                    "daemon: workflow {name}: run due at {} queued behind run {prev}",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                let due = Due {
                    trigger: format!("{} (queued behind run {prev})", due.trigger),
                    ..due
                };
                self.queued
                    .entry(name.to_string())
                    .or_default()
                    .push_back(due);
                self.record_point(name);
            }
            Concurrency::Replace => {
                tracing::info!(
                    "daemon: workflow {name}: run {prev} replaced by the run due at {} (concurrency: replace); cancelling it",
                    due.at.format("%Y-%m-%dT%H:%M:%SZ")
                );
                active.cancel.cancel();
                self.replaced.insert(
                    prev.clone(),
                    format!(
                        "replaced by the run due at {} (concurrency: replace)",
                        due.at.format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                );
                // Start the new run as soon as the old one has recorded its end.
                let q = self.queued.entry(name.to_string()).or_default();
                q.clear();
                q.push_back(due);
                self.record_point(name);
            }
        }
    }

    pub(crate) fn logical_date(&self, name: &str, at: DateTime<Utc>) -> String {
        let tz = self
            .entries
            .get(name)
            .and_then(|e| e.wf.schedule.as_ref())
            .map_or(chrono_tz_utc(), |s| s.tz);
        at.with_timezone(&tz).format("%Y-%m-%d").to_string()
    }
}
