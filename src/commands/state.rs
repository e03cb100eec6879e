//! `state check`, `state recover` and `gc`.

use std::path::PathBuf;

use orchestrator_service::{ops, Context, Error};

use super::parse;

/// Check or repair the state store.
#[derive(clap::Subcommand)]
pub enum State {
    /// Verify the state store without changing it: every record, the run index, the
    /// catalog's table locations, sled's files, free space, recovery points and leftover
    /// staging files. Exit 0 if healthy, 1 if not.
    Check,
    /// Rebuild a damaged or lost store from its last good recovery point, then register
    /// managed tables found in the warehouse that the recovery point does not know. The
    /// damaged db is kept beside it (`db.damaged-TIME`). Says what was recovered and what
    /// was lost.
    Recover {
        /// Also look for tables in this warehouse (repeatable). The state dir's own
        /// `warehouse/` and the warehouses of recovered tables are always searched.
        #[arg(long, value_name = "DIR")]
        warehouse: Vec<PathBuf>,
        /// Rebuild even if the store opens and reads cleanly.
        #[arg(long)]
        force: bool,
        /// Rebuild from a replica (`--replicate URL` of the lost host: s3://bucket/prefix
        /// or a directory) into a state dir that holds no store.
        #[arg(long, value_name = "URL", conflicts_with_all = ["warehouse", "force"])]
        from: Option<String>,
    },
}

impl State {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        match self {
            State::Check => ops::state::check(ctx).await,
            State::Recover {
                from: Some(url), ..
            } => ops::state::recover_from(ctx, &url).await,
            State::Recover {
                warehouse, force, ..
            } => ops::state::recover(ctx, warehouse, force).await,
        }
    }
}

/// Delete runs older than --older-than that nothing needs any more, then compact the
/// state db. Keeps runs still running, runs a `rerun` may still resume (not succeeded and
/// not replaced by a later run of the same date), runs of unfinished backfills and runs
/// with notifications still being delivered. The catalog is never touched.
#[derive(clap::Args)]
pub struct Gc {
    /// Age of the runs to delete, e.g. 90d, 12w. Without it, each workflow's
    /// `retention:` (workflows without one are left alone).
    #[arg(long, value_parser = parse::age)]
    older_than: Option<std::time::Duration>,
    /// Only this workflow's runs.
    #[arg(long)]
    workflow: Option<String>,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow an --older-than under one day (it deletes runs of the last hours).
    #[arg(long)]
    force: bool,
}

impl Gc {
    pub fn exec(self, ctx: &Context) -> Result<u8, Error> {
        let gc = ops::state::Gc {
            older_than: self.older_than,
            workflow: self.workflow,
            dry_run: self.dry_run,
            force: self.force,
        };
        ops::state::gc(ctx, gc)
    }
}
