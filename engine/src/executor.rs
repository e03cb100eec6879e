//! The executor: one event loop per run.
//!
//! Each turn of the loop (1) decides, for tasks whose upstreams changed, whether they can
//! run, must wait, or can never run (trigger rules); (2) starts ready tasks up to
//! `max_parallel`; (3) writes every transition of the turn to the store in one durable
//! group commit; (4) only then starts the attempts: each is polled once on the loop's
//! thread, and one that is not finished by then continues as its own tokio task; (5) waits
//! for the next completion, retry timer or cancellation, draining all completions already
//! available. An attempt that finished in its first poll is handled in the next turn,
//! without waiting.
//!
//! **Invariant:** a transition is durable before the engine acts on it: a task is
//! recorded `running` before its attempt is first polled, and `succeeded` before any
//! dependant is started (its dependants are started in a later turn, after the commit).
//!
//! **Cost:** each turn costs what changed in it, not the size of the run: upstream
//! outcomes are tallied per task as they arrive ([`Tally`]), retries wait in a queue
//! ordered by due time, and a task's full upstream list is read only when its trigger
//! rule settles it. A 10,000-task fan-in decides its sink in O(1) per completion.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use orchestrator_state::{
    AttemptRecord, RunRecord, RunStatus, StateError, Store, TaskRecord, TaskStatus, Write,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::model::Workflow;
use crate::sent::SentMessages;
use crate::task::{OutputSink, Outputs, TaskContext, TaskFailure, SHORT_CIRCUIT};
use crate::template::Redactor;
use crate::trigger::{decide, Decision, Upstream};
use crate::usage::UsageCounters;

/// How long a task may take to stop after its cancel token fires before the engine
/// stops waiting for it.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// What the caller sees of a run while it executes (the CLI prints these).
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    Started {
        task: &'a str,
        attempt: u32,
    },
    Succeeded {
        task: &'a str,
        attempt: u32,
        elapsed: Duration,
    },
    Failed {
        task: &'a str,
        attempt: u32,
        error: &'a str,
        /// Set when another attempt follows after this delay.
        retry_in: Option<Duration>,
    },
    Skipped {
        task: &'a str,
        reason: &'a str,
    },
    Cancelled {
        task: &'a str,
    },
}

pub trait Observer: Send + Sync {
    fn event(&self, event: &Event<'_>);
    /// The execution is about to wait (for its commit, or for running tasks): whatever
    /// the observer buffered of this turn's events should be shown now. A chain reports
    /// two events per task; printing them in one write instead of two saved a system
    /// call per task.
    fn turn_end(&self) {}
}

/// How a task enters an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// Succeeded earlier in this run; keeps its result.
    Keep,
    /// To execute; `prior_attempts` were made in earlier executions of the run.
    Execute { prior_attempts: u32 },
}

pub struct Execution<'a> {
    pub store: &'a Store,
    pub catalog: Arc<dyn Catalog>,
    pub usage: Arc<dyn UsageCounters>,
    pub sent: Arc<dyn SentMessages>,
    pub workflow: &'a Workflow,
    /// The run record, already persisted as `running` with its task records.
    pub run: RunRecord,
    /// Per task, by index.
    pub records: Vec<TaskRecord>,
    pub initial: Vec<Initial>,
    pub cancel: CancellationToken,
    pub redactor: Arc<Redactor>,
    pub observer: &'a dyn Observer,
}

#[derive(Debug)]
enum State {
    Pending,
    Ready,
    Running { attempt: u32 },
    Retrying,
    Done(Upstream),
}

enum Outcome {
    Succeeded(Outputs),
    Failed(TaskFailure),
    /// The task could not be made (its fields read an upstream output that is not
    /// there): failed, and not retried, since another attempt would read the same.
    Unrunnable(String),
    /// With what the task said as it stopped, if it did within the grace period (a
    /// plugin names itself and what it was doing).
    TimedOut(Duration, Option<String>),
    Cancelled,
}

struct Finished {
    task: usize,
    attempt: u32,
    elapsed: Duration,
    outcome: Outcome,
    tail: String,
}

struct Loop<'a> {
    ex: Execution<'a>,
    states: Vec<State>,
    /// Topological rank of each task: the order in which decisions are made.
    rank: Vec<usize>,
    /// Tasks whose upstreams changed, to decide on, by rank.
    dirty: BTreeSet<(usize, usize)>,
    /// Tasks that may start, by rank (file order among peers).
    ready: BTreeSet<(usize, usize)>,
    attempts: Vec<Vec<AttemptRecord>>,
    writes: Vec<Write>,
    to_spawn: Vec<usize>,
    running: usize,
    cancelling: bool,
    /// Per task: why its branch was cut short, if it short-circuited or is downstream of
    /// a task that did. Its dependants are skipped with this reason.
    cut: Vec<Option<String>>,
    /// When this execution misses the workflow's `sla:` (cleared once notified).
    sla_due: Option<Instant>,
    /// Per task: its upstreams' outcomes so far.
    tally: Vec<Tally>,
    /// Tasks waiting to retry, by due time.
    retry_queue: BTreeSet<(Instant, usize)>,
}

/// A task's upstream outcomes, counted as they arrive, so that deciding does not re-read
/// every upstream on every completion.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    /// Upstreams not finished yet.
    waiting: usize,
    /// Finished without succeeding (failed, skipped, cancelled).
    not_succeeded: usize,
    succeeded: usize,
    /// Failed, or skipped because of a failure (what `any_failed` counts).
    failures: usize,
    /// An upstream that finished had its branch cut (short-circuit).
    cut: bool,
}

impl Tally {
    fn add(&mut self, outcome: Upstream, cut: bool) {
        self.waiting = self.waiting.saturating_sub(1);
        match outcome {
            Upstream::Succeeded => self.succeeded += 1,
            Upstream::Waiting => self.waiting += 1,
            Upstream::Failed
            | Upstream::Skipped {
                after_failure: true,
            } => {
                self.not_succeeded += 1;
                self.failures += 1;
            }
            Upstream::Skipped { .. } | Upstream::Cancelled => self.not_succeeded += 1,
        }
        self.cut |= cut;
    }

    /// Whether `rule` certainly waits with these outcomes; otherwise the full rule decides
    /// (once: the task then runs or is skipped).
    fn waits(&self, rule: crate::trigger::TriggerRule) -> bool {
        use crate::trigger::TriggerRule::*;
        if self.cut || self.waiting == 0 {
            return false;
        }
        match rule {
            AllSuccess => self.not_succeeded == 0,
            AnySuccess => self.succeeded == 0,
            AllDone => true,
            AnyFailed => self.failures == 0,
        }
    }
}

/// Executes the run to completion (or cancellation) and returns its final record.
pub async fn execute(ex: Execution<'_>) -> Result<RunRecord, StateError> {
    let n = ex.workflow.tasks.len();
    let mut rank = vec![0; n];
    for (r, &t) in ex.workflow.dag.order().iter().enumerate() {
        rank[t] = r;
    }
    let states: Vec<State> = ex
        .initial
        .iter()
        .map(|i| match i {
            Initial::Keep => State::Done(Upstream::Succeeded),
            Initial::Execute { .. } => State::Pending,
        })
        .collect();
    // A kept task that short-circuited in an earlier execution still cuts its branch.
    let cut: Vec<Option<String>> = (0..n)
        .map(|t| match ex.initial[t] {
            Initial::Keep if ex.workflow.tasks[t].short_circuit => {
                cut_reason(&ex.workflow.tasks[t].id, &ex.records[t].outputs)
            }
            _ => None,
        })
        .collect();
    let dirty = (0..n)
        .filter(|&t| ex.initial[t] != Initial::Keep)
        .map(|t| (rank[t], t))
        .collect();
    let mut tally = vec![Tally::default(); n];
    for (t, tally) in tally.iter_mut().enumerate() {
        for &u in ex.workflow.dag.upstream(t) {
            tally.waiting += 1;
            if let State::Done(outcome) = states[u] {
                tally.add(outcome, cut[u].is_some());
            }
        }
    }
    let mut lp = Loop {
        ex,
        states,
        rank,
        dirty,
        ready: BTreeSet::new(),
        attempts: vec![Vec::new(); n],
        writes: Vec::new(),
        to_spawn: Vec::new(),
        running: 0,
        cancelling: false,
        cut,
        sla_due: None,
        tally,
        retry_queue: BTreeSet::new(),
    };
    lp.sla_due = lp.ex.workflow.sla.map(|d| Instant::now() + d);
    let workflow = lp.ex.workflow.name.clone();
    crate::metrics::run_started(&workflow);
    let result = lp.run().await;
    let (status, ended) = match &result {
        Ok(run) => (
            run.status.as_str(),
            run.ended_at.unwrap_or_else(Utc::now).timestamp_millis() as f64 / 1000.0,
        ),
        // The store refused a commit: the run stops here, and recovery marks it.
        Err(_) => ("failed", Utc::now().timestamp_millis() as f64 / 1000.0),
    };
    crate::metrics::run_finished(&workflow, status, ended);
    result
}

impl Loop<'_> {
    async fn run(&mut self) -> Result<RunRecord, StateError> {
        let mut joins: JoinSet<Finished> = JoinSet::new();
        loop {
            // A completion caused by the cancellation can arrive before the cancel branch
            // below is polled; checking first keeps "cancelled" from turning into "skipped"
            // downstream.
            if self.ex.cancel.is_cancelled() && !self.cancelling {
                self.cancel_waiting();
            }
            self.decide();
            self.start_ready();
            self.ex.observer.turn_end();
            if !self.writes.is_empty() {
                // Awaited, not blocking: while this commit waits for the disk, this
                // worker thread runs other runs, whose commits share the next write.
                self.ex.store.commit_async(&self.writes).await?;
                self.writes.clear();
            }
            // Each attempt is polled once here, on the loop's own thread: one that is done
            // at once (a noop, a skip decided by the task itself) costs no thread
            // hand-off; the rest continue as their own tokio tasks.
            let mut done_inline = false;
            for t in std::mem::take(&mut self.to_spawn) {
                let mut attempt = Box::pin(self.attempt_future(t));
                let waker = std::task::Waker::noop();
                let mut cx = std::task::Context::from_waker(waker);
                match attempt.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(f) => {
                        self.finished(Ok(f));
                        done_inline = true;
                    }
                    // Polled again by the runtime as soon as it is spawned, which
                    // re-registers whatever it waits on with a real waker.
                    std::task::Poll::Pending => {
                        joins.spawn(attempt);
                    }
                }
            }
            if done_inline {
                continue;
            }
            let next_retry = self.retry_queue.first().map(|&(due, _)| due);
            if self.running == 0 && next_retry.is_none() && self.ready.is_empty() {
                break;
            }
            self.ex.observer.turn_end();
            tokio::select! {
                Some(joined) = joins.join_next() => {
                    self.finished(joined);
                    while let Some(joined) = joins.try_join_next() {
                        self.finished(joined);
                    }
                }
                _ = sleep_until(next_retry) => self.retries_due(),
                _ = sleep_until(self.sla_due), if self.sla_due.is_some() => self.sla_missed(),
                _ = self.ex.cancel.cancelled(), if !self.cancelling => self.cancel_waiting(),
            }
        }
        self.finish_run().await
    }

    /// The run is still going after `sla:`: queue `sla_miss` (committed next turn).
    fn sla_missed(&mut self) {
        self.sla_due = None;
        let Some(sla) = self.ex.workflow.sla else {
            return;
        };
        let running: Vec<&str> = self
            .ex
            .records
            .iter()
            .filter(|r| r.status == TaskStatus::Running)
            .map(|r| r.task_id.as_str())
            .collect();
        let payload = crate::notify::sla_payload(&self.ex.run, sla, &running);
        let run = self.ex.run.clone();
        let n = (run.reruns + 1).to_string();
        self.queue_notifications(crate::notify::NotifyEvent::SlaMiss, &run, n, &payload);
    }

    /// Queues `event`'s notifications with this turn's writes: they are committed with
    /// what they report.
    fn queue_notifications(
        &mut self,
        event: crate::notify::NotifyEvent,
        run: &RunRecord,
        n: String,
        payload: &serde_json::Value,
    ) {
        let records =
            crate::notify::outbox(&self.ex.workflow.notify, event, run, n, payload, Utc::now());
        self.writes.extend(records.into_iter().map(Write::Outbox));
    }

    /// With `lineage:`, the OpenLineage event of attempt `attempt` of task `t` goes into
    /// the outbox, in the commit of the transition it reports.
    fn lineage(
        &mut self,
        t: usize,
        attempt: u32,
        transition: crate::lineage::Transition,
        outputs: Option<&crate::task::Outputs>,
        error: Option<&str>,
    ) {
        let wf = self.ex.workflow;
        let Some(lineage) = &wf.lineage else {
            return;
        };
        let def = &wf.tasks[t];
        let place = crate::lineage::Place {
            warehouse: &wf.warehouse,
        };
        let datasets = def.task.lineage(place, outputs);
        let event = crate::lineage::Event {
            lineage,
            run: &self.ex.run,
            task: &def.id,
            attempt,
            transition,
            datasets: &datasets,
            error,
            at: Utc::now(),
        };
        self.writes.push(Write::Outbox(event.outbox()));
    }

    fn id(&self, t: usize) -> &str {
        &self.ex.workflow.tasks[t].id
    }

    /// Applies trigger rules to every dirty task, cascading skips downstream.
    fn decide(&mut self) {
        while let Some((_, t)) = self.dirty.pop_first() {
            if !matches!(self.states[t], State::Pending) {
                continue;
            }
            if self.tally[t].waits(self.ex.workflow.tasks[t].trigger) {
                continue;
            }
            let dag = &self.ex.workflow.dag;
            let cut = dag.upstream(t).iter().find_map(|&u| {
                self.cut[u]
                    .clone()
                    .filter(|_| matches!(self.states[u], State::Done(_)))
            });
            if let Some(reason) = cut {
                self.cut[t] = Some(reason.clone());
                self.skip(t, reason, false);
                continue;
            }
            let upstream: Vec<(&str, Upstream)> = dag
                .upstream(t)
                .iter()
                .map(|&u| {
                    let state = match self.states[u] {
                        State::Done(o) => o,
                        _ => Upstream::Waiting,
                    };
                    (self.ex.workflow.tasks[u].id.as_str(), state)
                })
                .collect();
            match decide(self.ex.workflow.tasks[t].trigger, &upstream) {
                Decision::Wait => {}
                Decision::Run => {
                    self.states[t] = State::Ready;
                    self.ready.insert((self.rank[t], t));
                }
                Decision::Skip {
                    reason,
                    after_failure,
                } => self.skip(t, reason, after_failure),
            }
        }
    }

    fn skip(&mut self, t: usize, reason: String, after_failure: bool) {
        self.ex.observer.event(&Event::Skipped {
            task: self.id(t),
            reason: &reason,
        });
        let now = Utc::now();
        let rec = &mut self.ex.records[t];
        rec.status = TaskStatus::Skipped;
        rec.started_at = None;
        rec.ended_at = Some(now);
        rec.error = Some(reason);
        self.writes.push(Write::Task(rec.clone()));
        self.done(t, Upstream::Skipped { after_failure });
    }

    fn done(&mut self, t: usize, outcome: Upstream) {
        self.states[t] = State::Done(outcome);
        let cut = self.cut[t].is_some();
        for &d in self.ex.workflow.dag.downstream(t) {
            self.tally[d].add(outcome, cut);
            self.dirty.insert((self.rank[d], d));
        }
    }

    fn start_ready(&mut self) {
        if self.cancelling {
            return;
        }
        while self.running < self.ex.workflow.max_parallel {
            let Some((_, t)) = self.ready.pop_first() else {
                break;
            };
            // The record holds the latest attempt number, across retries and reruns.
            let attempt = self.ex.records[t].attempts + 1;
            let now = Utc::now();
            self.states[t] = State::Running { attempt };
            self.running += 1;
            let first = attempt == self.first_attempt(t);
            let rec = &mut self.ex.records[t];
            rec.status = TaskStatus::Running;
            rec.attempts = attempt;
            if rec.started_at.is_none() || first {
                rec.started_at = Some(now);
            }
            rec.ended_at = None;
            self.writes.push(Write::Task(rec.clone()));
            let a = AttemptRecord {
                run_id: self.ex.run.id.clone(),
                task_id: rec.task_id.clone(),
                attempt,
                status: TaskStatus::Running,
                started_at: now,
                ended_at: None,
                exit_code: None,
                error: None,
                output_tail: String::new(),
                outputs: Default::default(),
            };
            self.writes.push(Write::Attempt(a.clone()));
            self.attempts[t].push(a);
            self.lineage(t, attempt, crate::lineage::Transition::Start, None, None);
            self.to_spawn.push(t);
            self.ex.observer.event(&Event::Started {
                task: self.id(t),
                attempt,
            });
        }
    }

    /// The attempt number of this execution's first attempt at task `t`.
    fn first_attempt(&self, t: usize) -> u32 {
        match self.ex.initial[t] {
            Initial::Execute { prior_attempts } => prior_attempts + 1,
            Initial::Keep => 1,
        }
    }

    fn attempt_future(&self, t: usize) -> impl Future<Output = Finished> + Send + 'static {
        let def = &self.ex.workflow.tasks[t];
        let attempt = match self.states[t] {
            State::Running { attempt } => attempt,
            _ => 0,
        };
        let cancel = self.ex.cancel.child_token();
        let output = OutputSink::new(&def.id, self.ex.redactor.clone());
        let ctx = TaskContext {
            run_id: self.ex.run.id.clone(),
            task_id: def.id.clone(),
            attempt,
            logical_date: self.ex.run.logical_date.clone(),
            base_dir: self.ex.workflow.base_dir(),
            warehouse: self.ex.workflow.warehouse.clone(),
            lake: self.ex.workflow.lake.clone(),
            catalog: self.ex.catalog.clone(),
            usage: self.ex.usage.clone(),
            sent: self.ex.sent.clone(),
            short_circuit: def.short_circuit,
            cancel: cancel.clone(),
            output: output.clone(),
        };
        let task = match &def.late {
            None => Ok(def.task.clone()),
            Some(late) => late.build(self.upstream_outputs(&late.reads)),
        };
        let timeout = def.timeout;
        let run_cancel = self.ex.cancel.clone();
        let run_id = self.ex.run.id.clone();
        async move {
            let started = std::time::Instant::now();
            let _live = crate::task::LiveOutput::register(&run_id, &ctx.task_id, &output);
            let outcome = match task {
                // A panicking plugin fails its attempt instead of the engine.
                Ok(task) => run_attempt(CatchUnwind(task.run(&ctx)), &cancel, timeout).await,
                Err(why) => {
                    ctx.output.line(&why);
                    Outcome::Unrunnable(why)
                }
            };
            let outcome = match outcome {
                Outcome::Failed(_) | Outcome::TimedOut(..) if run_cancel.is_cancelled() => {
                    Outcome::Cancelled
                }
                o => o,
            };
            Finished {
                task: t,
                attempt,
                elapsed: started.elapsed(),
                outcome,
                tail: output.tail(),
            }
        }
    }

    /// The outputs of those of `tasks` that succeeded (in this execution, or kept from an
    /// earlier one), for a task whose fields read them.
    fn upstream_outputs(&self, tasks: &[String]) -> BTreeMap<String, Outputs> {
        tasks
            .iter()
            .filter_map(|id| {
                let rec = &self.ex.records[self.ex.workflow.index_of(id)?];
                (rec.status == TaskStatus::Succeeded).then(|| (id.clone(), rec.outputs.clone()))
            })
            .collect()
    }

    fn finished(&mut self, joined: Result<Finished, tokio::task::JoinError>) {
        let Ok(f) = joined else {
            // attempt_future catches task panics itself (CatchUnwind); a JoinError here
            // means the runtime is shutting down, and the run's record is left to recovery.
            return;
        };
        let t = f.task;
        self.running -= 1;
        let now = Utc::now();
        let redactor = self.ex.redactor.clone();
        let Some(mut a) = self.attempts[t].pop() else {
            return;
        };
        a.ended_at = Some(now);
        a.output_tail = f.tail;
        let def = &self.ex.workflow.tasks[t];
        match f.outcome {
            Outcome::Succeeded(outputs) => {
                if def.short_circuit {
                    self.cut[t] = cut_reason(&def.id, &outputs);
                }
                a.status = TaskStatus::Succeeded;
                // A task that reports the exit status it succeeded with (a shell task's
                // 0, or 99 for a short-circuit) has it in its attempt too, as a failure does.
                a.exit_code = outputs
                    .get("exit_code")
                    .and_then(|c| c.as_i64())
                    .and_then(|c| i32::try_from(c).ok());
                a.outputs = outputs.clone();
                let rec = &mut self.ex.records[t];
                rec.status = TaskStatus::Succeeded;
                rec.ended_at = Some(now);
                rec.error = None;
                rec.outputs = outputs;
                self.writes.push(Write::Attempt(a));
                self.writes.push(Write::Task(rec.clone()));
                // Copied only for a lineage event: this is every task's path.
                let outputs = self
                    .ex
                    .workflow
                    .lineage
                    .is_some()
                    .then(|| rec.outputs.clone());
                self.lineage(
                    t,
                    f.attempt,
                    crate::lineage::Transition::Complete,
                    outputs.as_ref(),
                    None,
                );
                let def = &self.ex.workflow.tasks[t];
                crate::metrics::attempt_finished(
                    &self.ex.workflow.name,
                    &def.id,
                    "succeeded",
                    f.elapsed,
                );
                self.ex.observer.event(&Event::Succeeded {
                    task: &def.id,
                    attempt: f.attempt,
                    elapsed: f.elapsed,
                });
                self.done(t, Upstream::Succeeded);
            }
            Outcome::Cancelled => {
                a.status = TaskStatus::Cancelled;
                a.error = Some("cancelled: the run was cancelled".into());
                let rec = &mut self.ex.records[t];
                rec.status = TaskStatus::Cancelled;
                rec.ended_at = Some(now);
                rec.error = a.error.clone();
                self.writes.push(Write::Attempt(a));
                self.writes.push(Write::Task(rec.clone()));
                self.lineage(t, f.attempt, crate::lineage::Transition::Abort, None, None);
                let def = &self.ex.workflow.tasks[t];
                crate::metrics::attempt_finished(
                    &self.ex.workflow.name,
                    &def.id,
                    "cancelled",
                    f.elapsed,
                );
                self.ex.observer.event(&Event::Cancelled { task: &def.id });
                self.done(t, Upstream::Cancelled);
            }
            Outcome::Failed(_) | Outcome::TimedOut(..) | Outcome::Unrunnable(_) => {
                let retryable = match &f.outcome {
                    Outcome::Unrunnable(_) => false,
                    Outcome::Failed(e) => e.retryable,
                    _ => true,
                };
                let (error, exit_code) = match f.outcome {
                    Outcome::Failed(e) => {
                        a.outputs = e.outputs;
                        (e.message, e.exit_code)
                    }
                    Outcome::Unrunnable(why) => (why, None),
                    Outcome::TimedOut(d, said) => (
                        format!(
                            "timed out after {}; the task and its child processes were killed (raise `timeout:` if it needs longer){}",
                            humantime::format_duration(d),
                            said.map(|s| format!(": {s}")).unwrap_or_default()
                        ),
                        None,
                    ),
                    _ => unreachable!("matched above"),
                };
                let error = redactor.redact(&error).into_owned();
                a.status = TaskStatus::Failed;
                a.error = Some(error.clone());
                a.exit_code = exit_code;
                let made = f.attempt + 1 - self.first_attempt(t);
                let retry = retryable && made <= def.retry.retries && !self.cancelling;
                let retry_in = retry.then(|| def.retry.delay_before(made + 1));
                let rec = &mut self.ex.records[t];
                rec.error = Some(error.clone());
                if let Some(delay) = retry_in {
                    let due = Instant::now() + delay;
                    self.states[t] = State::Retrying;
                    self.retry_queue.insert((due, t));
                } else {
                    rec.status = TaskStatus::Failed;
                    rec.ended_at = Some(now);
                }
                let failed_outputs = self
                    .ex
                    .workflow
                    .lineage
                    .is_some()
                    .then(|| a.outputs.clone());
                self.writes.push(Write::Attempt(a));
                self.writes.push(Write::Task(rec.clone()));
                self.lineage(
                    t,
                    f.attempt,
                    crate::lineage::Transition::Fail,
                    failed_outputs.as_ref(),
                    Some(&error),
                );
                let def = &self.ex.workflow.tasks[t];
                if let Some(delay) = retry_in {
                    let payload = crate::notify::retry_payload(
                        &self.ex.run,
                        &def.id,
                        f.attempt,
                        &error,
                        delay.as_secs_f64(),
                    );
                    let run = self.ex.run.clone();
                    self.queue_notifications(
                        crate::notify::NotifyEvent::Retry,
                        &run,
                        format!("{}.{}", def.id, f.attempt),
                        &payload,
                    );
                }
                let workflow = &self.ex.workflow.name;
                crate::metrics::attempt_finished(workflow, &def.id, "failed", f.elapsed);
                if retry_in.is_some() {
                    crate::metrics::retried(workflow, &def.id);
                }
                self.ex.observer.event(&Event::Failed {
                    task: &def.id,
                    attempt: f.attempt,
                    error: &error,
                    retry_in,
                });
                if retry_in.is_none() {
                    self.done(t, Upstream::Failed);
                }
            }
        }
    }

    fn retries_due(&mut self) {
        let now = Instant::now();
        while let Some(&(due, t)) = self.retry_queue.first() {
            if due > now {
                break;
            }
            self.retry_queue.pop_first();
            if let State::Retrying = self.states[t] {
                self.states[t] = State::Ready;
                self.ready.insert((self.rank[t], t));
            }
        }
    }

    /// The run was cancelled: running attempts see their (child) tokens fire and report
    /// back; everything not yet running is cancelled now.
    fn cancel_waiting(&mut self) {
        self.cancelling = true;
        self.ready.clear();
        self.dirty.clear();
        self.retry_queue.clear();
        let now = Utc::now();
        for t in 0..self.states.len() {
            if matches!(
                self.states[t],
                State::Pending | State::Ready | State::Retrying
            ) {
                let rec = &mut self.ex.records[t];
                rec.status = TaskStatus::Cancelled;
                rec.ended_at = Some(now);
                rec.error = Some("cancelled before it started: the run was cancelled".into());
                self.writes.push(Write::Task(rec.clone()));
                self.states[t] = State::Done(Upstream::Cancelled);
                self.ex.observer.event(&Event::Cancelled {
                    task: &self.ex.workflow.tasks[t].id,
                });
            }
        }
    }

    async fn finish_run(&mut self) -> Result<RunRecord, StateError> {
        let statuses = self.ex.records.iter().map(|r| r.status);
        let mut status = RunStatus::Succeeded;
        for s in statuses {
            match s {
                TaskStatus::Cancelled => status = RunStatus::Cancelled,
                TaskStatus::Failed if status != RunStatus::Cancelled => status = RunStatus::Failed,
                _ => {}
            }
        }
        if self.cancelling {
            status = RunStatus::Cancelled;
        }
        let mut run = self.ex.run.clone();
        run.status = status;
        run.ended_at = Some(Utc::now());
        self.writes.push(Write::Run(run.clone()));
        // Notifications go into the outbox in the same commit as the run's end: a crash
        // after it still delivers them (at the next start), and none is written twice.
        if let Some(event) = crate::notify::run_event(status) {
            let payload = crate::notify::run_payload(event, &run, &self.ex.records);
            self.queue_notifications(event, &run, (run.reruns + 1).to_string(), &payload);
        }
        self.ex.observer.turn_end();
        self.ex.store.commit_async(&self.writes).await?;
        self.writes.clear();
        Ok(run)
    }
}

/// The skip reason for tasks downstream of `task`, if its outputs short-circuit.
fn cut_reason(task: &str, outputs: &Outputs) -> Option<String> {
    let why = outputs.get(SHORT_CIRCUIT)?;
    let why = why.as_str().map_or_else(|| why.to_string(), str::to_string);
    Some(format!("short-circuited by `{task}`: {why}"))
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a task's finished future (with a panic caught) means for its attempt.
fn outcome_of(r: Result<Result<Outputs, TaskFailure>, String>) -> Outcome {
    match r {
        Ok(Ok(outputs)) => Outcome::Succeeded(outputs),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(panic) => Outcome::Failed(TaskFailure::new(format!(
            "the task crashed (it panicked: {panic}); this is a bug in the task kind, please report it"
        ))),
    }
}

/// Polls a task's future, turning a panic inside it into an error. The engine keeps
/// going; the attempt fails with the panic's message.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(inner).poll(cx)
        })) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                std::task::Poll::Ready(Err(message))
            }
        }
    }
}

async fn run_attempt<F>(
    mut inner: CatchUnwind<F>,
    cancel: &CancellationToken,
    timeout: Option<Duration>,
) -> Outcome
where
    F: Future<Output = Result<Outputs, TaskFailure>> + Unpin,
{
    let timer = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = &mut inner => outcome_of(r),
        _ = timer => {
            cancel.cancel();
            // Past the grace period the task's future is dropped, which stops it.
            let said = match tokio::time::timeout(CANCEL_GRACE, &mut inner).await {
                Ok(Ok(Err(failure))) if failure.message != "cancelled" => Some(failure.message),
                _ => None,
            };
            Outcome::TimedOut(timeout.unwrap_or_default(), said)
        }
        _ = cancel.cancelled() => {
            let _ = tokio::time::timeout(CANCEL_GRACE, &mut inner).await;
            Outcome::Cancelled
        }
    }
}
