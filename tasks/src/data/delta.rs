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
//! publish commits again, once. A publish commits against the version it read or not at
//! all (`max_retries` 0): delta-rs would otherwise rebase a blind append onto a commit
//! another writer made meanwhile, and its rows were chosen against the version it read.
//!
//! A table's location is what the catalog stores: a directory, or an `s3://bucket/prefix`
//! URL (a warehouse on S3, see [`register_s3`]), carried in a `Path` like a directory.
//! Commits to S3 are `PutObject` with `If-None-Match: *` (S3's conditional writes), so of
//! two writers committing the same version exactly one succeeds: that, with the warehouse
//! claim, is what makes S3 safe without a DynamoDB lock.

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
    /// Time travel to a time before the table's first version the log still holds.
    #[error("table `{table}` has no version committed at or before {at}: {}", match first { Some(t) => format!("its first version was committed at {t}"), None => "its log has no commit times".to_string() })]
    BeforeHistory {
        table: String,
        at: DateTime<Utc>,
        first: Option<DateTime<Utc>>,
    },
    /// `vacuum` asked to keep less history than is safe.
    #[error("vacuum of {location}: --older-than {asked_hours}h is under the safe minimum of 7 days (168h): a reader still on an older version could lose its files; use --older-than 7d or more")]
    VacuumTooSoon { location: String, asked_hours: i64 },
    /// Another writer committed while this publish wrote: it committed nothing.
    #[error("another writer committed version {latest} of the Delta table at {location} while this publish was writing against version {read}; this publish committed nothing (its rows were chosen against version {read}): run the task again (`orchestrator rerun RUN_ID`) to publish against the new version")]
    Raced {
        location: String,
        read: u64,
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

/// The `s3://` URL a location holds, if it is one.
pub fn remote(location: &Path) -> Option<&str> {
    location.to_str().filter(|l| l.starts_with("s3://"))
}

/// Whether `dir` holds a Delta table. An S3 location is taken to: opening it says if not.
pub fn is_delta(dir: &Path) -> bool {
    remote(dir).is_some() || dir.join("_delta_log").is_dir()
}

/// Lets delta-rs reach `s3://` locations through our S3 client (`orchestrator_aws`:
/// credentials, region and endpoint from the environment, `ORCHESTRATOR_REQUIRE_ENDPOINT`
/// honoured), with conditional puts for its commits, and the default log store, which
/// commits with `PutMode::Create`. Registered once per process, on first use; without
/// delta-rs's `s3` feature, whose DynamoDB lock client we do not need.
pub fn register_s3() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use deltalake::logstore::{
            default_logstore, logstore_factories, object_store_factories, LogStore,
            LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig,
        };
        struct S3;
        impl ObjectStoreFactory for S3 {
            fn parse_url_opts(
                &self,
                url: &url::Url,
                _config: &StorageConfig,
            ) -> deltalake::DeltaResult<(ObjectStoreRef, deltalake::Path)> {
                let bucket = url.host_str().unwrap_or_default();
                let store = orchestrator_aws::lake_store(bucket)
                    .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
                let path = deltalake::Path::from_url_path(url.path())
                    .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
                Ok((Arc::new(store), path))
            }
        }
        impl LogStoreFactory for S3 {
            fn with_options(
                &self,
                prefixed_store: ObjectStoreRef,
                root_store: ObjectStoreRef,
                location: &url::Url,
                options: &StorageConfig,
            ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
                Ok(default_logstore(
                    prefixed_store,
                    root_store,
                    location,
                    options,
                ))
            }
        }
        if let Ok(scheme) = url::Url::parse("s3://") {
            object_store_factories().insert(scheme.clone(), Arc::new(S3));
            logstore_factories().insert(scheme, Arc::new(S3));
        }
    });
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
    if let Some(remote) = remote(dir) {
        register_s3();
        return url::Url::parse(remote.trim_end_matches('/')).map_err(|e| DeltaError::Table {
            location: remote.to_string(),
            source: DeltaTableError::InvalidTableLocation(e.to_string()),
        });
    }
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

/// Tables this process has read, by location: the snapshot a query loaded, which the
/// next query brings up to date by reading only the commits since (one listing of the log
/// from the next version), instead of replaying the log from its last checkpoint. That
/// replay is most of a small query's time: a dashboard's panels each paid it. Versions
/// read by time travel are kept too (a version never changes), a few per table.
///
/// Only reads of local tables go through it ([`read`]); writes open the table afresh.
/// [`forget`] drops a location whose table this process deletes or replaces. A kept
/// snapshot is used only while its version's commit file is the one it was read from
/// (same modification time): a table replaced by another process is read afresh.
mod loaded {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};
    use std::time::SystemTime;

    use deltalake::DeltaTable;

    /// Versions kept per location, besides the latest.
    const PAST: usize = 8;

    /// A snapshot, and the modification time of its version's commit file.
    pub(super) type Kept = (DeltaTable, SystemTime);

    #[derive(Default)]
    pub(super) struct Entry {
        pub latest: Option<Kept>,
        pub past: Vec<(u64, Kept)>,
    }

    pub(super) fn with<R>(f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        static TABLES: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
        let mut map = TABLES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut map)
    }

    /// When the commit file of `version` at `dir` was written, if it is there.
    pub(super) fn stamp(dir: &Path, version: u64) -> Option<SystemTime> {
        std::fs::metadata(dir.join(format!("_delta_log/{version:020}.json")))
            .and_then(|m| m.modified())
            .ok()
    }

    pub(super) fn keep_past(entry: &mut Entry, version: u64, kept: Kept) {
        entry.past.retain(|(v, _)| *v != version);
        if entry.past.len() >= PAST {
            entry.past.remove(0);
        }
        entry.past.push((version, kept));
    }
}

/// The Delta table at `dir` for reading, at its latest version or at `version`, from the
/// tables this process has read when it can (see [`loaded`]).
pub async fn read(dir: &Path, version: Option<u64>) -> Result<DeltaTable, DeltaError> {
    if remote(dir).is_some() {
        // An S3 table's object store holds connections of the runtime that opened it,
        // and reads come from more than one runtime (time travel plans on its own).
        return open(dir, version).await;
    }
    let key = dir.display().to_string();
    let fresh = |v: u64, at: &std::time::SystemTime| loaded::stamp(dir, v).as_ref() == Some(at);
    if let Some(v) = version {
        let hit = loaded::with(|m| {
            m.get(&key).and_then(|e| {
                e.past
                    .iter()
                    .find(|(pv, _)| *pv == v)
                    .map(|(_, k)| k.clone())
            })
        });
        if let Some((t, at)) = hit {
            if fresh(v, &at) {
                return Ok(t);
            }
        }
        let t = open(dir, Some(v)).await?;
        if let Some(at) = loaded::stamp(dir, v) {
            loaded::with(|m| loaded::keep_past(m.entry(key).or_default(), v, (t.clone(), at)));
        }
        return Ok(t);
    }
    let cached = loaded::with(|m| m.get(&key).and_then(|e| e.latest.clone()));
    let kept = cached.is_some();
    let updated = match cached {
        Some((mut t, at)) if fresh(version_of(&t), &at) => {
            t.update_incremental(None).await.ok().map(|()| t)
        }
        // Replaced since it was kept (or none kept).
        _ => None,
    };
    let t = match updated {
        Some(t) => t,
        None => {
            if kept {
                // Nothing kept of a replaced table holds.
                forget(dir);
            }
            open(dir, None).await?
        }
    };
    if let Some(at) = loaded::stamp(dir, version_of(&t)) {
        loaded::with(|m| {
            let e = m.entry(key).or_default();
            // A concurrent read may have kept a later snapshot: keep the later.
            if e.latest
                .as_ref()
                .is_none_or(|(l, _)| version_of(l) <= version_of(&t))
            {
                e.latest = Some((t.clone(), at));
            }
        });
    }
    Ok(t)
}

/// Drops what this process has read of the table at `dir`: it is deleted or replaced.
pub fn forget(dir: &Path) {
    let key = dir.display().to_string();
    loaded::with(|m| m.remove(&key));
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
            .with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL),
            )
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
            .with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL),
            )
            .with_commit_properties(props)
            .await
            .map_err(table_err(dir))?
    };
    Ok(version_of(&table))
}

/// `delta.checkpointInterval` of the tables orchestrator creates: a checkpoint every this
/// many commits. A reader that opens a table afresh (each `orchestrator run` is a new
/// process) replays the commits since its last checkpoint: a table published every
/// minute would have it read up to 100 small files (the default) per open.
pub const CHECKPOINT_INTERVAL: &str = "10";

/// Creates a Delta table at `loc` (an S3 location, where files cannot be shared by hard
/// links) holding the rows of `rows`, as one commit, version 0, by `who`: the data files
/// first, then the log entry that names them, written only if no version 0 exists (a
/// second creator fails). Returns the version and the rows written.
pub async fn create(
    loc: &Path,
    name: &str,
    rows: DataFrame,
    who: &Committer,
) -> Result<(u64, u64), DeltaError> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let rows_err = |source| DeltaError::Rows {
        location: loc.display().to_string(),
        source,
    };
    let schema = Arc::new(rows.schema().as_arrow().clone());
    let mut writer = RecordBatchWriter::try_new(url(loc)?.as_str(), schema.clone(), None, None)
        .map_err(table_err(loc))?
        .with_writer_properties(writer_properties(&schema));
    let mut stream = rows.execute_stream().await.map_err(rows_err)?;
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(rows_err)?;
        n += batch.num_rows() as u64;
        if batch.num_rows() > 0 {
            writer.write(batch).await.map_err(table_err(loc))?;
        }
    }
    let adds = writer.flush().await.map_err(table_err(loc))?;
    let kernel: deltalake::kernel::StructType =
        schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| DeltaError::Table {
                location: loc.display().to_string(),
                source: e.into(),
            })?;
    let table = DeltaTable::try_from_url(url(loc)?)
        .await
        .map_err(table_err(loc))?
        .create()
        .with_table_name(name)
        .with_columns(kernel.fields().cloned().collect::<Vec<_>>())
        .with_actions(adds.into_iter().map(Action::Add))
        .with_configuration_property(
            deltalake::TableProperty::CheckpointInterval,
            Some(CHECKPOINT_INTERVAL),
        )
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_commit_properties(who.properties(n, Some(0)))
        .await
        .map_err(table_err(loc))?;
    Ok((version_of(&table), n))
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
/// info and its application transaction. With `evolve`, columns of `rows` the table
/// lacks are added to its schema (nullable: earlier rows read them as null) in the same
/// commit. Pause points, for crash tests: `before-files`, `after-files` (written, not
/// committed), `after-commit`.
pub async fn append(
    dir: &Path,
    rows: DataFrame,
    who: &Committer,
    pause: Option<&PauseHook>,
    evolve: bool,
) -> Result<Appended, DeltaError> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    use deltalake::kernel::MetadataExt;
    use deltalake::writer::WriteMode;
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
        let mode = if evolve {
            WriteMode::MergeSchema
        } else {
            WriteMode::Default
        };
        writer
            .write_with_mode(batch, mode)
            .await
            .map_err(table_err(dir))?;
    }
    let mut actions: Vec<Action> = Vec::new();
    let before = snapshot.snapshot().arrow_schema();
    let after = writer.arrow_schema();
    if evolve && after.fields().len() > before.fields().len() {
        // New columns are nullable whatever the batch said: the files already in the
        // table do not have them.
        let fields: Vec<_> = after
            .fields()
            .iter()
            .map(|f| match before.field_with_name(f.name()) {
                Ok(_) => f.clone(),
                Err(_) => Arc::new(f.as_ref().clone().with_nullable(true)),
            })
            .collect();
        let widened: deltalake::kernel::StructType = (&Schema::new(fields))
            .try_into_kernel()
            .map_err(|e| table_err(dir)(e.into()))?;
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&widened)
            .map_err(|e| table_err(dir)(e.into()))?;
        actions.push(Action::Metadata(metadata));
    }
    let adds = writer.flush().await.map_err(table_err(dir))?;
    if let Some(p) = pause {
        p.reached("after-files").await;
    }
    let finalized = CommitBuilder::from(who.properties(n, Some(read_version)))
        .with_max_retries(0)
        .with_actions(
            actions
                .into_iter()
                .chain(adds.into_iter().map(Action::Add))
                .collect(),
        )
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await;
    let finalized = match finalized {
        Ok(f) => f,
        Err(e) => {
            let latest = open(dir, None).await.map(|t| version_of(&t));
            return Err(match latest {
                Ok(latest) if latest > read_version => DeltaError::Raced {
                    location: dir.display().to_string(),
                    read: read_version,
                    latest,
                },
                _ => table_err(dir)(e),
            });
        }
    };
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
    if remote(dir).is_some() {
        // Object stores have no cheap mtime listing; `tables vacuum` deletes what no
        // version references once it is older than its retention.
        return Vec::new();
    }
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

impl Version {
    /// Whether this version is a run's publish (its rows came from a run), as opposed to
    /// a restore, a conversion, or an OPTIMIZE a run's maintenance policy triggered
    /// (which names the run but adds no rows of its own).
    pub fn is_publish(&self) -> bool {
        self.run_id.as_deref().is_some_and(|r| !r.is_empty())
            && self.restored_to.is_none()
            && self.operation != "RESTORE"
            && self.operation != "OPTIMIZE"
    }
}

/// Every version the log still holds, newest first.
pub async fn history(dir: &Path) -> Result<Vec<Version>, DeltaError> {
    newest(dir, None).await
}

/// The newest `limit` versions of the table (all with `None`), newest first: reads only
/// their commits.
pub async fn newest(dir: &Path, limit: Option<usize>) -> Result<Vec<Version>, DeltaError> {
    use futures::TryStreamExt;
    let table = read(dir, None).await?;
    let latest = version_of(&table);
    let infos: Vec<_> = table
        .history(limit)
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

/// What [`optimize`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Optimized {
    /// The version it committed, or the table's version if there was nothing to compact.
    pub version: u64,
    pub files_before: u64,
    pub files_after: u64,
    pub files_removed: u64,
    pub files_added: u64,
}

fn file_count(dir: &Path, table: &DeltaTable) -> Result<u64, DeltaError> {
    Ok(table.get_file_uris().map_err(table_err(dir))?.count() as u64)
}

/// Compacts the table's small files into few large ones (bin-packing, or Z-ordered by
/// `zorder_by` when given), as one new version that holds the same rows. The replaced
/// files stay on disk, so earlier versions still read, until [`vacuum`] deletes them.
pub async fn optimize(
    dir: &Path,
    zorder_by: &[String],
    who: Option<&Committer>,
) -> Result<Optimized, DeltaError> {
    use deltalake::operations::optimize::OptimizeType;
    let table = open(dir, None).await?;
    let files_before = file_count(dir, &table)?;
    let schema = table
        .snapshot()
        .map_err(table_err(dir))?
        .snapshot()
        .arrow_schema();
    let kind = if zorder_by.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(zorder_by.to_vec())
    };
    let info = json!({
        "run_id": who.map(|w| w.run_id.clone()),
        "task_id": who.map(|w| w.task_id.clone()),
        "maintenance": "optimize",
    });
    let (table, metrics) = table
        .optimize()
        .with_type(kind)
        .with_writer_properties(writer_properties(&schema))
        .with_commit_properties(
            CommitProperties::default().with_metadata([(INFO_KEY.to_string(), info)]),
        )
        .await
        .map_err(table_err(dir))?;
    // A checkpoint of the compacted version: every reader (a query, another process,
    // any Delta reader) starts from it instead of replaying the commits since the last
    // one. The optimize is committed either way; a failed checkpoint costs only speed.
    if let Err(e) = deltalake::checkpoints::create_checkpoint(&table, None).await {
        tracing::warn!(
            "compacted {} but could not write a checkpoint of version {}: {e}",
            dir.display(),
            version_of(&table)
        );
    }
    Ok(Optimized {
        version: version_of(&table),
        files_before,
        files_after: file_count(dir, &table)?,
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
    })
}

/// The shortest `vacuum` retention: Delta's default `deletedFileRetentionDuration`. A
/// reader that planned a query on an older version (another process, a long dashboard
/// query) may still be reading files removed less than this long ago.
pub const VACUUM_MINIMUM: chrono::Duration = chrono::Duration::days(7);

/// What [`vacuum`] did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Vacuumed {
    pub version: u64,
    /// The files deleted (or that would be), relative to the table's directory.
    pub files: Vec<String>,
    pub dry_run: bool,
}

/// A fixed "now" for vacuum (tests ask what a vacuum a week from now deletes).
#[derive(Debug)]
struct At(i64);

impl deltalake::operations::vacuum::Clock for At {
    fn current_timestamp_millis(&self) -> i64 {
        self.0
    }
}

/// Deletes the data files that no version newer than `older_than` before `now` needs:
/// files a restore or an optimize removed from the table more than `older_than` ago, and
/// files no version ever named (a publish killed before its commit) older than that.
/// Versions older than that can no longer be read. Refuses a retention under
/// [`VACUUM_MINIMUM`].
pub async fn vacuum(
    dir: &Path,
    older_than: chrono::Duration,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vacuumed, DeltaError> {
    if older_than < VACUUM_MINIMUM {
        return Err(DeltaError::VacuumTooSoon {
            location: dir.display().to_string(),
            asked_hours: older_than.num_hours(),
        });
    }
    let table = open(dir, None).await?;
    let (table, metrics) = table
        .vacuum()
        // Full: also the data files no version names (a publish killed before its
        // commit), once they are older than the retention, not only those a commit removed.
        .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
        .with_retention_period(older_than)
        .with_clock(Arc::new(At(now.timestamp_millis())))
        .with_dry_run(dry_run)
        .await
        .map_err(table_err(dir))?;
    let mut files = metrics.files_deleted;
    files.sort();
    Ok(Vacuumed {
        version: version_of(&table),
        files,
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
    }

    async fn append_ids(dir: &Path, ids: Vec<i64>, run: &str) -> u64 {
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids))]).unwrap();
        let df = SessionContext::new().read_batch(batch).unwrap();
        let who = Committer::parse(&format!("{run}/publish"));
        match append(dir, df, &who, None, false).await.unwrap() {
            Appended::Committed { version, .. } => version,
            other => panic!("{other:?}"),
        }
    }

    /// The rows of `t` (the table at `dir`) as a DataFusion scan counts them.
    async fn count(dir: &Path, t: &DeltaTable) -> Result<usize, String> {
        let p = provider(dir, t).await.map_err(|e| e.to_string())?;
        let ctx = SessionContext::new();
        ctx.register_table("t", p).unwrap();
        let batches = ctx
            .sql("SELECT * FROM t")
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    async fn rows(dir: &Path, version: Option<u64>) -> Result<usize, String> {
        let t = open(dir, version).await.map_err(|e| e.to_string())?;
        count(dir, &t).await
    }

    async fn read_rows(dir: &Path, version: Option<u64>) -> usize {
        count(dir, &read(dir, version).await.unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_after_a_commit_sees_it_and_a_replaced_table_is_read_afresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir(&dir).unwrap();
        convert(&dir, "t", &schema(), None, 0).await.unwrap();
        append_ids(&dir, vec![1, 2], "a").await;
        assert_eq!(read_rows(&dir, None).await, 2);
        // Committed after the first read was kept: the next read brings it up to date.
        append_ids(&dir, vec![3], "b").await;
        assert_eq!(version_of(&read(&dir, None).await.unwrap()), 2);
        assert_eq!(read_rows(&dir, None).await, 3);
        assert_eq!(read_rows(&dir, Some(1)).await, 2);
        assert_eq!(
            read_rows(&dir, Some(1)).await,
            2,
            "a kept version reads the same"
        );

        // Replaced behind this process's back (another process dropped and made it
        // again): its log starts over, and the kept snapshot is not used.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        convert(&dir, "t", &schema(), None, 0).await.unwrap();
        append_ids(&dir, vec![7], "c").await;
        assert_eq!(version_of(&read(&dir, None).await.unwrap()), 1);
        assert_eq!(read_rows(&dir, None).await, 1);

        // Replaced by this process: forgotten, the same.
        forget(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        convert(&dir, "t", &schema(), None, 0).await.unwrap();
        append_ids(&dir, vec![8, 9, 10, 11], "d").await;
        append_ids(&dir, vec![12], "e").await;
        assert_eq!(read_rows(&dir, None).await, 5);
        assert_eq!(
            read_rows(&dir, Some(1)).await,
            4,
            "not the old table's version 1"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn vacuum_deletes_only_files_removed_longer_ago_than_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir(&dir).unwrap();
        convert(&dir, "t", &schema(), None, 0).await.unwrap();
        for (i, run) in ["a", "b", "c"].iter().enumerate() {
            append_ids(&dir, vec![i as i64 * 10, i as i64 * 10 + 1], run).await;
        }
        let o = optimize(&dir, &[], None).await.unwrap();
        assert_eq!((o.files_before, o.files_after, o.version), (3, 1, 4));

        // Now: the replaced files are fresh; a week's retention keeps them.
        let now = Utc::now();
        let v = vacuum(&dir, VACUUM_MINIMUM, now, false).await.unwrap();
        assert!(v.files.is_empty(), "{v:?}");
        assert_eq!(rows(&dir, Some(3)).await, Ok(6));

        // Under the minimum: refused, whatever the clock says.
        let e = vacuum(&dir, chrono::Duration::days(1), now, false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("safe minimum of 7 days"), "{e}");

        // Eight days on, the three replaced files go; the table reads whole, the
        // versions before the compaction no longer do.
        let later = now + chrono::Duration::days(8);
        let dry = vacuum(&dir, VACUUM_MINIMUM, later, true).await.unwrap();
        assert_eq!(dry.files.len(), 3, "{dry:?}");
        let v = vacuum(&dir, VACUUM_MINIMUM, later, false).await.unwrap();
        assert_eq!(v.files, dry.files);
        assert_eq!(rows(&dir, None).await, Ok(6));
        assert!(rows(&dir, Some(3)).await.is_err());
        let parquet = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count();
        assert_eq!(parquet, 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_publish_another_writer_overtook_commits_nothing_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir(&dir).unwrap();
        convert(&dir, "t", &schema(), None, 0).await.unwrap();
        append_ids(&dir, vec![1], "a").await;
        // Run b stops with its files written, not committed; run c commits meanwhile.
        let hook = PauseHook {
            point: "after-files".into(),
            dir: tmp.path().to_path_buf(),
        };
        let b = {
            let dir = dir.clone();
            tokio::spawn(async move {
                let batch =
                    RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![2]))])
                        .unwrap();
                let df = SessionContext::new().read_batch(batch).unwrap();
                append(&dir, df, &Committer::parse("b/publish"), Some(&hook), false).await
            })
        };
        while !tmp.path().join("paused").exists() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(append_ids(&dir, vec![3], "c").await, 2);
        std::fs::write(tmp.path().join("resume"), "").unwrap();
        let e = b.await.unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                DeltaError::Raced {
                    read: 1,
                    latest: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("committed nothing"), "{e}");
        assert_eq!(rows(&dir, None).await, Ok(2), "rows of a and c only");
        assert_eq!(version_of(&open(&dir, None).await.unwrap()), 2);
    }
}
