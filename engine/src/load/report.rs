//! How the loader reports: errors and warnings with their positions, serde's messages
//! in words for people, positions inside a field's text, and keys written twice.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::Loader;
use crate::diag::Diagnostic;
use crate::suggest::closest;
use crate::task::At;
use crate::yaml::{DeError, Node, NodeKind, Pos};

impl Loader<'_, '_> {
    pub(super) fn err(&mut self, pos: Option<Pos>, message: impl Into<String>) -> &mut Diagnostic {
        self.errs.push(Diagnostic::new(pos, message));
        let last = self.errs.len() - 1;
        &mut self.errs[last]
    }

    /// `v` as a `T`, or `None` with the error reported (`context` says where, e.g.
    /// "in `sla` (e.g. sla: 45m)").
    pub(super) fn read<T: DeserializeOwned>(&mut self, v: &Node, context: &str) -> Option<T> {
        match v.parse::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.de_err(e, context, &[]);
                None
            }
        }
    }

    /// Records a typed-config error, with a suggestion for unknown keys.
    pub(super) fn de_err(&mut self, e: DeError, context: &str, extra_fields: &[&str]) {
        let context = context.trim();
        let (message, help) = match &e.unknown_field {
            Some(u) => {
                let candidates: Vec<&str> =
                    u.expected.iter().chain(extra_fields).copied().collect();
                let help = match closest(&u.field, candidates.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("allowed fields: {}", candidates.join(", ")),
                };
                (format!("unknown field `{}` {context}", u.field), Some(help))
            }
            None => {
                let what = for_people(&e.message);
                match &e.key {
                    Some(key) => (format!("invalid `{key}` {context}: {what}"), None),
                    None => (format!("{context}: {what}"), None),
                }
            }
        };
        self.errs
            .push(Diagnostic::new(e.pos, message).maybe_help(help));
    }

    /// Reports keys that appear twice in one mapping, anywhere in the document. The
    /// keys of the top-level `tasks` mapping are task ids, and are reported as such.
    pub(super) fn check_duplicate_keys(&mut self, node: &Node, top: bool) {
        match &node.kind {
            NodeKind::Map(entries) => {
                let mut seen: HashMap<&str, Pos> = HashMap::new();
                for (k, v) in entries {
                    if let Some(key) = k.as_str() {
                        if let Some(first) = seen.insert(key, k.pos) {
                            self.err(
                                Some(k.pos),
                                format!("duplicate key `{key}` (first at line {})", first.line),
                            );
                        }
                    }
                    if top && k.as_str() == Some("tasks") {
                        self.check_duplicate_task_ids(v);
                    } else {
                        self.check_duplicate_keys(v, false);
                    }
                }
            }
            NodeKind::Seq(items) => {
                for item in items {
                    self.check_duplicate_keys(item, false);
                }
            }
            NodeKind::Scalar { .. } => {}
        }
    }

    pub(super) fn check_duplicate_task_ids(&mut self, tasks: &Node) {
        let Some(entries) = tasks.as_map() else {
            return;
        };
        let mut first_at: HashMap<&str, Pos> = HashMap::new();
        for (k, v) in entries {
            let id = k.as_str().unwrap_or_default();
            match first_at.get(id) {
                Some(first) => {
                    let line = first.line;
                    self.err(
                        Some(k.pos),
                        format!("duplicate task id `{id}` (first defined at line {line})"),
                    )
                    .help = Some("task ids must be unique; rename one of them".into());
                }
                None => {
                    first_at.insert(id, k.pos);
                }
            }
            self.check_duplicate_keys(v, false);
        }
    }
}

/// Where line `at.line`, column `at.column` of a string value's text is in the YAML file.
/// A block scalar (`sql: |`) keeps its lines: text line k is the k-th line after the
/// key's line, shifted by the block's indentation. A one-line scalar starts at its own
/// position (after the quote). Anything else (a folded multi-line plain scalar, a line
/// a template changed) points at the value's start or the line's first character.
pub(super) fn pos_in_value(source: &str, key: &Node, value: &Node, at: At) -> Pos {
    let text = value.as_str().unwrap_or_default();
    let Some(first) = source.lines().nth(value.pos.line.saturating_sub(1)) else {
        return value.pos;
    };
    let indicator = first.chars().nth(value.pos.col.saturating_sub(1));
    let wanted = text
        .lines()
        .nth(at.line.saturating_sub(1))
        .unwrap_or_default();
    let header = source
        .lines()
        .nth(key.pos.line.saturating_sub(1))
        .and_then(|l| l.split_once(':'))
        .map(|(_, rest)| rest.trim_start());
    if value.pos.line > key.pos.line && header.is_some_and(|h| h.starts_with(['|', '>'])) {
        let line = key.pos.line + at.line;
        let Some(yaml) = source.lines().nth(line - 1) else {
            return value.pos;
        };
        let (yaml_len, wanted_len) = (yaml.chars().count(), wanted.chars().count());
        let col = if yaml.ends_with(wanted) && yaml_len >= wanted_len {
            yaml_len - wanted_len + at.column
        } else {
            yaml.chars().take_while(|c| c.is_whitespace()).count() + 1
        };
        return Pos { line, col };
    }
    if at.line == 1 && !text.contains('\n') {
        let quoted = matches!(indicator, Some('"' | '\''));
        let rest: String = first
            .chars()
            .skip(value.pos.col - 1 + quoted as usize)
            .collect();
        if rest.starts_with(wanted) {
            return Pos {
                line: value.pos.line,
                col: value.pos.col + quoted as usize + at.column - 1,
            };
        }
    }
    value.pos
}

/// serde's wording of a type error, as a person would say it: `expected usize` and
/// `untagged enum` mean nothing to someone writing YAML.
fn for_people(message: &str) -> String {
    let found = message
        .strip_prefix("invalid type: ")
        .and_then(|r| r.split_once(", expected "));
    if let Some((got, want)) = found {
        let got = got
            .strip_prefix("string ")
            .map_or_else(|| got.to_string(), |s| format!("`{}`", s.trim_matches('"')));
        let want = match want {
            "a boolean" => "true or false",
            "usize" | "u32" | "u64" | "u16" | "u8" => "a whole number (0 or more)",
            "i64" | "i32" => "a whole number",
            "f64" | "f32" => "a number",
            "a string" => "text",
            "a sequence" => "a list",
            "a map" => "a mapping (`key: value` lines)",
            other => other,
        };
        return format!("{got} is not {want}");
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((got, want)) = rest.split_once(", expected ") {
            let want = match want {
                "usize" | "u32" | "u64" => "a whole number (0 or more) that fits",
                other => other,
            };
            return format!("{got} is not {want}");
        }
    }
    if message.contains("did not match any variant of untagged enum OneOrMany") {
        return "expected one value or a list of them".into();
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((got, allowed)) = rest.split_once(", expected ") {
            return format!("{got} is not one of {}", allowed.replace("one of ", ""));
        }
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("{field} is missing");
    }
    message.to_string()
}
