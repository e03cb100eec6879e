//! `kind: alpha_vantage_quote` — one quote per symbol per run, landed as a tick: the
//! intraday pipeline's source.
//!
//! Live (an API key is set) it asks GLOBAL_QUOTE for each symbol; the tick's time is the
//! moment of the call (UTC, whole seconds), since the quote carries only its trading day.
//! Offline (no key, `sample_dir:`) it replays the bundled TIME_SERIES_DAILY bars as a tick
//! stream: each run lands the next bar of each symbol (its close as the price, its date
//! as the time), so a day of runs walks through the history.
//!
//! Each tick is one CSV file, `{output}/run={RUN_ID}/{SYMBOL}.csv`
//! (`symbol,ts,price,volume,trading_day`), written atomically. A run re-executed (retry,
//! rerun) keeps what it landed before, so its ticks — and their (symbol, ts) keys — do not
//! change. The `run=` partition lets the next stage read only this run's ticks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_engine::task::{
    BuildContext, Dur, Outputs, Task, TaskConfig, TaskContext, TaskFailure, SHORT_CIRCUIT,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::answer::{document, parse_daily, ResponseError};
use super::{scrub, write_atomic, IngestError, DEFAULT_KEY_ENV, USAGE_COUNTER};

/// `symbols:` as a list, or as one comma-separated string (what a param renders to).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum Symbols {
    List(Vec<String>),
    Text(String),
}

/// Lands one quote tick per symbol (Alpha Vantage GLOBAL_QUOTE), under the run's partition; offline, the next bundled bar.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteConfig {
    symbols: Symbols,
    /// The landing directory of ticks (relative to the workflow file's directory).
    output: PathBuf,
    api_key: Option<String>,
    /// Default `ALPHAVANTAGE_API_KEY`.
    api_key_env: Option<String>,
    base_url: Option<String>,
    /// Requests per UTC day the key may make, shared with `alpha_vantage` (default 25;
    /// 0 = unlimited). A premium key is needed for a quote a minute.
    daily_quota: Option<u64>,
    /// Per request (default 10s).
    request_timeout: Option<Dur>,
    /// Offline: replay `SYMBOL.json` (TIME_SERIES_DAILY answers) from this directory.
    sample_dir: Option<PathBuf>,
}

impl TaskConfig for QuoteConfig {
    const KIND: &'static str = "alpha_vantage_quote";
    const SHORT_CIRCUIT: bool = true;

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        let symbols: Vec<String> = match self.symbols {
            Symbols::List(l) => l,
            Symbols::Text(t) => t
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if self.output.to_str().is_some_and(|o| o.starts_with("s3://")) {
            return Err("`output` on S3 is not supported by `alpha_vantage_quote` yet; land ticks in a local directory".into());
        }
        let base_url = super::check_request(&symbols, self.base_url)?;
        Ok(Arc::new(Quote {
            symbols,
            output: ctx.resolve(self.output),
            api_key: self.api_key,
            api_key_env: self.api_key_env.unwrap_or_else(|| DEFAULT_KEY_ENV.into()),
            base_url,
            daily_quota: self.daily_quota.unwrap_or(25),
            timeout: self
                .request_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            sample_dir: self.sample_dir.map(|p| ctx.resolve(p)),
        }))
    }
}

struct Quote {
    symbols: Vec<String>,
    output: PathBuf,
    api_key: Option<String>,
    api_key_env: String,
    base_url: String,
    daily_quota: u64,
    timeout: Duration,
    sample_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Quote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quote")
            .field("symbols", &self.symbols)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// One tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub ts: String,
    pub price: f64,
    pub volume: u64,
    pub trading_day: String,
}

/// Parses a GLOBAL_QUOTE answer. An unknown symbol gets `{"Global Quote": {}}` (HTTP 200),
/// the limits and key problems come as `Note`/`Information`/`Error Message`, as for daily
/// bars.
pub fn parse_quote(symbol: &str, body: &str) -> Result<(f64, u64, String), ResponseError> {
    let doc = document(symbol, body)?;
    let Some(quote) = doc.get("Global Quote").and_then(Value::as_object) else {
        return Err(ResponseError::Malformed(format!(
            "{symbol}: the response has no \"Global Quote\""
        )));
    };
    if quote.is_empty() {
        return Err(ResponseError::BadSymbol(format!(
            "{symbol}: an empty \"Global Quote\" (Alpha Vantage's answer for a symbol it does not know)"
        )));
    }
    let field = |name: &str| -> Result<&str, ResponseError> {
        quote.get(name).and_then(Value::as_str).ok_or_else(|| {
            ResponseError::Malformed(format!("{symbol}: field \"{name}\" is missing"))
        })
    };
    let price: f64 = field("05. price")?
        .trim()
        .parse()
        .ok()
        .filter(|p: &f64| p.is_finite() && *p > 0.0)
        .ok_or_else(|| {
            ResponseError::Malformed(format!("{symbol}: field \"05. price\" is not a price"))
        })?;
    let volume: u64 = field("06. volume")?.trim().parse().map_err(|_| {
        ResponseError::Malformed(format!(
            "{symbol}: field \"06. volume\" is not a whole number"
        ))
    })?;
    let day = field("07. latest trading day")?.trim().to_string();
    Ok((price, volume, day))
}

fn tick_csv(symbol: &str, t: &Tick) -> String {
    format!(
        "symbol,ts,price,volume,trading_day\n{symbol},{},{},{},{}\n",
        t.ts,
        if t.price.fract() == 0.0 {
            format!("{:.1}", t.price)
        } else {
            t.price.to_string()
        },
        t.volume,
        t.trading_day
    )
}

impl Quote {
    fn key(&self) -> Option<String> {
        super::api_key(&self.api_key, &self.api_key_env)
    }

    /// Where the replay of `symbol` stands: `{output}/_replay/{SYMBOL}` holds the index of
    /// its next bar (`_`: crawls and expiry skip it). Kept apart from the landed ticks, so
    /// a landing zone whose old runs were expired (`expire_files`) does not restart the
    /// replay, and a run does not list every earlier run to find its bar.
    fn cursor(&self, symbol: &str) -> PathBuf {
        self.output.join("_replay").join(symbol)
    }

    /// The next bar of `symbol` not yet replayed, as a tick, with its index; `None` when
    /// all were.
    fn replay(
        &self,
        dir: &std::path::Path,
        symbol: &str,
        run_dir: &str,
    ) -> Result<Option<(usize, Tick)>, IngestError> {
        let src = dir.join(format!("{symbol}.json"));
        let body = match std::fs::read_to_string(&src) {
            Ok(body) => body,
            Err(source) => {
                return Err(IngestError::NoSample {
                    symbol: symbol.to_string(),
                    path: src,
                    source,
                })
            }
        };
        let bars = parse_daily(symbol, &body).map_err(IngestError::Response)?;
        let cursor = self.cursor(symbol);
        let done = match std::fs::read_to_string(&cursor) {
            Ok(text) => text.trim().parse::<usize>().map_err(|_| {
                IngestError::Response(ResponseError::Malformed(format!(
                    "{symbol}: the replay's cursor {} holds `{}`, not a bar index: delete it to count the landed runs again",
                    cursor.display(),
                    text.trim()
                )))
            })?,
            // A landing zone of an earlier release (or a new one): ticks landed by earlier
            // runs, one file per run.
            Err(_) => match std::fs::read_dir(&self.output) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.starts_with("run=") && name != run_dir
                    })
                    .filter(|e| e.path().join(format!("{symbol}.csv")).exists())
                    .count(),
                Err(_) => 0,
            },
        };
        Ok(bars.get(done).map(|b| {
            (
                done,
                Tick {
                    ts: format!("{}T00:00:00", b.date),
                    price: b.close,
                    volume: b.volume,
                    trading_day: b.date.clone(),
                },
            )
        }))
    }

    async fn live(
        &self,
        client: &reqwest::Client,
        key: &str,
        symbol: &str,
        ctx: &TaskContext,
    ) -> Result<Tick, IngestError> {
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        if self.daily_quota > 0 {
            let used = ctx.usage.count(USAGE_COUNTER, &today)?;
            if used >= self.daily_quota {
                return Err(IngestError::DailyLimit {
                    used,
                    quota: self.daily_quota,
                });
            }
        }
        ctx.usage.add(USAGE_COUNTER, &today, 1)?;
        let at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
        let answer = client
            .get(&self.base_url)
            .timeout(self.timeout)
            .query(&[
                ("function", "GLOBAL_QUOTE"),
                ("symbol", symbol),
                ("datatype", "json"),
                ("apikey", key),
            ])
            .send()
            .await
            .map_err(|e| IngestError::Request {
                symbol: symbol.to_string(),
                source: e.without_url(),
            })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(IngestError::Http {
                symbol: symbol.to_string(),
                status,
            });
        }
        let body = answer.text().await.map_err(|e| IngestError::ReadResponse {
            symbol: symbol.to_string(),
            source: e.without_url(),
        })?;
        let (price, volume, trading_day) = parse_quote(symbol, &body)
            .map_err(|e| IngestError::Answer(scrub(key, &e.to_string())))?;
        Ok(Tick {
            ts: at,
            price,
            volume,
            trading_day,
        })
    }
}

#[async_trait::async_trait]
impl Task for Quote {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let run_dir = format!("run={}", ctx.run_id);
        let key = self.key();
        let client = match &key {
            Some(_) => Some(
                reqwest::Client::builder()
                    .build()
                    .map_err(|e| TaskFailure::new(format!("cannot start the HTTP client: {e}")))?,
            ),
            None if self.sample_dir.is_some() => None,
            None => {
                return Err(TaskFailure::new(format!(
                    "no Alpha Vantage API key: set ${} (or `api_key:`), or give `sample_dir:` to replay the bundled bars",
                    self.api_key_env
                )))
            }
        };
        let (mut landed, mut kept, mut finished, mut failed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for symbol in &self.symbols {
            let path = self.output.join(&run_dir).join(format!("{symbol}.csv"));
            if path.exists() {
                // This run landed it before (a retry or rerun): the same tick, the same key.
                kept.push(symbol.clone());
                continue;
            }
            let tick = match (&key, &client, &self.sample_dir) {
                (Some(key), Some(client), _) => self
                    .live(client, key, symbol, ctx)
                    .await
                    .map(|t| Some((None, t))),
                (_, _, Some(dir)) => self
                    .replay(dir, symbol, &run_dir)
                    .map(|r| r.map(|(i, t)| (Some(i), t))),
                _ => Ok(None),
            };
            match tick {
                Ok(Some((replayed, t))) => {
                    write_atomic(&path, tick_csv(symbol, &t).as_bytes())?;
                    // After the tick: a crash between the two replays this bar once more,
                    // and its (symbol, ts) key makes the second landing a no-op downstream.
                    if let Some(i) = replayed {
                        write_atomic(&self.cursor(symbol), (i + 1).to_string().as_bytes())?;
                    }
                    ctx.output
                        .line(&format!("{symbol}: {} at {}", t.price, t.ts));
                    landed.push(symbol.clone());
                }
                Ok(None) => finished.push(symbol.clone()),
                Err(e) => {
                    ctx.output.line(&format!("{symbol}: {e}"));
                    failed.push(json!({"symbol": symbol, "error": e.to_string()}));
                }
            }
        }
        let mut outputs: Outputs = crate::aws::object(json!({
            "landed": landed, "kept": kept, "replay_finished": finished, "failed": failed,
            "path": self.output.join(&run_dir).display().to_string(),
        }));
        if !failed.is_empty() {
            let mut failure = TaskFailure::new(format!(
                "{} of {} symbols have no quote: {}",
                failed.len(),
                self.symbols.len(),
                failed
                    .iter()
                    .map(|f| f["error"].as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            failure.outputs = outputs;
            return Err(failure);
        }
        if landed.is_empty() && kept.is_empty() {
            let why = format!(
                "the replay is over: every bar of {} was replayed",
                finished.join(", ")
            );
            if ctx.short_circuit {
                outputs.insert(SHORT_CIRCUIT.into(), Value::from(why));
            } else {
                return Err(TaskFailure::new(why));
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_quote_and_names_what_is_wrong_with_a_bad_one() {
        let ok = r#"{"Global Quote": {"01. symbol": "NVDA", "02. open": "135.10", "05. price": "136.5200", "06. volume": "181243211", "07. latest trading day": "2026-05-11", "10. change percent": "1.02%"}}"#;
        assert_eq!(
            parse_quote("NVDA", ok).unwrap(),
            (136.52, 181243211, "2026-05-11".to_string())
        );
        assert!(matches!(
            parse_quote("NOPE", r#"{"Global Quote": {}}"#),
            Err(ResponseError::BadSymbol(m)) if m.starts_with("NOPE: an empty")
        ));
        assert!(matches!(
            parse_quote(
                "NVDA",
                r#"{"Information": "We have detected your API key as X and our standard API rate limit is 25 requests per day."}"#
            ),
            Err(ResponseError::DailyLimit(_))
        ));
        assert_eq!(
            parse_quote("NVDA", r#"{"Global Quote": {"05. price": "abc", "06. volume": "1", "07. latest trading day": "2026-05-11"}}"#)
                .unwrap_err()
                .to_string(),
            "NVDA: field \"05. price\" is not a price"
        );
    }
}
