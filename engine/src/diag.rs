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
        write_items(f, "error", &self.file, &self.source, &self.items)?;
        let file = self.file.display();
        let n = self.items.len();
        write!(
            f,
            "{n} error{} in {file}; nothing was run",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Warnings about a file that is valid: the same rendering as errors, labelled `warning`.
pub struct Warnings<'a> {
    pub file: &'a std::path::Path,
    pub source: &'a str,
    pub items: &'a [Diagnostic],
}

impl fmt::Display for Warnings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_items(f, "warning", self.file, self.source, self.items)
    }
}

fn write_items(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    file: &std::path::Path,
    source: &str,
    items: &[Diagnostic],
) -> fmt::Result {
    let file = file.display();
    let lines: Vec<&str> = source.lines().collect();
    for d in items {
        match d.pos {
            Some(p) => writeln!(f, "{label}: {file}:{}:{}: {}", p.line, p.col, d.message)?,
            None => writeln!(f, "{label}: {file}: {}", d.message)?,
        }
        if let Some(p) = d.pos {
            if let Some(text) = lines.get(p.line.saturating_sub(1)) {
                let gutter = " ".repeat(p.line.to_string().len());
                let (shown, caret) = excerpt(text, p.col);
                writeln!(f, "{gutter} |")?;
                writeln!(f, "{} | {shown}", p.line)?;
                writeln!(f, "{gutter} | {}^", " ".repeat(caret.saturating_sub(1)))?;
            }
        }
        if let Some(h) = &d.help {
            writeln!(f, "  = help: {h}")?;
        }
    }
    Ok(())
}

impl std::error::Error for Diagnostics {}

/// Characters of a source line shown around the error column.
const WINDOW: usize = 120;

/// The part of `line` to show for an error at 1-based character column `col`, and the
/// caret's column in it. A long line (a 100,000-character key) is cut to a window
/// around the column, with `…` where text was left out; the caret is placed with
/// spaces, not a format width (format widths above 65,535 panic).
fn excerpt(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= WINDOW {
        return (line.to_string(), col);
    }
    let col0 = col.saturating_sub(1).min(chars.len());
    let start = col0.saturating_sub(WINDOW / 2);
    let end = (start + WINDOW).min(chars.len());
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let caret = col0 - start + 1 + usize::from(start > 0);
    (shown, caret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Pos;

    fn render(source: &str, line: usize, col: usize) -> String {
        Diagnostics {
            file: "wf.yaml".into(),
            source: source.into(),
            items: vec![Diagnostic::new(Some(Pos { line, col }), "bad")],
        }
        .to_string()
    }

    #[test]
    fn the_caret_points_at_the_column() {
        let out = render("name: x\ntasks: 3\n", 2, 8);
        assert!(out.contains("2 | tasks: 3\n  |        ^\n"), "{out}");
    }

    #[test]
    fn a_column_past_65535_renders_a_window_without_panicking() {
        let line = format!("  {}: 1", "a".repeat(100_000));
        let out = render(&format!("tasks:\n{line}\n"), 2, 100_003);
        assert!(out.len() < 1_000, "{} bytes", out.len());
        let shown = out.lines().nth(2).unwrap();
        let caret = out.lines().nth(3).unwrap();
        assert!(shown.starts_with("2 | …"), "{shown}");
        // The caret sits under the character at column 100,003 (the `:`).
        let at = caret.find('^').unwrap();
        assert_eq!(
            shown.chars().nth(caret[..at].chars().count()),
            Some(':'),
            "{out}"
        );
    }
}
