//! The web UI: server-rendered HTML pages (runs, a run's DAG and Gantt timeline, workflows,
//! the catalog and a read-only SQL box, dashboards) plus the JSON API routes the pages'
//! small script calls, on the listener of the process that owns the state dir.
//!
//! **Interface.** [`router`] takes a [`Source`] (the binary's: it reads the store, asks the
//! daemon, runs queries) and [`Options`] (auth, dashboards directory). Every page is
//! rendered from the same JSON the API routes answer (`/api/runs`, `/api/runs/{id}`,
//! `/api/workflows`, `/api/tables`, `/api/query`): the UI is a client of the API, only
//! rendered on the server. No Node toolchain: templates and assets are embedded
//! (`assets/`), charts and the DAG are SVG drawn here.
//!
//! **Safety.** [`check_listen`] refuses a non-loopback address without `--auth`. With
//! auth, every request needs a bearer token or a basic-auth user, each `viewer` or
//! `operator`; only operators POST. POSTs must carry `X-Orchestrator-CSRF: 1` (a header a
//! cross-site form cannot send, and a cross-site script cannot without a CORS preflight
//! we never answer) unless they use a bearer token. Task output is masked when recorded;
//! pages mask again with this process's secrets.

pub mod api;
pub mod auth;
mod chart;
mod dag;
pub mod dashboards;
mod pages;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use serde_json::Value;

pub use auth::{Auth, Role};

/// An answer that is not a success: the operations' one error type. Its kind gives the
/// HTTP status ([`Error::http_status`]).
pub use orchestrator_engine::error::{Error, Kind as ErrorKind};

/// Which runs the runs page lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<String>,
    /// A logical date, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// Runs to skip (newest first) and to list.
    pub offset: usize,
    pub limit: usize,
    /// A cursor instead of `offset`: the runs older than this run (`?before=ID`, the
    /// "older" link), or newer than it (`?after=ID`, "newer"). A page deep in the
    /// history costs what the first does.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Where the UI's data comes from, in the shapes of the CLI's `--json` (README documents
/// them). Implemented by the binary over the store and the daemon.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// `{"runs": [runs --json rows], "more": bool (older ones match), "newer": bool}`.
    async fn runs(&self, filter: &RunFilter) -> Result<Value, Error>;
    /// `show --json`, plus `"upstream": {task: [tasks]}` from the run's definition.
    async fn run(&self, id: &str) -> Result<Value, Error>;
    /// `{"daemon": bool, "workflows": [...], "invalid": [{"path", "error"}]}`.
    async fn workflows(&self) -> Result<Value, Error>;
    /// `{"notifications": [outbox records, newest first], "sent": [data alerts sent]}`.
    async fn alerts(&self, limit: usize) -> Result<Value, Error>;
    /// `tables --json`.
    async fn tables(&self) -> Result<Value, Error>;
    /// `tables history NAME --json` for a published (Delta) table; `null` for a table
    /// without versions.
    async fn table_history(&self, _name: &str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    /// `query --json`: an array of row objects, columns in order. `sql` is typed by
    /// whoever uses the UI: the source must bound what it can cost (the binary runs it
    /// in a child process).
    async fn query(&self, sql: &str) -> Result<Value, Error>;
    /// [`Source::query`] for SQL the operator wrote (dashboard files, with parameters
    /// checked by `dashboards::safe_value`): may run in-process, without a child's start.
    async fn query_trusted(&self, sql: &str) -> Result<Value, Error> {
        self.query(sql).await
    }
    /// Resumes a run (`rerun [--from]`).
    async fn rerun(&self, id: &str, from: Option<&str>) -> Result<api::Started, Error>;
    async fn cancel(&self, id: &str) -> Result<api::Cancelled, Error>;
    /// A number that changes whenever any answer above may have (a commit, a line of
    /// task output); `None` if the source cannot tell. Live pages share one watcher of it.
    fn version(&self) -> Option<u64> {
        None
    }
    /// Starts a run of a workflow the daemon knows.
    async fn trigger(
        &self,
        workflow: &str,
        params: BTreeMap<String, String>,
        date: Option<String>,
    ) -> Result<api::Started, Error>;
    /// Runs a workflow file for another process (`orchestrator run FILE` beside a daemon).
    async fn run_file(&self, request: api::RunRequest) -> Result<api::Started, Error>;
    /// `backfills --json`.
    async fn backfills(&self) -> Result<Value, Error>;
    /// One backfill, with each date's state.
    async fn backfill(&self, id: &str) -> Result<Value, Error>;
    /// Plans a backfill and drives it in this process (or only plans it, `dry_run`).
    async fn start_backfill(
        &self,
        request: api::BackfillRequest,
    ) -> Result<api::BackfillStarted, Error>;
    /// A command's output as it prints it (`?format=text`, `?format=command-json`).
    async fn output(&self, output: api::Output) -> Result<String, Error>;
    /// `GET /metrics`: the process's metrics in the OpenMetrics text format
    /// (`orchestrator_engine::metrics::encode`).
    async fn metrics(&self) -> Result<String, Error>;
}

pub struct Options {
    /// `--auth FILE`, loaded; `None` serves everyone as an operator (loopback only).
    pub auth: Option<Auth>,
    /// Where `*.yaml` dashboards are read from (on every request: edits show at once).
    pub dashboards_dir: Option<PathBuf>,
    /// Ends the live (server-sent event) streams, so that a graceful shutdown does not
    /// wait for open pages.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The address the listener is bound to. Without `--auth`, only requests whose `Host`
    /// names it (or `localhost`, `127.0.0.1`, `[::1]`) are served: a DNS-rebinding page
    /// arrives with its own host name.
    pub listen: SocketAddr,
}

/// Refuses to serve on an address others can reach without `--auth`.
pub fn check_listen(addr: SocketAddr, auth: Option<&Auth>) -> Result<(), String> {
    if !addr.ip().is_loopback() && auth.is_none() {
        return Err(format!(
            "refusing to serve the web UI on {addr} without --auth: anyone who can reach it could trigger, rerun and cancel runs and read every table. Pass --auth FILE (tokens or users, each a viewer or an operator; see README), or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

/// The UI's routes: pages, assets, server-sent events and the JSON API.
pub fn router(source: Arc<dyn Source>, options: Options) -> Router {
    pages::router(source, options)
}
