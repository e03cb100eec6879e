//! Table tests of the daemon's scheduling decisions on a fake clock: each row is a
//! workflow's settings (YAML, loaded by the engine's loader), the daemon's records and
//! `now`, and the decisions expected. Expected values are written out literally, from
//! README.md's rules, not recomputed with the code under test.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use orchestrator_engine::state::{RunRecord, RunStatus};
use orchestrator_engine::task::{
    BuildContext, Invalid, Outputs, Registry, Task, TaskConfig, TaskContext, TaskFailure,
};
use orchestrator_engine::workflow::{self, LoadOptions, Workflow};

use super::*;

/// A `noop` task kind: these workflows are loaded, never run.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Noop {}

#[derive(Debug)]
struct NoopTask;

#[async_trait::async_trait]
impl Task for NoopTask {
    async fn run(&self, _: &TaskContext) -> Result<Outputs, TaskFailure> {
        Ok(Outputs::default())
    }
}

impl TaskConfig for Noop {
    const KIND: &'static str = "noop";
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Task>, Invalid> {
        Ok(Arc::new(NoopTask))
    }
}

/// Workflow `w` with these top-level settings (YAML lines) and one task.
fn wf(settings: &str) -> Workflow {
    let mut registry = Registry::default();
    registry.register::<Noop>();
    let opts = LoadOptions {
        registry: &registry,
        overrides: Default::default(),
        inherited: Default::default(),
        run_id: "daemon".into(),
        date: "2026-01-01".into(),
        scheduled_at: None,
        trigger_files: Vec::new(),
        env: Default::default(),
        default_warehouse: "/nonexistent/warehouse".into(),
        backend: None,
        channels_file: None,
    };
    // A directory that does not exist: no `channels.yaml` beside it is read.
    let path = Path::new("/nonexistent/orchestrator-daemon-policy/w.yaml");
    let text = format!("name: w\n{settings}\ntasks:\n  a:\n    kind: noop\n");
    workflow::load_str(path, text, &opts).unwrap_or_else(|d| panic!("{settings}:\n{d}"))
}

/// An instant, RFC 3339.
fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn ts(v: &[&str]) -> Vec<DateTime<Utc>> {
    v.iter().map(|s| t(s)).collect()
}

fn due(at: &str, trigger: &str) -> Due {
    Due {
        at: t(at),
        trigger: trigger.into(),
        files: Vec::new(),
        overrides: BTreeMap::new(),
        date: None,
    }
}

fn run(id: &str, day: &str, status: RunStatus) -> RunRecord {
    RunRecord {
        id: id.into(),
        workflow: "w".into(),
        workflow_path: "/nonexistent/w.yaml".into(),
        definition: String::new(),
        params: BTreeMap::new(),
        logical_date: day.into(),
        status,
        started_at: t("2026-03-02T11:00:00Z"),
        ended_at: None,
        pid: 1,
        reruns: 0,
        task_order: Vec::new(),
        trigger: None,
        note: None,
        backend: None,
        channels_file: None,
        trigger_files: Vec::new(),
        resume_pending: false,
        execution_started_at: None,
    }
}

/// The daemon's schedule loop on a fake clock, with no run ever going: loaded at `from`
/// with no schedule record, it wakes when its timers say, fires what is due and checks
/// deadlines, until `until`. Returns the fire times acted on, and the days whose deadline
/// was checked (`None`: the schedule had not fired that day).
fn drive(
    wf: &Workflow,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, Vec<Option<String>>) {
    let mut timers = timers(wf, None, from);
    let (mut fires, mut days) = (Vec::new(), Vec::new());
    let mut now = from;
    for _ in 0..10_000 {
        let Some(at) = wake([timers]).filter(|at| *at <= until) else {
            return (fires, days);
        };
        assert!(at >= now, "the clock went back from {now} to {at}");
        now = at;
        if let Some(f) = fire(wf, timers.next, None, now) {
            assert_eq!(f.action, Action::Start(Due::fire(f.at)));
            fires.push(f.at);
            timers.next = f.next;
        }
        if let Some(c) = deadline_check(wf, timers.deadline_at, now) {
            days.push(c.day);
            timers.deadline_at = c.next;
        }
    }
    panic!("the daemon woke 10000 times between {from} and {until}");
}

#[test]
fn a_fire_while_a_run_is_going_follows_concurrency() {
    struct Row {
        settings: &'static str,
        active: Option<&'static str>,
        want: Action,
    }
    let at = "2026-03-02T06:00:00Z";
    let scheduled = || due(at, "schedule 2026-03-02T06:00:00Z");
    let rows = [
        Row {
            settings: "concurrency: forbid",
            active: Some("r1"),
            want: Action::Skip {
                due: scheduled(),
                why: "due at 2026-03-02T06:00:00Z, but run r1 was still running (concurrency: forbid)".into(),
            },
        },
        // forbid is the default
        Row {
            settings: "",
            active: Some("r1"),
            want: Action::Skip {
                due: scheduled(),
                why: "due at 2026-03-02T06:00:00Z, but run r1 was still running (concurrency: forbid)".into(),
            },
        },
        Row {
            settings: "concurrency: queue",
            active: Some("r1"),
            want: Action::Queue {
                due: due(at, "schedule 2026-03-02T06:00:00Z (queued behind run r1)"),
                behind: "r1".into(),
            },
        },
        Row {
            settings: "concurrency: replace",
            active: Some("r1"),
            want: Action::Replace {
                due: scheduled(),
                cancel: "r1".into(),
                note: "replaced by the run due at 2026-03-02T06:00:00Z (concurrency: replace)"
                    .into(),
            },
        },
        // With no run going, every policy starts it.
        Row {
            settings: "concurrency: forbid",
            active: None,
            want: Action::Start(scheduled()),
        },
        Row {
            settings: "concurrency: queue",
            active: None,
            want: Action::Start(scheduled()),
        },
        Row {
            settings: "concurrency: replace",
            active: None,
            want: Action::Start(scheduled()),
        },
    ];
    for row in rows {
        let w = wf(&format!("schedule: \"0 6 * * *\"\n{}", row.settings));
        let timers = timers(&w, None, t("2026-03-02T05:00:00Z"));
        assert_eq!(timers.next, Some(t(at)), "{}", row.settings);
        assert_eq!(
            fire(&w, timers.next, row.active, t("2026-03-02T05:59:59Z")),
            None,
            "not due yet: {}",
            row.settings
        );
        let got = fire(&w, timers.next, row.active, t(at));
        let want = Fire {
            at: t(at),
            next: Some(t("2026-03-03T06:00:00Z")),
            action: row.want,
        };
        assert_eq!(
            got,
            Some(want),
            "{} with {:?} going",
            row.settings,
            row.active
        );
    }
}

#[test]
fn a_late_wake_fires_the_due_time_once_and_moves_past_now() {
    let w = wf("schedule: \"0 6 * * *\"");
    // Woken two days late (a suspended machine): one run, for the time that was due.
    let got = fire(
        &w,
        Some(t("2026-03-02T06:00:00Z")),
        None,
        t("2026-03-04T07:00:00Z"),
    )
    .unwrap();
    assert_eq!(got.at, t("2026-03-02T06:00:00Z"));
    assert_eq!(got.next, Some(t("2026-03-05T06:00:00Z")));
    // A schedule whose fire times have ended is never due again.
    assert_eq!(fire(&w, None, None, t("2030-01-01T00:00:00Z")), None);
}

#[test]
fn the_schedule_record_stops_short_of_the_oldest_queued_fire_time() {
    let ns = Duration::nanoseconds(1);
    let (t1, t2) = (t("2026-03-02T06:00:00Z"), t("2026-03-03T06:00:00Z"));
    // (latest fire time handled, fire times queued) -> the record's point
    let rows = [
        (None, vec![], None),
        (Some(t2), vec![], Some(t2)),
        (Some(t2), vec![t2], Some(t2 - ns)),
        (Some(t2), vec![t2, t1], Some(t1 - ns)),
        (Some(t1), vec![t2], Some(t1)),
    ];
    for (handled, queued, want) in rows {
        assert_eq!(
            record_point(handled, queued.clone()),
            want,
            "handled {handled:?}, queued {queued:?}"
        );
    }
}

#[test]
fn catch_up_after_downtime_follows_catchup_and_max_catchup() {
    struct Row {
        settings: &'static str,
        last_fire: Option<&'static str>,
        want: Option<CatchUp>,
    }
    // Daily at 06:00 UTC; the daemon handled 03-01 and was down until 03-06 12:00, across
    // the fire times of 03-02 to 03-06.
    let since = t("2026-03-01T06:00:00Z");
    let catch_up_of = |at: &str| due(at, &format!("catch-up {at}"));
    let next = Some(t("2026-03-07T06:00:00Z"));
    let latest = t("2026-03-06T06:00:00Z");
    let rows = [
        Row {
            settings: "catchup: none",
            last_fire: Some("2026-03-01T06:00:00Z"),
            want: Some(CatchUp {
                since,
                // Counted back from now until one was found: "more than 1".
                count: 1,
                exact: false,
                runs: vec![],
                latest,
                next,
            }),
        },
        Row {
            settings: "catchup: latest",
            last_fire: Some("2026-03-01T06:00:00Z"),
            want: Some(CatchUp {
                since,
                count: 1,
                exact: false,
                runs: vec![catch_up_of("2026-03-06T06:00:00Z")],
                latest,
                next,
            }),
        },
        // latest is the default
        Row {
            settings: "",
            last_fire: Some("2026-03-01T06:00:00Z"),
            want: Some(CatchUp {
                since,
                count: 1,
                exact: false,
                runs: vec![catch_up_of("2026-03-06T06:00:00Z")],
                latest,
                next,
            }),
        },
        Row {
            settings: "catchup: all\nmax_catchup: 3",
            last_fire: Some("2026-03-01T06:00:00Z"),
            want: Some(CatchUp {
                since,
                count: 3,
                exact: false,
                runs: vec![
                    catch_up_of("2026-03-04T06:00:00Z"),
                    catch_up_of("2026-03-05T06:00:00Z"),
                    catch_up_of("2026-03-06T06:00:00Z"),
                ],
                latest,
                next,
            }),
        },
        // max_catchup defaults to 10: all five, counted exactly.
        Row {
            settings: "catchup: all",
            last_fire: Some("2026-03-01T06:00:00Z"),
            want: Some(CatchUp {
                since,
                count: 5,
                exact: true,
                runs: vec![
                    catch_up_of("2026-03-02T06:00:00Z"),
                    catch_up_of("2026-03-03T06:00:00Z"),
                    catch_up_of("2026-03-04T06:00:00Z"),
                    catch_up_of("2026-03-05T06:00:00Z"),
                    catch_up_of("2026-03-06T06:00:00Z"),
                ],
                latest,
                next,
            }),
        },
        // Nothing missed since the record.
        Row {
            settings: "catchup: all",
            last_fire: Some("2026-03-06T06:00:00Z"),
            want: None,
        },
        // No record and no start_date: a new schedule starts from now.
        Row {
            settings: "catchup: all",
            last_fire: None,
            want: None,
        },
        // No record: catch-up starts at start_date (as today, a fire time at start_date
        // itself would not be counted: `since` is exclusive).
        Row {
            settings: "catchup: all\nstart_date: 2026-03-04",
            last_fire: None,
            want: Some(CatchUp {
                since: t("2026-03-04T00:00:00Z"),
                count: 3,
                exact: true,
                runs: vec![
                    catch_up_of("2026-03-04T06:00:00Z"),
                    catch_up_of("2026-03-05T06:00:00Z"),
                    catch_up_of("2026-03-06T06:00:00Z"),
                ],
                latest,
                next,
            }),
        },
        // A record before start_date: nothing before start_date runs.
        Row {
            settings: "catchup: all\nstart_date: 2026-03-05T00:00:00Z",
            last_fire: Some("2026-03-01T06:00:00Z"),
            want: Some(CatchUp {
                since: t("2026-03-05T00:00:00Z") - Duration::nanoseconds(1),
                count: 2,
                exact: true,
                runs: vec![
                    catch_up_of("2026-03-05T06:00:00Z"),
                    catch_up_of("2026-03-06T06:00:00Z"),
                ],
                latest,
                next,
            }),
        },
    ];
    let now = t("2026-03-06T12:00:00Z");
    for row in rows {
        let w = wf(&format!("schedule: \"0 6 * * *\"\n{}", row.settings));
        let got = catch_up(&w, row.last_fire.map(t), now);
        assert_eq!(
            got, row.want,
            "{} (record {:?})",
            row.settings, row.last_fire
        );
    }
}

#[test]
fn catch_up_runs_are_queued_behind_the_schedule_record() {
    let w = wf("schedule: \"0 6 * * *\"\ncatchup: all\nmax_catchup: 3");
    let now = t("2026-03-06T12:00:00Z");
    let c = catch_up(&w, Some(t("2026-03-01T06:00:00Z")), now).unwrap();
    let mut queued: Vec<DateTime<Utc>> = c.runs.iter().map(|d| d.at).collect();
    // All are handled, but a crash before they start must catch them up again.
    assert_eq!(
        record_point(Some(c.latest), queued.clone()),
        Some(t("2026-03-04T06:00:00Z") - Duration::nanoseconds(1))
    );
    queued.remove(0); // the first starts
    assert_eq!(
        record_point(Some(c.latest), queued.clone()),
        Some(t("2026-03-05T06:00:00Z") - Duration::nanoseconds(1))
    );
    queued.clear();
    assert_eq!(record_point(Some(c.latest), queued), Some(c.latest));
    // Restarted with that record, nothing more is missed; the schedule goes on.
    assert_eq!(catch_up(&w, Some(c.latest), now), None);
    assert_eq!(
        timers(&w, Some(c.latest), now).next,
        Some(t("2026-03-07T06:00:00Z"))
    );
}

#[test]
fn a_deadline_with_no_run_that_day_is_missed() {
    // Weekdays at 06:00 in New York, due by 09:00 there. 2026-03-02 is a Monday.
    let w = wf(
        "schedule: \"0 6 * * 1-5\"\ntimezone: America/New_York\ndeadline: \"09:00\"\ncatchup: none",
    );
    // The daemon starts at noon UTC (07:00 EST), after the day's fire time: catchup: none
    // starts nothing, and no run of the day exists.
    let now = t("2026-03-02T12:00:00Z");
    let c = catch_up(&w, Some(t("2026-02-27T11:00:00Z")), now).unwrap();
    assert!(c.runs.is_empty());
    let timers = timers(&w, Some(c.latest), now);
    assert_eq!(timers.deadline_at, Some(t("2026-03-02T14:00:00Z")));
    assert_eq!(
        deadline_check(&w, timers.deadline_at, t("2026-03-02T13:59:59Z")),
        None
    );
    let check = deadline_check(&w, timers.deadline_at, t("2026-03-02T14:00:00Z")).unwrap();
    assert_eq!(
        check,
        DeadlineCheck {
            at: t("2026-03-02T14:00:00Z"),
            next: Some(t("2026-03-03T14:00:00Z")),
            day: Some("2026-03-02".into()),
        }
    );
    assert_eq!(deadline_missed("2026-03-02", vec![]), Some(vec![]));
}

#[test]
fn a_deadline_is_met_by_a_successful_run_of_its_day_only() {
    use RunStatus::*;
    let rows: [(Vec<RunRecord>, Option<Vec<&str>>); 6] = [
        (vec![], Some(vec![])),
        (vec![run("a", "2026-03-02", Succeeded)], None),
        (
            vec![
                run("a", "2026-03-02", Failed),
                run("b", "2026-03-02", Succeeded),
            ],
            None,
        ),
        // Yesterday's success does not count; today's failure is what the notice tells.
        (
            vec![
                run("a", "2026-03-01", Succeeded),
                run("b", "2026-03-02", Failed),
            ],
            Some(vec!["b"]),
        ),
        (vec![run("a", "2026-03-02", Running)], Some(vec!["a"])),
        (
            vec![
                run("a", "2026-03-02", Skipped),
                run("b", "2026-03-02", Cancelled),
            ],
            Some(vec!["a", "b"]),
        ),
    ];
    for (runs, want) in rows {
        let what: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {}", r.logical_date, r.status.as_str()))
            .collect();
        let got = deadline_missed("2026-03-02", runs)
            .map(|rs| rs.into_iter().map(|r| r.id).collect::<Vec<_>>());
        let want = want.map(|ids| ids.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, want, "runs: {what:?}");
    }
}

#[test]
fn a_deadline_is_checked_only_on_days_the_schedule_fired() {
    let w = wf("schedule: \"0 6 * * 1-5\"\ntimezone: America/New_York\ndeadline: \"09:00\"");
    // Monday 03-02 to Monday 03-09, across the weekend and the spring-forward night.
    let (fires, days) = drive(&w, t("2026-03-02T00:00:00Z"), t("2026-03-09T23:00:00Z"));
    assert_eq!(
        fires,
        ts(&[
            "2026-03-02T11:00:00Z",
            "2026-03-03T11:00:00Z",
            "2026-03-04T11:00:00Z",
            "2026-03-05T11:00:00Z",
            "2026-03-06T11:00:00Z",
            // 06:00 EDT
            "2026-03-09T10:00:00Z",
        ])
    );
    let day = |d: &str| Some(d.to_string());
    assert_eq!(
        days,
        [
            day("2026-03-02"),
            day("2026-03-03"),
            day("2026-03-04"),
            day("2026-03-05"),
            day("2026-03-06"),
            None, // Saturday
            None, // Sunday
            day("2026-03-09"),
        ]
    );
    // Sunday's check is at 09:00 EDT, an hour earlier in UTC.
    let sat = deadline_check(
        &w,
        Some(t("2026-03-07T14:00:00Z")),
        t("2026-03-07T14:00:00Z"),
    )
    .unwrap();
    assert_eq!(sat.next, Some(t("2026-03-08T13:00:00Z")));
}

/// In America/New_York, 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC), and
/// 2026-11-01 02:00 EDT falls back to 01:00 EST (06:00 UTC).
#[test]
fn dst_gaps_and_overlaps_under_each_policy() {
    struct Row {
        schedule: &'static str,
        dst: &'static str,
        from: &'static str,
        until: &'static str,
        want: &'static [&'static str],
    }
    const GAP_DAYS: (&str, &str) = ("2026-03-07T00:00:00Z", "2026-03-09T23:00:00Z");
    const GAP_HOURS: (&str, &str) = ("2026-03-08T05:00:00Z", "2026-03-08T08:00:00Z");
    const OVERLAP_DAYS: (&str, &str) = ("2026-10-31T00:00:00Z", "2026-11-02T23:00:00Z");
    const OVERLAP_HOURS: (&str, &str) = ("2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z");
    let row = |schedule, dst, (from, until): (&'static str, &'static str), want| Row {
        schedule,
        dst,
        from,
        until,
        want,
    };
    // 02:30 the day before, the gap's end (03:00 EDT), 02:30 EDT the day after.
    const FIXED_GAP_RUN_AFTER: &[&str] = &[
        "2026-03-07T07:30:00Z",
        "2026-03-08T07:00:00Z",
        "2026-03-09T06:30:00Z",
    ];
    const FIXED_GAP_SKIP: &[&str] = &["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"];
    // 00:30 EST, 01:30 EST, (02:30 does not exist), 03:30 EDT.
    const HOURLY_GAP_SKIP: &[&str] = &[
        "2026-03-08T05:30:00Z",
        "2026-03-08T06:30:00Z",
        "2026-03-08T07:30:00Z",
    ];
    const HOURLY_GAP_RUN_AFTER: &[&str] = &[
        "2026-03-08T05:30:00Z",
        "2026-03-08T06:30:00Z",
        "2026-03-08T07:00:00Z",
        "2026-03-08T07:30:00Z",
    ];
    // 01:30 EDT the day before, the first 01:30 (EDT), 01:30 EST the day after.
    const FIXED_OVERLAP_ONCE: &[&str] = &[
        "2026-10-31T05:30:00Z",
        "2026-11-01T05:30:00Z",
        "2026-11-02T06:30:00Z",
    ];
    const FIXED_OVERLAP_EVERY: &[&str] = &[
        "2026-10-31T05:30:00Z",
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:30:00Z",
        "2026-11-02T06:30:00Z",
    ];
    // 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST.
    const HOURLY_OVERLAP_EVERY: &[&str] = &[
        "2026-11-01T04:30:00Z",
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:30:00Z",
        "2026-11-01T07:30:00Z",
    ];
    const HOURLY_OVERLAP_ONCE: &[&str] = &[
        "2026-11-01T04:30:00Z",
        "2026-11-01T05:30:00Z",
        "2026-11-01T07:30:00Z",
    ];
    let rows = [
        // The gap. Unix fixed-time: run_after by default.
        row("30 2 * * *", "", GAP_DAYS, FIXED_GAP_RUN_AFTER),
        row(
            "30 2 * * *",
            "{ gap: run_after }",
            GAP_DAYS,
            FIXED_GAP_RUN_AFTER,
        ),
        row("30 2 * * *", "{ gap: skip }", GAP_DAYS, FIXED_GAP_SKIP),
        // Unix wildcard: nothing in the gap by default.
        row("30 * * * *", "", GAP_HOURS, HOURLY_GAP_SKIP),
        row("30 * * * *", "{ gap: skip }", GAP_HOURS, HOURLY_GAP_SKIP),
        row(
            "30 * * * *",
            "{ gap: run_after }",
            GAP_HOURS,
            HOURLY_GAP_RUN_AFTER,
        ),
        // EventBridge: skipped that day by default.
        row("cron(30 2 * * ? *)", "", GAP_DAYS, FIXED_GAP_SKIP),
        row(
            "cron(30 2 * * ? *)",
            "{ gap: skip }",
            GAP_DAYS,
            FIXED_GAP_SKIP,
        ),
        row(
            "cron(30 2 * * ? *)",
            "{ gap: run_after }",
            GAP_DAYS,
            FIXED_GAP_RUN_AFTER,
        ),
        // The overlap. Unix fixed-time: once by default.
        row("30 1 * * *", "", OVERLAP_DAYS, FIXED_OVERLAP_ONCE),
        row(
            "30 1 * * *",
            "{ overlap: once }",
            OVERLAP_DAYS,
            FIXED_OVERLAP_ONCE,
        ),
        row(
            "30 1 * * *",
            "{ overlap: every }",
            OVERLAP_DAYS,
            FIXED_OVERLAP_EVERY,
        ),
        // Unix wildcard: both passes by default.
        row("30 * * * *", "", OVERLAP_HOURS, HOURLY_OVERLAP_EVERY),
        row(
            "30 * * * *",
            "{ overlap: every }",
            OVERLAP_HOURS,
            HOURLY_OVERLAP_EVERY,
        ),
        row(
            "30 * * * *",
            "{ overlap: once }",
            OVERLAP_HOURS,
            HOURLY_OVERLAP_ONCE,
        ),
        // EventBridge: once by default.
        row("cron(30 1 * * ? *)", "", OVERLAP_DAYS, FIXED_OVERLAP_ONCE),
        row(
            "cron(30 1 * * ? *)",
            "{ overlap: once }",
            OVERLAP_DAYS,
            FIXED_OVERLAP_ONCE,
        ),
        row(
            "cron(30 1 * * ? *)",
            "{ overlap: every }",
            OVERLAP_DAYS,
            FIXED_OVERLAP_EVERY,
        ),
        // Both set at once.
        row(
            "30 2 * * *",
            "{ gap: skip, overlap: every }",
            GAP_DAYS,
            FIXED_GAP_SKIP,
        ),
        row(
            "30 1 * * *",
            "{ gap: skip, overlap: every }",
            OVERLAP_DAYS,
            FIXED_OVERLAP_EVERY,
        ),
    ];
    for r in rows {
        let dst = if r.dst.is_empty() {
            String::new()
        } else {
            format!("\ndst: {}", r.dst)
        };
        let w = wf(&format!(
            "schedule: \"{}\"\ntimezone: America/New_York{dst}",
            r.schedule
        ));
        let (fires, _) = drive(&w, t(r.from), t(r.until));
        assert_eq!(fires, ts(r.want), "{} dst: {:?}", r.schedule, r.dst);
    }
}

#[test]
fn catch_up_across_the_dst_gap_follows_the_gap_policy() {
    // Down from Friday to Tuesday across the spring-forward night, catching up every
    // 02:30 in New York.
    let rows: [(&str, &[&str]); 2] = [
        (
            "{ gap: run_after }",
            &[
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z",
            ],
        ),
        (
            "{ gap: skip }",
            &["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"],
        ),
    ];
    for (dst, want) in rows {
        let w = wf(&format!(
            "schedule: \"30 2 * * *\"\ntimezone: America/New_York\ndst: {dst}\ncatchup: all"
        ));
        let c = catch_up(
            &w,
            Some(t("2026-03-06T07:30:00Z")),
            t("2026-03-09T12:00:00Z"),
        )
        .unwrap();
        let got: Vec<DateTime<Utc>> = c.runs.iter().map(|d| d.at).collect();
        assert_eq!(got, ts(want), "dst: {dst}");
        assert_eq!((c.count, c.exact), (want.len() as u64, true), "dst: {dst}");
        assert_eq!(c.next, Some(t("2026-03-10T06:30:00Z")));
    }
}

#[test]
fn a_rate_is_anchored_at_the_schedule_record_across_restarts() {
    let mut w = wf("schedule: \"rate(15 minutes)\"");
    let record = t("2026-03-02T06:07:00Z");
    anchor(w.schedule.as_mut().unwrap(), Some(record));
    // Restarted at 06:50: the grid 06:07 + k × 15 min goes on at 06:52, not 07:05.
    let now = t("2026-03-02T06:50:00Z");
    assert_eq!(
        timers(&w, Some(record), now).next,
        Some(t("2026-03-02T06:52:00Z"))
    );
    // With start_date:, the grid is start_date's, whatever the record says.
    let mut w = wf("schedule: \"rate(15 minutes)\"\nstart_date: 2026-03-02T06:00:00Z");
    anchor(w.schedule.as_mut().unwrap(), Some(record));
    assert_eq!(
        timers(&w, Some(record), now).next,
        Some(t("2026-03-02T07:00:00Z"))
    );
}

#[test]
fn the_loop_wakes_at_the_earliest_timer_of_any_workflow() {
    let a = Timers {
        next: Some(t("2026-03-02T06:00:00Z")),
        deadline_at: Some(t("2026-03-02T14:00:00Z")),
    };
    let b = Timers {
        next: Some(t("2026-03-02T07:00:00Z")),
        deadline_at: Some(t("2026-03-02T05:00:00Z")),
    };
    assert_eq!(wake([a, b]), Some(t("2026-03-02T05:00:00Z")));
    assert_eq!(wake([a]), Some(t("2026-03-02T06:00:00Z")));
    assert_eq!(wake([Timers::default()]), None);
    assert_eq!(wake([]), None);
}

#[test]
fn logical_dates_are_local_to_the_schedule() {
    let w = wf("schedule: \"0 22 * * *\"\ntimezone: America/New_York");
    // 22:00 EST on 03-01 is 03:00 UTC on 03-02.
    assert_eq!(
        logical_date(w.schedule.as_ref(), t("2026-03-02T03:00:00Z")),
        "2026-03-01"
    );
    assert_eq!(logical_date(None, t("2026-03-02T03:00:00Z")), "2026-03-02");
}

#[test]
fn a_queued_run_dropped_at_a_graceful_stop_says_so() {
    assert_eq!(
        stopped_before_start(&due(
            "2026-03-02T06:00:00Z",
            "schedule 2026-03-02T06:00:00Z"
        )),
        "due at 2026-03-02T06:00:00Z, queued, and the daemon stopped before it could start"
    );
}

#[test]
fn a_fire_time_the_record_holds_never_fires_again() {
    let w = wf("schedule: \"0 6 * * *\"");
    let record = Some(t("2026-03-02T06:00:00Z"));
    // Restarted a second before it by the clock (stepped back by NTP): tomorrow's is next.
    assert_eq!(
        timers(&w, record, t("2026-03-02T05:59:59Z")).next,
        Some(t("2026-03-03T06:00:00Z"))
    );
    // Without a record, today's is next.
    assert_eq!(
        timers(&w, None, t("2026-03-02T05:59:59Z")).next,
        Some(t("2026-03-02T06:00:00Z"))
    );
}
