//! YAML with positions.
//!
//! `serde_yaml::Value` forgets where things were, so errors could not point at a line.
//! Instead the document is parsed (yaml-rust2's event parser) into a [`Node`] tree that
//! keeps the line and column of every scalar, sequence and mapping, and [`Node`]
//! implements [`serde::Deserializer`] so typed configs (with `deny_unknown_fields`) are
//! read straight from it. Every error carries the position of the innermost node it
//! concerns.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `plain` is false for quoted and block scalars: those are always strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain scalar at `pos`.
    pub fn scalar(value: &str, pos: Pos) -> Node {
        Node {
            kind: NodeKind::Scalar {
                value: value.to_string(),
                plain: true,
            },
            pos,
        }
    }

    /// The text of a scalar, `None` for collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if is_null(value))
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The value of key `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short name of what this node is, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "nothing (null)",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Deserializes a typed value from this node.
    pub fn parse<'de, T: de::Deserialize<'de>>(&'de self) -> Result<T, DeError> {
        // A type's own check (a duration, a backend) knows no position: it is this node's.
        T::deserialize(self).map_err(|e| e.at(self.pos))
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Pos,
}

/// Parses one YAML document. An empty document is an empty mapping's absence: `Ok(None)`.
pub fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    let loaded = parser.load(&mut builder, false);
    // The builder's refusal (too many nodes, too deep) comes first in the document.
    if let Some(err) = builder.error {
        return Err(err);
    }
    loaded.map_err(|e| SyntaxError {
        message: e.info().to_string(),
        pos: pos(e.marker()),
    })?;
    Ok(builder.root)
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Most nodes aliases may add to a document. A real workflow has a few thousand nodes
/// (a generated 100,000-task one, about 700,000, all written out: those are bounded by
/// the file's size, not by this); a "billion laughs" file of 467 bytes (9 levels of 9
/// aliases) expands to 9^9 nodes and used to take gigabytes. Checked before an alias is
/// copied, so the refusal costs nothing.
pub const MAX_NODES: usize = 200_000;

/// Deepest nesting of lists and mappings accepted: deeper trees would only serve to
/// exhaust the stack of whatever walks them.
pub const MAX_DEPTH: usize = 128;

/// A collection being built, with its anchor and the number of nodes it holds so far
/// (itself included), so an alias of it can be charged for its full size.
enum Frame {
    Seq(Node, usize, usize),
    Map(Node, Option<Node>, usize, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// Nodes copied by aliases so far, at their expanded size.
    total: usize,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(seq, _, n)) => {
                *n += size;
                if let NodeKind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, pending_key, _, n)) => {
                *n += size;
                match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => {
                        if let NodeKind::Map(entries) = &mut map.kind {
                            entries.push((key, node));
                        }
                    }
                }
            }
        }
    }

    /// Counts `n` more nodes copied by an alias; false (and an error) once aliases have
    /// added too many.
    fn charge(&mut self, n: usize, at: Pos, what: &str) -> bool {
        self.total = self.total.saturating_add(n);
        if self.total > MAX_NODES {
            self.error.get_or_insert(SyntaxError {
                message: format!(
                    "{what} makes aliases add more than {MAX_NODES} nodes to this document; aliases (`*name`) that repeat anchors (`&name`) which themselves hold aliases multiply quickly. Write the values out, or use fewer levels of aliases"
                ),
                pos: at,
            });
            return false;
        }
        true
    }

    fn open(&mut self, frame: Frame, at: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.error.get_or_insert(SyntaxError {
                message: format!("lists and mappings are nested more than {MAX_DEPTH} levels deep here; flatten the structure"),
                pos: at,
            });
            return;
        }
        self.stack.push(frame);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return; // The document is refused; build nothing more.
        }
        let at = pos(&mark);
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let plain = matches!(style, TScalarStyle::Plain);
                self.push_value(
                    Node {
                        kind: NodeKind::Scalar { value, plain },
                        pos: at,
                    },
                    anchor,
                    1,
                );
            }
            Event::SequenceStart(anchor, _) => self.open(
                Frame::Seq(
                    Node {
                        kind: NodeKind::Seq(Vec::new()),
                        pos: at,
                    },
                    anchor,
                    1,
                ),
                at,
            ),
            Event::MappingStart(anchor, _) => self.open(
                Frame::Map(
                    Node {
                        kind: NodeKind::Map(Vec::new()),
                        pos: at,
                    },
                    None,
                    anchor,
                    1,
                ),
                at,
            ),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(
                    Frame::Seq(mut node, anchor, size) | Frame::Map(mut node, _, anchor, size),
                ) = self.stack.pop()
                {
                    // A block mapping's start marker is imprecise; its first key is
                    // where a reader looks.
                    if let NodeKind::Map(entries) = &node.kind {
                        if let Some((k, _)) = entries.first() {
                            node.pos = k.pos;
                        }
                    }
                    self.push_value(node, anchor, size);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|(_, n)| *n) {
                Some(size) => {
                    if self.charge(size, at, "this alias") {
                        if let Some((node, _)) = self.anchors.get(&id).cloned() {
                            self.push_value(node, 0, size);
                        }
                    }
                }
                None => {
                    self.error.get_or_insert(SyntaxError {
                        message: "alias refers to an unknown anchor".into(),
                        pos: at,
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn as_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// An error while reading a typed value from a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub message: String,
    pub pos: Option<Pos>,
    /// The innermost mapping key whose value was wrong, e.g. `retries`.
    pub key: Option<String>,
    /// Set for unknown keys, so callers can suggest the closest known one.
    pub unknown_field: Option<UnknownField>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnknownField {
    pub field: String,
    pub expected: &'static [&'static str],
}

impl DeError {
    /// Attaches `pos` unless a more precise (inner) position is already known.
    fn at(mut self, pos: Pos) -> Self {
        self.pos.get_or_insert(pos);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            pos: None,
            key: None,
            unknown_field: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            message: format!("unknown field `{field}`"),
            pos: None,
            key: None,
            unknown_field: Some(UnknownField {
                field: field.to_string(),
                expected,
            }),
        }
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.kind {
            NodeKind::Scalar { value, plain: true } => {
                if is_null(value) {
                    visitor.visit_unit()
                } else if let Some(b) = as_bool(value) {
                    visitor.visit_bool(b)
                } else if let Ok(i) = value.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(u) = value.parse::<u64>() {
                    visitor.visit_u64(u)
                } else if let Some(f) = value
                    .parse::<f64>()
                    .ok()
                    .filter(|_| value.chars().any(|c| c.is_ascii_digit()))
                {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(value)
                }
            }
            NodeKind::Scalar {
                value,
                plain: false,
            } => visitor.visit_str(value),
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess { iter: items.iter() }),
            NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                iter: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.at(self.pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Any scalar reads as a string: `greeting: 123` is the string "123".
        match &self.kind {
            NodeKind::Scalar { value, .. } => visitor
                .visit_str(value)
                .map_err(|e: DeError| e.at(self.pos)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => visitor
                .visit_enum(IntoDeserializer::<DeError>::into_deserializer(value.as_str()))
                .map_err(|e| e.at(self.pos)),
            // `{variant: value}`: externally tagged, e.g. `- row_count: {min: 1}`.
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor
                    .visit_enum(EnumAccess { key, value })
                    .map_err(|e| e.at(self.pos))
            }
            _ => Err(<DeError as de::Error>::custom(format!(
                "expected one of the allowed names, or a mapping with exactly one of them as its key, found {}",
                self.describe()
            ))
            .at(self.pos)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct
    }
}

struct SeqAccess<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(node) => seed.deserialize(node).map(Some).map_err(|e| e.at(node.pos)),
            None => Ok(None),
        }
    }
}

struct MapAccess<'de> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<(&'de Node, &'de Node)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some((key, value));
                seed.deserialize(key).map(Some).map_err(|e| e.at(key.pos))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, node) = self.value.take().ok_or_else(|| {
            <DeError as de::Error>::custom("value requested before key; this is a bug")
        })?;
        seed.deserialize(node).map_err(|mut e| {
            if e.key.is_none() {
                e.key = key.as_str().map(String::from);
            }
            e.at(node.pos)
        })
    }
}

struct EnumAccess<'de> {
    key: &'de Node,
    value: &'de Node,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = &'de Node;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, &'de Node), DeError> {
        let variant = seed.deserialize(self.key).map_err(|e| e.at(self.key.pos))?;
        Ok((variant, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Node {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.is_null() {
            Ok(())
        } else {
            Err(<DeError as de::Error>::custom("this name takes no value").at(self.pos))
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(self).map_err(|e| e.at(self.pos))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Rule {
        Plain,
        Cols(Vec<String>),
        Range { min: i64, max: Option<i64> },
    }

    #[test]
    fn enums_from_names_and_single_key_mappings() {
        let node = parse("- plain\n- cols: [a, b]\n- range: {min: 1}\n")
            .unwrap()
            .unwrap();
        let rules: Vec<Rule> = node.parse().unwrap();
        assert_eq!(
            rules,
            [
                Rule::Plain,
                Rule::Cols(vec!["a".into(), "b".into()]),
                Rule::Range { min: 1, max: None }
            ]
        );
        let node = parse("- range: {min: 1, mx: 2}\n").unwrap().unwrap();
        let e = node.parse::<Vec<Rule>>().unwrap_err();
        assert_eq!(e.unknown_field.unwrap().field, "mx");
        assert_eq!(e.pos, Some(Pos { line: 1, col: 19 }));
        let node = parse("- nope: 1\n").unwrap().unwrap();
        let e = node.parse::<Vec<Rule>>().unwrap_err();
        assert!(
            e.message.contains("unknown variant `nope`"),
            "{}",
            e.message
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        name: String,
        #[serde(default)]
        n: Option<u32>,
        #[serde(default)]
        list: Vec<String>,
    }

    #[test]
    fn positions_are_one_based() {
        let node = parse("a: 1\nb:\n  - x\n  - y\n").unwrap().unwrap();
        assert_eq!(node.get("a").unwrap().pos, Pos { line: 1, col: 4 });
        let NodeKind::Seq(items) = &node.get("b").unwrap().kind else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn typed_values_and_errors_point_at_the_node() {
        let node = parse("name: x\nn: 7\nlist: [a, 'b']\n").unwrap().unwrap();
        let c: Conf = node.parse().unwrap();
        assert_eq!(
            c,
            Conf {
                name: "x".into(),
                n: Some(7),
                list: vec!["a".into(), "b".into()]
            }
        );

        let node = parse("name: x\nn: lots\n").unwrap().unwrap();
        let e = node.parse::<Conf>().unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 2, col: 4 }));
        assert_eq!(e.key.as_deref(), Some("n"));
        assert!(e.message.contains("invalid type"), "{}", e.message);

        let node = parse("name: x\nlsit: []\n").unwrap().unwrap();
        let e = node.parse::<Conf>().unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 2, col: 1 }));
        assert_eq!(e.unknown_field.unwrap().field, "lsit");

        let node = parse("n: 1\n").unwrap().unwrap();
        let e = node.parse::<Conf>().unwrap_err();
        assert_eq!(e.pos, Some(Pos { line: 1, col: 1 }));
        assert!(e.message.contains("missing field `name`"));
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("x0: &a0 [x,x,x,x,x,x,x,x,x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 9].join(",");
            bomb.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.contains("more than 200000 nodes"), "{err:?}");
        assert!(err.pos.line > 1, "{err:?}");
        // A few aliases of a small anchor are fine.
        assert!(parse("a: &x [1, 2]\nb: *x\nc: *x\n").is_ok());
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        // yaml-rust2's scanner refuses this itself (at 256 levels), before our limit.
        let err = parse(&deep).unwrap_err();
        assert!(
            err.message.contains("nested more than") || err.message.contains("recursion limit"),
            "{err:?}"
        );
        let deep_block: String = (0..200)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>()
            + &"  ".repeat(200)
            + "v\n";
        let err = parse(&deep_block).unwrap_err();
        assert!(err.message.contains("nested more than 128"), "{err:?}");
    }

    #[test]
    fn anchors_and_syntax_errors() {
        let node = parse("a: &x [1]\nb: *x\n").unwrap().unwrap();
        assert_eq!(node.get("b").unwrap().kind, node.get("a").unwrap().kind);
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(parse("").unwrap().is_none());
    }
}
