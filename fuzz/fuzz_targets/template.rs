//! Templates: any text renders or gives errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use orchestrator_engine::template::{Renderer, TemplateVars};

fuzz_target!(|text: &str| {
    let params = [("greeting".to_string(), "hi".to_string())].into();
    let vars = TemplateVars::for_run(params, "r", "2026-01-02");
    let _ = Renderer::new(&vars).render(text);
});
