//! Recovery points: a compact export of every record, written after each finished run,
//! from which `orchestrator state recover` rebuilds a store whose db was lost or damaged.
//!
//! Format (versioned JSON lines, one file per point, `{state-dir}/recovery/`):
//!
//! ```text
//! {"orchestrator_recovery_point":1,"schema":1,"created_at":"2026-11-24T03:00:00Z"}
//! {"run":{"v":1,"id":...}}          one line per record, the value exactly as stored
//! {"task":{...}}  {"attempt":{...}}  {"table":{...}}
//! {"end":{"records":1234}}           a file without this line is incomplete
//! ```
//!
//! Writing one costs time and space in proportion to the whole store, so after a run one
//! is written only if the newest is older than [`min_interval`] (60 s by default,
//! `ORCHESTRATOR_RECOVERY_INTERVAL` in seconds, 0 for after every run): a daemon running a
//! workflow every second does not rewrite the store every second. The daemon writes one
//! when it stops.
//!
//! **Invariant:** a recovery point is complete or absent. It is written to a temporary
//! name, synced, renamed, and the directory synced; only then are older points deleted
//! ([`KEEP`] are kept). Writing one never blocks or fails a run: the caller only warns.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    AttemptRecord, BackfillRecord, FileRecord, OutboxRecord, Result, RunRecord, ScheduleRecord,
    SentRecord, StateError, Store, TableRecord, TaskRecord, UsageRecord, Write, SCHEMA_VERSION,
};

/// Version of the recovery point format.
pub const FORMAT: u32 = 1;
/// How many recovery points are kept.
pub const KEEP: usize = 3;

const PREFIX: &str = "records-";
const SUFFIX: &str = ".jsonl";

#[derive(Serialize, Deserialize)]
struct Header {
    orchestrator_recovery_point: u32,
    schema: u32,
    created_at: DateTime<Utc>,
}

/// The contents of a recovery point, read back.
#[derive(Debug, Default)]
pub struct Export {
    pub path: PathBuf,
    pub created_at: Option<DateTime<Utc>>,
    pub runs: Vec<RunRecord>,
    pub tasks: Vec<TaskRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub tables: Vec<TableRecord>,
    pub schedules: Vec<ScheduleRecord>,
    pub files: Vec<FileRecord>,
    pub usage: Vec<UsageRecord>,
    pub backfills: Vec<BackfillRecord>,
    pub sent: Vec<SentRecord>,
    pub outbox: Vec<OutboxRecord>,
}

impl Export {
    /// The writes that put these records into a store.
    pub fn writes(&self) -> Vec<Write> {
        let mut w: Vec<Write> = Vec::new();
        w.extend(self.runs.iter().cloned().map(Write::Run));
        w.extend(self.tasks.iter().cloned().map(Write::Task));
        w.extend(self.attempts.iter().cloned().map(Write::Attempt));
        w.extend(self.tables.iter().cloned().map(Write::Table));
        w.extend(self.schedules.iter().cloned().map(Write::Schedule));
        w.extend(self.files.iter().cloned().map(Write::File));
        w.extend(self.usage.iter().cloned().map(Write::Usage));
        w.extend(self.backfills.iter().cloned().map(Write::Backfill));
        w.extend(self.sent.iter().cloned().map(Write::Sent));
        w.extend(self.outbox.iter().cloned().map(Write::Outbox));
        w
    }
}

pub fn recovery_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("recovery")
}

/// Recovery point files in `state_dir`, newest first (names sort by time).
pub fn recovery_points(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(recovery_dir(state_dir)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    files.sort();
    files.reverse();
    files
}

/// Reads and checks a whole recovery point. The error says what is wrong with it.
pub fn read(path: &Path) -> std::result::Result<Export, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut out = Export {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let mut records = 0u64;
    let mut ended = false;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("{}:{n}: {e}", path.display()))?;
        let bad = |what: String| format!("{}:{n}: {what}", path.display());
        if n == 1 {
            let h: Header = serde_json::from_str(&line)
                .map_err(|e| bad(format!("not a recovery point header ({e})")))?;
            if h.orchestrator_recovery_point > FORMAT || h.schema > SCHEMA_VERSION {
                return Err(bad(format!(
                    "written by a newer orchestrator (format {}, schema {}); upgrade orchestrator",
                    h.orchestrator_recovery_point, h.schema
                )));
            }
            out.created_at = Some(h.created_at);
            continue;
        }
        if ended {
            return Err(bad("data after the end line".into()));
        }
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line).map_err(|e| bad(format!("not JSON ({e})")))?;
        if obj.len() != 1 {
            return Err(bad("expected one {\"kind\": record} object".into()));
        }
        let Some((kind, value)) = obj.into_iter().next() else {
            return Err(bad("empty line object".into()));
        };
        let de = |e: serde_json::Error| bad(format!("bad {kind} record ({e})"));
        match kind.as_str() {
            "run" => out.runs.push(decode_value(value).map_err(de)?),
            "task" => out.tasks.push(decode_value(value).map_err(de)?),
            "attempt" => out.attempts.push(decode_value(value).map_err(de)?),
            "table" => out.tables.push(decode_value(value).map_err(de)?),
            "schedule" => out.schedules.push(decode_value(value).map_err(de)?),
            "file" => out.files.push(decode_value(value).map_err(de)?),
            "usage" => out.usage.push(decode_value(value).map_err(de)?),
            "backfill" => out.backfills.push(decode_value(value).map_err(de)?),
            "sent" => out.sent.push(decode_value(value).map_err(de)?),
            "outbox" => out.outbox.push(decode_value(value).map_err(de)?),
            "end" => {
                let want = value.get("records").and_then(|r| r.as_u64());
                if want != Some(records) {
                    return Err(bad(format!(
                        "end line says {want:?} records, the file holds {records}"
                    )));
                }
                ended = true;
                continue;
            }
            other => return Err(bad(format!("unknown record kind `{other}`"))),
        }
        records += 1;
    }
    if out.created_at.is_none() {
        return Err(format!("{}: empty file", path.display()));
    }
    if !ended {
        return Err(format!(
            "{}: incomplete (no end line); it was cut short",
            path.display()
        ));
    }
    Ok(out)
}

pub(crate) fn decode_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> serde_json::Result<T> {
    #[derive(Deserialize)]
    struct Env<T> {
        #[allow(dead_code)]
        v: u32,
        #[serde(flatten)]
        data: T,
    }
    serde_json::from_value::<Env<T>>(value).map(|e| e.data)
}

/// The newest recovery point that reads back whole, with the reasons older-first newer
/// ones were passed over.
pub fn latest_good(state_dir: &Path) -> (Option<Export>, Vec<String>) {
    let mut skipped = Vec::new();
    for path in recovery_points(state_dir) {
        match read(&path) {
            Ok(e) => return (Some(e), skipped),
            Err(why) => skipped.push(why),
        }
    }
    (None, skipped)
}

/// The least time between two recovery points written after runs.
pub fn min_interval() -> std::time::Duration {
    let secs = std::env::var("ORCHESTRATOR_RECOVERY_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

impl Store {
    /// Writes a recovery point unless the newest one is younger than [`min_interval`].
    /// Returns the path written, or `None` when it was not due.
    pub fn write_recovery_point_if_due(&self) -> Result<Option<PathBuf>> {
        let newest = recovery_points(&self.dir)
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok());
        let due = newest.is_none_or(|t| t.elapsed().map_or(true, |age| age >= min_interval()));
        if due {
            self.write_recovery_point().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes a recovery point of every record (see the module docs) and deletes all but
    /// the newest [`KEEP`]. Returns its path.
    pub fn write_recovery_point(&self) -> Result<PathBuf> {
        let dir = recovery_dir(&self.dir);
        let io_err = |source| StateError::Open {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let now = Utc::now();
        let name = format!("{PREFIX}{}{SUFFIX}", now.format("%Y%m%dT%H%M%S%.6fZ"));
        let tmp = dir.join(format!(".{name}.tmp"));
        let result = self.export_to(&tmp, now);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let path = dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(io_err)?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
        for old in recovery_points(&self.dir).into_iter().skip(KEEP) {
            let _ = std::fs::remove_file(old);
        }
        Ok(path)
    }

    fn export_to(&self, path: &Path, now: DateTime<Utc>) -> Result<()> {
        let io_err = |source| StateError::Open {
            dir: self.dir.clone(),
            source,
        };
        let file = File::create(path).map_err(io_err)?;
        let mut out = BufWriter::new(file);
        let header = serde_json::to_string(&Header {
            orchestrator_recovery_point: FORMAT,
            schema: SCHEMA_VERSION,
            created_at: now,
        })
        .unwrap_or_default();
        writeln!(out, "{header}").map_err(io_err)?;
        let mut records = 0u64;
        // One read turn for the whole export: no commit lands while it reads, so the
        // point is the store as of one commit boundary (commits wait for it; a point is
        // written at most once a minute).
        let _turn = self.read_turn();
        for item in self.db.iter() {
            let (key, value) = item.map_err(|e| self.db_err(e))?;
            if key.starts_with(b"z\0") {
                // A sealed run: its tasks and attempts, each as its own record, except
                // those a live record (exported before it: `a` and `t` sort first)
                // replaces.
                let sealed: crate::SealedRun = self.decode(&key, &value)?;
                let live = |k: Vec<u8>| self.db.contains_key(k).map_err(|e| self.db_err(e));
                for t in &sealed.tasks {
                    if !live(crate::task_key(&t.run_id, &t.task_id))? {
                        write!(out, "{{\"task\":").map_err(io_err)?;
                        out.write_all(&crate::encode_json(t)).map_err(io_err)?;
                        out.write_all(b"}\n").map_err(io_err)?;
                        records += 1;
                    }
                }
                for a in &sealed.attempts {
                    if !live(crate::attempt_key(&a.run_id, &a.task_id, a.attempt))? {
                        write!(out, "{{\"attempt\":").map_err(io_err)?;
                        out.write_all(&crate::encode_json(a)).map_err(io_err)?;
                        out.write_all(b"}\n").map_err(io_err)?;
                        records += 1;
                    }
                }
                continue;
            }
            let kind = match key.first() {
                Some(b'r') if key.starts_with(b"r\0") => "run",
                Some(b't') if key.starts_with(b"t\0") => "task",
                Some(b'a') if key.starts_with(b"a\0") => "attempt",
                Some(b'c') if key.starts_with(b"c\0") => "table",
                Some(b'w') if key.starts_with(b"w\0") => "schedule",
                Some(b'f') if key.starts_with(b"f\0") => "file",
                Some(b'u') if key.starts_with(b"u\0") => "usage",
                Some(b'b') if key.starts_with(b"b\0") => "backfill",
                Some(b's') if key.starts_with(b"s\0") => "sent",
                Some(b'o') if key.starts_with(b"o\0") => "outbox",
                // The run index, the definitions (in their runs) and the meta keys are
                // derived, not exported.
                _ => continue,
            };
            write!(out, "{{\"{kind}\":").map_err(io_err)?;
            if kind == "run" {
                // With its workflow text in place: a recovery point stands alone.
                let run = self.decode_run(&key, &value)?;
                out.write_all(&crate::encode_json(&run)).map_err(io_err)?;
            } else if kind == "task" {
                // With its outputs in place, wherever they are stored.
                let task =
                    self.decode_task(&key, &value, |k| self.db.get(k).map_err(|e| self.db_err(e)))?;
                out.write_all(&crate::encode_json(&task)).map_err(io_err)?;
            } else {
                // Values are stored as JSON, maybe compressed: copy the JSON byte for byte.
                let json = crate::codec::unpack(&value).map_err(|why| StateError::Corrupt {
                    dir: self.dir.clone(),
                    key: String::from_utf8_lossy(&key).replace('\0', "/"),
                    reason: why,
                })?;
                out.write_all(&json).map_err(io_err)?;
            }
            out.write_all(b"}\n").map_err(io_err)?;
            records += 1;
        }
        writeln!(out, "{{\"end\":{{\"records\":{records}}}}}").map_err(io_err)?;
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)
    }
}
