//! `runs`, `show`, `query` and `tables`.

use orchestrator_service::{ops, Context, Error};

use super::parse;

/// List runs, newest first.
#[derive(clap::Args)]
pub struct Runs {
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// At most this many runs (1 or more).
    #[arg(long, default_value_t = 20, value_parser = parse::limit)]
    limit: u64,
    /// Print JSON (a list of {id, workflow, status, logical_date, started_at, ended_at, trigger}).
    #[arg(long)]
    json: bool,
}

impl Runs {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::inspect::runs(ctx, self.workflow.as_deref(), self.limit, self.json).await
    }
}

/// Show one run: every task's status, attempts, duration, error and output tail.
#[derive(clap::Args)]
pub struct Show {
    /// The run's id, as `runs` lists it.
    run_id: String,
    /// Print JSON (see README for the format).
    #[arg(long)]
    json: bool,
}

impl Show {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::inspect::show(ctx, &self.run_id, self.json).await
    }
}

/// Run read-only SQL against the catalog's tables (the local Athena console).
#[derive(clap::Args)]
pub struct Query {
    /// One SELECT (or WITH, EXPLAIN, SHOW TABLES, SHOW COLUMNS, DESCRIBE) statement.
    sql: String,
    /// Print a JSON array with one object per row, keyed by column name.
    #[arg(long)]
    json: bool,
}

impl Query {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::inspect::query(ctx, self.sql, self.json).await
    }
}

/// List the catalog's tables; `history` and `restore` for a published (Delta) table.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Tables {
    /// Print JSON (a list of table records).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<TableAction>,
}

#[derive(clap::Subcommand)]
enum TableAction {
    /// List a published table's versions, newest first: time, operation, the run and
    /// task that committed it, rows added.
    History {
        /// The table, as `tables` lists it.
        table: String,
        /// Print JSON (a list of {version, time, operation, run_id, task_id, rows_added,
        /// restored_to}).
        #[arg(long)]
        json: bool,
    },
    /// Undo publishes by restoring an earlier version of a published table (as a new
    /// version). Shows which runs' publishes it undoes; changes nothing without --yes.
    Restore {
        /// The table, as `tables` lists it.
        table: String,
        /// The version to go back to (`tables history` lists them).
        #[arg(
            long,
            conflicts_with = "before_run",
            required_unless_present = "before_run"
        )]
        version: Option<u64>,
        /// Go back to the version before this run's publish.
        #[arg(long, value_name = "RUN_ID")]
        before_run: Option<String>,
        /// Restore; without it, only show what would be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Compact a published table's small files into few large ones, as a new version
    /// with the same rows. Earlier versions stay readable until `vacuum`.
    Optimize {
        /// The table, as `tables` lists it.
        table: String,
        /// Z-order the files by these columns (comma-separated), so that queries
        /// filtering on them skip more files.
        #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
        zorder_by: Vec<String>,
    },
    /// Delete a published table's files that left it (by optimize or restore) more than
    /// --older-than ago. Versions older than that can no longer be read.
    Vacuum {
        /// The table, as `tables` lists it.
        table: String,
        /// How long a removed file is kept, e.g. 7d, 30d; at least 7d.
        #[arg(long, value_name = "AGE", value_parser = super::parse::age)]
        older_than: std::time::Duration,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl Tables {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        match self.action {
            None => ops::inspect::tables(ctx, self.json).await,
            Some(TableAction::History { table, json }) => {
                ops::tables::history(ctx, &table, json).await
            }
            Some(TableAction::Optimize { table, zorder_by }) => {
                ops::tables::optimize(ctx, &table, zorder_by).await
            }
            Some(TableAction::Vacuum {
                table,
                older_than,
                dry_run,
            }) => ops::tables::vacuum(ctx, &table, older_than, dry_run).await,
            Some(TableAction::Restore {
                table,
                version,
                before_run,
                yes,
            }) => {
                let target = match (version, before_run) {
                    (Some(v), _) => ops::tables::Target::Version(v),
                    (None, Some(run)) => ops::tables::Target::BeforeRun(run),
                    (None, None) => {
                        return Err(Error::invalid(
                            "error: give --version N or --before-run RUN_ID",
                        ))
                    }
                };
                ops::tables::restore(ctx, &table, target, yes).await
            }
        }
    }
}
