//! `daemon` and `ui`, and `trigger` and `cancel`, which ask a running daemon.

use std::path::PathBuf;

use orchestrator_service::serve::UiArgs;
use orchestrator_service::{ops, Context, Error};

use super::parse;

/// How runs go: shared by `daemon` and `ui`.
#[derive(clap::Args)]
pub struct Runs {
    /// The directory of workflow files (`*.yaml`, `*.yml`).
    #[arg(long, default_value = "workflows")]
    workflows: PathBuf,
    /// On SIGTERM, how long running tasks may finish before they are cancelled.
    #[arg(long, default_value = "60s", value_parser = parse::duration)]
    grace: std::time::Duration,
    /// Runs at once, over all workflows.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    max_runs: u64,
}

/// The web UI's listener: shared by `daemon` and `ui`.
#[derive(clap::Args)]
pub struct Listen {
    /// Where the web UI listens. An address others can reach needs --auth.
    #[arg(long, env = "ORCHESTRATOR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Who may use the web UI: a YAML file of tokens and users, each a `viewer` or an
    /// `operator` (see README).
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// The directory of dashboard files (`*.yaml`); default `dashboards` beside the
    /// workflows directory.
    #[arg(long, value_name = "DIR")]
    dashboards: Option<PathBuf>,
}

/// Run as a daemon: start every workflow in the workflows directory that has a
/// `schedule:` on time, catch up after downtime, apply `concurrency:`, pick up edited
/// files, resume interrupted runs. Stops on SIGTERM/SIGINT.
#[derive(clap::Args)]
pub struct Daemon {
    #[command(flatten)]
    runs: Runs,
    #[command(flatten)]
    listen: Listen,
    /// Do not serve the web UI.
    #[arg(long)]
    no_ui: bool,
}

impl Daemon {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        let ui = UiArgs {
            listen: (!self.no_ui).then_some(self.listen.listen),
            auth: self.listen.auth,
            dashboards: self.listen.dashboards,
        };
        serve(ctx, self.runs, ui, true).await
    }
}

/// Serve the web UI when no daemon runs: history, catalog and dashboards, and runs
/// started from the UI (trigger, rerun, cancel) in this process. Schedules and file
/// triggers do not fire. Stops on SIGTERM/SIGINT.
#[derive(clap::Args)]
pub struct Ui {
    #[command(flatten)]
    runs: Runs,
    #[command(flatten)]
    listen: Listen,
}

impl Ui {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        let ui = UiArgs {
            listen: Some(self.listen.listen),
            auth: self.listen.auth,
            dashboards: self.listen.dashboards,
        };
        serve(ctx, self.runs, ui, false).await
    }
}

async fn serve(ctx: &Context, runs: Runs, ui: UiArgs, schedule: bool) -> Result<u8, Error> {
    let max_runs = usize::try_from(runs.max_runs).unwrap_or(usize::MAX);
    ops::daemon::daemon(ctx, &runs.workflows, runs.grace, max_runs, ui, schedule).await
}

/// Ask the running daemon to start a run of one of its workflows now.
#[derive(clap::Args)]
pub struct Trigger {
    /// The workflow's name.
    workflow: String,
    /// Override a declared param (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse::param)]
    params: Vec<(String, String)>,
    /// The logical date, YYYY-MM-DD; default the day in the schedule's zone.
    #[arg(long, value_parser = parse::date)]
    date: Option<String>,
}

impl Trigger {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::execute::trigger(ctx, &self.workflow, self.params, self.date).await
    }
}

/// Ask the running daemon to cancel a run in progress.
#[derive(clap::Args)]
pub struct Cancel {
    /// The id of a run in progress in the daemon.
    run_id: String,
}

impl Cancel {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::execute::cancel(ctx, &self.run_id).await
    }
}
