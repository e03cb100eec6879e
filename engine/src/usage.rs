//! Daily usage counters of the external services task kinds call (e.g. an API's quota of
//! calls per day), kept across runs and processes.

use orchestrator_state::{StateError, Store};

pub trait UsageCounters: Send + Sync {
    /// Calls counted against `counter` on `day` (UTC `YYYY-MM-DD`), across runs.
    fn count(&self, counter: &str, day: &str) -> Result<u64, StateError>;
    /// Adds `calls`, durably; returns the new total.
    fn add(&self, counter: &str, day: &str, calls: u64) -> Result<u64, StateError>;
}

impl UsageCounters for Store {
    fn count(&self, counter: &str, day: &str) -> Result<u64, StateError> {
        Store::usage(self, counter, day)
    }

    fn add(&self, counter: &str, day: &str, calls: u64) -> Result<u64, StateError> {
        Store::add_usage(self, counter, day, calls)
    }
}
