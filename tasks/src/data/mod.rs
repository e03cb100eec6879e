//! The embedded data plane: Apache DataFusion plays Athena over the catalog's tables.
//!
//! Every SQL-running task builds a [`SessionContext`] with every catalog table registered
//! (a listing table over its directory), so tables created or crawled by one run are
//! queryable by the next, and by `orchestrator query`.
//!
//! Query plans are CPU-heavy; DataFusion's guidance is not to run them on the runtime that
//! drives I/O and timers. They run on a dedicated runtime ([`on_engine`]), so the executor's
//! event loop stays responsive (timeouts, cancellation, other tasks' output).

pub mod as_of;
pub mod backend;
pub mod crawl;
pub mod create_table_as;
mod csv_scan;
pub mod delta;
pub mod isolated;
pub mod local;
pub mod maintenance;
pub mod memory;
pub mod publish;
pub mod quality;
pub mod sql;
pub mod warehouse;
mod window;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::state::{StateError, TableRecord};
use orchestrator_engine::task::{At, Invalid, TaskFailure};

pub use datafusion;

/// Why the embedded SQL engine (DataFusion over the catalog's tables) did not answer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's runtime could not start (threads, file descriptors).
    #[error("cannot start the SQL engine's runtime: {0}")]
    Runtime(#[source] Arc<std::io::Error>),
    /// A job on the engine's runtime panicked: a bug.
    #[error("the SQL engine crashed ({0}); this is a bug, please report it")]
    Crashed(#[source] tokio::task::JoinError),
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] StateError),
    #[error("catalog table `{table}` has unknown format `{format}`")]
    UnknownFormat { table: String, format: String },
    #[error("catalog table `{table}` column `{column}` has type `{data_type}` that this version cannot read ({source})")]
    ColumnType {
        table: String,
        column: String,
        data_type: String,
        #[source]
        source: ArrowError,
    },
    /// A catalog table's files could not be listed as a table.
    #[error("cannot register table `{table}` from {location}: {source}")]
    Register {
        table: String,
        location: String,
        #[source]
        source: DataFusionError,
    },
    /// A Delta table could not be opened.
    #[error("cannot read table `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<delta::DeltaError>,
    },
    /// Planning or running a query failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A query that must answer one row (an aggregate) answered none.
    #[error("no row from {sql}")]
    NoRow { sql: String },
    /// A query typed by a person failed; the text explains it ([`explain_sql_error`]).
    #[error("{0}")]
    Query(String),
    /// Rows could not be turned into JSON.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Utf8(#[from] std::string::FromUtf8Error),
    /// `ORCHESTRATOR_SORT_MEMORY_MB` is not a budget.
    #[error(transparent)]
    MemoryLimit(#[from] memory::LimitError),
}

impl From<EngineError> for TaskFailure {
    fn from(e: EngineError) -> Self {
        TaskFailure::new(e.to_string())
    }
}

/// File formats a table can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Json,
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
        }
    }

    /// The file extension (with dot) files of this format must have.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => ".csv",
            Format::Json => ".json",
            Format::Parquet => ".parquet",
        }
    }

    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        [Format::Csv, Format::Json, Format::Parquet]
            .into_iter()
            .find(|f| f.name() == name)
    }

    fn file_format(self) -> Arc<dyn FileFormat> {
        match self {
            Format::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
            Format::Json => Arc::new(JsonFormat::default()),
            Format::Parquet => Arc::new(ParquetFormat::default()),
        }
    }

    /// Listing options for a table of this format with these partition columns.
    pub fn listing_options(self, partition_columns: &[String]) -> ListingOptions {
        ListingOptions::new(self.file_format())
            .with_file_extension(self.extension())
            .with_table_partition_cols(
                partition_columns
                    .iter()
                    .map(|c| (c.clone(), DataType::Utf8))
                    .collect(),
            )
    }
}

/// Runs `fut` on the data-plane runtime and waits for it from the caller's runtime.
pub async fn on_engine<F, T>(fut: F) -> Result<T, EngineError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, Arc<std::io::Error>>> =
        OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("datafusion")
            .enable_all()
            .build()
            .map_err(Arc::new)
    });
    match runtime {
        Ok(rt) => rt.spawn(fut).await.map_err(EngineError::Crashed),
        Err(e) => Err(EngineError::Runtime(e.clone())),
    }
}

/// The file schema a catalog table declares (partition columns excluded).
pub fn schema_of(table: &TableRecord) -> Result<SchemaRef, EngineError> {
    let fields = table
        .columns
        .iter()
        .map(|c| {
            DataType::from_str(&c.data_type)
                .map(|t| Field::new(&c.name, t, c.nullable))
                .map_err(|source| EngineError::ColumnType {
                    table: table.name.clone(),
                    column: c.name.clone(),
                    data_type: c.data_type.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// A session with every catalog table registered under its name.
pub async fn session(catalog: &dyn Catalog) -> Result<SessionContext, EngineError> {
    register_all(
        new_session(datafusion::prelude::SessionConfig::new())?,
        catalog,
    )
    .await
}

/// A DataFusion session with this crate's physical optimizations
/// ([`window::MovingWindows`]), on the process's one runtime (its sorts' memory budget
/// and spill files, [`memory::runtime`]).
fn new_session(config: datafusion::prelude::SessionConfig) -> Result<SessionContext, EngineError> {
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(memory::runtime()?)
        .with_default_features()
        .with_physical_optimizer_rules(window::MovingWindows::with_default_rules())
        .build();
    Ok(SessionContext::new_with_state(state))
}

async fn register_all(
    ctx: SessionContext,
    catalog: &dyn Catalog,
) -> Result<SessionContext, EngineError> {
    let tables = catalog.tables()?;
    for table in tables {
        register(&ctx, &table).await?;
    }
    Ok(ctx)
}

/// The catalog's name for a Delta table's format.
pub const DELTA: &str = "delta";

/// Registers one catalog table in `ctx`: a Delta table at its latest version, any other
/// as a listing table over its directory.
pub async fn register(ctx: &SessionContext, table: &TableRecord) -> Result<(), EngineError> {
    if table.format == DELTA {
        let dir = Path::new(&table.location);
        let provider = async {
            let t = delta::read(dir, None).await?;
            delta::provider(dir, &t).await
        }
        .await
        .map_err(|e| EngineError::Delta {
            table: table.name.clone(),
            source: Box::new(e),
        })?;
        ctx.register_table(table.name.as_str(), provider)
            .map_err(|source| EngineError::Register {
                table: table.name.clone(),
                location: table.location.clone(),
                source,
            })?;
        return Ok(());
    }
    let format = Format::parse(&table.format).ok_or_else(|| EngineError::UnknownFormat {
        table: table.name.clone(),
        format: table.format.clone(),
    })?;
    let schema = schema_of(table)?;
    let url = dir_url(Path::new(&table.location));
    ctx.register_listing_table(
        table.name.as_str(),
        url,
        format.listing_options(&table.partition_columns),
        Some(schema),
        None,
    )
    .await
    .map_err(|source| EngineError::Register {
        table: table.name.clone(),
        location: table.location.clone(),
        source,
    })
}

/// A listing-table URL for a directory (the trailing slash makes it a directory).
pub fn dir_url(dir: &Path) -> String {
    let s = dir.display().to_string();
    if s.ends_with('/') {
        s
    } else {
        format!("{s}/")
    }
}

pub use backend::SqlEngine;

/// Runs read-only SQL (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE) against the catalog.
pub async fn query(
    catalog: Arc<dyn Catalog>,
    sql: String,
) -> Result<Vec<RecordBatch>, EngineError> {
    let tables = catalog.tables()?;
    query_tables(tables, sql).await
}

/// [`query`] over the given catalog tables (what an isolated query's child gets).
pub async fn query_tables(
    tables: Vec<orchestrator_engine::state::TableRecord>,
    sql: String,
) -> Result<Vec<RecordBatch>, EngineError> {
    let catalog: Arc<dyn Catalog> = Arc::new(isolated::Tables(tables));
    on_engine(async move {
        // The information schema makes `SHOW TABLES` and `SHOW COLUMNS FROM t` work.
        let config = datafusion::prelude::SessionConfig::new().with_information_schema(true);
        let ctx = register_all(new_session(config)?, catalog.as_ref()).await?;
        ctx.register_udtf(
            as_of::NAME,
            Arc::new(as_of::AsOf::new(catalog.tables().unwrap_or_default())),
        );
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let tables: Vec<String> = catalog
            .tables()
            .map(|t| t.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        let explain = |e: DataFusionError| {
            EngineError::Query(explain_sql_error(
                &sql,
                &query_error(&e.to_string()),
                &tables,
            ))
        };
        let df = ctx.sql_with_options(&sql, options).await.map_err(explain)?;
        df.collect().await.map_err(explain)
    })
    .await?
}

/// A parser error's text and 1-based (line, column), from DataFusion's
/// `SQL error: ParserError("Expected: ), found: * at Line: 1, Column: 35")`.
fn syntax_error(error: &str) -> Option<(&str, Option<(usize, usize)>)> {
    let start = error.find("ParserError(\"")?;
    let inner = &error[start + "ParserError(\"".len()..];
    let inner = inner.strip_suffix("\")").unwrap_or(inner);
    let Some((what, at)) = inner.rsplit_once(" at Line: ") else {
        return Some((inner, None));
    };
    let at = at.split_once(", Column: ").and_then(|(l, c)| {
        Some((
            l.trim().parse::<usize>().ok()?,
            c.trim().parse::<usize>().ok()?,
        ))
    });
    Some((what, at))
}

/// Parses a task's SQL when the workflow loads. A syntax error points at its line and
/// column inside the YAML value of `field`; other errors are the task's.
/// The tables a SQL text reads (not its CTEs), as written; none if it does not parse
/// in DataFusion's dialect. For lineage only: nothing is decided by it.
pub(crate) fn tables_read(sql: &str) -> Vec<String> {
    let Ok(statements) = datafusion::sql::parser::DFParser::parse_sql(sql) else {
        return Vec::new();
    };
    let mut tables: Vec<String> = statements
        .iter()
        .filter_map(|s| datafusion::sql::resolve::resolve_table_references(s, true).ok())
        .flat_map(|(relations, _ctes)| relations)
        .map(|t| t.table().to_string())
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

pub(crate) fn check_syntax(
    sql: &str,
    field: &'static str,
) -> Result<Vec<datafusion::sql::parser::Statement>, Invalid> {
    match datafusion::sql::parser::DFParser::parse_sql(sql) {
        Ok(statements) => Ok(statements.into_iter().collect()),
        Err(e) => {
            let text = e.to_string();
            match syntax_error(&text) {
                Some((what, Some((line, column)))) => Err(Invalid::at(
                    format!("SQL syntax error in `{field}`: {what}"),
                    At {
                        field,
                        line,
                        column,
                    },
                )),
                Some((what, None)) => Err(format!("SQL syntax error in `{field}`: {what}").into()),
                None => Err(format!("invalid SQL in `{field}`: {text}").into()),
            }
        }
    }
}

/// A task's SQL error when it runs: explained as [`explain_sql_error`] does, against the
/// catalog's tables, and followed by where the SQL is (`in `sql:` at FILE:LINE`).
pub(crate) fn explain_task_sql_error(
    catalog: &dyn Catalog,
    sql: &str,
    error: &datafusion::error::DataFusionError,
    field: &str,
    location: Option<&str>,
) -> String {
    let tables: Vec<String> = catalog
        .tables()
        .map(|t| t.into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    let mut out = explain_sql_error(sql, &error.to_string(), &tables);
    if let Some(at) = location {
        out.push_str(&format!("\n  in `{field}:` at {at}"));
    }
    out
}

/// DataFusion's error made actionable: a syntax error shows the SQL line with a caret
/// under the column; an unknown column or table names the closest real one.
pub fn explain_sql_error(sql: &str, error: &str, tables: &[String]) -> String {
    if let Some((what, at)) = syntax_error(error) {
        let mut out = format!("SQL syntax error: {what}");
        if let Some((line, column)) = at {
            out.push_str(&format!(" (line {line}, column {column})"));
            if let Some(text) = sql.lines().nth(line.saturating_sub(1)) {
                let pad: String = text
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("\n  {text}\n  {pad}^"));
            }
        }
        return out;
    }
    // `Schema error: No field named nope. Valid fields are bars.symbol, bars.date.`
    if let Some(start) = error.find("No field named ") {
        let rest = &error[start + "No field named ".len()..];
        // DataFusion 55 may add "Did you mean 'bars.close'?" and puts a line break
        // before "Valid fields are": the name is the first word.
        let field = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches('.');
        let valid = rest
            .split_once("Valid fields are ")
            .map(|(_, v)| v.trim().trim_end_matches('.'))
            .unwrap_or("");
        let field = field.trim_matches('"');
        let columns: Vec<&str> = valid
            .split(", ")
            .filter(|c| !c.is_empty())
            .map(|c| c.rsplit('.').next().unwrap_or(c).trim_matches('"'))
            .collect();
        let bare = field.rsplit('.').next().unwrap_or(field);
        let mut out = format!("unknown column `{field}`");
        if let Some(near) = orchestrator_engine::suggest::closest(bare, columns.iter().copied()) {
            out.push_str(&format!("; did you mean `{near}`?"));
        }
        if !columns.is_empty() {
            out.push_str(&format!(" (columns: {})", columns.join(", ")));
        }
        return out;
    }
    // `Error during planning: table 'datafusion.public.stock' not found`
    if let Some(start) = error.find("table '") {
        let rest = &error[start + "table '".len()..];
        if let Some((name, tail)) = rest.split_once('\'') {
            if tail.trim_start().starts_with("not found") {
                let name = name.rsplit('.').next().unwrap_or(name);
                let mut out = format!("unknown table `{name}`");
                if let Some(near) =
                    orchestrator_engine::suggest::closest(name, tables.iter().map(String::as_str))
                {
                    out.push_str(&format!("; did you mean `{near}`?"));
                }
                if tables.is_empty() {
                    out.push_str(" (the catalog has no tables yet: a `crawl` or `create_table_as` task creates them)");
                } else {
                    out.push_str(&format!(
                        " (tables: {}; `orchestrator tables` lists them)",
                        tables.join(", ")
                    ));
                }
                return out;
            }
        }
    }
    error.to_string()
}

fn query_error(e: &str) -> String {
    if e.contains("not supported")
        && (e.contains("DDL") || e.contains("DML") || e.contains("Statement"))
    {
        format!("{e}; `orchestrator query` is read-only: change tables with `sql`, `create_table_as` or `publish` tasks")
    } else {
        e.to_string()
    }
}

/// Runs a query whose first column of the first row is an integer (a count) and returns it.
pub async fn scalar_u64(ctx: &SessionContext, sql: &str) -> Result<u64, EngineError> {
    Ok(one_row(ctx, sql).await?.first().map_or(0, count))
}

/// A count or sum cell as a number: a null (the `sum` of no rows) or a negative is 0.
pub fn count(v: &ScalarValue) -> u64 {
    match v {
        ScalarValue::Int64(Some(n)) => (*n).max(0) as u64,
        ScalarValue::UInt64(Some(n)) => *n,
        _ => 0,
    }
}

/// The cells of the first row `sql` answers (an aggregate's one row).
pub async fn one_row(ctx: &SessionContext, sql: &str) -> Result<Vec<ScalarValue>, EngineError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| EngineError::NoRow {
            sql: sql.to_string(),
        })?;
    Ok(batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<_, _>>()?)
}

/// Rows as JSON objects keyed by column name, in column order: numbers as numbers, dates
/// as `YYYY-MM-DD`, nulls as `null`.
pub fn rows_json(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, EngineError> {
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs)?;
    writer.finish()?;
    let text = String::from_utf8(writer.into_inner())?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// A test hook: makes a data task stop at a named point so a test can kill the process
/// there deterministically (e.g. mid-publish). Set `ORCHESTRATOR_TEST_PAUSE` to
/// `KIND:POINT:DIR`; on reaching POINT, a task of KIND creates `DIR/paused` and waits until
/// `DIR/resume` exists. Unset (always, outside tests), it does nothing.
#[derive(Debug, Clone)]
pub struct PauseHook {
    point: String,
    dir: std::path::PathBuf,
}

impl PauseHook {
    pub fn from_env(kind: &str) -> Option<PauseHook> {
        let spec = std::env::var("ORCHESTRATOR_TEST_PAUSE").ok()?;
        let mut parts = spec.splitn(3, ':');
        let (k, point, dir) = (parts.next()?, parts.next()?, parts.next()?);
        (k == kind).then(|| PauseHook {
            point: point.to_string(),
            dir: dir.into(),
        })
    }

    pub async fn reached(&self, point: &str) {
        if point != self.point {
            return;
        }
        let _ = std::fs::write(self.dir.join("paused"), "");
        while !self.dir.join("resume").exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod explain_tests {
    use super::explain_sql_error;

    #[test]
    fn a_syntax_error_points_at_its_column() {
        let sql = "SELECT symbol,\n  count(* FROM bars";
        let e = explain_sql_error(
            sql,
            r#"SQL error: ParserError("Expected: ), found: FROM at Line: 2, Column: 12")"#,
            &[],
        );
        assert_eq!(
            e,
            "SQL syntax error: Expected: ), found: FROM (line 2, column 12)\n    count(* FROM bars\n             ^"
        );
    }

    #[test]
    fn unknown_names_get_the_closest_real_one() {
        let e = explain_sql_error(
            "SELECT clse FROM bars",
            "Schema error: No field named clse. Did you mean 'bars.close'?.\nValid fields are bars.symbol, bars.date, bars.close.",
            &[],
        );
        assert_eq!(
            e,
            "unknown column `clse`; did you mean `close`? (columns: symbol, date, close)"
        );
        let e = explain_sql_error(
            "SELECT * FROM stock_dayly",
            "Error during planning: table 'datafusion.public.stock_dayly' not found",
            &["stock_daily".into(), "ticks".into()],
        );
        assert_eq!(
            e,
            "unknown table `stock_dayly`; did you mean `stock_daily`? (tables: stock_daily, ticks; `orchestrator tables` lists them)"
        );
        assert_eq!(
            explain_sql_error("x", "something else", &[]),
            "something else"
        );
    }
}
