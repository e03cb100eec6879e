//! The command groups, and what they share: the error type that carries an exit status,
//! argument parsers, loading a workflow, and opening the state store for writing or
//! for reading only.

pub mod backfill;
pub mod daemon;
pub mod doctor;
pub mod execute;
pub mod inspect;
pub mod notify;
pub mod state;
pub mod workflow;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_engine::runner::RunError;
use orchestrator_engine::state::{interrupted_note, RunRecord, StateError, Store};
use orchestrator_engine::workflow::{self as wf, LoadError, LoadOptions, Workflow};

use crate::out::errln;

/// An error that ends the command, with its exit status.
pub struct Fail {
    pub code: u8,
    pub message: String,
    /// What kind of failure: HTTP statuses and retries are decided from it, never from
    /// the message's wording.
    pub kind: FailKind,
}

/// The kinds of [`Fail`] that callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// Bad input: exit 2, HTTP 400.
    Invalid,
    /// What was named does not exist (a run, a backfill): exit 2, HTTP 404.
    NotFound,
    /// It went wrong: exit 1, HTTP 500.
    Failed,
}

impl Fail {
    pub fn input(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
            kind: FailKind::Invalid,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
            kind: FailKind::NotFound,
        }
    }

    pub fn failed(message: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            message: message.into(),
            kind: FailKind::Failed,
        }
    }
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Self {
        let code = match e {
            StateError::Locked { .. }
            | StateError::TooNew { .. }
            | StateError::NotADirectory { .. } => 2,
            _ => 1,
        };
        Fail {
            code,
            message: format!("error: {e}"),
            kind: if code == 2 {
                FailKind::Invalid
            } else {
                FailKind::Failed
            },
        }
    }
}

impl From<LoadError> for Fail {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Invalid(d) => Fail::input(d.to_string()),
            LoadError::Read { .. } => Fail::input(format!("error: {e}")),
        }
    }
}

impl From<RunError> for Fail {
    fn from(e: RunError) -> Self {
        match e {
            RunError::State(s) => s.into(),
            RunError::Refused(m) => Fail::input(format!("error: {m}")),
        }
    }
}

pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A logical date: exactly `YYYY-MM-DD` (see [`orchestrator_engine::runner::parse_logical_date`]).
pub fn parse_date(s: &str) -> Result<String, String> {
    orchestrator_engine::runner::parse_logical_date(s)
}

pub fn parse_backend(s: &str) -> Result<wf::Backend, String> {
    wf::Backend::parse(s)
}

/// An instant written in RFC 3339 (`2026-03-06T12:00:00Z`, `2026-03-06T07:00:00-05:00`).
pub fn parse_instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("`{s}` is not an RFC 3339 instant like 2026-03-06T12:00:00Z"))
}

/// `--channels FILE` (absolute), set once at start (or, by a rerun started without it,
/// to the file its run recorded).
static CHANNELS_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets `--channels FILE` for this process; relative to the working directory.
pub fn set_channels_file(file: &Path) -> Result<(), Fail> {
    let abs = std::path::absolute(file)
        .map_err(|e| Fail::input(format!("error: --channels {}: {e}", file.display())))?;
    if !abs.is_file() {
        return Err(Fail::input(format!(
            "error: --channels {}: no such file; point it at a YAML file with a top-level `channels:` mapping",
            file.display()
        )));
    }
    let _ = CHANNELS_FILE.set(abs);
    Ok(())
}

/// The shared channels file of this process, if `--channels` named one.
pub fn channels_file() -> Option<PathBuf> {
    CHANNELS_FILE.get().cloned()
}

/// A rerun without `--channels` resolves channels from the file its run was started with.
pub fn use_recorded_channels(run: &orchestrator_engine::state::RunRecord) {
    if let Some(f) = &run.channels_file {
        let _ = CHANNELS_FILE.set(PathBuf::from(f));
    }
}

pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

pub fn load(
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
    state_dir: &Path,
) -> Result<Workflow, Fail> {
    load_on(file, overrides, inherited, run_id, date, state_dir, None)
}

/// [`load`], with `--backend` (or a run's recorded backend) over the file's `backend:`.
pub fn load_on(
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
    state_dir: &Path,
    backend: Option<wf::Backend>,
) -> Result<Workflow, Fail> {
    load_with(file, state_dir, run_id, date, |opts| LoadOptions {
        overrides,
        backend,
        inherited,
        ..opts
    })
}

/// Loads the current file of a recorded run to resume it: its params, date, backend and
/// the files that triggered it, whatever the file says now.
pub fn load_for_rerun(run: &RunRecord, state_dir: &Path) -> Result<Workflow, Fail> {
    let backend = run
        .backend
        .as_deref()
        .and_then(|b| wf::Backend::parse(b).ok());
    let file = Path::new(&run.workflow_path);
    load_with(file, state_dir, &run.id, &run.logical_date, |opts| {
        LoadOptions {
            backend,
            inherited: run.params.clone(),
            trigger_files: run.trigger_files.clone(),
            ..opts
        }
    })
}

/// The binary's one way to load a workflow file: today's options with `adjust`'s changes,
/// warnings printed.
fn load_with(
    file: &Path,
    state_dir: &Path,
    run_id: &str,
    date: &str,
    adjust: impl for<'r> FnOnce(LoadOptions<'r>) -> LoadOptions<'r>,
) -> Result<Workflow, Fail> {
    let state_dir = std::path::absolute(state_dir)
        .map_err(|e| Fail::input(format!("error: state dir {}: {e}", state_dir.display())))?;
    let registry = orchestrator_tasks::registry();
    let opts = adjust(crate::notify::options(
        &registry,
        BTreeMap::new(),
        run_id,
        date,
        &state_dir,
        channels_file(),
    ));
    let workflow = wf::load_file(file, &opts)?;
    if let Some(warnings) = workflow.warnings_text() {
        errln!("{}", warnings.trim_end());
    }
    Ok(workflow)
}

pub fn owner() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Who executes a run: this process with the store, or the daemon that owns it.
pub enum Writer {
    Local(Arc<Store>),
    Daemon(crate::api::Client),
}

/// Opens the store to write (runs, reruns); when a live daemon owns it and serves its
/// API, hands the work to the daemon instead.
pub fn open_store_or_daemon(dir: &Path) -> Result<Writer, Fail> {
    match Store::open(dir, &owner()) {
        Ok((store, recovered)) => {
            for id in &recovered {
                errln!("{}", interrupted_note(id));
            }
            crate::notify::queue_interrupted(&store, dir, &recovered);
            Ok(Writer::Local(Arc::new(store)))
        }
        // Only a daemon takes work from others; a foreground run holds the dir alone.
        Err(e @ StateError::Locked { .. }) => match crate::api::Client::discover(dir) {
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
    Api(crate::api::Client),
}

/// Opens the store for a command that only reads (works on a read-only or full disk), or,
/// when another process owns the state dir and serves its local API, that API.
pub fn open_reader_or_api(dir: &Path) -> Result<Reader, Fail> {
    // An owner that is shutting down holds the lock a moment after its API has stopped
    // answering: wait for one or the other rather than fail.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match Store::open_read_only(dir, &owner()) {
            Ok((store, note)) => {
                if let Some(note) = note {
                    errln!("{note}");
                }
                return Ok(Reader::Local(Arc::new(store)));
            }
            Err(e @ StateError::Locked { .. }) => match crate::api::Client::discover(dir) {
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

pub fn find_run(store: &Store, id: &str) -> Result<RunRecord, Fail> {
    store.run(id)?.ok_or_else(|| {
        Fail::not_found(format!(
            "error: no run `{id}` in state dir {}; list runs with `orchestrator runs`",
            store.dir().display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates_must_be_written_in_full() {
        assert_eq!(parse_date("2026-01-31").unwrap(), "2026-01-31");
        for bad in [
            "26-01-01",
            "2026-1-1",
            "+2026-01-01",
            "0000-01-01",
            "2026-02-30",
            "2026-01-31 ",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_date("0000-01-01").unwrap_err().contains("1900"));
    }
}
