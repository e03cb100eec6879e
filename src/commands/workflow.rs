//! `validate`, `graph` and `next`: commands that read a workflow file and nothing else.

use std::path::PathBuf;

use orchestrator_engine::workflow::Backend;
use orchestrator_service::ops::workflow::GraphFormat;
use orchestrator_service::{ops, Context, Error};

use super::parse;

/// Check a workflow file and report every problem found (exit 2 if any).
#[derive(clap::Args)]
pub struct Validate {
    /// The workflow YAML file.
    file: PathBuf,
    /// Check it with a param overridden (repeatable), as `run --param` would.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse::param)]
    params: Vec<(String, String)>,
    /// Check it as it would run on this backend (`aws` checks the `aws:` block, without
    /// calling AWS).
    #[arg(long, value_parser = parse::backend)]
    backend: Option<Backend>,
}

impl Validate {
    pub fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::workflow::validate(ctx, &self.file, self.params, self.backend)
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Dot,
    Mermaid,
}

/// Print a workflow's task graph.
#[derive(clap::Args)]
pub struct Graph {
    /// The workflow YAML file.
    file: PathBuf,
    /// `dot` (Graphviz) or `mermaid`.
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    format: Format,
}

impl Graph {
    pub fn exec(self, ctx: &Context) -> Result<u8, Error> {
        let format = match self.format {
            Format::Dot => GraphFormat::Dot,
            Format::Mermaid => GraphFormat::Mermaid,
        };
        ops::workflow::graph(ctx, &self.file, format)
    }
}

/// Print a workflow's next fire times (from its `schedule:`), in UTC and in its time
/// zone, to check a schedule before deploying it.
#[derive(clap::Args)]
pub struct Next {
    /// The workflow YAML file (it must have a `schedule:`).
    file: PathBuf,
    /// How many fire times.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    count: u64,
    /// Fire times after this instant (exclusive), RFC 3339, e.g. 2026-03-06T12:00:00Z;
    /// default now. For `rate()` it is the schedule's start.
    #[arg(long, value_parser = parse::instant)]
    after: Option<chrono::DateTime<chrono::Utc>>,
    /// Print JSON: a list of {"utc": ..., "local": ...}.
    #[arg(long)]
    json: bool,
}

impl Next {
    pub fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::workflow::next(ctx, &self.file, self.count, self.after, self.json)
    }
}
