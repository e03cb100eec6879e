//! `doctor`: checks that a backend can be used, with cheap read-only calls.

use std::path::Path;

use orchestrator_engine::workflow::{AwsBlock, Backend};

use super::{load_on, today};
use crate::console::outln;
use crate::{Context, Error};

pub async fn doctor(
    ctx: &Context,
    file: Option<&Path>,
    backend: Option<Backend>,
    params: Vec<(String, String)>,
) -> Result<u8, Error> {
    // The workflow's `aws:` block, when a file is given (checked as `validate` would).
    let (backend, block) = match file {
        Some(f) => {
            let wf = load_on(
                ctx,
                f,
                params.into_iter().collect(),
                Default::default(),
                "doctor",
                &today(),
                backend,
            )?;
            (wf.backend, wf.aws.unwrap_or_default())
        }
        None => (backend.unwrap_or_default(), AwsBlock::default()),
    };
    if backend == Backend::Local {
        outln!(ctx, "ok: the local backend needs nothing installed; `orchestrator state check` checks the state store");
        return Ok(0);
    }
    let aws = orchestrator_tasks::aws::connect(&block).await;
    let mut problems = 0;
    for line in aws.doctor().await {
        match line {
            Ok(l) => outln!(ctx, "ok: {l}"),
            Err(l) => {
                problems += 1;
                outln!(ctx, "problem: {l}");
            }
        }
    }
    Ok(if problems == 0 { 0 } else { 1 })
}
