//! `state check` and `state recover`: verifying and repairing the state store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orchestrator_engine::state::check::{inspect_dir, Report};
use orchestrator_engine::state::{recovery, Store, Write};
use orchestrator_tasks::data::warehouse;

use super::owner;
use crate::console::{errln, outln};
use crate::{Context, Error};

/// Warehouses a state dir writes to, as far as its catalog and the caller know.
fn warehouses(dir: &Path, store: Option<&Store>, extra: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out: BTreeSet<PathBuf> = extra.iter().cloned().collect();
    out.insert(std::path::absolute(dir.join("warehouse")).unwrap_or(dir.join("warehouse")));
    if let Some(tables) = store.and_then(|s| s.tables().ok()) {
        for t in tables
            .iter()
            .filter(|t| t.managed && !t.location.starts_with("s3://"))
        {
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

pub async fn check(ctx: &Context) -> Result<u8, Error> {
    let dir = ctx.dir();
    if !dir.join("db").exists() {
        return Err(Error::failed(format!(
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
    if let Some(s) = &store {
        replication_report(s, &mut report);
    }
    report.merge(staging_report(&warehouses(dir, store.as_ref(), &[])));
    if let Some(tables) = store.as_ref().and_then(|s| s.tables().ok()) {
        let delta = tables.iter().filter(|t| t.format == "delta").count();
        report.problems.extend(warehouse::check_delta(tables).await);
        if delta > 0 {
            report.facts.push(format!(
                "{delta} Delta table{} checked against {} log",
                if delta == 1 { "" } else { "s" },
                if delta == 1 { "its" } else { "their" }
            ));
        }
    }
    for f in &report.facts {
        outln!(ctx, "ok: {f}");
    }
    for p in &report.problems {
        outln!(ctx, "problem: {p}");
    }
    if report.problems.is_empty() {
        outln!(ctx, "state dir {}: healthy", dir.display());
        Ok(0)
    } else {
        outln!(ctx,
            "state dir {}: {} problem{}; `orchestrator state recover` rebuilds a store that cannot be read",
            dir.display(),
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        );
        Ok(1)
    }
}

/// Where the store is replicated and how far behind the replica is (`--replicate`).
fn replication_report(store: &Store, report: &mut orchestrator_engine::state::check::Report) {
    let (Ok(marker), Ok(Some(lag))) = (store.replica_marker(), store.replication_lag()) else {
        return;
    };
    let behind = humantime::format_duration(std::time::Duration::from_secs(lag.as_secs()));
    let to = match &marker {
        Some(m) => format!(
            "replicated to {} (generation {}, commit {} shipped)",
            m.url, m.generation, m.shipped
        ),
        None => "replication: not shipped anywhere yet".to_string(),
    };
    if lag > std::time::Duration::from_secs(60) {
        report.problems.push(format!(
            "{to}: the oldest commit not shipped waits for {behind}; the replicating process's log says why (it retries every interval)"
        ));
    } else {
        report.facts.push(format!("{to}; replication lag {behind}"));
    }
}

/// `state recover --from URL`: a new store in the state dir from the replica at `url`.
pub async fn recover_from(ctx: &Context, url: &str) -> Result<u8, Error> {
    let dir = ctx.dir();
    let r = crate::replicate::recover(dir, url, &owner()).await?;
    // Opened again as any command would: runs the lost host had in flight are marked
    // interrupted (and resumable) now.
    let (store, interrupted) = Store::open(dir, &owner())?;
    let runs = store.runs(None, usize::MAX)?.len();
    outln!(
        ctx,
        "recovered {} from {url}: generation {}, {} files, up to commit {}; {runs} runs",
        dir.display(),
        r.generation,
        r.files,
        r.last_commit
    );
    for id in &interrupted {
        outln!(ctx, "{}", orchestrator_engine::state::interrupted_note(id));
    }
    Ok(0)
}

pub async fn recover(ctx: &Context, extra: Vec<PathBuf>, force: bool) -> Result<u8, Error> {
    let dir = ctx.dir();
    // How many runs the current store can still show: a rebuild must not silently
    // replace them with a shorter history.
    let mut readable_runs: Option<usize> = None;
    if dir.join("db").exists() {
        if let Ok((store, _)) = Store::open_copy(dir, &owner(), "checking".into()) {
            if !force && store.check().problems.is_empty() {
                outln!(ctx,
                    "state store {} opens and reads cleanly; nothing to recover (--force rebuilds it anyway)",
                    dir.display()
                );
                return Ok(0);
            }
            readable_runs = store.runs(None, usize::MAX).ok().map(|r| r.len());
        }
    }
    let (export, skipped) = recovery::latest_good(dir);
    for s in &skipped {
        outln!(ctx, "skipped recovery point: {s}");
    }
    let recovered_runs = export.as_ref().map_or(0, |e| e.runs.len());
    if let Some(now) = readable_runs.filter(|&n| n > recovered_runs) {
        let lost = now - recovered_runs;
        let source = export.as_ref().map_or_else(
            || "no usable recovery point".to_string(),
            |e| format!("recovery point {}", e.path.display()),
        );
        if !force {
            return Err(Error::failed(format!(
                "error: state store {} still reads {now} runs, but {source} holds {recovered_runs}: rebuilding would lose {lost} runs; nothing was changed\n  read what you can with `orchestrator runs` and `orchestrator state check`; `orchestrator state recover --force` rebuilds anyway",
                dir.display()
            )));
        }
        errln!(ctx,
            "warning: --force: the store read {now} runs and {source} holds {recovered_runs}: {lost} runs are lost from the history (the old db is kept aside)"
        );
    }
    let writes: Vec<Write> = export.as_ref().map(|e| e.writes()).unwrap_or_default();
    let (store, moved) = Store::rebuild(dir, &owner(), &writes)?;
    match &export {
        Some(e) => outln!(ctx,
            "recovered {} runs ({} task records, {} attempts) and {} catalog tables from recovery point {} (written {})",
            e.runs.len(),
            e.tasks.len(),
            e.attempts.len(),
            e.tables.len(),
            e.path.display(),
            e.created_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
        ),
        None => outln!(ctx,
            "no usable recovery point in {}: run history is lost; the catalog is rebuilt from the warehouse alone",
            recovery::recovery_dir(dir).display()
        ),
    }
    if let Some(e) = &export {
        for t in &e.tables {
            if !t.location.starts_with("s3://") && !Path::new(&t.location).exists() {
                outln!(
                    ctx,
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
        let tables = warehouse::rediscover(&wh, &known).await.map_err(|e| {
            Error::failed(format!("error: reading warehouse {}: {e}", wh.display()))
        })?;
        found.extend(tables);
    }
    for t in &found {
        outln!(
            ctx,
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
            outln!(ctx,
                "lost: anything recorded after {} (runs started or finished later are not in the recovery point)",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
        }
    }
    if let Some(m) = moved {
        outln!(
            ctx,
            "the damaged db is kept at {} (delete it once you are satisfied)",
            m.display()
        );
    }
    match store.write_recovery_point() {
        Ok(p) => outln!(ctx, "wrote a new recovery point {}", p.display()),
        Err(e) => outln!(ctx, "warning: could not write a new recovery point: {e}"),
    }
    outln!(ctx, "state store {} rebuilt", dir.display());
    Ok(0)
}

/// What `gc` is asked to delete.
pub struct Gc {
    /// Age of the runs to delete; `None`: each workflow's `retention:`.
    pub older_than: Option<std::time::Duration>,
    pub workflow: Option<String>,
    pub dry_run: bool,
    /// Allow an age under one day.
    pub force: bool,
}

/// `gc`: deletes runs older than `older_than` that nothing needs any more (see
/// `orchestrator_engine::retention`), then compacts the db so the space comes back.
pub fn gc(ctx: &Context, request: Gc) -> Result<u8, Error> {
    let dir = ctx.dir();
    let Gc {
        older_than,
        workflow,
        dry_run,
        force,
    } = request;
    let workflow = workflow.as_deref();
    if let Some(age) = older_than.filter(|a| *a < std::time::Duration::from_secs(86_400)) {
        if !force {
            return Err(Error::invalid(format!(
                "error: --older-than {} would delete runs of the last day, finished ones included; use at least 1d (as `retention:` does), or pass --force",
                humantime::format_duration(age)
            )));
        }
    }
    let (store, recovered) = match Store::open(dir, &owner()) {
        Ok(opened) => opened,
        Err(e @ orchestrator_engine::state::StateError::Locked { .. }) => {
            return Err(Error::invalid(format!(
                "{e}\n  gc needs the state dir to itself (it compacts the db): stop the daemon, run gc, start it again; or give the workflow `retention:` and the daemon deletes old runs by itself"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    for id in &recovered {
        errln!(ctx, "{}", orchestrator_engine::state::interrupted_note(id));
    }
    let runs = store.runs(None, usize::MAX)?;
    let backfills = store.backfills()?;
    let undelivered: BTreeSet<String> = store
        .outbox_pending()?
        .into_iter()
        .map(|o| o.run_id)
        .collect();
    // One age for all (--older-than), or each workflow's `retention:` as its newest run
    // recorded it.
    let mut ages: Vec<(Option<String>, std::time::Duration)> = Vec::new();
    match older_than {
        Some(age) => ages.push((workflow.map(str::to_string), age)),
        None => {
            let mut seen = BTreeSet::new();
            for r in &runs {
                if workflow.is_some_and(|w| w != r.workflow) || !seen.insert(r.workflow.clone()) {
                    continue;
                }
                if let Some(age) = recorded_retention(&r.definition) {
                    ages.push((Some(r.workflow.clone()), age));
                }
            }
            if ages.is_empty() {
                return Err(Error::invalid(
                    "error: no --older-than given, and no workflow in the store has `retention:`; give --older-than (e.g. 90d) or set `retention:` in the workflow",
                ));
            }
        }
    }
    let mut plan = orchestrator_engine::retention::Plan::default();
    let mut cutoffs = Vec::new();
    for (name, age) in &ages {
        let age = chrono::Duration::from_std(*age)
            .map_err(|_| Error::invalid(format!("error: a retention of {age:?} is too long")))?;
        // Older than the calendar can say: nothing is that old.
        let cutoff = chrono::Utc::now()
            .checked_sub_signed(age)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let p = orchestrator_engine::retention::plan(
            &runs,
            &backfills,
            &undelivered,
            cutoff,
            name.as_deref(),
        );
        cutoffs.push(match name {
            Some(n) if older_than.is_none() => {
                format!("{n}: {}", cutoff.format("%Y-%m-%d %H:%M UTC"))
            }
            _ => cutoff.format("%Y-%m-%d %H:%M UTC").to_string(),
        });
        plan.runs.extend(p.runs);
        plan.backfills.extend(p.backfills);
        plan.kept_running += p.kept_running;
        plan.kept_for_rerun += p.kept_for_rerun;
        plan.kept_for_backfill += p.kept_for_backfill;
        plan.kept_for_notifications += p.kept_for_notifications;
    }
    let cutoff_text = cutoffs.join("; ");
    let before = store.size_on_disk();
    let kept = [
        (
            plan.kept_for_rerun,
            "not succeeded and not replaced: `rerun` may still resume them",
        ),
        (
            plan.kept_for_backfill,
            "in a backfill that has not succeeded",
        ),
        (
            plan.kept_for_notifications,
            "with notifications still being delivered",
        ),
        (plan.kept_running, "still running"),
    ];
    if dry_run {
        outln!(
            ctx,
            "would delete {} of {} runs started before {cutoff_text}, and {} succeeded backfills",
            plan.runs.len(),
            runs.len(),
            plan.backfills.len()
        );
        for id in &plan.runs {
            outln!(ctx, "  {id}");
        }
    } else {
        let removed = store.delete_runs(&plan.runs, &plan.backfills)?;
        let store = store.compact(&owner())?;
        // The compacted db is new to the replica: a new generation, with a base.
        crate::replicate::once(ctx, &store);
        let after = store.size_on_disk();
        outln!(ctx,
            "deleted {} of {} runs started before {cutoff_text} ({removed} records, {} succeeded backfills)",
            plan.runs.len(),
            runs.len(),
            plan.backfills.len()
        );
        outln!(
            ctx,
            "state db: {} before, {} after",
            human_bytes(before),
            human_bytes(after)
        );
    }
    for (n, why) in kept.iter().filter(|(n, _)| *n > 0) {
        outln!(ctx, "kept {n} older runs {why}");
    }
    outln!(
        ctx,
        "the catalog, its tables and the schedule and file-trigger records are untouched"
    );
    Ok(0)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KB", n as f64 / (1u64 << 10) as f64),
        n => format!("{n} B"),
    }
}

/// The `retention:` of a workflow definition as a run recorded it, if it has a valid one.
fn recorded_retention(definition: &str) -> Option<std::time::Duration> {
    let root = orchestrator_engine::yaml::parse(definition).ok()??;
    let value = root.get("retention")?;
    value
        .parse::<orchestrator_engine::task::Timeout>()
        .ok()
        .map(|t| t.0)
}
