//! workflows/intraday.yaml: replaying the bundled bars as ticks, one per run, raises the
//! crossovers and moves the daily table's `signal` and `is_anomaly` say, once each.

use std::path::PathBuf;

use serde_json::Value;

use crate::common::{task, Sandbox};
use crate::daily::{expected, source_bars};

fn intraday() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/intraday.yaml")
        .display()
        .to_string()
}

#[test]
fn replaying_one_symbol_raises_the_daily_tables_buy_sell_sequence_and_moves_once_each() {
    let bars = &source_bars()["NVDA"];
    let want = expected(bars);
    // Enough runs for two crossovers (there are some within the first 120 bars).
    let signals: Vec<usize> = (0..want.len())
        .filter(|&i| !want[i]["signal"].is_null())
        .collect();
    assert!(signals.len() >= 2 && signals[1] < 120, "{signals:?}");
    let n = signals[1] + 1;
    let want_signals: Vec<(String, String)> = want[..n]
        .iter()
        .filter(|r| !r["signal"].is_null())
        .map(|r| {
            (
                r["date"].as_str().unwrap().to_string(),
                r["signal"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want_moves: Vec<String> = want[..n]
        .iter()
        .filter(|r| r["is_anomaly"] == true)
        .map(|r| r["date"].as_str().unwrap().to_string())
        .collect();
    assert!(!want_moves.is_empty());

    let sb = Sandbox::new();
    let landing = format!("landing={}", sb.path("intraday").display());
    let mut last = String::new();
    for i in 0..n {
        let out = sb.run(&[
            "run",
            &intraday(),
            "--param",
            "symbols=NVDA",
            "--param",
            &landing,
            "-q",
        ]);
        assert_eq!(out.code, 0, "run {i}: {out:?}");
        last = out.run_id();
    }
    let alerts = || -> Vec<Value> {
        std::fs::read_to_string(sb.state_dir().join("intraday-alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let got = alerts();
    let day = |a: &Value| a["row"]["ts"].as_str().unwrap()[..10].to_string();
    let got_signals: Vec<(String, String)> = got
        .iter()
        .filter(|a| a["row"]["kind"] == "signal")
        .map(|a| (day(a), a["row"]["signal"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got_signals, want_signals);
    let got_moves: Vec<String> = got
        .iter()
        .filter(|a| a["row"]["kind"] == "move")
        .map(day)
        .collect();
    assert_eq!(got_moves, want_moves);
    let buy_or_sell = got.iter().find(|a| a["row"]["kind"] == "signal").unwrap();
    let text = buy_or_sell["message"].as_str().unwrap();
    assert!(text.starts_with("NVDA: SMA-5 crossed "), "{text}");

    // Every tick is in `ticks`, once; re-running the last run adds nothing, sends nothing.
    let count = |sb: &Sandbox| -> Value {
        let out = sb.run(&["query", "SELECT count(*) AS n FROM ticks", "--json"]);
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0]["n"].clone()
    };
    assert_eq!(count(&sb), n);
    assert_eq!(task(&sb.show(&last), "append")["outputs"]["rows"], n);
    let out = sb.run(&["rerun", &last, "--from", "quote"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&last);
    assert_eq!(
        task(&show, "quote")["outputs"]["kept"],
        serde_json::json!(["NVDA"])
    );
    assert_eq!(task(&show, "append")["outputs"]["inserted"], 0);
    assert_eq!(count(&sb), n);
    assert_eq!(alerts().len(), got.len());
}

#[test]
fn an_expired_landing_zone_keeps_the_replay_going_and_the_crawl_counting() {
    let sb = Sandbox::new();
    let dir = sb.path("intraday");
    let landing = format!("landing={}", dir.display());
    let run = || {
        let out = sb.run(&[
            "run",
            &intraday(),
            "--param",
            "symbols=NVDA,AMD",
            "--param",
            &landing,
            "--param",
            "landing_keep=1m",
            "-q",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        out.run_id()
    };
    let first: Vec<String> = (0..2).map(|_| run()).collect();
    run();
    for id in &first {
        for entry in std::fs::read_dir(dir.join(format!("ticks/run={id}"))).unwrap() {
            let f = std::fs::File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
                .unwrap();
        }
    }
    let fourth = run();
    let show = sb.show(&fourth);
    let expire = &task(&show, "expire_landing")["outputs"];
    assert_eq!(expire["deleted_files"], 4, "{expire}");
    assert_eq!(expire["deleted_dirs"], 2, "{expire}");
    assert!(!dir.join(format!("ticks/run={}", first[0])).exists());

    // The fifth run replays each symbol's fifth bar (not the third again, as counting the
    // runs left in the landing zone would), and its crawl counts the three runs left.
    let fifth = run();
    let show = sb.show(&fifth);
    let crawl = &task(&show, "crawl")["outputs"];
    assert_eq!(crawl["files_seen"], 6, "{crawl}");
    assert_eq!(crawl["row_count"], 6, "{crawl}");
    assert_eq!(task(&show, "append")["outputs"]["inserted"], 2);
    let out = sb.run(&[
        "query",
        "SELECT symbol, count(DISTINCT ts) AS n FROM ticks GROUP BY symbol ORDER BY symbol",
        "--json",
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        serde_json::json!([{"symbol": "AMD", "n": 5}, {"symbol": "NVDA", "n": 5}])
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ticks/_replay/NVDA")).unwrap(),
        "5"
    );
}
