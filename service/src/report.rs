//! What operations show: transition lines, tables, `show` and the `--json` formats.
//! The JSON shapes are documented in README and are a stable interface.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator_engine::executor::{Event, Observer};
use orchestrator_engine::state::{
    AttemptRecord, RunRecord, StateError, Store, TableRecord, TaskRecord,
};
use orchestrator_engine::workflow::Workflow;
use orchestrator_tasks::data::datafusion::arrow::record_batch::RecordBatch;
use serde_json::{json, Value};

use crate::console::Console;

/// Prints one line per task transition to the console: the lines of one turn of the
/// executor in one write, when it is about to wait ([`Observer::turn_end`]).
pub struct Printer {
    quiet: bool,
    console: std::sync::Arc<dyn Console>,
    /// This turn's lines, not yet written.
    lines: std::sync::Mutex<String>,
}

impl Printer {
    pub fn new(quiet: bool, console: std::sync::Arc<dyn Console>) -> Self {
        Printer {
            quiet,
            console,
            lines: Default::default(),
        }
    }

    fn flush(&self) {
        let text = std::mem::take(
            &mut *self
                .lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !text.is_empty() {
            self.console.out(&text);
        }
    }
}

impl Drop for Printer {
    /// An execution that ends in an error has turned its last turn already; this only
    /// keeps a line from being lost if one ever does not.
    fn drop(&mut self) {
        self.flush();
    }
}

impl Observer for Printer {
    fn turn_end(&self) {
        self.flush();
    }

    fn event(&self, event: &Event<'_>) {
        if self.quiet {
            return;
        }
        use std::fmt::Write as _;
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = match event {
            Event::Started { task, attempt } => {
                writeln!(lines, "{task}: started (attempt {attempt})")
            }
            Event::Succeeded {
                task,
                attempt,
                elapsed,
            } => writeln!(
                lines,
                "{task}: succeeded in {} (attempt {attempt})",
                fmt_duration(*elapsed)
            ),
            Event::Failed {
                task,
                attempt,
                error,
                retry_in,
            } => match retry_in {
                Some(d) => writeln!(
                    lines,
                    "{task}: failed (attempt {attempt}): {error}; retrying in {}",
                    fmt_duration(*d)
                ),
                None => writeln!(lines, "{task}: failed (attempt {attempt}): {error}"),
            },
            Event::Skipped { task, reason } => writeln!(lines, "{task}: skipped: {reason}"),
            Event::Cancelled { task } => writeln!(lines, "{task}: cancelled"),
        };
    }
}

/// `12ms`, `1.25s`, `3m04s`, `2h05m`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

fn span(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<Duration> {
    (end? - start?).to_std().ok()
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn one_line(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or_default();
    if first.chars().count() > max {
        format!("{}…", first.chars().take(max).collect::<String>())
    } else if s.lines().nth(1).is_some() {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

/// A time in JSON output: RFC 3339 in UTC with `Z` and milliseconds, one form for every
/// command (sortable as text).
pub fn ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

pub fn runs_table(runs: &[RunRecord]) -> String {
    if runs.is_empty() {
        return "no runs yet; start one with `orchestrator run FILE`\n".into();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.workflow.clone(),
                r.status.to_string(),
                r.logical_date.clone(),
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                // This execution's own time: a rerun's, not since the first start.
                span(Some(r.execution_start()), r.ended_at).map_or("-".into(), fmt_duration),
            ]
        })
        .collect();
    table(
        &[
            "RUN",
            "WORKFLOW",
            "STATUS",
            "DATE",
            "STARTED (UTC)",
            "DURATION",
        ],
        &rows,
    )
}

pub fn runs_json(runs: &[RunRecord]) -> String {
    let list: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "workflow": r.workflow,
                "status": r.status.as_str(),
                "logical_date": r.logical_date,
                "started_at": ts(Some(r.started_at)),
                "ended_at": ts(r.ended_at),
                "trigger": r.trigger,
            })
        })
        .collect();
    Value::Array(list).to_string()
}

/// A run with its tasks (in workflow order) and their attempts.
pub struct RunDetails {
    run: RunRecord,
    tasks: Vec<(TaskRecord, Vec<AttemptRecord>)>,
    notifications: Vec<orchestrator_engine::state::OutboxRecord>,
    /// This run's publishes that `tables restore` undid: (table, what was undone).
    rolled_back: Vec<(String, orchestrator_engine::state::UndonePublish)>,
}

impl RunDetails {
    pub fn load(store: &Store, run: RunRecord) -> Result<RunDetails, StateError> {
        let mut records = store.tasks(&run.id)?;
        let order: std::collections::HashMap<&str, usize> = run
            .task_order
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let pos = |id: &str| order.get(id).copied().unwrap_or(usize::MAX);
        records.sort_by_cached_key(|t| (pos(&t.task_id), t.task_id.clone()));
        // All attempts in one read, not one per task (see `Store::run_attempts`).
        let mut attempts: std::collections::HashMap<String, Vec<_>> =
            std::collections::HashMap::new();
        for a in store.run_attempts(&run.id)? {
            attempts.entry(a.task_id.clone()).or_default().push(a);
        }
        let mut tasks = Vec::with_capacity(records.len());
        for t in records {
            let of_task = attempts.remove(&t.task_id).unwrap_or_default();
            tasks.push((t, of_task));
        }
        let notifications = store.outbox(&run.id)?;
        let rolled_back = store
            .tables()?
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.undone
                    .into_iter()
                    .filter(|u| u.run_id == run.id)
                    .map(move |u| (name.clone(), u))
            })
            .collect();
        Ok(RunDetails {
            run,
            tasks,
            notifications,
            rolled_back,
        })
    }

    fn task_rows(&self) -> Vec<Vec<String>> {
        self.tasks
            .iter()
            .map(|(t, _)| {
                vec![
                    t.task_id.clone(),
                    t.status.to_string(),
                    t.attempts.to_string(),
                    span(t.started_at, t.ended_at).map_or("-".into(), fmt_duration),
                    t.error
                        .as_deref()
                        .map_or(String::new(), |e| one_line(e, 100)),
                ]
            })
            .collect()
    }

    /// The table printed at the end of `run` and `rerun`.
    pub fn summary(&self) -> String {
        let r = &self.run;
        let mut out = String::from("\n");
        out.push_str(&table(
            &["TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
            &self.task_rows(),
        ));
        // Counts in one fixed order, whatever order the tasks ended in.
        use orchestrator_engine::state::TaskStatus as S;
        let counts: Vec<String> = [
            S::Succeeded,
            S::Failed,
            S::Skipped,
            S::Cancelled,
            S::Running,
            S::Pending,
        ]
        .iter()
        .filter_map(|status| {
            let n = self
                .tasks
                .iter()
                .filter(|(t, _)| t.status == *status)
                .count();
            (n > 0).then(|| format!("{n} {status}"))
        })
        .collect();
        let took = span(Some(r.execution_start()), r.ended_at).map_or("-".into(), fmt_duration);
        let total = match (r.execution_started_at, r.ended_at) {
            (Some(_), Some(_)) => span(Some(r.started_at), r.ended_at).map_or(String::new(), |d| {
                format!(" ({} since the first start)", fmt_duration(d))
            }),
            _ => String::new(),
        };
        out.push_str(&format!(
            "\nrun {} {} in {took}{total}: {}\n",
            r.id,
            r.status,
            counts.join(", ")
        ));
        if r.status != orchestrator_engine::state::RunStatus::Succeeded {
            out.push_str(&format!(
                "inspect: orchestrator show {id}\nafter fixing the cause: orchestrator rerun {id}\n",
                id = r.id
            ));
        }
        out
    }

    pub fn text(&self) -> String {
        let r = &self.run;
        let mut out = format!(
            "run {}\n  workflow: {} ({})\n  status: {}\n  logical date: {}\n  started: {}\n  ended: {}\n",
            r.id,
            r.workflow,
            r.workflow_path,
            r.status,
            r.logical_date,
            r.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            r.ended_at.map_or("-".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        if !r.params.is_empty() {
            let p: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("  params: {}\n", p.join(", ")));
        }
        if r.reruns > 0 {
            out.push_str(&format!("  reruns: {}\n", r.reruns));
            out.push_str(&format!(
                "  latest execution started: {}\n",
                r.execution_start()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
        }
        if let Some(t) = &r.trigger {
            out.push_str(&format!("  trigger: {t}\n"));
        }
        if let Some(n) = &r.note {
            out.push_str(&format!("  note: {n}\n"));
        }
        out.push('\n');
        out.push_str(&table(
            &["TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
            &self.task_rows(),
        ));
        for (table, u) in &self.rolled_back {
            out.push_str(&format!(
                "\n{} publish rolled back: `{table}` version {} ({} rows) was undone by a restore to version {} (committed as version {}, {}); `orchestrator rerun {} --from {}` publishes it again\n",
                u.task_id,
                u.version,
                u.rows,
                u.restored_to,
                u.restored_in,
                u.at.format("%Y-%m-%d %H:%M UTC"),
                self.run.id,
                u.task_id,
            ));
        }
        for (t, attempts) in &self.tasks {
            if !t.outputs.is_empty() {
                out.push_str(&format!(
                    "\n{} outputs: {}\n",
                    t.task_id,
                    Value::Object(t.outputs.clone())
                ));
            }
            for a in attempts {
                out.push_str(&format!(
                    "\n--- {} attempt {}: {}{}{}\n",
                    t.task_id,
                    a.attempt,
                    a.status,
                    span(Some(a.started_at), a.ended_at)
                        .map_or(String::new(), |d| format!(" in {}", fmt_duration(d))),
                    a.exit_code.map_or(String::new(), |c| format!(", exit {c}")),
                ));
                if let Some(e) = &a.error {
                    out.push_str(&format!("error: {e}\n"));
                }
                if !a.output_tail.is_empty() {
                    for line in a.output_tail.lines() {
                        out.push_str(&format!("  | {line}\n"));
                    }
                }
            }
        }
        if !self.notifications.is_empty() {
            out.push_str("\nnotifications:\n");
            let rows: Vec<Vec<String>> = self
                .notifications
                .iter()
                .map(|n| {
                    vec![
                        n.event.clone(),
                        n.channel.clone(),
                        n.status.as_str().to_string(),
                        n.attempts.to_string(),
                        n.delivered_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .or_else(|| {
                                matches!(
                                    n.status,
                                    orchestrator_engine::state::DeliveryStatus::Pending
                                        | orchestrator_engine::state::DeliveryStatus::Failed
                                )
                                .then(|| format!("next try {}", n.next_at.format("%H:%M:%S UTC")))
                            })
                            .unwrap_or_else(|| "-".into()),
                        n.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "EVENT",
                    "CHANNEL",
                    "DELIVERY",
                    "ATTEMPTS",
                    "WHEN (UTC)",
                    "LAST ERROR",
                ],
                &rows,
            ));
        }
        out
    }

    pub fn json(&self) -> Value {
        let r = &self.run;
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .map(|(t, attempts)| {
                json!({
                    "id": t.task_id,
                    "status": t.status.as_str(),
                    "attempts": t.attempts,
                    "started_at": ts(t.started_at),
                    "ended_at": ts(t.ended_at),
                    "error": t.error,
                    "outputs": t.outputs,
                    "history": attempts.iter().map(|a| json!({
                        "attempt": a.attempt,
                        "status": a.status.as_str(),
                        "started_at": ts(Some(a.started_at)),
                        "ended_at": ts(a.ended_at),
                        "exit_code": a.exit_code,
                        "error": a.error,
                        "output_tail": a.output_tail,
                        "outputs": a.outputs,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "id": r.id,
            "workflow": r.workflow,
            "workflow_path": r.workflow_path,
            "status": r.status.as_str(),
            "logical_date": r.logical_date,
            "params": r.params,
            "reruns": r.reruns,
            "trigger": r.trigger,
            "note": r.note,
            "started_at": ts(Some(r.started_at)),
            "execution_started_at": ts(Some(r.execution_start())),
            "ended_at": ts(r.ended_at),
            "tasks": tasks,
            "rolled_back": self.rolled_back.iter().map(|(table, u)| json!({
                "table": table,
                "task": u.task_id,
                "version": u.version,
                "rows": u.rows,
                "restored_to": u.restored_to,
                "restored_in": u.restored_in,
                "at": ts(Some(u.at)),
            })).collect::<Vec<_>>(),
            "notifications": self.notifications.iter().map(|n| json!({
                "id": n.id,
                "event": n.event,
                "channel": n.channel,
                "status": n.status.as_str(),
                "attempts": n.attempts,
                "created_at": ts(Some(n.created_at)),
                // Only while it will be tried again.
                "next_at": ts(matches!(
                    n.status,
                    orchestrator_engine::state::DeliveryStatus::Pending
                        | orchestrator_engine::state::DeliveryStatus::Failed
                ).then_some(n.next_at)),
                "delivered_at": ts(n.delivered_at),
                "last_error": n.last_error,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The task graph as Graphviz dot or a Mermaid flowchart; non-default trigger rules are
/// shown on their task.
pub fn graph(wf: &Workflow, mermaid: bool) -> String {
    let ids = wf.task_ids();
    let labels: Vec<Option<&str>> = wf
        .tasks
        .iter()
        .map(|t| (t.trigger != Default::default()).then(|| t.trigger.as_str()))
        .collect();
    if mermaid {
        orchestrator_engine::dag::to_mermaid(&ids, &wf.dag, &labels)
    } else {
        orchestrator_engine::dag::to_dot(&wf.name, &ids, &wf.dag, &labels)
    }
}

/// Query results as a text table.
/// Query results as a table for people: floats rounded to 6 significant digits (never
/// below the units: 1234567.8 shows as 1234568), so `0.30000000000000004` reads `0.3`.
/// `--json` keeps full precision.
pub fn batches_table(batches: &[RecordBatch]) -> Result<String, String> {
    let readable: Vec<RecordBatch> = batches
        .iter()
        .map(readable_floats)
        .collect::<Result<_, _>>()?;
    orchestrator_tasks::data::datafusion::arrow::util::pretty::pretty_format_batches(&readable)
        .map(|t| t.to_string())
        .map_err(|e| e.to_string())
}

/// `v` rounded to 6 significant digits, or to the units when it has more than 6 digits
/// before the point.
pub fn round_readable(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    if v.abs() >= 1e6 {
        return v.round();
    }
    // Through decimal text: exact at every magnitude, where scaling by 10^n is not.
    format!("{v:.5e}").parse().unwrap_or(v)
}

fn readable_floats(batch: &RecordBatch) -> Result<RecordBatch, String> {
    use orchestrator_tasks::data::datafusion::arrow::array::{
        Array, ArrayRef, Float32Array, Float64Array,
    };
    use orchestrator_tasks::data::datafusion::arrow::datatypes::{Float32Type, Float64Type};
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| -> ArrayRef {
            if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
                std::sync::Arc::new(a.unary::<_, Float64Type>(round_readable))
            } else if let Some(a) = c.as_any().downcast_ref::<Float32Array>() {
                std::sync::Arc::new(
                    a.unary::<_, Float32Type>(|v| round_readable(f64::from(v)) as f32),
                )
            } else {
                c.clone()
            }
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| e.to_string())
}

/// Query results as a JSON array of objects keyed by column name: numbers as numbers,
/// dates as `YYYY-MM-DD`, nulls as `null`.
pub fn batches_json(batches: &[RecordBatch]) -> Result<String, String> {
    let rows = orchestrator_tasks::data::rows_json(batches).map_err(|e| e.to_string())?;
    serde_json::to_string(&rows).map_err(|e| e.to_string())
}

pub fn tables_table(tables: &[TableRecord]) -> String {
    if tables.is_empty() {
        return "no tables yet; a `crawl` or `create_table_as` task creates them\n".into();
    }
    let rows: Vec<Vec<String>> = tables
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.format.clone(),
                t.version.map_or("-".into(), |v| v.to_string()),
                t.row_count.map_or("-".into(), |n| n.to_string()),
                t.columns.len().to_string(),
                if t.partition_columns.is_empty() {
                    "-".into()
                } else {
                    format!(
                        "{} ({})",
                        t.partition_columns.join(", "),
                        t.partitions.len()
                    )
                },
                t.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                t.location.clone(),
            ]
        })
        .collect();
    table(
        &[
            "TABLE",
            "FORMAT",
            "VERSION",
            "ROWS",
            "COLUMNS",
            "PARTITIONED BY",
            "UPDATED (UTC)",
            "LOCATION",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_at_six_significant_digits_but_keep_their_units() {
        assert_eq!(round_readable(0.1 + 0.2), 0.3);
        assert_eq!(round_readable(214.0400000001), 214.04);
        assert_eq!(round_readable(0.000123456789), 0.000123457);
        assert_eq!(round_readable(-0.0123456789), -0.0123457);
        assert_eq!(round_readable(1234567.891), 1234568.0);
        assert_eq!(round_readable(0.0), 0.0);
        assert!(round_readable(f64::NAN).is_nan());
        assert_eq!(round_readable(f64::INFINITY), f64::INFINITY);
        assert_eq!(round_readable(1e-300), 1e-300);
    }

    /// Records each write the printer makes, separately.
    #[derive(Default)]
    struct Writes(std::sync::Mutex<Vec<String>>);

    impl Console for Writes {
        fn out(&self, text: &str) {
            self.0.lock().unwrap().push(text.to_string());
        }
        fn err(&self, text: &str) {
            self.0.lock().unwrap().push(format!("err: {text}"));
        }
    }

    #[test]
    fn a_turns_lines_are_written_together_when_it_ends_and_none_is_lost() {
        let writes = std::sync::Arc::new(Writes::default());
        let printer = Printer::new(false, writes.clone());
        printer.event(&Event::Succeeded {
            task: "t0",
            attempt: 1,
            elapsed: Duration::from_millis(3),
        });
        printer.event(&Event::Started {
            task: "t1",
            attempt: 1,
        });
        assert!(
            writes.0.lock().unwrap().is_empty(),
            "held until the turn ends"
        );
        printer.turn_end();
        printer.turn_end();
        assert_eq!(
            *writes.0.lock().unwrap(),
            ["t0: succeeded in 3ms (attempt 1)\nt1: started (attempt 1)\n"],
            "one write, in order; an empty turn writes nothing"
        );
        // A line left when the printer goes is written then.
        printer.event(&Event::Cancelled { task: "t1" });
        drop(printer);
        assert_eq!(writes.0.lock().unwrap()[1], "t1: cancelled\n");

        let quiet = Printer::new(true, writes.clone());
        quiet.event(&Event::Cancelled { task: "t2" });
        quiet.turn_end();
        assert_eq!(writes.0.lock().unwrap().len(), 2);
    }
}
