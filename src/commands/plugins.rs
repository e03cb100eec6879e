//! `plugins list`, `plugins describe` and `schema`: the task kinds there are and the
//! workflow file's JSON Schema.

use orchestrator_service::{ops, Context, Error};

/// Show the task kinds there are: built in, and plugins in the plugins directory.
#[derive(clap::Subcommand)]
pub enum Plugins {
    /// List every task kind: its name, where it comes from (`builtin` or the plugin's
    /// path) and what it does.
    List {
        /// Print a JSON array of {kind, source, description} (and `error` for a plugin
        /// that cannot describe itself).
        #[arg(long)]
        json: bool,
    },
    /// Show one kind's fields (type, required, default, description), its outputs and
    /// whether it can short-circuit.
    Describe {
        /// The kind, e.g. `publish` or a plugin's name.
        kind: String,
        /// Print it as JSON (the fields as a JSON Schema).
        #[arg(long)]
        json: bool,
    },
}

impl Plugins {
    pub fn exec(self, ctx: &Context) -> Result<u8, Error> {
        match self {
            Plugins::List { json } => ops::plugins::list(ctx, json),
            Plugins::Describe { kind, json } => ops::plugins::describe(ctx, &kind, json),
        }
    }
}

/// Print the JSON Schema (draft 2020-12) of a workflow file, with every built-in kind and
/// the plugins of the plugins directory, for editors (see README, Editing workflows).
#[derive(clap::Args)]
pub struct Schema {}

impl Schema {
    pub fn exec(self, ctx: &Context) -> Result<u8, Error> {
        ops::plugins::schema(ctx)
    }
}
