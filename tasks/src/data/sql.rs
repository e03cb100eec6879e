//! `kind: sql` — runs one or more SQL statements against the catalog.
//!
//! DDL keeps the catalog in step: `DROP TABLE [IF EXISTS] t` removes the table (and, for
//! tables created by orchestrator, its warehouse files; crawled tables' files are left, as
//! Athena leaves an external table's S3 data), and `CREATE TABLE t AS SELECT ...` creates
//! a managed Parquet table like `create_table_as`. Other statements (SELECT, EXPLAIN, ...)
//! run read-only, and their row counts become outputs.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement as Sql};
use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use super::{on_engine, session, warehouse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// One or more statements separated by `;`.
    sql: String,
}

impl TaskConfig for SqlConfig {
    const KIND: &'static str = "sql";

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        let target = crate::aws::Target::of(ctx);
        // DataFusion's parser checks the local dialect; Athena checks its own.
        if let crate::aws::Target::Local = target {
            if super::check_syntax(&self.sql, "sql")?.is_empty() {
                return Err("`sql` has no statements".into());
            }
        }
        Ok(Arc::new(SqlTask {
            sql: self.sql,
            target,
            location: ctx.location("sql"),
        }))
    }
}

#[derive(Debug)]
struct SqlTask {
    sql: String,
    target: crate::aws::Target,
    /// `FILE:LINE` of `sql:`, for errors.
    location: Option<String>,
}

#[async_trait::async_trait]
impl Task for SqlTask {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        if let crate::aws::Target::Aws(block) = &self.target {
            // Athena runs one statement per query.
            let aws = crate::aws::connect(block).await;
            let (mut ids, mut polls) = (Vec::new(), 0);
            for statement in self.sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let done = crate::aws::execute(&aws, ctx, statement)
                    .await
                    .map_err(TaskFailure::new)?;
                ids.push(done.id);
                polls += done.polls;
            }
            return Ok(crate::aws::object(
                json!({ "query_ids": ids, "polls": polls }),
            ));
        }
        let (sql, catalog, warehouse) =
            (self.sql.clone(), ctx.catalog.clone(), ctx.warehouse.clone());
        let output = ctx.output.clone();
        let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
        let location = self.location.clone();
        on_engine(async move {
            let explain = |e: datafusion::error::DataFusionError| {
                super::explain_task_sql_error(
                    catalog.as_ref(),
                    &sql,
                    &e,
                    "sql",
                    location.as_deref(),
                )
            };
            run_statements(
                &sql,
                catalog.clone(),
                warehouse,
                &creator,
                &output,
                &explain,
            )
            .await
        })
        .await
        .and_then(|r| r)
        .map_err(TaskFailure::new)
    }
}

async fn run_statements(
    sql: &str,
    catalog: Arc<dyn Catalog>,
    warehouse: PathBuf,
    creator: &str,
    output: &orchestrator_engine::task::OutputSink,
    explain: &(dyn Fn(datafusion::error::DataFusionError) -> String + Sync),
) -> Result<Outputs, String> {
    let statements = DFParser::parse_sql(sql).map_err(|e| format!("invalid SQL: {e}"))?;
    let (mut dropped, mut created, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for statement in statements {
        match statement {
            Statement::Statement(s) => match *s {
                Sql::Drop {
                    object_type: ObjectType::Table,
                    if_exists,
                    names,
                    ..
                } => {
                    for name in names {
                        let name = name.to_string().to_lowercase();
                        if warehouse::drop_table(catalog.as_ref(), &name, if_exists)? {
                            output.line(&format!("dropped table {name}"));
                            dropped.push(name);
                        } else {
                            output.line(&format!("table {name} does not exist; nothing to drop"));
                        }
                    }
                }
                Sql::CreateTable(ct) if ct.query.is_some() => {
                    let name = ct.name.to_string().to_lowercase();
                    super::crawl::check_table_name(&name)?;
                    let query = ct.query.map(|q| q.to_string()).unwrap_or_default();
                    if ct.if_not_exists && catalog.table(&name).map_err(|e| e.to_string())?.is_some() {
                        output.line(&format!("table {name} exists; IF NOT EXISTS: nothing to do"));
                        continue;
                    }
                    if ct.or_replace {
                        warehouse::drop_table(catalog.as_ref(), &name, true)?;
                    }
                    let ctx = session(catalog.as_ref()).await?;
                    let df = ctx.sql(&query).await.map_err(explain)?;
                    let t = warehouse::create_table(catalog.as_ref(), &warehouse, &name, df, creator, None).await?;
                    output.line(&format!("created table {name}: {} rows", t.row_count.unwrap_or(0)));
                    created.push(name);
                }
                other => {
                    let ctx = session(catalog.as_ref()).await?;
                    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false);
                    let df = ctx
                        .sql_with_options(&other.to_string(), options)
                        .await
                        .map_err(|e| {
                            if e.to_string().contains("not supported") {
                                format!("{e}; in a `sql` task, tables change only through DROP TABLE and CREATE TABLE ... AS SELECT")
                            } else {
                                explain(e)
                            }
                        })?;
                    let batches = df.collect().await.map_err(explain)?;
                    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                    output.line(&format!("{n} rows"));
                    rows.push(n);
                }
            },
            other => {
                return Err(format!(
                    "`{other}` is not supported in a `sql` task; use DROP TABLE, CREATE TABLE ... AS SELECT, or a query"
                ))
            }
        }
    }
    match json!({"dropped": dropped, "created": created, "rows": rows}) {
        serde_json::Value::Object(m) => Ok(m),
        _ => Ok(Outputs::new()),
    }
}
