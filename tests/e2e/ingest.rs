//! The Alpha Vantage ingest against a real HTTP server on 127.0.0.1 (no test touches the
//! internet).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::common::{sample_response, status, task, walk, FakeApi, Out, Sandbox};

const KEY: &str = "test-api-key-5f3a9c";

const BURST: &str = "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly (1 request per second). You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), raise the per-second burst limit, and instantly access many premium features.";

/// The 2024 daily-limit message, which echoes the caller's key.
fn daily_limit() -> String {
    format!(
        r#"{{"Information": "We have detected your API key as {KEY} and our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."}}"#
    )
}

fn ingest_yaml(url: &str, symbols: &str, extra: &str) -> String {
    format!(
        "name: ingest\ntasks:\n  ingest:\n    kind: alpha_vantage\n    symbols: [{symbols}]\n    output: landing\n    base_url: {url}\n    throttle_wait: 10ms\n{extra}"
    )
}

fn run(sb: &Sandbox, args: &[&str]) -> Out {
    sb.run_with_env(args, &[("ALPHAVANTAGE_API_KEY", KEY)])
}

/// A price as the ingest writes it: always with a decimal point.
fn price(v: f64) -> String {
    let s = v.to_string();
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// The landed file of one bar of a response: `bars/dt=DATE/SYMBOL.csv`.
fn expected_csv(symbol: &str, response: &str, date: &str) -> String {
    let doc: Value = serde_json::from_str(response).unwrap();
    let f = &doc["Time Series (Daily)"][date];
    let n = |k: &str| price(f[k].as_str().unwrap().parse::<f64>().unwrap());
    format!(
        "symbol,date,open,high,low,close,volume\n{symbol},{date},{},{},{},{},{}\n",
        n("1. open"),
        n("2. high"),
        n("3. low"),
        n("4. close"),
        f["5. volume"].as_str().unwrap()
    )
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
        out.stderr.contains("ingest | live: 10 symbols from"),
        "{out:?}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 10, "{requests:?}");
    assert!(requests[0].query.contains("function=TIME_SERIES_DAILY"));
    assert!(requests[0].query.contains("outputsize=compact"));
    assert!(requests[0].query.contains(&format!("apikey={KEY}")));
    for symbol in ["NVDA", "AMD", "MRVL"] {
        // Every bar of the response, each under its own trading date.
        for date in ["2025-05-12", "2025-12-31", "2026-05-11"] {
            let landed = sb.read(&format!("landing/bars/dt={date}/{symbol}.csv"));
            assert_eq!(
                landed,
                expected_csv(symbol, &sample_response(symbol), date),
                "{symbol} {date}"
            );
        }
        assert_eq!(
            sb.read(&format!("landing/responses/{symbol}.json")),
            sample_response(symbol)
        );
    }
    let n = sb.run(&["query", "--json", "SELECT count(*) AS n FROM stock_daily"]);
    assert_eq!(
        serde_json::from_str::<Value>(&n.stdout).unwrap()[0]["n"],
        10,
        "the run's date is published: {n:?}"
    );
}

#[test]
fn a_burst_limited_symbol_waits_and_succeeds_and_calls_are_paced() {
    let api = FakeApi::start(|symbol, nth| {
        if symbol == "AMD" && nth == 1 {
            (200, format!(r#"{{"Information": "{BURST}"}}"#))
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
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 0, "{out:?}");
    let sizes: Vec<bool> = api
        .requests()
        .iter()
        .map(|r| r.query.contains("outputsize=full"))
        .collect();
    assert_eq!(sizes, [true; 4], "`outputsize: full` is asked for");
    assert!(
        out.stderr.contains(
            "AMD: Alpha Vantage is busy: Thank you for using Alpha Vantage! Please consider spreading out"
        ) && out.stderr.contains("retrying in 10ms (attempt 1 of 5)"),
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
        ("INTC", 1) => (
            503,
            "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head></html>"
                .into(),
        ),
        ("INTC", 2) => (
            200,
            "<html><body>We are down for scheduled maintenance</body></html>".into(),
        ),
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
            .contains("INTC: HTTP 503 Service Unavailable; retrying in 10ms (attempt 1 of 5)"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("INTC: Alpha Vantage is busy: an HTML page instead of JSON (an outage or maintenance page); retrying in 20ms (attempt 2 of 5)"),
        "{out:?}"
    );
    assert_eq!(
        sb.read("landing/bars/dt=2026-05-11/INTC.csv"),
        expected_csv("INTC", &sample_response("INTC"), "2026-05-11")
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
        // A date the first run's response does not reach: fetched again.
        vec!["run", "down.yaml", "--date", "2027-01-04"],
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

/// Every text a run left: its output, `show --json`, and every file under the state dir
/// and the landing zone.
fn assert_key_nowhere(sb: &Sandbox, outputs: &[&str]) {
    for text in outputs {
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
}

#[test]
fn the_daily_limit_stops_every_call_at_once_and_names_the_rerun() {
    let api = FakeApi::start(|symbol, nth| match symbol {
        "AMD" => (200, daily_limit()),
        _ => serve_sample(symbol, nth),
    });
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(
            &api.url,
            "NVDA, AMD, INTC, MU",
            "    calls_per_minute: 6000\n",
        ),
    );
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        api.symbols_requested(),
        ["NVDA", "AMD"],
        "no call after the daily limit, and no retry of it"
    );
    let id = out.run_id();
    let show = run(&sb, &["show", &id, "--json"]);
    let doc: Value = serde_json::from_str(&show.stdout).unwrap();
    let error = task(&doc, "ingest")["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with(
            "daily request limit reached (25 calls a day, `daily_quota`; Alpha Vantage said: We have detected your API key as *** and"
        ),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(
            "`orchestrator rerun {id}` after midnight US/Eastern fetches the 3 missing symbols: AMD, INTC, MU"
        )),
        "{error}"
    );
    assert!(sb.path("landing/bars/dt=2026-05-11/NVDA.csv").exists());
    // The counter now says the day is spent: a rerun today calls nothing, and says why.
    let again = run(&sb, &["rerun", &id]);
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(api.requests().len(), 2, "{:?}", api.symbols_requested());
    let show2 = run(&sb, &["show", &id, "--json"]);
    assert!(
        show2.stdout.contains(
            "daily request limit reached (25 calls a day, `daily_quota`); `orchestrator rerun"
        ),
        "{show2:?}"
    );
    assert_key_nowhere(
        &sb,
        &[
            &out.stdout,
            &out.stderr,
            &show.stdout,
            &again.stdout,
            &again.stderr,
            &show2.stdout,
        ],
    );
}

#[test]
fn a_premium_refusal_fails_at_once_naming_the_option_and_the_alternatives() {
    let api = FakeApi::start(|_, _| {
        (200, r#"{"Information": "Thank you for using Alpha Vantage! The **outputsize=full** parameter value is a premium feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium features"}"#.into())
    });
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(
            &api.url,
            "NVDA, AMD",
            "    calls_per_minute: 6000\n    outputsize: full\n",
        ),
    );
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        api.symbols_requested(),
        ["NVDA"],
        "not retried, no other symbol asked"
    );
    let error = task(&sb.show(&out.run_id()), "ingest")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("`outputsize: full` needs a premium Alpha Vantage plan, and this key has none")
            && error.contains("Use `outputsize: compact` (the last 100 trading days) and land older history as CSV files"),
        "{error}"
    );
}

#[test]
fn the_quota_counter_spends_what_is_left_then_refuses() {
    let api = FakeApi::start(serve_sample);
    let sb = Sandbox::new();
    sb.write(
        "i.yaml",
        &ingest_yaml(
            &api.url,
            "NVDA, AMD, INTC",
            "    calls_per_minute: 6000\n    daily_quota: 2\n",
        ),
    );
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "daily quota: 3 symbols to fetch, but only 2 of 2 calls are left today (UTC); fetching 2"
        ),
        "{out:?}"
    );
    assert_eq!(api.symbols_requested(), ["NVDA", "AMD"]);
    let error = task(&sb.show(&out.run_id()), "ingest")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("fetches the 1 missing symbols: INTC"),
        "{error}"
    );
    // The count is in the state store: another run today makes no call at all.
    let out = run(&sb, &["run", "i.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(api.requests().len(), 2);
}

#[test]
fn reprocess_replaces_a_revised_bar_and_names_it() {
    let sb = Sandbox::new();
    let sample = sb.path("sample");
    std::fs::create_dir(&sample).unwrap();
    std::fs::write(sample.join("NVDA.json"), sample_response("NVDA")).unwrap();
    let yaml = |reprocess: bool| {
        format!(
            "name: revise\ntasks:\n  ingest:\n    kind: alpha_vantage\n    symbols: [NVDA]\n    output: landing\n    sample_dir: sample\n    reprocess: {reprocess}\n"
        )
    };
    sb.write("r.yaml", &yaml(false));
    let out = sb.run(&["run", "r.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 0, "{out:?}");
    let untouched = std::fs::metadata(sb.path("landing/bars/dt=2026-05-07/NVDA.csv"))
        .unwrap()
        .modified()
        .unwrap();
    // The service corrects an earlier bar.
    let mut doc: Value = serde_json::from_str(&sample_response("NVDA")).unwrap();
    doc["Time Series (Daily)"]["2026-05-08"]["4. close"] = Value::from("999.5000");
    std::fs::write(sample.join("NVDA.json"), doc.to_string()).unwrap();
    // Without reprocess the date's bar is landed already: nothing is read again.
    let out = sb.run(&["run", "r.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!sb
        .read("landing/bars/dt=2026-05-08/NVDA.csv")
        .contains("999.5"));
    sb.write("r.yaml", &yaml(true));
    let out = sb.run(&["run", "r.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(
        task(&show, "ingest")["outputs"]["revised"],
        serde_json::json!(["NVDA 2026-05-08"])
    );
    assert_eq!(task(&show, "ingest")["outputs"]["new_bars"], 0);
    assert!(sb
        .read("landing/bars/dt=2026-05-08/NVDA.csv")
        .contains(",999.5,"));
    let after = std::fs::metadata(sb.path("landing/bars/dt=2026-05-07/NVDA.csv"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(untouched, after, "an unchanged bar is not rewritten");
}
