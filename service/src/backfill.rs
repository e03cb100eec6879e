//! Backfills: one run per logical date of a range, recorded as one backfill.
//!
//! [`plan`] turns a request into a [`BackfillRecord`] (the dates, in the order they run,
//! each with what will happen to it); [`drive`] executes it, here (`Executor::Local`) or
//! through the daemon that owns the state dir (`Executor::Daemon`, when the request came
//! over the API). Either way the record is written before each run starts and after it
//! ends, and every run carries the trigger `backfill ID`, so a backfill whose process
//! died is resumed (`--resume ID`) without a second run for any date: its interrupted run
//! is resumed in place (`rerun`), and a run started just before the crash is found by its
//! trigger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use orchestrator_engine::backfill::{self, Action, Calendar, Reprocess};
use orchestrator_engine::executor::{Event, Observer};
use orchestrator_engine::runner;
use orchestrator_engine::state::{
    BackfillDate, BackfillRecord, BackfillStatus, RunRecord, RunStatus, Store, Write,
};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::Workflow;
use orchestrator_engine::CancellationToken;
use orchestrator_web::api::{BackfillRequest, BackfillStarted};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::load::load;
use crate::store::find_run;
use crate::{Context, Error};

/// What `orchestrator backfill` asks for (the API's request type).
pub use orchestrator_web::api::BackfillSpec as Request;

/// The trigger recorded with each run of backfill `id`.
pub fn trigger(id: &str) -> String {
    format!("backfill {id}")
}

fn date(s: &str, flag: &str) -> Result<NaiveDate, Error> {
    orchestrator_engine::runner::parse_logical_date(s)
        .ok()
        .and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "error: {flag} `{s}` is not a date written YYYY-MM-DD, like 2026-01-31"
            ))
        })
}

/// Loads the workflow as it would run on `date` (templates need a run id and a date).
fn load_for(ctx: &Context, req: &Request, run_id: &str, date: &str) -> Result<Workflow, Error> {
    load(
        ctx,
        &req.file,
        req.params.clone(),
        BTreeMap::new(),
        run_id,
        date,
    )
}

/// A new backfill: its dates, each with the action `reprocess` gives it.
pub fn plan(ctx: &Context, store: &Store, req: &Request) -> Result<BackfillRecord, Error> {
    let from = date(&req.from, "--from")?;
    let to = date(&req.to, "--to")?;
    let calendar =
        Calendar::parse(&req.calendar).map_err(|e| Error::invalid(format!("error: {e}")))?;
    let reprocess =
        Reprocess::parse(&req.reprocess).map_err(|e| Error::invalid(format!("error: {e}")))?;
    if req.max_active_runs == 0 {
        return Err(Error::invalid(
            "error: --max-active-runs must be at least 1",
        ));
    }
    let wf = load_for(ctx, req, "backfill-plan", &req.from)?;
    let mut dates = backfill::logical_dates(&wf, from, to, calendar)
        .map_err(|e| Error::invalid(format!("error: {e}")))?;
    if req.backwards {
        dates.reverse();
    }
    let id = format!("bf-{}", runner::new_run_id());
    let runs = store.runs(Some(&wf.name), usize::MAX)?;
    let mut by_date: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in &runs {
        by_date.entry(r.logical_date.as_str()).or_default().push(r);
    }
    let dates = dates
        .into_iter()
        .map(|d| {
            let d = d.to_string();
            let existing = by_date.get(d.as_str()).map_or(&[][..], |v| v.as_slice());
            let (run_id, skipped) = match backfill::action(existing, reprocess) {
                Action::Run => (None, None),
                Action::Resume(id) => (Some(id), None),
                Action::Skip(why) => (None, Some(why)),
            };
            BackfillDate {
                date: d,
                run_id,
                skipped,
            }
        })
        .collect();
    Ok(BackfillRecord {
        id,
        workflow: wf.name.clone(),
        workflow_path: req.file.display().to_string(),
        from: from.to_string(),
        to: to.to_string(),
        calendar: calendar.as_str().into(),
        reprocess: reprocess.as_str().into(),
        max_active_runs: req.max_active_runs,
        backwards: req.backwards,
        params: req.params.clone(),
        dates,
        status: BackfillStatus::Running,
        created_at: Utc::now(),
        ended_at: None,
        pid: std::process::id(),
    })
}

/// The request a recorded backfill was made from.
pub fn request_of(bf: &BackfillRecord) -> Request {
    Request {
        file: PathBuf::from(&bf.workflow_path),
        from: bf.from.clone(),
        to: bf.to.clone(),
        calendar: bf.calendar.clone(),
        reprocess: bf.reprocess.clone(),
        max_active_runs: bf.max_active_runs,
        backwards: bf.backwards,
        params: bf.params.clone(),
    }
}

/// Prepares an interrupted, cancelled or failed backfill to be driven again: each date
/// keeps the run it has (found by the record or by the run's trigger); runs that did not
/// succeed are resumed in place, dates without one get a new run.
pub fn reopen(store: &Store, id: &str) -> Result<BackfillRecord, Error> {
    let Some(mut bf) = store.backfill(id)? else {
        return Err(Error::not_found(format!(
            "error: no backfill `{id}` in state dir {}; `orchestrator backfills` lists them",
            store.dir().display()
        )));
    };
    let status = effective_status(&bf, &view(store, &bf)?);
    match status {
        BackfillStatus::Running => {
            return Err(Error::invalid(format!(
                "error: backfill {id} is running (pid {}); wait for it to end",
                bf.pid
            )))
        }
        BackfillStatus::Succeeded => {
            return Err(Error::invalid(format!(
                "error: backfill {id} has finished: every date succeeded or was skipped; start a new one to run dates again"
            )))
        }
        _ => {}
    }
    let label = trigger(id);
    // A link saved while its run was being started may name a run a crash kept from
    // being recorded (and whose id a later run may have taken): keep only links to
    // this backfill's run of that date; the others are found below, or started anew.
    for d in &mut bf.dates {
        if let Some(run_id) = &d.run_id {
            let ours = store
                .run(run_id)?
                .is_some_and(|r| r.logical_date == d.date && r.trigger.as_deref() == Some(&label));
            if !ours {
                d.run_id = None;
            }
        }
    }
    let runs = store.runs(Some(&bf.workflow), usize::MAX)?;
    for d in &mut bf.dates {
        if d.run_id.is_none() && d.skipped.is_none() {
            d.run_id = runs
                .iter()
                .find(|r| r.logical_date == d.date && r.trigger.as_deref() == Some(&label))
                .map(|r| r.id.clone());
        }
    }
    bf.status = BackfillStatus::Running;
    bf.ended_at = None;
    bf.pid = std::process::id();
    Ok(bf)
}

/// A backfill's status as its dates now say: one that ended `failed` whose failed runs
/// were all rerun to success (`orchestrator rerun RUN_ID`, as its summary suggests) has
/// succeeded.
pub fn effective_status(b: &BackfillRecord, views: &[DateView]) -> BackfillStatus {
    let all_done = views
        .iter()
        .all(|v| matches!(v.status.as_str(), "succeeded" | "skipped"));
    if b.status == BackfillStatus::Failed && all_done {
        BackfillStatus::Succeeded
    } else {
        b.status
    }
}

/// How one date's run is executed.
pub enum Executor {
    /// In this process, which holds the state dir.
    Local { store: Arc<Store>, ctx: Context },
    /// Handed to the daemon's event loop (this code runs inside the daemon's process).
    Daemon {
        store: Arc<Store>,
        commands: orchestrator_daemon::Commands,
    },
}

impl Executor {
    fn store(&self) -> &Arc<Store> {
        match self {
            Executor::Local { store, .. } | Executor::Daemon { store, .. } => store,
        }
    }
}

/// What is known of one date while and after the backfill runs: for printing and the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DateView {
    pub date: String,
    pub run_id: Option<String>,
    /// The run's status, or `skipped` with the reason in `note`, or `pending`.
    pub status: String,
    pub note: Option<String>,
}

/// Each date's state, from the record and the runs' records.
pub fn view(store: &Store, bf: &BackfillRecord) -> Result<Vec<DateView>, Error> {
    bf.dates.iter().map(|d| view_date(store, d)).collect()
}

/// One date of a backfill, as [`view`] shows it.
fn view_date(store: &Store, d: &BackfillDate) -> Result<DateView, Error> {
    Ok(match (&d.run_id, &d.skipped) {
        (_, Some(why)) => DateView {
            date: d.date.clone(),
            run_id: None,
            status: "skipped".into(),
            note: Some(why.clone()),
        },
        (Some(id), None) => {
            let run = store.run(id)?;
            let status = run.as_ref().map_or("pending", |r| r.status.as_str());
            DateView {
                date: d.date.clone(),
                run_id: Some(id.clone()),
                status: status.into(),
                note: run_note(store, id)?,
            }
        }
        (None, None) => DateView {
            date: d.date.clone(),
            run_id: None,
            status: "pending".into(),
            note: None,
        },
    })
}

/// Why a run ended early (its short-circuit reason) or failed (the first failed task).
fn run_note(store: &Store, run_id: &str) -> Result<Option<String>, Error> {
    let tasks = store.tasks(run_id)?;
    for t in &tasks {
        if let Some(why) = t
            .outputs
            .get(orchestrator_engine::task::SHORT_CIRCUIT)
            .and_then(|v| v.as_str())
        {
            return Ok(Some(format!("{}: {why}", t.task_id)));
        }
    }
    Ok(tasks
        .iter()
        .find(|t| t.status == orchestrator_engine::state::TaskStatus::Failed)
        .map(|t| {
            let e = t.error.as_deref().unwrap_or_default();
            format!(
                "{} failed: {}",
                t.task_id,
                e.lines().next().unwrap_or_default()
            )
        }))
}

/// One line for a finished date.
pub fn date_line(v: &DateView) -> String {
    format!(
        "{}  {:<22} {:<11}{}",
        v.date,
        v.run_id
            .as_deref()
            .map_or("-".to_string(), |r| format!("run {r}")),
        v.status,
        v.note
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default()
    )
}

/// The first line of a backfill's output.
pub fn header(bf: &BackfillRecord, parallel: usize) -> String {
    let to_run = bf.dates.iter().filter(|d| d.skipped.is_none()).count();
    format!(
        "backfill {}: workflow {}, {}..{} ({} calendar{}), {} dates, {} to run, reprocess {}, {} at a time",
        bf.id,
        bf.workflow,
        bf.from,
        bf.to,
        bf.calendar,
        if bf.backwards { ", newest first" } else { "" },
        bf.dates.len(),
        to_run,
        bf.reprocess,
        parallel
    )
}

/// How many runs at once: what was asked, within the workflow's `max_active_runs:`.
pub fn parallelism(bf: &BackfillRecord, wf_max: usize, daemon: bool) -> (usize, Option<String>) {
    let asked = bf.max_active_runs as usize;
    let mut n = asked.min(wf_max);
    let mut note = (n < asked).then(|| {
        format!(
            "note: workflow `{}` allows {wf_max} active run(s) at once (`max_active_runs:`); running {n} at a time, not {asked}",
            bf.workflow
        )
    });
    if daemon && n > 1 {
        note = Some(format!(
            "note: the daemon runs one run of workflow `{}` at a time; running 1 at a time, not {n}",
            bf.workflow
        ));
        n = 1;
    }
    (n, note)
}

struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event<'_>) {}
}

/// How often a running backfill's record is saved while it starts runs.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Executes the backfill's dates (those neither skipped nor already finished), at most
/// `parallel` at once, writing the record as it goes; `on_done` is called with each date
/// that ends. Returns the final record. The caller has recorded `bf` before announcing
/// its id (so `--resume ID` finds what was announced).
pub async fn drive(
    exec: Executor,
    mut bf: BackfillRecord,
    parallel: usize,
    cancel: CancellationToken,
    on_done: &(dyn Fn(&DateView) + Sync),
) -> Result<BackfillRecord, Error> {
    let store = exec.store().clone();
    let mut saved = std::time::Instant::now();
    let exec = Arc::new(exec);
    let req = request_of(&bf);
    let label = trigger(&bf.id);
    let mut pending: std::collections::VecDeque<usize> = (0..bf.dates.len())
        .filter(|&i| {
            let d = &bf.dates[i];
            d.skipped.is_none()
                && d.run_id.as_deref().is_none_or(|id| {
                    // A date's run that did not succeed (failed, interrupted, cancelled)
                    // is resumed in place; a succeeded one stays as it is.
                    store.run(id).ok().flatten().map(|r| r.status) != Some(RunStatus::Succeeded)
                })
        })
        .collect();
    let mut running: tokio::task::JoinSet<(usize, Result<RunRecord, Error>)> =
        tokio::task::JoinSet::new();
    let mut error = None;
    loop {
        while running.len() < parallel && !cancel.is_cancelled() && error.is_none() {
            let Some(i) = pending.pop_front() else { break };
            let d = bf.dates[i].clone();
            // The workflow is loaded with this run's id and date (templates need them).
            let (run_id, resume) = match &d.run_id {
                Some(id) => (id.clone(), true),
                None => (runner::new_run_id_in(&store), false),
            };
            let fut = run_one(
                exec.clone(),
                req.clone(),
                label.clone(),
                d.date.clone(),
                run_id,
                resume,
                cancel.clone(),
            );
            match fut.await {
                Ok((run_id, handle)) => {
                    bf.dates[i].run_id = Some(run_id);
                    // The run's own record names this backfill (its trigger), which is
                    // what `reopen` links a date to after a crash; the backfill's record
                    // is saved at most once a second for those who watch it, not once
                    // per run (it holds every date: that was quadratic in the range).
                    if saved.elapsed() >= SAVE_EVERY {
                        store.commit_async(&[Write::Backfill(bf.clone())]).await?;
                        saved = std::time::Instant::now();
                    }
                    running.spawn(async move { (i, handle.await) });
                }
                Err(e) => error = Some(e),
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let Ok((i, result)) = joined else { continue };
        if let Err(e) = result {
            error.get_or_insert(e);
        }
        on_done(&view_date(&store, &bf.dates[i])?);
    }
    let views = view(&store, &bf)?;
    bf.status = if error.is_some() {
        BackfillStatus::Failed
    } else if cancel.is_cancelled()
        || views
            .iter()
            .any(|v| v.status == "cancelled" || v.status == "pending")
    {
        BackfillStatus::Cancelled
    } else if views
        .iter()
        .any(|v| !matches!(v.status.as_str(), "succeeded" | "skipped"))
    {
        BackfillStatus::Failed
    } else {
        BackfillStatus::Succeeded
    };
    bf.ended_at = Some(Utc::now());
    store.commit_async(&[Write::Backfill(bf.clone())]).await?;
    match error {
        Some(e) => Err(e),
        None => Ok(bf),
    }
}

type RunHandle =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunRecord, Error>> + Send>>;

/// Starts (or resumes) the run of one date; returns its id once it is recorded, and a
/// future that ends with the run.
async fn run_one(
    exec: Arc<Executor>,
    req: Request,
    label: String,
    date: String,
    run_id: String,
    resume: bool,
    cancel: CancellationToken,
) -> Result<(String, RunHandle), Error> {
    match &*exec {
        Executor::Local { store, ctx } => {
            let store = store.clone();
            let wf = if resume {
                let run = find_run(&store, &run_id)?;
                load(
                    ctx,
                    Path::new(&run.workflow_path),
                    BTreeMap::new(),
                    run.params.clone(),
                    &run.id,
                    &run.logical_date,
                )?
            } else {
                load_for(ctx, &req, &run_id, &date)?
            };
            let id = run_id.clone();
            let handle = Box::pin(async move {
                let env = runner::Env {
                    store: &store,
                    catalog: store.clone(),
                    cancel,
                    redactor: Arc::new(Redactor::from_env()),
                    observer: &Quiet,
                };
                let run = if resume {
                    let run = find_run(&store, &id)?;
                    runner::resume(env, &wf, run, None).await?
                } else {
                    runner::start_as(env, &wf, &id, &date, &label).await?
                };
                Ok(run)
            });
            Ok((run_id, handle as RunHandle))
        }
        Executor::Daemon { store, commands } => {
            let id = loop {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let command = if resume {
                    orchestrator_daemon::Command::Rerun {
                        run_id: run_id.clone(),
                        from: None,
                        reply,
                    }
                } else {
                    orchestrator_daemon::Command::Run {
                        path: req.file.clone(),
                        params: req.params.clone(),
                        date: date.clone(),
                        trigger: Some(label.clone()),
                        reply,
                    }
                };
                if commands.send(command).is_err() {
                    return Err(Error::failed("error: the daemon is stopping"));
                }
                match answer.await {
                    Ok(Ok(id)) => break id,
                    // A scheduled run of the same workflow is in progress: wait for it.
                    Ok(Err(why)) if why.kind == orchestrator_daemon::RefusedKind::Busy => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = cancel.cancelled() => return Err(Error::failed("error: backfill cancelled")),
                        }
                    }
                    Ok(Err(why)) => return Err(Error::failed(format!("error: {why}"))),
                    Err(_) => return Err(Error::failed("error: the daemon is stopping")),
                }
            };
            let store = store.clone();
            let run_id = id.clone();
            let handle = Box::pin(async move {
                // The daemon runs it; its record says when it has ended.
                loop {
                    if let Some(run) = store.run(&run_id)? {
                        if run.status != RunStatus::Running {
                            return Ok(run);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            Ok((id, handle as RunHandle))
        }
    }
}

/// The dry run's text: each date with what would happen to it.
pub fn plan_text(b: &BackfillRecord, parallel: usize) -> String {
    let mut s = format!(
        "{} (dry run: nothing is run or recorded)\n",
        header(b, parallel)
    );
    for d in &b.dates {
        let what = match (&d.skipped, &d.run_id) {
            (Some(why), _) => format!("skip: {why}"),
            (None, Some(id)) => format!("resume run {id}"),
            (None, None) => "new run".into(),
        };
        s.push_str(&format!("{}  {what}\n", d.date));
    }
    s
}

/// Plans (or reopens) a backfill in the process that owns the store.
pub fn prepare(
    ctx: &Context,
    store: &Store,
    req: Option<&Request>,
    resume: Option<&str>,
) -> Result<BackfillRecord, Error> {
    match (req, resume) {
        (Some(req), _) => plan(ctx, store, req),
        (None, Some(id)) => reopen(store, id),
        (None, None) => Err(Error::invalid("error: nothing to backfill")),
    }
}

/// The workflow's `max_active_runs:`, and a check that it can run here.
pub fn workflow_limit(ctx: &Context, b: &BackfillRecord) -> Result<usize, Error> {
    let wf = load(
        ctx,
        Path::new(&b.workflow_path),
        b.params.clone(),
        Default::default(),
        "backfill-plan",
        &b.from,
    )?;
    crate::load::claim_warehouse(&wf, ctx.dir())
        .map_err(|e| Error::invalid(format!("error: {e}")))?;
    Ok(wf.max_active_runs)
}

/// `POST /api/backfills` in the daemon: this process plans the backfill and drives it,
/// each run handed to the daemon's event loop.
pub fn start_in_daemon(
    ctx: &Context,
    store: Arc<Store>,
    commands: orchestrator_daemon::Commands,
    request: BackfillRequest,
) -> Result<BackfillStarted, Error> {
    let b = prepare(
        ctx,
        &store,
        request.request.as_ref(),
        request.resume.as_deref(),
    )?;
    let limit = workflow_limit(ctx, &b)?;
    let (parallel, note) = parallelism(&b, limit, true);
    if request.dry_run {
        return Ok(BackfillStarted {
            plan: Some(plan_text(&b, parallel)),
            note,
            ..Default::default()
        });
    }
    let header = header(&b, parallel);
    let id = b.id.clone();
    // Recorded before its id is answered: `--resume ID` must find what was announced.
    store.commit(&[Write::Backfill(b.clone())])?;
    let exec = Executor::Daemon { store, commands };
    tokio::spawn(async move {
        let id = b.id.clone();
        let quiet = |_: &DateView| {};
        if let Err(e) = drive(exec, b, parallel, CancellationToken::new(), &quiet).await {
            tracing::warn!("backfill {id}: {}", e.message);
        }
    });
    Ok(BackfillStarted {
        backfill_id: Some(id),
        header: Some(header),
        note,
        plan: None,
    })
}

/// `backfills`: every backfill, newest first.
pub fn backfills_output(store: &Store, json: bool) -> Result<String, Error> {
    let mut list = store.backfills()?;
    // Newest first by when each was created: ids share a second's prefix, and their
    // random suffix would order two of the same second by chance.
    list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|b| {
                let views = view(store, b).unwrap_or_default();
                json!({
                    "id": b.id, "workflow": b.workflow, "from": b.from, "to": b.to,
                    "status": effective_status(b, &views), "dates": views,
                    "created_at": crate::report::ts(Some(b.created_at)),
                    "ended_at": crate::report::ts(b.ended_at), "reprocess": b.reprocess,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n");
    }
    if list.is_empty() {
        return Ok(
            "no backfills yet; start one with `orchestrator backfill FILE --from DATE --to DATE`\n"
                .into(),
        );
    }
    let mut s = format!(
        "{:<28} {:<16} {:<23} {:<12} {}\n",
        "ID", "WORKFLOW", "RANGE", "STATUS", "DATES"
    );
    for b in &list {
        let views = view(store, b)?;
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for v in &views {
            *counts.entry(v.status.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        s.push_str(&format!(
            "{:<28} {:<16} {:<23} {:<12} {}\n",
            b.id,
            b.workflow,
            format!("{}..{}", b.from, b.to),
            effective_status(b, &views).as_str(),
            counts.join(", ")
        ));
    }
    Ok(s)
}

/// One backfill with each date's state, as JSON (the API's answer).
pub fn backfill_json(store: &Store, id: &str) -> Result<String, Error> {
    let Some(b) = store.backfill(id)? else {
        return Err(Error::not_found(format!("error: no backfill `{id}`")));
    };
    let views = view(store, &b)?;
    Ok(json!({"backfill": b, "dates": views}).to_string())
}
