//! The Alpha Vantage ingest against a real HTTP server on 127.0.0.1 (no test touches the
//! internet).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::common::{sample_response, status, task, walk, FakeApi, Out, Sandbox};

const KEY: &str = "test-api-key-5f3a9c";

fn ingest_yaml(url: &str, symbols: &str, extra: &str) -> String {
    format!(
        "name: ingest\ntasks:\n  ingest:\n    kind: alpha_vantage\n    symbols: [{symbols}]\n    output: landing\n    base_url: {url}\n    throttle_wait: 10ms\n{extra}"
    )
}

fn run(sb: &Sandbox, args: &[&str]) -> Out {
    sb.run_with_env(args, &[("ALPHAVANTAGE_API_KEY", KEY)])
}

/// The bars a response holds, as the CSV lines we expect (oldest first).
fn expected_csv(symbol: &str, response: &str) -> String {
    let doc: Value = serde_json::from_str(response).unwrap();
    let mut rows: Vec<(String, String)> = doc["Time Series (Daily)"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(date, f)| {
            let n = |k: &str| f[k].as_str().unwrap().parse::<f64>().unwrap();
            (
                date.clone(),
                format!(
                    "{symbol},{date},{},{},{},{},{}",
                    n("1. open"),
                    n("2. high"),
                    n("3. low"),
                    n("4. close"),
                    f["5. volume"].as_str().unwrap()
                ),
            )
        })
        .collect();
    rows.sort();
    let mut out = String::from("symbol,date,open,high,low,close,volume\n");
    for (_, r) in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out
}

fn serve_sample(symbol: &str, _nth: usize) -> (u16, String) {
    (200, sample_response(symbol))
}

#[test]
fn live_ingest_lands_what_the_server_serves_and_daily_publishes_it() {
    let api = FakeApi::start(serve_sample);
    let sb = Sandbox::new();
    let daily = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/daily.yaml");
    let out = run(
        &sb,
        &[
            "run",
            daily.to_str().unwrap(),
            "--param",
            &format!("landing={}", sb.path("landing").display()),
            "--param",
            &format!("alpha_vantage_url={}", api.url),
            "--param",
            "calls_per_minute=6000",
            "--date",
            "2026-05-11",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("ingest | live: fetching 10 symbols"),
        "{out:?}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 10, "{requests:?}");
    assert!(requests[0].query.contains("function=TIME_SERIES_DAILY"));
    assert!(requests[0].query.contains("outputsize=compact"));
    assert!(requests[0].query.contains(&format!("apikey={KEY}")));
    for symbol in ["NVDA", "AMD", "MRVL"] {
        let landed = sb.read(&format!("landing/bars/dt=2026-05-11/{symbol}.csv"));
        assert_eq!(
            landed,
            expected_csv(symbol, &sample_response(symbol)),
            "{symbol}"
        );
        assert_eq!(
            sb.read(&format!("landing/responses/dt=2026-05-11/{symbol}.json")),
            sample_response(symbol)
        );
    }
    let n = sb.run(&["query", "--json", "SELECT count(*) AS n FROM stock_daily"]);
    assert_eq!(
        serde_json::from_str::<Value>(&n.stdout).unwrap()[0]["n"],
        2510,
        "{n:?}"
    );
}

#[test]
fn a_throttled_symbol_waits_and_succeeds_and_calls_are_paced() {
    let api = FakeApi::start(|symbol, nth| {
        if symbol == "AMD" && nth == 1 {
            (200, r#"{"Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."}"#.into())
        } else {
            serve_sample(symbol, nth)
        }
    });
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(
            &api.url,
            "NVDA, AMD, INTC",
            "    calls_per_minute: 600\n    outputsize: full\n",
        ),
    );
    let out = run(&sb, &["run", "i.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let sizes: Vec<bool> = api
        .requests()
        .iter()
        .map(|r| r.query.contains("outputsize=full"))
        .collect();
    assert_eq!(sizes, [true; 4], "a backfill asks for the full history");
    assert!(
        out.stderr
            .contains("AMD: throttled: Thank you for using Alpha Vantage!"),
        "{out:?}"
    );
    assert_eq!(api.symbols_requested(), ["NVDA", "AMD", "AMD", "INTC"]);
    // 600 calls a minute: 100 ms between departures. Arrivals are measured at the server,
    // so a late arrival shortens the next gap on a busy machine; unpaced calls would be a
    // few ms apart, so 60 ms still tells pacing apart from none.
    let requests = api.requests();
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(60),
            "calls {:?} apart: {requests:?}",
            gap
        );
    }
}

#[test]
fn a_rejected_symbol_does_not_lose_the_others_and_rerun_fetches_only_it() {
    let api = FakeApi::start(|symbol, nth| {
        if symbol == "INTC" {
            (200, r#"{"Error Message": "Invalid API call. Please retry or visit the documentation for TIME_SERIES_DAILY."}"#.into())
        } else {
            serve_sample(symbol, nth)
        }
    });
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(&api.url, "NVDA, INTC, AMD", "    calls_per_minute: 6000\n"),
    );
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let show = sb.show(&id);
    let error = task(&show, "ingest")["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 of 3 symbols failed (INTC); the others were landed:"),
        "{error}"
    );
    assert!(
        error.contains("- INTC: rejected by Alpha Vantage: INTC: Invalid API call."),
        "{error}"
    );
    assert!(sb.path("landing/bars/dt=2026-05-11/NVDA.csv").exists());
    assert!(sb.path("landing/bars/dt=2026-05-11/AMD.csv").exists());
    assert!(!sb.path("landing/bars/dt=2026-05-11/INTC.csv").exists());
    assert_eq!(
        api.symbols_requested(),
        ["NVDA", "INTC", "AMD"],
        "a rejection is not retried"
    );

    api.set_handler(serve_sample);
    let out = run(&sb, &["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        api.symbols_requested(),
        ["NVDA", "INTC", "AMD", "INTC"],
        "only INTC fetched again"
    );
    let show = sb.show(&id);
    assert_eq!(status(&show, "ingest"), "succeeded");
    assert_eq!(
        task(&show, "ingest")["outputs"]["fetched"],
        serde_json::json!(["INTC"])
    );
}

#[test]
fn malformed_answers_name_symbol_and_field_and_server_errors_are_retried() {
    let api = FakeApi::start(|symbol, nth| match (symbol, nth) {
        ("NVDA", _) => (200, "{\"Time Series (Daily)\": {".into()),
        ("AMD", _) => {
            let mut doc: Value = serde_json::from_str(&sample_response("AMD")).unwrap();
            doc["Time Series (Daily)"]["2026-05-11"]
                .as_object_mut()
                .unwrap()
                .remove("2. high");
            (200, doc.to_string())
        }
        ("INTC", 1) => (500, "upstream failure".into()),
        _ => serve_sample(symbol, nth),
    });
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(&api.url, "NVDA, AMD, INTC", "    calls_per_minute: 6000\n"),
    );
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.show(&out.run_id());
    let error = task(&show, "ingest")["error"].as_str().unwrap();
    assert!(
        error.starts_with("2 of 3 symbols failed (NVDA, AMD)"),
        "{error}"
    );
    assert!(
        error.contains("- NVDA: NVDA: the response is not valid JSON"),
        "{error}"
    );
    assert!(
        error.contains("- AMD: AMD, 2026-05-11: field \"2. high\" is missing"),
        "{error}"
    );
    assert!(
        out.stderr
            .contains("INTC: HTTP 500 Internal Server Error; retrying in 10ms (attempt 1 of 5)"),
        "{out:?}"
    );
    assert_eq!(
        sb.read("landing/bars/dt=2026-05-11/INTC.csv"),
        expected_csv("INTC", &sample_response("INTC"))
    );
}

#[test]
fn the_api_key_never_reaches_output_state_or_files() {
    let api = FakeApi::start(|symbol, nth| match symbol {
        "AMD" => (404, "not here".into()),
        "INTC" => (
            200,
            r#"{"Error Message": "the key you gave is wrong"}"#.into(),
        ),
        _ => serve_sample(symbol, nth),
    });
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(&api.url, "NVDA, AMD, INTC", "    calls_per_minute: 6000\n"),
    );
    // And a server that is not there: a network error, whose text names the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    sb.write(
        "down.yaml",
        &ingest_yaml(
            &format!("http://{closed}/query"),
            "NVDA",
            "    max_attempts: 2\n    calls_per_minute: 6000\n",
        ),
    );
    let mut outputs = Vec::new();
    for args in [
        vec!["run", "i.yaml"],
        vec!["run", "down.yaml", "--date", "2026-01-02"],
    ] {
        let out = run(&sb, &args);
        assert_eq!(out.code, 1, "{out:?}");
        let show = run(&sb, &["show", &out.run_id(), "--json"]);
        outputs.extend([out.stdout, out.stderr, show.stdout]);
    }
    let joined = outputs.join("\n");
    assert!(
        joined.contains("AMD: HTTP 404 Not Found from http://127.0.0.1:"),
        "{joined}"
    );
    assert!(
        joined.contains("NVDA: gave up after 2 attempts; last: request failed: "),
        "{joined}"
    );
    for text in &outputs {
        assert!(!text.contains(KEY), "key leaked:\n{text}");
    }
    for dir in [sb.state_dir(), sb.path("landing")] {
        for file in walk(&dir) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "key stored in {}",
                file.display()
            );
        }
    }
    assert!(
        api.requests().iter().all(|r| r.query.contains(KEY)),
        "the server did get the key"
    );
}
