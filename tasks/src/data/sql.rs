//! `kind: sql` — runs one or more SQL statements against the catalog.
//!
//! DDL keeps the catalog in step: `DROP TABLE [IF EXISTS] t` removes the table (and, for
//! tables created by orchestrator, its warehouse files; crawled tables' files are left, as
//! Athena leaves an external table's S3 data), and `CREATE TABLE t AS SELECT ...` creates
//! a managed Parquet table like `create_table_as`. Other statements (SELECT, EXPLAIN, ...)
//! run read-only, and their row counts become outputs.
//!
//! On Athena the statements run as written (Athena's dialect), one query each; DROP TABLE
//! and CREATE TABLE ... AS are recognised by their first words, so the outputs are the
//! same: `dropped`, `created`, `rows`.

use std::sync::Arc;

use orchestrator_engine::task::{
    BuildContext, OutputSink, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use super::backend::{object, DataError, Refusal, Statement, Warehouse};
use super::local::Local;
use super::on_engine;

/// Runs SQL statements (DROP, CREATE, INSERT, ...) against the warehouse: DataFusion locally, Athena on AWS.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// One or more statements separated by `;`.
    sql: String,
}

impl TaskConfig for SqlConfig {
    const KIND: &'static str = "sql";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        ("dropped", "tables dropped"),
        ("created", "tables created"),
        ("rows", "rows written"),
    ];

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
        let sql = self.sql.clone();
        let output = ctx.output.clone();
        match &self.target {
            crate::aws::Target::Aws(block) => {
                let athena = crate::aws::Athena::new(block, ctx).await;
                Ok(run_statements(&athena, &output, &sql).await?)
            }
            crate::aws::Target::Local => {
                let (catalog, warehouse) = (ctx.catalog.clone(), ctx.warehouse.clone());
                let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
                let location = self.location.clone();
                Ok(on_engine(async move {
                    let local = Local::open(catalog, warehouse, creator, None, location).await?;
                    run_statements(&local, &output, &sql).await
                })
                .await??)
            }
        }
    }
}

/// A `sql` task's statements, in order, on whichever backend. Outputs, on every backend:
/// `dropped` (tables dropped), `created` (tables created), `rows` (for each other
/// statement, the rows it returned, or on Athena wrote), plus the backend's extras.
pub async fn run_statements(
    b: &dyn Warehouse,
    output: &OutputSink,
    sql: &str,
) -> Result<Outputs, DataError> {
    let (mut dropped, mut created, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for statement in b.parse(sql)? {
        match statement {
            Statement::Drop { names, if_exists } => {
                for name in names {
                    if b.table(&name).await?.is_none() {
                        if !if_exists {
                            return Err(Refusal::DropMissing { table: name }.into());
                        }
                        output.line(&format!("table {name} does not exist; nothing to drop"));
                        continue;
                    }
                    b.drop_table(&name).await?;
                    output.line(&format!("dropped table {name}"));
                    dropped.push(name);
                }
            }
            Statement::CreateAs {
                name,
                if_not_exists,
                or_replace,
                query,
                text,
            } => {
                super::crawl::check_table_name(&name)
                    .map_err(|e| Refusal::Invalid(e.to_string()))?;
                let exists = b.table(&name).await?.is_some();
                if if_not_exists && exists {
                    output.line(&format!(
                        "table {name} exists; IF NOT EXISTS: nothing to do"
                    ));
                    continue;
                }
                if or_replace && exists {
                    b.drop_table(&name).await?;
                }
                let w = b.create_as(&name, &query, &text).await?;
                match w.rows {
                    Some(n) => output.line(&format!("created table {name}: {n} rows")),
                    None => output.line(&format!("created table {name}")),
                }
                created.push(name);
            }
            Statement::Other(text) => {
                let n = b.run_statement(&text).await?;
                output.line(&format!("{n} rows"));
                rows.push(n);
            }
        }
    }
    let mut outputs = object(json!({"dropped": dropped, "created": created, "rows": rows}));
    outputs.extend(b.extras());
    Ok(outputs)
}
