//! The catalog as task kinds see it: tables by name, and daily usage counters of the
//! external services they call; nothing else of the state store.
//!
//! The local stand-in for the Glue Data Catalog. [`Store`] implements it (tables persist in
//! the state dir, so they survive across runs and processes); tests may use an in-memory one.

use orchestrator_state::{StateError, Store, TableRecord, Write};

pub trait Catalog: Send + Sync {
    fn table(&self, name: &str) -> Result<Option<TableRecord>, StateError>;
    /// Every table, by name.
    fn tables(&self) -> Result<Vec<TableRecord>, StateError>;
    /// Creates or replaces a table, durably.
    fn put_table(&self, table: TableRecord) -> Result<(), StateError>;
    /// Removes a table's entry, durably (its files are the caller's business).
    fn drop_table(&self, name: &str) -> Result<(), StateError>;
    /// Calls counted against `counter` on `day` (UTC `YYYY-MM-DD`), across runs.
    fn usage(&self, counter: &str, day: &str) -> Result<u64, StateError>;
    /// Adds `calls`, durably; returns the new total.
    fn add_usage(&self, counter: &str, day: &str, calls: u64) -> Result<u64, StateError>;
    /// The run that already sent message `key` (e.g. an alert for one row), if any.
    fn sent(&self, key: &str) -> Result<Option<String>, StateError>;
    /// Records, durably, that `run_id` sent message `key`.
    fn mark_sent(&self, key: &str, run_id: &str) -> Result<(), StateError>;
}

impl Catalog for Store {
    fn table(&self, name: &str) -> Result<Option<TableRecord>, StateError> {
        Store::table(self, name)
    }

    fn tables(&self) -> Result<Vec<TableRecord>, StateError> {
        Store::tables(self)
    }

    fn put_table(&self, table: TableRecord) -> Result<(), StateError> {
        self.commit(&[Write::Table(table)])
    }

    fn drop_table(&self, name: &str) -> Result<(), StateError> {
        self.commit(&[Write::DropTable(name.to_string())])
    }

    fn usage(&self, counter: &str, day: &str) -> Result<u64, StateError> {
        Store::usage(self, counter, day)
    }

    fn add_usage(&self, counter: &str, day: &str, calls: u64) -> Result<u64, StateError> {
        Store::add_usage(self, counter, day, calls)
    }

    fn sent(&self, key: &str) -> Result<Option<String>, StateError> {
        Ok(Store::sent(self, key)?.map(|r| r.run_id))
    }

    fn mark_sent(&self, key: &str, run_id: &str) -> Result<(), StateError> {
        self.commit(&[Write::Sent(orchestrator_state::SentRecord {
            key: key.to_string(),
            at: chrono::Utc::now(),
            run_id: run_id.to_string(),
        })])
    }
}
