use crate::common::{alive, read_pid, status, task, wait_until, walk, Sandbox};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn a_second_process_is_told_who_holds_the_state_dir() {
    let sb = Sandbox::new();
    sb.write(
        "hold.yaml",
        "name: hold\ntasks:\n  hold:\n    kind: shell\n    command: 'touch holding; while [ ! -f release ]; do sleep 0.01; done'\n",
    );
    let mut child = sb.spawn(&["run", "hold.yaml"]);
    sb.wait_for_file("holding");
    // Reading goes through the holder's local API...
    let runs = sb.run(&["runs", "--json"]);
    assert_eq!(runs.code, 0, "{runs:?}");
    assert!(runs.stdout.contains("\"status\":\"running\""), "{runs:?}");
    // ...but a second run is refused, naming the holder.
    let out = sb.run(&["run", "hold.yaml"]);
    sb.write("release", "");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "is in use by another orchestrator process (pid {}: ",
            child.id()
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("run hold.yaml"),
        "the holder's command line: {out:?}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigterm_cancels_running_tasks_and_their_children() {
    let sb = Sandbox::new();
    sb.write(
        "cancel.yaml",
        r#"
name: cancel
tasks:
  long:
    kind: shell
    command: "sleep 60 & echo $! > child.pid; touch started; wait"
  next:
    kind: noop
    after: [long]
"#,
    );
    let child = sb.spawn(&["run", "cancel.yaml"]);
    sb.wait_for_file("started");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    assert!(stdout.contains("long: cancelled"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGTERM received"));

    let show = sb.show(id);
    assert_eq!(show["status"], "cancelled");
    assert_eq!(status(&show, "long"), "cancelled");
    assert_eq!(status(&show, "next"), "cancelled");
    let pid = read_pid(&sb.path("child.pid"));
    wait_until("the task's child process to be killed", || !alive(pid));
}

#[test]
fn secrets_never_reach_output_or_state() {
    const SECRET: &str = "s3cr3t-value-4711";
    let sb = Sandbox::new();
    sb.write(
        "secret.yaml",
        r#"
name: secret
tasks:
  leak:
    kind: shell
    command: |
      echo "templated {{ env.DEMO_API_KEY }}"
      echo "from env $DEMO_API_KEY" >&2
      echo "failing with $DEMO_API_KEY"
      exit 1
"#,
    );
    let out = sb.run_with_env(&["run", "secret.yaml"], &[("DEMO_API_KEY", SECRET)]);
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.run_with_env(
        &["show", &out.run_id(), "--json"],
        &[("DEMO_API_KEY", SECRET)],
    );
    for text in [&out.stdout, &out.stderr, &show.stdout] {
        assert!(!text.contains(SECRET), "secret leaked:\n{text}");
    }
    assert!(out.stderr.contains("leak | templated ***"), "{out:?}");
    assert!(out.stderr.contains("leak | from env ***"), "{out:?}");
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    // The error quotes the last output line; stdout and stderr are separate pipes, so
    // which of the two last lines that is may vary, but either is masked.
    let error = task(&show, "leak")["error"].as_str().unwrap();
    assert!(
        error.starts_with("command exited with status 1; last output: ") && error.ends_with(" ***"),
        "{error}"
    );
    for entry in walk(&sb.state_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret stored in {}",
            entry.display()
        );
    }
}

#[test]
fn runs_lists_newest_first_and_filters() {
    let sb = Sandbox::new();
    sb.write("a.yaml", "name: a\ntasks:\n  t:\n    kind: noop\n");
    sb.write(
        "b.yaml",
        "name: b\ntasks:\n  t:\n    kind: shell\n    command: exit 1\n",
    );
    let first = sb.run(&["run", "a.yaml", "--date", "2025-01-02"]).run_id();
    let second = sb.run(&["run", "b.yaml", "-q"]);
    assert!(!second.stdout.contains("t: started"), "quiet: {second:?}");
    let second = second.run_id();

    let runs: serde_json::Value =
        serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    let keys: Vec<&String> = runs[1].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "workflow",
            "status",
            "logical_date",
            "started_at",
            "ended_at",
            "trigger"
        ]
    );
    assert_eq!(runs[1]["status"], "succeeded");
    assert_eq!(runs[1]["logical_date"], "2025-01-02");
    assert_eq!(runs[0]["status"], "failed");

    let only_a: serde_json::Value =
        serde_json::from_str(&sb.run(&["runs", "--json", "--workflow", "a"]).stdout).unwrap();
    assert_eq!(only_a.as_array().unwrap().len(), 1);
    let limited: serde_json::Value =
        serde_json::from_str(&sb.run(&["runs", "--json", "--limit", "1"]).stdout).unwrap();
    assert_eq!(limited[0]["id"], second.as_str());

    let table = sb.run(&["runs"]).stdout;
    assert!(table.starts_with("RUN "), "{table}");
    let text = sb.run(&["show", &second]).stdout;
    assert!(text.contains("--- t attempt 1: failed"), "{text}");
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "name: g\ntasks:\n  a:\n    kind: noop\n  b:\n    kind: noop\n    after: [a]\n  c:\n    kind: noop\n    after: [b]\n    trigger: all_done\n",
    );
    let dot = sb.run(&["graph", "g.yaml"]);
    assert_eq!(
        dot.stdout,
        "digraph \"g\" {\n  rankdir=LR;\n  \"a\";\n  \"b\";\n  \"c\" [label=\"c\\n(all_done)\"];\n  \"a\" -> \"b\";\n  \"b\" -> \"c\";\n}\n"
    );
    let mermaid = sb.run(&["graph", "g.yaml", "--format", "mermaid"]);
    assert_eq!(
        mermaid.stdout,
        "flowchart LR\n  a\n  b\n  c[\"c<br/>(all_done)\"]\n  a --> b\n  b --> c\n"
    );
}

#[test]
fn a_succeeded_shell_attempt_records_its_exit_status() {
    let sb = Sandbox::new();
    sb.write(
        "ok.yaml",
        "name: ok\ntasks:\n  a:\n    kind: shell\n    command: \"true\"\n",
    );
    let out = sb.run(&["run", "ok.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    let attempt = &crate::common::task(&show, "a")["history"][0];
    assert_eq!(attempt["exit_code"], 0, "{show:#}");
    assert_eq!(attempt["outputs"]["exit_code"], 0, "{show:#}");
}

#[test]
fn runs_limit_zero_is_said_in_words() {
    let sb = Sandbox::new();
    let out = sb.run(&["runs", "--limit", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("`--limit` must be at least 1"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("18446744073709551615"), "{out:?}");
}

#[test]
fn json_times_are_rfc3339_utc_with_z_everywhere() {
    let sb = Sandbox::new();
    sb.write(
        "w.yaml",
        "name: w\nschedule: \"0 22 * * 1-5\"\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["run", "w.yaml", "--date", "2026-05-11"]);
    assert_eq!(out.code, 0, "{out:?}");
    let bf = sb.run(&[
        "backfill",
        "w.yaml",
        "--from",
        "2026-05-11",
        "--to",
        "2026-05-11",
        "-q",
        "--reprocess",
        "all",
    ]);
    assert_eq!(bf.code, 0, "{bf:?}");
    let z = |v: &serde_json::Value, what: &str| {
        let t = v.as_str().unwrap_or_else(|| panic!("{what}: {v}"));
        assert!(t.ends_with('Z') && !t.contains("+00:00"), "{what}: {t}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{what}: {t}"
        );
    };
    let runs: serde_json::Value =
        serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap();
    z(&runs[0]["started_at"], "runs started_at");
    z(&runs[0]["ended_at"], "runs ended_at");
    let show = sb.show(runs[0]["id"].as_str().unwrap());
    z(&show["started_at"], "show started_at");
    z(
        &task(&show, "a")["history"][0]["started_at"],
        "attempt started_at",
    );
    let bfs: serde_json::Value =
        serde_json::from_str(&sb.run(&["backfills", "--json"]).stdout).unwrap();
    z(&bfs[0]["created_at"], "backfills created_at");
}
