use crate::common::{status, task, Sandbox};

#[test]
fn diamond_with_a_failed_branch_applies_every_trigger_rule() {
    let sb = Sandbox::new();
    sb.write(
        "diamond.yaml",
        r#"
name: diamond
tasks:
  start:
    kind: noop
  good:
    kind: shell
    after: [start]
    command: "true"
  bad:
    kind: shell
    after: [start]
    command: "echo boom >&2; exit 3"
  join_all:
    kind: noop
    after: [good, bad]
  downstream_of_join:
    kind: noop
    after: join_all
  join_any:
    kind: shell
    after: [good, bad]
    trigger: any_success
    command: "touch joined_any"
  cleanup:
    kind: shell
    after: [good, bad]
    trigger: all_done
    command: "touch cleaned"
  on_failure:
    kind: shell
    after: [good, bad]
    trigger: any_failed
    command: "touch alerted"
  on_failure_unused:
    kind: noop
    after: [good]
    trigger: any_failed
"#,
    );
    let out = sb.run(&["run", "diamond.yaml"]);
    assert_eq!(out.code, 1, "a run with a failed task exits 1: {out:?}");
    assert!(
        out.stdout
            .contains("join_all: skipped: upstream failed: bad"),
        "{out:?}"
    );

    let show = sb.show(&out.run_id());
    assert_eq!(show["status"], "failed");
    assert_eq!(status(&show, "good"), "succeeded");
    assert_eq!(status(&show, "bad"), "failed");
    let bad_error = task(&show, "bad")["error"].as_str().unwrap();
    assert!(bad_error.contains("exited with status 3"), "{bad_error}");
    assert!(
        bad_error.contains("boom"),
        "the last output line is in the error: {bad_error}"
    );
    assert_eq!(task(&show, "bad")["history"][0]["exit_code"], 3);

    assert_eq!(status(&show, "join_all"), "skipped");
    assert_eq!(task(&show, "join_all")["error"], "upstream failed: bad");
    assert_eq!(status(&show, "downstream_of_join"), "skipped");
    assert_eq!(
        task(&show, "downstream_of_join")["error"],
        "upstream skipped: join_all"
    );
    assert_eq!(task(&show, "join_all")["attempts"], 0);

    for (id, marker) in [
        ("join_any", "joined_any"),
        ("cleanup", "cleaned"),
        ("on_failure", "alerted"),
    ] {
        assert_eq!(status(&show, id), "succeeded", "{id}");
        assert!(sb.path(marker).exists(), "{id} ran");
    }
    assert_eq!(status(&show, "on_failure_unused"), "skipped");
    assert_eq!(
        task(&show, "on_failure_unused")["error"],
        "no upstream failed (good succeeded)"
    );
}

#[test]
fn independent_tasks_run_concurrently_up_to_max_parallel() {
    // Two tasks that can only finish if both run at once: each waits for the other.
    let sb = Sandbox::new();
    sb.write(
        "pair.yaml",
        r#"
name: pair
max_parallel: 2
tasks:
  left:
    kind: shell
    timeout: 20s
    command: "touch left_up; while [ ! -f right_up ]; do sleep 0.01; done"
  right:
    kind: shell
    timeout: 20s
    command: "touch right_up; while [ ! -f left_up ]; do sleep 0.01; done"
"#,
    );
    let out = sb.run(&["run", "pair.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");

    // With max_parallel 1 the same pair cannot meet, and times out.
    std::fs::remove_file(sb.path("left_up")).unwrap();
    std::fs::remove_file(sb.path("right_up")).unwrap();
    let serial = sb
        .read("pair.yaml")
        .replace("max_parallel: 2", "max_parallel: 1")
        .replace("20s", "300ms");
    sb.write("pair.yaml", &serial);
    let out = sb.run(&["run", "pair.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("timed out after 300ms"), "{out:?}");
}

#[test]
fn a_short_circuit_skips_everything_downstream_and_the_run_succeeds() {
    let sb = Sandbox::new();
    sb.write(
        "sc.yaml",
        "name: sc\ntasks:\n  check:\n    kind: shell\n    short_circuit: true\n    command: \"echo 'no new files today'; exit 99\"\n  load:\n    kind: shell\n    after: [check]\n    command: \"touch loaded\"\n  cleanup:\n    kind: shell\n    after: [load]\n    trigger: all_done\n    command: \"touch cleaned\"\n  other:\n    kind: shell\n    command: \"touch other\"\n",
    );
    let out = sb.run(&["run", "sc.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(show["status"], "succeeded");
    assert_eq!(status(&show, "check"), "succeeded");
    assert_eq!(
        task(&show, "check")["outputs"]["short_circuit"],
        "no new files today"
    );
    for t in ["load", "cleanup"] {
        assert_eq!(status(&show, t), "skipped", "{t}");
        assert_eq!(
            task(&show, t)["error"],
            "short-circuited by `check`: no new files today",
            "{t}"
        );
    }
    assert_eq!(status(&show, "other"), "succeeded", "other branches run on");
    assert!(!sb.path("loaded").exists() && !sb.path("cleaned").exists());
    assert!(sb.path("other").exists());

    // Without `short_circuit: true`, exit status 99 is a failure like any other.
    sb.write(
        "plain.yaml",
        "name: plain\ntasks:\n  check:\n    kind: shell\n    command: \"exit 99\"\n  load:\n    kind: noop\n    after: [check]\n",
    );
    let out = sb.run(&["run", "plain.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(status(&show, "check"), "failed");
}
