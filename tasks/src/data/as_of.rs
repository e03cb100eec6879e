//! Time travel in SQL: the table function `as_of(TABLE, VERSION | TIMESTAMP)` reads a
//! published (Delta) table as it was at a version, or at the last version committed at or
//! before a time:
//!
//! ```sql
//! SELECT * FROM as_of('stock_daily', 12);
//! SELECT count(*) FROM as_of('stock_daily', '2026-12-01T18:00:00Z');
//! ```
//!
//! It is registered in every read-only session (`orchestrator query`, the UI's SQL box,
//! dashboards). A function rather than Spark's `VERSION AS OF` clause because DataFusion's
//! SQL has no such clause, and a function call reads the same in every one of those places.
//!
//! DataFusion plans table functions synchronously, and opening a Delta table is async, so
//! the table is opened on a short-lived thread with its own runtime: planning may run on
//! any runtime (or none), and this never blocks one of its workers.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use orchestrator_engine::state::TableRecord;

use super::delta::{self, DeltaError};

/// The function's name in SQL.
pub const NAME: &str = "as_of";

const USAGE: &str = "as_of('TABLE', VERSION) or as_of('TABLE', 'YYYY-MM-DDTHH:MM:SSZ')";

/// `as_of` over the given catalog tables.
#[derive(Debug)]
pub struct AsOf {
    tables: Vec<TableRecord>,
}

impl AsOf {
    pub fn new(tables: Vec<TableRecord>) -> AsOf {
        AsOf { tables }
    }
}

/// Which state of the table to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    Version(u64),
    /// The last version committed at or before this instant.
    Time(DateTime<Utc>),
}

fn plan_err(msg: String) -> DataFusionError {
    DataFusionError::Plan(msg)
}

/// A timestamp as users write one: RFC 3339 (`2026-12-01T18:00:00Z`, any offset), or
/// `YYYY-MM-DD[ HH:MM[:SS]]` in UTC (a date alone is its midnight, as Spark reads it).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn string(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Some(s),
        ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

fn parse_args(exprs: &[Expr]) -> Result<(String, When)> {
    let [table, when] = exprs else {
        return Err(plan_err(format!(
            "{NAME} takes 2 arguments, got {}: {USAGE}",
            exprs.len()
        )));
    };
    let table = literal(table).and_then(string).ok_or_else(|| {
        plan_err(format!(
            "{NAME}'s first argument is the table's name as a string: {USAGE}"
        ))
    })?;
    let when = match literal(when) {
        Some(ScalarValue::Int64(Some(v))) if *v >= 0 => When::Version(*v as u64),
        Some(v) if string(v).is_some() => {
            let text = string(v).unwrap_or_default();
            When::Time(parse_time(text).ok_or_else(|| {
                plan_err(format!(
                    "{NAME}: `{text}` is not a timestamp; write RFC 3339 (`2026-12-01T18:00:00Z`) or `YYYY-MM-DD HH:MM:SS` (UTC)"
                ))
            })?)
        }
        _ => {
            return Err(plan_err(format!(
                "{NAME}'s second argument is a version (a non-negative integer) or a timestamp string: {USAGE}"
            )))
        }
    };
    Ok((table.to_string(), when))
}

/// The version of the table at `dir` that `when` names.
pub async fn resolve(dir: &Path, table: &str, when: When) -> Result<u64, DeltaError> {
    let versions = delta::history(dir).await?;
    let latest = versions.first().map_or(0, |v| v.version);
    let earliest = versions.last().map_or(0, |v| v.version);
    match when {
        When::Version(v) if v >= earliest && v <= latest => Ok(v),
        When::Version(version) => Err(DeltaError::NoVersion {
            table: table.to_string(),
            version,
            earliest,
            latest,
        }),
        When::Time(t) => versions
            .iter()
            .find(|v| v.time.is_some_and(|at| at <= t))
            .map(|v| v.version)
            .ok_or_else(|| DeltaError::BeforeHistory {
                table: table.to_string(),
                at: t,
                first: versions.last().and_then(|v| v.time),
            }),
    }
}

/// The table at `dir` as of `when`, as a provider.
pub async fn provider(
    dir: &Path,
    table: &str,
    when: When,
) -> Result<Arc<dyn TableProvider>, DeltaError> {
    // A version the log holds opens directly; the table's history (every commit's info,
    // read from the log) is needed only for a time, or to say which versions there are.
    if let When::Version(v) = when {
        if let Ok(t) = delta::read(dir, Some(v)).await {
            return delta::provider(dir, &t).await;
        }
    }
    let version = resolve(dir, table, when).await?;
    let t = delta::read(dir, Some(version)).await?;
    delta::provider(dir, &t).await
}

impl TableFunctionImpl for AsOf {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (name, when) = parse_args(args.exprs())?;
        let Some(table) = self.tables.iter().find(|t| t.name == name) else {
            let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            return Err(plan_err(format!(
                "{NAME}: no table `{name}` in the catalog (tables: {}); `orchestrator tables` lists them",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        };
        if table.format != super::DELTA {
            return Err(plan_err(format!(
                "{NAME}: table `{name}` is {} files, not a Delta table, and has no versions; only published tables (`orchestrator tables` shows format delta) can be read as of a version",
                table.format
            )));
        }
        let dir = Path::new(&table.location).to_path_buf();
        let opened = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| plan_err(format!("{NAME}: cannot start a runtime: {e}")))?;
                rt.block_on(provider(&dir, &name, when))
                    .map_err(|e| plan_err(format!("{NAME}: {e}")))
            })
            .join()
        });
        match opened {
            Ok(result) => result,
            Err(_) => Err(DataFusionError::Internal(format!(
                "{NAME}: opening `{name}` panicked"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::lit;

    #[test]
    fn timestamps_read_as_users_write_them() {
        let t = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2026-12-01T18:00:00Z").as_deref(),
            Some("2026-12-01T18:00:00+00:00")
        );
        assert_eq!(
            t("2026-12-01T19:00:00+01:00").as_deref(),
            Some("2026-12-01T18:00:00+00:00")
        );
        assert_eq!(
            t("2026-12-01 18:00:00").as_deref(),
            Some("2026-12-01T18:00:00+00:00")
        );
        assert_eq!(
            t("2026-12-01 18:00").as_deref(),
            Some("2026-12-01T18:00:00+00:00")
        );
        assert_eq!(
            t("2026-12-01").as_deref(),
            Some("2026-12-01T00:00:00+00:00")
        );
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2026-13-01"), None);
    }

    #[test]
    fn arguments_are_a_table_name_and_a_version_or_time() {
        assert_eq!(
            parse_args(&[lit("t"), lit(3i64)]).ok(),
            Some(("t".to_string(), When::Version(3)))
        );
        assert!(matches!(
            parse_args(&[lit("t"), lit("2026-12-01")]),
            Ok((_, When::Time(_)))
        ));
        for bad in [
            vec![lit("t")],
            vec![lit(1i64), lit(1i64)],
            vec![lit("t"), lit(-1i64)],
            vec![lit("t"), lit("soon")],
            vec![lit("t"), lit(1.5f64)],
        ] {
            let e = parse_args(&bad).expect_err("refused").to_string();
            assert!(e.contains(NAME), "{e}");
        }
    }
}
