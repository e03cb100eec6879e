//! A store written by the previous release opens, is migrated, and shows every run as
//! that release did (`tests/fixtures/store-v2`).

use std::process::Command;

use serde_json::Value;

use crate::common::Sandbox;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store-v2")
        .join(name)
}

#[test]
fn a_v2_store_is_migrated_on_open_and_shows_every_run_as_before() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state_dir()).unwrap();
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(fixture("db.tar.gz"))
        .arg("-C")
        .arg(sb.state_dir())
        .status()
        .unwrap();
    assert!(untar.success());
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();

    // The first command opens it for writing: the killed run is marked interrupted, and
    // the records are migrated.
    let out = sb.run(&["runs", "--json", "--limit", "100"]);
    assert_eq!(out.code, 0, "{out:?}");
    let runs: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut runs = runs.as_array().unwrap().clone();
    let mut want = expected["runs"].as_array().unwrap().clone();
    // The interrupted run's end is when it was found interrupted: not comparable.
    for r in runs.iter_mut().chain(want.iter_mut()) {
        if r["status"] == "interrupted" {
            r["ended_at"] = Value::Null;
        }
    }
    assert_eq!(runs, want);
    assert_eq!(runs.len(), 11);

    for (id, show) in expected["show"].as_object().unwrap() {
        let mut got = sb.show(id);
        let mut want = show.clone();
        if want["status"] == "interrupted" {
            for v in [&mut got, &mut want] {
                v["ended_at"] = Value::Null;
                for t in v["tasks"].as_array_mut().unwrap() {
                    t["ended_at"] = Value::Null;
                    for a in t["history"].as_array_mut().unwrap() {
                        a["ended_at"] = Value::Null;
                    }
                }
            }
        }
        assert_eq!(got, want, "show {id}");
    }

    // Every record reads (runs name their definitions by hash now) and the backfill
    // is intact. The fixture's tables name the directories of the machine that wrote it
    // (/tmp/fx/...), which this one need not have: those are the only problems allowed.
    let check = sb.run(&["state", "check"]);
    assert!(
        check
            .stdout
            .contains("ok: 11 runs, 36 task records, 35 attempts, 3 tables"),
        "{check:?}"
    );
    for line in check.stdout.lines().filter(|l| l.starts_with("problem:")) {
        assert!(
            line.starts_with("problem: table `")
                && (line.contains("does not exist") || line.contains("is not a Delta table")),
            "{check:?}"
        );
    }
    let backfills = sb.run(&["backfills", "--json"]);
    assert_eq!(backfills.code, 0, "{backfills:?}");
    assert!(backfills.stdout.contains("\"succeeded\""), "{backfills:?}");
}
