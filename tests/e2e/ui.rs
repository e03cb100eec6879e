//! The web UI in a real headless Chromium (see `browser.rs`), against a daemon started by
//! each test: the run page of a failed audit and its rerun, the workflows page, the stock
//! dashboards, auth, and masking. Screenshots land in `{target}/ui-screenshots/`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::browser::Browser;
use crate::common::{wait_until, Sandbox};
use crate::daemon::Daemon;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The reference pipeline as a daemon would find it: `wf/daily.yaml`, the bundled sample
/// at `data/sample/alpha_vantage` (edited by `edit`), and `dashboards/`.
fn daily_setup(sb: &Sandbox, edit: impl Fn(&str, &mut Value)) {
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    std::fs::copy(repo("workflows/daily.yaml"), sb.path("wf/daily.yaml")).unwrap();
    std::fs::create_dir_all(sb.path("dashboards")).unwrap();
    std::fs::copy(
        repo("dashboards/stocks.yaml"),
        sb.path("dashboards/stocks.yaml"),
    )
    .unwrap();
    crate::daily::sample_copy(sb, "data/sample/alpha_vantage", edit);
}

/// The web UI's URL, from the daemon's `api.json`.
pub(crate) fn ui_url(sb: &Sandbox) -> String {
    let mut url = String::new();
    wait_until("the daemon's api.json with the UI's address", || {
        let Ok(text) = std::fs::read_to_string(sb.state_dir().join("api.json")) else {
            return false;
        };
        let info: Value = serde_json::from_str(&text).unwrap_or_default();
        match info["ui"].as_str() {
            Some(u) => {
                url = u.to_string();
                true
            }
            None => false,
        }
    });
    url
}

/// `orchestrator ui --workflows DIR` over the sandbox's state: the process and its URL.
fn ui_over(sb: &Sandbox, workflows: &str) -> (std::process::Child, String) {
    let child = sb
        .command(&["ui", "--workflows", workflows])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, ui_url(sb))
}

fn show(sb: &Sandbox, id: &str) -> Value {
    sb.show(id)
}

fn wait_run_ends(sb: &Sandbox, id: &str) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("run {id} to end"), || {
        last = show(sb, id);
        last["status"] != "running"
    });
    last
}

#[test]
fn a_failed_audit_shows_its_rule_and_samples_and_a_rerun_click_completes_it_live() {
    let sb = Sandbox::new();
    // One bad bar (high < low) on the run's date.
    daily_setup(&sb, |symbol, doc| {
        if symbol == "NVDA" {
            doc["Time Series (Daily)"]["2026-05-11"]["2. high"] = Value::from("200.0000");
        }
    });
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let url = ui_url(&sb);
    let out = sb.run(&["trigger", "daily", "--date", "2026-05-11"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let run = wait_run_ends(&sb, &id);
    assert_eq!(run["status"], "failed", "{run}");

    let b = Browser::start();
    b.goto(&format!("{url}/runs/{id}"));
    let qc = b.find(r#"section[data-task="quality_check"]"#);
    assert_eq!(b.attr(&qc, "data-status").as_deref(), Some("failed"));
    let publish = b.find(r#"section[data-task="publish"]"#);
    assert_eq!(b.attr(&publish, "data-status").as_deref(), Some("skipped"));
    let why = b.text(&b.find(r#"section[data-task="publish"] .reason"#));
    assert_eq!(why, "Skipped: upstream failed: quality_check");
    // The DAG colours them too.
    let node = b.find(r#"svg.dag g[data-task="publish"]"#);
    assert_eq!(b.attr(&node, "data-status").as_deref(), Some("skipped"));
    // The whole graph is in view at this window's width (1,300 px): the last stage is
    // not cut off at the right edge.
    let fits = b.execute(
        r#"const n = document.querySelector('svg.dag g[data-task="signal_alerts"]').getBoundingClientRect();
           return n.right <= document.documentElement.clientWidth && n.width > 0;"#,
    );
    assert_eq!(fits, Value::Bool(true), "signal_alerts is cut off");
    // The failing rule, with its sample row.
    let rule = b.find(r#"section[data-task="quality_check"] table.checks tr.failed"#);
    let text = b.text(&rule);
    assert!(
        text.contains("SELECT * FROM stock_daily_tmp WHERE high < low") && text.contains("FAILED"),
        "{text}"
    );
    assert!(
        text.contains("NVDA") && text.contains("2026-05-11") && text.contains("200"),
        "the sample row: {text}"
    );
    assert_eq!(
        b.find_all(r#"section[data-task="quality_check"] table.checks tr.passed"#)
            .len(),
        12,
        "every other rule passed"
    );
    b.screenshot("run-failed-audit");

    // Fix the landed bar, then "rerun from here" on create_temp; the page must update
    // by itself: a marker set in this page survives (no reload).
    let raw = sb.path(".orchestrator/landing/bars/dt=2026-05-11/NVDA.csv");
    let bad = std::fs::read_to_string(&raw).unwrap();
    let fixed = bad.replace(
        "NVDA,2026-05-11,214.04,200.0,",
        "NVDA,2026-05-11,214.04,222.3,",
    );
    assert_ne!(fixed, bad, "the bad row is in the landed file");
    std::fs::write(&raw, fixed).unwrap();
    b.execute("window.__noReload = 42;");
    let button = b.find(r#"section[data-task="create_temp"] button[data-post]"#);
    b.click(&button);
    let question = b.accept_confirm();
    assert!(
        question.contains(&format!("orchestrator rerun {id} --from create_temp")),
        "the confirmation shows the CLI equivalent: {question}"
    );
    wait_until("the page to show the run succeeded", || {
        b.text(&b.find("#run-status")) == "succeeded"
    });
    assert_eq!(b.execute("return window.__noReload;"), Value::from(42));
    let publish = b.find(r#"section[data-task="publish"]"#);
    assert_eq!(
        b.attr(&publish, "data-status").as_deref(),
        Some("succeeded")
    );
    b.screenshot("run-rerun-succeeded");
    assert_eq!(show(&sb, &id)["status"], "succeeded");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

/// The next fire time of `cron(0 22 ? * MON-FRI *)` in UTC after `now`, computed here.
fn next_weekday_22(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone, Weekday};
    let mut day = now.date_naive();
    loop {
        let at = chrono::Utc.from_utc_datetime(&day.and_hms_opt(22, 0, 0).unwrap());
        if at > now && !matches!(at.weekday(), Weekday::Sat | Weekday::Sun) {
            return at;
        }
        day = day.succ_opt().unwrap();
    }
}

#[test]
fn the_workflows_page_shows_the_next_weekday_fire_and_an_invalid_edit_with_its_line() {
    let sb = Sandbox::new();
    daily_setup(&sb, |_, _| {});
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let url = ui_url(&sb);
    let b = Browser::start();
    let before = chrono::Utc::now();
    b.goto(&format!("{url}/workflows"));
    let after = chrono::Utc::now();
    let schedule = b.text(&b.find(r#"section[data-workflow="daily"] .schedule"#));
    assert_eq!(
        schedule,
        "cron(0 22 ? * MON-FRI *) — at 22:00, Monday through Friday (UTC)"
    );
    let first = b.text(&b.find(r#"section[data-workflow="daily"] table.next td.utc"#));
    // The page was rendered between `before` and `after`: either instant's answer.
    let expected: Vec<String> = [before, after]
        .iter()
        .map(|t| {
            next_weekday_22(*t)
                .format("%a %Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .collect();
    assert!(expected.contains(&first), "{first} not in {expected:?}");
    assert_eq!(
        b.find_all(r#"section[data-workflow="daily"] table.next td.utc"#)
            .len(),
        5
    );
    b.screenshot("workflows");

    // An invalid edit: the previous version stays scheduled; the page shows the error.
    let path = sb.path("wf/daily.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().count() + 1;
    text.push_str("bogus_field: 1\n");
    std::fs::write(&path, text).unwrap();
    d.wait_log("is invalid; the previous version stays scheduled", 1);
    b.goto(&format!("{url}/workflows"));
    let invalid = b.find("section.invalid");
    let diag = b.text(&b.find("section.invalid pre.diagnostics"));
    assert!(
        diag.contains(&format!("daily.yaml:{line}:1")) && diag.contains("bogus_field"),
        "{diag}"
    );
    assert!(b
        .text(&invalid)
        .contains("The previous version stays scheduled"));
    // Still scheduled.
    assert!(!b.find_all(r#"section[data-workflow="daily"]"#).is_empty());
    b.screenshot("workflows-invalid-edit");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn the_stocks_dashboard_draws_one_series_per_symbol_from_stock_daily() {
    let sb = Sandbox::new();
    daily_setup(&sb, |_, _| {});
    let out = sb.run(&[
        "backfill",
        "wf/daily.yaml",
        "--from",
        "2026-04-27",
        "--to",
        "2026-05-11",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let url = ui_url(&sb);
    let b = Browser::start();
    b.goto(&format!("{url}/dashboards"));
    b.click(&b.find(r#"a[href="/dashboards/stocks"]"#));
    wait_until("the stocks dashboard", || {
        b.url().ends_with("/dashboards/stocks")
    });
    assert!(
        b.find_all("section.panel pre.error").is_empty(),
        "no panel failed: {}",
        b.source()
    );
    for (title, series) in [
        ("Average price, last 90 days", 10),
        ("Daily return (close - open)", 10),
        ("Garman–Klass volatility", 10),
        ("NVDA: close, SMA-5 and SMA-20, with BUY/SELL crossovers", 3),
    ] {
        let css = format!(r#"section.panel[data-panel="{title}"] svg.chart g.series"#);
        assert_eq!(b.find_all(&css).len(), series, "{title}");
        let lines = format!(r#"section.panel[data-panel="{title}"] svg.chart polyline"#);
        assert_eq!(
            b.find_all(&lines).len(),
            series,
            "{title}: a line per series"
        );
    }
    let symbols: Vec<String> = b
        .find_all(r#"section.panel[data-panel="Average price, last 90 days"] g.series"#)
        .iter()
        .filter_map(|e| b.attr(e, "data-series"))
        .collect();
    assert_eq!(
        symbols,
        ["AMD", "ASML", "AVGO", "INTC", "MRVL", "MU", "NVDA", "QCOM", "TSM", "TXN"]
    );
    // The anomalies table is a table.
    b.find(r#"section.panel[data-panel="Anomalies (moves over 5 %)"] table.result"#);
    b.screenshot("dashboard-stocks");

    // The catalog page of the published table lists its versions (one per trading day
    // published) with the commands to read or restore each.
    b.goto(&format!("{url}/catalog/tables/stock_daily"));
    assert_eq!(b.find_all("table.history tbody tr").len(), 11);
    let page = b.source();
    for command in [
        "orchestrator tables restore stock_daily --version 9",
        "orchestrator tables restore stock_daily --before-run ",
        "SELECT * FROM as_of('stock_daily', 10) LIMIT 50",
    ] {
        assert!(page.contains(command), "{command}: {page}");
    }
    b.click(&b.find(r#"table.history a[href*="as_of"]"#));
    wait_until("the as_of query's answer", || {
        b.url().contains("/catalog?sql=") && !b.find_all("table.result tbody tr").is_empty()
    });
    assert_eq!(b.find_all("table.result tbody tr").len(), 50);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

/// A plain HTTP request to the UI; the status code and body.
fn request(url: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, raw)
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_reachable_address_needs_auth_and_a_viewer_cannot_rerun() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    let out = sb.run(&["daemon", "--workflows", "wf", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "error: refusing to serve the web UI on 0.0.0.0:0 without --auth: anyone who can reach it could trigger"
        ),
        "{out:?}"
    );
    assert!(!sb.state_dir().join("api.json").exists(), "nothing started");

    sb.write(
        "auth.yaml",
        "tokens:\n  - { name: wallboard, role: viewer, token: viewer-token-0123456789 }\n  - { name: oncall, role: operator, token: operator-token-0123456789 }\n",
    );
    // A file of secrets readable by others is refused.
    let out = sb.run(&["daemon", "--workflows", "wf", "--auth", "auth.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("chmod 600"), "{out:?}");
    write_private(
        &sb.path("auth.yaml"),
        &std::fs::read_to_string(sb.path("auth.yaml")).unwrap(),
    );
    sb.write(
        "wf/once.yaml",
        "name: once\ntasks:\n  t:\n    kind: shell\n    command: test -f go\n",
    );
    let out = sb.run(&["run", "wf/once.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();

    let d = Daemon::start(&sb, &["--auth", "auth.yaml"]);
    d.wait_log("daemon ready", 1);
    let url = ui_url(&sb);
    let (code, _) = request(&url, "GET", "/api/runs", None);
    assert_eq!(code, 401);
    let (code, body) = request(&url, "GET", "/api/runs", Some("viewer-token-0123456789"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&id), "{body}");
    let rerun = format!("/api/runs/{id}/rerun");
    let (code, body) = request(&url, "POST", &rerun, Some("viewer-token-0123456789"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("`wallboard` is a viewer"), "{body}");
    let (code, body) = request(&url, "POST", &rerun, Some("operator-token-0123456789"));
    assert_eq!(code, 200, "an operator may: {body}");
    // Prometheus's scrape needs a token too, and a viewer's is enough.
    let (code, _) = request(&url, "GET", "/metrics", None);
    assert_eq!(code, 401);
    let (code, body) = request(&url, "GET", "/metrics", Some("viewer-token-0123456789"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("orchestrator_build_info{version="), "{body}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_secret_in_task_output_shows_masked_on_the_run_page() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    sb.write(
        "wf/leaky.yaml",
        "name: leaky\nschedule: \"0 0 1 1 *\"\nchannels:\n  log: { kind: file, path: events.jsonl }\nnotify:\n  - { on: success, to: log }\ntasks:\n  talk:\n    kind: shell\n    command: echo \"the token is $DEPLOY_TOKEN\"\n",
    );
    let secret = "s3cr3t-deploy-value-9f2c";
    let mut c = sb.command(&["daemon", "--workflows", "wf"]);
    c.env("DEPLOY_TOKEN", secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let url = ui_url(&sb);
    let out = sb.run(&["trigger", "leaky"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let run = wait_run_ends(&sb, &id);
    assert_eq!(run["status"], "succeeded", "{run}");
    let b = Browser::start();
    b.goto(&format!("{url}/runs/{id}"));
    // The attempt's output is in a closed <details>: read it as the DOM holds it.
    let output = b.execute(
        r#"return document.querySelector('section[data-task="talk"] pre.output').textContent;"#,
    );
    assert_eq!(output.as_str().map(str::trim), Some("the token is ***"));
    assert!(!b.source().contains(secret));
    b.screenshot("run-masked-secret");
    // The Alerts page lists the run's notification and its delivery.
    b.goto(&format!("{url}/alerts"));
    // The daemon delivers within about a second; until the row reads `delivered`
    // (it may first show `pending`), load the page again.
    wait_until("the success notification on the Alerts page", || {
        let rows = b.find_all(&format!(r#"tr[data-notification="{id}/success/1/log"]"#));
        if rows
            .first()
            .is_some_and(|r| b.text(r).contains("delivered"))
        {
            return true;
        }
        b.goto(&format!("{url}/alerts"));
        false
    });
    b.screenshot("alerts");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn ui_without_a_daemon_fires_nothing_but_triggers_and_shows_runs() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    // Due every second, and one with no schedule at all: `ui` knows both, fires neither.
    sb.write(
        "wf/often.yaml",
        "name: often\nschedule: \"* * * * * *\"\ntasks:\n  t:\n    kind: shell\n    command: echo ran >> often.log\n",
    );
    sb.write(
        "wf/manual.yaml",
        "name: manual\ntasks:\n  t:\n    kind: shell\n    command: echo by hand\n",
    );
    let mut child = sb
        .command(&["ui", "--workflows", "wf"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = ui_url(&sb);
    let (code, body) = request(&url, "GET", "/api/workflows", None);
    assert_eq!(code, 200, "{body}");
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let names: Vec<&str> = json["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["manual", "often"]);
    for w in json["workflows"].as_array().unwrap() {
        assert_eq!(w["next"], serde_json::json!([]), "nothing fires: {w}");
    }
    let out = sb.run(&["trigger", "manual"]);
    assert_eq!(out.code, 0, "{out:?}");
    let run = wait_run_ends(&sb, &out.run_id());
    assert_eq!(run["status"], "succeeded", "{run}");
    let runs = sb.run(&["runs", "--json"]);
    let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "only the triggered run: {runs}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_running_tasks_output_follows_live_on_its_page() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    // Prints a line, then waits for the file `go` before printing the next.
    sb.write(
        "wf/slow.yaml",
        "name: slow\nschedule: \"0 0 1 1 *\"\ntasks:\n  work:\n    kind: shell\n    command: echo step one; while [ ! -f go ]; do sleep 0.05; done; echo step two\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let url = ui_url(&sb);
    let out = sb.run(&["trigger", "slow"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let b = Browser::start();
    b.goto(&format!("{url}/runs/{id}"));
    let tail = || {
        b.execute(
            r#"const p = document.querySelector('section[data-task="work"] pre.output'); return p ? p.textContent : '';"#,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    };
    wait_until("the first line while the task runs", || {
        tail().contains("step one")
    });
    assert_eq!(show(&sb, &id)["status"], "running");
    assert!(!tail().contains("step two"));
    b.screenshot("run-live-output");
    // Shell tasks run in their workflow file's directory.
    sb.write("wf/go", "");
    wait_until(
        "the second line, and the run's end, without a reload",
        || tail().contains("step two") && b.text(&b.find("#run-status")) == "succeeded",
    );
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_running_plugins_progress_and_then_its_outputs_show_on_its_page() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf/plugins")).unwrap();
    // A plugin (in `plugins/` beside the workflow) that reports 40 %, waits for the file
    // `go` (in the workflow's directory), then sets an output.
    let plugin = sb.write(
        "wf/plugins/copy",
        r#"#!/bin/sh
read -r req
case "$req" in *'"describe"'*)
  echo '{"type":"describe","protocol":1,"kind":"copy","fields":{"type":"object","properties":{}}}'; exit 0;;
esac
echo '{"type":"progress","fraction":0.4,"message":"copying part 2 of 5"}'
while [ ! -f go ]; do sleep 0.05; done
echo '{"type":"output","key":"parts","value":5}'
echo '{"type":"result","status":"succeeded"}'
"#,
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.write(
        "wf/copy.yaml",
        "name: copy\nschedule: \"0 0 1 1 *\"\ntasks:\n  work:\n    kind: copy\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let url = ui_url(&sb);
    let out = sb.run(&["trigger", "copy"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let b = Browser::start();
    b.goto(&format!("{url}/runs/{id}"));
    let text = |css: &str| {
        b.execute(&format!(
            r#"const e = document.querySelector('section[data-task="work"] {css}'); return e ? e.textContent : '';"#
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    };
    wait_until("the plugin's progress while it runs", || {
        text("p.progress") == " 40% copying part 2 of 5"
    });
    sb.write("wf/go", "");
    wait_until("its output, and the run's end, without a reload", || {
        text("table.outputs").contains("parts") && b.text(&b.find("#run-status")) == "succeeded"
    });
    assert_eq!(text("p.progress"), "", "no progress once it has ended");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn the_runs_pages_walk_the_history_with_cursors_both_ways() {
    let sb = Sandbox::new();
    sb.write(
        "n.yaml",
        "name: n\nmax_active_runs: 8\ntasks:\n  a: { kind: noop }\n",
    );
    // 120 runs, one per date: the runs page lists 50 a page.
    let out = sb.run(&[
        "backfill",
        "n.yaml",
        "--from",
        "2026-01-01",
        "--to",
        "2026-04-30",
        "--max-active-runs",
        "8",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let (mut child, url) = ui_over(&sb, ".");
    let ids = |page: &str| -> Vec<String> {
        let mut found = Vec::new();
        for part in page.split("href=\"/runs/").skip(1) {
            let id: String = part.chars().take_while(|c| *c != '"').collect();
            if !found.contains(&id) {
                found.push(id);
            }
        }
        found
    };
    let link = |page: &str, label: &str| -> Option<String> {
        let at = page.find(label)?;
        let start = page[..at].rfind("href=\"/runs?")? + "href=\"/runs".len();
        let end = start + page[start..].find('"')?;
        Some(page[start..end].replace("&amp;", "&"))
    };
    let all: Vec<String> =
        serde_json::from_str::<Value>(&sb.run(&["runs", "--json", "--limit", "200"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(all.len(), 120);
    // Older, page by page: each page is the next 50 of the history, newest first.
    let mut pages = Vec::new();
    let (code, mut page) = request(&url, "GET", "/runs", None);
    assert_eq!(code, 200, "{page}");
    loop {
        pages.push(page.clone());
        let Some(next) = link(&page, "older →") else {
            break;
        };
        assert!(next.contains("before="), "{next}");
        let (code, body) = request(&url, "GET", &format!("/runs{next}"), None);
        assert_eq!(code, 200, "{body}");
        page = body;
    }
    let walked: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(walked, all);
    assert_eq!(pages.len(), 3);
    assert!(link(&pages[0], "← newer").is_none());
    // And back: the last page's "newer" link gives the middle page again.
    let prev = link(&pages[2], "← newer").expect("a newer link on the last page");
    assert!(prev.contains("after="), "{prev}");
    let (_, back) = request(&url, "GET", &format!("/runs{prev}"), None);
    assert_eq!(ids(&back), ids(&pages[1]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_thousand_task_run_page_draws_what_is_visible_and_loads_the_rest_on_demand() {
    let sb = Sandbox::new();
    // 1,000 noops: ten roots, each task after one of the previous tens (bench-ui's shape).
    let tasks: String = (0..1000)
        .map(|i| {
            let after = if i >= 10 {
                format!("    after: [t{:04}]\n", i / 10 - 1)
            } else {
                String::new()
            };
            format!("  t{i:04}:\n    kind: noop\n{after}")
        })
        .collect();
    sb.write(
        "wide.yaml",
        &format!("name: wide\nmax_parallel: 64\ntasks:\n{tasks}"),
    );
    let out = sb.run(&["run", "wide.yaml", "-q"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let (mut child, url) = ui_over(&sb, ".");

    // Without scripts: the whole drawings and every section are one link away.
    let (code, whole) = request(&url, "GET", &format!("/runs/{id}?drawing=dag"), None);
    assert_eq!(code, 200, "{whole}");
    assert_eq!(whole.matches("<g class=\"node").count(), 1000);
    let (code, page) = request(&url, "GET", &format!("/runs/{id}?tasks=all"), None);
    assert_eq!(code, 200);
    assert_eq!(page.matches("<section class=\"task\"").count(), 1000);
    let (code, page) = request(&url, "GET", &format!("/runs/{id}"), None);
    assert_eq!(code, 200);
    assert_eq!(page.matches("<section class=\"task\"").count(), 20);
    assert!(page.contains(&format!("href=\"/runs/{id}?drawing=gantt\"")));
    let (code, _) = request(
        &url,
        "GET",
        &format!("/runs/{id}?fragment=tasks&from=0&until=nope"),
        None,
    );
    assert_eq!(code, 404);

    let b = Browser::start();
    b.goto(&format!("{url}/runs/{id}"));
    let count = |css: &str| {
        b.execute(&format!(
            "return document.querySelectorAll('{css}').length;"
        ))
        .as_u64()
        .unwrap()
    };
    // The graph and the timeline hold a screenful of their shapes, not all of them.
    let nodes = count("svg.dag g.node");
    assert!(nodes > 0 && nodes < 500, "{nodes} nodes drawn");
    let rows = count("svg.gantt rect.bar");
    assert!(rows > 0 && rows < 500, "{rows} timeline rows drawn");
    assert_eq!(count("#task-t0999"), 0);
    assert_eq!(count("section.task"), 20);
    // Drawn by the page's script as the server draws it whole.
    let drawn = b.execute(
        "const g = document.querySelector('svg.dag g.node[data-task=t0005]'); return g.closest('a').getAttribute('href') + ' ' + g.querySelector('title').textContent + ' ' + g.querySelector('rect').getAttribute('x') + ',' + g.querySelector('rect').getAttribute('y');",
    );
    assert_eq!(drawn, "#task-t0005 t0005: succeeded 10,240");
    assert!(
        whole.contains(r##"<a href="#task-t0005"><g class="node succeeded" data-task="t0005" data-status="succeeded"><title>t0005: succeeded</title><rect x="10" y="240""##),
        "{}",
        &whole[..2000]
    );
    b.screenshot("run-1000-tasks");

    // Scrolling the graph's box to its end draws its last tasks.
    b.execute("document.querySelector('[data-virtual=dag]').scrollTop = 1e9;");
    wait_until("the graph's last node drawn", || {
        count("svg.dag g.node[data-task=t0999]") == 1
    });
    assert!(count("svg.dag g.node") < 500);
    b.execute("document.querySelector('[data-virtual=gantt]').scrollTop = 1e9;");
    wait_until("the timeline's last row drawn", || {
        b.execute("return [...document.querySelectorAll('svg.gantt text')].some(t => t.textContent === 't0999');")
            == Value::Bool(true)
    });

    // A click on a task not loaded yet loads the sections up to it and shows it.
    b.click(&b.find("svg.dag g.node[data-task=t0999]"));
    wait_until("task t0999's section", || count("#task-t0999") == 1);
    assert!(b.url().ends_with("#task-t0999"), "{}", b.url());
    assert_eq!(count("section.task"), 1000);
    let sections: Vec<String> = serde_json::from_value(b.execute(
        "return [...document.querySelectorAll('section.task')].map(s => s.dataset.task);",
    ))
    .unwrap();
    let expected: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
    assert_eq!(sections, expected, "every section once, in order");

    // Scrolling down the task list loads the rest, a chunk at a time.
    b.goto(&format!("{url}/runs/{id}"));
    wait_until("every section, by scrolling", || {
        b.execute(
            "const m = document.querySelector('.more-tasks'); if (m) m.scrollIntoView(); return document.querySelectorAll('section.task').length;",
        )
        .as_u64()
            == Some(1000)
    });
    assert_eq!(count(".more-tasks"), 0);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn pages_left_behind_close_their_live_streams_so_the_seventh_page_loads() {
    let sb = Sandbox::new();
    sb.write("n.yaml", "name: n\ntasks:\n  a: { kind: noop }\n");
    let out = sb.run(&["run", "n.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (mut child, url) = ui_over(&sb, ".");
    let b = Browser::start();
    // A browser opens at most six connections to one host over HTTP/1.1. Each live page
    // holds one for its event stream; a page left open would keep the next one waiting
    // (a minute, before its stream was closed on leaving). Far below that minute:
    b.page_load_timeout(std::time::Duration::from_secs(20));
    for i in 0..10 {
        b.goto(&format!("{url}/runs"));
        wait_until(&format!("load {i}'s live stream"), || {
            b.execute("return document.body.dataset.live || '';") == "connected"
        });
        b.goto("about:blank");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
