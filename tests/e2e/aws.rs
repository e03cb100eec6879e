//! The AWS backend end to end: `workflows/daily.yaml --backend aws` against moto on
//! 127.0.0.1 (S3, the Glue crawler, Athena). Moto runs no SQL, so the tests preset what
//! Athena's count queries answer, and register in Glue the temp table Athena's CTAS would
//! register; then they read back what moto received.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::common::{sample_response, status, task, Moto, Out, Sandbox};

const ROLE: &str = "arn:aws:iam::123456789012:role/glue-crawler";

fn daily() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/daily.yaml")
        .display()
        .to_string()
}

/// The columns create_temp gives stock_daily_tmp.
const COLUMNS: &[&str] = &[
    "symbol",
    "date",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "daily_return",
    "avg_price",
    "volatility",
    "price_change_pct",
    "rolling_avg_5d",
    "volume_surge_ratio",
    "candle_type",
    "is_market_up",
    "sma_5",
    "sma_20",
    "signal",
    "is_anomaly",
];

/// Buckets, the Glue database, and the temp table as Athena's CTAS would leave it.
fn set_up(moto: &Moto) {
    // moto's crawler reports READY only once a `time` transition has passed (or after a
    // ListCrawls call, which the real service does not need).
    moto.moto_api(
        "/moto-api/state-manager/set-transition",
        json!({"model_name": "glue::crawl", "transition": {"progression": "time", "seconds": 1}}),
    );
    for b in [
        "orchestrator-athena-results",
        "orchestrator-lake",
        "lake-landing",
    ] {
        moto.bucket(b);
    }
    moto.call(
        "glue",
        "AWSGlue.CreateDatabase",
        json!({"DatabaseInput": {"Name": "stock"}}),
    );
    let columns: Vec<Value> = COLUMNS
        .iter()
        .map(|c| json!({"Name": c, "Type": "string"}))
        .collect();
    moto.call(
        "glue",
        "AWSGlue.CreateTable",
        json!({"DatabaseName": "stock", "TableInput": {"Name": "stock_daily_tmp", "StorageDescriptor": {"Columns": columns}}}),
    );
}

/// Queues what Athena answers to the next queries, in order: moto hands each query the
/// next queued result when it starts, so statements without rows (DDL, MERGE) take one
/// too (`""`: no rows); any other string is one row of counts (`"10,0"`: two cells).
pub(crate) fn preset_counts(moto: &Moto, counts: &[&str]) {
    let results: Vec<Value> = counts
        .iter()
        .map(|n| {
            let cells: Vec<&str> = n.split(',').collect();
            let names: Vec<String> = (0..cells.len()).map(|i| format!("n{i}")).collect();
            let rows = if n.is_empty() {
                json!([])
            } else {
                let header: Vec<Value> = names.iter().map(|c| json!({"VarCharValue": c})).collect();
                let values: Vec<Value> = cells.iter().map(|c| json!({"VarCharValue": c})).collect();
                json!([{"Data": header}, {"Data": values}])
            };
            let info: Vec<Value> = names
                .iter()
                .map(|c| json!({"Name": c, "Type": "bigint", "Nullable": "NULLABLE", "CatalogName": "c", "SchemaName": "s", "TableName": "t", "Label": c, "Precision": 19, "Scale": 0, "CaseSensitive": false}))
                .collect();
            json!({ "rows": rows, "column_info": info })
        })
        .collect();
    moto.moto_api(
        "/moto-api/static/athena/query-results",
        json!({ "results": results }),
    );
}

/// The statements before the audit: the view over the crawled table, DROP, CTAS, and the
/// count of the CTAS's rows (moto gives no UpdateCount).
const BEFORE_AUDIT: &[&str] = &["", "", "", "10"];

/// The bundled responses cut to their last 60 bars (enough for the 45-day lookback),
/// so landing them in moto's S3 stays quick.
fn short_sample(sb: &Sandbox) -> String {
    let dir = sb.path("sample");
    std::fs::create_dir_all(&dir).unwrap();
    for s in [
        "NVDA", "AMD", "INTC", "TSM", "AVGO", "QCOM", "TXN", "MU", "ASML", "MRVL",
    ] {
        let mut doc: Value = serde_json::from_str(&sample_response(s)).unwrap();
        let series = doc["Time Series (Daily)"].as_object_mut().unwrap();
        let mut dates: Vec<String> = series.keys().cloned().collect();
        dates.sort();
        for d in &dates[..dates.len() - 60] {
            series.remove(d);
        }
        std::fs::write(dir.join(format!("{s}.json")), doc.to_string()).unwrap();
    }
    dir.display().to_string()
}

fn run_daily(sb: &Sandbox, moto: &Moto, extra: &[&str]) -> Out {
    let sample = format!("sample={}", short_sample(sb));
    let role = format!("glue_crawler_role={ROLE}");
    let file = daily();
    let mut args = vec![
        "run",
        file.as_str(),
        "--backend",
        "aws",
        "--date",
        "2026-05-11",
        "--param",
        "landing=s3://lake-landing/landing",
        "--param",
        &sample,
        "--param",
        &role,
    ];
    args.extend_from_slice(extra);
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sb.run_with_env(&args, &env)
}

/// One count per quality rule (13), publish's summary (rows, null keys) and repeated-key
/// count, then its CREATE TABLE (Iceberg) and MERGE, then signal_alerts' query (no rows:
/// nothing to tell).
const ALL_PASS: &[&str] = &[
    "10", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "10,0", "0", "", "", "",
];

#[test]
fn daily_yaml_runs_every_stage_on_s3_glue_and_athena() {
    let moto = Moto::start();
    set_up(&moto);
    preset_counts(&moto, BEFORE_AUDIT);
    preset_counts(&moto, ALL_PASS);
    let sb = Sandbox::new();
    let out = run_daily(&sb, &moto, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    for t in [
        "ingest",
        "crawl",
        "drop_temp",
        "create_temp",
        "quality_check",
        "publish",
        "signal_alerts",
    ] {
        assert_eq!(status(&show, t), "succeeded", "{t}: {show}");
    }

    // Landed in S3, each bar under its trading date.
    let keys = moto.keys("lake-landing", "landing/bars/");
    assert_eq!(keys.len(), 600, "{keys:?}");
    assert!(keys.contains(&"landing/bars/dt=2026-05-11/NVDA.csv".to_string()));

    // The crawler was created over the landed bars, and ran.
    let crawler = moto.call(
        "glue",
        "AWSGlue.GetCrawler",
        json!({"Name": "orchestrator-stock_raw"}),
    );
    assert_eq!(
        crawler["Crawler"]["Targets"]["S3Targets"][0]["Path"],
        "s3://lake-landing/landing/bars/"
    );
    assert_eq!(crawler["Crawler"]["Role"], ROLE);
    assert!(crawler["Crawler"]["LastCrawl"].is_object(), "{crawler}");
    assert_eq!(task(&show, "crawl")["outputs"]["view"], "stock_raw");

    // What Athena received: the view, the temp table, every rule, the Iceberg table and
    // one MERGE.
    let sql = moto.athena_statements();
    let has = |needle: &str| sql.iter().filter(|q| q.contains(needle)).count();
    assert_eq!(
        has("CREATE OR REPLACE VIEW stock_raw AS SELECT * FROM bars"),
        1,
        "{sql:#?}"
    );
    assert_eq!(has("DROP TABLE IF EXISTS stock_daily_tmp"), 1, "{sql:#?}");
    assert_eq!(
        has("CREATE TABLE stock_daily_tmp WITH (format = 'PARQUET', external_location = 's3://orchestrator-lake/warehouse/stock_daily_tmp/') AS"),
        1,
        "{sql:#?}"
    );
    assert_eq!(
        has("WHERE dt BETWEEN '2026-03-27' AND '2026-05-11'"),
        1,
        "the lookback, rendered: {sql:#?}"
    );
    assert_eq!(has("SELECT count(*) AS n FROM (SELECT * FROM stock_daily_tmp WHERE \"symbol\" IS NULL) AS v"), 1, "{sql:#?}");
    assert_eq!(
        has("SELECT count(*) AS n FROM (SELECT * FROM stock_daily_tmp WHERE high < low) AS v"),
        1,
        "{sql:#?}"
    );
    assert_eq!(has("table_type = 'ICEBERG'"), 1, "{sql:#?}");
    assert_eq!(
        has("MERGE INTO stock_daily t USING stock_daily_tmp s ON (t.\"symbol\" = s.\"symbol\" AND t.\"date\" = s.\"date\")\nWHEN NOT MATCHED THEN INSERT (\"symbol\", \"date\", \"open\","),
        1,
        "{sql:#?}"
    );
    assert_eq!(
        has("SELECT 'signal' AS kind, symbol, CAST(date AS VARCHAR) AS date"),
        1,
        "the alert query, on Athena: {sql:#?}"
    );
    assert_eq!(task(&show, "signal_alerts")["outputs"]["sent"], 0);
    assert_eq!(sql.len(), 4 + 13 + 2 + 2 + 1, "{sql:#?}");
    // The outputs a local run gives, on Athena too.
    let outputs = &task(&show, "publish")["outputs"];
    assert_eq!(
        (
            &outputs["inserted"],
            &outputs["already_present"],
            &outputs["rows"]
        ),
        (&json!(10), &json!(0), &json!(10)),
        "{outputs}"
    );
    assert_eq!(task(&show, "create_temp")["outputs"]["rows"], 10);
    assert_eq!(
        task(&show, "drop_temp")["outputs"]["dropped"],
        json!(["stock_daily_tmp"])
    );
}

#[test]
fn a_failing_check_publishes_nothing_and_rerun_resumes_on_aws_without_resending() {
    let moto = Moto::start();
    set_up(&moto);
    // not_null(symbol) finds 3 rows: its count, then its sample, then the other rules.
    preset_counts(&moto, BEFORE_AUDIT);
    let mut answers = vec!["10", "3"];
    preset_counts(&moto, &answers);
    moto.moto_api(
        "/moto-api/static/athena/query-results",
        json!({"results": [{
            "rows": [{"Data": [{"VarCharValue": "symbol"}, {"VarCharValue": "date"}]}, {"Data": [{}, {"VarCharValue": "2026-05-11"}]}],
            "column_info": [
                {"Name": "symbol", "Type": "varchar", "Nullable": "NULLABLE", "CatalogName": "c", "SchemaName": "s", "TableName": "t", "Label": "symbol", "Precision": 0, "Scale": 0, "CaseSensitive": true},
                {"Name": "date", "Type": "varchar", "Nullable": "NULLABLE", "CatalogName": "c", "SchemaName": "s", "TableName": "t", "Label": "date", "Precision": 0, "Scale": 0, "CaseSensitive": true}
            ]
        }]}),
    );
    answers = vec!["0"; 11];
    preset_counts(&moto, &answers);
    let sb = Sandbox::new();
    let out = run_daily(&sb, &moto, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let show = sb.show(&id);
    assert_eq!(status(&show, "quality_check"), "failed");
    assert_eq!(status(&show, "publish"), "skipped");
    let error = task(&show, "quality_check")["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "1 of 13 checks failed on stock_daily_tmp:\n- not_null(symbol): 3 violations"
        ),
        "{error}"
    );
    assert!(
        error.contains(r#"{"symbol":null,"date":"2026-05-11"}"#),
        "{error}"
    );
    let sent = moto.athena_statements();
    assert!(
        !sent.iter().any(|q| q.contains("MERGE INTO")),
        "no MERGE: {sent:#?}"
    );

    // Fixed upstream; the rerun re-executes the audit and publish only, on AWS.
    preset_counts(&moto, ALL_PASS);
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sb.run_with_env(&["rerun", &id], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&id);
    assert_eq!(status(&show, "publish"), "succeeded");
    for (t, attempts) in [
        ("ingest", 1),
        ("crawl", 1),
        ("create_temp", 1),
        ("quality_check", 2),
        ("publish", 1),
    ] {
        assert_eq!(task(&show, t)["attempts"], attempts, "{t}");
    }
    let after = moto.athena_statements();
    let count = |v: &[String], needle: &str| v.iter().filter(|q| q.contains(needle)).count();
    assert_eq!(
        count(&after, "CREATE TABLE stock_daily_tmp WITH"),
        1,
        "the temp table is not re-sent"
    );
    assert_eq!(
        count(&after, "CREATE OR REPLACE VIEW stock_raw"),
        1,
        "the crawl is not re-run"
    );
    assert_eq!(count(&after, "MERGE INTO stock_daily"), 1);
}

#[test]
fn a_query_still_running_at_the_timeout_is_stopped_and_a_glue_job_runs() {
    let moto = Moto::start();
    moto.moto_api(
        "/moto-api/state-manager/set-transition",
        json!({"model_name": "athena::execution", "transition": {"progression": "manual", "times": 1000000}}),
    );
    moto.moto_api(
        "/moto-api/state-manager/set-transition",
        json!({"model_name": "glue::job_run", "transition": {"progression": "manual", "times": 2}}),
    );
    moto.call(
        "glue",
        "AWSGlue.CreateJob",
        json!({"Name": "heavy", "Role": ROLE, "Command": {"Name": "glueetl", "ScriptLocation": "s3://code/heavy.py"}}),
    );
    let sb = Sandbox::new();
    sb.write(
        "a.yaml",
        "name: a\nbackend: aws\naws:\n  region: us-east-1\n  database: stock\n  output_location: s3://results/\n  warehouse: s3://lake/\ntasks:\n  etl:\n    kind: glue_job\n    job_name: heavy\n    arguments:\n      --date: \"{{ run.date }}\"\n  slow:\n    kind: athena_query\n    after: [etl]\n    sql: SELECT 1\n    timeout: 1s\n",
    );
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sb.run_with_env(&["run", "a.yaml"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(status(&show, "etl"), "succeeded");
    assert_eq!(task(&show, "etl")["outputs"]["state"], "SUCCEEDED");
    assert_eq!(status(&show, "slow"), "failed");
    assert!(
        task(&show, "slow")["error"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 1s"),
        "{show}"
    );
    let list = moto.call("athena", "AmazonAthena.ListQueryExecutions", json!({}));
    let qid = list["QueryExecutionIds"][0].as_str().unwrap().to_string();
    let q = moto.call(
        "athena",
        "AmazonAthena.GetQueryExecution",
        json!({"QueryExecutionId": qid}),
    );
    assert_eq!(
        q["QueryExecution"]["Status"]["State"], "CANCELLED",
        "StopQueryExecution received: {q}"
    );

    // The aws kinds refuse the local backend, at validation, naming the override (the
    // file says `backend: aws` already).
    let out = sb.run(&["validate", "a.yaml", "--backend", "local"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("`glue_job` runs on AWS, and this run is `--backend local`"),
        "{out:?}"
    );
    sb.write(
        "l.yaml",
        "name: l
tasks:
  etl:
    kind: glue_job
    job_name: heavy
",
    );
    let out = sb.run(&["validate", "l.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("`glue_job` runs on AWS: set `backend: aws`"),
        "{out:?}"
    );
}

#[test]
fn doctor_says_what_is_missing_then_that_all_is_well() {
    let moto = Moto::start();
    let sb = Sandbox::new();
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let file = daily();
    let landing = "landing=s3://lake-landing/landing";
    let out = sb.run_with_env(&["doctor", &file, "--backend", "aws"], &env);
    assert_eq!(out.code, 2, "the crawl needs an s3:// landing: {out:?}");
    let out = sb.run_with_env(
        &["doctor", &file, "--backend", "aws", "--param", landing],
        &env,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("ok: region: us-east-1"), "{out:?}");
    assert!(out.stdout.contains("ok: credentials: arn:aws:"), "{out:?}");
    assert!(
        out.stdout.contains(
            "problem: Glue database `stock` does not exist: create it (aws glue create-database --database-input Name=stock)"
        ),
        "{out:?}"
    );
    // The buckets are checked, not only the URLs' syntax.
    assert!(
        out.stdout
            .contains("bucket `orchestrator-athena-results` does not exist")
            && out
                .stdout
                .contains("bucket `orchestrator-lake` does not exist"),
        "{out:?}"
    );
    // Each problem is a line for a person, not the SDK's debug dump.
    for l in out.stdout.lines() {
        assert!(l.len() < 400 && !l.contains("ServiceError"), "{l}");
    }
    moto.call(
        "glue",
        "AWSGlue.CreateDatabase",
        json!({"DatabaseInput": {"Name": "stock"}}),
    );
    moto.bucket("orchestrator-athena-results");
    moto.bucket("orchestrator-lake");
    let out = sb.run_with_env(
        &["doctor", &file, "--backend", "aws", "--param", landing],
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("ok: Athena workgroup `primary`: found")
            && out
                .stdout
                .contains("ok: warehouse: s3://orchestrator-lake/warehouse/: bucket found"),
        "{out:?}"
    );
    // Without a local endpoint the tests refuse to call AWS at all.
    let out = sb.run(&["doctor", &file, "--backend", "aws", "--param", landing]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("refusing to call AWS"), "{out:?}");
}

/// Every Athena query FAILED, as moto never answers.
fn failing_athena(target: &str) -> String {
    match target {
        "AmazonAthena.StartQueryExecution" => r#"{"QueryExecutionId":"q-7"}"#.into(),
        "AmazonAthena.GetQueryExecution" => r#"{"QueryExecution":{"QueryExecutionId":"q-7","Status":{"State":"FAILED","StateChangeReason":"TABLE_NOT_FOUND: line 1:15: Table 'awsdatacatalog.stock.nope' does not exist"}}}"#.into(),
        _ => "{}".into(),
    }
}

#[test]
fn a_failed_query_fails_its_task_with_athenas_reason_and_the_query_id() {
    let fake = orchestrator_aws::fake::FakeEndpoint::start(failing_athena).unwrap();
    let url = fake.url.clone();
    let sb = Sandbox::new();
    sb.write(
        "q.yaml",
        "name: q\nbackend: aws\naws:\n  region: us-east-1\n  database: stock\n  output_location: s3://results/\n  warehouse: s3://lake/\ntasks:\n  q:\n    kind: athena_query\n    sql: SELECT * FROM nope\n",
    );
    let out = sb.run_with_env(
        &["run", "q.yaml"],
        &[
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(
        task(&show, "q")["error"],
        "Athena query q-7 FAILED: TABLE_NOT_FOUND: line 1:15: Table 'awsdatacatalog.stock.nope' does not exist"
    );
    assert_eq!(
        fake.calls(),
        [
            "AmazonAthena.StartQueryExecution",
            "AmazonAthena.GetQueryExecution"
        ]
    );
}
