//! What sealing a finished run costs, in isolation from the executor.
//!
//! `cargo run --release -p orchestrator-state --example bench_seal [TASKS]` (10,000 by
//! default) commits a run of TASKS tasks as the executor does a chain (one commit per
//! task: its succeeded attempt and task record, with an output), then the run's finish,
//! which also seals its records into one value (`z\0run`, see the crate's docs). It prints
//! the time a task commit took on average and the time of the finishing commit: the part
//! of a big run's end that grows with its size. README, *Overhead*, has the figures.

mod common;

use std::time::Instant;

use chrono::Utc;
use orchestrator_state::{AttemptRecord, RunStatus, Store, TaskRecord, TaskStatus, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 10_000,
    };
    let dir = tempfile::tempdir()?;
    let (store, _) = Store::open(dir.path(), "bench_seal")?;
    let mut run = common::chain_run(n);
    let task = |i: usize, status, outputs: serde_json::Map<_, _>| TaskRecord {
        run_id: "r1".into(),
        task_id: format!("t{i}"),
        status,
        attempts: u32::from(status != TaskStatus::Pending),
        started_at: None,
        ended_at: None,
        error: None,
        outputs,
    };
    let mut first = vec![Write::Run(run.clone())];
    first.extend((0..n).map(|i| Write::Task(task(i, TaskStatus::Pending, Default::default()))));
    store.commit(&first)?;

    let start = Instant::now();
    for i in 0..n {
        let now = Utc::now();
        let mut outputs = serde_json::Map::new();
        outputs.insert("n".into(), i.into());
        let attempt = AttemptRecord {
            run_id: "r1".into(),
            task_id: format!("t{i}"),
            attempt: 1,
            status: TaskStatus::Succeeded,
            started_at: now,
            ended_at: Some(now),
            exit_code: None,
            error: None,
            output_tail: String::new(),
            outputs: outputs.clone(),
        };
        let mut done = task(i, TaskStatus::Succeeded, outputs);
        done.started_at = Some(now);
        done.ended_at = Some(now);
        store.commit(&[Write::Attempt(attempt), Write::Task(done)])?;
    }
    let tasks = start.elapsed();

    run.status = RunStatus::Succeeded;
    run.ended_at = Some(Utc::now());
    let start = Instant::now();
    store.commit(&[Write::Run(run)])?;
    let finish = start.elapsed();
    println!(
        "{n} tasks: {:.0} µs a task commit; the finishing (sealing) commit {:.1} ms",
        tasks.as_secs_f64() * 1e6 / n as f64,
        finish.as_secs_f64() * 1e3
    );
    Ok(())
}
