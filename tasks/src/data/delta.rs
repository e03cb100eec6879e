//! Published tables as Delta Lake tables (delta-rs): what `publish` commits, what
//! `tables history` and `tables restore` read and write, and how a session reads them.
//!
//! Every commit orchestrator makes records who made it in the commit's info, under
//! `orchestrator` (`{"run_id", "task_id", "rows"}`), next to delta-rs's own
//! `operation` and `operationMetrics`. Any Delta reader shows it; `history` reads it back.
//!
//! A publish commits with an application transaction (`txn`) whose id is
//! `orchestrator/RUN_ID/TASK_ID` and whose version is the table version the publish read.
//! Before committing, [`append`] refuses if the table already holds that id at that
//! version or later: this publish of this run already committed against what it read.
//! (delta-rs records `txn` but does not enforce it; the key check in `publish` is the
//! first line, this is the second, for a commit whose catalog write was lost.) After a
//! `restore` the table's version moves past the recorded one, so a rerun of an undone
//! publish commits again, once.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::DataFrame;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::operations::convert_to_delta::ConvertToDeltaBuilder;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::StreamExt;
use serde_json::{json, Value};

use super::PauseHook;

/// The commit-info key under which orchestrator records who committed.
const INFO_KEY: &str = "orchestrator";

/// Why a Delta table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("Delta table at {location}: {source}")]
    Table {
        location: String,
        #[source]
        source: DeltaTableError,
    },
    /// `location` has no `_delta_log`.
    #[error("{location} is not a Delta table (no _delta_log); `orchestrator state recover` re-registers the warehouse's tables")]
    NotATable { location: String },
    /// Time travel or restore to a version the log does not have.
    #[error("table `{table}` has no version {version}: its versions are {earliest} to {latest} (`orchestrator tables history {table}` lists them)")]
    NoVersion {
        table: String,
        version: u64,
        earliest: u64,
        latest: u64,
    },
    /// Writing the new rows failed.
    #[error("writing to Delta table at {location}: {source}")]
    Rows {
        location: String,
        #[source]
        source: DataFusionError,
    },
}

fn table_err(location: &Path) -> impl FnOnce(DeltaTableError) -> DeltaError + '_ {
    move |source| DeltaError::Table {
        location: location.display().to_string(),
        source,
    }
}

/// Whether `dir` holds a Delta table.
pub fn is_delta(dir: &Path) -> bool {
    dir.join("_delta_log").is_dir()
}

/// Who commits, recorded in the commit's info and as its application transaction.
#[derive(Debug, Clone)]
pub struct Committer {
    pub run_id: String,
    pub task_id: String,
}

impl Committer {
    /// `RUN_ID/TASK_ID`, as the catalog's `created_by` says it.
    pub fn parse(creator: &str) -> Committer {
        let (run_id, task_id) = creator.split_once('/').unwrap_or((creator, ""));
        Committer {
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
        }
    }

    fn app_id(&self) -> String {
        format!("orchestrator/{}/{}", self.run_id, self.task_id)
    }

    fn properties(&self, rows: u64, read_version: Option<u64>) -> CommitProperties {
        let info = json!({"run_id": self.run_id, "task_id": self.task_id, "rows": rows});
        let props = CommitProperties::default().with_metadata([(INFO_KEY.to_string(), info)]);
        match read_version {
            Some(v) => {
                props.with_application_transaction(Transaction::new(self.app_id(), v as i64))
            }
            None => props,
        }
    }
}

fn url(dir: &Path) -> Result<url::Url, DeltaError> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    deltalake::ensure_table_uri(abs.display().to_string()).map_err(table_err(dir))
}

/// The Delta table at `dir`, at its latest version or at `version`.
pub async fn open(dir: &Path, version: Option<u64>) -> Result<DeltaTable, DeltaError> {
    if !is_delta(dir) {
        return Err(DeltaError::NotATable {
            location: dir.display().to_string(),
        });
    }
    let mut builder = DeltaTableBuilder::from_url(url(dir)?).map_err(table_err(dir))?;
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    builder.load().await.map_err(table_err(dir))
}

/// The table's current version.
pub fn version_of(table: &DeltaTable) -> u64 {
    table.version().unwrap_or(0)
}

/// A DataFusion provider reading `table` at the version it was loaded at.
pub async fn provider(
    dir: &Path,
    table: &DeltaTable,
) -> Result<Arc<dyn TableProvider>, DeltaError> {
    table
        .table_provider()
        .await
        .map_err(|source| DeltaError::Table {
            location: dir.display().to_string(),
            source: DeltaTableError::from(source),
        })
}

/// Makes the Parquet files in `dir` a Delta table (version 0) without rewriting them:
/// delta-rs reads each file's footer for its schema and statistics. A directory without
/// files becomes an empty table of `schema`. `who`: the publish whose rows these are, or
/// none for a table converted as it stands (its rows were published before tables were
/// Delta). Returns the version.
pub async fn convert(
    dir: &Path,
    name: &str,
    schema: &Schema,
    who: Option<&Committer>,
    rows: u64,
) -> Result<u64, DeltaError> {
    let has_files = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        })
        .unwrap_or(false);
    let props = match who {
        Some(who) => who.properties(rows, Some(0)),
        None => CommitProperties::default().with_metadata([(
            INFO_KEY.to_string(),
            json!({"converted_from": "parquet", "rows": rows}),
        )]),
    };
    let table = if has_files {
        ConvertToDeltaBuilder::new()
            .with_location(url(dir)?.to_string())
            .with_table_name(name)
            .with_commit_properties(props)
            .await
            .map_err(table_err(dir))?
    } else {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
        let kernel: deltalake::kernel::StructType =
            schema.try_into_kernel().map_err(|e| DeltaError::Table {
                location: dir.display().to_string(),
                source: e.into(),
            })?;
        let columns = kernel.fields().cloned().collect::<Vec<_>>();
        DeltaTable::try_from_url(url(dir)?)
            .await
            .map_err(table_err(dir))?
            .create()
            .with_table_name(name)
            .with_columns(columns)
            .with_commit_properties(props)
            .await
            .map_err(table_err(dir))?
    };
    Ok(version_of(&table))
}

/// How new rows are written: Snappy, and no dictionary for floating-point columns, as
/// the warehouse's other files (see `warehouse::parquet_options`).
fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for f in schema.fields() {
        if f.data_type().is_floating() {
            b = b.set_column_dictionary_enabled(f.name().as_str().into(), false);
        }
    }
    b.build()
}

/// What [`append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Committed `rows` rows as `version`.
    Committed { version: u64, rows: u64 },
    /// This publish already committed against the version it read (`txn`); nothing was
    /// written.
    AlreadyCommitted { version: u64 },
}

/// Appends the rows of `rows` to the Delta table at `dir` as one commit: the data files
/// first (invisible until committed), then one log entry naming them, with `who` in its
/// info and its application transaction. Pause points, for crash tests: `before-files`,
/// `after-files` (written, not committed), `after-commit`.
pub async fn append(
    dir: &Path,
    rows: DataFrame,
    who: &Committer,
    pause: Option<&PauseHook>,
) -> Result<Appended, DeltaError> {
    let table = open(dir, None).await?;
    let read_version = version_of(&table);
    // Writers of this table are serialised and one process owns the warehouse: files an
    // interrupted publish wrote and never committed are leftovers.
    for f in uncommitted(dir, &table) {
        if std::fs::remove_file(&f).is_ok() {
            tracing::info!("removed {} left by an interrupted publish", f.display());
        }
    }
    let snapshot = table.snapshot().map_err(table_err(dir))?;
    if let Some(done) = snapshot
        .transaction_version(table.log_store().as_ref(), who.app_id())
        .await
        .map_err(table_err(dir))?
    {
        if done >= read_version as i64 {
            return Ok(Appended::AlreadyCommitted {
                version: read_version,
            });
        }
    }
    if let Some(p) = pause {
        p.reached("before-files").await;
    }
    let rows_err = |source| DeltaError::Rows {
        location: dir.display().to_string(),
        source,
    };
    let schema = rows.schema().as_arrow().clone();
    let mut writer = RecordBatchWriter::for_table(&table)
        .map_err(table_err(dir))?
        .with_writer_properties(writer_properties(&schema));
    let mut stream = rows.execute_stream().await.map_err(rows_err)?;
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(rows_err)?;
        if batch.num_rows() == 0 {
            continue;
        }
        n += batch.num_rows() as u64;
        writer.write(batch).await.map_err(table_err(dir))?;
    }
    let adds = writer.flush().await.map_err(table_err(dir))?;
    if let Some(p) = pause {
        p.reached("after-files").await;
    }
    let finalized = CommitBuilder::from(who.properties(n, Some(read_version)))
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await
        .map_err(table_err(dir))?;
    if let Some(p) = pause {
        p.reached("after-commit").await;
    }
    Ok(Appended::Committed {
        version: finalized.version(),
        rows: n,
    })
}

/// Data files in `dir` that no version of `table` names and that were written after its
/// latest commit: what a publish killed between writing its files and committing left.
/// Files a later commit removed (restore, optimize) are older than that commit, and
/// time travel may still need them, so they are never counted here.
pub fn uncommitted(dir: &Path, table: &DeltaTable) -> Vec<std::path::PathBuf> {
    let latest = version_of(table);
    let log_entry = dir.join("_delta_log").join(format!("{latest:020}.json"));
    let Ok(committed_at) = std::fs::metadata(&log_entry).and_then(|m| m.modified()) else {
        return Vec::new();
    };
    let live: std::collections::HashSet<String> = match table.get_file_uris() {
        Ok(uris) => uris
            .filter_map(|u| u.rsplit('/').next().map(str::to_string))
            .collect(),
        Err(_) => return Vec::new(),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".parquet")
                && !live.contains(&name)
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > committed_at)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// One version of a table, as `tables history` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Version {
    pub version: u64,
    pub time: Option<DateTime<Utc>>,
    /// Delta's operation: `WRITE`, `CONVERT`, `CREATE TABLE`, `RESTORE`, `OPTIMIZE`, ...
    pub operation: String,
    /// The run and task that committed it, if orchestrator did.
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    /// Rows the version added, where known.
    pub rows_added: Option<u64>,
    /// For a restore: the version it restored.
    pub restored_to: Option<u64>,
}

/// Every version the log still holds, newest first.
pub async fn history(dir: &Path) -> Result<Vec<Version>, DeltaError> {
    use futures::TryStreamExt;
    let table = open(dir, None).await?;
    let latest = version_of(&table);
    let infos: Vec<_> = table
        .history(None)
        .try_collect()
        .await
        .map_err(table_err(dir))?;
    Ok(infos
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let ours = c.info.get(INFO_KEY);
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
            let metric = |name: &str| {
                c.info
                    .get("operationMetrics")
                    .and_then(|m| m.get(name))
                    .and_then(Value::as_u64)
            };
            let restored_to = c
                .operation_parameters
                .as_ref()
                .and_then(|p| p.get("version"))
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
            Version {
                version: latest.saturating_sub(i as u64),
                time: c
                    .timestamp
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                operation: c.operation.clone().unwrap_or_default(),
                run_id: text(ours.and_then(|o| o.get("run_id"))),
                task_id: text(ours.and_then(|o| o.get("task_id"))),
                rows_added: ours
                    .and_then(|o| o.get("rows"))
                    .and_then(Value::as_u64)
                    .or_else(|| metric("num_added_rows")),
                restored_to: (c.operation.as_deref() == Some("RESTORE"))
                    .then_some(restored_to)
                    .flatten(),
            }
        })
        .collect())
}

/// Restores the table at `dir` to `version`, as a new version (Delta RESTORE) whose info
/// names the runs whose publishes it undoes. Returns the new version.
pub async fn restore(dir: &Path, version: u64, undone_runs: &[String]) -> Result<u64, DeltaError> {
    let table = open(dir, None).await?;
    let info = json!({"undone_runs": undone_runs});
    let (table, _metrics) = table
        .restore()
        .with_version_to_restore(version)
        .with_commit_properties(
            CommitProperties::default().with_metadata([(INFO_KEY.to_string(), info)]),
        )
        .await
        .map_err(table_err(dir))?;
    Ok(version_of(&table))
}
