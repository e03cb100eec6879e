//! The AWS backend against moto (`moto_server` on 127.0.0.1, started here; `scripts/test`
//! installs it) and, for the failure answers moto never gives, a small fake endpoint that
//! speaks Athena's JSON protocol. No test reaches a real AWS endpoint: each sets
//! `AWS_ENDPOINT_URL` to its local server before the SDK is configured.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orchestrator_aws::fake::FakeEndpoint;
use orchestrator_aws::{Aws, AwsError, Settings};
use tokio_util::sync::CancellationToken;

/// A moto server for this test process.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Points the SDK at `url` with fake credentials, never at AWS.
fn use_endpoint(url: &str) {
    // SAFETY of set_var: each nextest test runs in its own process, before any thread
    // of ours reads the environment.
    std::env::set_var("AWS_ENDPOINT_URL", url);
    std::env::set_var("ORCHESTRATOR_REQUIRE_ENDPOINT", "1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::remove_var("AWS_PROFILE");
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "tests never reach AWS: {url}"
    );
}

impl Moto {
    fn start() -> Moto {
        let server = std::env::var("ORCHESTRATOR_MOTO_SERVER").unwrap_or_else(|_| {
            panic!("ORCHESTRATOR_MOTO_SERVER is not set: run the tests with scripts/test, which installs moto[server] and sets it")
        });
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on {url}");
            std::thread::sleep(Duration::from_millis(50));
        }
        use_endpoint(&url);
        Moto { child, url }
    }

    /// POSTs JSON to one of moto's own endpoints (`/moto-api/...`).
    fn post(&self, path: &str, body: serde_json::Value) {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(self.url.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 2") || answer.starts_with("HTTP/1.0 2"),
            "{path}: {answer}"
        );
    }

    fn transition(&self, model: &str, transition: serde_json::Value) {
        self.post(
            "/moto-api/state-manager/set-transition",
            serde_json::json!({ "model_name": model, "transition": transition }),
        );
    }
}

fn settings() -> Settings {
    Settings {
        region: Some("us-east-1".into()),
        workgroup: Some("primary".into()),
        database: Some("lake".into()),
        output_location: Some("s3://results/athena/".into()),
        warehouse: Some("s3://lake/warehouse/".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_query_is_polled_until_it_succeeds_and_its_preset_results_are_read() {
    let moto = Moto::start();
    // Two status reads per state: QUEUED, QUEUED, RUNNING, RUNNING, SUCCEEDED.
    moto.transition(
        "athena::execution",
        serde_json::json!({"progression": "manual", "times": 2}),
    );
    moto.post(
        "/moto-api/static/athena/query-results",
        serde_json::json!({
            "results": [{
                "rows": [
                    {"Data": [{"VarCharValue": "symbol"}, {"VarCharValue": "n"}]},
                    {"Data": [{"VarCharValue": "NVDA"}, {"VarCharValue": "3"}]},
                    {"Data": [{"VarCharValue": "AMD"}, {}]}
                ],
                "column_info": [
                    {"Name": "symbol", "Type": "varchar", "Nullable": "NULLABLE", "CatalogName": "c", "SchemaName": "s", "TableName": "t", "Label": "symbol", "Precision": 0, "Scale": 0, "CaseSensitive": true},
                    {"Name": "n", "Type": "bigint", "Nullable": "NULLABLE", "CatalogName": "c", "SchemaName": "s", "TableName": "t", "Label": "n", "Precision": 0, "Scale": 0, "CaseSensitive": false}
                ]
            }]
        }),
    );
    let aws = Aws::connect(settings()).await;
    let sql = "SELECT symbol, count(*) AS n FROM stock_daily GROUP BY symbol";
    let done = aws.query(sql, &CancellationToken::new()).await.unwrap();
    assert!(done.polls >= 3, "polled {} times", done.polls);
    let results = aws.results(&done.id, 10).await.unwrap();
    assert_eq!(results.columns, ["symbol", "n"]);
    assert_eq!(
        results.rows,
        [
            vec![Some("NVDA".to_string()), Some("3".to_string())],
            vec![Some("AMD".to_string()), None]
        ]
    );
    let one = aws.results(&done.id, 1).await.unwrap();
    assert!(one.truncated && one.rows.len() == 1);
    // What Athena received, with the workgroup, database and output location.
    let got = aws
        .athena()
        .get_query_execution()
        .query_execution_id(&done.id)
        .send()
        .await
        .unwrap();
    let q = got.query_execution().unwrap();
    assert_eq!(q.query(), Some(sql));
    assert_eq!(q.work_group(), Some("primary"));
    assert_eq!(
        q.query_execution_context().and_then(|c| c.database()),
        Some("lake")
    );
    // Athena names the result file under the output location, as the real one does.
    let out = q
        .result_configuration()
        .and_then(|c| c.output_location())
        .unwrap();
    assert!(out.starts_with("s3://results/athena/"), "{out}");
}

#[tokio::test]
async fn a_query_still_running_when_its_task_is_cancelled_is_stopped() {
    let moto = Moto::start();
    moto.transition(
        "athena::execution",
        serde_json::json!({"progression": "manual", "times": 100000}),
    );
    let aws = Aws::connect(settings()).await;
    let cancel = CancellationToken::new();
    let timer = {
        let cancel = cancel.clone();
        // As a task's timeout does.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cancel.cancel();
        })
    };
    let err = aws.query("SELECT 1", &cancel).await.unwrap_err();
    timer.await.unwrap();
    let AwsError::Cancelled(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.ends_with("StopQueryExecution sent"), "{msg}");
    let list = aws.athena().list_query_executions().send().await.unwrap();
    let id = list.query_execution_ids().first().unwrap().clone();
    let got = aws
        .athena()
        .get_query_execution()
        .query_execution_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.query_execution()
            .and_then(|q| q.status())
            .and_then(|s| s.state())
            .map(|s| s.as_str()),
        Some("CANCELLED"),
        "moto recorded the stop"
    );
}

#[tokio::test]
async fn a_crawler_is_created_run_and_waited_for_then_a_glue_job_runs() {
    let moto = Moto::start();
    moto.transition(
        "glue::crawl",
        serde_json::json!({"progression": "time", "seconds": 1}),
    );
    moto.transition(
        "glue::job_run",
        serde_json::json!({"progression": "manual", "times": 2}),
    );
    let aws = Aws::connect(settings()).await;
    aws.glue()
        .create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name("lake")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let err = aws
        .crawl("bars", "s3://landing/bars/", None, None, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("give `role:`"), "{err}");
    let done = aws
        .crawl(
            "bars",
            "s3://landing/bars/",
            Some("arn:aws:iam::123456789012:role/glue"),
            None,
            &cancel,
        )
        .await
        .unwrap();
    assert!(done.created && !done.updated);
    assert!(done.polls >= 2, "{done:?}");
    // Run again, unchanged: neither created nor updated. (moto has no UpdateCrawler, so
    // re-pointing a crawler is not tested here.)
    let again = aws
        .crawl("bars", "s3://landing/bars/", None, None, &cancel)
        .await
        .unwrap();
    assert!(!again.created && !again.updated, "{again:?}");
    assert_eq!(again.status, "COMPLETED", "moto's word for SUCCEEDED");

    aws.glue()
        .create_job()
        .name("heavy")
        .role("arn:aws:iam::123456789012:role/glue")
        .command(
            aws_sdk_glue::types::JobCommand::builder()
                .name("glueetl")
                .script_location("s3://code/heavy.py")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let args = [("--date".to_string(), "2026-05-11".to_string())].into();
    let run = aws.job_run("heavy", &args, &cancel).await.unwrap();
    assert_eq!(run.state, "SUCCEEDED");
    assert!(run.polls >= 2, "{run:?}");
}

/// What the fake endpoint answers: every query, job run and crawl FAILED.
fn failed(target: &str) -> String {
    match target {
        "AWSGlue.StartJobRun" => r#"{"JobRunId":"jr-1"}"#.into(),
        "AWSGlue.GetJobRun" => r#"{"JobRun":{"Id":"jr-1","JobRunState":"FAILED","ErrorMessage":"An error occurred while calling o97.save: Access Denied (Service: Amazon S3; Status Code: 403)"}}"#.into(),
        "AWSGlue.GetCrawler" => r#"{"Crawler":{"Name":"bars","State":"READY","Targets":{"S3Targets":[{"Path":"s3://landing/bars/"}]},"LastCrawl":{"Status":"FAILED","ErrorMessage":"Insufficient Lake Formation permission(s) on stock"}}}"#.into(),
        "AmazonAthena.StartQueryExecution" => r#"{"QueryExecutionId":"q-1"}"#.into(),
        "AmazonAthena.GetQueryExecution" => r#"{"QueryExecution":{"QueryExecutionId":"q-1","Status":{"State":"FAILED","StateChangeReason":"SYNTAX_ERROR: line 1:8: Column 'nope' cannot be resolved"}}}"#.into(),
        _ => "{}".into(),
    }
}

#[tokio::test]
async fn a_failed_query_fails_with_athenas_reason_and_its_id() {
    let fake = FakeEndpoint::start(failed).unwrap();
    use_endpoint(&fake.url);
    let aws = Aws::connect(settings()).await;
    let err = aws
        .query("SELECT nope FROM t", &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Athena query q-1 FAILED: SYNTAX_ERROR: line 1:8: Column 'nope' cannot be resolved"
    );
    assert_eq!(
        fake.calls(),
        [
            "AmazonAthena.StartQueryExecution",
            "AmazonAthena.GetQueryExecution"
        ]
    );
}

#[tokio::test]
async fn a_failed_glue_job_and_a_failed_crawl_carry_glues_error_messages() {
    let fake = FakeEndpoint::start(failed).unwrap();
    use_endpoint(&fake.url);
    let aws = Aws::connect(settings()).await;
    let cancel = CancellationToken::new();
    let err = aws
        .job_run("heavy", &Default::default(), &cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Glue job heavy run jr-1 FAILED: An error occurred while calling o97.save: Access Denied (Service: Amazon S3; Status Code: 403)"
    );
    let err = aws
        .crawl("bars", "s3://landing/bars/", None, None, &cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "crawler bars: last crawl FAILED: Insufficient Lake Formation permission(s) on stock"
    );
    assert_eq!(
        fake.calls(),
        [
            "AWSGlue.StartJobRun",
            "AWSGlue.GetJobRun",
            "AWSGlue.GetCrawler",
            "AWSGlue.StartCrawler",
            "AWSGlue.GetCrawler"
        ]
    );
}
