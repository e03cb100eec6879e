//! What the reading commands print — `runs`, `show`, `tables`, `query`, as text or as
//! their `--json` — rendered from the store, for the CLI and for the API's
//! `?format=text|command-json` alike.

use std::collections::BTreeSet;
use std::sync::Arc;

use orchestrator_engine::state::{StateError, Store};

use crate::store::find_run;
use crate::{report, Error};

/// What `runs` prints.
pub fn runs_output(
    store: &Store,
    workflow: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<String, Error> {
    let runs = store.runs(workflow, limit)?;
    if json {
        return Ok(format!("{}\n", report::runs_json(&runs)));
    }
    Ok(match (runs.is_empty(), workflow) {
        (true, Some(w)) if !store.runs(None, 1)?.is_empty() => {
            let names: BTreeSet<String> = store
                .runs(None, usize::MAX)?
                .into_iter()
                .map(|r| r.workflow)
                .collect();
            format!(
                "no runs of workflow `{w}`; workflows with runs: {}\n",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        _ => report::runs_table(&runs),
    })
}

/// What `show` prints.
pub fn show_output(store: &Store, run_id: &str, json: bool) -> Result<String, Error> {
    let run = find_run(store, run_id)?;
    let details = report::RunDetails::load(store, run)?;
    Ok(if json {
        format!("{}\n", details.json())
    } else {
        details.text()
    })
}

/// What `tables` prints.
pub fn tables_output(store: &Store, json: bool) -> Result<String, StateError> {
    let tables = store.tables()?;
    Ok(if json {
        format!("{}\n", serde_json::to_string(&tables).unwrap_or_default())
    } else {
        report::tables_table(&tables)
    })
}

/// What `query` prints.
/// A query's output as text or JSON. `isolated`: in a child process within
/// `isolated::Limits` (a daemon answering another process), not in this one.
pub async fn query_output(
    store: Arc<Store>,
    sql: String,
    json: bool,
    isolated: bool,
) -> Result<String, Error> {
    use orchestrator_tasks::data::isolated;
    let batches = if isolated {
        isolated::query(store.as_ref(), sql, &isolated::Limits::from_env())
            .await
            .map_err(|e| e.to_string())
    } else {
        orchestrator_tasks::data::query(store, sql)
            .await
            .map_err(|e| e.to_string())
    }
    .map_err(|e| Error::invalid(format!("error: {e}")))?;
    let text = if json {
        report::batches_json(&batches)
    } else {
        report::batches_table(&batches)
    };
    text.map(|t| format!("{t}\n"))
        .map_err(|e| Error::failed(format!("error: {e}")))
}
