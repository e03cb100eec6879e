//! The reference pipeline, workflows/daily.yaml, on the bundled sample: publish, idempotent
//! re-runs, a failed audit, and a crash in the middle of publish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{sample_response, status, task, walk, FakeApi, Sandbox};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub(crate) fn daily() -> String {
    repo("workflows/daily.yaml").display().to_string()
}

/// One bar from the source CSVs (Date,Close,High,Low,Open,Volume).
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub(crate) date: String,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
}

pub(crate) fn source_bars() -> BTreeMap<String, Vec<Bar>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(repo("data/sample/chips")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "csv") {
            continue;
        }
        let symbol = p.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut bars: Vec<Bar> = text
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let n = |i: usize| f[i].parse::<f64>().unwrap();
                Bar {
                    date: f[0].to_string(),
                    close: n(1),
                    high: n(2),
                    low: n(3),
                    open: n(4),
                    volume: n(5),
                }
            })
            .collect();
        bars.sort_by(|a, b| a.date.cmp(&b.date));
        out.insert(symbol, bars);
    }
    out
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The computed columns, derived here independently of the pipeline's SQL.
pub(crate) fn expected(bars: &[Bar]) -> Vec<BTreeMap<&'static str, Value>> {
    let sma = |i: usize, n: usize| {
        (i + 1 >= n).then(|| {
            mean(
                &bars[i + 1 - n..=i]
                    .iter()
                    .map(|b| b.close)
                    .collect::<Vec<_>>(),
            )
        })
    };
    let mut rows = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &bars[p]);
        let pct = prev.map(|p| (b.close - p.close) / p.close * 100.0);
        let body = (b.close - b.open).abs();
        let range = b.high - b.low;
        let upper = b.high - b.open.max(b.close);
        let lower = b.open.min(b.close) - b.low;
        let candle = if range == 0.0 || body <= 0.1 * range {
            "doji"
        } else if lower >= 2.0 * body && upper <= body {
            "hammer"
        } else if upper >= 2.0 * body && lower <= body {
            "shooting_star"
        } else if b.close > b.open {
            "bullish"
        } else {
            "bearish"
        };
        let (s5, s20) = (sma(i, 5), sma(i, 20));
        let (p5, p20) = (
            i.checked_sub(1).and_then(|p| sma(p, 5)),
            i.checked_sub(1).and_then(|p| sma(p, 20)),
        );
        let signal = match (p5, p20, s5, s20) {
            (Some(a), Some(b2), Some(c), Some(d)) if a <= b2 && c > d => Some("BUY"),
            (Some(a), Some(b2), Some(c), Some(d)) if a >= b2 && c < d => Some("SELL"),
            _ => None,
        };
        let vol7: Vec<f64> = bars[i.saturating_sub(7)..i]
            .iter()
            .map(|b| b.volume)
            .collect();
        let ln2 = 2f64.ln();
        let mut row = BTreeMap::new();
        row.insert("date", Value::from(b.date.clone()));
        row.insert("daily_return", Value::from(b.close - b.open));
        row.insert(
            "avg_price",
            Value::from((b.open + b.high + b.low + b.close) / 4.0),
        );
        row.insert(
            "volatility",
            Value::from(
                0.5 * (b.high / b.low).ln().powi(2)
                    - (2.0 * ln2 - 1.0) * (b.close / b.open).ln().powi(2),
            ),
        );
        row.insert("price_change_pct", pct.map_or(Value::Null, Value::from));
        row.insert(
            "rolling_avg_5d",
            Value::from(mean(
                &bars[i.saturating_sub(4)..=i]
                    .iter()
                    .map(|b| b.close)
                    .collect::<Vec<_>>(),
            )),
        );
        row.insert(
            "volume_surge_ratio",
            if vol7.is_empty() {
                Value::Null
            } else {
                Value::from(b.volume / mean(&vol7))
            },
        );
        row.insert("candle_type", Value::from(candle));
        row.insert("is_market_up", Value::from(b.close > b.open));
        row.insert("sma_5", s5.map_or(Value::Null, Value::from));
        row.insert("sma_20", s20.map_or(Value::Null, Value::from));
        row.insert("signal", signal.map_or(Value::Null, Value::from));
        row.insert(
            "is_anomaly",
            Value::from(pct.is_some_and(|p| p.abs() > 5.0)),
        );
        rows.push(row);
    }
    rows
}

fn close_enough(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if !a.is_boolean() => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

fn query(sb: &Sandbox, sql: &str) -> Value {
    let out = sb.run(&["query", "--json", sql]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn count(sb: &Sandbox, sql: &str) -> u64 {
    query(sb, sql)[0]["n"].as_u64().unwrap()
}

pub(crate) fn landing(sb: &Sandbox) -> String {
    format!("landing={}", sb.path("landing").display())
}

const KEY: &str = "test-api-key-daily-77e1";

/// Every published row against the full-history computation (the lookback of each run
/// must give the same windows as the whole history), every column.
pub(crate) fn assert_matches_full_history(sb: &Sandbox, from: &str, to: &str) -> usize {
    let rows = query(
        sb,
        "SELECT symbol, CAST(date AS VARCHAR) AS date, daily_return, avg_price, volatility, price_change_pct, rolling_avg_5d, \
         volume_surge_ratio, candle_type, is_market_up, sma_5, sma_20, signal, is_anomaly \
         FROM stock_daily ORDER BY symbol, date",
    );
    let rows = rows.as_array().unwrap();
    let mut i = 0;
    for (symbol, bars) in &source_bars() {
        for want in expected(bars) {
            let date = want["date"].as_str().unwrap();
            if date < from || date > to {
                continue;
            }
            let got = &rows[i];
            assert_eq!(got["symbol"], symbol.as_str());
            for (col, w) in &want {
                assert!(
                    close_enough(&got[*col], w),
                    "{symbol} {date} {col}: got {}, want {w}",
                    got[*col]
                );
            }
            i += 1;
        }
    }
    assert_eq!(i, rows.len(), "stock_daily holds rows outside {from}..{to}");
    i
}

#[test]
fn backfill_of_30_trading_days_then_a_daily_run_equals_the_full_history_for_us_and_another_delta_reader_with_one_request_per_symbol(
) {
    let api = FakeApi::start(|symbol, _| (200, sample_response(symbol)));
    let sb = Sandbox::new();
    let live = [
        "--param".to_string(),
        landing(&sb),
        "--param".to_string(),
        format!("alpha_vantage_url={}", api.url),
        "--param".to_string(),
        "calls_per_minute=6000".to_string(),
    ];
    let args = |head: &[&str]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(live.iter().cloned())
            .collect()
    };
    // 2025-06-20 .. 2025-08-01: 30 trading days and the July 4th holiday.
    let a = args(&[
        "backfill",
        &daily(),
        "--from",
        "2025-06-20",
        "--to",
        "2025-08-01",
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = sb.run_with_env(&a, &[("ALPHAVANTAGE_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("31 dates, 31 to run")
            && out.stdout.contains("succeeded: 31 succeeded"),
        "{out:?}"
    );
    let holiday = out
        .stdout
        .lines()
        .find(|l| l.starts_with("2025-07-04"))
        .unwrap_or_default();
    assert!(
        holiday.contains("succeeded") && holiday.contains("market closed: Independence Day"),
        "{out:?}"
    );
    // The next trading day, as the daemon's schedule would start it.
    let a = args(&["run", &daily(), "--date", "2025-08-04"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = sb.run_with_env(&a, &[("ALPHAVANTAGE_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{out:?}");

    assert_eq!(
        assert_matches_full_history(&sb, "2025-06-20", "2025-08-04"),
        310
    );
    // Another Delta reader (the Python `deltalake` package) reads the published table
    // with every row and column equal to what was just checked.
    let (_, rows) = super::delta::read_with_python(&sb.state_dir().join("warehouse/stock_daily"));
    super::delta::assert_same_rows(&rows, &super::delta::ours(&sb));
    let mut symbols = api.symbols_requested();
    symbols.sort();
    assert_eq!(
        symbols,
        ["AMD", "ASML", "AVGO", "INTC", "MRVL", "MU", "NVDA", "QCOM", "TSM", "TXN"],
        "one request per symbol for the whole range"
    );
    // The landing zone holds each bar once: one file per (symbol, trading date), one row.
    let bars = walk(&sb.path("landing/bars"));
    let total: usize = source_bars().values().map(Vec::len).sum();
    assert_eq!(bars.len(), total);
    let mut keys = std::collections::BTreeSet::new();
    for f in &bars {
        let text = std::fs::read_to_string(f).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{}", f.display());
        let fields: Vec<&str> = rows[0].split(',').collect();
        let dt = f.parent().unwrap().file_name().unwrap().to_string_lossy();
        assert_eq!(
            dt,
            format!("dt={}", fields[1]),
            "landed under its trading date"
        );
        assert!(keys.insert((fields[0].to_string(), fields[1].to_string())));
    }
}

#[test]
fn a_market_holiday_ends_succeeded_with_everything_after_ingest_skipped() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--date",
        "2025-07-04",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(show["status"], "succeeded");
    assert_eq!(status(&show, "ingest"), "succeeded");
    let reason = "short-circuited by `ingest`: no bars for 2025-07-04 (market closed: Independence Day); the last bar before it is 2025-07-03";
    for t in [
        "crawl",
        "drop_temp",
        "create_temp",
        "quality_check",
        "publish",
        "signal_alerts",
    ] {
        assert_eq!(status(&show, t), "skipped", "{t}");
        assert_eq!(task(&show, t)["error"], reason, "{t}");
    }
    let tables = sb.run(&["tables", "--json"]);
    assert!(
        !tables.stdout.contains("stock_daily"),
        "nothing published: {tables:?}"
    );
    // A weekday that is not a holiday but has no bar yet is not mistaken for one.
    let out = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--date",
        "2026-05-12",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = task(&sb.show(&out.run_id()), "ingest")["error"]
        .as_str()
        .unwrap()
        .to_string();
    // Offline, the message names the sample and its last day (live, it says the day's
    // bar is not published yet).
    assert!(
        error.starts_with("no bars for 2026-05-12: offline")
            && error.contains("end at 2026-05-11")
            && !error.contains("market closed"),
        "{error}"
    );
}

#[test]
fn rerunning_a_day_inserts_nothing() {
    let sb = Sandbox::new();
    let first = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--date",
        "2026-05-11",
    ]);
    assert_eq!(first.code, 0, "{first:?}");
    let again = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--date",
        "2026-05-11",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    let show = sb.show(&again.run_id());
    assert_eq!(
        task(&show, "ingest")["outputs"]["fetched"],
        serde_json::json!([])
    );
    assert_eq!(task(&show, "publish")["outputs"]["inserted"], 0);
    assert_eq!(task(&show, "publish")["outputs"]["already_present"], 10);
    assert_eq!(count(&sb, "SELECT count(*) AS n FROM stock_daily"), 10);
    assert_matches_full_history(&sb, "2026-05-11", "2026-05-11");
}

/// Every file under `dir` (its Delta log included), by relative path, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A copy of the bundled responses, changed by `edit(symbol, json)`.
pub(crate) fn sample_copy(sb: &Sandbox, name: &str, edit: impl Fn(&str, &mut Value)) -> String {
    let dir = sb.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(repo("data/sample/alpha_vantage")).unwrap() {
        let p = e.unwrap().path();
        let symbol = p.file_stem().unwrap().to_string_lossy().into_owned();
        let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        edit(&symbol, &mut doc);
        std::fs::write(dir.join(p.file_name().unwrap()), doc.to_string()).unwrap();
    }
    format!("sample={}", dir.display())
}

/// Day one: publishes everything before 2026-05-01 (run date 2026-04-30). Returns the rows
/// published, the production table's directory and its files.
fn publish_day_one(sb: &Sandbox) -> (u64, PathBuf, Vec<(String, Vec<u8>)>) {
    let early = sample_copy(sb, "early", |_, doc| {
        let series = doc["Time Series (Daily)"].as_object_mut().unwrap();
        series.retain(|date, _| date.as_str() < "2026-05-01");
    });
    let out = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(sb),
        "--param",
        &early,
        "--date",
        "2026-04-30",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let published = count(sb, "SELECT count(*) AS n FROM stock_daily");
    let prod = sb.state_dir().join("warehouse/stock_daily");
    let before = files(&prod);
    // The first publish shares the audited table's files (hard links) instead of
    // rewriting them; the next run's drop of the temp table must leave them readable.
    let temp = sb.state_dir().join("warehouse/stock_daily_tmp");
    let inodes = |dir: &Path| -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .map(|e| e.metadata().unwrap().ino())
            .collect();
        v.sort();
        v
    };
    assert!(!before.is_empty());
    assert_eq!(
        inodes(&prod),
        inodes(&temp),
        "the first publish shares files"
    );
    (published, prod, before)
}

#[test]
fn a_failed_audit_publishes_nothing_and_rerun_from_create_temp_recovers() {
    let sb = Sandbox::new();
    let (published, prod, before) = publish_day_one(&sb);

    // Day two: the full sample, with one bad bar (high < low).
    let bad = sample_copy(&sb, "bad", |symbol, doc| {
        if symbol == "NVDA" {
            doc["Time Series (Daily)"]["2026-05-11"]["2. high"] = Value::from("200.0000");
        }
    });
    let out = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--param",
        &bad,
        "--date",
        "2026-05-11",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let show = sb.show(&id);
    assert_eq!(status(&show, "quality_check"), "failed");
    assert_eq!(status(&show, "publish"), "skipped");
    let error = task(&show, "quality_check")["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 of 13 checks failed on stock_daily_tmp:"),
        "{error}"
    );
    assert!(
        error.contains("- sql(SELECT * FROM stock_daily_tmp WHERE high < low): 1 violation"),
        "{error}"
    );
    assert!(
        error.contains(
            r#""symbol":"NVDA","date":"2026-05-11","open":214.04,"high":200.0,"low":213.89"#
        ),
        "{error}"
    );
    let checks = task(&show, "quality_check")["history"][0]["outputs"]["checks"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        checks, 13,
        "every rule's result is an output, even on failure"
    );
    assert_eq!(files(&prod), before, "production files untouched");
    assert_eq!(
        count(&sb, "SELECT count(*) AS n FROM stock_daily"),
        published
    );

    // Fix the landed raw bar, then rebuild from create_temp.
    let raw = sb.path("landing/bars/dt=2026-05-11/NVDA.csv");
    let fixed = std::fs::read_to_string(&raw).unwrap().replace(
        "NVDA,2026-05-11,214.04,200.0,",
        "NVDA,2026-05-11,214.04,222.3,",
    );
    assert_ne!(
        fixed,
        std::fs::read_to_string(&raw).unwrap(),
        "the bad row is in the landed file"
    );
    std::fs::write(&raw, fixed).unwrap();
    let out = sb.run(&["rerun", &id, "--from", "create_temp"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&id);
    for (t, attempts) in [
        ("ingest", 1),
        ("crawl", 1),
        ("drop_temp", 1),
        ("create_temp", 2),
        ("quality_check", 2),
        ("publish", 1),
    ] {
        assert_eq!(task(&show, t)["attempts"], attempts, "{t}");
    }
    assert_eq!(count(&sb, "SELECT count(*) AS n FROM stock_daily"), 20);
    assert_eq!(
        count(&sb, "SELECT count(*) AS n FROM (SELECT symbol, date FROM stock_daily GROUP BY symbol, date HAVING count(*) > 1) AS d"),
        0
    );
}

#[test]
fn a_crash_during_publish_leaves_production_unchanged_and_rerun_completes_it() {
    let sb = Sandbox::new();
    let (published, prod, before) = publish_day_one(&sb);

    // Stop publish after it wrote the new rows' files and before it commits them.
    let hook = sb.path("hook");
    std::fs::create_dir(&hook).unwrap();
    let mut cmd = sb.command(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--date",
        "2026-05-11",
    ]);
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

    // The log and every committed file are as they were; the new files are extra, and
    // no reader sees them.
    let after = files(&prod);
    for f in &before {
        assert!(after.contains(f), "{} changed or went", f.0);
    }
    let extra: Vec<&String> = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| &f.0)
        .collect();
    assert!(
        !extra.is_empty()
            && extra
                .iter()
                .all(|f| f.ends_with(".parquet") && !f.contains("_delta_log")),
        "{extra:?}"
    );
    assert_eq!(
        count(&sb, "SELECT count(*) AS n FROM stock_daily"),
        published
    );
    let runs: Value = serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap();
    assert_eq!(runs[0]["status"], "interrupted");
    let id = runs[0]["id"].as_str().unwrap().to_string();
    // The uncommitted files are leftovers, and `state check` says so.
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check
            .stdout
            .contains("left uncommitted by an interrupted publish"),
        "{check:?}"
    );

    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    // The successful publish removed the leftovers before writing its own files.
    for f in &extra {
        assert!(!prod.join(f).exists(), "{f} is still there");
    }
    let check = sb.run(&["state", "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    let show = sb.show(&id);
    assert_eq!(
        task(&show, "create_temp")["attempts"],
        1,
        "only publish re-ran"
    );
    assert_eq!(task(&show, "publish")["attempts"], 2);
    assert_eq!(published, 10);
    assert_eq!(task(&show, "publish")["outputs"]["inserted"], 10);
    assert_eq!(count(&sb, "SELECT count(*) AS n FROM stock_daily"), 20);
    assert_eq!(
        count(&sb, "SELECT count(*) AS n FROM (SELECT symbol, date FROM stock_daily GROUP BY symbol, date HAVING count(*) > 1) AS d"),
        0
    );
}

#[test]
fn history_landed_as_csv_files_runs_without_key_or_sample_and_matches_the_full_history() {
    let sb = Sandbox::new();
    let mut cmd = std::process::Command::new(repo("scripts/land-history"));
    cmd.arg(sb.path("landing"));
    for e in std::fs::read_dir(repo("data/sample/chips")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "csv") {
            cmd.arg(p);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // No key and an empty sample dir: every bar must come from the landed history.
    std::fs::create_dir(sb.path("empty")).unwrap();
    let sample = format!("sample={}", sb.path("empty").display());
    let out = sb.run(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--param",
        &sample,
        "--date",
        "2025-08-04",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("every symbol's bar for 2025-08-04 is landed already; nothing fetched"),
        "{out:?}"
    );
    assert_eq!(
        assert_matches_full_history(&sb, "2025-08-04", "2025-08-04"),
        10
    );
}

/// The alerts `daily.yaml` should send for `date`: (dedupe key, row) for each crossover and
/// each move over 5 %, from the independent computation, with the day's close.
fn expected_alerts(date: &str) -> BTreeMap<String, BTreeMap<&'static str, Value>> {
    let mut out = BTreeMap::new();
    for (symbol, bars) in &source_bars() {
        for (bar, mut row) in bars.iter().zip(expected(bars)) {
            if row["date"] != date {
                continue;
            }
            row.insert("close", Value::from(bar.close));
            if !row["signal"].is_null() {
                out.insert(format!("signal:{symbol}:{date}"), row.clone());
            }
            if row["is_anomaly"] == true {
                out.insert(format!("anomaly:{symbol}:{date}"), row.clone());
            }
        }
    }
    out
}

#[test]
fn signal_alerts_sends_each_crossover_and_anomaly_of_the_day_once_and_a_rerun_sends_nothing_new() {
    // The newest day of the sample with both a crossover and an anomaly.
    let dates: std::collections::BTreeSet<String> = source_bars()
        .values()
        .flat_map(|bars| bars.iter().map(|b| b.date.clone()))
        .collect();
    let (date, want) = dates
        .iter()
        .rev()
        .map(|d| (d.clone(), expected_alerts(d)))
        .find(|(_, a)| {
            a.keys().any(|k| k.starts_with("signal:"))
                && a.keys().any(|k| k.starts_with("anomaly:"))
        })
        .expect("the sample has a day with a crossover and an anomaly");

    let sb = Sandbox::new();
    let out = sb.run(&["run", &daily(), "--param", &landing(&sb), "--date", &date]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let alerts_file = sb.state_dir().join("alerts.jsonl");
    let read_alerts = || -> Vec<Value> {
        std::fs::read_to_string(&alerts_file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let alerts = read_alerts();
    let keys: Vec<&str> = alerts.iter().map(|a| a["key"].as_str().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, want.keys().map(String::as_str).collect::<Vec<_>>());
    for alert in &alerts {
        let key = alert["key"].as_str().unwrap();
        let row = &want[key];
        let symbol = key.split(':').nth(1).unwrap();
        assert_eq!(alert["workflow"], "daily");
        assert_eq!(alert["run_id"], id.as_str());
        assert_eq!(alert["logical_date"], date.as_str());
        let two = |col: &str| format!("{:.2}", row[col].as_f64().unwrap());
        let message = alert["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("(close {}", two("close"))),
            "{message}"
        );
        if key.starts_with("signal:") {
            let signal = row["signal"].as_str().unwrap();
            let dir = if signal == "BUY" { "above" } else { "below" };
            assert!(
                message.starts_with(&format!(
                    "{symbol}: SMA-5 crossed {dir} SMA-20 — {signal} ("
                )),
                "{message}"
            );
            assert!(
                message.contains(&format!("SMA-5 {}", two("sma_5"))),
                "{message}"
            );
            assert!(
                message.contains(&format!("SMA-20 {}", two("sma_20"))),
                "{message}"
            );
        } else {
            assert!(
                message.starts_with(&format!(
                    "{symbol}: moved {} % in a day",
                    two("price_change_pct")
                )),
                "{message}"
            );
        }
    }
    let show = sb.show(&id);
    assert_eq!(task(&show, "signal_alerts")["outputs"]["sent"], want.len());

    // Rerunning the alert task finds every key sent, by this run: nothing is sent again.
    let again = sb.run(&["rerun", &id, "--from", "signal_alerts"]);
    assert_eq!(again.code, 0, "{again:?}");
    let show = sb.show(&again.run_id());
    let outputs = &task(&show, "signal_alerts")["outputs"];
    assert_eq!(outputs["sent"], 0, "{outputs}");
    assert_eq!(outputs["already_sent"], want.len(), "{outputs}");
    assert_eq!(read_alerts().len(), want.len());
}

#[test]
fn without_a_key_or_a_date_the_offline_run_takes_the_samples_newest_day_and_says_so() {
    let sb = Sandbox::new();
    let mut c = sb.command(&["run", &daily(), "--param", &landing(&sb)]);
    c.env_remove("ALPHAVANTAGE_API_KEY");
    let out = crate::common::Out::from(c.output().unwrap());
    assert_eq!(out.code, 0, "{out:?}");
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("logical date 2026-05-11: offline") && first.contains("--date"),
        "{out:?}"
    );
    assert_eq!(sb.show(&out.run_id())["logical_date"], "2026-05-11");
    // A date past the sample says where the sample ends, not that the market is late.
    let mut c = sb.command(&[
        "run",
        &daily(),
        "--param",
        &landing(&sb),
        "--date",
        "2026-06-01",
    ]);
    c.env_remove("ALPHAVANTAGE_API_KEY");
    let out = crate::common::Out::from(c.output().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("sample responses in") && said.contains("end at 2026-05-11"),
        "{out:?}"
    );
}

#[test]
fn a_scheduled_workflow_run_by_hand_takes_the_date_of_its_most_recent_fire() {
    let sb = Sandbox::new();
    sb.write(
        "yearly.yaml",
        "name: yearly\nschedule: \"cron(0 0 1 1 ? *)\"\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ run.date }} > ran\"\n",
    );
    let out = sb.run(&["run", "yearly.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let now = chrono::Utc::now();
    let jan1 = format!("{}-01-01", now.format("%Y"));
    let first = out.stdout.lines().next().unwrap_or_default();
    // On January 1st the most recent fire is today, the default anyway: nothing to say.
    if now.format("%Y-%m-%d").to_string() != jan1 {
        assert!(
            first.starts_with(&format!(
                "logical date {jan1}: the schedule's most recent fire time"
            )),
            "{out:?}"
        );
    }
    assert_eq!(sb.read("ran").trim(), jan1);
    // --date still wins.
    let out = sb.run(&["run", "yearly.yaml", "--date", "2026-03-04"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.read("ran").trim(), "2026-03-04");
}
