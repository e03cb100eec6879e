//! `plugins list`, `plugins describe KIND` and `schema`: what task kinds exist (built in,
//! and plugins in the plugins directory), each kind's fields, and the JSON Schema of a
//! workflow file for editors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_engine::task::{KindInfo, KindSource, PluginFinder as _, TaskKind};
use orchestrator_tasks::plugin::{self, Finder};
use serde_json::{json, Value};

use crate::console::{out, outln};
use crate::{Context, Error};

/// The directory plugins are looked up from when no workflow is named: the working
/// directory (its `plugins/`, then its parent's), unless `--plugins` names one.
fn here() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// A plugin's kind, path, and the kind it makes (or why it cannot).
type Found = (String, PathBuf, Result<Arc<dyn TaskKind>, String>);

/// Each plugin of the plugins directory, described (or why it cannot be).
fn plugins(dir: &Path) -> Vec<Found> {
    let finder = Finder::from_env();
    let builtin = orchestrator_tasks::builtin();
    finder
        .list(dir)
        .into_iter()
        .map(|(kind, path)| {
            // A plugin of a built-in kind's name is never used: not run, and said so.
            let found = if builtin.get(&kind).is_some() {
                Err(format!(
                    "shadowed by the built-in kind `{kind}`; rename the plugin"
                ))
            } else {
                finder
                    .find(&kind, Some(&path), dir)
                    .unwrap_or_else(|| Err(format!("{} is not executable", path.display())))
            };
            (kind, path, found)
        })
        .collect()
}

fn info(kind: &dyn TaskKind) -> KindInfo {
    kind.info(&mut schemars::SchemaGenerator::default())
}

pub fn list(ctx: &Context, as_json: bool) -> Result<u8, Error> {
    let builtin = orchestrator_tasks::builtin();
    let mut rows: Vec<Value> = builtin
        .kinds()
        .map(|k| {
            let i = info(k.as_ref());
            json!({"kind": i.kind, "source": "builtin", "description": i.description})
        })
        .collect();
    for (kind, path, found) in plugins(&here()) {
        let mut row = json!({"kind": kind, "source": path.display().to_string()});
        match found {
            Ok(k) => row["description"] = info(k.as_ref()).description.into(),
            Err(e) => row["error"] = e.into(),
        }
        rows.push(row);
    }
    if as_json {
        outln!(
            ctx,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    let width = rows
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4);
    outln!(ctx, "{:width$}  {:8}  DESCRIPTION", "KIND", "SOURCE");
    for r in &rows {
        let kind = r["kind"].as_str().unwrap_or_default();
        let source = r["source"].as_str().unwrap_or_default();
        let what = r["error"]
            .as_str()
            .map(|e| format!("error: {e}"))
            .or_else(|| r["description"].as_str().map(first_line))
            .unwrap_or_default();
        if source == "builtin" {
            outln!(ctx, "{kind:width$}  {source:8}  {what}");
        } else {
            outln!(
                ctx,
                "{kind:width$}  plugin    {what}\n{:width$}            ({source})",
                ""
            );
        }
    }
    Ok(0)
}

pub fn describe(ctx: &Context, kind: &str, as_json: bool) -> Result<u8, Error> {
    let builtin = orchestrator_tasks::builtin();
    let mut generator = schemars::SchemaGenerator::default();
    let found = match builtin.get(kind) {
        Some(k) => k.info(&mut generator),
        None => {
            let finder = Finder::from_env();
            match finder.find(kind, None, &here()) {
                Some(Ok(k)) => k.info(&mut generator),
                Some(Err(e)) => return Err(Error::failed(format!("error: {e}"))),
                None => {
                    let names: Vec<&str> = builtin.names().collect();
                    let dirs: Vec<String> = finder
                        .search_dirs(&here())
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect();
                    return Err(Error::not_found(format!(
                        "error: no task kind `{kind}`: not built in ({}) and no plugin `{kind}` in {}",
                        names.join(", "),
                        dirs.join(" or ")
                    ))
                    .with_hint("`orchestrator plugins list` shows every kind; `--plugins DIR` names the plugins directory"));
                }
            }
        }
    };
    // A built-in kind's nested types are definitions of the generator: inline them.
    let defs: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    let mut fields = found.fields.clone();
    if !defs.is_empty() {
        if let Some(o) = fields.as_object_mut() {
            o.insert("$defs".into(), Value::Object(defs));
        }
    }
    if as_json {
        let answer = json!({
            "kind": found.kind,
            "source": found.source.to_string(),
            "description": found.description,
            "fields": fields,
            "outputs": found.outputs.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            "short_circuit": found.short_circuit,
        });
        outln!(
            ctx,
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
        return Ok(0);
    }
    let source = match &found.source {
        KindSource::Builtin => "built in".to_string(),
        KindSource::Plugin(p) => format!("plugin {}", p.display()),
    };
    outln!(ctx, "kind: {} ({source})", found.kind);
    if let Some(d) = &found.description {
        outln!(ctx, "{}", d.trim());
    }
    outln!(ctx, "\nfields:");
    let required: Vec<&str> = fields["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = fields["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if props.is_empty() {
        outln!(ctx, "  (none)");
    }
    for (name, p) in &props {
        let p = deref(p, &fields);
        let mut line = format!("  {name}: {}", type_of(p, &fields));
        if required.contains(&name.as_str()) {
            line.push_str(", required");
        }
        if let Some(d) = p.get("default") {
            line.push_str(&format!(", default {d}"));
        }
        outln!(ctx, "{line}");
        if let Some(d) = p.get("description").and_then(Value::as_str) {
            for l in d.lines() {
                outln!(ctx, "      {l}");
            }
        }
    }
    if !found.outputs.is_empty() {
        outln!(ctx, "\noutputs:");
        for (k, v) in &found.outputs {
            outln!(ctx, "  {k}: {v}");
        }
    }
    outln!(
        ctx,
        "\nshort_circuit: {}",
        if found.short_circuit {
            "supported (with `short_circuit: true`, \"nothing to do\" skips downstream tasks)"
        } else {
            "not supported"
        }
    );
    outln!(
        ctx,
        "\ncommon fields of every task: {}",
        orchestrator_engine::load::COMMON_TASK_FIELDS.join(", ")
    );
    Ok(0)
}

/// `schema`: the workflow file's JSON Schema with the built-in kinds and the plugins of
/// the plugins directory.
pub fn schema(ctx: &Context) -> Result<u8, Error> {
    let builtin = orchestrator_tasks::builtin();
    let mut kinds = Vec::new();
    for (kind, path, found) in plugins(&here()) {
        if builtin.get(&kind).is_some() {
            continue;
        }
        match found {
            Ok(k) => kinds.push(k),
            Err(e) => {
                return Err(Error::failed(format!(
                    "error: plugin `{kind}` ({}): {e}",
                    path.display()
                )))
            }
        }
    }
    let schema = orchestrator_engine::load::workflow_schema(&builtin, &kinds);
    out!(
        ctx,
        "{}\n",
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    );
    Ok(0)
}

fn deref<'a>(p: &'a Value, root: &'a Value) -> &'a Value {
    match p.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|ptr| root.pointer(ptr))
            .unwrap_or(p),
        None => p,
    }
}

/// A field's type in words: `string`, `integer | null`, `one of a, b`, `list of string`.
fn type_of(p: &Value, root: &Value) -> String {
    if let Some(e) = p.get("enum").and_then(Value::as_array) {
        let v: Vec<String> = e
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect();
        return format!("one of {}", v.join(", "));
    }
    for alt in ["anyOf", "oneOf"] {
        if let Some(a) = p.get(alt).and_then(Value::as_array) {
            let v: Vec<String> = a.iter().map(|s| type_of(deref(s, root), root)).collect();
            return v.join(" | ");
        }
    }
    let t = match p.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ if p.get("const").is_some() => format!("`{}`", p["const"]),
        _ if p.get("properties").is_some() => "object".into(),
        _ => "any".into(),
    };
    if t.starts_with("array") {
        if let Some(items) = p.get("items") {
            return t.replacen(
                "array",
                &format!("list of {}", type_of(deref(items, root), root)),
                1,
            );
        }
    }
    t
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// `plugin::ENV_DIR`, for the binary's `--plugins`.
pub const PLUGINS_ENV: &str = plugin::ENV_DIR;
