//! Protocol version 1's messages (docs/plugins.md): one JSON object per line, `type`
//! first in meaning. The engine sends one request (`describe` or `run`) and closes the
//! plugin's stdin; the plugin answers on stdout. Parsing is strict: anything a plugin
//! sends that is not one of these messages is a [`Violation`], named for the user.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The protocol version this engine speaks.
pub const VERSION: u64 = 1;

/// Longest message line read (1 MiB): a plugin that sends more without a newline is
/// stopped, so a runaway plugin cannot make the engine buffer its output.
pub const MAX_LINE: usize = 1 << 20;

/// Total size of one attempt's outputs (JSON), like a message line.
pub const MAX_OUTPUTS: usize = 1 << 20;

/// What `describe` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Description {
    pub protocol: u64,
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON Schema of the kind's fields (an object schema).
    pub fields: Value,
    /// Output name to what it holds.
    #[serde(default)]
    pub outputs: Map<String, Value>,
    #[serde(default)]
    pub short_circuit: bool,
}

/// A message of a running plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Log(String),
    Progress { fraction: f64, message: String },
    Output { key: String, value: Value },
    Result(Ending),
}

/// How an attempt ends, by the plugin's `result`.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Succeeded,
    Failed(String),
    Retryable(String),
    ShortCircuit(String),
}

/// A message that breaks the protocol, in words for the task's failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation(pub String);

/// Reads one line the plugin sent (without its newline).
pub fn parse(line: &[u8]) -> Result<Option<Message>, Violation> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let not_json_number = ["NaN", "Infinity"].iter().any(|w| text.contains(w));
        Violation(if not_json_number && text.contains("\"output\"") {
            format!(
                "sent an output that is not JSON (NaN and Infinity are not JSON numbers; send null or a string): {}",
                excerpt(text)
            )
        } else {
            format!("sent a line that is not JSON ({e}): {}", excerpt(text))
        })
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Violation(format!(
            "sent JSON that is not a message object: {}",
            excerpt(text)
        )));
    };
    let text_field = |name: &str| obj.get(name).and_then(Value::as_str).map(str::to_string);
    let message = match obj.get("type").and_then(Value::as_str) {
        Some("log") => Message::Log(text_field("message").unwrap_or_default()),
        Some("progress") => {
            let Some(fraction) = obj.get("fraction").and_then(Value::as_f64) else {
                return Err(Violation(format!(
                    "sent a `progress` without a numeric `fraction` (0 to 1): {}",
                    excerpt(text)
                )));
            };
            Message::Progress {
                fraction,
                message: text_field("message").unwrap_or_default(),
            }
        }
        Some("output") => {
            let key = text_field("key").filter(|k| !k.is_empty()).ok_or_else(|| {
                Violation(format!(
                    "sent an `output` without a `key`: {}",
                    excerpt(text)
                ))
            })?;
            let Some(value) = obj.get("value") else {
                return Err(Violation(format!(
                    "sent output `{key}` without a `value`"
                )));
            };
            if key == orchestrator_engine::task::SHORT_CIRCUIT {
                return Err(Violation(
                    "sent output `short_circuit`, which is reserved; end with a `result` of status `short_circuit` and a `reason` instead".into(),
                ));
            }
            Message::Output {
                key,
                value: value.clone(),
            }
        }
        Some("result") => {
            let message = text_field("message").unwrap_or_default();
            Message::Result(match obj.get("status").and_then(Value::as_str) {
                Some("succeeded") => Ending::Succeeded,
                Some("failed") => Ending::Failed(message),
                Some("retryable") => Ending::Retryable(message),
                Some("short_circuit") => Ending::ShortCircuit(
                    text_field("reason")
                        .filter(|r| !r.is_empty())
                        .unwrap_or(message),
                ),
                other => {
                    return Err(Violation(format!(
                        "sent a `result` with status {}; the statuses are succeeded, failed, retryable and short_circuit",
                        other.map_or_else(|| "missing".into(), |s| format!("`{s}`"))
                    )))
                }
            })
        }
        Some(other) => {
            return Err(Violation(format!(
                "sent a message of unknown type `{}`; protocol 1's are log, progress, output and result",
                excerpt(other)
            )))
        }
        None => {
            return Err(Violation(format!(
                "sent a message without a `type`: {}",
                excerpt(text)
            )))
        }
    };
    Ok(Some(message))
}

/// The first 200 characters of what a plugin sent, for a message.
pub fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(line: &str) -> String {
        parse(line.as_bytes()).unwrap_err().0
    }

    #[test]
    fn reads_each_message() {
        let m = |l: &str| parse(l.as_bytes()).unwrap().unwrap();
        assert_eq!(
            m(r#"{"type":"log","message":"hi"}"#),
            Message::Log("hi".into())
        );
        assert_eq!(
            m(r#"{"type":"progress","fraction":0.5,"message":"half"}"#),
            Message::Progress {
                fraction: 0.5,
                message: "half".into()
            }
        );
        assert_eq!(
            m(r#"{"type":"output","key":"rows","value":[1,2]}"#),
            Message::Output {
                key: "rows".into(),
                value: serde_json::json!([1, 2])
            }
        );
        assert_eq!(
            m(r#"{"type":"result","status":"short_circuit","reason":"holiday"}"#),
            Message::Result(Ending::ShortCircuit("holiday".into()))
        );
        assert_eq!(parse(b"  ").unwrap(), None);
    }

    #[test]
    fn names_what_breaks_the_protocol() {
        assert!(violation("hello").starts_with("sent a line that is not JSON"));
        assert!(
            violation(r#"{"type":"output","key":"x","value":NaN}"#).contains("NaN and Infinity")
        );
        assert!(violation(r#"{"type":"telemetry"}"#).contains("unknown type `telemetry`"));
        assert!(violation(r#"{"type":"result","status":"ok"}"#).contains("status `ok`"));
        assert!(violation(r#"{"type":"output","key":"x"}"#).contains("without a `value`"));
        assert!(violation("[1]").contains("not a message object"));
        assert!(
            violation(r#"{"type":"output","key":"short_circuit","value":1}"#).contains("reserved")
        );
    }
}
