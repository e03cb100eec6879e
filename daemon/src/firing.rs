//! Fire times, applied: asks [`crate::policy`] what is due, what `concurrency:`,
//! `catchup:` and `deadline:` decide, and where the schedule record stands, then commits,
//! logs, starts, queues and cancels accordingly.

use chrono::{DateTime, Utc};
use orchestrator_engine::runner;
use orchestrator_engine::state::{ScheduleRecord, Write};
use orchestrator_engine::workflow::Workflow;

use crate::event_loop::Daemon;
use crate::policy::{self, Action, Due};

impl Daemon {
    /// A fire time is handled (about to start, skipped, or queued).
    pub(crate) fn remember(&mut self, name: &str, at: DateTime<Utc>) {
        let h = self.handled.entry(name.to_string()).or_insert(at);
        *h = (*h).max(at);
        self.record_point(name);
    }

    /// Writes the workflow's schedule record where [`policy::record_point`] puts it, if it
    /// moved.
    pub(crate) fn record_point(&mut self, name: &str) {
        let queued = self.queued.get(name).into_iter().flatten().map(|d| d.at);
        let Some(point) = policy::record_point(self.handled.get(name).copied(), queued) else {
            return;
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
                let why = policy::stopped_before_start(&due);
                self.record_skipped(&name, &entry.wf, &due, &why);
            }
            self.record_point(&name);
        }
    }

    /// Records `due` as a run that was not started, saying `why`, and logs it.
    pub(crate) fn record_skipped(&self, name: &str, wf: &Workflow, due: &Due, why: &str) {
        let run_id = runner::new_run_id_in(&self.store);
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

    /// Fire times missed while the daemon was down, handled per `catchup:` (see
    /// [`policy::catch_up`]).
    pub(crate) fn catch_up(&mut self, name: &str, now: DateTime<Utc>) {
        let Some(e) = self.entries.get(name) else {
            return;
        };
        if e.wf.schedule.is_none() {
            return;
        }
        let Some(c) = policy::catch_up(&e.wf, self.last_fire(name), now) else {
            return;
        };
        let count = if c.exact {
            c.count.to_string()
        } else {
            format!("more than {}", c.count)
        };
        tracing::info!(
            "daemon: workflow {name}: {count} fire time{} missed since {}; catchup: {:?} starts {}",
            if c.count == 1 && c.exact { "" } else { "s" },
            policy::stamp(c.since),
            e.wf.policy.catchup,
            c.runs.len()
        );
        // Catch-up runs go one after another, whatever `concurrency:` says: all are
        // queued (the schedule record stops short of them), and the first starts now
        // unless a run is going.
        self.queued
            .entry(name.to_string())
            .or_default()
            .extend(c.runs);
        self.remember(name, c.latest);
        if !self.active.contains_key(name) {
            self.start_queued(name);
        }
        if let Some(e) = self.entries.get_mut(name) {
            e.timers.next = c.next;
        }
    }

    /// For each workflow whose `deadline:` has come: if its schedule fired that day and no
    /// run of that logical date succeeded, queues its `sla_miss` notifications (the
    /// deliverer sends them).
    pub(crate) fn check_deadlines(&mut self) {
        let now = Utc::now();
        let checks: Vec<(String, policy::DeadlineCheck)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| {
                policy::deadline_check(&e.wf, e.timers.deadline_at, now).map(|c| (n.clone(), c))
            })
            .collect();
        for (name, check) in checks {
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            e.timers.deadline_at = check.next;
            let Some(day) = check.day else {
                continue;
            };
            let runs = match self.store.runs(Some(&name), 1000) {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!("daemon: workflow {name}: cannot check its deadline: {err}");
                    continue;
                }
            };
            let Some(runs) = policy::deadline_missed(&day, runs) else {
                continue;
            };
            let records =
                orchestrator_engine::notify::deadline_outbox(&e.wf, &day, check.at, &runs, now);
            tracing::info!(
                "daemon: workflow {name}: no successful run for {day} by its deadline{}",
                if records.is_empty() {
                    " (no channel subscribes to sla_miss)"
                } else {
                    ""
                }
            );
            let writes: Vec<_> = records.into_iter().map(Write::Outbox).collect();
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
        let fires: Vec<(String, policy::Fire)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| {
                let active = self.active.get(n).map(|a| a.run_id.as_str());
                policy::fire(&e.wf, e.timers.next, active, now).map(|f| (n.clone(), f))
            })
            .collect();
        for (name, fire) in fires {
            self.remember(&name, fire.at);
            if let Some(e) = self.entries.get_mut(&name) {
                e.timers.next = fire.next;
            }
            self.apply(&name, fire.action);
        }
    }

    /// Does what [`policy::admit`] decided for a due run of `name`.
    fn apply(&mut self, name: &str, action: Action) {
        match action {
            Action::Start(due) => {
                let _ = self.start(name, due); // `start` logs failures
            }
            Action::Skip { due, why } => {
                if let Some(entry) = self.entries.get(name) {
                    self.record_skipped(name, &entry.wf, &due, &why);
                }
            }
            Action::Queue { due, behind } => {
                tracing::info!(
                    "daemon: workflow {name}: run due at {} queued behind run {behind}",
                    policy::stamp(due.at)
                );
                self.queued
                    .entry(name.to_string())
                    .or_default()
                    .push_back(due);
                self.record_point(name);
            }
            Action::Replace { due, cancel, note } => {
                tracing::info!(
                    "daemon: workflow {name}: run {cancel} replaced by the run due at {} (concurrency: replace); cancelling it",
                    policy::stamp(due.at)
                );
                if let Some(a) = self.active.get(name) {
                    a.cancel.cancel();
                }
                self.replaced.insert(cancel, note);
                // Start the new run as soon as the old one has recorded its end.
                let q = self.queued.entry(name.to_string()).or_default();
                q.clear();
                q.push_back(due);
                self.record_point(name);
            }
        }
    }

    pub(crate) fn logical_date(&self, name: &str, at: DateTime<Utc>) -> String {
        let schedule = self.entries.get(name).and_then(|e| e.wf.schedule.as_ref());
        policy::logical_date(schedule, at)
    }
}
