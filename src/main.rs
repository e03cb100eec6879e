//! The `orchestrator` command line: argument parsing and printing over the service layer
//! (`orchestrator_service`), which does the work. Each command's arguments live in its
//! module under `commands/`. Exit status: 0 success, 1 the run failed or was cancelled
//! (or `state check` found problems), 2 invalid input (bad arguments, invalid workflow,
//! state dir in use, unknown run) — from the error's kind, in one place ([`main`]).

mod commands;
mod out;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use orchestrator_service::{Context, Error};

use commands::{backfill, daemon, doctor, inspect, notify, plugins, run, state, workflow};

/// mimalloc instead of glibc's malloc: a WAP's stages allocate and free hundreds of
/// megabytes of Arrow buffers from many threads, and glibc's per-thread arenas keep what
/// one stage freed where the next cannot reuse it (README, *Memory*: the 5 M-row WAP's
/// peak RSS fell from 800–940 MB to 686–778 MB, at the same speed).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Run write-audit-publish data pipelines defined as YAML DAGs, with durable state and exact rerun-from-failure."
)]
struct Cli {
    /// Where runs, attempts and the catalog are stored.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_STATE_DIR",
        default_value = ".orchestrator"
    )]
    state_dir: PathBuf,
    /// A shared channels file (a top-level `channels:` mapping) for every workflow,
    /// instead of `channels.yaml` beside each; a run remembers it for its deliveries and
    /// reruns.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_CHANNELS",
        value_name = "FILE"
    )]
    channels: Option<PathBuf>,
    /// Ship the state store's commits off this host, continuously: s3://bucket/prefix or
    /// a directory (a mounted volume). `state recover --from URL` rebuilds from it.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_REPLICATE",
        value_name = "URL"
    )]
    replicate: Option<String>,
    /// The plugins directory: task kinds as executables, each named after its kind
    /// (default: `plugins/` in the workflow's directory, then in its parent).
    #[arg(long, global = true, env = "ORCHESTRATOR_PLUGINS", value_name = "DIR")]
    plugins: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Run),
    Backfill(backfill::Backfill),
    Doctor(doctor::Doctor),
    Backfills(backfill::Backfills),
    Validate(workflow::Validate),
    Runs(inspect::Runs),
    Show(inspect::Show),
    Rerun(run::Rerun),
    Query(inspect::Query),
    Tables(inspect::Tables),
    Graph(workflow::Graph),
    Next(workflow::Next),
    /// Runs one query for a daemon in a child process (see
    /// `orchestrator_tasks::data::isolated`); not for people.
    #[command(name = "query-worker", hide = true)]
    QueryWorker,
    Daemon(daemon::Daemon),
    Ui(daemon::Ui),
    Trigger(daemon::Trigger),
    Cancel(daemon::Cancel),
    #[command(subcommand)]
    State(state::State),
    Gc(state::Gc),
    #[command(subcommand)]
    Notify(notify::Notify),
    #[command(subcommand)]
    Plugins(plugins::Plugins),
    Schema(plugins::Schema),
}

/// Our own info lines; delta-rs and its kernel narrate every snapshot they build at
/// info, which is theirs to debug, not the user's to read.
const DEFAULT_LOG: &str =
    "info,deltalake=warn,deltalake_core=warn,delta_kernel=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.plugins {
        // Every registry this process (and its children) builds finds plugins there:
        // set once, before any other thread exists.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        std::env::set_var(orchestrator_service::ops::plugins::PLUGINS_ENV, dir);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCHESTRATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        // By default a failed write to stderr is reported with `eprintln!`, which panics
        // when stderr is closed — inside whichever task was logging (a shell task's
        // output reader: its command then died of SIGPIPE). Drop such writes instead.
        .log_internal_errors(false)
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Commands run on a worker (below); give them the main thread's 8 MiB of stack.
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out::errln(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    // The command runs on a worker thread, not on this one: the tasks it spawns (one per
    // attempt) then start on the same worker without waking another thread, which
    // halves the cost of a short task.
    let command = runtime.spawn(dispatch(cli));
    let result = runtime.block_on(command).unwrap_or_else(|e| {
        Err(Error::internal(format!(
            "error: the command stopped unexpectedly: {e}"
        )))
    });
    // `--replicate`: what the command committed since the last shipment goes now.
    orchestrator_service::replicate::finish();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            out::errln(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let mut ctx = Context::new(cli.state_dir, Arc::new(out::Std));
    if let Some(file) = &cli.channels {
        ctx = ctx.with_channels_file(file)?;
    }
    if let Some(url) = &cli.replicate {
        ctx = ctx.with_replica(url)?;
    }
    let ctx = &ctx;
    match cli.command {
        Command::Run(a) => a.exec(ctx).await,
        Command::Rerun(a) => a.exec(ctx).await,
        Command::Backfill(a) => a.exec(ctx).await,
        Command::Backfills(a) => a.exec(ctx).await,
        Command::Doctor(a) => a.exec(ctx).await,
        Command::Validate(a) => a.exec(ctx),
        Command::Graph(a) => a.exec(ctx),
        Command::Next(a) => a.exec(ctx),
        Command::Runs(a) => a.exec(ctx).await,
        Command::Show(a) => a.exec(ctx).await,
        Command::Query(a) => a.exec(ctx).await,
        Command::QueryWorker => Ok(orchestrator_tasks::data::isolated::worker_main().await),
        Command::Tables(a) => a.exec(ctx).await,
        Command::Daemon(a) => a.exec(ctx).await,
        Command::Ui(a) => a.exec(ctx).await,
        Command::Trigger(a) => a.exec(ctx).await,
        Command::Cancel(a) => a.exec(ctx).await,
        Command::Notify(a) => a.exec(ctx).await,
        Command::State(a) => a.exec(ctx).await,
        Command::Gc(a) => a.exec(ctx),
        Command::Plugins(a) => a.exec(ctx),
        Command::Schema(a) => a.exec(ctx),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every command and every argument has a description in `--help`.
    #[test]
    fn every_help_entry_says_what_it_is() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.is_hide_set() {
                return;
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" || sub.is_hide_set() {
                    continue;
                }
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "orchestrator", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
