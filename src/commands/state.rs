//! `state check` and `state recover`: verifying and repairing the state store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orchestrator_engine::state::check::{inspect_dir, Report};
use orchestrator_engine::state::{recovery, Store, Write};
use orchestrator_tasks::data::warehouse;

use super::{owner, Fail};
use crate::out::outln;

/// Warehouses a state dir writes to, as far as its catalog and the caller know.
fn warehouses(dir: &Path, store: Option<&Store>, extra: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out: BTreeSet<PathBuf> = extra.iter().cloned().collect();
    out.insert(std::path::absolute(dir.join("warehouse")).unwrap_or(dir.join("warehouse")));
    if let Some(tables) = store.and_then(|s| s.tables().ok()) {
        for t in tables.iter().filter(|t| t.managed) {
            if let Some(parent) = Path::new(&t.location).parent() {
                out.insert(parent.to_path_buf());
            }
        }
    }
    out
}

fn staging_report(whs: &BTreeSet<PathBuf>) -> Report {
    let mut r = Report::default();
    for wh in whs {
        for p in warehouse::leftovers(wh) {
            r.problems.push(format!(
                "{} was left by an interrupted write (a killed create or publish); the next successful write of that table removes it, or delete it by hand",
                p.display()
            ));
        }
    }
    r
}

pub fn check(dir: &Path) -> Result<u8, Fail> {
    if !dir.join("db").exists() {
        return Err(Fail::failed(format!(
            "error: {} holds no state store (no db/); nothing to check",
            dir.display()
        )));
    }
    // Look at the files before anything opens sled, which would tidy some of them.
    let mut report = inspect_dir(dir);
    let store = match Store::open_copy(dir, &owner(), "state check changes nothing".into()) {
        Ok((store, _)) => {
            report.merge(store.check());
            Some(store)
        }
        Err(e) => {
            report
                .problems
                .push(format!("the store cannot be opened: {e}"));
            None
        }
    };
    report.merge(staging_report(&warehouses(dir, store.as_ref(), &[])));
    for f in &report.facts {
        outln!("ok: {f}");
    }
    for p in &report.problems {
        outln!("problem: {p}");
    }
    if report.problems.is_empty() {
        outln!("state dir {}: healthy", dir.display());
        Ok(0)
    } else {
        outln!(
            "state dir {}: {} problem{}; `orchestrator state recover` rebuilds a store that cannot be read",
            dir.display(),
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        );
        Ok(1)
    }
}

pub async fn recover(dir: &Path, extra: Vec<PathBuf>, force: bool) -> Result<u8, Fail> {
    if !force && dir.join("db").exists() {
        if let Ok((store, _)) = Store::open_copy(dir, &owner(), "checking".into()) {
            if store.check().problems.is_empty() {
                outln!(
                    "state store {} opens and reads cleanly; nothing to recover (--force rebuilds it anyway)",
                    dir.display()
                );
                return Ok(0);
            }
        }
    }
    let (export, skipped) = recovery::latest_good(dir);
    for s in &skipped {
        outln!("skipped recovery point: {s}");
    }
    let writes: Vec<Write> = export.as_ref().map(|e| e.writes()).unwrap_or_default();
    let (store, moved) = Store::rebuild(dir, &owner(), &writes)?;
    match &export {
        Some(e) => outln!(
            "recovered {} runs ({} task records, {} attempts) and {} catalog tables from recovery point {} (written {})",
            e.runs.len(),
            e.tasks.len(),
            e.attempts.len(),
            e.tables.len(),
            e.path.display(),
            e.created_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        ),
        None => outln!(
            "no usable recovery point in {}: run history is lost; the catalog is rebuilt from the warehouse alone",
            recovery::recovery_dir(dir).display()
        ),
    }
    if let Some(e) = &export {
        for t in &e.tables {
            if !Path::new(&t.location).exists() {
                outln!(
                    "lost: table `{}`: its files at {} are gone (drop it, or restore them)",
                    t.name,
                    t.location
                );
            }
        }
    }
    let known: BTreeSet<String> = store.tables()?.into_iter().map(|t| t.name).collect();
    let mut found = Vec::new();
    for wh in warehouses(dir, Some(&store), &extra) {
        let tables = warehouse::rediscover(&wh, &known)
            .await
            .map_err(|e| Fail::failed(format!("error: reading warehouse {}: {e}", wh.display())))?;
        found.extend(tables);
    }
    for t in &found {
        outln!(
            "re-registered table `{}` ({} rows, {} columns) from {}",
            t.name,
            t.row_count.unwrap_or(0),
            t.columns.len(),
            t.location
        );
    }
    store.commit(&found.into_iter().map(Write::Table).collect::<Vec<_>>())?;
    if let Some(e) = &export {
        if let Some(at) = e.created_at {
            outln!(
                "lost: anything recorded after {} (runs started or finished later are not in the recovery point)",
                at.to_rfc3339()
            );
        }
    }
    if let Some(m) = moved {
        outln!(
            "the damaged db is kept at {} (delete it once you are satisfied)",
            m.display()
        );
    }
    match store.write_recovery_point() {
        Ok(p) => outln!("wrote a new recovery point {}", p.display()),
        Err(e) => outln!("warning: could not write a new recovery point: {e}"),
    }
    outln!("state store {} rebuilt", dir.display());
    Ok(0)
}
