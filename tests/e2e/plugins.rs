//! Task plugins (protocol 1, docs/plugins.md): validation against a plugin's schema, the
//! example plugins (`plugins/http_get` in Python, `files_present` in Rust), results,
//! short-circuit, retries, secrets, cancellation, and plugins that misbehave.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{alive, read_pid, status, task, FakeApi, Sandbox, BIN};

/// The repository's file `rel`.
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A plugin in `sb`'s `plugins/` that describes itself as `kind` (no fields, or
/// `fields` as given) and runs `body` (sh) for a run request.
fn sh_plugin(sb: &Sandbox, kind: &str, fields: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(sb.path("plugins")).unwrap();
    let script = format!(
        r#"#!/bin/sh
read -r req
case "$req" in
  *'"describe"'*)
    echo "described" >> describes
    echo '{{"type":"describe","protocol":1,"kind":"{kind}","fields":{fields},"short_circuit":true}}'
    exit 0;;
esac
{body}
"#
    );
    let path = sb.write(&format!("plugins/{kind}"), &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

const NO_FIELDS: &str = r#"{"type":"object","additionalProperties":false,"properties":{}}"#;

fn error_of(show: &Value, id: &str) -> String {
    task(show, id)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_misspelt_field_fails_validate_at_its_place_with_a_suggestion_from_the_plugins_schema() {
    let sb = Sandbox::new();
    sb.write(
        "w.yaml",
        "name: w\ntasks:\n  fetch:\n    kind: http_get\n    urll: http://127.0.0.1:1/x\n    path: x\n    attempts: many\n",
    );
    let plugins = repo("plugins");
    let out = sb.run(&["validate", "w.yaml", "--plugins", plugins.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    for want in [
        "w.yaml:4:5: in task `fetch` (kind http_get): `url` is missing",
        "w.yaml:5:5",
        "unknown field `urll` in task `fetch` (kind http_get)",
        "did you mean `url`?",
        "w.yaml:7:15",
        "invalid `attempts` in task `fetch` (kind http_get): `many` is not a whole number",
    ] {
        assert!(out.stderr.contains(want), "missing {want:?}: {out:?}");
    }
}

#[test]
fn describe_runs_once_per_plugin_file_and_a_missing_or_broken_plugin_is_a_validation_error() {
    let sb = Sandbox::new();
    sh_plugin(
        &sb,
        "step",
        NO_FIELDS,
        r#"echo '{"type":"result","status":"succeeded"}'"#,
    );
    let mut w = String::from("name: w\ntasks:\n");
    for i in 0..20 {
        w.push_str(&format!("  t{i}:\n    kind: step\n"));
    }
    sb.write("w.yaml", &w);
    let out = sb.run(&["validate", "w.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    // A plugin runs in its own directory: it appended there.
    assert_eq!(
        sb.count("plugins/describes"),
        1,
        "one describe for 20 tasks"
    );

    sb.write("missing.yaml", "name: m\ntasks:\n  a:\n    kind: stepp\n");
    let out = sb.run(&["validate", "missing.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("missing.yaml:4:11: unknown task kind `stepp` in task `a`"),
        "{out:?}"
    );
    let plugins_dir = sb.path("plugins");
    assert!(
        out.stderr.contains(&format!(
            "and no plugin `stepp` in {}",
            plugins_dir.display()
        )),
        "{out:?}"
    );

    sb.write(
        "named.yaml",
        "name: n\nplugins:\n  dbt_build: ./bin/dbt-build\ntasks:\n  a:\n    kind: dbt_build\n",
    );
    let out = sb.run(&["validate", "named.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("named.yaml:3:14: plugin `dbt_build` (used by task `a`)"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("does not exist or is not an executable file"),
        "{out:?}"
    );

    let broken = sh_plugin(&sb, "broken", NO_FIELDS, "");
    std::fs::write(&broken, "#!/bin/sh\necho 'not json'\n").unwrap();
    sb.write("broken.yaml", "name: b\ntasks:\n  a:\n    kind: broken\n");
    let out = sb.run(&["validate", "broken.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("answered `describe` with a line that is not JSON"),
        "{out:?}"
    );
    assert!(out.stderr.contains("run it by hand"), "{out:?}");

    let future = sh_plugin(&sb, "future", NO_FIELDS, "");
    std::fs::write(
        &future,
        "#!/bin/sh\necho '{\"type\":\"describe\",\"protocol\":2,\"kind\":\"future\",\"fields\":{\"type\":\"object\"}}'\n",
    )
    .unwrap();
    sb.write("future.yaml", "name: f\ntasks:\n  a:\n    kind: future\n");
    let out = sb.run(&["validate", "future.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("speaks protocol version 2; this orchestrator speaks version 1"),
        "{out:?}"
    );
}

#[test]
fn http_get_fetches_into_a_file_and_a_downstream_task_reads_its_outputs() {
    const BODY: &str = "date,close\n2026-12-04,101.5\n";
    let api = FakeApi::start(|symbol, _| match symbol {
        "bars" => (200, BODY.to_string()),
        _ => (404, "{}".to_string()),
    });
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(BODY.as_bytes()))
    };
    let sb = Sandbox::new();
    sb.write(
        "fetch.yaml",
        &format!(
            r#"name: fetch
tasks:
  fetch:
    kind: http_get
    url: "{url}?symbol=bars"
    path: landing/bars.csv
    sha256: {digest}
  report:
    kind: shell
    after: [fetch]
    command: echo "{{{{ tasks.fetch.outputs.bytes }}}} {{{{ tasks.fetch.outputs.status }}}}" > report
"#,
            url = api.url
        ),
    );
    let plugins = repo("plugins");
    let out = sb.run(&["run", "fetch.yaml", "--plugins", plugins.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.read("landing/bars.csv"), BODY);
    assert_eq!(sb.read("report").trim(), format!("{} 200", BODY.len()));
    assert!(
        out.stderr
            .contains("fetch | [progress 100%] wrote 28 bytes"),
        "{out:?}"
    );
    let show = sb.show(&out.run_id());
    let outputs = &task(&show, "fetch")["outputs"];
    assert_eq!(outputs["sha256"], digest.as_str());
    assert_eq!(outputs["bytes"], BODY.len());
}

#[test]
fn a_short_circuit_result_skips_downstream_with_its_reason_and_the_run_succeeds() {
    let api = FakeApi::start(|_, _| (404, "{}".to_string()));
    let sb = Sandbox::new();
    sb.write(
        "sensor.yaml",
        &format!(
            r#"name: sensor
tasks:
  wait:
    kind: http_get
    short_circuit: true
    url: "{}?symbol=tomorrow"
    path: x.csv
  load:
    kind: shell
    after: [wait]
    command: touch loaded
"#,
            api.url
        ),
    );
    let plugins = repo("plugins");
    let out = sb.run(&["run", "sensor.yaml", "--plugins", plugins.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(show["status"], "succeeded");
    assert_eq!(status(&show, "load"), "skipped");
    assert!(
        task(&show, "wait")["outputs"]["short_circuit"]
            .as_str()
            .unwrap_or_default()
            .contains("is not there yet (404)"),
        "{show:#}"
    );
    assert!(!sb.path("loaded").exists());
}

#[test]
fn a_retryable_result_is_retried_per_retries_and_a_failed_one_is_not() {
    let sb = Sandbox::new();
    sh_plugin(
        &sb,
        "flaky",
        NO_FIELDS,
        r#"echo x >> flaky.count
echo '{"type":"result","status":"retryable","message":"warehouse busy"}'"#,
    );
    sh_plugin(
        &sb,
        "refuses",
        NO_FIELDS,
        r#"echo x >> refuses.count
echo '{"type":"result","status":"failed","message":"table t has no column c"}'"#,
    );
    sb.write(
        "w.yaml",
        "name: w\ndefaults: { retry_delay: 10ms }\ntasks:\n  a:\n    kind: flaky\n    retries: 2\n  b:\n    kind: refuses\n    retries: 2\n",
    );
    let out = sb.run(&["run", "w.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(sb.count("flaky.count"), 3);
    assert_eq!(sb.count("refuses.count"), 1);
    let show = sb.show(&out.run_id());
    assert_eq!(task(&show, "a")["attempts"], 3);
    assert_eq!(error_of(&show, "a"), "warehouse busy");
    assert_eq!(error_of(&show, "b"), "table t has no column c");
}

#[test]
fn each_misbehaving_plugin_fails_its_task_by_name_and_rerun_works_once_it_is_fixed() {
    // Each case: the plugin's run body, and what the failure must say.
    let cases: &[(&str, &str, &str)] = &[
        (
            "badjson",
            "echo 'this is not json'",
            "sent a line that is not JSON",
        ),
        (
            "unknown",
            r#"echo '{"type":"telemetry","cpu":3}'"#,
            "unknown type `telemetry`",
        ),
        (
            "noresult",
            "echo working >&2; exit 0",
            "exited with status 0 without sending a result; last output: working",
        ),
        (
            "crash",
            "kill -SEGV $$",
            "was killed by signal 11 (SIGSEGV) without sending a result",
        ),
        (
            "twice",
            r#"echo '{"type":"result","status":"succeeded"}'; echo '{"type":"result","status":"failed"}'"#,
            "sent a second result",
        ),
        (
            "nanout",
            r#"echo '{"type":"output","key":"ratio","value":NaN}'"#,
            "sent an output that is not JSON (NaN and Infinity",
        ),
        (
            "huge",
            "head -c 1073741824 /dev/zero | tr '\\000' a",
            "sent a message line longer than 1 MiB",
        ),
        ("hang", "sleep 60", "timed out after 1s"),
    ];
    let sb = Sandbox::new();
    let mut w = String::from("name: bad\ntasks:\n");
    for (kind, body, _) in cases {
        sh_plugin(&sb, kind, NO_FIELDS, body);
        w.push_str(&format!("  {kind}:\n    kind: {kind}\n"));
        if *kind == "hang" {
            w.push_str("    timeout: 1s\n");
        }
    }
    w.push_str("  after_all:\n    kind: noop\n    after: [badjson, unknown, noresult, crash, twice, nanout, huge, hang]\n");
    sb.write("bad.yaml", &w);
    let out = sb.run(&["run", "bad.yaml"]);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let show = sb.show(&id);
    for (kind, _, want) in cases {
        let error = error_of(&show, kind);
        assert!(
            error.contains(&format!("plugin `{kind}` (")) && error.contains(want),
            "{kind}: {error:?} should name the plugin and say {want:?}"
        );
    }
    assert_eq!(status(&show, "after_all"), "skipped");
    // 1 GiB went through a pipe; none of it was held.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert!(
        usage.ru_maxrss < 300 * 1024,
        "peak RSS {} KiB",
        usage.ru_maxrss
    );

    for (kind, _, _) in cases {
        sh_plugin(
            &sb,
            kind,
            NO_FIELDS,
            r#"echo '{"type":"result","status":"succeeded"}'"#,
        );
    }
    let out = sb.run(&["rerun", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&id);
    assert_eq!(show["status"], "succeeded", "{show:#}");
    assert_eq!(status(&show, "after_all"), "succeeded");
}

#[test]
fn cancelling_a_run_stops_a_plugin_that_ignores_sigterm() {
    let sb = Sandbox::new();
    sh_plugin(
        &sb,
        "stubborn",
        NO_FIELDS,
        "trap '' TERM\necho $$ > plugin.pid\ntouch started\nwhile :; do sleep 1; done",
    );
    sb.write("w.yaml", "name: w\ntasks:\n  a:\n    kind: stubborn\n");
    let child = sb.spawn(&["run", "w.yaml"]);
    sb.wait_for_file("started");
    let pid = read_pid(&sb.path("plugin.pid"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!alive(pid), "the plugin process survived the run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("a: cancelled"), "{stdout}");
}

#[test]
fn a_secret_given_to_a_plugin_is_masked_everywhere_even_when_the_plugin_prints_it() {
    const SECRET: &str = "hunter2-plugin-secret-0815";
    let sb = Sandbox::new();
    // The plugin prints the secret it receives in every place it can.
    let body = r#"secret=$(printf '%s' "$req" | sed 's/.*"DB_CREDS":"\([^"]*\)".*/\1/')
echo "stderr: $secret" >&2
echo "{\"type\":\"log\",\"message\":\"log: $secret\"}"
echo "{\"type\":\"progress\",\"fraction\":0.5,\"message\":\"progress: $secret\"}"
echo "{\"type\":\"output\",\"key\":\"dsn\",\"value\":{\"url\":\"db://$secret@host\"}}"
echo "{\"type\":\"result\",\"status\":\"failed\",\"message\":\"refused: $secret\"}""#;
    sh_plugin(&sb, "leaky", NO_FIELDS, body);
    // And one that breaks the protocol with it: the failure quotes what it sent.
    sh_plugin(
        &sb,
        "blurts",
        NO_FIELDS,
        r#"secret=$(printf '%s' "$req" | sed 's/.*"DB_CREDS":"\([^"]*\)".*/\1/')
echo "not json: $secret""#,
    );
    sb.write(
        "w.yaml",
        "name: w\ntasks:\n  a:\n    kind: leaky\n    secrets: [DB_CREDS]\n  b:\n    kind: blurts\n    secrets: [DB_CREDS]\n",
    );
    let out = sb.run_with_env(&["run", "w.yaml"], &[("DB_CREDS", SECRET)]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("a | log: ***"), "{out:?}");
    assert!(out.stderr.contains("a | stderr: ***"), "{out:?}");
    assert!(
        out.stderr.contains("a | [progress 50%] progress: ***"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
        "{out:?}"
    );
    let shown = sb.run(&["show", &out.run_id(), "--json"]);
    assert!(shown.stdout.contains("refused: ***"), "{shown:?}");
    assert!(shown.stdout.contains("db://***@host"), "{shown:?}");
    assert!(shown.stdout.contains("not json: ***"), "{shown:?}");
    assert!(!shown.stdout.contains(SECRET));
    for file in crate::common::walk(&sb.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in {}",
            file.display()
        );
    }
    // A secret the environment does not have fails the task before the plugin starts.
    let out = sb.run(&["run", "w.yaml"]);
    assert!(
        out.stdout.contains(
            "secret `DB_CREDS` (under `secrets:` of task `a`) is not set in the environment"
        ),
        "{out:?}"
    );
}

/// The Rust example plugin, built beside the binary under test (by scripts/test: cargo
/// builds it for no test, its package having none).
fn files_present() -> PathBuf {
    let path = Path::new(BIN).with_file_name("files_present");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p orchestrator-plugin --bins` (scripts/test does)",
        path.display()
    );
    path
}

#[test]
fn the_rust_example_plugin_counts_files_and_short_circuits_when_too_few() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("landing")).unwrap();
    sb.write("landing/a.csv", "x\n");
    sb.write("landing/b.csv", "y\n");
    sb.write("landing/c.json", "{}");
    let bin = files_present();
    sb.write(
        "w.yaml",
        &format!(
            r#"name: w
plugins:
  files_present: {bin}
tasks:
  landed:
    kind: files_present
    path: landing
    pattern: "*.csv"
    min_count: 2
  use:
    kind: shell
    after: [landed]
    command: echo "{{{{ tasks.landed.outputs.count }}}}" > count
  enough:
    kind: files_present
    short_circuit: true
    path: landing
    min_count: 5
  never:
    kind: noop
    after: [enough]
"#,
            bin = bin.display()
        ),
    );
    let out = sb.run(&["run", "w.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.read("count").trim(), "2");
    let show = sb.show(&out.run_id());
    assert_eq!(
        task(&show, "landed")["outputs"]["files"],
        serde_json::json!(["a.csv", "b.csv"])
    );
    assert_eq!(status(&show, "never"), "skipped");
}

#[test]
fn plugins_list_and_describe_show_built_in_kinds_and_plugins_alike() {
    let sb = Sandbox::new();
    let plugins = repo("plugins");
    let out = sb.run(&[
        "plugins",
        "list",
        "--json",
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let sources: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kind"].as_str().unwrap(), k["source"].as_str().unwrap()))
        .collect();
    assert!(sources.contains(&("publish", "builtin")), "{sources:?}");
    let http = plugins.join("http_get").canonicalize().unwrap();
    assert!(
        sources.contains(&("http_get", http.to_str().unwrap())),
        "{sources:?}"
    );

    let out = sb.run(&["plugins", "describe", "shell"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("command: string, required"), "{out:?}");
    assert!(
        out.stdout.contains("The command line, run with `sh -c`."),
        "{out:?}"
    );
    let out = sb.run(&[
        "plugins",
        "describe",
        "http_get",
        "--json",
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["fields"]["required"], serde_json::json!(["url", "path"]));
    assert_eq!(d["short_circuit"], true);
    let out = sb.run(&["plugins", "describe", "nope"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no task kind `nope`"), "{out:?}");
}

/// `yaml` (a workflow) as JSON, read by the engine's own YAML reader, so the schema is
/// checked against what the binary reads.
fn yaml_to_json(yaml: &str) -> Value {
    use serde::Deserialize;
    let node = orchestrator_engine::yaml::parse(yaml).unwrap().unwrap();
    Value::deserialize(&node).unwrap()
}

/// Validates each document against `schema` with Python's `jsonschema` (Draft 2020-12);
/// the errors of each, empty when valid.
fn schema_errors(schema: &Path, docs: &[Value]) -> Vec<Vec<String>> {
    let python = std::env::var("ORCHESTRATOR_PYTHON")
        .expect("ORCHESTRATOR_PYTHON: run the tests with scripts/test, which installs jsonschema");
    let dir = tempfile::tempdir().unwrap();
    let docs_file = dir.path().join("docs.json");
    std::fs::write(&docs_file, serde_json::to_string(docs).unwrap()).unwrap();
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
print(json.dumps([[e.message[:300] for e in v.iter_errors(d)] for d in json.load(open(sys.argv[2]))]))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(schema)
        .arg(&docs_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_bundled_workflow_validates_against_the_schema_and_rejected_fields_fail_it() {
    let sb = Sandbox::new();
    let plugins = repo("plugins");
    let out = sb.run(&["schema", "--plugins", plugins.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let schema_file = sb.write("schema.json", &out.stdout);

    // The checked-in schema the workflows point editors at is today's, without plugins.
    let plain = sb.run(&["schema", "--plugins", sb.path("none").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(repo("docs/workflow.schema.json")).unwrap(),
        plain.stdout,
        "docs/workflow.schema.json is stale: regenerate it with `orchestrator schema --plugins /nonexistent > docs/workflow.schema.json`"
    );

    let mut names = Vec::new();
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo("workflows")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("# yaml-language-server: $schema=../docs/workflow.schema.json"),
                "{} does not point editors at the schema",
                path.display()
            );
            names.push(path.display().to_string());
            docs.push(yaml_to_json(&text));
        }
    }
    assert!(docs.len() >= 2, "{names:?}");
    let errors = schema_errors(&schema_file, &docs);
    for (name, errs) in names.iter().zip(&errors) {
        assert!(errs.is_empty(), "{name} fails the schema: {errs:#?}");
    }

    // Each of these the binary rejects; the schema must too.
    let invalid = [
        "name: w\ntasks:\n  a:\n    kind: noop\n    retires: 1\n",
        "name: w\ntasks:\n  a:\n    kind: shell\n",
        "name: w\ntasks:\n  a:\n    kind: shell\n    command: x\n    workdirr: /tmp\n",
        "name: w\ntasks:\n  a:\n    kind: nosuchkind\n",
        "name: w\nschedulle: daily\ntasks:\n  a:\n    kind: noop\n",
        "name: w\ntasks:\n  a:\n    kind: noop\n    trigger: sometimes\n",
        "name: w\nbackend: gcp\ntasks:\n  a:\n    kind: noop\n",
        "name: w\ntasks:\n  a:\n    kind: http_get\n    urll: http://x\n    path: p\n",
        "name: w\ntasks:\n  a:\n    kind: http_get\n    url: http://x\n    path: p\n    attempts: 0\n",
        "tasks:\n  a:\n    kind: noop\n",
        "name: w\ntasks:\n  a:\n    kind: publish\n    from: a\n    to: b\n    key: [k]\n    schema: loose\n",
    ];
    let docs: Vec<Value> = invalid.iter().map(|y| yaml_to_json(y)).collect();
    let errors = schema_errors(&schema_file, &docs);
    for (yaml, errs) in invalid.iter().zip(&errors) {
        sb.write("case.yaml", yaml);
        let out = sb.run(&[
            "validate",
            "case.yaml",
            "--plugins",
            plugins.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 2, "the binary accepts {yaml:?}: {out:?}");
        assert!(
            !errs.is_empty(),
            "the schema accepts {yaml:?}, which the binary rejects: {}",
            out.stderr
        );
    }
}

#[test]
fn a_plugin_named_under_plugins_is_found_relative_to_the_workflow() {
    let sb = Sandbox::new();
    let path = sh_plugin(
        &sb,
        "stamp",
        NO_FIELDS,
        r#"echo '{"type":"output","key":"at","value":"now"}'
echo '{"type":"result","status":"succeeded"}'"#,
    );
    std::fs::create_dir_all(sb.path("tools")).unwrap();
    std::fs::rename(&path, sb.path("tools/stamp-v2")).unwrap();
    sb.write(
        "w.yaml",
        "name: w\nplugins:\n  stamp: ./tools/stamp-v2\ntasks:\n  a:\n    kind: stamp\n",
    );
    let out = sb.run(&["run", "w.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&out.run_id());
    assert_eq!(task(&show, "a")["outputs"]["at"], "now");
}
