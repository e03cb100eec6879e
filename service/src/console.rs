//! Where an operation's lines go: the front end's console.
//!
//! Operations report as they go (a run's transitions, a backfill's dates, `state check`'s
//! findings). They write to the [`Console`] of their [`crate::Context`]; the CLI's
//! prints to stdout and stderr, a test's collects the lines.

/// Lines for people: `out` is the operation's output (stdout for the CLI), `err` its
/// notes and warnings (stderr). Both are given whole lines, `\n` included.
pub trait Console: Send + Sync {
    fn out(&self, text: &str);
    fn err(&self, text: &str);
}

/// Collects what an operation writes (tests, and front ends that show it later).
#[derive(Default)]
pub struct Captured {
    pub out: std::sync::Mutex<String>,
    pub err: std::sync::Mutex<String>,
}

impl Console for Captured {
    fn out(&self, text: &str) {
        if let Ok(mut s) = self.out.lock() {
            s.push_str(text);
        }
    }
    fn err(&self, text: &str) {
        if let Ok(mut s) = self.err.lock() {
            s.push_str(text);
        }
    }
}

/// Like `print!`, to the context's console.
macro_rules! out {
    ($ctx:expr, $($arg:tt)*) => {{
        $ctx.console.out(&format!($($arg)*));
    }};
}

/// Like `println!`, to the context's console.
macro_rules! outln {
    ($ctx:expr, $($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        $ctx.console.out(&line);
    }};
}

/// Like `eprintln!`, to the context's console.
macro_rules! errln {
    ($ctx:expr, $($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        $ctx.console.err(&line);
    }};
}

pub(crate) use {errln, out, outln};
