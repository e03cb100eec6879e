//! `notify test` and `notify deliver`.

use std::path::Path;

use serde_json::json;

use super::{load, open_store_or_daemon, today, Writer};
use crate::console::outln;
use crate::{Context, Error};

/// Sends a test message to `channel` of the workflow in `file`, directly (not through
/// the outbox: nothing is recorded).
pub async fn test(ctx: &Context, file: &Path, channel: &str) -> Result<u8, Error> {
    let date = today();
    let wf = load(
        ctx,
        file,
        Default::default(),
        Default::default(),
        "notify-test",
        &date,
    )?;
    let Some(ch) = wf.channels.get(channel) else {
        let known: Vec<&str> = wf.channels.keys().map(String::as_str).collect();
        return Err(Error::invalid(format!(
            "error: {} defines no channel `{channel}`; {}",
            wf.path.display(),
            if known.is_empty() {
                "it has no `channels:`".to_string()
            } else {
                format!("its channels: {}", known.join(", "))
            }
        )));
    };
    let at = chrono::Utc::now();
    let event = json!({
        "version": 1,
        "type": "test",
        "event": "test",
        "id": format!("test/{}/{channel}/{}", wf.name, at.timestamp_millis()),
        "workflow": wf.name,
        "at": at,
        "message": format!("Test message from orchestrator: channel `{channel}` of workflow `{}` works.", wf.name),
    });
    match orchestrator_notify::deliver(ch, channel, &event).await {
        Ok(()) => {
            outln!(ctx, "sent a test message to `{channel}`");
            Ok(0)
        }
        Err(e) => Err(Error::failed(format!("error: {e}"))),
    }
}

/// Delivers every notification that is due, now.
pub async fn deliver(ctx: &Context) -> Result<u8, Error> {
    let store = match open_store_or_daemon(ctx)? {
        Writer::Local(store) => store,
        Writer::Daemon(_) => {
            outln!(
                ctx,
                "the daemon owns this state dir and delivers notifications itself"
            );
            return Ok(0);
        }
    };
    let before = store.outbox_pending()?.len();
    // Now, whatever the backoff said: the user asks because the channel is back.
    let resolver = crate::notify::Resolver::new(store.clone(), ctx);
    crate::notify::deliver_some(&store, &resolver, &|_| true, true).await;
    let after = store.outbox_pending()?.len();
    outln!(
        ctx,
        "{} delivered, {after} waiting",
        before.saturating_sub(after)
    );
    Ok(if after == 0 { 0 } else { 1 })
}
