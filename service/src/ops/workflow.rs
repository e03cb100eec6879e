//! `validate`, `graph` and `next`: commands that read a workflow file and nothing else.

use std::path::Path;

use super::{load, load_on, today};
use crate::console::{out, outln};
use crate::{report, Context, Error};

/// How `graph` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz.
    Dot,
    Mermaid,
}

pub fn validate(
    ctx: &Context,
    file: &Path,
    params: Vec<(String, String)>,
    backend: Option<orchestrator_engine::workflow::Backend>,
) -> Result<u8, Error> {
    let wf = load_on(
        ctx,
        file,
        params.into_iter().collect(),
        Default::default(),
        "validate",
        &today(),
        backend,
    )?;
    outln!(
        ctx,
        "{}: workflow `{}` is valid ({} tasks, {} backend)",
        file.display(),
        wf.name,
        wf.tasks.len(),
        wf.backend.as_str()
    );
    Ok(0)
}

pub fn graph(ctx: &Context, file: &Path, format: GraphFormat) -> Result<u8, Error> {
    let wf = load(
        ctx,
        file,
        Default::default(),
        Default::default(),
        "graph",
        &today(),
    )?;
    out!(
        ctx,
        "{}",
        report::graph(&wf, matches!(format, GraphFormat::Mermaid))
    );
    Ok(0)
}

pub fn next(
    ctx: &Context,
    file: &Path,
    count: u64,
    after: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> Result<u8, Error> {
    let wf = load(
        ctx,
        file,
        Default::default(),
        Default::default(),
        "next",
        &today(),
    )?;
    let Some(schedule) = &wf.schedule else {
        return Err(Error::invalid(format!(
            "error: {} has no `schedule:`; add one, e.g. `schedule: \"cron(0 22 ? * MON-FRI *)\"`",
            file.display()
        )));
    };
    let after = after.unwrap_or_else(chrono::Utc::now);
    let fires = schedule.upcoming(after, usize::try_from(count).unwrap_or(usize::MAX));
    let rows: Vec<(String, String)> = fires
        .iter()
        .map(|t| {
            (
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                t.with_timezone(&schedule.tz)
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            )
        })
        .collect();
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(u, l)| serde_json::json!({"utc": u, "local": l}))
            .collect();
        outln!(ctx, "{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    outln!(
        ctx,
        "{}: {} in {}",
        wf.name,
        schedule
            .exprs
            .iter()
            .map(|e| e.text.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        schedule.tz.name()
    );
    if rows.is_empty() {
        outln!(
            ctx,
            "no fire times after {}",
            after.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    for (u, l) in rows {
        outln!(ctx, "{u}  {l}");
    }
    Ok(0)
}
