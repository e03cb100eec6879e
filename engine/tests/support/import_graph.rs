//! Which top-level modules of a crate import which, read from its source files, and the
//! import cycles among them.
//!
//! Written to be pointed at any crate's `src/` (e.g. from another crate's tests:
//! `#[path = "../engine/tests/support/import_graph.rs"] mod import_graph;`).
//!
//! A node is a top-level module: `src/a.rs`, `src/a/mod.rs` and everything under `src/a/`
//! are module `a`. The crate roots (`lib.rs`, `main.rs`) and `src/bin/` (other crates)
//! are not nodes. An edge `a -> b` is any path `crate::b...` written in module `a`'s
//! files (a `use`, a fully qualified call or type, in tests too), including the items of
//! a group (`crate::{b, c::D}`); comments do not count. Paths through `super::` and
//! `self::` are taken to stay inside the module they are written in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where one module names another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Graph {
    /// Module to the modules it imports, each with where it first does.
    pub edges: BTreeMap<String, BTreeMap<String, Site>>,
}

impl Graph {
    /// Reads every `.rs` file under `src`.
    pub fn of_dir(src: &Path) -> std::io::Result<Graph> {
        let mut files = Vec::new();
        collect(src, &mut files)?;
        files.sort();
        let mut sources = Vec::new();
        for file in files {
            let rel = file.strip_prefix(src).unwrap_or(&file).to_path_buf();
            let text = std::fs::read_to_string(&file)?;
            sources.push((rel, text));
        }
        Ok(Graph::of_sources(
            sources.iter().map(|(p, t)| (p.as_path(), t.as_str())),
        ))
    }

    /// The graph of files given as (path relative to `src/`, text).
    pub fn of_sources<'a>(sources: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Graph {
        let sources: Vec<(&Path, &str)> = sources.into_iter().collect();
        let modules: BTreeSet<String> = sources.iter().filter_map(|(p, _)| module_of(p)).collect();
        let mut graph = Graph::default();
        for module in &modules {
            graph.edges.entry(module.clone()).or_default();
        }
        for (path, text) in sources {
            let Some(from) = module_of(path) else {
                continue;
            };
            for (line, target) in crate_paths(text) {
                if target == from || !modules.contains(&target) {
                    continue;
                }
                let site = Site {
                    file: path.to_path_buf(),
                    line,
                };
                let entry = graph.edges.entry(from.clone()).or_default();
                match entry.get(&target) {
                    Some(first) if *first <= site => {}
                    _ => {
                        entry.insert(target, site);
                    }
                }
            }
        }
        graph
    }

    /// Every cycle: one per group of modules that all reach each other, as the modules
    /// of a shortest one in order (the first again at the end is implied).
    pub fn cycles(&self) -> Vec<Vec<String>> {
        self.groups().into_iter().map(|(_, cycle)| cycle).collect()
    }

    /// Each group of modules that all reach each other (two or more), with a shortest
    /// cycle through its first module.
    pub fn groups(&self) -> Vec<(Vec<String>, Vec<String>)> {
        let names: Vec<&String> = self.edges.keys().collect();
        let index: BTreeMap<&String, usize> =
            names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adj: Vec<Vec<usize>> = names
            .iter()
            .map(|n| {
                self.edges[*n]
                    .keys()
                    .filter_map(|t| index.get(t).copied())
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        for group in strongly_connected(&adj) {
            if group.len() < 2 {
                continue;
            }
            // A shortest way back from the group's first module to itself.
            let start = group[0];
            let inside: BTreeSet<usize> = group.iter().copied().collect();
            let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut back = None;
            'search: while let Some(n) = queue.pop_front() {
                for &m in &adj[n] {
                    if m == start {
                        back = Some(n);
                        break 'search;
                    }
                    if inside.contains(&m) && !prev.contains_key(&m) {
                        prev.insert(m, n);
                        queue.push_back(m);
                    }
                }
            }
            let mut path = vec![back.unwrap_or(start)];
            while let Some(&p) = prev.get(path.last().unwrap()) {
                path.push(p);
            }
            if *path.last().unwrap() != start {
                path.push(start);
            }
            path.reverse();
            let members = group.iter().map(|&i| names[i].clone()).collect();
            out.push((
                members,
                path.into_iter().map(|i| names[i].clone()).collect(),
            ));
        }
        out
    }

    /// A cycle as `a -> b (a.rs:3) -> a (b.rs:7)`.
    pub fn describe(&self, cycle: &[String]) -> String {
        let mut text = cycle[0].clone();
        for (i, from) in cycle.iter().enumerate() {
            let to = &cycle[(i + 1) % cycle.len()];
            let site = &self.edges[from][to];
            text.push_str(&format!(" -> {to} ({}:{})", site.file.display(), site.line));
        }
        text
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The top-level module a file (relative to `src/`) belongs to, if any.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = match first.strip_suffix(".rs") {
        Some(stem) if rel.components().count() == 1 => stem,
        Some(_) => return None,
        None => first,
    };
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
}

/// The first segment of every `crate::` path in `text`, with its line.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code = strip_comments(text);
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        let ident_before = at > 0 && {
            let b = bytes[at - 1];
            b.is_ascii_alphanumeric() || b == b'_'
        };
        if ident_before {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                if let Some(name) = ident(item.trim_start()) {
                    if name != "self" {
                        out.push((line, name.to_string()));
                    }
                }
            }
        } else if let Some(name) = ident(rest) {
            out.push((line, name.to_string()));
        }
    }
    out
}

/// The comma-separated items of a `{...}` group (`text` starts after the `{`).
fn top_level_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn ident(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// `text` with `//` and `/* */` comments blanked (newlines kept, so lines still count),
/// string literals left alone (a URL's `//` is not a comment).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            // A char literal holding a quote: `'"'`.
            ('\'', Some('"')) => {
                out.push(c);
                out.push(chars.next().unwrap_or_default());
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Tarjan's strongly connected components, each listed from its lowest index.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        groups: Vec<Vec<usize>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                group.sort_unstable();
                self.groups.push(group);
            }
        }
    }
    let n = adj.len();
    let mut walk = Walk {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        groups: Vec::new(),
    };
    for v in 0..n {
        if walk.index[v].is_none() {
            walk.visit(v);
        }
    }
    walk.groups.sort();
    walk.groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        Graph::of_sources(files.iter().map(|(p, t)| (Path::new(*p), *t)))
    }

    #[test]
    fn reads_uses_groups_and_qualified_paths_but_not_comments() {
        let g = graph(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d;"),
            (
                "a.rs",
                "use crate::{b::{X, Y}, self, c};\n// crate::d\nlet u = \"http://x\"; /* crate::d */\n",
            ),
            ("b/mod.rs", "fn f() -> crate::d::T { $crate::x }"),
            ("b/inner.rs", "use super::f; use othercrate::a;"),
            ("c.rs", ""),
            ("d.rs", "use crate::CancellationToken;"),
        ]);
        let targets = |m: &str| g.edges[m].keys().cloned().collect::<Vec<_>>();
        assert_eq!(targets("a"), ["b", "c"]);
        assert_eq!(targets("b"), ["d"]);
        assert!(targets("d").is_empty());
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn finds_a_cycle_through_other_modules() {
        let g = graph(&[
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "\n\nuse crate::c;"),
            ("c/mod.rs", "x"),
            ("c/deep.rs", "fn f() { crate::a::g() }"),
            ("d.rs", "use crate::a;"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles, [vec!["a", "b", "c"]]);
        assert_eq!(
            g.describe(&cycles[0]),
            "a -> b (a.rs:1) -> c (b.rs:3) -> a (c/deep.rs:1)"
        );
    }
}
