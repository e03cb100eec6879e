//! The store's changes, kept for shipping off the host (`--replicate URL`; the service's
//! `replicate.rs` ships them, this module only keeps and reads them).
//!
//! **How.** With replication on ([`enable`], before the store is opened), every commit
//! also writes its ops, whole, as one entry of the `changes` tree, under the next
//! sequence number, *before* its pieces and in the same flush. So an entry exists only
//! for a commit that began, and the newest entry is the newest commit: [`Store::open`]
//! re-applies the newest entry's ops (whole values: harmless if they were applied, and
//! they complete the commit if the crash cut it short). Shipped entries are removed.
//!
//! **Consistent points.** A base ([`Store::base`]) is every record, read under the
//! store's write turn, so at one commit boundary; a segment is whole commits in order.
//! Base plus the segments after it, applied by sequence ([`Store::restore`]), skipping
//! commits already applied, is the store as of the last commit shipped: never a mix.
//!
//! **Invariant:** a commit made without replication first drops the entries and the
//! [`Marker`] (the replica would have a gap), so the next replicated process starts a new
//! generation with a new base. Opening and reading without replication changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::journal::{self, Op};
use crate::{Core, Result, StateError, Store};

/// The tree of change entries and the marker.
pub(crate) const TREE: &[u8] = b"changes";
/// Change entries: `c` + sequence number (big-endian u64).
const ENTRY: u8 = b'c';
/// The [`Marker`]'s key.
const MARKER: &[u8] = b"m";
/// A segment file's first bytes.
const MAGIC: &[u8] = b"ORCHSEG1";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns change logging on for the stores this process opens for writing (`--replicate`).
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// Where this store's changes have been shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The replica's URL (`s3://bucket/prefix` or a directory).
    pub url: String,
    /// The generation there (a base and its segments).
    pub generation: String,
    /// The newest commit the replica holds.
    pub shipped: u64,
}

/// Commits not shipped yet, oldest first.
#[derive(Debug, Default)]
pub struct Pending {
    /// `(sequence, when committed (Unix ms), the commit's ops, encoded)`.
    pub commits: Vec<(u64, i64, Vec<u8>)>,
}

impl Pending {
    /// The commits as a segment file.
    pub fn segment(&self) -> Vec<u8> {
        segment(
            self.commits
                .iter()
                .map(|(seq, _, ops)| (*seq, ops.as_slice())),
        )
    }

    pub fn first(&self) -> Option<u64> {
        self.commits.first().map(|c| c.0)
    }

    pub fn last(&self) -> Option<u64> {
        self.commits.last().map(|c| c.0)
    }
}

fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [ENTRY; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    match key {
        [ENTRY, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// `MAGIC ( seq:u64be len:u32le ops )*`, `ops` as [`journal::encode`] writes them.
pub fn segment<'a>(commits: impl Iterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (seq, ops) in commits {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        out.extend_from_slice(ops);
    }
    out
}

/// The commits of a segment (or base) file, or what is wrong with it.
pub(crate) fn read_segment(bytes: &[u8]) -> std::result::Result<Vec<(u64, Vec<Op>)>, String> {
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        return Err("not a segment of orchestrator's replica (bad magic)".into());
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let (Some((seq, tail)), true) = (rest.split_first_chunk::<8>(), rest.len() >= 12) else {
            return Err(format!("cut short at byte {at}"));
        };
        let (len, tail) = tail.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return Err(format!("cut short at byte {at}: a commit of {len} bytes"));
        }
        let (ops, tail) = tail.split_at(len);
        out.push((u64::from_be_bytes(*seq), journal::decode(ops)?));
        rest = tail;
    }
    Ok(out)
}

impl Core {
    /// Called by a commit under the write turn, before its pieces: logs its ops.
    pub(crate) fn log_change(&self, ops: &[Op]) -> Result<()> {
        if self.read_only.is_some() {
            return Ok(());
        }
        if !enabled() {
            // A commit the replica will never see: its entries and marker go first (in
            // this commit's flush), so the next replicated process starts a generation.
            // (A flag, not a look at the tree: this is every commit's path.)
            if self.logged.swap(false, Ordering::AcqRel) {
                self.changes.clear().map_err(|e| self.db_err(e))?;
            }
            return Ok(());
        }
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let mut value = Utc::now().timestamp_millis().to_be_bytes().to_vec();
        value.extend_from_slice(&journal::encode(ops));
        self.changes
            .insert(entry_key(seq), value)
            .map_err(|e| self.db_err(e))?;
        self.logged.store(true, Ordering::Release);
        Ok(())
    }
}

impl Store {
    /// At open: re-applies the newest change (see the module docs), then, without
    /// replication in a writable store, drops the entries and the marker.
    pub(crate) fn settle_changes(&self) -> Result<()> {
        if let Some(item) = self.changes.scan_prefix([ENTRY]).next_back() {
            let (_, value) = item.map_err(|e| self.db_err(e))?;
            let ops = journal::decode(value.get(8..).unwrap_or_default()).map_err(|why| {
                StateError::Damaged {
                    dir: self.dir.clone(),
                    detail: format!("the newest replication entry is unreadable: {why}"),
                }
            })?;
            for op in &ops {
                self.apply_op(op)?;
            }
        }
        let last = self.last_seq()?;
        self.next_seq.store(last + 1, Ordering::Release);
        self.logged
            .store(!self.changes.is_empty(), Ordering::Release);
        Ok(())
    }

    /// The newest sequence number used (by an entry, or shipped per the marker).
    fn last_seq(&self) -> Result<u64> {
        let newest = match self.changes.scan_prefix([ENTRY]).next_back() {
            Some(item) => seq_of(&item.map_err(|e| self.db_err(e))?.0).unwrap_or(0),
            None => 0,
        };
        Ok(newest.max(self.replica_marker()?.map_or(0, |m| m.shipped)))
    }

    /// Where this store's changes were shipped, if anywhere.
    pub fn replica_marker(&self) -> Result<Option<Marker>> {
        match self.changes.get(MARKER).map_err(|e| self.db_err(e))? {
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    /// Every record as one commit (a base of a new generation), at one commit boundary,
    /// with the sequence number it stands at.
    pub fn base(&self) -> Result<(u64, Vec<u8>)> {
        let _turn = self.write_turn();
        let mut ops = Vec::new();
        for item in self.db.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            ops.push(Op::Put(k.to_vec(), v.to_vec()));
        }
        let seq = self.next_seq.load(Ordering::Acquire) - 1;
        let encoded = journal::encode(&ops);
        Ok((seq, segment(std::iter::once((seq, encoded.as_slice())))))
    }

    /// Commits not shipped yet, oldest first, at most about `max_bytes` of them (at least
    /// one).
    pub fn pending_changes(&self, max_bytes: usize) -> Result<Pending> {
        let _turn = self.read_turn();
        let mut pending = Pending::default();
        let mut bytes = 0;
        for item in self.changes.scan_prefix([ENTRY]) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let Some(seq) = seq_of(&k) else { continue };
            let (at, ops) = v.split_at(8.min(v.len()));
            let at = at.try_into().map(i64::from_be_bytes).unwrap_or(0);
            bytes += ops.len();
            pending.commits.push((seq, at, ops.to_vec()));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(pending)
    }

    /// The replica at `url`, generation `generation`, now holds every commit up to
    /// `shipped`: their entries go, durably (one flush per shipment).
    pub fn mark_shipped(&self, url: &str, generation: &str, shipped: u64) -> Result<()> {
        let _turn = self.write_turn();
        let marker = Marker {
            url: url.to_string(),
            generation: generation.to_string(),
            shipped,
        };
        let value = serde_json::to_vec(&marker).map_err(|e| StateError::Io {
            dir: self.dir.clone(),
            source: std::io::Error::other(e),
        })?;
        self.changes
            .insert(MARKER, value)
            .map_err(|e| self.db_err(e))?;
        self.logged.store(true, Ordering::Release);
        for item in self.changes.range(entry_key(0)..=entry_key(shipped)) {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            self.changes.remove(k).map_err(|e| self.db_err(e))?;
        }
        self.flush()
    }

    /// How long the oldest commit not shipped yet has waited (zero when all are
    /// shipped); `None` when this store has no replica.
    pub fn replication_lag(&self) -> Result<Option<std::time::Duration>> {
        if self.replica_marker()?.is_none() && self.changes.is_empty() {
            return Ok(None);
        }
        let oldest = self.pending_changes(1)?.commits.first().map(|c| c.1);
        let now = Utc::now().timestamp_millis();
        Ok(Some(std::time::Duration::from_millis(
            oldest.map_or(0, |at| now.saturating_sub(at).max(0) as u64),
        )))
    }

    /// Applies a replica's base and segments (files as [`segment`] writes them; any
    /// order, repeats allowed) to this store, which must be new: their commits in
    /// sequence order, each once. Returns the sequence number of the last one.
    pub fn restore(&self, files: &[(String, Vec<u8>)]) -> Result<u64> {
        self.refuse_if_read_only()?;
        let mut commits = Vec::new();
        for (name, bytes) in files {
            commits.extend(read_segment(bytes).map_err(|why| StateError::Damaged {
                dir: self.dir.clone(),
                detail: format!("the replica's {name} is unreadable: {why}"),
            })?);
        }
        commits.sort_by_key(|c| c.0);
        let _turn = self.write_turn();
        let mut applied = None;
        for (seq, ops) in commits {
            if applied.is_some_and(|a| seq <= a) {
                continue;
            }
            self.write_pieces(journal::pieces(&ops))?;
            applied = Some(seq);
        }
        self.flush()?;
        Ok(applied.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_refuse_what_is_cut() {
        let a = journal::encode(&[Op::Put(b"k".to_vec(), b"v".to_vec())]);
        let b = journal::encode(&[Op::Del(b"k".to_vec())]);
        let bytes = segment([(7, a.as_slice()), (8, b.as_slice())].into_iter());
        let got = read_segment(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 7);
        assert_eq!(got[1].1, vec![Op::Del(b"k".to_vec())]);
        for cut in MAGIC.len() + 1..bytes.len() {
            let whole = cut == MAGIC.len() + 12 + a.len();
            assert_eq!(read_segment(&bytes[..cut]).is_ok(), whole, "cut at {cut}");
        }
        assert!(read_segment(b"nope").is_err());
    }
}
