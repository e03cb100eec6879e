//! `runs`, `show`, `query` and `tables`: commands that only read. They open the store
//! read-only ([`super::open_reader_or_api`]), so they work on a read-only or full disk; when
//! another process (the daemon) owns the state dir, they ask it through its local API
//! ([`crate::api`]), which renders with these same functions.

use std::collections::BTreeSet;
use std::sync::Arc;

use orchestrator_engine::state::{StateError, Store};

use super::{find_run, open_reader_or_api, Reader};
use crate::console::out;
use crate::report;
use crate::{Context, Error};

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
        isolated::query(store.as_ref(), sql, &isolated::Limits::from_env()).await
    } else {
        orchestrator_tasks::data::query(store, sql).await
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

fn print(ctx: &Context, text: String) -> Result<u8, Error> {
    out!(ctx, "{text}");
    Ok(0)
}

pub async fn runs(
    ctx: &Context,
    workflow: Option<&str>,
    limit: u64,
    json: bool,
) -> Result<u8, Error> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match open_reader_or_api(ctx)? {
        Reader::Local(store) => print(ctx, runs_output(&store, workflow, limit, json)?),
        Reader::Api(api) => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(w) = workflow {
                q.push(("workflow", w.to_string()));
            }
            print(ctx, api.get("/api/runs", &q, json).await?)
        }
    }
}

pub async fn show(ctx: &Context, run_id: &str, json: bool) -> Result<u8, Error> {
    match open_reader_or_api(ctx)? {
        Reader::Local(store) => print(ctx, show_output(&store, run_id, json)?),
        Reader::Api(api) => print(
            ctx,
            api.get(&format!("/api/runs/{run_id}"), &[], json).await?,
        ),
    }
}

pub async fn query(ctx: &Context, sql: String, json: bool) -> Result<u8, Error> {
    match open_reader_or_api(ctx)? {
        Reader::Local(store) => print(ctx, query_output(store, sql, json, false).await?),
        Reader::Api(api) => print(ctx, api.query(&sql, json).await?),
    }
}

pub async fn tables(ctx: &Context, json: bool) -> Result<u8, Error> {
    match open_reader_or_api(ctx)? {
        Reader::Local(store) => print(ctx, tables_output(&store, json)?),
        Reader::Api(api) => print(ctx, api.get("/api/tables", &[], json).await?),
    }
}
