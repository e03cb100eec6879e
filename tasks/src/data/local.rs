//! The local backend: DataFusion over the catalog's tables; published tables are Delta
//! tables and work tables Parquet, under the warehouse directory (see
//! [`super::warehouse`]).
//!
//! A kind's logic runs inside [`super::on_engine`] with a [`Local`]: one DataFusion
//! session, rebuilt after every write so later queries see the new files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::common::Column;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{lit, Expr, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement as Sql};
use orchestrator_engine::catalog::Catalog;
use serde_json::Value;

use super::backend::{
    ident, DataError, Refusal, SqlEngine, Statement, TableShape, Warehouse, Written,
};
use super::{count, delta, one_row, rows_json, scalar_u64, session, warehouse, PauseHook};

/// The view [`Local::candidates`] registers.
const CANDIDATES: &str = "__publish_existing";

pub struct Local {
    catalog: Arc<dyn Catalog>,
    warehouse: PathBuf,
    /// A warehouse on S3 (`s3://bucket/prefix`): where a first publish creates its table.
    lake: Option<String>,
    /// `RUN_ID/TASK_ID`: who created a table (a retried task may replace its own).
    creator: String,
    pause: Option<PauseHook>,
    /// `FILE:LINE` of the task's `sql:`, for errors in it.
    location: Option<String>,
    session: Mutex<SessionContext>,
}

impl Local {
    /// A session over every catalog table. Runs on the engine's runtime.
    pub async fn open(
        catalog: Arc<dyn Catalog>,
        warehouse: PathBuf,
        creator: String,
        pause: Option<PauseHook>,
        location: Option<String>,
    ) -> Result<Local, DataError> {
        let session = session(catalog.as_ref()).await?;
        Ok(Local {
            catalog,
            warehouse,
            lake: None,
            creator,
            pause,
            location,
            session: Mutex::new(session),
        })
    }

    /// Published tables this backend creates go to `lake` (an `s3://` warehouse).
    pub fn with_lake(mut self, lake: Option<String>) -> Local {
        self.lake = lake;
        self
    }

    fn session(&self) -> SessionContext {
        match self.session.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A fresh session: the old one listed tables' files before a write changed them
    /// (and may answer count(*) from those files' statistics).
    async fn refresh(&self) -> Result<(), DataError> {
        let fresh = session(self.catalog.as_ref()).await?;
        match self.session.lock() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// A DataFusion error in the task's SQL, explained against the catalog.
    fn explain(&self, sql: &str, e: &datafusion::error::DataFusionError) -> DataError {
        DataError::Local(super::explain_task_sql_error(
            self.catalog.as_ref(),
            sql,
            e,
            "sql",
            self.location.as_deref(),
        ))
    }

    fn record(
        &self,
        name: &str,
    ) -> Result<Option<orchestrator_engine::state::TableRecord>, DataError> {
        self.catalog
            .table(name)
            .map_err(|e| DataError::Local(e.to_string()))
    }
}

fn df_err(e: datafusion::error::DataFusionError) -> DataError {
    DataError::Local(e.to_string())
}

#[async_trait::async_trait]
impl SqlEngine for Local {
    async fn count(&self, query: &str) -> Result<u64, DataError> {
        Ok(scalar_u64(
            &self.session(),
            &format!("SELECT count(*) AS n FROM ({query}) AS v"),
        )
        .await?)
    }

    async fn sample(&self, query: &str, n: usize) -> Result<Vec<Value>, DataError> {
        let df = self
            .session()
            .sql(&format!("SELECT * FROM ({query}) AS v LIMIT {n}"))
            .await
            .map_err(df_err)?;
        Ok(rows_json(&df.collect().await.map_err(df_err)?)?)
    }

    async fn counts(&self, query: &str) -> Result<Vec<u64>, DataError> {
        Ok(one_row(&self.session(), query)
            .await?
            .iter()
            .map(count)
            .collect())
    }
}

#[async_trait::async_trait]
impl Warehouse for Local {
    fn place(&self) -> String {
        String::new()
    }

    fn evolves(&self) -> bool {
        true
    }

    fn add_column_hint(&self, _table: &str, _column: &str, _data_type: &str) -> String {
        ", or set `schema: evolve` on the publish task to add it (earlier rows read it as null)"
            .to_string()
    }

    async fn table(&self, name: &str) -> Result<Option<TableShape>, DataError> {
        Ok(self.record(name)?.map(|t| TableShape {
            name: t.name.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.data_type.clone()))
                .collect(),
            read_only: (!t.managed).then(|| {
                "a crawled (external) table; publish writes only to tables in the warehouse"
                    .to_string()
            }),
        }))
    }

    /// Only the part of `to` inside the source's key ranges can match: with the ranges
    /// as literals, the scan skips every file and row group whose statistics lie
    /// outside, so publishing a day reads that day's files, not the whole table.
    async fn candidates(&self, to: &str, from: &str, key: &[String]) -> Result<String, DataError> {
        let session = self.session();
        let ranges = key
            .iter()
            .map(|k| format!("min({k}), max({k})", k = ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let bounds = one_row(&session, &format!("SELECT {ranges} FROM {from}")).await?;
        let mut existing = session.table(to).await.map_err(df_err)?;
        for (i, k) in key.iter().enumerate() {
            let (Some(lo), Some(hi)) = (bounds.get(2 * i), bounds.get(2 * i + 1)) else {
                continue;
            };
            if lo.is_null() || hi.is_null() {
                continue;
            }
            let column = Expr::Column(Column::new_unqualified(k.as_str()));
            existing = existing
                .filter(column.between(lit(lo.clone()), lit(hi.clone())))
                .map_err(df_err)?;
        }
        let _ = session.deregister_table(CANDIDATES);
        session
            .register_table(CANDIDATES, existing.into_view())
            .map_err(df_err)?;
        Ok(CANDIDATES.to_string())
    }

    /// A first publish shares the audited files instead of rewriting every row, and makes
    /// them a Delta table (see [`warehouse::create_published`]).
    async fn create_from(
        &self,
        to: &str,
        from: &TableShape,
        _key: &[String],
        rows: u64,
    ) -> Result<Written, DataError> {
        let source = self.record(&from.name)?.ok_or_else(|| Refusal::NoTable {
            table: from.name.clone(),
            place: String::new(),
        })?;
        let df = self
            .session()
            .sql(&format!("SELECT * FROM {}", from.name))
            .await
            .map_err(df_err)?;
        if let Some(lake) = &self.lake {
            let t = warehouse::create_published_remote(
                self.catalog.as_ref(),
                lake,
                to,
                df,
                &self.creator,
            )
            .await?;
            self.refresh().await?;
            let n = t.row_count.unwrap_or(0);
            return Ok(Written {
                rows: Some(n),
                table_rows: Some(n),
                location: Some(t.location),
            });
        }
        let t = warehouse::create_published(
            self.catalog.as_ref(),
            &self.warehouse,
            to,
            &source,
            df,
            rows,
            &self.creator,
            self.pause.as_ref(),
        )
        .await?;
        self.refresh().await?;
        let n = t.row_count.unwrap_or(0);
        Ok(Written {
            rows: Some(n),
            table_rows: Some(n),
            location: Some(t.location),
        })
    }

    /// The new rows are appended to `to`'s Delta table as one commit (see
    /// [`delta::append`]): a crash at any point leaves `to` at its old version or its new
    /// one, and publishing again afterwards inserts exactly what is missing.
    async fn insert_new(
        &self,
        from: &TableShape,
        to: &TableShape,
        candidates: &str,
        key: &[String],
    ) -> Result<Written, DataError> {
        let target = self.record(&to.name)?.ok_or_else(|| Refusal::NoTable {
            table: to.name.clone(),
            place: String::new(),
        })?;
        let columns = to
            .columns
            .iter()
            .map(|(c, _)| format!("f.{}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let matches = key
            .iter()
            .map(|k| format!("t.{k} = f.{k}", k = ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let new_rows = self
            .session()
            .sql(&format!(
                "SELECT {columns} FROM {} AS f WHERE NOT EXISTS (SELECT 1 FROM {candidates} AS t WHERE {matches})",
                from.name
            ))
            .await
            .map_err(df_err)?;
        let schema = new_rows.schema().as_arrow().clone();
        let dir = PathBuf::from(&target.location);
        let who = delta::Committer::parse(&self.creator);
        // `publish` widened `to` with the source's new columns only under `schema: evolve`.
        let evolve = to.columns.len() > target.columns.len();
        let appended = delta::append(&dir, new_rows, &who, self.pause.as_ref(), evolve)
            .await
            .map_err(|e| DataError::Local(e.to_string()))?;
        let (inserted, version) = match appended {
            delta::Appended::Committed { version, rows } => (rows, version),
            delta::Appended::AlreadyCommitted { version } => (0, version),
        };
        self.refresh().await?;
        let total = scalar_u64(
            &self.session(),
            &format!("SELECT count(*) FROM {}", to.name),
        )
        .await?;
        let mut updated = target;
        updated.row_count = Some(total);
        updated.version = Some(version);
        updated.updated_at = chrono::Utc::now();
        if updated.columns.len() != schema.fields().len() {
            updated.columns = warehouse::columns_of(&schema);
        }
        let location = updated.location.clone();
        self.catalog
            .put_table(updated)
            .map_err(|e| DataError::Local(e.to_string()))?;
        Ok(Written {
            rows: Some(inserted),
            table_rows: Some(total),
            location: Some(location),
        })
    }

    /// Nothing to insert: the catalog still learns the table's version, in case the
    /// commit that inserted these rows was killed before its catalog write.
    async fn unchanged(&self, to: &str) -> Result<(), DataError> {
        warehouse::remove_leftovers(&self.warehouse, to);
        if let Some(mut t) = self.record(to)? {
            if t.format == super::DELTA {
                let table = delta::open(std::path::Path::new(&t.location), None)
                    .await
                    .map_err(|e| DataError::Local(e.to_string()))?;
                let version = delta::version_of(&table);
                if t.version != Some(version) {
                    t.version = Some(version);
                    t.row_count = Some(
                        scalar_u64(&self.session(), &format!("SELECT count(*) FROM {to}")).await?,
                    );
                    t.updated_at = chrono::Utc::now();
                    self.catalog
                        .put_table(t)
                        .map_err(|e| DataError::Local(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    async fn create_table_as(&self, table: &str, select: &str) -> Result<Written, DataError> {
        let df = self
            .session()
            .sql(select)
            .await
            .map_err(|e| self.explain(select, &e))?;
        let t = warehouse::create_table(
            self.catalog.as_ref(),
            &self.warehouse,
            table,
            df,
            &self.creator,
            self.pause.as_ref(),
        )
        .await?;
        self.refresh().await?;
        Ok(Written {
            rows: t.row_count,
            table_rows: t.row_count,
            location: Some(t.location),
        })
    }

    fn parse(&self, sql: &str) -> Result<Vec<Statement>, DataError> {
        let statements =
            DFParser::parse_sql(sql).map_err(|e| Refusal::Invalid(format!("invalid SQL: {e}")))?;
        let mut out = Vec::new();
        for statement in statements {
            let DfStatement::Statement(s) = statement else {
                return Err(Refusal::Invalid(format!(
                    "`{statement}` is not supported in a `sql` task; use DROP TABLE, CREATE TABLE ... AS SELECT, or a query"
                ))
                .into());
            };
            out.push(match *s {
                Sql::Drop {
                    object_type: ObjectType::Table,
                    if_exists,
                    names,
                    ..
                } => Statement::Drop {
                    names: names.iter().map(|n| n.to_string().to_lowercase()).collect(),
                    if_exists,
                },
                Sql::CreateTable(ct) if ct.query.is_some() => Statement::CreateAs {
                    name: ct.name.to_string().to_lowercase(),
                    if_not_exists: ct.if_not_exists,
                    or_replace: ct.or_replace,
                    query: ct.query.as_ref().map(|q| q.to_string()).unwrap_or_default(),
                    text: Sql::CreateTable(ct).to_string(),
                },
                other => Statement::Other(other.to_string()),
            });
        }
        Ok(out)
    }

    async fn drop_table(&self, name: &str) -> Result<(), DataError> {
        warehouse::drop_table(self.catalog.as_ref(), name, true)?;
        self.refresh().await
    }

    async fn create_as(&self, name: &str, query: &str, _text: &str) -> Result<Written, DataError> {
        self.create_table_as(name, query).await
    }

    async fn run_statement(&self, statement: &str) -> Result<u64, DataError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false);
        let df = self
            .session()
            .sql_with_options(statement, options)
            .await
            .map_err(|e| {
                if e.to_string().contains("not supported") {
                    DataError::Refused(Refusal::Invalid(format!(
                        "{e}; in a `sql` task, tables change only through DROP TABLE and CREATE TABLE ... AS SELECT"
                    )))
                } else {
                    self.explain(statement, &e)
                }
            })?;
        let batches = df
            .collect()
            .await
            .map_err(|e| self.explain(statement, &e))?;
        Ok(batches.iter().map(|b| b.num_rows() as u64).sum())
    }
}
