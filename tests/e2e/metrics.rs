//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, which `scripts/test`
//! installs; `ORCHESTRATOR_PROMETHEUS` names another binary) with the shipped
//! `deploy/prometheus/` config and alert rules: counts after a failing and a succeeding
//! run, and the failed-run alert firing for the failing workflow only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::browser::{free_port, http};
use crate::common::{wait_until, Sandbox};
use crate::daemon::Daemon;
use crate::ui::ui_url;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A Prometheus server on 127.0.0.1, its data in a temp dir; stopped on drop.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// Starts Prometheus with `config` (rules beside it) and waits until it is ready.
    fn start(config: &Path, data: &Path) -> Prometheus {
        let bin = std::env::var("ORCHESTRATOR_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` ({e}): run scripts/test, which installs Debian's prometheus, or set ORCHESTRATOR_PROMETHEUS")
            });
        let p = Prometheus { child, addr };
        wait_until("Prometheus to be ready", || {
            std::net::TcpStream::connect(&p.addr).is_ok()
                && http(&p.addr, "GET", "/api/v1/status/buildinfo", None).is_ok()
        });
        p
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        match http(&self.addr, "GET", &path, None) {
            Ok(v) if v["status"] == "success" => {
                v["data"]["result"].as_array().cloned().unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// The value of the one series `promql` selects, if there is exactly one.
    fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    fn alerts(&self) -> Vec<Value> {
        http(&self.addr, "GET", "/api/v1/alerts", None)
            .ok()
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `text` with `from` replaced by `to`, which must be there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the shipped config has no `{from}`");
    text.replace(from, to)
}

const SCHEDULE: &str = "schedule: \"cron(0 22 ? * MON-FRI *)\"\n";

#[test]
fn prometheus_scrapes_the_daemon_counts_its_runs_and_fires_the_failed_run_rule() {
    let sb = Sandbox::new();
    for dir in ["wf", "prometheus"] {
        std::fs::create_dir_all(sb.path(dir)).unwrap();
    }
    sb.write(
        "wf/good.yaml",
        &format!("name: good\n{SCHEDULE}tasks:\n  a:\n    kind: noop\n  b:\n    kind: noop\n    after: [a]\n"),
    );
    sb.write(
        "wf/bad.yaml",
        &format!("name: bad\n{SCHEDULE}tasks:\n  load:\n    kind: shell\n    command: exit 3\n    retries: 1\n    retry_delay: 0s\n"),
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let ui = ui_url(&sb);
    let target = ui.trim_start_matches("http://").to_string();

    // The shipped config and rules, pointed at this daemon and scraping every second.
    let config = std::fs::read_to_string(repo("deploy/prometheus/prometheus.yml")).unwrap();
    let config = replaced(&config, "\"127.0.0.1:8080\"", &format!("\"{target}\""));
    let config = replaced(&config, "scrape_interval: 15s", "scrape_interval: 1s");
    let config = replaced(
        &config,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
    );
    sb.write("prometheus/prometheus.yml", &config);
    std::fs::copy(
        repo("deploy/prometheus/orchestrator.rules.yml"),
        sb.path("prometheus/orchestrator.rules.yml"),
    )
    .unwrap();
    let prom = Prometheus::start(
        &sb.path("prometheus/prometheus.yml"),
        &sb.path("prometheus/data"),
    );

    // Both workflows' counters exist at 0 before any run, so a first failure is an
    // increase the rule can see.
    let failed_bad =
        r#"orchestrator_runs_finished_total{job="orchestrator",workflow="bad",status="failed"}"#;
    wait_until(
        "Prometheus to scrape bad's failed-runs counter at 0",
        || prom.value(failed_bad) == Some(0.0),
    );
    assert_eq!(prom.value("up{job=\"orchestrator\"}"), Some(1.0));

    let out = sb.run(&["trigger", "bad"]);
    assert_eq!(out.code, 0, "{out:?}");
    let bad_run = out.run_id();
    let out = sb.run(&["trigger", "good"]);
    assert_eq!(out.code, 0, "{out:?}");
    let good_run = out.run_id();
    for id in [&bad_run, &good_run] {
        wait_until(&format!("run {id} to end"), || {
            sb.show(id)["status"] != "running"
        });
    }
    assert_eq!(sb.show(&bad_run)["status"], "failed");
    assert_eq!(sb.show(&good_run)["status"], "succeeded");

    wait_until("Prometheus to scrape both runs' ends", || {
        prom.value(failed_bad) == Some(1.0)
            && prom.value(r#"orchestrator_runs_finished_total{workflow="good",status="succeeded"}"#)
                == Some(1.0)
    });
    assert_eq!(
        prom.value(r#"orchestrator_runs_finished_total{workflow="good",status="failed"}"#),
        Some(0.0)
    );
    assert_eq!(
        prom.value(r#"orchestrator_runs_finished_total{workflow="bad",status="succeeded"}"#),
        Some(0.0)
    );
    // Two attempts of `load` (one retry), three task attempts in all that succeeded or not.
    assert_eq!(
        prom.value(r#"orchestrator_task_duration_seconds_count{workflow="bad",task="load",status="failed"}"#),
        Some(2.0)
    );
    assert_eq!(
        prom.value(r#"orchestrator_task_retries_total{workflow="bad",task="load"}"#),
        Some(1.0)
    );
    assert_eq!(
        prom.value(
            r#"sum(orchestrator_task_duration_seconds_count{workflow="good",status="succeeded"})"#
        ),
        Some(2.0)
    );
    assert_eq!(prom.value("sum(orchestrator_runs_in_progress)"), Some(0.0));
    assert!(
        prom.value(r#"orchestrator_workflow_last_success_timestamp_seconds{workflow="good"}"#)
            .is_some_and(|t| t > 1.7e9),
        "good's last success"
    );
    assert!(
        prom.value(r#"orchestrator_workflow_last_success_timestamp_seconds{workflow="bad"}"#)
            .is_none(),
        "bad never succeeded"
    );
    // Weekdays at 22:00: the longest gap is the weekend's, three days.
    assert_eq!(
        prom.value(r#"orchestrator_workflow_schedule_period_seconds{workflow="good"}"#),
        Some(259_200.0)
    );
    assert!(prom
        .value("orchestrator_state_disk_free_bytes")
        .is_some_and(|b| b > 0.0));
    assert!(prom
        .value("orchestrator_state_store_size_bytes")
        .is_some_and(|b| b > 0.0));
    assert_eq!(prom.value("orchestrator_build_info"), Some(1.0));

    // The shipped rule fires for `bad`, and for nothing else.
    let mut firing = Vec::new();
    wait_until("OrchestratorRunFailed to fire", || {
        firing = prom
            .alerts()
            .into_iter()
            .filter(|a| {
                a["labels"]["alertname"] == "OrchestratorRunFailed" && a["state"] == "firing"
            })
            .collect();
        !firing.is_empty()
    });
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["labels"]["workflow"], "bad", "{firing:?}");
    assert_eq!(firing[0]["labels"]["severity"], "page", "{firing:?}");
    assert_eq!(
        firing[0]["annotations"]["summary"], "A run of bad failed",
        "{firing:?}"
    );

    drop(prom);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}
