//! Run notifications: `notify:` subscriptions, the outbox, webhook payloads with HMAC
//! signatures, delivery after a crash, and `notify test`.

use hmac::{KeyInit, Mac};

use crate::common::{Hook, Sandbox};

const SECRET: &str = "s3cr3t-signing-value-41";

/// A task that fails until the file `ok` exists, then a task after it.
fn workflow(sb: &Sandbox) {
    sb.write(
        "wf.yaml",
        r#"name: notified
channels:
  ops: { kind: webhook, url: "{{ env.OPS_WEBHOOK }}", secret: "{{ env.OPS_SECRET }}" }
notify:
  - on: [failure, success]
    to: ops
tasks:
  load:
    kind: shell
    command: test -f ok || { echo "no ok file here" >&2; exit 3; }
  report:
    kind: noop
    after: load
"#,
    );
}

fn hmac_hex(body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn a_failed_run_posts_one_signed_failure_and_its_rerun_to_success_posts_success_only() {
    let hook = Hook::start(|_| 200);
    let sb = Sandbox::new();
    workflow(&sb);
    let env = [("OPS_WEBHOOK", hook.url.as_str()), ("OPS_SECRET", SECRET)];
    let out = sb.run_with_env(&["run", "wf.yaml", "--date", "2026-05-11"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();

    let posted = hook.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let p = &posted[0];
    assert_eq!(p.headers["x-orchestrator-signature"], hmac_hex(&p.body));
    let event = p.json();
    assert_eq!(event["version"], 1);
    assert_eq!(event["type"], "run.failure");
    assert_eq!(event["workflow"], "notified");
    assert_eq!(event["run_id"], id.as_str());
    assert_eq!(event["logical_date"], "2026-05-11");
    assert_eq!(event["status"], "failed");
    assert_eq!(event["failed_tasks"][0]["task"], "load");
    assert_eq!(event["failed_tasks"][0]["attempts"], 1);
    let error = event["failed_tasks"][0]["error"].as_str().unwrap();
    assert!(error.contains("exit"), "{error}");
    assert_eq!(
        event["commands"]["rerun"],
        format!("orchestrator rerun {id}").as_str()
    );
    assert_eq!(
        p.headers["x-orchestrator-id"],
        event["id"].as_str().unwrap()
    );

    sb.write("ok", "");
    let out = sb.run_with_env(&["rerun", &id], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let posted = hook.posted();
    assert_eq!(
        posted.len(),
        2,
        "success, and no second failure: {posted:?}"
    );
    let event = posted[1].json();
    assert_eq!(event["type"], "run.success");
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["execution"], 2);
    assert_eq!(
        posted[1].headers["x-orchestrator-signature"],
        hmac_hex(&posted[1].body)
    );

    let show = sb.show(&id);
    let notes = show["notifications"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = notes
        .iter()
        .map(|n| (n["event"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("failure", "delivered"), ("success", "delivered")]
    );

    // Neither the URL nor the secret is stored anywhere in the state dir.
    for f in crate::common::walk(&sb.state_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [SECRET, hook.url.as_str()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in {}",
                f.display()
            );
        }
    }
}

#[test]
fn a_kill_between_a_runs_end_and_its_delivery_delivers_once_at_the_next_start() {
    let hook = Hook::start(|_| 200);
    let sb = Sandbox::new();
    workflow(&sb);
    sb.write("ok", "");
    let pause = sb.path("pause");
    std::fs::create_dir(&pause).unwrap();
    let mut cmd = sb.command(&["run", "wf.yaml"]);
    cmd.env("OPS_WEBHOOK", &hook.url)
        .env("OPS_SECRET", SECRET)
        .env(
            "ORCHESTRATOR_TEST_PAUSE",
            format!("notify:before-deliver:{}", pause.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    sb.wait_for_file("pause/paused");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(hook.posted().is_empty());

    // The run's end was recorded with its notification, before the kill.
    let runs: serde_json::Value =
        serde_json::from_str(&sb.run(&["runs", "--json"]).stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["status"], "succeeded");
    let show = sb.show(&id);
    assert_eq!(show["notifications"][0]["status"], "pending");
    assert_eq!(show["notifications"][0]["attempts"], 0);

    // The next start of orchestrator (here: another workflow's run) delivers it, once.
    sb.write("other.yaml", "name: other\ntasks:\n  a:\n    kind: noop\n");
    let env = [("OPS_WEBHOOK", hook.url.as_str()), ("OPS_SECRET", SECRET)];
    let out = sb.run_with_env(&["run", "other.yaml"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let posted = hook.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let event = posted[0].json();
    assert_eq!(event["type"], "run.success");
    assert_eq!(event["id"], format!("{id}/success/1/ops").as_str());
    assert_eq!(
        posted[0].headers["x-orchestrator-id"],
        format!("{id}/success/1/ops")
    );
    assert_eq!(sb.show(&id)["notifications"][0]["status"], "delivered");
    let out = sb.run_with_env(&["notify", "deliver"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("0 delivered, 0 waiting"), "{out:?}");
    assert_eq!(hook.posted().len(), 1, "nothing is delivered twice");
}

#[test]
fn notify_test_sends_to_a_channel_and_names_unknown_ones() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: t\nchannels:\n  hook: { kind: command, command: cat > got.json }\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["notify", "test", "wf.yaml", "hook"]);
    assert_eq!(out.code, 0, "{out:?}");
    let got: serde_json::Value = serde_json::from_str(&sb.read("got.json")).unwrap();
    assert_eq!(got["type"], "test");
    assert_eq!(got["workflow"], "t");
    let out = sb.run(&["notify", "test", "wf.yaml", "hok"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("defines no channel `hok`; its channels: hook"),
        "{out:?}"
    );
    sb.write(
        "bad.yaml",
        "name: t\nchannels:\n  hook: { kind: command, command: exit 4 }\nnotify:\n  - on: [failure]\n    to: hok\ntasks:\n  a:\n    kind: noop\n",
    );
    let out = sb.run(&["validate", "bad.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("`notify` sends to `hok`, which is not defined under `channels:`")
            && out.stderr.contains("did you mean `hook`?"),
        "{out:?}"
    );
}

/// A workflow that succeeds and tells `ops` so.
fn succeeding(sb: &Sandbox) {
    sb.write(
        "ok.yaml",
        "name: fine\nchannels:\n  ops: { kind: webhook, url: \"{{ env.OPS_WEBHOOK }}\" }\nnotify:\n  - on: success\n    to: ops\ntasks:\n  a:\n    kind: noop\n",
    );
}

#[test]
fn a_webhook_that_answers_500_twice_gets_it_on_the_third_try_and_one_that_stays_down_changes_no_outcome(
) {
    let hook = Hook::start(|nth| if nth <= 2 { 500 } else { 200 });
    let sb = Sandbox::new();
    succeeding(&sb);
    let out = sb.run_with_env(&["run", "ok.yaml"], &[("OPS_WEBHOOK", hook.url.as_str())]);
    assert_eq!(out.code, 0, "{out:?}");
    let posted = hook.posted();
    assert_eq!(posted.len(), 3, "{posted:?}");
    let ids: Vec<serde_json::Value> = posted.iter().map(|p| p.json()["id"].clone()).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one idempotency key: {ids:?}"
    );
    let n = &sb.show(&out.run_id())["notifications"][0];
    assert_eq!(n["status"], "delivered", "{n}");
    assert_eq!(n["attempts"], 3, "{n}");

    let down = Hook::start(|_| 503);
    let sb = Sandbox::new();
    succeeding(&sb);
    let out = sb.run_with_env(&["run", "ok.yaml"], &[("OPS_WEBHOOK", down.url.as_str())]);
    assert_eq!(
        out.code, 0,
        "a notification never changes the outcome: {out:?}"
    );
    assert!(
        out.stderr
            .contains("not delivered (attempt 3): channel `ops`: HTTP 503"),
        "{out:?}"
    );
    let show = sb.show(&out.run_id());
    assert_eq!(show["status"], "succeeded");
    let n = &show["notifications"][0];
    assert_eq!(n["status"], "failed", "{n}");
    assert!(n["next_at"].is_string(), "retried later: {n}");
    assert_eq!(n["attempts"], 3, "{n}");
    assert!(
        n["last_error"].as_str().unwrap().contains("HTTP 503"),
        "{n}"
    );
}

#[test]
fn a_run_over_its_sla_notifies_sla_miss_once_while_it_runs() {
    let hook = Hook::start(|_| 200);
    let sb = Sandbox::new();
    sb.write(
        "slow.yaml",
        "name: slow\nsla: 1s\nchannels:\n  ops: { kind: webhook, url: \"{{ env.OPS_WEBHOOK }}\" }\nnotify:\n  - on: [sla_miss]\n    to: ops\ntasks:\n  wait:\n    kind: shell\n    command: \"while [ ! -f go ]; do sleep 0.02; done\"\n",
    );
    let mut child = sb
        .command(&["run", "slow.yaml"])
        .env("OPS_WEBHOOK", &hook.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Delivered while the run is still going.
    crate::common::wait_until("the sla_miss notification", || hook.posted().len() == 1);
    let event = hook.posted()[0].json();
    assert_eq!(event["type"], "run.sla_miss");
    assert_eq!(event["status"], "running");
    assert_eq!(event["running_tasks"], serde_json::json!(["wait"]));
    assert_eq!(event["sla_s"], 1.0);
    sb.write("go", "");
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(hook.posted().len(), 1, "exactly one sla_miss");
}

#[test]
fn a_failure_is_emailed_through_an_smtp_server_with_the_run_in_the_subject() {
    let smtp = crate::common::Smtp::start();
    let sb = Sandbox::new();
    sb.write(
        "mail.yaml",
        "name: mailed\nchannels:\n  mail: { kind: email, smtp: \"{{ env.SMTP_URL }}\", from: \"orchestrator <orchestrator@example.com>\", to: [ops@example.com, data@example.com] }\nnotify:\n  - on: failure\n    to: mail\ntasks:\n  load:\n    kind: shell\n    command: exit 4\n",
    );
    let out = sb.run_with_env(
        &["run", "mail.yaml", "--date", "2026-05-11"],
        &[("SMTP_URL", smtp.url.as_str())],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "orchestrator@example.com");
    assert_eq!(mail.to, ["ops@example.com", "data@example.com"]);
    let subject = mail.header("Subject").unwrap();
    assert!(
        subject.starts_with(&format!(
            "[orchestrator] mailed run {id} (2026-05-11) failed: load:"
        )),
        "{subject}"
    );
    assert!(mail.data.contains("orchestrator rerun"), "{}", mail.data);
    assert_eq!(sb.show(&id)["notifications"][0]["status"], "delivered");
}

#[test]
fn a_failure_is_published_to_an_sns_topic_and_reaches_its_subscriber() {
    let moto = crate::common::Moto::start();
    let auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=x";
    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Authorization", auth),
    ];
    moto.request(
        "POST",
        "/",
        "Action=CreateTopic&Name=pipeline-alerts&Version=2010-03-31",
        &form,
    );
    let arn = "arn:aws:sns:us-east-1:123456789012:pipeline-alerts";
    // Moto delivers what the topic gets to an HTTP subscriber: the test's receiver.
    let hook = Hook::start(|_| 200);
    let endpoint: String = hook
        .url
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    moto.request(
        "POST",
        "/",
        &format!(
            "Action=Subscribe&TopicArn={}&Protocol=http&Endpoint={endpoint}&Version=2010-03-31",
            arn.replace(':', "%3A")
        ),
        &form,
    );
    let sb = Sandbox::new();
    sb.write(
        "sns.yaml",
        &format!("name: published\nchannels:\n  topic: {{ kind: sns, topic_arn: \"{arn}\" }}\nnotify:\n  - on: failure\n    to: topic\ntasks:\n  load:\n    kind: shell\n    command: exit 4\n"),
    );
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = sb.run_with_env(&["run", "sns.yaml"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let show = sb.show(&id);
    assert_eq!(show["notifications"][0]["status"], "delivered", "{show}");
    let posted = hook.posted();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let note = posted[0].json();
    assert_eq!(note["Type"], "Notification");
    assert_eq!(note["TopicArn"], arn);
    let subject = note["Subject"].as_str().unwrap();
    assert!(
        subject.starts_with(&format!("[orchestrator] published run {id}")),
        "{subject}"
    );
    let event: serde_json::Value = serde_json::from_str(note["Message"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "run.failure");
    assert_eq!(event["failed_tasks"][0]["task"], "load");
}

#[test]
fn channels_yaml_beside_workflows_is_shared_and_its_errors_name_it() {
    let hook = Hook::start(|_| 200);
    let sb = Sandbox::new();
    sb.write(
        "channels.yaml",
        "channels:\n  ops: { kind: webhook, url: \"{{ env.OPS_WEBHOOK }}\" }\n  log: { kind: file, path: shared.jsonl }\n",
    );
    // Its own `log` wins over the shared one.
    sb.write(
        "a.yaml",
        "name: a\nchannels:\n  log: { kind: file, path: own.jsonl }\nnotify:\n  - on: failure\n    to: [ops, log]\ntasks:\n  t:\n    kind: shell\n    command: exit 3\n",
    );
    let env = [("OPS_WEBHOOK", hook.url.as_str())];
    let out = sb.run_with_env(&["run", "a.yaml"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(hook.posted().len(), 1);
    assert_eq!(hook.posted()[0].json()["workflow"], "a");
    assert!(sb.state_dir().join("own.jsonl").exists());
    assert!(!sb.state_dir().join("shared.jsonl").exists());

    sb.write(
        "channels.yaml",
        "channels:\n  ops: { kind: webhook, url: ftp://nowhere }\n",
    );
    let out = sb.run_with_env(&["validate", "a.yaml"], &env);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{}:2:30: channel `ops`: `url` is not an http:// or https:// URL",
            sb.path("channels.yaml").display()
        )),
        "{out:?}"
    );
}

#[test]
fn channels_flag_names_a_shared_file_that_deliveries_and_reruns_remember() {
    // The first three posts (the run's three tries) fail; later ones succeed.
    let hook = Hook::start(|nth| if nth <= 3 { 503 } else { 200 });
    let sb = Sandbox::new();
    sb.write(
        "prod-channels.yaml",
        "channels:\n  ops: { kind: webhook, url: \"{{ env.OPS_WEBHOOK }}\" }\n",
    );
    // Replaced by --channels, not merged.
    sb.write(
        "channels.yaml",
        "channels:\n  ops: { kind: file, path: beside.jsonl }\n",
    );
    sb.write(
        "a.yaml",
        "name: a\nnotify:\n  - on: [failure, success]\n    to: ops\ntasks:\n  t:\n    kind: shell\n    command: test -f go\n",
    );
    let env = [("OPS_WEBHOOK", hook.url.as_str())];
    let shared = sb.path("prod-channels.yaml");
    let out = sb.run_with_env(
        &["--channels", shared.to_str().unwrap(), "run", "a.yaml"],
        &env,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    assert_eq!(hook.posted().len(), 3, "three tries at the run's end");
    let show = sb.show(&id);
    assert_eq!(show["notifications"][0]["status"], "failed", "{show}");

    // Without the flag: the run remembers its channels file.
    let out = sb.run_with_env(&["notify", "deliver"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("1 delivered, 0 waiting"), "{out:?}");
    let posted = hook.posted();
    assert_eq!(posted.len(), 4);
    assert_eq!(posted[3].json()["event"], "failure");
    assert_eq!(posted[3].json()["run_id"], id.as_str());

    sb.write("go", "");
    let out = sb.run_with_env(&["rerun", &id], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let posted = hook.posted();
    assert_eq!(posted.len(), 5, "{posted:?}");
    assert_eq!(posted[4].json()["event"], "success");
    assert!(
        !sb.state_dir().join("beside.jsonl").exists(),
        "channels.yaml beside is not used when --channels names a file"
    );

    let out = sb.run(&["--channels", "nowhere.yaml", "validate", "a.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("error: --channels nowhere.yaml: no such file"),
        "{out:?}"
    );
}

/// A webhook receiver that accepts connections and never answers; the accepted sockets
/// are kept open until the test ends.
fn silent_hook() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    url
}

#[test]
fn a_webhook_that_never_answers_holds_neither_other_channels_nor_the_run() {
    let sb = Sandbox::new();
    let url = silent_hook();
    // The hanging channel sorts first: delivered one after another, it would hold the
    // file channel past the run's delivery budget.
    sb.write(
        "wf.yaml",
        r#"name: hung
channels:
  a_hook: { kind: webhook, url: "{{ env.HUNG_URL }}" }
  b_file: { kind: file, path: delivered.jsonl }
notify:
  - on: [failure]
    to: [a_hook, b_file]
tasks:
  a:
    kind: shell
    command: "exit 3"
"#,
    );
    let out = sb.run_with_env(&["run", "wf.yaml"], &[("HUNG_URL", url.as_str())]);
    assert_eq!(out.code, 1, "{out:?}");
    let delivered =
        std::fs::read_to_string(sb.state_dir().join("delivered.jsonl")).unwrap_or_default();
    assert_eq!(
        delivered.lines().count(),
        1,
        "the file channel waited for the webhook: {out:?}"
    );
    // The webhook's attempt was cut at the run's budget, said so, and stays in the outbox.
    assert!(
        out.stderr.contains("a_hook")
            && out
                .stderr
                .contains("no answer within the time this command waits"),
        "{out:?}"
    );
    let show = sb.show(&out.run_id());
    let hook = show["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["channel"] == "a_hook")
        .cloned()
        .unwrap_or_default();
    assert_eq!(hook["status"], "failed", "{show:#}");
}
