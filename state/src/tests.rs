use super::*;

/// The ops of `writes`, run records as they are.
fn ops_of(writes: &[Write]) -> Vec<journal::Op> {
    let mut ops = Vec::new();
    super::ops_of(
        &writes.iter().collect::<Vec<_>>(),
        &HashSet::new(),
        &mut ops,
    );
    ops
}

fn run(id: &str, status: RunStatus, secs: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        workflow: "demo".into(),
        workflow_path: "/tmp/demo.yaml".into(),
        definition: "name: demo".into(),
        params: Default::default(),
        logical_date: "2026-01-02".into(),
        status,
        started_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
        ended_at: None,
        pid: 4242,
        reruns: 0,
        task_order: vec![],
        trigger: None,
        note: None,
        backend: None,
        channels_file: None,
        trigger_files: Vec::new(),
        resume_pending: false,
        execution_started_at: None,
    }
}

fn task(run_id: &str, id: &str, status: TaskStatus) -> TaskRecord {
    TaskRecord {
        run_id: run_id.into(),
        task_id: id.into(),
        status,
        attempts: 1,
        started_at: None,
        ended_at: None,
        error: None,
        outputs: Default::default(),
    }
}

fn attempt(run_id: &str, task: &str, n: u32, status: TaskStatus) -> AttemptRecord {
    AttemptRecord {
        run_id: run_id.into(),
        task_id: task.into(),
        attempt: n,
        status,
        started_at: Utc::now(),
        ended_at: None,
        exit_code: None,
        error: None,
        output_tail: String::new(),
        outputs: Default::default(),
    }
}

#[test]
fn records_round_trip_and_runs_list_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovered) = Store::open(dir.path(), "test").unwrap();
    assert!(recovered.is_empty());
    store
        .commit(&[
            Write::Run(run("old", RunStatus::Succeeded, 0)),
            Write::Run(run("new", RunStatus::Failed, 10)),
            Write::Task(task("new", "a", TaskStatus::Failed)),
            Write::Task(task("new", "ab", TaskStatus::Succeeded)),
            Write::Attempt(attempt("new", "a", 2, TaskStatus::Failed)),
            Write::Attempt(attempt("new", "a", 10, TaskStatus::Failed)),
            Write::Attempt(attempt("new", "ab", 1, TaskStatus::Succeeded)),
        ])
        .unwrap();
    let ids: Vec<_> = store
        .runs(None, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["new", "old"]);
    assert_eq!(store.runs(None, 1).unwrap().len(), 1);
    assert!(store.runs(Some("other"), 10).unwrap().is_empty());
    assert_eq!(store.tasks("new").unwrap().len(), 2);
    // Attempt keys are zero-padded so 10 sorts after 2, and `a` does not match `ab`.
    let attempts: Vec<_> = store
        .attempts("new", "a")
        .unwrap()
        .into_iter()
        .map(|a| a.attempt)
        .collect();
    assert_eq!(attempts, [2, 10]);
    assert_eq!(
        store.run("old").unwrap().unwrap(),
        run("old", RunStatus::Succeeded, 0)
    );
    assert!(store.run("missing").unwrap().is_none());
}

#[test]
fn second_open_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = Store::open(dir.path(), "orchestrator run x.yaml").unwrap();
    let err = Store::open(dir.path(), "second").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StateError::Locked { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "pid {}: orchestrator run x.yaml",
            std::process::id()
        )),
        "{msg}"
    );
}

#[test]
fn reopening_marks_running_runs_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .commit(&[
                Write::Run(run("r1", RunStatus::Running, 0)),
                Write::Task(task("r1", "done", TaskStatus::Succeeded)),
                Write::Task(task("r1", "busy", TaskStatus::Running)),
                Write::Attempt(attempt("r1", "busy", 1, TaskStatus::Running)),
                Write::Task(task("r1", "later", TaskStatus::Pending)),
            ])
            .unwrap();
    }
    let (store, recovered) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(recovered, ["r1"]);
    let r = store.run("r1").unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(r.ended_at.is_some());
    let mut tasks = store.tasks("r1").unwrap();
    tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let statuses: Vec<_> = tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("busy", TaskStatus::Failed),
            ("done", TaskStatus::Succeeded),
            ("later", TaskStatus::Pending)
        ]
    );
    assert!(tasks[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("interrupted"));
    let a = store.attempts("r1", "busy").unwrap();
    assert_eq!(a[0].status, TaskStatus::Failed);
}

#[test]
fn refuses_a_store_from_a_newer_binary() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .db
            .insert(b"meta\0schema", (SCHEMA_VERSION + 1).to_string().as_bytes())
            .unwrap();
        store.flush().unwrap();
    }
    let err = Store::open(dir.path(), "test").unwrap_err();
    assert!(matches!(err, StateError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade orchestrator"));
}

#[test]
fn reads_records_written_without_later_optional_fields() {
    // A v1 record as an older binary may have written it: optional fields absent.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let json = br#"{"v":1,"run_id":"r","task_id":"t","status":"succeeded","attempts":1}"#;
    store.db.insert(task_key("r", "t"), &json[..]).unwrap();
    let t = store.tasks("r").unwrap();
    assert_eq!(t[0].status, TaskStatus::Succeeded);
    assert!(t[0].outputs.is_empty());
}

#[test]
fn a_v3_store_of_plain_json_reads_and_is_compressed_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let r = run("old", RunStatus::Succeeded, 0);
    let t = task("old", "a", TaskStatus::Succeeded);
    {
        // As v3 wrote it: every value plain JSON.
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        for op in ops_of(&[Write::Run(r.clone()), Write::Task(t.clone())]) {
            if let journal::Op::Put(k, v) = op {
                let plain = codec::unpack(&v).unwrap().into_owned();
                store.db.insert(k, plain).unwrap();
            }
        }
        store.db.insert(b"meta\0schema", &b"3"[..]).unwrap();
        store.flush().unwrap();
    }
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    // Marked current (v4 or later), so a v3 binary refuses it rather than misread
    // compressed values.
    assert_eq!(
        store.db.get(b"meta\0schema").unwrap().unwrap().as_ref(),
        SCHEMA_VERSION.to_string().as_bytes()
    );
    assert_eq!(store.run("old").unwrap().unwrap().id, "old");
    assert_eq!(store.tasks("old").unwrap(), vec![t.clone()]);
    let mut later = t.clone();
    later.task_id = "b".into();
    later.error = Some("a longer message, so that compressing it pays".repeat(3));
    store.commit(&[Write::Task(later.clone())]).unwrap();
    let raw = store.db.get(task_key("old", "b")).unwrap().unwrap();
    assert_eq!(raw[0], codec::ZSTD_V1);
    assert_eq!(store.tasks("old").unwrap(), vec![t, later]);
    assert_clean(&store);
    // A recovery point holds plain JSON, the compressed records included.
    let point = store.write_recovery_point().unwrap();
    let text = std::fs::read_to_string(&point).unwrap();
    assert!(text.contains("a longer message"));
    assert_eq!(recovery::read(&point).unwrap().writes().len(), 3);
}

#[test]
fn a_tasks_outputs_are_stored_once_with_the_attempt_that_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let outputs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"table":"stock_raw","new_partitions":["dt=2026-05-11"]}"#)
            .unwrap();
    let mut t = task("r", "crawl", TaskStatus::Succeeded);
    t.outputs = outputs.clone();
    let mut a = attempt("r", "crawl", 1, TaskStatus::Succeeded);
    a.outputs = outputs.clone();
    // The task first, as the executor writes them: stored after its attempt.
    let writes = [
        Write::Run(run("r", RunStatus::Running, 0)),
        Write::Task(t.clone()),
        Write::Attempt(a),
    ];
    let ops = ops_of(&writes);
    let at = |key: Vec<u8>| {
        ops.iter()
            .position(|op| matches!(op, journal::Op::Put(k, _) if *k == key))
    };
    assert!(at(attempt_key("r", "crawl", 1)) < at(task_key("r", "crawl")));
    store.commit(&writes).unwrap();
    let raw = store.db.get(task_key("r", "crawl")).unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&codec::unpack(&raw).unwrap()).unwrap();
    assert_eq!(json["outputs"], serde_json::json!({}));
    assert_eq!(json["outputs_in"], 1);
    assert_eq!(store.tasks("r").unwrap(), vec![t.clone()]);
    assert_clean(&store);
    // A recovery point stands alone: the task's line holds its outputs.
    let point = store.write_recovery_point().unwrap();
    let back = recovery::read(&point).unwrap();
    assert_eq!(back.tasks, vec![t.clone()]);

    // Outputs that differ from the attempt's (or no attempt beside it) are kept whole.
    let mut other = t.clone();
    other.task_id = "other".into();
    let mut b = attempt("r", "other", 1, TaskStatus::Succeeded);
    b.outputs = serde_json::from_str(r#"{"rows":1}"#).unwrap();
    store
        .commit(&[Write::Task(other.clone()), Write::Attempt(b)])
        .unwrap();
    let raw = store.db.get(task_key("r", "other")).unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&codec::unpack(&raw).unwrap()).unwrap();
    assert_eq!(json["outputs"]["table"], "stock_raw");
    assert!(json.get("outputs_in").is_none());

    // If the attempt that holds them went missing, reading says so.
    store.db.remove(attempt_key("r", "crawl", 1)).unwrap();
    let err = store.tasks("r").unwrap_err().to_string();
    assert!(err.contains("attempt 1, which is missing"), "{err}");
}

#[test]
fn catalog_tables_are_stored_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let now = Utc::now();
    let table = TableRecord {
        name: "stock_raw".into(),
        location: "/data/raw".into(),
        format: "csv".into(),
        columns: vec![ColumnRecord {
            name: "close".into(),
            data_type: "Float64".into(),
            nullable: true,
        }],
        partition_columns: vec!["dt".into()],
        partitions: vec!["dt=2025-04-09".into()],
        files: vec!["dt=2025-04-09/NVDA.csv".into()],
        file_rows: vec![3],
        row_count: Some(3),
        managed: false,
        created_by: None,
        created_at: now,
        updated_at: now,
        last_crawled_at: Some(now),
        version: None,
        undone: Vec::new(),
    };
    store.commit(&[Write::Table(table.clone())]).unwrap();
    assert_eq!(store.table("stock_raw").unwrap(), Some(table.clone()));
    assert_eq!(store.tables().unwrap(), vec![table]);
    // Table keys do not collide with run keys.
    assert!(store.runs(None, 10).unwrap().is_empty());
    store
        .commit(&[Write::DropTable("stock_raw".into())])
        .unwrap();
    assert_eq!(store.table("stock_raw").unwrap(), None);
}

#[test]
fn an_unfinished_snapshot_left_by_a_full_disk_does_not_make_the_store_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .commit(&[Write::Run(run("r1", RunStatus::Succeeded, 0))])
            .unwrap();
    }
    // What sled leaves when its snapshot write at open hits ENOSPC: a partial file that
    // sorts after every finished snapshot.
    let partial = dir.path().join("db/snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&partial, b"partial").unwrap();
    // sled alone reads it as the newest snapshot and reports corruption, for ever. (sled
    // may hold its file lock a moment after the store is dropped: wait for that.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let opened = loop {
        match sled::Config::new().path(dir.path().join("db")).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            other => break other,
        }
    };
    match opened {
        Err(sled::Error::Corruption { .. }) => {}
        other => panic!("sled's behaviour changed: {:?}", other.map(|_| "opened")),
    }
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(store.runs(None, 10).unwrap().len(), 1);
    assert!(!partial.exists());
}

#[test]
fn sled_corruption_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .commit(&[Write::Run(run("r1", RunStatus::Succeeded, 0))])
            .unwrap();
    }
    // A damaged *finished* snapshot is real corruption.
    std::fs::write(
        dir.path().join("db/snap.FFFFFFFFFFFFFFFF"),
        b"garbage bytes, not a snapshot",
    )
    .unwrap();
    let err = Store::open(dir.path(), "test").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StateError::Damaged { .. }), "{msg}");
    assert!(msg.contains("orchestrator state recover"), "{msg}");
    assert!(!msg.contains("backtrace"), "{msg}");
}

#[test]
fn recovery_points_round_trip_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store
        .commit(&[
            Write::Run(run("r1", RunStatus::Failed, 0)),
            Write::Task(task("r1", "a", TaskStatus::Failed)),
            Write::Attempt(attempt("r1", "a", 1, TaskStatus::Failed)),
        ])
        .unwrap();
    let mut paths = Vec::new();
    for _ in 0..recovery::KEEP + 2 {
        paths.push(store.write_recovery_point().unwrap());
    }
    let kept = recovery::recovery_points(dir.path());
    assert_eq!(kept.len(), recovery::KEEP);
    assert_eq!(kept[0], *paths.last().unwrap(), "newest first");
    let e = recovery::read(&kept[0]).unwrap();
    assert_eq!(e.runs, vec![run("r1", RunStatus::Failed, 0)]);
    assert_eq!(e.tasks.len(), 1);
    assert_eq!(e.attempts.len(), 1);
    assert!(e.tables.is_empty());

    // Cut short: refused, and the next older point is used instead.
    let text = std::fs::read_to_string(&kept[0]).unwrap();
    std::fs::write(&kept[0], &text[..text.len() - 30]).unwrap();
    let err = recovery::read(&kept[0]).unwrap_err();
    assert!(
        err.contains("incomplete") || err.contains("not JSON"),
        "{err}"
    );
    let (good, skipped) = recovery::latest_good(dir.path());
    assert_eq!(good.unwrap().path, kept[1]);
    assert_eq!(skipped.len(), 1);
}

#[test]
fn an_emptied_db_with_recovery_points_is_refused_not_silently_restarted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .commit(&[Write::Run(run("r1", RunStatus::Succeeded, 0))])
            .unwrap();
        store.write_recovery_point().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    let err = Store::open(dir.path(), "test").unwrap_err();
    assert!(matches!(err, StateError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("state recover"), "{err}");

    // Rebuilding from the recovery point brings the run back.
    let (export, _) = recovery::latest_good(dir.path());
    let (store, moved) = Store::rebuild(dir.path(), "test", &export.unwrap().writes()).unwrap();
    assert!(moved.is_none(), "there was no db to move aside");
    drop(store);
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(
        store.run("r1").unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    assert!(store.check().problems.is_empty());
}

#[test]
fn a_file_as_state_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, "x").unwrap();
    let err = Store::open(&file, "test").unwrap_err();
    assert!(matches!(err, StateError::NotADirectory { .. }), "{err}");
    assert!(
        err.to_string().contains("is a file, not a directory"),
        "{err}"
    );
}

#[test]
fn a_missing_store_reads_as_empty_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nothing-here");
    let (store, _) = Store::open_read_only(&state, "test").unwrap();
    assert!(store.runs(None, 10).unwrap().is_empty());
    assert!(store.commit(&[]).is_err());
    assert!(!state.exists());
}

#[test]
fn check_finds_records_that_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store
        .commit(&[
            Write::Run(run("r1", RunStatus::Succeeded, 0)),
            Write::Task(task("gone", "a", TaskStatus::Failed)),
        ])
        .unwrap();
    store.db.insert(run_key("bad"), &b"{not json"[..]).unwrap();
    let report = store.check();
    let all = report.problems.join("\n");
    assert!(all.contains("task gone/a belongs to run gone"), "{all}");
    assert!(all.contains("record r/bad"), "{all}");
    assert!(
        all.contains("run bad is missing from the run index") || all.contains("r/bad"),
        "{all}"
    );
}

/// What a crash between a journal entry and the end of its piece leaves on disk (sled
/// recovers a prefix of its log): the entry and the piece's first ops. Before them, as a
/// commit does, its replication entry if replication is on (another test of this process
/// may have turned it on: an open re-applies the newest entry, which must be this one).
fn crash_midway(store: Store, writes: &[Write], applied: usize) {
    let ops = ops_of(writes);
    store.log_change(&ops).unwrap();
    store
        .journal
        .insert(journal::KEY, journal::encode(&ops))
        .unwrap();
    for op in &ops[..applied] {
        store.apply_op(op).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn a_commit_cut_short_by_a_crash_is_completed_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store
        .commit(&[
            Write::Run(run("r", RunStatus::Running, 0)),
            Write::Task(task("r", "a", TaskStatus::Running)),
            Write::Attempt(attempt("r", "a", 1, TaskStatus::Running)),
        ])
        .unwrap();
    // The turn that finishes task `a`: its attempt reached the disk, its task did not.
    crash_midway(
        store,
        &[
            Write::Attempt(attempt("r", "a", 1, TaskStatus::Succeeded)),
            Write::Task(task("r", "a", TaskStatus::Succeeded)),
        ],
        1,
    );

    // A read-only copy reads the completed turn, and leaves the state dir as it was.
    let (copy, _) = Store::open_copy(dir.path(), "test", "checking".into()).unwrap();
    assert_eq!(copy.tasks("r").unwrap()[0].status, TaskStatus::Succeeded);
    assert!(copy.check().problems.is_empty(), "{:?}", copy.check());
    drop(copy);

    // Opening for writing replays the turn before it recovers interrupted runs, so task
    // `a` is not failed as "interrupted" beside an attempt that succeeded.
    let (store, recovered) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(recovered, ["r"]);
    let t = &store.tasks("r").unwrap()[0];
    assert_eq!(
        (t.status, t.error.as_deref()),
        (TaskStatus::Succeeded, None)
    );
    assert_eq!(
        store.attempts("r", "a").unwrap()[0].status,
        TaskStatus::Succeeded
    );
    assert_eq!(store.journal.get(journal::KEY).unwrap(), None);
    assert_clean(&store);
}

#[test]
fn a_commit_larger_than_a_piece_is_written_whole_and_leaves_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let mut writes = vec![Write::Run(run("big", RunStatus::Running, 0))];
    // Values compression cannot shrink much, so the commit is really this big.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..1000 {
        let mut t = task("big", &format!("t{i:04}"), TaskStatus::Pending);
        t.error = Some(
            (0..200)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    format!("{:x}", seed & 0xff)
                })
                .collect(),
        );
        writes.push(Write::Task(t));
    }
    let ops = ops_of(&writes);
    assert!(journal::pieces(&ops).count() > 4, "the commit spans pieces");
    store.commit(&writes).unwrap();
    assert_eq!(store.tasks("big").unwrap().len(), 1000);
    assert_eq!(store.journal.get(journal::KEY).unwrap(), None);
    assert_eq!(store.delete_runs(&["big".into()], &[]).unwrap(), 1001);
    assert!(store.tasks("big").unwrap().is_empty());
    assert!(store.runs(None, 10).unwrap().is_empty());
}

#[test]
fn an_unreadable_journal_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .journal
            .insert(journal::KEY, &[1, 1, 9, 0][..])
            .unwrap();
        // `check` names a journal entry that was left in place.
        let report = store.check();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p
                    .contains("the journal of an interrupted commit (4 bytes) was not replayed")),
            "{report:?}"
        );
        store.flush().unwrap();
    }
    for err in [
        Store::open(dir.path(), "test").unwrap_err(),
        Store::open_copy(dir.path(), "test", "checking".into()).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, StateError::Damaged { .. }), "{text}");
        assert!(
            text.contains(
                "the journal of an interrupted commit (4 bytes) is unreadable: cut short at byte 2"
            ),
            "{text}"
        );
        assert!(text.contains("orchestrator state recover"), "{text}");
    }
}

#[test]
fn readers_never_see_half_a_commit() {
    // Each commit sets both runs' task `x` to the same count, `r1` first. A reader that
    // reads `r1` and then `r2` must never find `r2` behind.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let store = std::sync::Arc::new(store);
    let turn = |n: u32| {
        ["r1", "r2"].map(|r| {
            let mut t = task(r, "x", TaskStatus::Running);
            t.attempts = n;
            Write::Task(t)
        })
    };
    store.commit(&turn(0)).unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 1..=300 {
                store.commit(&turn(n)).unwrap();
            }
        })
    };
    let mut reads = 0u32;
    loop {
        let done = writer.is_finished();
        let a = store.tasks("r1").unwrap()[0].attempts;
        let b = store.tasks("r2").unwrap()[0].attempts;
        assert!(b >= a, "read r1 at {a}, then r2 still at {b}");
        reads += 1;
        if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(store.tasks("r2").unwrap()[0].attempts, 300);
    assert!(reads > 1);
}

#[test]
fn a_record_stored_as_a_sled_blob_is_synced_before_the_commit_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    // Over sled's 128 KiB threshold: written to db/blobs/, which sled 0.34 as published
    // never syncs; the patched sled syncs each blob as it writes it. The counter is
    // process-wide (other tests may write blobs meanwhile), so it must have grown by at
    // least the blobs this store holds.
    let before = sled::blobs_synced();
    let mut big = run("big", RunStatus::Running, 0);
    big.definition = "x".repeat(300 * 1024);
    store.commit(&[Write::Run(big.clone())]).unwrap();
    let blobs = std::fs::read_dir(dir.path().join("db/blobs"))
        .unwrap()
        .count() as u64;
    assert!(blobs > 0, "the record did not go to a blob");
    let synced = sled::blobs_synced() - before;
    assert!(synced >= blobs, "{blobs} blob files, {synced} synced");
    assert_eq!(store.run("big").unwrap(), Some(big));
}

#[test]
fn free_space_is_asked_again_when_the_margin_moves_past_the_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let commit = |i: i64| store.commit(&[Write::Run(run(&format!("s{i}"), RunStatus::Running, i))]);
    commit(0).unwrap();
    // The answer just cached would let the next batch through without asking; a margin
    // above it must not.
    let free_mb = crate::disk::free_bytes(dir.path()).unwrap() / MIB;
    store
        .min_free_mb
        .store(free_mb + 1024, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(commit(1), Err(StateError::DiskFull { .. })));
    store
        .min_free_mb
        .store(0, std::sync::atomic::Ordering::Relaxed);
    commit(2).unwrap();
    assert!(store.run("s2").unwrap().is_some());
}

#[test]
fn commits_write_into_a_preallocated_log_and_a_reopen_reads_every_one() {
    // The patched sled zero-fills each new segment at the log's end before writing into
    // it, so a commit's fdatasync has no file size to make durable; recovery must read
    // the zeroed rest of the tip segment as the end of the log.
    const SEGMENT: u64 = 512 * 1024; // sled 0.34's default segment size
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("db").join("db");
    {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store
            .commit(&[Write::Run(run("r0", RunStatus::Running, 0))])
            .unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        assert_eq!(
            len % SEGMENT,
            0,
            "the log is {len} bytes, not whole segments"
        );
        for i in 1..60 {
            store
                .commit(&[Write::Run(run(&format!("r{i}"), RunStatus::Running, i))])
                .unwrap();
        }
        let after = std::fs::metadata(&log).unwrap().len();
        assert_eq!(
            after, len,
            "small commits grew the log from {len} to {after} bytes"
        );
    }
    for round in 0..2 {
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        for i in 0..60 {
            let id = format!("r{i}");
            assert!(
                store.run(&id).unwrap().is_some(),
                "{id} lost (open {round})"
            );
        }
        store
            .commit(&[Write::Run(run(&format!("s{round}"), RunStatus::Running, 0))])
            .unwrap();
    }
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    assert!(store.run("s0").unwrap().is_some() && store.run("s1").unwrap().is_some());
    let report = store.check();
    assert!(report.problems.is_empty(), "{report:?}");
}

#[test]
fn a_full_disk_message_does_not_contradict_itself_at_margin_zero() {
    let dir = Path::new("/tmp/s");
    let at_zero = StateError::DiskFull {
        dir: dir.to_path_buf(),
        free_mb: 0,
        need_mb: 0,
    }
    .to_string();
    assert!(at_zero.contains("is on a full file system"), "{at_zero}");
    assert!(!at_zero.contains("needs at least 0 MB"), "{at_zero}");
    let below = StateError::DiskFull {
        dir: dir.to_path_buf(),
        free_mb: 3,
        need_mb: 32,
    }
    .to_string();
    assert!(
        below.contains("has 3 MB free; orchestrator needs at least 32 MB"),
        "{below}"
    );
}

/// Everything the store holds, as (key, value) of its records' tree.
fn dump(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .db
        .iter()
        .map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

#[test]
fn a_base_and_the_segments_after_it_rebuild_the_store_at_its_last_shipped_commit() {
    crate::replica::enable();
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store
        .commit(&[Write::Run(run("r1", RunStatus::Succeeded, 10))])
        .unwrap();
    let (seq, base) = store.base().unwrap();
    assert_eq!(seq, 1, "the base stands at the one commit made");
    store.mark_shipped("dir", "g1", seq).unwrap();
    assert!(store
        .pending_changes(usize::MAX)
        .unwrap()
        .commits
        .is_empty());
    store
        .commit(&[
            Write::Run(run("r2", RunStatus::Running, 20)),
            Write::Task(task("r2", "a", TaskStatus::Running)),
        ])
        .unwrap();
    let first = store.pending_changes(usize::MAX).unwrap();
    assert_eq!((first.first(), first.last()), (Some(2), Some(2)));
    store.mark_shipped("dir", "g1", 2).unwrap();
    store
        .commit(&[Write::Run(run("r2", RunStatus::Failed, 20))])
        .unwrap();
    store.delete_runs(&["r1".to_string()], &[]).unwrap();
    let second = store.pending_changes(usize::MAX).unwrap();
    assert_eq!((second.first(), second.last()), (Some(3), Some(4)));
    assert!(store.replication_lag().unwrap().is_some());

    // Any order, a segment twice: each commit is applied once, in sequence.
    let other = tempfile::tempdir().unwrap();
    let (copy, _) = Store::open(other.path(), "test").unwrap();
    let files = vec![
        ("seg-2".to_string(), second.segment()),
        ("base".to_string(), base),
        ("seg-1".to_string(), first.segment()),
        ("seg-1-again".to_string(), first.segment()),
    ];
    assert_eq!(copy.restore(&files).unwrap(), 4);
    assert_eq!(dump(&copy), dump(&store));
    assert!(
        copy.run("r1").unwrap().is_none(),
        "the deletion was replayed"
    );
    assert_eq!(copy.run("r2").unwrap().unwrap().status, RunStatus::Failed);
}

#[test]
fn the_newest_change_completes_a_commit_a_crash_cut_short() {
    crate::replica::enable();
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let writes = [
        Write::Run(run("r1", RunStatus::Succeeded, 10)),
        Write::Task(task("r1", "a", TaskStatus::Succeeded)),
    ];
    // The change entry is written, then the crash: none of the commit's own writes.
    let ops = ops_of(&writes);
    store.log_change(&ops).unwrap();
    store.flush().unwrap();
    drop(store);
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(
        store.run("r1").unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    assert_eq!(store.tasks("r1").unwrap().len(), 1);
}

/// Runs `fut` to completion on this thread (the state crate has no async runtime).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn concurrent_commits_share_one_durable_write_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let before = (store.commit_count(), store.batch_count());
    // Hold the write turn: the first committer leads and waits for it; everyone else
    // queues behind it.
    let turn = store.write_turn();
    const N: usize = 12;
    std::thread::scope(|s| {
        let store = &store;
        for i in 0..N {
            if i == 1 {
                // The first commit has taken its own entry and waits for the turn as
                // the leader; the others queue behind it.
                while !(store.group.leading() && store.group.queued() == 0) {
                    std::thread::yield_now();
                }
            }
            s.spawn(move || {
                let id = format!("run-{i:02}");
                if i % 2 == 0 {
                    store.commit(&[Write::Run(run(&id, RunStatus::Running, i as i64))])
                } else {
                    block_on(store.commit_async(&[Write::Run(run(
                        &id,
                        RunStatus::Running,
                        i as i64,
                    ))]))
                }
                .unwrap();
            });
        }
        // The leader took its own entry; the other N - 1 wait in the queue.
        while store.group.queued() < N - 1 {
            std::thread::yield_now();
        }
        drop(turn);
    });
    assert_eq!(store.commit_count() - before.0, N as u64);
    // One write for the leader's commit, one for everything that queued behind it.
    assert_eq!(store.batch_count() - before.1, 2);
    drop(store);
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(store.runs(None, 100).unwrap().len(), N);
}

#[test]
fn a_lone_commit_is_written_by_its_caller_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let before = store.batch_count();
    for i in 0..5 {
        let id = format!("r{i}");
        block_on(store.commit_async(&[Write::Run(run(&id, RunStatus::Running, i))])).unwrap();
        // Ready as soon as it returns: readable, and one write each.
        assert!(store.run(&id).unwrap().is_some());
    }
    assert_eq!(store.batch_count() - before, 5);
}

#[test]
fn async_commits_arriving_together_are_written_by_the_committer_not_their_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let writer = || store.group.writer.lock().unwrap().take();
    let me = std::thread::current().id();
    // Commits count as arriving together until told otherwise (not for 20 ms: this test
    // must not depend on how fast it runs).
    store
        .group
        .set_hand_off_for(std::time::Duration::from_secs(3600));
    // A lone async commit is written on its caller's thread, as a chain's always is.
    block_on(store.commit_async(&[Write::Run(run("lone", RunStatus::Running, 0))])).unwrap();
    assert_eq!(writer(), Some(me));
    // Commits arrive together once: one leads and waits for the turn, three queue, and
    // the committer thread writes those three as one batch.
    let turn = store.write_turn();
    std::thread::scope(|s| {
        let store = &store;
        for i in 0..4 {
            if i == 1 {
                while !(store.group.leading() && store.group.queued() == 0) {
                    std::thread::yield_now();
                }
            }
            s.spawn(move || {
                store
                    .commit(&[Write::Run(run(&format!("t{i}"), RunStatus::Running, i))])
                    .unwrap()
            });
        }
        while store.group.queued() < 3 {
            std::thread::yield_now();
        }
        drop(turn);
    });
    while store.group.leading() {
        std::thread::yield_now();
    }
    // So the next async commit does not block its worker in the disk write: the
    // committer writes it, and the worker goes on polling other runs.
    block_on(store.commit_async(&[Write::Run(run("handed", RunStatus::Running, 5))])).unwrap();
    assert_ne!(writer(), Some(me));
    assert!(store.run("handed").unwrap().is_some());
    // Once commits have not overlapped for a while, the next async commit is written by
    // its caller again. A sync caller always writes its own.
    store.group.set_hand_off_for(std::time::Duration::ZERO);
    while store.group.leading() {
        std::thread::yield_now();
    }
    block_on(store.commit_async(&[Write::Run(run("again", RunStatus::Running, 6))])).unwrap();
    assert_eq!(writer(), Some(me));
    store
        .commit(&[Write::Run(run("sync", RunStatus::Running, 7))])
        .unwrap();
    assert_eq!(writer(), Some(me));
}

#[test]
fn a_failed_batch_fails_every_commit_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    // More free space required than any disk has: the batch is refused before writing.
    store
        .min_free_mb
        .store(999_999_999, std::sync::atomic::Ordering::Relaxed);
    let turn = store.write_turn();
    let results = std::thread::scope(|s| {
        let store = &store;
        let handles: Vec<_> = (0..4)
            .map(|i| {
                if i == 1 {
                    while !(store.group.leading() && store.group.queued() == 0) {
                        std::thread::yield_now();
                    }
                }
                s.spawn(move || {
                    store.commit(&[Write::Run(run(&format!("f{i}"), RunStatus::Running, i))])
                })
            })
            .collect();
        while store.group.queued() < 3 {
            std::thread::yield_now();
        }
        drop(turn);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for r in results {
        assert!(matches!(r, Err(StateError::DiskFull { .. })), "{r:?}");
    }
    assert!(store.write_failure().is_some());
}

#[test]
fn pack_keeps_each_commit_whole_and_splits_only_oversized_ones() {
    use journal::{pack, Op, PIECE_BYTES};
    let op = |n: usize| Op::Put(vec![b'k'], vec![0; n]);
    // Three commits of 30 KiB, one of 150 KiB (three ops of 50 KiB), one tiny.
    let ops = vec![
        op(30 << 10),
        op(30 << 10),
        op(30 << 10),
        op(50 << 10),
        op(50 << 10),
        op(50 << 10),
        op(10),
    ];
    let units = [0..1, 1..2, 2..3, 3..6, 6..7];
    let pieces = pack(&ops, &units);
    let lens: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    // 30+30 fit a piece, the third starts the next; the big commit goes op by op.
    assert_eq!(lens, vec![2, 1, 1, 1, 1, 1]);
    let total: usize = lens.iter().sum();
    assert_eq!(total, ops.len());
    for p in &pieces {
        let bytes: usize = p
            .iter()
            .map(|o| match o {
                Op::Put(k, v) => k.len() + v.len(),
                Op::Del(k) => k.len(),
            })
            .sum();
        assert!(p.len() == 1 || bytes <= PIECE_BYTES);
    }
    // Many small commits share pieces; none straddles two.
    let small: Vec<Op> = (0..100).map(|_| op(1000)).collect();
    let units: Vec<_> = (0..50).map(|i| 2 * i..2 * i + 2).collect();
    for p in pack(&small, &units) {
        assert_eq!(p.len() % 2, 0);
    }
}

#[test]
fn a_thousand_runs_of_one_definition_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let text = format!("name: demo\n# {}\n", "a long comment ".repeat(200));
    for chunk in 0..10 {
        let writes: Vec<Write> = (0..100)
            .map(|i| {
                let mut r = run(
                    &format!("r{chunk:02}-{i:03}"),
                    RunStatus::Succeeded,
                    chunk * 100 + i,
                );
                r.definition = text.clone();
                Write::Run(r)
            })
            .collect();
        store.commit(&writes).unwrap();
    }
    let mut other = run("other", RunStatus::Succeeded, 5000);
    other.definition = "name: other\n".into();
    store.commit(&[Write::Run(other)]).unwrap();
    drop(store);
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let defs: Vec<_> = store.db.scan_prefix(b"d\0").map(|kv| kv.unwrap()).collect();
    assert_eq!(defs.len(), 2, "one record per distinct definition");
    let texts: Vec<&[u8]> = defs.iter().map(|(_, v)| v.as_ref()).collect();
    assert!(texts.contains(&text.as_bytes()));
    // No run record holds the text itself.
    for kv in store.db.scan_prefix(b"r\0") {
        let (_, v) = kv.unwrap();
        assert!(v.len() < 1000, "run record of {} bytes", v.len());
    }
    // Every way of reading a run gives the text back.
    assert_eq!(store.run("r03-007").unwrap().unwrap().definition, text);
    let listed = store.runs(None, 2000).unwrap();
    assert_eq!(listed.len(), 1001);
    assert!(listed
        .iter()
        .all(|r| r.definition == text || r.definition == "name: other\n"));
    // A recovery point holds the text with each run, so it stands alone.
    let point = store.write_recovery_point().unwrap();
    let export = recovery::read(&point).unwrap();
    assert!(export
        .runs
        .iter()
        .all(|r| !r.definition.starts_with(DEF_REF)));
    assert_clean(&store);
}

#[test]
fn a_run_whose_definition_is_missing_is_reported_not_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store
        .commit(&[Write::Run(run("r1", RunStatus::Succeeded, 1))])
        .unwrap();
    let (k, _) = store.db.scan_prefix(b"d\0").next().unwrap().unwrap();
    store.db.remove(k).unwrap();
    store.definitions.lock().unwrap().clear();
    let err = store.run("r1").unwrap_err().to_string();
    assert!(
        err.contains("workflow definition") && err.contains("missing"),
        "{err}"
    );
    assert!(!store.check().problems.is_empty());
}

#[test]
fn an_open_reads_only_the_active_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let done: Vec<Write> = (0..200)
        .map(|i| Write::Run(run(&format!("done-{i:03}"), RunStatus::Succeeded, i)))
        .collect();
    store.commit(&done).unwrap();
    store
        .commit(&[Write::Run(run("live", RunStatus::Running, 500))])
        .unwrap();
    let mut waiting = run("waiting", RunStatus::Interrupted, 400);
    waiting.resume_pending = true;
    store.commit(&[Write::Run(waiting.clone())]).unwrap();
    // A finished run's record an open would choke on, were it to read it.
    store
        .db
        .insert(run_key("done-007"), &b"{not json"[..])
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let (store, recovered) = Store::open(dir.path(), "test").unwrap();
    assert_eq!(recovered, vec!["live".to_string()]);
    assert_eq!(
        store.runs_awaiting_resume(),
        vec!["waiting".to_string(), "live".to_string()]
    );
    // Resumed and finished: out of the index, so the next open does not look at it.
    waiting.status = RunStatus::Succeeded;
    waiting.resume_pending = false;
    store.commit(&[Write::Run(waiting)]).unwrap();
    let active: Vec<_> = store
        .db
        .scan_prefix(b"x\0")
        .map(|kv| kv.unwrap().0)
        .collect();
    assert_eq!(active, vec![sled::IVec::from(&b"x\0live"[..])]);
}

/// `state check` finds nothing wrong.
fn assert_clean(store: &Store) {
    let problems = store.check().problems;
    assert!(problems.is_empty(), "{problems:?}");
}

/// `n` succeeded runs a second apart, `r000`...: every third of workflow `other`, the
/// rest of `demo`.
fn two_workflows(n: i64) -> Vec<Write> {
    (0..n)
        .map(|i| {
            let mut r = run(&format!("r{i:03}"), RunStatus::Succeeded, i);
            if i % 3 == 0 {
                r.workflow = "other".into();
            }
            Write::Run(r)
        })
        .collect()
}

#[test]
fn cursor_pages_match_offset_pages_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store.commit(&two_workflows(95)).unwrap();
    let ids = |runs: &[RunRecord]| runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    for workflow in [None, Some("demo")] {
        // Walk older with `before`, comparing each page with the offset page.
        let mut pages = Vec::new();
        let (mut page, mut more) = store.runs_page(workflow, |_| true, 0, 10).unwrap();
        loop {
            let (want, _) = store
                .runs_page(workflow, |_| true, pages.len() * 10, 10)
                .unwrap();
            assert_eq!(ids(&page), ids(&want));
            pages.push(page.clone());
            if !more {
                break;
            }
            let last = page.last().unwrap().id.clone();
            (page, more) = store
                .runs_from(workflow, |_| true, &last, true, 10)
                .unwrap()
                .unwrap();
        }
        let total: usize = pages.iter().map(Vec::len).sum();
        assert_eq!(total, if workflow.is_some() { 63 } else { 95 });
        // And back newer with `after`, from the last page's first run.
        for k in (0..pages.len() - 1).rev() {
            let first = pages[k + 1].first().unwrap().id.clone();
            let (newer, beyond) = store
                .runs_from(workflow, |_| true, &first, false, 10)
                .unwrap()
                .unwrap();
            assert_eq!(ids(&newer), ids(&pages[k]));
            assert_eq!(beyond, k > 0);
        }
    }
    assert!(store
        .runs_from(None, |_| true, "nope", true, 10)
        .unwrap()
        .is_none());
}

/// Makes `store`'s runs indexed as an earlier release indexed them: in the global index
/// (`i\0`, valued with the workflow's name) and, `with_workflow_index`, in the
/// per-workflow one too (v3 to v5), else in the global one alone (before).
fn as_older_store(store: &Store, with_workflow_index: bool) {
    for run in store.runs(None, usize::MAX).unwrap() {
        store
            .db
            .insert(
                legacy_index_key(&run.started_at, &run.id),
                run.workflow.as_bytes(),
            )
            .unwrap();
        if !with_workflow_index {
            store
                .db
                .remove(workflow_index_key(&run.workflow, &run.started_at, &run.id))
                .unwrap();
        }
    }
    store.db.remove(ONE_INDEX_KEY).unwrap();
    if !with_workflow_index {
        store.db.remove(WORKFLOW_INDEX_KEY).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn runs_are_listed_from_one_index_which_an_older_store_gets_at_open() {
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all: Vec<String> = (0..30).rev().map(|i| format!("r{i:03}")).collect();
    let demo: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 3 != 0)
        .map(|i| format!("r{i:03}"))
        .collect();
    for with_workflow_index in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        store.commit(&two_workflows(30)).unwrap();
        // A run's one index entry: in its workflow's part.
        assert_eq!(store.db.scan_prefix(b"j\0").count(), 30);
        assert_eq!(store.db.scan_prefix(LEGACY_INDEX).count(), 0);
        assert_eq!(ids(store.runs(None, 100).unwrap()), all);
        as_older_store(&store, with_workflow_index);
        drop(store);

        // A read-only view lists through the older store's indexes, as its release did.
        let (copy, _) = Store::open_copy(dir.path(), "test", "checking".into()).unwrap();
        assert!(!copy.has_one_index().unwrap());
        assert_eq!(ids(copy.runs(None, 100).unwrap()), all);
        assert_eq!(ids(copy.runs(Some("demo"), 100).unwrap()), demo);
        assert_clean(&copy);
        drop(copy);

        // A writable open reindexes it: the per-workflow index alone, complete.
        let (store, _) = Store::open(dir.path(), "test").unwrap();
        assert!(store.has_one_index().unwrap() && store.has_workflow_index().unwrap());
        assert_eq!(store.db.scan_prefix(LEGACY_INDEX).count(), 0);
        assert_eq!(store.db.scan_prefix(b"j\0").count(), 30);
        assert_eq!(ids(store.runs(None, 100).unwrap()), all);
        assert_eq!(ids(store.runs(Some("demo"), 100).unwrap()), demo);
        assert_clean(&store);
    }
}

#[test]
fn all_runs_merge_every_workflows_index_and_a_workflow_reads_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    store.commit(&two_workflows(30)).unwrap();
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(store.indexed_workflows().unwrap(), ["demo", "other"]);

    // Pages of all runs either side of a cursor, merged from both workflows.
    let (page, more) = store
        .runs_from(None, |_| true, "r020", true, 5)
        .unwrap()
        .unwrap();
    assert_eq!(ids(page), ["r019", "r018", "r017", "r016", "r015"]);
    assert!(more);
    let (page, more) = store
        .runs_from(None, |_| true, "r026", false, 5)
        .unwrap()
        .unwrap();
    assert_eq!(ids(page), ["r029", "r028", "r027"]);
    assert!(!more);
    let (page, more) = store
        .runs_page(None, |r| r.workflow == "other", 2, 3)
        .unwrap();
    assert_eq!(ids(page), ["r021", "r018", "r015"]);
    assert!(more);

    // An index entry of workflow `other` that names no run: a listing of all runs trips on
    // it; one workflow's listing does not read it.
    let ghost = workflow_index_key("other", &Utc::now(), "ghost");
    store.db.insert(&ghost, &[][..]).unwrap();
    assert!(store.runs(None, 100).is_err());
    let demo: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 3 != 0)
        .map(|i| format!("r{i:03}"))
        .collect();
    assert_eq!(ids(store.runs(Some("demo"), 100).unwrap()), demo);
    let (page, more) = store
        .runs_from(Some("demo"), |_| true, "r020", true, 5)
        .unwrap()
        .unwrap();
    assert_eq!(ids(page), ["r019", "r017", "r016", "r014", "r013"]);
    assert!(more);
    // A cursor that is another workflow's run: the page is still the runs before it.
    let (page, _) = store
        .runs_from(Some("demo"), |_| true, "r021", true, 2)
        .unwrap()
        .unwrap();
    assert_eq!(ids(page), ["r020", "r019"]);

    // Deleting a run takes its entry out of the index.
    store.db.remove(&ghost).unwrap();
    store.delete_runs(&["r029".into()], &[]).unwrap();
    assert_eq!(store.runs(None, 1).unwrap()[0].id, "r028");
    assert_eq!(store.db.scan_prefix(b"j\0").count(), 29);
    assert_clean(&store);
}

#[test]
fn a_finished_run_is_sealed_into_one_value_and_a_rerun_reads_over_it_and_reseals() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), "test").unwrap();
    let live = |store: &Store, kind: &str| store.db.scan_prefix(prefix(&[kind, "r"])).count();
    let mut a = task("r", "a", TaskStatus::Succeeded);
    a.outputs = serde_json::from_str(r#"{"rows":7}"#).unwrap();
    let mut a1 = attempt("r", "a", 1, TaskStatus::Succeeded);
    a1.outputs = a.outputs.clone();
    let b = task("r", "b", TaskStatus::Failed);
    let b1 = attempt("r", "b", 1, TaskStatus::Failed);
    // As the executor writes them: one commit per transition, the run's last.
    store
        .commit(&[
            Write::Run(run("r", RunStatus::Running, 0)),
            Write::Task(task("r", "a", TaskStatus::Running)),
            Write::Attempt(attempt("r", "a", 1, TaskStatus::Running)),
        ])
        .unwrap();
    store
        .commit(&[Write::Attempt(a1.clone()), Write::Task(a.clone())])
        .unwrap();
    store
        .commit(&[Write::Task(b.clone()), Write::Attempt(b1.clone())])
        .unwrap();
    assert_eq!((live(&store, "t"), live(&store, "a")), (2, 2));
    store
        .commit(&[Write::Run(run("r", RunStatus::Failed, 0))])
        .unwrap();
    assert_eq!((live(&store, "t"), live(&store, "a")), (0, 0), "sealed");
    assert!(store.db.contains_key(sealed_key("r")).unwrap());
    assert_eq!(store.tasks("r").unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(store.attempts("r", "a").unwrap(), vec![a1.clone()]);
    assert_eq!(store.attempts("r", "b").unwrap(), vec![b1.clone()]);
    assert_clean(&store);
    let back = recovery::read(&store.write_recovery_point().unwrap()).unwrap();
    assert_eq!(back.tasks, vec![a.clone(), b.clone()]);
    assert_eq!(back.attempts.len(), 2);

    // A rerun of b: its live records read over the sealed ones, and a recovery point
    // holds each record once, the live one.
    let mut b_running = task("r", "b", TaskStatus::Running);
    b_running.attempts = 2;
    let b2_running = attempt("r", "b", 2, TaskStatus::Running);
    store
        .commit(&[
            Write::Run(run("r", RunStatus::Running, 0)),
            Write::Task(b_running.clone()),
            Write::Attempt(b2_running.clone()),
        ])
        .unwrap();
    assert_eq!(
        store.tasks("r").unwrap(),
        vec![a.clone(), b_running.clone()]
    );
    assert_eq!(
        store.attempts("r", "b").unwrap(),
        vec![b1.clone(), b2_running.clone()]
    );
    // All of the run's attempts at once: the same, sealed and live together.
    assert_eq!(
        store.run_attempts("r").unwrap(),
        vec![a1.clone(), b1.clone(), b2_running.clone()]
    );
    let back = recovery::read(&store.write_recovery_point().unwrap()).unwrap();
    assert_eq!(back.tasks.len(), 2);
    assert!(back.tasks.contains(&b_running));
    assert_eq!(back.attempts.len(), 3);

    // Its finish seals everything again.
    let mut b_done = b_running.clone();
    b_done.status = TaskStatus::Succeeded;
    let b2 = attempt("r", "b", 2, TaskStatus::Succeeded);
    store
        .commit(&[
            Write::Attempt(b2.clone()),
            Write::Task(b_done.clone()),
            Write::Run(run("r", RunStatus::Succeeded, 0)),
        ])
        .unwrap();
    assert_eq!((live(&store, "t"), live(&store, "a")), (0, 0));
    assert_eq!(store.tasks("r").unwrap(), vec![a, b_done]);
    assert_eq!(
        store.attempts("r", "b").unwrap(),
        vec![b1.clone(), b2.clone()]
    );
    assert_eq!(store.run_attempts("r").unwrap(), vec![a1, b1, b2]);
    assert_clean(&store);

    // Deleting the run deletes its sealed value.
    store.delete_runs(&["r".into()], &[]).unwrap();
    assert!(!store.db.contains_key(sealed_key("r")).unwrap());
    assert!(store.tasks("r").unwrap().is_empty());
}
