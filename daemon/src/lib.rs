//! The daemon: one long-running process that starts every scheduled workflow on time.
//!
//! **Interface.** [`run`] takes the workflows directory, the open store, a [`Loader`]
//! (the binary's: it knows the task registry and the environment) and a [`Prepare`]
//! hook (checks before a run, e.g. warehouse ownership), and returns when `shutdown` is
//! cancelled and every run has stopped.
//!
//! **Shape.** One event loop owns all scheduling state: it sleeps until the earliest fire
//! time, a file change in the workflows directory (notify; no polling), a finished run,
//! or shutdown. Runs execute in their own tokio tasks through the engine's runner, at
//! most `max_runs` at once, and report back on a channel.
//!
//! **Pieces.** The decisions are separate from their effects:
//! - `policy`: what the schedule decides, as pure functions of a workflow's settings,
//!   the daemon's records and `now` (what is due, `concurrency:`, `catchup:`,
//!   `deadline:`, where the schedule record stands, the next wake-up); table-tested on
//!   a fake clock. The cron/rate/DST arithmetic is the engine's `Schedule`.
//! - `event_loop`: [`run`], the `Daemon` that owns all state, the `select!` loop, and
//!   the graceful stop.
//! - `firing`: applies `policy`'s decisions: commits the schedule record, logs, starts,
//!   queues, skips, cancels; catch-up at start, deadline checks.
//! - `reload`: watches and rescans the workflows directory; (re)schedules what validates.
//! - `files`: file triggers (`on: files:`): watchers, debounce, batches.
//! - `runs`: starts and resumes runs in their own tasks; their end, `retention:`.
//! - `commands`: requests from other processes (trigger, run, rerun, cancel, status).
//! - `api`: the public types ([`Config`], [`Command`], [`Refused`], [`Status`], …).
//!
//! **Invariants.**
//! - A fire time is persisted as handled (`ScheduleRecord`) before its run starts, so a
//!   restart never starts it twice; catch-up after downtime starts from it.
//! - A workflow never has two runs at once: a due run is skipped (recorded `skipped`
//!   with the reason), queued, or replaces the running one, per `concurrency:`.
//! - An edit that does not validate never unschedules a workflow: the previous valid
//!   version stays in force, and the error is logged with file:line.

mod api;
mod commands;
mod event_loop;
mod files;
mod firing;
mod policy;
mod reload;
mod runs;

pub use api::{
    commands, Command, Commands, Config, Loader, Prepare, Refused, RefusedKind, RunParams, Status,
    Stopped, WorkflowStatus,
};
pub use event_loop::run;
