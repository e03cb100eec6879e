use crate::common::{status, task, Sandbox};

const BROKEN: &str = r#"
name: wap
tasks:
  extract:
    kind: shell
    command: "echo run >> ran_extract"
  transform:
    kind: shell
    after: [extract]
    command: "echo run >> ran_transform; exit 1"
  publish:
    kind: shell
    after: [transform]
    command: "echo run >> ran_publish"
  report:
    kind: shell
    after: [extract]
    command: "echo run >> ran_report"
"#;

fn attempts_of(show: &serde_json::Value, id: &str) -> Vec<String> {
    task(show, id)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}:{}", a["attempt"], a["status"].as_str().unwrap()))
        .collect()
}

#[test]
fn rerun_resumes_only_the_failed_task_and_its_downstream() {
    let sb = Sandbox::new();
    sb.write("wap.yaml", BROKEN);
    let out = sb.run(&["run", "wap.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    assert!(
        out.stdout
            .contains(&format!("after fixing the cause: orchestrator rerun {id}")),
        "{out:?}"
    );
    let show = sb.show(&id);
    assert_eq!(status(&show, "transform"), "failed");
    assert_eq!(status(&show, "publish"), "skipped");

    // The user fixes the workflow file; rerun uses its current definition.
    sb.write("wap.yaml", &BROKEN.replace("; exit 1", ""));
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("extract: started"), "{out:?}");
    assert_eq!(sb.count("ran_extract"), 1, "upstream ran once");
    assert_eq!(sb.count("ran_report"), 1, "a succeeded sibling is kept");
    assert_eq!(sb.count("ran_transform"), 2);
    assert_eq!(sb.count("ran_publish"), 1);

    let show = sb.show(&id);
    assert_eq!(show["status"], "succeeded");
    assert_eq!(show["reruns"], 1);
    assert_eq!(attempts_of(&show, "transform"), ["1:failed", "2:succeeded"]);
    assert_eq!(attempts_of(&show, "extract"), ["1:succeeded"]);
    assert_eq!(task(&show, "transform")["attempts"], 2);

    // --from re-executes the named subtree even though it succeeded.
    let out = sb.run(&["rerun", &id, "--from", "transform"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.count("ran_extract"), 1);
    assert_eq!(sb.count("ran_report"), 1);
    assert_eq!(sb.count("ran_transform"), 3);
    assert_eq!(sb.count("ran_publish"), 2);
    let show = sb.show(&id);
    assert_eq!(
        attempts_of(&show, "transform"),
        ["1:failed", "2:succeeded", "3:succeeded"]
    );
    assert_eq!(
        attempts_of(&show, "publish"),
        ["1:succeeded", "2:succeeded"]
    );

    // Only one run exists: reruns add attempts to it.
    let runs: serde_json::Value =
        serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

#[test]
fn rerun_refuses_what_it_cannot_do() {
    let sb = Sandbox::new();
    sb.write("wap.yaml", BROKEN);
    let id = sb.run(&["run", "wap.yaml"]).run_id();

    let out = sb.run(&["rerun", &id, "--from", "transfrom"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("has no task `transfrom`; did you mean `transform`?"),
        "{out:?}"
    );

    // The fixed file dropped a task the run still needs.
    let without_publish = BROKEN.replace("; exit 1", "");
    let without_publish = &without_publish[..without_publish.find("  publish:").unwrap()];
    sb.write("wap.yaml", without_publish);
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("needs task `publish` (skipped)"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("no longer has a task `publish`"),
        "{out:?}"
    );
    assert_eq!(sb.count("ran_transform"), 1, "nothing ran");

    let out = sb.run(&["rerun", "nope"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no run `nope`"), "{out:?}");

    sb.write("wap.yaml", &BROKEN.replace("; exit 1", ""));
    assert_eq!(sb.run(&["rerun", &id]).code, 0);
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("already succeeded; nothing to rerun"),
        "{out:?}"
    );
}

#[test]
fn rerun_keeps_the_runs_params_and_logical_date() {
    let sb = Sandbox::new();
    sb.write(
        "p.yaml",
        r#"
name: p
params: { who: default }
tasks:
  say:
    kind: shell
    command: "echo {{ params.who }} {{ run.date }} {{ run.id }} >> said; test -f ok"
"#,
    );
    let out = sb.run(&[
        "run",
        "p.yaml",
        "--param",
        "who=override",
        "--date",
        "2025-04-09",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    sb.write("ok", "");
    assert_eq!(sb.run(&["rerun", &id]).code, 0);
    let line = format!("override 2025-04-09 {id}");
    assert_eq!(
        sb.read("said").lines().collect::<Vec<_>>(),
        [line.as_str(), line.as_str()]
    );
}

#[test]
fn a_succeeded_run_with_a_skipped_handler_is_not_rerun_and_refusals_print_no_resume() {
    let sb = Sandbox::new();
    sb.write(
        "h.yaml",
        "name: h\ntasks:\n  a:\n    kind: noop\n  on_failure:\n    kind: shell\n    after: [a]\n    trigger: any_failed\n    command: \"echo handled >> handled\"\n",
    );
    let out = sb.run(&["run", "h.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    assert_eq!(
        crate::common::status(&sb.show(&id), "on_failure"),
        "skipped"
    );
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("already succeeded; nothing to rerun"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("resumed"), "{out:?}");
    assert!(!sb.path("handled").exists());
    let out = sb.run(&["rerun", &id, "--from", "nosuch"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!out.stdout.contains("resumed"), "{out:?}");
}

#[test]
fn a_reruns_duration_is_its_own_and_the_total_is_labelled() {
    let sb = Sandbox::new();
    sb.write(
        "slow.yaml",
        "name: slow\ntasks:\n  a:\n    kind: shell\n    command: \"test -f ok || { sleep 2; exit 1; }\"\n",
    );
    let out = sb.run(&["run", "slow.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    sb.write("ok", "");
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("run {id} succeeded in ")))
        .unwrap_or_else(|| panic!("{out:?}"));
    let took = line
        .trim_start_matches(&format!("run {id} succeeded in "))
        .split_whitespace()
        .next()
        .unwrap_or_default();
    // The rerun itself took milliseconds; the 2 s of the first execution are labelled.
    assert!(took.ends_with("ms"), "{line}");
    assert!(line.contains("since the first start"), "{line}");
    let show = sb.show(&id);
    assert!(
        show["execution_started_at"].as_str() > show["started_at"].as_str(),
        "{show:#}"
    );
}
