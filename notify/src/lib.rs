//! Delivering messages to a workflow's `channels:`: data alerts (`kind: alert`) and run
//! notifications from the state store's outbox.
//!
//! The engine writes each notification into the outbox in the same commit as what it
//! reports ([`orchestrator_engine::notify`]); [`deliver_due`] sends what is due, records
//! the outcome, and backs off on failure, so a notification survives a crash and is
//! delivered at least once. The receiver tells repeats apart by the payload's `id` (also
//! the `X-Orchestrator-Id` header), which is the same for every attempt.
//!
//! Outbox records hold the channel's *name*, never its URL or secret: [`Resolve`] turns
//! the name into a [`Channel`] when delivering (the binary loads the run's workflow).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use orchestrator_engine::state::{DeliveryStatus, OutboxRecord, StateError, Store, Write};
use orchestrator_engine::template::Redactor;
use orchestrator_engine::workflow::Channel;
use serde_json::{json, Value};

/// How long one delivery may take (a webhook's answer, a command's run).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts before a notification is given up (`failed`); the waits between them grow
/// from 5 s, doubling, to an hour: about a day in all.
pub const MAX_ATTEMPTS: u32 = 30;

/// Turns an outbox record's channel name into its definition (`Err`: why it cannot, e.g.
/// the workflow no longer defines it).
pub type Resolve<'a> = dyn Fn(&OutboxRecord) -> Result<Channel, String> + Send + Sync + 'a;

/// Sends `event` to `channel` once. `name` is the channel's name, for errors. Errors
/// never contain the channel's URL (it is often a secret).
pub async fn deliver(channel: &Channel, name: &str, event: &Value) -> Result<(), String> {
    let id = event.get("id").and_then(Value::as_str);
    deliver_as(channel, name, event, id).await
}

/// [`deliver`], with the idempotency key a webhook receiver sees as `X-Orchestrator-Id`
/// given apart from the event (an OpenLineage event has no field for it).
async fn deliver_as(
    channel: &Channel,
    name: &str,
    event: &Value,
    id: Option<&str>,
) -> Result<(), String> {
    match channel {
        Channel::File { path } => append(path, event).map_err(|e| {
            format!(
                "channel `{name}`: cannot append to {} ({e})",
                path.display()
            )
        }),
        Channel::Webhook {
            url,
            format,
            secret,
        } => {
            let body = match format.as_deref() {
                Some("slack") => slack(event),
                _ => event.clone(),
            }
            .to_string();
            let mut request = http()
                .post(url)
                .timeout(DELIVERY_TIMEOUT)
                .header("Content-Type", "application/json")
                .header("User-Agent", "orchestrator");
            if let Some(id) = id {
                request = request.header("X-Orchestrator-Id", id);
            }
            if let Some(secret) = secret {
                request = request.header("X-Orchestrator-Signature", signature(secret, &body));
            }
            let answer = request
                .body(body)
                .send()
                .await
                .map_err(|e| format!("channel `{name}`: {}", e.without_url()))?;
            let status = answer.status();
            if status.is_success() {
                Ok(())
            } else {
                // A short excerpt of what the receiver said helps (Slack answers
                // `invalid_payload`, `no_service`); it cannot hold our URL.
                let text = answer.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                Err(format!(
                    "channel `{name}`: HTTP {status}{}",
                    if text.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", text.trim())
                    }
                ))
            }
        }
        Channel::Command { command } => run_command(command, event)
            .await
            .map_err(|e| format!("channel `{name}`: {e}")),
        Channel::Email {
            smtp,
            from,
            to,
            subject,
        } => send_email(smtp, from, to, subject.as_deref(), event)
            .await
            .map_err(|e| format!("channel `{name}`: {e}")),
        Channel::Sns {
            topic_arn,
            region,
            profile,
        } => {
            let settings = orchestrator_aws::Settings {
                // arn:aws:sns:REGION:ACCOUNT:NAME
                region: region
                    .clone()
                    .or_else(|| topic_arn.split(':').nth(3).map(str::to_string)),
                profile: profile.clone(),
                ..Default::default()
            };
            // One SDK config per channel settings per process, reused by every delivery.
            let aws = orchestrator_aws::Aws::shared(settings).await;
            aws.publish(topic_arn, &subject(event), &event.to_string())
                .await
                .map(|_| ())
                .map_err(|e| format!("channel `{name}`: {e}"))
        }
    }
}

/// The subject of an email about `event`: `[orchestrator] ` and the message's first line,
/// cut at 150 characters.
pub fn subject(event: &Value) -> String {
    let message = event
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("notification");
    let line = message.lines().next().unwrap_or_default();
    let mut cut: String = line.chars().take(150).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    format!("[orchestrator] {cut}")
}

async fn send_email(
    smtp: &str,
    from: &str,
    to: &[String],
    subject_line: Option<&str>,
    event: &Value,
) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let address = |a: &str, field: &str| {
        a.parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("`{field}` {a:?} is not an email address ({e})"))
    };
    let mut builder = Message::builder()
        .from(address(from, "from")?)
        .subject(subject_line.map_or_else(|| subject(event), str::to_string));
    for t in to {
        builder = builder.to(address(t, "to")?);
    }
    let text = event
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let body = format!(
        "{text}\n\n{}\n",
        serde_json::to_string_pretty(event).unwrap_or_default()
    );
    let email = builder
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())?;
    // The URL may hold a password: never put it in an error.
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)
        .map_err(|_| "`smtp` is not a usable smtp:// or smtps:// URL".to_string())?
        .timeout(Some(DELIVERY_TIMEOUT))
        .build();
    transport
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP: {e}"))
}

/// `sha256=HEX`: HMAC-SHA256 of the body with the channel's secret, as GitHub signs its
/// webhooks; the receiver recomputes it over the raw body.
pub fn signature(secret: &str, body: &str) -> String {
    // HMAC accepts a key of any length: new_from_slice cannot fail.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Slack's incoming-webhook shape: `text` (the notification fallback) and one section.
fn slack(event: &Value) -> Value {
    let text = event
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = json!({ "text": text });
    if let Some(cmds) = event.get("commands") {
        let show = cmds.get("show").and_then(Value::as_str).unwrap_or_default();
        let rerun = cmds
            .get("rerun")
            .and_then(Value::as_str)
            .unwrap_or_default();
        out["blocks"] = json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("`{show}` · `{rerun}`")}]}
        ]);
    }
    out
}

fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

fn append(path: &Path, event: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write per line: concurrent appenders never interleave within a line.
    f.write_all(format!("{event}\n").as_bytes())?;
    f.sync_data()
}

async fn run_command(command: &str, event: &Value) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `sh -c`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine: ignore a broken pipe.
        let _ = stdin.write_all(format!("{event}\n").as_bytes()).await;
    }
    let out = tokio::time::timeout(DELIVERY_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "the command ran over {}s and was killed",
                DELIVERY_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().trim();
    Err(format!(
        "the command exited with {}{}",
        out.status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("status {c}")),
        if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        }
    ))
}

/// The wait after the `n`-th failed attempt (counting from 0): 5 s doubling to an hour.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs((5u64 << n.min(10)).min(3600))
}

/// What one pass over the outbox did.
#[derive(Debug, Default)]
pub struct Report {
    pub delivered: usize,
    /// Tried and failed; tried again later (or given up: see the record).
    pub failed: Vec<OutboxRecord>,
}

/// Which pending notifications a pass delivers.
pub type Select<'a> = dyn Fn(&OutboxRecord) -> bool + Send + Sync + 'a;

/// Whether `rec` is due at `now` (its backoff has passed).
pub fn due(rec: &OutboxRecord, now: DateTime<Utc>) -> bool {
    rec.next_at <= now
}

/// Delivers every pending notification `select` picks, recording each outcome durably.
/// Each channel is delivered on its own (in order within it), so a webhook that hangs
/// holds only its own messages. With `budget`, the whole pass ends within it: an attempt
/// still going then counts as failed and is tried again later.
pub async fn deliver_due(
    store: &Store,
    resolve: &Resolve<'_>,
    select: &Select<'_>,
) -> Result<Report, StateError> {
    deliver_due_within(store, resolve, select, None).await
}

/// [`deliver_due`], bounded in total time.
pub async fn deliver_due_within(
    store: &Store,
    resolve: &Resolve<'_>,
    select: &Select<'_>,
    budget: Option<Duration>,
) -> Result<Report, StateError> {
    let deadline = budget.map(|b| tokio::time::Instant::now() + b);
    let mut queues: std::collections::BTreeMap<(String, String), Vec<OutboxRecord>> =
        Default::default();
    for rec in store.outbox_pending()? {
        if select(&rec) {
            let key = (
                rec.workflow_path
                    .clone()
                    .unwrap_or_else(|| rec.workflow.clone()),
                rec.channel.clone(),
            );
            queues.entry(key).or_default().push(rec);
        }
    }
    let passes = queues
        .into_values()
        .map(|queue| deliver_queue(store, resolve, queue, deadline));
    let mut report = Report::default();
    for outcome in futures_util::future::join_all(passes).await {
        let (delivered, failed) = outcome?;
        report.delivered += delivered;
        report.failed.extend(failed);
    }
    Ok(report)
}

/// One channel's notifications, oldest first.
async fn deliver_queue(
    store: &Store,
    resolve: &Resolve<'_>,
    queue: Vec<OutboxRecord>,
    deadline: Option<tokio::time::Instant>,
) -> Result<(usize, Vec<OutboxRecord>), StateError> {
    if let Some(done) = append_all(store, resolve, &queue)? {
        return Ok(done);
    }
    let (mut delivered, mut failed) = (0, Vec::new());
    for mut rec in queue {
        let attempt = async {
            match resolve(&rec) {
                Ok(channel) => deliver_as(&channel, &rec.channel, &rec.payload, Some(&rec.id))
                    .await
                    .map_err(|e| redact_for(&channel, &e)),
                Err(e) => Err(Redactor::from_env().redact(&e).into_owned()),
            }
        };
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d, attempt).await.unwrap_or_else(|_| {
                Err("no answer within the time this command waits for deliveries; the outbox keeps it".to_string())
            }),
            None => attempt.await,
        };
        rec.attempts += 1;
        let at = Utc::now();
        match result {
            Ok(()) => {
                rec.status = DeliveryStatus::Delivered;
                rec.delivered_at = Some(at);
                rec.last_error = None;
                delivered += 1;
            }
            Err(e) => {
                tracing::warn!(
                    "notification {} not delivered (attempt {}): {e}",
                    rec.id,
                    rec.attempts
                );
                rec.last_error = Some(e);
                if rec.attempts >= MAX_ATTEMPTS {
                    rec.status = DeliveryStatus::GaveUp;
                } else {
                    rec.status = DeliveryStatus::Failed;
                    rec.next_at = at
                        + chrono::Duration::from_std(backoff(rec.attempts - 1))
                            .unwrap_or_else(|_| chrono::Duration::hours(1));
                }
            }
        }
        store.commit(&[Write::Outbox(rec.clone())])?;
        orchestrator_engine::metrics::notification(&rec.channel, rec.status.as_str());
        if rec.status != DeliveryStatus::Delivered {
            failed.push(rec);
        }
    }
    Ok((delivered, failed))
}

/// A queue bound for one file (a `file` channel, an OpenLineage file: a run's lineage is
/// two events per task): every line in one append and one sync, every outcome in one
/// commit, instead of two durable writes per message. `None` when the queue is not all
/// for one file.
fn append_all(
    store: &Store,
    resolve: &Resolve<'_>,
    queue: &[OutboxRecord],
) -> Result<Option<(usize, Vec<OutboxRecord>)>, StateError> {
    let mut path = None;
    for rec in queue {
        match resolve(rec) {
            Ok(Channel::File { path: p }) if path.as_ref().is_none_or(|q| *q == p) => {
                path = Some(p)
            }
            _ => return Ok(None),
        }
    }
    let (Some(path), true) = (path, queue.len() > 1) else {
        return Ok(None);
    };
    let lines: String = queue.iter().map(|r| format!("{}\n", r.payload)).collect();
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(lines.as_bytes())?;
        f.sync_data()
    })();
    let at = Utc::now();
    let mut done = Vec::with_capacity(queue.len());
    let mut failed = Vec::new();
    for rec in queue {
        let mut rec = rec.clone();
        rec.attempts += 1;
        match &result {
            Ok(()) => {
                rec.status = DeliveryStatus::Delivered;
                rec.delivered_at = Some(at);
                rec.last_error = None;
            }
            Err(e) => {
                rec.last_error = Some(format!(
                    "channel `{}`: cannot append to {} ({e})",
                    rec.channel,
                    path.display()
                ));
                rec.status = if rec.attempts >= MAX_ATTEMPTS {
                    DeliveryStatus::GaveUp
                } else {
                    rec.next_at = at
                        + chrono::Duration::from_std(backoff(rec.attempts - 1))
                            .unwrap_or_else(|_| chrono::Duration::hours(1));
                    DeliveryStatus::Failed
                };
                failed.push(rec.clone());
            }
        }
        done.push(rec);
    }
    if let Err(e) = &result {
        tracing::warn!(
            "{} notifications not appended to {}: {e}",
            queue.len(),
            path.display()
        );
    }
    store.commit(&done.iter().cloned().map(Write::Outbox).collect::<Vec<_>>())?;
    for rec in &done {
        orchestrator_engine::metrics::notification(&rec.channel, rec.status.as_str());
    }
    Ok(Some((done.len() - failed.len(), failed)))
}

/// A delivery error as it may be logged and stored: the process's secrets (environment
/// variables named like secrets) and the channel's own (its URL, the URL's password and
/// query values, long path segments such as a Slack hook's, the signing secret) masked.
/// A receiver's error page or a command's stderr may echo any of them.
pub fn redact_for(channel: &Channel, error: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    let mut url_parts = |url: &str| {
        secrets.push(url.to_string());
        if let Ok(u) = reqwest::Url::parse(url) {
            if let Some(p) = u.password() {
                secrets.push(p.to_string());
            }
            for (_, v) in u.query_pairs() {
                secrets.push(v.into_owned());
            }
            if let Some(q) = u.query() {
                secrets.push(q.to_string());
            }
            for seg in u.path_segments().into_iter().flatten() {
                if seg.len() >= 16 {
                    secrets.push(seg.to_string());
                }
            }
        }
    };
    match channel {
        Channel::Webhook { url, secret, .. } => {
            url_parts(url);
            secrets.extend(secret.iter().cloned());
        }
        Channel::Email { smtp, .. } => url_parts(smtp),
        Channel::File { .. } | Channel::Command { .. } | Channel::Sns { .. } => {}
    }
    Redactor::from_env()
        .with(secrets)
        .redact(error)
        .into_owned()
}

/// Delivers due notifications that `select` picks until `stop` is cancelled, looking
/// every `every` (the daemon's deliverer). Errors are logged; the next pass tries again.
/// A pass under way when `stop` is cancelled is finished first.
pub async fn run_deliverer(
    store: &Store,
    resolve: &Resolve<'_>,
    select: &Select<'_>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let now = Utc::now();
        let pick = |r: &OutboxRecord| due(r, now) && select(r);
        if let Err(e) = deliver_due(store, resolve, &pick).await {
            tracing::warn!("notifications: {e}");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_from_5s_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(9), Duration::from_secs(2560));
        assert_eq!(backoff(10), Duration::from_secs(3600));
        assert_eq!(backoff(29), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn a_command_gets_the_event_on_stdin_and_its_failure_names_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.json");
        let ch = Channel::Command {
            command: format!("cat > {}", out.display()),
        };
        deliver(&ch, "hook", &json!({"message": "hi"}))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"message\":\"hi\"}\n"
        );
        let ch = Channel::Command {
            command: "echo nope >&2; exit 3".into(),
        };
        let e = deliver(&ch, "hook", &json!({})).await.unwrap_err();
        assert_eq!(e, "channel `hook`: the command exited with status 3: nope");
    }
}
