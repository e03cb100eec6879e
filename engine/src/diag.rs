//! Validation errors that point at the source: `file:line:col`, the line, a caret, a hint.

use std::fmt;
use std::path::PathBuf;

use crate::yaml::Pos;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub pos: Option<Pos>,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic {
            pos,
            message: message.into(),
            help: None,
        }
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// Every problem found in one workflow file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub source: String,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        let lines: Vec<&str> = self.source.lines().collect();
        for d in &self.items {
            match d.pos {
                Some(p) => writeln!(f, "error: {file}:{}:{}: {}", p.line, p.col, d.message)?,
                None => writeln!(f, "error: {file}: {}", d.message)?,
            }
            if let Some(p) = d.pos {
                if let Some(text) = lines.get(p.line.saturating_sub(1)) {
                    let gutter = p.line.to_string().len();
                    writeln!(f, "{:gutter$} |", "")?;
                    writeln!(f, "{} | {text}", p.line)?;
                    writeln!(f, "{:gutter$} | {:>col$}", "", "^", col = p.col)?;
                }
            }
            if let Some(h) = &d.help {
                writeln!(f, "  = help: {h}")?;
            }
        }
        let n = self.items.len();
        write!(
            f,
            "{n} error{} in {file}; nothing was run",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}
