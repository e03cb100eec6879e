//! `backfill` and `backfills`.

use std::path::PathBuf;

use orchestrator_service::{ops, Context, Error};

use super::parse;

/// Run a workflow once per logical date of a range (both ends included), recorded as one
/// backfill. Dates come from the workflow's schedule (every day if it has none). Exit 0
/// if every run succeeded, 1 if not.
#[derive(clap::Args)]
pub struct Backfill {
    /// The workflow YAML file (not with --resume).
    file: Option<PathBuf>,
    /// The first logical date, YYYY-MM-DD.
    #[arg(long, value_parser = parse::date)]
    from: Option<String>,
    /// The last logical date, YYYY-MM-DD (included).
    #[arg(long, value_parser = parse::date)]
    to: Option<String>,
    /// `schedule` (the workflow's fire dates; the default) or `daily` (every day).
    #[arg(long, value_name = "schedule|daily")]
    calendar: Option<String>,
    /// Dates that already have runs: `none` leaves them alone, `failed` resumes the
    /// failed ones, `all` starts a new run for every date.
    #[arg(long, default_value = "none", value_name = "none|failed|all")]
    reprocess: String,
    /// Runs at once (within the workflow's `max_active_runs:`, default 1).
    #[arg(long, default_value_t = 1)]
    max_active_runs: u32,
    /// Newest date first.
    #[arg(long)]
    backwards: bool,
    /// Print the dates and what would happen to each; run and record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Continue an interrupted or cancelled backfill.
    #[arg(long, value_name = "ID")]
    resume: Option<String>,
    /// Override a declared param in every run (repeatable): --param symbol=NVDA
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse::param)]
    params: Vec<(String, String)>,
    /// Print the header and the summary, not a line per date.
    #[arg(long, short)]
    quiet: bool,
}

impl Backfill {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        let args = ops::backfill::Args {
            file: self.file,
            from: self.from,
            to: self.to,
            calendar: self.calendar,
            reprocess: self.reprocess,
            max_active_runs: self.max_active_runs,
            backwards: self.backwards,
            dry_run: self.dry_run,
            resume: self.resume,
            params: self.params,
            quiet: self.quiet,
        };
        ops::backfill::backfill(ctx, args).await
    }
}

/// List backfills, newest first, with how many of their dates succeeded, failed, ...
#[derive(clap::Args)]
pub struct Backfills {
    /// Print JSON (a list of {id, workflow, from, to, status, dates, ...}).
    #[arg(long)]
    json: bool,
}

impl Backfills {
    pub async fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::backfill::backfills(ctx, self.json).await
    }
}
