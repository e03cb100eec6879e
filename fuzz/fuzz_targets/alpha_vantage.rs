//! Alpha Vantage answers: any body parses into bars or is explained, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &str| {
    let _ = orchestrator_tasks::alpha_vantage::answer::parse_daily("NVDA", body);
    let _ = orchestrator_tasks::alpha_vantage::quote::parse_quote("NVDA", body);
});
