//! One pass over each CSV file a crawl meets, on every core: its schema and its row count.
//!
//! A crawl of a landing zone of thousands of small files used to cost a DataFusion schema
//! inference per file (an object-store read and an async stream each) and then a
//! `SELECT count(*)` over the whole table. Here each file is read once, sequentially, by
//! one of `available_parallelism` threads:
//! - the schema is inferred by DataFusion's own CSV inference (so types are exactly what a
//!   listing table would infer) from the file's first
//!   [`DEFAULT_SCHEMA_INFER_MAX_RECORD`] records, handed over as one in-memory chunk;
//! - the rows are counted by `csv-core`, the record splitter arrow's CSV reader uses, with
//!   the same settings, so quoted newlines, CRLF and blank lines count as a query counts
//!   them (`counts_match_datafusion` pins this).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::DEFAULT_SCHEMA_INFER_MAX_RECORD;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::crawl::{CrawlError, ReadError};

/// What one read of a CSV file learned.
pub struct Scanned {
    /// `None` when only the count was asked for.
    pub schema: Option<Schema>,
    /// Data rows (the header not counted).
    pub rows: u64,
}

/// A file to scan: where it is, how errors name it, and whether to infer its schema.
pub struct ToScan {
    pub abs: PathBuf,
    pub rel: String,
    pub infer: bool,
}

/// Scans `files` on every core; results in the same order. The first error wins.
pub fn scan_all(files: &[ToScan]) -> Result<Vec<Scanned>, CrawlError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let state = SessionContext::new().state();
    let mut results: Vec<Option<Result<Scanned, CrawlError>>> =
        (0..files.len()).map(|_| None).collect();
    let mut crashed = false;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        let r = scan(&state, &f.abs, f.infer).map_err(|source| CrawlError::Read {
                            file: f.rel.clone(),
                            source,
                        });
                        let failed = r.is_err();
                        mine.push((i, r));
                        if failed {
                            // Stop every worker: the crawl fails on the first bad file.
                            next.store(files.len(), Ordering::Relaxed);
                        }
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(mine) => {
                    for (i, r) in mine {
                        results[i] = Some(r);
                    }
                }
                Err(_) => crashed = true,
            }
        }
    });
    let mut out = Vec::with_capacity(files.len());
    let mut missing = crashed;
    for r in results {
        match r {
            Some(Ok(s)) => out.push(s),
            Some(Err(e)) => return Err(e),
            // Left unscanned because another file failed; that error is returned above.
            None => missing = true,
        }
    }
    if missing {
        return Err(CrawlError::WorkerCrashed);
    }
    Ok(out)
}

/// Reads `path` once: counts its records and, if `infer`, infers its schema from the
/// header and the first [`DEFAULT_SCHEMA_INFER_MAX_RECORD`] records.
fn scan(
    state: &datafusion::execution::SessionState,
    path: &Path,
    infer: bool,
) -> Result<Scanned, ReadError> {
    let mut file = std::fs::File::open(path)?;
    let mut reader = csv_core::ReaderBuilder::new().build();
    let mut buf = vec![0u8; 256 * 1024];
    // csv-core copies each field's bytes out. While inferring, a record's fields are kept
    // whole (the buffers grow); after that they are not needed, so the buffers are reused
    // from the start on every call (a long field just takes several calls).
    let mut fields = vec![0u8; 64 * 1024];
    let mut ends = vec![0usize; 1024];
    let (mut out_len, mut ends_len) = (0, 0);
    let mut records: u64 = 0;
    // The bytes inference read (the header and its records), for the exact fallback.
    let mut prefix: Vec<u8> = Vec::new();
    let mut inference = infer.then(Inference::default);
    let mut schema = None;
    loop {
        let n = file.read(&mut buf)?;
        let mut input = &buf[..n];
        loop {
            let inferring = inference.is_some();
            let (result, read, wrote, ended) = if inferring {
                reader.read_record(input, &mut fields[out_len..], &mut ends[ends_len..])
            } else {
                reader.read_record(input, &mut fields, &mut ends)
            };
            if inferring {
                prefix.extend_from_slice(&input[..read]);
                out_len += wrote;
                ends_len += ended;
            }
            input = &input[read..];
            match result {
                csv_core::ReadRecordResult::Record => {
                    records += 1;
                    if let Some(inf) = inference.as_mut() {
                        inf.record(&fields[..out_len], &ends[..ends_len]);
                        (out_len, ends_len) = (0, 0);
                        if inf.records == DEFAULT_SCHEMA_INFER_MAX_RECORD {
                            let done = std::mem::take(inf);
                            inference = None;
                            schema = Some(done.into_schema(state, std::mem::take(&mut prefix))?);
                        }
                    }
                }
                csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => break,
                csv_core::ReadRecordResult::OutputFull => {
                    if inferring {
                        let grown = fields.len() * 2;
                        fields.resize(grown, 0);
                    }
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if inferring {
                        let grown = ends.len() * 2;
                        ends.resize(grown, 0);
                    }
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    if let Some(inf) = inference {
        // Fewer records than inference reads: the file is all read.
        schema = Some(inf.into_schema(state, prefix)?);
    }
    Ok(Scanned {
        schema,
        rows: records.saturating_sub(1),
    })
}

/// Arrow's CSV type inference, without its cost: arrow matches every value against a
/// `RegexSet` of eight patterns (with an allocation per value), which was most of a
/// crawl's time. [`classify`] answers what that set answers for ASCII values; anything
/// else (a non-ASCII byte, a record whose field count differs from the header's, a file
/// with no data rows) hands the same bytes to DataFusion's own inference, so the schema
/// is always exactly the one DataFusion would infer (`fast_inference_equals_datafusion`).
#[derive(Default)]
struct Inference {
    names: Option<Vec<String>>,
    /// Per column, one bit per type a value had (arrow's `InferredDataType::packed`).
    types: Vec<u16>,
    records: usize,
    /// Something the fast path does not decide was met.
    fallback: bool,
}

impl Inference {
    fn record(&mut self, fields: &[u8], ends: &[usize]) {
        if self.fallback {
            return;
        }
        let mut start = 0;
        let values = ends.iter().map(|&end| {
            let v = fields.get(start..end).unwrap_or_default();
            start = end;
            v
        });
        let Some(names) = &self.names else {
            let mut names = Vec::with_capacity(ends.len());
            for v in values {
                match std::str::from_utf8(v) {
                    Ok(name) if v.is_ascii() => names.push(name.to_string()),
                    _ => {
                        self.fallback = true;
                        return;
                    }
                }
            }
            self.types = vec![0; names.len()];
            self.names = Some(names);
            return;
        };
        if ends.len() != names.len() {
            self.fallback = true;
            return;
        }
        self.records += 1;
        for (packed, v) in self.types.iter_mut().zip(values) {
            // An empty value is a null: it says nothing about the type.
            if v.is_empty() {
                continue;
            }
            if !v.is_ascii() {
                self.fallback = true;
                return;
            }
            *packed |= classify(v);
        }
    }

    /// The schema, from the fast path or else from DataFusion over `prefix`.
    fn into_schema(
        self,
        state: &datafusion::execution::SessionState,
        prefix: Vec<u8>,
    ) -> Result<Schema, DataFusionError> {
        match self.names {
            Some(names) if !self.fallback && self.records > 0 => Ok(Schema::new(
                names
                    .into_iter()
                    .zip(self.types)
                    .map(|(name, packed)| Field::new(name, data_type(packed), true))
                    .collect::<Vec<_>>(),
            )),
            _ => infer_schema(state, prefix),
        }
    }
}

const UTF8: u16 = 1 << 8;

/// The bit arrow's `InferredDataType::update` sets for a non-empty ASCII value: the first
/// of its patterns (boolean, integer, decimal, date, timestamp s/ms/us/ns) that matches.
fn classify(v: &[u8]) -> u16 {
    if v.first() == Some(&b'"') {
        return UTF8;
    }
    if v.eq_ignore_ascii_case(b"true") || v.eq_ignore_ascii_case(b"false") {
        return 1;
    }
    let unsigned = v.strip_prefix(b"-").unwrap_or(v);
    if !unsigned.is_empty() && unsigned.iter().all(u8::is_ascii_digit) {
        // An integer too long for i64 is text.
        let fits = std::str::from_utf8(v).is_ok_and(|t| t.parse::<i64>().is_ok());
        return if v.len() >= 19 && !fits { UTF8 } else { 1 << 1 };
    }
    if is_decimal(unsigned) {
        return 1 << 2;
    }
    if let Some(bit) = temporal(v) {
        return 1 << bit;
    }
    if matches!(v, b"NaN" | b"nan" | b"inf" | b"-inf") {
        return 1 << 2;
    }
    UTF8
}

fn leading_digits(v: &[u8]) -> usize {
    v.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `(\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+)`, whole.
fn is_decimal(v: &[u8]) -> bool {
    let whole = leading_digits(v);
    let rest = &v[whole..];
    let exponent = |r: &[u8]| match r.split_first() {
        Some((b'e' | b'E', r)) => {
            let r = r
                .strip_prefix(b"-")
                .or_else(|| r.strip_prefix(b"+"))
                .unwrap_or(r);
            !r.is_empty() && r.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    match rest.split_first() {
        Some((b'.', r)) => {
            let fraction = leading_digits(r);
            (whole > 0 || fraction > 0) && (r.len() == fraction || exponent(&r[fraction..]))
        }
        _ => whole > 0 && exponent(rest),
    }
}

/// Which of arrow's date and timestamp patterns `v` matches first: 3 date, 4 seconds,
/// 5 milli-, 6 micro-, 7 nanoseconds.
fn temporal(v: &[u8]) -> Option<u16> {
    let digits =
        |r: std::ops::Range<usize>| v.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let date = v.len() >= 10
        && digits(0..4)
        && v[4] == b'-'
        && digits(5..7)
        && v[7] == b'-'
        && digits(8..10);
    if !date {
        return None;
    }
    if v.len() == 10 {
        return Some(3);
    }
    let time = v.len() >= 19
        && matches!(v[10], b'T' | b' ')
        && digits(11..13)
        && v[13] == b':'
        && digits(14..16)
        && v[16] == b':'
        && digits(17..19);
    if !time {
        return None;
    }
    // After the seconds: nothing, or a character the pattern allows there followed by
    // anything but a line feed (`.` does not match `\n`).
    let tail_ok = |t: &[u8]| t.is_empty() || !t[1..].contains(&b'\n');
    let rest = &v[19..];
    match rest.first() {
        None => Some(4),
        Some(b'.') => {
            let n = leading_digits(&rest[1..]);
            if n == 0 || !tail_ok(&rest[1 + n..]) {
                return None;
            }
            match n {
                1..=3 => Some(5),
                4..=6 => Some(6),
                7..=9 => Some(7),
                _ => None,
            }
        }
        Some(c) if !c.is_ascii_digit() => tail_ok(rest).then_some(4),
        Some(_) => None,
    }
}

/// Arrow's `InferredDataType::get`.
fn data_type(packed: u16) -> DataType {
    match packed {
        0 => DataType::Null,
        1 => DataType::Boolean,
        2 => DataType::Int64,
        4 | 6 => DataType::Float64,
        b if b & !0b1111_1000 == 0 => match b.leading_zeros() {
            8 => DataType::Timestamp(TimeUnit::Nanosecond, None),
            9 => DataType::Timestamp(TimeUnit::Microsecond, None),
            10 => DataType::Timestamp(TimeUnit::Millisecond, None),
            11 => DataType::Timestamp(TimeUnit::Second, None),
            _ => DataType::Date32,
        },
        _ => DataType::Utf8,
    }
}

/// DataFusion's inference for a CSV table with a header, over these bytes.
fn infer_schema(
    state: &datafusion::execution::SessionState,
    bytes: Vec<u8>,
) -> Result<Schema, DataFusionError> {
    let format = CsvFormat::default().with_has_header(true);
    let stream =
        futures::stream::once(async move { Ok::<_, DataFusionError>(bytes::Bytes::from(bytes)) });
    // The stream is in memory: nothing here waits on I/O.
    futures::executor::block_on(format.infer_schema_from_stream(
        state,
        DEFAULT_SCHEMA_INFER_MAX_RECORD,
        stream,
    ))
    .map(|(schema, _)| schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::CsvReadOptions;

    async fn datafusion_count_and_schema(path: &Path) -> (u64, Schema) {
        let ctx = SessionContext::new();
        let df = ctx
            .read_csv(
                path.display().to_string(),
                CsvReadOptions::new().has_header(true),
            )
            .await
            .unwrap();
        let schema = df.schema().as_arrow().clone();
        (df.count().await.unwrap() as u64, schema)
    }

    #[tokio::test]
    async fn counts_match_datafusion() {
        let dir = tempfile::tempdir().unwrap();
        let many: String = (0..2500).map(|i| format!("{i},{}.5\n", i * 2)).collect();
        let cases = [
            ("plain", "a,b\n1,2\n3,4\n".to_string()),
            ("no final newline", "a,b\n1,2\n3,4".to_string()),
            ("crlf", "a,b\r\n1,2\r\n3,4\r\n".to_string()),
            ("blank lines", "a,b\n1,2\n\n3,4\n\n".to_string()),
            ("quoted newline", "a,b\n1,\"x\ny\"\n3,\"z\"\n".to_string()),
            ("header only", "a,b\n".to_string()),
            // More rows than inference reads; a float first seen after row 1,000 is
            // missed by DataFusion's inference too, so both say Int64 here.
            ("many", format!("a,b\n{many}")),
        ];
        let state = SessionContext::new().state();
        for (name, text) in cases {
            let p = dir.path().join(format!("{}.csv", name.replace(' ', "_")));
            std::fs::write(&p, &text).unwrap();
            let ours = scan(&state, &p, true).unwrap();
            let (rows, schema) = datafusion_count_and_schema(&p).await;
            assert_eq!(ours.rows, rows, "{name}: row count");
            let ours: Vec<String> = ours
                .schema
                .unwrap()
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect();
            let theirs: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect();
            assert_eq!(ours, theirs, "{name}: schema");
        }
    }

    /// Arrow's `InferredDataType::update`, verbatim: the reference [`classify`] must equal.
    fn arrows_bit(v: &str) -> u16 {
        use std::sync::LazyLock;
        static SET: LazyLock<regex::RegexSet> = LazyLock::new(|| {
            regex::RegexSet::new([
                r"(?i)^(true)$|^(false)$(?-i)",
                r"^-?(\d+)$",
                r"^-?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+([eE][-+]?\d+))$",
                r"^\d{4}-\d\d-\d\d$",
                r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[^\d\.].*)?$",
                r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,3}(?:[^\d].*)?$",
                r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,6}(?:[^\d].*)?$",
                r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{1,9}(?:[^\d].*)?$",
            ])
            .unwrap()
        });
        if v.starts_with('"') {
            1 << 8
        } else if let Some(m) = SET.matches(v).into_iter().next() {
            if m == 1 && v.len() >= 19 && v.parse::<i64>().is_err() {
                1 << 8
            } else {
                1 << m
            }
        } else if v == "NaN" || v == "nan" || v == "inf" || v == "-inf" {
            1 << 2
        } else {
            1 << 8
        }
    }

    #[test]
    fn classify_answers_what_arrows_patterns_answer() {
        let known = [
            "true",
            "FALSE",
            "tRuE",
            "truee",
            "0",
            "-0",
            "--1",
            "+1",
            "123",
            "-9223372036854775808",
            "9223372036854775808",
            "0000000000000000000001",
            "1.",
            ".5",
            ".",
            "-.5",
            "1e5",
            "1E-5",
            "1e",
            "1.e5",
            ".e5",
            "e5",
            "1.5e+10",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Inf",
            "2026-01-02",
            "2026-1-02",
            "2026-01-02T10:00:00",
            "2026-01-02 10:00:00Z",
            "2026-01-02 10:00:00+01:00",
            "2026-01-02T10:00:00.1",
            "2026-01-02T10:00:00.1234",
            "2026-01-02T10:00:00.1234567",
            "2026-01-02T10:00:00.1234567890",
            "2026-01-02T10:00:00.",
            "2026-01-02T10:00:001",
            "2026-01-02T10:00:00\n",
            "2026-01-02T10:00:00Z\nx",
            "2026-01-02T10:00:00.5\n",
            "2026-01-02T10:00:00.5Z\n",
            "2026-01-02X",
            "\"quoted\"",
            "NVDA",
            "",
        ];
        for v in known.iter().filter(|v| !v.is_empty()) {
            assert_eq!(classify(v.as_bytes()), arrows_bit(v), "{v:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]
        #[test]
        fn classify_equals_arrows_patterns_on_any_ascii(
            v in proptest::string::string_regex(concat!(
                r"[-+0-9.eE]{1,22}|[tTrRuUeEfFaAlLsSnNiI]{3,6}|",
                r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,11})?)?[-+0-9Z:. \nx]{0,4}|",
                r"[ -~\n]{1,12}",
            )).unwrap()
        ) {
            proptest::prop_assert_eq!(classify(v.as_bytes()), arrows_bit(&v), "{:?}", v);
        }
    }

    #[tokio::test]
    async fn fast_inference_equals_datafusion() {
        let dir = tempfile::tempdir().unwrap();
        let column = |kind: usize, row: usize| -> String {
            match kind {
                0 => format!("{}", row as i64 * 7 - 50),
                1 => format!("{}.{}", row, row % 10),
                2 => ["true", "False", ""][row % 3].to_string(),
                3 => format!("2026-01-{:02}", row % 28 + 1),
                4 => format!("2026-01-02T10:00:{:02}.{}", row % 60, row),
                5 => format!("S{row}"),
                6 => {
                    if row == 700 {
                        "1.5".into()
                    } else {
                        format!("{row}")
                    }
                }
                7 => String::new(),
                8 => {
                    if row.is_multiple_of(2) {
                        "\"a,b\"".into()
                    } else {
                        "x".into()
                    }
                }
                9 => {
                    if row == 3 {
                        "café".into()
                    } else {
                        "cafe".into()
                    }
                }
                _ => format!("{}e3", row),
            }
        };
        let mut cases = Vec::new();
        for kinds in [
            vec![0, 1, 2, 3, 4, 5],
            vec![6, 7, 8],
            vec![9, 0],
            vec![10, 1, 5],
        ] {
            for rows in [1, 5, 1500] {
                let header: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
                let mut text = header.join(",") + "\n";
                for r in 0..rows {
                    let line: Vec<String> = kinds.iter().map(|&k| column(k, r)).collect();
                    text += &(line.join(",") + "\n");
                }
                cases.push((format!("k{kinds:?}-r{rows}"), text));
            }
        }
        cases.push(("bom".into(), "\u{feff}a,b\n1,2\n".into()));
        cases.push(("non-ascii header".into(), "prix €,b\n1,2\n".into()));
        let state = SessionContext::new().state();
        for (i, (name, text)) in cases.into_iter().enumerate() {
            let p = dir.path().join(format!("{i}.csv"));
            std::fs::write(&p, &text).unwrap();
            let ours = scan(&state, &p, true).unwrap();
            let (rows, schema) = datafusion_count_and_schema(&p).await;
            assert_eq!(ours.rows, rows, "{name}: row count");
            assert_eq!(ours.schema.unwrap(), schema, "{name}: schema");
        }
    }

    #[test]
    fn a_ragged_record_fails_as_datafusion_fails() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ragged.csv");
        std::fs::write(&p, "a,b\n1,2\n3\n").unwrap();
        let state = SessionContext::new().state();
        let e = scan(&state, &p, true).err().unwrap().to_string();
        assert!(e.contains("unequal lengths"), "{e}");
    }

    #[test]
    fn scans_in_order_and_fails_on_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..7 {
            let p = dir.path().join(format!("{i}.csv"));
            let rows: String = (0..i).map(|r| format!("{r},x\n")).collect();
            std::fs::write(&p, format!("n,s\n{rows}")).unwrap();
            files.push(ToScan {
                abs: p,
                rel: format!("{i}.csv"),
                infer: i % 2 == 0,
            });
        }
        let got = scan_all(&files).unwrap();
        let rows: Vec<u64> = got.iter().map(|s| s.rows).collect();
        assert_eq!(rows, vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(got[2].schema.is_some() && got[1].schema.is_none());
        files.push(ToScan {
            abs: dir.path().join("gone.csv"),
            rel: "gone.csv".into(),
            infer: true,
        });
        let e = scan_all(&files).err().unwrap().to_string();
        assert!(e.starts_with("cannot read gone.csv:"), "{e}");
    }
}
