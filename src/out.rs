//! Printing that never kills work.
//!
//! `println!` panics when stdout is a closed pipe (`orchestrator run FILE | head -1`):
//! Rust ignores SIGPIPE, so the write fails with EPIPE and the macro panics, taking a
//! running pipeline with it. Everything the CLI prints goes through these macros instead,
//! which drop what cannot be written: the run goes on and is recorded as usual.

/// Like `print!`, but a failed write is ignored.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Like `println!`, but a failed write is ignored.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Like `eprintln!`, but a failed write is ignored.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub(crate) use {errln, out, outln};
