//! `kind: alert` and `channels:`: one message per row, to a file and a webhook, never
//! twice per channel, and a failed delivery sent by the rerun.

use crate::common::{status, task, Hook, Sandbox};

const WORKFLOW: &str = r#"name: alerting
channels:
  log: { kind: file, path: alerts.jsonl }
  hook: { kind: webhook, url: "{{ env.ALERT_WEBHOOK }}", format: slack }
tasks:
  tell:
    kind: alert
    sql: |
      SELECT * FROM (VALUES ('NVDA', 1.5, 'BUY'), ('AMD', 2.25, 'SELL')) AS t(symbol, x, signal)
      ORDER BY x
    message: "{symbol} at {x}: {signal}"
    dedupe_key: "{signal}:{symbol}"
    to: [log, hook]
"#;

#[test]
fn each_row_reaches_each_channel_once_and_a_failed_webhook_is_sent_by_the_rerun() {
    // The webhook refuses its second request (AMD's first delivery).
    let hook = Hook::start(|nth| if nth == 2 { 500 } else { 200 });
    let sb = Sandbox::new();
    sb.write("wf.yaml", WORKFLOW);
    let env = [("ALERT_WEBHOOK", hook.url.as_str())];
    let out = sb.run_with_env(&["run", "wf.yaml"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let id = out.run_id();
    let show = sb.show(&id);
    assert_eq!(status(&show, "tell"), "failed");
    let error = task(&show, "tell")["error"].as_str().unwrap();
    assert!(error.starts_with("channel `hook`: HTTP 500"), "{error}");
    assert!(
        !sb.run(&["show", &id, "--json"]).stdout.contains(&hook.url),
        "the webhook URL (a secret by its variable's name) is not shown"
    );

    let out = sb.run_with_env(&["rerun", &id], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let show = sb.show(&id);
    let outputs = &task(&show, "tell")["outputs"];
    assert_eq!(outputs["sent"], 1, "{outputs}");
    assert_eq!(outputs["already_sent"], 1, "{outputs}");

    let texts: Vec<String> = hook
        .posted()
        .iter()
        .map(|p| {
            assert_eq!(p.headers["content-type"], "application/json");
            p.json()["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        texts,
        [
            "NVDA at 1.50: BUY",
            "AMD at 2.25: SELL",
            "AMD at 2.25: SELL"
        ],
        "NVDA once; AMD refused, then sent by the rerun"
    );
    // The file got each row once: the rerun sent AMD only where it had not arrived.
    let lines: Vec<serde_json::Value> = sb
        .read("state/alerts.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["BUY:NVDA", "SELL:AMD"]);
    assert_eq!(lines[0]["version"], 1);
    assert_eq!(lines[0]["workflow"], "alerting");
    assert_eq!(lines[0]["task"], "tell");
    assert_eq!(lines[0]["run_id"], id.as_str());
    assert_eq!(lines[0]["row"]["symbol"], "NVDA");

    // A new run finds every key sent: nothing goes out.
    let out = sb.run_with_env(&["run", "wf.yaml"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(task(&sb.show(&out.run_id()), "tell")["outputs"]["sent"], 0);
    assert_eq!(hook.posted().len(), 3);
}
