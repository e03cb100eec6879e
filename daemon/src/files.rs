//! File triggers (`on: files:`): a watcher per workflow, arrived files debounced into
//! batches, each batch one run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::Utc;
use orchestrator_engine::arrival::FileTrigger;
use tokio::sync::mpsc;

use crate::event_loop::{Daemon, Msg};
use crate::policy::Due;

/// Files that arrived for a workflow and have not started a run yet.
pub(crate) struct Pending {
    pub(crate) files: BTreeMap<PathBuf, (u64, i64)>,
    /// Start the run when this passes (the directory has been quiet for `debounce`).
    pub(crate) deadline: tokio::time::Instant,
}

/// Watches a file-triggered workflow's directory, recursively; every path created or
/// modified is one `File` message. With `poll`, notify's polling watcher (for network
/// file systems, where kernel notifications do not arrive).
pub(crate) fn watch_files(
    name: &str,
    trigger: &FileTrigger,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<Box<dyn notify::Watcher + Send>, String> {
    let workflow = name.to_string();
    let handler = move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = ev {
            if e.kind.is_create() || e.kind.is_modify() {
                for path in e.paths {
                    let _ = tx.send(Msg::File {
                        workflow: workflow.clone(),
                        path,
                    });
                }
            }
        }
    };
    let dir = &trigger.path;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create watched directory {}: {e}", dir.display()))?;
    let mut watcher: Box<dyn notify::Watcher + Send> = match trigger.poll {
        Some(every) => Box::new(
            notify::PollWatcher::new(handler, notify::Config::default().with_poll_interval(every))
                .map_err(|e| format!("cannot poll {}: {e}", dir.display()))?,
        ),
        None => Box::new(
            notify::recommended_watcher(handler)
                .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?,
        ),
    };
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(watcher)
}

impl Daemon {
    /// One watcher per file-triggered workflow, on its directory; rebuilt when the
    /// trigger changes, dropped when the workflow goes.
    pub(crate) fn sync_file_watchers(&mut self) {
        let wanted: BTreeMap<String, FileTrigger> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.wf.on_files.clone().map(|f| (n.clone(), f)))
            .collect();
        self.file_watchers
            .retain(|n, (f, _)| wanted.get(n) == Some(&*f));
        self.pending.retain(|n, _| wanted.contains_key(n));
        for (name, trigger) in wanted {
            if self.file_watchers.contains_key(&name) {
                continue;
            }
            match watch_files(&name, &trigger, self.tx.clone()) {
                Ok(w) => {
                    tracing::info!(
                        "daemon: workflow {name} watches {} for `{}` (debounce {:?}, max_batch {}{})",
                        trigger.path.display(),
                        trigger.pattern,
                        trigger.debounce,
                        trigger.max_batch,
                        trigger
                            .poll
                            .map(|p| format!(", polling every {p:?}"))
                            .unwrap_or_default()
                    );
                    self.file_watchers.insert(name, (trigger, w));
                }
                Err(e) => tracing::warn!("daemon: workflow {name}: {e}"),
            }
        }
    }

    /// Files that arrived while the daemon was down (matching, never handled): one run.
    pub(crate) fn files_at_start(&mut self) {
        let triggers: Vec<(String, FileTrigger)> = self
            .entries
            .iter()
            .filter_map(|(n, e)| e.wf.on_files.clone().map(|f| (n.clone(), f)))
            .collect();
        for (name, trigger) in triggers {
            let mut stack = vec![trigger.path.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        self.file_event(&name, p);
                    }
                }
            }
            if let Some(p) = self.pending.get_mut(&name) {
                p.deadline = tokio::time::Instant::now();
                tracing::info!(
                    "daemon: workflow {name}: {} file(s) arrived while the daemon was stopped",
                    p.files.len()
                );
            }
        }
    }

    /// A file changed in a file-triggered workflow's directory: new or changed matching
    /// files wait for the directory to be quiet for `debounce`, or for `max_batch`.
    pub(crate) fn file_event(&mut self, name: &str, path: PathBuf) {
        let Some(trigger) = self.entries.get(name).and_then(|e| e.wf.on_files.clone()) else {
            return;
        };
        // One spelling per file (`wf/../in/x.csv` is `in/x.csv`).
        let path = orchestrator_engine::arrival::normalize(&path);
        if !trigger.matches(&path) {
            return;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let key = path.display().to_string();
        match self.store.file_record(name, &key) {
            Ok(Some(r)) if r.size == meta.len() && r.modified_ns == modified => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("daemon: workflow {name}: cannot read file records: {e}");
                return;
            }
        }
        let now = tokio::time::Instant::now();
        let p = self
            .pending
            .entry(name.to_string())
            .or_insert_with(|| Pending {
                files: BTreeMap::new(),
                deadline: now,
            });
        p.files.insert(path, (meta.len(), modified));
        p.deadline = now + trigger.debounce;
        if p.files.len() >= trigger.max_batch {
            p.deadline = now;
        }
    }

    /// Starts a run for each workflow whose arrived files are due, unless it is busy (then
    /// they wait for its run to end).
    pub(crate) fn flush_files(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(n, p)| p.deadline <= now && !self.active.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(p) = self.pending.remove(&name) else {
                continue;
            };
            let max = self
                .entries
                .get(&name)
                .and_then(|e| e.wf.on_files.as_ref())
                .map_or(usize::MAX, |f| f.max_batch);
            // A file deleted (or renamed away) before its run starts is not handed to
            // the run: it would list a path that does not exist.
            let (present, gone): (Vec<_>, Vec<_>) =
                p.files.into_iter().partition(|(f, _)| f.is_file());
            for (f, _) in &gone {
                tracing::info!(
                    "daemon: workflow {name}: {} is gone before its run started; not passed to the run",
                    f.display()
                );
            }
            if present.is_empty() {
                continue;
            }
            let mut files: Vec<(PathBuf, u64, i64)> =
                present.into_iter().map(|(f, (s, m))| (f, s, m)).collect();
            if files.len() > max {
                // The rest go in the next run.
                let rest = files.split_off(max);
                self.pending.insert(
                    name.clone(),
                    Pending {
                        files: rest.into_iter().map(|(f, s, m)| (f, (s, m))).collect(),
                        deadline: now,
                    },
                );
            }
            let n = files.len();
            // `start` logs why a run could not start.
            let _ = self.start(
                &name,
                Due {
                    at: Utc::now(),
                    trigger: format!("files ({n} arrived)"),
                    files,
                    overrides: BTreeMap::new(),
                    date: None,
                },
            );
        }
    }
}
