//! The CLI's console: operations' lines to stdout and stderr, where printing never kills
//! work.
//!
//! `println!` panics when stdout is a closed pipe (`orchestrator run FILE | head -1`):
//! Rust ignores SIGPIPE, so the write fails with EPIPE and the macro panics, taking a
//! running pipeline with it. Everything the CLI prints goes through here instead, which
//! drops what cannot be written: the run goes on and is recorded as usual.

use std::io::Write as _;

pub struct Std;

impl orchestrator_service::Console for Std {
    fn out(&self, text: &str) {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
    fn err(&self, text: &str) {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Like `eprintln!`, but a failed write is ignored.
pub fn errln(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
