//! Write orchestrator task plugins in Rust: protocol version 1 over JSON lines on stdin
//! and stdout (docs/plugins.md). Depends on `serde_json` only.
//!
//! ```no_run
//! use orchestrator_plugin::{Ending, Plugin};
//! use serde_json::json;
//!
//! Plugin::new("hello", json!({
//!     "type": "object", "additionalProperties": false, "required": ["name"],
//!     "properties": {"name": {"type": "string", "description": "Who."}}
//! }))
//! .output("greeted", "who was greeted")
//! .serve(|run| {
//!     let name = run.fields["name"].as_str().unwrap_or_default().to_string();
//!     run.log(&format!("hello {name}"));
//!     run.output("greeted", json!(name));
//!     Ending::Succeeded
//! });
//! ```

use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};

/// The protocol version this crate speaks.
pub const PROTOCOL: u64 = 1;

/// How an attempt ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Succeeded,
    /// Failed; another attempt would fail the same way (no retry).
    Failed(String),
    /// Failed for a reason that may pass: the task's `retries:` apply.
    Retryable(String),
    /// Nothing to do: with `short_circuit: true`, downstream tasks are skipped.
    ShortCircuit(String),
}

/// One attempt: the task's fields, the run's context, the secrets the task named.
pub struct Run {
    pub fields: Value,
    /// run_id, task_id, workflow, logical_date, attempt, workflow_dir, backend,
    /// short_circuit.
    pub context: Value,
    /// Secret values by environment variable name.
    pub secrets: Map<String, Value>,
}

impl Run {
    /// A line of the task's log (stderr works too).
    pub fn log(&self, message: &str) {
        send(&json!({"type": "log", "message": message}));
    }

    /// How far the attempt is, 0.0 to 1.0.
    pub fn progress(&self, fraction: f64, message: &str) {
        send(&json!({"type": "progress", "fraction": fraction, "message": message}));
    }

    /// An output downstream tasks read as `{{ tasks.ID.outputs.KEY }}`.
    pub fn output(&self, key: &str, value: Value) {
        send(&json!({"type": "output", "key": key, "value": value}));
    }

    /// Whether the task has `short_circuit: true`.
    pub fn may_short_circuit(&self) -> bool {
        self.context["short_circuit"].as_bool().unwrap_or(false)
    }

    /// The workflow file's directory: relative paths in fields resolve against it.
    pub fn workflow_dir(&self) -> std::path::PathBuf {
        self.context["workflow_dir"].as_str().unwrap_or(".").into()
    }
}

/// A plugin: its kind, the JSON Schema of its fields, its outputs.
pub struct Plugin {
    kind: String,
    description: String,
    fields: Value,
    outputs: Map<String, Value>,
    short_circuit: bool,
}

impl Plugin {
    /// `fields` is an object schema (JSON Schema) of the task's fields.
    pub fn new(kind: &str, fields: Value) -> Plugin {
        Plugin {
            kind: kind.to_string(),
            description: String::new(),
            fields,
            outputs: Map::new(),
            short_circuit: false,
        }
    }

    pub fn description(mut self, text: &str) -> Plugin {
        self.description = text.to_string();
        self
    }

    /// An output the plugin may set, with what it holds.
    pub fn output(mut self, key: &str, what: &str) -> Plugin {
        self.outputs.insert(key.to_string(), what.into());
        self
    }

    /// The plugin may end with [`Ending::ShortCircuit`].
    pub fn short_circuit(mut self) -> Plugin {
        self.short_circuit = true;
        self
    }

    /// Answers the engine's one request (describe or run) and exits.
    pub fn serve(self, run: impl FnOnce(&Run) -> Ending) -> ! {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        match request["type"].as_str() {
            Some("describe") => {
                send(&json!({
                    "type": "describe",
                    "protocol": PROTOCOL,
                    "kind": self.kind,
                    "description": self.description,
                    "fields": self.fields,
                    "outputs": self.outputs,
                    "short_circuit": self.short_circuit,
                }));
            }
            Some("run") => {
                let attempt = Run {
                    fields: request["fields"].clone(),
                    context: request["context"].clone(),
                    secrets: request["secrets"].as_object().cloned().unwrap_or_default(),
                };
                let ending = match run(&attempt) {
                    Ending::Succeeded => json!({"type": "result", "status": "succeeded"}),
                    Ending::Failed(m) => {
                        json!({"type": "result", "status": "failed", "message": m})
                    }
                    Ending::Retryable(m) => {
                        json!({"type": "result", "status": "retryable", "message": m})
                    }
                    Ending::ShortCircuit(r) => {
                        json!({"type": "result", "status": "short_circuit", "reason": r})
                    }
                };
                send(&ending);
            }
            _ => {
                eprintln!("this is an orchestrator plugin; it reads one JSON request on stdin");
                std::process::exit(2);
            }
        }
        std::process::exit(0)
    }
}

fn send(message: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the engine is gone: nothing to tell it.
    let _ = writeln!(out, "{message}");
    let _ = out.flush();
}
