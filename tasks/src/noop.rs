//! `kind: noop` — does nothing and succeeds. For joins, placeholders and measuring the
//! engine's own overhead.

use std::sync::Arc;

use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;

/// Does nothing and succeeds: joins, placeholders, and measuring the engine's overhead.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {}

impl TaskConfig for NoopConfig {
    const KIND: &'static str = "noop";

    fn build(self, _: &BuildContext) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        Ok(Arc::new(Noop))
    }
}

#[derive(Debug)]
struct Noop;

#[async_trait::async_trait]
impl Task for Noop {
    async fn run(&self, _: &TaskContext) -> Result<Outputs, TaskFailure> {
        Ok(Outputs::new())
    }
}
