//! `kind: publish` — moves audited rows into the production table, incrementally and
//! idempotently.
//!
//! If `to` does not exist it is created from `from`: when `from` is a managed table, by
//! sharing its Parquet files (hard links), so the first publish of a large backfill costs
//! its audit queries, not a rewrite of every row. Otherwise only rows of `from` whose
//! key is not yet in `to` are inserted, so publishing the same day twice never duplicates
//! it. The new rows are written as one Parquet file under the warehouse's staging
//! directory and renamed into `to`'s directory: one rename, so a crash at any point leaves
//! `to` either unchanged or fully updated, and publishing again afterwards inserts exactly
//! what is missing. Before anything is written, one aggregation over both tables' keys
//! tells whether `from` repeats a key (refused) and how many of its keys are new (none:
//! nothing is written).

use std::path::PathBuf;
use std::sync::Arc;

use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use datafusion::common::{Column, ScalarValue};
use datafusion::prelude::{lit, Expr};

use super::{count, on_engine, one_row, rows_json, scalar_u64, session, warehouse, PauseHook};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The audited table.
    from: String,
    /// The production table.
    to: String,
    /// Columns that identify a row; a row whose key is already in `to` is not inserted.
    key: Vec<String>,
}

impl TaskConfig for PublishConfig {
    const KIND: &'static str = "publish";

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        super::crawl::check_table_name(&self.from)?;
        super::crawl::check_table_name(&self.to)?;
        if self.key.is_empty() {
            return Err(
                "`key` is empty; name the columns that identify a row, e.g. [symbol, date]".into(),
            );
        }
        if self.from == self.to {
            return Err("`from` and `to` are the same table".into());
        }
        Ok(Arc::new(Publish {
            from: self.from,
            to: self.to,
            key: self.key,
            target: crate::aws::Target::of(ctx),
        }))
    }
}

#[derive(Debug)]
struct Publish {
    from: String,
    to: String,
    key: Vec<String>,
    target: crate::aws::Target,
}

fn ident(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

#[async_trait::async_trait]
impl Task for Publish {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        if let crate::aws::Target::Aws(block) = &self.target {
            let aws = crate::aws::connect(block).await;
            return crate::aws::publish(&aws, ctx, &self.from, &self.to, &self.key)
                .await
                .map_err(TaskFailure::new);
        }
        let (from, to, key) = (self.from.clone(), self.to.clone(), self.key.clone());
        let (catalog, wh) = (ctx.catalog.clone(), ctx.warehouse.clone());
        let pause = PauseHook::from_env("publish");
        let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
        let (inserted, present, total) = on_engine(async move {
            let lock = warehouse::table_lock(&to);
            let _guard = lock.lock().await;
            publish(catalog, &wh, &from, &to, &key, &creator, pause.as_ref()).await
        })
        .await
        .and_then(|r| r)
        .map_err(TaskFailure::new)?;
        ctx.output.line(&format!(
            "{}: inserted {inserted} rows, {present} already present, {total} rows now",
            self.to
        ));
        match json!({"inserted": inserted, "already_present": present, "rows": total}) {
            serde_json::Value::Object(m) => Ok(m),
            _ => Ok(Outputs::new()),
        }
    }
}

/// Returns (inserted, already present, rows in `to` now).
async fn publish(
    catalog: Arc<dyn Catalog>,
    wh: &std::path::Path,
    from: &str,
    to: &str,
    key: &[String],
    creator: &str,
    pause: Option<&PauseHook>,
) -> Result<(u64, u64, u64), String> {
    let Some(source) = catalog.table(from).map_err(|e| e.to_string())? else {
        return Err(format!(
            "table `{from}` does not exist; the steps that build it must run first"
        ));
    };
    for k in key {
        if !source.columns.iter().any(|c| c.name == *k) {
            return Err(format!(
                "key column `{k}` is not a column of `{from}` (columns: {})",
                source
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let target = catalog.table(to).map_err(|e| e.to_string())?;
    if let Some(t) = &target {
        if !t.managed {
            return Err(format!(
                "`{to}` is a crawled (external) table; publish writes only to tables in the warehouse"
            ));
        }
        for c in &source.columns {
            match t.columns.iter().find(|tc| tc.name == c.name) {
                Some(tc) if tc.data_type == c.data_type => {}
                Some(tc) => {
                    return Err(format!(
                        "column `{}` is {} in `{from}` but {} in `{to}`; cast it in the query that builds `{from}`",
                        c.name, c.data_type, tc.data_type
                    ))
                }
                None => return Err(format!("column `{}` of `{from}` is not in `{to}`", c.name)),
            }
        }
        if let Some(tc) = t
            .columns
            .iter()
            .find(|tc| !source.columns.iter().any(|c| c.name == tc.name))
        {
            return Err(format!(
                "column `{}` of `{to}` is missing from `{from}`",
                tc.name
            ));
        }
    }

    let session = session(catalog.as_ref()).await?;
    let keys = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let null_keys = key
        .iter()
        .map(|k| format!("{} IS NULL", ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    // One pass over the source: its size, its null keys, and each key column's range,
    // which bounds the part of `to` that can hold a matching key.
    let ranges = key
        .iter()
        .map(|k| format!("min({k}), max({k})", k = ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = one_row(
        &session,
        &format!(
            "SELECT count(*), sum(CASE WHEN {null_keys} THEN 1 ELSE 0 END), {ranges} FROM {from}"
        ),
    )
    .await?;
    let cell = |i: usize| -> Result<ScalarValue, String> {
        summary
            .get(i)
            .cloned()
            .ok_or_else(|| format!("the source summary has no column {i}"))
    };
    let source_rows = count(&cell(0)?);
    let n = count(&cell(1)?);
    if n > 0 {
        return Err(format!(
            "{n} rows of `{from}` have a null key ({}); add a `not_null` check before publish",
            key.join(", ")
        ));
    }
    let bounds: Vec<(ScalarValue, ScalarValue)> = (0..key.len())
        .map(|i| Ok((cell(2 + 2 * i)?, cell(3 + 2 * i)?)))
        .collect::<Result<_, String>>()?;

    let Some(target) = target else {
        let n = scalar_u64(
            &session,
            &format!(
                "SELECT count(*) FROM (SELECT {keys} FROM {from} GROUP BY {keys} HAVING count(*) > 1) AS d"
            ),
        )
        .await?;
        if n > 0 {
            return Err(duplicates(&session, from, key, n).await);
        }
        // A first publish shares the audited files instead of rewriting every row.
        if let Some(t) = warehouse::create_table_sharing(
            catalog.as_ref(),
            wh,
            to,
            &source,
            source_rows,
            creator,
            pause,
        )
        .await?
        {
            let rows = t.row_count.unwrap_or(0);
            return Ok((rows, 0, rows));
        }
        let df = session
            .sql(&format!("SELECT * FROM {from}"))
            .await
            .map_err(|e| e.to_string())?;
        let t = warehouse::create_table(catalog.as_ref(), wh, to, df, creator, pause).await?;
        let rows = t.row_count.unwrap_or(0);
        return Ok((rows, 0, rows));
    };

    let columns = target
        .columns
        .iter()
        .map(|c| format!("f.{}", ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let matches = key
        .iter()
        .map(|k| format!("t.{k} = f.{k}", k = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    // Only the part of `to` inside the source's key ranges can match: with the ranges as
    // literals, the scan skips every file and row group whose statistics lie outside, so
    // publishing a day reads that day's files, not the whole table.
    let mut existing = session.table(to).await.map_err(|e| e.to_string())?;
    for (k, (lo, hi)) in key.iter().zip(bounds) {
        if lo.is_null() || hi.is_null() {
            continue;
        }
        let column = Expr::Column(Column::new_unqualified(k.as_str()));
        existing = existing
            .filter(column.between(lit(lo), lit(hi)))
            .map_err(|e| e.to_string())?;
    }
    session
        .register_table("__publish_existing", existing.into_view())
        .map_err(|e| e.to_string())?;
    // One aggregation over the source's keys and the production keys in range answers
    // both questions before anything is written: is a key repeated in the source, and
    // how many source keys `to` does not hold yet. Publishing a day again (nothing new)
    // stops here; one pass instead of a GROUP BY and an anti-join.
    let counts = one_row(
        &session,
        &format!(
            "SELECT count(*) FILTER (WHERE copies > 1), count(*) FILTER (WHERE copies > 0 AND copies = n) \
             FROM (SELECT sum(src) AS copies, count(*) AS n FROM \
               (SELECT {keys}, 1 AS src FROM {from} UNION ALL SELECT {keys}, 0 AS src FROM __publish_existing) AS k \
             GROUP BY {keys}) AS g"
        ),
    )
    .await?;
    let (repeated, new_keys) = match counts.as_slice() {
        [a, b] => (count(a), count(b)),
        _ => return Err("the key count query answered no row".into()),
    };
    if repeated > 0 {
        return Err(duplicates(&session, from, key, repeated).await);
    }
    if new_keys == 0 {
        warehouse::remove_leftovers(wh, to);
        let total = scalar_u64(&session, &format!("SELECT count(*) FROM {to}")).await?;
        return Ok((0, source_rows, total));
    }
    let new_rows = session
        .sql(&format!(
            "SELECT {columns} FROM {from} AS f WHERE NOT EXISTS (SELECT 1 FROM __publish_existing AS t WHERE {matches})"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let schema = new_rows.schema().as_arrow().clone();
    // Appended, not `with_extension`: the name's `.123456-0a1b2c3d` (microseconds and a
    // random suffix) is what keeps two publishes in one second from writing one file.
    let staging = {
        let mut p = warehouse::staging_path(wh, to)?.into_os_string();
        p.push(".parquet");
        PathBuf::from(p)
    };
    let inserted = warehouse::write_parquet(new_rows, &staging, true).await?;
    if let Some(p) = pause {
        p.reached("before-rename").await;
    }
    if inserted > 0 {
        let dir = warehouse::table_dir(wh, to);
        let name = staging
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "part.parquet".into());
        let dest = dir.join(format!("part-{name}"));
        std::fs::rename(&staging, &dest).map_err(|e| {
            format!(
                "cannot move {} into {} ({e})",
                staging.display(),
                dir.display()
            )
        })?;
    } else if staging.exists() {
        let _ = std::fs::remove_file(&staging);
    }
    warehouse::remove_leftovers(wh, to);
    // A fresh session: the first one listed the table's files before the new one was
    // moved in (and may answer count(*) from those files' statistics).
    let after = super::session(catalog.as_ref()).await?;
    let total = scalar_u64(&after, &format!("SELECT count(*) FROM {to}")).await?;
    let mut updated = target;
    updated.row_count = Some(total);
    updated.updated_at = chrono::Utc::now();
    if updated.columns.len() != schema.fields().len() {
        updated.columns = warehouse::columns_of(&schema);
    }
    catalog.put_table(updated).map_err(|e| e.to_string())?;
    Ok((inserted, source_rows - inserted, total))
}

/// The error for `n` keys repeated in `from`, with a sample of them.
async fn duplicates(
    session: &datafusion::prelude::SessionContext,
    from: &str,
    key: &[String],
    n: u64,
) -> String {
    let keys = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let sample = match session
        .sql(&format!(
            "SELECT {keys}, count(*) AS copies FROM {from} GROUP BY {keys} HAVING count(*) > 1 LIMIT 5"
        ))
        .await
    {
        Ok(df) => df.collect().await.ok(),
        Err(_) => None,
    };
    let sample: Vec<String> = sample
        .and_then(|b| rows_json(&b).ok())
        .unwrap_or_default()
        .iter()
        .map(|v| v.to_string())
        .collect();
    format!(
        "{n} keys ({}) occur more than once in `{from}`, e.g. {}; add a `unique` check before publish",
        key.join(", "),
        sample.join(", ")
    )
}
