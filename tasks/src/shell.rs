//! `kind: shell` — runs `sh -c COMMAND`.
//!
//! The command runs in its own process group, so a timeout or cancellation stops it and
//! everything it started (SIGTERM to the group, then SIGKILL after a grace period).
//! stdout and stderr are read line by line into the task's output sink (masked, streamed
//! to the log, tail kept in the attempt record).
//!
//! With `short_circuit: true`, exit status [`SKIP_EXIT_CODE`] (99, as Airflow's
//! BashOperator's `skip_on_exit_code`) means "nothing to do": the task succeeds and ends
//! its branch, with its last output line as the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use orchestrator_engine::task::{
    BuildContext, Outputs, Task, TaskConfig, TaskContext, TaskFailure, SHORT_CIRCUIT,
};
use serde::Deserialize;

use crate::process::{
    last_line, read_lines, task_command, GroupGuard, DRAIN_AFTER_EXIT, TERM_GRACE,
};

/// The exit status that short-circuits a task with `short_circuit: true`.
pub const SKIP_EXIT_CODE: i32 = 99;

/// Runs `sh -c COMMAND` in its own process group; a non-zero exit fails the attempt (99 short-circuits with `short_circuit: true`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    /// The command line, run with `sh -c`.
    command: String,
    /// Extra environment variables.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory; relative paths resolve against the workflow file's directory,
    /// which is also the default.
    workdir: Option<PathBuf>,
}

impl TaskConfig for ShellConfig {
    const KIND: &'static str = "shell";
    const OUTPUTS: &'static [(&'static str, &'static str)] =
        &[("exit_code", "the command's exit status")];
    const SHORT_CIRCUIT: bool = true;

    fn build(
        self,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Task>, orchestrator_engine::task::Invalid> {
        if self.command.trim().is_empty() {
            return Err("`command` is empty; give the shell command to run".into());
        }
        let workdir = match self.workdir {
            Some(w) => ctx.resolve(w),
            None => ctx.base_dir.clone(),
        };
        Ok(Arc::new(Shell {
            command: self.command,
            env: self.env,
            workdir,
        }))
    }
}

#[derive(Debug)]
struct Shell {
    command: String,
    env: BTreeMap<String, String>,
    workdir: PathBuf,
}

#[async_trait::async_trait]
impl Task for Shell {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let mut cmd = task_command("sh", &self.workdir, ctx);
        cmd.arg("-c")
            .arg(&self.command)
            .envs(&self.env)
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| {
            TaskFailure::new(format!(
                "cannot start `sh -c` in {}: {e}; check that the directory exists",
                self.workdir.display()
            ))
        })?;
        let mut guard = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
        let readers = [
            child
                .stdout
                .take()
                .map(|s| read_lines(s, ctx.output.clone())),
            child
                .stderr
                .take()
                .map(|s| read_lines(s, ctx.output.clone())),
        ];
        let readers: Vec<_> = readers.into_iter().flatten().collect();

        let status = tokio::select! {
            status = child.wait() => status,
            _ = ctx.cancel.cancelled() => {
                guard.signal(Signal::SIGTERM);
                if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                    guard.signal(Signal::SIGKILL);
                }
                // Whatever the shell left behind in its group goes too.
                guard.signal(Signal::SIGKILL);
                let _ = child.wait().await;
                for r in readers {
                    r.abort();
                }
                return Err(TaskFailure::new("cancelled"));
            }
        };
        // Exited on its own: leave any background processes it started alone.
        guard.0 = None;
        for r in readers {
            if tokio::time::timeout(DRAIN_AFTER_EXIT, r).await.is_err() {
                ctx.output.line(
                    "[orchestrator] output still open after the command exited; stopped reading",
                );
            }
        }
        let status = status.map_err(|e| TaskFailure::new(format!("waiting for `sh -c`: {e}")))?;
        match status.code() {
            Some(0) => {
                let mut out = Outputs::new();
                out.insert("exit_code".into(), 0.into());
                Ok(out)
            }
            Some(SKIP_EXIT_CODE) if ctx.short_circuit => {
                let tail = ctx.output.tail();
                let reason = tail
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .map_or("nothing to do (exit status 99)", str::trim);
                let mut out = Outputs::new();
                out.insert("exit_code".into(), SKIP_EXIT_CODE.into());
                out.insert(SHORT_CIRCUIT.into(), reason.into());
                Ok(out)
            }
            Some(code) => Err(TaskFailure {
                message: format!(
                    "command exited with status {code}{}",
                    last_line(&ctx.output)
                ),
                exit_code: Some(code),
                outputs: Outputs::new(),
                retryable: true,
            }),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let sig = status.signal().unwrap_or_default();
                Err(TaskFailure::new(format!(
                    "command was killed by signal {sig}{}",
                    last_line(&ctx.output)
                )))
            }
        }
    }
}
