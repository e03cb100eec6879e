//! `kind: create_table_as` — writes a SELECT's result into the warehouse as a new table
//! (Parquet) and registers it in the catalog. Fails if the table already exists, so a
//! pipeline drops its temp table first (as Athena's CTAS requires).

use std::sync::Arc;

use orchestrator_engine::lineage::{Datasets, Place};
use orchestrator_engine::task::{
    BuildContext, OutputSink, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use super::backend::{object, DataError, Warehouse};
use super::local::Local;
use super::{on_engine, warehouse, Format};

/// Creates (or replaces) a work table from a SELECT: written under a staging directory and renamed into place locally, Athena CTAS on AWS.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTableAsConfig {
    table: String,
    /// A SELECT (or WITH ... SELECT).
    sql: String,
    /// Only `parquet` for now.
    format: Option<Format>,
}

impl TaskConfig for CreateTableAsConfig {
    const KIND: &'static str = "create_table_as";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        ("table", "the table created"),
        ("rows", "its rows"),
        ("location", "where its files are"),
    ];

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        // Every problem at once: the name, the format and the SQL are independent.
        let mut problems: Vec<orchestrator_engine::task::Invalid> = Vec::new();
        if let Err(e) = super::crawl::check_table_name(&self.table) {
            problems.push(e.into());
        }
        if let Some(f) = self.format.filter(|f| *f != Format::Parquet) {
            problems.push(invalid!(
                "`format: {}`: created tables are written as parquet; remove `format:` or set it to parquet",
                f.name()
            ));
        }
        let target = crate::aws::Target::of(ctx);
        // DataFusion's parser checks the local dialect; Athena checks its own.
        if let crate::aws::Target::Local = target {
            match super::check_syntax(&self.sql, "sql") {
                Ok(statements) if statements.len() != 1 => {
                    problems.push("`sql` must be exactly one SELECT (or WITH ... SELECT)".into())
                }
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
        if let Some(all) = orchestrator_engine::task::Invalid::all(problems) {
            return Err(all);
        }
        Ok(Arc::new(CreateTableAs {
            reads: super::tables_read(&self.sql),
            table: self.table,
            sql: self.sql,
            target,
            location: ctx.location("sql"),
        }))
    }
}

#[derive(Debug)]
struct CreateTableAs {
    table: String,
    /// The tables its SQL reads (for lineage).
    reads: Vec<String>,
    sql: String,
    target: crate::aws::Target,
    /// `FILE:LINE` of `sql:`, for errors.
    location: Option<String>,
}

#[async_trait::async_trait]
impl Task for CreateTableAs {
    fn lineage(&self, place: Place<'_>, outputs: Option<&Outputs>) -> Datasets {
        let mut output = self.target.table_dataset(place, &self.table);
        if let Some(rows) = outputs.and_then(|o| o.get("rows")).and_then(|r| r.as_u64()) {
            output = output.with_row_count(rows);
        }
        Datasets {
            inputs: self
                .reads
                .iter()
                .map(|t| self.target.table_dataset(place, t))
                .collect(),
            outputs: vec![output],
        }
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let (table, sql) = (self.table.clone(), self.sql.clone());
        let output = ctx.output.clone();
        match &self.target {
            crate::aws::Target::Aws(block) => {
                let athena = crate::aws::Athena::new(block, ctx).await;
                Ok(create_table_as(&athena, &output, &table, &sql).await?)
            }
            crate::aws::Target::Local => {
                let (catalog, wh) = (ctx.catalog.clone(), ctx.warehouse.clone());
                let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
                let pause = super::PauseHook::from_env("create_table_as");
                let location = self.location.clone();
                Ok(on_engine(async move {
                    let lock = warehouse::table_lock(&table);
                    let _guard = lock.lock().await;
                    let local = Local::open(catalog, wh, creator, pause, location).await?;
                    create_table_as(&local, &output, &table, &sql).await
                })
                .await??)
            }
        }
    }
}

/// `create_table_as` on whichever backend. Outputs, on every backend: `table`, `rows`
/// (in the new table) and `location` (where its files are), plus the backend's extras.
pub async fn create_table_as(
    b: &dyn Warehouse,
    output: &OutputSink,
    table: &str,
    sql: &str,
) -> Result<Outputs, DataError> {
    let w = b.create_table_as(table, sql).await?;
    let rows = match w.rows {
        Some(n) => n,
        // Athena says how many rows a CTAS wrote in its UpdateCount; where it does not,
        // they are counted.
        None => b.count(&format!("SELECT * FROM {table}")).await?,
    };
    let location = w.location.unwrap_or_default();
    output.line(&format!("created table {table}: {rows} rows at {location}"));
    let mut outputs = object(json!({"table": table, "rows": rows, "location": location}));
    outputs.extend(b.extras());
    Ok(outputs)
}
