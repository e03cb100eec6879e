//! The commands: each module owns its arguments (`#[derive(clap::Args)]`) and turns them
//! into a call of the service layer (`orchestrator_service::ops`), which does the work
//! and prints through the context's console. Nothing else happens here.

pub mod backfill;
pub mod daemon;
pub mod doctor;
pub mod inspect;
pub mod notify;
pub mod parse;
pub mod plugins;
pub mod run;
pub mod state;
pub mod workflow;
