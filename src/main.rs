//! The `orchestrator` command line: a thin layer over the engine, the task kinds and the
//! state store. This file declares the commands; each command group lives in its own
//! module under `commands/`. Exit status: 0 success, 1 the run failed or was cancelled
//! (or `state check` found problems), 2 invalid input (bad arguments, invalid workflow,
//! state dir in use, unknown run).

mod api;
mod backfill;
mod commands;
mod notify;
mod out;
mod report;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use commands::{
    backfill as backfill_cmd, daemon, execute, inspect, notify as notify_cmd, state, workflow,
};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and run a workflow; prints the run id first, one line per task
    /// transition, and a summary table. Exit 0 if the run succeeded, 1 if not.
    Run {
        /// The workflow YAML file.
        file: PathBuf,
        /// Override a declared param (repeatable): --param greeting=hi
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = commands::parse_param)]
        params: Vec<(String, String)>,
        /// The logical date of the run (`{{ run.date }}`), YYYY-MM-DD; default today (UTC).
        #[arg(long, value_parser = commands::parse_date)]
        date: Option<String>,
        /// Print only the run id and the summary, not each transition.
        #[arg(long, short)]
        quiet: bool,
        /// Where the data tasks run: `local` or `aws` (overrides the file's `backend:`;
        /// a rerun runs where the run ran).
        #[arg(long, value_parser = commands::parse_backend)]
        backend: Option<orchestrator_engine::workflow::Backend>,
    },
    /// Run a workflow once per logical date of a range (both ends included), recorded as
    /// one backfill. Dates come from the workflow's schedule (every day if it has none).
    /// Exit 0 if every run succeeded, 1 if not.
    Backfill {
        /// The workflow YAML file (not with --resume).
        file: Option<PathBuf>,
        /// The first logical date, YYYY-MM-DD.
        #[arg(long, value_parser = commands::parse_date)]
        from: Option<String>,
        /// The last logical date, YYYY-MM-DD (included).
        #[arg(long, value_parser = commands::parse_date)]
        to: Option<String>,
        /// `schedule` (the workflow's fire dates; the default) or `daily` (every day).
        #[arg(long, value_name = "schedule|daily")]
        calendar: Option<String>,
        /// Dates that already have runs: `none` leaves them alone, `failed` resumes the
        /// failed ones, `all` starts a new run for every date.
        #[arg(long, default_value = "none", value_name = "none|failed|all")]
        reprocess: String,
        /// Runs at once (within the workflow's `max_active_runs:`, default 1).
        #[arg(long, default_value_t = 1)]
        max_active_runs: u32,
        /// Newest date first.
        #[arg(long)]
        backwards: bool,
        /// Print the dates and what would happen to each; run and record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Continue an interrupted or cancelled backfill.
        #[arg(long, value_name = "ID")]
        resume: Option<String>,
        /// Override a declared param in every run (repeatable): --param symbol=NVDA
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = commands::parse_param)]
        params: Vec<(String, String)>,
        /// Print the header and the summary, not a line per date.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check that a backend can be used: for `aws`, cheap read-only calls (STS
    /// GetCallerIdentity, Glue GetDatabase, Athena GetWorkGroup) that say exactly what is
    /// missing or forbidden. Exit 0 if all is well, 1 if not.
    Doctor {
        /// A workflow whose `aws:` block to check.
        file: Option<PathBuf>,
        /// The backend to check: `local` or `aws` (default: the file's `backend:`).
        #[arg(long, value_parser = commands::parse_backend)]
        backend: Option<orchestrator_engine::workflow::Backend>,
        /// Override a declared param of the file (repeatable), as `run` would.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = commands::parse_param)]
        params: Vec<(String, String)>,
    },
    /// List backfills, newest first, with how many of their dates succeeded, failed, ...
    Backfills {
        /// Print JSON (a list of {id, workflow, from, to, status, dates, ...}).
        #[arg(long)]
        json: bool,
    },
    /// Check a workflow file and report every problem found (exit 2 if any).
    Validate {
        /// The workflow YAML file.
        file: PathBuf,
        /// Check it with a param overridden (repeatable), as `run --param` would.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = commands::parse_param)]
        params: Vec<(String, String)>,
        /// Check it as it would run on this backend (`aws` checks the `aws:` block,
        /// without calling AWS).
        #[arg(long, value_parser = commands::parse_backend)]
        backend: Option<orchestrator_engine::workflow::Backend>,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many runs (1 or more).
        #[arg(long, default_value_t = 20, value_parser = parse_limit)]
        limit: u64,
        /// Print JSON (a list of {id, workflow, status, logical_date, started_at, ended_at, trigger}).
        #[arg(long)]
        json: bool,
    },
    /// Show one run: every task's status, attempts, duration, error and output tail.
    Show {
        /// The run's id, as `runs` lists it.
        run_id: String,
        /// Print JSON (see README for the format).
        #[arg(long)]
        json: bool,
    },
    /// Resume a run: re-execute its failed, cancelled and skipped tasks and everything
    /// downstream, using the workflow file's current definition. Succeeded tasks keep
    /// their results.
    Rerun {
        /// The run's id, as `runs` lists it.
        run_id: String,
        /// Also re-execute this task and everything downstream, even if they succeeded.
        #[arg(long, value_name = "TASK")]
        from: Option<String>,
        /// Print only the run id and the summary, not each transition.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run read-only SQL against the catalog's tables (the local Athena console).
    Query {
        /// One SELECT (or WITH, EXPLAIN, SHOW TABLES, SHOW COLUMNS, DESCRIBE) statement.
        sql: String,
        /// Print a JSON array with one object per row, keyed by column name.
        #[arg(long)]
        json: bool,
    },
    /// List the catalog's tables.
    Tables {
        /// Print JSON (a list of table records).
        #[arg(long)]
        json: bool,
    },
    /// Print a workflow's task graph.
    Graph {
        /// The workflow YAML file.
        file: PathBuf,
        /// `dot` (Graphviz) or `mermaid`.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print a workflow's next fire times (from its `schedule:`), in UTC and in its time
    /// zone, to check a schedule before deploying it.
    Next {
        /// The workflow YAML file (it must have a `schedule:`).
        file: PathBuf,
        /// How many fire times.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        count: u64,
        /// Fire times after this instant (exclusive), RFC 3339, e.g. 2026-03-06T12:00:00Z;
        /// default now. For `rate()` it is the schedule's start.
        #[arg(long, value_parser = commands::parse_instant)]
        after: Option<chrono::DateTime<chrono::Utc>>,
        /// Print JSON: a list of {"utc": ..., "local": ...}.
        #[arg(long)]
        json: bool,
    },
    /// Runs one query for a daemon in a child process (see
    /// `orchestrator_tasks::data::isolated`); not for people.
    #[command(name = "query-worker", hide = true)]
    QueryWorker,
    /// Run as a daemon: start every workflow in the workflows directory that has a
    /// `schedule:` on time, catch up after downtime, apply `concurrency:`, pick up edited
    /// files, resume interrupted runs. Stops on SIGTERM/SIGINT.
    Daemon {
        /// The directory of workflow files (`*.yaml`, `*.yml`) to schedule.
        #[arg(long, default_value = "workflows")]
        workflows: PathBuf,
        /// On SIGTERM, how long running tasks may finish before they are cancelled.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        grace: std::time::Duration,
        /// Runs at once, over all workflows.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
        max_runs: u64,
        /// Where the web UI listens. An address others can reach needs --auth.
        #[arg(long, env = "ORCHESTRATOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Do not serve the web UI.
        #[arg(long)]
        no_ui: bool,
        /// Who may use the web UI: a YAML file of tokens and users, each a `viewer` or an
        /// `operator` (see README).
        #[arg(long, value_name = "FILE")]
        auth: Option<PathBuf>,
        /// The directory of dashboard files (`*.yaml`); default `dashboards` beside the
        /// workflows directory.
        #[arg(long, value_name = "DIR")]
        dashboards: Option<PathBuf>,
    },
    /// Serve the web UI when no daemon runs: history, catalog and dashboards, and runs
    /// started from the UI (trigger, rerun, cancel) in this process. Schedules and file
    /// triggers do not fire. Stops on SIGTERM/SIGINT.
    Ui {
        /// The directory of workflow files the UI can trigger.
        #[arg(long, default_value = "workflows")]
        workflows: PathBuf,
        /// Where the web UI listens. An address others can reach needs --auth.
        #[arg(long, env = "ORCHESTRATOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Who may use the web UI (see `daemon --auth`).
        #[arg(long, value_name = "FILE")]
        auth: Option<PathBuf>,
        /// The directory of dashboard files; default `dashboards` beside the workflows
        /// directory.
        #[arg(long, value_name = "DIR")]
        dashboards: Option<PathBuf>,
    },
    /// Ask the running daemon to start a run of one of its workflows now.
    Trigger {
        /// The workflow's name.
        workflow: String,
        /// Override a declared param (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = commands::parse_param)]
        params: Vec<(String, String)>,
        /// The logical date, YYYY-MM-DD; default the day in the schedule's zone.
        #[arg(long, value_parser = commands::parse_date)]
        date: Option<String>,
    },
    /// Ask the running daemon to cancel a run in progress.
    Cancel {
        /// The id of a run in progress in the daemon.
        run_id: String,
    },
    /// Check or repair the state store.
    #[command(subcommand)]
    State(StateCommand),
    /// Delete runs older than --older-than that nothing needs any more, then compact the
    /// state db. Keeps runs still running, runs a `rerun` may still resume (not succeeded
    /// and not replaced by a later run of the same date), runs of unfinished backfills and
    /// runs with notifications still being delivered. The catalog is never touched.
    Gc {
        /// Age of the runs to delete, e.g. 90d, 12w. Without it, each workflow's
        /// `retention:` (workflows without one are left alone).
        #[arg(long, value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
        /// Only this workflow's runs.
        #[arg(long)]
        workflow: Option<String>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow an --older-than under one day (it deletes runs of the last hours).
        #[arg(long)]
        force: bool,
    },
    /// Send a test message to a channel, or deliver notifications still waiting.
    #[command(subcommand)]
    Notify(NotifyCommand),
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test message to channel CHANNEL of workflow FILE, now. Exit 0 if it was
    /// delivered, 1 if not (with the channel's answer).
    Test {
        /// The workflow file that defines the channel under `channels:`.
        file: PathBuf,
        /// The channel's name.
        channel: String,
    },
    /// Deliver every notification that is due (after a crash, or once a channel is back);
    /// the daemon does this by itself every second.
    Deliver,
}

#[derive(Subcommand)]
enum StateCommand {
    /// Verify the state store without changing it: every record, the run index, the
    /// catalog's table locations, sled's files, free space, recovery points and leftover
    /// staging files. Exit 0 if healthy, 1 if not.
    Check,
    /// Rebuild a damaged or lost store from its last good recovery point, then register
    /// managed tables found in the warehouse that the recovery point does not know. The
    /// damaged db is kept beside it (`db.damaged-TIME`). Says what was recovered and what
    /// was lost.
    Recover {
        /// Also look for tables in this warehouse (repeatable). The state dir's own
        /// `warehouse/` and the warehouses of recovered tables are always searched.
        #[arg(long, value_name = "DIR")]
        warehouse: Vec<PathBuf>,
        /// Rebuild even if the store opens and reads cleanly.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// `--limit`: a whole number of at least 1, said in words when it is not.
fn parse_limit(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("`--limit` must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`--limit` takes a whole number of runs, like 20, not `{s}`"
        )),
    }
}

/// `gc --older-than`: a duration in which `m` is refused, since it reads as months to
/// many (humantime takes it as minutes): `min` or `d` say which.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let ambiguous = s
        .split(|c: char| c.is_ascii_digit() || c.is_whitespace())
        .any(|u| u == "m");
    if ambiguous {
        return Err(format!(
            "`{s}`: `m` could mean minutes or months; write `min` for minutes, or days (`30d`)"
        ));
    }
    parse_duration(s)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 30s, 5m, 1h"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCHESTRATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
            out::errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The command runs on a worker thread, not on this one: the tasks it spawns (one per
    // attempt) then start on the same worker without waking another thread, which
    // halves the cost of a short task.
    let command = runtime.spawn(dispatch(cli));
    let result = runtime.block_on(command).unwrap_or_else(|e| {
        Err(commands::Fail::failed(format!(
            "error: the command stopped unexpectedly: {e}"
        )))
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            out::errln!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, commands::Fail> {
    let dir = cli.state_dir;
    if let Some(file) = &cli.channels {
        commands::set_channels_file(file)?;
    }
    match cli.command {
        Command::Run {
            file,
            params,
            date,
            quiet,
            backend,
        } => execute::run(&dir, &file, params, date, quiet, backend).await,
        Command::Rerun {
            run_id,
            from,
            quiet,
        } => execute::rerun(&dir, &run_id, from.as_deref(), quiet).await,
        Command::Backfill {
            file,
            from,
            to,
            calendar,
            reprocess,
            max_active_runs,
            backwards,
            dry_run,
            resume,
            params,
            quiet,
        } => {
            let args = backfill_cmd::Args {
                file,
                from,
                to,
                calendar,
                reprocess,
                max_active_runs,
                backwards,
                dry_run,
                resume,
                params,
                quiet,
            };
            backfill_cmd::backfill(&dir, args).await
        }
        Command::Doctor {
            file,
            backend,
            params,
        } => commands::doctor::doctor(&dir, file.as_deref(), backend, params).await,
        Command::Backfills { json } => backfill_cmd::backfills(&dir, json).await,
        Command::Validate {
            file,
            params,
            backend,
        } => workflow::validate(&dir, &file, params, backend),
        Command::Graph { file, format } => workflow::graph(&dir, &file, format),
        Command::Next {
            file,
            count,
            after,
            json,
        } => workflow::next(&dir, &file, count, after, json),
        Command::Runs {
            workflow,
            limit,
            json,
        } => inspect::runs(&dir, workflow.as_deref(), limit, json).await,
        Command::Show { run_id, json } => inspect::show(&dir, &run_id, json).await,
        Command::Query { sql, json } => inspect::query(&dir, sql, json).await,
        Command::QueryWorker => Ok(orchestrator_tasks::data::isolated::worker_main().await),
        Command::Tables { json } => inspect::tables(&dir, json).await,
        Command::Daemon {
            workflows,
            grace,
            max_runs,
            listen,
            no_ui,
            auth,
            dashboards,
        } => {
            let ui = ui::UiArgs {
                listen: (!no_ui).then_some(listen),
                auth,
                dashboards,
            };
            daemon::daemon(
                &dir,
                &workflows,
                grace,
                usize::try_from(max_runs).unwrap_or(usize::MAX),
                ui,
                true,
            )
            .await
        }
        Command::Ui {
            workflows,
            listen,
            auth,
            dashboards,
        } => {
            let ui = ui::UiArgs {
                listen: Some(listen),
                auth,
                dashboards,
            };
            daemon::daemon(
                &dir,
                &workflows,
                std::time::Duration::from_secs(60),
                8,
                ui,
                false,
            )
            .await
        }
        Command::Trigger {
            workflow,
            params,
            date,
        } => execute::trigger(&dir, &workflow, params, date).await,
        Command::Cancel { run_id } => execute::cancel(&dir, &run_id).await,
        Command::Notify(NotifyCommand::Test { file, channel }) => {
            notify_cmd::test(&dir, &file, &channel).await
        }
        Command::Notify(NotifyCommand::Deliver) => notify_cmd::deliver(&dir).await,
        Command::State(StateCommand::Check) => state::check(&dir),
        Command::Gc {
            older_than,
            workflow,
            dry_run,
            force,
        } => {
            if let Some(age) = older_than.filter(|a| *a < std::time::Duration::from_secs(86_400)) {
                if !force {
                    return Err(commands::Fail::input(format!(
                        "error: --older-than {} would delete runs of the last day, finished ones included; use at least 1d (as `retention:` does), or pass --force",
                        humantime::format_duration(age)
                    )));
                }
            }
            state::gc(&dir, older_than, workflow.as_deref(), dry_run)
        }
        Command::State(StateCommand::Recover { warehouse, force }) => {
            state::recover(&dir, warehouse, force).await
        }
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
