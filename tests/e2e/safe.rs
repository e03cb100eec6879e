//! Issue #25's reproductions, as found by an adversarial round on the daemon, the UI,
//! file triggers and notifications: each test is the case that failed, run against the
//! real binary.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};

use serde_json::Value;

use crate::common::{wait_until, Sandbox};
use crate::daemon::{workflow, Daemon};

/// Every byte under `dir` (db files, recovery points, logs).
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for p in crate::common::walk(dir) {
        if let Ok(b) = std::fs::read(&p) {
            out.extend_from_slice(&b);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn an_appended_file_starts_another_run_and_the_store_checks_clean() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("in")).unwrap();
    workflow(
        &sb,
        "files",
        "name: files\non:\n  files:\n    path: ../in\n    pattern: \"*.csv\"\n    debounce: 1s\ntasks:\n  a:\n    kind: shell\n    command: \"cat {{ trigger.files | shell_quote }} | wc -l >> ../seen\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    sb.write("in/x.csv", "a\n");
    wait_until("a run for the new file", || sb.count("seen") >= 1);
    d.wait_log("succeeded", 1);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(sb.path("in/x.csv"))
        .unwrap();
    writeln!(f, "b").unwrap();
    drop(f);
    wait_until("a second run for the appended file", || {
        sb.count("seen") >= 2
    });
    d.wait_log("succeeded", 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("cannot read file records"), "{log}");
    assert_eq!(
        sb.read("seen").split_whitespace().collect::<Vec<_>>(),
        ["1", "2"]
    );
    let out = sb.run(&["state", "check"]);
    assert_eq!(out.code, 0, "{out:?}");
    // A healthy store is never rebuilt into a shorter history.
    let out = sb.run(&["state", "recover", "--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    let runs: Value = serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap_or_default();
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
}

#[test]
fn a_rerun_of_a_failed_file_triggered_run_loads_the_same_files() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("in")).unwrap();
    workflow(
        &sb,
        "load",
        "name: load\non:\n  files:\n    path: ../in\n    pattern: \"*.csv\"\n    debounce: 1s\ntasks:\n  a:\n    kind: shell\n    command: \"test -f ../ok && cat {{ trigger.files | shell_quote }} >> ../loaded\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    sb.write("in/day.csv", "row-1\n");
    d.wait_log("failed", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let runs: Value = serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    sb.write("ok", "");
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        sb.read("loaded"),
        "row-1\n",
        "the rerun loaded nothing: {out:?}"
    );
}

#[test]
fn a_file_name_cannot_inject_a_command_and_unquoted_files_are_warned_about() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("in")).unwrap();
    workflow(
        &sb,
        "count",
        "name: count\non:\n  files:\n    path: ../in\n    pattern: \"*.csv\"\n    debounce: 1s\ntasks:\n  a:\n    kind: shell\n    command: \"wc -l {{ trigger.files | shell_quote }} >> ../counts\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    sb.write("in/x;touch PWNED;.csv", "1\n2\n");
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(!sb.path("PWNED").exists() && !sb.path("wf/PWNED").exists());
    assert!(sb.read("counts").starts_with("2 "), "{}", sb.read("counts"));

    sb.write(
        "unquoted.yaml",
        "name: u\ntasks:\n  a:\n    kind: shell\n    command: \"wc -l {{ trigger.files | join(' ') }}\"\n",
    );
    let out = sb.run(&["validate", "unquoted.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("unquoted.yaml:5:")
            && out
                .stderr
                .contains("`trigger.files` is put into the shell command of task `a` unquoted")
            && out.stderr.contains("{{ trigger.files | shell_quote }}"),
        "{out:?}"
    );
}

/// A raw HTTP/1.1 request; the status and the whole answer.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn ui_addr(sb: &Sandbox) -> String {
    crate::ui::ui_url(sb)
        .trim_start_matches("http://")
        .to_string()
}

#[test]
fn dns_rebinding_and_cross_site_requests_are_refused_on_every_route() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "w",
        "name: w\ntasks:\n  a:\n    kind: shell\n    command: \"echo ran >> ../ran\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let port = addr.rsplit(':').next().unwrap();
    let routes = [
        ("GET", "/"),
        ("GET", "/runs"),
        ("GET", "/runs/x"),
        ("GET", "/workflows"),
        ("GET", "/catalog"),
        ("GET", "/catalog?sql=SELECT%201"),
        ("GET", "/catalog/sql.csv?sql=SELECT%201"),
        ("GET", "/catalog/tables/t"),
        ("GET", "/alerts"),
        ("GET", "/dashboards"),
        ("GET", "/events/runs"),
        ("GET", "/static/app.js"),
        ("GET", "/api/runs"),
        ("GET", "/api/workflows"),
        ("GET", "/api/tables"),
        ("POST", "/api/trigger"),
        ("POST", "/api/query"),
        ("POST", "/api/runs/x/rerun"),
        ("POST", "/api/runs/x/cancel"),
        ("GET", "/no/such/route"),
    ];
    for (method, path) in routes {
        let (code, answer) = raw(
            &addr,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nX-Orchestrator-CSRF: 1\r\nContent-Type: application/json\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{{\"workflow\":\"w\"}}"
            ),
        );
        assert_eq!(code, 421, "{method} {path}: {answer}");
    }
    // An <img> on another site (or another port of localhost) runs no query and opens
    // no stream.
    for (path, site) in [
        ("/catalog?sql=SELECT%201", "cross-site"),
        ("/catalog/sql.csv?sql=SELECT%201", "same-site"),
        ("/events/runs", "cross-site"),
    ] {
        let (code, answer) = raw(
            &addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nSec-Fetch-Site: {site}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(code, 403, "{path} {site}: {answer}");
    }
    // The UI's own pages are served, with a content security policy.
    let (code, answer) = raw(
        &addr,
        &format!("GET /runs HTTP/1.1\r\nHost: localhost:{port}\r\nSec-Fetch-Site: same-origin\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'self'"),
        "{answer}"
    );
    let (code, answer) = raw(
        &addr,
        &format!("GET /catalog?sql=SELECT%201%20AS%20n HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200, "{answer}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(!sb.path("ran").exists(), "a refused request started a run");
}

/// A webhook receiver that answers 500 with the request line it got, as error pages that
/// echo the path do.
fn echoing_hook() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let page = format!("no route for {}", first.trim());
            let _ = write!(
                stream,
                "HTTP/1.1 500 X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn secrets_echoed_by_a_webhook_or_a_command_channel_are_stored_and_printed_masked() {
    let sb = Sandbox::new();
    let hook = echoing_hook();
    let url_secret = "q7Xq-url-secret-9931";
    let env_secret = "h00k-token-value-4417";
    sb.write(
        "wf.yaml",
        r#"name: leaky
channels:
  hook: { kind: webhook, url: "{{ env.OPS_URL }}" }
  cmd: { kind: command, command: "echo \"denied for $HOOK_TOKEN\" >&2; exit 1" }
notify:
  - on: [failure]
    to: [hook, cmd]
tasks:
  a:
    kind: shell
    command: "exit 3"
"#,
    );
    let url = format!("{hook}/hook?token={url_secret}");
    let env = [("OPS_URL", url.as_str()), ("HOOK_TOKEN", env_secret)];
    let out = sb.run_with_env(&["run", "wf.yaml", "--date", "2026-05-11"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    // Both deliveries failed and said why, masked.
    assert!(out.stderr.contains("HTTP 500"), "{out:?}");
    assert!(out.stderr.contains("denied for ***"), "{out:?}");
    // Another process (no secrets in its environment) writes a recovery point too.
    let gc = sb.run_with_env(&["notify", "deliver"], &env);
    let show = sb.run_with_env(&["show", &id, "--json"], &env);
    for secret in [url_secret, env_secret] {
        for (what, text) in [
            ("run", &out.stderr),
            ("deliver", &gc.stderr),
            ("show", &show.stdout),
        ] {
            assert!(!text.contains(secret), "{what} printed {secret}: {text}");
        }
        assert!(
            !contains(&all_bytes(&sb.state_dir()), secret),
            "{secret} is stored in the state dir"
        );
    }
}

/// Peak resident memory of `pid` so far (VmHWM), in MiB.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[test]
fn a_query_that_would_exhaust_memory_fails_in_its_worker_and_the_daemon_goes_on() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "tick",
        "name: tick\nschedule: \"rate(1 second)\"\ncatchup: none\ntasks:\n  a:\n    kind: shell\n    command: \"echo tick >> ../ticks\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let (code, answer) = raw(
        &addr,
        &format!("GET /catalog?sql=SELECT%20length(repeat('x',%201500000000))%20AS%20n HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        answer.contains("needed more than the 1024 MiB a query may use"),
        "{code}: {answer}"
    );
    // The same through the local API that `orchestrator query` uses beside a daemon.
    let out = sb.run(&["query", "SELECT length(repeat('x', 1500000000)) AS n"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("ORCHESTRATOR_QUERY_MEMORY_MB"),
        "{out:?}"
    );
    let out = sb.run(&["query", "SELECT 41 + 1 AS n", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("42"), "{out:?}");
    let peak = peak_rss_mb(d.pid());
    assert!(peak < 1024, "the daemon itself peaked at {peak} MiB");
    // It keeps scheduling: the next runs succeed.
    let before = sb.count("ticks");
    wait_until("a run after the query", || sb.count("ticks") > before);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_query_over_its_time_is_stopped() {
    let sb = Sandbox::new();
    workflow(&sb, "w", "name: w\ntasks:\n  a:\n    kind: noop\n");
    let mut c = sb.command(&["daemon", "--workflows", "wf"]);
    c.env("ORCHESTRATOR_QUERY_TIMEOUT", "2");
    let d = Daemon::spawn(c);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let sql =
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";
    let body = serde_json::json!({ "sql": sql }).to_string();
    let (code, answer) = raw(
        &addr,
        &format!(
            "POST /api/query HTTP/1.1\r\nHost: {addr}\r\nX-Orchestrator-CSRF: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(
        answer.contains("ran over 2s and was stopped"),
        "{code}: {answer}"
    );
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn the_api_refuses_bad_dates_and_unknown_fields_like_the_cli() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "w",
        "name: w\non:\n  files:\n    path: ../in\n    pattern: \"*.csv\"\ntasks:\n  a:\n    kind: shell\n    command: \"mkdir -p out/dt={{ run.date | shell_quote }}\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let post = |body: &str| {
        raw(
            &addr,
            &format!(
                "POST /api/trigger HTTP/1.1\r\nHost: {addr}\r\nX-Orchestrator-CSRF: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    for date in ["2026-13-45", "../../x", "2026-01-01; touch X"] {
        let (code, answer) = post(&serde_json::json!({"workflow": "w", "date": date}).to_string());
        assert!((400..500).contains(&code), "{date}: {answer}");
        assert!(
            answer.contains("is not a date written YYYY-MM-DD"),
            "{date}: {answer}"
        );
    }
    let (code, answer) = post(r#"{"workflow": "w", "parmas": {"a": "b"}}"#);
    assert!((400..500).contains(&code), "{answer}");
    assert!(answer.contains("parmas"), "{answer}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains("started ("),
        "a refused request started a run: {log}"
    );
    assert!(!sb.path("x").exists() && !sb.path("X").exists());
}

#[test]
fn a_task_left_running_by_a_killed_daemon_is_stopped_before_its_run_resumes() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "slow",
        "name: slow\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: shell\n    command: \"touch ../started; sleep 5; echo x >> ../side_effect\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    let out = sb.run(&["trigger", "slow"]);
    assert_eq!(out.code, 0, "{out:?}");
    sb.wait_for_file("started");
    d.kill9();
    std::fs::remove_file(sb.path("started")).unwrap();
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("a: succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    // The orphan started before the resumed attempt: had it lived, its line would be
    // there by now.
    assert_eq!(sb.read("side_effect"), "x\n", "{log}");
    assert!(log.contains("killed process"), "{log}");
}

/// Opens a live stream and reads its status line; the connection stays open.
fn open_stream(addr: &str) -> (u16, std::net::TcpStream) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "GET /events/runs HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, conn)
}

#[test]
fn live_streams_are_capped_and_a_closed_one_frees_its_place() {
    let sb = Sandbox::new();
    workflow(&sb, "w", "name: w\ntasks:\n  a:\n    kind: noop\n");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let mut open = Vec::new();
    for _ in 0..256 {
        let (code, conn) = open_stream(&addr);
        assert_eq!(code, 200);
        open.push(conn);
    }
    let (code, _) = open_stream(&addr);
    assert_eq!(code, 503, "the 257th stream");
    // Closing streams gives their places back (the server notices at its next write:
    // a change, or the 15 s keep-alive; a commit makes one now).
    for conn in open.drain(..10) {
        conn.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let out = sb.run(&["run", "wf/w.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut code = 0;
    wait_until("a place for a new stream", || {
        code = open_stream(&addr).0;
        code == 200
    });
    drop(open);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

/// The query workers `parent` has running.
fn query_workers(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && contains(&cmdline, "query-worker") {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_query_whose_client_goes_away_is_stopped() {
    let sb = Sandbox::new();
    workflow(&sb, "w", "name: w\ntasks:\n  a:\n    kind: noop\n");
    // A timeout far past the wait below: only the client going away can stop it.
    let mut c = sb.command(&["daemon", "--workflows", "wf"]);
    c.env("ORCHESTRATOR_QUERY_TIMEOUT", "600");
    let d = Daemon::spawn(c);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "GET /catalog?sql=WITH%20RECURSIVE%20r(n)%20AS%20(SELECT%201%20UNION%20ALL%20SELECT%20n%20%2B%201%20FROM%20r)%20SELECT%20count(*)%20FROM%20r HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    wait_until("the query's worker to start", || {
        !query_workers(d.pid()).is_empty()
    });
    drop(conn);
    wait_until("the worker to be stopped with its request", || {
        query_workers(d.pid()).is_empty()
    });
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn api_posts_take_json_whatever_the_content_type_and_answer_json() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "w",
        "name: w\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let post = |path: &str, content_type: Option<&str>, body: &str| {
        let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
        raw(
            &addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Orchestrator-CSRF: 1\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    // curl -d sends a form content type; no header at all is common too.
    for ct in [None, Some("application/x-www-form-urlencoded")] {
        let (code, answer) = post("/api/query", ct, r#"{"sql": "SELECT 1 AS n"}"#);
        assert_eq!(code, 200, "{ct:?}: {answer}");
        assert!(answer.contains(r#""n":1"#), "{answer}");
    }
    // A bad body is refused in JSON, never ignored (a misspelt `from` would rerun it all).
    let (code, answer) = post("/api/runs/x/rerun", None, r#"{"form": "a"}"#);
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer.contains(r#"{"error":"#) && answer.contains("form"),
        "{answer}"
    );
    let (code, answer) = post("/api/trigger", None, "not json");
    assert_eq!(code, 422, "{answer}");
    assert!(answer.contains(r#"{"error":"#), "{answer}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn the_local_api_checks_its_token_before_reading_a_body() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "w",
        "name: w\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state_dir().join("api.json")).unwrap())
            .unwrap();
    let addr = info["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let token = std::fs::read_to_string(sb.state_dir().join("api.token")).unwrap();
    let post = |auth: &str, body: &str| {
        raw(
            &addr,
            &format!(
                "POST /api/trigger HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    // No token, or a wrong one: 401, even for a body that is not JSON.
    assert_eq!(post("", "not json").0, 401);
    assert_eq!(post("Authorization: Bearer wrong\r\n", "not json").0, 401);
    let wrong_same_length = "x".repeat(token.trim().len());
    assert_eq!(
        post(
            &format!("Authorization: Bearer {wrong_same_length}\r\n"),
            "{}"
        )
        .0,
        401
    );
    // The scheme in any case; then the body is read (and this one is refused for itself).
    let (code, answer) = post(
        &format!("Authorization: bearer {}\r\n", token.trim()),
        "not json",
    );
    assert!((400..500).contains(&code) && code != 401, "{answer}");
    let (code, answer) = post(
        &format!("Authorization: Bearer {}\r\n", token.trim()),
        r#"{"workflow": "w"}"#,
    );
    assert_eq!(code, 200, "{answer}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_daemons_refusals_answer_by_kind_busy_409_unknown_404_invalid_400() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "slow",
        "name: slow\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: shell\n    command: \"touch ../started; while [ ! -f ../go ]; do sleep 0.02; done\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let addr = ui_addr(&sb);
    let post = |path: &str, body: &str| {
        raw(
            &addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Orchestrator-CSRF: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert_eq!(post("/api/trigger", r#"{"workflow": "slow"}"#).0, 200);
    sb.wait_for_file("started");
    let (code, answer) = post("/api/trigger", r#"{"workflow": "slow"}"#);
    assert_eq!(code, 409, "{answer}");
    assert!(answer.contains("in progress"), "{answer}");
    assert_eq!(post("/api/trigger", r#"{"workflow": "nope"}"#).0, 404);
    assert_eq!(post("/api/runs/nope/cancel", "").0, 404);
    assert_eq!(post("/api/runs/nope/rerun", "").0, 404);
    assert_eq!(
        post(
            "/api/trigger",
            r#"{"workflow": "slow", "date": "2026-02-30"}"#
        )
        .0,
        400
    );
    sb.write("go", "");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}
