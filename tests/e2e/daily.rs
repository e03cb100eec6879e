//! The reference pipeline, workflows/daily.yaml, on the bundled sample.

use std::path::PathBuf;

use crate::common::{status, Sandbox};

fn daily() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/daily.yaml")
        .display()
        .to_string()
}

fn sample_rows() -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample/chips");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count() - 1)
        .sum()
}

#[test]
fn publishes_every_sample_row_once() {
    let sb = Sandbox::new();
    let lake = format!("lake={}", sb.path("lake").display());
    let out = sb.run(&["run", &daily(), "--param", &lake]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows = sample_rows();
    assert_eq!(rows, 2510);
    assert!(
        out.stderr.contains(&format!(
            "publish | stock_daily: inserted {rows} rows, now {rows} rows"
        )),
        "{out:?}"
    );
    assert_eq!(sb.count("lake/prod/stock_daily/data.csv"), rows);

    let again = sb.run(&["run", &daily(), "--param", &lake]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("inserted 0 rows, now {rows} rows")),
        "{again:?}"
    );
}

#[test]
fn a_failed_audit_publishes_nothing() {
    let sb = Sandbox::new();
    let lake = format!("lake={}", sb.path("lake").display());
    assert_eq!(
        sb.run(&["run", &daily(), "--param", &lake, "--date", "2026-05-11"])
            .code,
        0
    );
    let published = std::fs::read(sb.path("lake/prod/stock_daily/data.csv")).unwrap();

    // A copy of the sample with one bad bar (high < low) on a date not yet published.
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample/chips");
    std::fs::create_dir(sb.path("bad")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "csv") {
            std::fs::copy(&p, sb.path("bad").join(p.file_name().unwrap())).unwrap();
        }
    }
    let nvda = sb.read("bad/NVDA.csv") + "2026-05-12,120.0,100.0,110.0,105.0,1000\n";
    sb.write("bad/NVDA.csv", &nvda);
    let sample = format!("sample={}", sb.path("bad").display());
    let out = sb.run(&[
        "run",
        &daily(),
        "--param",
        &lake,
        "--param",
        &sample,
        "--date",
        "2026-05-12",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("quality_check | high >= low: NVDA,2026-05-12,105.0,100.0,110.0,120.0,1000"),
        "{out:?}"
    );
    let show = sb.show(&out.run_id());
    assert_eq!(status(&show, "quality_check"), "failed");
    assert_eq!(status(&show, "publish"), "skipped");
    assert_eq!(
        std::fs::read(sb.path("lake/prod/stock_daily/data.csv")).unwrap(),
        published
    );
}
