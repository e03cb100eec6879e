//! What the state store needs from the disk before sled may write to it.
//!
//! **How a full disk used to destroy the store.** sled 0.34 writes a snapshot of its page
//! table when it opens a db (and every so many operations) as `snap.{lsn}.generating`,
//! then renames it to `snap.{lsn}`. Its reader picks the highest-sorting `snap.*` file and
//! does *not* skip `.generating` ones. On a full disk the write stops part-way, the
//! unfinished file stays, and every later open reads it as the newest snapshot, fails its
//! CRC and reports "Read corrupted data" — forever, although the log and the previous
//! snapshot are intact. A read-only command was enough, because opening writes.
//!
//! So, before sled opens a db:
//! - [`remove_unfinished_snapshots`] deletes `.generating` files. They are never the only
//!   copy of anything: sled deletes older snapshots only after the rename, and the log
//!   holds every page, so sled rebuilds the snapshot from what remains.
//! - [`check_free_space`] refuses to write when the file system is nearly full, so sled is
//!   not the one to discover it.
//! - Commands that only read open a copy of the db in a temporary directory when the state
//!   dir is read-only or nearly full (see `Store::open_read_only`).

use std::io;
use std::path::{Path, PathBuf};

/// Free space below which the store refuses to write, in MiB. sled grows its log by
/// 512 KiB segments and rewrites its snapshot on open; tables and landed files usually
/// share the file system. Override with `ORCHESTRATOR_MIN_FREE_MB`.
pub const DEFAULT_MIN_FREE_MB: u64 = 32;

pub(crate) const MIB: u64 = 1024 * 1024;

/// The margin in force: `ORCHESTRATOR_MIN_FREE_MB` if set to a number, else the default.
pub fn min_free_mb() -> u64 {
    std::env::var("ORCHESTRATOR_MIN_FREE_MB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MIN_FREE_MB)
}

/// Bytes available to this (unprivileged) process on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// `Err((free MiB, needed MiB))` when `dir`'s file system has less than the margin free
/// ([`min_free_mb`], read when called: a store reads it once, at open).
/// A file system that cannot be asked is assumed to have room: sled will say otherwise.
pub fn check_free_space(dir: &Path) -> Result<(), (u64, u64)> {
    check_free_space_of(dir, min_free_mb()).map(drop)
}

/// [`check_free_space`] with the margin given: `need` MiB. `Ok` holds the free bytes,
/// or `None` when the file system cannot be asked.
pub fn check_free_space_of(dir: &Path, need: u64) -> Result<Option<u64>, (u64, u64)> {
    match free_bytes(dir) {
        Ok(free) if free < need.saturating_mul(MIB) => Err((free / MIB, need)),
        Ok(free) => Ok(Some(free)),
        Err(_) => Ok(None),
    }
}

/// Deletes sled's unfinished snapshot files in `db_dir` (see the module docs) and returns
/// their paths.
pub fn remove_unfinished_snapshots(db_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(db_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if is_unfinished_snapshot(&path) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// `snap.*.generating` (and sled's `.in___motion` temporaries): never a finished snapshot.
pub fn is_unfinished_snapshot(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.starts_with("snap.") && (n.ends_with(".generating") || n.ends_with(".in___motion"))
    })
}

/// Copies sled's files from `from` to `to` (created), leaving out unfinished snapshots.
pub fn copy_db(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_db(&path, &target)?;
        } else if !is_unfinished_snapshot(&path) {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

/// Whether this process may create files in `dir`.
pub fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}
