//! One workflow, two backends: the data kinds' outputs and refusals are the same locally
//! (DataFusion) and on AWS (Athena, Glue and S3 in moto). Moto runs no SQL, so the AWS
//! side is told what Athena would answer (the same numbers the local run computes), and
//! its Glue catalog gets the tables Athena's CTAS would register; what is compared is
//! what each backend makes of those answers: publish's outputs, and the text of a refusal.
//! A later task reads publish's outputs through templates
//! (`{{ tasks.publish.outputs.inserted }}`), and what it prints is compared too.

use serde_json::{json, Value};

use crate::aws::preset_counts;
use crate::common::{status, task, Moto, Out, Sandbox};

/// The staged rows as one SELECT both SQL dialects take.
fn staged(rows: &[(&str, &str, f64)]) -> String {
    rows.iter()
        .map(|(s, d, c)| format!("SELECT '{s}' AS symbol, '{d}' AS date, {c:?} AS close"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

fn workflow(select: &str) -> String {
    format!(
        r#"name: kinds
aws:
  region: us-east-1
  database: stock
  output_location: s3://results/
  warehouse: s3://lake/wh/
tasks:
  stage:
    kind: sql
    sql: "DROP TABLE IF EXISTS staged; CREATE TABLE staged AS {select}"
  publish:
    kind: publish
    after: [stage]
    from: staged
    to: prod
    key: [symbol, date]
  report:
    kind: shell
    after: [publish]
    command: "echo inserted={{{{ tasks.publish.outputs.inserted }}}} already_present={{{{ tasks.publish.outputs.already_present }}}} rows={{{{ tasks.publish.outputs.rows }}}}"
"#
    )
}

/// The two backends, each in a sandbox of its own.
struct Both {
    local: Sandbox,
    aws: Sandbox,
    moto: Moto,
}

impl Both {
    fn new() -> Both {
        let moto = Moto::start();
        for b in ["results", "lake"] {
            moto.bucket(b);
        }
        moto.call(
            "glue",
            "AWSGlue.CreateDatabase",
            json!({"DatabaseInput": {"Name": "stock"}}),
        );
        // `staged` as the sql task's CREATE TABLE AS would register it.
        register(&moto, "staged", None);
        Both {
            local: Sandbox::new(),
            aws: Sandbox::new(),
            moto,
        }
    }

    /// Runs the workflow over `rows` locally and on moto; (local, aws).
    fn run(&self, rows: &[(&str, &str, f64)]) -> (Value, Value) {
        let yaml = workflow(&staged(rows));
        self.local.write("wf.yaml", &yaml);
        self.aws.write("wf.yaml", &yaml);
        let local = self.local.run(&["run", "wf.yaml"]);
        let env = self.moto.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let aws = self
            .aws
            .run_with_env(&["run", "wf.yaml", "--backend", "aws"], &env);
        (show(&self.local, &local), show(&self.aws, &aws))
    }
}

fn show(sb: &Sandbox, out: &Out) -> Value {
    sb.show(&out.run_id())
}

/// A Glue table with the staged columns (`table_type` ICEBERG for publish's `to`).
fn register(moto: &Moto, name: &str, table_type: Option<&str>) {
    let columns = json!([
        {"Name": "symbol", "Type": "string"},
        {"Name": "date", "Type": "string"},
        {"Name": "close", "Type": "double"},
    ]);
    let mut input = json!({"Name": name, "StorageDescriptor": {"Columns": columns}});
    if let Some(t) = table_type {
        input["Parameters"] = json!({ "table_type": t });
    }
    moto.call(
        "glue",
        "AWSGlue.CreateTable",
        json!({"DatabaseName": "stock", "TableInput": input}),
    );
}

/// Queues one Athena answer of rows (every value text, as Athena gives it) typed by
/// `columns` (name, Athena type).
fn preset_rows(moto: &Moto, columns: &[(&str, &str)], rows: &[&[&str]]) {
    let header: Vec<Value> = columns
        .iter()
        .map(|(c, _)| json!({"VarCharValue": c}))
        .collect();
    let mut all = vec![json!({ "Data": header })];
    for row in rows {
        let data: Vec<Value> = row.iter().map(|v| json!({"VarCharValue": v})).collect();
        all.push(json!({ "Data": data }));
    }
    let info: Vec<Value> = columns
        .iter()
        .map(|(c, t)| json!({"Name": c, "Type": t, "Nullable": "NULLABLE", "CatalogName": "c", "SchemaName": "s", "TableName": "t", "Label": c, "Precision": 0, "Scale": 0, "CaseSensitive": true}))
        .collect();
    moto.moto_api(
        "/moto-api/static/athena/query-results",
        json!({"results": [{ "rows": all, "column_info": info }]}),
    );
}

/// What the `report` task printed: publish's common outputs, rendered into its command
/// from `{{ tasks.publish.outputs.* }}` when it started.
fn report(show: &Value) -> String {
    assert_eq!(status(show, "report"), "succeeded", "{show:#}");
    let attempts = task(show, "report")["history"].as_array().cloned();
    let tail = attempts.and_then(|a| a.last().cloned()).map(|a| {
        a["output_tail"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    let line = tail.unwrap_or_default();
    // The same numbers as the outputs `show` records.
    let o = &task(show, "publish")["outputs"];
    assert_eq!(
        line,
        format!(
            "inserted={} already_present={} rows={}",
            o["inserted"], o["already_present"], o["rows"]
        )
    );
    line
}

#[test]
fn publish_outputs_are_the_same_locally_and_on_moto() {
    let both = Both::new();

    // A first publish: `prod` does not exist; both rows are inserted.
    // Athena: DROP, CTAS, publish's summary (rows, null keys), its repeated-key count,
    // the Iceberg table, the MERGE.
    preset_counts(&both.moto, &["", "", "2,0", "0", "", ""]);
    let (local, aws) = both.run(&[("NVDA", "2025-04-09", 101.5), ("AMD", "2025-04-09", 90.25)]);
    for (backend, show) in [("local", &local), ("aws", &aws)] {
        assert_eq!(status(show, "publish"), "succeeded", "{backend}: {show:#}");
    }
    let outputs = &task(&aws, "publish")["outputs"];
    assert_eq!(outputs["inserted"], 2, "{outputs}");
    assert_eq!(outputs["already_present"], 0, "{outputs}");
    assert_eq!(outputs["rows"], 2, "{outputs}");
    assert_eq!(outputs["created"], true, "{outputs}");
    // Athena's extras, on top of the common outputs.
    assert_eq!(
        outputs["query_ids"].as_array().map(Vec::len),
        Some(4),
        "{outputs}"
    );
    assert_eq!(
        task(&aws, "stage")["outputs"]["created"],
        task(&local, "stage")["outputs"]["created"]
    );
    assert_eq!(report(&local), "inserted=2 already_present=0 rows=2");
    assert_eq!(report(&aws), report(&local));

    // A day later: `prod` exists (on AWS as the Iceberg table publish created); one row
    // is new, two were published already.
    register(&both.moto, "prod", Some("ICEBERG"));
    // Athena: DROP, CTAS, summary, the key count (repeated, new), the MERGE, prod's rows.
    preset_counts(&both.moto, &["", "", "3,0", "0,1", "", "3"]);
    let (local, aws) = both.run(&[
        ("NVDA", "2025-04-09", 101.5),
        ("AMD", "2025-04-09", 90.25),
        ("AMD", "2025-04-10", 91.25),
    ]);
    for (backend, show) in [("local", &local), ("aws", &aws)] {
        assert_eq!(status(show, "publish"), "succeeded", "{backend}: {show:#}");
    }
    assert_eq!(report(&local), "inserted=1 already_present=2 rows=3");
    assert_eq!(report(&aws), report(&local));
    assert_eq!(task(&aws, "publish")["outputs"]["created"], false);
    let merge = both
        .moto
        .athena_statements()
        .into_iter()
        .filter(|q| q.starts_with("MERGE INTO prod"))
        .count();
    assert_eq!(merge, 2, "one MERGE per publish that inserts");

    // A key twice in the source, `prod` existing: the same refusal on both backends.
    // Athena: DROP, CTAS, summary, the key count (1 repeated), then the sample.
    preset_counts(&both.moto, &["", "", "4,0", "1,1"]);
    preset_rows(
        &both.moto,
        &[
            ("symbol", "varchar"),
            ("date", "varchar"),
            ("copies", "bigint"),
        ],
        &[&["AMD", "2025-04-10", "2"]],
    );
    let (local, aws) = both.run(&[
        ("NVDA", "2025-04-09", 101.5),
        ("AMD", "2025-04-09", 90.25),
        ("AMD", "2025-04-10", 91.25),
        ("AMD", "2025-04-10", 91.5),
    ]);
    let error = |show: &Value| {
        task(show, "publish")["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        error(&local),
        r#"1 keys (symbol, date) occur more than once in `staged`, e.g. {"symbol":"AMD","date":"2025-04-10","copies":2}; add a `unique` check before publish"#
    );
    assert_eq!(error(&aws), error(&local));
}

#[test]
fn the_duplicate_key_refusal_reads_the_same_locally_and_on_moto() {
    let both = Both::new();
    // `prod` does not exist. Athena: DROP, CTAS, summary, the repeated-key count, then
    // the sample of repeated keys.
    preset_counts(&both.moto, &["", "", "3,0", "1"]);
    preset_rows(
        &both.moto,
        &[
            ("symbol", "varchar"),
            ("date", "varchar"),
            ("copies", "bigint"),
        ],
        &[&["NVDA", "2025-04-09", "2"]],
    );
    let (local, aws) = both.run(&[
        ("NVDA", "2025-04-09", 101.5),
        ("NVDA", "2025-04-09", 101.75),
        ("AMD", "2025-04-09", 90.25),
    ]);
    let error = |show: &Value| {
        task(show, "publish")["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let expected = r#"1 keys (symbol, date) occur more than once in `staged`, e.g. {"symbol":"NVDA","date":"2025-04-09","copies":2}; add a `unique` check before publish"#;
    assert_eq!(error(&local), expected);
    assert_eq!(error(&aws), expected);
    // Refused before anything was written: no Iceberg table, no MERGE.
    let sql = both.moto.athena_statements();
    assert!(
        !sql.iter()
            .any(|q| q.contains("ICEBERG") || q.contains("MERGE")),
        "{sql:#?}"
    );
    assert!(!both.local.run(&["tables"]).stdout.contains("prod"));
}
