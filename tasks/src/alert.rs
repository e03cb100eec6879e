//! `kind: alert` — data alerts: one message per row of a query, to the workflow's
//! `channels:`.
//!
//! `message:` and `dedupe_key:` are rendered per row, `{column}` standing for the row's
//! value (numbers with two decimals). A row whose key was sent before — by any run, a
//! retry, a rerun — is not sent again: the key is recorded in the state store after the
//! message reached a channel (so a crash in between re-sends it: at least once). Keys
//! are recorded per workflow and channel (`WORKFLOW/CHANNEL/KEY`), so a rerun after one
//! channel failed sends only to the channels that did not get the message.

use std::collections::BTreeMap;
use std::sync::Arc;

use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use orchestrator_engine::workflow::Channel;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::aws::Target;
use crate::data::backend::DataError;
use crate::data::local::Local;
use crate::data::{on_engine, SqlEngine};

/// Sends one message per row a query returns to the workflow's channels, each row once per channel (deduplicated by `dedupe_key`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// The rows to alert on.
    sql: String,
    /// Per row, e.g. `"{symbol}: {text}"`.
    message: String,
    /// Per row: what makes two alerts the same, e.g. `"signal:{symbol}:{date}"`.
    dedupe_key: String,
    /// Channel names from the workflow's `channels:`.
    to: Vec<String>,
    /// At most this many rows are read (default 1000).
    max_rows: Option<usize>,
}

impl TaskConfig for AlertConfig {
    const KIND: &'static str = "alert";

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        if self.to.is_empty() {
            return Err("`to` is empty; name at least one of the workflow's `channels:`".into());
        }
        let mut channels = Vec::new();
        for name in &self.to {
            let Some(ch) = ctx.channels.get(name) else {
                let known: Vec<&str> = ctx.channels.keys().map(String::as_str).collect();
                return Err(invalid!(
                    "`to: {name}`: the workflow has no channel `{name}` ({}); define it under `channels:`",
                    if known.is_empty() {
                        "it defines none".to_string()
                    } else {
                        format!("it has: {}", known.join(", "))
                    }
                ));
            };
            channels.push((name.clone(), ch.clone()));
        }
        Ok(Arc::new(Alert {
            workflow: ctx.workflow.clone(),
            sql: self.sql,
            message: self.message,
            dedupe_key: self.dedupe_key,
            channels,
            max_rows: self.max_rows.unwrap_or(1000),
            target: Target::of(ctx),
        }))
    }
}

#[derive(Debug)]
struct Alert {
    /// Dedupe keys are per workflow: two workflows may use the same key shape.
    workflow: String,
    sql: String,
    message: String,
    dedupe_key: String,
    channels: Vec<(String, Channel)>,
    max_rows: usize,
    target: Target,
}

/// Why an alert's `message` or `dedupe_key` could not be filled in from a row.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{name}}}` is not a column of the query (it has: {})", .columns.join(", "))]
    UnknownColumn { name: String, columns: Vec<String> },
}

/// `text` with each `{column}` replaced by the row's value.
pub fn render(text: &str, row: &serde_json::Map<String, Value>) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        let value = row.get(name).ok_or_else(|| TemplateError::UnknownColumn {
            name: name.to_string(),
            columns: row.keys().cloned().collect(),
        })?;
        out.push_str(&match value {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or_default()),
            other => other.to_string(),
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[async_trait::async_trait]
impl Task for Alert {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let rows = match &self.target {
            Target::Aws(block) => {
                crate::aws::Athena::new(block, ctx)
                    .await
                    .sample(&self.sql, self.max_rows)
                    .await
            }
            Target::Local => {
                let (catalog, sql, n) = (ctx.catalog.clone(), self.sql.clone(), self.max_rows);
                let (wh, creator) = (
                    ctx.warehouse.clone(),
                    format!("{}/{}", ctx.run_id, ctx.task_id),
                );
                on_engine(async move {
                    Local::open(catalog, wh, creator, None, None)
                        .await?
                        .sample(&sql, n)
                        .await
                })
                .await
                .map_err(DataError::from)
                .and_then(|r| r)
            }
        }
        .map_err(|e| TaskFailure::new(format!("in `sql`: {e}")))?;
        let (mut sent, mut already, mut messages) = (0usize, 0usize, Vec::new());
        let mut failed: Vec<String> = Vec::new();
        for row in &rows {
            let Value::Object(row) = row else { continue };
            let key = render(&self.dedupe_key, row)
                .map_err(|e| TaskFailure::new(format!("in `dedupe_key`: {e}")))?;
            let message = render(&self.message, row)
                .map_err(|e| TaskFailure::new(format!("in `message`: {e}")))?;
            let event = json!({
                "version": 1,
                "type": "alert",
                "id": format!("{}/{key}", self.workflow),
                "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "workflow": self.workflow,
                "run_id": ctx.run_id,
                "task": ctx.task_id,
                "logical_date": ctx.logical_date,
                "key": key,
                "message": message,
                "row": row,
            });
            // Recorded per channel: a rerun after one channel failed sends only to it.
            let (mut delivered, mut earlier) = (0, 0);
            for (name, ch) in &self.channels {
                let stored = format!("{}/{name}/{key}", self.workflow);
                let before = ctx
                    .sent
                    .sender(&stored)
                    .map_err(|e| TaskFailure::new(e.to_string()))?;
                if let Some(by) = before {
                    ctx.output.line(&format!(
                        "{key}: sent to `{name}` before, by run {by}; not again"
                    ));
                    earlier += 1;
                    continue;
                }
                // A failing channel does not hold back the others or the next rows.
                if let Err(e) = orchestrator_notify::deliver(ch, name, &event).await {
                    ctx.output.line(&format!("{key}: not delivered: {e}"));
                    failed.push(e);
                    continue;
                }
                ctx.sent
                    .mark(&stored, &ctx.run_id)
                    .map_err(|e| TaskFailure::new(e.to_string()))?;
                orchestrator_engine::metrics::alert_sent(&self.workflow, name);
                delivered += 1;
            }
            if delivered == 0 {
                if earlier == self.channels.len() {
                    already += 1;
                }
                continue;
            }
            ctx.output.line(&format!("alert: {message}"));
            sent += 1;
            if messages.len() < 20 {
                messages.push(message);
            }
        }
        if let Some(first) = failed.first() {
            return Err(TaskFailure::new(format!(
                "{first}{}; {sent} sent; `orchestrator rerun {}` sends what was not delivered",
                match failed.len() {
                    1 => String::new(),
                    n => format!(" (and {} more failed deliveries)", n - 1),
                },
                ctx.run_id
            )));
        }
        let channels: BTreeMap<&str, &str> = self
            .channels
            .iter()
            .map(|(n, c)| {
                (
                    n.as_str(),
                    match c {
                        Channel::File { .. } => "file",
                        Channel::Webhook { .. } => "webhook",
                        Channel::Command { .. } => "command",
                        Channel::Email { .. } => "email",
                        Channel::Sns { .. } => "sns",
                    },
                )
            })
            .collect();
        Ok(crate::aws::object(json!({
            "rows": rows.len(), "sent": sent, "already_sent": already,
            "messages": messages, "channels": channels,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_columns_with_two_decimals_and_names_unknown_ones() {
        let row = json!({"symbol": "NVDA", "close": 123.456, "n": 3, "x": null});
        let Value::Object(row) = row else { panic!() };
        assert_eq!(
            render("{symbol}: {close} ({n}, {x})", &row).unwrap(),
            "NVDA: 123.46 (3, -)"
        );
        let e = render("{nope}", &row).unwrap_err().to_string();
        assert!(
            e.starts_with("`{nope}` is not a column of the query"),
            "{e}"
        );
    }
}
