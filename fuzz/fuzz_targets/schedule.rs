//! Schedule expressions: any text parses or is explained, and a parsed one answers
//! "when next?" without panicking.
#![no_main]
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use orchestrator_engine::schedule::{parse_timezone, Dst, Expr};

fuzz_target!(|input: (&str, u32)| {
    let (text, secs) = input;
    if let Ok(expr) = Expr::parse(text) {
        let Ok(tz) = parse_timezone("America/New_York") else {
            return;
        };
        if let Some(after) = Utc.timestamp_opt(i64::from(secs), 0).single() {
            let _ = expr.next_after(after, tz, Dst::default());
        }
    }
});
