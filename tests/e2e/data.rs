//! The embedded data plane: crawl, the catalog, `query` and `tables`.

use serde_json::Value;

use crate::common::{task, Sandbox};

const CRAWL: &str =
    "name: crawl\ntasks:\n  crawl:\n    kind: crawl\n    path: raw\n    table: bars\n";

pub(crate) fn bars(sb: &Sandbox, partition: &str, file: &str, rows: &[&str]) {
    let dir = sb.path(&format!("raw/{partition}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from("symbol,date,close,volume\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(dir.join(file), text).unwrap();
}

fn query(sb: &Sandbox, sql: &str) -> Value {
    let out = sb.run(&["query", "--json", sql]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn crawl_registers_new_partitions_and_query_reads_them() {
    let sb = Sandbox::new();
    sb.write("crawl.yaml", CRAWL);
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000", "AMD,2025-04-09,90.25,2000"],
    );
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    let outputs = &task(&show, "crawl")["outputs"];
    assert_eq!(
        outputs["new_partitions"],
        serde_json::json!(["dt=2025-04-09"])
    );
    assert_eq!(outputs["row_count"], 2);

    bars(&sb, "dt=2025-04-10", "a.csv", &["NVDA,2025-04-10,103,1500"]);
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    let outputs = &task(&show, "crawl")["outputs"];
    assert_eq!(
        outputs["new_partitions"],
        serde_json::json!(["dt=2025-04-10"])
    );
    assert_eq!(outputs["new_files"], 1);
    assert_eq!(outputs["files_seen"], 2);

    let rows = query(
        &sb,
        "SELECT symbol, date, close, volume, dt FROM bars ORDER BY dt, symbol",
    );
    assert_eq!(
        rows,
        serde_json::json!([
            {"symbol": "AMD", "date": "2025-04-09", "close": 90.25, "volume": 2000, "dt": "2025-04-09"},
            {"symbol": "NVDA", "date": "2025-04-09", "close": 101.5, "volume": 1000, "dt": "2025-04-09"},
            {"symbol": "NVDA", "date": "2025-04-10", "close": 103.0, "volume": 1500, "dt": "2025-04-10"},
        ])
    );

    let tables: Value = serde_json::from_str(&sb.run(&["tables", "--json"]).stdout).unwrap();
    assert_eq!(tables[0]["name"], "bars");
    assert_eq!(
        tables[0]["partitions"],
        serde_json::json!(["dt=2025-04-09", "dt=2025-04-10"])
    );
    assert_eq!(tables[0]["row_count"], 3);
    let cols: Vec<(&str, &str)> = tables[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["data_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cols,
        [
            ("symbol", "Utf8"),
            ("date", "Date32"),
            ("close", "Float64"),
            ("volume", "Int64")
        ]
    );
}

#[test]
fn a_changed_column_type_fails_the_crawl_naming_file_and_column() {
    let sb = Sandbox::new();
    sb.write("crawl.yaml", CRAWL);
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000"],
    );
    assert_eq!(sb.run(&["run", "crawl.yaml"]).code, 0);
    bars(&sb, "dt=2025-04-10", "a.csv", &["NVDA,2025-04-10,n/a,1000"]);
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let file = sb.path("raw/dt=2025-04-10/a.csv");
    let want = format!(
        "column `close` in {} is Utf8, but table `bars` has it as Float64; fix the file, or drop the table and crawl again",
        file.display()
    );
    assert!(out.stdout.contains(&want), "{out:?}");
    // The catalog still describes the last good crawl.
    let tables: Value = serde_json::from_str(&sb.run(&["tables", "--json"]).stdout).unwrap();
    assert_eq!(
        tables[0]["partitions"],
        serde_json::json!(["dt=2025-04-09"])
    );
}

#[test]
fn an_empty_or_missing_directory_is_an_error_not_an_empty_table() {
    let sb = Sandbox::new();
    sb.write("crawl.yaml", CRAWL);
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("cannot read directory"), "{out:?}");
    std::fs::create_dir_all(sb.path("raw/dt=2025-04-09")).unwrap();
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "has no .csv, .json or .parquet files; an empty directory is not an empty table"
        ),
        "{out:?}"
    );
    assert!(sb.run(&["tables"]).stdout.starts_with("no tables yet"));
}

#[test]
fn query_is_read_only() {
    let sb = Sandbox::new();
    sb.write("crawl.yaml", CRAWL);
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000"],
    );
    assert_eq!(sb.run(&["run", "crawl.yaml"]).code, 0);
    let out = sb.run(&["query", "DROP TABLE bars"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("`orchestrator query` is read-only"),
        "{out:?}"
    );
    let out = sb.run(&["query", "SELECT nope FROM bars"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("error: unknown column `nope`"),
        "{out:?}"
    );
    // DataFusion's real messages, made actionable.
    let out = sb.run(&["query", "SELECT clse FROM bars"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("unknown column `clse`; did you mean `close`?"),
        "{out:?}"
    );
    let out = sb.run(&["query", "SELECT * FROM bras"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("unknown table `bras`; did you mean `bars`?"),
        "{out:?}"
    );
    let out = sb.run(&["query", "SELECT count(* FROM bars"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("SQL syntax error: Expected: ), found: FROM (line 1, column 16)\n  SELECT count(* FROM bars\n                 ^"),
        "{out:?}"
    );
    let table = sb.run(&["query", "SELECT count(*) AS n FROM bars"]);
    assert!(table.stdout.contains("| n |"), "{table:?}");
}

/// A task's SQL errors in the loader's style: a syntax error at the YAML line and column
/// inside the `sql: |` block, before anything runs; an unknown column when it runs, with
/// the closest real one and where `sql:` is.
#[test]
fn task_sql_errors_point_into_the_yaml() {
    let sb = Sandbox::new();
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000"],
    );
    let workflow = |select: &str| {
        format!(
            "name: sqlerr\ntasks:\n  crawl:\n    kind: crawl\n    path: raw\n    table: bars\n  temp:\n    kind: create_table_as\n    after: [crawl]\n    table: temp\n    sql: |\n      SELECT symbol,\n        {select}\n      FROM bars\n"
        )
    };
    sb.write("wf.yaml", &workflow("count(* AS n"));
    let out = sb.run(&["run", "wf.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    // Line 13 of the file is the SQL's line 2; `AS` is its column 11, the file's 17.
    assert!(
        out.stderr.contains(
            "wf.yaml:13:17: task `temp`: SQL syntax error in `sql`: Expected: ), found: AS"
        ),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("13 |         count(* AS n\n   |                 ^\n"),
        "{out:?}"
    );

    sb.write("wf.yaml", &workflow("clse AS c"));
    let out = sb.run(&["run", "wf.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = task(&sb.show(&out.run_id()), "temp")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("unknown column `clse`; did you mean `close`?"),
        "{error}"
    );
    assert!(error.contains("in `sql:` at "), "{error}");
    assert!(error.ends_with("wf.yaml:11"), "{error}");
}

#[test]
fn generated_bars_are_reproducible_and_crawlable() {
    let sb = Sandbox::new();
    let gen = |seed: &str, out: &str| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_gen-bars"))
            .args(["--symbols", "3", "--days", "30", "--seed", seed, "--out"])
            .arg(sb.path(out))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(sb.path(out).join("SYM00002.csv")).unwrap()
    };
    let first = gen("7", "raw/dt=2026-01-02");
    assert_eq!(gen("7", "again"), first, "same seed, same bars");
    assert_ne!(gen("8", "other"), first, "another seed, other bars");
    assert!(first.starts_with("symbol,date,open,high,low,close,volume\nSYM00002,2016-01-04,"));

    sb.write("crawl.yaml", CRAWL);
    assert_eq!(sb.run(&["run", "crawl.yaml"]).code, 0);
    let n = query(
        &sb,
        "SELECT count(*) AS n FROM bars WHERE high >= low AND low > 0",
    );
    assert_eq!(n[0]["n"], 90);
}

#[test]
fn sql_ddl_keeps_the_catalog_in_step_and_every_failing_rule_is_reported() {
    let sb = Sandbox::new();
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000", "AMD,2025-04-09,90.25,2000"],
    );
    sb.write(
        "wf.yaml",
        r#"
name: ddl
tasks:
  crawl:
    kind: crawl
    path: raw
    table: bars
  derive:
    kind: sql
    after: [crawl]
    sql: |
      CREATE TABLE closes AS SELECT symbol, close FROM bars;
      SELECT * FROM closes WHERE close > 100
  audit:
    kind: quality_check
    after: [derive]
    table: closes
    checks:
      - row_count: { max: 1 }
      - accepted_values: { column: symbol, values: [NVDA] }
      - not_null: [close]
      - unique: [symbol]
"#,
    );
    let out = sb.run(&["run", "wf.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(
        task(&show, "derive")["outputs"]["created"],
        serde_json::json!(["closes"])
    );
    assert_eq!(
        task(&show, "derive")["outputs"]["rows"],
        serde_json::json!([1])
    );
    let error = task(&show, "audit")["error"].as_str().unwrap();
    assert!(
        error.starts_with("2 of 4 checks failed on closes:"),
        "{error}"
    );
    assert!(
        error.contains("- row_count(rows <= 1): 1 violation (2 rows)"),
        "{error}"
    );
    assert!(error.contains("- accepted_values(symbol in NVDA): 1 violation\n    {\"symbol\":\"AMD\",\"close\":90.25}"), "{error}");

    let managed = sb.state_dir().join("warehouse/closes");
    assert!(managed.is_dir());
    sb.write(
        "drop.yaml",
        "name: drop\ntasks:\n  drop:\n    kind: sql\n    sql: DROP TABLE closes; DROP TABLE bars; DROP TABLE IF EXISTS nothing\n",
    );
    let out = sb.run(&["run", "drop.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!managed.exists(), "a managed table's files go with it");
    assert!(
        sb.path("raw/dt=2025-04-09/a.csv").exists(),
        "a crawled table's files stay"
    );
    assert!(sb.run(&["tables"]).stdout.starts_with("no tables yet"));
    let out = sb.run(&["run", "drop.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "table `closes` does not exist; write `DROP TABLE IF EXISTS closes` to allow that"
        ),
        "{out:?}"
    );
}

#[test]
fn a_csv_header_with_a_repeated_or_empty_name_is_named() {
    let sb = Sandbox::new();
    sb.write("crawl.yaml", CRAWL);
    std::fs::create_dir_all(sb.path("raw")).unwrap();
    sb.write("raw/a.csv", "a,a,\n1,2,3\n");
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("a.csv: column `a` appears twice in the header (columns 1 and 2)"),
        "{out:?}"
    );
    sb.write("raw/a.csv", "a,b,\n1,2,3\n");
    let out = sb.run(&["run", "crawl.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("a.csv: column 3 of the header has no name"),
        "{out:?}"
    );
}

#[test]
fn every_bad_quality_rule_is_reported() {
    let sb = Sandbox::new();
    sb.write(
        "qc.yaml",
        "name: qc\ntasks:\n  check:\n    kind: quality_check\n    table: t\n    checks:\n      - not_nul: [a]\n      - row_count: {}\n      - accepted_range: {column: x}\n      - unique: [a]\n",
    );
    let out = sb.run(&["validate", "qc.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    for needle in [
        "3 bad rules",
        "checks[0]: unknown variant `not_nul`",
        "checks[1]: `row_count` needs",
        "checks[2]: `accepted_range` on `x` needs",
    ] {
        assert!(out.stderr.contains(needle), "no `{needle}` in {out:?}");
    }
}

#[test]
fn a_killed_create_table_as_leaves_a_leftover_that_check_reports_and_the_next_create_removes() {
    let sb = Sandbox::new();
    sb.write(
        "ctas.yaml",
        "name: ctas\ntasks:\n  make:\n    kind: create_table_as\n    table: answers\n    sql: \"SELECT 42 AS x\"\n",
    );
    let hook = sb.path("hook");
    std::fs::create_dir(&hook).unwrap();
    let mut cmd = sb.command(&["run", "ctas.yaml"]);
    cmd.env(
        "ORCHESTRATOR_TEST_PAUSE",
        format!("create_table_as:before-rename:{}", hook.display()),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    sb.wait_for_file("hook/paused");
    child.kill().unwrap();
    child.wait().unwrap();

    let staging = sb.state_dir().join("warehouse/.staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1);
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains(".staging/answers-") && check.stdout.contains("interrupted write"),
        "{check:?}"
    );
    let id = serde_json::from_str::<Value>(&sb.run(&["runs", "--json"]).stdout).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert_eq!(sb.run(&["state", "check"]).code, 0);
}

#[test]
fn a_multi_statement_sql_task_is_not_atomic_as_documented() {
    let sb = Sandbox::new();
    sb.write(
        "multi.yaml",
        "name: multi\ntasks:\n  both:\n    kind: sql\n    sql: \"CREATE TABLE first AS SELECT 1 AS x; SELECT * FROM no_such_table\"\n",
    );
    let out = sb.run(&["run", "multi.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    // The README says so: the first statement's table stays created.
    let rows = query(&sb, "SELECT x FROM first");
    assert_eq!(rows[0]["x"], 1);
    // And re-executing the task is safe: its own table is replaced, not refused.
    sb.write(
        "multi.yaml",
        "name: multi\ntasks:\n  both:\n    kind: sql\n    sql: \"CREATE TABLE first AS SELECT 1 AS x; SELECT 2\"\n",
    );
    let id = serde_json::from_str::<Value>(&sb.run(&["runs", "--json"]).stdout).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn query_tables_round_floats_for_reading_and_json_keeps_them_exact() {
    let sb = Sandbox::new();
    let sql = "SELECT 0.1 + 0.2 AS x, 1234567.891 AS big, 0.000123456789 AS small";
    let out = sb.run(&["query", sql]);
    assert_eq!(out.code, 0, "{out:?}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains("1234568"))
        .unwrap_or_else(|| panic!("{out:?}"));
    let cells: Vec<&str> = row
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells, ["0.3", "1234568.0", "0.000123457"], "{out:?}");
    let out = sb.run(&["query", sql, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("0.30000000000000004") && out.stdout.contains("1234567.891"),
        "{out:?}"
    );
}

#[test]
fn publish_inserts_only_new_keys_and_refuses_repeated_ones_before_writing() {
    let sb = Sandbox::new();
    let workflow = |to: &str| {
        format!(
            r#"
name: pub
tasks:
  crawl:
    kind: crawl
    path: raw
    table: bars
  stage:
    kind: sql
    after: [crawl]
    sql: DROP TABLE IF EXISTS staged; CREATE TABLE staged AS SELECT symbol, date, close FROM bars
  publish:
    kind: publish
    after: [stage]
    from: staged
    to: {to}
    key: [symbol, date]
"#
        )
    };
    sb.write("wf.yaml", &workflow("prod"));
    let publish = |expect: i32| {
        let out = sb.run(&["run", "wf.yaml"]);
        assert_eq!(out.code, expect, "{out:?}");
        task(&sb.show(&out.run_id()), "publish").clone()
    };
    let prod = sb.state_dir().join("warehouse/prod");
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(&prod)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let rows = |sb: &Sandbox| query(sb, "SELECT count(*) AS n FROM prod")[0]["n"].clone();

    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000", "AMD,2025-04-09,90.25,2000"],
    );
    assert_eq!(publish(0)["outputs"]["inserted"], 2);
    bars(
        &sb,
        "dt=2025-04-10",
        "b.csv",
        &["NVDA,2025-04-10,102.5,1000", "AMD,2025-04-10,91.25,2000"],
    );
    let second = publish(0);
    assert_eq!(second["outputs"]["inserted"], 2, "{second}");
    assert_eq!(second["outputs"]["already_present"], 2, "{second}");
    assert_eq!(second["outputs"]["rows"], 4, "{second}");

    // Nothing new: nothing is written, not even an empty file.
    let files = listing();
    let third = publish(0);
    assert_eq!(third["outputs"]["inserted"], 0, "{third}");
    assert_eq!(third["outputs"]["already_present"], 4, "{third}");
    assert_eq!(third["outputs"]["rows"], 4, "{third}");
    assert_eq!(listing(), files);

    // A key twice in the source (one copy already published, one not): refused, and
    // production is left as it was.
    bars(&sb, "dt=2025-04-10", "c.csv", &["AMD,2025-04-10,91.5,2100"]);
    let refused = publish(1);
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "1 keys (symbol, date) occur more than once in `staged`, e.g. {\"symbol\":\"AMD\",\"date\":\"2025-04-10\",\"copies\":2}; add a `unique` check before publish"
        ),
        "{error}"
    );
    assert_eq!(listing(), files);
    assert_eq!(rows(&sb), 4);

    // The same into a table that does not exist yet: refused, and not created.
    sb.write("wf.yaml", &workflow("fresh"));
    let error = publish(1)["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("1 keys (symbol, date) occur more than once in `staged`"),
        "{error}"
    );
    assert!(!sb.state_dir().join("warehouse/fresh").exists());
    assert!(!sb.run(&["tables"]).stdout.contains("fresh"));
}

#[test]
fn a_sort_budget_that_is_not_a_number_of_mib_is_refused_saying_how_to_write_one() {
    let sb = Sandbox::new();
    let out = sb
        .command(&["query", "SELECT 1 AS x"])
        .env("ORCHESTRATOR_SORT_MEMORY_MB", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"ORCHESTRATOR_SORT_MEMORY_MB="lots" is not a budget for sorts"#)
            && stderr.contains("512 or 2048"),
        "{stderr}"
    );
    // A valid budget (and `unlimited`) answers.
    for budget in ["64", "unlimited"] {
        let out = sb
            .command(&["query", "SELECT 1 AS x"])
            .env("ORCHESTRATOR_SORT_MEMORY_MB", budget)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{budget}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Sets a file's modification time `secs` seconds back.
fn age(path: &std::path::Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn expired_landing_files_leave_the_crawled_table_without_rereading_the_rest() {
    let sb = Sandbox::new();
    sb.write(
        "landing.yaml",
        "name: landing\ntasks:\n  expire:\n    kind: expire_files\n    path: raw\n    older_than: 1h\n  crawl:\n    kind: crawl\n    after: expire\n    path: raw\n    table: bars\n",
    );
    bars(
        &sb,
        "dt=2025-04-09",
        "a.csv",
        &["NVDA,2025-04-09,101.5,1000", "AMD,2025-04-09,90.25,2000"],
    );
    bars(&sb, "dt=2025-04-10", "a.csv", &["NVDA,2025-04-10,103,1500"]);
    bars(&sb, "dt=2025-04-11", "a.csv", &["NVDA,2025-04-11,104,1500"]);
    let out = sb.run(&["run", "landing.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(task(&show, "expire")["outputs"]["deleted_files"], 0);
    assert_eq!(task(&show, "expire")["outputs"]["kept_files"], 3);
    assert_eq!(task(&show, "crawl")["outputs"]["row_count"], 4);

    age(&sb.path("raw/dt=2025-04-09/a.csv"), 7200);
    // A file the crawl knows, rewritten in place: a crawl that re-read the files left
    // would count its new row (5); one that subtracts the expired file's rows says 2.
    let kept = sb.path("raw/dt=2025-04-11/a.csv");
    std::fs::write(
        &kept,
        "symbol,date,close,volume\nNVDA,2025-04-11,104,1500\nAMD,2025-04-11,91,900\n",
    )
    .unwrap();
    let out = sb.run(&["run", "landing.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    let expire = &task(&show, "expire")["outputs"];
    assert_eq!(expire["deleted_files"], 1);
    assert_eq!(expire["deleted_dirs"], 1);
    assert_eq!(expire["kept_files"], 2);
    assert!(!sb.path("raw/dt=2025-04-09").exists());
    let crawl = &task(&show, "crawl")["outputs"];
    assert_eq!(crawl["files_seen"], 2);
    assert_eq!(crawl["new_files"], 0);
    assert_eq!(crawl["row_count"], 2);
    let tables: Value = serde_json::from_str(&sb.run(&["tables", "--json"]).stdout).unwrap();
    assert_eq!(
        tables[0]["partitions"],
        serde_json::json!(["dt=2025-04-10", "dt=2025-04-11"])
    );
    assert_eq!(
        query(
            &sb,
            "SELECT count(*) AS n FROM bars WHERE dt = '2025-04-09'"
        ),
        serde_json::json!([{"n": 0}])
    );
}

#[test]
fn expire_files_refuses_the_warehouse_and_an_age_that_could_take_this_runs_files() {
    let sb = Sandbox::new();
    sb.write(
        "soon.yaml",
        "name: soon\ntasks:\n  expire:\n    kind: expire_files\n    path: raw\n    older_than: 30s\n",
    );
    let out = sb.run(&["validate", "soon.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("soon.yaml:") && out.stderr.contains("under the minimum of 1m"),
        "{out:?}"
    );

    let warehouse = sb.state_dir().join("warehouse");
    std::fs::create_dir_all(warehouse.join("t")).unwrap();
    std::fs::write(warehouse.join("t/part-0.parquet"), "x").unwrap();
    age(&warehouse.join("t/part-0.parquet"), 86_400);
    sb.write(
        "own.yaml",
        &format!(
            "name: own\ntasks:\n  expire:\n    kind: expire_files\n    path: {}\n    older_than: 1h\n",
            sb.state_dir().display()
        ),
    );
    let out = sb.run(&["run", "own.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("holds the warehouse"), "{out:?}");
    assert!(warehouse.join("t/part-0.parquet").exists());

    // A state dir whose warehouse is elsewhere: its own files are refused too.
    sb.write(
        "state.yaml",
        &format!(
            "name: state
warehouse: {}
tasks:
  expire:
    kind: expire_files
    path: {}
    older_than: 1h
",
            sb.path("lake").display(),
            sb.state_dir().join("db").display()
        ),
    );
    let aged: Vec<std::path::PathBuf> = std::fs::read_dir(sb.state_dir().join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!aged.is_empty());
    for p in &aged {
        age(p, 86_400);
    }
    let out = sb.run(&["run", "state.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("is an orchestrator state directory"),
        "{out:?}"
    );
    for p in &aged {
        assert!(p.exists(), "{} was deleted", p.display());
    }

    // A landing zone inside the state dir, as the bundled workflows' default
    // (`.orchestrator/landing`), is a landing zone like any other.
    let landed = sb.state_dir().join("landing/dt=1/a.csv");
    std::fs::create_dir_all(landed.parent().unwrap()).unwrap();
    std::fs::write(&landed, "a\n1\n").unwrap();
    age(&landed, 86_400);
    sb.write(
        "inside.yaml",
        &format!(
            "name: inside\ntasks:\n  expire:\n    kind: expire_files\n    path: {}\n    older_than: 1h\n",
            sb.state_dir().join("landing").display()
        ),
    );
    let out = sb.run(&["run", "inside.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!landed.exists());
    for p in &aged {
        assert!(p.exists(), "{} was deleted", p.display());
    }
}
