//! `validate` and `graph`: commands that read a workflow file and nothing else.

use std::path::Path;

use super::{load, today, Fail};
use crate::out::{out, outln};
use crate::{report, GraphFormat};

pub fn validate(dir: &Path, file: &Path, params: Vec<(String, String)>) -> Result<u8, Fail> {
    let wf = load(
        file,
        params.into_iter().collect(),
        Default::default(),
        "validate",
        &today(),
        dir,
    )?;
    outln!(
        "{}: workflow `{}` is valid ({} tasks)",
        file.display(),
        wf.name,
        wf.tasks.len()
    );
    Ok(0)
}

pub fn graph(dir: &Path, file: &Path, format: GraphFormat) -> Result<u8, Fail> {
    let wf = load(
        file,
        Default::default(),
        Default::default(),
        "graph",
        &today(),
        dir,
    )?;
    out!(
        "{}",
        report::graph(&wf, matches!(format, GraphFormat::Mermaid))
    );
    Ok(0)
}
