//! The AWS side of the data kinds, and the AWS-only kinds (`athena_query`, `glue_job`).
//!
//! A data kind (sql, create_table_as, quality_check, publish, crawl, and the ingest's
//! landing) keeps its logic — config, rules, refusals, messages, outputs — in one place;
//! where it touches an engine it asks [`Target`] which backend the workflow runs on and
//! calls the matching function here (Athena, the Glue crawler, S3) or its local
//! counterpart (DataFusion, the catalog, directories). SQL is the same text on both
//! except where the dialects truly differ: Athena's CTAS (`WITH (format, external_location)`)
//! and publish's Iceberg `MERGE INTO`, rendered here.

use std::collections::HashMap;
use std::sync::Arc;

use orchestrator_aws::{Aws, AwsError, QueryOutcome, Settings};
use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use orchestrator_engine::workflow::{AwsBlock, Backend};
use serde::Deserialize;
use serde_json::{json, Value};

/// Where a data task runs, decided when the workflow is loaded.
#[derive(Debug, Clone)]
pub enum Target {
    Local,
    Aws(AwsBlock),
}

impl Target {
    pub fn of(ctx: &BuildContext) -> Target {
        match (ctx.backend, &ctx.aws) {
            (Backend::Aws, Some(block)) => Target::Aws(block.clone()),
            (Backend::Aws, None) => Target::Aws(AwsBlock::default()),
            (Backend::Local, _) => Target::Local,
        }
    }
}

pub fn settings(b: &AwsBlock) -> Settings {
    Settings {
        region: b.region.clone(),
        profile: b.profile.clone(),
        workgroup: b.workgroup.clone(),
        database: b.database.clone(),
        output_location: b.output_location.clone(),
        warehouse: b.warehouse.clone(),
    }
}

pub async fn connect(b: &AwsBlock) -> Aws {
    Aws::connect(settings(b)).await
}

fn fail(e: AwsError) -> String {
    match e {
        AwsError::Cancelled(m) => format!("cancelled ({m})"),
        other => other.to_string(),
    }
}

/// Runs one statement on Athena and says so in the task's output.
pub async fn execute(aws: &Aws, ctx: &TaskContext, sql: &str) -> Result<QueryOutcome, String> {
    let done = aws.query(sql, &ctx.cancel).await.map_err(fail)?;
    ctx.output.line(&format!(
        "athena: query {} succeeded ({} status calls{})",
        done.id,
        done.polls,
        done.scanned_bytes
            .map(|b| format!(", {b} bytes scanned"))
            .unwrap_or_default()
    ));
    Ok(done)
}

/// Rows a query returns, counted by Athena.
pub async fn count(aws: &Aws, ctx: &TaskContext, query: &str) -> Result<u64, String> {
    let done = execute(
        aws,
        ctx,
        &format!("SELECT count(*) AS n FROM ({query}) AS v"),
    )
    .await?;
    let r = aws.results(&done.id, 1).await.map_err(fail)?;
    // count(*) always answers one row; anything else is not an answer to trust.
    let cell = r
        .rows
        .first()
        .and_then(|row| row.first())
        .cloned()
        .flatten();
    cell.as_deref()
        .and_then(|c| c.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "Athena query {}: count(*) answered {:?}, not a number",
                done.id, r.rows
            )
        })
}

/// Up to `n` rows of a query, as JSON objects (Athena returns every value as text).
pub async fn sample(
    aws: &Aws,
    ctx: &TaskContext,
    query: &str,
    n: usize,
) -> Result<Vec<Value>, String> {
    let done = execute(aws, ctx, &format!("SELECT * FROM ({query}) AS v LIMIT {n}")).await?;
    let r = aws.results(&done.id, n).await.map_err(fail)?;
    Ok(rows_json(&r))
}

/// Athena as a [`crate::data::SqlEngine`].
pub struct AthenaSql<'a> {
    pub aws: &'a Aws,
    pub ctx: &'a TaskContext,
}

#[async_trait::async_trait]
impl crate::data::SqlEngine for AthenaSql<'_> {
    async fn count(&self, query: &str) -> Result<u64, String> {
        count(self.aws, self.ctx, query).await
    }

    async fn sample(&self, query: &str, n: usize) -> Result<Vec<Value>, String> {
        sample(self.aws, self.ctx, query, n).await
    }
}

fn rows_json(r: &orchestrator_aws::QueryResults) -> Vec<Value> {
    r.rows
        .iter()
        .map(|row| {
            let mut m = serde_json::Map::new();
            for (i, v) in row.iter().enumerate() {
                let name = r.columns.get(i).cloned().unwrap_or_else(|| format!("_{i}"));
                m.insert(name, v.clone().map_or(Value::Null, Value::from));
            }
            Value::Object(m)
        })
        .collect()
}

/// Athena's CTAS: the table's files go to `{warehouse}/{table}/`, cleaned first, since
/// DROP TABLE on Athena leaves an external table's files where they are and a re-created
/// table would read them.
pub async fn create_table_as(
    aws: &Aws,
    ctx: &TaskContext,
    table: &str,
    select: &str,
) -> Result<Outputs, String> {
    let location = table_location(aws, table)?;
    let removed = aws.delete_prefix(&location).await.map_err(fail)?;
    if removed > 0 {
        ctx.output.line(&format!(
            "removed {removed} files left at {location} by an earlier table"
        ));
    }
    let sql = ctas(table, &location, select);
    let done = execute(aws, ctx, &sql).await?;
    ctx.output
        .line(&format!("created table {table} at {location}"));
    Ok(object(json!({
        "table": table, "location": location, "query_id": done.id, "polls": done.polls,
    })))
}

pub fn ctas(table: &str, location: &str, select: &str) -> String {
    format!(
        "CREATE TABLE {table} WITH (format = 'PARQUET', external_location = '{location}') AS\n{}",
        select.trim().trim_end_matches(';')
    )
}

fn table_location(aws: &Aws, table: &str) -> Result<String, String> {
    let wh = aws
        .settings
        .warehouse
        .as_deref()
        .ok_or("`aws: warehouse:` is needed: where created tables live")?;
    Ok(format!("{}/{table}/", wh.trim_end_matches('/')))
}

/// The columns of a table in the Glue Data Catalog, or `None` if it does not exist.
pub async fn table_columns(aws: &Aws, table: &str) -> Result<Option<Vec<String>>, String> {
    use aws_sdk_glue::operation::get_table::GetTableError;
    let db = aws.settings.database.clone().unwrap_or_default();
    match aws
        .glue()
        .get_table()
        .database_name(&db)
        .name(table)
        .send()
        .await
    {
        Ok(t) => Ok(Some(
            t.table()
                .and_then(|t| t.storage_descriptor())
                .map(|sd| sd.columns().iter().map(|c| c.name().to_string()).collect())
                .unwrap_or_default(),
        )),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(GetTableError::EntityNotFoundException(_))
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!(
            "glue:GetTable {db}.{table} failed: {}",
            aws_sdk_glue::error::DisplayErrorContext(&e)
        )),
    }
}

/// The production table as Iceberg, created empty from `from`'s shape if missing.
pub fn create_iceberg(to: &str, location: &str, from: &str) -> String {
    format!(
        "CREATE TABLE {to} WITH (table_type = 'ICEBERG', location = '{location}', is_external = false, format = 'PARQUET') AS\nSELECT * FROM {from} WITH NO DATA"
    )
}

/// One Iceberg commit that inserts the rows whose key `to` does not have yet.
pub fn merge(from: &str, to: &str, key: &[String], columns: &[String]) -> String {
    let on = key
        .iter()
        .map(|k| format!("t.{k} = s.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let cols = columns.join(", ");
    let values = columns
        .iter()
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "MERGE INTO {to} t USING {from} s ON ({on})\nWHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
    )
}

/// Publish on Athena: the local publish's refusals (null keys, duplicate keys, columns
/// `to` does not have), then the Iceberg table if missing, then one MERGE.
pub async fn publish(
    aws: &Aws,
    ctx: &TaskContext,
    from: &str,
    to: &str,
    key: &[String],
) -> Result<Outputs, String> {
    let Some(columns) = table_columns(aws, from).await? else {
        return Err(format!(
            "table `{from}` is not in Glue database `{}`; the step that creates it must run first",
            aws.settings.database.as_deref().unwrap_or_default()
        ));
    };
    for k in key {
        if !columns.contains(k) {
            return Err(format!(
                "key column `{k}` is not a column of `{from}` ({})",
                columns.join(", ")
            ));
        }
    }
    let nulls = key
        .iter()
        .map(|k| format!("{k} IS NULL"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let n = count(aws, ctx, &format!("SELECT * FROM {from} WHERE {nulls}")).await?;
    if n > 0 {
        return Err(format!(
            "{n} rows of `{from}` have a null key ({}); nothing was published",
            key.join(", ")
        ));
    }
    let list = key.join(", ");
    let n = count(
        aws,
        ctx,
        &format!("SELECT {list} FROM {from} GROUP BY {list} HAVING count(*) > 1"),
    )
    .await?;
    if n > 0 {
        return Err(format!(
            "{n} keys ({list}) appear more than once in `{from}`; nothing was published"
        ));
    }
    let mut created = false;
    match table_columns(aws, to).await? {
        Some(existing) => {
            let missing: Vec<&String> = columns.iter().filter(|c| !existing.contains(c)).collect();
            if !missing.is_empty() {
                return Err(format!(
                    "`{to}` has no column {}; add it to `{to}` (ALTER TABLE {to} ADD COLUMNS) or drop it from `{from}`",
                    missing
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        None => {
            let location = table_location(aws, to)?;
            execute(aws, ctx, &create_iceberg(to, &location, from)).await?;
            ctx.output
                .line(&format!("created Iceberg table {to} at {location}"));
            created = true;
        }
    }
    let done = execute(aws, ctx, &merge(from, to, key, &columns)).await?;
    ctx.output.line(&format!(
        "published {from} into {to}: rows whose ({list}) {to} did not have, in one Iceberg commit"
    ));
    Ok(object(json!({
        "from": from, "to": to, "created": created, "query_id": done.id, "polls": done.polls,
    })))
}

pub fn object(v: Value) -> Outputs {
    match v {
        Value::Object(m) => m,
        _ => Outputs::new(),
    }
}

fn needs_aws(kind: &str, ctx: &BuildContext) -> Result<AwsBlock, String> {
    match Target::of(ctx) {
        Target::Aws(b) => Ok(b),
        Target::Local if ctx.backend_overridden => Err(format!(
            "`{kind}` runs on AWS, and this run is `--backend local`: drop --backend (or pass --backend aws) to run it"
        )),
        Target::Local => Err(format!(
            "`{kind}` runs on AWS: set `backend: aws` (and an `aws:` block) in the workflow, or run it with --backend aws"
        )),
    }
}

/// `kind: athena_query` — one statement on Athena; its result rows (at most `max_rows`)
/// are the task's outputs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AthenaQueryConfig {
    sql: String,
    /// Result rows kept in the outputs (default 100).
    max_rows: Option<usize>,
}

impl TaskConfig for AthenaQueryConfig {
    const KIND: &'static str = "athena_query";

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        let block = needs_aws(Self::KIND, ctx)?;
        Ok(Arc::new(AthenaQuery {
            block,
            sql: self.sql,
            max_rows: self.max_rows.unwrap_or(100).min(10_000),
        }))
    }
}

#[derive(Debug)]
struct AthenaQuery {
    block: AwsBlock,
    sql: String,
    max_rows: usize,
}

#[async_trait::async_trait]
impl Task for AthenaQuery {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let aws = connect(&self.block).await;
        let done = execute(&aws, ctx, &self.sql)
            .await
            .map_err(TaskFailure::new)?;
        let r = aws
            .results(&done.id, self.max_rows)
            .await
            .map_err(|e| TaskFailure::new(fail(e)))?;
        Ok(object(json!({
            "query_id": done.id,
            "polls": done.polls,
            "scanned_bytes": done.scanned_bytes,
            "columns": r.columns,
            "rows": rows_json(&r),
            "truncated": r.truncated,
        })))
    }
}

/// `kind: glue_job` — starts a Glue job run and waits for its end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlueJobConfig {
    job_name: String,
    /// Job arguments, e.g. `--date: "{{ run.date }}"`.
    #[serde(default)]
    arguments: HashMap<String, String>,
}

impl TaskConfig for GlueJobConfig {
    const KIND: &'static str = "glue_job";

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        let block = needs_aws(Self::KIND, ctx)?;
        if self.job_name.trim().is_empty() {
            return Err("`job_name` is empty".into());
        }
        Ok(Arc::new(GlueJob {
            block,
            job_name: self.job_name,
            arguments: self.arguments,
        }))
    }
}

#[derive(Debug)]
struct GlueJob {
    block: AwsBlock,
    job_name: String,
    arguments: HashMap<String, String>,
}

#[async_trait::async_trait]
impl Task for GlueJob {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let aws = connect(&self.block).await;
        let done = aws
            .job_run(&self.job_name, &self.arguments, &ctx.cancel)
            .await
            .map_err(|e| TaskFailure::new(fail(e)))?;
        ctx.output.line(&format!(
            "glue: job {} run {} {} ({} status calls)",
            self.job_name, done.run_id, done.state, done.polls
        ));
        Ok(object(json!({
            "job_name": self.job_name, "run_id": done.run_id, "state": done.state, "polls": done.polls,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_athena_ctas_and_merge() {
        assert_eq!(
            ctas("t", "s3://lake/wh/t/", "SELECT 1 AS x;\n"),
            "CREATE TABLE t WITH (format = 'PARQUET', external_location = 's3://lake/wh/t/') AS\nSELECT 1 AS x"
        );
        assert_eq!(
            merge("tmp", "prod", &["symbol".into(), "date".into()], &["symbol".into(), "date".into(), "close".into()]),
            "MERGE INTO prod t USING tmp s ON (t.symbol = s.symbol AND t.date = s.date)\nWHEN NOT MATCHED THEN INSERT (symbol, date, close) VALUES (s.symbol, s.date, s.close)"
        );
    }
}
