//! `runs`, `show`, `query` and `tables`: commands that only read. They open the store
//! read-only ([`super::open_reader_or_api`]), so they work on a read-only or full disk; when
//! another process (the daemon) owns the state dir, they ask it through its local API
//! ([`crate::api`]), which renders with these same functions.

use super::{open_reader_or_api, Reader};
use crate::console::out;
use crate::render::{query_output, runs_output, show_output, tables_output};
use crate::{Context, Error};

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
