//! End-to-end tests of the `orchestrator` binary: each test writes workflows into a
//! temporary directory, runs the real binary there, and inspects what it printed,
//! what the state store says (`show --json`) and what the tasks left on disk.

mod common;

mod alerts;
mod aws;
mod backends;
mod backfill;
mod browser;
mod cli;
mod crash;
mod crashloop;
mod daemon;
mod daily;
mod data;
mod delta;
mod gc;
mod hostile;
mod ingest;
mod intraday;
mod lineage;
mod metrics;
mod migrate;
mod notify;
mod plugins;
mod readme;
mod replicate;
mod rerun;
mod retries;
mod safe;
mod state;
mod triggers;
mod ui;
mod validation;
