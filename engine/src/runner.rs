//! Starting a run and resuming one (`rerun`): the records written before the executor
//! takes over, and which tasks a rerun re-executes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use orchestrator_state::{RunRecord, RunStatus, StateError, Store, TaskRecord, TaskStatus, Write};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::executor::{execute, Execution, Initial, Observer};
use crate::model::Workflow;
use crate::suggest::closest;
use crate::template::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The rerun cannot go ahead; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
}

/// A new run id: UTC start time plus a random suffix, e.g. `20261122T204949-3fa2`.
/// Sorts by time, and is short enough to type.
pub fn new_run_id() -> String {
    // Unique within this process: a backfill or a busy daemon starts hundreds of runs in
    // one second, and 16 random bits alone collide among them (a second run with the id
    // of another would overwrite its records).
    static USED: std::sync::Mutex<(i64, Vec<u16>)> = std::sync::Mutex::new((0, Vec::new()));
    let mut used = USED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let now = Utc::now();
        if used.0 != now.timestamp() {
            *used = (now.timestamp(), Vec::new());
        }
        if used.1.len() >= 60_000 {
            // This second's ids are nearly spent: take the next second's.
            drop(used);
            std::thread::sleep(std::time::Duration::from_millis(5));
            used = USED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        }
        let n = fastrand::u16(..);
        if let Err(at) = used.1.binary_search(&n) {
            used.1.insert(at, n);
            return format!("{}-{n:04x}", now.format("%Y%m%dT%H%M%S"));
        }
    }
}

/// [`new_run_id`], also not the id of a run already in `store` (one an earlier process
/// started in the same second).
pub fn new_run_id_in(store: &Store) -> String {
    loop {
        let id = new_run_id();
        if !matches!(store.run(&id), Ok(Some(_))) {
            return id;
        }
    }
}

/// A logical date: exactly `YYYY-MM-DD`, a real day, year 1900–2999. chrono alone
/// accepts `26-01-01` (year 26), `2026-1-1`, `+2026-01-01` and `0000-01-01`.
pub fn parse_logical_date(s: &str) -> Result<String, String> {
    let shape_ok = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let date = shape_ok
        .then(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten();
    match date {
        Some(d) if (1900..=2999).contains(&chrono::Datelike::year(&d)) => Ok(s.to_string()),
        Some(_) => Err(format!("`{s}`: the year must be between 1900 and 2999")),
        None => Err(format!(
            "`{s}` is not a date written YYYY-MM-DD, like 2026-01-31"
        )),
    }
}

/// Common inputs of [`start`] and [`resume`].
pub struct Env<'a> {
    /// The state; task kinds also keep their usage counters and the messages they sent
    /// in it.
    pub store: &'a Arc<Store>,
    /// Usually the same store, as the catalog task kinds see.
    pub catalog: Arc<dyn Catalog>,
    pub cancel: CancellationToken,
    pub redactor: Arc<Redactor>,
    pub observer: &'a dyn Observer,
}

/// Records a new run of `workflow` and executes it. The workflow must have been loaded
/// with this `run_id` and `date` (templates are rendered at load time).
pub async fn start(
    env: Env<'_>,
    workflow: &Workflow,
    run_id: &str,
    date: &str,
) -> Result<RunRecord, RunError> {
    start_as(env, workflow, run_id, date, "manual").await
}

/// [`start`], recording what started the run (`manual`, `schedule ...`).
pub async fn start_as(
    env: Env<'_>,
    workflow: &Workflow,
    run_id: &str,
    date: &str,
    trigger: &str,
) -> Result<RunRecord, RunError> {
    let run = new_record(workflow, run_id, date, trigger, RunStatus::Running);
    let records: Vec<TaskRecord> = workflow
        .tasks
        .iter()
        .map(|t| pending_record(run_id, &t.id, 0))
        .collect();
    let initial = vec![Initial::Execute { prior_attempts: 0 }; records.len()];
    launch(env, workflow, run, records, initial).await
}

/// Resumes `run` with the current `workflow` (loaded with the run's id, date and
/// params): re-executes what did not succeed, and with `from` that task too, plus
/// everything downstream; keeps what succeeded.
pub async fn resume(
    env: Env<'_>,
    workflow: &Workflow,
    mut run: RunRecord,
    from: Option<&str>,
) -> Result<RunRecord, RunError> {
    let previous: BTreeMap<String, TaskRecord> = env
        .store
        .tasks(&run.id)?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    let initial = plan_rerun(workflow, &run, &previous, from)?;
    // A task still running from an execution whose orchestrator died would run twice.
    let stopped = tokio::task::spawn_blocking({
        let id = run.id.clone();
        move || crate::orphans::stop(&id)
    })
    .await
    .unwrap_or_default();
    for o in &stopped {
        tracing::warn!(
            "run {}: killed process {} left running by task `{}` of an earlier execution, before resuming it",
            run.id,
            o.pid,
            o.task
        );
    }
    let records = workflow
        .tasks
        .iter()
        .zip(&initial)
        .map(|(t, init)| match (init, previous.get(&t.id)) {
            (Initial::Keep, Some(rec)) => rec.clone(),
            (_, prev) => pending_record(&run.id, &t.id, prev.map_or(0, |p| p.attempts)),
        })
        .collect();
    run.status = RunStatus::Running;
    run.ended_at = None;
    run.resume_pending = false;
    run.execution_started_at = Some(Utc::now());
    run.pid = std::process::id();
    run.reruns += 1;
    run.definition = workflow.source.clone();
    run.workflow_path = workflow.path.display().to_string();
    // Tasks of the run that the current file no longer has (they had succeeded) stay
    // listed after the current ones.
    let mut order: Vec<String> = workflow.task_ids().into_iter().map(String::from).collect();
    order.extend(
        previous
            .keys()
            .filter(|id| workflow.index_of(id).is_none())
            .cloned(),
    );
    run.task_order = order;
    launch(env, workflow, run, records, initial).await
}

/// A run record for `workflow` as loaded for this run, started now.
fn new_record(
    workflow: &Workflow,
    run_id: &str,
    date: &str,
    trigger: &str,
    status: RunStatus,
) -> RunRecord {
    RunRecord {
        id: run_id.to_string(),
        workflow: workflow.name.clone(),
        workflow_path: workflow.path.display().to_string(),
        definition: workflow.source.clone(),
        params: workflow.params.clone(),
        logical_date: date.to_string(),
        status,
        started_at: Utc::now(),
        ended_at: None,
        pid: std::process::id(),
        reruns: 0,
        task_order: workflow.task_ids().into_iter().map(String::from).collect(),
        trigger: Some(trigger.to_string()),
        note: None,
        backend: Some(workflow.backend.as_str().to_string()),
        channels_file: workflow
            .channels_file
            .as_ref()
            .map(|p| p.display().to_string()),
        trigger_files: workflow.trigger_files.clone(),
        resume_pending: false,
        execution_started_at: None,
    }
}

/// Records a run that was due but not started (e.g. `concurrency: forbid`), so that
/// `runs` shows it with the reason.
pub fn record_skipped(
    store: &Store,
    workflow: &Workflow,
    run_id: &str,
    date: &str,
    trigger: &str,
    why: &str,
) -> Result<RunRecord, StateError> {
    let mut run = new_record(workflow, run_id, date, trigger, RunStatus::Skipped);
    run.ended_at = Some(run.started_at);
    run.note = Some(why.to_string());
    store.commit(&[Write::Run(run.clone())])?;
    Ok(run)
}

/// Which tasks a rerun keeps and which it re-executes. Pure, so it is table-tested.
pub fn plan_rerun(
    workflow: &Workflow,
    run: &RunRecord,
    previous: &BTreeMap<String, TaskRecord>,
    from: Option<&str>,
) -> Result<Vec<Initial>, RunError> {
    if run.status == RunStatus::Running {
        return Err(RunError::Refused(format!(
            "run {} is still running (pid {}); wait for it to finish, or stop it first",
            run.id, run.pid
        )));
    }
    // A task the run did not finish must still exist, or the rerun cannot complete it.
    let ids: Vec<&str> = workflow.task_ids();
    for (id, rec) in previous {
        if rec.status != TaskStatus::Succeeded && workflow.index_of(id).is_none() {
            return Err(RunError::Refused(format!(
                "run {} needs task `{id}` ({}), but {} no longer has a task `{id}`; restore it, or start a new run with `orchestrator run`",
                run.id,
                rec.status,
                workflow.path.display()
            )));
        }
    }
    let mut roots: BTreeSet<usize> = workflow
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            previous
                .get(&t.id)
                .is_none_or(|r| r.status != TaskStatus::Succeeded)
        })
        .map(|(i, _)| i)
        .collect();
    if let Some(from) = from {
        let Some(i) = workflow.index_of(from) else {
            let hint = closest(from, ids.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("tasks: {}", ids.join(", ")));
            return Err(RunError::Refused(format!(
                "--from {from}: {} has no task `{from}`; {hint}",
                workflow.path.display()
            )));
        };
        roots.insert(i);
    }
    // A run that succeeded has nothing to resume, even if some of its tasks were
    // skipped (an `any_failed` handler when nothing failed, a short-circuited branch).
    // One whose every task succeeded but which did not record its own end (killed in
    // between) resumes with nothing to execute: it ends, as it would have.
    if run.status == RunStatus::Succeeded && from.is_none() {
        return Err(RunError::Refused(format!(
            "run {} already succeeded; nothing to rerun. Use --from TASK to re-execute a task and everything downstream of it",
            run.id
        )));
    }
    let execute = workflow.dag.closure(roots);
    Ok(workflow
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if execute.contains(&i) {
                Initial::Execute {
                    prior_attempts: previous.get(&t.id).map_or(0, |r| r.attempts),
                }
            } else {
                Initial::Keep
            }
        })
        .collect())
}

fn pending_record(run_id: &str, task_id: &str, attempts: u32) -> TaskRecord {
    TaskRecord {
        run_id: run_id.to_string(),
        task_id: task_id.to_string(),
        status: TaskStatus::Pending,
        attempts,
        started_at: None,
        ended_at: None,
        error: None,
        outputs: Default::default(),
    }
}

async fn launch(
    env: Env<'_>,
    workflow: &Workflow,
    run: RunRecord,
    records: Vec<TaskRecord>,
    initial: Vec<Initial>,
) -> Result<RunRecord, RunError> {
    let mut writes = vec![Write::Run(run.clone())];
    writes.extend(records.iter().cloned().map(Write::Task));
    env.store.commit_async(&writes).await?;
    let run = execute(Execution {
        store: env.store,
        catalog: env.catalog,
        usage: env.store.clone(),
        sent: env.store.clone(),
        workflow,
        run,
        records,
        initial,
        cancel: env.cancel,
        redactor: env.redactor,
        observer: env.observer,
    })
    .await?;
    // A recovery point after a finished run, at most one a minute (see
    // `orchestrator_state::recovery`). It protects history; failing to write one must not
    // fail the run.
    if let Err(e) = env.store.write_recovery_point_if_due() {
        tracing::warn!(
            "warning: run {} finished, but no recovery point was written: {e}",
            run.id
        );
    }
    Ok(run)
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::executor::Initial::{Execute, Keep};

    /// a -> b -> d, a -> c -> d, and a handler `h` after d that runs only on failure.
    const WF: &str = "name: w\ntasks:\n  a:\n    kind: noop\n  b:\n    kind: noop\n    after: [a]\n  c:\n    kind: noop\n    after: [a]\n  d:\n    kind: noop\n    after: [b, c]\n  h:\n    kind: noop\n    after: [d]\n    trigger: any_failed\n";

    /// A name, the run's status, its tasks' states, `--from`, and the plan or a refusal.
    type Case = (
        &'static str,
        RunStatus,
        Vec<(&'static str, TaskStatus, u32)>,
        Option<&'static str>,
        Result<Vec<crate::executor::Initial>, &'static str>,
    );

    fn tasks(states: &[(&str, TaskStatus, u32)]) -> BTreeMap<String, TaskRecord> {
        states
            .iter()
            .map(|(id, status, attempts)| {
                let mut t = pending_record("r", id, *attempts);
                t.status = *status;
                (id.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn which_tasks_a_rerun_executes() {
        use TaskStatus::{Cancelled, Failed, Skipped, Succeeded};
        let wf = crate::load::tests::load(WF).unwrap();
        let ok = |id: &'static str| (id, Succeeded, 1);
        let cases: Vec<Case> = vec![
            (
                "b failed: b, then d and h downstream; a and c kept",
                RunStatus::Failed,
                vec![
                    ok("a"),
                    ("b", Failed, 3),
                    ok("c"),
                    ("d", Skipped, 0),
                    ("h", Succeeded, 1),
                ],
                None,
                Ok(vec![
                    Keep,
                    Execute { prior_attempts: 3 },
                    Keep,
                    Execute { prior_attempts: 0 },
                    Execute { prior_attempts: 1 },
                ]),
            ),
            (
                "cancelled c: c and what follows",
                RunStatus::Cancelled,
                vec![
                    ok("a"),
                    ok("b"),
                    ("c", Cancelled, 1),
                    ("d", Skipped, 0),
                    ("h", Skipped, 0),
                ],
                None,
                Ok(vec![
                    Keep,
                    Keep,
                    Execute { prior_attempts: 1 },
                    Execute { prior_attempts: 0 },
                    Execute { prior_attempts: 0 },
                ]),
            ),
            (
                "--from b on a succeeded run: b and downstream",
                RunStatus::Succeeded,
                vec![ok("a"), ok("b"), ok("c"), ok("d"), ("h", Skipped, 0)],
                Some("b"),
                Ok(vec![
                    Keep,
                    Execute { prior_attempts: 1 },
                    Keep,
                    Execute { prior_attempts: 1 },
                    Execute { prior_attempts: 0 },
                ]),
            ),
            (
                "a succeeded run with a skipped handler: refused",
                RunStatus::Succeeded,
                vec![ok("a"), ok("b"), ok("c"), ok("d"), ("h", Skipped, 0)],
                None,
                Err("already succeeded"),
            ),
            (
                "an unknown --from: refused with a suggestion",
                RunStatus::Failed,
                vec![ok("a"), ("b", Failed, 1)],
                Some("bb"),
                Err("did you mean `b`?"),
            ),
            (
                "a running run: refused",
                RunStatus::Running,
                vec![],
                None,
                Err("still running"),
            ),
        ];
        for (name, status, states, from, want) in cases {
            let run = new_record(&wf, "r", "2026-01-01", "manual", status);
            let got = plan_rerun(&wf, &run, &tasks(&states), from);
            match (got, want) {
                (Ok(plan), Ok(want)) => assert_eq!(plan, want, "{name}"),
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "{name}: {e}")
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}

#[cfg(test)]
mod run_tests {
    use std::sync::Arc;

    use orchestrator_state::{RunStatus, Store, TaskStatus};

    use crate::task::{BuildContext, Invalid, Outputs, Task, TaskConfig, TaskContext, TaskFailure};

    /// Panics in its first poll, or (`later: true`) after it has waited once.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    struct Panics {
        later: bool,
    }

    #[derive(Debug)]
    struct PanicsTask {
        later: bool,
    }

    #[async_trait::async_trait]
    impl Task for PanicsTask {
        async fn run(&self, _: &TaskContext) -> Result<Outputs, TaskFailure> {
            if self.later {
                tokio::task::yield_now().await;
                panic!("boom after a wait");
            }
            panic!("boom at once");
        }
    }

    impl TaskConfig for Panics {
        const KIND: &'static str = "panics";
        fn build(self, _: &BuildContext) -> Result<Arc<dyn Task>, Invalid> {
            Ok(Arc::new(PanicsTask { later: self.later }))
        }
    }

    struct Quiet;
    impl crate::executor::Observer for Quiet {
        fn event(&self, _: &crate::executor::Event<'_>) {}
    }

    #[tokio::test]
    async fn a_panicking_task_fails_its_attempt_and_the_run_goes_on() {
        let mut registry = crate::task::Registry::default();
        registry.register::<crate::testkit::Noop>();
        registry.register::<Panics>();
        let text = "name: w\ntasks:\n  now:\n    kind: panics\n    later: false\n  \
                    later:\n    kind: panics\n    later: true\n  fine:\n    kind: noop\n  \
                    after_now:\n    kind: noop\n    after: [now]\n";
        let workflow = crate::load::tests::load_with(text, &registry).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        let store = Arc::new(store);
        let env = super::Env {
            store: &store,
            catalog: store.clone(),
            cancel: Default::default(),
            redactor: Default::default(),
            observer: &Quiet,
        };
        let run = super::start(env, &workflow, "r", "2026-01-01")
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        let tasks = store.tasks("r").unwrap();
        let get = |id: &str| tasks.iter().find(|t| t.task_id == id).unwrap();
        assert_eq!(get("fine").status, TaskStatus::Succeeded);
        assert_eq!(get("now").status, TaskStatus::Failed);
        assert_eq!(get("later").status, TaskStatus::Failed);
        assert_eq!(get("after_now").status, TaskStatus::Skipped);
        for (id, message) in [("now", "boom at once"), ("later", "boom after a wait")] {
            let attempts = store.attempts("r", id).unwrap();
            let error = attempts[0].error.clone().unwrap_or_default();
            assert!(
                error.contains(&format!("the task crashed (it panicked: {message})")),
                "{id}: {error}"
            );
        }
    }
}
