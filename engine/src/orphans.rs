//! Processes that a run's tasks left behind when the orchestrator running them died
//! (`kill -9`, a crash, a reboot of the daemon alone): a shell task's process group goes
//! on without its parent, and a resumed run would start the same task again beside it,
//! doing its side effect twice.
//!
//! Every shell task runs with `ORCHESTRATOR_RUN_ID` in its environment, which its
//! children inherit. Before a run is resumed, [`stop`] finds the processes (on Linux, in
//! `/proc/*/environ`; only this user's are readable) whose environment names the run,
//! kills their process groups and waits until they are gone. Killing, not waiting: a task
//! whose orchestrator died has no one to report its outcome to, and it is about to be
//! started again. No write on the hot path records anything: the environment is the
//! record.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};

/// A process left behind by a task of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub pid: i32,
    /// `ORCHESTRATOR_TASK_ID` of its environment.
    pub task: String,
}

/// How long [`stop`] waits for killed processes to go.
const WAIT: Duration = Duration::from_secs(10);

/// The living processes whose environment names `run_id` (this process excepted).
pub fn find(run_id: &str) -> Vec<Orphan> {
    find_in(Path::new("/proc"), run_id)
}

fn find_in(proc: &Path, run_id: &str) -> Vec<Orphan> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let wanted = format!("ORCHESTRATOR_RUN_ID={run_id}");
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !alive(proc, pid) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let mut named = false;
        let mut task = String::new();
        for var in env.split(|b| *b == 0) {
            if var == wanted.as_bytes() {
                named = true;
            } else if let Some(t) = var.strip_prefix(b"ORCHESTRATOR_TASK_ID=") {
                task = String::from_utf8_lossy(t).into_owned();
            }
        }
        if named {
            out.push(Orphan { pid, task });
        }
    }
    out
}

/// Running or sleeping; a zombie has finished already.
fn alive(proc: &Path, pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) else {
        return false;
    };
    // `PID (COMM) STATE ...`: COMM may hold spaces and parentheses; the state follows the
    // last `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Kills what [`find`] finds for `run_id` (each process and its process group) and waits
/// up to 10 s until nothing of the run is left. Returns what was found first.
///
/// It looks again after each kill, not only at what it found: a process can fork between
/// the look and the kill (a shell starting its command), and its child, killed with the
/// group, is still dying — or was not in the group — when the first ones are gone.
pub fn stop(run_id: &str) -> Vec<Orphan> {
    let found = find(run_id);
    let deadline = Instant::now() + WAIT;
    let mut left = found.clone();
    while !left.is_empty() {
        for o in &left {
            let pid = Pid::from_raw(o.pid);
            if let Ok(group) = getpgid(Some(pid)) {
                // Never our own group (a task started without a group of its own).
                if group != nix::unistd::getpgrp() {
                    let _ = killpg(group, Signal::SIGKILL);
                }
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            break;
        }
        // Processes that are not our children: nothing to wait on but /proc.
        std::thread::sleep(Duration::from_millis(10));
        left = find(run_id);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_with_the_runs_id_in_its_environment_is_found_and_stopped() {
        use std::os::unix::process::CommandExt as _;
        let run = format!("orphan-test-{}", std::process::id());
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30"])
            .env("ORCHESTRATOR_RUN_ID", &run)
            .env("ORCHESTRATOR_TASK_ID", "load")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The child's environment is readable once it has exec'd.
        let deadline = Instant::now() + Duration::from_secs(10);
        while find(&run).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let found = stop(&run);
        assert!(
            found.contains(&Orphan {
                pid,
                task: "load".into()
            }),
            "{found:?}"
        );
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(find(&run).is_empty());
        assert!(find("no-such-run").is_empty());
    }
}
