//! No module of the engine imports, directly or through others, a module that imports it
//! back: each can be read, changed and tested knowing only what it imports.

#[path = "support/import_graph.rs"]
mod import_graph;

use std::path::Path;

#[test]
fn engine_modules_import_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph::Graph::of_dir(&src).unwrap();
    assert!(graph.edges.len() > 10, "read {}", src.display());
    let cycles: Vec<String> = graph
        .groups()
        .iter()
        .map(|(members, cycle)| {
            format!(
                "{} reach each other, e.g. {}",
                members.join(", "),
                graph.describe(cycle)
            )
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles among engine modules:\n{}",
        cycles.join("\n")
    );
}
