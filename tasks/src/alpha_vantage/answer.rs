//! What Alpha Vantage answers, classified by meaning.
//!
//! The service reports almost every problem as HTTP 200 with a JSON object holding one
//! message under `Note`, `Information` or `Error Message`, and which key carries which
//! problem has changed over the years (the per-minute limit moved from `Information` to
//! `Note` in 2018; the 2024 daily limit and the premium refusals came back under
//! `Information`). So the class is read from the message's words, most specific first:
//! the burst-limit message also mentions the daily limit, and the old per-minute one says
//! "500 calls per day".

use serde_json::Value;

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

/// An answer that holds no bars.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseError {
    /// Worth retrying after a wait: the per-second burst limit, the old per-minute limit,
    /// an outage page, an unknown notice.
    Transient(String),
    /// The key's requests for today are spent: no call before the next day will work.
    DailyLimit(String),
    /// The request needs a premium plan (`outputsize=full`, premium endpoints).
    Premium(String),
    /// The key itself is refused (invalid, missing, or the `demo` key): every symbol would
    /// fail the same way.
    BadKey(String),
    /// This request is wrong, e.g. an unknown symbol; retrying will not help.
    BadSymbol(String),
    /// Not the shape we expect: names the symbol, date and field.
    Malformed(String),
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Transient(m) => write!(f, "Alpha Vantage is busy: {m}"),
            ResponseError::DailyLimit(m) => write!(f, "daily limit reached: {m}"),
            ResponseError::Premium(m) => write!(f, "premium feature: {m}"),
            ResponseError::BadKey(m) => write!(f, "API key refused: {m}"),
            ResponseError::BadSymbol(m) => write!(f, "rejected by Alpha Vantage: {m}"),
            ResponseError::Malformed(m) => f.write_str(m),
        }
    }
}

/// The class of a message found under `key` (`Note`, `Information`, `Error Message`).
pub fn classify(key: &str, message: &str) -> ResponseError {
    let m = message.to_ascii_lowercase();
    let msg = message.to_string();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&[
        "per second",
        "spreading out",
        "burst",
        "per minute",
        "call frequency",
    ]) {
        ResponseError::Transient(msg)
    } else if has(&["per day", "daily rate limit", "daily limit"]) {
        ResponseError::DailyLimit(msg)
    } else if (has(&["demo"]) && has(&["key"]))
        || has(&[
            "apikey is invalid",
            "apikey is missing",
            "invalid api key",
            "api key is invalid",
            "invalid or missing",
        ])
    {
        ResponseError::BadKey(msg)
    } else if has(&["premium"]) {
        ResponseError::Premium(msg)
    } else if key == "Error Message" {
        ResponseError::BadSymbol(msg)
    } else {
        // An unknown notice: the service's notices so far were all about limits.
        ResponseError::Transient(msg)
    }
}

/// The answer as JSON, or what kind of non-answer it is: an HTML page (an outage),
/// invalid JSON, or a `Note`/`Information`/`Error Message` (limits, key, bad symbol).
pub fn document(symbol: &str, body: &str) -> Result<Value, ResponseError> {
    let doc: Value = match serde_json::from_str(body) {
        Ok(doc) => doc,
        // An outage or a proxy answers with a web page: try again later.
        Err(_) if body.trim_start().starts_with('<') => {
            return Err(ResponseError::Transient(
                "an HTML page instead of JSON (an outage or maintenance page)".into(),
            ))
        }
        Err(e) => {
            return Err(ResponseError::Malformed(format!(
                "{symbol}: the response is not valid JSON ({e})"
            )))
        }
    };
    for key in ["Error Message", "Note", "Information"] {
        if let Some(msg) = doc.get(key) {
            let msg = msg.as_str().map_or_else(|| msg.to_string(), String::from);
            return Err(match classify(key, &msg) {
                ResponseError::BadSymbol(m) => ResponseError::BadSymbol(format!("{symbol}: {m}")),
                other => other,
            });
        }
    }
    Ok(doc)
}

/// Parses a TIME_SERIES_DAILY answer into bars, oldest first.
pub fn parse_daily(symbol: &str, body: &str) -> Result<Vec<Bar>, ResponseError> {
    let doc = document(symbol, body)?;
    let Some(series) = doc.get("Time Series (Daily)").and_then(Value::as_object) else {
        let keys = doc
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "));
        return Err(ResponseError::Malformed(format!(
            "{symbol}: the response has no \"Time Series (Daily)\" (it has: {})",
            keys.filter(|k| !k.is_empty())
                .unwrap_or_else(|| "no fields".into())
        )));
    };
    let mut bars = Vec::with_capacity(series.len());
    for (date, fields) in series {
        // Dates come as `2026-01-31`; tolerate a time after them.
        let day = date.get(..10).unwrap_or(date);
        if chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
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
            // Some feeds write whole volumes as `1234.0`.
            let t = s.trim();
            t.parse::<u64>()
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v < 1e18)
                        .map(|v| v as u64)
                })
                .ok_or_else(|| {
                    ResponseError::Malformed(format!(
                        "{symbol}, {date}: field \"5. volume\" is not a whole number: \"{s}\""
                    ))
                })?
        };
        bars.push(Bar {
            date: day.to_string(),
            open: price("1. open")?,
            high: price("2. high")?,
            low: price("3. low")?,
            close: price("4. close")?,
            volume,
        });
    }
    bars.sort_by(|a, b| a.date.cmp(&b.date));
    bars.dedup_by(|a, b| a.date == b.date);
    Ok(bars)
}

/// A price as written to the landed CSV: always with a decimal point, so a one-row file
/// whose prices happen to be whole is still read as floating point.
fn price(v: f64) -> String {
    let s = v.to_string();
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// Bars as CSV with header `symbol,date,open,high,low,close,volume`.
pub fn bars_csv(symbol: &str, bars: &[Bar]) -> String {
    let mut out = String::from("symbol,date,open,high,low,close,volume\n");
    for b in bars {
        out.push_str(&format!(
            "{symbol},{},{},{},{},{},{}\n",
            b.date,
            price(b.open),
            price(b.high),
            price(b.low),
            price(b.close),
            b.volume
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"Meta Data": {"2. Symbol": "IBM", "3. Last Refreshed": "2024-01-05 16:00:01"},
        "Time Series (Daily)": {
          "2024-01-05": {"1. open": "160.9000", "2. high": "161.5", "3. low": "159.53", "4. close": "160", "5. volume": "4267524"},
          "2024-01-04": {"1. open": "161.0000", "2. high": "161.6500", "3. low": "159.7500", "4. close": "160.1000", "5. volume": "3500000"}}}"#;

    #[test]
    fn parses_bars_oldest_first_with_any_number_of_decimals() {
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
                close: 160.0,
                volume: 4267524
            }
        );
        assert_eq!(
            bars_csv("IBM", &bars[1..]),
            "symbol,date,open,high,low,close,volume\nIBM,2024-01-05,160.9,161.5,159.53,160.0,4267524\n"
        );
    }

    /// The messages Alpha Vantage really sends (as reported by its users), and one each
    /// of the shapes it has used for them.
    #[test]
    fn classifies_answers_by_meaning_not_by_key() {
        type Is = fn(&ResponseError) -> bool;
        let cases: &[(&str, &str, Is)] = &[
            ("Information", "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly (1 request per second). You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), raise the per-second burst limit, and instantly access many premium features.", |e| matches!(e, ResponseError::Transient(_))),
            ("Note", "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to target a higher API call frequency.", |e| matches!(e, ResponseError::Transient(_))),
            ("Information", "We have detected your API key as ABC123 and our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits.", |e| matches!(e, ResponseError::DailyLimit(_))),
            ("Information", "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits.", |e| matches!(e, ResponseError::DailyLimit(_))),
            ("Information", "Thank you for using Alpha Vantage! The **outputsize=full** parameter value is a premium feature for the TIME_SERIES_DAILY endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium features", |e| matches!(e, ResponseError::Premium(_))),
            ("Information", "Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium endpoints", |e| matches!(e, ResponseError::Premium(_))),
            ("Information", "The **demo** API key is for demo purposes only. Please claim your free API key at (https://www.alphavantage.co/support/#api-key) to explore our full API offerings. It takes fewer than 20 seconds.", |e| matches!(e, ResponseError::BadKey(_))),
            ("Error Message", "the parameter apikey is invalid or missing. Please claim your free API key on (https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds.", |e| matches!(e, ResponseError::BadKey(_))),
            ("Error Message", "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY.", |e| matches!(e, ResponseError::BadSymbol(_))),
            ("Information", "Something new we have never seen.", |e| matches!(e, ResponseError::Transient(_))),
        ];
        for (key, msg, want) in cases {
            let body = serde_json::json!({ *key: msg }).to_string();
            let got = parse_daily("NVDA", &body).unwrap_err();
            assert!(want(&got), "{key}: {msg}\n=> {got:?}");
        }
        assert!(matches!(
            parse_daily("X", "<!DOCTYPE html><html><body>503 Service Unavailable</body></html>"),
            Err(ResponseError::Transient(m)) if m.contains("HTML page")
        ));
    }

    #[test]
    fn malformed_answers_name_symbol_date_and_field() {
        assert_eq!(
            parse_daily("IBM", OK.replace("\"2. high\": \"161.5\", ", "").as_str()),
            Err(ResponseError::Malformed(
                "IBM, 2024-01-05: field \"2. high\" is missing".into()
            ))
        );
        assert_eq!(
            parse_daily("IBM", OK.replace("159.53\"", "n/a\"").as_str()),
            Err(ResponseError::Malformed(
                "IBM, 2024-01-05: field \"3. low\" is not a number: \"n/a\"".into()
            ))
        );
        assert!(
            matches!(parse_daily("IBM", "{not json"), Err(ResponseError::Malformed(m)) if m.starts_with("IBM: the response is not valid JSON"))
        );
        assert!(
            matches!(parse_daily("IBM", "{}"), Err(ResponseError::Malformed(m)) if m.contains("no \"Time Series (Daily)\" (it has: no fields)"))
        );
    }
}
