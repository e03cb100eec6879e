//! How a record's value is stored: its JSON, compressed with zstd against a dictionary
//! that ships in the binary.
//!
//! **Why.** A record is a few hundred bytes of JSON whose field names, statuses and
//! timestamp shapes repeat in every record; compressed alone, such a value barely
//! shrinks (zstd has nothing to refer back to), but against a dictionary of typical
//! records it takes 2–4× less. sled then writes every byte several times (a leaf is
//! rewritten whole every few changes, and a segment is reclaimed only once half of it is
//! garbage), so every byte saved here is saved several times on disk. sled's own
//! `compression` feature would compress whole pages, but it needs an older zstd than
//! the one Arrow links, and a binary can link only one.
//!
//! **Format.** A value whose first byte is `{` is plain JSON: every value written before
//! schema v4, and any value compression would not shrink. A value starting with
//! [`ZSTD_V1`] is that byte followed by one zstd frame, with its content size, compressed
//! against `codec/dict-v1.json` (a raw-content dictionary: typical records of every
//! kind, none of them real data).
//!
//! **Invariant:** `dict-v1.json` never changes, not by a byte: values on disk need it to
//! be read (a test pins its hash). A better dictionary is `dict-v2.json` under a new
//! leading byte, with v1 kept for reading.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// The first byte of a value compressed against dictionary v1. JSON cannot start with
/// it (JSON text starts with `{`, `[`, `"`, a digit, a letter or whitespace).
pub(crate) const ZSTD_V1: u8 = 0x01;

const DICT_V1: &[u8] = include_bytes!("codec/dict-v1.json");

/// zstd's default level. Level 6 stores real records 14 % smaller, but a chain of 10,000
/// noop tasks (four records a task) took ~4 % longer with it and no measurably longer
/// with level 3, alternated with the previous release on the same machine.
const LEVEL: i32 = 3;

/// The largest value a frame may claim to hold: a corrupt size must not make us
/// allocate gigabytes (the largest real values, a backfill's dates, are megabytes).
const MAX_VALUE: u64 = 1 << 30;

fn encoder_dict() -> &'static EncoderDictionary<'static> {
    static DICT: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| EncoderDictionary::copy(DICT_V1, LEVEL))
}

fn decoder_dict() -> &'static DecoderDictionary<'static> {
    static DICT: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| DecoderDictionary::copy(DICT_V1))
}

thread_local! {
    // A compression context is ~1 MB of tables: one per thread, reused.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of a record's JSON: compressed when that makes it smaller.
pub(crate) fn pack(json: Vec<u8>) -> Vec<u8> {
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Compressor::with_prepared_dictionary(encoder_dict()).ok();
        }
        let frame = slot.as_mut()?.compress(&json).ok()?;
        let mut out = Vec::with_capacity(1 + frame.len());
        out.push(ZSTD_V1);
        out.extend_from_slice(&frame);
        Some(out)
    });
    match compressed {
        Some(c) if c.len() < json.len() => c,
        _ => json,
    }
}

/// A stored value's JSON.
pub(crate) fn unpack(value: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    match value.first() {
        Some(&ZSTD_V1) => {
            let frame = &value[1..];
            let size = zstd::zstd_safe::get_frame_content_size(frame)
                .map_err(|_| "not a zstd frame".to_string())?
                .ok_or("its zstd frame does not say its size")?;
            if size > MAX_VALUE {
                return Err(format!("its zstd frame claims {size} bytes"));
            }
            DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(
                        Decompressor::with_prepared_dictionary(decoder_dict())
                            .map_err(|e| format!("zstd: {e}"))?,
                    );
                }
                let Some(d) = slot.as_mut() else {
                    return Err("zstd: no decompressor".to_string());
                };
                d.decompress(frame, size as usize)
                    .map(Cow::Owned)
                    .map_err(|e| format!("its zstd frame does not decompress: {e}"))
            })
        }
        _ => Ok(Cow::Borrowed(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_v1_never_changes() {
        use sha2::{Digest, Sha256};
        let hex: String = Sha256::digest(DICT_V1)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Values on disk were compressed against exactly these bytes.
        assert_eq!(
            hex,
            "56450d8aceb5e4374bda85ba8a54474b131ead7a651c10eda3d0649f7131970c"
        );
    }

    #[test]
    fn a_record_round_trips_smaller() {
        let json = br#"{"v":4,"run_id":"20261207T015322-0036","task_id":"b","attempt":1,"status":"succeeded","started_at":"2026-12-07T01:53:22.336129024Z","ended_at":"2026-12-07T01:53:22.337150772Z","exit_code":null,"error":null,"output_tail":"","outputs":{}}"#;
        let packed = pack(json.to_vec());
        assert_eq!(packed[0], ZSTD_V1);
        assert!(packed.len() * 2 < json.len(), "{} bytes", packed.len());
        assert_eq!(unpack(&packed).unwrap().as_ref(), &json[..]);
    }

    #[test]
    fn plain_json_reads_as_it_is_and_tiny_values_stay_plain() {
        let json = br#"{"v":3,"a":1}"#;
        assert_eq!(unpack(json).unwrap().as_ref(), &json[..]);
        assert_eq!(pack(json.to_vec()), json.to_vec());
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let mut packed =
            pack(br#"{"v":4,"task_id":"a","status":"succeeded","outputs":{}}"#.repeat(4));
        assert!(unpack(&[ZSTD_V1]).is_err());
        assert!(unpack(&[ZSTD_V1, 1, 2, 3]).is_err());
        let n = packed.len();
        packed.truncate(n - 3);
        assert!(unpack(&packed).is_err());
        // A frame claiming an absurd size is refused before allocating it.
        let mut huge = vec![ZSTD_V1];
        huge.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0xe0]);
        huge.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(unpack(&huge).is_err());
    }
}
