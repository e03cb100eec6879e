//! The workflows directory: watched, rescanned on a change; each valid workflow is
//! (re)scheduled, an invalid edit keeps the previous version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::api::RunParams;
use crate::event_loop::{Daemon, Entry, Msg};
use crate::policy::{self, Timers};

/// Watches the workflows directory; every change is one `Changed` message.
pub(crate) fn watch(
    dir: &Path,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(Msg::Changed);
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| {
            format!(
                "cannot watch workflows directory {}: {e}; check it exists (--workflows DIR)",
                dir.display()
            )
        })?;
    Ok(watcher)
}

/// Placeholder run values for loading a workflow to read its schedule.
pub(crate) fn probe() -> RunParams {
    RunParams {
        run_id: "daemon".into(),
        date: Utc::now().format("%Y-%m-%d").to_string(),
        scheduled_at: None,
        inherited: BTreeMap::new(),
        trigger_files: Vec::new(),
        overrides: BTreeMap::new(),
    }
}

impl Daemon {
    /// (Re)reads the workflows directory: new and changed files are validated and
    /// (re)scheduled, deleted ones unscheduled; an invalid file keeps its previous version.
    pub(crate) fn rescan(&mut self) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.config.workflows_dir) {
            Ok(d) => d
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                // Channels shared by the workflows, not a workflow.
                .filter(|p| {
                    p.file_name()
                        .is_none_or(|n| n != orchestrator_engine::workflow::SHARED_CHANNELS)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(
                    "daemon: cannot read {}: {e}",
                    self.config.workflows_dir.display()
                );
                return;
            }
        };
        files.sort();
        // Unschedule workflows whose file is gone.
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !files.contains(&e.path))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            tracing::info!("daemon: workflow {name}: file removed; unscheduled");
            self.entries.remove(&name);
        }
        self.invalid.retain(|p, _| files.contains(p));
        for path in files {
            let source = match std::fs::read_to_string(&path) {
                Ok(s) => s,
                // Deleted between the listing and now: the next rescan unschedules it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Not UTF-8, unreadable: said, and listed as invalid like a bad edit.
                    let current = self.entries.values().any(|e| e.path == path);
                    let kept = if current {
                        "the previous version stays scheduled"
                    } else {
                        "not scheduled"
                    };
                    let why = if e.kind() == std::io::ErrorKind::InvalidData {
                        "it is not UTF-8 text; save it as UTF-8".to_string()
                    } else {
                        format!("it cannot be read: {e}")
                    };
                    if self.invalid.get(&path) != Some(&why) {
                        tracing::warn!("daemon: {} is invalid; {kept}: {why}", path.display());
                        self.invalid.insert(path.clone(), why);
                    }
                    continue;
                }
            };
            let current = self.entries.values().find(|e| e.path == path);
            if current.is_some_and(|e| e.source == source) {
                continue;
            }
            let wf = match (self.loader)(&path, source.clone(), &probe()) {
                Ok(wf) => wf,
                Err(diags) => {
                    let kept = if current.is_some() {
                        "the previous version stays scheduled"
                    } else {
                        "not scheduled"
                    };
                    tracing::warn!("daemon: {} is invalid; {kept}:\n{diags}", path.display());
                    self.invalid.insert(path.clone(), diags.to_string());
                    continue;
                }
            };
            self.invalid.remove(&path);
            let old_name = current.map(|e| e.wf.name.clone());
            if let Some(old) = old_name.as_ref().filter(|o| **o != wf.name) {
                self.entries.remove(old);
            }
            if self.config.schedule && wf.schedule.is_none() && wf.on_files.is_none() {
                if old_name.is_some() {
                    tracing::info!(
                        "daemon: workflow {}: no `schedule:` or `on:` any more; unscheduled",
                        wf.name
                    );
                    self.entries.remove(&wf.name);
                }
                continue;
            }
            if let Some(other) = self.entries.get(&wf.name).filter(|e| e.path != path) {
                tracing::warn!(
                    "daemon: {} defines workflow `{}`, which {} already defines; not scheduled (rename one)",
                    path.display(),
                    wf.name,
                    other.path.display()
                );
                continue;
            }
            let name = wf.name.clone();
            let reloaded = old_name.is_some();
            let last_fire = self.last_fire(&name);
            let mut wf = wf;
            // A `rate()` without `start_date:` is a grid anchored at the first fire time
            // this store recorded, so a restart does not move it (with `start_date:`, the
            // grid starts there).
            if let Some(s) = wf.schedule.as_mut() {
                policy::anchor(s, last_fire);
            }
            let timers = if self.config.schedule {
                policy::timers(&wf, last_fire, Utc::now())
            } else {
                Timers::default()
            };
            self.entries.insert(
                name.clone(),
                Entry {
                    path: path.clone(),
                    source,
                    wf,
                    timers,
                },
            );
            self.log_next(&name, if reloaded { "reloaded" } else { "scheduled" });
        }
        if self.config.schedule {
            self.sync_file_watchers();
        }
    }

    pub(crate) fn log_next(&self, name: &str, what: &str) {
        if !self.config.schedule {
            // `orchestrator ui` fires nothing: fire times would mislead.
            tracing::info!("workflow {name} {what}: can be triggered from the UI");
            return;
        }
        let Some(e) = self.entries.get(name) else {
            return;
        };
        let Some(s) = &e.wf.schedule else { return };
        let exprs: Vec<&str> = s.exprs.iter().map(|x| x.text.as_str()).collect();
        match e.timers.next {
            Some(t) => tracing::info!(
                "daemon: workflow {name} {what} ({}): {} in {}; next run {} ({})",
                e.path.display(),
                exprs.join(" + "),
                s.tz.name(),
                t.format("%Y-%m-%dT%H:%M:%SZ"),
                t.with_timezone(&s.tz).format("%Y-%m-%dT%H:%M:%S%:z")
            ),
            None => tracing::info!(
                "daemon: workflow {name} {what} ({}): {} has no future fire time",
                e.path.display(),
                exprs.join(" + ")
            ),
        }
    }

    pub(crate) fn last_fire(&self, name: &str) -> Option<DateTime<Utc>> {
        match self.store.schedule_record(name) {
            Ok(r) => r.map(|r| r.last_fire),
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: cannot read its schedule record: {e}");
                None
            }
        }
    }
}
