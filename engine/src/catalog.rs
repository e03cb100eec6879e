//! The catalog as task kinds see it: tables by name; nothing else of the state store
//! (the usage counters and the messages sent are [`crate::usage`]'s and [`crate::sent`]'s).
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
}
