//! `run` and `rerun`.

use std::path::PathBuf;

use orchestrator_engine::workflow::Backend;
use orchestrator_service::{ops, Context, Error};

use super::parse;

/// Validate and run a workflow; prints the run id first, one line per task transition,
/// and a summary table. Exit 0 if the run succeeded, 1 if not.
#[derive(clap::Args)]
pub struct Run {
    /// The workflow YAML file.
    file: PathBuf,
    /// Override a declared param (repeatable): --param greeting=hi
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse::param)]
    params: Vec<(String, String)>,
    /// The logical date of the run (`{{ run.date }}`), YYYY-MM-DD; default today (UTC).
    #[arg(long, value_parser = parse::date)]
    date: Option<String>,
    /// Print only the run id and the summary, not each transition.
    #[arg(long, short)]
    quiet: bool,
    /// Where the data tasks run: `local` or `aws` (overrides the file's `backend:`;
    /// a rerun runs where the run ran).
    #[arg(long, value_parser = parse::backend)]
    backend: Option<Backend>,
}

impl Run {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::execute::run(
            ctx,
            &self.file,
            self.params,
            self.date,
            self.quiet,
            self.backend,
        )
        .await
    }
}

/// Resume a run: re-execute its failed, cancelled and skipped tasks and everything
/// downstream, using the workflow file's current definition. Succeeded tasks keep their
/// results.
#[derive(clap::Args)]
pub struct Rerun {
    /// The run's id, as `runs` lists it.
    run_id: String,
    /// Also re-execute this task and everything downstream, even if they succeeded.
    #[arg(long, value_name = "TASK")]
    from: Option<String>,
    /// Print only the run id and the summary, not each transition.
    #[arg(long, short)]
    quiet: bool,
}

impl Rerun {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::execute::rerun(ctx, &self.run_id, self.from.as_deref(), self.quiet).await
    }
}
