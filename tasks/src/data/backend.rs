//! What the data kinds ask of where tables live, and the errors they answer with.
//!
//! A data kind (`sql`, `create_table_as`, `quality_check`, `publish`, `alert`) keeps its
//! logic once, above these traits: its checks, its refusals ([`Refusal`], one text per
//! refusal on every backend), its output lines and its outputs. Two backends implement
//! them: [`crate::data::local::Local`] (DataFusion over the catalog's tables, the
//! warehouse's directories) and [`crate::aws::Athena`] (Athena, the Glue Data Catalog,
//! S3). What differs between them is only how a step is done: the SQL dialect of a
//! CREATE TABLE AS or of publish's insert (a Parquet file renamed into place locally, one
//! Iceberg `MERGE INTO` on Athena), and the extras a backend adds to the outputs
//! ([`Warehouse::extras`]: Athena's query ids).

use orchestrator_engine::task::{Outputs, TaskFailure};
use serde_json::Value;

/// Why a data kind's step did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A rule of the kind said no; nothing was changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// An AWS call or query failed (or was stopped).
    #[error("{}", aws_text(.0))]
    Aws(#[from] orchestrator_aws::AwsError),
    /// The local engine (DataFusion, the warehouse's files, the catalog) failed; the text
    /// says what, and where it can, what to do.
    #[error("{0}")]
    Local(String),
    /// The local SQL engine could not open, read or query the catalog's tables.
    #[error(transparent)]
    Engine(#[from] super::EngineError),
    /// The warehouse's files or the catalog's record of a managed table could not be
    /// changed.
    #[error(transparent)]
    Warehouse(#[from] super::warehouse::WarehouseError),
    /// An engine answered what is not an answer (e.g. a count that is not a number).
    #[error("{0}")]
    Answer(String),
}

fn aws_text(e: &orchestrator_aws::AwsError) -> String {
    match e {
        orchestrator_aws::AwsError::Cancelled(m) => format!("cancelled ({m})"),
        other => other.to_string(),
    }
}

impl From<DataError> for TaskFailure {
    fn from(e: DataError) -> Self {
        TaskFailure::new(e.to_string())
    }
}

/// A data kind's refusals, each worded once for every backend: what is wrong, with names
/// and sample rows, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("table `{table}` does not exist{place}; the steps that build it must run first")]
    NoTable { table: String, place: String },
    #[error("key column `{column}` is not a column of `{table}` (columns: {})", .columns.join(", "))]
    KeyNotAColumn {
        column: String,
        table: String,
        columns: Vec<String>,
    },
    #[error("`{table}` is {why}")]
    NotWritable { table: String, why: String },
    #[error("column `{column}` is {from_type} in `{from}` but {to_type} in `{to}`; cast it in the query that builds `{from}`")]
    TypeDiffers {
        column: String,
        from: String,
        from_type: String,
        to: String,
        to_type: String,
    },
    #[error("column `{column}` of `{from}` is not in `{to}`; drop it from the query that builds `{from}`{hint}")]
    NotInTarget {
        column: String,
        from: String,
        to: String,
        /// How to add it to `to` instead, where the backend can.
        hint: String,
    },
    #[error("column `{column}` of `{to}` is missing from `{from}`; add it to the query that builds `{from}`")]
    NotInSource {
        column: String,
        from: String,
        to: String,
    },
    #[error("{n} rows of `{from}` have a null key ({}){}; add a `not_null` check before publish", .key.join(", "), examples(.sample))]
    NullKeys {
        n: u64,
        from: String,
        key: Vec<String>,
        sample: Vec<Value>,
    },
    #[error("{n} keys ({}) occur more than once in `{from}`{}; add a `unique` check before publish", .key.join(", "), examples(.sample))]
    DuplicateKeys {
        n: u64,
        from: String,
        key: Vec<String>,
        sample: Vec<Value>,
    },
    #[error("table `{table}` does not exist; write `DROP TABLE IF EXISTS {table}` to allow that")]
    DropMissing { table: String },
    /// A name or statement the kind cannot take, said by the check that found it.
    #[error("{0}")]
    Invalid(String),
}

/// `, e.g. {row}, {row}` for a refusal, or nothing without a sample.
fn examples(sample: &[Value]) -> String {
    if sample.is_empty() {
        return String::new();
    }
    let rows: Vec<String> = sample.iter().map(Value::to_string).collect();
    format!(", e.g. {}", rows.join(", "))
}

/// A column name quoted for SQL (DataFusion and Athena both take `"name"`).
pub fn ident(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

/// `"a", "b"`.
pub fn idents(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table as a kind's rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    pub name: String,
    /// (name, type) of each column, in the table's order. Types are compared only with
    /// types of the same backend.
    pub columns: Vec<(String, String)>,
    /// Why publish may not write to it (the rest of "`t` is ..."), or `None`.
    pub read_only: Option<String>,
}

impl TableShape {
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn column(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }
}

/// What a write did, as far as the backend knows without asking again.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Rows written (Athena: its UpdateCount, when it gives one).
    pub rows: Option<u64>,
    /// Rows in the table afterwards.
    pub table_rows: Option<u64>,
    /// Where the table's files are.
    pub location: Option<String>,
}

/// One statement of a `sql` task, as its kind treats it.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `DROP TABLE [IF EXISTS] name[, ...]`.
    Drop { names: Vec<String>, if_exists: bool },
    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] name ... AS query`.
    CreateAs {
        name: String,
        if_not_exists: bool,
        or_replace: bool,
        /// The query (what the local engine runs).
        query: String,
        /// The whole statement as written (what Athena runs).
        text: String,
    },
    /// Anything else: a query, or a statement the backend runs as written.
    Other(String),
}

/// What a data kind needs of a SQL engine to audit a table.
#[async_trait::async_trait]
pub trait SqlEngine: Send + Sync {
    /// Rows `query` returns.
    async fn count(&self, query: &str) -> Result<u64, DataError>;
    /// Up to `n` of them, as JSON objects (numbers as numbers, dates as `YYYY-MM-DD`).
    async fn sample(&self, query: &str, n: usize) -> Result<Vec<Value>, DataError>;
    /// The cells of the first row `query` answers (an aggregate's one row), as counts:
    /// a null (the `sum` of no rows) is 0.
    async fn counts(&self, query: &str) -> Result<Vec<u64>, DataError>;
}

/// A SQL engine with its catalog and storage: everything the data kinds do.
#[async_trait::async_trait]
pub trait Warehouse: SqlEngine {
    /// Where tables are looked up, for "table `t` does not exist{place}".
    fn place(&self) -> String;

    /// Table `name`, or `None` if it does not exist.
    async fn table(&self, name: &str) -> Result<Option<TableShape>, DataError>;

    /// `, or add it to ...` for [`Refusal::NotInTarget`], where the backend can.
    fn add_column_hint(&self, _table: &str, _column: &str, _data_type: &str) -> String {
        String::new()
    }

    /// Whether publish's insert can add a column to `to` (`schema: evolve`).
    fn evolves(&self) -> bool {
        false
    }

    /// A relation holding the rows of `to` that can share a key with `from` (a backend
    /// may narrow `to` to the source's key ranges); `to` itself by default.
    async fn candidates(
        &self,
        to: &str,
        _from: &str,
        _key: &[String],
    ) -> Result<String, DataError> {
        Ok(to.to_string())
    }

    /// Creates `to` holding every row of `from` (audited: no null or repeated key).
    async fn create_from(
        &self,
        to: &str,
        from: &TableShape,
        key: &[String],
        rows: u64,
    ) -> Result<Written, DataError>;

    /// Inserts into `to` the rows of `from` whose key `candidates` does not hold, at once.
    async fn insert_new(
        &self,
        from: &TableShape,
        to: &TableShape,
        candidates: &str,
        key: &[String],
    ) -> Result<Written, DataError>;

    /// Called when a publish found nothing to insert.
    async fn unchanged(&self, _to: &str) -> Result<(), DataError> {
        Ok(())
    }

    /// `create_table_as`: a new table from a SELECT.
    async fn create_table_as(&self, table: &str, select: &str) -> Result<Written, DataError>;

    /// A `sql` task's statements, in order.
    fn parse(&self, sql: &str) -> Result<Vec<Statement>, DataError>;

    /// Drops table `name`, which exists.
    async fn drop_table(&self, name: &str) -> Result<(), DataError>;

    /// A `sql` task's `CREATE TABLE ... AS`.
    async fn create_as(&self, name: &str, query: &str, text: &str) -> Result<Written, DataError>;

    /// Any other statement of a `sql` task; returns the rows it returned (or wrote).
    async fn run_statement(&self, statement: &str) -> Result<u64, DataError>;

    /// What the backend adds to a kind's outputs (e.g. Athena's query ids).
    fn extras(&self) -> Outputs {
        Outputs::new()
    }
}

/// A JSON object as task outputs.
pub fn object(v: Value) -> Outputs {
    match v {
        Value::Object(m) => m,
        _ => Outputs::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_name_the_table_show_a_sample_and_say_what_to_do() {
        let e = Refusal::DuplicateKeys {
            n: 1,
            from: "staged".into(),
            key: vec!["symbol".into(), "date".into()],
            sample: vec![json!({"symbol": "AMD", "date": "2025-04-10", "copies": 2})],
        };
        assert_eq!(
            e.to_string(),
            r#"1 keys (symbol, date) occur more than once in `staged`, e.g. {"symbol":"AMD","date":"2025-04-10","copies":2}; add a `unique` check before publish"#
        );
        let e = Refusal::NullKeys {
            n: 3,
            from: "staged".into(),
            key: vec!["symbol".into()],
            sample: vec![],
        };
        assert_eq!(
            e.to_string(),
            "3 rows of `staged` have a null key (symbol); add a `not_null` check before publish"
        );
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
    }
}
