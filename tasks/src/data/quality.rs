//! `kind: quality_check` — the audit of write-audit-publish.
//!
//! Every rule is evaluated (none short-circuits the others); the task fails if any rule
//! fails, and its error lists each failing rule with its violation count and up to five
//! sample rows. Each rule's result is an output, visible in `show` whether or not the
//! check passed.

use std::sync::Arc;

use orchestrator_engine::lineage::{Datasets, Place};
use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::backend::{DataError, Refusal, SqlEngine, Warehouse};
use super::local::Local;
use super::on_engine;

const SAMPLES: usize = 5;

/// Audits a table: each rule counts its violating rows and samples a few; any violation fails the task (write-audit-publish's audit).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityCheckConfig {
    table: String,
    checks: Vec<MaybeCheck>,
}

/// A rule, or why it could not be read. Each rule is read on its own so that every bad
/// rule is reported, not just the first (serde stops a `Vec<Check>` at its first error).
#[derive(Debug)]
struct MaybeCheck(Result<Check, BadRule>);

/// Why a rule could not be read: the deserializer's own words (its error type is the
/// deserializer's, so only its text is kept).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadRule(String);

/// A rule's schema is [`Check`]'s: the wrapper only changes how errors are collected.
impl schemars::JsonSchema for MaybeCheck {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Check::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Check::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for MaybeCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The workflow loader deserializes from a tree of nodes, so a failed rule leaves
        // nothing half-consumed for the next one.
        Ok(MaybeCheck(
            Check::deserialize(d).map_err(|e| BadRule(e.to_string())),
        ))
    }
}

/// One rule. Column names are plain identifiers.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Check {
    /// `row_count: {min: 1, max: 1000000}`
    RowCount(Bounds),
    /// `not_null: [symbol, date]` — one rule per column.
    NotNull(Vec<String>),
    /// `unique: [symbol, date]` — the columns together.
    Unique(Vec<String>),
    /// `accepted_range: {column: volume, min: 0}` — nulls are not violations.
    AcceptedRange(Range),
    /// `accepted_values: {column: signal, values: [BUY, SELL]}` — nulls are not violations.
    AcceptedValues(Values),
    /// `sql: "SELECT * FROM t WHERE high < low"` — passes when it returns no rows.
    Sql(String),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Bounds {
    min: Option<u64>,
    max: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Range {
    column: String,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Values {
    column: String,
    values: Vec<String>,
}

/// A rule as SQL: its name and a query returning the violating rows.
#[derive(Debug, Clone)]
enum Rule {
    RowCount { min: Option<u64>, max: Option<u64> },
    Violations { name: String, query: String },
}

fn ident(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

impl TaskConfig for QualityCheckConfig {
    const KIND: &'static str = "quality_check";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        ("table", "the table checked"),
        ("checks", "each rule: rule, passed, violations, samples"),
    ];

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        super::crawl::check_table_name(&self.table)?;
        if self.checks.is_empty() {
            return Err("`checks` is empty; list at least one rule".into());
        }
        let t = &self.table;
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for (i, check) in self.checks.into_iter().enumerate() {
            let check = match check.0 {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("checks[{i}]: {e}"));
                    continue;
                }
            };
            match check {
                Check::RowCount(b) => {
                    if b.min.is_none() && b.max.is_none() {
                        problems.push(format!(
                            "checks[{i}]: `row_count` needs `min`, `max` or both"
                        ));
                        continue;
                    }
                    rules.push(Rule::RowCount {
                        min: b.min,
                        max: b.max,
                    });
                }
                Check::NotNull(cols) => rules.extend(cols.iter().map(|c| Rule::Violations {
                    name: format!("not_null({c})"),
                    query: format!("SELECT * FROM {t} WHERE {} IS NULL", ident(c)),
                })),
                Check::Unique(cols) => {
                    let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
                    rules.push(Rule::Violations {
                        name: format!("unique({})", cols.join(", ")),
                        query: format!(
                            "SELECT {list}, count(*) AS duplicates FROM {t} GROUP BY {list} HAVING count(*) > 1"
                        ),
                    });
                }
                Check::AcceptedRange(r) => {
                    let c = ident(&r.column);
                    let mut conds = Vec::new();
                    if let Some(min) = r.min {
                        conds.push(format!("{c} < {min:?}"));
                    }
                    if let Some(max) = r.max {
                        conds.push(format!("{c} > {max:?}"));
                    }
                    if conds.is_empty() {
                        problems.push(format!(
                            "checks[{i}]: `accepted_range` on `{}` needs `min`, `max` or both",
                            r.column
                        ));
                        continue;
                    }
                    let bounds = match (r.min, r.max) {
                        (Some(a), Some(b)) => format!("{a} <= {} <= {b}", r.column),
                        (Some(a), None) => format!("{} >= {a}", r.column),
                        (None, Some(b)) => format!("{} <= {b}", r.column),
                        (None, None) => String::new(),
                    };
                    rules.push(Rule::Violations {
                        name: format!("accepted_range({bounds})"),
                        query: format!("SELECT * FROM {t} WHERE {}", conds.join(" OR ")),
                    });
                }
                Check::AcceptedValues(v) => {
                    let list = v
                        .values
                        .iter()
                        .map(|x| literal(x))
                        .collect::<Vec<_>>()
                        .join(", ");
                    rules.push(Rule::Violations {
                        name: format!("accepted_values({} in {})", v.column, v.values.join(", ")),
                        query: format!(
                            "SELECT * FROM {t} WHERE {c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN ({list})",
                            c = ident(&v.column)
                        ),
                    });
                }
                Check::Sql(q) => rules.push(Rule::Violations {
                    name: format!("sql({})", q.trim()),
                    query: q,
                }),
            }
        }
        if !problems.is_empty() {
            return Err(invalid!(
                "{} bad rule{} in `checks`: {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("; ")
            ));
        }
        Ok(Arc::new(QualityCheck {
            table: self.table,
            rules,
            target: crate::aws::Target::of(ctx),
        }))
    }
}

#[derive(Debug)]
struct QualityCheck {
    table: String,
    rules: Vec<Rule>,
    target: crate::aws::Target,
}

#[async_trait::async_trait]
impl Task for QualityCheck {
    /// The checked table, with one assertion per rule once the rules ran (each rule's
    /// own `passed`).
    fn lineage(&self, place: Place<'_>, outputs: Option<&Outputs>) -> Datasets {
        let mut input = self.target.table_dataset(place, &self.table);
        if let Some(checks) = outputs
            .and_then(|o| o.get("checks"))
            .and_then(|c| c.as_array())
        {
            let assertions: Vec<(String, Option<String>, bool)> = checks
                .iter()
                .map(|c| {
                    let rule = c["rule"].as_str().unwrap_or_default().to_string();
                    // `not_null(symbol)`: one column; `unique(symbol, date)`: the table.
                    let column = rule
                        .split_once('(')
                        .and_then(|(_, rest)| rest.strip_suffix(')'))
                        .filter(|c| {
                            !c.is_empty()
                                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                        })
                        .map(str::to_string);
                    (rule, column, c["passed"] == true)
                })
                .collect();
            input = input.with_assertions(&assertions);
        }
        Datasets {
            inputs: vec![input],
            outputs: Vec::new(),
        }
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let (table, rules) = (self.table.clone(), self.rules.clone());
        let results = match &self.target {
            // The same rules, counted and sampled by Athena.
            crate::aws::Target::Aws(block) => {
                let athena = crate::aws::Athena::new(block, ctx).await;
                evaluate_all(&athena, &table, &rules).await?
            }
            crate::aws::Target::Local => {
                let (catalog, wh) = (ctx.catalog.clone(), ctx.warehouse.clone());
                let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
                on_engine(async move {
                    let local = Local::open(catalog, wh, creator, None, None).await?;
                    evaluate_all(&local, &table, &rules).await
                })
                .await??
            }
        };

        let failed: Vec<&Value> = results.iter().filter(|r| r["passed"] == false).collect();
        for r in &results {
            ctx.output.line(&format!(
                "{}: {}",
                r["rule"].as_str().unwrap_or_default(),
                if r["passed"] == true {
                    "passed".to_string()
                } else {
                    format!("FAILED, {} violations", r["violations"])
                }
            ));
        }
        let mut outputs = Outputs::new();
        outputs.insert("table".into(), json!(self.table));
        outputs.insert("failed".into(), json!(failed.len()));
        outputs.insert("checks".into(), Value::Array(results.clone()));
        if failed.is_empty() {
            return Ok(outputs);
        }
        let mut message = format!(
            "{} of {} checks failed on {}:",
            failed.len(),
            results.len(),
            self.table
        );
        for r in &failed {
            message.push_str(&format!(
                "\n- {}: {} violation{}",
                r["rule"].as_str().unwrap_or_default(),
                r["violations"],
                if r["violations"] == 1 { "" } else { "s" }
            ));
            if let Some(detail) = r["detail"].as_str() {
                message.push_str(&format!(" ({detail})"));
            }
            for s in r["samples"].as_array().into_iter().flatten() {
                message.push_str(&format!("\n    {s}"));
            }
        }
        Err(TaskFailure {
            message,
            exit_code: None,
            outputs,
            retryable: true,
        })
    }
}

fn row_count_result(n: u64, min: Option<u64>, max: Option<u64>) -> Value {
    let low = min.is_some_and(|m| n < m);
    let high = max.is_some_and(|m| n > m);
    let name = match (min, max) {
        (Some(a), Some(b)) => format!("row_count({a} <= rows <= {b})"),
        (Some(a), None) => format!("row_count(rows >= {a})"),
        (None, Some(b)) => format!("row_count(rows <= {b})"),
        (None, None) => "row_count".into(),
    };
    json!({
        "rule": name,
        "passed": !(low || high),
        "violations": if low || high { 1 } else { 0 },
        "detail": format!("{n} rows"),
        "samples": [],
    })
}

/// Every rule's result, whichever backend counts and samples.
async fn evaluate_all(
    b: &dyn Warehouse,
    table: &str,
    rules: &[Rule],
) -> Result<Vec<Value>, DataError> {
    if b.table(table).await?.is_none() {
        return Err(Refusal::NoTable {
            table: table.to_string(),
            place: b.place(),
        }
        .into());
    }
    let mut results = Vec::new();
    for rule in rules {
        results.push(evaluate(b, table, rule).await?);
    }
    Ok(results)
}

/// One rule's result, whichever engine counts and samples.
async fn evaluate(sql: &dyn SqlEngine, table: &str, rule: &Rule) -> Result<Value, DataError> {
    // Which rule failed to run, then why.
    let within = |name: &str, e: DataError| DataError::Answer(format!("{name}: {e}"));
    match rule {
        Rule::RowCount { min, max } => {
            let n = sql
                .count(&format!("SELECT * FROM {table}"))
                .await
                .map_err(|e| within("row_count", e))?;
            Ok(row_count_result(n, *min, *max))
        }
        Rule::Violations { name, query } => {
            let n = sql.count(query).await.map_err(|e| within(name, e))?;
            let samples = if n > 0 {
                sql.sample(query, SAMPLES)
                    .await
                    .map_err(|e| within(name, e))?
            } else {
                Vec::new()
            };
            Ok(json!({"rule": name, "passed": n == 0, "violations": n, "samples": samples}))
        }
    }
}
