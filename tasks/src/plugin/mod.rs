//! Task kinds from executables in any language: protocol version 1 over JSON lines on
//! stdin and stdout (docs/plugins.md).
//!
//! A plugin is found by its kind's name in the plugins directory (`--plugins DIR`, env
//! `ORCHESTRATOR_PLUGINS`; by default `plugins/` in the workflow's directory, then in
//! its parent) or at the path the workflow's `plugins:` gives. [`Finder`] asks it to
//! `describe` itself once per file content (cached by the file's hash for the process),
//! and the kind ([`PluginKind`]) checks a task's fields against the schema it declared
//! ([`fields`]). Each attempt is one process ([`PluginTask`]): the engine writes one
//! `run` request, closes stdin, and reads messages ([`protocol`]) until the `result`;
//! stderr is the task's log. Anything else the plugin does (bad JSON, unknown messages,
//! no result, two results, a crash, a runaway line) fails the attempt with what it did,
//! and memory stays bounded: lines are read up to [`protocol::MAX_LINE`].

pub mod fields;
pub mod protocol;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use orchestrator_engine::backend::Backend;
use orchestrator_engine::task::{
    BuildContext, BuildError, KindInfo, KindSource, OutputSink, Outputs, PluginFinder, Problem,
    Task, TaskContext, TaskFailure, TaskKind, SHORT_CIRCUIT,
};
use orchestrator_engine::yaml::{Node, NodeKind};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

use crate::process::{
    last_line, read_lines, task_command, GroupGuard, DRAIN_AFTER_EXIT, TERM_GRACE,
};
use protocol::{Description, Ending, Message, Violation};

/// The environment variable naming the plugins directory (`--plugins` sets it).
pub const ENV_DIR: &str = "ORCHESTRATOR_PLUGINS";

/// The field every plugin task may have besides the common ones: the names of the
/// environment variables whose values the plugin receives as secrets.
pub const SECRETS_FIELD: &str = "secrets";

/// How long `describe` may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds plugins: in one directory when one is given, else in `plugins/` beside the
/// workflow (its directory, then its parent's).
#[derive(Debug, Clone, Default)]
pub struct Finder {
    dir: Option<PathBuf>,
}

impl Finder {
    /// The directory `ORCHESTRATOR_PLUGINS` names, if set.
    pub fn from_env() -> Finder {
        Finder {
            dir: std::env::var_os(ENV_DIR)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        }
    }

    pub fn in_dir(dir: impl Into<PathBuf>) -> Finder {
        Finder {
            dir: Some(dir.into()),
        }
    }

    /// The plugins directories searched, in order, for a workflow in `workflow_dir`.
    pub fn search_dirs(&self, workflow_dir: &Path) -> Vec<PathBuf> {
        match &self.dir {
            Some(d) => vec![std::path::absolute(d).unwrap_or_else(|_| d.clone())],
            None => {
                let mut dirs = vec![workflow_dir.join("plugins")];
                if let Some(parent) = workflow_dir.parent() {
                    dirs.push(parent.join("plugins"));
                }
                dirs
            }
        }
    }

    /// Every plugin executable in the search dirs, by kind (the first found wins).
    pub fn list(&self, workflow_dir: &Path) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        for dir in self.search_dirs(workflow_dir) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut found: Vec<(String, PathBuf)> = entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    let kind = kind_of_file(&name)?;
                    is_executable(&e.path()).then(|| (kind, e.path()))
                })
                .collect();
            found.sort();
            for (kind, path) in found {
                if !out.iter().any(|(k, _)| *k == kind) {
                    out.push((kind, path));
                }
            }
        }
        out
    }
}

/// The kind a file in a plugins directory provides: its name up to the first `.`
/// (`http_get`, `http_get.py`), if that is a kind's name.
fn kind_of_file(name: &str) -> Option<String> {
    let stem = name.split('.').next()?;
    let ok = !stem.is_empty()
        && stem.starts_with(|c: char| c.is_ascii_lowercase())
        && stem
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| stem.to_string())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl PluginFinder for Finder {
    fn find(
        &self,
        kind: &str,
        path: Option<&Path>,
        workflow_dir: &Path,
    ) -> Option<Result<Arc<dyn TaskKind>, String>> {
        let path = match path {
            Some(p) if is_executable(p) => p.to_path_buf(),
            Some(_) => return None,
            None => {
                self.list(workflow_dir)
                    .into_iter()
                    .find(|(k, _)| k == kind)?
                    .1
            }
        };
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Some(describe(&path).and_then(|d| {
            if d.kind != kind {
                return Err(format!(
                    "plugin {} describes itself as kind `{}`, not `{kind}`; name the file after its kind, or use `kind: {}`",
                    path.display(),
                    d.kind,
                    d.kind
                ));
            }
            Ok(Arc::new(PluginKind { path, desc: d }) as Arc<dyn TaskKind>)
        }))
    }

    fn dirs(&self, workflow_dir: &Path) -> Vec<PathBuf> {
        self.search_dirs(workflow_dir)
    }
}

type Described = Result<Arc<Description>, String>;

/// `describe` answers by file content hash, and each path's last (size, mtime, hash),
/// so a file is read again only when it changed and run again only when its content did.
#[derive(Default)]
struct Cache {
    by_hash: HashMap<u64, Described>,
    hash_of: HashMap<PathBuf, (u64, Option<SystemTime>, u64)>,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many times a plugin process was started to describe itself (for tests of the
/// cache).
pub fn describe_calls() -> u64 {
    DESCRIBE_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

static DESCRIBE_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What the plugin at `path` (absolute) says of itself, from the cache when its
/// content has been described before.
pub fn describe(path: &Path) -> Described {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read plugin {}: {e}", path.display()))?;
    let stamp = (meta.len(), meta.modified().ok());
    let known = cache()
        .lock()
        .ok()
        .and_then(|c| c.hash_of.get(path).copied())
        .filter(|(len, mtime, _)| (*len, *mtime) == stamp)
        .map(|(_, _, h)| h);
    let hash = match known {
        Some(h) => h,
        None => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read plugin {}: {e}", path.display()))?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            let h = h.finish();
            if let Ok(mut c) = cache().lock() {
                c.hash_of.insert(path.to_path_buf(), (stamp.0, stamp.1, h));
            }
            h
        }
    };
    if let Some(d) = cache()
        .lock()
        .ok()
        .and_then(|c| c.by_hash.get(&hash).cloned())
    {
        return d;
    }
    let answer = ask_describe(path).map(Arc::new);
    if let Ok(mut c) = cache().lock() {
        c.by_hash.insert(hash, answer.clone());
    }
    answer
}

/// Runs `PATH` with a `describe` request, on a thread of its own (the loader is
/// synchronous and may be called inside a runtime).
fn ask_describe(path: &Path) -> Result<Description, String> {
    DESCRIBE_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let shown = path.display().to_string();
    let hint = format!(
        "run it by hand to see what it does: echo '{{\"type\":\"describe\",\"protocol\":1}}' | {shown}"
    );
    let mut child = std::process::Command::new(path)
        .current_dir(path.parent().unwrap_or(Path::new(".")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start plugin {shown}: {e}; check its first line (#!) and that it is executable"))?;
    let guard = GroupGuard(Some(Pid::from_raw(child.id() as i32)));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"{\"type\":\"describe\",\"protocol\":1}\n");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(protocol::MAX_LINE as u64 + 1).read_to_end(&mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(4096).read_to_end(&mut err);
        }
        let _ = tx.send((out, err));
    });
    let Ok((out, err)) = rx.recv_timeout(DESCRIBE_TIMEOUT) else {
        drop(guard);
        let _ = child.wait();
        return Err(format!(
            "plugin {shown} did not answer `describe` within {}s; {hint}",
            DESCRIBE_TIMEOUT.as_secs()
        ));
    };
    drop(guard);
    let status = child.wait().ok();
    let stderr = String::from_utf8_lossy(&err);
    let stderr = stderr.trim();
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!("; it wrote: {}", protocol::excerpt(stderr))
    };
    let line = out
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .find(|l| !l.is_empty());
    let Some(line) = line else {
        let how = match status.and_then(|s| s.code()) {
            Some(code) => format!("exited with status {code}"),
            None => "was killed".to_string(),
        };
        return Err(format!(
            "plugin {shown} {how} without answering `describe`{said}; {hint}"
        ));
    };
    let value: Value = serde_json::from_str(&line).map_err(|e| {
        format!(
            "plugin {shown} answered `describe` with a line that is not JSON ({e}): {}; {hint}",
            protocol::excerpt(&line)
        )
    })?;
    if let Some(p) = value.get("protocol").and_then(Value::as_u64) {
        if p != protocol::VERSION {
            return Err(format!(
                "plugin {shown} speaks protocol version {p}; this orchestrator speaks version {}: use a version of the plugin for protocol {}, or upgrade orchestrator",
                protocol::VERSION,
                protocol::VERSION
            ));
        }
    }
    let d: Description = serde_json::from_value(value).map_err(|e| {
        format!(
            "plugin {shown} answered `describe` without what protocol 1 needs ({e}); it must send type, protocol, kind and fields (docs/plugins.md)"
        )
    })?;
    if d.fields.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!(
            "plugin {shown}: its `fields` schema must be an object schema (\"type\": \"object\")"
        ));
    }
    let unsupported = fields::unsupported(&d.fields);
    if !unsupported.is_empty() {
        return Err(format!(
            "plugin {shown}: its `fields` schema uses keywords orchestrator does not check: {}; use the keywords listed in docs/plugins.md",
            unsupported.join(", ")
        ));
    }
    Ok(d)
}

/// A plugin as a task kind.
pub struct PluginKind {
    path: PathBuf,
    desc: Arc<Description>,
}

impl TaskKind for PluginKind {
    fn build(&self, config: &Node, ctx: &BuildContext) -> Result<Arc<dyn Task>, BuildError> {
        let kind = &self.desc.kind;
        let context = format!("in task `{}` (kind {kind})", ctx.task_id);
        let entries = config.as_map().unwrap_or_default();
        let mut secrets = Vec::new();
        let mut problems = Vec::new();
        let mut rest = Vec::new();
        for (k, v) in entries {
            if k.as_str() != Some(SECRETS_FIELD) {
                rest.push((k.clone(), v.clone()));
                continue;
            }
            let names: Option<Vec<String>> = match &v.kind {
                NodeKind::Seq(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            };
            match names {
                Some(names) => secrets = names,
                None => problems.push(Problem {
                    pos: v.pos,
                    message: format!(
                        "invalid `{SECRETS_FIELD}` {context}: it must be a list of environment variable names"
                    ),
                    help: Some("e.g. `secrets: [WAREHOUSE_TOKEN]`".into()),
                }),
            }
        }
        let fields_node = Node {
            kind: NodeKind::Map(rest),
            pos: config.pos,
        };
        let checker = fields::Checker {
            root: &self.desc.fields,
            context,
            task_pos: config.pos,
        };
        problems.extend(checker.check(&fields_node));
        if !problems.is_empty() {
            return Err(BuildError::Problems(problems));
        }
        let fields = fields::to_json(&fields_node, &self.desc.fields, &checker);
        Ok(Arc::new(PluginTask {
            kind: kind.clone(),
            path: self.path.clone(),
            fields,
            secrets,
            workflow: ctx.workflow.clone(),
            backend: ctx.backend,
        }))
    }

    fn info(&self, _: &mut schemars::SchemaGenerator) -> KindInfo {
        KindInfo {
            kind: self.desc.kind.clone(),
            source: KindSource::Plugin(self.path.clone()),
            description: self.desc.description.clone(),
            fields: self.desc.fields.clone(),
            outputs: self
                .desc
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            short_circuit: self.desc.short_circuit,
        }
    }
}

/// One plugin task of a run.
#[derive(Debug)]
pub struct PluginTask {
    kind: String,
    path: PathBuf,
    fields: Value,
    secrets: Vec<String>,
    workflow: String,
    backend: Backend,
}

impl PluginTask {
    fn name(&self) -> String {
        format!("plugin `{}` ({})", self.kind, self.path.display())
    }

    fn broke(&self, what: impl std::fmt::Display) -> TaskFailure {
        TaskFailure::new(format!("{} {what}", self.name())).permanent()
    }
}

/// What the attempt's messages said so far.
#[derive(Default)]
struct Seen {
    outputs: Outputs,
    outputs_size: usize,
    ending: Option<Ending>,
}

#[async_trait::async_trait]
impl Task for PluginTask {
    async fn run(&self, ctx: &TaskContext) -> Result<Outputs, TaskFailure> {
        let mut secrets = serde_json::Map::new();
        for name in &self.secrets {
            match std::env::var(name) {
                Ok(v) => {
                    secrets.insert(name.clone(), Value::String(v));
                }
                Err(_) => {
                    return Err(TaskFailure::new(format!(
                        "secret `{name}` (under `{SECRETS_FIELD}:` of task `{}`) is not set in the environment; set it where orchestrator runs",
                        ctx.task_id
                    ))
                    .permanent())
                }
            }
        }
        let sink = ctx.output.masking(
            secrets
                .values()
                .filter_map(|v| v.as_str().map(str::to_string)),
        );
        let request = json!({
            "type": "run",
            "protocol": protocol::VERSION,
            "kind": self.kind,
            "fields": self.fields,
            "context": {
                "run_id": ctx.run_id,
                "task_id": ctx.task_id,
                "workflow": self.workflow,
                "logical_date": ctx.logical_date,
                "attempt": ctx.attempt,
                "workflow_dir": ctx.base_dir,
                "backend": self.backend.as_str(),
                "short_circuit": ctx.short_circuit,
            },
            "secrets": secrets,
        });
        let mut child = task_command(&self.path, &ctx.base_dir, ctx)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| {
                TaskFailure::new(format!(
                    "cannot start {}: {e}; check that it exists and is executable",
                    self.name()
                ))
            })?;
        let mut guard = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
        if let Some(mut stdin) = child.stdin.take() {
            let mut line = request.to_string();
            line.push('\n');
            // A plugin that exits without reading its request is reported by its ending.
            let _ = stdin.write_all(line.as_bytes()).await;
        }
        let stderr = child.stderr.take().map(|s| read_lines(s, sink.clone()));
        let Some(stdout) = child.stdout.take() else {
            return Err(TaskFailure::new("plugin stdout was not captured"));
        };
        let mut lines = Lines::new(stdout);
        let mut seen = Seen::default();

        let broken: Option<Violation> = loop {
            tokio::select! {
                line = lines.next() => match line {
                    Ok(Some(line)) => {
                        if let Err(v) = self.take(&line, &mut seen, &sink) {
                            break Some(v);
                        }
                    }
                    Ok(None) => break None,
                    Err(v) => break Some(v),
                },
                _ = ctx.cancel.cancelled() => {
                    guard.signal(Signal::SIGTERM);
                    let killed = tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err();
                    guard.signal(Signal::SIGKILL);
                    let _ = child.wait().await;
                    if let Some(r) = stderr {
                        r.abort();
                    }
                    let how = if killed {
                        format!("it ignored SIGTERM and was killed (SIGKILL) after {}s", TERM_GRACE.as_secs())
                    } else {
                        "it exited on SIGTERM".to_string()
                    };
                    return Err(TaskFailure::new(format!("{} was still running when stopped: {how}", self.name())));
                }
            }
        };
        if let Some(Violation(what)) = broken {
            guard.signal(Signal::SIGKILL);
            let _ = child.wait().await;
            if let Some(r) = stderr {
                r.abort();
            }
            // It may quote what the plugin sent, secrets and all.
            return Err(self.broke(sink.redact(&what)));
        }
        // stdout closed: the plugin should be exiting.
        let status = match tokio::time::timeout(DRAIN_AFTER_EXIT, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                guard.signal(Signal::SIGKILL);
                let _ = child.wait().await;
                None
            }
        };
        guard.0 = None;
        if let Some(r) = stderr {
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, r).await;
        }
        let mut outputs = std::mem::take(&mut seen.outputs);
        let redact = |s: &str| sink.redact(s).into_owned();
        match seen.ending {
            Some(Ending::Succeeded) => Ok(outputs),
            Some(Ending::ShortCircuit(reason)) if ctx.short_circuit => {
                let reason = if reason.trim().is_empty() {
                    "nothing to do".to_string()
                } else {
                    redact(&reason)
                };
                outputs.insert(SHORT_CIRCUIT.into(), reason.into());
                Ok(outputs)
            }
            Some(Ending::ShortCircuit(reason)) => Err(TaskFailure {
                outputs,
                ..TaskFailure::new(format!(
                    "{} found nothing to do ({}); set `short_circuit: true` on the task to skip what follows instead of failing",
                    self.name(),
                    redact(&reason)
                ))
                .permanent()
            }),
            Some(Ending::Failed(message)) => Err(TaskFailure {
                outputs,
                ..TaskFailure::new(failed_message(&redact(&message), &sink)).permanent()
            }),
            Some(Ending::Retryable(message)) => Err(TaskFailure {
                outputs,
                ..TaskFailure::new(failed_message(&redact(&message), &sink))
            }),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let how = match status {
                    Some(s) if s.code().is_some() => {
                        format!("exited with status {}", s.code().unwrap_or_default())
                    }
                    Some(s) => format!(
                        "was killed by signal {}",
                        signal_name(s.signal().unwrap_or_default())
                    ),
                    None => "closed its stdout but did not exit".to_string(),
                };
                Err(TaskFailure {
                    outputs,
                    exit_code: status.and_then(|s| s.code()),
                    ..TaskFailure::new(format!(
                        "{} {how} without sending a result{}",
                        self.name(),
                        last_line(&sink)
                    ))
                })
            }
        }
    }
}

impl PluginTask {
    /// Takes one message; a [`Violation`] stops the plugin.
    fn take(&self, line: &[u8], seen: &mut Seen, sink: &OutputSink) -> Result<(), Violation> {
        let Some(message) = protocol::parse(line)? else {
            return Ok(());
        };
        if seen.ending.is_some() {
            return Err(Violation(match message {
                Message::Result(_) => "sent a second result".to_string(),
                _ => "sent a message after its result".to_string(),
            }));
        }
        match message {
            Message::Log(text) => {
                for l in text.lines() {
                    sink.line(l);
                }
            }
            Message::Progress { fraction, message } => sink.progress(fraction, &message),
            Message::Output { key, value } => {
                let value = mask_json(value, sink);
                seen.outputs_size += key.len() + value.to_string().len();
                if seen.outputs_size > protocol::MAX_OUTPUTS {
                    return Err(Violation(format!(
                        "sent more than {} KiB of outputs; keep outputs small (counts, paths, ids) and write data to files",
                        protocol::MAX_OUTPUTS / 1024
                    )));
                }
                seen.outputs.insert(key, value);
            }
            Message::Result(ending) => seen.ending = Some(ending),
        }
        Ok(())
    }
}

fn failed_message(message: &str, sink: &OutputSink) -> String {
    if message.trim().is_empty() {
        format!("the plugin reported failure{}", last_line(sink))
    } else {
        message.to_string()
    }
}

/// Every string in `value` with the sink's secrets masked.
fn mask_json(value: Value, sink: &OutputSink) -> Value {
    match value {
        Value::String(s) => Value::String(sink.redact(&s).into_owned()),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| mask_json(v, sink)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (sink.redact(&k).into_owned(), mask_json(v, sink)))
                .collect(),
        ),
        other => other,
    }
}

fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => format!("{sig} ({})", s.as_str()),
        Err(_) => sig.to_string(),
    }
}

/// Lines of a plugin's stdout, each at most [`protocol::MAX_LINE`] bytes.
struct Lines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(r: R) -> Self {
        Lines {
            reader: BufReader::new(r),
            line: Vec::new(),
        }
    }

    /// The next line; `None` at the end; a [`Violation`] for a line over the bound.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Violation> {
        loop {
            let chunk = match self.reader.fill_buf().await {
                Ok(c) if !c.is_empty() => c,
                _ if self.line.is_empty() => return Ok(None),
                _ => return Ok(Some(std::mem::take(&mut self.line))),
            };
            let newline = chunk.iter().position(|b| *b == b'\n');
            let body = &chunk[..newline.unwrap_or(chunk.len())];
            if self.line.len() + body.len() > protocol::MAX_LINE {
                return Err(Violation(format!(
                    "sent a message line longer than {} MiB on stdout; write logs to stderr and data to files",
                    protocol::MAX_LINE >> 20
                )));
            }
            self.line.extend_from_slice(body);
            let used = newline.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(std::mem::take(&mut self.line)));
            }
        }
    }
}
