//! The JSON Schema (draft 2020-12) of a workflow file, for editors (`orchestrator
//! schema`): made from the types the loader reads — the top-level fields' specs, the
//! common task fields ([`super::tasks::CommonSpec`]) and each kind's config (its
//! `schemars` schema, or a plugin's declared one) — so it cannot drift from validation.
//! Tests hold [`TopLevel`]'s fields equal to [`super::TOP_FIELDS`].

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::schedule::{DstSpec, OnSpec};
use super::tasks::{CommonSpec, DefaultsSpec};
use crate::backend::{AwsBlock, Backend};
use crate::channel::Channel;
use crate::schedule::{Catchup, Concurrency};
use crate::task::{Dur, KindInfo, Registry, TaskKind};

/// A workflow file's top-level fields (`tasks:` is filled in from the kinds).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct TopLevel {
    /// The workflow's name: lowercase letters, digits, `_` and `-`.
    name: String,
    /// What the workflow does, for people.
    description: Option<String>,
    /// Values templates read as `{{ params.NAME }}`; `--param NAME=VALUE` overrides.
    params: Option<BTreeMap<String, Scalar>>,
    /// Tasks of one run that may run at once (default: the number of cores).
    #[schemars(range(min = 1))]
    max_parallel: Option<u32>,
    /// Runs of this workflow that may run at once (default 1).
    #[schemars(range(min = 1))]
    max_active_runs: Option<u32>,
    /// Where data tasks run: `local` (DataFusion, directories) or `aws` (Athena, Glue, S3).
    backend: Option<Backend>,
    /// The AWS backend's region, database and S3 locations.
    aws: Option<AwsBlock>,
    /// Where messages go, by channel name (alerts, notifications).
    channels: Option<BTreeMap<String, Channel>>,
    /// Which events notify which channels: `{ on_failure: [channel, ...] }` and so on.
    notify: Option<BTreeMap<String, OneOrMany>>,
    /// OpenLineage events: `{ url: ... }` or `{ file: ... }`.
    lineage: Option<Map<String, Value>>,
    /// Task kinds from plugin executables: kind name to path (relative to this file).
    plugins: Option<BTreeMap<String, String>>,
    /// How long a run may take before `sla_miss` is notified.
    sla: Option<Dur>,
    /// How long finished runs are kept (at least 1d); the daemon deletes older ones.
    retention: Option<Dur>,
    /// A time of day (`"23:30"`, in `timezone:`) by which a scheduled run must have succeeded.
    deadline: Option<String>,
    /// Where tables are written: a directory (relative to this file) or `s3://BUCKET/PREFIX`.
    warehouse: Option<String>,
    /// Retry and timeout settings for every task that does not set its own.
    defaults: Option<DefaultsSpec>,
    /// When the daemon starts runs: cron (`0 22 * * 1-5`), EventBridge
    /// (`cron(0 22 ? * MON-FRI *)`, `rate(1 hour)`), or a list of them.
    schedule: Option<OneOrMany>,
    /// The IANA time zone of the schedule and of run dates (default UTC).
    timezone: Option<String>,
    /// What a schedule does in daylight-saving gaps and overlaps.
    dst: Option<DstSpec>,
    /// Missed fire times the daemon runs when it starts.
    catchup: Option<Catchup>,
    /// At most this many missed runs are caught up.
    #[schemars(range(min = 1))]
    max_catchup: Option<u32>,
    /// What a fire does while a run of this workflow is still running.
    concurrency: Option<Concurrency>,
    /// Whether the daemon resumes runs a crash interrupted.
    resume_interrupted: Option<bool>,
    /// The first date the schedule fires for (`2026-01-01` or RFC 3339).
    start_date: Option<String>,
    /// What else starts a run: files arriving in a directory.
    on: Option<OnSpec>,
    /// Task id to task.
    tasks: Map<String, Value>,
}

/// A param's value.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Scalar {
    Text(String),
    Number(f64),
    Flag(bool),
}

/// One value or a list of them.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The fields of [`TopLevel`], for the test that holds them equal to `TOP_FIELDS`.
#[cfg(test)]
fn top_level_fields() -> Vec<String> {
    let schema = SchemaGenerator::default().root_schema_for::<TopLevel>();
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The schema of a workflow file whose tasks may be of `registry`'s built-in kinds or
/// of `plugins`.
pub fn workflow_schema(registry: &Registry, plugins: &[Arc<dyn TaskKind>]) -> Value {
    let mut generator = SchemaGenerator::default();
    let mut root = generator.root_schema_for::<TopLevel>().to_value();
    let common = generator.subschema_for::<CommonSpec>().to_value();
    let common = resolve(&common, &generator);
    let mut kinds: Vec<KindInfo> = registry.kinds().map(|k| k.info(&mut generator)).collect();
    kinds.extend(plugins.iter().map(|k| k.info(&mut generator)));
    let mut defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    let mut alternatives = Vec::new();
    for mut info in kinds {
        let name = format!("task_{}", info.kind);
        let mut fields = std::mem::take(&mut info.fields);
        if let crate::task::KindSource::Plugin(_) = info.source {
            fields = hoist_defs(fields, &name, &mut defs);
        }
        defs.insert(
            name.clone(),
            task_schema(&info.kind, fields, &common, &info),
        );
        alternatives.push(json!({ "$ref": format!("#/$defs/{name}") }));
    }
    if let Some(obj) = root.as_object_mut() {
        obj.insert(
            "$id".into(),
            "https://orchestrator.dev/schema/workflow.json".into(),
        );
        obj.insert("title".into(), "orchestrator workflow".into());
        if let Some(tasks) = obj.get_mut("properties").and_then(|p| p.get_mut("tasks")) {
            *tasks = json!({
                "description": "Task id to task. Each task has a `kind:`; its other fields are the kind's.",
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["kind"],
                    "oneOf": alternatives,
                },
            });
        }
        let all = obj.entry("$defs").or_insert_with(|| json!({}));
        if let Some(all) = all.as_object_mut() {
            all.extend(defs);
        }
    }
    root
}

/// A task of kind `kind`: the common fields and the kind's, `kind` fixed.
fn task_schema(kind: &str, fields: Value, common: &Value, info: &KindInfo) -> Value {
    let mut out = fields;
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    for key in ["$schema", "$id", "title"] {
        obj.remove(key);
    }
    if let Some(d) = &info.description {
        obj.insert("description".into(), d.clone().into());
    }
    obj.insert("type".into(), "object".into());
    obj.insert("additionalProperties".into(), false.into());
    let props = obj
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut merged = Map::new();
    if let Some(c) = common.get("properties").and_then(Value::as_object) {
        merged.extend(c.clone());
    }
    merged.insert(
        "kind".into(),
        json!({ "const": kind, "description": "The task's kind." }),
    );
    if let crate::task::KindSource::Plugin(_) = info.source {
        merged.insert(
            "secrets".into(),
            json!({
                "type": "array",
                "items": { "type": "string" },
                "description": "Environment variables whose values the plugin receives as secrets (masked wherever they would be printed or stored).",
            }),
        );
    }
    // A kind's fields are rendered as templates before they are read: any of them may be
    // written as one (`outputsize: "{{ params.outputsize }}"`).
    merged.extend(props.into_iter().map(|(name, p)| (name, or_template(p))));
    obj.insert("properties".into(), Value::Object(merged));
    let mut required: Vec<Value> = obj
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    required.insert(0, "kind".into());
    obj.insert("required".into(), Value::Array(required));
    out
}

/// `p`, or a string holding a template (`{{ ... }}`).
fn or_template(p: Value) -> Value {
    if p.get("type").and_then(Value::as_str) == Some("string") && p.get("pattern").is_none() {
        return p;
    }
    let description = p.get("description").cloned();
    let mut out = json!({ "anyOf": [p, { "type": "string", "pattern": "\\{\\{.*\\}\\}" }] });
    if let Some(d) = description {
        out["description"] = d;
    }
    out
}

/// A schema given as a `$ref` to one of the generator's definitions, as the definition.
fn resolve(schema: &Value, generator: &SchemaGenerator) -> Value {
    let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
        return schema.clone();
    };
    let name = r.rsplit('/').next().unwrap_or_default();
    generator
        .definitions()
        .get(name)
        .cloned()
        .unwrap_or_else(|| schema.clone())
}

/// A plugin's own `$defs` moved into the document's, renamed `PREFIX_NAME`, with its
/// refs rewritten to match.
fn hoist_defs(mut schema: Value, prefix: &str, defs: &mut Map<String, Value>) -> Value {
    let own = schema
        .as_object_mut()
        .and_then(|o| o.remove("$defs").or_else(|| o.remove("definitions")));
    fn rewrite(v: &mut Value, prefix: &str) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get_mut("$ref") {
                    for from in ["#/$defs/", "#/definitions/"] {
                        if let Some(name) = r.strip_prefix(from) {
                            *r = format!("#/$defs/{prefix}_{name}");
                        }
                    }
                }
                o.values_mut().for_each(|v| rewrite(v, prefix));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| rewrite(v, prefix)),
            _ => {}
        }
    }
    rewrite(&mut schema, prefix);
    for (name, mut def) in own.and_then(|o| o.as_object().cloned()).unwrap_or_default() {
        rewrite(&mut def, prefix);
        defs.insert(format!("{prefix}_{name}"), def);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_has_every_top_level_field_the_loader_reads() {
        let mut fields = top_level_fields();
        fields.sort();
        let mut known: Vec<String> = super::super::TOP_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        known.sort();
        assert_eq!(fields, known);
    }

    #[test]
    fn each_kind_is_one_alternative_with_the_common_fields() {
        let mut registry = Registry::default();
        registry.register::<crate::testkit::Noop>();
        let schema = workflow_schema(&registry, &[]);
        let noop = &schema["$defs"]["task_noop"];
        assert_eq!(noop["properties"]["kind"]["const"], "noop");
        for field in super::super::COMMON_TASK_FIELDS {
            assert!(
                noop["properties"].get(*field).is_some(),
                "{field}: {noop:#}"
            );
        }
        assert_eq!(noop["additionalProperties"], false);
        assert_eq!(
            schema["properties"]["tasks"]["additionalProperties"]["oneOf"][0]["$ref"],
            "#/$defs/task_noop"
        );
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }

    #[test]
    fn a_plugins_own_definitions_are_renamed_into_the_document() {
        let mut defs = Map::new();
        let s = hoist_defs(
            json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}}),
            "task_p",
            &mut defs,
        );
        assert_eq!(s["properties"]["a"]["$ref"], "#/$defs/task_p_x");
        assert_eq!(defs["task_p_x"], json!({"type": "string"}));
    }
}
