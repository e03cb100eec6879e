//! Durable run state for orchestrator.
//!
//! **API boundary:** this is the only crate that knows sled. Everything above it sees
//! [`Store`], the record types in [`records`] and [`StateError`].
//!
//! Layout: one sled tree, keys prefixed by record type so that every group of
//! transitions the engine makes can be written as one atomic [`sled::Batch`] and made
//! durable with one flush (group commit):
//!
//! | key                                   | value            |
//! |---------------------------------------|------------------|
//! | `meta\0schema`                        | schema version   |
//! | `r\0{run}`                            | [`RunRecord`]    |
//! | `i\0{started_at, fixed width}\0{run}` | empty (newest-first index) |
//! | `t\0{run}\0{task}`                    | [`TaskRecord`]   |
//! | `a\0{run}\0{task}\0{attempt:010}`     | [`AttemptRecord`] |
//! | `c\0{table}`                          | [`TableRecord`] (the catalog) |
//!
//! Values are JSON wrapped in `{"v": N, ...}` so a newer binary can read an older store;
//! fields added later carry `#[serde(default)]`.
//!
//! **Invariant:** one process at a time owns a state directory (an OS file lock on
//! `LOCK`, which also records the owner's pid). So when [`Store::open`] succeeds, any run
//! still marked `running` belongs to a process that is gone, and is marked `interrupted`.

pub mod records;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use records::{
    AttemptRecord, ColumnRecord, RunRecord, RunStatus, TableRecord, TaskRecord, TaskStatus,
};

/// Version of the persisted record format. Bump when a record changes shape in a way
/// `#[serde(default)]` cannot absorb, and teach [`decode`] to read the older one.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state directory {dir} is in use by another orchestrator process ({holder}); \
         wait for it to finish, stop it, or pass a different --state-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("cannot open state directory {dir}: {source}; check that it is writable or pass a different --state-dir")]
    Open {
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
        "state store {dir}: record {key} is unreadable ({reason}); this is a bug, please report it"
    )]
    Corrupt {
        dir: PathBuf,
        key: String,
        reason: String,
    },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// One write in a group commit.
#[derive(Debug, Clone)]
pub enum Write {
    Run(RunRecord),
    Task(TaskRecord),
    Attempt(AttemptRecord),
    Table(TableRecord),
    DropTable(String),
}

/// The state store of one state directory.
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    // Held for the lifetime of the store; the OS releases the lock if the process dies.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking the directory lock.
    ///
    /// `owner` is a short description of this process (e.g. the command line) written
    /// into the lock file so a second process can say who holds it.
    /// Returns the store and the ids of runs that were marked `interrupted`.
    pub fn open(dir: &Path, owner: &str) -> Result<(Store, Vec<String>)> {
        let open_err = |source| StateError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))
            .map_err(open_err)?;
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
        let pid = std::process::id();
        lock.set_len(0)
            .and_then(|_| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(lock, "pid {pid}: {owner}"))
            .map_err(open_err)?;

        let config = sled::Config::new()
            .path(dir.join("db"))
            // Every commit flushes explicitly (group commit), so sled's periodic flusher
            // thread adds nothing — and it would keep the db open briefly after drop.
            .flush_every_ms(None);
        let db = open_sled(&config).map_err(|source| StateError::Db {
            dir: dir.to_path_buf(),
            source,
        })?;
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            _lock: lock,
        };
        store.check_schema()?;
        let recovered = store.recover_interrupted()?;
        Ok((store, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_err(&self, source: sled::Error) -> StateError {
        StateError::Db {
            dir: self.dir.clone(),
            source,
        }
    }

    fn check_schema(&self) -> Result<()> {
        const KEY: &[u8] = b"meta\0schema";
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
            }
            None => {
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
        for run in self.all_runs()? {
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
            recovered.push(run.id.clone());
            writes.push(Write::Run(run));
        }
        if !writes.is_empty() {
            self.commit(&writes)?;
        }
        Ok(recovered)
    }

    /// Writes every record atomically and makes them durable before returning.
    pub fn commit(&self, writes: &[Write]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for w in writes {
            match w {
                Write::Run(r) => {
                    batch.insert(run_key(&r.id), encode(r));
                    batch.insert(index_key(&r.started_at, &r.id), &[][..]);
                }
                Write::Task(t) => batch.insert(task_key(&t.run_id, &t.task_id), encode(t)),
                Write::Attempt(a) => {
                    batch.insert(attempt_key(&a.run_id, &a.task_id, a.attempt), encode(a))
                }
                Write::Table(t) => batch.insert(table_key(&t.name), encode(t)),
                Write::DropTable(name) => batch.remove(table_key(name)),
            }
        }
        self.db.apply_batch(batch).map_err(|e| self.db_err(e))?;
        self.flush()
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.db_err(e))
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let key = run_key(id);
        match self.db.get(&key).map_err(|e| self.db_err(e))? {
            Some(v) => Ok(Some(self.decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Runs, newest first, optionally of one workflow, at most `limit`.
    pub fn runs(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"i\0").rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| self.db_err(e))?;
            let id = key
                .rsplit(|b| *b == 0)
                .next()
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .unwrap_or_default();
            let Some(run) = self.run(&id)? else {
                return Err(self.corrupt(&key, "index entry without a run record"));
            };
            if workflow.is_none_or(|w| w == run.workflow) {
                out.push(run);
            }
        }
        Ok(out)
    }

    fn all_runs(&self) -> Result<Vec<RunRecord>> {
        self.scan(b"r\0".to_vec())
    }

    /// Task records of a run, in no particular order.
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>> {
        self.scan(prefix(&["t", run_id]))
    }

    /// Attempts of one task, oldest first.
    pub fn attempts(&self, run_id: &str, task_id: &str) -> Result<Vec<AttemptRecord>> {
        self.scan(prefix(&["a", run_id, task_id]))
    }

    /// A catalog table by name.
    pub fn table(&self, name: &str) -> Result<Option<TableRecord>> {
        let key = table_key(name);
        match self.db.get(&key).map_err(|e| self.db_err(e))? {
            Some(v) => Ok(Some(self.decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every catalog table, by name.
    pub fn tables(&self) -> Result<Vec<TableRecord>> {
        self.scan(prefix(&["c"]))
    }

    fn scan<T: DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>> {
        self.db
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(|e| self.db_err(e))?;
                self.decode(&k, &v)
            })
            .collect()
    }

    fn decode<T: DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<T> {
        let env: Envelope<T> =
            serde_json::from_slice(bytes).map_err(|e| self.corrupt(key, e.to_string()))?;
        if env.v > SCHEMA_VERSION {
            return Err(StateError::TooNew {
                dir: self.dir.clone(),
                found: env.v,
            });
        }
        Ok(env.data)
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    data: T,
}

fn encode<T: Serialize + Clone>(value: &T) -> Vec<u8> {
    // Serializing plain data structs to JSON cannot fail (no maps with non-string keys).
    serde_json::to_vec(&Envelope {
        v: SCHEMA_VERSION,
        data: value.clone(),
    })
    .unwrap_or_default()
}

/// Opens sled. We hold the directory's `LOCK`, so no other process has this db open: if
/// sled's own file lock is still taken, it is by this process's previous `Store`, whose
/// sled I/O threads are finishing after drop (seen when one process reopens a store, as
/// tests do). That resolves within moments, so wait for it, boundedly.
fn open_sled(config: &sled::Config) -> std::result::Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
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

fn run_key(id: &str) -> Vec<u8> {
    let mut k = prefix(&["r"]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn index_key(started_at: &DateTime<Utc>, id: &str) -> Vec<u8> {
    // Fixed-width UTC timestamp so byte order is time order.
    let ts = started_at.format("%Y%m%dT%H%M%S%.9f").to_string();
    let mut k = prefix(&["i", &ts]);
    k.extend_from_slice(id.as_bytes());
    k
}

fn table_key(name: &str) -> Vec<u8> {
    let mut k = prefix(&["c"]);
    k.extend_from_slice(name.as_bytes());
    k
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
