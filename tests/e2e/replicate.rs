//! `--replicate`: a daemon ships its store to S3 (moto) while it runs the daily pipeline,
//! a data alert and a long task; the host is lost (SIGKILL, state dir wiped); `state
//! recover --from` rebuilds the store on a fresh dir, and a daemon there neither re-fires
//! the tick that had fired nor re-sends the alert, lists every run, and finds the run that
//! was in flight interrupted and resumable.

use std::path::PathBuf;

use chrono::{Datelike, Timelike};
use serde_json::Value;

use crate::common::{kill, read_pid, wait_until, Moto, Sandbox};
use crate::daemon::Daemon;
use crate::ui::ui_url;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const REPLICA: &str = "s3://replica/prod";

fn runs(sb: &Sandbox, env: &[(&str, &str)]) -> Vec<Value> {
    let out = sb.run_with_env(&["runs", "--json", "--limit", "100"], env);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

/// GET /metrics from the daemon's UI listener.
fn metrics(sb: &Sandbox) -> String {
    use std::io::{Read as _, Write as _};
    let url = ui_url(sb);
    let addr = url.trim_start_matches("http://");
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = conn.read_to_string(&mut raw);
    raw
}

#[test]
fn a_host_lost_after_a_tick_is_rebuilt_from_s3_without_a_second_fire_or_alert() {
    let moto = Moto::start();
    moto.bucket("replica");
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    // The daily pipeline, due once, a few seconds from now (seconds-first cron, UTC).
    let due = chrono::Utc::now() + chrono::Duration::seconds(6);
    let cron = format!(
        "{} {} {} {} {} *",
        due.second(),
        due.minute(),
        due.hour(),
        due.day(),
        due.month()
    );
    let daily = std::fs::read_to_string(repo("workflows/daily.yaml")).unwrap();
    let daily = daily.replace(
        "schedule: \"cron(0 22 ? * MON-FRI *)\"",
        &format!("schedule: \"{cron}\"\ncatchup: latest"),
    );
    let daily = daily
        .replace(
            "  landing: ../.orchestrator/landing",
            &format!("  landing: {}", sb.path("landing").display()),
        )
        .replace(
            "  sample: ../data/sample/alpha_vantage",
            &format!("  sample: {}", repo("data/sample/alpha_vantage").display()),
        );
    assert!(daily.contains(&cron) && daily.contains(&sb.path("landing").display().to_string()));
    sb.write("wf/daily.yaml", &daily);
    let alerts = sb.path("alerts.jsonl");
    sb.write(
        "wf/alerting.yaml",
        &format!(
            "name: alerting\nschedule: \"0 0 1 1 *\"\nchannels:\n  log: {{ kind: file, path: {} }}\ntasks:\n  tell:\n    kind: alert\n    sql: SELECT * FROM (VALUES ('NVDA', 'BUY'), ('AMD', 'SELL')) AS t(symbol, signal)\n    message: \"{{symbol}}: {{signal}}\"\n    dedupe_key: \"{{signal}}:{{symbol}}\"\n    to: [log]\n",
            alerts.display()
        ),
    );
    let pid_file = sb.path("slow.pid");
    sb.write(
        "wf/slow.yaml",
        &format!(
            "name: slow\nschedule: \"0 0 1 1 *\"\ntasks:\n  wait:\n    kind: shell\n    command: echo $$ > {} && exec sleep 60\n",
            pid_file.display()
        ),
    );
    let mut env: Vec<(&str, String)> = moto.env();
    env.push(("ORCHESTRATOR_REPLICATE", REPLICA.into()));
    env.push(("ORCHESTRATOR_REPLICATE_INTERVAL", "200ms".into()));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // A short grace: the resumed long task is cancelled at the end.
    let start_daemon = |sb: &Sandbox| {
        let mut cmd = sb.command(&["daemon", "--workflows", "wf", "--grace", "1s"]);
        for (k, v) in &env_ref {
            cmd.env(k, v);
        }
        let d = Daemon::spawn(cmd);
        d.wait_log("daemon ready", 1);
        d
    };
    let d = start_daemon(&sb);
    // The tick fires and its run ends.
    wait_until("the daily tick to fire and its run to end", || {
        let r = runs(&sb, &env_ref);
        r.iter()
            .any(|r| r["workflow"] == "daily" && r["status"] != "running")
    });
    let out = sb.run_with_env(&["trigger", "alerting"], &env_ref);
    assert_eq!(out.code, 0, "{out:?}");
    let alerting_run = out.run_id();
    wait_until("the alert run to end", || {
        sb.show(&alerting_run)["status"] != "running"
    });
    assert_eq!(sb.show(&alerting_run)["status"], "succeeded");
    let sent_before = std::fs::read_to_string(&alerts).unwrap();
    assert_eq!(sent_before.lines().count(), 2, "{sent_before}");
    let out = sb.run_with_env(&["trigger", "slow"], &env_ref);
    assert_eq!(out.code, 0, "{out:?}");
    let slow_run = out.run_id();
    wait_until("the slow task to start", || pid_file.exists());
    // Everything so far is on S3: the replica's lag is zero.
    wait_until("the replica to catch up", || {
        metrics(&sb)
            .lines()
            .any(|l| l.trim() == "orchestrator_replication_lag_seconds 0.0")
    });
    let before = runs(&sb, &env_ref);
    assert_eq!(before.len(), 3, "{before:#?}");

    // The host is lost.
    d.kill9();
    let orphan = read_pid(&pid_file);
    kill(orphan);
    std::fs::remove_dir_all(sb.state_dir()).unwrap();
    assert!(!sb.state_dir().exists());

    let out = sb.run_with_env(&["state", "recover", "--from", REPLICA], &env_ref);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("3 runs"),
        "{out:?}\nreplica: {:#?}",
        moto.keys("replica", "prod/")
    );
    assert!(
        out.stdout.contains(&slow_run),
        "the in-flight run is named: {out:?}"
    );

    // Every run is listed; the one in flight is interrupted and resumable.
    let after = runs(&sb, &env_ref);
    let ids = |r: &[Value]| {
        let mut v: Vec<String> = r
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&after), ids(&before));
    assert_eq!(sb.show(&slow_run)["status"], "interrupted");

    // A daemon on the rebuilt store resumes the interrupted run, as after a kill -9 on
    // the same host; it neither fires the tick again nor sends the alert again.
    let d = start_daemon(&sb);
    d.wait_log(&format!("run {slow_run} was interrupted; resuming it"), 1);
    let out = sb.run_with_env(&["trigger", "alerting"], &env_ref);
    assert_eq!(out.code, 0, "{out:?}");
    let again = out.run_id();
    wait_until("the second alert run to end", || {
        sb.show(&again)["status"] != "running"
    });
    assert_eq!(sb.show(&again)["status"], "succeeded");
    assert_eq!(
        std::fs::read_to_string(&alerts).unwrap(),
        sent_before,
        "no alert sent twice"
    );
    let daily_runs: Vec<Value> = runs(&sb, &env_ref)
        .into_iter()
        .filter(|r| r["workflow"] == "daily")
        .collect();
    assert_eq!(daily_runs.len(), 1, "the tick fired once: {daily_runs:#?}");
    assert!(!d.log().contains("catch-up"), "{}", d.log());
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_directory_replica_recovers_its_newest_generation_and_state_check_reports_the_lag() {
    let sb = Sandbox::new();
    sb.write("a.yaml", "name: a\ntasks:\n  t:\n    kind: noop\n");
    let replica = sb.path("replica");
    let rep = replica.display().to_string();
    let out = sb.run(&["--replicate", &rep, "run", "a.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let first = out.run_id();
    let out = sb.run(&["state", "check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("replicated to {rep} (generation g"))
            && out.stdout.contains("replication lag 0s"),
        "{out:?}"
    );
    // A commit without --replicate leaves a gap: the store forgets the replica, and the
    // next replicated command starts a new generation with a new base.
    let out = sb.run(&["run", "a.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.run(&["state", "check"]);
    assert!(!out.stdout.contains("replicated to"), "{out:?}");
    let out = sb.run(&["--replicate", &rep, "run", "a.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let generations = std::fs::read_dir(&replica).unwrap().count();
    assert_eq!(generations, 2);

    let other = sb.path("other");
    let other = other.display().to_string();
    let out = sb.run(&["--state-dir", &other, "state", "recover", "--from", &rep]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("3 runs"), "{out:?}");
    let out = sb.run(&["--state-dir", &other, "show", &first]);
    assert_eq!(out.code, 0, "{out:?}");
    // Recovering over a store is refused.
    let out = sb.run(&["--state-dir", &other, "state", "recover", "--from", &rep]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("already holds a state store"),
        "{out:?}"
    );
    // A URL that is neither a directory nor S3 is refused before anything runs.
    let out = sb.run(&["--replicate", "https://example.com/x", "run", "a.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("give s3://bucket/prefix or a directory"),
        "{out:?}"
    );
}
