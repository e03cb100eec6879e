//! When the workflow starts by itself and how the daemon runs it: `schedule:`,
//! `timezone:`, `dst:`, `deadline:`, `start_date:`, `catchup:`, `max_catchup:`,
//! `concurrency:`, `resume_interrupted:`, and `on:` (files arriving).

use std::path::Path;

use chrono_tz::Tz;
use serde::Deserialize;

use super::{Loader, Top};
use crate::arrival::FileTrigger;
use crate::diag::Diagnostic;
use crate::schedule::{self, Catchup, Concurrency, DaemonPolicy, Dst, Expr, Schedule};
use crate::task::Dur;
use crate::yaml::{Node, NodeKind, Pos};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OnSpec {
    files: Option<FilesSpec>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FilesSpec {
    path: String,
    pattern: Option<String>,
    debounce: Option<Dur>,
    max_batch: Option<usize>,
    poll: Option<Dur>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DstSpec {
    gap: Option<String>,
    overlap: Option<String>,
}

impl Loader<'_, '_> {
    /// `schedule:`: one expression or a list; each parsed, errors at its own position.
    pub(super) fn schedule_exprs(&mut self, v: &Node) -> Vec<Expr> {
        let items: Vec<&Node> = match &v.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        if items.is_empty() {
            self.err(
                Some(v.pos),
                "`schedule` is an empty list; give at least one expression",
            );
        }
        let mut exprs = Vec::new();
        for item in items {
            match item.as_str() {
                Some(text) => match Expr::parse(text) {
                    // A schedule that can never fire (`0 0 30 2 *`, an interval past the
                    // calendar) would be accepted and do nothing.
                    Ok(e)
                        if e.next_after(
                            chrono::DateTime::UNIX_EPOCH,
                            chrono_tz::Tz::UTC,
                            Dst::default(),
                        )
                        .is_none() =>
                    {
                        self.err(
                            Some(item.pos),
                            format!("schedule `{text}` never fires: it has no fire time at all"),
                        )
                        .help = Some("check the day of month and the month (`0 0 30 2 *` asks for February 30th); `orchestrator next FILE` lists the fire times".into());
                    }
                    Ok(e) => {
                        // Only past fire times (`cron(0 0 1 1 ? 2020)`): catch-up may still
                        // want them, but nothing will fire live; say so.
                        if e.next_after(chrono::Utc::now(), chrono_tz::Tz::UTC, Dst::default())
                            .is_none()
                        {
                            self.warns.push(Diagnostic::new(
                                Some(item.pos),
                                format!("schedule `{text}` has no fire time after now: the daemon will only catch up past ones (per `catchup:`), never fire it live"),
                            ));
                        }
                        exprs.push(e)
                    }
                    Err(e) => {
                        self.err(Some(item.pos), format!("invalid schedule: {e}"));
                    }
                },
                None => {
                    self.err(
                        Some(item.pos),
                        format!(
                            "a schedule is a string like \"cron(0 22 ? * MON-FRI *)\", found {}",
                            item.describe()
                        ),
                    );
                }
            }
        }
        exprs
    }

    /// `timezone:`: an IANA name.
    pub(super) fn timezone(&mut self, v: &Node) -> Option<(Tz, Pos)> {
        let name: String = self.read(v, "in `timezone`")?;
        match schedule::parse_timezone(&name) {
            Ok(tz) => Some((tz, v.pos)),
            Err(e) => {
                self.err(Some(v.pos), e);
                None
            }
        }
    }

    /// `dst:`: what a fire time in a daylight-saving gap or overlap does.
    pub(super) fn dst(&mut self, v: &Node) -> Option<(Dst, Pos)> {
        let spec: DstSpec = self.read(v, "in `dst` (a mapping with `gap` and `overlap`)")?;
        let mut d = Dst::default();
        if let Some(g) = spec.gap {
            match g.parse() {
                Ok(g) => d.gap = Some(g),
                Err(e) => {
                    let at = v.get("gap").map_or(v.pos, |n| n.pos);
                    self.err(Some(at), e);
                }
            }
        }
        if let Some(o) = spec.overlap {
            match o.parse() {
                Ok(o) => d.overlap = Some(o),
                Err(e) => {
                    let at = v.get("overlap").map_or(v.pos, |n| n.pos);
                    self.err(Some(at), e);
                }
            }
        }
        Some((d, v.pos))
    }

    /// `deadline:`: a time of day (`23:30`, `23:30:00`).
    pub(super) fn deadline(&mut self, v: &Node) -> Option<(chrono::NaiveTime, Pos)> {
        let t: String = self.read(v, "in `deadline`")?;
        match chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M:%S")
            .or_else(|_| chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M"))
        {
            Ok(time) => Some((time, v.pos)),
            Err(_) => {
                self.err(
                    Some(v.pos),
                    format!("`deadline` `{t}` is not a time of day; write e.g. \"23:30\" (in the workflow's `timezone:`)"),
                );
                None
            }
        }
    }

    /// `start_date:`: fire times before it are never run.
    pub(super) fn start_date(&mut self, v: &Node) -> Option<chrono::DateTime<chrono::Utc>> {
        let t: String = self.read(v, "in `start_date`")?;
        match schedule::parse_start(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(Some(v.pos), e);
                None
            }
        }
    }

    pub(super) fn catchup(&mut self, v: &Node) -> Option<Catchup> {
        self.read(v, "in `catchup` (none, latest or all)")
    }

    pub(super) fn max_catchup(&mut self, v: &Node) -> Option<usize> {
        match self.read(v, "in `max_catchup`")? {
            0 => {
                self.err(
                    Some(v.pos),
                    "`max_catchup` must be at least 1 (use `catchup: none` for none)",
                );
                None
            }
            n => Some(n),
        }
    }

    pub(super) fn concurrency(&mut self, v: &Node) -> Option<Concurrency> {
        self.read(v, "in `concurrency` (forbid, queue or replace)")
    }

    pub(super) fn resume_interrupted(&mut self, v: &Node) -> Option<bool> {
        self.read(v, "in `resume_interrupted`")
    }

    /// `on:`: what else starts a run; for now files arriving in a directory.
    pub(super) fn on(&mut self, v: &Node) -> Option<FileTrigger> {
        let f = match self.read::<OnSpec>(v, "in `on`")? {
            OnSpec { files: Some(f) } => f,
            OnSpec { files: None } => {
                self.err(Some(v.pos), "`on` names no trigger").help =
                    Some("write `on: { files: { path: DIR, pattern: \"*.csv\" } }`".into());
                return None;
            }
        };
        let base = self.file.parent().unwrap_or(Path::new("."));
        let dir = base.join(&f.path);
        let max_batch = f.max_batch.unwrap_or(FileTrigger::DEFAULT_MAX_BATCH);
        let files_at = v.get("files").map(|n| n.pos);
        let at = |key: &str| {
            v.get("files")
                .and_then(|f| f.get(key))
                .map(|n| n.pos)
                .or(files_at)
        };
        if max_batch == 0 {
            self.err(at("max_batch"), "`max_batch` must be at least 1");
        }
        if f.poll.is_some_and(|p| p.0 < FileTrigger::MIN_POLL) {
            self.err(
                at("poll"),
                "`poll` must be at least 100ms: polling more often keeps a core busy while nothing arrives",
            );
        }
        if f.debounce.is_some_and(|d| d.0 < FileTrigger::MIN_DEBOUNCE) {
            self.err(
                at("debounce"),
                "`debounce` must be at least 100ms: with none, a file still being written starts a run half-written",
            );
        }
        if let Some(p) = f.pattern.as_deref() {
            if p.is_empty() || p.contains(['[', ']', '{', '}', '/', '\\']) {
                self.err(
                    at("pattern"),
                    format!("`pattern` `{p}` is not a file-name pattern: write a name with `*` (any characters) and `?` (one), e.g. \"*.csv\"; `[...]`, `{{...}}` and `/` are not supported"),
                );
            }
        }
        if std::path::absolute(&dir)
            .unwrap_or_else(|_| dir.clone())
            .parent()
            .is_none()
        {
            self.err(
                at("path"),
                format!("`path` `{}` is the root of the file system: watching all of it is never meant; give the landing directory", f.path),
            );
        }
        Some(FileTrigger {
            path: crate::arrival::normalize(&dir),
            pattern: f.pattern.unwrap_or_else(|| "*".into()),
            debounce: f.debounce.map_or(FileTrigger::DEFAULT_DEBOUNCE, |d| d.0),
            max_batch: max_batch.max(1),
            poll: f.poll.map(|d| d.0),
        })
    }

    /// The schedule `schedule:`, `timezone:` and `dst:` make; `timezone:`, `dst:` and
    /// `deadline:` without a `schedule:` are errors.
    pub(super) fn schedule(&mut self, top: &Top) -> Option<Schedule> {
        let Some(exprs) = top.schedule.clone() else {
            for (field, at) in [
                ("timezone", top.timezone.map(|t| t.1)),
                ("dst", top.dst.map(|d| d.1)),
                ("deadline", top.deadline.map(|d| d.1)),
            ] {
                if let Some(at) = at {
                    self.err(Some(at), format!("`{field}` is set, but there is no `schedule:`"))
                        .help = Some(
                        "add a schedule, e.g. `schedule: \"cron(0 22 ? * MON-FRI *)\"`, or remove it".into(),
                    );
                }
            }
            return None;
        };
        Some(Schedule {
            exprs,
            tz: top.timezone.map_or(Tz::UTC, |(tz, _)| tz),
            dst: top.dst.map(|(d, _)| d).unwrap_or_default(),
            start: top.start_date,
        })
    }
}

/// How the daemon runs the workflow: the policy fields given, defaults for the rest.
pub(super) fn policy(top: &Top) -> DaemonPolicy {
    let d = DaemonPolicy::default();
    DaemonPolicy {
        catchup: top.catchup.unwrap_or(d.catchup),
        max_catchup: top.max_catchup.unwrap_or(d.max_catchup),
        concurrency: top.concurrency.unwrap_or(d.concurrency),
        resume_interrupted: top.resume_interrupted.unwrap_or(d.resume_interrupted),
        start: top.start_date,
        deadline: top.deadline.map(|(t, _)| t),
    }
}
