//! `run` and `rerun`: the commands that execute workflows.

use std::path::Path;
use std::sync::Arc;

use orchestrator_engine::runner;
use orchestrator_engine::state::{RunRecord, RunStatus, Store};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::Workflow;
use orchestrator_engine::CancellationToken;

use super::{find_run, load_for_rerun, load_on, open_store_or_daemon, today, Fail, Writer};
use crate::out::{errln, out, outln};
use crate::report;

/// Kinds that write into the workflow's warehouse.
const WAREHOUSE_WRITERS: &[&str] = &["sql", "create_table_as", "publish"];

pub async fn run(
    dir: &Path,
    file: &Path,
    params: Vec<(String, String)>,
    date: Option<String>,
    quiet: bool,
    backend: Option<orchestrator_engine::workflow::Backend>,
) -> Result<u8, Fail> {
    let given = date.is_some();
    let mut date = date.unwrap_or_else(today);
    let run_id = runner::new_run_id();
    let overrides: std::collections::BTreeMap<String, String> = params.into_iter().collect();
    // Validate before touching the state store: invalid input changes nothing.
    let load = |date: &str| {
        load_on(
            file,
            overrides.clone(),
            Default::default(),
            &run_id,
            date,
            dir,
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
                "logical date {}: {}; pass --date to choose another",
                d.date,
                d.why
            );
            date = d.date;
            wf = load(&date)?;
        }
    }
    let store = match open_store_or_daemon(dir)? {
        Writer::Local(store) => store,
        // A daemon owns the state dir: it runs the file, and we follow the run.
        Writer::Daemon(_) if backend.is_some() => {
            return Err(Fail::input(
                "error: a daemon owns this state dir and runs files as they are: set `backend:` in the file instead of --backend, or stop the daemon",
            ))
        }
        Writer::Daemon(api) => return run_in_daemon(&api, file, overrides, &date, quiet).await,
    };
    let _api = serve_readers(&store, dir).await;
    claim_warehouse(&wf, dir).map_err(|e| Fail::input(format!("error: {e}")))?;
    // Notifications an earlier process left undelivered (it crashed, or a channel was down).
    crate::notify::deliver(&store, dir).await;
    outln!(
        "run {run_id} started: workflow {}, logical date {date}, {} tasks, state {}",
        wf.name,
        wf.tasks.len(),
        dir.display()
    );
    let printer = report::Printer { quiet };
    let env = run_env(&store, &printer);
    let run = crate::notify::delivering_during(
        &store,
        dir,
        &run_id,
        runner::start(env, &wf, &run_id, &date),
    )
    .await?;
    crate::notify::deliver_run(&store, dir, &run.id).await;
    finish(&store, &run)
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

pub async fn rerun(dir: &Path, run_id: &str, from: Option<&str>, quiet: bool) -> Result<u8, Fail> {
    let store = match open_store_or_daemon(dir)? {
        Writer::Local(store) => store,
        // A daemon owns the state dir: it resumes the run, and we follow it.
        Writer::Daemon(api) => {
            // The run's record says `failed` until the daemon's executor records the
            // resumed execution: follow from the next execution on.
            let before = api.get(&format!("/api/runs/{run_id}"), &[], true).await?;
            let reruns = serde_json::from_str::<serde_json::Value>(&before)
                .ok()
                .and_then(|v| v["reruns"].as_u64())
                .unwrap_or(0);
            api.post(
                &format!("/api/runs/{run_id}/rerun"),
                serde_json::json!({ "from": from }),
            )
            .await?;
            outln!("run {run_id} resumed in the daemon");
            return follow(&api, run_id, quiet, reruns + 1).await;
        }
    };
    let _api = serve_readers(&store, dir).await;
    let run = find_run(&store, run_id)?;
    super::use_recorded_channels(&run);
    // Where the run ran and what triggered it, whatever the file says now.
    let wf = load_for_rerun(&run, dir)?;
    if wf.name != run.workflow {
        return Err(Fail::input(format!(
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
    claim_warehouse(&wf, dir).map_err(|e| Fail::input(format!("error: {e}")))?;
    outln!(
        "run {} resumed: workflow {}, logical date {}, file {}",
        run.id,
        run.workflow,
        run.logical_date,
        run.workflow_path
    );
    let printer = report::Printer { quiet };
    let env = run_env(&store, &printer);
    crate::notify::deliver(&store, dir).await;
    let id = run.id.clone();
    let run =
        crate::notify::delivering_during(&store, dir, &id, runner::resume(env, &wf, run, from))
            .await?;
    crate::notify::deliver_run(&store, dir, &run.id).await;
    finish(&store, &run)
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
    api: &crate::api::Client,
    file: &Path,
    params: std::collections::BTreeMap<String, String>,
    date: &str,
    quiet: bool,
) -> Result<u8, Fail> {
    let path = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let answer = api
        .post(
            "/api/run",
            serde_json::json!({"path": path, "params": params, "date": date}),
        )
        .await?;
    let run_id = run_id_of(&answer);
    outln!(
        "run {run_id} started in the daemon: file {}, logical date {date}",
        path.display()
    );
    follow(api, &run_id, quiet, 0).await
}

/// Follows a run in the daemon through the API until it ends: prints each task
/// transition (polling `show`), then the run's details; the exit status is the run's.
/// Prints a run's transitions as the daemon records them, then its details; `reruns`: the
/// execution to follow (a resumed run's record shows the previous one until it starts).
async fn follow(
    api: &crate::api::Client,
    run_id: &str,
    quiet: bool,
    reruns: u64,
) -> Result<u8, Fail> {
    let mut seen: std::collections::BTreeMap<String, (String, u64)> = Default::default();
    // The daemon answers with the run id as it hands the run to its executor, which
    // records it a moment later: until then the run is not found.
    let since = std::time::Instant::now();
    loop {
        let answer = match api.get(&format!("/api/runs/{run_id}"), &[], true).await {
            Err(f)
                if f.kind == super::FailKind::NotFound
                    && since.elapsed() < std::time::Duration::from_secs(10) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            other => other?,
        };
        let show: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| Fail::failed(format!("error: the daemon's answer: {e}")))?;
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
                outln!("{line}");
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
                out!("\n{text}");
                return Ok(if status == "succeeded" { 0 } else { 1 });
            }
        }
    }
}

/// While a foreground run owns the state dir, other processes' `runs`, `show`, `query` and
/// `tables` go through its local API. Failing to serve it only costs them that.
pub(crate) async fn serve_readers(store: &Arc<Store>, dir: &Path) -> Option<crate::api::Served> {
    // The server stops with the runtime when the command ends; the files go with `Served`.
    match crate::api::serve(store.clone(), dir, None, None, CancellationToken::new()).await {
        Ok(served) => Some(served),
        Err(e) => {
            tracing::warn!(
                "warning: {e}; other processes cannot read the state dir during this run"
            );
            None
        }
    }
}

/// The `run_id` of the daemon's answer to `run`, `trigger` or `rerun`.
fn run_id_of(answer: &str) -> String {
    serde_json::from_str::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v.get("run_id").and_then(|r| r.as_str()).map(String::from))
        .unwrap_or_default()
}

/// `trigger`: asks the daemon that owns the state dir to start a run of a workflow now.
pub async fn trigger(
    dir: &Path,
    workflow: &str,
    params: Vec<(String, String)>,
    date: Option<String>,
) -> Result<u8, Fail> {
    let api = daemon_api(dir)?;
    let params: std::collections::BTreeMap<String, String> = params.into_iter().collect();
    let answer = api
        .post(
            "/api/trigger",
            serde_json::json!({"workflow": workflow, "params": params, "date": date}),
        )
        .await?;
    let run_id = run_id_of(&answer);
    outln!(
        "run {run_id} started by the daemon: workflow {workflow}; follow it with `orchestrator show {run_id}`"
    );
    Ok(0)
}

/// `cancel`: asks the daemon to cancel a run in progress.
pub async fn cancel(dir: &Path, run_id: &str) -> Result<u8, Fail> {
    let api = daemon_api(dir)?;
    api.post(&format!("/api/runs/{run_id}/cancel"), serde_json::json!({}))
        .await?;
    outln!("run {run_id}: cancellation requested; its running tasks are being stopped");
    Ok(0)
}

fn daemon_api(dir: &Path) -> Result<crate::api::Client, Fail> {
    crate::api::Client::discover(dir).filter(|api| api.daemon).ok_or_else(|| {
        Fail::input(format!(
            "error: no daemon serves state dir {}; start one with `orchestrator daemon`, or run a file in the foreground with `orchestrator run FILE` (Ctrl-C cancels it)",
            dir.display()
        ))
    })
}

/// What a run executes with: this store as state and catalog, Ctrl-C/SIGTERM cancelling,
/// secrets masked, transitions printed.
fn run_env<'a>(store: &'a Arc<Store>, printer: &'a report::Printer) -> runner::Env<'a> {
    runner::Env {
        store,
        catalog: store.clone(),
        cancel: cancel_on_signal(),
        redactor: Arc::new(Redactor::from_env()),
        observer: printer,
    }
}

/// One state dir per warehouse (see `warehouse::claim`), checked before anything runs.
pub fn claim_warehouse(wf: &Workflow, dir: &Path) -> Result<(), String> {
    if wf
        .tasks
        .iter()
        .any(|t| WAREHOUSE_WRITERS.contains(&t.kind.as_str()))
    {
        orchestrator_tasks::data::warehouse::claim(&wf.warehouse, dir)?;
    }
    Ok(())
}

/// Prints the summary and maps the run's status to the exit code.
fn finish(store: &Store, run: &RunRecord) -> Result<u8, Fail> {
    let details = report::RunDetails::load(store, run.clone())?;
    out!("{}", details.summary());
    Ok(match run.status {
        RunStatus::Succeeded => 0,
        _ => 1,
    })
}

/// A token cancelled on the first SIGINT or SIGTERM.
pub(crate) fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
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
        errln!("{name} received: cancelling running tasks and recording the run as cancelled");
        t.cancel();
    });
    token
}
