//! `doctor`.

use std::path::PathBuf;

use orchestrator_engine::workflow::Backend;
use orchestrator_service::{ops, Context, Error};

use super::parse;

/// Check that a backend can be used: for `aws`, cheap read-only calls (STS
/// GetCallerIdentity, Glue GetDatabase, Athena GetWorkGroup) that say exactly what is
/// missing or forbidden. Exit 0 if all is well, 1 if not.
#[derive(clap::Args)]
pub struct Doctor {
    /// A workflow whose `aws:` block to check.
    file: Option<PathBuf>,
    /// The backend to check: `local` or `aws` (default: the file's `backend:`).
    #[arg(long, value_parser = parse::backend)]
    backend: Option<Backend>,
    /// Override a declared param of the file (repeatable), as `run` would.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse::param)]
    params: Vec<(String, String)>,
}

impl Doctor {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::doctor::doctor(ctx, self.file.as_deref(), self.backend, self.params).await
    }
}
