//! The service layer: every operation a front end can ask for — run, rerun, trigger,
//! cancel, backfill, runs, show, query, tables, state check/recover, gc, notify
//! deliver/test, validate, graph, next, doctor, and serving the daemon and its HTTP API.
//!
//! The CLI (`src/`), the HTTP API and the web UI are adapters over it: they parse their
//! input, call an operation with a [`Context`] (the state dir, the channels file, the
//! console its lines go to) and show what it returns. Operations fail with the one
//! [`Error`] type; front ends map its kind to an exit status or an HTTP status.
//!
//! **Here or in the daemon.** Whether an operation runs in this process or is handed to
//! the daemon that owns the state dir is decided in one place, [`ops::open_store_or_daemon`]
//! (writes) and [`ops::open_reader_or_api`] (reads): the store when it can be opened,
//! otherwise the owner's local API through [`client::Client`].
//!
//! Modules: [`ops`] (the operations, one module per group), [`backfill`] (planning and
//! driving a backfill), [`notify`] (resolving channels and delivering), [`report`]
//! (rendering runs, tables and query results), [`source`] (the web UI's and API's data
//! source over the store and the daemon), [`serve`] (the listeners), [`client`] (the
//! local API's client).

pub mod backfill;
pub mod client;
pub mod console;
pub mod load;
mod metrics;
pub mod notify;
pub mod ops;
pub mod render;
pub mod replicate;
pub mod report;
pub mod serve;
pub mod source;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use console::Console;
pub use orchestrator_engine::error::{Error, Kind};

/// What every operation is given: where the state is, which channels file applies, and
/// where its lines go.
#[derive(Clone)]
pub struct Context {
    /// `--state-dir`: the store, the warehouse, the local API's files.
    pub state_dir: PathBuf,
    /// `--channels FILE` (absolute), or the file a rerun's run recorded.
    pub channels: Option<PathBuf>,
    pub console: Arc<dyn Console>,
    /// `--replicate URL`: where writing commands ship the store's commits.
    pub replicate: Option<replicate::Target>,
}

impl Context {
    pub fn new(state_dir: impl Into<PathBuf>, console: Arc<dyn Console>) -> Context {
        Context {
            state_dir: state_dir.into(),
            channels: None,
            console,
            replicate: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.state_dir
    }

    /// With `--channels FILE` (relative to the working directory), which must exist.
    pub fn with_channels_file(mut self, file: &Path) -> Result<Context, Error> {
        let abs = std::path::absolute(file)
            .map_err(|e| Error::invalid(format!("error: --channels {}: {e}", file.display())))?;
        if !abs.is_file() {
            return Err(Error::invalid(format!(
                "error: --channels {}: no such file; point it at a YAML file with a top-level `channels:` mapping",
                file.display()
            )));
        }
        self.channels = Some(abs);
        Ok(self)
    }

    /// With `--replicate URL` (`s3://bucket/prefix` or a directory): the stores this
    /// process opens to write log their commits, and [`replicate`] ships them.
    pub fn with_replica(mut self, url: &str) -> Result<Context, Error> {
        self.replicate = Some(replicate::Target::parse(url)?);
        orchestrator_engine::state::replica::enable();
        Ok(self)
    }

    /// For resuming `run`: without `--channels`, its deliveries and reruns resolve channels
    /// from the file the run was started with.
    pub fn for_run(&self, run: &orchestrator_engine::state::RunRecord) -> Context {
        let mut ctx = self.clone();
        if ctx.channels.is_none() {
            ctx.channels = run.channels_file.as_ref().map(PathBuf::from);
        }
        ctx
    }
}
