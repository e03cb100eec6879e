//! The `orchestrator` command line: parses arguments, opens the state store, loads
//! workflows, and hands runs to the engine. Exit status: 0 success, 1 the run failed or
//! was cancelled, 2 invalid input (bad arguments, invalid workflow, state dir in use,
//! unknown run).

mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use orchestrator_engine::runner::{self, RunError};
use orchestrator_engine::state::{RunStatus, Store};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::{self, LoadError, LoadOptions, Workflow};
use orchestrator_engine::CancellationToken;

#[derive(Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Run write-audit-publish data pipelines defined as YAML DAGs, with durable state and exact rerun-from-failure."
)]
struct Cli {
    /// Where runs, attempts and (later) the catalog are stored.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_STATE_DIR",
        default_value = ".orchestrator"
    )]
    state_dir: PathBuf,
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
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// The logical date of the run (`{{ run.date }}`), YYYY-MM-DD; default today (UTC).
        #[arg(long, value_parser = parse_date)]
        date: Option<String>,
        /// Print only the run id and the summary, not each transition.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a workflow file and report every problem found (exit 2 if any).
    Validate {
        file: PathBuf,
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// List runs, newest first.
    Runs {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (a list of {id, workflow, status, logical_date, started_at, ended_at}).
        #[arg(long)]
        json: bool,
    },
    /// Show one run: every task's status, attempts, duration, error and output tail.
    Show {
        run_id: String,
        /// Print JSON (see README for the format).
        #[arg(long)]
        json: bool,
    },
    /// Resume a run: re-execute its failed, cancelled and skipped tasks and everything
    /// downstream, using the workflow file's current definition. Succeeded tasks keep
    /// their results.
    Rerun {
        run_id: String,
        /// Also re-execute this task and everything downstream, even if they succeeded.
        #[arg(long, value_name = "TASK")]
        from: Option<String>,
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run read-only SQL against the catalog's tables (the local Athena console).
    Query {
        /// One SELECT (or WITH, EXPLAIN, SHOW, DESCRIBE) statement.
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
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

/// An error that ends the command, with its exit status.
struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    fn input(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<orchestrator_engine::state::StateError> for Fail {
    fn from(e: orchestrator_engine::state::StateError) -> Self {
        let code = match e {
            orchestrator_engine::state::StateError::Locked { .. }
            | orchestrator_engine::state::StateError::TooNew { .. } => 2,
            _ => 1,
        };
        Fail {
            code,
            message: format!("error: {e}"),
        }
    }
}

impl From<LoadError> for Fail {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Invalid(d) => Fail::input(d.to_string()),
            LoadError::Read { .. } => Fail::input(format!("error: {e}")),
        }
    }
}

impl From<RunError> for Fail {
    fn from(e: RunError) -> Self {
        match e {
            RunError::State(s) => s.into(),
            RunError::Refused(m) => Fail::input(format!("error: {m}")),
        }
    }
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn parse_date(s: &str) -> Result<String, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| format!("`{s}` is not a date like 2026-01-31"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCHESTRATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Fail> {
    let state_dir = cli.state_dir;
    match cli.command {
        Command::Validate { file, params } => {
            let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
            let wf = load(
                &file,
                params.into_iter().collect(),
                Default::default(),
                "validate",
                &date,
                &state_dir,
            )?;
            println!(
                "{}: workflow `{}` is valid ({} tasks)",
                file.display(),
                wf.name,
                wf.tasks.len()
            );
            Ok(0)
        }
        Command::Graph { file, format } => {
            let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
            let wf = load(
                &file,
                Default::default(),
                Default::default(),
                "graph",
                &date,
                &state_dir,
            )?;
            print!(
                "{}",
                report::graph(&wf, matches!(format, GraphFormat::Mermaid))
            );
            Ok(0)
        }
        Command::Run {
            file,
            params,
            date,
            quiet,
        } => {
            let date = date.unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
            let run_id = runner::new_run_id();
            // Validate before touching the state store: invalid input changes nothing.
            let wf = load(
                &file,
                params.into_iter().collect(),
                Default::default(),
                &run_id,
                &date,
                &state_dir,
            )?;
            let store = open_store(&state_dir)?;
            println!(
                "run {run_id} started: workflow {}, logical date {date}, {} tasks, state {}",
                wf.name,
                wf.tasks.len(),
                state_dir.display()
            );
            let env = runner::Env {
                store: &store,
                catalog: store.clone(),
                cancel: cancel_on_signal(),
                redactor: Arc::new(Redactor::from_env()),
                observer: &report::Printer { quiet },
            };
            let run = runner::start(env, &wf, &run_id, &date).await?;
            finish(&store, &run)
        }
        Command::Rerun {
            run_id,
            from,
            quiet,
        } => {
            let store = open_store(&state_dir)?;
            let run = find_run(&store, &run_id)?;
            let wf = load(
                Path::new(&run.workflow_path),
                Default::default(),
                run.params.clone(),
                &run.id,
                &run.logical_date,
                &state_dir,
            )?;
            if wf.name != run.workflow {
                return Err(Fail::input(format!(
                    "error: run {} belongs to workflow `{}`, but {} now defines workflow `{}`; start a new run with `orchestrator run`",
                    run.id,
                    run.workflow,
                    run.workflow_path,
                    wf.name
                )));
            }
            println!(
                "run {} resumed: workflow {}, logical date {}, file {}",
                run.id, run.workflow, run.logical_date, run.workflow_path
            );
            let observer = report::Printer { quiet };
            let env = runner::Env {
                store: &store,
                catalog: store.clone(),
                cancel: cancel_on_signal(),
                redactor: Arc::new(Redactor::from_env()),
                observer: &observer,
            };
            let run = runner::resume(env, &wf, run, from.as_deref()).await?;
            finish(&store, &run)
        }
        Command::Runs {
            workflow,
            limit,
            json,
        } => {
            let store = open_store(&state_dir)?;
            let runs = store.runs(workflow.as_deref(), limit)?;
            if json {
                println!("{}", report::runs_json(&runs));
            } else {
                print!("{}", report::runs_table(&runs));
            }
            Ok(0)
        }
        Command::Query { sql, json } => {
            let store = open_store(&state_dir)?;
            let batches = orchestrator_tasks::data::query(store, sql)
                .await
                .map_err(|e| Fail::input(format!("error: {e}")))?;
            if json {
                println!(
                    "{}",
                    report::batches_json(&batches).map_err(|e| Fail {
                        code: 1,
                        message: format!("error: {e}")
                    })?
                );
            } else {
                println!(
                    "{}",
                    report::batches_table(&batches).map_err(|e| Fail {
                        code: 1,
                        message: format!("error: {e}")
                    })?
                );
            }
            Ok(0)
        }
        Command::Tables { json } => {
            let store = open_store(&state_dir)?;
            let tables = store.tables()?;
            if json {
                println!("{}", serde_json::to_string(&tables).unwrap_or_default());
            } else {
                print!("{}", report::tables_table(&tables));
            }
            Ok(0)
        }
        Command::Show { run_id, json } => {
            let store = open_store(&state_dir)?;
            let run = find_run(&store, &run_id)?;
            let details = report::RunDetails::load(&store, run)?;
            if json {
                println!("{}", details.json());
            } else {
                print!("{}", details.text());
            }
            Ok(0)
        }
    }
}

fn load(
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
    state_dir: &Path,
) -> Result<Workflow, Fail> {
    let state_dir = std::path::absolute(state_dir)
        .map_err(|e| Fail::input(format!("error: state dir {}: {e}", state_dir.display())))?;
    let registry = orchestrator_tasks::registry();
    let opts = LoadOptions {
        registry: &registry,
        overrides,
        inherited,
        run_id: run_id.to_string(),
        date: date.to_string(),
        env: std::env::vars().collect(),
        default_warehouse: state_dir.join("warehouse"),
    };
    Ok(workflow::load_file(file, &opts)?)
}

fn open_store(dir: &Path) -> Result<Arc<Store>, Fail> {
    let owner = std::env::args().collect::<Vec<_>>().join(" ");
    let (store, recovered) = Store::open(dir, &owner)?;
    for id in recovered {
        eprintln!(
            "note: run {id} was interrupted (the process running it is gone); it is marked `interrupted`. Resume it with `orchestrator rerun {id}`"
        );
    }
    Ok(Arc::new(store))
}

fn find_run(store: &Store, id: &str) -> Result<orchestrator_engine::state::RunRecord, Fail> {
    store.run(id)?.ok_or_else(|| {
        Fail::input(format!(
            "error: no run `{id}` in state dir {}; list runs with `orchestrator runs`",
            store.dir().display()
        ))
    })
}

/// Prints the summary and maps the run's status to the exit code.
fn finish(store: &Store, run: &orchestrator_engine::state::RunRecord) -> Result<u8, Fail> {
    let details = report::RunDetails::load(store, run.clone())?;
    print!("{}", details.summary());
    Ok(match run.status {
        RunStatus::Succeeded => 0,
        _ => 1,
    })
}

/// A token cancelled on the first SIGINT or SIGTERM.
fn cancel_on_signal() -> CancellationToken {
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
        eprintln!("{name} received: cancelling running tasks and recording the run as cancelled");
        t.cancel();
    });
    token
}
