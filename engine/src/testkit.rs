//! What the engine's own tests share: a `noop` task kind (the real one is in
//! orchestrator-tasks).

use std::sync::Arc;

use crate::task::{BuildContext, Invalid, Outputs, Task, TaskConfig, TaskContext, TaskFailure};

/// `kind: noop`: succeeds at once.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct Noop {}

#[derive(Debug)]
struct NoopTask;

#[async_trait::async_trait]
impl Task for NoopTask {
    async fn run(&self, _: &TaskContext) -> Result<Outputs, TaskFailure> {
        Ok(Default::default())
    }
}

impl TaskConfig for Noop {
    const KIND: &'static str = "noop";
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Task>, Invalid> {
        Ok(Arc::new(NoopTask))
    }
}
