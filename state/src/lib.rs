//! Durable run state for orchestrator.
//!
//! **API boundary:** this is the only crate that knows sled. Everything above it sees
//! [`Store`], the record types in [`records`] and [`StateError`].
//!
//! Layout: one sled tree of records, keys prefixed by record type (and a `journal` tree
//! holding at most the commit in progress). Every group of transitions the
//! engine makes is one [`Store::commit`]: atomic through a journal entry of our own (see
//! [`journal`]) and made durable with one flush, one disk write, which concurrent commits
//! share (see [`group`]):
//!
//! | key                                   | value            |
//! |---------------------------------------|------------------|
//! | `meta\0schema`                        | schema version   |
//! | `r\0{run}`                            | [`RunRecord`] (its `definition` as a hash: see [`SCHEMA_VERSION`]) |
//! | `d\0{sha256 hex}`                     | a workflow file's text, once per distinct text |
//! | `j\0{workflow}\0{started_at}\0{run}`  | empty: the run index, one workflow's runs together, oldest first (see below) |
//! | `x\0{run}`                            | empty: the run is running, or interrupted and not resumed (what an open looks at) |
//! | `t\0{run}\0{task}`                    | [`TaskRecord`]   |
//! | `a\0{run}\0{task}\0{attempt:010}`     | [`AttemptRecord`] |
//! | `z\0{run}`                            | a finished run's tasks and attempts together ([`SealedRun`]): see below |
//! | `c\0{table}`                          | [`TableRecord`] (the catalog) |
//! | `w\0{workflow}`                       | [`ScheduleRecord`] (the daemon's last fire) |
//! | `f\0{workflow}\0{path}`               | [`FileRecord`] (a file that started a run) |
//!
//! **Sealed runs.** The commit that finishes a run (succeeded, failed, cancelled, skipped)
//! also moves its task and attempt records into one value, `z\0{run}`, deleting theirs.
//! A store's size and the time sled takes to open it grow with its number of pages (a
//! leaf holds at most 16 keys), and a finished daily run had 16 keys: sealed, it has 4,
//! and its one value compresses far better than 14 small ones. Readers overlay records
//! still live (a rerun writes them) on the sealed ones; the next finish seals them all.
//!
//! **One run index.** Runs are listed from `j\0`: a workflow's page reads its own part,
//! the page of all runs merges every workflow's part by start time ([`Merged`]). Stores
//! before v6 also kept a global index, `i\0{started_at}\0{run}`; it doubled the keys a
//! finished run leaves (and so the pages sled loads at every open) to save a merge of a
//! few iterators. A writable open drops it ([`Store::reindex`]); a read-only view of an
//! older store still lists through it.
//!
//! Values are JSON wrapped in `{"v": N, ...}` so a newer binary can read an older store;
//! fields added later carry `#[serde(default)]`. They are stored compressed against a
//! dictionary of typical records (see [`codec`]).
//!
//! **Invariant:** one process at a time owns a state directory (an OS file lock on
//! `LOCK`, which also records the owner's pid). So when [`Store::open`] succeeds, any run
//! still marked `running` belongs to a process that is gone, and is marked `interrupted`.
//!
//! **Invariant:** sled never discovers a full disk for us, and a damaged store is never
//! silently replaced by an empty one. See [`disk`] for the full-disk mechanism and
//! [`recovery`] for the recovery points `state recover` rebuilds from.

pub mod check;
mod codec;
pub mod disk;
pub mod group;
pub mod journal;
pub mod records;
pub mod recovery;
pub mod replica;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use disk::MIB;
use journal::Op;
pub use records::{
    AttemptRecord, BackfillDate, BackfillRecord, BackfillStatus, ColumnRecord, DeliveryStatus,
    FileRecord, OutboxRecord, RunRecord, RunStatus, ScheduleRecord, SentRecord, TableRecord,
    TaskRecord, TaskStatus, UndonePublish, UsageRecord,
};

/// Version of the persisted record format. Bump when a record changes shape in a way
/// `#[serde(default)]` cannot absorb, and teach [`decode`] to read the older one.
///
/// v2: runs may be `skipped`, and carry `trigger` and `note`; schedule records. A v1 store
/// is read as it is and marked v2 when opened for writing, so an older binary then
/// refuses it instead of misreading it.
///
/// v3: an index of active runs (`x\0`); a run record's `definition` names its workflow text by content hash
/// (`\0sha256:HEX`); the text is stored once, under `d\0HEX`. Opening a v2 store for
/// writing marks it v3 and rewrites its runs that way (see [`Store::migrate_definitions`]);
/// records still holding their text read as before.
///
/// v4: values may be compressed (see [`codec`]). Values written before read as they are;
/// opening a v3 store for writing marks it v4, so an older binary then refuses it
/// (`TooNew`) instead of reporting compressed records as corrupt. `gc`, which compacts
/// the db, rewrites the older values compressed.
///
/// v5: finished runs' tasks and attempts are sealed into one value (`z\0`). Records of
/// runs finished before stay as they are (readers take both); opening a v4 store for
/// writing marks it v5, so an older binary then refuses it instead of showing sealed
/// runs without their tasks.
///
/// v6: no global run index (`i\0`): every run is listed through `j\0`. Opening a v5
/// store for writing drops it (see [`Store::reindex`]), so an older binary, which lists
/// all runs through it, then refuses the store instead of showing none of its runs.
pub const SCHEMA_VERSION: u32 = 6;

/// How a stored run record's `definition` refers to its text under `d\0{hex}`. A NUL
/// cannot start a workflow file's text (YAML refuses it), so nothing real looks like it.
const DEF_REF: &str = "\0sha256:";

/// Present while runs of an older store still hold their definition's text: the
/// migration runs (again) at the next writable open. Written with the schema bump.
const MIGRATE_KEY: &[u8] = b"meta\0migrate-definitions";

/// Present once every run has its entry in the per-workflow index (`j\0`). A store
/// written by an earlier release has none until a writable open builds them
/// ([`Store::build_workflow_index`]); until then a workflow's runs are found by the
/// run index, as before.
const WORKFLOW_INDEX_KEY: &[u8] = b"meta\0workflow-index";

/// Present once the global run index (`i\0`) is gone and every listing reads `j\0`
/// (schema v6; see [`Store::reindex`]). Set in the same atomic batch that deletes it.
const ONE_INDEX_KEY: &[u8] = b"meta\0one-run-index";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state directory {dir} is in use by another orchestrator process ({holder}); \
         wait for it to finish, stop it, or pass a different --state-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error(
        "--state-dir {dir} is a file, not a directory; pass a directory (it is created if missing)"
    )]
    NotADirectory { dir: PathBuf },
    #[error("{}", disk_full(dir, *free_mb, *need_mb))]
    DiskFull {
        dir: PathBuf,
        free_mb: u64,
        need_mb: u64,
    },
    #[error(
        "state store {dir} is damaged ({detail}); run `orchestrator state check` to see what is wrong, then `orchestrator state recover` to rebuild it from the last recovery point and the warehouse"
    )]
    Damaged { dir: PathBuf, detail: String },
    #[error("state store {dir} is open read-only ({why}); nothing can be written")]
    ReadOnly { dir: PathBuf, why: String },
    #[error("cannot open state directory {dir}: {source}; check that it is writable or pass a different --state-dir")]
    Open {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store {dir}: cannot write or read its files: {source}; check the disk and the directory's permissions, then retry")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store {dir}: {source}")]
    Db {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "state store {dir} was written by a newer orchestrator (record schema v{found}, this binary reads up to v{SCHEMA_VERSION}); upgrade orchestrator"
    )]
    TooNew { dir: PathBuf, found: u32 },
    #[error(
        "state store {dir}: record {key} is unreadable ({reason}); run `orchestrator state check` to see what else is wrong, then `orchestrator state recover` to rebuild the store"
    )]
    Corrupt {
        dir: PathBuf,
        key: String,
        reason: String,
    },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

fn disk_full(dir: &Path, free_mb: u64, need_mb: u64) -> String {
    let why = if free_mb < need_mb {
        format!("has {free_mb} MB free; orchestrator needs at least {need_mb} MB to write safely")
    } else {
        // ORCHESTRATOR_MIN_FREE_MB=0, or space came back since: the file system said no.
        "is on a full file system (a write failed with \"no space left on device\")".to_string()
    };
    format!(
        "state dir {} {why}; free space and retry (commands that only read, such as `runs` and `show`, still work; ORCHESTRATOR_MIN_FREE_MB sets the margin)",
        dir.display()
    )
}

/// One write in a group commit.
#[derive(Debug, Clone)]
pub enum Write {
    Run(RunRecord),
    Task(TaskRecord),
    Attempt(AttemptRecord),
    Table(TableRecord),
    DropTable(String),
    Schedule(ScheduleRecord),
    File(FileRecord),
    Usage(UsageRecord),
    Backfill(BackfillRecord),
    Sent(SentRecord),
    /// A notification; a pending one is also indexed under `p\0` for the deliverer.
    Outbox(OutboxRecord),
}

/// The state store of one state directory.
pub struct Store {
    core: Arc<Core>,
    // Held for the lifetime of the store; the OS releases the lock if the process dies.
    _lock: Option<File>,
    // The temporary copy of the db a read-only store reads, deleted on drop.
    _copy: Option<tempfile::TempDir>,
}

/// What the store shares with its committer thread (see [`group`]): everything but the
/// directory lock. [`Store`] derefs to it; nothing outside this crate uses it.
#[doc(hidden)]
pub struct Core {
    dir: PathBuf,
    db: sled::Db,
    /// The journal entry of the commit in progress, in a tree of its own (see [`journal`]).
    journal: sled::Tree,
    /// Why this store cannot be written to, if it cannot (see [`Store::open_read_only`]).
    read_only: Option<String>,
    /// Serializes commits (write) against each other and against each single read (read),
    /// so the journal's pieces are atomic to readers too (see [`journal`]).
    turn: RwLock<()>,
    /// A journal piece failed midway; the next commit completes it first.
    torn: AtomicBool,
    /// Why the last commit failed, until one succeeds (see [`Store::write_failure`]).
    failure: Mutex<Option<String>>,
    /// Commits made through this handle (see [`Store::commit_count`]).
    commits: std::sync::atomic::AtomicU64,
    /// Runs awaiting a resume, found by the scan `open` makes anyway (see
    /// [`Store::runs_awaiting_resume`]).
    awaiting: Mutex<Vec<String>>,
    /// When the file system's free space was last asked, and what it was (see
    /// [`Core::check_space`]).
    space: Mutex<Option<(std::time::Instant, u64)>>,
    /// Commits kept for replication, and where they were shipped (see [`replica`]).
    changes: sled::Tree,
    /// The next commit's sequence number, when logging changes.
    next_seq: std::sync::atomic::AtomicU64,
    /// The `changes` tree may hold entries or a marker.
    logged: AtomicBool,
    /// Commits waiting to share a durable write (see [`group`]).
    group: Arc<group::Group>,
    /// Durable writes (batches of commits) made through this handle.
    batches: std::sync::atomic::AtomicU64,
    /// Workflow texts read by their hash (see [`DEF_REF`]): a history of runs shares a
    /// handful of definitions.
    definitions: Mutex<std::collections::HashMap<String, String>>,
    /// The last sealed run read, by its stored bytes: a run's readers ask for it more than
    /// once (its tasks, its attempts, a rerun's lookups of one attempt), and each decode
    /// costs O(tasks).
    sealed: Mutex<Option<(sled::IVec, Arc<SealedRun>)>>,
    /// The free space every batch needs, in MiB: `ORCHESTRATOR_MIN_FREE_MB` as it was at
    /// open (a process's environment does not change under it; tests set this instead of
    /// the environment, which every thread of a test process shares).
    min_free_mb: std::sync::atomic::AtomicU64,
}

impl Core {
    /// Writes one batch of commits (see [`group`]): `units` are the ranges of `ops` that
    /// belong to one commit each, kept whole within a journal piece.
    pub(crate) fn write_ops(&self, ops: &[Op], units: &[std::ops::Range<usize>]) -> Result<()> {
        let _turn = self.write_turn();
        self.check_space()?;
        self.log_change(ops)?;
        self.write_pieces(journal::pack(ops, units).into_iter())?;
        // sled's blob files (anything logged in one piece over 128 KiB) are made durable
        // by the patched sled as it writes them, before the log points at them (see its
        // ORCHESTRATOR.md), so this flush is all a commit needs.
        self.flush()
    }

    /// Refuses a batch when the file system holding the store has less free space than
    /// the margin: checked before batches, not only at open, so that a disk that fills
    /// while a daemon runs is refused here, before sled meets ENOSPC (after which sled
    /// fails every write until the process restarts).
    ///
    /// Asking costs a `statfs`, ~1 % of a chain's CPU when asked per commit; so a batch
    /// asks again only when the last answer is older than [`SPACE_FRESH`] or was within
    /// [`SPACE_HEADROOM`] of the margin. Nothing can eat that headroom within that time
    /// but a writer of over 2.5 GB/s.
    fn check_space(&self) -> Result<()> {
        let need = self.min_free_mb.load(std::sync::atomic::Ordering::Relaxed);
        let mut space = self.space.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if let Some((at, free)) = *space {
            if now.duration_since(at) < SPACE_FRESH
                && free >= need.saturating_mul(MIB).saturating_add(SPACE_HEADROOM)
            {
                return Ok(());
            }
        }
        match disk::check_free_space_of(&self.dir, need) {
            Ok(free) => {
                // A file system that cannot be asked is assumed to have room (sled will
                // say otherwise), and is asked again next time.
                *space = free.map(|free| (now, free));
                Ok(())
            }
            Err((free_mb, need_mb)) => {
                *space = None;
                Err(StateError::DiskFull {
                    dir: self.dir.clone(),
                    free_mb,
                    need_mb,
                })
            }
        }
    }

    /// Holds off commits for the length of one read, so it sees none half done.
    fn read_turn(&self) -> RwLockReadGuard<'_, ()> {
        self.turn.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds off every other commit and read while a commit writes its pieces.
    fn write_turn(&self) -> RwLockWriteGuard<'_, ()> {
        self.turn.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.db_err(e))
    }

    fn db_err(&self, source: sled::Error) -> StateError {
        sled_err(&self.dir, source)
    }
}

impl std::ops::Deref for Store {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.core.group.close();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// What `open` needs to do before sled may touch a state dir.
fn prepare_dir(dir: &Path, create: bool) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StateError::NotADirectory {
            dir: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Open {
                dir: dir.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(StateError::Open {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

/// Takes the directory's `LOCK` and writes `pid N: owner` into it. With `writable`
/// false the lock file is opened read-only, and a missing one (a read-only dir where no
/// orchestrator ever ran) is no lock at all.
fn take_lock(dir: &Path, owner: &str, writable: bool) -> Result<Option<File>> {
    let open_err = |source| StateError::Open {
        dir: dir.to_path_buf(),
        source,
    };
    let path = dir.join("LOCK");
    let file = if writable {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    } else {
        OpenOptions::new().read(true).open(&path)
    };
    let mut lock = match file {
        Ok(f) => f,
        Err(e) if !writable && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_err(e)),
    };
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim().replace('\n', ", ");
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown process".into()
                } else {
                    holder
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
    }
    if writable {
        let pid = std::process::id();
        lock.set_len(0)
            .and_then(|_| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(lock, "pid {pid}: {owner}"))
            .map_err(open_err)?;
    }
    Ok(Some(lock))
}

/// Maps sled's errors to ours: corruption and a full disk get messages that say what to do.
fn sled_err(dir: &Path, source: sled::Error) -> StateError {
    match source {
        sled::Error::Corruption { .. } => StateError::Damaged {
            dir: dir.to_path_buf(),
            detail: "sled found corrupted data".into(),
        },
        sled::Error::Io(ref e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
            StateError::DiskFull {
                dir: dir.to_path_buf(),
                free_mb: disk::free_bytes(dir).unwrap_or(0) / (1024 * 1024),
                need_mb: disk::min_free_mb(),
            }
        }
        // sled shows an I/O error with Rust's debug text (`Os { code: 28, ... }`).
        sled::Error::Io(source) => StateError::Io {
            dir: dir.to_path_buf(),
            source,
        },
        source => StateError::Db {
            dir: dir.to_path_buf(),
            source,
        },
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` for reading and writing, taking the
    /// directory lock.
    ///
    /// `owner` is a short description of this process (e.g. the command line) written
    /// into the lock file so a second process can say who holds it.
    /// Returns the store and the ids of runs that were marked `interrupted`.
    pub fn open(dir: &Path, owner: &str) -> Result<(Store, Vec<String>)> {
        prepare_dir(dir, true)?;
        let lock = take_lock(dir, owner, true)?;
        if let Err((free_mb, need_mb)) = disk::check_free_space(dir) {
            return Err(StateError::DiskFull {
                dir: dir.to_path_buf(),
                free_mb,
                need_mb,
            });
        }
        if !dir.join("db").exists() {
            // Refuse before sled creates an empty db (see `check_schema`).
            refuse_if_it_held_runs(dir)?;
        }
        let db = open_sled(dir, &dir.join("db"))?;
        let store = Store::writable(dir, db, lock)?;
        // A store from a newer binary is refused before its journal is read.
        store.check_schema()?;
        store.replay_journal()?;
        store.settle_changes()?;
        store.migrate_definitions()?;
        store.reindex()?;
        let recovered = store.recover_interrupted()?;
        Ok((store, recovered))
    }

    /// Opens the store in `dir` for commands that only read. When the directory can be
    /// written and has room, this is [`Store::open`]. Otherwise (a read-only directory or
    /// file system, or a nearly full disk, where opening sled in place would write) it
    /// reads a copy of the db made in a temporary directory, and the store refuses
    /// writes; the returned note says so. A directory without a store reads as empty and
    /// is not created.
    pub fn open_read_only(dir: &Path, owner: &str) -> Result<(Store, Option<String>)> {
        prepare_dir(dir, false).or_else(|e| match e {
            StateError::Open { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            e => Err(e),
        })?;
        let db_dir = dir.join("db");
        if !db_dir.exists() {
            refuse_if_it_held_runs(dir)?;
            let db = sled::Config::new()
                .temporary(true)
                .open()
                .map_err(|e| sled_err(dir, e))?;
            let read_only = Some("no store exists yet".into());
            return Ok((Store::assemble(dir, db, read_only, None, None)?, None));
        }
        let why = if !disk::writable(dir) || !disk::writable(&db_dir) {
            Some("the state dir is not writable".to_string())
        } else {
            disk::check_free_space(dir).err().map(|(free, need)| {
                format!("the state dir has {free} MB free, less than the {need} MB needed to write")
            })
        };
        let Some(why) = why else {
            let (store, recovered) = Store::open(dir, owner)?;
            let note = (!recovered.is_empty()).then(|| {
                recovered
                    .iter()
                    .map(|id| interrupted_note(id))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            return Ok((store, note));
        };
        Store::open_copy(dir, owner, why)
    }

    /// Opens a copy of the store in `dir`, made in a temporary directory, that refuses
    /// writes: the state dir is not changed at all (`state check` uses this).
    pub fn open_copy(dir: &Path, owner: &str, why: String) -> Result<(Store, Option<String>)> {
        prepare_dir(dir, false)?;
        let lock = take_lock(dir, owner, false)?;
        let copy = tempfile::Builder::new()
            .prefix("orchestrator-state-")
            .tempdir()
            .map_err(|source| StateError::Open {
                dir: dir.to_path_buf(),
                source,
            })?;
        disk::copy_db(&dir.join("db"), &copy.path().join("db")).map_err(|source| {
            StateError::Open {
                dir: dir.to_path_buf(),
                source,
            }
        })?;
        let db = open_sled(dir, &copy.path().join("db"))?;
        let store = Store::assemble(dir, db, Some(why.clone()), lock, Some(copy))?;
        store.check_schema()?;
        // The copy is ours to write: complete an interrupted commit in it, so what is
        // read is what a writable open would see.
        store.replay_journal()?;
        store.settle_changes()?;
        Ok((
            store,
            Some(format!(
                "note: {why}; reading a copy of the state store (runs still marked running are not recovered)"
            )),
        ))
    }

    /// Replaces the store in `dir` with a new one holding `writes`: takes the lock, moves
    /// the old db aside to `db.damaged-{time}` (nothing is deleted), creates an empty db
    /// and commits the writes. Returns the store and where the old db went.
    pub fn rebuild(dir: &Path, owner: &str, writes: &[Write]) -> Result<(Store, Option<PathBuf>)> {
        Store::rebuild_as(dir, owner, writes, "db.damaged")
    }

    fn rebuild_as(
        dir: &Path,
        owner: &str,
        writes: &[Write],
        aside: &str,
    ) -> Result<(Store, Option<PathBuf>)> {
        prepare_dir(dir, true)?;
        let lock = take_lock(dir, owner, true)?;
        let db_dir = dir.join("db");
        let io = |source| StateError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        let moved = if db_dir.exists() {
            // Two rebuilds in the same second must not collide (rename would refuse
            // a non-empty target): a counter follows the time.
            let stamp = Utc::now().format("%Y%m%dT%H%M%S").to_string();
            let mut aside_dir = dir.join(format!("{aside}-{stamp}"));
            let mut n = 1;
            while aside_dir.exists() {
                n += 1;
                aside_dir = dir.join(format!("{aside}-{stamp}-{n}"));
            }
            let aside = aside_dir;
            std::fs::rename(&db_dir, &aside).map_err(io)?;
            Some(aside)
        } else {
            None
        };
        let db = open_sled(dir, &db_dir)?;
        let store = Store::writable(dir, db, lock)?;
        store
            .db
            .insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
            .map_err(|e| store.db_err(e))?;
        // The writes index every run they hold, in the one index.
        for key in [WORKFLOW_INDEX_KEY, ONE_INDEX_KEY] {
            store
                .db
                .insert(key, &b"1"[..])
                .map_err(|e| store.db_err(e))?;
        }
        store.commit(writes)?;
        Ok((store, moved))
    }

    /// Deletes runs with everything recorded under them (tasks, attempts, notifications,
    /// the index entry) and the given backfills, durably, each run atomically. Returns how
    /// many records were removed. Unknown ids are ignored.
    pub fn delete_runs(&self, runs: &[String], backfills: &[String]) -> Result<u64> {
        self.refuse_if_read_only()?;
        let mut removed = 0u64;
        let _turn = self.write_turn();
        let mut per_run = Vec::new();
        for id in runs {
            let key = run_key(id);
            let Some(value) = self.db.get(&key).map_err(|e| self.db_err(e))? else {
                continue;
            };
            let run: RunRecord = self.decode(&key, &value)?;
            let mut ops = vec![
                Op::Del(workflow_index_key(&run.workflow, &run.started_at, id)),
                Op::Del(active_key(id)),
                Op::Del(key),
            ];
            if self
                .db
                .contains_key(sealed_key(id))
                .map_err(|e| self.db_err(e))?
            {
                ops.push(Op::Del(sealed_key(id)));
            }
            for kind in ["t", "a", "o", "p"] {
                for item in self.db.scan_prefix(prefix(&[kind, id])) {
                    let (k, _) = item.map_err(|e| self.db_err(e))?;
                    ops.push(Op::Del(k.to_vec()));
                }
            }
            removed += ops.len() as u64 - 2; // The index entry and the active mark are not records.
            per_run.push(ops);
        }
        let ops: Vec<Op> = backfills
            .iter()
            .map(|id| Op::Del(backfill_key(id)))
            .collect();
        removed += ops.len() as u64;
        // Logged whole before any of it is written (see `replica`).
        self.log_change(&[per_run.concat(), ops.clone()].concat())?;
        for run_ops in &per_run {
            // One piece per run, whatever its size: a crash never leaves half a run.
            self.write_pieces(std::iter::once(&run_ops[..]))?;
        }
        self.write_pieces(journal::pieces(&ops))?;
        self.flush()?;
        Ok(removed)
    }

    fn refuse_if_read_only(&self) -> Result<()> {
        match &self.read_only {
            Some(why) => Err(StateError::ReadOnly {
                dir: self.dir.clone(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Rewrites the db with only its live records, so deleted records give their space
    /// back (sled reuses freed space but does not shrink its files). A recovery point of
    /// every record is written first; the old db is moved to `db.pre-compact-{time}` and
    /// deleted once the new one is complete, so a crash midway leaves either db, and
    /// `state recover` rebuilds from the recovery point. Needs the store's exclusive lock.
    pub fn compact(self, owner: &str) -> Result<Store> {
        self.refuse_if_read_only()?;
        let point = self.write_recovery_point()?;
        let dir = self.dir.clone();
        let export = recovery::read(&point).map_err(|why| StateError::Damaged {
            dir: dir.clone(),
            detail: format!("the recovery point just written cannot be read back: {why}"),
        })?;
        drop(self);
        let (store, aside) = Store::rebuild_as(&dir, owner, &export.writes(), "db.pre-compact")?;
        if let Some(old) = aside {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(store)
    }

    /// Bytes the db takes on disk (its directory, recursively).
    pub fn size_on_disk(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .map(|rd| rd.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        walk(&self.dir.join("db"))
    }

    fn writable(dir: &Path, db: sled::Db, lock: Option<File>) -> Result<Store> {
        Store::assemble(dir, db, None, lock, None)
    }

    fn assemble(
        dir: &Path,
        db: sled::Db,
        read_only: Option<String>,
        lock: Option<File>,
        copy: Option<tempfile::TempDir>,
    ) -> Result<Store> {
        let journal = db.open_tree(journal::TREE).map_err(|e| sled_err(dir, e))?;
        let changes = db.open_tree(replica::TREE).map_err(|e| sled_err(dir, e))?;
        let core = Core {
            dir: dir.to_path_buf(),
            db,
            journal,
            read_only,
            turn: RwLock::new(()),
            torn: AtomicBool::new(false),
            failure: Mutex::new(None),
            commits: std::sync::atomic::AtomicU64::new(0),
            awaiting: Mutex::new(Vec::new()),
            space: Mutex::new(None),
            changes,
            next_seq: std::sync::atomic::AtomicU64::new(1),
            logged: AtomicBool::new(false),
            group: Default::default(),
            batches: std::sync::atomic::AtomicU64::new(0),
            definitions: Mutex::new(Default::default()),
            sealed: Mutex::new(None),
            min_free_mb: std::sync::atomic::AtomicU64::new(disk::min_free_mb()),
        };
        Ok(Store {
            core: Arc::new(core),
            _lock: lock,
            _copy: copy,
        })
    }

    /// The part of the store its committer thread shares.
    fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why this store refuses writes, if it does.
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    fn check_schema(&self) -> Result<()> {
        const KEY: &[u8] = SCHEMA_KEY;
        match self.db.get(KEY).map_err(|e| self.db_err(e))? {
            Some(v) => {
                let found = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| self.corrupt(KEY, "schema version is not a number"))?;
                if found > SCHEMA_VERSION {
                    return Err(StateError::TooNew {
                        dir: self.dir.clone(),
                        found,
                    });
                }
                if found < SCHEMA_VERSION && self.read_only.is_none() {
                    if found < 3 {
                        self.db
                            .insert(MIGRATE_KEY, &b"1"[..])
                            .map_err(|e| self.db_err(e))?;
                    }
                    self.db
                        .insert(KEY, SCHEMA_VERSION.to_string().as_bytes())
                        .map_err(|e| self.db_err(e))?;
                    self.flush()?;
                }
            }
            None => {
                // A store without its schema key is new, unless recovery points say it
                // once held runs: then its db was lost or damaged, and writing a fresh
                // store over it would hide that.
                refuse_if_it_held_runs(&self.dir)?;
                if self.read_only.is_some() {
                    return Ok(());
                }
                self.db
                    .insert(KEY, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(|e| self.db_err(e))?;
                self.flush()?;
            }
        }
        Ok(())
    }

    fn corrupt(&self, key: &[u8], reason: impl Into<String>) -> StateError {
        StateError::Corrupt {
            dir: self.dir.clone(),
            key: String::from_utf8_lossy(key).replace('\0', "/"),
            reason: reason.into(),
        }
    }

    /// Marks runs left `running` by a dead process as `interrupted`, and their in-flight
    /// tasks and attempts as `failed` with error `interrupted`.
    fn recover_interrupted(&self) -> Result<Vec<String>> {
        let now = Utc::now();
        let mut recovered = Vec::new();
        let mut writes = Vec::new();
        let mut awaiting: Vec<(DateTime<Utc>, String)> = Vec::new();
        // Only the runs indexed as active: an open costs nothing per run of history.
        let mut active = Vec::new();
        for item in self.scan_raw(b"x\0") {
            let (key, _) = item?;
            let id = String::from_utf8_lossy(&key[2..]).into_owned();
            match self.run(&id)? {
                Some(run) => active.push(run),
                None => return Err(self.corrupt(&key, "active-run entry without a run record")),
            }
        }
        for run in active {
            if run.status == RunStatus::Interrupted && run.resume_pending {
                awaiting.push((run.started_at, run.id.clone()));
            }
            if run.status != RunStatus::Running {
                continue;
            }
            let why = format!(
                "interrupted: the orchestrator process (pid {}) stopped while this task was in flight",
                run.pid
            );
            for mut task in self.tasks(&run.id)? {
                if task.status != TaskStatus::Running {
                    continue;
                }
                if let Some(mut attempt) = self.attempts(&run.id, &task.task_id)?.pop() {
                    if attempt.status == TaskStatus::Running {
                        attempt.status = TaskStatus::Failed;
                        attempt.ended_at = Some(now);
                        attempt.error = Some(why.clone());
                        writes.push(Write::Attempt(attempt));
                    }
                }
                task.status = TaskStatus::Failed;
                task.ended_at = Some(now);
                task.error = Some(why.clone());
                writes.push(Write::Task(task));
            }
            let mut run = run;
            run.status = RunStatus::Interrupted;
            run.ended_at = Some(now);
            run.resume_pending = true;
            awaiting.push((run.started_at, run.id.clone()));
            recovered.push(run.id.clone());
            writes.push(Write::Run(run));
        }
        // A backfill left `running` lost its driver with its process, as its run did.
        for mut bf in self.backfills()? {
            if bf.status == BackfillStatus::Running {
                bf.status = BackfillStatus::Interrupted;
                bf.ended_at = Some(now);
                writes.push(Write::Backfill(bf));
            }
        }
        if !writes.is_empty() {
            self.commit(&writes)?;
        }
        awaiting.sort();
        *self.awaiting.lock().unwrap_or_else(PoisonError::into_inner) =
            awaiting.into_iter().map(|(_, id)| id).collect();
        Ok(recovered)
    }

    /// Writes every record and makes them durable before returning (one flush: a group
    /// commit, one disk write). Records of up to [`journal::PIECE_BYTES`] in all are
    /// written atomically; a larger commit (the first records of a 100,000-task run) is
    /// written in pieces, in order, each atomic. A crash midway through one leaves a
    /// prefix of its pieces; writers put the record that makes the others meaningful first
    /// (a run before its tasks).
    pub fn commit(&self, writes: &[Write]) -> Result<()> {
        self.refuse_if_read_only()?;
        self.core().commit_ops(self.ops_of(writes))
    }

    /// How many commits this store has made: a change means something may have changed.
    /// Live pages watch it instead of reading their view every 500 ms each.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many durable writes those commits took: fewer than commits when concurrent
    /// commits shared one (see [`group`]). `scripts/bench-throughput` reports both.
    pub fn batch_count(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Acquire)
    }

    /// [`Store::commit`] for async callers (the executor, the daemon, backfill): while the
    /// commit waits for a batch its worker thread runs other runs, whose commits then share
    /// the same durable write (see [`group`]). The records are encoded now; the future
    /// only waits.
    pub fn commit_async(&self, writes: &[Write]) -> group::Commit<'_> {
        let ops = self.refuse_if_read_only().map(|()| self.ops_of(writes));
        group::Commit::new(self, ops)
    }

    /// Why the last commit failed, or `None` if it succeeded. A long-running process
    /// (the daemon) asks after its runs end: a store that cannot record them is a reason
    /// to stop rather than go on as if it could.
    pub fn write_failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        let _turn = self.read_turn();
        self.db.get(key).map_err(|e| self.db_err(e))
    }

    /// The records under `prefix`, in key order; each step is one read (see
    /// [`Store::read_turn`]), as in sled, where a scan is not a snapshot either.
    fn scan_raw(&self, prefix: impl AsRef<[u8]>) -> Scan<'_> {
        Scan {
            store: self,
            iter: self.db.scan_prefix(prefix),
        }
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let key = run_key(id);
        match self.get(&key)? {
            Some(v) => Ok(Some(self.decode_run(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// A run record with its workflow text in place (see [`DEF_REF`]).
    fn decode_run(&self, key: &[u8], bytes: &[u8]) -> Result<RunRecord> {
        let mut run: RunRecord = self.decode(key, bytes)?;
        if let Some(hex) = run.definition.strip_prefix(DEF_REF) {
            run.definition = self.definition(key, hex)?;
        }
        Ok(run)
    }

    /// The workflow text stored under `hex` (read once per process).
    fn definition(&self, key: &[u8], hex: &str) -> Result<String> {
        let mut cache = self
            .definitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(text) = cache.get(hex) {
            return Ok(text.clone());
        }
        // Without the read turn (callers may hold it): a definition never changes, and
        // is written no later than the first run that names it.
        let Some(bytes) = self.db.get(def_key(hex)).map_err(|e| self.db_err(e))? else {
            return Err(self.corrupt(
                key,
                format!("its workflow definition (sha256 {hex}) is missing"),
            ));
        };
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| self.corrupt(&def_key(hex), "definition is not UTF-8"))?;
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(hex.to_string(), text.clone());
        Ok(text)
    }

    /// The key-level changes `writes` make, in order. A run's workflow text is written
    /// once per distinct text, before the first run that refers to it (see [`DEF_REF`]).
    fn ops_of(&self, writes: &[Write]) -> Vec<Op> {
        use std::borrow::Cow;
        let mut ops = Vec::with_capacity(writes.len() + 1);
        let stored: Vec<Cow<'_, Write>> = writes
            .iter()
            .map(|w| match w {
                Write::Run(r) if !r.definition.is_empty() && !r.definition.starts_with(DEF_REF) => {
                    let hex = sha256_hex(&r.definition);
                    let key = def_key(&hex);
                    // Known when this process read or wrote it; else ask the db (a commit
                    // of the same text in flight may write it twice: the same bytes).
                    let known = self
                        .definitions
                        .lock()
                        .map(|c| c.contains_key(&hex))
                        .unwrap_or(false)
                        || self.db.contains_key(&key).unwrap_or(false);
                    if !known {
                        // Before every run's op, so before the run that refers to it.
                        ops.push(Op::Put(key, r.definition.as_bytes().to_vec()));
                    }
                    let mut stored = r.clone();
                    stored.definition = format!("{DEF_REF}{hex}");
                    Cow::Owned(Write::Run(stored))
                }
                w => Cow::Borrowed(w),
            })
            .collect();
        // Runs whose index entries are already on disk (a run's later transitions): their
        // keys depend only on the start time and workflow, so they are not written again.
        let indexed: HashSet<&str> = stored
            .iter()
            .filter_map(|w| match w.as_ref() {
                Write::Run(r)
                    if self
                        .db
                        .contains_key(workflow_index_key(&r.workflow, &r.started_at, &r.id))
                        .unwrap_or(false) =>
                {
                    Some(r.id.as_str())
                }
                _ => None,
            })
            .collect();
        // Runs this commit finishes: their tasks and attempts go into one sealed value
        // (a run whose records cannot be read is left as it is: `check` reports it).
        let mut seals = Vec::new();
        let mut sealed: HashSet<&str> = HashSet::new();
        let mut of_run: std::collections::HashMap<&str, Vec<&Write>> = Default::default();
        for w in &stored {
            match w.as_ref() {
                Write::Task(t) => of_run.entry(t.run_id.as_str()).or_default().push(w),
                Write::Attempt(a) => of_run.entry(a.run_id.as_str()).or_default().push(w),
                _ => {}
            }
        }
        for w in &stored {
            if let Write::Run(r) = w.as_ref() {
                if is_finished(r) {
                    let writes = of_run.get(r.id.as_str()).map_or(&[][..], Vec::as_slice);
                    if let Some(run_ops) = self.seal_ops(&r.id, writes) {
                        seals.extend(run_ops);
                        sealed.insert(r.id.as_str());
                    }
                }
            }
        }
        let rest: Vec<&Write> = stored
            .iter()
            .map(AsRef::as_ref)
            .filter(|w| match w {
                Write::Task(t) => !sealed.contains(t.run_id.as_str()),
                Write::Attempt(a) => !sealed.contains(a.run_id.as_str()),
                _ => true,
            })
            .collect();
        ops_of(&rest, &indexed, &mut ops);
        ops.extend(seals);
        ops
    }

    /// The ops that seal run `id`: its sealed value (what was sealed before, the live
    /// records over it, this commit's `writes` over those) and the deletion of its live
    /// records. `None` if they cannot be read.
    fn seal_ops(&self, id: &str, writes: &[&Write]) -> Option<Vec<Op>> {
        use std::collections::BTreeMap;
        let before = self.sealed_run(id).ok()?;
        let mut tasks: BTreeMap<String, TaskRecord> = BTreeMap::new();
        let mut attempts: BTreeMap<(String, u32), AttemptRecord> = BTreeMap::new();
        if let Some(s) = &before {
            for t in &s.tasks {
                tasks.insert(t.task_id.clone(), t.clone());
            }
            for a in &s.attempts {
                attempts.insert((a.task_id.clone(), a.attempt), a.clone());
            }
        }
        let mut dels = Vec::new();
        // Attempts first: a live task's outputs may be stored in one (see `StoredTaskOut`),
        // read from here instead of reading and decoding it a second time.
        for item in self.scan_raw(prefix(&["a", id])) {
            let (k, v) = item.ok()?;
            let a: AttemptRecord = self.decode(&k, &v).ok()?;
            attempts.insert((a.task_id.clone(), a.attempt), a);
            dels.push(Op::Del(k.to_vec()));
        }
        for item in self.scan_raw(prefix(&["t", id])) {
            let (k, v) = item.ok()?;
            let stored: StoredTaskIn = self.decode(&k, &v).ok()?;
            let outputs_in = stored.outputs_in;
            let mut t = stored.into_task();
            if let Some(n) = outputs_in {
                t.outputs = attempts.get(&(t.task_id.clone(), n))?.outputs.clone();
            }
            tasks.insert(t.task_id.clone(), t);
            dels.push(Op::Del(k.to_vec()));
        }
        for w in writes {
            match w {
                Write::Task(t) if t.run_id == id => {
                    tasks.insert(t.task_id.clone(), t.clone());
                }
                Write::Attempt(a) if a.run_id == id => {
                    attempts.insert((a.task_id.clone(), a.attempt), a.clone());
                }
                _ => {}
            }
        }
        if tasks.is_empty() && attempts.is_empty() {
            return Some(Vec::new());
        }
        let value = SealedRun {
            tasks: tasks.into_values().collect(),
            attempts: attempts.into_values().collect(),
        };
        // The sealed value first: a reader between the two sees every record twice
        // (the live one wins), never none.
        let mut ops = vec![Op::Put(sealed_key(id), encode(&value))];
        ops.extend(dels);
        Some(ops)
    }

    /// Rewrites the runs of a store from before v3 so that each refers to its workflow
    /// text by hash, a few hundred runs per commit; then drops [`MIGRATE_KEY`]. A crash
    /// midway leaves the key, and the next open goes on (rewriting a run twice is
    /// harmless).
    fn migrate_definitions(&self) -> Result<()> {
        if self.read_only.is_some()
            || !self
                .db
                .contains_key(MIGRATE_KEY)
                .map_err(|e| self.db_err(e))?
        {
            return Ok(());
        }
        let mut batch = Vec::new();
        for item in self.scan_raw(b"r\0") {
            let (key, value) = item?;
            let run: RunRecord = self.decode(&key, &value)?;
            // Rewritten: runs holding their text, and active runs (whose index entry,
            // new in v3, the rewrite adds).
            if (!run.definition.is_empty() && !run.definition.starts_with(DEF_REF))
                || is_active(&run)
            {
                batch.push(Write::Run(self.decode_run(&key, &value)?));
            }
            if batch.len() == 256 {
                self.commit(&std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.commit(&batch)?;
        }
        self.db.remove(MIGRATE_KEY).map_err(|e| self.db_err(e))?;
        self.flush()
    }

    /// Brings a store's run index to v6, once, in one atomic batch (a crash midway leaves
    /// the store as it was): every run gets its entry in the per-workflow index (`j\0`,
    /// stores before it had none; [`WORKFLOW_INDEX_KEY`]) and the global index (`i\0`)
    /// is deleted ([`ONE_INDEX_KEY`]). Runs written since are indexed by their commits
    /// ([`ops_of`]).
    fn reindex(&self) -> Result<()> {
        if self.read_only.is_some() || self.has_one_index()? {
            return Ok(());
        }
        let build = !self.has_workflow_index()?;
        let mut batch = sled::Batch::default();
        for item in self.scan_raw(LEGACY_INDEX) {
            let (key, named) = item?;
            batch.remove(key.clone());
            if !build {
                continue;
            }
            let id = String::from_utf8_lossy(key.rsplit(|b| *b == 0).next().unwrap_or_default())
                .into_owned();
            let Some(run) = self.run(&id)? else {
                // `state check` reported it; the workflow index has nothing to point at.
                continue;
            };
            debug_assert!(named.is_empty() || named == run.workflow.as_bytes());
            batch.insert(
                workflow_index_key(&run.workflow, &run.started_at, &run.id),
                &[][..],
            );
        }
        batch.insert(WORKFLOW_INDEX_KEY, &b"1"[..]);
        batch.insert(ONE_INDEX_KEY, &b"1"[..]);
        let _turn = self.write_turn();
        self.db.apply_batch(batch).map_err(|e| self.db_err(e))?;
        self.flush()
    }

    fn has_workflow_index(&self) -> Result<bool> {
        self.db
            .contains_key(WORKFLOW_INDEX_KEY)
            .map_err(|e| self.db_err(e))
    }

    fn has_one_index(&self) -> Result<bool> {
        self.db
            .contains_key(ONE_INDEX_KEY)
            .map_err(|e| self.db_err(e))
    }

    /// The index a listing of `workflow`'s runs (all runs for `None`) reads.
    fn index_for(&self, workflow: Option<&str>) -> Result<Index> {
        Ok(match workflow {
            _ if self.has_one_index()? => match workflow {
                Some(w) => Index::Workflow(w.to_string()),
                None => Index::Merged,
            },
            // A read-only view of a store before v6 (writable opens reindex it).
            Some(w) if self.has_workflow_index()? => Index::Workflow(w.to_string()),
            _ => Index::Legacy,
        })
    }

    /// The names of the workflows with runs, from the index: one seek per workflow.
    fn indexed_workflows(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let end = b"j\x01".to_vec();
        let mut from = b"j\0".to_vec();
        loop {
            let next = {
                let _turn = self.read_turn();
                self.db.range(from.clone()..end.clone()).next()
            };
            let Some(item) = next else {
                return Ok(names);
            };
            let (key, _) = item.map_err(|e| self.db_err(e))?;
            let name = key[2..].split(|b| *b == 0).next().unwrap_or_default();
            // Just past every key of this workflow: its prefix with the final NUL made 1.
            from = prefix(&["j"]);
            from.extend_from_slice(name);
            from.push(1);
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }

    /// The entries of `index` strictly after `after` and before `before`, each bound a
    /// run's place in the index, (started_at, run id), or `None` for that end of the
    /// index; newest first when `newest_first`.
    fn index_entries(
        &self,
        index: &Index,
        after: Option<(&DateTime<Utc>, &str)>,
        before: Option<(&DateTime<Utc>, &str)>,
        newest_first: bool,
    ) -> Result<Entries<'_>> {
        let scan = |start: Vec<u8>, key: &dyn Fn(&DateTime<Utc>, &str) -> Vec<u8>| {
            let low = match after {
                Some((t, id)) => {
                    let mut k = key(t, id);
                    k.push(0); // just past its own entry
                    k
                }
                None => start.clone(),
            };
            let high = match before {
                Some((t, id)) => key(t, id),
                None => {
                    // Just past the index's last entry: its prefix with the final NUL made 1.
                    let mut end = start;
                    if let Some(last) = end.last_mut() {
                        *last = 1;
                    }
                    end
                }
            };
            let scan = Scan {
                store: self,
                iter: self.db.range(low..high),
            };
            let it: Entries<'_> = if newest_first {
                Box::new(scan.rev())
            } else {
                Box::new(scan)
            };
            it
        };
        Ok(match index {
            Index::Legacy => scan(LEGACY_INDEX.to_vec(), &legacy_index_key),
            Index::Workflow(w) => scan(prefix(&["j", w]), &|t, id| workflow_index_key(w, t, id)),
            Index::Merged => {
                let mut parts = Vec::new();
                for w in self.indexed_workflows()? {
                    let start = prefix(&["j", &w]);
                    parts.push(scan(start, &|t, id| workflow_index_key(&w, t, id)));
                }
                Box::new(Merged::new(parts, newest_first))
            }
        })
    }

    /// Runs, newest first, optionally of one workflow, at most `limit`.
    pub fn runs(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.runs_page(workflow, |_| true, 0, limit)
            .map(|(runs, _)| runs)
    }

    /// One page of the runs `keep` accepts, newest first: `offset` of them skipped, at most
    /// `limit` returned, and whether more match after them. Reads only as far back as the
    /// page needs.
    pub fn runs_page(
        &self,
        workflow: Option<&str>,
        keep: impl Fn(&RunRecord) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<RunRecord>, bool)> {
        let mut out = Vec::new();
        let mut skipped = 0;
        let index = self.index_for(workflow)?;
        for item in self.index_entries(&index, None, None, true)? {
            let (key, named) = item?;
            let Some(run) = self.indexed_run(&key, &named, workflow, &keep)? else {
                continue;
            };
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(run);
        }
        Ok((out, false))
    }

    /// One page of the runs `keep` accepts next to the run `from`, newest first, at most
    /// `limit`: the older ones (`older`, as a page's "next" link reads) or the newer ones.
    /// Returns them and whether more match beyond them. A page costs the same however deep
    /// in the history it is: the scan starts at `from`'s index entry. `None` if there is no
    /// run `from`.
    pub fn runs_from(
        &self,
        workflow: Option<&str>,
        keep: impl Fn(&RunRecord) -> bool,
        from: &str,
        older: bool,
        limit: usize,
    ) -> Result<Option<(Vec<RunRecord>, bool)>> {
        let Some(anchor) = self.run(from)? else {
            return Ok(None);
        };
        let index = self.index_for(workflow)?;
        // `from` may be another workflow's run: the page is still the runs before or after
        // its start.
        let at = (&anchor.started_at, anchor.id.as_str());
        let entries = if older {
            self.index_entries(&index, None, Some(at), true)?
        } else {
            self.index_entries(&index, Some(at), None, false)?
        };
        let mut out = Vec::new();
        let mut more = false;
        for item in entries {
            let (key, named) = item?;
            let Some(run) = self.indexed_run(&key, &named, workflow, &keep)? else {
                continue;
            };
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(run);
        }
        if !older {
            out.reverse();
        }
        Ok(Some((out, more)))
    }

    /// The run of index entry `key` (whose value `named` is its workflow's name), if it
    /// is of `workflow` and `keep` accepts it.
    fn indexed_run(
        &self,
        key: &[u8],
        named: &[u8],
        workflow: Option<&str>,
        keep: &impl Fn(&RunRecord) -> bool,
    ) -> Result<Option<RunRecord>> {
        // Index entries name their run's workflow (those written before that do not: their
        // run is read).
        if let Some(w) = workflow {
            if !named.is_empty() && named != w.as_bytes() {
                return Ok(None);
            }
        }
        let id = key
            .rsplit(|b| *b == 0)
            .next()
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .unwrap_or_default();
        let Some(run) = self.run(&id)? else {
            return Err(self.corrupt(key, "index entry without a run record"));
        };
        Ok((workflow.is_none_or(|w| w == run.workflow) && keep(&run)).then_some(run))
    }

    /// Runs a crash left `interrupted` that nothing had resumed when this store was
    /// opened (those this open marked, and those an earlier process marked), oldest first.
    pub fn runs_awaiting_resume(&self) -> Vec<String> {
        self.awaiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Task records of a run, in no particular order.
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>> {
        let mut by_id: std::collections::BTreeMap<String, TaskRecord> = self
            .sealed_run(run_id)?
            .map(|s| {
                s.tasks
                    .iter()
                    .map(|t| (t.task_id.clone(), t.clone()))
                    .collect()
            })
            .unwrap_or_default();
        // Live records (a rerun's) over sealed ones.
        for item in self.scan_raw(prefix(&["t", run_id])) {
            let (k, v) = item?;
            let t = self.decode_task(&k, &v, |key| self.attempt_bytes(key))?;
            by_id.insert(t.task_id.clone(), t);
        }
        Ok(by_id.into_values().collect())
    }

    /// Attempts of one task, oldest first.
    pub fn attempts(&self, run_id: &str, task_id: &str) -> Result<Vec<AttemptRecord>> {
        self.attempts_of(run_id, Some(task_id))
    }

    /// Every attempt of a run, by task id then number: what [`Store::attempts`] returns
    /// for each of its tasks, read at once. A run's report reads this: asking for each
    /// task's attempts in turn searched the sealed value once per task, quadratic in the
    /// run's size (5 s at the end of a 10,000-task run).
    pub fn run_attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        self.attempts_of(run_id, None)
    }

    /// A run's attempts (of one task, or all), by task id then number: the sealed ones
    /// with the live ones (a rerun's) over them.
    fn attempts_of(&self, run_id: &str, task_id: Option<&str>) -> Result<Vec<AttemptRecord>> {
        let wanted = |a: &AttemptRecord| task_id.is_none_or(|t| a.task_id == t);
        let mut by_key: std::collections::BTreeMap<(String, u32), AttemptRecord> = self
            .sealed_run(run_id)?
            .map(|s| {
                s.attempts
                    .iter()
                    .filter(|a| wanted(a))
                    .map(|a| ((a.task_id.clone(), a.attempt), a.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let live = match task_id {
            Some(t) => prefix(&["a", run_id, t]),
            None => prefix(&["a", run_id]),
        };
        for a in self.scan::<AttemptRecord>(live)? {
            by_key.insert((a.task_id.clone(), a.attempt), a);
        }
        Ok(by_key.into_values().collect())
    }

    /// An attempt's stored bytes, live or sealed (a live task may name a sealed attempt
    /// as holding its outputs), re-encoded for [`Store::decode_task`].
    fn attempt_bytes(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        if let Some(v) = self.get(key)? {
            return Ok(Some(v));
        }
        let mut parts = key.split(|b| *b == 0).skip(1);
        let (Some(run), Some(task), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(None);
        };
        let (run, task) = (String::from_utf8_lossy(run), String::from_utf8_lossy(task));
        let n: Option<u32> = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok());
        Ok(self.sealed_run(&run)?.and_then(|s| {
            s.attempts
                .iter()
                .find(|a| a.task_id == task && Some(a.attempt) == n)
                .map(|a| sled::IVec::from(encode(a)))
        }))
    }

    /// The sealed part of a run, if it has one.
    fn sealed_run(&self, run_id: &str) -> Result<Option<Arc<SealedRun>>> {
        let key = sealed_key(run_id);
        let Some(bytes) = self.get(&key)? else {
            return Ok(None);
        };
        let mut cache = self.sealed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, run)) = cache.as_ref() {
            if *cached == bytes {
                return Ok(Some(run.clone()));
            }
        }
        let run: Arc<SealedRun> = Arc::new(self.decode(&key, &bytes)?);
        *cache = Some((bytes, run.clone()));
        Ok(Some(run))
    }

    /// A catalog table by name.
    pub fn table(&self, name: &str) -> Result<Option<TableRecord>> {
        let key = table_key(name);
        match self.get(&key)? {
            Some(v) => Ok(Some(self.decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The daemon's record of a scheduled workflow.
    pub fn schedule_record(&self, workflow: &str) -> Result<Option<ScheduleRecord>> {
        let key = schedule_key(workflow);
        match self.get(&key)? {
            Some(v) => Ok(Some(self.decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The record of a file that started a run of `workflow`.
    pub fn file_record(&self, workflow: &str, path: &str) -> Result<Option<FileRecord>> {
        let key = file_key(workflow, path);
        match self.get(&key)? {
            Some(v) => Ok(Some(self.decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Calls counted against `counter` on `day` (UTC, `YYYY-MM-DD`).
    pub fn usage(&self, counter: &str, day: &str) -> Result<u64> {
        let key = prefix(&["u", counter, day]);
        match self.get(&key)? {
            Some(v) => Ok(self.decode::<UsageRecord>(&key, &v)?.calls),
            None => Ok(0),
        }
    }

    /// Adds `calls` to `counter` on `day`, atomically and durably; returns the new total.
    pub fn add_usage(&self, counter: &str, day: &str, calls: u64) -> Result<u64> {
        self.refuse_if_read_only()?;
        let key = prefix(&["u", counter, day]);
        let mut total = 0;
        // A commit's journal may hold this counter too; its replay must not undo this.
        let _turn = self.write_turn();
        self.db
            .update_and_fetch(&key, |old| {
                let before = old
                    .and_then(|v| codec::unpack(v).ok())
                    .and_then(|v| decode_json::<UsageRecord>(&v).ok())
                    .map_or(0, |(_, r)| r.calls);
                total = before.saturating_add(calls);
                Some(encode(&UsageRecord {
                    counter: counter.to_string(),
                    day: day.to_string(),
                    calls: total,
                }))
            })
            .map_err(|e| self.db_err(e))?;
        self.flush()?;
        Ok(total)
    }

    /// The run that already sent the message `key`, if one did.
    pub fn sent(&self, key: &str) -> Result<Option<SentRecord>> {
        let k = prefix(&["s", key]);
        match self.get(&k)? {
            Some(v) => Ok(Some(self.decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// The notifications of a run, in the order they were created.
    pub fn outbox(&self, run_id: &str) -> Result<Vec<OutboxRecord>> {
        let mut all: Vec<OutboxRecord> = self.scan(prefix(&["o", run_id]))?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// The latest `limit` notifications of every run, newest first.
    pub fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxRecord>> {
        let mut all: Vec<OutboxRecord> = self.scan(prefix(&["o"]))?;
        all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        all.truncate(limit);
        Ok(all)
    }

    /// The latest `limit` messages sent once (data alerts), newest first.
    pub fn sent_recent(&self, limit: usize) -> Result<Vec<SentRecord>> {
        let mut all: Vec<SentRecord> = self.scan(prefix(&["s"]))?;
        all.sort_by(|a, b| (b.at, &b.key).cmp(&(a.at, &a.key)));
        all.truncate(limit);
        Ok(all)
    }

    /// Every notification not delivered yet (an index: delivered ones cost nothing).
    pub fn outbox_pending(&self) -> Result<Vec<OutboxRecord>> {
        let mut out = Vec::new();
        for item in self.scan_raw(prefix(&["p"])) {
            let (_, key) = item?;
            if let Some(v) = self.get(&key)? {
                out.push(self.decode::<OutboxRecord>(&key, &v)?);
            }
        }
        Ok(out)
    }

    pub fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>> {
        let key = backfill_key(id);
        match self.get(&key)? {
            Some(v) => Ok(Some(self.decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every backfill, oldest first (ids sort by creation time).
    pub fn backfills(&self) -> Result<Vec<BackfillRecord>> {
        self.scan(prefix(&["b"]))
    }

    /// Every catalog table, by name.
    pub fn tables(&self) -> Result<Vec<TableRecord>> {
        self.scan(prefix(&["c"]))
    }

    fn scan<T: DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>> {
        self.scan_raw(prefix)
            .map(|item| {
                let (k, v) = item?;
                self.decode(&k, &v)
            })
            .collect()
    }

    /// A task record with its outputs, read from the attempt that holds them if it was
    /// stored without (see [`StoredTaskOut`]); `get` reads that attempt (callers already
    /// holding a read turn read the db directly).
    fn decode_task(
        &self,
        key: &[u8],
        bytes: &[u8],
        get: impl Fn(&[u8]) -> Result<Option<sled::IVec>>,
    ) -> Result<TaskRecord> {
        let stored: StoredTaskIn = self.decode(key, bytes)?;
        let outputs_in = stored.outputs_in;
        let mut task = stored.into_task();
        if let Some(n) = outputs_in {
            let at = attempt_key(&task.run_id, &task.task_id, n);
            let Some(value) = get(&at)? else {
                return Err(self.corrupt(
                    key,
                    format!("its outputs are stored in attempt {n}, which is missing"),
                ));
            };
            task.outputs = self.decode::<AttemptRecord>(&at, &value)?.outputs;
        }
        Ok(task)
    }

    fn decode<T: DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<T> {
        let json = codec::unpack(bytes).map_err(|e| self.corrupt(key, e))?;
        // The version first: a newer binary's record may not parse as this one's.
        if let Some(v) = version_of(&json) {
            if v > SCHEMA_VERSION {
                return Err(StateError::TooNew {
                    dir: self.dir.clone(),
                    found: v,
                });
            }
        }
        let (v, data) = decode_json::<T>(&json).map_err(|e| self.corrupt(key, e.to_string()))?;
        if v > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                dir: self.dir.clone(),
                found: v,
            });
        }
        Ok(data)
    }
}

/// The schema version at the start of a record as [`encode_json`] writes it, `{"v":N,` or
/// `{"v":N}`; `None` if it does not start so.
fn version_of(json: &[u8]) -> Option<u32> {
    let rest = json.strip_prefix(b"{\"v\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=9).contains(&digits) || !matches!(rest.get(digits), Some(b',' | b'}')) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// A record's schema version and body. The body is read straight from the JSON, whose
/// `v` the record's struct ignores as an unknown field: serde's `flatten` (what
/// [`Envelope`] needs) buffers every value before reading it, which made decoding 2-3x
/// slower and was most of the cost of sealing a 10,000-task run. JSON that does not start
/// with the version (none we write) is read through [`Envelope`].
fn decode_json<T: DeserializeOwned>(json: &[u8]) -> serde_json::Result<(u32, T)> {
    match version_of(json) {
        Some(v) => Ok((v, serde_json::from_slice(json)?)),
        None => serde_json::from_slice::<Envelope<T>>(json).map(|e| (e.v, e.data)),
    }
}

/// A task record as stored. Its outputs are those of its last succeeded attempt, often
/// large (a crawl's new partitions, a quality check's rules); when they are exactly those
/// of an attempt committed with it, they are stored once, in the attempt, and
/// `outputs_in` names it ([`Store::decode_task`] puts them back).
///
/// Written as [`StoredTaskOut`] and read as [`StoredTaskIn`]: TaskRecord's fields and
/// `outputs_in` side by side, without serde's slow `flatten` (see [`decode_json`]). Both
/// list TaskRecord's fields exhaustively, so a field added to it fails to compile here
/// until it is added to them.
#[derive(Serialize)]
struct StoredTaskOut<'a> {
    run_id: &'a str,
    task_id: &'a str,
    status: TaskStatus,
    attempts: u32,
    started_at: &'a Option<DateTime<Utc>>,
    ended_at: &'a Option<DateTime<Utc>>,
    error: &'a Option<String>,
    /// Always empty (`{}`): attempt `outputs_in` holds them.
    outputs: std::collections::BTreeMap<&'static str, ()>,
    outputs_in: u32,
}

impl<'a> StoredTaskOut<'a> {
    /// `task` without its outputs, which attempt `outputs_in` holds.
    fn new(task: &'a TaskRecord, outputs_in: u32) -> Self {
        let TaskRecord {
            run_id,
            task_id,
            status,
            attempts,
            started_at,
            ended_at,
            error,
            outputs: _,
        } = task;
        StoredTaskOut {
            run_id,
            task_id,
            status: *status,
            attempts: *attempts,
            started_at,
            ended_at,
            error,
            outputs: std::collections::BTreeMap::new(),
            outputs_in,
        }
    }
}

/// A task record as read back (see [`StoredTaskOut`]); plain task records read as this too.
#[derive(Deserialize)]
struct StoredTaskIn {
    run_id: String,
    task_id: String,
    status: TaskStatus,
    attempts: u32,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    outputs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    outputs_in: Option<u32>,
}

impl StoredTaskIn {
    fn into_task(self) -> TaskRecord {
        TaskRecord {
            run_id: self.run_id,
            task_id: self.task_id,
            status: self.status,
            attempts: self.attempts,
            started_at: self.started_at,
            ended_at: self.ended_at,
            error: self.error,
            outputs: self.outputs,
        }
    }
}

/// A finished run's tasks (with their outputs) and attempts, stored as one value under
/// `z\0{run}` (see the crate's docs).
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct SealedRun {
    pub(crate) tasks: Vec<TaskRecord>,
    pub(crate) attempts: Vec<AttemptRecord>,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    data: T,
}

/// A record as stored: its JSON, compressed (see [`codec`]).
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::pack(encode_json(value))
}

/// A record as JSON, as recovery points hold it: `{"v":N,` and the record's own fields,
/// what [`Envelope`] would write, without its `flatten` (see [`decode_json`]).
fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = format!("{{\"v\":{SCHEMA_VERSION}").into_bytes();
    // Serializing plain data structs to JSON cannot fail (no maps with non-string keys).
    let body = serde_json::to_vec(value).unwrap_or_default();
    match body.as_slice() {
        [b'{', b'}'] => out.push(b'}'),
        [b'{', fields @ ..] => {
            out.push(b',');
            out.extend_from_slice(fields);
        }
        // Not an object (no record is one): what `Envelope` would make of it.
        _ => {
            return serde_json::to_vec(&Envelope {
                v: SCHEMA_VERSION,
                data: value,
            })
            .unwrap_or_default()
        }
    }
    out
}

const SCHEMA_KEY: &[u8] = b"meta\0schema";

/// How long an answer about free space stands (see [`Core::check_space`]).
const SPACE_FRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// Free space beyond the margin for which an answer may stand that long.
const SPACE_HEADROOM: u64 = 256 * MIB;

/// An empty or missing db is a new store, unless recovery points say it once held runs:
/// then it was lost or damaged, and starting a fresh store over it would hide that.
fn refuse_if_it_held_runs(dir: &Path) -> Result<()> {
    match recovery::recovery_points(dir).first() {
        Some(point) => Err(StateError::Damaged {
            dir: dir.to_path_buf(),
            detail: format!(
                "its db is empty or missing, but recovery point {} shows it held runs; if you emptied it on purpose, also delete {}",
                point.display(),
                recovery::recovery_dir(dir).display()
            ),
        }),
        None => Ok(()),
    }
}

/// The line the CLI prints for a run found `running` with its process gone.
pub fn interrupted_note(id: &str) -> String {
    format!(
        "note: run {id} was interrupted (the process running it is gone); it is marked `interrupted`. Resume it with `orchestrator rerun {id}`"
    )
}

/// Dirs whose sled db this process has opened: only for those can sled's own file lock
/// be held by us (a previous `Store` whose I/O threads are finishing after drop).
fn opened_here() -> &'static Mutex<HashSet<PathBuf>> {
    static OPENED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// Opens sled on `db_dir` (of state dir `dir`), first removing unfinished snapshots
/// (see [`disk`]).
///
/// We hold the directory's `LOCK`, so no other orchestrator should have this db open. If
/// sled's own lock on its file is taken anyway, either this process's previous `Store` is
/// still finishing (seen when one process reopens a store, as tests do: it resolves
/// within moments, so wait, boundedly), or another process holds it although `LOCK` did
/// not stop us — its `LOCK` file was deleted or replaced — and we refuse at once.
fn open_sled(dir: &Path, db_dir: &Path) -> Result<sled::Db> {
    disk::remove_unfinished_snapshots(db_dir).map_err(|source| StateError::Open {
        dir: dir.to_path_buf(),
        source,
    })?;
    let config = sled::Config::new()
        .path(db_dir)
        // Every commit flushes explicitly (group commit); what sled's periodic flusher
        // thread is kept for is the segment cleaning it alone does (`attempt_gc` runs
        // nowhere else in sled 0.34): relocating the live pages out of mostly-garbage
        // segments so they can be reused. Without it, no space a rewritten page left
        // behind was ever reclaimed. Its own flush is a no-op after ours.
        .flush_every_ms(Some(500))
        // sled keeps up to this much of the db in memory (1 GiB by default). The hot set is
        // the run being written and the newest runs' index; a 100,000-task run should not
        // hold its whole history in RAM.
        .cache_capacity(64 << 20);
    let key = std::path::absolute(db_dir).unwrap_or_else(|_| db_dir.to_path_buf());
    let ours = opened_here()
        .lock()
        .map(|set| set.contains(&key))
        .unwrap_or(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if !ours || std::time::Instant::now() >= deadline {
                    return Err(StateError::Locked {
                        dir: dir.to_path_buf(),
                        holder: "another process holds its db although the LOCK file did not stop us: \
                                 LOCK was probably deleted while it ran; find it with `fuser -v DIR/db/db`"
                            .replace("DIR", &dir.display().to_string()),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(sled_err(dir, e)),
            Ok(db) => {
                if let Ok(mut set) = opened_here().lock() {
                    set.insert(key);
                }
                return Ok(db);
            }
        }
    }
}

/// Appends the key-level changes `writes` make, in order, to `ops` (run records as they
/// are: see [`Store::ops_of`]). A task record whose outputs are those of a succeeded
/// attempt written with it is stored without them (see [`StoredTaskOut`]), after that
/// attempt, so that no piece of a commit refers to an attempt a later piece writes.
/// The ops of `writes`. `indexed`: runs whose index entries are on disk already.
fn ops_of(writes: &[&Write], indexed: &HashSet<&str>, ops: &mut Vec<Op>) {
    let mut with_outputs = std::collections::HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Write::Attempt(a) = w {
            if a.status == TaskStatus::Succeeded && !a.outputs.is_empty() {
                with_outputs.insert((a.run_id.as_str(), a.task_id.as_str()), (i, a));
            }
        }
    }
    let mut after: std::collections::HashMap<usize, Vec<Op>> = std::collections::HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        match w {
            Write::Run(r) => {
                ops.push(Op::Put(run_key(&r.id), encode(r)));
                // The index entry, once: its key never changes.
                if !indexed.contains(r.id.as_str()) {
                    ops.push(Op::Put(
                        workflow_index_key(&r.workflow, &r.started_at, &r.id),
                        Vec::new(),
                    ));
                }
                // The runs an open must look at (see `recover_interrupted`).
                if is_active(r) {
                    ops.push(Op::Put(active_key(&r.id), Vec::new()));
                } else {
                    ops.push(Op::Del(active_key(&r.id)));
                }
            }
            Write::Task(t) => {
                let key = task_key(&t.run_id, &t.task_id);
                match with_outputs.get(&(t.run_id.as_str(), t.task_id.as_str())) {
                    Some(&(at, a)) if a.outputs == t.outputs => {
                        let op = Op::Put(key, encode(&StoredTaskOut::new(t, a.attempt)));
                        if at > i {
                            after.entry(at).or_default().push(op);
                        } else {
                            ops.push(op);
                        }
                    }
                    _ => ops.push(Op::Put(key, encode(t))),
                }
            }
            Write::Attempt(a) => {
                ops.push(Op::Put(
                    attempt_key(&a.run_id, &a.task_id, a.attempt),
                    encode(a),
                ));
                ops.extend(after.remove(&i).unwrap_or_default());
            }
            Write::Table(t) => ops.push(Op::Put(table_key(&t.name), encode(t))),
            Write::DropTable(name) => ops.push(Op::Del(table_key(name))),
            Write::Schedule(r) => ops.push(Op::Put(schedule_key(&r.workflow), encode(r))),
            Write::File(r) => ops.push(Op::Put(file_key(&r.workflow, &r.path), encode(r))),
            Write::Usage(r) => ops.push(Op::Put(prefix(&["u", &r.counter, &r.day]), encode(r))),
            Write::Backfill(r) => ops.push(Op::Put(backfill_key(&r.id), encode(r))),
            Write::Sent(r) => ops.push(Op::Put(prefix(&["s", &r.key]), encode(r))),
            Write::Outbox(r) => {
                let key = outbox_key(&r.run_id, &r.id);
                let pending = pending_key(&r.run_id, &r.id);
                if matches!(r.status, DeliveryStatus::Pending | DeliveryStatus::Failed) {
                    ops.push(Op::Put(pending, key.clone()));
                } else {
                    ops.push(Op::Del(pending));
                }
                ops.push(Op::Put(key, encode(r)));
            }
        }
    }
}

/// The run index a listing reads (see [`Store::index_for`]).
enum Index {
    /// One workflow's part of the index.
    Workflow(String),
    /// Every workflow's part, merged by start time.
    Merged,
    /// The global index of a store before v6, read-only.
    Legacy,
}

/// An index entry as a key and value of sled.
type Entry = (sled::IVec, sled::IVec);

/// Index entries in the order a listing reads them.
type Entries<'a> = Box<dyn Iterator<Item = Result<Entry>> + 'a>;

/// Several workflows' parts of the run index merged into one, ordered by position
/// (start time, then run id) as the global index of a store before v6 was. Each part is
/// read lazily, one entry ahead: a page of 20 runs reads about 20 entries plus one a
/// workflow.
struct Merged<'a> {
    parts: Vec<Entries<'a>>,
    /// Each part's next entry.
    heads: Vec<Option<Entry>>,
    /// Which part holds the next entry to yield (by position).
    order: std::collections::BinaryHeap<(Position, usize)>,
    newest_first: bool,
    started: bool,
}

/// An entry's position in the merged order: the key's bytes after `j\0{workflow}\0`
/// (a fixed-width start time, NUL, the run id), compared backwards when the merge runs
/// oldest first so that the heap's top is always the next entry.
#[derive(PartialEq, Eq)]
struct Position {
    at: Vec<u8>,
    newest_first: bool,
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let by_time = self.at.cmp(&other.at);
        if self.newest_first {
            by_time
        } else {
            by_time.reverse()
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<'a> Merged<'a> {
    fn new(parts: Vec<Entries<'a>>, newest_first: bool) -> Self {
        let heads = parts.iter().map(|_| None).collect();
        Merged {
            parts,
            heads,
            order: std::collections::BinaryHeap::new(),
            newest_first,
            started: false,
        }
    }

    /// Reads part `i`'s next entry into its head.
    fn advance(&mut self, i: usize) -> Result<()> {
        if let Some((key, value)) = self.parts[i].next().transpose()? {
            // `j`, NUL, the workflow's name, NUL: the rest is the position.
            let name_end = key[2..]
                .iter()
                .position(|b| *b == 0)
                .map_or(key.len(), |n| n + 3);
            let at = key.get(name_end..).unwrap_or_default().to_vec();
            self.order.push((
                Position {
                    at,
                    newest_first: self.newest_first,
                },
                i,
            ));
            self.heads[i] = Some((key, value));
        }
        Ok(())
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.parts.len() {
                if let Err(e) = self.advance(i) {
                    return Some(Err(e));
                }
            }
        }
        let (_, i) = self.order.pop()?;
        let entry = self.heads[i].take()?;
        if let Err(e) = self.advance(i) {
            return Some(Err(e));
        }
        Some(Ok(entry))
    }
}

/// A prefix scan whose every step is one read under [`Store::read_turn`].
struct Scan<'a> {
    store: &'a Store,
    iter: sled::Iter,
}

impl Iterator for Scan<'_> {
    type Item = Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let _turn = self.store.read_turn();
        let item = self.iter.next()?;
        Some(item.map_err(|e| self.store.db_err(e)))
    }
}

impl DoubleEndedIterator for Scan<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let _turn = self.store.read_turn();
        let item = self.iter.next_back()?;
        Some(item.map_err(|e| self.store.db_err(e)))
    }
}

fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for p in parts {
        k.extend_from_slice(p.as_bytes());
        k.push(0);
    }
    k
}

/// A run still running (so a crash may have left it), or interrupted and not resumed yet.
fn is_active(r: &RunRecord) -> bool {
    r.status == RunStatus::Running || (r.status == RunStatus::Interrupted && r.resume_pending)
}

fn active_key(id: &str) -> Vec<u8> {
    let mut k = prefix(&["x"]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn run_key(id: &str) -> Vec<u8> {
    let mut k = prefix(&["r"]);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Where a store before v6 indexed all its runs (see [`Store::reindex`]).
const LEGACY_INDEX: &[u8] = b"i\0";

/// A run's entry in the global index of a store before v6, valued with its workflow's
/// name (empty in entries written before v3).
fn legacy_index_key(started_at: &DateTime<Utc>, id: &str) -> Vec<u8> {
    // Fixed-width UTC timestamp so byte order is time order.
    let ts = started_at.format("%Y%m%dT%H%M%S%.9f").to_string();
    let mut k = LEGACY_INDEX.to_vec();
    k.extend_from_slice(ts.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn workflow_index_key(workflow: &str, started_at: &DateTime<Utc>, id: &str) -> Vec<u8> {
    let ts = started_at.format("%Y%m%dT%H%M%S%.9f").to_string();
    let mut k = prefix(&["j", workflow, &ts]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn schedule_key(workflow: &str) -> Vec<u8> {
    let mut k = prefix(&["w"]);
    k.extend_from_slice(workflow.as_bytes());
    k
}

fn file_key(workflow: &str, path: &str) -> Vec<u8> {
    let mut k = prefix(&["f", workflow]);
    k.extend_from_slice(path.as_bytes());
    k
}

fn outbox_key(run_id: &str, id: &str) -> Vec<u8> {
    let mut k = prefix(&["o", run_id]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn pending_key(run_id: &str, id: &str) -> Vec<u8> {
    let mut k = prefix(&["p", run_id]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn def_key(hex: &str) -> Vec<u8> {
    let mut k = prefix(&["d"]);
    k.extend_from_slice(hex.as_bytes());
    k
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn backfill_key(id: &str) -> Vec<u8> {
    let mut k = prefix(&["b"]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn table_key(name: &str) -> Vec<u8> {
    let mut k = prefix(&["c"]);
    k.extend_from_slice(name.as_bytes());
    k
}

fn sealed_key(run_id: &str) -> Vec<u8> {
    let mut k = prefix(&["z"]);
    k.extend_from_slice(run_id.as_bytes());
    k
}

/// A run that will not change unless a rerun reopens it: its records can be sealed.
fn is_finished(r: &RunRecord) -> bool {
    matches!(
        r.status,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Skipped
    )
}

fn task_key(run_id: &str, task_id: &str) -> Vec<u8> {
    let mut k = prefix(&["t", run_id]);
    k.extend_from_slice(task_id.as_bytes());
    k
}

fn attempt_key(run_id: &str, task_id: &str, attempt: u32) -> Vec<u8> {
    let mut k = prefix(&["a", run_id, task_id]);
    k.extend_from_slice(format!("{attempt:010}").as_bytes());
    k
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod codec_props;
