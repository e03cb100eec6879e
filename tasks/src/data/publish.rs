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
//!
//! That logic, its refusals and its outputs are [`publish`], once; the local backend
//! writes as above, Athena creates `to` as an Iceberg table and inserts with one
//! `MERGE INTO` (see [`crate::aws::Athena`]).

use std::sync::Arc;

use orchestrator_engine::lineage::{Datasets, Place};
use orchestrator_engine::task::{
    BuildContext, OutputSink, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

use super::backend::{ident, idents, object, DataError, Refusal, TableShape, Warehouse};
use super::local::Local;
use super::{delta, maintenance, on_engine, warehouse, PauseHook};

/// Publishes an audited table into the production table, idempotently: rows whose key is already there are not inserted (a Delta commit locally, MERGE INTO on Athena).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The audited table.
    from: String,
    /// The production table.
    to: String,
    /// Columns that identify a row; a row whose key is already in `to` is not inserted.
    key: Vec<String>,
    /// Whether a new column of `from` may be added to `to`.
    #[serde(default)]
    schema: SchemaMode,
    /// Compaction and retention of `to`, applied after each publish that commits.
    #[serde(default)]
    maintenance: maintenance::Policy,
}

/// `schema:` of a publish: what a column of `from` that `to` lacks does.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// Refused: `to`'s columns change only when the workflow says so.
    #[default]
    Strict,
    /// A new nullable column is added to `to`; its earlier rows read it as null.
    Evolve,
}

impl TaskConfig for PublishConfig {
    const KIND: &'static str = "publish";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        ("inserted", "rows inserted"),
        ("already_present", "rows whose key was already in `to`"),
        ("rows", "rows of `from`"),
        ("created", "whether `to` was created"),
    ];

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
        self.maintenance.check()?;
        Ok(Arc::new(Publish {
            from: self.from,
            to: self.to,
            key: self.key,
            schema: self.schema,
            maintenance: self.maintenance,
            target: crate::aws::Target::of(ctx),
        }))
    }
}

#[derive(Debug)]
struct Publish {
    from: String,
    to: String,
    key: Vec<String>,
    schema: SchemaMode,
    maintenance: maintenance::Policy,
    target: crate::aws::Target,
}

#[async_trait::async_trait]
impl Task for Publish {
    /// The audited table into the production table, with the rows this publish inserted.
    fn lineage(&self, place: Place<'_>, outputs: Option<&Outputs>) -> Datasets {
        let mut to = self.target.table_dataset(place, &self.to);
        if let Some(rows) = outputs
            .and_then(|o| o.get("inserted"))
            .and_then(|r| r.as_u64())
        {
            to = to.with_row_count(rows);
        }
        Datasets {
            inputs: vec![self.target.table_dataset(place, &self.from)],
            outputs: vec![to],
        }
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let (from, to, key) = (self.from.clone(), self.to.clone(), self.key.clone());
        let evolve = self.schema == SchemaMode::Evolve;
        let output = ctx.output.clone();
        let outputs = match &self.target {
            crate::aws::Target::Aws(block) => {
                let athena = crate::aws::Athena::new(block, ctx).await;
                let outputs = publish(&athena, &output, &from, &to, &key, evolve).await?;
                if !self.maintenance.is_empty() {
                    output.line(&format!(
                        "{to}: `maintenance` applies to the local warehouse's Delta tables; on backend aws, compact the Iceberg table with Athena's OPTIMIZE and VACUUM"
                    ));
                }
                outputs
            }
            crate::aws::Target::Local => {
                let (catalog, wh) = (ctx.catalog.clone(), ctx.warehouse.clone());
                let lake = ctx.lake.clone();
                let pause = PauseHook::from_env("publish");
                let creator = format!("{}/{}", ctx.run_id, ctx.task_id);
                let policy = self.maintenance.clone();
                on_engine(async move {
                    let lock = warehouse::table_lock(&to);
                    let _guard = lock.lock().await;
                    // A table published before tables were Delta becomes one first.
                    warehouse::convert_in_place(catalog.as_ref(), &to).await?;
                    let who = delta::Committer::parse(&creator);
                    let local = Local::open(catalog.clone(), wh, creator, pause, None)
                        .await?
                        .with_lake(lake);
                    let mut outputs = publish(&local, &output, &from, &to, &key, evolve).await?;
                    let committed = outputs.get("inserted").and_then(|v| v.as_u64()) > Some(0);
                    if committed && !policy.is_empty() {
                        // Still under the table's lock: nothing writes `to` meanwhile.
                        if let Some(done) =
                            maintain(catalog.as_ref(), &to, &policy, &who, &output).await
                        {
                            outputs.insert("maintenance".into(), done);
                        }
                    }
                    Ok::<_, DataError>(outputs)
                })
                .await??
            }
        };
        if let Some(rows) = outputs.get("inserted").and_then(|v| v.as_u64()) {
            orchestrator_engine::metrics::published(&self.to, rows);
        }
        Ok(outputs)
    }
}

/// Applies a publish's `maintenance:` policy to `to` after its commit, and records the
/// table's new version in the catalog. What went wrong is said in the output and the
/// outputs, not as a failure: the publish itself committed.
async fn maintain(
    catalog: &dyn orchestrator_engine::catalog::Catalog,
    to: &str,
    policy: &maintenance::Policy,
    who: &delta::Committer,
    output: &OutputSink,
) -> Option<serde_json::Value> {
    let mut record = catalog.table(to).ok().flatten()?;
    let dir = std::path::PathBuf::from(&record.location);
    match maintenance::apply(&dir, policy, who).await {
        Ok((done, version)) => {
            if record.version != Some(version) {
                record.version = Some(version);
                record.updated_at = chrono::Utc::now();
                if let Err(e) = catalog.put_table(record) {
                    output.line(&format!("{to}: maintenance done, but the catalog did not record version {version}: {e}; `orchestrator state check` compares them"));
                }
            }
            if let Some(o) = done.as_ref().and_then(|d| d.get("optimized")) {
                output.line(&format!(
                    "{to}: compacted {} files into {} (version {})",
                    o["files_before"], o["files_after"], o["version"]
                ));
            }
            if let Some(n) = done.as_ref().and_then(|d| d.get("vacuumed_files")) {
                output.line(&format!(
                    "{to}: vacuum deleted {n} files no version still needs"
                ));
            }
            done
        }
        Err(e) => {
            output.line(&format!(
                "{to}: maintenance failed (the publish is committed; the next publish tries again): {e}"
            ));
            Some(json!({"error": e.to_string()}))
        }
    }
}

/// Publish, on whichever backend: the refusals (a missing table, a key that is not a
/// column, columns the two tables do not share, null keys, repeated keys), then `to`
/// created from `from` if missing, else the rows whose key `to` does not hold inserted
/// at once. Before anything is written, one aggregation over both tables' keys tells
/// whether `from` repeats a key (refused) and how many of its keys are new (none:
/// nothing is written). Outputs, on every backend: `inserted`, `already_present`,
/// `rows` (in `to` now) and `created` (whether `to` was created), plus the backend's
/// extras.
pub async fn publish(
    b: &dyn Warehouse,
    output: &OutputSink,
    from: &str,
    to: &str,
    key: &[String],
    evolve: bool,
) -> Result<Outputs, DataError> {
    let Some(source) = b.table(from).await? else {
        return Err(Refusal::NoTable {
            table: from.to_string(),
            place: b.place(),
        }
        .into());
    };
    for k in key {
        if source.column(k).is_none() {
            return Err(Refusal::KeyNotAColumn {
                column: k.clone(),
                table: from.to_string(),
                columns: source.column_names(),
            }
            .into());
        }
    }
    let mut target = b.table(to).await?;
    if let Some(t) = &mut target {
        let added = compatible(b, &source, t, evolve)?;
        if !added.is_empty() {
            output.line(&format!(
                "{to}: adding column{} {} (schema: evolve)",
                if added.len() == 1 { "" } else { "s" },
                added
                    .iter()
                    .map(|(n, ty)| format!("`{n}` {ty}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            t.columns.extend(added);
        }
    }

    let keys = idents(key);
    let null_keys = key
        .iter()
        .map(|k| format!("{} IS NULL", ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let summary = b
        .counts(&format!(
            "SELECT count(*) AS n, sum(CASE WHEN {null_keys} THEN 1 ELSE 0 END) AS null_keys FROM {from}"
        ))
        .await?;
    let [source_rows, nulls] = pair(&summary, "the source summary")?;
    if nulls > 0 {
        let sample = b
            .sample(
                &format!("SELECT {keys} FROM {from} WHERE {null_keys}"),
                SAMPLES,
            )
            .await
            .unwrap_or_default();
        return Err(Refusal::NullKeys {
            n: nulls,
            from: from.to_string(),
            key: key.to_vec(),
            sample,
        }
        .into());
    }

    let (inserted, total, created) = match target {
        None => {
            let repeated = b
                .count(&format!(
                    "SELECT {keys} FROM {from} GROUP BY {keys} HAVING count(*) > 1"
                ))
                .await?;
            if repeated > 0 {
                return Err(duplicates(b, from, key, repeated).await);
            }
            let w = b.create_from(to, &source, key, source_rows).await?;
            let inserted = w.rows.unwrap_or(source_rows);
            (inserted, w.table_rows.unwrap_or(inserted), true)
        }
        Some(target) => {
            let existing = b.candidates(to, from, key).await?;
            // One aggregation over the source's keys and the production keys that can
            // match answers both questions before anything is written: is a key repeated
            // in the source, and how many source keys `to` does not hold yet.
            let counts = b
                .counts(&format!(
                    "SELECT sum(CASE WHEN copies > 1 THEN 1 ELSE 0 END) AS repeated, \
                     sum(CASE WHEN copies > 0 AND copies = n THEN 1 ELSE 0 END) AS new_keys \
                     FROM (SELECT sum(src) AS copies, count(*) AS n FROM \
                       (SELECT {keys}, 1 AS src FROM {from} UNION ALL SELECT {keys}, 0 AS src FROM {existing}) AS k \
                     GROUP BY {keys}) AS g"
                ))
                .await?;
            let [repeated, new_keys] = pair(&counts, "the key count")?;
            if repeated > 0 {
                return Err(duplicates(b, from, key, repeated).await);
            }
            if new_keys == 0 {
                // Publishing a day again: nothing is written.
                b.unchanged(to).await?;
                let total = b.count(&format!("SELECT * FROM {to}")).await?;
                (0, total, false)
            } else {
                let w = b.insert_new(&source, &target, &existing, key).await?;
                let total = match w.table_rows {
                    Some(n) => n,
                    None => b.count(&format!("SELECT * FROM {to}")).await?,
                };
                (w.rows.unwrap_or(new_keys), total, false)
            }
        }
    };
    let present = source_rows.saturating_sub(inserted);
    output.line(&format!(
        "{to}: inserted {inserted} rows, {present} already present, {total} rows now"
    ));
    let mut outputs = object(json!({
        "inserted": inserted, "already_present": present, "rows": total, "created": created,
    }));
    outputs.extend(b.extras());
    Ok(outputs)
}

/// Rows of a refusal's sample.
const SAMPLES: usize = 5;

/// The two cells of an aggregate's row.
fn pair(cells: &[u64], what: &str) -> Result<[u64; 2], DataError> {
    match cells {
        [a, b] => Ok([*a, *b]),
        other => Err(DataError::Answer(format!(
            "{what} answered {other:?}, not two counts"
        ))),
    }
}

/// `from`'s columns are `to`'s: the same names, of the same types. With `evolve`, a
/// column of `from` that `to` lacks is allowed on a backend that can add it, and
/// returned (name, type), to be added by the insert.
fn compatible(
    b: &dyn Warehouse,
    from: &TableShape,
    to: &TableShape,
    evolve: bool,
) -> Result<Vec<(String, String)>, DataError> {
    let mut added = Vec::new();
    if let Some(why) = &to.read_only {
        return Err(Refusal::NotWritable {
            table: to.name.clone(),
            why: why.clone(),
        }
        .into());
    }
    for (name, from_type) in &from.columns {
        match to.column(name) {
            Some(to_type) if to_type.eq_ignore_ascii_case(from_type) => {}
            Some(to_type) => {
                return Err(Refusal::TypeDiffers {
                    column: name.clone(),
                    from: from.name.clone(),
                    from_type: from_type.clone(),
                    to: to.name.clone(),
                    to_type: to_type.to_string(),
                }
                .into())
            }
            None if evolve && b.evolves() => added.push((name.clone(), from_type.clone())),
            None => {
                return Err(Refusal::NotInTarget {
                    column: name.clone(),
                    from: from.name.clone(),
                    to: to.name.clone(),
                    hint: b.add_column_hint(&to.name, name, from_type),
                }
                .into())
            }
        }
    }
    if let Some((name, _)) = to.columns.iter().find(|(n, _)| from.column(n).is_none()) {
        return Err(Refusal::NotInSource {
            column: name.clone(),
            from: from.name.clone(),
            to: to.name.clone(),
        }
        .into());
    }
    Ok(added)
}

/// The refusal for `n` keys repeated in `from`, with a sample of them.
async fn duplicates(b: &dyn Warehouse, from: &str, key: &[String], n: u64) -> DataError {
    let keys = idents(key);
    let sample = b
        .sample(
            &format!(
                "SELECT {keys}, count(*) AS copies FROM {from} GROUP BY {keys} HAVING count(*) > 1"
            ),
            SAMPLES,
        )
        .await
        .unwrap_or_default();
    Refusal::DuplicateKeys {
        n,
        from: from.to_string(),
        key: key.to_vec(),
        sample,
    }
    .into()
}
