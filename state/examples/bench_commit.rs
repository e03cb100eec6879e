//! What the store adds to the disk's durable-write floor, for the commit a chain makes.
//!
//! `cargo run --release -p orchestrator-state --example bench_commit [COMMITS]` (2,000 by
//! default) makes the commit the executor makes once per task of a chain (the finished
//! task's attempt and task record, the next task's task record and attempt, `running`),
//! and after each one the floor as `scripts/durable-floor` measures it, from Rust: 900
//! bytes written in place into a preallocated file, then `fdatasync`. Alternating the two
//! gives both the same moments of the disk, whose speed moves by half within minutes.
//! It prints the average of each and their difference: the store's own cost per commit
//! (encoding, sled's inserts, its flush), which a chain pays per task on top of the floor.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use chrono::Utc;
use orchestrator_state::{AttemptRecord, Store, TaskRecord, TaskStatus, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 2_000,
    };
    let dir = tempfile::tempdir()?;
    let (store, _) = Store::open(dir.path(), "bench_commit")?;
    let run = common::chain_run(n);
    let task = |i: usize, status| TaskRecord {
        run_id: "r1".into(),
        task_id: format!("t{i}"),
        status,
        attempts: u32::from(status != TaskStatus::Pending),
        started_at: Some(Utc::now()),
        ended_at: (status == TaskStatus::Succeeded).then(Utc::now),
        error: None,
        outputs: Default::default(),
    };
    let attempt = |i: usize, status| AttemptRecord {
        run_id: "r1".into(),
        task_id: format!("t{i}"),
        attempt: 1,
        status,
        started_at: Utc::now(),
        ended_at: (status == TaskStatus::Succeeded).then(Utc::now),
        exit_code: None,
        error: None,
        output_tail: String::new(),
        outputs: Default::default(),
    };
    let mut first = vec![Write::Run(run)];
    first.extend((0..n).map(|i| Write::Task(task(i, TaskStatus::Pending))));
    store.commit(&first)?;

    const SIZE: usize = 900;
    let floor = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("floor"))?;
    floor.write_all_at(&vec![0; (n + 1) * SIZE], 0)?;
    floor.sync_all()?;
    let bytes = [b'x'; SIZE];

    let (mut commits, mut floors) = (Duration::ZERO, Duration::ZERO);
    for i in 1..=n {
        let writes = [
            Write::Attempt(attempt(i - 1, TaskStatus::Succeeded)),
            Write::Task(task(i - 1, TaskStatus::Succeeded)),
            Write::Task(task(i, TaskStatus::Running)),
            Write::Attempt(attempt(i, TaskStatus::Running)),
        ];
        let start = Instant::now();
        store.commit(&writes)?;
        let committed = Instant::now();
        floor.write_all_at(&bytes, (i * SIZE) as u64)?;
        floor.sync_data()?;
        commits += committed - start;
        floors += committed.elapsed();
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{n} commits: {:.0} µs a commit, floor {:.0} µs (in place + fdatasync): the store adds {:.0} µs",
        us(commits),
        us(floors),
        us(commits) - us(floors)
    );
    Ok(())
}
