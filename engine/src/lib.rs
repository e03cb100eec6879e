//! The workflow engine: the workflow model, YAML loading and validation, the DAG,
//! trigger rules, templates, the task plugin boundary and the executor.
//!
//! Dependencies point one way: `state` ← `engine` ← `tasks` ← the `orchestrator`
//! binary. The engine knows the state store only through `orchestrator_state`'s API,
//! and task kinds only through the [`task::Task`] trait and the [`task::Registry`].

pub mod arrival;
pub mod backend;
pub mod backfill;
pub mod catalog;
pub mod channel;
pub mod dag;
pub mod diag;
pub mod error;
pub mod executor;
pub mod late;
pub mod lineage;
pub mod load;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod orphans;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod sent;
pub mod suggest;
pub mod task;
pub mod template;
#[cfg(test)]
mod testkit;
pub mod trigger;
pub mod usage;
pub mod workflow;
pub mod yaml;

pub use orchestrator_state as state;
pub use tokio_util::sync::CancellationToken;
