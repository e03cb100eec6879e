//! `daemon`: the long-running process that starts scheduled workflows. The scheduling
//! itself lives in the `orchestrator-daemon` crate; this wires it to the task registry
//! and environment for loading workflows, warehouse claims, signals, the listeners and
//! the notification deliverer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_daemon::{Config, Loader, Prepare, RunParams};
use orchestrator_engine::state::{interrupted_note, Store};
use orchestrator_engine::workflow::{self as wf, LoadOptions};
use orchestrator_engine::CancellationToken;

use super::owner;
use crate::console::errln;
use crate::source::StoreSource;
use crate::{Context, Error};

pub async fn daemon(
    ctx: &Context,
    workflows: &Path,
    grace: Duration,
    max_runs: usize,
    ui: crate::serve::UiArgs,
    schedule: bool,
) -> Result<u8, Error> {
    let dir = ctx.dir();
    // Before anything starts: a UI others could reach without --auth is refused.
    let auth = crate::serve::prepare(&ui)?;
    let workflows = std::path::absolute(workflows).unwrap_or_else(|_| workflows.to_path_buf());
    if !workflows.is_dir() {
        return Err(Error::invalid(format!(
            "error: --workflows {} is not a directory; point it at the directory of workflow files",
            workflows.display()
        )));
    }
    let state_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let ctx = Context {
        state_dir: state_dir.clone(),
        ..ctx.clone()
    };
    let ctx = &ctx;
    let (store, interrupted) = Store::open(dir, &owner())?;
    for id in &interrupted {
        errln!(ctx, "{}", interrupted_note(id));
    }
    crate::notify::queue_interrupted(ctx, &store, &interrupted);
    let (loader, prepare) = wiring(ctx);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let hurry = CancellationToken::new();
    let hurry_on_signal = hurry.clone();
    let console = ctx.clone();
    tokio::spawn(async move {
        let ctx = console;
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("warning: cannot install signal handlers; stop the daemon with SIGKILL");
            return;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        errln!(ctx, "{name} received: the daemon stops starting runs and shuts down (send it again to cancel running tasks now)");
        stop.cancel();
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        errln!(
            ctx,
            "{name} received again: running tasks are cancelled now"
        );
        hurry_on_signal.cancel();
    });
    let config = Config {
        workflows_dir: workflows,
        grace,
        max_runs,
        schedule,
        hurry,
    };
    let store = Arc::new(store);
    crate::replicate::attach(ctx, &store);
    // Other processes read through this while the daemon holds the store.
    // It serves until the daemon has stopped, grace period included.
    let api_stop = CancellationToken::new();
    let (commands, command_rx) = orchestrator_daemon::commands();
    let token = crate::serve::new_token().map_err(|e| Error::failed(format!("error: {e}")))?;
    let ui_url = match ui.listen {
        Some(addr) => {
            let source = StoreSource::new(ctx.clone(), store.clone(), Some(commands.clone()));
            let dashboards = ui
                .dashboards
                .clone()
                .or_else(|| Some(config.workflows_dir.parent()?.join("dashboards")));
            let url =
                crate::serve::serve_ui(source, addr, auth, &token, dashboards, api_stop.clone())
                    .await?;
            errln!(ctx, "web UI on {url}");
            Some(url)
        }
        None => None,
    };
    let _api = crate::serve::serve_api(
        ctx,
        store.clone(),
        &token,
        Some(commands),
        ui_url,
        api_stop.clone(),
    )
    .await
    .map_err(|e| Error::failed(format!("error: {e}")))?;
    // Notifications: delivered within a second of being queued, retried with backoff.
    let deliverer_stop = CancellationToken::new();
    let deliverer = {
        let (store, stop) = (store.clone(), deliverer_stop.clone());
        let resolver = crate::notify::Resolver::new(store.clone(), ctx);
        tokio::spawn(async move {
            let resolve = |r: &orchestrator_engine::state::OutboxRecord| resolver.resolve(r);
            let all = |_: &orchestrator_engine::state::OutboxRecord| true;
            orchestrator_notify::run_deliverer(
                &store,
                &resolve,
                &all,
                Duration::from_secs(1),
                stop,
            )
            .await;
        })
    };
    let result = orchestrator_daemon::run(
        config,
        store,
        loader,
        prepare,
        interrupted,
        command_rx,
        shutdown,
    )
    .await;
    api_stop.cancel();
    deliverer_stop.cancel();
    let _ = deliverer.await;
    result.map_err(|e| match e {
        orchestrator_daemon::Stopped::Setup(_) => Error::invalid(format!("error: {e}")),
        orchestrator_daemon::Stopped::Store(_) => Error::failed(format!("error: {e}")),
    })?;
    Ok(0)
}

/// How the daemon loads a workflow file for a run (the task registry, this process's
/// environment, the state dir's warehouse and channels file) and what it checks before a
/// run starts (the warehouse belongs to this state dir). `ctx`'s state dir is absolute.
pub fn wiring(ctx: &Context) -> (Loader, Prepare) {
    let registry = Arc::new(orchestrator_tasks::registry());
    let default_warehouse = ctx.dir().join("warehouse");
    let channels = ctx.channels.clone();
    let loader: Loader = Arc::new(move |path: &Path, source: String, p: &RunParams| {
        let opts = LoadOptions {
            registry: &registry,
            overrides: p.overrides.clone(),
            inherited: p.inherited.clone(),
            run_id: p.run_id.clone(),
            date: p.date.clone(),
            scheduled_at: p.scheduled_at.clone(),
            trigger_files: p.trigger_files.clone(),
            env: std::env::vars().collect(),
            default_warehouse: default_warehouse.clone(),
            backend: None,
            channels_file: channels.clone(),
        };
        wf::load_str(path, source, &opts)
    });
    let claim_dir = ctx.dir().to_path_buf();
    let prepare: Prepare = Arc::new(move |w| crate::load::claim_warehouse(w, &claim_dir));
    (loader, prepare)
}
