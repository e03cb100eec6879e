//! `tasks:`: each task's common fields and its kind's config (templates rendered, built
//! by the kind), then the `after:` edges resolved into the DAG.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::report::pos_in_value;
use super::Loader;
use crate::dag::Dag;
use crate::late::Late;
use crate::model::{RetryPolicy, TaskDef};
use crate::suggest::closest;
use crate::task::{BuildContext, BuildError, Dur, TaskKind, Timeout};
use crate::template::{OutputRef, Renderer};
use crate::trigger::TriggerRule;
use crate::yaml::{Node, NodeKind, Pos};

/// Keys every task has, whatever its kind; the rest of a task's mapping is the kind's.
pub const COMMON_TASK_FIELDS: &[&str] = &[
    "kind",
    "description",
    "after",
    "trigger",
    "retries",
    "retry_delay",
    "retry_backoff",
    "timeout",
    "short_circuit",
];

/// Longest task id accepted: ids appear in every log line, message and key.
pub const MAX_ID_LEN: usize = 128;

/// `defaults:`, for every task that does not set its own.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsSpec {
    /// Attempts after the first when a task fails (default 0).
    retries: Option<u32>,
    /// Wait before the first retry (default 5s).
    retry_delay: Option<Dur>,
    /// Each later retry waits this many times longer (default 2.0; at least 1.0).
    pub(super) retry_backoff: Option<f64>,
    timeout: Option<Timeout>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommonSpec {
    /// The task's kind: a built-in kind or a plugin's.
    kind: String,
    /// What the task does, for people (shown by `show` and the web UI).
    description: Option<String>,
    /// The tasks that must finish first: one id or a list.
    // Read from the node directly to keep each entry's position.
    #[allow(dead_code)]
    #[schemars(with = "Option<After>")]
    after: Option<serde::de::IgnoredAny>,
    /// When the task starts, given its upstream tasks' outcomes (default all_success).
    trigger: Option<TriggerRule>,
    /// Attempts after the first when the task fails (default 0, or `defaults:`).
    retries: Option<u32>,
    /// Wait before the first retry (default 5s).
    retry_delay: Option<Dur>,
    /// Each later retry waits this many times longer (default 2.0; at least 1.0).
    retry_backoff: Option<f64>,
    timeout: Option<Timeout>,
    /// The task may end its branch with "nothing to do": downstream tasks are skipped
    /// and the run can still succeed.
    short_circuit: Option<bool>,
}

/// `after:` in the schema: the tasks that must finish first (one id or a list).
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum After {
    One(String),
    Many(Vec<String>),
}

/// A task as read, before its `after:` names are resolved.
pub(super) struct PendingTask {
    id: String,
    pos: Pos,
    after: Vec<(String, Pos)>,
    /// The upstream outputs its fields read (`tasks.ID.outputs.NAME`), with where.
    reads: Vec<(String, Pos)>,
    /// `None` when the task is invalid (reported).
    pub(super) def: Option<TaskDef>,
}

impl Loader<'_, '_> {
    /// The entries of `tasks:`, or `None` with the error when it is missing, not a
    /// mapping, or empty.
    pub(super) fn task_entries<'n>(
        &mut self,
        node: Option<&'n Node>,
        root: &Node,
    ) -> Option<&'n [(Node, Node)]> {
        let Some(node) = node else {
            self.err(Some(root.pos), "missing field `tasks`").help =
                Some("add a `tasks:` mapping of task id to task".into());
            return None;
        };
        let Some(entries) = node.as_map() else {
            self.err(
                Some(node.pos),
                format!(
                    "`tasks` must be a mapping of task id to task, found {}",
                    node.describe()
                ),
            );
            return None;
        };
        if entries.is_empty() {
            self.err(
                Some(node.pos),
                "`tasks` is empty; a workflow needs at least one task",
            );
            return None;
        }
        Some(entries)
    }

    /// Every task, in file order.
    pub(super) fn tasks(
        &mut self,
        entries: &[(Node, Node)],
        defaults: &DefaultsSpec,
        renderer: &Renderer,
        base_dir: &Path,
    ) -> Vec<PendingTask> {
        entries
            .iter()
            .map(|(k, v)| self.task(k, v, defaults, renderer, base_dir))
            .collect()
    }

    fn task(
        &mut self,
        key: &Node,
        node: &Node,
        defaults: &DefaultsSpec,
        renderer: &Renderer,
        base_dir: &Path,
    ) -> PendingTask {
        let id = key.as_str().unwrap_or_default().to_string();
        let mut pending = PendingTask {
            id: id.clone(),
            pos: key.pos,
            after: Vec::new(),
            reads: Vec::new(),
            def: None,
        };
        if id.len() > MAX_ID_LEN {
            // Say it once, without echoing the id, and look no further at this task:
            // every other message would quote it.
            let start: String = id.chars().take(20).collect();
            self.err(
                Some(key.pos),
                format!(
                    "task id `{start}…` is {} characters long; task ids have at most {MAX_ID_LEN}",
                    id.chars().count()
                ),
            )
            .help = Some("use a short name of letters, digits, `_` and `-`".into());
            pending.id = format!("{start}…");
            return pending;
        }
        if !is_valid_name(&id, true) {
            self.err(Some(key.pos), format!("invalid task id `{id}`"))
                .help = Some("use letters, digits, `_` and `-`".into());
        }
        let Some(entries) = node.as_map() else {
            self.err(
                Some(node.pos),
                format!(
                    "task `{id}` must be a mapping with at least `kind:`, found {}",
                    node.describe()
                ),
            );
            return pending;
        };

        // `after:` is a list of ids or a single id.
        if let Some(after) = node.get("after") {
            match &after.kind {
                NodeKind::Seq(items) => {
                    for item in items {
                        match item.as_str() {
                            Some(s) => pending.after.push((s.to_string(), item.pos)),
                            None => {
                                self.err(
                                    Some(item.pos),
                                    format!(
                                        "`after` entries of task `{id}` must be task ids, found {}",
                                        item.describe()
                                    ),
                                );
                            }
                        }
                    }
                }
                NodeKind::Scalar { .. } if after.is_null() => {}
                NodeKind::Scalar { value, .. } => pending.after.push((value.clone(), after.pos)),
                NodeKind::Map(_) => {
                    self.err(
                        Some(after.pos),
                        format!("`after` of task `{id}` must be a list of task ids"),
                    );
                }
            }
        }

        let (common, config): (Vec<_>, Vec<_>) = entries
            .iter()
            .cloned()
            .partition(|(k, _)| k.as_str().is_some_and(|k| COMMON_TASK_FIELDS.contains(&k)));
        let common_node = Node {
            kind: NodeKind::Map(common),
            pos: node.pos,
        };
        let context = format!("in task `{id}`");
        let spec: CommonSpec = match common_node.parse() {
            Ok(s) => s,
            Err(e) => {
                // serde stops at the first bad field: look at each field on its own so
                // that every one is reported at once.
                let kind = node
                    .get("kind")
                    .cloned()
                    .unwrap_or_else(|| Node::scalar("noop", node.pos));
                let mut found = false;
                for (k, v) in common_node.as_map().unwrap_or_default() {
                    if k.as_str() == Some("kind") {
                        continue;
                    }
                    let one = Node {
                        kind: NodeKind::Map(vec![
                            (Node::scalar("kind", k.pos), kind.clone()),
                            (k.clone(), v.clone()),
                        ]),
                        pos: node.pos,
                    };
                    if let Err(e) = one.parse::<CommonSpec>() {
                        self.de_err(e, &context, COMMON_TASK_FIELDS);
                        found = true;
                    }
                }
                if !found {
                    self.de_err(e, &context, COMMON_TASK_FIELDS);
                }
                if let Some(b) = node
                    .get("retry_backoff")
                    .and_then(|n| n.parse::<f64>().ok())
                {
                    self.check_backoff(node, &id, b);
                }
                return pending;
            }
        };
        let mut config_node = Node {
            kind: NodeKind::Map(config),
            pos: node.pos,
        };
        let before = self.errs.len();
        // Fields that read upstream outputs are rendered again when the task starts:
        // keep them as written.
        let written = mentions_tasks(&config_node).then(|| config_node.clone());
        self.reads.clear();
        self.render(&mut config_node, renderer, &format!("task `{id}`"), None);
        pending.reads = std::mem::take(&mut self.reads);
        let templates_ok = self.errs.len() == before;
        let Some(kind) = self.kind(&spec.kind, node, &id, base_dir) else {
            return pending;
        };
        let retry_backoff = spec.retry_backoff.or(defaults.retry_backoff).unwrap_or(2.0);
        // Checked where it is written: an inherited one was reported once, at `defaults:`.
        if let Some(b) = spec.retry_backoff {
            self.check_backoff(node, &id, b);
        }

        if !templates_ok {
            return pending;
        }
        let ctx = BuildContext {
            task_id: id.clone(),
            workflow: self.workflow.clone(),
            base_dir: base_dir.to_path_buf(),
            backend: self.backend,
            backend_overridden: self.opts.backend.is_some(),
            aws: self.aws.clone(),
            channels: self.channels.clone(),
            file: self.file.to_path_buf(),
            field_lines: config_node
                .as_map()
                .unwrap_or_default()
                .iter()
                .filter_map(|(k, _)| Some((k.as_str()?.to_string(), k.pos.line)))
                .collect(),
        };
        let task = match kind.build(&config_node, &ctx) {
            Ok(t) => t,
            Err(BuildError::Config(e)) => {
                let context = format!("in task `{id}` (kind {})", spec.kind);
                self.de_err(e, &context, COMMON_TASK_FIELDS);
                return pending;
            }
            Err(BuildError::Problems(problems)) => {
                for p in problems {
                    self.err(Some(p.pos), p.message).help = p.help;
                }
                return pending;
            }
            Err(BuildError::Invalid(mut invalid)) => {
                let more = std::mem::take(&mut invalid.more);
                for invalid in std::iter::once(invalid).chain(more) {
                    let pos = invalid
                        .at
                        .and_then(|at| {
                            let (key, value) = config_node
                                .as_map()?
                                .iter()
                                .find(|(k, _)| k.as_str() == Some(at.field))?;
                            Some(pos_in_value(self.source, key, value, at))
                        })
                        .unwrap_or(node.pos);
                    self.err(Some(pos), format!("task `{id}`: {}", invalid.message))
                        .help = invalid.help;
                }
                return pending;
            }
        };
        let late = match written {
            Some(written) if !pending.reads.is_empty() => {
                let reads = pending
                    .reads
                    .iter()
                    .filter_map(|(var, _)| OutputRef::parse(var).ok().map(|r| r.task))
                    .collect();
                Some(Arc::new(Late::new(
                    written,
                    renderer.vars().clone(),
                    kind.clone(),
                    ctx,
                    reads,
                )))
            }
            _ => None,
        };
        pending.def = Some(TaskDef {
            id,
            kind: spec.kind,
            description: spec.description,
            trigger: spec.trigger.unwrap_or_default(),
            retry: RetryPolicy {
                retries: spec.retries.or(defaults.retries).unwrap_or(0),
                delay: spec
                    .retry_delay
                    .or(defaults.retry_delay)
                    .map_or(Duration::from_secs(5), |d| d.0),
                backoff: retry_backoff,
            },
            timeout: spec.timeout.or(defaults.timeout).map(|d| d.0),
            short_circuit: spec.short_circuit.unwrap_or(false),
            task,
            late,
        });
        pending
    }

    /// Task `id`'s kind: built in, named in `plugins:`, or found in the plugins
    /// directory; `None` with the error reported.
    fn kind(
        &mut self,
        name: &str,
        node: &Node,
        id: &str,
        base_dir: &Path,
    ) -> Option<Arc<dyn TaskKind>> {
        let registry = self.opts.registry;
        if let Some(kind) = registry.get(name) {
            return Some(kind.clone());
        }
        let kind_pos = node.get("kind").map(|n| n.pos);
        let named = self.plugins.get(name).cloned();
        let path = named.as_ref().map(|(p, _)| base_dir.join(p));
        match registry.plugin(name, path.as_deref(), base_dir) {
            Some(Ok(kind)) => return Some(kind),
            Some(Err(why)) => {
                let pos = named.as_ref().map(|(_, pos)| *pos).or(kind_pos);
                self.err(pos, format!("task `{id}`: {why}"));
                return None;
            }
            None => {}
        }
        if let (Some((written, pos)), Some(path)) = (&named, &path) {
            self.err(
                Some(*pos),
                format!(
                    "plugin `{name}` (used by task `{id}`): {} does not exist or is not an executable file",
                    path.display()
                ),
            )
            .help = Some(format!(
                "fix the path `{}` under `plugins:` (relative to the workflow file), or make the file executable (chmod +x)",
                written.display()
            ));
            return None;
        }
        let names: Vec<&str> = registry.names().collect();
        let dirs: Vec<String> = registry
            .plugin_dirs(base_dir)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let help = match closest(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if dirs.is_empty() => format!("known kinds: {}", names.join(", ")),
            None => format!(
                "built-in kinds: {}; and no plugin `{name}` in {} (a plugin is an executable named after its kind there, or one named under `plugins:`; `--plugins DIR` names the directory)",
                names.join(", "),
                dirs.join(" or ")
            ),
        };
        self.err(
            kind_pos,
            format!("unknown task kind `{name}` in task `{id}`"),
        )
        .help = Some(help);
        None
    }

    /// Each upstream output a task's fields read names a task that runs before it: one
    /// of its `after:` tasks, or theirs, and so on.
    pub(super) fn check_reads(&mut self, pending: &[PendingTask], dag: &Dag) {
        let index: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        for (i, t) in pending.iter().enumerate() {
            if t.reads.is_empty() {
                continue;
            }
            let upstream = ancestors(dag, i);
            let id = &t.id;
            for (var, pos) in &t.reads {
                // One not of the shape `tasks.ID.outputs...` was reported when rendering.
                let Ok(r) = OutputRef::parse(var) else {
                    continue;
                };
                let from = &r.task;
                match index.get(from.as_str()) {
                    None => {
                        self.err(
                            Some(*pos),
                            format!("task `{id}` reads `{var}`, but there is no task `{from}`"),
                        )
                        .help = Some(unknown_task_help(from, pending));
                    }
                    Some(&j) if j == i => {
                        self.err(
                            Some(*pos),
                            format!("task `{id}` reads its own output (`{var}`)"),
                        )
                        .help = Some(
                            "a task's outputs exist once it has run; read them in a task that runs after it".into(),
                        );
                    }
                    Some(j) if !upstream.contains(j) => {
                        self.err(
                            Some(*pos),
                            format!(
                                "task `{id}` reads `{var}`, but `{from}` is not upstream of `{id}`: its outputs may not exist when `{id}` starts"
                            ),
                        )
                        .help = Some(format!("add `{from}` to the `after:` of `{id}`"));
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// A task's own `retry_backoff` must be 1.0 or more.
    fn check_backoff(&mut self, task: &Node, id: &str, b: f64) {
        if !(b >= 1.0 && b.is_finite()) {
            let pos = task.get("retry_backoff").map(|n| n.pos);
            self.err(
                pos,
                format!("`retry_backoff` of task `{id}` must be 1.0 or more, found {b}"),
            );
        }
    }

    /// The DAG the tasks' `after:` lists make, or `None` with the errors: unknown or
    /// repeated names, cycles.
    pub(super) fn dag(&mut self, pending: &[PendingTask]) -> Option<Dag> {
        // Resolve `after` names to indices.
        let index: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut upstream = vec![Vec::new(); pending.len()];
        for (i, t) in pending.iter().enumerate() {
            for (dep, pos) in &t.after {
                match index.get(dep.as_str()) {
                    Some(&j) if upstream[i].contains(&j) => {
                        self.err(
                            Some(*pos),
                            format!("task `{}` lists `{dep}` twice in `after`", t.id),
                        );
                    }
                    Some(&j) => upstream[i].push(j),
                    None => {
                        self.err(
                            Some(*pos),
                            format!("task `{}` depends on unknown task `{dep}`", t.id),
                        )
                        .help = Some(unknown_task_help(dep, pending));
                    }
                }
            }
        }
        match Dag::new(upstream) {
            Ok(dag) => Some(dag),
            Err(cycles) => {
                for cycle in cycles {
                    let chain: Vec<&str> = cycle.iter().map(|&i| pending[i].id.as_str()).collect();
                    self.err(
                        Some(pending[cycle[0]].pos),
                        format!("dependency cycle: {}", chain.join(" -> ")),
                    )
                    .help = Some("remove one of these `after` entries".into());
                }
                None
            }
        }
    }
}

/// The hint for a task id that names no task: the closest id, or every id.
fn unknown_task_help(name: &str, pending: &[PendingTask]) -> String {
    let ids = pending.iter().map(|t| t.id.as_str());
    closest(name, ids.clone())
        .map(|s| format!("did you mean `{s}`?"))
        .unwrap_or_else(|| format!("tasks in this file: {}", ids.collect::<Vec<_>>().join(", ")))
}

/// Every task upstream of `task`, directly or through others.
fn ancestors(dag: &Dag, task: usize) -> std::collections::HashSet<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<usize> = dag.upstream(task).to_vec();
    while let Some(t) = stack.pop() {
        if seen.insert(t) {
            stack.extend_from_slice(dag.upstream(t));
        }
    }
    seen
}

/// Whether any scalar of `node` mentions `tasks` (a template may read upstream outputs).
fn mentions_tasks(node: &Node) -> bool {
    match &node.kind {
        NodeKind::Scalar { value, .. } => value.contains("tasks"),
        NodeKind::Seq(items) => items.iter().any(mentions_tasks),
        NodeKind::Map(entries) => entries.iter().any(|(_, v)| mentions_tasks(v)),
    }
}

pub(super) fn is_valid_name(s: &str, allow_upper: bool) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || (allow_upper && c.is_ascii_uppercase())
        })
}
