//! No module imports, directly or through others, a module that imports it back: each can
//! be read, changed and tested knowing only what it imports. Checked for the engine, the
//! service layer and the binary's `src/`.

#[path = "support/import_graph.rs"]
mod import_graph;

use std::path::Path;

fn cycles_in(src: &Path) -> Vec<String> {
    let graph = import_graph::Graph::of_dir(src).unwrap();
    graph
        .groups()
        .iter()
        .map(|(members, cycle)| {
            format!(
                "{} reach each other, e.g. {}",
                members.join(", "),
                graph.describe(cycle)
            )
        })
        .collect()
}

#[test]
fn engine_modules_import_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph::Graph::of_dir(&src).unwrap();
    assert!(graph.edges.len() > 10, "read {}", src.display());
    let cycles = cycles_in(&src);
    assert!(
        cycles.is_empty(),
        "import cycles among engine modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn service_and_cli_modules_import_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["service/src", "src"] {
        let src = root.join(dir);
        let graph = import_graph::Graph::of_dir(&src).unwrap();
        assert!(!graph.edges.is_empty(), "read {}", src.display());
        let cycles = cycles_in(&src);
        assert!(
            cycles.is_empty(),
            "import cycles among the modules of {dir}:\n{}",
            cycles.join("\n")
        );
    }
}
