//! The local API of the process that owns a state dir (the daemon, or a foreground
//! `run`/`rerun`), so that `runs`, `show`, `query` and `tables` work from other processes
//! while it runs (sled allows one process per store). Only a daemon also starts runs for
//! others (`run`, `rerun`, `trigger`, `cancel`).
//!
//! - Listens on 127.0.0.1, on an ephemeral port, and writes `{state-dir}/api.json`
//!   (`{"url": ..., "pid": ..., "daemon": true|false}`) and `{state-dir}/api.token` (mode 0600, 32 random hex
//!   characters). Both are removed when the server stops; a client ignores them when the
//!   pid is gone (a stale file left by a crash).
//! - Every request needs `Authorization: Bearer TOKEN`; otherwise 401.
//! - Routes (JSON in the same shapes as the commands' `--json`; `?format=text` gives the
//!   command's text output instead): `GET /api/runs?workflow=&limit=`, `GET
//!   /api/runs/{id}`, `GET /api/tables`, `POST /api/query` with `{"sql": "..."}`; and,
//!   from the daemon, `POST /api/trigger` with `{"workflow", "params", "date"}` and `POST
//!   /api/runs/{id}/cancel`. Errors are `{"error": "..."}` with 400 (bad input), 404 (no
//!   such run) or 500.
//!
//! The answers are rendered by the same functions the commands use locally
//! (`commands::inspect`), so a command prints the same through the API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orchestrator_engine::state::Store;
use orchestrator_engine::CancellationToken;

use crate::commands::{inspect, Fail, FailKind};

const INFO: &str = "api.json";
const TOKEN: &str = "api.token";

struct AppState {
    store: Arc<Store>,
    token: String,
    /// The daemon's command channel (trigger, cancel), when a daemon serves.
    commands: Option<orchestrator_daemon::Commands>,
}

/// Removes the discovery files when the server's owner stops.
pub struct Served {
    dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(INFO));
        let _ = std::fs::remove_file(self.dir.join(TOKEN));
    }
}

fn random_token() -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom for the API token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serves the API for `store` (in `dir`) until `shutdown` is cancelled.
pub async fn serve(
    store: Arc<Store>,
    dir: &Path,
    commands: Option<orchestrator_daemon::Commands>,
    ui: Option<String>,
    shutdown: CancellationToken,
) -> Result<Served, String> {
    let token = random_token()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1 for the local API: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local API address: {e}"))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(TOKEN);
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let info = serde_json::json!({
            "url": format!("http://{addr}"),
            "pid": std::process::id(),
            "daemon": commands.is_some(),
            "ui": ui,
        });
        std::fs::write(dir.join(INFO), info.to_string())
            .map_err(|e| format!("cannot write {}: {e}", dir.join(INFO).display()))?;
    }
    let daemon = commands.is_some();
    let state = Arc::new(AppState {
        store,
        token,
        commands,
    });
    let app = Router::new()
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(show))
        .route("/api/tables", get(tables))
        .route("/api/query", post(query))
        .route("/api/trigger", post(trigger))
        .route("/api/run", post(run_file))
        .route("/api/runs/{id}/rerun", post(rerun))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/backfills", get(backfills).post(start_backfill))
        .route("/api/backfills/{id}", get(backfill_state))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state);
    tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("local API stopped: {e}");
        }
    });
    if daemon {
        tracing::info!(
            "local API on http://{addr} (token in {})",
            dir.join(TOKEN).display()
        );
    }
    Ok(Served {
        dir: dir.to_path_buf(),
    })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

/// A command's failure as an HTTP status and message: 404 for no such run, 400 for bad
/// input, 500 otherwise.
pub(crate) fn fail_status(f: &Fail) -> (u16, String) {
    let msg = f
        .message
        .strip_prefix("error: ")
        .unwrap_or(&f.message)
        .to_string();
    let status = match f.kind {
        FailKind::NotFound => 404,
        FailKind::Invalid => 400,
        FailKind::Failed => 500,
    };
    (status, msg)
}

fn fail(f: Fail) -> Response {
    let (status, msg) = fail_status(&f);
    error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &msg,
    )
}

/// Whether the request carries the state dir's token. The scheme is matched in any case
/// (RFC 7235), and the token compared in constant time.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some((scheme, token)) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return false;
    };
    let (a, b) = (token.trim().as_bytes(), state.token.as_bytes());
    scheme.eq_ignore_ascii_case("bearer")
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every route needs the token, checked before anything reads the request's body (an
/// unauthenticated malformed body gets 401, not a JSON error).
async fn gate(
    State(s): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorized(&s, request.headers()) {
        return unauthorized();
    }
    next.run(request).await
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send `Authorization: Bearer TOKEN`, TOKEN from {state-dir}/api.token",
    )
}

/// The rendered output as the response: JSON as JSON, text as text.
fn rendered(result: Result<String, Fail>, text: bool) -> Response {
    match result {
        Ok(body) if text => body.into_response(),
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(f) => fail(f),
    }
}

fn wants_text(q: &HashMap<String, String>) -> bool {
    q.get("format").is_some_and(|f| f == "text")
}

async fn runs(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let text = wants_text(&q);
    rendered(
        inspect::runs_output(
            &s.store,
            q.get("workflow").map(String::as_str),
            limit,
            !text,
        ),
        text,
    )
}

async fn show(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = wants_text(&q);
    rendered(inspect::show_output(&s.store, &id, !text), text)
}

async fn tables(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = wants_text(&q);
    rendered(
        inspect::tables_output(&s.store, !text).map_err(Fail::from),
        text,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

async fn query(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<QueryBody>,
) -> Response {
    let text = wants_text(&q);
    rendered(
        inspect::query_output(s.store.clone(), body.sql, !text, true).await,
        text,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    workflow: String,
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    date: Option<String>,
}

fn no_daemon() -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "this process starts no runs for others; only `orchestrator daemon` does",
    )
}

fn stopping() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping")
}

/// Sends a command to the daemon's event loop and answers with its reply: `ok` turns a
/// success into JSON; a refusal is `refused` with the reason.
async fn ask<T>(
    s: &AppState,
    command: impl FnOnce(
        tokio::sync::oneshot::Sender<Result<T, orchestrator_daemon::Refused>>,
    ) -> orchestrator_daemon::Command,
    ok: impl FnOnce(T) -> serde_json::Value,
) -> Response {
    let Some(commands) = &s.commands else {
        return no_daemon();
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if commands.send(command(reply)).is_err() {
        return stopping();
    }
    match answer.await {
        Ok(Ok(v)) => Json(ok(v)).into_response(),
        Ok(Err(why)) => error(refused_status(&why), &why.message),
        Err(_) => stopping(),
    }
}

/// The HTTP status of a daemon's refusal, from its kind (one place for both APIs).
pub(crate) fn refused_status(why: &orchestrator_daemon::Refused) -> StatusCode {
    use orchestrator_daemon::RefusedKind;
    match why.kind {
        RefusedKind::Invalid => StatusCode::BAD_REQUEST,
        RefusedKind::NotFound => StatusCode::NOT_FOUND,
        RefusedKind::Busy => StatusCode::CONFLICT,
    }
}

fn started(run_id: String) -> serde_json::Value {
    serde_json::json!({ "run_id": run_id })
}

async fn trigger(State(s): State<Arc<AppState>>, Json(body): Json<TriggerBody>) -> Response {
    let command = |reply| orchestrator_daemon::Command::Trigger {
        workflow: body.workflow,
        params: body.params,
        date: body.date,
        reply,
    };
    ask(&s, command, started).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    path: PathBuf,
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    date: String,
}

async fn run_file(State(s): State<Arc<AppState>>, Json(body): Json<RunBody>) -> Response {
    let command = |reply| orchestrator_daemon::Command::Run {
        path: body.path,
        params: body.params,
        date: body.date,
        trigger: None,
        reply,
    };
    ask(&s, command, started).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    #[serde(default)]
    from: Option<String>,
}

async fn rerun(
    State(s): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<RerunBody>,
) -> Response {
    let command = |reply| orchestrator_daemon::Command::Rerun {
        run_id: id,
        from: body.from,
        reply,
    };
    ask(&s, command, started).await
}

async fn cancel(State(s): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    let cancelled = serde_json::json!({ "cancelled": id });
    let command = |reply| orchestrator_daemon::Command::Cancel { run_id: id, reply };
    ask(&s, command, |()| cancelled).await
}

async fn backfills(
    State(s): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = wants_text(&q);
    rendered(
        crate::commands::backfill::backfills_output(&s.store, !text),
        text,
    )
}

async fn backfill_state(State(s): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    rendered(
        crate::commands::backfill::backfill_json(&s.store, &id),
        false,
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    #[serde(default)]
    request: Option<crate::backfill::Request>,
    #[serde(default)]
    resume: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `orchestrator backfill` while the daemon owns the state dir: the daemon's process
/// plans the backfill and drives it, each run handed to the daemon's event loop.
async fn start_backfill(
    State(s): State<Arc<AppState>>,
    Json(body): Json<BackfillBody>,
) -> Response {
    use crate::backfill as bf;
    let Some(commands) = s.commands.clone() else {
        return no_daemon();
    };
    let dir = s.store.dir().to_path_buf();
    let prepared = crate::commands::backfill::prepare(
        &s.store,
        &dir,
        body.request.as_ref(),
        body.resume.as_deref(),
    )
    .and_then(|b| crate::commands::backfill::workflow_limit(&b, &dir).map(|n| (b, n)));
    let (b, limit) = match prepared {
        Ok(p) => p,
        Err(f) => return fail(f),
    };
    let (parallel, note) = bf::parallelism(&b, limit, true);
    if body.dry_run {
        let plan = crate::commands::backfill::plan_text(&b, parallel);
        return Json(serde_json::json!({ "plan": plan, "note": note })).into_response();
    }
    let header = bf::header(&b, parallel);
    let id = b.id.clone();
    let exec = bf::Executor::Daemon {
        store: s.store.clone(),
        commands,
    };
    tokio::spawn(async move {
        let id = b.id.clone();
        let quiet = |_: &bf::DateView| {};
        if let Err(e) = bf::drive(exec, b, parallel, CancellationToken::new(), &quiet).await {
            tracing::warn!("backfill {id}: {}", e.message);
        }
    });
    Json(serde_json::json!({ "backfill_id": id, "header": header, "note": note })).into_response()
}

/// A client of the API served for a state dir.
pub struct Client {
    url: String,
    token: String,
    http: reqwest::Client,
    /// The owner is a daemon (it starts runs for others), not a foreground run.
    pub daemon: bool,
}

impl Client {
    /// The API of the live process that owns `dir`, if it serves one.
    pub fn discover(dir: &Path) -> Option<Client> {
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(INFO)).ok()?).ok()?;
        let pid = info.get("pid")?.as_u64()?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return None; // left by a process that is gone
        }
        let token = std::fs::read_to_string(dir.join(TOKEN)).ok()?;
        Some(Client {
            url: info.get("url")?.as_str()?.to_string(),
            token: token.trim().to_string(),
            http: reqwest::Client::new(),
            daemon: info
                .get("daemon")
                .and_then(|d| d.as_bool())
                .unwrap_or(false),
        })
    }

    /// Whether something listens at the API's address (an owner that is stopping has
    /// closed it before it releases the state dir).
    pub fn answers(&self) -> bool {
        use std::net::ToSocketAddrs as _;
        let host = self
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|addr| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                    .is_ok()
            })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, Fail> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            Fail::failed(format!(
                "error: the state dir's owner did not answer ({e}); try again, or stop it"
            ))
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| Fail::failed(format!("error: reading the API's answer: {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(body);
        let message = format!("error: {msg}");
        Err(match status.as_u16() {
            404 => Fail::not_found(message),
            400..=499 => Fail::input(message),
            _ => Fail::failed(message),
        })
    }

    fn format(json: bool) -> Vec<(&'static str, String)> {
        if json {
            vec![]
        } else {
            vec![("format", "text".to_string())]
        }
    }

    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        json: bool,
    ) -> Result<String, Fail> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.extend(Client::format(json));
        self.send(self.http.get(format!("{}{path}", self.url)).query(&q))
            .await
    }

    /// POSTs a JSON body; returns the JSON answer's text.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> Result<String, Fail> {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn query(&self, sql: &str, json: bool) -> Result<String, Fail> {
        let body = serde_json::json!({ "sql": sql }).to_string();
        self.send(
            self.http
                .post(format!("{}/api/query", self.url))
                .query(&Client::format(json))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }
}
