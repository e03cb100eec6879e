//! The operations, one module per group, and what they share: turning the lower layers'
//! errors into [`Error`]s, parsers for dates and params, loading a workflow, and opening
//! the state store for writing or for reading only (or reaching the process that owns it).

pub mod backfill;
pub mod daemon;
pub mod doctor;
pub mod execute;
pub mod inspect;
pub mod notify;
pub mod state;
pub mod workflow;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use orchestrator_engine::state::{interrupted_note, RunRecord, StateError, Store};
use orchestrator_engine::workflow::{self as wf, LoadOptions, Workflow};

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

pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

pub fn load(
    ctx: &Context,
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
) -> Result<Workflow, Error> {
    load_on(ctx, file, overrides, inherited, run_id, date, None)
}

/// [`load`], with `--backend` (or a run's recorded backend) over the file's `backend:`.
#[allow(clippy::too_many_arguments)]
pub fn load_on(
    ctx: &Context,
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
    backend: Option<wf::Backend>,
) -> Result<Workflow, Error> {
    load_with(ctx, file, run_id, date, |opts| LoadOptions {
        overrides,
        backend,
        inherited,
        ..opts
    })
}

/// Loads the current file of a recorded run to resume it: its params, date, backend and
/// the files that triggered it, whatever the file says now.
pub fn load_for_rerun(ctx: &Context, run: &RunRecord) -> Result<Workflow, Error> {
    let backend = run
        .backend
        .as_deref()
        .and_then(|b| wf::Backend::parse(b).ok());
    let file = Path::new(&run.workflow_path);
    load_with(ctx, file, &run.id, &run.logical_date, |opts| LoadOptions {
        backend,
        inherited: run.params.clone(),
        trigger_files: run.trigger_files.clone(),
        ..opts
    })
}

/// The one way operations load a workflow file: today's options with `adjust`'s changes,
/// warnings printed.
fn load_with(
    ctx: &Context,
    file: &Path,
    run_id: &str,
    date: &str,
    adjust: impl for<'r> FnOnce(LoadOptions<'r>) -> LoadOptions<'r>,
) -> Result<Workflow, Error> {
    let state_dir = std::path::absolute(ctx.dir())
        .map_err(|e| Error::invalid(format!("error: state dir {}: {e}", ctx.dir().display())))?;
    let registry = orchestrator_tasks::registry();
    let opts = adjust(crate::notify::options(
        &registry,
        BTreeMap::new(),
        run_id,
        date,
        &state_dir,
        ctx.channels.clone(),
    ));
    let workflow = wf::load_file(file, &opts)?;
    if let Some(warnings) = workflow.warnings_text() {
        errln!(ctx, "{}", warnings.trim_end());
    }
    Ok(workflow)
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
            Ok(Writer::Local(Arc::new(store)))
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
