//! Every record type the store can write reads back equal, through both ways records are
//! read: the store's own decode (from bytes) and a recovery point's (from a JSON value).
//! `roundtrip` matches [`Write`] without a wildcard, so a new record type does not
//! compile until it is generated here too: nothing can be written that cannot be read.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, control characters and NUL included.
    prop_oneof![".{0,12}", "\\PC{0,8}", Just(String::new())]
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // Years 1 to 9999: what RFC 3339 text can say.
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or_default())
}

fn opt_time() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    proptest::option::of(time())
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn outputs() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    proptest::collection::btree_map(text(), json(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..4)
}

fn params() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(text(), text(), 0..4)
}

fn run_status() -> impl Strategy<Value = RunStatus> {
    prop_oneof![
        Just(RunStatus::Running),
        Just(RunStatus::Succeeded),
        Just(RunStatus::Failed),
        Just(RunStatus::Cancelled),
        Just(RunStatus::Interrupted),
        Just(RunStatus::Skipped),
    ]
}

fn task_status() -> impl Strategy<Value = TaskStatus> {
    prop_oneof![
        Just(TaskStatus::Pending),
        Just(TaskStatus::Running),
        Just(TaskStatus::Succeeded),
        Just(TaskStatus::Failed),
        Just(TaskStatus::Skipped),
        Just(TaskStatus::Cancelled),
    ]
}

fn run_record() -> impl Strategy<Value = RunRecord> {
    (
        (
            text(),
            text(),
            text(),
            text(),
            params(),
            text(),
            run_status(),
        ),
        (time(), opt_time(), any::<u32>(), any::<u32>(), strings()),
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            strings(),
            any::<bool>(),
            opt_time(),
        ),
    )
        .prop_map(
            |(
                (id, workflow, workflow_path, definition, params, logical_date, status),
                (started_at, ended_at, pid, reruns, task_order),
                (
                    trigger,
                    note,
                    backend,
                    channels_file,
                    trigger_files,
                    resume_pending,
                    execution_started_at,
                ),
            )| RunRecord {
                id,
                workflow,
                workflow_path,
                definition,
                params,
                logical_date,
                status,
                started_at,
                ended_at,
                pid,
                reruns,
                task_order,
                trigger,
                note,
                backend,
                channels_file,
                trigger_files,
                resume_pending,
                execution_started_at,
            },
        )
}

fn task_record() -> impl Strategy<Value = TaskRecord> {
    (
        text(),
        text(),
        task_status(),
        any::<u32>(),
        opt_time(),
        opt_time(),
        proptest::option::of(text()),
        outputs(),
    )
        .prop_map(
            |(run_id, task_id, status, attempts, started_at, ended_at, error, outputs)| {
                TaskRecord {
                    run_id,
                    task_id,
                    status,
                    attempts,
                    started_at,
                    ended_at,
                    error,
                    outputs,
                }
            },
        )
}

fn attempt_record() -> impl Strategy<Value = AttemptRecord> {
    (
        (
            text(),
            text(),
            any::<u32>(),
            task_status(),
            time(),
            opt_time(),
        ),
        (
            proptest::option::of(any::<i32>()),
            proptest::option::of(text()),
            text(),
            outputs(),
        ),
    )
        .prop_map(
            |(
                (run_id, task_id, attempt, status, started_at, ended_at),
                (exit_code, error, output_tail, outputs),
            )| AttemptRecord {
                run_id,
                task_id,
                attempt,
                status,
                started_at,
                ended_at,
                exit_code,
                error,
                output_tail,
                outputs,
            },
        )
}

fn table_record() -> impl Strategy<Value = TableRecord> {
    let column =
        (text(), text(), any::<bool>()).prop_map(|(name, data_type, nullable)| ColumnRecord {
            name,
            data_type,
            nullable,
        });
    (
        (
            text(),
            text(),
            text(),
            proptest::collection::vec(column, 0..4),
            strings(),
            strings(),
            strings(),
        ),
        (
            proptest::option::of(any::<u64>()),
            any::<bool>(),
            proptest::option::of(text()),
            time(),
            time(),
            opt_time(),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(undone_publish(), 0..3),
            proptest::collection::vec(any::<u64>(), 0..4),
        ),
    )
        .prop_map(
            |(
                (name, location, format, columns, partition_columns, partitions, files),
                (row_count, managed, created_by, created_at, updated_at, last_crawled_at),
                (version, undone, file_rows),
            )| TableRecord {
                name,
                location,
                format,
                columns,
                partition_columns,
                partitions,
                files,
                file_rows,
                row_count,
                managed,
                created_by,
                created_at,
                updated_at,
                last_crawled_at,
                version,
                undone,
            },
        )
}

fn undone_publish() -> impl Strategy<Value = UndonePublish> {
    (
        text(),
        text(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        time(),
    )
        .prop_map(
            |(run_id, task_id, version, rows, restored_in, restored_to, at)| UndonePublish {
                run_id,
                task_id,
                version,
                rows,
                restored_in,
                restored_to,
                at,
            },
        )
}

fn backfill_record() -> impl Strategy<Value = BackfillRecord> {
    let date = (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(date, run_id, skipped)| BackfillDate {
            date,
            run_id,
            skipped,
        });
    let status = prop_oneof![
        Just(BackfillStatus::Running),
        Just(BackfillStatus::Succeeded),
        Just(BackfillStatus::Failed),
        Just(BackfillStatus::Interrupted),
        Just(BackfillStatus::Cancelled),
    ];
    (
        (text(), text(), text(), text(), text(), text(), text()),
        (any::<u32>(), any::<bool>(), params()),
        (
            proptest::collection::vec(date, 0..4),
            status,
            time(),
            opt_time(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (id, workflow, workflow_path, from, to, calendar, reprocess),
                (max_active_runs, backwards, params),
                (dates, status, created_at, ended_at, pid),
            )| BackfillRecord {
                id,
                workflow,
                workflow_path,
                from,
                to,
                calendar,
                reprocess,
                max_active_runs,
                backwards,
                params,
                dates,
                status,
                created_at,
                ended_at,
                pid,
            },
        )
}

fn outbox_record() -> impl Strategy<Value = OutboxRecord> {
    let status = prop_oneof![
        Just(DeliveryStatus::Pending),
        Just(DeliveryStatus::Delivered),
        Just(DeliveryStatus::Failed),
        Just(DeliveryStatus::GaveUp),
    ];
    (
        (text(), text(), text(), text(), text(), json(), status),
        (
            any::<u32>(),
            time(),
            time(),
            opt_time(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (id, run_id, workflow, event, channel, payload, status),
                (attempts, created_at, next_at, delivered_at, last_error, workflow_path),
            )| OutboxRecord {
                id,
                run_id,
                workflow,
                event,
                channel,
                payload,
                status,
                attempts,
                created_at,
                next_at,
                delivered_at,
                last_error,
                workflow_path,
            },
        )
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        run_record().prop_map(Write::Run),
        task_record().prop_map(Write::Task),
        attempt_record().prop_map(Write::Attempt),
        table_record().prop_map(Write::Table),
        text().prop_map(Write::DropTable),
        (text(), time()).prop_map(|(workflow, last_fire)| Write::Schedule(ScheduleRecord {
            workflow,
            last_fire
        })),
        (text(), text(), any::<u64>(), any::<i64>(), text()).prop_map(
            |(workflow, path, size, modified_ns, run_id)| Write::File(FileRecord {
                workflow,
                path,
                size,
                modified_ns,
                run_id,
            })
        ),
        (text(), text(), any::<u64>()).prop_map(|(counter, day, calls)| Write::Usage(
            UsageRecord {
                counter,
                day,
                calls
            }
        )),
        backfill_record().prop_map(Write::Backfill),
        (text(), time(), text()).prop_map(|(key, at, run_id)| Write::Sent(SentRecord {
            key,
            at,
            run_id
        })),
        outbox_record().prop_map(Write::Outbox),
    ]
}

/// Encodes as the store does, then decodes as the store and as a recovery point do (a
/// recovery point holds the unpacked JSON).
fn check<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug,
{
    let packed = encode(value);
    // As stored: compressed (or not, if that would not shrink it), and back.
    let bytes = crate::codec::unpack(&packed)
        .map_err(|e| TestCaseError::fail(format!("the stored form does not unpack: {e}")))?;
    prop_assert_eq!(bytes.as_ref(), &crate::encode_json(value)[..]);
    let stored: Envelope<T> = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("the store cannot read it back: {e}")))?;
    prop_assert_eq!(&stored.data, value);
    // As the store reads it (without the envelope's `flatten`).
    let (v, read) = crate::decode_json::<T>(&bytes)
        .map_err(|e| TestCaseError::fail(format!("the store's reader fails: {e}")))?;
    prop_assert_eq!(v, crate::SCHEMA_VERSION);
    prop_assert_eq!(&read, value);
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
    let recovered: T = recovery::decode_value(json)
        .map_err(|e| TestCaseError::fail(format!("a recovery point cannot read it back: {e}")))?;
    prop_assert_eq!(&recovered, value);
    Ok(())
}

fn roundtrip(w: &Write) -> Result<(), TestCaseError> {
    // No wildcard: a new variant must be generated and checked here.
    match w {
        Write::Run(r) => check(r),
        Write::Task(r) => check(r),
        Write::Attempt(r) => check(r),
        Write::Table(r) => check(r),
        Write::DropTable(_) => Ok(()), // a key, no value
        Write::Schedule(r) => check(r),
        Write::File(r) => check(r),
        Write::Usage(r) => check(r),
        Write::Backfill(r) => check(r),
        Write::Sent(r) => check(r),
        Write::Outbox(r) => check(r),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn every_record_reads_back_as_written(w in write()) {
        roundtrip(&w)?;
    }

    /// A task stored without its outputs names the attempt that holds them, and reads back
    /// as the same task; a task stored whole reads back as itself, naming none.
    #[test]
    fn a_task_stored_without_its_outputs_reads_back_naming_its_attempt(
        t in task_record(),
        n in any::<u32>(),
    ) {
        let read = |packed: Vec<u8>| -> Result<crate::StoredTaskIn, TestCaseError> {
            let bytes = crate::codec::unpack(&packed)
                .map_err(|e| TestCaseError::fail(format!("does not unpack: {e}")))?;
            crate::decode_json(&bytes)
                .map(|(_, task)| task)
                .map_err(|e| TestCaseError::fail(format!("does not read back: {e}")))
        };
        let without = read(encode(&crate::StoredTaskOut::new(&t, n)))?;
        prop_assert_eq!(without.outputs_in, Some(n));
        prop_assert_eq!(
            without.into_task(),
            TaskRecord { outputs: Default::default(), ..t.clone() }
        );
        let whole = read(encode(&t))?;
        prop_assert_eq!(whole.outputs_in, None);
        prop_assert_eq!(whole.into_task(), t);
    }
}

/// The case that broke file triggers: a modification time in nanoseconds, written by the
/// store and read back by it.
#[test]
fn file_records_read_back_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let rec = FileRecord {
        workflow: "w".into(),
        path: "/in/x.csv".into(),
        size: 2,
        modified_ns: 1_764_800_000_123_456_789,
        run_id: "r".into(),
    };
    store.commit(&[Write::File(rec.clone())]).unwrap();
    assert_eq!(store.file_record("w", "/in/x.csv").unwrap(), Some(rec));
    assert!(store.check().problems.is_empty(), "{:?}", store.check());
}
