//! Managed tables: the files orchestrator owns under the warehouse directory.
//!
//! Layout: `{warehouse}/{table}/` holds a table's files; `{warehouse}/.staging/` holds
//! files being written. Two kinds of managed table:
//!
//! - **Published tables** (what `publish` writes) are Delta Lake tables (see
//!   [`super::delta`]): the `_delta_log/` in the table's directory says which files form
//!   each version, so any Delta reader sees exactly the published rows, and a publish is
//!   one commit.
//! - **Work tables** (temp tables, `create_table_as`, `CREATE TABLE AS` in a `sql` task)
//!   are plain Parquet: they are rebuilt whole by the run that uses them, nobody else
//!   reads them, and a plain directory is what lets a first publish share their files.
//!
//! Nothing becomes visible until it is complete:
//!
//! - creating a table writes a whole directory under `.staging/` (for a published table,
//!   with its first Delta commit inside), renames it to `{warehouse}/{table}`, then
//!   records the table in the catalog;
//! - dropping a table removes its catalog entry, then its directory;
//! - a publish into an existing table writes its data files into the table's directory
//!   and then commits one log entry naming them; until that commit, readers do not see
//!   them.
//!
//! A crash between steps leaves at most an orphan directory without a catalog entry (not
//! readable as a table, removed by the next create of that name), uncommitted data files
//! (never read; `tables vacuum` removes them), or a catalog version behind the log
//! (brought up to date by the table's next publish; `state check` reports it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::{ParquetColumnOptions, TableParquetOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::error::DataFusionError;
use datafusion::prelude::DataFrame;
use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::state::{ColumnRecord, StateError, TableRecord};

use super::{EngineError, Format};

/// Why the warehouse's files or the catalog's record of a managed table could not be
/// changed as asked.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// `{warehouse}/.staging` could not be created.
    #[error("cannot create {} ({source}); check the warehouse is writable", .dir.display())]
    Staging {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The warehouse directory itself could not be created.
    #[error("cannot create warehouse {} ({source}); check it is writable, or set `warehouse:` in the workflow", .dir.display())]
    CreateWarehouse {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("cannot copy {} to {} ({source})", .from.display(), .to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A staged file could not be renamed into a table's directory.
    #[error("cannot move {} into {} ({source})", .from.display(), .dir.display())]
    MoveInto {
        from: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An orphan directory (from a crash before the catalog write) could not be removed.
    #[error("cannot remove leftover {} ({source})", .dir.display())]
    RemoveLeftover {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The catalog entry is gone, the files are not.
    #[error("dropped table `{table}`, but cannot remove {} ({source})", .dir.display())]
    RemoveDropped {
        table: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// DataFusion could not write the Parquet files.
    #[error("writing {}: {source}", .path.display())]
    WriteParquet {
        path: PathBuf,
        #[source]
        source: DataFusionError,
    },
    /// A table directory found by [`rediscover`] could not be read.
    #[error("reading {}: {source}", .dir.display())]
    ReadTable {
        dir: PathBuf,
        #[source]
        source: DataFusionError,
    },
    /// A table directory found by [`rediscover`] could not be counted.
    #[error("counting {}: {source}", .dir.display())]
    CountTable {
        dir: PathBuf,
        #[source]
        source: DataFusionError,
    },
    /// Creating a table that exists and that this task did not create.
    #[error("table `{table}` already exists{}; drop it first (`DROP TABLE IF EXISTS {table}` in a `sql` task)", created_by_text(.created_by))]
    Exists {
        table: String,
        created_by: Option<String>,
    },
    /// Dropping a table that does not exist, without `IF EXISTS`.
    #[error("table `{table}` does not exist; write `DROP TABLE IF EXISTS {table}` to allow that")]
    NotFound { table: String },
    /// Another state dir owns the warehouse (see [`claim`]).
    #[error("warehouse {} belongs to state dir {owner}, not {me}: two state dirs sharing one warehouse overwrite each other's tables. Use that state dir (--state-dir {owner}), give this workflow its own `warehouse:`, or, if {owner} is gone for good, delete {}", .warehouse.display(), .owner_file.display())]
    Owned {
        warehouse: PathBuf,
        owner: String,
        me: String,
        owner_file: PathBuf,
    },
    #[error(transparent)]
    Catalog(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Delta(Box<super::delta::DeltaError>),
    #[error("{location} holds a Delta table that this catalog does not know as `{table}` and that this publish did not create; it is never overwritten: delete that prefix (`aws s3 rm --recursive {location}/`) or publish to another table")]
    RemoteExists { table: String, location: String },
    #[error("cannot claim the warehouse at {url} for this state dir: {reason}; check the bucket, the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and AWS_ENDPOINT_URL")]
    RemoteClaim { url: String, reason: String },
}

/// ` (created by RUN/TASK)`, or nothing.
fn created_by_text(created_by: &Option<String>) -> String {
    created_by
        .as_ref()
        .map(|c| format!(" (created by {c})"))
        .unwrap_or_default()
}

pub fn table_dir(warehouse: &Path, table: &str) -> PathBuf {
    warehouse.join(table)
}

/// A fresh path under `{warehouse}/.staging/`, unique to this process and moment.
pub fn staging_path(warehouse: &Path, name: &str) -> Result<PathBuf, WarehouseError> {
    let dir = warehouse.join(".staging");
    if let Err(source) = std::fs::create_dir_all(&dir) {
        return Err(WarehouseError::Staging { dir, source });
    }
    Ok(dir.join(format!(
        "{name}-{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%S%.6f"),
        fastrand::u32(..)
    )))
}

/// Serialises writers of one table within this process (e.g. two publish tasks of one
/// run targeting the same table).
pub fn table_lock(table: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    let mut map = match locks.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.entry(table.to_string()).or_default().clone()
}

pub fn columns_of(schema: &Schema) -> Vec<ColumnRecord> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnRecord {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            // Files may say more; the catalog promises nothing it cannot keep.
            nullable: true,
        })
        .collect()
}

/// Rows reported by a DataFusion write (a `count` column).
fn rows_written(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().cloned())
        .flat_map(|a| (0..a.len()).map(move |i| a.value(i)))
        .sum()
}

/// Writes `df` as Parquet: to a directory if `path` ends with `/`, else to that one file.
pub async fn write_parquet(
    df: DataFrame,
    path: &Path,
    single_file: bool,
) -> Result<u64, WarehouseError> {
    let target = if single_file {
        path.display().to_string()
    } else {
        super::dir_url(path)
    };
    let options = parquet_options(&df);
    let batches = df
        .write_parquet(
            &target,
            DataFrameWriteOptions::new().with_single_file_output(single_file),
            Some(options),
        )
        .await
        .map_err(|source| WarehouseError::WriteParquet {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(rows_written(&batches))
}

/// How managed tables are written: the session's Parquet settings, except
/// - Snappy instead of zstd: half the CPU per byte written, for files about a fifth
///   larger; it is also what Spark, Glue and Athena write by default;
/// - no dictionary encoding for floating-point columns: prices and computed ratios
///   rarely repeat, so the encoder hashed every value only to give up on the dictionary
///   and write the column plain. This was 2.5 s of the 5 M-row benchmark's `create_temp`.
///   Strings, integers and dates (symbols, labels, days) keep their dictionaries.
fn parquet_options(df: &DataFrame) -> TableParquetOptions {
    let mut options = TableParquetOptions {
        global: df
            .task_ctx()
            .session_config()
            .options()
            .execution
            .parquet
            .clone(),
        ..Default::default()
    };
    options.global.compression = Some("snappy".into());
    for field in df.schema().fields() {
        if field.data_type().is_floating() {
            options.column_specific_options.insert(
                field.name().clone(),
                ParquetColumnOptions {
                    dictionary_enabled: Some(false),
                    ..Default::default()
                },
            );
        }
    }
    options
}

/// Creates managed table `name` from `df` (atomically, see the module docs).
///
/// Fails if the table exists, unless `creator` (`RUN_ID/TASK_ID`) created it: a task
/// re-executed in the same run (retry, rerun) replaces its own earlier result.
pub async fn create_table(
    catalog: &dyn Catalog,
    warehouse: &Path,
    name: &str,
    df: DataFrame,
    creator: &str,
    pause: Option<&super::PauseHook>,
) -> Result<TableRecord, WarehouseError> {
    make_room(catalog, name, creator)?;
    let schema = df.schema().as_arrow().clone();
    let staging = staging_path(warehouse, name)?;
    let rows = write_parquet(df, &staging, false).await?;
    let record = managed_record(
        name,
        &table_dir(warehouse, name),
        columns_of(&schema),
        rows,
        Some(creator.to_string()),
    );
    install(catalog, warehouse, &staging, record, pause).await
}

/// Creates published table `name` as a Delta table holding exactly the rows of `rows`.
///
/// When `source` is a managed Parquet table whose rows `rows` are, its files are shared
/// instead of rewritten: each is hard-linked (copied where the filesystem cannot link)
/// into a staging directory. Managed files are never modified once written, so two
/// tables may share one; dropping either removes only its own links. Otherwise `rows` is
/// written there. Either way the staging directory then becomes a Delta table (version 0,
/// committed by `creator`) and is installed and recorded as [`create_table`] does.
#[allow(clippy::too_many_arguments)]
pub async fn create_published(
    catalog: &dyn Catalog,
    warehouse: &Path,
    name: &str,
    source: &TableRecord,
    rows: DataFrame,
    n: u64,
    creator: &str,
    pause: Option<&super::PauseHook>,
) -> Result<TableRecord, WarehouseError> {
    make_room(catalog, name, creator)?;
    let staging = staging_path(warehouse, name)?;
    let schema = rows.schema().as_arrow().clone();
    let columns = match shareable_files(source) {
        Some(files) => {
            if let Err(source) = std::fs::create_dir_all(&staging) {
                return Err(crate::files::FileError::Create {
                    path: staging,
                    source,
                }
                .into());
            }
            for file in &files {
                let Some(file_name) = file.file_name() else {
                    continue;
                };
                let to = staging.join(file_name);
                if std::fs::hard_link(file, &to).is_err() {
                    if let Err(source) = std::fs::copy(file, &to) {
                        return Err(WarehouseError::Copy {
                            from: file.clone(),
                            to,
                            source,
                        });
                    }
                }
            }
            source.columns.clone()
        }
        None => {
            write_parquet(rows, &staging, false).await?;
            columns_of(&schema)
        }
    };
    std::fs::create_dir_all(&staging).map_err(|source| crate::files::FileError::Create {
        path: staging.clone(),
        source,
    })?;
    let who = super::delta::Committer::parse(creator);
    let version = super::delta::convert(&staging, name, &schema, Some(&who), n)
        .await
        .map_err(|e| WarehouseError::Delta(Box::new(e)))?;
    let mut record = managed_record(
        name,
        &table_dir(warehouse, name),
        columns,
        n,
        Some(creator.to_string()),
    );
    record.format = super::DELTA.into();
    record.version = Some(version);
    install(catalog, warehouse, &staging, record, pause).await
}

/// Makes managed Parquet table `name` (a published table made before tables were Delta)
/// a Delta table in place, without rewriting a file: one commit, version 0, recorded in
/// the catalog. Does nothing to a table that is not a managed Parquet table.
pub async fn convert_in_place(
    catalog: &dyn Catalog,
    name: &str,
) -> Result<Option<TableRecord>, WarehouseError> {
    let Some(mut t) = catalog.table(name)? else {
        return Ok(None);
    };
    if !t.managed || t.format != Format::Parquet.name() {
        return Ok(None);
    }
    let dir = PathBuf::from(&t.location);
    let schema = super::schema_of(&t)?;
    let version = if super::delta::is_delta(&dir) {
        // Converted by an earlier attempt that was killed before the catalog write.
        super::delta::version_of(
            &super::delta::open(&dir, None)
                .await
                .map_err(|e| WarehouseError::Delta(Box::new(e)))?,
        )
    } else {
        super::delta::convert(&dir, name, &schema, None, t.row_count.unwrap_or(0))
            .await
            .map_err(|e| WarehouseError::Delta(Box::new(e)))?
    };
    tracing::info!(
        "converted published table `{name}` at {} to Delta Lake (version {version})",
        dir.display()
    );
    t.format = super::DELTA.into();
    t.version = Some(version);
    t.updated_at = Utc::now();
    catalog.put_table(t.clone())?;
    Ok(Some(t))
}

/// The Parquet files of managed table `source`, if its directory holds nothing else a
/// listing table might read or skip differently (subdirectories, hidden files).
fn shareable_files(source: &TableRecord) -> Option<Vec<PathBuf>> {
    if !source.managed || source.format != Format::Parquet.name() {
        return None;
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&source.location).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_str()?;
        let is_file = entry.file_type().ok()?.is_file();
        if !is_file || name.starts_with('.') || name.starts_with('_') || !name.ends_with(".parquet")
        {
            return None;
        }
        files.push(entry.path());
    }
    files.sort();
    Some(files)
}

/// Makes way for creating table `name`: fails if it exists, unless `creator` created it
/// (then it is dropped, so a retried or rerun task replaces its own result).
fn make_room(catalog: &dyn Catalog, name: &str, creator: &str) -> Result<(), WarehouseError> {
    if let Some(t) = catalog.table(name)? {
        if t.managed && t.created_by.as_deref() == Some(creator) {
            drop_table(catalog, name, true)?;
        } else {
            return Err(WarehouseError::Exists {
                table: name.to_string(),
                created_by: t.created_by,
            });
        }
    }
    Ok(())
}

/// Creates published table `name` as a Delta table at `{lake}/{name}` on S3 (a warehouse
/// on S3), holding exactly the rows of `rows`: one commit, version 0, by `creator`, then
/// the catalog entry. A table already there that this same publish created (its catalog
/// write was lost to a crash) is taken as it is; any other is refused, never overwritten.
pub async fn create_published_remote(
    catalog: &dyn Catalog,
    lake: &str,
    name: &str,
    rows: DataFrame,
    creator: &str,
) -> Result<TableRecord, WarehouseError> {
    make_room(catalog, name, creator)?;
    let location = format!("{}/{name}", lake.trim_end_matches('/'));
    let loc = Path::new(&location);
    let delta_err = |e| WarehouseError::Delta(Box::new(e));
    let schema = rows.schema().as_arrow().clone();
    let who = super::delta::Committer::parse(creator);
    let (version, n) = match super::delta::open(loc, None).await {
        Ok(table) => {
            let history = super::delta::history(loc).await.map_err(delta_err)?;
            let first = history.iter().min_by_key(|v| v.version);
            let ours = first.is_some_and(|v| {
                v.run_id.as_deref() == Some(who.run_id.as_str())
                    && v.task_id.as_deref() == Some(who.task_id.as_str())
            });
            if !ours {
                return Err(WarehouseError::RemoteExists {
                    table: name.to_string(),
                    location,
                });
            }
            let n = first.and_then(|v| v.rows_added).unwrap_or(0);
            (super::delta::version_of(&table), n)
        }
        Err(_) => super::delta::create(loc, name, rows, &who)
            .await
            .map_err(delta_err)?,
    };
    let mut record = managed_record(name, loc, columns_of(&schema), n, Some(creator.to_string()));
    record.format = super::DELTA.into();
    record.version = Some(version);
    catalog.put_table(record.clone())?;
    Ok(record)
}

/// Renames the complete directory `staging` to the table's directory (one rename: the
/// table's files appear all at once), then writes `record`, the table's catalog entry.
async fn install(
    catalog: &dyn Catalog,
    warehouse: &Path,
    staging: &Path,
    record: TableRecord,
    pause: Option<&super::PauseHook>,
) -> Result<TableRecord, WarehouseError> {
    if let Some(p) = pause {
        p.reached("before-rename").await;
    }
    let name = record.name.as_str();
    let dir = table_dir(warehouse, name);
    super::delta::forget(&dir);
    if dir.exists() {
        // An orphan from a crash after rename and before the catalog write: no table
        // refers to it.
        if let Err(source) = std::fs::remove_dir_all(&dir) {
            return Err(WarehouseError::RemoveLeftover { dir, source });
        }
    }
    if !staging.exists() {
        // A query with no rows may write no file; an empty table is still a table.
        std::fs::create_dir_all(staging).map_err(|source| crate::files::FileError::Create {
            path: staging.to_path_buf(),
            source,
        })?;
    }
    if let Err(source) = std::fs::rename(staging, &dir) {
        return Err(crate::files::FileError::Move {
            from: staging.to_path_buf(),
            to: dir,
            source,
        }
        .into());
    }
    remove_leftovers(warehouse, name);
    catalog.put_table(record.clone())?;
    Ok(record)
}

/// The catalog record of managed table `name`, whose Parquet files are in `dir`.
fn managed_record(
    name: &str,
    dir: &Path,
    columns: Vec<ColumnRecord>,
    rows: u64,
    creator: Option<String>,
) -> TableRecord {
    let now = Utc::now();
    TableRecord {
        name: name.to_string(),
        location: dir.display().to_string(),
        format: Format::Parquet.name().into(),
        columns,
        partition_columns: Vec::new(),
        partitions: Vec::new(),
        files: Vec::new(),
        file_rows: Vec::new(),
        row_count: Some(rows),
        managed: true,
        created_by: creator,
        created_at: now,
        updated_at: now,
        last_crawled_at: None,
        version: None,
        undone: Vec::new(),
    }
}

/// Drops table `name`: its catalog entry, then, for managed tables, its files.
/// Returns whether it existed.
pub fn drop_table(
    catalog: &dyn Catalog,
    name: &str,
    if_exists: bool,
) -> Result<bool, WarehouseError> {
    let Some(table) = catalog.table(name)? else {
        return if if_exists {
            Ok(false)
        } else {
            Err(WarehouseError::NotFound {
                table: name.to_string(),
            })
        };
    };
    catalog.drop_table(name)?;
    if table.managed {
        let dir = Path::new(&table.location);
        super::delta::forget(dir);
        if dir.exists() {
            if let Err(source) = std::fs::remove_dir_all(dir) {
                return Err(WarehouseError::RemoveDropped {
                    table: name.to_string(),
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(true)
}

/// The file in a warehouse that names the state dir owning it.
const OWNER_FILE: &str = ".orchestrator-owner";

/// Claims `warehouse` for the state store in `state_dir`, or refuses if another state dir
/// owns it. Two state dirs writing one warehouse would overwrite and delete each other's
/// table files, each believing its own catalog. The claim is a file created with
/// `O_EXCL`, so of two first runs racing, one wins.
pub fn claim(warehouse: &Path, state_dir: &Path) -> Result<(), WarehouseError> {
    let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let me = state_dir.display().to_string();
    std::fs::create_dir_all(warehouse).map_err(|source| WarehouseError::CreateWarehouse {
        dir: warehouse.to_path_buf(),
        source,
    })?;
    let path = warehouse.join(OWNER_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            use std::io::Write as _;
            return writeln!(f, "{me}")
                .and_then(|_| f.sync_all())
                .map_err(|source| crate::files::FileError::Write { path, source }.into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(crate::files::FileError::Create { path, source }.into()),
    }
    let owner = match std::fs::read_to_string(&path) {
        Ok(owner) => owner,
        Err(source) => return Err(crate::files::FileError::Read { path, source }.into()),
    };
    let owner = owner.trim();
    if owner == me {
        return Ok(());
    }
    Err(WarehouseError::Owned {
        warehouse: warehouse.to_path_buf(),
        owner: owner.to_string(),
        me,
        owner_file: path,
    })
}

/// [`claim`] for a warehouse on S3 (`s3://bucket/prefix`): `{lake}/.orchestrator-owner`
/// is created only if absent (`If-None-Match: *`), so of two state dirs claiming at once
/// exactly one wins, and every later run of the other is refused. Blocks: it runs on a
/// thread of its own with its own runtime, as it is called before a run starts.
pub fn claim_remote(lake: &str, state_dir: &Path) -> Result<(), WarehouseError> {
    let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let me = state_dir.display().to_string();
    let url = format!("{}/{OWNER_FILE}", lake.trim_end_matches('/'));
    let call = {
        let (url, me) = (url.clone(), format!("{me}\n"));
        move || -> Result<Option<String>, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(orchestrator_aws::s3::create_or_read(&url, &me))
                .map_err(|e| e.to_string())
        }
    };
    let answer = std::thread::spawn(call)
        .join()
        .unwrap_or_else(|_| Err("the S3 claim's thread panicked".into()))
        .map_err(|e| WarehouseError::RemoteClaim {
            url: url.clone(),
            reason: e,
        })?;
    match answer {
        None => Ok(()),
        Some(owner) if owner.trim() == me => Ok(()),
        Some(owner) => Err(WarehouseError::Owned {
            warehouse: PathBuf::from(lake),
            owner: owner.trim().to_string(),
            me,
            owner_file: PathBuf::from(url),
        }),
    }
}

/// Whether `entry` (a name under `.staging/`) was written for table `table`: staging
/// names are `{table}-{YYYYmmddTHHMMSS...}-{random}` (see [`staging_path`]).
fn is_staging_of(entry: &str, table: &str) -> bool {
    entry
        .strip_prefix(table)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| {
            rest.len() > 9
                && rest.as_bytes()[..8].iter().all(u8::is_ascii_digit)
                && rest.as_bytes()[8] == b'T'
        })
}

/// Removes what a killed writer of `table` left under `.staging/`. Called after a write
/// of that table succeeded: writers of one table are serialised (see [`table_lock`]) and
/// one process owns the warehouse, so anything else staged for it is a crash leftover.
pub fn remove_leftovers(warehouse: &Path, table: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(warehouse.join(".staging")) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_staging_of(&name, table) {
            continue;
        }
        let path = e.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            tracing::info!("removed {} left by an interrupted write", path.display());
            removed.push(path);
        }
    }
    removed
}

/// Everything under `{warehouse}/.staging/`, for `state check` to report.
pub fn leftovers(warehouse: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(warehouse.join(".staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What `state check` finds wrong with the catalog's Delta tables: a log that cannot be
/// read, a catalog version the log does not agree with, data files an interrupted
/// publish left uncommitted.
pub async fn check_delta(tables: Vec<TableRecord>) -> Vec<String> {
    let run = async move {
        let mut problems = Vec::new();
        for t in tables.iter().filter(|t| t.format == super::DELTA) {
            let dir = Path::new(&t.location);
            let table = match super::delta::open(dir, None).await {
                Ok(table) => table,
                Err(e) => {
                    problems.push(format!("table `{}`: {e}", t.name));
                    continue;
                }
            };
            let latest = super::delta::version_of(&table);
            match t.version {
                Some(v) if v > latest => problems.push(format!(
                    "table `{}`: the catalog records version {v}, but its Delta log ends at version {latest}: commits were removed from {}; restore them, or `orchestrator state recover --force` to re-register the table as it is",
                    t.name,
                    dir.join("_delta_log").display()
                )),
                Some(v) if v < latest => problems.push(format!(
                    "table `{}`: its Delta log is at version {latest}, the catalog records {v} (a publish was killed after its commit); the table's next publish records it",
                    t.name
                )),
                _ => {}
            }
            for f in super::delta::uncommitted(dir, &table) {
                problems.push(format!(
                    "{} was left uncommitted by an interrupted publish (no reader sees it); the next publish of `{}` removes it",
                    f.display(),
                    t.name
                ));
            }
        }
        problems
    };
    super::on_engine(run)
        .await
        .unwrap_or_else(|e| vec![e.to_string()])
}

/// Managed tables found in `warehouse` that `known` (catalog names) does not list: each
/// Delta table (read from its log), and each other directory of Parquet files, read back
/// with its schema and row count. For `state
/// recover`, after a store was rebuilt from an older recovery point.
pub async fn rediscover(
    warehouse: &Path,
    known: &std::collections::BTreeSet<String>,
) -> Result<Vec<TableRecord>, WarehouseError> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(warehouse) else {
        return Ok(found);
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !known.contains(n))
        })
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if super::delta::is_delta(&dir) {
            found.push(read_delta_record(&name, &dir).await?);
            continue;
        }
        let has_parquet = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            })
            .unwrap_or(false);
        if !has_parquet {
            continue;
        }
        let dir2 = dir.clone();
        let (schema, rows) = super::on_engine(async move {
            let ctx = datafusion::prelude::SessionContext::new();
            let df = ctx
                .read_parquet(
                    super::dir_url(&dir2),
                    datafusion::prelude::ParquetReadOptions::default(),
                )
                .await
                .map_err(|source| WarehouseError::ReadTable {
                    dir: dir2.clone(),
                    source,
                })?;
            let schema = df.schema().as_arrow().clone();
            let rows = df
                .count()
                .await
                .map_err(|source| WarehouseError::CountTable {
                    dir: dir2.clone(),
                    source,
                })?;
            Ok::<_, WarehouseError>((schema, rows as u64))
        })
        .await??;
        found.push(managed_record(&name, &dir, columns_of(&schema), rows, None));
    }
    Ok(found)
}

/// The catalog record of the Delta table in `dir`, read from its log: schema, rows and
/// version as of its latest commit.
pub async fn read_delta_record(name: &str, dir: &Path) -> Result<TableRecord, WarehouseError> {
    let dir2 = dir.to_path_buf();
    let (schema, rows, version) = super::on_engine(async move {
        let delta_err = |e| WarehouseError::Delta(Box::new(e));
        let table = super::delta::open(&dir2, None).await.map_err(delta_err)?;
        let version = super::delta::version_of(&table);
        let provider = super::delta::provider(&dir2, &table)
            .await
            .map_err(delta_err)?;
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx
            .read_table(provider)
            .map_err(|source| WarehouseError::ReadTable {
                dir: dir2.clone(),
                source,
            })?;
        let schema = df.schema().as_arrow().clone();
        let rows = df
            .count()
            .await
            .map_err(|source| WarehouseError::CountTable {
                dir: dir2.clone(),
                source,
            })?;
        Ok::<_, WarehouseError>((schema, rows as u64, version))
    })
    .await??;
    let mut record = managed_record(name, dir, columns_of(&schema), rows, None);
    record.format = super::DELTA.into();
    record.version = Some(version);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_match_their_table_only() {
        assert!(is_staging_of(
            "stock-20261124T031500.123456-0a1b2c3d",
            "stock"
        ));
        assert!(is_staging_of(
            "stock-20261124T031500.123456-0a1b2c3d.parquet",
            "stock"
        ));
        assert!(!is_staging_of(
            "stock_daily-20261124T031500.123456-0a1b2c3d",
            "stock"
        ));
        assert!(!is_staging_of("stock-daily-x", "stock"));
    }

    #[test]
    fn a_second_state_dir_cannot_claim_a_warehouse() {
        let dir = tempfile::tempdir().unwrap();
        let wh = dir.path().join("wh");
        claim(&wh, &dir.path().join("a")).unwrap();
        claim(&wh, &dir.path().join("a")).unwrap();
        let err = claim(&wh, &dir.path().join("b")).unwrap_err().to_string();
        assert!(err.contains("belongs to state dir"), "{err}");
    }
}
