//! `kind: create_table_as` — writes a SELECT's result into the warehouse as a new table
//! (Parquet) and registers it in the catalog. Fails if the table already exists, so a
//! pipeline drops its temp table first (as Athena's CTAS requires).

use std::sync::Arc;

use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use super::{on_engine, session, warehouse, Format};

#[derive(Debug, Deserialize)]
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
    sql: String,
    target: crate::aws::Target,
    /// `FILE:LINE` of `sql:`, for errors.
    location: Option<String>,
}

#[async_trait::async_trait]
impl Task for CreateTableAs {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        if let crate::aws::Target::Aws(block) = &self.target {
            let aws = crate::aws::connect(block).await;
            return crate::aws::create_table_as(&aws, ctx, &self.table, &self.sql)
                .await
                .map_err(TaskFailure::new);
        }
        let (table, sql, catalog, wh) = (
            self.table.clone(),
            self.sql.clone(),
            ctx.catalog.clone(),
            ctx.warehouse.clone(),
        );
        let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
        let pause = super::PauseHook::from_env("create_table_as");
        let location = self.location.clone();
        let record = on_engine(async move {
            let lock = warehouse::table_lock(&table);
            let _guard = lock.lock().await;
            let session = session(catalog.as_ref()).await?;
            let df = session.sql(&sql).await.map_err(|e| {
                super::explain_task_sql_error(
                    catalog.as_ref(),
                    &sql,
                    &e,
                    "sql",
                    location.as_deref(),
                )
            })?;
            warehouse::create_table(catalog.as_ref(), &wh, &table, df, &creator, pause.as_ref())
                .await
        })
        .await
        .and_then(|r| r)
        .map_err(TaskFailure::new)?;
        let rows = record.row_count.unwrap_or(0);
        ctx.output.line(&format!(
            "created table {}: {rows} rows at {}",
            record.name, record.location
        ));
        match json!({"table": record.name, "rows": rows, "location": record.location}) {
            serde_json::Value::Object(m) => Ok(m),
            _ => Ok(Outputs::new()),
        }
    }
}
