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

/// List the catalog's tables.
#[derive(clap::Args)]
pub struct Tables {
    /// Print JSON (a list of table records).
    #[arg(long)]
    json: bool,
}

impl Tables {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::inspect::tables(ctx, self.json).await
    }
}
