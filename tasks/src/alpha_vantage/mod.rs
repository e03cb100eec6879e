//! `kind: alpha_vantage` — lands Alpha Vantage TIME_SERIES_DAILY bars by trading date.
//!
//! Each bar is landed once, under its own trading date:
//! `{output}/bars/dt={trading date}/{SYMBOL}.csv` (`symbol,date,open,high,low,close,volume`,
//! one row), written atomically so a crawl never sees half a file. A bar already landed
//! is left alone unless the service now gives other values for it; then it is replaced
//! and the task's `revised` output names it.
//!
//! A run for logical date D fetches only the symbols that have no bar for D yet. A
//! response is kept as `{output}/responses/{SYMBOL}.json`; while its newest bar is D or
//! later it answers for D without another request, so a backfill costs one request per
//! symbol for the whole range, and a holiday costs none.
//!
//! When no symbol has a bar for D because the market was closed (a weekend, a holiday,
//! or a day the service's data skips), the task has nothing to do: with
//! `short_circuit: true` it ends its branch (downstream tasks are skipped, the run
//! succeeds); without it, it fails saying so.
//!
//! Live (an API key is set), answers are classified by meaning ([`answer`]): transient
//! ones are retried with backoff; a spent daily quota stops all calls at once; a premium
//! refusal or a refused key fails at once; a bad symbol fails alone. Calls are counted
//! per UTC day in the state store against `daily_quota`. Offline (no key, `sample_dir`
//! given), responses are read from files through the same parser.
//!
//! The key is never logged, stored or written: it is not part of any message (reqwest
//! errors are stripped of their URL, which holds it; the service's messages, which may
//! echo it, are scrubbed), and the task's `Debug` hides it.

pub mod answer;
mod landing;
pub mod market;
pub mod quote;

use landing::Landing;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use orchestrator_engine::lineage::{Dataset, Datasets, Place};
use orchestrator_engine::task::{
    BuildContext, Dur, Outputs, Task, TaskConfig, TaskContext, TaskFailure, SHORT_CIRCUIT,
};
use serde::Deserialize;
use serde_json::{json, Value};

pub use answer::{bars_csv, parse_daily, Bar, ResponseError};

/// Lands daily bars (Alpha Vantage TIME_SERIES_DAILY) under their trading date, rate-limited and within a daily quota; offline from bundled sample responses.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    /// `compact` (the last 100 trading days, default) or `full` (premium keys only).
    outputsize: Option<OutputSize>,
    /// Requests per minute across the whole task (default 5).
    calls_per_minute: Option<f64>,
    /// Requests per UTC day the key may make (default 25, a free key's; 0 = unlimited).
    daily_quota: Option<u64>,
    /// Fetch every symbol again even when its bar for the date is landed, and replace
    /// landed bars whose values changed (default false).
    reprocess: Option<bool>,
    /// Per request (default 30s). (`timeout:` is the whole task's.)
    request_timeout: Option<Dur>,
    /// First wait after a transient answer; doubles each time (default 60s).
    throttle_wait: Option<Dur>,
    /// Attempts per symbol before it fails (default 5).
    max_attempts: Option<u32>,
    /// Offline: read `SYMBOL.json` responses from this directory when no key is set.
    sample_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputSize {
    Compact,
    Full,
}

pub const DEFAULT_BASE_URL: &str = "https://www.alphavantage.co/query";
pub const DEFAULT_KEY_ENV: &str = "ALPHAVANTAGE_API_KEY";
/// The state store's usage counter for Alpha Vantage calls.
pub const USAGE_COUNTER: &str = "alpha_vantage";

/// Why an ingest (`alpha_vantage`, `alpha_vantage_quote`) could not ask for or land data:
/// its request settings, the landing zone's files or objects, or a quote's request.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("`symbols` is empty; list the tickers")]
    NoSymbols,
    #[error("`{symbol}` is not a ticker symbol (letters, digits, `.` and `-`)")]
    NotASymbol { symbol: String },
    #[error("`base_url` `{url}` is not an http(s) URL")]
    NotHttp { url: String },
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The S3 landing zone (listing, reading or writing an object).
    #[error(transparent)]
    S3(#[from] orchestrator_aws::AwsError),
    /// Offline: the sample response of `symbol` could not be read.
    #[error("{symbol}: no sample response {} ({source})", .path.display())]
    NoSample {
        symbol: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A response that is not bars or a quote (`Note`, `Information`, ...).
    #[error("{0}")]
    Response(ResponseError),
    /// The answer's words, with the key scrubbed out (see `scrub`).
    #[error("{0}")]
    Answer(String),
    /// The usage counters in the state store.
    #[error(transparent)]
    Usage(#[from] orchestrator_engine::state::StateError),
    #[error("daily request limit reached ({used} of {quota} calls today, UTC)")]
    DailyLimit { used: u64, quota: u64 },
    /// `source` is stripped of its URL, which holds the key.
    #[error("{symbol}: request failed: {source}")]
    Request {
        symbol: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{symbol}: HTTP {status}")]
    Http {
        symbol: String,
        status: reqwest::StatusCode,
    },
    /// `source` is stripped of its URL, which holds the key.
    #[error("{symbol}: reading the response failed: {source}")]
    ReadResponse {
        symbol: String,
        #[source]
        source: reqwest::Error,
    },
}

impl From<IngestError> for TaskFailure {
    fn from(e: IngestError) -> Self {
        TaskFailure::new(e.to_string())
    }
}

impl From<IngestError> for orchestrator_engine::task::Invalid {
    fn from(e: IngestError) -> Self {
        e.to_string().into()
    }
}

impl TaskConfig for AlphaVantageConfig {
    const KIND: &'static str = "alpha_vantage";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        ("landed", "symbols with a bar for the date"),
        ("fetched", "symbols requested from the service"),
        ("from_cache", "symbols answered by a kept response"),
        ("new_bars", "bars not landed before"),
        ("revised", "bars whose values changed"),
    ];
    const SHORT_CIRCUIT: bool = true;

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        let base_url = check_request(&self.symbols, self.base_url)?;
        let cpm = self.calls_per_minute.unwrap_or(5.0);
        if !(cpm > 0.0 && cpm.is_finite()) {
            return Err(invalid!(
                "`calls_per_minute` must be more than 0, found {cpm}"
            ));
        }
        Ok(Arc::new(AlphaVantage {
            symbols: self.symbols,
            output: match self.output.to_str() {
                Some(url) if url.starts_with("s3://") => match crate::aws::Target::of(ctx) {
                    crate::aws::Target::Aws(block) => Output::S3(url.to_string(), block),
                    crate::aws::Target::Local => {
                        return Err(invalid!(
                            "`output: {url}` is in S3: run the workflow with `backend: aws` (or --backend aws), or give a directory"
                        ))
                    }
                },
                _ => Output::Dir(ctx.resolve(self.output)),
            },
            api_key: self.api_key.filter(|k| !k.trim().is_empty()),
            api_key_env: self.api_key_env.unwrap_or_else(|| DEFAULT_KEY_ENV.into()),
            base_url,
            outputsize: self.outputsize.unwrap_or(OutputSize::Compact),
            interval: Duration::from_secs_f64(60.0 / cpm),
            daily_quota: self.daily_quota.unwrap_or(25),
            reprocess: self.reprocess.unwrap_or(false),
            timeout: self
                .request_timeout
                .map_or(Duration::from_secs(30), |d| d.0),
            throttle_wait: self.throttle_wait.map_or(Duration::from_secs(60), |d| d.0),
            max_attempts: self.max_attempts.unwrap_or(5).max(1),
            sample_dir: self.sample_dir.map(|p| ctx.resolve(p)),
        }))
    }
}

/// Where bars and responses land.
#[derive(Debug, Clone)]
enum Output {
    Dir(PathBuf),
    /// `s3://...`, with the workflow's `aws:` block.
    S3(String, orchestrator_engine::workflow::AwsBlock),
}

struct AlphaVantage {
    symbols: Vec<String>,
    output: Output,
    api_key: Option<String>,
    api_key_env: String,
    base_url: String,
    outputsize: OutputSize,
    interval: Duration,
    daily_quota: u64,
    reprocess: bool,
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

/// Writes `contents` to `path` via a temporary file in the same directory and a rename.
/// The API key: `api_key:`, else the non-empty value of the variable `env`.
fn api_key(explicit: &Option<String>, env: &str) -> Option<String> {
    explicit
        .clone()
        .or_else(|| std::env::var(env).ok().filter(|k| !k.trim().is_empty()))
}

/// Checks `symbols:` (not empty, ticker characters) and `base_url:` (http or https,
/// default Alpha Vantage's); returns the base URL.
fn check_request(symbols: &[String], base_url: Option<String>) -> Result<String, IngestError> {
    if symbols.is_empty() {
        return Err(IngestError::NoSymbols);
    }
    if let Some(bad) = symbols.iter().find(|s| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    }) {
        return Err(IngestError::NotASymbol {
            symbol: bad.clone(),
        });
    }
    let base_url = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.into());
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(IngestError::NotHttp { url: base_url });
    }
    Ok(base_url)
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), IngestError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| crate::files::FileError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{:08x}", fastrand::u32(..)));
    if let Err(source) = std::fs::write(&tmp, contents) {
        return Err(crate::files::FileError::Write { path: tmp, source }.into());
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        crate::files::FileError::Move {
            from: tmp.clone(),
            to: path.to_path_buf(),
            source,
        }
        .into()
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
    async fn wait(&mut self, cancel: &orchestrator_engine::CancellationToken) -> Result<(), Fail> {
        let now = tokio::time::Instant::now();
        let at = self.next.filter(|n| *n > now).unwrap_or(now);
        self.next = Some(at + self.interval);
        sleep_or_cancel(at - now, cancel).await
    }
}

async fn sleep_or_cancel(
    d: Duration,
    cancel: &orchestrator_engine::CancellationToken,
) -> Result<(), Fail> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(Fail::Cancelled),
    }
}

/// Why a symbol has no bars.
enum Fail {
    /// This symbol only.
    Symbol(String),
    /// No further call can succeed (quota spent, premium refusal, key refused).
    StopAll(Stop),
    Cancelled,
}

#[derive(Debug, Clone)]
enum Stop {
    /// The daily quota is spent; `said` is the service's message, if it said so.
    Quota {
        said: Option<String>,
    },
    Premium(String),
    BadKey(String),
}

/// Replaces the key, and anything the service says it "detected" as a key, by `***`.
fn scrub(key: &str, text: &str) -> String {
    let mut out = if key.is_empty() {
        text.to_string()
    } else {
        text.replace(key, "***")
    };
    for marker in ["API key as ", "api key as ", "apikey="] {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker) {
            let start = from + i + marker.len();
            let end = out[start..]
                .find(|c: char| c.is_whitespace() || c == '&' || c == '"' || c == ',')
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

/// What a run found, for its outputs and its outcome.
#[derive(Default)]
struct Report {
    /// Symbols with a bar for the logical date.
    with_bar: Vec<String>,
    fetched: Vec<String>,
    from_cache: Vec<String>,
    new_bars: usize,
    /// `SYMBOL DATE` of landed bars replaced with new values.
    revised: Vec<String>,
    /// Oldest and newest bar dates seen in this run's responses.
    oldest: Option<String>,
    newest: Option<String>,
    /// The newest bar before the logical date.
    last_before: Option<String>,
    /// Symbols not fetched because a stop came first.
    not_fetched: Vec<String>,
    failed: serde_json::Map<String, Value>,
    stop: Option<Stop>,
}

#[async_trait::async_trait]
impl Task for AlphaVantage {
    /// The landing zone's bars (what a crawl of `{output}/bars` reads).
    fn lineage(&self, _: Place<'_>, _: Option<&Outputs>) -> Datasets {
        let bars = match &self.output {
            Output::Dir(dir) => Some(Dataset::file(&dir.join("bars"))),
            Output::S3(url, _) => Dataset::s3(&format!("{}/bars", url.trim_end_matches('/'))),
        };
        Datasets {
            inputs: Vec::new(),
            outputs: bars.into_iter().collect(),
        }
    }

    fn default_date(&self) -> Option<orchestrator_engine::task::DefaultDate> {
        let (newest, dir) = self.sample_newest()?;
        Some(orchestrator_engine::task::DefaultDate {
            why: format!(
                "offline (no API key in ${}): the newest trading day of the sample responses in {}",
                self.api_key_env,
                dir.display()
            ),
            date: newest,
        })
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let date = NaiveDate::parse_from_str(&ctx.logical_date, "%Y-%m-%d").map_err(|_| {
            TaskFailure::new(format!(
                "the run's logical date `{}` is not a date like 2026-01-31",
                ctx.logical_date
            ))
        })?;
        let mut report = Report::default();
        let mut landing = match &self.output {
            Output::Dir(d) => Landing::Dir(d.clone()),
            Output::S3(url, block) => Landing::s3(crate::aws::connect(block).await, url).await?,
        };

        // Which symbols have no bar for the date yet. When none is missing, no source is
        // needed at all (e.g. history landed as CSV files, with neither key nor sample).
        let mut missing = Vec::new();
        for symbol in &self.symbols {
            if !self.reprocess && landing.exists(&bar_path(&ctx.logical_date, symbol)) {
                report.with_bar.push(symbol.clone());
            } else {
                missing.push(symbol.clone());
            }
        }
        if missing.is_empty() {
            ctx.output.line(&format!(
                "every symbol's bar for {} is landed already; nothing fetched",
                ctx.logical_date
            ));
            return self.outcome(ctx, date, report, "", &landing);
        }
        let source = self.source(ctx)?;
        let key = match &source {
            Source::Live { key, .. } => key.clone(),
            Source::Offline(_) => String::new(),
        };
        let mut to_get = Vec::new();
        for symbol in missing {
            if !self.reprocess && matches!(source, Source::Live { .. }) {
                if let Some(bars) = cached(&landing, &symbol, &ctx.logical_date).await {
                    land(&mut landing, &symbol, &bars, &ctx.logical_date, &mut report).await?;
                    report.from_cache.push(symbol);
                    continue;
                }
            }
            to_get.push(symbol);
        }

        let mut limiter = Limiter {
            interval: self.interval,
            next: None,
        };
        if let Source::Live { .. } = source {
            self.announce_quota(ctx, to_get.len());
        }
        let now = Utc::now();
        for symbol in &to_get {
            if ctx.cancel.is_cancelled() {
                return Err(TaskFailure::new("cancelled"));
            }
            if report.stop.is_some() {
                report.not_fetched.push(symbol.clone());
                continue;
            }
            let got = match &source {
                Source::Offline(dir) => read_sample(dir, symbol),
                Source::Live { key, client } => {
                    report.fetched.push(symbol.clone());
                    self.fetch(client, key, symbol, &mut limiter, ctx).await
                }
            };
            match got {
                Ok((body, bars)) => {
                    if let Source::Live { .. } = source {
                        landing
                            .write(&format!("responses/{symbol}.json"), body.as_bytes())
                            .await?;
                    }
                    let before = bars.len();
                    let bars: Vec<Bar> = bars
                        .into_iter()
                        .filter(|b| {
                            NaiveDate::parse_from_str(&b.date, "%Y-%m-%d")
                                .is_ok_and(|d| market::bar_is_final(d, now))
                        })
                        .collect();
                    if bars.len() < before {
                        ctx.output.line(&format!(
                            "{symbol}: today's bar is not final before the 16:00 US/Eastern close; not landed"
                        ));
                    }
                    let (new, revised) = (report.new_bars, report.revised.len());
                    land(&mut landing, symbol, &bars, &ctx.logical_date, &mut report).await?;
                    ctx.output.line(&format!(
                        "{symbol}: {} bars in the response, {} new, {} revised",
                        bars.len(),
                        report.new_bars - new,
                        report.revised.len() - revised
                    ));
                }
                Err(Fail::Cancelled) => return Err(TaskFailure::new("cancelled")),
                Err(Fail::Symbol(e)) => {
                    let e = scrub(&key, &e);
                    ctx.output.line(&format!("{symbol}: {e}"));
                    report.failed.insert(symbol.clone(), json!(e));
                }
                Err(Fail::StopAll(stop)) => {
                    report.not_fetched.push(symbol.clone());
                    report.stop = Some(stop);
                }
            }
        }
        self.outcome(ctx, date, report, &key, &landing)
    }
}

impl AlphaVantage {
    /// Offline (no key, a sample): the newest bar date of the first symbol's sample.
    fn sample_newest(&self) -> Option<(String, PathBuf)> {
        if api_key(&self.api_key, &self.api_key_env).is_some() {
            return None;
        }
        let dir = self.sample_dir.as_ref()?;
        let (_, bars) = read_sample(dir, self.symbols.first()?).ok()?;
        let newest = bars.iter().map(|b| b.date.clone()).max()?;
        Some((newest, dir.clone()))
    }

    fn source(&self, ctx: &TaskContext) -> Result<Source, TaskFailure> {
        match (api_key(&self.api_key, &self.api_key_env), &self.sample_dir) {
            (Some(key), _) => {
                let client = reqwest::Client::builder()
                    .timeout(self.timeout)
                    .build()
                    .map_err(|e| TaskFailure::new(format!("cannot start the HTTP client: {e}")))?;
                ctx.output.line(&format!(
                    "live: {} symbols from {} at most {:.1} calls per minute",
                    self.symbols.len(),
                    self.base_url,
                    60.0 / self.interval.as_secs_f64()
                ));
                Ok(Source::Live { key, client })
            }
            (None, Some(dir)) => {
                ctx.output.line(&format!(
                    "offline: no API key in ${}; reading sample responses from {}",
                    self.api_key_env,
                    dir.display()
                ));
                Ok(Source::Offline(dir.clone()))
            }
            (None, None) => Err(TaskFailure::new(format!(
                "no Alpha Vantage API key: set ${} (or `api_key:`), or give `sample_dir:` to run offline",
                self.api_key_env
            ))),
        }
    }

    fn today() -> String {
        Utc::now().format("%Y-%m-%d").to_string()
    }

    fn announce_quota(&self, ctx: &TaskContext, needed: usize) {
        if self.daily_quota == 0 || needed == 0 {
            return;
        }
        let used = ctx.usage.count(USAGE_COUNTER, &Self::today()).unwrap_or(0);
        let left = self.daily_quota.saturating_sub(used);
        if needed as u64 > left {
            ctx.output.line(&format!(
                "daily quota: {needed} symbols to fetch, but only {left} of {} calls are left today (UTC); fetching {left}",
                self.daily_quota
            ));
        }
    }

    /// Counts one call against the daily quota, or says the quota is spent.
    fn spend_call(&self, ctx: &TaskContext) -> Result<(), Fail> {
        let today = Self::today();
        if self.daily_quota > 0 {
            let used = ctx
                .usage
                .count(USAGE_COUNTER, &today)
                .map_err(|e| Fail::Symbol(e.to_string()))?;
            if used >= self.daily_quota {
                return Err(Fail::StopAll(Stop::Quota { said: None }));
            }
        }
        ctx.usage
            .add(USAGE_COUNTER, &today, 1)
            .map_err(|e| Fail::Symbol(e.to_string()))?;
        Ok(())
    }

    /// Fetches one symbol, retrying transient answers with backoff.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        key: &str,
        symbol: &str,
        limiter: &mut Limiter,
        ctx: &TaskContext,
    ) -> Result<(String, Vec<Bar>), Fail> {
        let size = match self.outputsize {
            OutputSize::Compact => "compact",
            OutputSize::Full => "full",
        };
        let mut wait = self.throttle_wait;
        for attempt in 1..=self.max_attempts {
            limiter.wait(&ctx.cancel).await?;
            self.spend_call(ctx)?;
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
                Err(e) => format!("request failed: {}", e.without_url()),
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    format!("HTTP {}", r.status())
                }
                Ok(r) if !r.status().is_success() => {
                    return Err(Fail::Symbol(format!(
                        "HTTP {} from {}",
                        r.status(),
                        self.base_url
                    )))
                }
                Ok(r) => match r.text().await {
                    Err(e) => format!("reading the response failed: {}", e.without_url()),
                    Ok(body) => match parse_daily(symbol, &body) {
                        Ok(bars) => return Ok((body, bars)),
                        Err(e @ ResponseError::Transient(_)) => e.to_string(),
                        Err(ResponseError::DailyLimit(m)) => {
                            // Later runs today need not ask to be told again.
                            let today = Self::today();
                            let used = ctx.usage.count(USAGE_COUNTER, &today).unwrap_or(0);
                            if self.daily_quota > used {
                                let _ =
                                    ctx.usage
                                        .add(USAGE_COUNTER, &today, self.daily_quota - used);
                            }
                            return Err(Fail::StopAll(Stop::Quota { said: Some(m) }));
                        }
                        Err(ResponseError::Premium(m)) => {
                            return Err(Fail::StopAll(Stop::Premium(m)))
                        }
                        Err(ResponseError::BadKey(m)) => {
                            return Err(Fail::StopAll(Stop::BadKey(m)))
                        }
                        Err(e) => return Err(Fail::Symbol(e.to_string())),
                    },
                },
            };
            let transient = scrub(key, &transient);
            if attempt == self.max_attempts {
                return Err(Fail::Symbol(format!(
                    "gave up after {attempt} attempts; last: {transient}"
                )));
            }
            ctx.output.line(&format!(
                "{symbol}: {transient}; retrying in {} (attempt {attempt} of {})",
                humantime::format_duration(wait),
                self.max_attempts
            ));
            sleep_or_cancel(wait, &ctx.cancel).await?;
            wait = wait.saturating_mul(2);
        }
        Err(Fail::Symbol("no attempt made (max_attempts is 0)".into()))
    }

    fn stop_message(
        &self,
        stop: &Stop,
        ctx: &TaskContext,
        key: &str,
        missing: &[String],
    ) -> String {
        let said = |m: &str| format!(" (Alpha Vantage said: {})", scrub(key, m));
        match stop {
            Stop::Quota { said: s } => format!(
                "daily request limit reached ({}{}); `orchestrator rerun {}` after midnight US/Eastern fetches the {} missing symbols: {}",
                if self.daily_quota > 0 {
                    format!("{} calls a day, `daily_quota`", self.daily_quota)
                } else {
                    "the service's limit".into()
                },
                s.as_deref()
                    .map(|m| format!("; Alpha Vantage said: {}", scrub(key, m)))
                    .unwrap_or_default(),
                ctx.run_id,
                missing.len(),
                missing.join(", ")
            ),
            Stop::Premium(m) => format!(
                "`outputsize: {}` needs a premium Alpha Vantage plan, and this key has none{}. Use `outputsize: compact` (the last 100 trading days) and land older history as CSV files under the landing zone's bars/ (see the README, \"Backfilling history\"), or use a premium key",
                match self.outputsize {
                    OutputSize::Full => "full",
                    OutputSize::Compact => "compact",
                },
                said(m)
            ),
            Stop::BadKey(m) => format!(
                "Alpha Vantage refused the API key in ${}{}; set a valid key (a free one: https://www.alphavantage.co/support/#api-key)",
                self.api_key_env,
                said(m)
            ),
        }
    }

    fn outcome(
        &self,
        ctx: &TaskContext,
        date: NaiveDate,
        report: Report,
        key: &str,
        landing: &Landing,
    ) -> Result<Outputs, TaskFailure> {
        let with_bar: BTreeSet<&String> = report.with_bar.iter().collect();
        let mut outputs = Outputs::new();
        outputs.insert("landed".into(), json!(with_bar));
        outputs.insert("fetched".into(), json!(report.fetched));
        outputs.insert("from_cache".into(), json!(report.from_cache));
        outputs.insert("new_bars".into(), json!(report.new_bars));
        outputs.insert("revised".into(), json!(report.revised));
        outputs.insert(
            "bars".into(),
            json!(landing.display(&format!("bars/dt={date}"))),
        );
        if !report.revised.is_empty() {
            ctx.output.line(&format!(
                "revised by the service, replaced: {}",
                report.revised.join(", ")
            ));
        }
        let mut problems = Vec::new();
        if let Some(stop) = &report.stop {
            let mut missing = report.not_fetched.clone();
            missing.sort();
            problems.push(self.stop_message(stop, ctx, key, &missing));
            outputs.insert("not_fetched".into(), json!(missing));
        }
        if !report.failed.is_empty() {
            let names: Vec<&str> = report.failed.keys().map(String::as_str).collect();
            problems.push(format!(
                "{} of {} symbols failed ({}); the others were landed:\n{}",
                names.len(),
                self.symbols.len(),
                names.join(", "),
                report
                    .failed
                    .iter()
                    .map(|(s, e)| format!("- {s}: {}", e.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
            outputs.insert("failed".into(), Value::Object(report.failed));
        }
        if !problems.is_empty() {
            return Err(TaskFailure {
                message: problems.join("\n"),
                exit_code: None,
                outputs,
                retryable: true,
            });
        }
        if !with_bar.is_empty() {
            let missing: Vec<&String> = self
                .symbols
                .iter()
                .filter(|s| !with_bar.contains(s))
                .collect();
            if !missing.is_empty() {
                ctx.output.line(&format!(
                    "no bar for {date} from: {} (not traded that day?)",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                outputs.insert("no_bar".into(), json!(missing));
            }
            return Ok(outputs);
        }
        // No symbol has a bar for the date.
        let day = date.to_string();
        let last = report.last_before.as_deref().map_or(String::new(), |n| {
            format!("; the last bar before it is {n}")
        });
        let closed = market::closed_because(date);
        let reason = match (&report.oldest, &report.newest) {
            (Some(oldest), _) if day < *oldest => {
                return Err(TaskFailure {
                    message: format!(
                        "no bars for {day}: the responses start at {oldest} (`outputsize: compact` covers the last 100 trading days). Land older history as CSV files under the landing zone's bars/ (see the README, \"Backfilling history\")"
                    ),
                    exit_code: None,
                    outputs,
                    retryable: true,
                })
            }
            (_, Some(newest)) if day > *newest && closed.is_none() => {
                if let Some((_, dir)) = self.sample_newest() {
                    return Err(TaskFailure {
                        message: format!(
                            "no bars for {day}: offline (no API key in ${}), and the sample responses in {} end at {newest}; run a date the sample covers (`--date {newest}`), or set ${} to fetch live",
                            self.api_key_env,
                            dir.display(),
                            self.api_key_env
                        ),
                        exit_code: None,
                        outputs,
                        retryable: true,
                    });
                }
                return Err(TaskFailure {
                    message: format!(
                        "no bars for {day} yet: the newest bar is {newest}. Alpha Vantage publishes a day's bar after the 16:00 US/Eastern close; `orchestrator rerun {}` later",
                        ctx.run_id
                    ),
                    exit_code: None,
                    outputs,
                    retryable: true,
                })
            }
            _ => match closed {
                Some(why) => format!("no bars for {day} (market closed: {why}){last}"),
                None => format!("no bars for {day} (market closed){last}"),
            },
        };
        ctx.output.line(&reason);
        if ctx.short_circuit {
            outputs.insert(SHORT_CIRCUIT.into(), json!(reason));
            Ok(outputs)
        } else {
            Err(TaskFailure {
                message: format!(
                    "{reason}; nothing to land. Add `short_circuit: true` to the task to end such runs `succeeded`, with the tasks after it skipped"
                ),
                exit_code: None,
                outputs,
                retryable: true,
            })
        }
    }
}

/// Where the bar of `symbol` on `date` lands, relative to the landing zone.
fn bar_path(date: &str, symbol: &str) -> String {
    format!("bars/dt={date}/{symbol}.csv")
}

/// The bars of the kept response of `symbol`, if it reaches `date` (its newest bar is
/// `date` or later): then it holds `date`'s bar, or there is none.
async fn cached(landing: &Landing, symbol: &str, date: &str) -> Option<Vec<Bar>> {
    let body = landing
        .read(&format!("responses/{symbol}.json"))
        .await
        .ok()
        .flatten()?;
    let bars = parse_daily(symbol, &body).ok()?;
    (bars.last()?.date.as_str() >= date).then_some(bars)
}

/// Lands each bar under its trading date: new ones written, changed ones replaced,
/// identical ones left alone.
async fn land(
    landing: &mut Landing,
    symbol: &str,
    bars: &[Bar],
    date: &str,
    report: &mut Report,
) -> Result<(), IngestError> {
    for bar in bars {
        let path = bar_path(&bar.date, symbol);
        let csv = bars_csv(symbol, std::slice::from_ref(bar));
        match landing.read(&path).await? {
            Some(old) if old == csv => {}
            Some(_) => {
                landing.write(&path, csv.as_bytes()).await?;
                report.revised.push(format!("{symbol} {}", bar.date));
            }
            None => {
                landing.write(&path, csv.as_bytes()).await?;
                report.new_bars += 1;
                // Tests stop here to kill an ingest with some bars landed and some not.
                if let Some(p) = crate::data::PauseHook::from_env("alpha_vantage") {
                    p.reached("mid-write").await;
                }
            }
        }
        if bar.date == date {
            report.with_bar.push(symbol.to_string());
        } else if bar.date.as_str() < date
            && report.last_before.as_ref().is_none_or(|l| bar.date > *l)
        {
            report.last_before = Some(bar.date.clone());
        }
    }
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        if report.oldest.as_ref().is_none_or(|o| first.date < *o) {
            report.oldest = Some(first.date.clone());
        }
        if report.newest.as_ref().is_none_or(|n| last.date > *n) {
            report.newest = Some(last.date.clone());
        }
    }
    Ok(())
}

fn read_sample(dir: &Path, symbol: &str) -> Result<(String, Vec<Bar>), Fail> {
    let src = dir.join(format!("{symbol}.json"));
    let body = std::fs::read_to_string(&src)
        .map_err(|e| Fail::Symbol(format!("no sample response {} ({e})", src.display())))?;
    let bars = parse_daily(symbol, &body).map_err(|e| Fail::Symbol(e.to_string()))?;
    Ok((body, bars))
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrubs_the_key_and_any_key_the_service_echoes() {
        assert_eq!(
            scrub("SECRET1", "We have detected your API key as SECRET1 and our standard API rate limit is 25 requests per day."),
            "We have detected your API key as *** and our standard API rate limit is 25 requests per day."
        );
        // A different spelling of the key than ours (e.g. trimmed or re-cased) still goes.
        assert_eq!(
            scrub("SECRET1", "detected your API key as secret1, limit"),
            "detected your API key as ***, limit"
        );
        assert_eq!(scrub("", "url?apikey=abc&x=1"), "url?apikey=***&x=1");
    }
}
