//! The workflow loader: any text is a workflow or a diagnostic, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let registry = orchestrator_tasks::registry();
    let opts = orchestrator_engine::workflow::LoadOptions {
        registry: &registry,
        overrides: Default::default(),
        inherited: Default::default(),
        run_id: "r".into(),
        date: "2026-01-02".into(),
        scheduled_at: None,
        trigger_files: Vec::new(),
        env: Default::default(),
        default_warehouse: "/nonexistent/warehouse".into(),
        backend: None,
        channels_file: None,
    };
    let path = std::path::Path::new("/nonexistent/fuzz.yaml");
    if let Err(d) = orchestrator_engine::workflow::load_str(path, text.to_string(), &opts) {
        let _ = d.to_string();
    }
});
