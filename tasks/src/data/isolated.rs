//! Queries typed by people (the UI's SQL box, the catalog page, `orchestrator query` while
//! a daemon owns the state dir) run in a child process, so that the worst of them cannot
//! take the daemon down.
//!
//! **Why a process.** DataFusion's memory pool does not see every allocation: a scalar
//! function such as `repeat('x', 400000000)` allocates outside it, and a recursive CTE
//! keeps the cores busy for as long as it likes. A child can be bounded by the kernel:
//! - its address space (`RLIMIT_AS`, [`Limits::memory_mb`], default 1024 MiB): an
//!   allocation past it fails in the child, which dies; the daemon reports it;
//! - its time ([`Limits::timeout`], default 30 s): then it is killed;
//! - its answer ([`Limits::max_output`], default 64 MiB of Arrow IPC): the parent stops
//!   reading there;
//! - how many run at once ([`Limits::concurrent`], default 2): more wait in line, at most
//!   as long as their timeout;
//! - the request: the child is killed when the future awaiting it is dropped (a client
//!   that went away), and when the daemon dies (`PR_SET_PDEATHSIG`).
//!
//! The child is this same binary, started as `orchestrator query-worker` (hidden): it reads
//! `{"sql": ..., "tables": [catalog records]}` from stdin, and writes the result as an Arrow
//! IPC stream to stdout or the error to stderr. It opens no state store: the parent hands
//! it the catalog, so the daemon's lock on the state dir is no obstacle.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use orchestrator_engine::catalog::Catalog;
use orchestrator_engine::state::{StateError, TableRecord};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

/// Why an isolated query gave no result: a limit of [`Limits`] (`Busy`, `TimedOut`,
/// `TooLarge`, `OutOfMemory`), the query's own error (`Failed`), or the worker process.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// All [`Limits::concurrent`] slots stayed taken for [`Limits::timeout`].
    #[error("the SQL engine is busy: {running} queries are running and this one waited {waited_secs}s for a turn; try again shortly")]
    Busy { running: usize, waited_secs: u64 },
    #[error("the query ran over {secs}s and was stopped; add a LIMIT or a WHERE, or raise ORCHESTRATOR_QUERY_TIMEOUT")]
    TimedOut { secs: u64 },
    #[error(
        "the result is larger than {mib} MiB; add a LIMIT, select fewer columns, or aggregate"
    )]
    TooLarge { mib: usize },
    #[error("the query needed more than the {memory_mb} MiB a query may use and was stopped; add a LIMIT or a WHERE, aggregate, or raise ORCHESTRATOR_QUERY_MEMORY_MB")]
    OutOfMemory { memory_mb: u64 },
    /// The query's own error (SQL, planning, execution), as the worker wrote it.
    #[error("{0}")]
    Failed(String),
    /// The worker died otherwise (a signal, an unexpected exit code).
    #[error("the query worker stopped ({status}){}", said(.stderr))]
    Stopped {
        status: std::process::ExitStatus,
        /// What it wrote to stderr, trimmed; may be empty.
        stderr: String,
    },
    #[error("cannot find this program to start a query worker: {0}")]
    NoProgram(#[source] std::io::Error),
    #[error("cannot start a query worker: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("a query worker has no pipes")]
    NoPipes,
    #[error("waiting for a query worker: {0}")]
    Wait(#[source] std::io::Error),
    #[error("reading a query worker's answer: {0}")]
    Read(#[source] std::io::Error),
    #[error("reading a query worker's answer: {0}")]
    Decode(#[source] ArrowError),
    #[error(transparent)]
    Catalog(#[from] StateError),
    /// The job could not be written for the worker.
    #[error(transparent)]
    Job(#[from] serde_json::Error),
}

/// `: {stderr}`, or nothing.
fn said(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The hidden subcommand that runs one query in a child.
pub const WORKER_COMMAND: &str = "query-worker";

/// The bounds of an isolated query; each can be set by an environment variable of the
/// process that starts the queries (the daemon).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `ORCHESTRATOR_QUERY_MEMORY_MB`: the child's address space.
    pub memory_mb: u64,
    /// `ORCHESTRATOR_QUERY_TIMEOUT` (seconds).
    pub timeout: Duration,
    /// Bytes of result read from the child.
    pub max_output: usize,
    /// `ORCHESTRATOR_QUERY_CONCURRENCY`: queries running at once.
    pub concurrent: usize,
}

impl Limits {
    pub fn from_env() -> Limits {
        let num = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Limits {
            memory_mb: num("ORCHESTRATOR_QUERY_MEMORY_MB", 1024),
            timeout: Duration::from_secs(num("ORCHESTRATOR_QUERY_TIMEOUT", 30)),
            max_output: 64 << 20,
            concurrent: usize::try_from(num("ORCHESTRATOR_QUERY_CONCURRENCY", 2)).unwrap_or(2),
        }
    }
}

/// The catalog a child sees: the tables it was handed, read-only.
pub struct Tables(pub Vec<TableRecord>);

impl Catalog for Tables {
    fn table(&self, name: &str) -> Result<Option<TableRecord>, StateError> {
        Ok(self.0.iter().find(|t| t.name == name).cloned())
    }
    fn tables(&self) -> Result<Vec<TableRecord>, StateError> {
        Ok(self.0.clone())
    }
    fn put_table(&self, _: TableRecord) -> Result<(), StateError> {
        Err(read_only())
    }
    fn drop_table(&self, _: &str) -> Result<(), StateError> {
        Err(read_only())
    }
}

fn read_only() -> StateError {
    StateError::ReadOnly {
        dir: std::path::PathBuf::from("(query worker)"),
        why: "a query only reads".into(),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    sql: String,
    tables: Vec<TableRecord>,
}

fn slots(limits: &Limits) -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(Semaphore::new(limits.concurrent.max(1))))
        .clone()
}

/// Runs `sql` over `catalog`'s tables in a child process within `limits` (see the module
/// docs). The error says what happened and what to do.
pub async fn query(
    catalog: &dyn Catalog,
    sql: String,
    limits: &Limits,
) -> Result<Vec<RecordBatch>, QueryError> {
    let tables = catalog.tables()?;
    let job = serde_json::to_vec(&Job { sql, tables })?;
    let busy = || QueryError::Busy {
        running: limits.concurrent,
        waited_secs: limits.timeout.as_secs(),
    };
    let slots = slots(limits);
    let _slot = tokio::time::timeout(limits.timeout, slots.acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let exe = std::env::current_exe().map_err(QueryError::NoProgram)?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(WORKER_COMMAND)
        // Few malloc arenas: each reserves 64 MiB of address space, which counts
        // against the limit without being used.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let bytes = limits.memory_mb.saturating_mul(1 << 20);
    // SAFETY: between fork and exec only async-signal-safe calls are made (setrlimit,
    // prctl), with no allocation.
    unsafe {
        command.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes)
                .map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(QueryError::Spawn)?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(QueryError::NoPipes);
    };
    let max = limits.max_output;
    let work = async move {
        let feed = async move {
            // A worker that dies early closes its stdin: its status says why.
            let _ = stdin.write_all(&job).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (mut stdout, mut stderr) = (stdout.take(max as u64 + 1), stderr.take(64 * 1024));
        let read_out = stdout.read_to_end(&mut out);
        let read_err = stderr.read_to_end(&mut err);
        let ((), o, e) = tokio::join!(feed, read_out, read_err);
        o.and(e).map_err(QueryError::Read)?;
        if out.len() > max {
            return Err(QueryError::TooLarge { mib: max >> 20 });
        }
        let status = child.wait().await.map_err(QueryError::Wait)?;
        Ok((status, out, err))
    };
    let (status, out, err) = tokio::time::timeout(limits.timeout, work)
        .await
        .map_err(|_| QueryError::TimedOut {
            secs: limits.timeout.as_secs(),
        })??;
    let err = String::from_utf8_lossy(&err).trim().to_string();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt as _;
        let out_of_memory = err.contains("memory allocation")
            || err.contains("Resources exhausted")
            || status.signal() == Some(nix::libc::SIGABRT)
            || status.signal() == Some(nix::libc::SIGSEGV);
        if status.code() == Some(2) && !err.is_empty() && !out_of_memory {
            return Err(QueryError::Failed(err));
        }
        if out_of_memory {
            return Err(QueryError::OutOfMemory {
                memory_mb: limits.memory_mb,
            });
        }
        return Err(QueryError::Stopped {
            status,
            stderr: err,
        });
    }
    let reader =
        StreamReader::try_new(std::io::Cursor::new(out), None).map_err(QueryError::Decode)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(QueryError::Decode)
}

/// The child's side: reads the job from stdin, runs it, writes the batches to stdout.
/// Returns the exit status: 0, or 2 with the error on stderr.
pub async fn worker_main() -> u8 {
    use std::io::{Read as _, Write as _};
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read the query: {e}");
        return 2;
    }
    let job: Job = match serde_json::from_slice(&input) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("not a query job: {e}");
            return 2;
        }
    };
    let batches = match super::query_tables(job.tables, job.sql).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(datafusion::arrow::datatypes::Schema::empty()),
    };
    let mut buf = Vec::new();
    let written = (|| {
        let mut w = StreamWriter::try_new(&mut buf, &schema)?;
        for b in &batches {
            w.write(b)?;
        }
        w.finish()
    })();
    if let Err(e) = written {
        eprintln!("cannot write the result: {e}");
        return 2;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&buf).is_err() || stdout.flush().is_err() {
        return 2;
    }
    0
}
