//! The one JSON API, served on the UI's listener and on the local API listener a process
//! opens for its state dir (the CLI's client uses it while the daemon owns the store).
//! Its request and response types are defined here once: the server reads them, the
//! client (`orchestrator_service::client`) writes them.
//!
//! Every answer is JSON (`?format=text` on the reading routes gives the command's text
//! output instead, `?format=command-json` its `--json` output); every failure is `{"error": "..."}` with the status of its
//! [`crate::Error`]'s kind. Auth, roles, `Host` and cross-site checks are one middleware
//! in front of every route ([`crate::router`]), run before a body is read.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Error, RunFilter, Source};

/// `POST /api/trigger`: start a run of a workflow the daemon knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    pub workflow: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub date: Option<String>,
}

/// `POST /api/run`: run a workflow file (what `orchestrator run FILE` sends a daemon).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub path: PathBuf,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub date: String,
}

/// `POST /api/runs/{id}/rerun`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    #[serde(default)]
    pub from: Option<String>,
}

/// `POST /api/query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
}

/// What `orchestrator backfill` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillSpec {
    /// Absolute.
    pub file: PathBuf,
    pub from: String,
    pub to: String,
    pub calendar: String,
    pub reprocess: String,
    pub max_active_runs: u32,
    pub backwards: bool,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// `POST /api/backfills`: a new backfill, or `resume` one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    #[serde(default)]
    pub request: Option<BackfillSpec>,
    #[serde(default)]
    pub resume: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to a request that started a run (`trigger`, `run`, `rerun`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub run_id: String,
}

/// The answer to `POST /api/runs/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cancelled {
    pub cancelled: String,
}

/// The answer to `POST /api/backfills`: the backfill started (or, with `dry_run`, only
/// its plan).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackfillStarted {
    #[serde(default)]
    pub backfill_id: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// A command's output, as the command prints it: asked with `?format=text` (its text) or
/// `?format=command-json` (its `--json`, byte for byte) on a reading route.
#[derive(Debug, Clone)]
pub struct Output {
    pub what: Text,
    /// `--json`.
    pub json: bool,
}

/// Which command's output.
#[derive(Debug, Clone)]
pub enum Text {
    /// `runs [--workflow W] [--limit N]`.
    Runs {
        workflow: Option<String>,
        limit: usize,
    },
    /// `show ID`.
    Run(String),
    /// `tables`.
    Tables,
    /// `query SQL`.
    Query(String),
    /// `backfills`.
    Backfills,
}

/// `{"error": message}` with the status of the error's kind.
pub(crate) fn error(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({"error": e.summary()}))).into_response()
}

/// A JSON request body whatever its `Content-Type` (curl's `-d` says form), an empty one
/// read as `{}`; a body that is not the route's JSON is refused with `{"error": ...}` (422),
/// never ignored.
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                error(&Error::invalid(format!(
                    "cannot read the request body: {e}"
                )))
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(JsonBody).map_err(|e| {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!("the request body is not the JSON this route takes: {e}")
                })),
            )
                .into_response()
        })
    }
}

pub(crate) fn answer(result: Result<Value, Error>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(&e),
    }
}

fn typed<T: Serialize>(result: Result<T, Error>) -> Response {
    answer(result.and_then(|v| {
        serde_json::to_value(v).map_err(|e| Error::internal(format!("an answer as JSON: {e}")))
    }))
}

fn text_answer(result: Result<String, Error>) -> Response {
    match result {
        Ok(body) => body.into_response(),
        Err(e) => error(&e),
    }
}

/// `?format=text` or `?format=command-json`: the command's output instead of the API's
/// JSON; `None` for the API's JSON.
fn command_output(q: &HashMap<String, String>, what: impl FnOnce() -> Text) -> Option<Output> {
    let json = match q.get("format").map(String::as_str) {
        Some("text") => false,
        Some("command-json") => true,
        _ => return None,
    };
    Some(Output { what: what(), json })
}

/// The API's routes over `source` (state: the source itself).
pub fn router(source: Arc<dyn Source>) -> Router {
    Router::new()
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/rerun", post(rerun))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/trigger", post(trigger))
        .route("/api/run", post(run_file))
        .route("/api/workflows", get(workflows))
        .route("/api/tables", get(tables))
        .route("/api/query", post(query))
        .route("/api/alerts", get(alerts))
        .route("/api/backfills", get(backfills).post(start_backfill))
        .route("/api/backfills/{id}", get(backfill))
        .route("/metrics", get(metrics))
        .with_state(source)
}

type Src = State<Arc<dyn Source>>;

pub(crate) fn filter_of(q: &HashMap<String, String>, page_size: usize) -> RunFilter {
    let nonempty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    RunFilter {
        workflow: nonempty("workflow"),
        status: nonempty("status"),
        date: nonempty("date"),
        offset: (page - 1) * page_size,
        limit: page_size,
        before: nonempty("before"),
        after: nonempty("after"),
    }
}

/// Runs a page lists when the request does not say (`runs`' default).
const DEFAULT_LIMIT: usize = 20;

async fn runs(State(s): Src, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut filter = filter_of(&q, DEFAULT_LIMIT);
    if let Some(l) = q.get("limit").and_then(|l| l.parse().ok()) {
        filter.limit = l;
    }
    let what = || Text::Runs {
        workflow: filter.workflow.clone(),
        limit: filter.limit,
    };
    if let Some(output) = command_output(&q, what) {
        return text_answer(s.output(output).await);
    }
    answer(s.runs(&filter).await)
}

async fn run(
    State(s): Src,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(output) = command_output(&q, || Text::Run(id.clone())) {
        return text_answer(s.output(output).await);
    }
    answer(s.run(&id).await)
}

async fn rerun(
    State(s): Src,
    UrlPath(id): UrlPath<String>,
    JsonBody(b): JsonBody<RerunRequest>,
) -> Response {
    typed(s.rerun(&id, b.from.as_deref()).await)
}

async fn cancel(State(s): Src, UrlPath(id): UrlPath<String>) -> Response {
    typed(s.cancel(&id).await)
}

async fn trigger(State(s): Src, JsonBody(b): JsonBody<TriggerRequest>) -> Response {
    let date = b.date.filter(|d| !d.is_empty());
    typed(s.trigger(&b.workflow, b.params, date).await)
}

async fn run_file(State(s): Src, JsonBody(b): JsonBody<RunRequest>) -> Response {
    typed(s.run_file(b).await)
}

async fn workflows(State(s): Src) -> Response {
    answer(s.workflows().await)
}

async fn tables(State(s): Src, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(output) = command_output(&q, || Text::Tables) {
        return text_answer(s.output(output).await);
    }
    answer(s.tables().await)
}

async fn query(
    State(s): Src,
    Query(q): Query<HashMap<String, String>>,
    JsonBody(b): JsonBody<QueryRequest>,
) -> Response {
    if let Some(output) = command_output(&q, || Text::Query(b.sql.clone())) {
        return text_answer(s.output(output).await);
    }
    answer(s.query(&b.sql).await)
}

async fn alerts(State(s): Src) -> Response {
    answer(s.alerts(200).await)
}

async fn backfills(State(s): Src, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(output) = command_output(&q, || Text::Backfills) {
        return text_answer(s.output(output).await);
    }
    answer(s.backfills().await)
}

async fn backfill(State(s): Src, UrlPath(id): UrlPath<String>) -> Response {
    answer(s.backfill(&id).await)
}

async fn start_backfill(State(s): Src, JsonBody(b): JsonBody<BackfillRequest>) -> Response {
    typed(s.start_backfill(b).await)
}

/// Prometheus scrapes this (a viewer's token is enough: the gate lets any caller GET).
async fn metrics(State(s): Src) -> Response {
    match s.metrics().await {
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => error(&e),
    }
}
