//! The AWS backend of the data kinds ([`Athena`]: Athena, the Glue Data Catalog, S3),
//! and the AWS-only kinds (`athena_query`, `glue_job`).
//!
//! A data kind keeps its logic — config, rules, refusals, messages, outputs — once, above
//! [`crate::data::backend::Warehouse`]; [`Target`] says which backend a workflow runs on,
//! and [`Athena`] here or [`crate::data::local::Local`] does the steps. SQL is the same
//! text on both except where the dialects truly differ: Athena's CTAS (`WITH (format,
//! external_location)`) and publish's Iceberg `MERGE INTO`, rendered here. Every call
//! goes through the `orchestrator-aws` crate (and its guard that keeps tests off AWS),
//! with one SDK config per `aws:` block per process ([`connect`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orchestrator_aws::{Aws, QueryOutcome, QueryResults, Settings};
use orchestrator_engine::lineage::{Dataset, Place};
use orchestrator_engine::task::{
    BuildContext, OutputSink, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use orchestrator_engine::workflow::{AwsBlock, Backend};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::data::backend::{
    ident, idents, DataError, Refusal, SqlEngine, Statement, TableShape, Warehouse, Written,
};

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

    /// A table's OpenLineage dataset: where the local catalog places it, or Athena's.
    pub fn table_dataset(&self, place: Place<'_>, table: &str) -> Dataset {
        match self {
            Target::Local => Dataset::local_table(place.warehouse, table),
            Target::Aws(block) => table_dataset(block, table),
        }
    }
}

/// An Athena table of the `aws:` block's database, as an OpenLineage dataset.
pub fn table_dataset(block: &AwsBlock, table: &str) -> Dataset {
    let region = block
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    Dataset::athena_table(
        &region,
        block.database.as_deref().unwrap_or("default"),
        table,
    )
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

/// The process's clients for this `aws:` block: the SDK config is loaded once per block
/// and reused by every task and run after ([`Aws::shared`]).
pub async fn connect(b: &AwsBlock) -> Aws {
    Aws::shared(settings(b)).await
}

pub use crate::data::backend::object;

/// Athena, the Glue Data Catalog and S3 as a [`Warehouse`], for one task attempt: every
/// call goes through [`Aws`] (and so its guard), and the queries it ran are the
/// attempt's extra outputs (`query_ids`, `polls`).
pub struct Athena {
    aws: Aws,
    output: OutputSink,
    cancel: CancellationToken,
    ran: Mutex<(Vec<String>, u32)>,
}

impl Athena {
    pub async fn new(block: &AwsBlock, ctx: &TaskContext) -> Athena {
        Athena {
            aws: connect(block).await,
            output: ctx.output.clone(),
            cancel: ctx.cancel.clone(),
            ran: Mutex::new((Vec::new(), 0)),
        }
    }

    pub fn aws(&self) -> &Aws {
        &self.aws
    }

    /// Runs one statement on Athena and says so in the task's output.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutcome, DataError> {
        let done = self.aws.query(sql, &self.cancel).await?;
        self.output.line(&format!(
            "athena: query {} succeeded ({} status calls{})",
            done.id,
            done.polls,
            done.scanned_bytes
                .map(|b| format!(", {b} bytes scanned"))
                .unwrap_or_default()
        ));
        if let Ok(mut ran) = self.ran.lock() {
            ran.0.push(done.id.clone());
            ran.1 += done.polls;
        }
        Ok(done)
    }

    /// Rows a statement wrote, as Athena's UpdateCount says (None where it does not).
    async fn update_count(&self, id: &str) -> Result<Option<u64>, DataError> {
        Ok(self.aws.results(id, 0).await?.update_count)
    }

    fn location(&self, table: &str) -> Result<String, DataError> {
        let wh = self.aws.settings.warehouse.as_deref().ok_or_else(|| {
            Refusal::Invalid("`aws: warehouse:` is needed: where created tables live".into())
        })?;
        Ok(format!("{}/{table}/", wh.trim_end_matches('/')))
    }
}

/// Parses cells of a count query's row.
fn numbers(id: &str, r: &QueryResults) -> Result<Vec<u64>, DataError> {
    let row = r.rows.first().ok_or_else(|| {
        DataError::Answer(format!("Athena query {id} answered no row, not a count"))
    })?;
    row.iter()
        .map(|cell| match cell.as_deref().map(str::trim) {
            None | Some("") => Ok(0),
            Some(c) => c.parse::<u64>().map_err(|_| {
                DataError::Answer(format!(
                    "Athena query {id}: answered {:?}, not a count",
                    r.rows
                ))
            }),
        })
        .collect()
}

#[async_trait::async_trait]
impl SqlEngine for Athena {
    async fn count(&self, query: &str) -> Result<u64, DataError> {
        let done = self
            .execute(&format!("SELECT count(*) AS n FROM ({query}) AS v"))
            .await?;
        let r = self.aws.results(&done.id, 1).await?;
        // count(*) always answers one row; anything else is not an answer to trust.
        match numbers(&done.id, &r)?.as_slice() {
            [n] => Ok(*n),
            _ => Err(DataError::Answer(format!(
                "Athena query {}: count(*) answered {:?}, not a number",
                done.id, r.rows
            ))),
        }
    }

    async fn sample(&self, query: &str, n: usize) -> Result<Vec<Value>, DataError> {
        let done = self
            .execute(&format!("SELECT * FROM ({query}) AS v LIMIT {n}"))
            .await?;
        let r = self.aws.results(&done.id, n).await?;
        Ok(rows_json(&r))
    }

    async fn counts(&self, query: &str) -> Result<Vec<u64>, DataError> {
        let done = self.execute(query).await?;
        let r = self.aws.results(&done.id, 1).await?;
        numbers(&done.id, &r)
    }
}

#[async_trait::async_trait]
impl Warehouse for Athena {
    fn place(&self) -> String {
        format!(
            " in Glue database `{}`",
            self.aws.settings.database.as_deref().unwrap_or_default()
        )
    }

    async fn table(&self, name: &str) -> Result<Option<TableShape>, DataError> {
        let Some(t) = self.aws.table(name).await? else {
            return Ok(None);
        };
        let iceberg = t
            .table_type
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case("ICEBERG"));
        Ok(Some(TableShape {
            name: name.to_string(),
            columns: t.columns,
            read_only: (!iceberg).then(|| {
                "not an Iceberg table; publish writes with MERGE INTO, which needs one (it creates `to` as one when `to` does not exist)".to_string()
            }),
        }))
    }

    fn add_column_hint(&self, table: &str, column: &str, data_type: &str) -> String {
        format!(", or add it to `{table}` (ALTER TABLE {table} ADD COLUMNS ({column} {data_type}))")
    }

    /// The Iceberg table, created empty from `from`'s shape, then one MERGE.
    async fn create_from(
        &self,
        to: &str,
        from: &TableShape,
        key: &[String],
        rows: u64,
    ) -> Result<Written, DataError> {
        let location = self.location(to)?;
        self.execute(&create_iceberg(to, &location, &from.name))
            .await?;
        self.output
            .line(&format!("created Iceberg table {to} at {location}"));
        let done = self
            .execute(&merge(&from.name, to, key, &from.column_names()))
            .await?;
        let inserted = self.update_count(&done.id).await?.unwrap_or(rows);
        Ok(Written {
            rows: Some(inserted),
            table_rows: Some(inserted),
            location: Some(location),
        })
    }

    /// One Iceberg commit: MERGE INTO inserts the rows whose key `to` does not have.
    async fn insert_new(
        &self,
        from: &TableShape,
        to: &TableShape,
        _candidates: &str,
        key: &[String],
    ) -> Result<Written, DataError> {
        let done = self
            .execute(&merge(&from.name, &to.name, key, &from.column_names()))
            .await?;
        Ok(Written {
            rows: self.update_count(&done.id).await?,
            table_rows: None,
            location: None,
        })
    }

    /// Athena's CTAS: the table's files go to `{warehouse}/{table}/`, cleaned first,
    /// since DROP TABLE on Athena leaves an external table's files where they are and a
    /// re-created table would read them.
    async fn create_table_as(&self, table: &str, select: &str) -> Result<Written, DataError> {
        let location = self.location(table)?;
        let removed = self.aws.delete_prefix(&location).await?;
        if removed > 0 {
            self.output.line(&format!(
                "removed {removed} files left at {location} by an earlier table"
            ));
        }
        let done = self.execute(&ctas(table, &location, select)).await?;
        Ok(Written {
            rows: self.update_count(&done.id).await?,
            table_rows: None,
            location: Some(location),
        })
    }

    fn parse(&self, sql: &str) -> Result<Vec<Statement>, DataError> {
        Ok(split_statements(sql).into_iter().map(classify).collect())
    }

    async fn drop_table(&self, name: &str) -> Result<(), DataError> {
        self.execute(&format!("DROP TABLE IF EXISTS {name}"))
            .await
            .map(|_| ())
    }

    async fn create_as(&self, _name: &str, _query: &str, text: &str) -> Result<Written, DataError> {
        let done = self.execute(text).await?;
        Ok(Written {
            rows: self.update_count(&done.id).await?,
            ..Written::default()
        })
    }

    async fn run_statement(&self, statement: &str) -> Result<u64, DataError> {
        let done = self.execute(statement).await?;
        let (rows, update) = self.aws.count_results(&done.id).await?;
        Ok(update.unwrap_or(rows))
    }

    fn extras(&self) -> Outputs {
        let (ids, polls) = self.ran.lock().map(|r| r.clone()).unwrap_or_default();
        object(json!({ "query_ids": ids, "polls": polls }))
    }
}

/// A `sql` task's statements for Athena: split at each `;` outside quotes and comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' || c == '`' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            None if c == ';' => out.push(std::mem::take(&mut cur)),
            None => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What a statement does to tables, read from its first words (Athena's dialect is not
/// DataFusion's, so its parser cannot be asked); anything unrecognised is run as written.
pub fn classify(text: String) -> Statement {
    let words: Vec<String> = text
        .split_whitespace()
        .take(8)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
    let name_at = |i: usize| -> Option<String> {
        let raw = text.split_whitespace().nth(i)?;
        let name = raw
            .split('(')
            .next()
            .unwrap_or_default()
            .trim_matches(|c| c == '`' || c == '"')
            .to_lowercase();
        crate::data::crawl::check_table_name(&name)
            .ok()
            .map(|_| name)
    };
    if w(0) == "DROP" && w(1) == "TABLE" {
        let if_exists = w(2) == "IF" && w(3) == "EXISTS";
        if let Some(name) = name_at(if if_exists { 4 } else { 2 }) {
            return Statement::Drop {
                names: vec![name],
                if_exists,
            };
        }
    }
    if w(0) == "CREATE" && w(1) == "TABLE" {
        let if_not_exists = w(2) == "IF" && w(3) == "NOT" && w(4) == "EXISTS";
        let upper = text.to_ascii_uppercase();
        let query = [" AS\n", " AS ", "\nAS\n", "\nAS "]
            .iter()
            .filter_map(|sep| upper.find(sep).map(|i| (i, sep.len())))
            .min()
            .map(|(i, len)| text[i + len..].trim().to_string());
        if let (Some(name), Some(query)) = (name_at(if if_not_exists { 5 } else { 2 }), query) {
            return Statement::CreateAs {
                name,
                if_not_exists,
                or_replace: false,
                query,
                text,
            };
        }
    }
    Statement::Other(text)
}

/// Athena's result rows as JSON objects, typed as the local engine types them: numbers as
/// numbers, booleans as booleans, the rest (dates, decimals, text) as text.
fn rows_json(r: &QueryResults) -> Vec<Value> {
    r.rows
        .iter()
        .map(|row| {
            let mut m = serde_json::Map::new();
            for (i, v) in row.iter().enumerate() {
                let name = r.columns.get(i).cloned().unwrap_or_else(|| format!("_{i}"));
                let kind = r.types.get(i).map(String::as_str).unwrap_or_default();
                m.insert(name, typed(v.as_deref(), kind));
            }
            Value::Object(m)
        })
        .collect()
}

fn typed(v: Option<&str>, kind: &str) -> Value {
    let Some(v) = v else { return Value::Null };
    let parsed = match kind.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "integer" | "int" | "bigint" => {
            v.parse::<i64>().ok().map(Value::from)
        }
        "double" | "float" | "real" => v
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        "boolean" => v.parse::<bool>().ok().map(Value::Bool),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::from(v))
}

pub fn ctas(table: &str, location: &str, select: &str) -> String {
    format!(
        "CREATE TABLE {table} WITH (format = 'PARQUET', external_location = '{location}') AS\n{}",
        select.trim().trim_end_matches(';')
    )
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
        .map(|k| format!("t.{k} = s.{k}", k = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let values = columns
        .iter()
        .map(|c| format!("s.{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "MERGE INTO {to} t USING {from} s ON ({on})\nWHEN NOT MATCHED THEN INSERT ({}) VALUES ({values})",
        idents(columns)
    )
}

/// Why a kind that runs only on AWS cannot run in this workflow or run.
#[derive(Debug, thiserror::Error)]
pub enum NeedsAws {
    /// The workflow is on AWS, but this run was started with `--backend local`.
    #[error("`{kind}` runs on AWS, and this run is `--backend local`: drop --backend (or pass --backend aws) to run it")]
    LocalOverride { kind: &'static str },
    /// The workflow runs locally.
    #[error("`{kind}` runs on AWS: set `backend: aws` (and an `aws:` block) in the workflow, or run it with --backend aws")]
    Local { kind: &'static str },
}

impl From<NeedsAws> for orchestrator_engine::task::Invalid {
    fn from(e: NeedsAws) -> Self {
        e.to_string().into()
    }
}

fn needs_aws(kind: &'static str, ctx: &BuildContext) -> Result<AwsBlock, NeedsAws> {
    match Target::of(ctx) {
        Target::Aws(b) => Ok(b),
        Target::Local if ctx.backend_overridden => Err(NeedsAws::LocalOverride { kind }),
        Target::Local => Err(NeedsAws::Local { kind }),
    }
}

/// `kind: athena_query` — one statement on Athena; its result rows (at most `max_rows`)
/// are the task's outputs.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
        let athena = Athena::new(&self.block, ctx).await;
        let done = athena.execute(&self.sql).await?;
        let r = athena
            .aws()
            .results(&done.id, self.max_rows)
            .await
            .map_err(DataError::from)?;
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
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
            .map_err(DataError::from)?;
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
    fn statements_are_split_and_classified_in_athenas_dialect() {
        let sql = "DROP TABLE IF EXISTS t; -- a comment; still one\nCREATE TABLE t WITH (format = 'PARQUET') AS\nSELECT ';' AS x;\nSELECT 1";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert_eq!(
            classify(parts[0].clone()),
            Statement::Drop {
                names: vec!["t".into()],
                if_exists: true
            }
        );
        match classify(parts[1].clone()) {
            Statement::CreateAs { name, query, .. } => {
                assert_eq!(name, "t");
                assert_eq!(query, "SELECT ';' AS x");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(parts[2].clone()),
            Statement::Other("SELECT 1".into())
        );
    }

    #[test]
    fn athena_values_are_typed_as_locally() {
        let r = QueryResults {
            columns: vec!["symbol".into(), "copies".into(), "close".into()],
            types: vec!["varchar".into(), "bigint".into(), "double".into()],
            rows: vec![vec![Some("AMD".into()), Some("2".into()), None]],
            ..QueryResults::default()
        };
        assert_eq!(
            rows_json(&r),
            vec![json!({"symbol": "AMD", "copies": 2, "close": null})]
        );
    }

    #[test]
    fn renders_athena_ctas_and_merge() {
        assert_eq!(
            ctas("t", "s3://lake/wh/t/", "SELECT 1 AS x;\n"),
            "CREATE TABLE t WITH (format = 'PARQUET', external_location = 's3://lake/wh/t/') AS\nSELECT 1 AS x"
        );
        assert_eq!(
            merge("tmp", "prod", &["symbol".into(), "date".into()], &["symbol".into(), "date".into(), "close".into()]),
            "MERGE INTO prod t USING tmp s ON (t.\"symbol\" = s.\"symbol\" AND t.\"date\" = s.\"date\")\nWHEN NOT MATCHED THEN INSERT (\"symbol\", \"date\", \"close\") VALUES (s.\"symbol\", s.\"date\", s.\"close\")"
        );
    }
}
