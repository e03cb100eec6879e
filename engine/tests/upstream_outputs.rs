//! Task fields that read upstream outputs (`{{ tasks.ID.outputs.NAME }}`): checked
//! against the DAG when the workflow loads, rendered with the recorded outputs when the
//! task starts (also in a rerun), and a missing output fails the attempt naming it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_engine::load::{load_str, LoadOptions};
use orchestrator_engine::state::{RunStatus, Store, TaskStatus};

use orchestrator_engine::task::{
    BuildContext, Invalid, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};

/// `kind: echo`: outputs `value` (any YAML) as `value`; with `fail_unless`, fails
/// while that file does not exist; with `count`, refuses a count over 10 at build.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Echo {
    value: serde_json::Value,
    fail_unless: Option<PathBuf>,
    count: Option<u32>,
}

#[derive(Debug)]
struct EchoTask {
    value: serde_json::Value,
    fail_unless: Option<PathBuf>,
}

#[async_trait::async_trait]
impl Task for EchoTask {
    async fn run(&self, _: &TaskContext) -> Result<Outputs, TaskFailure> {
        if let Some(p) = &self.fail_unless {
            if !p.exists() {
                return Err(TaskFailure::new("not yet"));
            }
        }
        Ok([("value".to_string(), self.value.clone())]
            .into_iter()
            .collect())
    }
}

impl TaskConfig for Echo {
    const KIND: &'static str = "echo";
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Task>, Invalid> {
        if self.count.is_some_and(|c| c > 10) {
            return Err("count must be at most 10".into());
        }
        Ok(Arc::new(EchoTask {
            value: self.value,
            fail_unless: self.fail_unless,
        }))
    }
}

fn registry() -> orchestrator_engine::task::Registry {
    let mut registry = orchestrator_engine::task::Registry::default();
    registry.register::<Echo>();
    registry
}

fn load(text: &str) -> Result<orchestrator_engine::model::Workflow, String> {
    let registry = registry();
    let opts = LoadOptions {
        registry: &registry,
        overrides: Default::default(),
        inherited: Default::default(),
        run_id: "r".into(),
        date: "2026-01-01".into(),
        scheduled_at: None,
        trigger_files: Vec::new(),
        env: Default::default(),
        default_warehouse: "/tmp/wh".into(),
        backend: None,
        channels_file: None,
    };
    load_str(Path::new("/tmp/w.yaml"), text.to_string(), &opts).map_err(|d| d.to_string())
}

struct Quiet;
impl orchestrator_engine::executor::Observer for Quiet {
    fn event(&self, _: &orchestrator_engine::executor::Event<'_>) {}
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        Harness {
            _dir: dir,
            store: Arc::new(store),
        }
    }

    fn env(&self) -> orchestrator_engine::runner::Env<'_> {
        orchestrator_engine::runner::Env {
            store: &self.store,
            catalog: self.store.clone(),
            cancel: Default::default(),
            redactor: Default::default(),
            observer: &Quiet,
        }
    }

    /// (status, outputs.value or the attempt's error) of task `id` of run `r`.
    fn task(&self, id: &str) -> (TaskStatus, serde_json::Value) {
        let tasks = self.store.tasks("r").unwrap();
        let t = tasks.iter().find(|t| t.task_id == id).unwrap();
        let value = match t.status {
            TaskStatus::Succeeded => t.outputs["value"].clone(),
            _ => {
                let attempts = self.store.attempts("r", id).unwrap();
                serde_json::Value::from(attempts.last().unwrap().error.clone().unwrap_or_default())
            }
        };
        (t.status, value)
    }
}

#[tokio::test]
async fn a_field_reads_upstream_outputs_when_the_task_starts() {
    let wf = load(
        "name: w\ntasks:\n  a:\n    kind: echo\n    value: 3\n  \
         b:\n    kind: echo\n    after: [a]\n    value: \"got {{ tasks.a.outputs.value }} for {{ run.date }}\"\n  \
         c:\n    kind: echo\n    after: [b]\n    value: \"{{ tasks.a.outputs.value + 1 }}\"\n  \
         d:\n    kind: echo\n    after: [a]\n    retries: 2\n    retry_delay: 1ms\n    value: \"{{ tasks.a.outputs.nope }}\"\n  \
         e:\n    kind: echo\n    after: [a]\n    value: x\n    count: \"{{ tasks.a.outputs.value * 4 }}\"\n",
    )
    .unwrap();
    assert_eq!(wf.tasks[1].late.as_ref().unwrap().reads, ["a"]);
    assert!(wf.tasks[0].late.is_none());
    let h = Harness::new();
    let run = orchestrator_engine::runner::start(h.env(), &wf, "r", "2026-01-01")
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        h.task("b"),
        (TaskStatus::Succeeded, "got 3 for 2026-01-01".into())
    );
    // A rendered template is typed like a plain scalar: through `c`, a reads a number.
    assert_eq!(h.task("c"), (TaskStatus::Succeeded, 4.into()));
    let (status, error) = h.task("d");
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(
        error,
        "task `d`: cannot fill in upstream outputs: `tasks.a.outputs.nope`: task `a` has no output `nope` (help: its outputs: value)"
    );
    // Not retried: another attempt would read the same outputs.
    assert_eq!(h.store.attempts("r", "d").unwrap().len(), 1);
    // The kind's own checks apply to the rendered value: 3 * 4 is over 10.
    let (status, error) = h.task("e");
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(
        error,
        "task `e`: with upstream outputs filled in, its config is invalid: count must be at most 10"
    );
}

#[tokio::test]
async fn a_rerun_renders_with_the_outputs_kept_from_the_first_execution() {
    let h = Harness::new();
    let flag = h._dir.path().join("ready");
    let text = format!(
        "name: w\ntasks:\n  a:\n    kind: echo\n    value: {{n: 7}}\n  \
         b:\n    kind: echo\n    after: [a]\n    fail_unless: {}\n    value: \"n={{{{ tasks.a.outputs.value.n }}}}\"\n",
        flag.display()
    );
    let wf = load(&text).unwrap();
    let run = orchestrator_engine::runner::start(h.env(), &wf, "r", "2026-01-01")
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(h.task("b").0, TaskStatus::Failed);
    std::fs::write(&flag, "").unwrap();
    let run = orchestrator_engine::runner::resume(h.env(), &wf, run, None)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    // `a` was kept, not run again: its recorded outputs are what `b` read.
    assert_eq!(h.store.attempts("r", "a").unwrap().len(), 1);
    assert_eq!(h.task("b"), (TaskStatus::Succeeded, "n=7".into()));
}

#[tokio::test]
async fn a_key_missing_inside_an_output_names_what_the_output_holds() {
    let wf = load(
        "name: w\ntasks:\n  a:\n    kind: echo\n    value: {n: 7}\n  \
         b:\n    kind: echo\n    after: [a]\n    value: \"{{ tasks.a.outputs.value.m }}\"\n",
    )
    .unwrap();
    let h = Harness::new();
    orchestrator_engine::runner::start(h.env(), &wf, "r", "2026-01-01")
        .await
        .unwrap();
    assert_eq!(
        h.task("b"),
        (
            TaskStatus::Failed,
            "task `b`: cannot fill in upstream outputs: `tasks.a.outputs.value.m`: `tasks.a.outputs.value` has no `m` (help: `tasks.a.outputs.value` is {\"n\":7})".into()
        )
    );
}

#[test]
fn references_are_checked_against_the_dag_when_loading() {
    let head = "name: w\ntasks:\n  a:\n    kind: echo\n    value: 1\n";
    let cases = [
        (
            "  b:\n    kind: echo\n    value: \"{{ tasks.a.outputs.value }}\"\n",
            "w.yaml:8:12: task `b` reads `tasks.a.outputs.value`, but `a` is not upstream of `b`: its outputs may not exist when `b` starts",
            "add `a` to the `after:` of `b`",
        ),
        (
            "  b:\n    kind: echo\n    after: [a]\n    value: \"{{ tasks.aa.outputs.value }}\"\n",
            "task `b` reads `tasks.aa.outputs.value`, but there is no task `aa`",
            "did you mean `a`?",
        ),
        (
            "  b:\n    kind: echo\n    value: \"{{ tasks.b.outputs.value }}\"\n",
            "task `b` reads its own output (`tasks.b.outputs.value`)",
            "read them in a task that runs after it",
        ),
        (
            "  b:\n    kind: echo\n    after: [a]\n    value: \"{{ tasks.a.status }}\"\n",
            "template variable `tasks.a.status` does not name an upstream output in task `b`",
            "`tasks.ID.outputs.NAME`",
        ),
        (
            "  b:\n    kind: echo\n    after: [a]\n    value: \"{{ tasks.a.outputs.value }}\"\n    colour: red\n",
            "unknown field `colour` in task `b`",
            "",
        ),
    ];
    for (tail, message, help) in cases {
        let e = load(&format!("{head}{tail}")).unwrap_err();
        assert!(e.contains(message), "{tail}: {e}");
        assert!(e.contains(help), "{tail}: {e}");
    }
    // Through another task is upstream too.
    load(&format!(
        "{head}  b:\n    kind: echo\n    after: [a]\n    value: 2\n  c:\n    kind: echo\n    after: [b]\n    value: \"{{{{ tasks.a.outputs.value }}}}\"\n"
    ))
    .unwrap();
}

#[test]
fn channels_cannot_read_task_outputs() {
    let e = load(
        "name: w\nchannels:\n  ops:\n    kind: webhook\n    url: \"http://127.0.0.1/{{ tasks.a.outputs.value }}\"\ntasks:\n  a:\n    kind: echo\n    value: 1\n",
    )
    .unwrap_err();
    assert!(
        e.contains("unknown template variable `tasks.a.outputs.value`"),
        "{e}"
    );
    assert!(e.contains("can be read only in a task's fields"), "{e}");
}
