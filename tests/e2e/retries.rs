use crate::common::{alive, read_pid, status, task, wait_until, Sandbox};

#[test]
fn a_task_that_fails_twice_then_succeeds_has_three_attempts() {
    let sb = Sandbox::new();
    sb.write(
        "flaky.yaml",
        r#"
name: flaky
defaults: { retry_delay: 10ms, retry_backoff: 2.0 }
tasks:
  flaky:
    kind: shell
    retries: 3
    command: |
      n=$(cat counter 2>/dev/null || echo 0)
      n=$((n + 1))
      echo $n > counter
      echo "attempt $n (env says $ORCHESTRATOR_ATTEMPT)"
      [ "$n" -ge 3 ]
  after_flaky:
    kind: noop
    after: [flaky]
"#,
    );
    let out = sb.run(&["run", "flaky.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("flaky: failed (attempt 1): command exited with status 1"),
        "{out:?}"
    );
    assert!(out.stdout.contains("retrying in"), "{out:?}");
    assert_eq!(sb.read("counter").trim(), "3");

    let show = sb.show(&out.run_id());
    let flaky = task(&show, "flaky");
    assert_eq!(flaky["status"], "succeeded");
    assert_eq!(flaky["attempts"], 3);
    let history: Vec<(u64, &str)> = flaky["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(history, [(1, "failed"), (2, "failed"), (3, "succeeded")]);
    assert!(flaky["history"][2]["output_tail"]
        .as_str()
        .unwrap()
        .contains("attempt 3 (env says 3)"));
    assert_eq!(status(&show, "after_flaky"), "succeeded");
}

#[test]
fn retries_run_out() {
    let sb = Sandbox::new();
    sb.write(
        "never.yaml",
        "name: never\ntasks:\n  never:\n    kind: shell\n    retries: 2\n    retry_delay: 1ms\n    command: 'echo x >> tries; exit 7'\n",
    );
    let out = sb.run(&["run", "never.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(sb.count("tries"), 3);
    let show = sb.show(&out.run_id());
    assert_eq!(status(&show, "never"), "failed");
    assert_eq!(task(&show, "never")["attempts"], 3);
}

#[test]
fn a_task_over_its_timeout_is_killed_with_its_children() {
    let sb = Sandbox::new();
    sb.write(
        "slow.yaml",
        r#"
name: slow
tasks:
  slow:
    kind: shell
    timeout: 300ms
    command: "sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait"
"#,
    );
    let out = sb.run(&["run", "slow.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(status(&show, "slow"), "failed");
    let error = task(&show, "slow")["error"].as_str().unwrap();
    assert!(
        error.starts_with("timed out after 300ms; the task and its child processes were killed"),
        "{error}"
    );
    for pidfile in ["child.pid", "shell.pid"] {
        let pid = read_pid(&sb.path(pidfile));
        wait_until(&format!("{pidfile} ({pid}) to be killed"), || !alive(pid));
    }
}
