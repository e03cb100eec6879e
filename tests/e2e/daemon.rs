//! The daemon: scheduled runs, catch-up, overlap policies, graceful stop, crash resume and
//! hot reload. Each test runs the real `orchestrator daemon` and waits on what it logs or
//! what its tasks write, never on fixed sleeps; the state store is inspected after the
//! daemon has stopped (it holds the store while it runs).

use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::common::{wait_until, Sandbox};

/// A running daemon whose stderr is collected as it arrives.
pub(crate) struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub(crate) fn start(sb: &Sandbox, extra: &[&str]) -> Daemon {
        let mut args = vec!["daemon", "--workflows", "wf"];
        args.extend_from_slice(extra);
        Daemon::spawn(sb.command(&args))
    }

    /// Starts `command` (an `orchestrator ... daemon ...` command line), collecting its log.
    pub(crate) fn spawn(mut command: std::process::Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` `n` times.
    pub(crate) fn wait_log(&self, needle: &str, n: usize) {
        wait_until(&format!("{n} × `{needle}` in the daemon's log"), || {
            self.log().matches(needle).count() >= n
        });
        assert!(!self.log().contains("panicked"), "{}", self.log());
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn terminate(self) -> (i32, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.wait_exit()
    }

    /// Waits for the daemon to exit; its status and log.
    pub(crate) fn wait_exit(mut self) -> (i32, String) {
        let mut code = None;
        wait_until("the daemon to exit", || {
            code = self
                .child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1));
            code.is_some()
        });
        // The reader thread ends with the pipe; give the log its last lines.
        wait_until("the daemon's log to close", || {
            self.log().contains("daemon: stopping")
        });
        (code.unwrap_or(-1), self.log())
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails part-way must not leave its daemon running (a failed UI test once
/// left one behind for a quarter of an hour).
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn workflow(sb: &Sandbox, name: &str, yaml: &str) {
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    sb.write(&format!("wf/{name}.yaml"), yaml);
}

fn runs(sb: &Sandbox) -> Vec<Value> {
    let out = sb.run(&["runs", "--json", "--limit", "1000"]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut v = list.as_array().unwrap().clone();
    v.reverse(); // oldest first
    v
}

fn with_status<'a>(runs: &'a [Value], status: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["status"] == status).collect()
}

#[test]
fn scheduled_runs_start_on_time_and_sigterm_stops_cleanly() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "tick",
        "name: tick\nschedule: \"*/2 * * * * *\"\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ run.scheduled_at }} >> ../ticks\"\n",
    );
    let started = chrono::Utc::now();
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon: workflow tick scheduled", 1);
    assert!(d.log().contains("next run"), "{}", d.log());
    wait_until("two scheduled runs", || sb.count("ticks") >= 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let runs = runs(&sb);
    assert!(runs.len() >= 2, "{runs:?}");
    assert!(
        runs.iter().all(|r| r["status"] == "succeeded"),
        "no run left running: {runs:?}"
    );
    // Fire times are whole even seconds, two seconds apart.
    let ticks = sb.read("ticks");
    let times: Vec<&str> = ticks.lines().collect();
    let secs = |t: &str| t[17..19].parse::<u32>().unwrap();
    assert_eq!(secs(times[0]) % 2, 0, "{ticks}");
    // The second run was due within 7 s of the daemon's start.
    let second = chrono::DateTime::parse_from_rfc3339(times[1]).unwrap();
    assert!(
        (second.with_timezone(&chrono::Utc) - started).num_milliseconds() <= 7_000,
        "{ticks}"
    );
    // Two seconds apart (a multiple of two if a very busy machine made the daemon miss one).
    let gap = (secs(times[1]) + 60 - secs(times[0])) % 60;
    assert!(gap > 0 && gap % 2 == 0, "{ticks}");
}

/// Three fire times in the past (Jan 1st of 2020, 2021 and 2022), all missed.
fn catch_up_workflow(sb: &Sandbox, policy: &str) {
    workflow(
        sb,
        "past",
        &format!(
            "name: past\nschedule: \"cron(0 0 1 1 ? 2020-2022)\"\nstart_date: 2019-12-31\n{policy}\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{{{ run.date }}}} >> ../dates\"\n"
        ),
    );
}

#[test]
fn catch_up_all_with_a_limit_starts_the_latest_missed_runs_once() {
    let sb = Sandbox::new();
    catch_up_workflow(&sb, "catchup: all\nmax_catchup: 2");
    let d = Daemon::start(&sb, &[]);
    wait_until("two catch-up runs", || sb.count("dates") >= 2);
    d.wait_log("succeeded", 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("3 fire times missed"), "{log}");
    assert_eq!(sb.read("dates"), "2021-01-01\n2022-01-01\n");
    // A restart starts nothing again.
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(runs(&sb).len(), 2);
}

#[test]
fn catch_up_latest_starts_one_run_and_none_starts_none() {
    let sb = Sandbox::new();
    catch_up_workflow(&sb, "catchup: latest");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(sb.read("dates"), "2022-01-01\n");
    assert_eq!(runs(&sb).len(), 1);

    let sb = Sandbox::new();
    catch_up_workflow(&sb, "catchup: none");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("catchup: None starts 0"), "{log}");
    assert!(runs(&sb).is_empty());
}

/// A workflow due every 2 seconds whose first run waits for the file `go`.
fn slow_workflow(sb: &Sandbox, concurrency: &str) {
    workflow(
        sb,
        "slow",
        &format!(
            "name: slow\nschedule: \"*/2 * * * * *\"\nconcurrency: {concurrency}\ntasks:\n  a:\n    kind: shell\n    command: \"if [ -f ../first ]; then exit 0; fi; touch ../first; while [ ! -f ../go ]; do sleep 0.02; done\"\n"
        ),
    );
}

#[test]
fn forbid_records_the_skipped_run_and_never_overlaps() {
    let sb = Sandbox::new();
    slow_workflow(&sb, "forbid");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("skipped: due at", 1);
    sb.write("go", "");
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let runs = runs(&sb);
    let skipped = with_status(&runs, "skipped");
    assert!(!skipped.is_empty(), "{runs:?}");
    let out = sb.run(&["show", skipped[0]["id"].as_str().unwrap(), "--json"]);
    assert!(out.stdout.contains("concurrency: forbid"), "{out:?}");
    // Executed runs never overlap.
    let done: Vec<&Value> = runs.iter().filter(|r| r["status"] != "skipped").collect();
    for w in done.windows(2) {
        assert!(
            w[0]["ended_at"].as_str() <= w[1]["started_at"].as_str(),
            "{runs:?}"
        );
    }
}

#[test]
fn queue_runs_the_due_run_after_the_slow_one() {
    let sb = Sandbox::new();
    slow_workflow(&sb, "queue");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("queued behind", 1);
    sb.write("go", "");
    d.wait_log("succeeded", 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let runs = runs(&sb);
    let done = with_status(&runs, "succeeded");
    assert!(done.len() >= 2, "{runs:?}");
    // Nothing was skipped for overlapping (a run still queued at the stop is recorded
    // as skipped for that reason: see `queued_runs_are_recorded_at_a_stop_...`).
    assert!(
        with_status(&runs, "skipped").iter().all(|r| r["trigger"]
            .as_str()
            .unwrap_or_default()
            .contains("(queued behind")),
        "{runs:?}"
    );
    assert!(
        done[0]["ended_at"].as_str() <= done[1]["started_at"].as_str(),
        "{runs:?}"
    );
    let second = sb.show(done[1]["id"].as_str().unwrap());
    assert!(
        second["trigger"]
            .as_str()
            .is_some_and(|t| t.contains("queued behind run")),
        "{second:#}"
    );
}

#[test]
fn replace_cancels_the_running_run() {
    let sb = Sandbox::new();
    slow_workflow(&sb, "replace");
    let d = Daemon::start(&sb, &[]);
    d.wait_log("(concurrency: replace); cancelling it", 1);
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let runs = runs(&sb);
    assert_eq!(runs[0]["status"], "cancelled", "{runs:?}");
    assert!(!with_status(&runs, "succeeded").is_empty(), "{runs:?}");
    let old = sb.show(runs[0]["id"].as_str().unwrap());
    assert!(
        old["note"]
            .as_str()
            .is_some_and(|n| n.contains("(concurrency: replace)")),
        "{old:#}"
    );
}

#[test]
fn sigterm_cancels_what_outlasts_the_grace_period() {
    let sb = Sandbox::new();
    slow_workflow(&sb, "forbid");
    let d = Daemon::start(&sb, &["--grace", "1s"]);
    d.wait_log("a: started", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("grace period over"), "{log}");
    let runs = runs(&sb);
    assert!(with_status(&runs, "running").is_empty(), "{runs:?}");
    assert_eq!(runs[0]["status"], "cancelled", "{runs:?}");
}

#[test]
fn a_run_interrupted_by_kill_9_is_resumed_without_redoing_what_succeeded() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "two",
        "name: two\nschedule: \"*/2 * * * * *\"\ntasks:\n  a:\n    kind: shell\n    command: \"echo a >> ../a_ran\"\n  b:\n    kind: shell\n    after: [a]\n    command: \"touch ../b_started; while [ ! -f ../go ]; do sleep 0.02; done\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    // b's process starts only once b is durably `running` (the log line comes earlier).
    sb.wait_for_file("b_started");
    let log = d.log();
    let id = log
        .lines()
        .find_map(|l| {
            l.split("run ")
                .nth(1)
                .filter(|_| l.contains(" started (schedule"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a run id in the log")
        .to_string();
    d.kill9();
    sb.write("go", "");
    let d = Daemon::start(&sb, &[]);
    d.wait_log(&format!("run {id} was interrupted; resuming it"), 1);
    d.wait_log(&format!("run {id} succeeded"), 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let show = sb.show(&id);
    assert_eq!(show["status"], "succeeded", "{show:#}");
    assert_eq!(crate::common::task(&show, "a")["attempts"], 1, "{show:#}");
    assert_eq!(crate::common::task(&show, "b")["attempts"], 2, "{show:#}");
}

#[test]
fn an_edited_schedule_takes_effect_and_an_invalid_edit_keeps_the_old_one() {
    let sb = Sandbox::new();
    let body = "tasks:\n  a:\n    kind: shell\n    command: \"echo x >> ../ticks\"\n";
    workflow(
        &sb,
        "edit",
        &format!("name: edit\nschedule: \"cron(0 0 1 1 ? 2199)\"\n{body}"),
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    workflow(
        &sb,
        "edit",
        &format!("name: edit\nschedule: \"*/2 * * * * *\"\n{body}"),
    );
    d.wait_log("workflow edit reloaded", 1);
    wait_until("a run on the new schedule", || sb.count("ticks") >= 1);
    workflow(
        &sb,
        "edit",
        &format!("name: edit\nschedule: \"*/2 * * * * *\"\nbogus: 1\n{body}"),
    );
    d.wait_log("is invalid; the previous version stays scheduled", 1);
    assert!(
        d.log().contains("edit.yaml:3:1: unknown field `bogus`"),
        "{}",
        d.log()
    );
    let before = sb.count("ticks");
    wait_until("runs to go on", || sb.count("ticks") > before);
    // A new file is scheduled; a deleted one is unscheduled.
    workflow(
        &sb,
        "added",
        "name: added\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    d.wait_log("workflow added scheduled", 1);
    std::fs::remove_file(sb.path("wf/added.yaml")).unwrap();
    d.wait_log("workflow added: file removed; unscheduled", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

fn file_workflow(sb: &Sandbox) {
    std::fs::create_dir_all(sb.path("landing")).unwrap();
    workflow(
        sb,
        "files",
        "name: files\non:\n  files:\n    path: ../landing\n    pattern: \"*.csv\"\n    debounce: 1s\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ trigger.files | length }} {{ trigger.files | join(',') }} >> ../batches\"\n",
    );
}

#[test]
fn files_arriving_together_start_one_run_that_lists_them() {
    let sb = Sandbox::new();
    file_workflow(&sb);
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    for f in ["a.csv", "b.csv", "c.csv", "ignored.txt"] {
        sb.write(&format!("landing/{f}"), "x\n");
    }
    wait_until("a run for the files", || sb.count("batches") >= 1);
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let batches = sb.read("batches");
    assert_eq!(batches.lines().count(), 1, "{batches}");
    let line = batches.lines().next().unwrap();
    assert!(line.starts_with("3 "), "{line}");
    for f in ["a.csv", "b.csv", "c.csv"] {
        assert!(line.contains(f), "{line}");
    }
    assert!(!line.contains("ignored.txt"), "{line}");
}

#[test]
fn files_that_arrived_while_stopped_start_a_run_and_a_restart_starts_no_duplicate() {
    let sb = Sandbox::new();
    file_workflow(&sb);
    sb.write("landing/early.csv", "x\n");
    let d = Daemon::start(&sb, &[]);
    wait_until("a run for the early file", || sb.count("batches") >= 1);
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("1 file(s) arrived while the daemon was stopped"),
        "{log}"
    );

    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(sb.count("batches"), 1, "{}", sb.read("batches"));
    assert_eq!(runs(&sb).len(), 1);
}

#[test]
fn while_the_daemon_runs_other_processes_read_through_its_api() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "tick",
        "name: tick\nschedule: \"*/2 * * * * *\"\ntasks:\n  a:\n    kind: shell\n    command: \"echo tick >> ../ticks\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("succeeded", 1);

    let out = sb.run(&["runs", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["workflow"], "tick");
    let out = sb.run(&["runs"]);
    assert!(
        out.stdout.contains("RUN") && out.stdout.contains(&id),
        "{out:?}"
    );
    let out = sb.run(&["show", &id, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(show["id"], id.as_str());
    let out = sb.run(&["show", "no-such-run"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no run `no-such-run`"), "{out:?}");
    let out = sb.run(&["query", "SELECT 1 AS one", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), r#"[{"one":1}]"#, "{out:?}");
    let out = sb.run(&["query", "SELEC 1"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = sb.run(&["tables", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "[]");

    // Without the token: 401.
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state_dir().join("api.json")).unwrap())
            .unwrap();
    let addr = info["url"].as_str().unwrap().trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read as _, Write as _};
    write!(
        conn,
        "GET /api/runs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sb.state_dir().join("api.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(!sb.state_dir().join("api.json").exists());
    // Once it has stopped, reads are local again.
    let out = sb.run(&["runs", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn trigger_and_cancel_go_through_the_daemon() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "later",
        "name: later\nschedule: \"cron(0 0 1 1 ? 2199)\"\nparams:\n  who: nobody\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ params.who | shell_quote }} {{ run.date }} >> ../said; touch ../started; while [ ! -f ../go ]; do sleep 0.02; done\"\n",
    );
    // Without a daemon there is nobody to ask.
    let out = sb.run(&["trigger", "later"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no daemon serves state dir"), "{out:?}");

    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let out = sb.run(&["trigger", "nope"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("runs no workflow `nope`"), "{out:?}");

    let out = sb.run(&[
        "trigger",
        "later",
        "--param",
        "who=ann",
        "--date",
        "2026-01-02",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("a run id")
        .to_string();
    sb.wait_for_file("started");
    assert_eq!(sb.read("said"), "ann 2026-01-02\n");
    // A second trigger while it runs is refused, and says which run is in the way.
    let out = sb.run(&["trigger", "later"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!("has run {id} in progress")),
        "{out:?}"
    );

    let out = sb.run(&["cancel", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    d.wait_log(&format!("run {id} cancelled"), 1);
    let out = sb.run(&["cancel", &id]);
    assert_eq!(out.code, 2, "{out:?}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let show = sb.show(&id);
    assert_eq!(show["status"], "cancelled", "{show:#}");
    assert_eq!(show["trigger"], "manual (trigger)", "{show:#}");
}

#[test]
fn run_file_while_the_daemon_runs_is_run_by_it_and_reports_the_outcome() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "later",
        "name: later\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    sb.write(
        "ok.yaml",
        "name: adhoc\nparams:\n  who: x\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ params.who | shell_quote }} > said\"\n  b:\n    kind: noop\n    after: [a]\n",
    );
    sb.write(
        "bad.yaml",
        "name: broken\ntasks:\n  a:\n    kind: shell\n    command: \"exit 3\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let out = sb.run(&["run", "ok.yaml", "--param", "who=ann"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("started in the daemon"), "{out:?}");
    // With its duration, as a foreground run prints it.
    for t in ["a", "b"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{t}: succeeded in ")))
            .unwrap_or_else(|| panic!("{out:?}"));
        assert!(line.ends_with("(attempt 1)"), "{line}");
    }
    assert_eq!(sb.read("said"), "ann\n");
    let out = sb.run(&["run", "bad.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("a: failed (attempt 1)"), "{out:?}");
    // An invalid file is still refused before anything is sent.
    let out = sb.run(&["run", "ok.yaml", "--param", "nope=1"]);
    assert_eq!(out.code, 2, "{out:?}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn rerun_while_the_daemon_runs_is_resumed_by_it() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "later",
        "name: later\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    sb.write(
        "flaky.yaml",
        "name: flaky\ntasks:\n  a:\n    kind: shell\n    command: \"echo a >> a_ran\"\n  b:\n    kind: shell\n    after: [a]\n    command: \"test -f ok\"\n",
    );
    // A run that fails at b, before the daemon starts.
    let out = sb.run(&["run", "flaky.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    sb.write("ok", "");
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("resumed in the daemon"), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("b: succeeded in ") && l.ends_with("(attempt 2)")),
        "{out:?}"
    );
    // Nothing left to do: the daemon refuses, as `rerun` does.
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("already succeeded"), "{out:?}");
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    // The resumed run's end is logged once.
    assert_eq!(
        log.matches(&format!("run {id} succeeded")).count(),
        1,
        "{log}"
    );
    assert_eq!(
        sb.count("a_ran"),
        1,
        "a succeeded the first time and was kept"
    );
}

#[test]
fn backfill_while_the_daemon_runs_is_driven_by_it() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "later",
        "name: later\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    sb.write(
        "dates.yaml",
        "name: dates\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ run.date }} >> dates.txt\"\n",
    );
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2026-02-27",
        "--to",
        "2026-03-02",
        "--dry-run",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("2026-02-28  new run"), "{out:?}");
    let out = sb.run(&[
        "backfill",
        "dates.yaml",
        "--from",
        "2026-02-27",
        "--to",
        "2026-03-02",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("succeeded: 4 succeeded"), "{out:?}");
    assert_eq!(
        sb.read("dates.txt"),
        "2026-02-27\n2026-02-28\n2026-03-01\n2026-03-02\n"
    );
    d.wait_log("(backfill bf-", 4);
    // Read through the daemon's API while it holds the store.
    let list = sb.run(&["backfills"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout.contains("2026-02-27..2026-03-02") && list.stdout.contains("4 succeeded"),
        "{list:?}"
    );
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let all = runs(&sb);
    let by_backfill: Vec<&Value> = all
        .iter()
        .filter(|r| {
            r["trigger"]
                .as_str()
                .is_some_and(|t| t.starts_with("backfill bf-"))
        })
        .collect();
    assert_eq!(by_backfill.len(), 4, "{all:?}");
}

#[test]
fn the_daemon_delivers_notifications_and_a_run_it_left_interrupted_is_notified_at_the_next_start() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "told",
        "name: told\nschedule: \"cron(0 0 1 1 ? 2199)\"\nchannels:\n  log: { kind: file, path: told.jsonl }\nnotify:\n  - on: [failure, interrupted]\n    to: log\ntasks:\n  a:\n    kind: shell\n    command: \"touch ../started; if [ -f ../fail ]; then exit 5; fi; while [ ! -f ../go ]; do sleep 0.02; done\"\n",
    );
    let told = sb.state_dir().join("told.jsonl");
    let events = || -> Vec<Value> {
        std::fs::read_to_string(&told)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let d = Daemon::start(&sb, &[]);
    d.wait_log("daemon ready", 1);
    sb.write("fail", "");
    let out = sb.run(&["trigger", "told"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The daemon's deliverer sends it, with no command run.
    wait_until("the failure notification", || events().len() == 1);
    let failed = &events()[0];
    assert_eq!(failed["type"], "run.failure");
    assert_eq!(failed["failed_tasks"][0]["task"], "a");

    // A run going when the daemon dies is told about at the next start.
    std::fs::remove_file(sb.path("fail")).unwrap();
    std::fs::remove_file(sb.path("started")).unwrap();
    let out = sb.run(&["trigger", "told"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.split_whitespace().nth(1).unwrap().to_string();
    sb.wait_for_file("started");
    d.kill9();
    // Its task outlives a SIGKILL of the daemon: let it end.
    sb.write("go", "");
    assert_eq!(events().len(), 1);
    let out = sb.run(&["notify", "deliver"]);
    assert_eq!(out.code, 0, "{out:?}");
    let all = events();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["type"], "run.interrupted");
    assert_eq!(all[1]["run_id"], id.as_str());
    assert_eq!(sb.show(&id)["notifications"][0]["status"], "delivered");
}

#[test]
fn a_day_without_a_successful_run_by_its_deadline_notifies_sla_miss() {
    let sb = Sandbox::new();
    // Due every second, failing each time; the deadline is a few seconds from now (UTC).
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(3);
    let day = deadline.format("%Y-%m-%d").to_string();
    workflow(
        &sb,
        "late",
        &format!(
            "name: late\nschedule: \"* * * * * *\"\ncatchup: none\ndeadline: \"{}\"\nchannels:\n  log: {{ kind: file, path: late.jsonl }}\nnotify:\n  - on: sla_miss\n    to: log\ntasks:\n  a:\n    kind: shell\n    command: exit 1\n",
            deadline.format("%H:%M:%S")
        ),
    );
    let told = sb.state_dir().join("late.jsonl");
    let d = Daemon::start(&sb, &[]);
    wait_until("the deadline notification", || {
        std::fs::read_to_string(&told).is_ok_and(|t| !t.is_empty())
    });
    d.wait_log("no successful run for", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let lines: Vec<Value> = std::fs::read_to_string(&told)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let event = &lines[0];
    assert_eq!(event["type"], "workflow.deadline_miss");
    assert_eq!(event["event"], "sla_miss");
    assert_eq!(event["logical_date"], day.as_str());
    let runs = event["runs"].as_array().unwrap();
    assert!(!runs.is_empty(), "the failed runs are listed: {event}");
    assert!(runs.iter().all(|r| r["status"] != "succeeded"), "{event}");
    // Filed under the day's newest run, so `show` lists it.
    let newest = event["runs"][0]["run_id"].as_str().unwrap();
    let show = sb.show(newest);
    assert_eq!(show["notifications"][0]["event"], "sla_miss", "{show}");
    assert_eq!(show["notifications"][0]["status"], "delivered", "{show}");
}

#[test]
fn queued_runs_are_recorded_at_a_stop_and_caught_up_after_a_crash() {
    let sb = Sandbox::new();
    // Every second, a run that waits for `go`: the fire times behind it queue up.
    workflow(
        &sb,
        "q",
        "name: q\nschedule: \"* * * * * *\"\nconcurrency: queue\ncatchup: all\ntasks:\n  a:\n    kind: shell\n    command: \"while [ ! -f ../go ]; do sleep 0.02; done; echo ran >> ../ran\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui", "--grace", "0s"]);
    d.wait_log("queued behind", 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let queued = log.matches("queued behind").count();
    let runs = runs(&sb);
    let dropped: Vec<&Value> = with_status(&runs, "skipped")
        .into_iter()
        .filter(|r| {
            r["trigger"]
                .as_str()
                .is_some_and(|n| n.contains("(queued behind"))
        })
        .collect();
    assert_eq!(dropped.len(), queued, "{log}\n{runs:?}");
    let note = sb.show(dropped[0]["id"].as_str().unwrap())["note"].clone();
    assert!(
        note.as_str()
            .is_some_and(|n| n.contains("queued, and the daemon stopped before it could start")),
        "{note}"
    );

    // Queue some again, then kill the daemon: the queued fire times are not handled, so
    // the next start catches them up (catchup: all).
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("queued behind", 2);
    let before = d.log();
    d.kill9();
    let first_queued = before
        .lines()
        .find_map(|l| l.split("run due at ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{before}"))
        .to_string();
    sb.write("go", "");
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    let log = d.log();
    let (code, end) = d.terminate();
    assert_eq!(code, 0, "{end}");
    let since = log
        .lines()
        .find_map(|l| l.split("missed since ").nth(1))
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no catch-up after the crash:\n{log}"));
    // Catch-up starts before the first fire time that was only queued (it was never
    // handled), not after the latest one seen.
    assert!(
        since < first_queued.as_str(),
        "since {since}, queued {first_queued}\n{log}"
    );
}

#[test]
fn a_non_utf8_edit_is_logged_and_listed_as_invalid() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "w",
        "name: w\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("workflow w scheduled", 1);
    std::fs::write(sb.path("wf/w.yaml"), b"name: w\n\xff\xfe\n").unwrap();
    d.wait_log(
        "is invalid; the previous version stays scheduled: it is not UTF-8 text",
        1,
    );
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_second_sigterm_cancels_running_tasks_at_once() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "long",
        "name: long\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: shell\n    command: \"touch ../started; sleep 120\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui", "--grace", "300s"]);
    d.wait_log("daemon ready", 1);
    let out = sb.run(&["trigger", "long"]);
    assert_eq!(out.code, 0, "{out:?}");
    sb.wait_for_file("started");
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    d.wait_log("get 300s to finish", 1);
    // Reads keep working while it stops.
    let out = sb.run(&["runs", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (code, log) = d.wait_exit();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("cancelling 1 run(s) now"), "{log}");
    assert_eq!(runs(&sb)[0]["status"], "cancelled");
}

#[test]
fn a_file_deleted_before_its_run_starts_is_not_passed_and_paths_are_normalised() {
    let sb = Sandbox::new();
    file_workflow(&sb);
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    // Created and deleted within the debounce: no run lists it.
    sb.write("landing/brief.csv", "x\n");
    std::fs::remove_file(sb.path("landing/brief.csv")).unwrap();
    sb.write("landing/kept.csv", "x\n");
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let batches = sb.read("batches");
    assert_eq!(batches.lines().count(), 1, "{batches}\n{log}");
    assert!(
        batches.starts_with("1 ") && batches.contains("kept.csv"),
        "{batches}"
    );
    assert!(!batches.contains("brief.csv"), "{batches}");
    // The workflow says `../landing`: the path the run sees has no `..`.
    assert!(!batches.contains("/../"), "{batches}");
}

#[test]
fn a_crashed_run_is_resumed_even_if_a_command_opened_the_store_first() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "slowish",
        "name: slowish\nschedule: \"cron(0 0 1 1 ? 2199)\"\ntasks:\n  a:\n    kind: shell\n    command: \"touch ../started; sleep 2; echo done >> ../done\"\n",
    );
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    let out = sb.run(&["trigger", "slowish"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    sb.wait_for_file("started");
    d.kill9();
    // The natural thing after a crash: look. This open marks the run interrupted.
    assert_eq!(sb.show(&id)["status"], "interrupted");
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log(&format!("run {id} was interrupted; resuming it"), 1);
    d.wait_log("a: succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(sb.show(&id)["status"], "succeeded");
    // Resumed once: the next start leaves it alone.
    let d = Daemon::start(&sb, &["--no-ui"]);
    d.wait_log("daemon ready", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("resuming it"), "{log}");
}

#[test]
fn a_rate_keeps_its_grid_across_restarts() {
    use chrono::Timelike as _;
    let sb = Sandbox::new();
    workflow(
        &sb,
        "tick",
        "name: tick\nschedule: \"rate(2 seconds)\"\ncatchup: none\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ run.scheduled_at }} >> ../ticks\"\n",
    );
    let parity = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t.trim())
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .second()
            % 2
    };
    let d = Daemon::start(&sb, &["--no-ui"]);
    wait_until("two ticks", || sb.count("ticks") >= 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let grid = parity(sb.read("ticks").lines().next().unwrap());
    // Restart on a second of the other parity: a grid re-anchored at the start would
    // fire on that parity from now on.
    wait_until("a second off the grid", || {
        chrono::Utc::now().second() % 2 != grid
    });
    let before = sb.count("ticks");
    let d = Daemon::start(&sb, &["--no-ui"]);
    wait_until("two more ticks", || sb.count("ticks") >= before + 2);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let ticks = sb.read("ticks");
    for t in ticks.lines() {
        assert_eq!(parity(t), grid, "{ticks}");
    }
}

#[test]
fn ui_without_a_daemon_does_not_claim_to_schedule() {
    let sb = Sandbox::new();
    workflow(
        &sb,
        "often",
        "name: often\nschedule: \"* * * * * *\"\ntasks:\n  t:\n    kind: noop\n",
    );
    workflow(
        &sb,
        "manual",
        "name: manual\ntasks:\n  t:\n    kind: noop\n",
    );
    let d = Daemon::spawn(sb.command(&["ui", "--workflows", "wf"]));
    d.wait_log("ready: 2 workflows", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("started only when asked"), "{log}");
    assert!(
        !log.contains("daemon ready")
            && !log.contains("next run")
            && !log.contains("has no future fire time"),
        "{log}"
    );
}
