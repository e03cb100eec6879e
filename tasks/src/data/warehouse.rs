//! Managed tables: the files orchestrator owns under the warehouse directory.
//!
//! Layout: `{warehouse}/{table}/*.parquet` holds a table's files; `{warehouse}/.staging/`
//! holds files being written. Nothing becomes visible until it is complete:
//!
//! - creating a table writes a whole directory under `.staging/`, renames it to
//!   `{warehouse}/{table}`, then records the table in the catalog;
//! - dropping a table removes its catalog entry, then its directory;
//! - appending (publish) writes one file under `.staging/` and renames it into the table's
//!   directory: one rename, so readers see all of the new rows or none.
//!
//! A crash between steps leaves at most an orphan directory without a catalog entry (not
//! readable as a table, removed by the next create of that name) or a stale row count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::DataFrame;
use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::state::{ColumnRecord, TableRecord};

use super::Format;

pub fn table_dir(warehouse: &Path, table: &str) -> PathBuf {
    warehouse.join(table)
}

/// A fresh path under `{warehouse}/.staging/`, unique to this process and moment.
pub fn staging_path(warehouse: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = warehouse.join(".staging");
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "cannot create {} ({e}); check the warehouse is writable",
            dir.display()
        )
    })?;
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
pub async fn write_parquet(df: DataFrame, path: &Path, single_file: bool) -> Result<u64, String> {
    let target = if single_file {
        path.display().to_string()
    } else {
        super::dir_url(path)
    };
    let batches = df
        .write_parquet(
            &target,
            DataFrameWriteOptions::new().with_single_file_output(single_file),
            None,
        )
        .await
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(rows_written(&batches))
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
) -> Result<TableRecord, String> {
    if let Some(t) = catalog.table(name).map_err(|e| e.to_string())? {
        if t.managed && t.created_by.as_deref() == Some(creator) {
            drop_table(catalog, name, true)?;
        } else {
            let by = t
                .created_by
                .map(|c| format!(" (created by {c})"))
                .unwrap_or_default();
            return Err(format!(
                "table `{name}` already exists{by}; drop it first (`DROP TABLE IF EXISTS {name}` in a `sql` task)"
            ));
        }
    }
    let schema = df.schema().as_arrow().clone();
    let staging = staging_path(warehouse, name)?;
    let rows = write_parquet(df, &staging, false).await?;
    if let Some(p) = pause {
        p.reached("before-rename").await;
    }
    let dir = table_dir(warehouse, name);
    if dir.exists() {
        // An orphan from a crash after rename and before the catalog write: no table
        // refers to it.
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot remove leftover {} ({e})", dir.display()))?;
    }
    if !staging.exists() {
        // A query with no rows may write no file; an empty table is still a table.
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("cannot create {} ({e})", staging.display()))?;
    }
    std::fs::rename(&staging, &dir).map_err(|e| {
        format!(
            "cannot move {} to {} ({e})",
            staging.display(),
            dir.display()
        )
    })?;
    let now = Utc::now();
    let record = TableRecord {
        name: name.to_string(),
        location: dir.display().to_string(),
        format: Format::Parquet.name().into(),
        columns: columns_of(&schema),
        partition_columns: Vec::new(),
        partitions: Vec::new(),
        files: Vec::new(),
        row_count: Some(rows),
        managed: true,
        created_by: Some(creator.to_string()),
        created_at: now,
        updated_at: now,
        last_crawled_at: None,
    };
    catalog
        .put_table(record.clone())
        .map_err(|e| e.to_string())?;
    Ok(record)
}

/// Drops table `name`: its catalog entry, then, for managed tables, its files.
/// Returns whether it existed.
pub fn drop_table(catalog: &dyn Catalog, name: &str, if_exists: bool) -> Result<bool, String> {
    let Some(table) = catalog.table(name).map_err(|e| e.to_string())? else {
        return if if_exists {
            Ok(false)
        } else {
            Err(format!(
                "table `{name}` does not exist; write `DROP TABLE IF EXISTS {name}` to allow that"
            ))
        };
    };
    catalog.drop_table(name).map_err(|e| e.to_string())?;
    if table.managed {
        let dir = Path::new(&table.location);
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| {
                format!(
                    "dropped table `{name}`, but cannot remove {} ({e})",
                    dir.display()
                )
            })?;
        }
    }
    Ok(true)
}
