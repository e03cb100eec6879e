//! `gen-bars` — seeded synthetic daily bars, for tests and benchmarks of any size.
//!
//! Each symbol is a random walk of business days (weekends skipped) starting on
//! `--start`. The same `--seed` and sizes give byte-identical output. Two shapes:
//!
//! - `--format csv` (default): `OUT/SYMBOL.csv` with `symbol,date,open,high,low,close,volume`,
//!   the landed-bars shape that `crawl` reads;
//! - `--format alpha-vantage`: `OUT/SYMBOL.json`, TIME_SERIES_DAILY responses like the
//!   bundled sample, for the `alpha_vantage` task's `sample_dir`.
//!
//! Example: `gen-bars --symbols 2000 --days 2500 --out /tmp/bars/dt=2026-01-02`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{Datelike, NaiveDate, Weekday};
use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(name = "gen-bars", about = "Write seeded synthetic daily stock bars")]
struct Args {
    /// How many symbols (SYM00000, SYM00001, ...).
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// Business days per symbol.
    #[arg(long, default_value_t = 250)]
    days: usize,
    /// First date, YYYY-MM-DD.
    #[arg(long, default_value = "2016-01-04")]
    start: NaiveDate,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Shape::Csv)]
    format: Shape,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Shape {
    Csv,
    AlphaVantage,
}

struct Bar {
    date: NaiveDate,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: u64,
}

fn business_days(start: NaiveDate, n: usize) -> Vec<NaiveDate> {
    let mut out = Vec::with_capacity(n);
    let mut d = start;
    while out.len() < n {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            out.push(d);
        }
        d = d.succ_opt().unwrap_or(d);
    }
    out
}

/// Roughly normal: the sum of four uniforms, centred and scaled to unit variance.
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let s: f64 = (0..4).map(|_| rng.f64()).sum();
    (s - 2.0) * (3.0f64).sqrt()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn walk(rng: &mut fastrand::Rng, dates: &[NaiveDate]) -> Vec<Bar> {
    let mut close = 10.0 + rng.f64() * 490.0;
    let base_volume = 1e5 + rng.f64() * 5e7;
    dates
        .iter()
        .map(|&date| {
            let open = (close * (1.0 + 0.005 * normal(rng))).max(0.01);
            close = (open * (1.0 + 0.02 * normal(rng))).max(0.01);
            let high = open.max(close) * (1.0 + 0.01 * rng.f64());
            let low = open.min(close) * (1.0 - 0.01 * rng.f64());
            Bar {
                date,
                open: round2(open),
                high: round2(high),
                low: round2(low).max(0.01),
                close: round2(close),
                volume: ((base_volume * (0.5 + rng.f64())) as u64 / 100) * 100,
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {} ({e})", args.out.display()))?;
    let dates = business_days(args.start, args.days);
    let mut rng = fastrand::Rng::with_seed(args.seed);
    for i in 0..args.symbols {
        let symbol = format!("SYM{i:05}");
        let bars = walk(&mut rng, &dates);
        let (name, text) = match args.format {
            Shape::Csv => (format!("{symbol}.csv"), csv(&symbol, &bars)),
            Shape::AlphaVantage => (format!("{symbol}.json"), alpha_vantage(&symbol, &bars)),
        };
        let path = args.out.join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {} ({e})", path.display()))?;
    }
    eprintln!(
        "wrote {} symbols x {} days = {} bars to {}",
        args.symbols,
        args.days,
        args.symbols * args.days,
        args.out.display()
    );
    Ok(())
}

fn csv(symbol: &str, bars: &[Bar]) -> String {
    let mut s = String::with_capacity(bars.len() * 64);
    s.push_str("symbol,date,open,high,low,close,volume\n");
    for b in bars {
        s.push_str(&format!(
            "{symbol},{},{},{},{},{},{}\n",
            b.date, b.open, b.high, b.low, b.close, b.volume
        ));
    }
    s
}

fn alpha_vantage(symbol: &str, bars: &[Bar]) -> String {
    let mut series = serde_json::Map::new();
    for b in bars.iter().rev() {
        series.insert(
            b.date.to_string(),
            serde_json::json!({
                "1. open": format!("{:.4}", b.open),
                "2. high": format!("{:.4}", b.high),
                "3. low": format!("{:.4}", b.low),
                "4. close": format!("{:.4}", b.close),
                "5. volume": b.volume.to_string(),
            }),
        );
    }
    let last = bars.last().map(|b| b.date.to_string()).unwrap_or_default();
    serde_json::json!({
        "Meta Data": {
            "1. Information": "Daily Prices (open, high, low, close) and Volumes",
            "2. Symbol": symbol,
            "3. Last Refreshed": last,
            "4. Output Size": "Full size",
            "5. Time Zone": "US/Eastern",
        },
        "Time Series (Daily)": series,
    })
    .to_string()
}
