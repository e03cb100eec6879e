//! Child processes of task kinds (`shell`, plugins): each runs in its own process
//! group, which a timeout or cancellation stops whole (SIGTERM, then SIGKILL after
//! [`TERM_GRACE`]), and its output is read line by line with bounded memory.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use orchestrator_engine::task::{OutputSink, TaskContext};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How long a cancelled process gets to exit after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to keep reading output after the process exited (a background process may
/// hold the pipe open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Longest output line kept whole; longer lines are cut.
pub const MAX_LINE: usize = 8 * 1024;

/// Kills the process group when dropped, unless the command exited on its own.
pub struct GroupGuard(pub Option<Pid>);

impl GroupGuard {
    pub fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Streams `stream` to `sink` line by line, holding at most [`MAX_LINE`] bytes of a line:
/// a task that prints hundreds of megabytes without a newline must not make us buffer
/// them (`read_until` would). The rest of an over-long line is read and dropped.
pub fn read_lines<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    sink: OutputSink,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line: Vec<u8> = Vec::new();
        let mut cut = false;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok(c) if !c.is_empty() => c,
                _ => break,
            };
            let newline = chunk.iter().position(|b| *b == b'\n');
            let body = &chunk[..newline.unwrap_or(chunk.len())];
            let room = MAX_LINE.saturating_sub(line.len());
            if body.len() > room {
                cut = true;
            }
            line.extend_from_slice(&body[..body.len().min(room)]);
            let used = newline.map_or(chunk.len(), |i| i + 1);
            reader.consume(used);
            if newline.is_some() {
                emit(&sink, &line, cut);
                line.clear();
                cut = false;
            }
        }
        if !line.is_empty() || cut {
            emit(&sink, &line, cut);
        }
    })
}

fn emit(sink: &OutputSink, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if cut {
        sink.line(&format!("{text} … [line cut at {MAX_LINE} bytes]"));
    } else {
        sink.line(text);
    }
}

/// `; last output: LINE` (the last non-empty line the task wrote), for a failure message.
pub fn last_line(sink: &OutputSink) -> String {
    let tail = sink.tail();
    match tail.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!("; last output: {}", l.trim()),
        None => String::new(),
    }
}

/// A task's child process: in a process group of its own (killed on drop), stdout and
/// stderr piped, in `dir`, and with the attempt in its environment. `ORCHESTRATOR_RUN_ID`
/// is also how a crashed run's leftovers are found (`orchestrator_engine::orphans`).
pub fn task_command(
    program: impl AsRef<std::ffi::OsStr>,
    dir: &std::path::Path,
    ctx: &TaskContext,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.current_dir(dir)
        .env("ORCHESTRATOR_RUN_ID", &ctx.run_id)
        .env("ORCHESTRATOR_TASK_ID", &ctx.task_id)
        .env("ORCHESTRATOR_ATTEMPT", ctx.attempt.to_string())
        .env("ORCHESTRATOR_LOGICAL_DATE", &ctx.logical_date)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}
