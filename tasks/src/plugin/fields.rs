//! A plugin task's fields against the plugin's JSON Schema: every problem at its place
//! in the file, worded like a built-in kind's (`unknown field ... did you mean`), and the
//! fields as the JSON the plugin receives.
//!
//! The schema is checked here rather than by a general validator because each problem
//! must point at a YAML node (line and column) and read like the loader's own messages.
//! Enforced keywords: `type`, `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`, `maxItems`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `pattern`,
//! `anyOf`, `oneOf`, `allOf` and local `$ref`s (`#/$defs/...`). Annotations (`title`,
//! `description`, `default`, `examples`, `format`) are not assertions. `describe` refuses
//! a schema that uses any other assertion keyword ([`unsupported`]), so nothing a plugin
//! declares is silently left unchecked.

use orchestrator_engine::load::COMMON_TASK_FIELDS;
use orchestrator_engine::suggest::closest;
use orchestrator_engine::task::Problem;
use orchestrator_engine::yaml::{Node, NodeKind, Pos};
use serde_json::{Map, Value};

/// Keywords [`check`] enforces or that assert nothing.
const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "definitions",
    "$ref",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "anyOf",
    "oneOf",
    "allOf",
];

/// The keywords of `schema` (anywhere in it) that [`check`] would not enforce, with
/// their JSON pointers.
pub fn unsupported(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_keywords(schema, "", &mut out);
    out
}

fn walk_keywords(schema: &Value, at: &str, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    for (k, v) in obj {
        if !KNOWN.contains(&k.as_str()) {
            out.push(format!("`{k}` at {}", if at.is_empty() { "/" } else { at }));
            continue;
        }
        match k.as_str() {
            "properties" | "$defs" | "definitions" => {
                for (name, sub) in v.as_object().into_iter().flatten() {
                    walk_keywords(sub, &format!("{at}/{k}/{name}"), out);
                }
            }
            "items" | "additionalProperties" => walk_keywords(v, &format!("{at}/{k}"), out),
            "anyOf" | "oneOf" | "allOf" => {
                for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                    walk_keywords(sub, &format!("{at}/{k}/{i}"), out);
                }
            }
            _ => {}
        }
    }
}

/// Where a problem is and what to call it.
pub struct Checker<'a> {
    /// The plugin's whole schema, for `$ref`s.
    pub root: &'a Value,
    /// `in task `fetch` (kind http_get)`.
    pub context: String,
    /// The task's position, for missing fields.
    pub task_pos: Pos,
}

impl Checker<'_> {
    /// Every problem of `node` (the task's fields, without the common ones) against the
    /// root schema.
    pub fn check(&self, node: &Node) -> Vec<Problem> {
        let mut out = Vec::new();
        self.value(node, self.root, "", true, &mut out);
        out
    }

    fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
        // A chain of refs is followed a bounded number of times (a ref to itself ends).
        for _ in 0..32 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                return schema;
            };
            match r.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                Some(target) => schema = target,
                None => return &Value::Bool(true),
            }
        }
        schema
    }

    fn value(&self, node: &Node, schema: &Value, key: &str, top: bool, out: &mut Vec<Problem>) {
        let schema = self.resolve(schema);
        if schema == &Value::Bool(false) {
            out.push(self.problem(node.pos, key, "no value is allowed here".into(), None));
            return;
        }
        let Some(s) = schema.as_object() else {
            return;
        };
        for keyword in ["allOf"] {
            for sub in s
                .get(keyword)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.value(node, sub, key, top, out);
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(alts) = s.get(keyword).and_then(Value::as_array) {
                let fits = alts.iter().any(|alt| {
                    let mut probe = Vec::new();
                    self.value(node, alt, key, top, &mut probe);
                    probe.is_empty()
                });
                if !fits {
                    let what = alts
                        .iter()
                        .map(|a| describe_schema(self.resolve(a)))
                        .collect::<Vec<_>>()
                        .join(", or ");
                    out.push(self.problem(
                        node.pos,
                        key,
                        format!("{} is none of: {what}", shown(node)),
                        None,
                    ));
                }
            }
        }
        if let Some(t) = s.get("type") {
            let allowed: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.is_empty() && !allowed.iter().any(|t| is_type(node, t)) {
                let want = allowed
                    .iter()
                    .map(|t| type_words(t))
                    .collect::<Vec<_>>()
                    .join(" or ");
                out.push(self.problem(
                    node.pos,
                    key,
                    format!("{} is not {want}", shown(node)),
                    None,
                ));
                return;
            }
        }
        // A collection's JSON is only compared when the schema lists values for it;
        // building it at every level would copy each subtree once per level above it.
        let compared = s.contains_key("enum") || s.contains_key("const");
        let json = if compared || matches!(node.kind, NodeKind::Scalar { .. }) {
            to_json(node, schema, self)
        } else {
            Value::Null
        };
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.iter().any(|o| loosely_equal(o, &json)) {
                let list = options
                    .iter()
                    .map(|o| format!("`{}`", plain(o)))
                    .collect::<Vec<_>>();
                let words: Vec<String> = options.iter().map(plain).collect();
                let help = closest(&plain(&json), words.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"));
                out.push(self.problem(
                    node.pos,
                    key,
                    format!("{} is not one of {}", shown(node), list.join(", ")),
                    help,
                ));
            }
        }
        if let Some(c) = s.get("const") {
            if !loosely_equal(c, &json) {
                out.push(self.problem(node.pos, key, format!("must be `{}`", plain(c)), None));
            }
        }
        match &node.kind {
            NodeKind::Map(entries) => self.object(node, entries, s, key, top, out),
            NodeKind::Seq(items) => {
                let n = items.len() as f64;
                if let Some(min) = s.get("minItems").and_then(Value::as_f64).filter(|m| n < *m) {
                    out.push(self.problem(
                        node.pos,
                        key,
                        format!("needs at least {min} items, found {n}"),
                        None,
                    ));
                }
                if let Some(max) = s.get("maxItems").and_then(Value::as_f64).filter(|m| n > *m) {
                    out.push(self.problem(
                        node.pos,
                        key,
                        format!("takes at most {max} items, found {n}"),
                        None,
                    ));
                }
                if let Some(item) = s.get("items") {
                    for (i, it) in items.iter().enumerate() {
                        self.value(it, item, &format!("{key}[{i}]"), false, out);
                    }
                }
            }
            NodeKind::Scalar { value, .. } => {
                if let Some(n) = json.as_f64() {
                    let bound = |k: &str| s.get(k).and_then(Value::as_f64);
                    let bad = [
                        (
                            bound("minimum"),
                            n < bound("minimum").unwrap_or(f64::MIN),
                            "at least",
                        ),
                        (
                            bound("maximum"),
                            n > bound("maximum").unwrap_or(f64::MAX),
                            "at most",
                        ),
                        (
                            bound("exclusiveMinimum"),
                            n <= bound("exclusiveMinimum").unwrap_or(f64::MIN),
                            "greater than",
                        ),
                        (
                            bound("exclusiveMaximum"),
                            n >= bound("exclusiveMaximum").unwrap_or(f64::MAX),
                            "less than",
                        ),
                    ];
                    for (b, broken, words) in bad {
                        if let (Some(b), true) = (b, broken) {
                            out.push(self.problem(
                                node.pos,
                                key,
                                format!("must be {words} {b}, found {n}"),
                                None,
                            ));
                        }
                    }
                }
                if let Value::String(text) = &json {
                    let len = text.chars().count() as f64;
                    if let Some(min) = s
                        .get("minLength")
                        .and_then(Value::as_f64)
                        .filter(|m| len < *m)
                    {
                        out.push(self.problem(
                            node.pos,
                            key,
                            format!("must be at least {min} characters long"),
                            None,
                        ));
                    }
                    if let Some(max) = s
                        .get("maxLength")
                        .and_then(Value::as_f64)
                        .filter(|m| len > *m)
                    {
                        out.push(self.problem(
                            node.pos,
                            key,
                            format!("must be at most {max} characters long"),
                            None,
                        ));
                    }
                    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                        match regex::Regex::new(p) {
                            Ok(re) if !re.is_match(value) => out.push(self.problem(
                                node.pos,
                                key,
                                format!("`{value}` does not match the pattern `{p}`"),
                                None,
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    fn object(
        &self,
        node: &Node,
        entries: &[(Node, Node)],
        s: &Map<String, Value>,
        key: &str,
        top: bool,
        out: &mut Vec<Problem>,
    ) {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(req) = req.as_str() else { continue };
            if !entries.iter().any(|(k, _)| k.as_str() == Some(req)) {
                let what = props
                    .and_then(|p| p.get(req))
                    .and_then(|p| self.resolve(p).get("description"))
                    .and_then(Value::as_str)
                    .map(|d| format!(" ({})", d.trim_end_matches('.')))
                    .unwrap_or_default();
                let pos = if key.is_empty() {
                    self.task_pos
                } else {
                    node.pos
                };
                let at = if key.is_empty() {
                    String::new()
                } else {
                    format!(" in `{key}`")
                };
                out.push(Problem {
                    pos,
                    message: format!("{}: `{req}`{at} is missing", self.context),
                    help: Some(format!("add `{req}:`{what}")),
                });
            }
        }
        let extra = s.get("additionalProperties");
        for (k, v) in entries {
            let name = k.as_str().unwrap_or_default();
            let path = if key.is_empty() {
                name.to_string()
            } else {
                format!("{key}.{name}")
            };
            if let Some(sub) = props.and_then(|p| p.get(name)) {
                self.value(v, sub, &path, false, out);
                continue;
            }
            match extra {
                Some(Value::Bool(false)) => {
                    let mut candidates: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    if top {
                        candidates.extend(COMMON_TASK_FIELDS);
                        candidates.push(super::SECRETS_FIELD);
                    }
                    let help = match closest(name, candidates.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("allowed fields: {}", candidates.join(", ")),
                    };
                    let at = if key.is_empty() {
                        String::new()
                    } else {
                        format!(" (in `{key}`)")
                    };
                    out.push(Problem {
                        pos: k.pos,
                        message: format!("unknown field `{name}`{at} {}", self.context),
                        help: Some(help),
                    });
                }
                Some(sub) if sub.is_object() => self.value(v, sub, &path, false, out),
                _ => {}
            }
        }
    }

    fn problem(&self, pos: Pos, key: &str, what: String, help: Option<String>) -> Problem {
        let message = if key.is_empty() {
            format!("{}: {what}", self.context)
        } else {
            format!("invalid `{key}` {}: {what}", self.context)
        };
        Problem { pos, message, help }
    }
}

/// `node` as the JSON a plugin receives: YAML 1.2's types for plain scalars, except
/// that where the schema asks for a string any scalar is its text (`version: 1.10` is
/// "1.10"), as built-in kinds read it.
pub fn to_json(node: &Node, schema: &Value, checker: &Checker<'_>) -> Value {
    let schema = checker.resolve(schema);
    match &node.kind {
        NodeKind::Scalar { value, plain } => {
            if !plain || wants_only_string(schema) {
                return Value::String(value.clone());
            }
            natural(node)
        }
        NodeKind::Seq(items) => {
            let item = schema.get("items").unwrap_or(&Value::Bool(true));
            Value::Array(items.iter().map(|i| to_json(i, item, checker)).collect())
        }
        NodeKind::Map(entries) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema
                .get("additionalProperties")
                .unwrap_or(&Value::Bool(true));
            Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let name = k.as_str().unwrap_or_default();
                        let sub = props.and_then(|p| p.get(name)).unwrap_or(extra);
                        (name.to_string(), to_json(v, sub, checker))
                    })
                    .collect(),
            )
        }
    }
}

fn wants_only_string(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => {
            ts.iter().any(|t| t == "string") && !ts.iter().any(|t| t != "string" && t != "null")
        }
        _ => false,
    }
}

/// A node's own value, as YAML 1.2's core schema reads a plain scalar.
fn natural(node: &Node) -> Value {
    use serde::Deserialize;
    Value::deserialize(node).unwrap_or(Value::Null)
}

fn is_type(node: &Node, t: &str) -> bool {
    match (&node.kind, t) {
        (NodeKind::Map(_), "object") | (NodeKind::Seq(_), "array") => true,
        (NodeKind::Scalar { plain: false, .. }, "string") => true,
        (NodeKind::Scalar { plain: true, .. }, "string") => !node.is_null(),
        (NodeKind::Scalar { plain: true, .. }, _) => {
            let v = natural(node);
            match t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "integer" => {
                    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
                }
                "number" => v.is_number(),
                _ => false,
            }
        }
        _ => false,
    }
}

fn type_words(t: &str) -> &'static str {
    match t {
        "string" => "text",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a mapping (`key: value` lines)",
        "null" => "empty (null)",
        _ => "of a type this schema names",
    }
}

fn describe_schema(s: &Value) -> String {
    if let Some(c) = s.get("const") {
        return format!("`{}`", plain(c));
    }
    match s.get("type") {
        Some(Value::String(t)) => type_words(t).to_string(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(type_words)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "the alternative's shape".to_string(),
    }
}

/// A node as a person wrote it, for messages.
fn shown(node: &Node) -> String {
    match &node.kind {
        NodeKind::Scalar { value, .. } if node.is_null() && value.is_empty() => {
            "nothing (null)".into()
        }
        NodeKind::Scalar { value, .. } => {
            let v: String = value.chars().take(60).collect();
            format!("`{v}`")
        }
        _ => node.describe().to_string(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Equal as JSON, with 1 and 1.0 equal (YAML has no such distinction for people).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(yaml: &str, schema: Value) -> Vec<String> {
        let node = orchestrator_engine::yaml::parse(yaml).unwrap().unwrap();
        let c = Checker {
            root: &schema,
            context: "in task `t` (kind k)".into(),
            task_pos: Pos { line: 1, col: 1 },
        };
        c.check(&node)
            .into_iter()
            .map(|p| {
                format!(
                    "{}:{} {}{}",
                    p.pos.line,
                    p.pos.col,
                    p.message,
                    p.help.map(|h| format!(" | {h}")).unwrap_or_default()
                )
            })
            .collect()
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "description": "What to fetch."},
                "attempts": {"type": "integer", "minimum": 1},
                "method": {"enum": ["get", "head"]},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "version": {"type": "string"},
                "opts": {"$ref": "#/$defs/opts"}
            },
            "$defs": {"opts": {"type": "object", "additionalProperties": false, "properties": {"deep": {"type": "boolean"}}}}
        })
    }

    #[test]
    fn every_problem_at_its_place_with_a_suggestion() {
        let got = problems(
            "urll: x\nattempts: three\nmethod: gett\nopts:\n  deep: maybe\n  deeep: true\nretires: 2\n",
            schema(),
        );
        assert_eq!(
            got,
            [
                "1:1 in task `t` (kind k): `url` is missing | add `url:` (What to fetch)",
                "1:1 unknown field `urll` in task `t` (kind k) | did you mean `url`?",
                "2:11 invalid `attempts` in task `t` (kind k): `three` is not a whole number",
                "3:9 invalid `method` in task `t` (kind k): `gett` is not one of `get`, `head` | did you mean `get`?",
                "5:9 invalid `opts.deep` in task `t` (kind k): `maybe` is not true or false",
                "6:3 unknown field `deeep` (in `opts`) in task `t` (kind k) | did you mean `deep`?",
                "7:1 unknown field `retires` in task `t` (kind k) | did you mean `retries`?",
            ]
        );
    }

    #[test]
    fn valid_fields_become_typed_json() {
        let yaml = "url: http://x\nattempts: 3\nversion: 1.10\nheaders:\n  A: 1\nmethod: get\n";
        assert!(problems(yaml, schema()).is_empty());
        let node = orchestrator_engine::yaml::parse(yaml).unwrap().unwrap();
        let s = schema();
        let c = Checker {
            root: &s,
            context: String::new(),
            task_pos: Pos::default(),
        };
        assert_eq!(
            to_json(&node, &s, &c),
            json!({"url": "http://x", "attempts": 3, "version": "1.10", "headers": {"A": "1"}, "method": "get"})
        );
    }

    #[test]
    fn bounds_lengths_patterns_and_alternatives() {
        let s = json!({"type": "object", "properties": {
            "n": {"type": "number", "exclusiveMaximum": 1},
            "code": {"type": "string", "pattern": "^[A-Z]+$", "maxLength": 3},
            "either": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "string"}}]},
            "few": {"type": "array", "minItems": 2}
        }});
        let got = problems("n: 1\ncode: abcd\neither: {a: 1}\nfew: [1]\n", s);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].contains("must be less than 1"), "{got:#?}");
        assert!(
            got.iter().any(|g| g.contains("at most 3 characters")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|g| g.contains("does not match the pattern")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|g| g.contains("is none of: a whole number, or a list")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|g| g.contains("needs at least 2 items")),
            "{got:#?}"
        );
    }

    #[test]
    fn keywords_not_enforced_are_named() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string", "contentEncoding": "base64"}},
                       "patternProperties": {}});
        assert_eq!(
            unsupported(&s),
            [
                "`contentEncoding` at /properties/a",
                "`patternProperties` at /"
            ]
        );
        assert!(unsupported(&schema()).is_empty());
    }
}
