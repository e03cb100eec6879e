//! `gen-runs` — fills a state store with history, for benchmarks of the web UI and of the
//! store at a year's (or a decade's) scale.
//!
//! Copies one real run (its run record, task records and attempts) `--count` times, each
//! copy a day earlier than the last, with a new id; a run in three fails at its third
//! task, so filters and the grid have something to show.
//!
//! Example: `gen-runs --state-dir .orchestrator --run 20261202T020427-e033 --count 10000`.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Duration;
use clap::Parser;
use orchestrator_state::{RunStatus, Store, TaskStatus, Write};

#[derive(Parser)]
#[command(name = "gen-runs", about = "Copy a run many times into a state store")]
struct Args {
    /// The state directory (no other process may hold it).
    #[arg(long)]
    state_dir: PathBuf,
    /// The run to copy.
    #[arg(long)]
    run: String,
    /// How many copies.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args) {
        Ok(n) => {
            println!("{n} runs written to {}", args.state_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &Args) -> Result<usize, String> {
    let (store, _) = Store::open(&args.state_dir, "gen-runs").map_err(|e| e.to_string())?;
    let run = store
        .run(&args.run)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no run `{}` in {}", args.run, args.state_dir.display()))?;
    let tasks = store.tasks(&run.id).map_err(|e| e.to_string())?;
    let mut attempts = Vec::new();
    for t in &tasks {
        attempts.extend(
            store
                .attempts(&run.id, &t.task_id)
                .map_err(|e| e.to_string())?,
        );
    }
    let date = chrono::NaiveDate::parse_from_str(&run.logical_date, "%Y-%m-%d")
        .map_err(|e| format!("run date: {e}"))?;
    for i in 1..=args.count {
        let shift = Duration::days(i as i64);
        let id = format!(
            "{}-g{i:06}",
            (run.started_at - shift).format("%Y%m%dT%H%M%S")
        );
        let fail = i % 3 == 0;
        let mut writes = Vec::with_capacity(1 + tasks.len() * 2);
        let mut r = run.clone();
        r.id = id.clone();
        r.logical_date = (date - shift).format("%Y-%m-%d").to_string();
        r.started_at = run.started_at - shift;
        r.ended_at = run.ended_at.map(|t| t - shift);
        r.status = if fail {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        writes.push(Write::Run(r));
        for (k, t) in run.task_order.iter().enumerate() {
            let Some(rec) = tasks.iter().find(|x| &x.task_id == t) else {
                continue;
            };
            let mut rec = rec.clone();
            rec.run_id = id.clone();
            rec.started_at = rec.started_at.map(|s| s - shift);
            rec.ended_at = rec.ended_at.map(|s| s - shift);
            rec.status = match (fail, k) {
                (true, 2) => TaskStatus::Failed,
                (true, k) if k > 2 => TaskStatus::Skipped,
                _ => TaskStatus::Succeeded,
            };
            writes.push(Write::Task(rec));
        }
        for a in &attempts {
            let mut a = a.clone();
            a.run_id = id.clone();
            a.started_at -= shift;
            a.ended_at = a.ended_at.map(|s| s - shift);
            writes.push(Write::Attempt(a));
        }
        store.commit(&writes).map_err(|e| e.to_string())?;
    }
    Ok(args.count)
}
