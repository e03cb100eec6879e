//! `run` and `rerun`: the commands that execute workflows.

use std::path::Path;
use std::sync::Arc;

use orchestrator_engine::runner;
use orchestrator_engine::state::{RunRecord, RunStatus, Store};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::Workflow;
use orchestrator_engine::CancellationToken;

use super::{find_run, load_for_rerun, load_on, open_store_or_daemon, today, Writer};
use crate::console::{errln, out, outln};
use crate::report;
use orchestrator_web::api;

use crate::client::Client;
use crate::serve::Served;
use crate::{Context, Error, Kind};

pub async fn run(
    ctx: &Context,
    file: &Path,
    params: Vec<(String, String)>,
    date: Option<String>,
    quiet: bool,
    backend: Option<orchestrator_engine::workflow::Backend>,
) -> Result<u8, Error> {
    let dir = ctx.dir();
    let given = date.is_some();
    let mut date = date.unwrap_or_else(today);
    let run_id = runner::new_run_id();
    let overrides: std::collections::BTreeMap<String, String> = params.into_iter().collect();
    // Validate before touching the state store: invalid input changes nothing.
    let load = |date: &str| {
        load_on(
            ctx,
            file,
            overrides.clone(),
            Default::default(),
            &run_id,
            date,
            backend,
        )
    };
    let mut wf = load(&date)?;
    // No --date: a task may know a better day than today (offline, the sample's newest).
    // Templates render at load time, so the file is loaded again with that date.
    if !given {
        let better = wf
            .tasks
            .iter()
            .find_map(|t| t.task.default_date())
            .or_else(|| latest_fire_date(&wf));
        if let Some(d) = better.filter(|d| d.date != date) {
            outln!(
                ctx,
                "logical date {}: {}; pass --date to choose another",
                d.date,
                d.why
            );
            date = d.date;
            wf = load(&date)?;
        }
    }
    let store = match open_store_or_daemon(ctx)? {
        Writer::Local(store) => store,
        // A daemon owns the state dir: it runs the file, and we follow the run.
        Writer::Daemon(_) if backend.is_some() => {
            return Err(Error::invalid(
                "error: a daemon owns this state dir and runs files as they are: set `backend:` in the file instead of --backend, or stop the daemon",
            ))
        }
        Writer::Daemon(api) => return run_in_daemon(ctx, &api, file, overrides, &date, quiet).await,
    };
    let _api = serve_readers(ctx, &store).await;
    crate::load::claim_warehouse(&wf, dir).map_err(|e| Error::invalid(format!("error: {e}")))?;
    // Notifications an earlier process left undelivered (it crashed, or a channel was down).
    crate::notify::deliver(ctx, &store).await;
    outln!(
        ctx,
        "run {run_id} started: workflow {}, logical date {date}, {} tasks, state {}",
        wf.name,
        wf.tasks.len(),
        dir.display()
    );
    let printer = report::Printer::new(quiet, ctx.console.clone());
    let env = run_env(ctx, &store, &printer);
    let run = crate::notify::delivering_during(
        ctx,
        &store,
        &run_id,
        runner::start(env, &wf, &run_id, &date),
    )
    .await?;
    crate::notify::deliver_run(ctx, &store, &run.id).await;
    finish(ctx, &store, &run)
}

/// For a scheduled workflow, the logical date of its most recent fire time (as Airflow
/// gives a manual run the data interval that ended last): a weekday pipeline run by hand
/// on Saturday, or on Friday before its 22:00 fire, processes the day that is complete.
fn latest_fire_date(wf: &Workflow) -> Option<orchestrator_engine::task::DefaultDate> {
    let schedule = wf.schedule.as_ref()?;
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::days(400);
    let at = *schedule.missed(since, now, 1).recent.last()?;
    Some(orchestrator_engine::task::DefaultDate {
        date: at
            .with_timezone(&schedule.tz)
            .format("%Y-%m-%d")
            .to_string(),
        why: format!(
            "the schedule's most recent fire time ({})",
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    })
}

pub async fn rerun(
    ctx: &Context,
    run_id: &str,
    from: Option<&str>,
    quiet: bool,
) -> Result<u8, Error> {
    let dir = ctx.dir();
    let store = match open_store_or_daemon(ctx)? {
        Writer::Local(store) => store,
        // A daemon owns the state dir: it resumes the run, and we follow it.
        Writer::Daemon(client) => {
            // The run's record says `failed` until the daemon's executor records the
            // resumed execution: follow from the next execution on.
            let before = client
                .get(&format!("/api/runs/{run_id}"), &[], true)
                .await?;
            let reruns = serde_json::from_str::<serde_json::Value>(&before)
                .ok()
                .and_then(|v| v["reruns"].as_u64())
                .unwrap_or(0);
            let request = api::RerunRequest {
                from: from.map(String::from),
            };
            let _: api::Started = client
                .post(&format!("/api/runs/{run_id}/rerun"), &request)
                .await?;
            outln!(ctx, "run {run_id} resumed in the daemon");
            return follow(ctx, &client, run_id, quiet, reruns + 1).await;
        }
    };
    let _api = serve_readers(ctx, &store).await;
    let run = find_run(&store, run_id)?;
    let ctx = &ctx.for_run(&run);
    // Where the run ran and what triggered it, whatever the file says now.
    let wf = load_for_rerun(ctx, &run)?;
    if wf.name != run.workflow {
        return Err(Error::invalid(format!(
            "error: run {} belongs to workflow `{}`, but {} now defines workflow `{}`; start a new run with `orchestrator run`",
            run.id, run.workflow, run.workflow_path, wf.name
        )));
    }
    // Refusals (already succeeded, an unknown --from) before saying it resumed.
    let previous = store
        .tasks(&run.id)?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    runner::plan_rerun(&wf, &run, &previous, from)?;
    crate::load::claim_warehouse(&wf, dir).map_err(|e| Error::invalid(format!("error: {e}")))?;
    outln!(
        ctx,
        "run {} resumed: workflow {}, logical date {}, file {}",
        run.id,
        run.workflow,
        run.logical_date,
        run.workflow_path
    );
    let printer = report::Printer::new(quiet, ctx.console.clone());
    let env = run_env(ctx, &store, &printer);
    crate::notify::deliver(ctx, &store).await;
    let id = run.id.clone();
    let run =
        crate::notify::delivering_during(ctx, &store, &id, runner::resume(env, &wf, run, from))
            .await?;
    crate::notify::deliver_run(ctx, &store, &run.id).await;
    finish(ctx, &store, &run)
}

/// How long a task of `show --json` took, from its `started_at` and `ended_at`.
fn took(task: &serde_json::Value) -> Option<std::time::Duration> {
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(task[k].as_str()?)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    (at("ended_at")? - at("started_at")?).to_std().ok()
}

/// `run FILE` while the daemon owns the state dir: the daemon runs it; this follows the
/// run through the API (polling `show`, as a client of a remote run does), prints each
/// transition as a foreground run would, and exits with the run's status.
async fn run_in_daemon(
    ctx: &Context,
    client: &Client,
    file: &Path,
    params: std::collections::BTreeMap<String, String>,
    date: &str,
    quiet: bool,
) -> Result<u8, Error> {
    let path = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let request = api::RunRequest {
        path: path.clone(),
        params,
        date: date.to_string(),
    };
    let api::Started { run_id } = client.post("/api/run", &request).await?;
    outln!(
        ctx,
        "run {run_id} started in the daemon: file {}, logical date {date}",
        path.display()
    );
    follow(ctx, client, &run_id, quiet, 0).await
}

/// Follows a run in the daemon through the API until it ends: prints each task
/// transition (polling `show`), then the run's details; the exit status is the run's.
/// Prints a run's transitions as the daemon records them, then its details; `reruns`: the
/// execution to follow (a resumed run's record shows the previous one until it starts).
async fn follow(
    ctx: &Context,
    api: &Client,
    run_id: &str,
    quiet: bool,
    reruns: u64,
) -> Result<u8, Error> {
    let mut seen: std::collections::BTreeMap<String, (String, u64)> = Default::default();
    // The daemon answers with the run id as it hands the run to its executor, which
    // records it a moment later: until then the run is not found.
    let since = std::time::Instant::now();
    loop {
        let answer = match api.get(&format!("/api/runs/{run_id}"), &[], true).await {
            Err(f)
                if f.kind == Kind::NotFound
                    && since.elapsed() < std::time::Duration::from_secs(10) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            other => other?,
        };
        let show: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| Error::failed(format!("error: the daemon's answer: {e}")))?;
        if show["reruns"].as_u64().unwrap_or(0) < reruns
            && since.elapsed() < std::time::Duration::from_secs(10)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        for t in show["tasks"].as_array().into_iter().flatten() {
            let id = t["id"].as_str().unwrap_or_default().to_string();
            let status = t["status"].as_str().unwrap_or_default().to_string();
            let attempts = t["attempts"].as_u64().unwrap_or(0);
            if status == "pending" || seen.get(&id) == Some(&(status.clone(), attempts)) {
                continue;
            }
            if !quiet {
                let line = match status.as_str() {
                    "running" => format!("{id}: started (attempt {attempts})"),
                    "failed" => format!(
                        "{id}: failed (attempt {attempts}): {}",
                        t["error"].as_str().unwrap_or_default()
                    ),
                    "skipped" => {
                        format!("{id}: skipped: {}", t["error"].as_str().unwrap_or_default())
                    }
                    // As a foreground run prints it: with how long the attempt took.
                    "succeeded" => match took(t) {
                        Some(d) => format!(
                            "{id}: succeeded in {} (attempt {attempts})",
                            report::fmt_duration(d)
                        ),
                        None => format!("{id}: succeeded (attempt {attempts})"),
                    },
                    other => format!("{id}: {other} (attempt {attempts})"),
                };
                outln!(ctx, "{line}");
            }
            seen.insert(id, (status, attempts));
        }
        match show["status"].as_str() {
            Some("running") | None => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Some(status) => {
                let text = api
                    .get(&format!("/api/runs/{run_id}"), &[], false)
                    .await
                    .unwrap_or_default();
                out!(ctx, "\n{text}");
                return Ok(if status == "succeeded" { 0 } else { 1 });
            }
        }
    }
}

/// While a foreground run owns the state dir, other processes' `runs`, `show`, `query` and
/// `tables` go through its local API. Failing to serve it only costs them that.
pub(crate) async fn serve_readers(ctx: &Context, store: &Arc<Store>) -> Option<Served> {
    // The server stops with the runtime when the command ends; the files go with `Served`.
    let served = match crate::serve::new_token() {
        Ok(token) => {
            let stop = CancellationToken::new();
            crate::serve::serve_api(ctx, store.clone(), &token, None, None, stop).await
        }
        Err(e) => Err(e),
    };
    match served {
        Ok(served) => Some(served),
        Err(e) => {
            tracing::warn!(
                "warning: {e}; other processes cannot read the state dir during this run"
            );
            None
        }
    }
}

/// `trigger`: asks the daemon that owns the state dir to start a run of a workflow now.
pub async fn trigger(
    ctx: &Context,
    workflow: &str,
    params: Vec<(String, String)>,
    date: Option<String>,
) -> Result<u8, Error> {
    let client = daemon_api(ctx)?;
    let params: std::collections::BTreeMap<String, String> = params.into_iter().collect();
    let request = api::TriggerRequest {
        workflow: workflow.to_string(),
        params,
        date,
    };
    let api::Started { run_id } = client.post("/api/trigger", &request).await?;
    outln!(ctx,
        "run {run_id} started by the daemon: workflow {workflow}; follow it with `orchestrator show {run_id}`"
    );
    Ok(0)
}

/// `cancel`: asks the daemon to cancel a run in progress.
pub async fn cancel(ctx: &Context, run_id: &str) -> Result<u8, Error> {
    let client = daemon_api(ctx)?;
    let _: api::Cancelled = client
        .post(
            &format!("/api/runs/{run_id}/cancel"),
            &serde_json::json!({}),
        )
        .await?;
    outln!(
        ctx,
        "run {run_id}: cancellation requested; its running tasks are being stopped"
    );
    Ok(0)
}

fn daemon_api(ctx: &Context) -> Result<crate::client::Client, Error> {
    let dir = ctx.dir();
    crate::client::Client::discover(dir).filter(|api| api.daemon).ok_or_else(|| {
        Error::invalid(format!(
            "error: no daemon serves state dir {}; start one with `orchestrator daemon`, or run a file in the foreground with `orchestrator run FILE` (Ctrl-C cancels it)",
            dir.display()
        ))
    })
}

/// What a run executes with: this store as state and catalog, Ctrl-C/SIGTERM cancelling,
/// secrets masked, transitions printed.
fn run_env<'a>(
    ctx: &Context,
    store: &'a Arc<Store>,
    printer: &'a report::Printer,
) -> runner::Env<'a> {
    runner::Env {
        store,
        catalog: store.clone(),
        cancel: cancel_on_signal(ctx),
        redactor: Arc::new(Redactor::from_env()),
        observer: printer,
    }
}

/// Prints the summary and maps the run's status to the exit code.
fn finish(ctx: &Context, store: &Store, run: &RunRecord) -> Result<u8, Error> {
    let details = report::RunDetails::load(store, run.clone())?;
    out!(ctx, "{}", details.summary());
    Ok(match run.status {
        RunStatus::Succeeded => 0,
        _ => 1,
    })
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub(crate) fn cancel_on_signal(ctx: &Context) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!(
                "warning: cannot install signal handlers; Ctrl-C will not cancel cleanly"
            );
            return;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        errln!(
            ctx,
            "{name} received: cancelling running tasks and recording the run as cancelled"
        );
        t.cancel();
    });
    token
}
