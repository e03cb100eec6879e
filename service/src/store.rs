//! Reaching the state store: open it here, or — when another process owns the state dir —
//! reach that process through its local API. The one place that decides whether an
//! operation runs in this process or is handed to the daemon.

use std::sync::Arc;

use orchestrator_engine::state::{interrupted_note, RunRecord, StateError, Store};

use crate::console::errln;
use crate::{Context, Error};

/// A daemon's refusal, by its kind.
pub fn from_refused(why: orchestrator_daemon::Refused) -> Error {
    use orchestrator_daemon::RefusedKind;
    let message = format!("error: {}", why.message);
    match why.kind {
        RefusedKind::Invalid => Error::invalid(message),
        RefusedKind::NotFound => Error::not_found(message),
        RefusedKind::Busy => Error::busy(message),
    }
}

pub fn owner() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Who executes a run: this process with the store, or the daemon that owns it.
pub enum Writer {
    Local(Arc<Store>),
    Daemon(crate::client::Client),
}

/// Opens the store to write (runs, reruns); when a live daemon owns it and serves its
/// API, hands the work to the daemon instead.
pub fn open_store_or_daemon(ctx: &Context) -> Result<Writer, Error> {
    let dir = ctx.dir();
    match Store::open(dir, &owner()) {
        Ok((store, recovered)) => {
            for id in &recovered {
                errln!(ctx, "{}", interrupted_note(id));
            }
            crate::notify::queue_interrupted(ctx, &store, &recovered);
            let store = Arc::new(store);
            crate::replicate::attach(ctx, &store);
            Ok(Writer::Local(store))
        }
        // Only a daemon takes work from others; a foreground run holds the dir alone.
        Err(e @ StateError::Locked { .. }) => match crate::client::Client::discover(dir) {
            Some(api) if api.daemon => Ok(Writer::Daemon(api)),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Where a read command gets its answers: the store itself, or the local API of the
/// process that owns it.
pub enum Reader {
    Local(Arc<Store>),
    Api(crate::client::Client),
}

/// Opens the store for a command that only reads (works on a read-only or full disk), or,
/// when another process owns the state dir and serves its local API, that API.
pub fn open_reader_or_api(ctx: &Context) -> Result<Reader, Error> {
    let dir = ctx.dir();
    // An owner that is shutting down holds the lock a moment after its API has stopped
    // answering: wait for one or the other rather than fail.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match Store::open_read_only(dir, &owner()) {
            Ok((store, note)) => {
                if let Some(note) = note {
                    errln!(ctx, "{note}");
                }
                return Ok(Reader::Local(Arc::new(store)));
            }
            Err(e @ StateError::Locked { .. }) => match crate::client::Client::discover(dir) {
                Some(client) if client.answers() => return Ok(Reader::Api(client)),
                _ if std::time::Instant::now() < patience => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Some(client) => return Ok(Reader::Api(client)),
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn find_run(store: &Store, id: &str) -> Result<RunRecord, Error> {
    store.run(id)?.ok_or_else(|| {
        Error::not_found(format!(
            "error: no run `{id}` in state dir {}; list runs with `orchestrator runs`",
            store.dir().display()
        ))
    })
}
