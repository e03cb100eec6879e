//! `orchestrator backfill`: the logical dates of a range, `--reprocess`, a backfill killed
//! halfway and resumed, and `backfills`. (The 30-day backfill of the reference pipeline
//! against the full-history computation is in `daily.rs`; through the daemon, in
//! `daemon.rs`.)

use std::path::PathBuf;

use serde_json::Value;

use crate::common::Sandbox;

/// Appends each run's date to `dates.txt`; weekdays, like the reference pipeline.
const DATES: &str = "name: dates\nschedule: \"cron(0 22 ? * MON-FRI *)\"\ntimezone: UTC\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ run.date }} >> dates.txt\"\n";

fn runs(sb: &Sandbox) -> Vec<Value> {
    let out = sb.run(&["runs", "--json", "--limit", "1000"]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The dates lines of a backfill's output: `DATE  rest`.
fn date_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.len() > 12 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b' ')
        .map(|l| (l[..10].to_string(), l[10..].trim().to_string()))
        .collect()
}

#[test]
fn a_range_across_a_weekend_and_a_holiday_has_the_right_dates_both_ends_included() {
    let sb = Sandbox::new();
    sb.write("dates.yaml", DATES);
    // Thu 2025-07-03 .. Mon 2025-07-07: the weekend is not a schedule date; July 4th
    // (a Friday holiday) is, and its run ends early on its own.
    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2025-07-03",
        "--to",
        "2025-07-07",
        "--dry-run",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let dates: Vec<String> = date_lines(&out.stdout)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(dates, ["2025-07-03", "2025-07-04", "2025-07-07"], "{out:?}");
    assert!(
        out.stdout.contains("dry run: nothing is run or recorded"),
        "{out:?}"
    );
    assert!(runs(&sb).is_empty(), "a dry run runs nothing");
    assert!(!sb.path("dates.txt").exists());

    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2025-07-03",
        "--to",
        "2025-07-07",
        "--calendar",
        "daily",
        "--backwards",
        "--dry-run",
    ]);
    let dates: Vec<String> = date_lines(&out.stdout)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(
        dates,
        [
            "2025-07-07",
            "2025-07-06",
            "2025-07-05",
            "2025-07-04",
            "2025-07-03"
        ],
        "{out:?}"
    );

    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2025-07-03",
        "--to",
        "2025-07-07",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.read("dates.txt"), "2025-07-03\n2025-07-04\n2025-07-07\n");
    let all = runs(&sb);
    assert_eq!(all.len(), 3);
    let bfs = sb.run(&["backfills", "--json"]);
    let list: Value = serde_json::from_str(&bfs.stdout).unwrap();
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(list[0]["from"], "2025-07-03");
    assert_eq!(list[0]["dates"].as_array().unwrap().len(), 3);

    // Bad ranges are refused before anything runs.
    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2025-07-08",
        "--to",
        "2025-07-07",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("--from 2025-07-08 is after --to 2025-07-07"),
        "{out:?}"
    );
    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2025-07-03",
        "--to",
        "2025-07-07",
        "--reprocess",
        "some",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("use `none`, `failed` or `all`"),
        "{out:?}"
    );
}

#[test]
fn reprocess_none_skips_succeeded_dates_failed_resumes_and_all_runs_again() {
    let sb = Sandbox::new();
    // Fails on 2026-03-04 until `fixed` exists.
    sb.write(
        "flaky.yaml",
        "name: flaky\ntasks:\n  a:\n    kind: shell\n    command: \"if [ {{ run.date }} = 2026-03-04 ] && [ ! -e fixed ]; then exit 3; fi; echo {{ run.date }} >> dates.txt\"\n",
    );
    let out = sb.run(&[
        "backfill",
        "flaky.yaml",
        "--from",
        "2026-03-03",
        "--to",
        "2026-03-05",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("backfill bf-") && out.stdout.contains(" failed: "),
        "{out:?}"
    );
    assert_eq!(sb.read("dates.txt"), "2026-03-03\n2026-03-05\n");

    // `none`: every date with a run is left alone, and says why.
    let out = sb.run(&[
        "backfill",
        "flaky.yaml",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-05",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: std::collections::BTreeMap<String, String> =
        date_lines(&out.stdout).into_iter().collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    assert!(lines["2026-03-02"].contains("succeeded"), "{lines:?}");
    assert!(
        lines["2026-03-03"].contains("skipped")
            && lines["2026-03-03"].contains("already succeeded in run"),
        "{lines:?}"
    );
    assert!(
        lines["2026-03-04"].contains("`--reprocess failed` resumes it"),
        "{lines:?}"
    );
    assert_eq!(sb.read("dates.txt"), "2026-03-03\n2026-03-05\n2026-03-02\n");

    // `failed`: the failed date's run is resumed in place, nothing else runs.
    std::fs::write(sb.path("fixed"), "").unwrap();
    let before = runs(&sb).len();
    let out = sb.run(&[
        "backfill",
        "flaky.yaml",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-05",
        "--reprocess",
        "failed",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(runs(&sb).len(), before, "resumed, not a new run");
    assert_eq!(
        sb.read("dates.txt"),
        "2026-03-03\n2026-03-05\n2026-03-02\n2026-03-04\n"
    );

    // `all`: a new run for every date.
    let out = sb.run(&[
        "backfill",
        "flaky.yaml",
        "--from",
        "2026-03-04",
        "--to",
        "2026-03-05",
        "--reprocess",
        "all",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(runs(&sb).len(), before + 2);
}

fn daily() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/daily.yaml")
        .display()
        .to_string()
}

#[test]
fn a_backfill_killed_halfway_and_resumed_completes_without_duplicate_runs_or_rows() {
    let sb = Sandbox::new();
    let landing = format!("landing={}", sb.path("landing").display());
    let args = |from: &str| {
        vec![
            "backfill".to_string(),
            daily(),
            "--from".into(),
            from.into(),
            "--to".into(),
            "2026-03-06".into(),
            "--param".into(),
            landing.clone(),
        ]
    };
    // Two dates done first: the killed backfill skips them, then stops in the middle of
    // its third date's publish.
    let a = args("2026-03-04");
    let out = sb.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{out:?}");
    let hook = sb.path("hook");
    std::fs::create_dir(&hook).unwrap();
    let a = args("2026-03-02");
    let mut cmd = sb.command(&a.iter().map(String::as_str).collect::<Vec<_>>());
    cmd.env(
        "ORCHESTRATOR_TEST_PAUSE",
        format!("publish:after-files:{}", hook.display()),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    sb.wait_for_file("hook/paused");
    child.kill().unwrap();
    child.wait().unwrap();

    let list: Value = serde_json::from_str(&sb.run(&["backfills", "--json"]).stdout).unwrap();
    let killed = &list[0];
    assert_eq!(killed["from"], "2026-03-02");
    let id = killed["id"].as_str().unwrap().to_string();
    let out = sb.run(&["backfill", "--resume", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("backfill {id} succeeded")),
        "{out:?}"
    );

    // One run per date, 2026-03-02 .. 03-06 (weekdays), each succeeded.
    let mut per_date: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in runs(&sb) {
        per_date
            .entry(r["logical_date"].as_str().unwrap().to_string())
            .or_default()
            .push(r["status"].as_str().unwrap().to_string());
    }
    let want: Vec<String> = [
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
        "2026-03-06",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(per_date.keys().cloned().collect::<Vec<_>>(), want);
    for (date, statuses) in &per_date {
        assert_eq!(statuses, &["succeeded"], "{date}: {per_date:?}");
    }
    let q = sb.run(&[
        "query",
        "--json",
        "SELECT count(*) AS n, count(DISTINCT symbol || CAST(date AS VARCHAR)) AS k FROM stock_daily",
    ]);
    let q: Value = serde_json::from_str(&q.stdout).unwrap();
    assert_eq!(q[0]["n"], 50, "{q}");
    assert_eq!(q[0]["k"], 50, "{q}");
}

#[test]
fn max_active_runs_runs_dates_at_once_within_the_workflows_limit() {
    let sb = Sandbox::new();
    // Each run waits until all three have started: run one at a time, they would fail.
    let barrier = "touch started-{{ run.date }}; i=0; while [ $(ls started-* | wc -l) -lt 3 ]; do i=$((i+1)); [ $i -gt 400 ] && exit 1; sleep 0.05; done";
    sb.write(
        "par.yaml",
        &format!("name: par\nmax_active_runs: 3\ntasks:\n  a:\n    kind: shell\n    command: \"{barrier}\"\n"),
    );
    let out = sb.run(&[
        "backfill",
        "par.yaml",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-03",
        "--max-active-runs",
        "3",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("3 at a time"), "{out:?}");
    assert!(out.stdout.contains("succeeded: 3 succeeded"), "{out:?}");

    // Without `max_active_runs:` in the workflow, one at a time, and it says so.
    sb.write("one.yaml", "name: one\ntasks:\n  a:\n    kind: noop\n");
    let out = sb.run(&[
        "backfill",
        "one.yaml",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-03",
        "--max-active-runs",
        "3",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("1 at a time"), "{out:?}");
    assert!(
        out.stderr.contains("workflow `one` allows 1 active run(s) at once (`max_active_runs:`); running 1 at a time, not 3"),
        "{out:?}"
    );
}

#[test]
fn quiet_prints_the_header_and_the_summary_only() {
    let sb = Sandbox::new();
    sb.write("dates.yaml", DATES);
    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2025-07-07",
        "--to",
        "2025-07-09",
        "-q",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(date_lines(&out.stdout).is_empty(), "{out:?}");
    assert!(out.stdout.contains("succeeded: 3 succeeded"), "{out:?}");
    assert_eq!(runs(&sb).len(), 3);
}

#[test]
fn backfills_list_newest_first_even_within_one_second() {
    let sb = Sandbox::new();
    sb.write("dates.yaml", DATES);
    // Ten backfills in quick succession: several share a second.
    let mut ids = Vec::new();
    for _ in 0..10 {
        let out = sb.run(&[
            "backfill",
            "dates.yaml",
            "--from",
            "2025-07-07",
            "--to",
            "2025-07-07",
            "-q",
            "--reprocess",
            "all",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        let list: Value = serde_json::from_str(&sb.run(&["backfills", "--json"]).stdout).unwrap();
        ids.push(list[0]["id"].as_str().unwrap().to_string());
    }
    // Each was the newest when it was listed, and they are distinct.
    let list: Value = serde_json::from_str(&sb.run(&["backfills", "--json"]).stdout).unwrap();
    let listed: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
}

#[test]
fn a_failed_backfill_whose_runs_were_rerun_to_success_is_listed_succeeded() {
    let sb = Sandbox::new();
    sb.write(
        "d.yaml",
        "name: d\nschedule: \"cron(0 22 ? * MON-FRI *)\"\ntasks:\n  a:\n    kind: shell\n    command: \"test -f ok\"\n",
    );
    let out = sb.run(&[
        "backfill",
        "d.yaml",
        "--from",
        "2026-05-11",
        "--to",
        "2026-05-12",
        "-q",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    sb.write("ok", "");
    // As its summary suggests: rerun each failed run.
    for r in runs(&sb) {
        let out = sb.run(&["rerun", r["id"].as_str().unwrap(), "-q"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let list: Value = serde_json::from_str(&sb.run(&["backfills", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["status"], "succeeded", "{list:#}");
    let id = list[0]["id"].as_str().unwrap();
    let out = sb.run(&["backfill", "--resume", id]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("has finished"), "{out:?}");
}
