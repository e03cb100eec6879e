//! Where messages go: the channels a workflow (or the shared `channels.yaml`) defines.
//! Plain values, read by the loader and handed to task kinds in their `BuildContext`.

use std::path::PathBuf;

use serde::Deserialize;

/// The file beside workflows whose `channels:` they all may use.
pub const SHARED_CHANNELS: &str = "channels.yaml";

/// Where messages go (`channels:`): alerts from `kind: alert` tasks.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Channel {
    /// Appends one JSON object per message to a file (a relative path is in the state
    /// dir).
    File { path: PathBuf },
    /// POSTs each message as JSON; `format: slack` sends Slack's `{"text": ...}`.
    Webhook {
        url: String,
        #[serde(default)]
        format: Option<String>,
        /// Signs the body: `X-Orchestrator-Signature: sha256=HEX` (HMAC-SHA256).
        #[serde(default)]
        secret: Option<String>,
    },
    /// Runs `sh -c COMMAND` with the message's JSON on stdin; exit 0 is delivered.
    Command { command: String },
    /// Sends an email through an SMTP server: `smtp://HOST:PORT` (plain),
    /// `smtp://HOST:PORT?tls=required` (STARTTLS), `smtps://HOST` (TLS); credentials as
    /// `smtps://USER:PASSWORD@HOST`.
    Email {
        smtp: String,
        from: String,
        to: Vec<String>,
        /// Default: `[orchestrator] ` and the message.
        #[serde(default)]
        subject: Option<String>,
    },
    /// Publishes to an SNS topic (the event's JSON as the message). The region is the
    /// ARN's unless `region:` says otherwise; credentials come from the standard chain.
    Sns {
        topic_arn: String,
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        profile: Option<String>,
    },
}
