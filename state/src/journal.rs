//! One durable write per commit: a redo journal of our own in front of sled's plain writes.
//!
//! **Why.** sled makes a [`sled::Batch`] atomic by writing a manifest, and
//! `PageCache::pin_log` (marked "HACK" in sled 0.34) seals the I/O buffer around that
//! manifest. So every batch costs two disk writes from two I/O threads: the 24-byte
//! manifest, then the records. A chain of tasks commits once per task, so that second write
//! was half of the engine's per-task cost.
//!
//! **How.** A commit's records are turned into [`Op`]s and written in pieces of at most
//! [`PIECE_BYTES`]. A piece of more than one op is written as:
//!
//! 1. the journal entry ([`KEY`] in the store's `journal` tree), holding every op of the
//!    piece;
//! 2. each op, as a plain sled insert or remove;
//! 3. the removal of the journal entry.
//!
//! All of it goes into sled's in-memory log buffer, and [`Store::commit`] flushes once at
//! the end: one disk write.
//!
//! **Why it is atomic.** sled recovers a *prefix* of its log: recovery stops at the first
//! torn or missing message (sled's own batches rely on exactly this). Commits are
//! serialized (the store's `turn` lock), so the log holds each piece's messages in the
//! order above, and a crash leaves one of: nothing of the piece; the journal entry and
//! some or all of its ops; all of it, entry removed. When a store is opened, a journal entry still present is
//! replayed (its ops are whole values, so applying them again is harmless) and removed.
//! Readers take the same lock, around each read, so no reader sees half a piece.
//!
//! The entry lives in a tree of its own. In the records' tree, its insert and removal per
//! commit grew sled's log by 45 % over three runs of `daily.yaml` (sled rewrites a whole
//! leaf every few changes to it, and the entry shared a leaf with other records; run
//! records hold their workflow's text); in its own tree, by 3 %.
//!
//! Pieces stay under sled's blob threshold (a message over a quarter of its 512 KiB
//! segment goes to a separate file, which sled does not fsync), so a journal entry is
//! always inside the log. A commit larger than one piece (the first records of a
//! 100,000-task run) is atomic piece by piece: a crash leaves a prefix of its pieces,
//! and writers put the record that makes the others meaningful first.

use crate::{Core, Result, StateError};

/// The name of the tree that holds the journal entry.
pub(crate) const TREE: &[u8] = b"journal";

/// The journal entry's key. At most one exists at a time: commits are serialized and each
/// piece removes its entry before the next piece begins.
pub(crate) const KEY: &[u8] = b"commit";

/// Most bytes of keys and values one journal entry holds (see the module docs).
pub const PIECE_BYTES: usize = 64 << 10;

/// Format version, the entry's first byte. A new format needs a new
/// [`crate::SCHEMA_VERSION`] too, so that an older binary refuses the store (`TooNew`)
/// before it reads the journal.
const VERSION: u8 = 1;
const PUT: u8 = 1;
const DEL: u8 = 2;

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Put(k, v) => k.len() + v.len(),
            Op::Del(k) => k.len(),
        }
    }
}

/// Splits `ops` into consecutive pieces of at most [`PIECE_BYTES`] (a single larger op is
/// a piece of its own).
pub(crate) fn pieces(ops: &[Op]) -> impl Iterator<Item = &[Op]> {
    let mut rest = ops;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        for op in rest {
            bytes += op.bytes();
            if n > 0 && bytes > PIECE_BYTES {
                break;
            }
            n += 1;
        }
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

/// Splits a batch of commits into pieces: `units` are consecutive ranges of `ops`, one per
/// commit. Whole commits are packed together up to [`PIECE_BYTES`]; a commit is split only
/// when it alone is larger than a piece (as [`pieces`] splits it), so every commit that
/// fits in a piece stays atomic.
pub(crate) fn pack<'a>(ops: &'a [Op], units: &[std::ops::Range<usize>]) -> Vec<&'a [Op]> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut bytes = 0;
    for unit in units {
        let size: usize = ops[unit.clone()].iter().map(Op::bytes).sum();
        if size > PIECE_BYTES {
            if let Some(s) = start.take() {
                out.push(&ops[s..unit.start]);
            }
            out.extend(pieces(&ops[unit.clone()]));
            bytes = 0;
            continue;
        }
        if let Some(s) = start {
            if bytes + size > PIECE_BYTES {
                out.push(&ops[s..unit.start]);
                start = None;
            }
        }
        if start.is_none() {
            start = Some(unit.start);
            bytes = 0;
        }
        bytes += size;
    }
    if let Some(s) = start {
        out.push(&ops[s..units.last().map_or(s, |u| u.end)]);
    }
    out.retain(|p| !p.is_empty());
    out
}

/// `[VERSION] ( [PUT] key_len:u32le key value_len:u32le value | [DEL] key_len:u32le key )*`
pub(crate) fn encode(ops: &[Op]) -> Vec<u8> {
    let size = 1 + ops.iter().map(|op| 9 + op.bytes()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(VERSION);
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        // Keys and values are far below 4 GiB: a piece holds at most one op over 64 KiB,
        // and sled itself refuses values that large.
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    for op in ops {
        match op {
            Op::Put(k, v) => {
                out.push(PUT);
                field(&mut out, k);
                field(&mut out, v);
            }
            Op::Del(k) => {
                out.push(DEL);
                field(&mut out, k);
            }
        }
    }
    out
}

/// The ops of a journal entry, or what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Op>, String> {
    fn field<'a>(rest: &mut &'a [u8], at: usize) -> Result<&'a [u8], String> {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("cut short at byte {at} (a length)"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!(
                "cut short at byte {at}: a field of {len} bytes, {} left",
                tail.len()
            ));
        }
        let (value, tail) = tail.split_at(len);
        *rest = tail;
        Ok(value)
    }
    let Some((&version, mut rest)) = bytes.split_first() else {
        return Err("empty".into());
    };
    if version != VERSION {
        return Err(format!(
            "format {version}, this binary reads format {VERSION}; upgrade orchestrator"
        ));
    }
    let mut ops = Vec::new();
    while let Some((&tag, tail)) = rest.split_first() {
        let at = bytes.len() - rest.len();
        rest = tail;
        match tag {
            PUT => {
                let k = field(&mut rest, at + 1)?.to_vec();
                let at = bytes.len() - rest.len();
                let v = field(&mut rest, at)?.to_vec();
                ops.push(Op::Put(k, v));
            }
            DEL => ops.push(Op::Del(field(&mut rest, at + 1)?.to_vec())),
            other => return Err(format!("unknown operation {other} at byte {at}")),
        }
    }
    Ok(ops)
}

impl Core {
    /// Writes each piece through the journal, atomically (see the module docs). The caller
    /// holds the `turn` lock and flushes afterwards.
    pub(crate) fn write_pieces<'a>(&self, pieces: impl Iterator<Item = &'a [Op]>) -> Result<()> {
        if self.torn.load(std::sync::atomic::Ordering::Acquire) {
            // An earlier piece failed midway: finish it before anything overwrites its
            // journal entry.
            self.replay_journal()?;
        }
        for piece in pieces {
            if let [op] = piece {
                // One insert or remove is atomic in sled on its own.
                self.apply_op(op)?;
                continue;
            }
            self.torn.store(true, std::sync::atomic::Ordering::Release);
            self.journal
                .insert(KEY, encode(piece))
                .map_err(|e| self.db_err(e))?;
            for op in piece {
                self.apply_op(op)?;
            }
            self.journal.remove(KEY).map_err(|e| self.db_err(e))?;
            self.torn.store(false, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    pub(crate) fn apply_op(&self, op: &Op) -> Result<()> {
        match op {
            Op::Put(k, v) => self.db.insert(k, v.as_slice()).map(|_| ()),
            Op::Del(k) => self.db.remove(k).map(|_| ()),
        }
        .map_err(|e| self.db_err(e))
    }

    /// Completes the piece a crash interrupted, if the journal holds one, durably.
    /// Returns whether it did. Called when a store is opened (also a read-only copy,
    /// which then reads the completed state) and before the next commit after a failed
    /// one.
    pub(crate) fn replay_journal(&self) -> Result<bool> {
        let Some(entry) = self.journal.get(KEY).map_err(|e| self.db_err(e))? else {
            self.torn.store(false, std::sync::atomic::Ordering::Release);
            return Ok(false);
        };
        let ops = decode(&entry).map_err(|why| StateError::Damaged {
            dir: self.dir.clone(),
            detail: format!(
                "the journal of an interrupted commit ({} bytes) is unreadable: {why}",
                entry.len()
            ),
        })?;
        for op in &ops {
            self.apply_op(op)?;
        }
        self.journal.remove(KEY).map_err(|e| self.db_err(e))?;
        self.flush()?;
        self.torn.store(false, std::sync::atomic::Ordering::Release);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn entries_round_trip() {
        let ops = vec![
            put("r\0run", "{\"v\":2}"),
            Op::Del(b"p\0run\0n1".to_vec()),
            put("t\0run\0a", ""),
            Op::Del(Vec::new()),
        ];
        assert_eq!(decode(&encode(&ops)).unwrap(), ops);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_entry_is_an_error_at_every_cut() {
        let bytes = encode(&[put("k1", "value one"), Op::Del(b"k2".to_vec())]);
        // Every proper prefix but the ones that end between two whole ops is refused.
        let whole = [1, 1 + 1 + 4 + 2 + 4 + 9, bytes.len()];
        for cut in 0..bytes.len() {
            let got = decode(&bytes[..cut]);
            assert_eq!(got.is_ok(), whole.contains(&cut), "cut at {cut}: {got:?}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode(&bad).unwrap_err().contains("format 9"));
        let mut bad = bytes;
        bad[1] = 7;
        assert_eq!(decode(&bad).unwrap_err(), "unknown operation 7 at byte 1");
    }

    #[test]
    fn pieces_stay_under_the_budget_and_keep_order() {
        let big = "x".repeat(PIECE_BYTES / 3);
        let mut ops: Vec<Op> = (0..10).map(|i| put(&format!("k{i}"), &big)).collect();
        ops.insert(4, put("huge", &"y".repeat(PIECE_BYTES * 2)));
        let got: Vec<&[Op]> = pieces(&ops).collect();
        assert_eq!(got.concat(), ops, "every op once, in order");
        for p in &got {
            let bytes: usize = p.iter().map(Op::bytes).sum();
            assert!(
                p.len() == 1 || bytes <= PIECE_BYTES,
                "{} ops, {bytes} bytes",
                p.len()
            );
        }
        assert!(got
            .iter()
            .any(|p| p.len() == 1 && p[0].bytes() > PIECE_BYTES));
        assert_eq!(pieces(&[]).count(), 0);
    }
}
