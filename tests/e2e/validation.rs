//! One test per class of validation error, pinning the message and its line.

use crate::common::Sandbox;

/// Validates `yaml` and returns stderr; asserts exit status 2 and that `run` on the same
/// file runs nothing and creates no state.
fn invalid(yaml: &str) -> (Sandbox, String) {
    let sb = Sandbox::new();
    sb.write("wf.yaml", yaml);
    let out = sb.run(&["validate", "wf.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    let run = sb.run(&["run", "wf.yaml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr, out.stderr,
        "run reports the same errors as validate"
    );
    assert!(!sb.state_dir().exists(), "invalid input touches no state");
    (sb, out.stderr)
}

fn assert_error(sb: &Sandbox, stderr: &str, line: usize, col: usize, message: &str) {
    let want = format!(
        "error: {}:{line}:{col}: {message}\n",
        sb.path("wf.yaml").display()
    );
    assert!(stderr.contains(&want), "expected\n{want}in\n{stderr}");
}

#[test]
fn yaml_syntax() {
    let (sb, err) = invalid("name: x\ntasks:\n  a: {kind: noop\n  b: {kind: noop}\n");
    assert!(
        err.contains(&format!("error: {}:4:", sb.path("wf.yaml").display())),
        "{err}"
    );
    assert!(err.contains("YAML syntax error: "), "{err}");
    let tail = format!(
        "1 error in {}; nothing was run\n",
        sb.path("wf.yaml").display()
    );
    assert!(err.ends_with(&tail), "{err}");
}

#[test]
fn unknown_field_with_suggestion() {
    let (sb, err) = invalid(
        "name: x\ntasks:\n  extract:\n    kind: noop\n  load:\n    kind: shell\n    aftr: [extract]\n    command: cat out.txt\n",
    );
    assert_error(
        &sb,
        &err,
        7,
        5,
        "unknown field `aftr` in task `load` (kind shell)",
    );
    assert!(err.contains("  = help: did you mean `after`?"), "{err}");
    // The offending line is quoted with a caret under the key.
    assert!(
        err.contains("7 |     aftr: [extract]\n  |     ^\n"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_field() {
    let (sb, err) = invalid("name: x\ntask:\n  a:\n    kind: noop\n");
    assert_error(&sb, &err, 2, 1, "unknown field `task` at the top level");
    assert!(err.contains("did you mean `tasks`?"), "{err}");
}

#[test]
fn duplicate_task_ids() {
    let (sb, err) = invalid("name: x\ntasks:\n  load:\n    kind: noop\n  load:\n    kind: noop\n");
    assert_error(
        &sb,
        &err,
        5,
        3,
        "duplicate task id `load` (first defined at line 3)",
    );
}

#[test]
fn unknown_dependency_with_suggestion() {
    let (sb, err) = invalid(
        "name: x\ntasks:\n  extract:\n    kind: noop\n  load:\n    kind: noop\n    after: [extrct]\n",
    );
    assert_error(
        &sb,
        &err,
        7,
        13,
        "task `load` depends on unknown task `extrct`",
    );
    assert!(err.contains("did you mean `extract`?"), "{err}");
}

#[test]
fn cycle_prints_the_chain() {
    let (sb, err) = invalid(
        "name: x\ntasks:\n  a:\n    kind: noop\n    after: [c]\n  b:\n    kind: noop\n    after: [a]\n  c:\n    kind: noop\n    after: [b]\n",
    );
    assert_error(&sb, &err, 3, 3, "dependency cycle: a -> b -> c -> a");
}

#[test]
fn unknown_kind_with_suggestion() {
    let (sb, err) = invalid("name: x\ntasks:\n  a:\n    kind: shel\n    command: 'true'\n");
    assert_error(&sb, &err, 4, 11, "unknown task kind `shel` in task `a`");
    assert!(err.contains("did you mean `shell`?"), "{err}");
}

#[test]
fn invalid_duration() {
    let (sb, err) = invalid("name: x\ntasks:\n  a:\n    kind: noop\n    timeout: 5 parsecs\n");
    assert_error(
        &sb,
        &err,
        5,
        14,
        "invalid `timeout` in task `a`: `5 parsecs` is not a duration; write a number and a unit, e.g. 500ms, 30s, 5m, 1h30m",
    );
}

#[test]
fn unknown_template_variable() {
    let (sb, err) = invalid(
        "name: x\nparams:\n  greeting: hello\ntasks:\n  a:\n    kind: shell\n    command: echo {{ params.greting }}\n",
    );
    assert_error(
        &sb,
        &err,
        7,
        14,
        "unknown template variable `params.greting` in task `a`",
    );
    assert!(
        err.contains("no param `greting` is declared; did you mean `params.greeting`?"),
        "{err}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let (sb, err) = invalid(
        "name: x\ntasks:\n  a:\n    kind: nope\n  b:\n    kind: noop\n    after: [zzz]\n  c:\n    kind: noop\n    retries: many\n",
    );
    assert_error(&sb, &err, 4, 11, "unknown task kind `nope` in task `a`");
    assert_error(&sb, &err, 7, 13, "task `b` depends on unknown task `zzz`");
    assert_error(
        &sb,
        &err,
        10,
        14,
        "invalid `retries` in task `c`: `many` is not a whole number (0 or more)",
    );
    assert!(err.contains("3 errors in"), "{err}");
}

#[test]
fn unknown_param_override() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: x\nparams: {greeting: hi}\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["run", "wf.yaml", "--param", "greting=yo"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("--param greting: the workflow declares no param `greting`"),
        "{out:?}"
    );
    assert!(out.stderr.contains("did you mean `greeting`?"), "{out:?}");
}

#[test]
fn valid_file_and_bad_arguments() {
    let sb = Sandbox::new();
    sb.write("wf.yaml", "name: x\ntasks:\n  a:\n    kind: noop\n");
    let out = sb.run(&["validate", "wf.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("workflow `x` is valid (1 tasks, local backend)"),
        "{out:?}"
    );
    let out = sb.run(&["run", "wf.yaml", "--date", "2025-13-01"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("`2025-13-01` is not a date written YYYY-MM-DD, like 2026-01-31"),
        "{out:?}"
    );
    let out = sb.run(&["run", "missing.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot read workflow file missing.yaml"),
        "{out:?}"
    );
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_key() {
    let sb = Sandbox::new();
    sb.write(
        "bom.yaml",
        "\u{feff}name: x\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "bom.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_zero_timeout_is_refused() {
    let sb = Sandbox::new();
    sb.write(
        "t.yaml",
        "name: x\ntasks:\n  a:\n    kind: noop\n    timeout: 0s\n",
    );
    let out = sb.run(&["validate", "t.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("t.yaml:5:") && out.stderr.contains("a timeout must be greater than 0"),
        "{out:?}"
    );
}

#[test]
fn every_unknown_template_variable_is_reported() {
    let sb = Sandbox::new();
    sb.write(
        "v.yaml",
        "name: x\nparams:\n  greeting: hi\ntasks:\n  a:\n    kind: shell\n    command: \"echo {{ params.a }} {{ params.b }} {{ parms.greeting }}\"\n",
    );
    let out = sb.run(&["validate", "v.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    for var in ["params.a", "params.b", "parms.greeting"] {
        assert!(
            out.stderr
                .contains(&format!("unknown template variable `{var}`")),
            "{var}: {out:?}"
        );
    }
    assert!(out.stderr.contains("3 errors"), "{out:?}");
}

#[test]
fn unquoted_params_in_commands_and_sql_are_warned_about_and_filters_quote_them() {
    let sb = Sandbox::new();
    sb.write(
        "q.yaml",
        "name: x\nparams:\n  who: world\ntasks:\n  loud:\n    kind: shell\n    command: \"echo {{ params.who }}\"\n  safe:\n    kind: shell\n    command: \"printf %s {{ params.who | shell_quote }} > said\"\n  q:\n    kind: sql\n    sql: \"SELECT {{ params.who | sql_string }} AS w\"\n",
    );
    let out = sb.run(&["validate", "q.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("warning: ")
            && out.stderr.contains("q.yaml:7:")
            && out
                .stderr
                .contains("param `who` is put into the shell command of task `loud` unquoted")
            && out.stderr.contains("{{ params.who | shell_quote }}"),
        "{out:?}"
    );
    assert_eq!(out.stderr.matches("warning:").count(), 1, "{out:?}");
    // A hostile value stays one word.
    let evil = "x'; touch pwned; echo '";
    let out = sb.run(&["run", "q.yaml", "--param", &format!("who={evil}")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.read("said"), evil);
    assert!(!sb.path("pwned").exists());
}

#[test]
fn next_prints_the_reference_pipelines_fire_times() {
    let sb = Sandbox::new();
    let daily = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/daily.yaml");
    let daily = daily.to_str().unwrap();
    let out = sb.run(&[
        "next",
        daily,
        "--count",
        "3",
        "--after",
        "2025-04-04T12:00:00Z",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let fires: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        fires,
        serde_json::json!([
            {"utc": "2025-04-04T22:00:00Z", "local": "2025-04-04T22:00:00+00:00"},
            {"utc": "2025-04-07T22:00:00Z", "local": "2025-04-07T22:00:00+00:00"},
            {"utc": "2025-04-08T22:00:00Z", "local": "2025-04-08T22:00:00+00:00"},
        ])
    );
    // In a zone with daylight saving, local times carry their offset.
    sb.write(
        "ny.yaml",
        "name: ny\nschedule: \"30 2 * * *\"\ntimezone: America/New_York\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&[
        "next",
        "ny.yaml",
        "--count",
        "2",
        "--after",
        "2026-03-07T12:00:00Z",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("2026-03-08T07:00:00Z  2026-03-08T03:00:00-04:00")
            && out
                .stdout
                .contains("2026-03-09T06:30:00Z  2026-03-09T02:30:00-04:00"),
        "{out:?}"
    );
}

#[test]
fn schedule_errors_point_at_the_expression() {
    let sb = Sandbox::new();
    sb.write(
        "s.yaml",
        "name: x\nschedule:\n  - \"0 22 * * 1-5\"\n  - \"cron(0 22 * * MON-FRI *)\"\ntimezone: America/New_Yrok\ndst: { gap: later }\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "s.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    for want in [
        "s.yaml:4:5: invalid schedule: `cron(0 22 * * MON-FRI *)`: exactly one of day-of-month and day-of-week must be `?`",
        "s.yaml:5:11: `America/New_Yrok` is not an IANA time zone name",
        "did you mean `America/New_York`?",
        "`later` is not a gap policy; use `run_after` or `skip`",
    ] {
        assert!(out.stderr.contains(want), "no `{want}` in {out:?}");
    }
    sb.write(
        "t.yaml",
        "name: x\ntimezone: UTC\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "t.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("`timezone` is set, but there is no `schedule:`"),
        "{out:?}"
    );
    let out = sb.run(&["next", "t.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn the_aws_block_is_checked_without_calling_aws() {
    let sb = Sandbox::new();
    sb.write("w.yaml", "name: w\ntasks:\n  a:\n    kind: noop\n");
    let out = sb.run(&["validate", "w.yaml", "--backend", "aws"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "the aws backend needs `aws:` with `database`, `output_location`, `warehouse`"
        ),
        "{out:?}"
    );
    sb.write(
        "x.yaml",
        "name: x\nbackend: aws\naws:\n  database: lake\n  output_location: /tmp/results\n  warehouse: s3://lake/wh/\n  regoin: us-east-1\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "x.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("regoin"), "{out:?}");
    sb.write(
        "y.yaml",
        "name: y\nbackend: aws\naws:\n  database: lake\n  output_location: /tmp/results\n  warehouse: s3://lake/wh/\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "y.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("y.yaml:5:20")
            && out
                .stderr
                .contains("`aws: output_location:` `/tmp/results` is not an s3:// URL"),
        "{out:?}"
    );
    // The reference pipeline validates for both backends.
    let daily = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/daily.yaml");
    let out = sb.run(&["validate", daily.to_str().unwrap(), "--backend", "aws"]);
    assert!(
        out.stderr
            .contains("on the aws backend a crawler reads S3; give an s3:// URL"),
        "{out:?}"
    );
    for (backend, landing) in [
        ("local", "landing=/tmp/landing"),
        ("aws", "landing=s3://lake/landing"),
    ] {
        let out = sb.run(&[
            "validate",
            daily.to_str().unwrap(),
            "--backend",
            backend,
            "--param",
            landing,
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("{backend} backend")),
            "{out:?}"
        );
    }
}

#[test]
fn channels_and_alerts_are_checked_before_anything_runs() {
    let (sb, err) = invalid(
        "name: x\nchannels:\n  hook: { kind: webhook, url: ftp://example.com/x }\n  log: { kind: fil, path: a.jsonl }\ntasks:\n  a:\n    kind: alert\n    sql: SELECT 1 AS n\n    message: \"{n}\"\n    dedupe_key: \"{n}\"\n    to: [slack]\n",
    );
    // `fil` is not a kind: that channel is refused, naming it, and the other channel's
    // problem is reported with it.
    assert!(err.contains("`fil` is not one of"), "{err}");
    assert!(err.contains("in channel `log`"), "{err}");
    assert!(
        err.contains("channel `hook`: `url` is not an http:// or https:// URL"),
        "{err}"
    );

    let (sb2, err2) = invalid(
        "name: x\nchannels:\n  hook: { kind: webhook, url: ftp://example.com/x, format: teams }\n  log: { kind: file, path: a.jsonl }\ntasks:\n  a:\n    kind: alert\n    sql: SELECT 1 AS n\n    message: \"{n}\"\n    dedupe_key: \"{n}\"\n    to: [slack]\n",
    );
    assert_error(
        &sb2,
        &err2,
        3,
        31,
        "channel `hook`: `url` is not an http:// or https:// URL",
    );
    assert_error(
        &sb2,
        &err2,
        3,
        60,
        "channel `hook`: `format` is `json` (the default) or `slack`",
    );
    assert!(
        err2.contains(
            "`to: slack`: the workflow has no channel `slack` (it has: hook, log); define it under `channels:`"
        ),
        "{err2}"
    );
    drop(sb);
}

#[test]
fn a_deadline_needs_a_time_of_day_and_a_schedule() {
    let (sb, err) = invalid("name: x\ndeadline: \"23:30\"\ntasks:\n  a:\n    kind: noop\n");
    assert_error(
        &sb,
        &err,
        2,
        11,
        "`deadline` is set, but there is no `schedule:`",
    );
    let (sb, err) = invalid(
        "name: x\nschedule: \"0 22 * * *\"\ndeadline: \"25:00\"\ntasks:\n  a:\n    kind: noop\n",
    );
    assert_error(
        &sb,
        &err,
        3,
        11,
        "`deadline` `25:00` is not a time of day; write e.g. \"23:30\" (in the workflow's `timezone:`)",
    );
}

#[test]
fn start_date_bounds_next_and_the_grid_of_a_rate() {
    let sb = Sandbox::new();
    sb.write(
        "later.yaml",
        "name: later\nschedule: \"* * * * * *\"\nstart_date: 2027-06-01\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&[
        "next",
        "later.yaml",
        "--count",
        "2",
        "--json",
        "--after",
        "2026-12-04T16:00:00Z",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let next: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(next[0]["utc"], "2027-06-01T00:00:00Z", "{out:?}");
    assert_eq!(next[1]["utc"], "2027-06-01T00:00:01Z", "{out:?}");
    sb.write(
        "rate.yaml",
        "name: rate\nschedule: \"rate(1 hours)\"\nstart_date: 2026-01-01T15:00:00Z\ntasks:\n  a:\n    kind: noop\n",
    );
    // From any instant, the same grid.
    for after in ["2026-12-04T16:17:01Z", "2026-12-04T16:59:59Z"] {
        let out = sb.run(&[
            "next",
            "rate.yaml",
            "--count",
            "1",
            "--json",
            "--after",
            after,
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains("2026-12-04T17:00:00Z"),
            "{after}: {out:?}"
        );
    }
}

#[test]
fn schedules_that_never_fire_and_absurd_file_triggers_are_refused() {
    let sb = Sandbox::new();
    for (schedule, why) in [
        ("0 0 30 2 *", "never fires: it has no fire time at all"),
        ("rate(18446744073709551615 seconds)", ""),
    ] {
        sb.write(
            "s.yaml",
            &format!("name: s\nschedule: \"{schedule}\"\ntasks:\n  a:\n    kind: noop\n"),
        );
        let out = sb.run(&["validate", "s.yaml"]);
        assert_eq!(out.code, 2, "{schedule}: {out:?}");
        assert!(
            out.stderr.contains("s.yaml:2:") && out.stderr.contains(why),
            "{schedule}: {out:?}"
        );
    }
    // Only past fire times: valid (catch-up may want them), with a warning.
    sb.write(
        "past.yaml",
        "name: p\nschedule: \"cron(0 0 1 1 ? 2020)\"\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "past.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("warning") && out.stderr.contains("no fire time after now"),
        "{out:?}"
    );
    for (files, needle) in [
        ("poll: 0s", "`poll` must be at least 100ms"),
        ("debounce: 0s", "`debounce` must be at least 100ms"),
        ("pattern: \"[\"", "is not a file-name pattern"),
        ("pattern: \"[ab].csv\"", "is not a file-name pattern"),
    ] {
        sb.write(
            "f.yaml",
            &format!(
                "name: f\non:\n  files:\n    path: in\n    {files}\ntasks:\n  a:\n    kind: noop\n"
            ),
        );
        let out = sb.run(&["validate", "f.yaml"]);
        assert_eq!(out.code, 2, "{files}: {out:?}");
        assert!(
            out.stderr.contains("f.yaml:5:") && out.stderr.contains(needle),
            "{files}: {out:?}"
        );
    }
    sb.write(
        "root.yaml",
        "name: r\non:\n  files:\n    path: /\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "root.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("root of the file system"), "{out:?}");
    for (field, needle) in [
        ("retention: 0d", "`retention` must be at least 1d"),
        ("sla: 0s", "`sla` must be longer than 0s"),
    ] {
        sb.write(
            "z.yaml",
            &format!("name: z\n{field}\ntasks:\n  a:\n    kind: noop\n"),
        );
        let out = sb.run(&["validate", "z.yaml"]);
        assert_eq!(out.code, 2, "{field}: {out:?}");
        assert!(
            out.stderr.contains(needle) && !out.stderr.contains("timeout"),
            "{field}: {out:?}"
        );
    }
}

#[test]
fn one_error_of_every_phase_is_reported_at_once_with_a_position_and_in_words() {
    let sb = Sandbox::new();
    sb.write(
        "all.yaml",
        r#"name: v
sla: soon
max_parallel: many
defaults:
  retry_backoff: 0.5
channels:
  x: { kind: pager, url: 1 }
  y: { kind: webhook }
tasks:
  a:
    kind: shell
    command: "true"
    timeout: 0s
    retry_backoff: 0.5
  b:
    kind: create_table_as
    table: "bad name!"
    sql: "SELECT (1"
  c:
    kind: noop
    after: [nosuch]
  d:
    kind: noop
    short_circuit: maybe
"#,
    );
    let out = sb.run(&["validate", "all.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    for needle in [
        "`soon` is not a duration",
        "`many` is not a whole number",
        "`retry_backoff` must be 1.0 or more",
        "`pager` is not one of",
        "in channel `y`",
        "a timeout must be greater than 0",
        "`retry_backoff` of task `a` must be 1.0 or more",
        "invalid table name `bad name!`",
        "SQL syntax error in `sql`",
        "depends on unknown task `nosuch`",
        "`maybe` is not true or false",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "missing `{needle}`:\n{}",
            out.stderr
        );
    }
    let at = format!("{}:", sb.path("all.yaml").display());
    for e in &errors {
        let rest = e
            .split_once(&at)
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("no file in {e}"));
        let mut parts = rest.splitn(3, ':');
        let (line, col) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        assert!(
            line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
            "no line:col in {e}"
        );
        for serde_word in ["untagged", "variant", "usize", "u32", "invalid type"] {
            assert!(!e.contains(serde_word), "`{serde_word}` in {e}");
        }
    }
}
