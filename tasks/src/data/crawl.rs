//! `kind: crawl` — the Glue crawler: registers a directory of files as a catalog table.
//!
//! Scans `path` recursively; `key=value` directories are Hive-style partitions (read as
//! string columns). Each file not seen by an earlier crawl has its schema inferred on its
//! own, so a column whose type changed is reported with the file that changed it. A
//! missing or empty directory is an error, never an empty table.
//!
//! The row count is kept incrementally: while no file of the previous crawl has gone,
//! only the new files are read to count theirs (a landing zone of thousands of one-day
//! partitions is not re-read every day); when files have gone, everything is counted.
//!
//! CSV files are read once each, on every core, for both their schema and their rows
//! ([`super::csv_scan`]); JSON and Parquet go through DataFusion's inference and a count.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::lineage::{Dataset, Datasets, Place};
use orchestrator_engine::state::{ColumnRecord, StateError, TableRecord};
use orchestrator_engine::task::{
    BuildContext, Invalid, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use super::csv_scan::{scan_all, ToScan};
use super::{dir_url, on_engine, register, EngineError, Format};

/// A table name that is not a plain SQL identifier (see [`check_table_name`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid table name `{name}`: use lowercase letters, digits and `_`, not starting with a digit"
)]
pub struct BadTableName {
    pub name: String,
}

impl From<BadTableName> for Invalid {
    fn from(e: BadTableName) -> Self {
        e.to_string().into()
    }
}

/// Why one file could not be read: the filesystem, or the CSV/JSON/Parquet reader.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Format(#[from] DataFusionError),
}

/// Why a crawl did not register its directory as a table. Most say what to change: the
/// directory, its files, or the table name.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error("{} is a file, not a directory; `path:` must name a directory", .dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("cannot read directory {} ({source}); check `path:`", .dir.display())]
    NoDirectory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {} ({source})", .dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no .csv, .json or .parquet files; an empty directory is not an empty table", .dir.display())]
    NoFiles { dir: PathBuf },
    #[error("{} has no {extension} files; an empty directory is not an empty table", .dir.display())]
    NoFilesOf {
        dir: PathBuf,
        extension: &'static str,
    },
    #[error("{} mixes file formats ({}); set `format:` to the one this table has", .dir.display(), .formats.join(", "))]
    MixedFormats { dir: PathBuf, formats: Vec<String> },
    /// A file below a directory that is not `key=value`.
    #[error("{} is in directory `{dir}`, which is not a partition (`key=value`); move it, or crawl a narrower path", .file.display())]
    NotAPartition { file: PathBuf, dir: String },
    #[error("file {file} is partitioned by ({}) but {first} by ({}); every file of a table needs the same partition directories", .keys.join(", "), .first_keys.join(", "))]
    PartitionsDiffer {
        file: String,
        keys: Vec<String>,
        first: String,
        first_keys: Vec<String>,
    },
    /// The table is a managed one (written by orchestrator), not a crawled one.
    #[error("table `{table}` was created by orchestrator in the warehouse; crawl into another table name")]
    Managed { table: String },
    #[error("table `{table}` holds {table_format} files, but {} has {format} files; crawl them into another table", .dir.display())]
    FormatDiffers {
        table: String,
        table_format: String,
        dir: PathBuf,
        format: &'static str,
    },
    #[error("table `{table}` is partitioned by ({}), but the files under {} are partitioned by ({})", .table_keys.join(", "), .dir.display(), .keys.join(", "))]
    PartitioningDiffers {
        table: String,
        table_keys: Vec<String>,
        dir: PathBuf,
        keys: Vec<String>,
    },
    /// A new file gives a column a type the table's type cannot widen to.
    #[error("column `{column}` in {} is {data_type}, but table `{table}` has it as {table_type}; fix the file, or drop the table and crawl again", .file.display())]
    TypeChanged {
        column: String,
        file: PathBuf,
        data_type: String,
        table: String,
        table_type: String,
    },
    /// `file` is relative to the crawled directory.
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: ReadError,
    },
    #[error(
        "{file}: column {column} of the header has no name (header: `{header}`); name every column"
    )]
    UnnamedColumn {
        file: String,
        /// 1-based.
        column: usize,
        header: String,
    },
    #[error("{file}: column `{name}` appears twice in the header (columns {first} and {second}); column names must be unique")]
    RepeatedColumn {
        file: String,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("cannot read table `{table}` at {url}: {source}")]
    Count {
        table: String,
        url: String,
        #[source]
        source: Box<EngineError>,
    },
    #[error("cannot count the rows of the new files of `{table}`: {source}")]
    CountNew {
        table: String,
        #[source]
        source: DataFusionError,
    },
    /// The blocking task scanning the files panicked: a bug.
    #[error("the crawl's file scan crashed ({0}); this is a bug, please report it")]
    ScanCrashed(#[source] tokio::task::JoinError),
    /// A thread scanning the files panicked: a bug.
    #[error("a crawl worker crashed; this is a bug, please report it")]
    WorkerCrashed,
    #[error(transparent)]
    Catalog(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl From<CrawlError> for TaskFailure {
    fn from(e: CrawlError) -> Self {
        TaskFailure::new(e.to_string())
    }
}

/// Scans a directory of CSV, JSON or Parquet files (Hive `key=value` partitions) into a catalog table, like a Glue crawler; on AWS, runs one.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrawlConfig {
    /// The directory to scan; relative to the workflow file's directory.
    path: PathBuf,
    /// The catalog table to create or update.
    table: String,
    /// `csv`, `json` (one object per line) or `parquet`; default: from file extensions.
    format: Option<Format>,
    /// AWS: the Glue crawler's name (default `orchestrator-TABLE`).
    crawler: Option<String>,
    /// AWS: the IAM role the crawler runs as; needed when it must be created.
    role: Option<String>,
}

impl TaskConfig for CrawlConfig {
    const KIND: &'static str = "crawl";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        ("table", "the catalog table"),
        ("files_seen", "files found"),
        ("new_files", "files not seen by an earlier crawl"),
        ("new_partitions", "partitions not seen before"),
        ("schema_changes", "columns added or widened"),
        ("row_count", "the table's rows"),
    ];

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        check_table_name(&self.table)?;
        if let crate::aws::Target::Aws(block) = crate::aws::Target::of(ctx) {
            let path = self.path.display().to_string();
            if !path.starts_with("s3://") {
                return Err(invalid!(
                    "`path: {path}`: on the aws backend a crawler reads S3; give an s3:// URL (e.g. the ingest's `output:` in S3 plus /bars)"
                ));
            }
            return Ok(Arc::new(GlueCrawl {
                block,
                crawler: self
                    .crawler
                    .unwrap_or_else(|| format!("orchestrator-{}", self.table)),
                role: self.role.filter(|r| !r.trim().is_empty()),
                path,
                table: self.table,
            }));
        }
        Ok(Arc::new(Crawl {
            dir: ctx.resolve(self.path),
            table: self.table,
            format: self.format,
        }))
    }
}

/// Table names are plain SQL identifiers, so they need no quoting in queries.
pub fn check_table_name(name: &str) -> Result<(), BadTableName> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BadTableName {
            name: name.to_string(),
        })
    }
}

/// `crawl` on AWS: a Glue crawler over the S3 path. The crawler names its table after the
/// path's last folder (`.../bars/` → `bars`); when `table` differs, an Athena view
/// `table` over it gives the pipeline the name it asked for.
#[derive(Debug)]
struct GlueCrawl {
    block: orchestrator_engine::workflow::AwsBlock,
    crawler: String,
    role: Option<String>,
    path: String,
    table: String,
}

#[async_trait::async_trait]
impl Task for GlueCrawl {
    fn lineage(&self, _: Place<'_>, _: Option<&Outputs>) -> Datasets {
        Datasets {
            inputs: Dataset::s3(&self.path).into_iter().collect(),
            outputs: vec![crate::aws::table_dataset(&self.block, &self.table)],
        }
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let athena = crate::aws::Athena::new(&self.block, ctx).await;
        let path = format!("{}/", self.path.trim_end_matches('/'));
        let progress = |line: &str| ctx.output.line(line);
        let done = athena
            .aws()
            .crawl_reporting(
                &self.crawler,
                &path,
                self.role.as_deref(),
                None,
                &ctx.cancel,
                &progress,
            )
            .await
            .map_err(|e| TaskFailure::new(e.to_string()))?;
        let crawled = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_lowercase()
            .replace('-', "_");
        ctx.output.line(&format!(
            "crawler {} {} ({} status calls): table {crawled}",
            self.crawler, done.status, done.polls
        ));
        let mut view = None;
        if crawled != self.table {
            athena
                .execute(&format!(
                    "CREATE OR REPLACE VIEW {} AS SELECT * FROM {crawled}",
                    self.table
                ))
                .await?;
            view = Some(self.table.clone());
        }
        Ok(crate::aws::object(json!({
            "crawler": self.crawler, "created": done.created, "updated": done.updated,
            "status": done.status, "polls": done.polls, "crawled_table": crawled, "view": view,
        })))
    }
}

#[derive(Debug)]
struct Crawl {
    dir: PathBuf,
    table: String,
    format: Option<Format>,
}

#[async_trait::async_trait]
impl Task for Crawl {
    fn lineage(&self, place: Place<'_>, _: Option<&Outputs>) -> Datasets {
        Datasets {
            inputs: vec![Dataset::file(&self.dir)],
            outputs: vec![Dataset::local_table(place.warehouse, &self.table)],
        }
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let (dir, table, format, catalog) = (
            self.dir.clone(),
            self.table.clone(),
            self.format,
            ctx.catalog.clone(),
        );
        let outputs = on_engine(crawl(dir, table, format, catalog)).await??;
        ctx.output.line(&format!(
            "crawled {}: {} files ({} new), {}, {} rows",
            self.table,
            outputs["files_seen"],
            outputs["new_files"],
            partitions_line(&outputs["new_partitions"]),
            outputs["row_count"]
        ));
        Ok(outputs)
    }
}

/// New partitions for a person: a count and the first and last, not 251 names on a line
/// (the task's outputs keep the whole list).
fn partitions_line(new: &serde_json::Value) -> String {
    let names: Vec<&str> = new
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    match names.as_slice() {
        [] => "no new partitions".to_string(),
        [one] => format!("1 new partition ({one})"),
        [first, .., last] => format!("{} new partitions ({first} .. {last})", names.len()),
    }
}

struct Found {
    /// Relative to the crawled directory, `/`-separated.
    rel: String,
    abs: PathBuf,
    /// `(key, value)` of each partition directory, outermost first.
    partitions: Vec<(String, String)>,
}

async fn crawl(
    dir: PathBuf,
    table: String,
    format: Option<Format>,
    catalog: Arc<dyn Catalog>,
) -> Result<Outputs, CrawlError> {
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(CrawlError::NotADirectory { dir }),
        Err(source) => return Err(CrawlError::NoDirectory { dir, source }),
    }
    let mut all = Vec::new();
    walk(&dir, &mut all)?;
    let format = match format {
        Some(f) => f,
        None => {
            // By name, so a mix is listed in a stable order.
            let seen: std::collections::BTreeMap<&str, Format> = all
                .iter()
                .filter_map(|p| Format::from_extension(p).map(|f| (f.name(), f)))
                .collect();
            match (seen.values().next(), seen.len()) {
                (Some(f), 1) => *f,
                (None, _) => return Err(CrawlError::NoFiles { dir }),
                _ => {
                    return Err(CrawlError::MixedFormats {
                        dir,
                        formats: seen.keys().map(|n| n.to_string()).collect(),
                    })
                }
            }
        }
    };
    let files: Vec<Found> = all
        .iter()
        .filter(|p| Format::from_extension(p) == Some(format))
        .map(|p| found(&dir, p))
        .collect::<Result<_, _>>()?;
    let Some(first) = files.first() else {
        return Err(CrawlError::NoFilesOf {
            dir,
            extension: format.extension(),
        });
    };
    let keys: Vec<String> = first.partitions.iter().map(|(k, _)| k.clone()).collect();
    for f in &files {
        let these: Vec<&String> = f.partitions.iter().map(|(k, _)| k).collect();
        if these != keys.iter().collect::<Vec<_>>() {
            return Err(CrawlError::PartitionsDiffer {
                file: f.rel.clone(),
                keys: these.into_iter().cloned().collect(),
                first: first.rel.clone(),
                first_keys: keys,
            });
        }
    }

    let existing = catalog.table(&table)?;
    if let Some(t) = &existing {
        if t.managed {
            return Err(CrawlError::Managed { table });
        }
        if t.format != format.name() {
            return Err(CrawlError::FormatDiffers {
                table,
                table_format: t.format.clone(),
                dir,
                format: format.name(),
            });
        }
        if t.partition_columns != keys && !t.files.is_empty() {
            return Err(CrawlError::PartitioningDiffers {
                table,
                table_keys: t.partition_columns.clone(),
                dir,
                keys,
            });
        }
    }
    let known: BTreeSet<&str> = existing
        .iter()
        .flat_map(|t| t.files.iter().map(String::as_str))
        .collect();
    let known_partitions: BTreeSet<&str> = existing
        .iter()
        .flat_map(|t| t.partitions.iter().map(String::as_str))
        .collect();

    let mut columns: Vec<ColumnRecord> = existing
        .as_ref()
        .map(|t| t.columns.clone())
        .unwrap_or_default();
    let mut schema_changes = Vec::new();
    let ctx = SessionContext::new();
    let state = ctx.state();
    let options = format.listing_options(&[]);

    // The row count carries over while no file of the previous crawl has gone: only new
    // files are counted then.
    let gone = known.len()
        > files
            .iter()
            .filter(|f| known.contains(f.rel.as_str()))
            .count();
    // Each file's rows, when the previous crawl knew them all (CSV): then files that have
    // gone (expired, deleted) are subtracted instead of recounting those that are left.
    let old_rows: Option<std::collections::HashMap<&str, u64>> = existing
        .as_ref()
        .filter(|t| !t.files.is_empty() && t.file_rows.len() == t.files.len())
        .map(|t| {
            t.files
                .iter()
                .map(String::as_str)
                .zip(t.file_rows.iter().copied())
                .collect()
        });
    let gone_rows = if gone {
        let current: BTreeSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        old_rows.as_ref().map(|rows| {
            rows.iter()
                .filter(|(f, _)| !current.contains(*f))
                .map(|(_, n)| n)
                .sum::<u64>()
        })
    } else {
        Some(0)
    };
    let previous = existing
        .as_ref()
        .and_then(|t| t.row_count)
        .zip(gone_rows)
        .map(|(n, g)| n.saturating_sub(g));
    let is_new = |f: &&Found| !known.contains(f.rel.as_str());
    // CSV: one parallel pass over each file gives its schema and its rows (csv_scan).
    let mut csv: Option<(std::collections::HashMap<String, Schema>, u64)> = None;
    let mut file_rows: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    if format == Format::Csv {
        for f in files.iter().filter(is_new) {
            check_csv_header(&f.abs, &f.rel)?;
        }
        let to_scan: Vec<ToScan> = files
            .iter()
            .filter(|f| previous.is_none() || is_new(f))
            .map(|f| ToScan {
                abs: f.abs.clone(),
                rel: f.rel.clone(),
                infer: is_new(&f),
            })
            .collect();
        let scanned = tokio::task::spawn_blocking(move || {
            let scanned = scan_all(&to_scan)?;
            Ok::<_, CrawlError>(to_scan.into_iter().zip(scanned).collect::<Vec<_>>())
        })
        .await
        .map_err(CrawlError::ScanCrashed)??;
        let mut schemas = std::collections::HashMap::new();
        let mut rows = previous.unwrap_or(0);
        for (f, s) in scanned {
            rows += s.rows;
            file_rows.insert(f.rel.clone(), s.rows);
            if let Some(schema) = s.schema {
                schemas.insert(f.rel, schema);
            }
        }
        csv = Some((schemas, rows));
    }

    let mut new_files = 0;
    for f in files.iter().filter(is_new) {
        new_files += 1;
        let schema = match csv.as_mut().and_then(|(schemas, _)| schemas.remove(&f.rel)) {
            Some(schema) => schema,
            None => {
                let url = ListingTableUrl::parse(f.abs.display().to_string())?;
                let schema =
                    options
                        .infer_schema(&state, &url)
                        .await
                        .map_err(|e| CrawlError::Read {
                            file: f.rel.clone(),
                            source: e.into(),
                        })?;
                Schema::clone(&schema)
            }
        };
        for field in schema.fields() {
            let data_type = field.data_type().to_string();
            match columns.iter_mut().find(|c| c.name == *field.name()) {
                None => {
                    if existing.is_some() || !columns.is_empty() {
                        schema_changes.push(format!(
                            "new column `{}` ({data_type}) in {}",
                            field.name(),
                            f.rel
                        ));
                    }
                    columns.push(ColumnRecord {
                        name: field.name().clone(),
                        data_type,
                        nullable: true,
                    });
                }
                Some(c) if c.data_type == data_type => {}
                Some(c) => match widen(&c.data_type, &data_type) {
                    Some(wider) if wider == c.data_type => {}
                    Some(wider) => {
                        schema_changes.push(format!(
                            "column `{}` widened from {} to {wider} by {}",
                            c.name, c.data_type, f.rel
                        ));
                        c.data_type = wider;
                    }
                    None => {
                        return Err(CrawlError::TypeChanged {
                            column: field.name().clone(),
                            file: f.abs.clone(),
                            data_type,
                            table,
                            table_type: c.data_type.clone(),
                        })
                    }
                },
            }
        }
    }

    let partitions: BTreeSet<String> = files
        .iter()
        .filter(|f| !f.partitions.is_empty())
        .map(|f| {
            f.partitions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let new_partitions: Vec<&String> = partitions
        .iter()
        .filter(|p| !known_partitions.contains(p.as_str()))
        .collect();
    let now = Utc::now();
    let mut record = TableRecord {
        name: table.clone(),
        location: dir.display().to_string(),
        format: format.name().into(),
        columns,
        partition_columns: keys,
        partitions: partitions.iter().cloned().collect(),
        files: files.iter().map(|f| f.rel.clone()).collect(),
        file_rows: files
            .iter()
            .map(|f| {
                file_rows.get(&f.rel).copied().or_else(|| {
                    old_rows
                        .as_ref()
                        .and_then(|rows| rows.get(f.rel.as_str()).copied())
                })
            })
            .collect::<Option<Vec<u64>>>()
            .unwrap_or_default(),
        row_count: None,
        managed: false,
        created_by: None,
        created_at: existing.as_ref().map_or(now, |t| t.created_at),
        updated_at: now,
        last_crawled_at: Some(now),
        version: None,
        undone: Vec::new(),
    };
    record.row_count = Some(match (csv, previous) {
        (Some((_, rows)), _) => rows,
        (None, Some(before)) => {
            let new: Vec<&Found> = files.iter().filter(is_new).collect();
            before + count_new_rows(&ctx, &record, format, &new).await?
        }
        (None, None) => count_rows(&ctx, &record).await?,
    });
    let outputs = json!({
        "table": table,
        "files_seen": files.len(),
        "new_files": new_files,
        "new_partitions": new_partitions,
        "schema_changes": schema_changes,
        "row_count": record.row_count,
    });
    catalog.put_table(record)?;
    match outputs {
        serde_json::Value::Object(map) => Ok(map),
        _ => Ok(Outputs::new()),
    }
}

async fn count_rows(ctx: &SessionContext, table: &TableRecord) -> Result<u64, CrawlError> {
    register(ctx, table).await?;
    super::scalar_u64(ctx, &format!("SELECT count(*) FROM {}", table.name))
        .await
        .map_err(|source| CrawlError::Count {
            table: table.name.clone(),
            url: dir_url(Path::new(&table.location)),
            source: Box::new(source),
        })
}

/// Rows in just these files of the table.
async fn count_new_rows(
    ctx: &SessionContext,
    table: &TableRecord,
    format: Format,
    files: &[&Found],
) -> Result<u64, CrawlError> {
    use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
    if files.is_empty() {
        return Ok(0);
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(f.abs.display().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(format.listing_options(&[]))
        .with_schema(super::schema_of(table)?);
    let listing = ListingTable::try_new(config)?;
    let df = ctx.read_table(Arc::new(listing))?;
    df.count()
        .await
        .map(|n| n as u64)
        .map_err(|source| CrawlError::CountNew {
            table: table.name.clone(),
            source,
        })
}

/// The type both `a` and `b` fit in, if one is a widening of the other.
fn widen(a: &str, b: &str) -> Option<String> {
    const INTS: &[&str] = &["Int8", "Int16", "Int32", "Int64"];
    let rank = |t: &str| INTS.iter().position(|i| *i == t);
    match (a, b) {
        (x, "Null") | ("Null", x) => Some(x.to_string()),
        (x, y) if rank(x).is_some() && rank(y).is_some() => {
            Some(if rank(x) >= rank(y) { x } else { y }.to_string())
        }
        (x, "Float64") | ("Float64", x) if rank(x).is_some() || x == "Float32" => {
            Some("Float64".into())
        }
        _ => None,
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CrawlError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CrawlError::List {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            // Hidden files and `_SUCCESS`-style markers, as Hive and Spark skip them.
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !n.starts_with('_'))
        })
        .collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn found(root: &Path, path: &Path) -> Result<Found, CrawlError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut partitions = Vec::new();
    for dir in &parts[..parts.len().saturating_sub(1)] {
        match dir.split_once('=') {
            Some((k, v)) if !k.is_empty() => partitions.push((k.to_string(), v.to_string())),
            _ => {
                return Err(CrawlError::NotAPartition {
                    file: rel.to_path_buf(),
                    dir: dir.clone(),
                })
            }
        }
    }
    Ok(Found {
        rel: parts.join("/"),
        abs: path.to_path_buf(),
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::widen;

    #[test]
    fn new_partitions_are_counted_with_the_first_and_last() {
        let many: Vec<String> = (1..=251).map(|d| format!("dt=2025-{d:03}")).collect();
        assert_eq!(
            super::partitions_line(&serde_json::json!(many)),
            "251 new partitions (dt=2025-001 .. dt=2025-251)"
        );
        assert_eq!(
            super::partitions_line(&serde_json::json!(["dt=x"])),
            "1 new partition (dt=x)"
        );
        assert_eq!(
            super::partitions_line(&serde_json::json!([])),
            "no new partitions"
        );
    }

    #[test]
    fn widening() {
        assert_eq!(widen("Int64", "Float64").as_deref(), Some("Float64"));
        assert_eq!(widen("Float64", "Int64").as_deref(), Some("Float64"));
        assert_eq!(widen("Int32", "Int64").as_deref(), Some("Int64"));
        assert_eq!(widen("Float64", "Utf8"), None);
        assert_eq!(widen("Date32", "Utf8"), None);
    }
}

/// Names the column when a CSV header has an empty or repeated name: the CSV reader would
/// only say "incorrect number of fields" or pick one of the two.
fn check_csv_header(path: &Path, rel: &str) -> Result<(), CrawlError> {
    use std::io::{BufRead, Read};
    let unreadable = |e: std::io::Error| CrawlError::Read {
        file: rel.to_string(),
        source: e.into(),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut header = String::new();
    // A header longer than 1 MiB is not one we can judge; let the reader have it.
    std::io::BufReader::new(file.take(1 << 20))
        .read_line(&mut header)
        .map_err(unreadable)?;
    let header = header
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\n', '\r']);
    if header.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = header
        .split(',')
        .map(|n| n.trim().trim_matches('"').trim())
        .collect();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(CrawlError::UnnamedColumn {
                file: rel.to_string(),
                column: i + 1,
                header: header.to_string(),
            });
        }
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            return Err(CrawlError::RepeatedColumn {
                file: rel.to_string(),
                name: name.to_string(),
                first: j + 1,
                second: i + 1,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod header_tests {
    use super::check_csv_header;

    #[test]
    fn csv_headers_with_empty_or_repeated_names_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "a,a,\n1,2,3\n").unwrap();
        let e = check_csv_header(&p, "x.csv").unwrap_err().to_string();
        assert!(e.contains("column `a` appears twice"), "{e}");
        std::fs::write(&p, "a,b,\n1,2,3\n").unwrap();
        let e = check_csv_header(&p, "x.csv").unwrap_err().to_string();
        assert!(e.contains("column 3 of the header has no name"), "{e}");
        std::fs::write(&p, "\"a\",b\n1,2\n").unwrap();
        assert!(check_csv_header(&p, "x.csv").is_ok());
    }
}
