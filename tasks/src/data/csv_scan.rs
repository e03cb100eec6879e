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

use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::DEFAULT_SCHEMA_INFER_MAX_RECORD;
use datafusion::prelude::SessionContext;

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
pub fn scan_all(files: &[ToScan]) -> Result<Vec<Scanned>, String> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let state = SessionContext::new().state();
    let mut results: Vec<Option<Result<Scanned, String>>> =
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
                        let r = scan(&state, &f.abs, f.infer)
                            .map_err(|e| format!("cannot read {}: {e}", f.rel));
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
        return Err("a crawl worker crashed; this is a bug, please report it".into());
    }
    Ok(out)
}

/// Reads `path` once: counts its records and, if `infer`, keeps the lines that schema
/// inference needs (the header and [`DEFAULT_SCHEMA_INFER_MAX_RECORD`] more).
fn scan(
    state: &datafusion::execution::SessionState,
    path: &Path,
    infer: bool,
) -> Result<Scanned, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = csv_core::ReaderBuilder::new().build();
    let mut buf = vec![0u8; 256 * 1024];
    // csv-core copies each field's bytes out; they are not needed, so one small buffer
    // is reused (a field longer than it just takes several calls).
    let mut fields = vec![0u8; 64 * 1024];
    let mut ends = vec![0usize; 1024];
    let mut records: u64 = 0;
    let mut prefix: Vec<u8> = Vec::new();
    let mut lines_wanted = if infer {
        DEFAULT_SCHEMA_INFER_MAX_RECORD + 1
    } else {
        0
    };
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        let mut input = &buf[..n];
        if lines_wanted > 0 {
            let mut take = input.len();
            for (at, _) in input.iter().enumerate().filter(|(_, &b)| b == b'\n') {
                lines_wanted -= 1;
                if lines_wanted == 0 {
                    take = at + 1;
                    break;
                }
            }
            prefix.extend_from_slice(&input[..take]);
        }
        loop {
            let (result, read, _, _) = reader.read_record(input, &mut fields, &mut ends);
            input = &input[read..];
            match result {
                csv_core::ReadRecordResult::Record => records += 1,
                csv_core::ReadRecordResult::InputEmpty => break,
                csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => {}
                csv_core::ReadRecordResult::End => break,
            }
        }
        if n == 0 {
            break;
        }
    }
    let rows = records.saturating_sub(1);
    let schema = if infer {
        Some(infer_schema(state, prefix)?)
    } else {
        None
    };
    Ok(Scanned { schema, rows })
}

/// DataFusion's inference for a CSV table with a header, over these bytes.
fn infer_schema(
    state: &datafusion::execution::SessionState,
    bytes: Vec<u8>,
) -> Result<Schema, String> {
    let format = CsvFormat::default().with_has_header(true);
    let stream = futures::stream::once(async move {
        Ok::<_, datafusion::error::DataFusionError>(bytes::Bytes::from(bytes))
    });
    // The stream is in memory: nothing here waits on I/O.
    futures::executor::block_on(format.infer_schema_from_stream(
        state,
        DEFAULT_SCHEMA_INFER_MAX_RECORD,
        stream,
    ))
    .map(|(schema, _)| schema)
    .map_err(|e| e.to_string())
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
        let e = scan_all(&files).err().unwrap();
        assert!(e.starts_with("cannot read gone.csv:"), "{e}");
    }
}
