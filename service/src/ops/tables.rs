//! `tables history|restore|optimize|vacuum`: a published (Delta) table's versions,
//! undoing publishes by restoring an earlier version, and its upkeep.
//!
//! History only reads the table's Delta log, so it works while a daemon owns the state
//! dir. The others write the table and the catalog, so they need the state dir to
//! themselves: with it held, no run of this state dir can be publishing.

use std::path::Path;

use orchestrator_engine::state::{Store, TableRecord, UndonePublish, Write};
use orchestrator_tasks::data::{delta, on_engine, DELTA};

use super::{open_reader_or_api, owner, Reader};
use crate::console::outln;
use crate::{Context, Error};

/// The catalog record of `name`, from the store or from the process that owns it.
async fn record(ctx: &Context, name: &str) -> Result<TableRecord, Error> {
    let tables: Vec<TableRecord> = match open_reader_or_api(ctx)? {
        Reader::Local(store) => store.tables()?,
        Reader::Api(api) => {
            let text = api.get("/api/tables", &[], true).await?;
            serde_json::from_str(&text).map_err(|e| {
                Error::failed(format!("error: the daemon's table list did not parse: {e}"))
            })?
        }
    };
    find(&tables, name)
}

fn find(tables: &[TableRecord], name: &str) -> Result<TableRecord, Error> {
    if let Some(t) = tables.iter().find(|t| t.name == name) {
        return if t.format == DELTA {
            Ok(t.clone())
        } else {
            Err(Error::invalid(format!(
                "error: table `{name}` is a {} table, not a published (Delta) table: only tables written by `publish` have versions",
                t.format
            )))
        };
    }
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let mut text = format!("error: no table `{name}` in the catalog");
    if let Some(near) = orchestrator_engine::suggest::closest(name, names.iter().copied()) {
        text.push_str(&format!("; did you mean `{near}`?"));
    }
    text.push_str(" (`orchestrator tables` lists them)");
    Err(Error::not_found(text))
}

async fn read_history(t: &TableRecord) -> Result<Vec<delta::Version>, Error> {
    let dir = t.location.clone();
    on_engine(async move { delta::history(Path::new(&dir)).await })
        .await
        .map_err(|e| Error::failed(format!("error: {e}")))?
        .map_err(|e| Error::failed(format!("error: {e}")))
}

/// `tables history TABLE`: every version the log holds, newest first.
pub async fn history(ctx: &Context, name: &str, json: bool) -> Result<u8, Error> {
    let t = record(ctx, name).await?;
    let versions = read_history(&t).await?;
    if json {
        outln!(
            ctx,
            "{}",
            serde_json::to_string(&versions).unwrap_or_default()
        );
        return Ok(0);
    }
    let mut rows = vec![[
        "VERSION".to_string(),
        "TIME (UTC)".into(),
        "OPERATION".into(),
        "RUN".into(),
        "TASK".into(),
        "ROWS ADDED".into(),
    ]];
    for v in &versions {
        let mut operation = v.operation.clone();
        if let Some(to) = v.restored_to {
            operation.push_str(&format!(" to {to}"));
        }
        rows.push([
            v.version.to_string(),
            v.time
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            operation,
            v.run_id.clone().unwrap_or_else(|| "-".into()),
            v.task_id
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "-".into()),
            v.rows_added.map_or_else(|| "-".into(), |n| n.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!(ctx, "{}", line.join("  ").trim_end());
    }
    Ok(0)
}

/// Which version `tables restore` goes back to.
pub enum Target {
    Version(u64),
    /// The version before the one this run's publish committed.
    BeforeRun(String),
}

/// A publish a restore undoes.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    version: u64,
    run_id: String,
    task_id: String,
    rows: u64,
}

/// The publishes (commits by a run) in versions after `to` that are still part of the
/// table at its latest version: a restore to `to` undoes exactly these. A publish an
/// earlier restore already undid is not among them.
fn undone_by(versions: &[delta::Version], to: u64) -> Vec<Live> {
    let mut ascending: Vec<&delta::Version> = versions.iter().collect();
    ascending.sort_by_key(|v| v.version);
    let mut live: Vec<Live> = Vec::new();
    for v in ascending {
        if let Some(back_to) = v.restored_to {
            live.retain(|l| l.version <= back_to);
            continue;
        }
        if let Some(run_id) = v.run_id.clone().filter(|_| v.is_publish()) {
            live.push(Live {
                version: v.version,
                run_id,
                task_id: v.task_id.clone().unwrap_or_default(),
                rows: v.rows_added.unwrap_or(0),
            });
        }
    }
    live.retain(|l| l.version > to);
    live
}

/// The store, held so that no run of this state dir publishes while `what` writes a
/// table.
fn exclusive(ctx: &Context, what: &str) -> Result<Store, Error> {
    match Store::open(ctx.dir(), &owner()) {
        Ok((store, _)) => Ok(store),
        Err(e @ orchestrator_engine::state::StateError::Locked { .. }) => Err(Error::invalid(format!(
            "{e}\n  {what} needs the state dir to itself, so that no run is publishing meanwhile: stop the daemon, {what}, start it again"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Records `version` as the table's in the catalog.
fn record_version(store: &Store, mut t: TableRecord, version: u64) -> Result<(), Error> {
    if t.version != Some(version) {
        t.version = Some(version);
        t.updated_at = chrono::Utc::now();
        store.commit(&[Write::Table(t)])?;
    }
    Ok(())
}

/// `tables optimize TABLE [--zorder-by COLS]`: compaction as a new version.
pub async fn optimize(ctx: &Context, name: &str, zorder_by: Vec<String>) -> Result<u8, Error> {
    let store = exclusive(ctx, "optimize")?;
    let t = find(&store.tables()?, name)?;
    if let Some(c) = zorder_by
        .iter()
        .find(|c| !t.columns.iter().any(|col| &col.name == *c))
    {
        let columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::invalid(format!(
            "error: --zorder-by `{c}` is not a column of `{name}` (columns: {})",
            columns.join(", ")
        )));
    }
    let location = t.location.clone();
    let o = on_engine(async move { delta::optimize(Path::new(&location), &zorder_by, None).await })
        .await
        .map_err(|e| Error::failed(format!("error: {e}")))?
        .map_err(|e| Error::failed(format!("error: {e}")))?;
    record_version(&store, t, o.version)?;
    crate::replicate::once(ctx, &store);
    if o.files_added == 0 && o.files_removed == 0 {
        outln!(
            ctx,
            "`{name}` is compact already ({} file{}); nothing was committed",
            o.files_after,
            if o.files_after == 1 { "" } else { "s" }
        );
    } else {
        outln!(
            ctx,
            "compacted `{name}`: {} files into {}, committed as version {}; earlier versions still read until `tables vacuum` deletes the replaced files",
            o.files_before,
            o.files_after,
            o.version
        );
    }
    Ok(0)
}

/// `tables vacuum TABLE --older-than D [--dry-run]`.
pub async fn vacuum(
    ctx: &Context,
    name: &str,
    older_than: std::time::Duration,
    dry_run: bool,
) -> Result<u8, Error> {
    let older = chrono::Duration::from_std(older_than)
        .map_err(|_| Error::invalid("error: --older-than is too long"))?;
    if older < delta::VACUUM_MINIMUM {
        return Err(Error::invalid(format!(
            "error: --older-than {} is under the safe minimum of 7d: a reader still on an older version (time travel, a long query) could lose its files; use 7d or more",
            humantime::format_duration(older_than)
        )));
    }
    let store = exclusive(ctx, "vacuum")?;
    let t = find(&store.tables()?, name)?;
    let location = t.location.clone();
    let v = on_engine(async move {
        delta::vacuum(Path::new(&location), older, chrono::Utc::now(), dry_run).await
    })
    .await
    .map_err(|e| Error::failed(format!("error: {e}")))?
    .map_err(|e| Error::failed(format!("error: {e}")))?;
    if !dry_run {
        record_version(&store, t, v.version)?;
        crate::replicate::once(ctx, &store);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    outln!(
        ctx,
        "vacuum of `{name}` {verb} {} file{} that left the table more than {} ago",
        v.files.len(),
        if v.files.len() == 1 { "" } else { "s" },
        humantime::format_duration(older_than)
    );
    for f in &v.files {
        outln!(ctx, "  {f}");
    }
    Ok(0)
}

/// `tables restore TABLE (--version N | --before-run RUN) [--yes]`.
pub async fn restore(ctx: &Context, name: &str, target: Target, yes: bool) -> Result<u8, Error> {
    let store = exclusive(ctx, "restore")?;
    let mut t = find(&store.tables()?, name)?;
    let versions = read_history(&t).await?;
    let latest = versions.iter().map(|v| v.version).max().unwrap_or(0);
    let earliest = versions.iter().map(|v| v.version).min().unwrap_or(0);
    let to = match &target {
        Target::Version(n) => *n,
        Target::BeforeRun(run) => {
            let published = versions
                .iter()
                .filter(|v| v.is_publish() && v.run_id.as_deref() == Some(run.as_str()))
                .map(|v| v.version)
                .min()
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "error: no version of `{name}` was committed by run {run} (`orchestrator tables history {name}` lists who committed each)"
                    ))
                })?;
            published.checked_sub(1).ok_or_else(|| {
                Error::invalid(format!(
                    "error: run {run} created `{name}` (version 0): there is no version before it; to undo it, drop the table (`DROP TABLE {name}` in a `sql` task)"
                ))
            })?
        }
    };
    if to < earliest || to > latest {
        return Err(Error::invalid(format!(
            "error: table `{name}` has no version {to}: its log holds versions {earliest} to {latest} (`orchestrator tables history {name}`)"
        )));
    }
    if to == latest {
        outln!(
            ctx,
            "table `{name}` is at version {latest} already; nothing to restore"
        );
        return Ok(0);
    }
    let undone = undone_by(&versions, to);
    let rows: u64 = undone.iter().map(|l| l.rows).sum();
    outln!(
        ctx,
        "restoring `{name}` from version {latest} to version {to} undoes {} publish{} ({rows} rows):",
        undone.len(),
        if undone.len() == 1 { "" } else { "es" }
    );
    for l in &undone {
        outln!(
            ctx,
            "  version {}: run {} task {}, {} rows",
            l.version,
            l.run_id,
            l.task_id,
            l.rows
        );
    }
    if !yes {
        outln!(ctx, "nothing was changed; add --yes to restore");
        return Ok(0);
    }
    let location = t.location.clone();
    let undone_runs: Vec<String> = undone.iter().map(|l| l.run_id.clone()).collect();
    let new_version =
        on_engine(async move { delta::restore(Path::new(&location), to, &undone_runs).await })
            .await
            .map_err(|e| Error::failed(format!("error: {e}")))?
            .map_err(|e| Error::failed(format!("error: {e}")))?;
    let now = chrono::Utc::now();
    t.undone.extend(undone.iter().map(|l| UndonePublish {
        run_id: l.run_id.clone(),
        task_id: l.task_id.clone(),
        version: l.version,
        rows: l.rows,
        restored_in: new_version,
        restored_to: to,
        at: now,
    }));
    t.version = Some(new_version);
    t.row_count = t.row_count.map(|n| n.saturating_sub(rows));
    t.updated_at = now;
    store.commit(&[Write::Table(t)])?;
    crate::replicate::once(ctx, &store);
    outln!(
        ctx,
        "restored `{name}` to version {to}, committed as version {new_version}"
    );
    if let Some(l) = undone.first() {
        outln!(
            ctx,
            "publish an undone run again with `orchestrator rerun {} --from {}` (or `backfill --reprocess` for a range of dates)",
            l.run_id,
            l.task_id
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, run: Option<&str>, rows: u64, restored_to: Option<u64>) -> delta::Version {
        delta::Version {
            version,
            time: None,
            operation: if restored_to.is_some() {
                "RESTORE"
            } else {
                "WRITE"
            }
            .into(),
            run_id: run.map(str::to_string),
            task_id: run.map(|_| "publish".to_string()),
            rows_added: Some(rows),
            restored_to,
        }
    }

    #[test]
    fn a_restore_undoes_only_the_publishes_still_in_the_table() {
        // 0 created by a, 1 by b, 2 by c; 3 restored to 1 (undid c); 4 c again.
        let versions = vec![
            v(4, Some("c"), 10, None),
            v(3, None, 0, Some(1)),
            v(2, Some("c"), 10, None),
            v(1, Some("b"), 10, None),
            v(0, Some("a"), 100, None),
        ];
        let undone = undone_by(&versions, 0);
        let runs: Vec<(u64, &str)> = undone
            .iter()
            .map(|l| (l.version, l.run_id.as_str()))
            .collect();
        assert_eq!(runs, vec![(1, "b"), (4, "c")]);
        assert_eq!(undone_by(&versions, 3).len(), 1);
        assert!(undone_by(&versions, 4).is_empty());
    }

    #[test]
    fn an_optimize_a_run_triggered_is_not_that_runs_publish() {
        let mut optimize = v(2, Some("b"), 0, None);
        optimize.operation = "OPTIMIZE".into();
        let versions = vec![
            optimize,
            v(1, Some("b"), 10, None),
            v(0, Some("a"), 100, None),
        ];
        let undone = undone_by(&versions, 0);
        assert_eq!(undone.len(), 1, "{undone:?}");
        assert_eq!((undone[0].version, undone[0].rows), (1, 10));
    }
}
