//! The state store under hostile conditions: a full disk, a db truncated to nothing, a
//! closed stdout, a read-only state dir, a deleted LOCK, a shared warehouse.
//!
//! The full-disk and read-only tests mount a tmpfs (or a read-only bind mount) in their
//! sandbox, which needs root (CI runs as root). Without it they fail and say so: they do
//! not skip themselves.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{Out, Sandbox};

/// A mount that is undone when the test ends, however it ends.
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str], target: &Path) -> Mount {
        std::fs::create_dir_all(target).unwrap();
        let out = Command::new("mount").args(args).arg(target).output();
        match out {
            Ok(o) if o.status.success() => Mount(target.to_path_buf()),
            Ok(o) => panic!(
                "this test needs to mount a file system (run the tests as root): mount {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs the `mount` command: {e}"),
        }
    }

    fn tmpfs(target: &Path, size: &str) -> Mount {
        Mount::run(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            target,
        )
    }

    /// `source` seen read-only at `target`.
    fn read_only_bind(source: &Path, target: &Path) -> Mount {
        let m = Mount::run(&["--bind", &source.display().to_string()], target);
        let ok = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(target)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting {} read-only failed", target.display());
        m
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Bytes short of a whole chunk may remain; take them too.
    while f.write_all(&[0u8; 512]).is_ok() {}
}

fn daily() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workflows/daily.yaml")
        .display()
        .to_string()
}

fn run_ids(out: &Out) -> Vec<String> {
    let runs: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("runs --json is not JSON ({e}): {out:?}"));
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_full_disk_loses_nothing_and_the_store_works_again_once_space_is_freed() {
    let sb = Sandbox::new();
    let t = sb.path("T");
    let _mount = Mount::tmpfs(&t, "2m");
    let state = t.join("state");
    let state = state.to_str().unwrap();
    let landing = format!("landing={}", sb.path("landing").display());
    // `orchestrator --state-dir T/state run daily.yaml ... -q` with a free-space margin.
    let daily_run = |date: &str, margin_mb: &str| {
        let mut args = vec!["--state-dir", state, "run"];
        let file = daily();
        args.extend([file.as_str(), "--param", &landing, "-q"]);
        if !date.is_empty() {
            args.extend(["--date", date]);
        }
        sb.run_with_env(&args, &[("ORCHESTRATOR_MIN_FREE_MB", margin_mb)])
    };
    // The 2 MB file system is below the default safety margin; margin 0 lets sled meet
    // the full disk itself, as it did when the store was destroyed.
    let env = [("ORCHESTRATOR_MIN_FREE_MB", "0")];
    let mut ids = Vec::new();
    for date in ["2026-05-07", "2026-05-08", "2026-05-11"] {
        let out = daily_run(date, "0");
        assert_eq!(out.code, 0, "{out:?}");
        ids.push(out.run_id());
    }
    ids.reverse();

    fill(&t.join("fill"));
    // A read on a full disk: sled's open-time snapshot write fails part-way here.
    let out = sb.run_with_env(&["--state-dir", state, "runs"], &env);
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    // A run on a full disk fails, and says why.
    let out = daily_run("", "0");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("free space"), "{out:?}");
    std::fs::remove_file(t.join("fill")).unwrap();

    // Space is back: every earlier run is listed, and a new run succeeds.
    let out = sb.run_with_env(&["--state-dir", state, "runs", "--json"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let listed = run_ids(&out);
    for id in &ids {
        assert!(listed.contains(id), "run {id} lost: {out:?}");
    }
    let out = daily_run("2026-05-06", "0");
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.run_with_env(&["--state-dir", state, "state", "check"], &env);
    assert!(
        !out.stdout.contains("problem: record") && !out.stdout.contains("cannot be opened"),
        "{out:?}"
    );

    // With a margin, a full disk is refused before sled writes, and reads still work
    // (from a copy of the store made outside the full file system).
    fill(&t.join("fill"));
    let env = [("ORCHESTRATOR_MIN_FREE_MB", "1")];
    let out = daily_run("", "1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("MB free; orchestrator needs at least 1 MB")
            && out.stderr.contains("free space and retry"),
        "{out:?}"
    );
    let out = sb.run_with_env(&["--state-dir", state, "runs", "--json"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    // The three runs and the one after space was freed (the run on the full disk could
    // not even record its start).
    assert_eq!(run_ids(&out).len(), ids.len() + 1, "{out:?}");
    assert!(out.stderr.contains("reading a copy"), "{out:?}");
    let out = sb.run_with_env(
        &[
            "--state-dir",
            state,
            "query",
            "SELECT count(*) AS n FROM stock_daily",
            "--json",
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn state_recover_rebuilds_a_store_whose_db_was_truncated() {
    let sb = Sandbox::new();
    let landing = format!("landing={}", sb.path("landing").display());
    sb.write("hello.yaml", "name: hello\ntasks:\n  a:\n    kind: noop\n");
    let out = sb.run(&["run", "hello.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    // Within a minute of the last one, a run writes no recovery point...
    let out = sb.run(&["run", "hello.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read_dir(sb.state_dir().join("recovery"))
            .unwrap()
            .count(),
        1
    );
    // Start again from an empty state dir.
    std::fs::remove_dir_all(sb.state_dir()).unwrap();
    let out = sb.run(&["run", "hello.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let first = out.run_id();
    // ...unless the interval is 0.
    let out = sb.run_with_env(
        &[
            "run",
            &daily(),
            "--param",
            &landing,
            "--date",
            "2026-05-11",
            "-q",
        ],
        &[("ORCHESTRATOR_RECOVERY_INTERVAL", "0")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    // The newest recovery point is cut short: recover must fall back to the older one,
    // which predates the daily run, and find its tables in the warehouse.
    let points = {
        let mut p: Vec<PathBuf> = std::fs::read_dir(sb.state_dir().join("recovery"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        p.sort();
        p
    };
    assert_eq!(points.len(), 2, "{points:?}");
    let newest = std::fs::read_to_string(&points[1]).unwrap();
    std::fs::write(&points[1], &newest[..newest.len() / 2]).unwrap();

    for e in std::fs::read_dir(sb.state_dir().join("db")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::File::create(&p).unwrap(); // truncate to 0 bytes
        }
    }
    let out = sb.run(&["runs"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("orchestrator state recover"), "{out:?}");
    assert!(!out.stderr.contains("backtrace"), "{out:?}");
    let out = sb.run(&["state", "check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("problem: unusable recovery point"),
        "{out:?}"
    );

    let out = sb.run(&["state", "recover"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("recovered 1 runs"), "{out:?}");
    assert!(
        out.stdout.contains("re-registered table `stock_daily`"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("lost: anything recorded after"),
        "{out:?}"
    );
    assert!(out.stdout.contains("damaged db is kept at"), "{out:?}");

    let out = sb.run(&["runs", "--json"]);
    assert_eq!(run_ids(&out), [first], "{out:?}");
    let out = sb.run(&["query", "SELECT count(*) AS n FROM stock_daily", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows[0]["n"], 10, "{out:?}");
    let out = sb.run(&["state", "check"]);
    assert_eq!(out.code, 0, "{out:?}");
    // And the store is writable again.
    let out = sb.run(&["run", "hello.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// A pipe whose reading end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_closed_stdout_or_stderr_never_kills_a_run() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: chatty\ntasks:\n  a:\n    kind: shell\n    command: \"seq 1 2000\"\n  b:\n    kind: shell\n    after: [a]\n    command: \"seq 1 2000 >&2\"\n",
    );
    let out = sb
        .command(&["run", "wf.yaml"])
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .output()
        .unwrap();
    let runs = sb.run(&["runs", "--json"]);
    let list: Value = serde_json::from_str(&runs.stdout).unwrap();
    let show = sb.run(&["show", list[0]["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{show:?}");
    assert_eq!(list[0]["status"], "succeeded", "{runs:?}");

    let out = sb
        .command(&["query", "SELECT 1"])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
}

#[test]
fn a_read_only_state_dir_can_still_be_read() {
    let sb = Sandbox::new();
    sb.write("hello.yaml", "name: hello\ntasks:\n  a:\n    kind: noop\n");
    let out = sb.run(&["run", "hello.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.run_id();
    let ro = sb.path("ro");
    let _mount = Mount::read_only_bind(&sb.state_dir(), &ro);
    let ro = ro.to_str().unwrap();
    let out = sb.run(&["--state-dir", ro, "runs", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(run_ids(&out), std::slice::from_ref(&id));
    assert!(out.stderr.contains("not writable"), "{out:?}");
    let out = sb.run(&["--state-dir", ro, "show", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.run(&["--state-dir", ro, "query", "SELECT 1 AS one"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.run(&["--state-dir", ro, "run", "hello.yaml"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
}

#[test]
fn a_file_as_state_dir_is_named() {
    let sb = Sandbox::new();
    sb.write("notadir", "x");
    sb.write("hello.yaml", "name: hello\ntasks:\n  a:\n    kind: noop\n");
    for args in [&["runs"][..], &["run", "hello.yaml"][..]] {
        let mut all = vec!["--state-dir", "notadir"];
        all.extend_from_slice(args);
        let out = sb.run(&all);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr
                .contains("--state-dir notadir is a file, not a directory"),
            "{out:?}"
        );
    }
}

#[test]
fn a_deleted_lock_file_does_not_let_a_second_process_in() {
    let sb = Sandbox::new();
    sb.write(
        "wait.yaml",
        "name: waits\ntasks:\n  a:\n    kind: shell\n    command: \"touch started; while [ ! -f go ]; do sleep 0.02; done\"\n",
    );
    let mut child = sb.spawn(&["run", "wait.yaml"]);
    sb.wait_for_file("started");
    std::fs::remove_file(sb.state_dir().join("LOCK")).unwrap();
    let out = sb.run(&["run", "wait.yaml"]);
    sb.write("go", "");
    let status = child.wait().unwrap();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("LOCK was probably deleted"), "{out:?}");
    assert!(status.success());
}

#[test]
fn two_state_dirs_cannot_share_one_warehouse() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: tables\nwarehouse: ./shared-wh\ntasks:\n  make:\n    kind: sql\n    sql: \"CREATE TABLE t AS SELECT 1 AS x\"\n",
    );
    let out = sb.run(&["--state-dir", "a", "run", "wf.yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.run(&["--state-dir", "b", "run", "wf.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("belongs to state dir"), "{out:?}");
    assert!(sb.path("shared-wh/t").exists(), "a's table is untouched");
    assert!(
        !sb.path("b/recovery").exists()
            || sb
                .run(&["--state-dir", "b", "runs", "--json"])
                .stdout
                .trim()
                == "[]"
    );
}

#[test]
fn runs_says_why_it_lists_nothing() {
    let sb = Sandbox::new();
    sb.write("hello.yaml", "name: hello\ntasks:\n  a:\n    kind: noop\n");
    assert_eq!(sb.run(&["run", "hello.yaml"]).code, 0);
    let out = sb.run(&["runs", "--workflow", "nope"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("no runs of workflow `nope`; workflows with runs: hello"),
        "{out:?}"
    );
    let out = sb.run(&["runs", "--limit", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--limit"), "{out:?}");
}

#[test]
fn query_show_tables_works_as_documented() {
    let sb = Sandbox::new();
    sb.write(
        "wf.yaml",
        "name: tables\ntasks:\n  make:\n    kind: sql\n    sql: \"CREATE TABLE answers AS SELECT 42 AS x\"\n",
    );
    assert_eq!(sb.run(&["run", "wf.yaml"]).code, 0);
    let out = sb.run(&["query", "SHOW TABLES"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("answers"), "{out:?}");
}

#[test]
fn a_daemon_whose_disk_fills_exits_non_zero_and_a_restart_records_runs_once_there_is_room() {
    use crate::daemon::Daemon;
    let sb = Sandbox::new();
    let t = sb.path("T");
    let _mount = Mount::tmpfs(&t, "8m");
    let state = t.join("state");
    let state = state.to_str().unwrap();
    std::fs::create_dir_all(sb.path("wf")).unwrap();
    sb.write(
        "wf/tick.yaml",
        "name: tick\nschedule: \"rate(1 second)\"\ncatchup: none\ntasks:\n  a:\n    kind: shell\n    command: \"echo tick >> ../ticks\"\n",
    );
    let daemon = || {
        let mut c = sb.command(&[
            "--state-dir",
            state,
            "daemon",
            "--workflows",
            "wf",
            "--no-ui",
        ]);
        c.env("ORCHESTRATOR_MIN_FREE_MB", "1");
        Daemon::spawn(c)
    };
    let d = daemon();
    d.wait_log("succeeded", 2);
    fill(&t.join("fill"));
    // The next commit is refused: the daemon cancels its runs and exits for its
    // supervisor, instead of going on unable to record anything.
    let (code, log) = d.wait_exit();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("the state store cannot record") && log.contains("free space and retry"),
        "{log}"
    );
    assert!(!log.contains("Os {"), "{log}");
    std::fs::remove_file(t.join("fill")).unwrap();

    // Room again: a restarted daemon records scheduled runs, and no run stays `running`.
    let d = daemon();
    let before = sb.count("ticks");
    d.wait_log("daemon ready", 1);
    crate::common::wait_until("a scheduled run after space came back", || {
        sb.count("ticks") > before
    });
    d.wait_log("succeeded", 1);
    let (code, log) = d.terminate();
    assert_eq!(code, 0, "{log}");
    let out = sb.run(&["--state-dir", state, "runs", "--json", "--limit", "1000"]);
    assert_eq!(out.code, 0, "{out:?}");
    let runs: Value = serde_json::from_str(&out.stdout).unwrap();
    let running: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "running")
        .collect();
    assert!(running.is_empty(), "{running:?}");
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "succeeded"),
        "{runs}"
    );
}

#[test]
fn recover_never_shortens_a_readable_history_without_force_and_a_warning() {
    let sb = Sandbox::new();
    sb.write("w.yaml", "name: w\ntasks:\n  a:\n    kind: noop\n");
    // The first run writes a recovery point; the next two are newer than it.
    let env = [("ORCHESTRATOR_RECOVERY_INTERVAL", "3600")];
    for _ in 0..3 {
        let out = sb.run_with_env(&["run", "w.yaml"], &env);
        assert_eq!(out.code, 0, "{out:?}");
    }
    // A healthy store is left alone.
    let out = sb.run(&["state", "recover"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to recover"), "{out:?}");
    // --force rebuilds from the older point, and says how many runs that loses.
    let out = sb.run(&["state", "recover", "--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("the store read 3 runs") && out.stderr.contains("2 runs are lost"),
        "{out:?}"
    );
    // Twice in the same second: the second rebuild's old db gets a name of its own.
    let out = sb.run(&["state", "recover", "--force"]);
    assert_eq!(out.code, 0, "{out:?}");
    let aside = std::fs::read_dir(sb.state_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("db.damaged-")
        })
        .count();
    assert_eq!(aside, 2);
}
