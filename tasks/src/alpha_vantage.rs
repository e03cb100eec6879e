//! `kind: alpha_vantage` — lands Alpha Vantage TIME_SERIES_DAILY bars.
//!
//! Per symbol it writes the raw response to `{output}/responses/dt={date}/{SYMBOL}.json`
//! and the normalized bars to `{output}/bars/dt={date}/{SYMBOL}.csv`
//! (`symbol,date,open,high,low,close,volume`), each atomically (temporary name, then
//! rename), so a crawl of `{output}/bars` never sees half a file. One bad symbol does not
//! lose the others: every good symbol is landed, then the task fails listing the bad ones.
//!
//! Live (an API key is set): one request per symbol, paced by a limiter shared by the whole
//! task (`calls_per_minute`), throttling answers and transient failures (network errors,
//! timeouts, 5xx) retried with backoff up to `max_attempts`. Offline (no key, and
//! `sample_dir` given): the responses are read from files, through the same parser.
//! Symbols already landed for the run's date are not fetched again (a rerun after one
//! symbol failed fetches only that one).
//!
//! The key is never logged, stored or written: it is not part of any message (reqwest
//! errors are stripped of their URL, which holds it), and the task's `Debug` hides it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use orchestrator_engine::task::{
    BuildContext, Dur, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlphaVantageConfig {
    symbols: Vec<String>,
    /// The landing directory (relative to the workflow file's directory).
    output: PathBuf,
    /// The API key itself; usually left out in favour of `api_key_env`.
    api_key: Option<String>,
    /// The environment variable holding the key (default `ALPHAVANTAGE_API_KEY`).
    api_key_env: Option<String>,
    /// Default `https://www.alphavantage.co/query`.
    base_url: Option<String>,
    /// `compact` (the last 100 days, default) or `full` (the whole history: a backfill).
    outputsize: Option<OutputSize>,
    /// Requests per minute across the whole task (default 5, the free tier's limit).
    calls_per_minute: Option<f64>,
    /// Per request (default 30s).
    timeout: Option<Dur>,
    /// First wait after a throttling answer or a transient failure; doubles each time
    /// (default 60s).
    throttle_wait: Option<Dur>,
    /// Attempts per symbol before it fails (default 5).
    max_attempts: Option<u32>,
    /// Offline: read `SYMBOL.json` responses from this directory when no key is set.
    sample_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputSize {
    Compact,
    Full,
}

pub const DEFAULT_BASE_URL: &str = "https://www.alphavantage.co/query";
pub const DEFAULT_KEY_ENV: &str = "ALPHAVANTAGE_API_KEY";

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
        let cpm = self.calls_per_minute.unwrap_or(5.0);
        if !(cpm > 0.0 && cpm.is_finite()) {
            return Err(format!(
                "`calls_per_minute` must be more than 0, found {cpm}"
            ));
        }
        let base_url = self.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.into());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!("`base_url` `{base_url}` is not an http(s) URL"));
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
            api_key: self.api_key.filter(|k| !k.trim().is_empty()),
            api_key_env: self.api_key_env.unwrap_or_else(|| DEFAULT_KEY_ENV.into()),
            base_url,
            outputsize: self.outputsize.unwrap_or(OutputSize::Compact),
            interval: Duration::from_secs_f64(60.0 / cpm),
            timeout: self.timeout.map_or(Duration::from_secs(30), |d| d.0),
            throttle_wait: self.throttle_wait.map_or(Duration::from_secs(60), |d| d.0),
            max_attempts: self.max_attempts.unwrap_or(5).max(1),
            sample_dir: self.sample_dir.map(abs),
        }))
    }
}

struct AlphaVantage {
    symbols: Vec<String>,
    output: PathBuf,
    api_key: Option<String>,
    api_key_env: String,
    base_url: String,
    outputsize: OutputSize,
    interval: Duration,
    timeout: Duration,
    throttle_wait: Duration,
    max_attempts: u32,
    sample_dir: Option<PathBuf>,
}

impl std::fmt::Debug for AlphaVantage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AlphaVantage")
            .field("symbols", &self.symbols)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
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

enum Source {
    Live {
        key: String,
        client: reqwest::Client,
    },
    Offline(PathBuf),
}

/// Paces requests: at most one per `interval`, across the whole task.
struct Limiter {
    interval: Duration,
    next: Option<tokio::time::Instant>,
}

impl Limiter {
    async fn wait(
        &mut self,
        cancel: &orchestrator_engine::CancellationToken,
    ) -> Result<(), String> {
        let now = tokio::time::Instant::now();
        let at = self.next.filter(|n| *n > now).unwrap_or(now);
        self.next = Some(at + self.interval);
        sleep_or_cancel(at - now, cancel).await
    }
}

async fn sleep_or_cancel(
    d: Duration,
    cancel: &orchestrator_engine::CancellationToken,
) -> Result<(), String> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err("cancelled".into()),
    }
}

#[async_trait::async_trait]
impl Task for AlphaVantage {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let dt = format!("dt={}", ctx.logical_date);
        let key = self.api_key.clone().or_else(|| {
            std::env::var(&self.api_key_env)
                .ok()
                .filter(|k| !k.trim().is_empty())
        });
        let source = match (key, &self.sample_dir) {
            (Some(key), _) => {
                let client = reqwest::Client::builder()
                    .timeout(self.timeout)
                    .build()
                    .map_err(|e| TaskFailure::new(format!("cannot start the HTTP client: {e}")))?;
                ctx.output.line(&format!(
                    "live: fetching {} symbols from {} at most {:.1} calls per minute",
                    self.symbols.len(),
                    self.base_url,
                    60.0 / self.interval.as_secs_f64()
                ));
                Source::Live { key, client }
            }
            (None, Some(dir)) => {
                ctx.output.line(&format!(
                    "offline: no API key in ${}; reading sample responses from {}",
                    self.api_key_env,
                    dir.display()
                ));
                Source::Offline(dir.clone())
            }
            (None, None) => {
                return Err(TaskFailure::new(format!(
                    "no Alpha Vantage API key: set ${} (or `api_key:`), or give `sample_dir:` to run offline",
                    self.api_key_env
                )))
            }
        };
        let mut limiter = Limiter {
            interval: self.interval,
            next: None,
        };
        let (mut landed, mut failed, mut rows) = (Vec::new(), serde_json::Map::new(), 0usize);
        let mut fetched = Vec::new();
        for symbol in &self.symbols {
            if ctx.cancel.is_cancelled() {
                return Err(TaskFailure::new("cancelled"));
            }
            let bars_path = self
                .output
                .join("bars")
                .join(&dt)
                .join(format!("{symbol}.csv"));
            if bars_path.exists() {
                let n = std::fs::read_to_string(&bars_path)
                    .map(|t| t.lines().count().saturating_sub(1))
                    .unwrap_or(0);
                ctx.output.line(&format!(
                    "{symbol}: already landed for {dt} ({n} bars); not fetched again"
                ));
                rows += n;
                landed.push(symbol.clone());
                continue;
            }
            let body = match &source {
                Source::Offline(dir) => {
                    let src = dir.join(format!("{symbol}.json"));
                    std::fs::read_to_string(&src)
                        .map_err(|e| format!("no sample response {} ({e})", src.display()))
                        .and_then(|body| {
                            parse_daily(symbol, &body)
                                .map(|bars| (body, bars))
                                .map_err(|e| e.to_string())
                        })
                }
                Source::Live { key, client } => {
                    fetched.push(symbol.clone());
                    self.fetch(client, key, symbol, &mut limiter, ctx).await
                }
            };
            let result = body.and_then(|(body, bars)| {
                write_atomic(
                    &self
                        .output
                        .join("responses")
                        .join(&dt)
                        .join(format!("{symbol}.json")),
                    body.as_bytes(),
                )?;
                write_atomic(&bars_path, bars_csv(symbol, &bars).as_bytes())?;
                Ok(bars.len())
            });
            match result {
                Ok(n) => {
                    ctx.output.line(&format!("{symbol}: {n} bars"));
                    rows += n;
                    landed.push(symbol.clone());
                }
                Err(e) if e == "cancelled" => return Err(TaskFailure::new("cancelled")),
                Err(e) => {
                    ctx.output.line(&format!("{symbol}: {e}"));
                    failed.insert(symbol.clone(), json!(e));
                }
            }
        }
        let mut outputs = Outputs::new();
        outputs.insert("landed".into(), json!(landed));
        outputs.insert("fetched".into(), json!(fetched));
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
    /// Fetches one symbol, retrying throttling and transient failures with backoff.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        key: &str,
        symbol: &str,
        limiter: &mut Limiter,
        ctx: &TaskContext,
    ) -> Result<(String, Vec<Bar>), String> {
        let size = match self.outputsize {
            OutputSize::Compact => "compact",
            OutputSize::Full => "full",
        };
        let scrub = |s: String| s.replace(key, "***");
        let mut wait = self.throttle_wait;
        for attempt in 1..=self.max_attempts {
            limiter.wait(&ctx.cancel).await?;
            let response = client
                .get(&self.base_url)
                .query(&[
                    ("function", "TIME_SERIES_DAILY"),
                    ("symbol", symbol),
                    ("outputsize", size),
                    ("datatype", "json"),
                    ("apikey", key),
                ])
                .send()
                .await;
            let transient = match response {
                Err(e) if e.is_timeout() => format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ),
                Err(e) => scrub(format!("request failed: {}", e.without_url())),
                Ok(r) if r.status().is_server_error() => format!("HTTP {}", r.status()),
                Ok(r) if !r.status().is_success() => {
                    return Err(format!(
                        "{symbol}: HTTP {} from {}",
                        r.status(),
                        self.base_url
                    ))
                }
                Ok(r) => match r.text().await {
                    Err(e) => scrub(format!("reading the response failed: {}", e.without_url())),
                    Ok(body) => match parse_daily(symbol, &body) {
                        Ok(bars) => return Ok((body, bars)),
                        Err(ResponseError::Throttled(m)) => scrub(format!("throttled: {m}")),
                        Err(e) => return Err(scrub(e.to_string())),
                    },
                },
            };
            if attempt == self.max_attempts {
                return Err(format!(
                    "{symbol}: gave up after {attempt} attempts; last: {transient}"
                ));
            }
            ctx.output.line(&format!(
                "{symbol}: {transient}; retrying in {} (attempt {attempt} of {})",
                humantime::format_duration(wait),
                self.max_attempts
            ));
            sleep_or_cancel(wait, &ctx.cancel).await?;
            wait = wait.saturating_mul(2);
        }
        Err(format!("{symbol}: no attempt made (max_attempts is 0)"))
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
