use crate::common::{kill, read_pid, status, task, Sandbox};

#[test]
fn a_killed_orchestrator_leaves_an_interrupted_run_that_rerun_completes() {
    let sb = Sandbox::new();
    sb.write(
        "crash.yaml",
        r#"
name: crash
tasks:
  first:
    kind: shell
    command: "echo run >> ran_first"
  long:
    kind: shell
    after: [first]
    command: |
      echo run >> ran_long
      if [ ! -f fast ]; then
        echo $$ > long.pid
        touch long_started
        exec sleep 60
      fi
  last:
    kind: shell
    after: [long]
    command: "echo run >> ran_last"
"#,
    );
    let mut child = sb.spawn(&["run", "crash.yaml"]);
    sb.wait_for_file("long_started");
    child.kill().expect("SIGKILL the orchestrator");
    child.wait().unwrap();
    // The orphaned task process is not the orchestrator's to clean up after SIGKILL.
    kill(read_pid(&sb.path("long.pid")));

    let out = sb.run(&["runs", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "interrupted", "{out:?}");
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert!(
        out.stderr.contains(&format!("run {id} was interrupted")),
        "{out:?}"
    );

    let show = sb.show(&id);
    assert_eq!(status(&show, "first"), "succeeded");
    assert_eq!(status(&show, "long"), "failed");
    assert!(task(&show, "long")["error"]
        .as_str()
        .unwrap()
        .starts_with("interrupted"));
    assert_eq!(status(&show, "last"), "pending");

    sb.write("fast", "");
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.count("ran_first"), 1, "succeeded task not re-executed");
    assert_eq!(sb.count("ran_long"), 2);
    assert_eq!(sb.count("ran_last"), 1);
    let show = sb.show(&id);
    assert_eq!(show["status"], "succeeded");
    assert_eq!(task(&show, "long")["attempts"], 2);
}
