//! The operations, one module per group, and what they share: turning the lower layers'
//! errors into [`Error`]s, parsers for dates and params, loading a workflow, and opening
//! the state store for writing or for reading only (or reaching the process that owns it).

pub mod backfill;
pub mod daemon;
pub mod doctor;
pub mod execute;
pub mod inspect;
pub mod notify;
pub mod plugins;
pub mod state;
pub mod tables;
pub mod workflow;

pub use crate::load::{load, load_for_rerun, load_on, today};
pub use crate::store::{find_run, open_reader_or_api, open_store_or_daemon, owner, Reader, Writer};
