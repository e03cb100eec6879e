//! Published tables are Delta Lake tables: one version per publish, history, restore,
//! rerun of an undone publish, an independent reader (the Python `deltalake` package)
//! that sees exactly what `orchestrator query` sees, even mid-publish, a warehouse
//! published before tables were Delta converted with every row, compaction and retention,
//! and a warehouse on S3 (moto).

use std::path::PathBuf;

use serde_json::Value;

use crate::common::{task, Sandbox};
use crate::daily::{assert_matches_full_history, daily, landing};
use crate::data::bars;

fn json(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb.run(args);
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn count(sb: &Sandbox) -> u64 {
    json(
        sb,
        &["query", "--json", "SELECT count(*) AS n FROM stock_daily"],
    )[0]["n"]
        .as_u64()
        .unwrap()
}

fn history(sb: &Sandbox) -> Vec<Value> {
    json(sb, &["tables", "history", "stock_daily", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

/// Versions committed by `run`.
fn versions_of(history: &[Value], run: &str) -> Vec<u64> {
    history
        .iter()
        .filter(|v| v["run_id"] == run)
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

fn python() -> String {
    std::env::var("ORCHESTRATOR_PYTHON").unwrap_or_else(|_| {
        panic!("ORCHESTRATOR_PYTHON is not set: run the tests with scripts/test, which installs the Python `deltalake` package in its venv and sets it")
    })
}

/// Every row of the Delta table at `dir` as the Python `deltalake` package reads it,
/// sorted by (symbol, date), with its version.
pub(crate) fn read_with_python(dir: &std::path::Path) -> (u64, Vec<Value>) {
    let script = r#"
import json, sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
rows = t.to_pyarrow_table().to_pylist()
rows.sort(key=lambda r: (r["symbol"], r["date"]))
print(json.dumps({"version": t.version(), "rows": rows}, default=str), flush=True)
# deltalake's runtime threads may abort the interpreter's normal exit
# ("terminate called without an active exception"); the answer is out by now.
import os; os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["version"].as_u64().unwrap(),
        v["rows"].as_array().unwrap().clone(),
    )
}

/// The two readers agree on every row and column (floats to the last bits).
pub(crate) fn assert_same_rows(python: &[Value], ours: &[Value]) {
    assert_eq!(python.len(), ours.len(), "row counts differ");
    for (p, o) in python.iter().zip(ours) {
        let (p, o) = (p.as_object().unwrap(), o.as_object().unwrap());
        assert_eq!(
            p.keys().collect::<Vec<_>>(),
            o.keys().collect::<Vec<_>>(),
            "columns differ"
        );
        for (col, pv) in p {
            let ov = &o[col];
            let same = match (pv.as_f64(), ov.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0),
                _ => pv == ov,
            };
            assert!(same, "{col}: python reads {pv}, orchestrator {ov} ({o:?})");
        }
    }
}

pub(crate) fn ours(sb: &Sandbox) -> Vec<Value> {
    json(
        sb,
        &[
            "query",
            "--json",
            "SELECT * FROM stock_daily ORDER BY symbol, date",
        ],
    )
    .as_array()
    .unwrap()
    .clone()
}

fn run_ids_by_date(sb: &Sandbox) -> std::collections::BTreeMap<String, String> {
    json(sb, &["runs", "--json", "--limit", "100"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["logical_date"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn each_publish_is_one_version_a_restore_undoes_exactly_one_run_and_its_rerun_publishes_it_once() {
    let sb = Sandbox::new();
    let land = landing(&sb);
    let out = sb.run(&[
        "backfill",
        &daily(),
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-06",
        "--param",
        &land,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let runs = run_ids_by_date(&sb);
    assert_eq!(runs.len(), 5);
    let h = history(&sb);
    assert_eq!(h.len(), 5, "{h:?}");
    let mut seen = Vec::new();
    for (date, run) in &runs {
        let v = versions_of(&h, run);
        assert_eq!(v.len(), 1, "{date}: one version per run: {h:?}");
        seen.extend(v);
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    assert!(h.iter().all(|v| v["rows_added"] == 10), "{h:?}");
    let tables = sb.run(&["tables"]);
    assert!(
        tables
            .stdout
            .lines()
            .any(|l| l.starts_with("stock_daily ") && l.contains(" delta ") && l.contains(" 4 ")),
        "`tables` shows the format and version: {tables:?}"
    );

    // A replayed publish of the same run commits nothing.
    let (last_date, last) = runs
        .iter()
        .find(|(_, run)| versions_of(&h, run) == vec![4])
        .map(|(d, r)| (d.clone(), r.clone()))
        .unwrap();
    let out = sb.run(&["rerun", &last, "--from", "publish"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(task(&sb.show(&last), "publish")["outputs"]["inserted"], 0);
    let h = history(&sb);
    assert_eq!(h.len(), 5, "{h:?}");
    assert_eq!(versions_of(&h, &last), vec![4]);

    // Another reader sees exactly what we see.
    let dir = sb.state_dir().join("warehouse/stock_daily");
    let (version, rows) = read_with_python(&dir);
    assert_eq!(version, 4);
    assert_eq!(rows.len(), 50);
    assert_same_rows(&rows, &ours(&sb));

    // Without --yes, restore says what it would undo and changes nothing.
    let out = sb.run(&["tables", "restore", "stock_daily", "--before-run", &last]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("undoes 1 publish (10 rows)")
            && out
                .stdout
                .contains(&format!("version 4: run {last} task publish, 10 rows"))
            && out.stdout.contains("nothing was changed; add --yes"),
        "{out:?}"
    );
    assert_eq!(history(&sb).len(), 5);
    assert_eq!(count(&sb), 50);

    let out = sb.run(&[
        "tables",
        "restore",
        "stock_daily",
        "--before-run",
        &last,
        "--yes",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("restored `stock_daily` to version 3, committed as version 5"),
        "{out:?}"
    );
    assert_eq!(count(&sb), 40);
    let day = json(
        &sb,
        &[
            "query",
            "--json",
            &format!("SELECT count(*) AS n FROM stock_daily WHERE date = DATE '{last_date}'"),
        ],
    );
    assert_eq!(day[0]["n"], 0, "exactly that run's rows are gone");
    let (version, rows) = read_with_python(&dir);
    assert_eq!(version, 5);
    assert_same_rows(&rows, &ours(&sb));
    let h = history(&sb);
    assert_eq!(h[0]["operation"], "RESTORE");
    assert_eq!(h[0]["restored_to"], 3);

    // Time travel: by version, and by the time a version was committed.
    let n = |sql: &str| {
        json(&sb, &["query", "--json", sql])[0]["n"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(n("SELECT count(*) AS n FROM as_of('stock_daily', 4)"), 50);
    assert_eq!(n("SELECT count(*) AS n FROM as_of('stock_daily', 0)"), 10);
    let v2_time = h.iter().find(|v| v["version"] == 2).unwrap()["time"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        n(&format!(
            "SELECT count(*) AS n FROM as_of('stock_daily', '{v2_time}')"
        )),
        30
    );
    let out = sb.run(&["query", "SELECT * FROM as_of('stock_daily', 9)"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("table `stock_daily` has no version 9: its versions are 0 to 5"),
        "{out:?}"
    );
    let out = sb.run(&["query", "SELECT * FROM as_of('stock_daily', '2001-01-01')"]);
    assert!(
        out.stderr
            .contains("no version committed at or before 2001-01-01 00:00:00 UTC"),
        "{out:?}"
    );
    let show = sb.run(&["show", &last]);
    assert!(
        show.stdout
            .contains("publish rolled back: `stock_daily` version 4 (10 rows)"),
        "{show:?}"
    );
    assert_eq!(sb.show(&last)["rolled_back"][0]["table"], "stock_daily");
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");

    // The undone date publishes again, once.
    let out = sb.run(&["rerun", &last, "--from", "publish"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(task(&sb.show(&last), "publish")["outputs"]["inserted"], 10);
    let out = sb.run(&["rerun", &last, "--from", "publish"]);
    assert_eq!(out.code, 0, "{out:?}");
    let h = history(&sb);
    assert_eq!(versions_of(&h, &last), vec![6, 4], "{h:?}");
    assert_eq!(count(&sb), 50);
    assert_matches_full_history(&sb, "2026-03-02", "2026-03-06");
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn a_reader_during_a_publish_sees_the_old_version_whole_then_the_new_one() {
    let sb = Sandbox::new();
    let land = landing(&sb);
    let out = sb.run(&["run", &daily(), "--param", &land, "--date", "2026-03-02"]);
    assert_eq!(out.code, 0, "{out:?}");
    let dir = sb.state_dir().join("warehouse/stock_daily");
    let before = read_with_python(&dir);

    let hook = sb.path("hook");
    std::fs::create_dir(&hook).unwrap();
    let mut cmd = sb.command(&["run", &daily(), "--param", &land, "--date", "2026-03-03"]);
    cmd.env(
        "ORCHESTRATOR_TEST_PAUSE",
        format!("publish:after-files:{}", hook.display()),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    sb.wait_for_file("hook/paused");
    // The new rows' files are on disk, the commit is not.
    assert_eq!(read_with_python(&dir), before);
    std::fs::write(hook.join("resume"), "").unwrap();
    assert!(child.wait().unwrap().success());
    let (version, rows) = read_with_python(&dir);
    assert_eq!((version, rows.len()), (before.0 + 1, before.1.len() + 10));
}

#[test]
fn a_warehouse_published_before_tables_were_delta_is_converted_with_every_row() {
    let sb = Sandbox::new();
    let land = landing(&sb);
    let out = sb.run(&["run", &daily(), "--param", &land, "--date", "2026-03-02"]);
    assert_eq!(out.code, 0, "{out:?}");
    // What the previous release left: the same Parquet files, no log, and a catalog
    // that calls the table Parquet.
    let dir: PathBuf = sb.state_dir().join("warehouse/stock_daily");
    std::fs::remove_dir_all(dir.join("_delta_log")).unwrap();
    {
        use orchestrator_state::{Store, Write};
        let (store, _) = Store::open(&sb.state_dir(), "test").unwrap();
        let mut t = store.table("stock_daily").unwrap().unwrap();
        t.format = "parquet".into();
        t.version = None;
        store.commit(&[Write::Table(t)]).unwrap();
    }
    assert_eq!(count(&sb), 10, "the old layout reads as before");

    let out = sb.run(&["run", &daily(), "--param", &land, "--date", "2026-03-03"]);
    assert_eq!(out.code, 0, "{out:?}");
    let h = history(&sb);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1]["operation"], "CREATE TABLE", "{h:?}");
    assert_eq!(h[1]["rows_added"], 10, "{h:?}");
    assert_eq!(h[0]["rows_added"], 10, "{h:?}");
    assert_eq!(count(&sb), 20);
    assert_matches_full_history(&sb, "2026-03-02", "2026-03-03");
    let (_, rows) = read_with_python(&dir);
    assert_same_rows(&rows, &ours(&sb));
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

/// The table's live data files, as the Python `deltalake` package lists them.
fn files_with_python(dir: &std::path::Path) -> usize {
    let script = "import sys\nfrom deltalake import DeltaTable\nprint(len(DeltaTable(sys.argv[1]).file_uris()), flush=True)\nimport os; os._exit(0)\n";
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn optimize_leaves_the_same_rows_in_fewer_files_and_the_version_before_still_reads() {
    let sb = Sandbox::new();
    let land = landing(&sb);
    let out = sb.run(&[
        "backfill",
        &daily(),
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-06",
        "--param",
        &land,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let dir = sb.state_dir().join("warehouse/stock_daily");
    let files = files_with_python(&dir);
    assert!(files >= 5, "a file per publish at least: {files}");
    let before = ours(&sb);

    let out = sb.run(&["tables", "optimize", "stock_daily"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "compacted `stock_daily`: {files} files into 1, committed as version 5"
        )),
        "{out:?}"
    );
    assert_eq!(files_with_python(&dir), 1);
    assert_eq!(ours(&sb), before, "the same rows");
    let (version, rows) = read_with_python(&dir);
    assert_eq!(version, 5);
    assert_same_rows(&rows, &before);
    let as_of = json(
        &sb,
        &[
            "query",
            "--json",
            "SELECT * FROM as_of('stock_daily', 4) ORDER BY symbol, date",
        ],
    );
    assert_eq!(
        as_of.as_array().unwrap(),
        &before,
        "the version before reads"
    );
    assert_eq!(history(&sb)[0]["operation"], "OPTIMIZE");
    assert!(sb
        .run(&["tables"])
        .stdout
        .lines()
        .any(|l| l.starts_with("stock_daily ") && l.contains(" 5 ")));
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    let out = sb.run(&["tables", "optimize", "stock_daily"]);
    assert!(out.stdout.contains("compact already (1 file)"), "{out:?}");

    // Vacuum keeps at least a week of history, and deletes nothing that recent.
    let out = sb.run(&["tables", "vacuum", "stock_daily", "--older-than", "1d"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("under the safe minimum of 7d"),
        "{out:?}"
    );
    let out = sb.run(&[
        "tables",
        "vacuum",
        "stock_daily",
        "--older-than",
        "7d",
        "--dry-run",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("would delete 0 files"), "{out:?}");

    // The next publish appends to the compacted table; the replay guard still holds.
    let out = sb.run(&["run", &daily(), "--param", &land, "--date", "2026-03-09"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(count(&sb), 60);
    assert_matches_full_history(&sb, "2026-03-02", "2026-03-09");
}

#[test]
fn a_maintenance_policy_compacts_after_every_n_publishes() {
    let sb = Sandbox::new();
    let land = landing(&sb);
    let text = std::fs::read_to_string(daily()).unwrap();
    assert!(text.contains("optimize_every: 20"), "daily.yaml's policy");
    let wf = sb.write(
        "daily.yaml",
        &text.replace("optimize_every: 20", "optimize_every: 2"),
    );
    // The copy is not beside the bundled sample: say where it is.
    let sample = PathBuf::from(daily())
        .parent()
        .unwrap()
        .join("../data/sample/alpha_vantage");
    let out = sb.run(&[
        "backfill",
        &wf.display().to_string(),
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-06",
        "--param",
        &land,
        "--param",
        &format!("sample={}", sample.display()),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let h = history(&sb);
    let ops: Vec<&str> = h
        .iter()
        .rev()
        .map(|v| v["operation"].as_str().unwrap())
        .collect();
    // Five publishes; a compaction after the 2nd and the 4th.
    assert_eq!(
        ops.iter().filter(|o| **o == "OPTIMIZE").count(),
        2,
        "{ops:?}"
    );
    assert_eq!(ops.last(), Some(&"WRITE"), "{ops:?}");
    assert_eq!(count(&sb), 50);
    let dir = sb.state_dir().join("warehouse/stock_daily");
    assert_eq!(
        files_with_python(&dir),
        2,
        "one compacted file and the 5th day's"
    );
    assert_matches_full_history(&sb, "2026-03-02", "2026-03-06");
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn a_new_column_is_refused_unless_the_publish_says_schema_evolve() {
    let sb = Sandbox::new();
    let workflow = |columns: &str, schema: &str| {
        format!(
            r#"
name: evolve
tasks:
  crawl:
    kind: crawl
    path: raw
    table: bars
  stage:
    kind: sql
    after: [crawl]
    sql: DROP TABLE IF EXISTS staged; CREATE TABLE staged AS SELECT {columns} FROM bars
  publish:
    kind: publish
    after: [stage]
    from: staged
    to: prod
    key: [symbol, date]
{schema}
"#
        )
    };
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000"],
    );
    sb.write("wf.yaml", &workflow("symbol, date, close", ""));
    assert_eq!(sb.run(&["run", "wf.yaml"]).code, 0);

    bars(
        &sb,
        "dt=2025-04-10",
        "b.csv",
        &["NVDA,2025-04-10,102.5,1100"],
    );
    sb.write("wf.yaml", &workflow("symbol, date, close, volume", ""));
    let out = sb.run(&["run", "wf.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = task(&sb.show(&out.run_id()), "publish")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("column `volume` of `staged` is not in `prod`")
            && error.contains("set `schema: evolve` on the publish task"),
        "{error}"
    );
    let prod = |sb: &Sandbox| json(sb, &["query", "--json", "SELECT * FROM prod ORDER BY date"]);
    assert_eq!(prod(&sb).as_array().unwrap().len(), 1);

    sb.write(
        "wf.yaml",
        &workflow("symbol, date, close, volume", "    schema: evolve"),
    );
    let out = sb.run(&["run", "wf.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = prod(&sb);
    assert_eq!(rows[0]["volume"], Value::Null, "{rows}");
    assert_eq!(rows[1]["volume"], 1100, "{rows}");
    let dir = sb.state_dir().join("warehouse/prod");
    let (version, python) = {
        let script = "import sys, json\nfrom deltalake import DeltaTable\nt = DeltaTable(sys.argv[1])\nrows = sorted(t.to_pyarrow_table().to_pylist(), key=lambda r: r['date'])\nprint(json.dumps({'version': t.version(), 'rows': rows}, default=str), flush=True)\nimport os; os._exit(0)\n";
        let out = std::process::Command::new(python())
            .args(["-c", script])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["version"].as_u64().unwrap(), v["rows"].clone())
    };
    assert_eq!(version, 1);
    assert_eq!(python[0]["volume"], Value::Null, "{python}");
    assert_eq!(python[1]["volume"], 1100, "{python}");
    let tables = sb.run(&["tables", "--json"]);
    assert!(tables.stdout.contains("\"volume\""), "{tables:?}");
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

/// `warehouse: s3://...` with the local backend: DataFusion computes, the published
/// table is a Delta table on S3 (moto), one commit per publish, read by Python
/// `deltalake` from S3 with the same rows; another state dir is refused the warehouse.
#[test]
fn a_warehouse_on_s3_holds_the_published_delta_table_and_refuses_a_second_writer() {
    let moto = crate::common::Moto::start();
    moto.bucket("lake");
    let env: Vec<(&str, String)> = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sb = Sandbox::new();
    let land = landing(&sb);
    let text = std::fs::read_to_string(daily()).unwrap();
    assert!(text.contains("timezone: UTC\n"));
    let wf = sb.write(
        "daily.yaml",
        &text.replace(
            "timezone: UTC\n",
            "timezone: UTC\nwarehouse: s3://lake/wh\n",
        ),
    );
    let sample = PathBuf::from(daily())
        .parent()
        .unwrap()
        .join("../data/sample/alpha_vantage");
    let sample = format!("sample={}", sample.display());
    let wf = wf.display().to_string();
    let backfill = |sb: &Sandbox, from: &str, to: &str| {
        sb.run_with_env(
            &[
                "backfill", &wf, "--from", from, "--to", to, "--param", &land, "--param", &sample,
            ],
            &env,
        )
    };
    let out = backfill(&sb, "2026-03-02", "2026-03-04");
    assert_eq!(out.code, 0, "{out:?}");

    let tables = sb.run_with_env(&["tables", "--json"], &env);
    let tables: Value = serde_json::from_str(&tables.stdout).unwrap();
    let t = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "stock_daily")
        .unwrap()
        .clone();
    assert_eq!(t["location"], "s3://lake/wh/stock_daily", "{t}");
    assert_eq!(t["format"], "delta", "{t}");
    assert_eq!(t["version"], 2, "{t}");
    // The work tables stay in the local warehouse.
    assert!(sb.state_dir().join("warehouse/stock_daily_tmp").is_dir());
    let log: Vec<String> = moto
        .keys("lake", "wh/stock_daily/_delta_log/")
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    assert_eq!(log.len(), 3, "one commit per publish: {log:?}");
    assert_eq!(moto.keys("lake", "wh/.orchestrator-owner").len(), 1);

    let h: Vec<Value> = {
        let out = sb.run_with_env(&["tables", "history", "stock_daily", "--json"], &env);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(h.len(), 3, "{h:?}");
    assert!(h.iter().all(|v| v["rows_added"] == 10), "{h:?}");

    let ours: Vec<Value> = {
        let out = sb.run_with_env(
            &[
                "query",
                "--json",
                "SELECT * FROM stock_daily ORDER BY symbol, date",
            ],
            &env,
        );
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(ours.len(), 30);
    let script = r#"
import json, sys
from deltalake import DeltaTable
opts = {"AWS_ENDPOINT_URL": sys.argv[2], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
t = DeltaTable(sys.argv[1], storage_options=opts)
rows = t.to_pyarrow_table().to_pylist()
rows.sort(key=lambda r: (r["symbol"], r["date"]))
print(json.dumps({"version": t.version(), "rows": rows}, default=str), flush=True)
import os; os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, "s3://lake/wh/stock_daily", &moto.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 2);
    assert_same_rows(v["rows"].as_array().unwrap(), &ours);

    // Another state dir writing to the same warehouse is refused before anything runs.
    let other = Sandbox::new();
    let out = other.run_with_env(
        &[
            "run",
            &wf,
            "--date",
            "2026-03-05",
            "--param",
            &land,
            "--param",
            &sample,
        ],
        &env,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("s3://lake/wh") && out.stderr.contains("belongs to state dir"),
        "{out:?}"
    );
    let log_after = moto
        .keys("lake", "wh/stock_daily/_delta_log/")
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .count();
    assert_eq!(log_after, 3, "the refused run committed nothing");

    // The owner goes on publishing; compaction, time travel and restore work on S3.
    let out = backfill(&sb, "2026-03-05", "2026-03-05");
    assert_eq!(out.code, 0, "{out:?}");
    let n = |sql: &str| -> u64 {
        let out = sb.run_with_env(&["query", "--json", sql], &env);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0]["n"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(n("SELECT count(*) AS n FROM stock_daily"), 40);
    let out = sb.run_with_env(&["tables", "optimize", "stock_daily"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("committed as version 4"), "{out:?}");
    assert_eq!(n("SELECT count(*) AS n FROM stock_daily"), 40);
    assert_eq!(n("SELECT count(*) AS n FROM as_of('stock_daily', 2)"), 30);
    let out = sb.run_with_env(
        &[
            "tables",
            "restore",
            "stock_daily",
            "--version",
            "2",
            "--yes",
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(n("SELECT count(*) AS n FROM stock_daily"), 30);
    let check = sb.run_with_env(&["state", "check"], &env);
    assert_eq!(check.code, 0, "{check:?}");
}
