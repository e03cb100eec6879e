//! The crash loop: `orchestrator run workflows/daily.yaml` killed with SIGKILL at every
//! named pause point (ingest mid-write, create before its rename into the catalog,
//! publish before it writes, after its data files, after its Delta commit) and at 30
//! random moments, each run then resumed with
//! `rerun` to completion. After each, on one growing production table:
//! - no (symbol, date) appears twice in `stock_daily`;
//! - its row count is what the processed dates should give;
//! - no run is left `running`, and every run of the loop succeeded in the end;
//! - `state check` finds nothing, so no staging file is left where a query could see it.
//!
//! And with many runs in flight: a backfill of 64 runs at a time killed with SIGKILL at 20
//! random moments (their commits share durable writes), resumed each time: no date the
//! process reported done is lost, no run is left running or interrupted, each date ends
//! with exactly one run, which succeeded.
//!
//! Seeded: `ORCHESTRATOR_CRASH_SEED=N` replays a sequence; a failure prints its seed.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Sandbox;
use crate::daily::source_bars;

/// xorshift64*: enough randomness for kill times, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Prints the seed if the test fails, however it fails.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash loop failed with seed {0}; replay it with ORCHESTRATOR_CRASH_SEED={0}",
                self.0
            );
        }
    }
}

fn daily() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/daily.yaml")
        .display()
        .to_string()
}

fn json(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb.run(args);
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn count(sb: &Sandbox, sql: &str) -> u64 {
    json(sb, &["query", "--json", sql])[0]["n"]
        .as_u64()
        .unwrap()
}

enum Kill {
    /// At a pause point: `KIND:POINT`.
    At(&'static str),
    /// After this long.
    After(Duration),
    /// Not at all (measures how long a run takes).
    Never,
}

fn seed() -> u64 {
    std::env::var("ORCHESTRATOR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        })
}

#[test]
fn runs_killed_anywhere_resume_to_exactly_the_right_table() {
    let seed = seed();
    let _guard = SeedOnFailure(seed);
    let mut rng = Rng(seed);

    // The last 34 trading dates of the bundled year, oldest first.
    let bars = source_bars();
    let mut dates: Vec<String> = bars["NVDA"].iter().map(|b| b.date.clone()).collect();
    dates = dates.split_off(dates.len() - 34);
    let per_date = |d: &str| {
        bars.values()
            .filter(|b| b.iter().any(|b| b.date == d))
            .count() as u64
    };

    let sb = Sandbox::new();
    let landing = format!("landing={}", sb.path("landing").display());
    let hook = sb.path("hook");
    let mut plan = [
        Kill::At("alpha_vantage:mid-write"),
        Kill::At("create_table_as:before-rename"),
        Kill::At("publish:before-files"),
        Kill::At("publish:after-files"),
        Kill::At("publish:after-commit"),
        Kill::Never,
    ];
    let mut expected = 0;
    let mut typical = Duration::ZERO;
    for (i, date) in dates.iter().enumerate() {
        let kill = if i < plan.len() {
            std::mem::replace(&mut plan[i], Kill::Never)
        } else {
            // Anywhere from process start to a little after a typical run's end.
            let span = (typical.as_micros() as u64 * 11 / 10).max(1);
            Kill::After(Duration::from_micros(rng.next() % span))
        };
        let _ = std::fs::remove_dir_all(&hook);
        std::fs::create_dir_all(&hook).unwrap();
        let mut cmd = sb.command(&["run", &daily(), "--param", &landing, "--date", date]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        if let Kill::At(point) = &kill {
            cmd.env(
                "ORCHESTRATOR_TEST_PAUSE",
                format!("{point}:{}", hook.display()),
            );
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let what = match kill {
            Kill::At(point) => {
                sb.wait_for_file("hook/paused");
                child.kill().unwrap();
                format!("killed at {point}")
            }
            Kill::After(d) => {
                std::thread::sleep(d);
                child.kill().unwrap();
                format!("killed after {d:?}")
            }
            Kill::Never => String::new(),
        };
        let status = child.wait().unwrap();
        if what.is_empty() {
            assert!(status.success(), "the uninterrupted run of {date} failed");
            typical = started.elapsed();
        }
        let context = format!("iteration {i}, date {date}, {what}, seed {seed}");

        // Resume whatever the kill left; start the run if it never got recorded.
        let runs = json(&sb, &["runs", "--json", "--limit", "1"]);
        let newest = runs
            .as_array()
            .and_then(|r| r.first())
            .filter(|r| r["logical_date"] == date.as_str());
        match newest {
            Some(run) if run["status"] == "succeeded" => {}
            Some(run) => {
                let id = run["id"].as_str().unwrap();
                let out = sb.run(&["rerun", id]);
                assert_eq!(out.code, 0, "{context}: rerun {id}: {out:?}");
            }
            None => {
                let out = sb.run(&["run", &daily(), "--param", &landing, "--date", date]);
                assert_eq!(out.code, 0, "{context}: a fresh run: {out:?}");
            }
        }

        expected += per_date(date);
        assert_eq!(
            count(&sb, "SELECT count(*) AS n FROM stock_daily"),
            expected,
            "{context}: rows in stock_daily"
        );
        assert_eq!(
            count(
                &sb,
                "SELECT count(*) AS n FROM (SELECT symbol, date FROM stock_daily GROUP BY symbol, date HAVING count(*) > 1) AS d"
            ),
            0,
            "{context}: duplicate keys in stock_daily"
        );
        let all = json(&sb, &["runs", "--json", "--limit", "1000"]);
        for run in all.as_array().unwrap() {
            assert_eq!(run["status"], "succeeded", "{context}: {run}");
        }
        let check = sb.run(&["state", "check"]);
        assert_eq!(check.code, 0, "{context}: state check: {check:?}");
    }
}

#[test]
fn sixty_four_runs_in_flight_killed_twenty_times_lose_nothing_and_all_resume() {
    let seed = seed();
    let _guard = SeedOnFailure(seed);
    let mut rng = Rng(seed);
    let sb = Sandbox::new();
    // Each run's middle task takes a little while, so 64 are in flight at any moment.
    let wf = sb.write(
        "many.yaml",
        "name: many\nmax_active_runs: 64\ntasks:\n  a: { kind: noop }\n  b: { kind: shell, command: \"sleep 0.05\", after: [a] }\n  c: { kind: noop, after: [b] }\n",
    );
    let wf = wf.display().to_string();
    const DATES: usize = 3000;
    let (from, to) = ("2015-01-01", "2023-03-19"); // 3,000 days.
    let mut done: HashMap<String, String> = HashMap::new(); // date -> run, as reported
    let mut id = String::new();
    let mut kills = 0;
    while kills < 20 {
        let args: Vec<&str> = if id.is_empty() {
            vec![
                "backfill",
                &wf,
                "--from",
                from,
                "--to",
                to,
                "--max-active-runs",
                "64",
            ]
        } else {
            vec!["backfill", "--resume", &id, "--max-active-runs", "64"]
        };
        let mut child = sb
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // What the process reports, read as it comes: a date is reported once its run
        // ended, durably.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        if id.is_empty() {
            // The first process: its header names the backfill.
            lines.push(rx.recv().expect("the backfill's header line"));
        }
        let wait = Duration::from_millis(20 + rng.next() % 200);
        std::thread::sleep(wait);
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let context = format!("kill {kills} after {wait:?}, seed {seed}");
        for line in &lines {
            if let Some(rest) = line.strip_prefix("backfill ") {
                if id.is_empty() {
                    id = rest.split(':').next().unwrap().trim().to_string();
                }
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [date, "run", run, "succeeded", ..] = words[..] {
                done.insert(date.to_string(), run.to_string());
            }
        }
        assert!(!id.is_empty(), "{context}: no backfill id in {lines:?}");
        assert!(
            !finished,
            "{context}: the backfill finished before 20 kills; give it more dates"
        );
        // Every date reported done is done in the store, by the run reported.
        let runs = json(&sb, &["runs", "--json", "--limit", "10000"]);
        let status: HashMap<&str, &str> = runs
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap(), r["status"].as_str().unwrap()))
            .collect();
        for (date, run) in &done {
            assert_eq!(
                status.get(run.as_str()).copied(),
                Some("succeeded"),
                "{context}: {date} was reported done by run {run}"
            );
        }
    }
    // Resumed to the end.
    let out = sb.run(&["backfill", "--resume", &id, "--max-active-runs", "64"]);
    assert_eq!(out.code, 0, "{out:?}");
    let runs = json(&sb, &["runs", "--json", "--limit", "10000"]);
    let mut per_date: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in runs.as_array().unwrap() {
        per_date
            .entry(r["logical_date"].as_str().unwrap().to_string())
            .or_default()
            .push((
                r["id"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            ));
    }
    assert_eq!(per_date.len(), DATES);
    for (date, runs) in &per_date {
        // An interrupted run was resumed in place, not replaced.
        assert_eq!(runs.len(), 1, "{date}: {runs:?}, seed {seed}");
        assert_eq!(runs[0].1, "succeeded", "{date}: {runs:?}, seed {seed}");
        if let Some(run) = done.get(date) {
            assert_eq!(
                &runs[0].0, run,
                "{date}: reported done by another run, seed {seed}"
            );
        }
    }
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "state check: {check:?}");
}
