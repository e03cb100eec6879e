//! `--replicate URL`: ships the store's commits off the host, and `state recover --from
//! URL` rebuilds a store from them (the change log itself is `orchestrator_state::replica`).
//!
//! **Layout at URL** (`s3://bucket/prefix` or a directory): one directory per generation,
//! `g{unix ms}-{random}/`, holding `base-{seq}` (every record, at commit `seq`) and
//! `seg-{first}-{last}` (the commits `first..=last`, whole, in order). A generation starts
//! when a store has no marker for this URL (first replication, a store opened without
//! replication meanwhile, a compacted or rebuilt db); recovery takes the newest
//! generation with a base.
//!
//! **When:** a writing process ships every `ORCHESTRATOR_REPLICATE_INTERVAL` (default 5 s)
//! on a thread of its own with its own runtime and S3 client (an S3 client's connections
//! belong to the runtime that made them), and once more when it exits. So the loss
//! window after a crash is the interval plus one upload; a failed upload is retried next
//! time, and `state check` and `/metrics` show the lag.
//!
//! **Cost** per shipment: one PUT (or one file written, synced and renamed) of the
//! commits since the last, and one flush to forget them: it grows with the changes, not
//! with the store. A base costs the store's size, once per generation.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_engine::state::{StateError, Store};

use crate::{Context, Error};

/// Most bytes of commits in one segment.
const SEGMENT_BYTES: usize = 8 << 20;

/// How often a writing process ships.
fn interval() -> Duration {
    std::env::var("ORCHESTRATOR_REPLICATE_INTERVAL")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_millis(50))
}

/// Where replicas go: checked when the command starts (`Context::with_replica`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dir(PathBuf),
    S3(String),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, Error> {
        if let Some(rest) = url.strip_prefix("s3://") {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(Error::invalid(format!(
                    "error: --replicate {url}: name a bucket, e.g. s3://my-bucket/orchestrator/prod"
                )));
            }
            return Ok(Target::S3(url.trim_end_matches('/').to_string()));
        }
        if url.contains("://") {
            return Err(Error::invalid(format!(
                "error: --replicate {url}: give s3://bucket/prefix or a directory (a mounted volume)"
            )));
        }
        let dir = std::path::absolute(url)
            .map_err(|e| Error::invalid(format!("error: --replicate {url}: {e}")))?;
        Ok(Target::Dir(dir))
    }

    /// The URL the marker records (a directory as its absolute path).
    pub fn url(&self) -> String {
        match self {
            Target::Dir(d) => d.display().to_string(),
            Target::S3(u) => u.clone(),
        }
    }
}

/// A target reached from one runtime.
struct Transport {
    target: Target,
    aws: Option<orchestrator_aws::Aws>,
}

impl Transport {
    async fn connect(target: Target) -> Transport {
        let aws = match target {
            Target::S3(_) => Some(
                orchestrator_aws::Aws::connect(orchestrator_aws::Settings {
                    region: None,
                    profile: None,
                    workgroup: None,
                    database: None,
                    output_location: None,
                    warehouse: None,
                })
                .await,
            ),
            Target::Dir(_) => None,
        };
        Transport { target, aws }
    }

    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        match (&self.target, &self.aws) {
            (Target::S3(url), Some(aws)) => aws
                .put(&format!("{url}/{name}"), bytes)
                .await
                .map_err(|e| e.to_string()),
            (Target::Dir(dir), _) => write_durably(&dir.join(name), &bytes)
                .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display())),
            (Target::S3(_), None) => Err("no S3 client".into()),
        }
    }

    /// Every file name under the target, relative to it.
    async fn list(&self) -> Result<Vec<String>, String> {
        match (&self.target, &self.aws) {
            (Target::S3(url), Some(aws)) => {
                let keys = aws
                    .list(&format!("{url}/"))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(keys
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&format!("{url}/")).map(str::to_string))
                    .collect())
            }
            (Target::Dir(dir), _) => {
                let mut out = Vec::new();
                let gens = std::fs::read_dir(dir)
                    .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
                for g in gens.flatten() {
                    let Ok(files) = std::fs::read_dir(g.path()) else {
                        continue;
                    };
                    for f in files.flatten() {
                        out.push(format!(
                            "{}/{}",
                            g.file_name().to_string_lossy(),
                            f.file_name().to_string_lossy()
                        ));
                    }
                }
                Ok(out)
            }
            (Target::S3(_), None) => Err("no S3 client".into()),
        }
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, String> {
        match (&self.target, &self.aws) {
            (Target::S3(url), Some(aws)) => aws
                .get(&format!("{url}/{name}"))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{url}/{name} is gone")),
            (Target::Dir(dir), _) => std::fs::read(dir.join(name))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display())),
            (Target::S3(_), None) => Err("no S3 client".into()),
        }
    }
}

/// Temp name, fsync, rename, fsync the directory: a reader sees the file whole or not.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn state_err(e: StateError) -> String {
    e.to_string()
}

/// Ships what the replica lacks: a base first when this store has no generation there.
async fn ship(store: &Store, transport: &Transport) -> Result<usize, String> {
    let url = transport.target.url();
    let marker = store.replica_marker().map_err(state_err)?;
    let generation = match marker {
        Some(m) if m.url == url => m.generation,
        _ => {
            let generation = format!(
                "g{:015}-{:04x}",
                chrono::Utc::now().timestamp_millis(),
                fastrand::u16(..)
            );
            let (seq, base) = store.base().map_err(state_err)?;
            transport
                .put(&format!("{generation}/base-{seq:020}"), base)
                .await?;
            store
                .mark_shipped(&url, &generation, seq)
                .map_err(state_err)?;
            tracing::info!("replicating the state store to {url} (generation {generation})");
            generation
        }
    };
    let mut shipped = 0;
    loop {
        let pending = store.pending_changes(SEGMENT_BYTES).map_err(state_err)?;
        let (Some(first), Some(last)) = (pending.first(), pending.last()) else {
            return Ok(shipped);
        };
        transport
            .put(
                &format!("{generation}/seg-{first:020}-{last:020}"),
                pending.segment(),
            )
            .await?;
        store
            .mark_shipped(&url, &generation, last)
            .map_err(state_err)?;
        shipped += pending.commits.len();
    }
}

/// The shipping thread of this process.
struct Shipper {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

static ACTIVE: Mutex<Option<Shipper>> = Mutex::new(None);

/// With `--replicate`, ships `store`'s commits from now until [`finish`].
pub fn attach(ctx: &Context, store: &Arc<Store>) {
    let Some(target) = ctx.replicate.clone() else {
        return;
    };
    let mut active = ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if active.is_some() {
        return;
    }
    let (stop, stopped) = std::sync::mpsc::channel();
    let store = store.clone();
    let thread = std::thread::Builder::new()
        .name("replicate".into())
        .spawn(move || shipping(store, target, stopped));
    match thread {
        Ok(thread) => *active = Some(Shipper { stop, thread }),
        Err(e) => tracing::warn!("cannot start replication: {e}"),
    }
}

fn shipping(store: Arc<Store>, target: Target, stopped: Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("replication stopped: cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(async {
        let transport = Transport::connect(target).await;
        let mut last_error = None;
        loop {
            let stop = match stopped.recv_timeout(interval()) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                Err(RecvTimeoutError::Timeout) => false,
            };
            match ship(&store, &transport).await {
                Ok(_) => last_error = None,
                Err(e) => {
                    // Once per distinct error: the lag says the rest.
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(
                            "cannot replicate the state store to {} (retrying every {}): {e}",
                            transport.target.url(),
                            humantime::format_duration(interval())
                        );
                    }
                    last_error = Some(e);
                }
            }
            if stop {
                break;
            }
        }
    });
}

/// Ships what is left and stops (the process is exiting).
pub fn finish() {
    let shipper = ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(s) = shipper {
        let _ = s.stop.send(());
        let _ = s.thread.join();
    }
}

/// With `--replicate`, ships `store`'s commits now, once (commands that hold the store
/// for a moment: `tables restore`, `gc`).
pub fn once(ctx: &Context, store: &Store) {
    let Some(target) = ctx.replicate.clone() else {
        return;
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let transport = Transport::connect(target).await;
                if let Err(e) = ship(store, &transport).await {
                    tracing::warn!(
                        "cannot replicate the state store to {}: {e}",
                        transport.target.url()
                    );
                }
            });
        });
    });
}

/// What recovery read: the generation and how far it goes.
pub struct Recovered {
    pub generation: String,
    pub files: usize,
    pub last_commit: u64,
}

/// Rebuilds the store in `dir` (which must hold none) from the newest generation at
/// `url` that has a base; `owner` as `Store::open` takes it.
pub async fn recover(dir: &Path, url: &str, owner: &str) -> Result<Recovered, Error> {
    let target = Target::parse(url)?;
    if dir.join("db").exists() {
        return Err(Error::invalid(format!(
            "error: {} already holds a state store; recover into a new --state-dir (or move its db/ aside first)",
            dir.display()
        )));
    }
    let transport = Transport::connect(target.clone()).await;
    let names = transport
        .list()
        .await
        .map_err(|e| Error::unavailable(format!("error: cannot list the replica at {url}: {e}")))?;
    let mut generations: Vec<&str> = names
        .iter()
        .filter_map(|n| n.split_once('/'))
        .filter(|(_, f)| f.starts_with("base-"))
        .map(|(g, _)| g)
        .collect();
    generations.sort_unstable();
    let Some(generation) = generations.last().map(|g| g.to_string()) else {
        return Err(Error::not_found(format!(
            "error: no replica at {url}: nothing there has a base (was the store replicated there with --replicate {url}?)"
        )));
    };
    let mut files = Vec::new();
    for name in names
        .iter()
        .filter(|n| n.starts_with(&format!("{generation}/")))
        .filter(|n| {
            let f = n.rsplit('/').next().unwrap_or_default();
            f.starts_with("base-") || f.starts_with("seg-")
        })
    {
        let bytes = transport.get(name).await.map_err(|e| {
            Error::unavailable(format!(
                "error: cannot read {name} of the replica at {url}: {e}"
            ))
        })?;
        files.push((name.clone(), bytes));
    }
    let (store, _) = Store::open(dir, owner)?;
    let last_commit = store.restore(&files)?;
    Ok(Recovered {
        generation,
        files: files.len(),
        last_commit,
    })
}
