//! The one HTTP API, in process (`tower::ServiceExt::oneshot`, no sockets), over the real
//! parts: a sled store in a temp dir, the service's data source, and a real daemon event
//! loop for the routes that start or stop runs. Every route is checked for its auth
//! refusals, and the statuses that come from an error's kind: 404 for what does not exist,
//! 409 for a trigger while the workflow's run is in progress.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use orchestrator_engine::state::Store;
use orchestrator_engine::CancellationToken;
use orchestrator_service::console::Captured;
use orchestrator_service::source::StoreSource;
use orchestrator_service::{ops, Context, Kind};
use orchestrator_web::{Auth, Source};
use tower::ServiceExt as _;

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";

/// Every route of the API, with a body its handler reads (for POSTs).
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/runs", ""),
    ("GET", "/api/runs/nope", ""),
    ("POST", "/api/runs/nope/rerun", "{}"),
    ("POST", "/api/runs/nope/cancel", "{}"),
    ("POST", "/api/trigger", r#"{"workflow": "slow"}"#),
    (
        "POST",
        "/api/run",
        r#"{"path": "/nope.yaml", "date": "2026-01-02"}"#,
    ),
    ("GET", "/api/workflows", ""),
    ("GET", "/api/tables", ""),
    ("POST", "/api/query", r#"{"sql": "SELECT 1"}"#),
    ("GET", "/api/alerts", ""),
    ("GET", "/api/backfills", ""),
    ("POST", "/api/backfills", r#"{"resume": "nope"}"#),
    ("GET", "/api/backfills/nope", ""),
];

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    source: Arc<StoreSource>,
    stop: CancellationToken,
    daemon: tokio::task::JoinHandle<()>,
}

impl Fixture {
    /// A state dir, a workflows dir holding `slow` (one task that runs for a minute unless
    /// cancelled), a daemon over them that fires nothing by itself, and the API's router.
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let workflows = dir.path().join("workflows");
        std::fs::create_dir(&workflows).unwrap();
        std::fs::write(
            workflows.join("slow.yaml"),
            "name: slow\ntasks:\n  wait:\n    kind: shell\n    command: sleep 60\n",
        )
        .unwrap();
        let state_dir = dir.path().join("state");
        let (store, interrupted) = Store::open(&state_dir, "api test").unwrap();
        let store = Arc::new(store);
        let ctx = Context::new(&state_dir, Arc::new(Captured::default()));
        let (commands, command_rx) = orchestrator_daemon::commands();
        let (loader, prepare) = ops::daemon::wiring(&ctx);
        let config = orchestrator_daemon::Config {
            workflows_dir: workflows,
            grace: Duration::from_secs(5),
            max_runs: 2,
            schedule: false,
            hurry: CancellationToken::new(),
        };
        let stop = CancellationToken::new();
        let daemon = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let run = orchestrator_daemon::run(
                    config,
                    store,
                    loader,
                    prepare,
                    interrupted,
                    command_rx,
                    stop,
                );
                run.await.unwrap();
            })
        };
        let source = Arc::new(StoreSource::new(ctx, store, Some(commands)));
        let auth = Auth::parse(&format!(
            "tokens:\n  - {{ name: wall, role: viewer, token: {VIEWER} }}\n  - {{ name: ops, role: operator, token: {OPERATOR} }}\n"
        ))
        .unwrap();
        let app = orchestrator_web::router(
            source.clone(),
            orchestrator_web::Options {
                auth: Some(auth),
                dashboards_dir: None,
                shutdown: stop.clone(),
                listen: "127.0.0.1:8080".parse().unwrap(),
            },
        );
        let f = Fixture {
            _dir: dir,
            app,
            source,
            stop,
            daemon,
        };
        // The daemon reads the workflows directory as it starts: wait until it knows `slow`.
        for _ in 0..500 {
            let (_, body) = f.ask("GET", "/api/workflows", "", Some(OPERATOR)).await;
            if body.contains("\"slow\"") {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the daemon never listed workflow `slow`");
    }

    async fn ask(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", "127.0.0.1:8080");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn stop(self) {
        self.stop.cancel();
        self.daemon.await.unwrap();
    }
}

#[tokio::test]
async fn every_route_refuses_a_request_without_a_valid_token_before_reading_its_body() {
    let f = Fixture::start().await;
    for (method, path, _) in ROUTES {
        // A malformed body: auth is decided first, so the answer is 401, not 422.
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, body) = f.ask(method, path, "{not json", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert!(body.contains("\"error\""), "{method} {path}: {body}");
        }
    }
    f.stop().await;
}

#[tokio::test]
async fn viewers_read_every_route_but_only_operators_post() {
    let f = Fixture::start().await;
    for (method, path, body) in ROUTES {
        let (status, answer) = f.ask(method, path, body, Some(VIEWER)).await;
        // The SQL box only reads: a viewer may POST a query.
        if *method == "POST" && *path != "/api/query" {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        } else {
            assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {answer}"
            );
        }
    }
    f.stop().await;
}

#[tokio::test]
async fn what_does_not_exist_is_404_from_the_error_kind() {
    let f = Fixture::start().await;
    for (method, path, body) in [
        ("GET", "/api/runs/nope", ""),
        ("GET", "/api/runs?before=nope", ""),
        ("GET", "/api/runs?after=nope", ""),
        ("POST", "/api/runs/nope/rerun", "{}"),
        ("POST", "/api/runs/nope/cancel", "{}"),
        ("GET", "/api/backfills/nope", ""),
        ("POST", "/api/backfills", r#"{"resume": "nope"}"#),
        ("POST", "/api/trigger", r#"{"workflow": "nope"}"#),
    ] {
        let (status, answer) = f.ask(method, path, body, Some(OPERATOR)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    // The status is the kind's, whatever the words: the source says NotFound, and the
    // kind alone maps to 404 (engine::error's tests try the same kind with other words).
    let e = f.source.run("nope").await.unwrap_err();
    assert_eq!(e.kind, Kind::NotFound, "{e}");
    let reworded = orchestrator_service::Error::new(e.kind, "something else entirely");
    assert_eq!(reworded.http_status(), 404);
    f.stop().await;
}

#[tokio::test]
async fn a_trigger_while_the_workflows_run_is_in_progress_is_409() {
    let f = Fixture::start().await;
    let trigger = r#"{"workflow": "slow", "date": "2026-01-02"}"#;
    let (status, body) = f.ask("POST", "/api/trigger", trigger, Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started: orchestrator_web::api::Started = serde_json::from_str(&body).unwrap();
    let (status, body) = f.ask("POST", "/api/trigger", trigger, Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let e = f
        .source
        .trigger("slow", Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, Kind::Busy, "{e}");
    // Cancelling frees the workflow: its run is known, so the cancel is 200.
    let cancel = format!("/api/runs/{}/cancel", started.run_id);
    let (status, body) = f.ask("POST", &cancel, "{}", Some(OPERATOR)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    f.stop().await;
}

#[tokio::test]
async fn a_body_the_route_does_not_take_is_422_for_a_signed_in_caller() {
    let f = Fixture::start().await;
    let (status, body) = f
        .ask(
            "POST",
            "/api/trigger",
            r#"{"workflow": "slow", "parmas": {}}"#,
            Some(OPERATOR),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = f.ask("POST", "/api/query", "{not json", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    f.stop().await;
}
