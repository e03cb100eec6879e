//! Routes: the pages, their assets, server-sent events for live pages, and the JSON API.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use minijinja::Environment;
use orchestrator_engine::template::Redactor;
use serde_json::{json, Value};

use crate::chart::{self, Kind};
use crate::dashboards;
use crate::{auth, dag, Auth, Error, Options, RunFilter, Source};

struct Ui {
    source: Arc<dyn Source>,
    auth: Option<Auth>,
    dashboards_dir: Option<PathBuf>,
    templates: Environment<'static>,
    redactor: Redactor,
    shutdown: tokio_util::sync::CancellationToken,
    listen: std::net::SocketAddr,
    /// Live streams open at once are capped: each holds a socket, and the process has
    /// a limited number of descriptors that runs need too.
    streams: Arc<tokio::sync::Semaphore>,
    /// The source's version, read by one ticker every 500 ms for every live page.
    version: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Live (server-sent event) streams open at once; the next gets 503.
pub const MAX_STREAMS: usize = 256;

type Shared = Arc<Ui>;

const PAGE: usize = 50;

pub fn router(source: Arc<dyn Source>, options: Options) -> Router {
    let mut templates = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("../assets/base.html")),
        ("runs.html", include_str!("../assets/runs.html")),
        ("run.html", include_str!("../assets/run.html")),
        ("run_tasks.html", include_str!("../assets/run_tasks.html")),
        ("workflows.html", include_str!("../assets/workflows.html")),
        ("catalog.html", include_str!("../assets/catalog.html")),
        ("table.html", include_str!("../assets/table.html")),
        ("dashboards.html", include_str!("../assets/dashboards.html")),
        ("dashboard.html", include_str!("../assets/dashboard.html")),
        ("error.html", include_str!("../assets/error.html")),
        ("alerts.html", include_str!("../assets/alerts.html")),
    ] {
        if let Err(e) = templates.add_template(name, text) {
            // A template is part of the binary: a broken one is a bug, caught by tests.
            tracing::error!("web UI template {name}: {e}");
        }
    }
    templates.add_filter("when", when);
    templates.add_function("took", took);
    let version = watch_version(source.clone(), options.shutdown.clone());
    let api = crate::api::router(source.clone());
    let ui = Arc::new(Ui {
        source,
        auth: options.auth,
        dashboards_dir: options.dashboards_dir,
        templates,
        redactor: Redactor::from_env(),
        shutdown: options.shutdown,
        listen: options.listen,
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        version,
    });
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/workflows", get(workflows_page))
        .route("/catalog", get(catalog_page))
        .route("/catalog/sql.csv", get(sql_csv))
        .route("/catalog/tables/{name}", get(table_page))
        .route("/alerts", get(alerts_page))
        .route("/dashboards", get(dashboards_page))
        .route("/dashboards/{name}", get(dashboard_page))
        .route("/events/runs", get(runs_events))
        .route("/events/runs/{id}", get(run_events))
        .route("/static/app.js", get(app_js))
        .route("/static/style.css", get(style_css))
        .with_state(ui.clone())
        // One auth layer in front of the pages and the API alike, before any body is read.
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(ui, gate))
}

/// Authentication, roles and CSRF for every route (see [`auth::authorize`]).
async fn gate(State(ui): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let decided = auth::check_host(ui.auth.as_ref(), ui.listen, headers)
        .and_then(|()| {
            // A bearer token is never attached by a browser on its own.
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.get(..7)
                        .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
                });
            if bearer {
                return Ok(());
            }
            auth::check_fetch_site(request.uri().path(), request.uri().query(), headers)
        })
        .and_then(|()| {
            auth::authorize(
                ui.auth.as_ref(),
                request.method(),
                request.uri().path(),
                headers,
            )
        });
    match decided {
        Ok(_) => {
            let mut response = next.run(request).await;
            let h = response.headers_mut();
            // Scripts, styles and data only from here; inline style attributes are the
            // charts' colours. Never framed by another site (clickjacking a rerun button).
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
                ),
            );
            h.insert("x-frame-options", HeaderValue::from_static("DENY"));
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut response = (status, Json(json!({"error": refusal.message}))).into_response();
            if refusal.challenge {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"orchestrator\", charset=\"UTF-8\""),
                );
            }
            response
        }
    }
}

/// `2026-12-01T22:00:03.123Z` -> `2026-12-01 22:00:03`.
fn when(value: minijinja::Value) -> String {
    value
        .as_str()
        .map(|s| {
            let s = s.replace('T', " ");
            s.split('.')
                .next()
                .unwrap_or(&s)
                .trim_end_matches('Z')
                .to_string()
        })
        .unwrap_or_default()
}

/// How long from `start` to `end` (or now), e.g. `1.25 s`, `3 min 4 s`.
fn took(start: minijinja::Value, end: minijinja::Value) -> String {
    let parse = |v: &minijinja::Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let Some(s) = parse(&start) else {
        return String::new();
    };
    let e = parse(&end).unwrap_or_else(chrono::Utc::now);
    let ms = (e - s).num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

impl Ui {
    /// Renders a page; secrets of this process are masked in the whole text.
    fn render(&self, name: &str, ctx: Value) -> Response {
        // `partial`: only the live part (block `content`), which a live page swaps in.
        let partial = ctx["partial"].as_bool().unwrap_or(false);
        match self.templates.get_template(name).and_then(|t| {
            if partial {
                t.render_captured(&ctx)?
                    .with_state_mut(|state| state.render_block("content"))
            } else {
                t.render(&ctx)
            }
        }) {
            Ok(html) => Html(self.redactor.redact(&html).into_owned()).into_response(),
            Err(e) => {
                tracing::error!("web UI: rendering {name}: {e:#}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot render {name}: {e}"),
                )
                    .into_response()
            }
        }
    }

    fn error_page(&self, e: Error) -> Response {
        let status = e.http_status();
        let mut r = self.render(
            "error.html",
            json!({"status": status, "message": e.summary()}),
        );
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r
    }
}

fn api_error(e: Error) -> Response {
    crate::api::error(&e)
}

fn filter_of(q: &HashMap<String, String>) -> RunFilter {
    crate::api::filter_of(q, PAGE)
}

async fn runs_page(State(ui): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let filter = filter_of(&q);
    match ui.source.runs(&filter).await {
        Ok(runs) => {
            // Links carry the filters and a cursor (the run at the page's edge), so a page
            // deep in the history costs what the first does.
            let query = |cursor: Option<(&str, &str)>| {
                let mut parts: Vec<String> = ["workflow", "status", "date"]
                    .iter()
                    .filter_map(|k| {
                        q.get(*k)
                            .filter(|v| !v.is_empty())
                            .map(|v| format!("{k}={}", enc(v)))
                    })
                    .collect();
                if let Some((k, id)) = cursor {
                    parts.push(format!("{k}={}", enc(id)));
                }
                format!("?{}", parts.join("&"))
            };
            let list = runs["runs"].as_array().cloned().unwrap_or_default();
            let edge = |i: Option<&Value>| i.and_then(|r| r["id"].as_str()).map(str::to_string);
            let (first, last) = (edge(list.first()), edge(list.last()));
            let here = match (&filter.before, &filter.after) {
                (Some(id), _) => query(Some(("before", id))),
                (None, Some(id)) => query(Some(("after", id))),
                (None, None) => query(None),
            };
            let newer = runs["newer"].as_bool().unwrap_or(false);
            let older = runs["more"].as_bool().unwrap_or(false);
            ui.render(
                "runs.html",
                json!({
                    "page_name": "runs",
                    "partial": q.contains_key("partial"),
                    "live_events": format!("/events/runs{here}"),
                    "runs": runs["runs"],
                    "filter": {"workflow": filter.workflow, "status": filter.status, "date": filter.date},
                    "prev": first.filter(|_| newer).map(|id| query(Some(("after", &id)))),
                    "next": last.filter(|_| older).map(|id| query(Some(("before", &id)))),
                    "statuses": ["running", "succeeded", "failed", "cancelled", "interrupted", "skipped"],
                }),
            )
        }
        Err(e) => ui.error_page(e),
    }
}

/// Percent-encodes a query value.
fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Task sections a run page carries at first; the rest come a chunk at a time as the
/// reader scrolls to them (`app.js`), or all at once with `?tasks=all` (no script needed).
const FIRST_TASKS: usize = 20;
/// Most task sections one `?fragment=tasks` request returns.
const TASK_CHUNK: usize = 200;

async fn run_page(
    State(ui): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut run = match ui.source.run(&id).await {
        Ok(run) => run,
        Err(e) => return ui.error_page(e),
    };
    // `?drawing=dag|gantt`: one drawing as a whole SVG (what a big run's page links to
    // for readers without scripts).
    if let Some(which) = q.get("drawing") {
        let svg = match which.as_str() {
            "dag" => dag::svg(&run, dag::Mode::Whole),
            "gantt" => dag::gantt(&run, dag::Mode::Whole),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    "drawing= takes dag or gantt".to_string(),
                )
                    .into_response()
            }
        };
        return (
            [(axum::http::header::CONTENT_TYPE, "image/svg+xml")],
            ui.redactor.redact(&svg).into_owned(),
        )
            .into_response();
    }
    let total = run["tasks"].as_array().map_or(0, Vec::len);
    let number = |key: &str| q.get(key).and_then(|v| v.parse::<usize>().ok());
    // `?fragment=tasks&from=N` (and `count=M`, or `until=TASK`): the next task sections,
    // for the page's script to append.
    if q.get("fragment").map(String::as_str) == Some("tasks") {
        let from = number("from").unwrap_or(0).min(total);
        let to = match q.get("until") {
            Some(task) => {
                let at = run["tasks"]
                    .as_array()
                    .and_then(|all| all.iter().position(|t| t["id"] == task.as_str()));
                match at {
                    Some(at) => (at + 1).max(from),
                    None => {
                        return (
                            StatusCode::NOT_FOUND,
                            format!("run {id} has no task {task:?}"),
                        )
                            .into_response()
                    }
                }
            }
            None => from + number("count").unwrap_or(TASK_CHUNK).clamp(1, TASK_CHUNK),
        }
        .min(total);
        return ui.render(
            "run_tasks.html",
            json!({
                "run": {"id": run["id"], "status": run["status"]},
                "tasks": shown_tasks(&mut run, from..to),
                "more": (to < total).then(|| json!({"from": to, "total": total})),
            }),
        );
    }
    let shown = match q.get("tasks").map(String::as_str) {
        Some("all") => total,
        _ => number("tasks")
            .unwrap_or(FIRST_TASKS)
            .max(FIRST_TASKS)
            .min(total),
    };
    let base = format!("/runs/{}", enc(&id));
    let dag = dag::svg(
        &run,
        dag::Mode::Virtual {
            full_url: &format!("{base}?drawing=dag"),
        },
    );
    let gantt = dag::gantt(
        &run,
        dag::Mode::Virtual {
            full_url: &format!("{base}?drawing=gantt"),
        },
    );
    let more = (shown < total).then(|| json!({"from": shown, "total": total}));
    // The template reads the run's own fields and `tasks`: not the whole task list and
    // the graph again (1,000 tasks' worth of values to convert).
    let tasks = shown_tasks(&mut run, 0..shown);
    run["upstream"] = Value::Null;
    ui.render(
        "run.html",
        json!({
            "page_name": "runs",
            "partial": q.contains_key("partial"),
            "live_events": format!("/events/runs/{}", enc(&id)),
            "run": run,
            "tasks": tasks,
            "more": more,
            "dag": dag,
            "gantt": gantt,
        }),
    )
}

/// Takes the tasks in `range` out of the run JSON, each with its outputs: its own, or (a
/// failed task has none) its last attempt's.
fn shown_tasks(run: &mut Value, range: std::ops::Range<usize>) -> Vec<Value> {
    let mut tasks = match run["tasks"].take() {
        Value::Array(all) => all,
        _ => Vec::new(),
    };
    let end = range.end.min(tasks.len());
    let mut shown: Vec<Value> = tasks.drain(range.start.min(end)..end).collect();
    for t in &mut shown {
        let own = t["outputs"].as_object().is_some_and(|o| !o.is_empty());
        if !own {
            let last = t["history"]
                .as_array()
                .and_then(|h| h.last())
                .map(|a| a["outputs"].clone())
                .unwrap_or(Value::Null);
            t["outputs"] = last;
        }
    }
    shown
}

/// A schedule expression in words, for the common shapes; the expression otherwise.
pub fn in_words(expr: &str) -> String {
    let e = expr.trim();
    if let Some(inner) = e.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        return format!("every {}", inner.trim());
    }
    let inner = e
        .strip_prefix("cron(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(e);
    let f: Vec<&str> = inner.split_whitespace().collect();
    if f.len() < 5 {
        return e.to_string();
    }
    let (min, hour, dom, mon, dow) = (f[0], f[1], f[2], f[3], f[4]);
    let time = match (min.parse::<u32>(), hour.parse::<u32>()) {
        (Ok(m), Ok(h)) => format!("at {h:02}:{m:02}"),
        (Ok(m), _) if hour == "*" => format!("at minute {m} of every hour"),
        _ => format!("at minute {min}, hour {hour}"),
    };
    let day_name = |d: &str| match d.to_ascii_uppercase().as_str() {
        "MON" | "1" => "Monday".to_string(),
        "TUE" | "2" => "Tuesday".into(),
        "WED" | "3" => "Wednesday".into(),
        "THU" | "4" => "Thursday".into(),
        "FRI" | "5" => "Friday".into(),
        "SAT" | "6" => "Saturday".into(),
        "SUN" | "0" | "7" => "Sunday".into(),
        other => other.to_string(),
    };
    let days = if dow != "*" && dow != "?" {
        let parts: Vec<String> = dow
            .split(',')
            .map(|p| match p.split_once('-') {
                Some((a, b)) => format!("{} through {}", day_name(a), day_name(b)),
                None => day_name(p),
            })
            .collect();
        format!(", {}", parts.join(" and "))
    } else if dom != "*" && dom != "?" {
        format!(", on day {dom} of the month")
    } else {
        ", every day".to_string()
    };
    let months = if mon != "*" {
        format!(", in month {mon}")
    } else {
        String::new()
    };
    format!("{time}{days}{months}")
}

async fn workflows_page(State(ui): State<Shared>) -> Response {
    let mut status = match ui.source.workflows().await {
        Ok(s) => s,
        Err(e) => return ui.error_page(e),
    };
    // Each workflow's last runs x tasks (Airflow's grid view).
    if let Some(list) = status["workflows"].as_array_mut() {
        for w in list {
            if let Some(exprs) = w["schedule"]["exprs"].as_array() {
                let words: Vec<String> = exprs
                    .iter()
                    .filter_map(Value::as_str)
                    .map(in_words)
                    .collect();
                w["schedule"]["words"] = json!(words.join("; "));
            }
            let name = w["name"].as_str().unwrap_or_default().to_string();
            let filter = RunFilter {
                workflow: Some(name),
                limit: 15,
                ..RunFilter::default()
            };
            let runs = ui.source.runs(&filter).await.unwrap_or_else(|_| json!({}));
            let mut grid_runs = Vec::new();
            for r in runs["runs"].as_array().into_iter().flatten().rev() {
                let id = r["id"].as_str().unwrap_or_default();
                if let Ok(full) = ui.source.run(id).await {
                    let by_task: serde_json::Map<String, Value> = full["tasks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| Some((t["id"].as_str()?.to_string(), t["status"].clone())))
                        .collect();
                    grid_runs.push(json!({
                        "id": id, "status": r["status"], "logical_date": r["logical_date"],
                        "tasks": by_task,
                    }));
                }
            }
            w["grid"] = json!(grid_runs);
        }
    }
    status["page_name"] = json!("workflows");
    ui.render("workflows.html", status)
}

/// Rows of `query --json` as columns and rows of cells, for a table.
fn table_of(rows: &Value) -> Value {
    let rows = rows.as_array().cloned().unwrap_or_default();
    let columns: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| match &r[c] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if n.is_f64() => {
                            let s = format!("{f:.6}");
                            s.trim_end_matches('0').trim_end_matches('.').to_string()
                        }
                        _ => n.to_string(),
                    },
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    json!({"columns": columns, "rows": cells, "count": rows.len()})
}

/// A query's rows as a table, or its error for the page.
async fn query_table(ui: &Ui, sql: &str) -> (Value, Option<String>) {
    match ui.source.query(sql).await {
        Ok(rows) => (table_of(&rows), None),
        Err(e) => (Value::Null, Some(e.message)),
    }
}

async fn catalog_page(
    State(ui): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let tables = match ui.source.tables().await {
        Ok(t) => t,
        Err(e) => return ui.error_page(e),
    };
    let sql = q.get("sql").cloned().unwrap_or_default();
    let (result, error) = if sql.trim().is_empty() {
        (Value::Null, None)
    } else {
        query_table(&ui, &sql).await
    };
    ui.render(
        "catalog.html",
        json!({
            "page_name": "catalog",
            "tables": tables,
            "sql": sql,
            "sql_enc": enc(&sql),
            "result": result,
            "error": error,
        }),
    )
}

async fn table_page(State(ui): State<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    let tables = match ui.source.tables().await {
        Ok(t) => t,
        Err(e) => return ui.error_page(e),
    };
    let Some(table) = tables
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == name.as_str())
        .cloned()
    else {
        return ui.error_page(Error::not_found(format!(
            "no table `{name}` in the catalog; the catalog page lists them"
        )));
    };
    let preview_sql = format!("SELECT * FROM \"{}\" LIMIT 50", name.replace('"', "\"\""));
    let (preview, error) = query_table(&ui, &preview_sql).await;
    // A published table's versions, each with the commands that act on it: the page
    // shows them to copy; changing a table stays a deliberate act at a terminal.
    let (history, history_error) = match ui.source.table_history(&name).await {
        Ok(h) => (history_rows(&name, &table, h), None),
        Err(e) => (Value::Null, Some(e.message)),
    };
    ui.render(
        "table.html",
        json!({
            "page_name": "catalog",
            "table": table,
            "preview": preview,
            "preview_sql": preview_sql,
            "error": error,
            "history": history,
            "history_error": history_error,
        }),
    )
}

/// `tables history --json` rows for the table page: each with the SQL that reads the
/// table as of it, the restore command that goes back to it, whether a restore undid
/// it, and (for a publish) the restore command that undoes that run.
fn history_rows(name: &str, table: &Value, history: Value) -> Value {
    let Value::Array(versions) = history else {
        return Value::Null;
    };
    let undone: Vec<u64> = table["undone"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["version"].as_u64())
        .collect();
    let latest = versions.first().and_then(|v| v["version"].as_u64());
    let rows: Vec<Value> = versions
        .into_iter()
        .map(|mut v| {
            let version = v["version"].as_u64().unwrap_or(0);
            let sql = format!("SELECT * FROM as_of('{name}', {version}) LIMIT 50");
            v["as_of_sql"] = json!(sql);
            v["as_of_href"] = json!(format!("/catalog?sql={}", enc(&sql)));
            v["undone"] = json!(undone.contains(&version));
            if Some(version) != latest {
                v["restore_to"] = json!(format!(
                    "orchestrator tables restore {name} --version {version}"
                ));
            }
            if let Some(run) = v["run_id"].as_str().filter(|_| v["restored_to"].is_null()) {
                if version > 0 {
                    v["undo"] = json!(format!(
                        "orchestrator tables restore {name} --before-run {run}"
                    ));
                }
            }
            v
        })
        .collect();
    Value::Array(rows)
}

async fn sql_csv(State(ui): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let sql = q.get("sql").cloned().unwrap_or_default();
    match ui.source.query(&sql).await {
        Ok(rows) => {
            let t = table_of(&rows);
            let field = |s: &str| {
                if s.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_string()
                }
            };
            let mut out = String::new();
            let columns: Vec<String> = t["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| field(c.as_str().unwrap_or_default()))
                .collect();
            out.push_str(&columns.join(","));
            out.push('\n');
            for row in t["rows"].as_array().into_iter().flatten() {
                let cells: Vec<String> = row
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| field(c.as_str().unwrap_or_default()))
                    .collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"query.csv\"",
                    ),
                ],
                ui.redactor.redact(&out).into_owned(),
            )
                .into_response()
        }
        Err(e) => api_error(e),
    }
}

async fn alerts_page(State(ui): State<Shared>) -> Response {
    match ui.source.alerts(200).await {
        Ok(mut v) => {
            v["page_name"] = json!("alerts");
            v["live_events"] = json!("/events/runs");
            ui.render("alerts.html", v)
        }
        Err(e) => ui.error_page(e),
    }
}

async fn dashboards_page(State(ui): State<Shared>) -> Response {
    let list = ui
        .dashboards_dir
        .as_deref()
        .map(dashboards::list)
        .unwrap_or_default();
    let items: Vec<Value> = list
        .into_iter()
        .map(|(name, title)| match title {
            Ok(t) => json!({"name": name, "title": t}),
            Err(e) => json!({"name": name, "error": e}),
        })
        .collect();
    ui.render(
        "dashboards.html",
        json!({
            "page_name": "dashboards",
            "dashboards": items,
            "dir": ui.dashboards_dir.as_ref().map(|d| d.display().to_string()),
        }),
    )
}

async fn dashboard_page(
    State(ui): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(dir) = &ui.dashboards_dir else {
        return ui.error_page(Error::not_found("no dashboards directory"));
    };
    let d = match dashboards::load(dir, &name) {
        Ok(d) => d,
        Err(e) => return ui.error_page(Error::not_found(e)),
    };
    // Params: from the URL when safe to put in SQL, else the default.
    let mut params = BTreeMap::new();
    let mut param_views = Vec::new();
    for (k, p) in &d.params {
        let v = q
            .get(k)
            .filter(|v| dashboards::safe_value(v))
            .cloned()
            .unwrap_or_else(|| p.default.clone());
        let choices: Vec<String> = match &p.choices {
            Some(sql) => ui
                .source
                .query_trusted(sql)
                .await
                .ok()
                .and_then(|rows| {
                    rows.as_array().map(|rows| {
                        rows.iter()
                            .filter_map(|r| {
                                r.as_object()?.values().next()?.as_str().map(String::from)
                            })
                            .collect()
                    })
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        param_views.push(json!({"name": k, "value": v, "choices": choices}));
        params.insert(k.clone(), v);
    }
    let days_override = q.get("days").and_then(|d| d.parse::<u32>().ok());
    // The panels' queries at once: each waits mostly on its own scan.
    let params = &params;
    let ui_ref = &ui;
    let panels: Vec<Value> = futures_util::future::join_all(d.panels.iter().map(|p| async move {
        let days = days_override
            .or_else(|| p.time_range.as_deref().and_then(dashboards::days))
            .unwrap_or(36_500);
        let started = std::time::Instant::now();
        let rendered = match dashboards::render_sql(&p.sql, params, days) {
            Err(e) => Err(e),
            Ok(sql) => match ui_ref.source.query_trusted(&sql).await {
                Err(e) => Err(e.message),
                Ok(rows) => {
                    let rows = rows.as_array().cloned().unwrap_or_default();
                    if p.kind == Kind::Table {
                        Ok((String::new(), table_of(&Value::Array(rows))))
                    } else {
                        let y = p.y();
                        chart::draw(
                            &rows,
                            &chart::Spec {
                                kind: p.kind,
                                x: p.x.as_deref().unwrap_or_default(),
                                y: &y,
                                series: p.series.as_deref(),
                                markers: p.markers.as_deref(),
                            },
                        )
                        .map(|svg| (svg, Value::Null))
                    }
                }
            },
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let title = dashboards::render_sql(&p.title, params, days).unwrap_or(p.title.clone());
        match rendered {
            Ok((svg, table)) => json!({
                "title": title, "kind": format!("{:?}", p.kind).to_lowercase(),
                "svg": svg, "table": table, "ms": format!("{ms:.0}"),
                "range": p.time_range,
            }),
            Err(e) => json!({"title": title, "error": e}),
        }
    }))
    .await;
    ui.render(
        "dashboard.html",
        json!({
            "page_name": "dashboards",
            "name": name,
            "title": d.title,
            "description": d.description,
            "params": param_views,
            "days": days_override,
            "panels": panels,
        }),
    )
}

/// One ticker for every live page: reads the source's version every 500 ms and
/// publishes it when it changes. `None` when the source has no version (each stream then
/// probes on its own) or there is no runtime to tick in.
fn watch_version(
    source: Arc<dyn Source>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::sync::watch::Receiver<u64>> {
    let first = source.version()?;
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = tokio::sync::watch::channel(first);
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
            }
            if let Some(v) = source.version() {
                tx.send_if_modified(|old| std::mem::replace(old, v) != v);
            }
        }
    });
    Some(rx)
}

/// Server-sent events: `change` whenever what `probe` returns changes; the page then
/// fetches its new content. `probe` runs when the shared version changes (or every
/// 500 ms without one). A comment every 15 s keeps proxies from closing the stream. At
/// most [`MAX_STREAMS`] at once: the next gets 503.
fn changes<F, Fut>(ui: &Shared, probe: F) -> Response
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let Ok(permit) = ui.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            format!(
                "{MAX_STREAMS} live pages are open already; close some, or reload this one later"
            ),
        )
            .into_response();
    };
    let stop = ui.shutdown.clone();
    let version = ui.version.clone();
    let state = (probe, None::<String>, version, permit);
    let stream = futures_util::stream::unfold(state, move |(probe, last, mut version, permit)| {
        let stop = stop.clone();
        async move {
            loop {
                if stop.is_cancelled() {
                    return None;
                }
                let now = probe().await;
                if last.as_ref() != Some(&now) {
                    let first = last.is_none();
                    let event = Event::default()
                        .event(if first { "hello" } else { "change" })
                        .data("{}");
                    let next = (probe, Some(now), version, permit);
                    return Some((Ok::<_, std::convert::Infallible>(event), next));
                }
                match version.as_mut() {
                    Some(v) => tokio::select! {
                        changed = v.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        _ = stop.cancelled() => return None,
                    },
                    None => tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.cancelled() => return None,
                    },
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn run_events(State(ui): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let shared = ui.clone();
    changes(&shared, move || {
        let ui = ui.clone();
        let id = id.clone();
        async move {
            match ui.source.run(&id).await {
                Ok(run) => run.to_string(),
                Err(e) => e.message,
            }
        }
    })
}

async fn runs_events(
    State(ui): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let filter = filter_of(&q);
    let shared = ui.clone();
    changes(&shared, move || {
        let ui = ui.clone();
        let filter = filter.clone();
        async move {
            match ui.source.runs(&filter).await {
                Ok(runs) => runs.to_string(),
                Err(e) => e.message,
            }
        }
    })
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/app.js"),
    )
        .into_response()
}

async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/style.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_in_words() {
        assert_eq!(
            in_words("cron(0 22 ? * MON-FRI *)"),
            "at 22:00, Monday through Friday"
        );
        assert_eq!(in_words("30 6 * * *"), "at 06:30, every day");
        assert_eq!(in_words("rate(1 minute)"), "every 1 minute");
        assert_eq!(in_words("0 3 1 * *"), "at 03:00, on day 1 of the month");
    }
}
