//! `backfill` and `backfills`: one run per logical date of a range, and the list of them.

use std::path::PathBuf;
use std::sync::Arc;

use orchestrator_engine::backfill::{Calendar, Reprocess};
use orchestrator_engine::state::{BackfillRecord, BackfillStatus, Store};

use orchestrator_web::api::{BackfillRequest, BackfillStarted};

use super::{open_reader_or_api, open_store_or_daemon, Reader, Writer};
use crate::backfill::{self as bf, DateView, Executor, Request};
use crate::console::{errln, out, outln};
use crate::{Context, Error, Kind};

/// What the command line asked for.
pub struct Args {
    pub file: Option<PathBuf>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub calendar: Option<String>,
    pub reprocess: String,
    pub max_active_runs: u32,
    pub backwards: bool,
    pub dry_run: bool,
    pub resume: Option<String>,
    pub params: Vec<(String, String)>,
    /// `-q`: the header and the summary, not a line per date.
    pub quiet: bool,
}

fn request(args: &Args) -> Result<Option<Request>, Error> {
    if args.resume.is_some() {
        if args.file.is_some() || args.from.is_some() || args.to.is_some() {
            return Err(Error::invalid(
                "error: --resume ID continues a recorded backfill with its own file and range; leave out FILE, --from and --to",
            ));
        }
        return Ok(None);
    }
    let (Some(file), Some(from), Some(to)) = (&args.file, &args.from, &args.to) else {
        return Err(Error::invalid(
            "error: give the workflow file and the range: `orchestrator backfill FILE --from 2026-01-05 --to 2026-01-30` (or `--resume ID`)",
        ));
    };
    let calendar = args.calendar.clone().unwrap_or_else(|| "schedule".into());
    Calendar::parse(&calendar).map_err(|e| Error::invalid(format!("error: --calendar {e}")))?;
    Reprocess::parse(&args.reprocess)
        .map_err(|e| Error::invalid(format!("error: --reprocess {e}")))?;
    let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
    Ok(Some(Request {
        file,
        from: from.clone(),
        to: to.clone(),
        calendar,
        reprocess: args.reprocess.clone(),
        max_active_runs: args.max_active_runs,
        backwards: args.backwards,
        params: args.params.iter().cloned().collect(),
    }))
}

pub async fn backfill(ctx: &Context, args: Args) -> Result<u8, Error> {
    let req = request(&args)?;
    let store = match open_store_or_daemon(ctx)? {
        Writer::Local(store) => store,
        Writer::Daemon(api) => return in_daemon(ctx, &api, req, &args).await,
    };
    let b = bf::prepare(ctx, &store, req.as_ref(), args.resume.as_deref())?;
    let (parallel, note) = bf::parallelism(&b, bf::workflow_limit(ctx, &b)?, false);
    if let Some(note) = note {
        errln!(ctx, "{note}");
    }
    if args.dry_run {
        out!(ctx, "{}", bf::plan_text(&b, parallel));
        return Ok(0);
    }
    let _api = super::execute::serve_readers(ctx, &store).await;
    // Recorded before its id is printed: `--resume ID` must find what was announced.
    store
        .commit_async(&[orchestrator_engine::state::Write::Backfill(b.clone())])
        .await?;
    outln!(ctx, "{}", bf::header(&b, parallel));
    for v in bf::view(&store, &b)?
        .iter()
        .filter(|v| v.status == "skipped" && !args.quiet)
    {
        outln!(ctx, "{}", bf::date_line(v));
    }
    let exec = Executor::Local {
        store: store.clone(),
        ctx: ctx.clone(),
    };
    let cancel = super::execute::cancel_on_signal(ctx);
    let quiet = args.quiet;
    let print = |v: &DateView| {
        if !quiet {
            outln!(ctx, "{}", bf::date_line(v));
        }
    };
    let b = bf::drive(exec, b, parallel, cancel, &print).await?;
    finish(ctx, &store, &b)
}

fn summary(b: &BackfillRecord, views: &[DateView]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for v in views {
        *counts.entry(v.status.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut s = format!("backfill {} {}: {}", b.id, b.status, counts.join(", "));
    if matches!(
        b.status,
        BackfillStatus::Cancelled | BackfillStatus::Interrupted
    ) {
        s.push_str(&format!(
            "\ncontinue it with `orchestrator backfill --resume {}`",
            b.id
        ));
    }
    if b.status == BackfillStatus::Failed {
        s.push_str("\nafter fixing the cause: `orchestrator rerun RUN_ID` for each failed run, or `orchestrator backfill FILE --from .. --to .. --reprocess failed`");
    }
    s
}

fn finish(ctx: &Context, store: &Arc<Store>, b: &BackfillRecord) -> Result<u8, Error> {
    let views = bf::view(store, b)?;
    outln!(ctx, "\n{}", summary(b, &views));
    Ok(if b.status == BackfillStatus::Succeeded {
        0
    } else {
        1
    })
}

/// The backfill runs in the daemon that owns the state dir; this follows it.
async fn in_daemon(
    ctx: &Context,
    api: &crate::client::Client,
    req: Option<Request>,
    args: &Args,
) -> Result<u8, Error> {
    let request = BackfillRequest {
        request: req,
        resume: args.resume.clone(),
        dry_run: args.dry_run,
    };
    let answer: BackfillStarted = api.post("/api/backfills", &request).await?;
    if let Some(text) = &answer.plan {
        out!(ctx, "{text}");
        return Ok(0);
    }
    for text in [&answer.note, &answer.header].into_iter().flatten() {
        outln!(ctx, "{text}");
    }
    let id = answer.backfill_id.unwrap_or_default();
    let mut printed = std::collections::BTreeSet::new();
    // The daemon answers with the id before its backfill task has recorded the backfill.
    let recorded_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = match api.get(&format!("/api/backfills/{id}"), &[], true).await {
            Ok(text) => text,
            Err(e) if e.kind == Kind::NotFound && std::time::Instant::now() < recorded_by => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::failed(format!("error: the daemon's answer: {e}")))?;
        let views: Vec<DateView> = doc["dates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        for v in &views {
            let done = !matches!(v.status.as_str(), "pending" | "running");
            if done && printed.insert(v.date.clone()) && !args.quiet {
                outln!(ctx, "{}", bf::date_line(v));
            }
        }
        let status = doc["backfill"]["status"].as_str().unwrap_or("running");
        if status != "running" {
            let b: BackfillRecord = serde_json::from_value(doc["backfill"].clone())
                .map_err(|e| Error::failed(format!("error: the daemon's answer: {e}")))?;
            outln!(ctx, "\n{}", summary(&b, &views));
            return Ok(if b.status == BackfillStatus::Succeeded {
                0
            } else {
                1
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn backfills(ctx: &Context, json: bool) -> Result<u8, Error> {
    let text = match open_reader_or_api(ctx)? {
        Reader::Local(store) => bf::backfills_output(&store, json)?,
        Reader::Api(api) => api.get("/api/backfills", &[], json).await?,
    };
    out!(ctx, "{text}");
    Ok(0)
}
