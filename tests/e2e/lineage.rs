//! OpenLineage events of `workflows/daily.yaml`: every event valid against the vendored
//! schemas (`tests/openlineage/validate.py`, Python `jsonschema`), the lineage graph
//! ingest → stock_raw → stock_daily_tmp → stock_daily, the audit's assertions (a failing
//! rule is `success: false`), and exactly one delivery per event across a kill -9.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::common::{Hook, Sandbox};
use crate::daily::{landing, sample_copy};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `wf/daily.yaml`: the reference pipeline with `lineage` first, edited by `edit`.
fn daily_with(sb: &Sandbox, lineage: &str, edit: impl Fn(String) -> String) -> Vec<String> {
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    let text = std::fs::read_to_string(repo("workflows/daily.yaml")).unwrap();
    sb.write(
        "wf/daily.yaml",
        &edit(format!("lineage: {lineage}\n{text}")),
    );
    vec![
        "run".into(),
        "wf/daily.yaml".into(),
        "--param".into(),
        landing(sb),
        "--param".into(),
        sample_copy(sb, "sample", |_, _| {}),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Validates `events` with the vendored schemas; panics with every problem.
fn validate(sb: &Sandbox, events: &[Value]) {
    let file = sb.path("events.jsonl");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let python = std::env::var("ORCHESTRATOR_PYTHON")
        .expect("ORCHESTRATOR_PYTHON: run the tests with scripts/test, which installs jsonschema");
    let out = std::process::Command::new(&python)
        .arg(repo("tests/openlineage/validate.py"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "invalid OpenLineage events:\n{text}");
    assert!(
        text.contains(&format!("{} events valid", events.len())),
        "{text}"
    );
}

/// The events of `task`'s job, by event type.
fn of<'a>(events: &'a [Value], task: &str) -> BTreeMap<String, &'a Value> {
    events
        .iter()
        .filter(|e| e["job"]["name"] == format!("daily.{task}").as_str())
        .map(|e| (e["eventType"].as_str().unwrap().to_string(), e))
        .collect()
}

fn names(datasets: &Value) -> Vec<String> {
    datasets
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["namespace"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_daily_run_posts_valid_events_whose_graph_is_ingest_raw_temp_published() {
    let hook = Hook::start(|_| 200);
    let sb = Sandbox::new();
    let run = daily_with(&sb, "{ kind: http, url: \"{{ env.LINEAGE_URL }}\" }", |t| t);
    let out = sb.run_with_env(&args(&run), &[("LINEAGE_URL", hook.url.as_str())]);
    assert_eq!(out.code, 0, "{out:?}");
    let run_id = out.run_id();
    let show = sb.show(&run_id);

    let posted = hook.posted();
    for p in &posted {
        assert_eq!(p.path, "/hook/api/v1/lineage", "Marquez's endpoint");
    }
    let events: Vec<Value> = posted.iter().map(|p| p.json()).collect();
    // Seven tasks, each a START and a COMPLETE, each delivered once.
    assert_eq!(events.len(), 14, "{events:#?}");
    let ids: std::collections::BTreeSet<&String> = posted
        .iter()
        .map(|p| &p.headers["x-orchestrator-id"])
        .collect();
    assert_eq!(ids.len(), 14, "one id per event");
    validate(&sb, &events);

    // Every task's run has the workflow run as its parent, the same for all.
    let parents: std::collections::BTreeSet<String> = events
        .iter()
        .map(|e| e["run"]["facets"]["parent"]["run"]["runId"].to_string())
        .collect();
    assert_eq!(parents.len(), 1, "{parents:?}");
    assert!(events
        .iter()
        .all(|e| e["run"]["facets"]["parent"]["job"]["name"] == "daily"));

    // The graph, from the COMPLETE events: each stage reads what the one before wrote.
    let complete = |task: &str| of(&events, task)["COMPLETE"].clone();
    let landed = names(&complete("ingest")["outputs"]);
    let warehouse = sb.state_dir().join("warehouse");
    let table = |t: &str| format!("file:{}", warehouse.join(t).display());
    assert_eq!(
        landed,
        [format!("file:{}", sb.path("landing/bars").display())]
    );
    let raw = table("stock_raw");
    let temp = table("stock_daily_tmp");
    for (task, side, want) in [
        ("crawl", "inputs", &landed[0]),
        ("crawl", "outputs", &raw),
        ("create_temp", "inputs", &raw),
        ("create_temp", "outputs", &temp),
        ("quality_check", "inputs", &temp),
        ("publish", "inputs", &temp),
        ("publish", "outputs", &table("stock_daily")),
    ] {
        assert_eq!(
            names(&complete(task)[side]),
            std::slice::from_ref(want),
            "{task} {side}"
        );
    }
    // The publish's output statistics are the rows it inserted.
    let inserted = crate::common::task(&show, "publish")["outputs"]["inserted"].as_u64();
    assert!(inserted.is_some_and(|n| n > 0), "{show}");
    assert_eq!(
        complete("publish")["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"].as_u64(),
        inserted
    );
    // One assertion per rule of the audit, all passed.
    let assertions = complete("quality_check")["inputs"][0]["inputFacets"]["dataQualityAssertions"]
        ["assertions"]
        .as_array()
        .unwrap()
        .clone();
    let rules = crate::common::task(&show, "quality_check")["outputs"]["checks"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(assertions.len(), rules, "{assertions:#?}");
    assert!(
        assertions.iter().all(|a| a["success"] == true),
        "{assertions:#?}"
    );
    assert!(
        assertions
            .iter()
            .any(|a| a["assertion"] == "not_null" && a["column"] == "symbol"),
        "{assertions:#?}"
    );
}

#[test]
fn a_failing_audit_writes_its_failed_rule_as_success_false_to_the_lineage_file() {
    let sb = Sandbox::new();
    let run = daily_with(&sb, "{ kind: file, path: lineage.jsonl }", |t| {
        t.replace(
            "      - row_count: { min: 1 }",
            "      - row_count: { min: 1000 }",
        )
    });
    let out = sb.run(&args(&run));
    assert_eq!(out.code, 1, "{out:?}");
    let text = std::fs::read_to_string(sb.state_dir().join("lineage.jsonl")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    validate(&sb, &events);

    let audit = of(&events, "quality_check");
    assert_eq!(
        audit.keys().collect::<Vec<_>>(),
        ["FAIL", "START"],
        "{audit:#?}"
    );
    let fail = audit["FAIL"];
    let message = fail["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("row_count"), "{message}");
    let assertions = fail["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
        .as_array()
        .unwrap();
    let failed: Vec<&Value> = assertions
        .iter()
        .filter(|a| a["success"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{assertions:#?}");
    assert_eq!(failed[0]["assertion"], "row_count");
    assert!(
        assertions.len() > 1
            && assertions.iter().filter(|a| a["success"] == true).count() == assertions.len() - 1
    );
    // Nothing ran after the failed audit, so nothing was published.
    assert!(of(&events, "publish").is_empty());
}

#[test]
fn a_kill_before_delivery_delivers_each_event_exactly_once_after_restart() {
    let hook = Hook::start(|_| 200);
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    sb.write(
        "wf/w.yaml",
        "name: w\nlineage: { kind: http, url: \"{{ env.LINEAGE_URL }}\" }\ntasks:\n  a:\n    kind: noop\n  b:\n    kind: noop\n    after: [a]\n",
    );
    let pause = sb.path("pause");
    std::fs::create_dir(&pause).unwrap();
    // Paused after the run's end is committed (with its events), before any delivery.
    let mut child = sb
        .command(&["run", "wf/w.yaml"])
        .env("LINEAGE_URL", &hook.url)
        .env(
            "ORCHESTRATOR_TEST_PAUSE",
            format!("notify:before-deliver:{}", pause.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sb.wait_for_file("pause/paused");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(hook.posted().is_empty());

    // The next orchestrator process delivers them; later ones deliver nothing again.
    let env = [("LINEAGE_URL", hook.url.as_str())];
    let out = sb.run_with_env(&["notify", "deliver"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.run_with_env(&["notify", "deliver"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("0 delivered, 0 waiting"), "{out:?}");
    let posted = hook.posted();
    let mut ids: Vec<&str> = posted
        .iter()
        .map(|p| p.headers["x-orchestrator-id"].as_str())
        .collect();
    ids.sort_unstable();
    let types: Vec<String> = posted
        .iter()
        .map(|p| {
            let e = p.json();
            format!(
                "{} {}",
                e["job"]["name"].as_str().unwrap(),
                e["eventType"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(posted.len(), 4, "{types:?}");
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "an event delivered twice: {ids:?}");
    for t in ["w.a START", "w.a COMPLETE", "w.b START", "w.b COMPLETE"] {
        assert_eq!(types.iter().filter(|x| *x == t).count(), 1, "{types:?}");
    }
}

#[test]
fn a_lineage_block_without_its_target_or_with_a_typo_is_refused_at_its_line() {
    let sb = Sandbox::new();
    sb.write(
        "a.yaml",
        "name: a\nlineage: { kind: http }\ntasks:\n  t:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "a.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("a.yaml:2:"), "{out:?}");
    assert!(
        out.stderr.contains("`lineage` of kind http needs `url`"),
        "{out:?}"
    );
    sb.write(
        "b.yaml",
        "name: b\nlineage: { kind: file, pth: l.jsonl }\ntasks:\n  t:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "b.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("b.yaml:2:"), "{out:?}");
    assert!(out.stderr.contains("did you mean `path`"), "{out:?}");
}

#[test]
fn lineage_in_the_shared_channels_file_applies_to_a_workflow_without_its_own() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    sb.write(
        "wf/channels.yaml",
        "lineage: { kind: file, path: shared-lineage.jsonl, namespace: team }\n",
    );
    sb.write(
        "wf/w.yaml",
        "name: w\ntasks:\n  a:\n    kind: noop\n  b:\n    kind: shell\n    command: exit 4\n    after: [a]\n",
    );
    let out = sb.run(&["run", "wf/w.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let text = std::fs::read_to_string(sb.state_dir().join("shared-lineage.jsonl")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    validate(&sb, &events);
    let mut seen: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["job"]["name"].as_str().unwrap(),
                e["eventType"].as_str().unwrap()
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["w.a COMPLETE", "w.a START", "w.b FAIL", "w.b START"]);
    assert!(events.iter().all(|e| e["job"]["namespace"] == "team"));
    let fail = events.iter().find(|e| e["eventType"] == "FAIL").unwrap();
    assert!(
        fail["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .unwrap()
            .contains("exit"),
        "{fail}"
    );
}

#[test]
fn a_cancelled_attempt_ends_its_lineage_run_with_abort() {
    let sb = Sandbox::new();
    let started = sb.path("started");
    sb.write(
        "w.yaml",
        &format!(
            "name: w\nlineage: {{ kind: file, path: lineage.jsonl }}\ntasks:\n  wait:\n    kind: shell\n    command: touch {} && exec sleep 30\n",
            started.display()
        ),
    );
    let mut child = sb
        .command(&["run", "w.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::common::wait_until("the task to start", || started.exists());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a cancelled run exits 1");
    let text = std::fs::read_to_string(sb.state_dir().join("lineage.jsonl")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    validate(&sb, &events);
    let wait: BTreeMap<String, &Value> = events
        .iter()
        .filter(|e| e["job"]["name"] == "w.wait")
        .map(|e| (e["eventType"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(
        wait.keys().collect::<Vec<_>>(),
        ["ABORT", "START"],
        "{events:#?}"
    );
    assert_eq!(wait["ABORT"]["run"]["runId"], wait["START"]["run"]["runId"]);
}
