//! `kind: expire_files` — a landing zone's lifecycle rule: deletes the files under a
//! directory that were last written more than `older_than` ago, and the partition
//! directories that leaves empty. What an S3 lifecycle expiration does for a bucket
//! prefix, as a step of the workflow, so a landing zone that gains files every minute
//! (the intraday ticks) stays bounded and so does every crawl of it.
//!
//! Hidden and `_`-prefixed entries are never touched (crawls skip them too; a replay's
//! cursor lives there). The directory itself is kept. Refuses a directory that holds, is
//! inside, or is around the warehouse, a managed table's files or a state directory:
//! those are not landed files (a table's go by `DROP TABLE` and `tables vacuum`).
//!
//! A crawl after an expiry drops the deleted files from its table and subtracts their
//! rows, reading none of the files that are left.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use orchestrator_engine::lineage::{Dataset, Datasets, Place};
use orchestrator_engine::task::{
    BuildContext, Dur, Invalid, Outputs, Task, TaskConfig, TaskContext, TaskFailure,
};
use serde::Deserialize;
use serde_json::json;

/// Below this, a file the same run landed could go before the run's later steps read it.
const MINIMUM: Duration = Duration::from_secs(60);

/// Deletes the files under `path` last modified more than `older_than` ago.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireFilesConfig {
    /// The directory (a landing zone); relative to the workflow file's directory.
    path: PathBuf,
    /// Files last modified longer ago than this are deleted, e.g. `1h`, `7d`. At least `1m`.
    older_than: Dur,
    /// List what would be deleted, delete nothing.
    #[serde(default)]
    dry_run: bool,
}

impl TaskConfig for ExpireFilesConfig {
    const KIND: &'static str = "expire_files";
    const OUTPUTS: &'static [(&'static str, &'static str)] = &[
        (
            "deleted_files",
            "files deleted (or, with dry_run, that would be)",
        ),
        ("deleted_bytes", "their size"),
        ("deleted_dirs", "directories left empty and removed"),
        ("kept_files", "files younger than older_than"),
    ];

    fn build(self, ctx: &BuildContext) -> Result<Arc<dyn Task>, Invalid> {
        if self.older_than.0 < MINIMUM {
            return Err(invalid!(
                "`older_than: {}` is under the minimum of 1m: files this run just landed could be deleted before its later steps read them",
                humantime::format_duration(self.older_than.0)
            ));
        }
        if let crate::aws::Target::Aws(_) = crate::aws::Target::of(ctx) {
            return Err(invalid!(
                "`expire_files` runs on the local backend only; on S3, give the prefix a lifecycle rule (an Expiration after N days) instead"
            ));
        }
        Ok(Arc::new(ExpireFiles {
            dir: ctx.resolve(self.path),
            older_than: self.older_than.0,
            dry_run: self.dry_run,
        }))
    }
}

#[derive(Debug)]
struct ExpireFiles {
    dir: PathBuf,
    older_than: Duration,
    dry_run: bool,
}

#[derive(Debug, Default, PartialEq)]
struct Swept {
    files: u64,
    bytes: u64,
    dirs: u64,
    kept: u64,
}

#[async_trait::async_trait]
impl Task for ExpireFiles {
    fn lineage(&self, _: Place<'_>, _: Option<&Outputs>) -> Datasets {
        Datasets {
            inputs: Vec::new(),
            outputs: vec![Dataset::file(&self.dir)],
        }
    }

    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let dir = std::fs::canonicalize(&self.dir).map_err(|e| {
            TaskFailure::new(format!(
                "cannot open {} ({e}): `path` must be an existing directory",
                self.dir.display()
            ))
        })?;
        if !dir.is_dir() {
            return Err(TaskFailure::new(format!(
                "{} is not a directory: `path` names the landing zone to expire",
                dir.display()
            )));
        }
        refuse_owned(&dir, ctx)?;
        let root = dir.clone();
        if let Some(state) = tokio::task::spawn_blocking(move || state_dir_in(&root))
            .await
            .map_err(|e| TaskFailure::new(format!("the expiry stopped: {e}")))?
        {
            return Err(TaskFailure::new(format!(
                "{} is an orchestrator state directory (it has LOCK and db/), and {} is or holds its own files: expire_files deletes landed files only; point `path` at the landing zone",
                state.display(),
                dir.display()
            )));
        }
        let cutoff = SystemTime::now()
            .checked_sub(self.older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (dir2, dry_run) = (dir.clone(), self.dry_run);
        let swept = tokio::task::spawn_blocking(move || {
            let mut swept = Swept::default();
            sweep(&dir2, cutoff, dry_run, true, &mut swept).map(|_| swept)
        })
        .await
        .map_err(|e| TaskFailure::new(format!("the expiry stopped: {e}")))?
        .map_err(|(path, e)| {
            TaskFailure::new(format!(
                "cannot expire {} ({e}); the files before it were deleted, the rest are kept: fix the permission and run again",
                path.display()
            ))
        })?;
        ctx.output.line(&format!(
            "{} {} files ({} bytes) last written over {} ago under {}; {} kept",
            if self.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            swept.files,
            swept.bytes,
            humantime::format_duration(self.older_than),
            dir.display(),
            swept.kept
        ));
        Ok(crate::aws::object(json!({
            "deleted_files": swept.files,
            "deleted_bytes": swept.bytes,
            "deleted_dirs": swept.dirs,
            "kept_files": swept.kept,
            "dry_run": self.dry_run,
        })))
    }
}

/// The warehouse and managed tables' files are not a landing zone.
fn refuse_owned(dir: &Path, ctx: &TaskContext) -> Result<(), TaskFailure> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let warehouse = canon(&ctx.warehouse);
    if warehouse.starts_with(dir) || dir.starts_with(&warehouse) {
        return Err(TaskFailure::new(format!(
            "{} holds the warehouse ({}): expire_files deletes landed files only; published tables keep their files until `tables vacuum`",
            dir.display(),
            warehouse.display()
        )));
    }
    let tables = ctx
        .catalog
        .tables()
        .map_err(|e| TaskFailure::new(format!("cannot read the catalog: {e}")))?;
    for t in tables.iter().filter(|t| t.managed) {
        let location = canon(Path::new(&t.location));
        if location.starts_with(dir) || dir.starts_with(&location) {
            return Err(TaskFailure::new(format!(
                "{} holds the files of table `{}`, which the warehouse owns: expire_files deletes landed files only",
                dir.display(),
                t.name
            )));
        }
    }
    Ok(())
}

/// A state directory (its lock file beside its sled db) whose own files `dir` would
/// reach: one at `dir` or below it, or one above it when `dir` is inside its db, its
/// recovery points or its warehouse. A landing zone elsewhere inside a state dir (the
/// bundled workflows' default, `.orchestrator/landing`) is allowed.
fn state_dir_in(dir: &Path) -> Option<PathBuf> {
    let is_state = |p: &Path| p.join("LOCK").is_file() && p.join("db").is_dir();
    for above in dir.ancestors().skip(1) {
        if !is_state(above) {
            continue;
        }
        let first = dir
            .strip_prefix(above)
            .ok()
            .and_then(|rel| rel.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        // `db-…`: a db a rebuild set aside.
        if first.starts_with("db") || first == "recovery" || first == "warehouse" {
            return Some(above.to_path_buf());
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if is_state(&d) {
            return Some(d);
        }
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    None
}

/// Deletes old files under `dir`, then `dir` itself if it became empty (never the root).
/// Returns whether `dir` is gone.
fn sweep(
    dir: &Path,
    cutoff: SystemTime,
    dry_run: bool,
    root: bool,
    swept: &mut Swept,
) -> Result<bool, (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let mut left = 0u64;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let hidden = entry
            .file_name()
            .to_str()
            .is_none_or(|n| n.starts_with('.') || n.starts_with('_'));
        // Not followed: a link is not the landing zone's to delete through.
        let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
        if hidden || kind.is_symlink() {
            left += 1;
            continue;
        }
        if kind.is_dir() {
            if !sweep(&path, cutoff, dry_run, false, swept)? {
                left += 1;
            }
            continue;
        }
        let meta = entry.metadata().map_err(|e| (path.clone(), e))?;
        let old = meta.modified().map(|m| m < cutoff).unwrap_or(false);
        if !old {
            swept.kept += 1;
            left += 1;
            continue;
        }
        if !dry_run {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Deleted meanwhile (another expiry): what we wanted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err((path, e)),
            }
        }
        swept.files += 1;
        swept.bytes += meta.len();
    }
    if root || left > 0 || dry_run {
        return Ok(false);
    }
    // A file landed meanwhile makes this fail: then the directory stays, as it should.
    match std::fs::remove_dir(dir) {
        Ok(()) => {
            swept.dirs += 1;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, ago: Duration) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn deletes_old_files_and_the_directories_they_leave_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (rel, ago) in [
            ("run=a/NVDA.csv", 7200),
            ("run=a/AMD.csv", 7200),
            ("run=b/NVDA.csv", 7200),
            ("run=b/AMD.csv", 10),
            ("run=c/NVDA.csv", 10),
            ("_replay/NVDA", 7200),
            (".hidden", 7200),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "symbol\nNVDA\n").unwrap();
            age(&p, Duration::from_secs(ago));
        }
        let cutoff = SystemTime::now() - Duration::from_secs(3600);

        let mut dry = Swept::default();
        assert!(!sweep(root, cutoff, true, true, &mut dry).unwrap());
        assert_eq!((dry.files, dry.dirs, dry.kept), (3, 0, 2));
        assert!(
            root.join("run=a/NVDA.csv").exists(),
            "a dry run deletes nothing"
        );

        let mut swept = Swept::default();
        sweep(root, cutoff, false, true, &mut swept).unwrap();
        assert_eq!(
            swept,
            Swept {
                files: 3,
                bytes: 3 * 12,
                dirs: 1,
                kept: 2
            }
        );
        assert!(!root.join("run=a").exists(), "an emptied partition goes");
        assert!(!root.join("run=b/NVDA.csv").exists());
        assert!(root.join("run=b/AMD.csv").exists(), "a young file stays");
        assert!(root.join("run=c/NVDA.csv").exists());
        assert!(
            root.join("_replay/NVDA").exists(),
            "`_` entries are not data"
        );
        assert!(root.join(".hidden").exists());
        assert!(root.exists(), "the directory itself stays");
    }
}
