//! `runs`, `show`, `query` and `tables`: commands that only read. They open the store
//! read-only ([`super::open_reader`]), so they work on a read-only or full disk.

use std::collections::BTreeSet;
use std::path::Path;

use super::{find_run, open_reader, Fail};
use crate::out::{out, outln};
use crate::report;

pub fn runs(dir: &Path, workflow: Option<&str>, limit: u64, json: bool) -> Result<u8, Fail> {
    let store = open_reader(dir)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let runs = store.runs(workflow, limit)?;
    if json {
        outln!("{}", report::runs_json(&runs));
        return Ok(0);
    }
    match (runs.is_empty(), workflow) {
        (true, Some(w)) if !store.runs(None, 1)?.is_empty() => {
            let names: BTreeSet<String> = store
                .runs(None, usize::MAX)?
                .into_iter()
                .map(|r| r.workflow)
                .collect();
            outln!(
                "no runs of workflow `{w}`; workflows with runs: {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        _ => out!("{}", report::runs_table(&runs)),
    }
    Ok(0)
}

pub fn show(dir: &Path, run_id: &str, json: bool) -> Result<u8, Fail> {
    let store = open_reader(dir)?;
    let run = find_run(&store, run_id)?;
    let details = report::RunDetails::load(&store, run)?;
    if json {
        outln!("{}", details.json());
    } else {
        out!("{}", details.text());
    }
    Ok(0)
}

pub async fn query(dir: &Path, sql: String, json: bool) -> Result<u8, Fail> {
    let store = open_reader(dir)?;
    let batches = orchestrator_tasks::data::query(store, sql)
        .await
        .map_err(|e| Fail::input(format!("error: {e}")))?;
    let text = if json {
        report::batches_json(&batches)
    } else {
        report::batches_table(&batches)
    };
    outln!("{}", text.map_err(|e| Fail::failed(format!("error: {e}")))?);
    Ok(0)
}

pub fn tables(dir: &Path, json: bool) -> Result<u8, Fail> {
    let store = open_reader(dir)?;
    let tables = store.tables()?;
    if json {
        outln!("{}", serde_json::to_string(&tables).unwrap_or_default());
    } else {
        out!("{}", report::tables_table(&tables));
    }
    Ok(0)
}
