//! `orchestrator gc`: old runs go, runs a rerun still needs stay, the catalog is untouched,
//! and the db gives the space back.

use serde_json::Value;

use crate::common::Sandbox;

fn runs(sb: &Sandbox) -> Vec<Value> {
    let out = sb.run(&["runs", "--json", "--limit", "100000"]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str::<Vec<Value>>(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn gc_deletes_old_runs_keeps_what_reruns_need_and_the_catalog() {
    let sb = Sandbox::new();
    let dir = sb.path("raw/dt=2025-04-09");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.csv"),
        "symbol,date,close\nNVDA,2025-04-09,101.5\nAMD,2025-04-09,90.25\n",
    )
    .unwrap();
    sb.write(
        "crawl.yaml",
        "name: crawl\ntasks:\n  crawl:\n    kind: crawl\n    path: raw\n    table: bars\n  count:\n    kind: sql\n    after: [crawl]\n    sql: SELECT count(*) FROM bars\n",
    );
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let today = out.run_id();
    // 300 copies of it, one a day further back; every third one failed.
    let gen = std::process::Command::new(env!("CARGO_BIN_EXE_gen-runs"))
        .args(["--state-dir", sb.state_dir().to_str().unwrap()])
        .args(["--run", &today, "--count", "300"])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{gen:?}");
    let before = runs(&sb);
    assert_eq!(before.len(), 301);

    let dry = sb.run(&["gc", "--older-than", "90d", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(runs(&sb).len(), 301, "--dry-run deleted something");

    let out = sb.run(&["gc", "--older-than", "90d"]);
    assert_eq!(out.code, 0, "{out:?}");
    let after = runs(&sb);
    // Copies 90..=300 days back are older than the cutoff (the 90th by a few seconds):
    // 211 runs, of which the 71 failed ones (every third) stay for a rerun.
    let old: Vec<&Value> = before
        .iter()
        .filter(|r| {
            let id = r["id"].as_str().unwrap();
            id.split("-g")
                .nth(1)
                .is_some_and(|n| n.parse::<u32>().unwrap() >= 90)
        })
        .collect();
    assert_eq!(old.len(), 211);
    let failed_old = old.iter().filter(|r| r["status"] == "failed").count();
    assert_eq!(failed_old, 71);
    assert_eq!(after.len(), 301 - 140, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("deleted 140 of 301 runs started before"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("kept 71 older runs not succeeded and not replaced"),
        "{out:?}"
    );
    let kept: std::collections::BTreeSet<&str> =
        after.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for r in &old {
        let id = r["id"].as_str().unwrap();
        if r["status"] == "failed" {
            assert!(kept.contains(id), "{id}, failed, a rerun needs it: deleted");
        } else {
            assert!(!kept.contains(id), "{id} should be gone");
        }
    }
    let gone = old.iter().find(|r| r["status"] == "succeeded").unwrap();
    let show = sb.run(&["show", gone["id"].as_str().unwrap()]);
    assert_eq!(show.code, 2, "{show:?}");
    // The newest runs are untouched...
    assert_eq!(sb.run(&["show", &today]).code, 0);
    // ...the catalog too, and the compacted store checks clean.
    let q = sb.run(&["query", "--json", "SELECT count(*) AS n FROM bars"]);
    assert_eq!(q.code, 0, "{q:?}");
    assert!(q.stdout.contains("\"n\":2"), "{q:?}");
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    // Sizes are reported, and the space came back.
    let sizes = out
        .stdout
        .lines()
        .find(|l| l.starts_with("state db: "))
        .unwrap_or_else(|| panic!("no sizes: {out:?}"));
    let parse = |s: &str| -> f64 {
        let (n, unit) = s.trim().split_once(' ').unwrap();
        let n: f64 = n.parse().unwrap();
        n * match unit {
            "GB" => 1e9,
            "MB" => 1e6,
            "KB" => 1e3,
            _ => 1.0,
        }
    };
    let (b, a) = sizes["state db: ".len()..].split_once(" before, ").unwrap();
    let (b, a) = (parse(b), parse(a.trim_end_matches(" after")));
    assert!(a < b, "{sizes}");
}

#[test]
fn gc_refuses_a_state_dir_another_process_owns() {
    let sb = Sandbox::new();
    sb.write(
        "slow.yaml",
        "name: slow\ntasks:\n  wait:\n    kind: shell\n    command: touch started; sleep 30\n",
    );
    let mut child = sb.spawn(&["run", "slow.yaml"]);
    sb.wait_for_file("started");
    let out = sb.run(&["gc", "--older-than", "1d"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("gc needs the state dir to itself"),
        "{out:?}"
    );
}

#[test]
fn an_age_older_than_the_calendar_deletes_nothing_and_does_not_panic() {
    let sb = Sandbox::new();
    sb.write("w.yaml", "name: w\ntasks:\n  a:\n    kind: noop\n");
    let out = sb.run(&["run", "w.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    for args in [
        &["gc", "--older-than", "99999999999d", "--dry-run"][..],
        &["gc", "--older-than", "99999999999d"][..],
    ] {
        let out = sb.run(args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
    }
    assert_eq!(runs(&sb).len(), 1);
}

#[test]
fn an_age_under_a_day_needs_force_and_m_is_refused_as_ambiguous() {
    let sb = Sandbox::new();
    sb.write("w.yaml", "name: w\ntasks:\n  a:\n    kind: noop\n");
    assert_eq!(sb.run(&["run", "w.yaml"]).code, 0);
    let out = sb.run(&["gc", "--older-than", "0d"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("use at least 1d") && out.stderr.contains("--force"),
        "{out:?}"
    );
    let out = sb.run(&["gc", "--older-than", "1m"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("`m` could mean minutes or months"),
        "{out:?}"
    );
    assert_eq!(runs(&sb).len(), 1, "nothing was deleted");
    let out = sb.run(&["gc", "--older-than", "0s", "--force", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
}
