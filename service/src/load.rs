//! Loading a workflow file the one way every operation does: the task registry, this
//! process's environment, the state dir's warehouse and the context's channels file;
//! warnings to the console. And whether a loaded workflow may run against this state dir.

use std::collections::BTreeMap;
use std::path::Path;

use orchestrator_engine::state::RunRecord;
use orchestrator_engine::workflow::{self as wf, LoadOptions, Workflow};

use crate::console::errln;
use crate::{Context, Error};

pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

pub fn load(
    ctx: &Context,
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
) -> Result<Workflow, Error> {
    load_on(ctx, file, overrides, inherited, run_id, date, None)
}

/// [`load`], with `--backend` (or a run's recorded backend) over the file's `backend:`.
#[allow(clippy::too_many_arguments)]
pub fn load_on(
    ctx: &Context,
    file: &Path,
    overrides: BTreeMap<String, String>,
    inherited: BTreeMap<String, String>,
    run_id: &str,
    date: &str,
    backend: Option<wf::Backend>,
) -> Result<Workflow, Error> {
    load_with(ctx, file, run_id, date, |opts| LoadOptions {
        overrides,
        backend,
        inherited,
        ..opts
    })
}

/// Loads the current file of a recorded run to resume it: its params, date, backend and
/// the files that triggered it, whatever the file says now.
pub fn load_for_rerun(ctx: &Context, run: &RunRecord) -> Result<Workflow, Error> {
    let backend = run
        .backend
        .as_deref()
        .and_then(|b| wf::Backend::parse(b).ok());
    let file = Path::new(&run.workflow_path);
    load_with(ctx, file, &run.id, &run.logical_date, |opts| LoadOptions {
        backend,
        inherited: run.params.clone(),
        trigger_files: run.trigger_files.clone(),
        ..opts
    })
}

/// The one way operations load a workflow file: today's options with `adjust`'s changes,
/// warnings printed.
fn load_with(
    ctx: &Context,
    file: &Path,
    run_id: &str,
    date: &str,
    adjust: impl for<'r> FnOnce(LoadOptions<'r>) -> LoadOptions<'r>,
) -> Result<Workflow, Error> {
    let state_dir = std::path::absolute(ctx.dir())
        .map_err(|e| Error::invalid(format!("error: state dir {}: {e}", ctx.dir().display())))?;
    let registry = orchestrator_tasks::registry();
    let opts = adjust(crate::notify::options(
        &registry,
        BTreeMap::new(),
        run_id,
        date,
        &state_dir,
        ctx.channels.clone(),
    ));
    let workflow = wf::load_file(file, &opts)?;
    if let Some(warnings) = workflow.warnings_text() {
        errln!(ctx, "{}", warnings.trim_end());
    }
    Ok(workflow)
}

/// Kinds that write into the workflow's warehouse.
const WAREHOUSE_WRITERS: &[&str] = &["sql", "create_table_as", "publish"];

/// One state dir per warehouse (see `warehouse::claim`), checked before anything runs.
pub fn claim_warehouse(wf: &Workflow, dir: &Path) -> Result<(), String> {
    if wf
        .tasks
        .iter()
        .any(|t| WAREHOUSE_WRITERS.contains(&t.kind.as_str()))
    {
        orchestrator_tasks::data::warehouse::claim(&wf.warehouse, dir)
            .map_err(|e| e.to_string())?;
        if let Some(lake) = &wf.lake {
            orchestrator_tasks::data::warehouse::claim_remote(lake, dir)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
