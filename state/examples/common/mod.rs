//! What the store's benchmarks (`bench_seal`, `bench_commit`) share.

use chrono::Utc;
use orchestrator_state::{RunRecord, RunStatus};

/// A running run `r1` of a chain of `n` tasks `t0`..`tN-1`.
pub fn chain_run(n: usize) -> RunRecord {
    RunRecord {
        id: "r1".into(),
        workflow: "chain".into(),
        workflow_path: "/tmp/chain.yaml".into(),
        definition: "name: chain".into(),
        params: Default::default(),
        logical_date: "2026-01-02".into(),
        status: RunStatus::Running,
        started_at: Utc::now(),
        ended_at: None,
        pid: std::process::id(),
        reruns: 0,
        task_order: (0..n).map(|i| format!("t{i}")).collect(),
        trigger: None,
        note: None,
        backend: None,
        channels_file: None,
        trigger_files: vec![],
        resume_pending: false,
        execution_started_at: None,
    }
}
