//! `orchestrator state check`: what is wrong with a state dir, without changing it.
//!
//! [`inspect_dir`] looks at the files (before anything opens sled, which would tidy some
//! of them away); [`Store::check`] reads every record. The CLI adds what only the
//! warehouse knows (leftover staging files) and prints one line per finding.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{disk, recovery, AttemptRecord, Store, TableRecord};

/// Findings of a check: `problems` make it fail; `facts` are for the reader.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub facts: Vec<String>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.problems.extend(other.problems);
        self.facts.extend(other.facts);
    }
}

/// Looks at a state dir's files: unfinished sled snapshots, free space, recovery points.
pub fn inspect_dir(dir: &Path) -> Report {
    let mut r = Report::default();
    if let Ok(entries) = std::fs::read_dir(dir.join("db")) {
        for e in entries.flatten() {
            if disk::is_unfinished_snapshot(&e.path()) {
                r.problems.push(format!(
                    "{} is an unfinished sled snapshot (a write cut short by a full disk or a crash); the next command that opens the store removes it",
                    e.path().display()
                ));
            }
        }
    }
    match disk::free_bytes(dir) {
        Ok(free) => {
            let (free_mb, need) = (free / (1024 * 1024), disk::min_free_mb());
            if free_mb < need {
                r.problems.push(format!(
                    "the state dir has {free_mb} MB free; orchestrator needs at least {need} MB to write; free space"
                ));
            } else {
                r.facts
                    .push(format!("{free_mb} MB free (at least {need} MB needed)"));
            }
        }
        Err(e) => r.facts.push(format!("free space unknown ({e})")),
    }
    let points = recovery::recovery_points(dir);
    match recovery::latest_good(dir) {
        (Some(e), skipped) => {
            for s in skipped {
                r.problems.push(format!("unusable recovery point: {s}"));
            }
            r.facts.push(format!(
                "last good recovery point: {} ({} runs, {} tables, written {}); {} kept",
                e.path.display(),
                e.runs.len(),
                e.tables.len(),
                e.created_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                points.len()
            ));
        }
        (None, skipped) => {
            for s in skipped {
                r.problems.push(format!("unusable recovery point: {s}"));
            }
            r.facts
                .push("no recovery point yet (one is written after each finished run)".into());
        }
    }
    r
}

impl Store {
    /// Reads every record and checks that they agree with each other.
    pub fn check(&self) -> Report {
        let mut r = Report::default();
        let mut runs = BTreeSet::new();
        let mut indexed = BTreeSet::new();
        let mut by_workflow = BTreeSet::new();
        let mut owners: Vec<(String, String)> = Vec::new(); // (record, run id)
        let (mut n_tasks, mut n_attempts, mut tables) = (0usize, 0usize, Vec::new());
        let mut live = 0u64;
        for item in self.scan_raw(b"") {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    r.problems.push(format!("reading the store failed: {e}"));
                    return r;
                }
            };
            live += (key.len() + value.len()) as u64;
            let shown = String::from_utf8_lossy(&key).replace('\0', "/");
            let bad = |e: crate::StateError| format!("record {shown}: {e}");
            match key.split(|b| *b == 0).next() {
                Some(b"meta") => {}
                // The active-run index: its run must exist.
                Some(b"x") => {
                    let id = String::from_utf8_lossy(&key[2..]).into_owned();
                    if !matches!(self.run(&id), Ok(Some(_))) {
                        r.problems
                            .push(format!("record {shown}: indexes a run that does not exist"));
                    }
                }
                // Workflow texts, by hash (a run names a missing one: `decode_run` says).
                Some(b"d") => {
                    if std::str::from_utf8(&value).is_err() {
                        r.problems
                            .push(format!("record {shown}: definition is not UTF-8"));
                    }
                }
                Some(b"r") => match self.decode_run(&key, &value) {
                    Ok(run) => {
                        runs.insert(run.id);
                    }
                    Err(e) => r.problems.push(bad(e)),
                },
                Some(b"i") => {
                    let id = key.rsplit(|b| *b == 0).next().unwrap_or_default();
                    indexed.insert(String::from_utf8_lossy(id).into_owned());
                }
                // The per-workflow index: `j/{workflow}/{started_at}/{run}`.
                Some(b"j") => {
                    let mut parts = key.split(|b| *b == 0).skip(1);
                    let workflow = String::from_utf8_lossy(parts.next().unwrap_or_default());
                    let id =
                        String::from_utf8_lossy(key.rsplit(|b| *b == 0).next().unwrap_or_default())
                            .into_owned();
                    match self.run(&id) {
                        Ok(Some(run)) if run.workflow == workflow => {
                            by_workflow.insert(id);
                        }
                        Ok(Some(run)) => r.problems.push(format!(
                            "record {shown}: lists run {id} under workflow {workflow}, but it is a run of {}",
                            run.workflow
                        )),
                        _ => r
                            .problems
                            .push(format!("record {shown}: indexes a run that does not exist")),
                    }
                }
                Some(b"t") => match self.decode_task(&key, &value, |k| self.get(k)) {
                    Ok(t) => {
                        n_tasks += 1;
                        owners.push((format!("task {}/{}", t.run_id, t.task_id), t.run_id));
                    }
                    Err(e) => r.problems.push(bad(e)),
                },
                Some(b"a") => match self.decode::<AttemptRecord>(&key, &value) {
                    Ok(a) => {
                        n_attempts += 1;
                        owners.push((
                            format!("attempt {}/{}#{}", a.run_id, a.task_id, a.attempt),
                            a.run_id,
                        ));
                    }
                    Err(e) => r.problems.push(bad(e)),
                },
                // A finished run's tasks and attempts, sealed together.
                Some(b"z") => match self.decode::<crate::SealedRun>(&key, &value) {
                    Ok(sealed) => {
                        let id = String::from_utf8_lossy(&key[2..]).into_owned();
                        for t in &sealed.tasks {
                            n_tasks += 1;
                            if t.run_id != id {
                                r.problems.push(format!(
                                    "record {shown}: holds task {}/{} of another run",
                                    t.run_id, t.task_id
                                ));
                            }
                        }
                        for a in &sealed.attempts {
                            n_attempts += 1;
                            if a.run_id != id {
                                r.problems.push(format!(
                                    "record {shown}: holds attempt {}/{}#{} of another run",
                                    a.run_id, a.task_id, a.attempt
                                ));
                            }
                        }
                        owners.push((format!("sealed run {id}"), id));
                    }
                    Err(e) => r.problems.push(bad(e)),
                },
                Some(b"w") => {
                    if let Err(e) = self.decode::<crate::ScheduleRecord>(&key, &value) {
                        r.problems.push(bad(e));
                    }
                }
                Some(b"f") => {
                    if let Err(e) = self.decode::<crate::FileRecord>(&key, &value) {
                        r.problems.push(bad(e));
                    }
                }
                Some(b"c") => match self.decode::<TableRecord>(&key, &value) {
                    Ok(t) => tables.push(t),
                    Err(e) => r.problems.push(bad(e)),
                },
                Some(b"u") => {
                    if let Err(e) = self.decode::<crate::UsageRecord>(&key, &value) {
                        r.problems.push(bad(e));
                    }
                }
                Some(b"b") => {
                    if let Err(e) = self.decode::<crate::BackfillRecord>(&key, &value) {
                        r.problems.push(bad(e));
                    }
                }
                Some(b"s") => {
                    if let Err(e) = self.decode::<crate::SentRecord>(&key, &value) {
                        r.problems.push(bad(e));
                    }
                }
                Some(b"o") => match self.decode::<crate::OutboxRecord>(&key, &value) {
                    // A day's notification (a missed deadline) may belong to no run.
                    Ok(o) if o.workflow_path.is_some() => {}
                    Ok(o) => owners.push((format!("notification {}", o.id), o.run_id)),
                    Err(e) => r.problems.push(bad(e)),
                },
                // The pending-notification index: its value is the record's key.
                Some(b"p") => {
                    if !matches!(self.get(&value), Ok(Some(_))) {
                        r.problems.push(format!(
                            "record {shown}: indexes a notification that does not exist"
                        ));
                    }
                }
                _ => r.problems.push(format!("record {shown}: unknown key")),
            }
        }
        // Opening a store replays and removes the journal entry; one still here was not.
        if let Ok(Some(entry)) = self.journal.get(crate::journal::KEY) {
            r.problems.push(format!(
                "the journal of an interrupted commit ({} bytes) was not replayed; opening the \
                 state dir for writing (e.g. `orchestrator runs` where it is writable) replays it",
                entry.len()
            ));
        }
        // Since v6 the per-workflow index is the only one (a store before it had both, or
        // only the global one).
        let one_index = matches!(self.has_one_index(), Ok(true));
        if !one_index {
            for id in runs.difference(&indexed) {
                r.problems.push(format!(
                    "run {id} is missing from the run index (`runs` will not list it)"
                ));
            }
        }
        if one_index || matches!(self.has_workflow_index(), Ok(true)) {
            let pages = if one_index {
                "`runs` and its workflow's page"
            } else {
                "its workflow's page"
            };
            for id in runs.difference(&by_workflow) {
                r.problems.push(format!(
                    "run {id} is missing from its workflow's index ({pages} will not list it)"
                ));
            }
        }
        for id in indexed.difference(&runs) {
            r.problems
                .push(format!("the run index lists run {id}, which has no record"));
        }
        for (what, run) in owners {
            if !runs.contains(&run) {
                r.problems
                    .push(format!("{what} belongs to run {run}, which has no record"));
            }
        }
        for t in &tables {
            // A table on S3 (a Delta table of an `s3://` warehouse) is checked against its
            // log by `state check`'s warehouse pass, not here.
            if !t.location.starts_with("s3://") && !Path::new(&t.location).exists() {
                r.problems.push(format!(
                    "table `{}`: its location {} does not exist (drop the table, or restore the files)",
                    t.name, t.location
                ));
            }
        }
        r.facts.push(format!(
            "{} runs, {n_tasks} task records, {n_attempts} attempts, {} tables",
            runs.len(),
            tables.len()
        ));
        // What sled's log takes beyond its records is rewritten pages not reclaimed yet.
        r.facts.push(format!(
            "{:.1} MB on disk for {:.1} MB of keys and values (stored compressed)",
            self.size_on_disk() as f64 / 1e6,
            live as f64 / 1e6
        ));
        r
    }
}
