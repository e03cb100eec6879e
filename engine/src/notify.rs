//! Run notifications: the workflow's `notify:` subscriptions, the events a run produces,
//! and their payload (version 1, documented in README). The executor writes each event
//! into the state store's outbox in the same commit as what it reports; delivering is
//! another crate's job (`orchestrator-notify`), so a crash between the two loses nothing.

use chrono::{DateTime, Utc};
use orchestrator_state::{
    DeliveryStatus, OutboxRecord, RunRecord, RunStatus, TaskRecord, TaskStatus,
};
use serde_json::{json, Value};

use crate::model::Workflow;
pub use crate::model::{NotifyEvent, Subscription};

/// The run-level event a run's end produces, if any.
pub fn run_event(status: RunStatus) -> Option<NotifyEvent> {
    match status {
        RunStatus::Succeeded => Some(NotifyEvent::Success),
        RunStatus::Failed | RunStatus::Cancelled => Some(NotifyEvent::Failure),
        RunStatus::Interrupted => Some(NotifyEvent::Interrupted),
        RunStatus::Running | RunStatus::Skipped => None,
    }
}

/// The payload of a run-level event (`failure`, `success`, `interrupted`).
pub fn run_payload(event: NotifyEvent, run: &RunRecord, tasks: &[TaskRecord]) -> Value {
    let failed: Vec<Value> = tasks
        .iter()
        .filter(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled))
        .map(|t| {
            json!({
                "task": t.task_id,
                "status": t.status.as_str(),
                "attempts": t.attempts,
                "error": t.error,
            })
        })
        .collect();
    let message = match event {
        NotifyEvent::Success => format!(
            "{} run {} ({}) succeeded",
            run.workflow, run.id, run.logical_date
        ),
        NotifyEvent::Interrupted => format!(
            "{} run {} ({}) was interrupted: the process running it stopped",
            run.workflow, run.id, run.logical_date
        ),
        _ => {
            let list: Vec<String> = failed
                .iter()
                .map(|f| {
                    format!(
                        "{}: {}",
                        f["task"].as_str().unwrap_or_default(),
                        f["error"].as_str().unwrap_or("failed")
                    )
                })
                .collect();
            format!(
                "{} run {} ({}) {}: {}",
                run.workflow,
                run.id,
                run.logical_date,
                run.status.as_str(),
                if list.is_empty() {
                    "no task failed".to_string()
                } else {
                    list.join("; ")
                }
            )
        }
    };
    json!({
        "version": 1,
        "type": format!("run.{}", event.as_str()),
        "event": event.as_str(),
        "workflow": run.workflow,
        "run_id": run.id,
        "logical_date": run.logical_date,
        "status": run.status.as_str(),
        "trigger": run.trigger,
        "execution": run.reruns + 1,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "failed_tasks": failed,
        "message": message,
        "commands": commands(&run.id),
    })
}

/// The payload of an `sla_miss` event: the run has been going longer than `sla`; `running`
/// are its tasks running now.
pub fn sla_payload(run: &RunRecord, sla: std::time::Duration, running: &[&str]) -> Value {
    let sla_s = sla.as_secs_f64();
    json!({
        "version": 1,
        "type": "run.sla_miss",
        "event": "sla_miss",
        "workflow": run.workflow,
        "run_id": run.id,
        "logical_date": run.logical_date,
        "status": "running",
        "execution": run.reruns + 1,
        "started_at": run.started_at,
        "sla_s": sla_s,
        "running_tasks": running,
        "at": Utc::now(),
        "message": format!(
            "{} run {} ({}) is still running after its SLA of {}{}",
            run.workflow,
            run.id,
            run.logical_date,
            humantime::format_duration(sla),
            if running.is_empty() {
                String::new()
            } else {
                format!(" (running: {})", running.join(", "))
            }
        ),
        "commands": commands(&run.id),
    })
}

/// The payload of a `retry` event: `task`'s attempt `attempt` failed; the next starts in
/// `retry_in_s` seconds.
pub fn retry_payload(
    run: &RunRecord,
    task: &str,
    attempt: u32,
    error: &str,
    retry_in_s: f64,
) -> Value {
    json!({
        "version": 1,
        "type": "task.retry",
        "event": "retry",
        "workflow": run.workflow,
        "run_id": run.id,
        "logical_date": run.logical_date,
        "status": "running",
        "task": task,
        "attempt": attempt,
        "error": error,
        "retry_in_s": (retry_in_s * 10.0).round() / 10.0,
        "at": Utc::now(),
        "message": format!(
            "{} run {} ({}): task {task} attempt {attempt} failed, retrying in {:.0}s: {error}",
            run.workflow, run.id, run.logical_date, retry_in_s
        ),
        "commands": commands(&run.id),
    })
}

fn commands(run_id: &str) -> Value {
    json!({
        "show": format!("orchestrator show {run_id}"),
        "rerun": format!("orchestrator rerun {run_id}"),
    })
}

/// The outbox records of `event` for every channel subscribed to it. `n` tells
/// occurrences apart (the run's execution for run events, the attempt for retries), so
/// that the record id — the receiver's idempotency key — is the same however often the
/// same occurrence is written, and different for the next one.
pub fn outbox(
    subscriptions: &[Subscription],
    event: NotifyEvent,
    run: &RunRecord,
    n: String,
    payload: &Value,
    now: DateTime<Utc>,
) -> Vec<OutboxRecord> {
    records(
        subscriptions,
        event,
        (&run.id, &run.workflow),
        n,
        payload,
        now,
    )
}

/// [`outbox`] for `(run id, workflow)`.
fn records(
    subscriptions: &[Subscription],
    event: NotifyEvent,
    (run_id, workflow): (&str, &str),
    n: String,
    payload: &Value,
    now: DateTime<Utc>,
) -> Vec<OutboxRecord> {
    let mut channels: Vec<&str> = subscriptions
        .iter()
        .filter(|s| s.on.contains(&event))
        .flat_map(|s| s.to.iter().map(String::as_str))
        .collect();
    channels.sort_unstable();
    channels.dedup();
    channels
        .into_iter()
        .map(|channel| {
            let id = format!("{run_id}/{}/{n}/{channel}", event.as_str());
            let mut payload = payload.clone();
            payload["id"] = Value::from(id.clone());
            OutboxRecord {
                id,
                run_id: run_id.to_string(),
                workflow: workflow.to_string(),
                event: event.as_str().to_string(),
                channel: channel.to_string(),
                payload,
                status: DeliveryStatus::Pending,
                attempts: 0,
                created_at: now,
                next_at: now,
                delivered_at: None,
                last_error: None,
                workflow_path: None,
            }
        })
        .collect()
}

/// The `sla_miss` notifications of a day without a successful run by the workflow's
/// `deadline:` (`at`). `runs` are that day's runs, newest first; the notifications are
/// filed under the newest (so `show` lists them), or under `WORKFLOW-DAY-deadline` when
/// none started.
pub fn deadline_outbox(
    wf: &Workflow,
    day: &str,
    at: DateTime<Utc>,
    runs: &[RunRecord],
    now: DateTime<Utc>,
) -> Vec<OutboxRecord> {
    let tz = wf.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.tz);
    let local = at.with_timezone(&tz);
    let what = match runs.first() {
        None => "its scheduled run never started".to_string(),
        Some(r) => format!("its latest run, {}, is {}", r.id, r.status.as_str()),
    };
    let mut commands = json!({
        "trigger": format!("orchestrator trigger {} --date {day}", wf.name),
    });
    if let Some(r) = runs.first() {
        commands["show"] = Value::from(format!("orchestrator show {}", r.id));
        commands["rerun"] = Value::from(format!("orchestrator rerun {}", r.id));
    }
    let payload = json!({
        "version": 1,
        "type": "workflow.deadline_miss",
        "event": "sla_miss",
        "workflow": wf.name,
        "logical_date": day,
        "deadline": local.to_rfc3339(),
        "status": runs.first().map_or("not started", |r| r.status.as_str()),
        "runs": runs.iter().map(|r| json!({"run_id": r.id, "status": r.status.as_str()})).collect::<Vec<_>>(),
        "at": now,
        "message": format!(
            "{} has no successful run for {day} by its deadline {} ({}): {what}",
            wf.name,
            local.format("%H:%M"),
            tz.name()
        ),
        "commands": commands,
    });
    let owner = runs
        .first()
        .map_or_else(|| format!("{}-{day}-deadline", wf.name), |r| r.id.clone());
    let mut out = records(
        &wf.notify,
        NotifyEvent::SlaMiss,
        (&owner, &wf.name),
        format!("deadline.{day}"),
        &payload,
        now,
    );
    for r in &mut out {
        r.workflow_path = Some(wf.path.display().to_string());
    }
    out
}
