//! `kind: alpha_vantage` — lands Alpha Vantage TIME_SERIES_DAILY bars.
//!
//! Per symbol it writes the raw response to `{output}/responses/dt={date}/{SYMBOL}.json`
//! and the normalized bars to `{output}/bars/dt={date}/{SYMBOL}.csv`
//! (`symbol,date,open,high,low,close,volume`), each atomically (temporary name, then
//! rename), so a crawl of `{output}/bars` never sees half a file. One bad symbol does not
//! lose the others: every good symbol is landed, then the task fails listing the bad ones.
//!
//! Today the responses come from `sample_dir` (the bundled sample, offline), through the
//! same parser a live fetch will use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlphaVantageConfig {
    symbols: Vec<String>,
    /// The landing directory (relative to the workflow file's directory).
    output: PathBuf,
    /// Read `SYMBOL.json` responses from this directory instead of the network.
    sample_dir: PathBuf,
}

impl TaskConfig for AlphaVantageConfig {
    const KIND: &'static str = "alpha_vantage";

    fn build(self, ctx: &BuildContext) -> Result<Arc<dyn Task>, String> {
        if self.symbols.is_empty() {
            return Err("`symbols` is empty; list the tickers to ingest".into());
        }
        for s in &self.symbols {
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return Err(format!(
                    "`{s}` is not a ticker symbol (letters, digits, `.` and `-`)"
                ));
            }
        }
        let abs = |p: PathBuf| {
            if p.is_absolute() {
                p
            } else {
                ctx.base_dir.join(p)
            }
        };
        Ok(Arc::new(AlphaVantage {
            symbols: self.symbols,
            output: abs(self.output),
            sample_dir: abs(self.sample_dir),
        }))
    }
}

#[derive(Debug)]
struct AlphaVantage {
    symbols: Vec<String>,
    output: PathBuf,
    sample_dir: PathBuf,
}

/// One daily bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub date: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: u64,
}

/// What an Alpha Vantage response can be besides bars. It reports errors with HTTP 200.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseError {
    /// `"Note"` or `"Information"`: rate limited or premium-only; worth retrying later.
    Throttled(String),
    /// `"Error Message"`, e.g. an unknown symbol: retrying will not help.
    Rejected(String),
    /// Not the shape we expect: names the symbol, date and field.
    Malformed(String),
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Throttled(m) => write!(f, "throttled by Alpha Vantage: {m}"),
            ResponseError::Rejected(m) => write!(f, "rejected by Alpha Vantage: {m}"),
            ResponseError::Malformed(m) => f.write_str(m),
        }
    }
}

/// Parses a TIME_SERIES_DAILY response into bars, oldest first.
pub fn parse_daily(symbol: &str, body: &str) -> Result<Vec<Bar>, ResponseError> {
    let doc: Value = serde_json::from_str(body).map_err(|e| {
        ResponseError::Malformed(format!("{symbol}: the response is not valid JSON ({e})"))
    })?;
    for (key, is_throttle) in [
        ("Note", true),
        ("Information", true),
        ("Error Message", false),
    ] {
        if let Some(msg) = doc.get(key) {
            let msg = msg.as_str().map_or_else(|| msg.to_string(), String::from);
            return Err(if is_throttle {
                ResponseError::Throttled(msg)
            } else {
                ResponseError::Rejected(format!("{symbol}: {msg}"))
            });
        }
    }
    let Some(series) = doc.get("Time Series (Daily)").and_then(Value::as_object) else {
        let keys = doc
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "));
        return Err(ResponseError::Malformed(format!(
            "{symbol}: the response has no \"Time Series (Daily)\" (it has: {})",
            keys.unwrap_or_else(|| "no fields".into())
        )));
    };
    let mut bars = Vec::with_capacity(series.len());
    for (date, fields) in series {
        if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
            return Err(ResponseError::Malformed(format!(
                "{symbol}: `{date}` in \"Time Series (Daily)\" is not a date like 2026-01-31"
            )));
        }
        let field = |name: &str| -> Result<&str, ResponseError> {
            match fields.get(name) {
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => Err(ResponseError::Malformed(format!(
                    "{symbol}, {date}: field \"{name}\" is {other}, not a quoted number"
                ))),
                None => Err(ResponseError::Malformed(format!(
                    "{symbol}, {date}: field \"{name}\" is missing"
                ))),
            }
        };
        let price = |name: &str| -> Result<f64, ResponseError> {
            let s = field(name)?;
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    ResponseError::Malformed(format!(
                        "{symbol}, {date}: field \"{name}\" is not a number: \"{s}\""
                    ))
                })
        };
        let volume = {
            let s = field("5. volume")?;
            s.trim().parse::<u64>().map_err(|_| {
                ResponseError::Malformed(format!(
                    "{symbol}, {date}: field \"5. volume\" is not a whole number: \"{s}\""
                ))
            })?
        };
        bars.push(Bar {
            date: date.clone(),
            open: price("1. open")?,
            high: price("2. high")?,
            low: price("3. low")?,
            close: price("4. close")?,
            volume,
        });
    }
    bars.sort_by(|a, b| a.date.cmp(&b.date));
    Ok(bars)
}

/// Bars as CSV with header `symbol,date,open,high,low,close,volume`.
pub fn bars_csv(symbol: &str, bars: &[Bar]) -> String {
    let mut out = String::from("symbol,date,open,high,low,close,volume\n");
    for b in bars {
        out.push_str(&format!(
            "{symbol},{},{},{},{},{},{}\n",
            b.date, b.open, b.high, b.low, b.close, b.volume
        ));
    }
    out
}

/// Writes `contents` to `path` via a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {} ({e})", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{:08x}", fastrand::u32(..)));
    std::fs::write(&tmp, contents).map_err(|e| format!("cannot write {} ({e})", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move {} to {} ({e})", tmp.display(), path.display())
    })
}

#[async_trait::async_trait]
impl Task for AlphaVantage {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let dt = format!("dt={}", ctx.logical_date);
        ctx.output.line(&format!(
            "offline: reading sample responses from {}",
            self.sample_dir.display()
        ));
        let (mut landed, mut failed, mut rows) = (Vec::new(), serde_json::Map::new(), 0usize);
        for symbol in &self.symbols {
            let result = self.land(symbol, &dt);
            match result {
                Ok(n) => {
                    ctx.output.line(&format!("{symbol}: {n} bars"));
                    rows += n;
                    landed.push(symbol.clone());
                }
                Err(e) => {
                    ctx.output.line(&format!("{symbol}: {e}"));
                    failed.insert(symbol.clone(), json!(e));
                }
            }
        }
        let mut outputs = Outputs::new();
        outputs.insert("landed".into(), json!(landed));
        outputs.insert("rows".into(), json!(rows));
        outputs.insert(
            "bars".into(),
            json!(self.output.join("bars").join(&dt).display().to_string()),
        );
        if failed.is_empty() {
            return Ok(outputs);
        }
        let names: Vec<&String> = failed.keys().collect();
        let message = format!(
            "{} of {} symbols failed ({}); the others were landed:\n{}",
            failed.len(),
            self.symbols.len(),
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            failed
                .iter()
                .map(|(s, e)| format!("- {s}: {}", e.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        outputs.insert("failed".into(), Value::Object(failed));
        Err(TaskFailure {
            message,
            exit_code: None,
            outputs,
        })
    }
}

impl AlphaVantage {
    fn land(&self, symbol: &str, dt: &str) -> Result<usize, String> {
        let src = self.sample_dir.join(format!("{symbol}.json"));
        let body = std::fs::read_to_string(&src)
            .map_err(|e| format!("no sample response {} ({e})", src.display()))?;
        let bars = parse_daily(symbol, &body).map_err(|e| e.to_string())?;
        write_atomic(
            &self
                .output
                .join("responses")
                .join(dt)
                .join(format!("{symbol}.json")),
            body.as_bytes(),
        )?;
        write_atomic(
            &self
                .output
                .join("bars")
                .join(dt)
                .join(format!("{symbol}.csv")),
            bars_csv(symbol, &bars).as_bytes(),
        )?;
        Ok(bars.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"Meta Data": {"2. Symbol": "IBM"},
        "Time Series (Daily)": {
          "2024-01-05": {"1. open": "160.9000", "2. high": "161.5000", "3. low": "159.5300", "4. close": "160.1700", "5. volume": "4267524"},
          "2024-01-04": {"1. open": "161.0000", "2. high": "161.6500", "3. low": "159.7500", "4. close": "160.1000", "5. volume": "3500000"}}}"#;

    #[test]
    fn parses_bars_oldest_first() {
        let bars = parse_daily("IBM", OK).unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].date, "2024-01-04");
        assert_eq!(
            bars[1],
            Bar {
                date: "2024-01-05".into(),
                open: 160.9,
                high: 161.5,
                low: 159.53,
                close: 160.17,
                volume: 4267524
            }
        );
        assert_eq!(
            bars_csv("IBM", &bars[1..]),
            "symbol,date,open,high,low,close,volume\nIBM,2024-01-05,160.9,161.5,159.53,160.17,4267524\n"
        );
    }

    #[test]
    fn classifies_errors() {
        assert!(matches!(
            parse_daily(
                "X",
                r#"{"Note": "Thank you for using Alpha Vantage! ... 5 calls per minute"}"#
            ),
            Err(ResponseError::Throttled(_))
        ));
        assert!(matches!(
            parse_daily("X", r#"{"Information": "premium endpoint"}"#),
            Err(ResponseError::Throttled(_))
        ));
        assert_eq!(
            parse_daily("NOPE", r#"{"Error Message": "Invalid API call."}"#),
            Err(ResponseError::Rejected("NOPE: Invalid API call.".into()))
        );
        assert_eq!(
            parse_daily(
                "IBM",
                OK.replace("\"2. high\": \"161.5000\", ", "").as_str()
            ),
            Err(ResponseError::Malformed(
                "IBM, 2024-01-05: field \"2. high\" is missing".into()
            ))
        );
        assert_eq!(
            parse_daily("IBM", OK.replace("159.5300", "n/a").as_str()),
            Err(ResponseError::Malformed(
                "IBM, 2024-01-05: field \"3. low\" is not a number: \"n/a\"".into()
            ))
        );
        assert!(
            matches!(parse_daily("IBM", "{not json"), Err(ResponseError::Malformed(m)) if m.starts_with("IBM: the response is not valid JSON"))
        );
        assert!(
            matches!(parse_daily("IBM", "{}"), Err(ResponseError::Malformed(m)) if m.contains("no \"Time Series (Daily)\""))
        );
    }
}
