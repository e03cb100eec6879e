//! Schedule math, table-driven. The DST examples were computed by independent
//! implementations (cronie's rules, and AWS EventBridge's documented behaviour).

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    let schedule = Schedule {
        exprs: vec![Expr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))],
        tz: parse_timezone(tz).unwrap(),
        dst: Dst::default(),
        start: None,
    };
    schedule
        .upcoming(utc(after), n)
        .into_iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

#[test]
fn the_issue_examples_across_daylight_saving() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // Spring forward, fixed time, cronie: the 02:30 that does not exist runs at 03:00.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-06T12:00:00Z",
            &[
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z",
            ],
        ),
        // The same in EventBridge: skipped that day.
        (
            "cron(30 2 * * ? *)",
            "America/New_York",
            "2026-03-06T12:00:00Z",
            &[
                "2026-03-07T07:30:00Z",
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z",
            ],
        ),
        // Fall back, fixed time: once, at the first 01:30.
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-30T12:00:00Z",
            &[
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
            ],
        ),
        // Fall back, wildcard: both passes of 02:00 in Berlin.
        (
            "0 * * * *",
            "Europe/Berlin",
            "2026-10-24T23:30:00Z",
            &[
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z",
            ],
        ),
        // The seed's rule.
        (
            "cron(0 22 ? * MON-FRI *)",
            "UTC",
            "2025-04-04T12:00:00Z",
            &[
                "2025-04-04T22:00:00Z",
                "2025-04-07T22:00:00Z",
                "2025-04-08T22:00:00Z",
            ],
        ),
    ];
    for (expr, tz, after, want) in cases {
        assert_eq!(fires(expr, tz, after, want.len()), *want, "{expr} in {tz}");
    }
}

#[test]
fn both_2026_transitions_in_both_zones_under_both_syntaxes() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // Berlin springs forward 2026-03-29 at 01:00Z (02:00 CET -> 03:00 CEST).
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        ),
        (
            "cron(30 2 * * ? *)",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            &["2026-03-30T00:30:00Z"],
        ),
        // A wildcard job has nothing to run in the gap.
        (
            "30 * * * *",
            "Europe/Berlin",
            "2026-03-29T00:00:00Z",
            &["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"],
        ),
        // Berlin falls back 2026-10-25 at 01:00Z: 02:30 happens twice.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "cron(30 2 * * ? *)",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        (
            "*/30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &[
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-26T01:00:00Z",
            ],
        ),
        // EventBridge wildcard in the New York overlap: once.
        (
            "cron(0 * * * ? *)",
            "America/New_York",
            "2026-11-01T04:30:00Z",
            &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"],
        ),
        // Unix wildcard in the New York overlap: both 01:00s.
        (
            "0 * * * *",
            "America/New_York",
            "2026-11-01T04:30:00Z",
            &[
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T07:00:00Z",
            ],
        ),
        // New York spring forward for a wildcard job: no 02:xx.
        (
            "15 * * * *",
            "America/New_York",
            "2026-03-08T06:00:00Z",
            &["2026-03-08T06:15:00Z", "2026-03-08T07:15:00Z"],
        ),
    ];
    for (expr, tz, after, want) in cases {
        assert_eq!(fires(expr, tz, after, want.len()), *want, "{expr} in {tz}");
    }
}

#[test]
fn syntax_table() {
    let after = "2026-01-01T00:00:00Z"; // a Thursday
    let cases: &[(&str, &[&str])] = &[
        // Names, ranges, lists, steps; 7 = Sunday.
        (
            "0 9 * * MON-FRI",
            &[
                "2026-01-01T09:00:00Z",
                "2026-01-02T09:00:00Z",
                "2026-01-05T09:00:00Z",
            ],
        ),
        (
            "0 9 * * 7",
            &["2026-01-04T09:00:00Z", "2026-01-11T09:00:00Z"],
        ),
        (
            "0 9 * * 0,6",
            &["2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z"],
        ),
        (
            "0 0 1 FEB,MAR *",
            &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
        ),
        (
            "10-20/5 0 1 1 *",
            &[
                "2026-01-01T00:10:00Z",
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:20:00Z",
            ],
        ),
        (
            "50/5 0 * * *",
            &[
                "2026-01-01T00:50:00Z",
                "2026-01-01T00:55:00Z",
                "2026-01-02T00:50:00Z",
            ],
        ),
        // cronie: both day fields restricted -> either matches (the 13th, or a Friday).
        (
            "0 0 13 * 5",
            &[
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
            ],
        ),
        // A field starting with `*` is unrestricted: both must match (odd days that are Fridays).
        (
            "0 0 */2 * 5",
            &[
                "2026-01-09T00:00:00Z",
                "2026-01-23T00:00:00Z",
                "2026-02-13T00:00:00Z",
            ],
        ),
        // Seconds first.
        (
            "*/20 * * * * *",
            &[
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z",
            ],
        ),
        // EventBridge: 1 = SUN ... 7 = SAT.
        (
            "cron(0 12 ? * 1 *)",
            &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"],
        ),
        (
            "cron(0 12 ? * 2-6 *)",
            &[
                "2026-01-01T12:00:00Z",
                "2026-01-02T12:00:00Z",
                "2026-01-05T12:00:00Z",
            ],
        ),
        // L: last day of the month; 6L: last Friday; 2#1: first Monday.
        (
            "cron(0 0 L * ? *)",
            &["2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"],
        ),
        (
            "cron(0 0 ? * 6L *)",
            &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"],
        ),
        (
            "cron(0 0 ? * 2#1 *)",
            &["2026-01-05T00:00:00Z", "2026-02-02T00:00:00Z"],
        ),
        (
            "cron(0 0 ? * MON#2 *)",
            &["2026-01-12T00:00:00Z", "2026-02-09T00:00:00Z"],
        ),
        // W: the weekday nearest the 3rd (Sat 2026-01-03 -> Fri the 2nd; Tue 2026-02-03).
        (
            "cron(0 0 3W * ? *)",
            &["2026-01-02T00:00:00Z", "2026-02-03T00:00:00Z"],
        ),
        // 1W on a Saturday (2026-08-01) stays in the month: Monday the 3rd.
        (
            "cron(0 0 1W AUG ? *)",
            &["2026-08-03T00:00:00Z", "2027-08-02T00:00:00Z"],
        ),
        // LW: the last weekday of the month (Sat 2026-01-31 -> Fri the 30th).
        (
            "cron(0 0 LW * ? *)",
            &["2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"],
        ),
        // Years.
        (
            "cron(0 0 1 1 ? 2028-2029)",
            &["2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"],
        ),
        // rate(): one interval after the start.
        (
            "rate(15 minutes)",
            &["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"],
        ),
        ("rate(1 day)", &["2026-01-02T00:00:00Z"]),
        ("rate(2 hours)", &["2026-01-01T02:00:00Z"]),
        (
            "rate(30 seconds)",
            &["2026-01-01T00:00:30Z", "2026-01-01T00:01:00Z"],
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(fires(expr, "UTC", after, want.len()), *want, "{expr}");
    }
    // A schedule that ends fires no more.
    assert!(fires("cron(0 0 1 1 ? 2020)", "UTC", after, 1).is_empty());
}

#[test]
fn several_expressions_merge_in_order() {
    let schedule = Schedule {
        exprs: vec![
            Expr::parse("0 9 * * *").unwrap(),
            Expr::parse("cron(30 8 * * ? *)").unwrap(),
        ],
        tz: Tz::UTC,
        dst: Dst::default(),
        start: None,
    };
    let got: Vec<String> = schedule
        .upcoming(utc("2026-01-01T00:00:00Z"), 3)
        .into_iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        got,
        [
            "2026-01-01T08:30:00+00:00",
            "2026-01-01T09:00:00+00:00",
            "2026-01-02T08:30:00+00:00"
        ]
    );
}

#[test]
fn a_dst_override_wins() {
    let schedule = Schedule {
        exprs: vec![Expr::parse("30 2 * * *").unwrap()],
        tz: parse_timezone("America/New_York").unwrap(),
        dst: Dst {
            gap: Some(Gap::Skip),
            overlap: None,
        },
        start: None,
    };
    let got = schedule.upcoming(utc("2026-03-07T12:00:00Z"), 1);
    assert_eq!(got[0].to_rfc3339(), "2026-03-09T06:30:00+00:00");
    let schedule = Schedule {
        exprs: vec![Expr::parse("30 1 * * *").unwrap()],
        tz: parse_timezone("America/New_York").unwrap(),
        dst: Dst {
            gap: None,
            overlap: Some(Overlap::Every),
        },
        start: None,
    };
    let got: Vec<String> = schedule
        .upcoming(utc("2026-10-31T12:00:00Z"), 2)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        got,
        ["2026-11-01T05:30:00+00:00", "2026-11-01T06:30:00+00:00"]
    );
}

#[test]
fn bad_expressions_say_what_to_write() {
    let cases: &[(&str, &str)] = &[
        ("0 22 * *", "has 4 fields"),
        (
            "61 * * * *",
            "`61` in the minute field is not a value from 0 to 59",
        ),
        ("0 0 * * FUNDAY", "`FUNDAY` in the day-of-week field"),
        ("0 5-1 * * *", "runs backwards"),
        ("*/0 * * * *", "step after `/`"),
        (
            "cron(0 22 * * MON-FRI *)",
            "exactly one of day-of-month and day-of-week must be `?`",
        ),
        ("cron(0 22 ? * 0 *)", "not a value from 1 to 7"),
        ("cron(0 22 ? * MON-FRI)", "EventBridge cron takes 6"),
        ("cron(0 0 ? * 2#6 *)", "after `#`"),
        ("rate(0 minutes)", "whole N ≥ 1"),
        ("rate(5 weeks)", "minute(s), hour(s) or day(s)"),
    ];
    for (expr, want) in cases {
        let err = Expr::parse(expr).unwrap_err();
        assert!(err.contains(want), "{expr}: {err}");
    }
    let err = parse_timezone("America/New_Yrok").unwrap_err();
    assert!(err.contains("did you mean `America/New_York`?"), "{err}");
}

#[test]
fn start_date_bounds_every_fire_time_and_anchors_a_rate() {
    let mut schedule = Schedule {
        exprs: vec![Expr::parse("*/10 * * * * *").unwrap()],
        tz: Tz::UTC,
        dst: Dst::default(),
        start: Some(utc("2027-06-01T00:00:00Z")),
    };
    // Today, a per-ten-seconds schedule that starts next June fires first next June.
    assert_eq!(
        schedule.next_after(utc("2026-12-04T16:00:00Z")),
        Some(utc("2027-06-01T00:00:00Z"))
    );
    assert_eq!(
        schedule.next_after(utc("2027-06-01T00:00:00Z")),
        Some(utc("2027-06-01T00:00:10Z"))
    );
    // A rate is a grid anchored at the start, whatever instant it is asked from: two
    // daemons (or one restarted) agree on it.
    schedule.exprs = vec![Expr::parse("rate(2 hours)").unwrap()];
    schedule.start = Some(utc("2026-01-01T15:00:00Z"));
    assert_eq!(
        schedule.next_after(utc("2026-12-04T16:17:01Z")),
        Some(utc("2026-12-04T17:00:00Z"))
    );
    assert_eq!(
        schedule.next_after(utc("2026-12-04T17:00:00Z")),
        Some(utc("2026-12-04T19:00:00Z"))
    );
    assert_eq!(
        schedule.next_after(utc("2025-12-31T00:00:00Z")),
        Some(utc("2026-01-01T15:00:00Z"))
    );
}

#[test]
fn the_latest_missed_fire_is_computed_however_long_the_downtime() {
    let schedule = Schedule {
        exprs: vec![Expr::parse("* * * * * *").unwrap()],
        tz: Tz::UTC,
        dst: Dst::default(),
        start: None,
    };
    // Eleven months of a per-second schedule: about 29 million fire times missed.
    let since = utc("2026-01-12T00:00:00Z");
    let now = utc("2026-12-04T16:00:00.5Z");
    let latest = schedule.missed(since, now, 1);
    assert_eq!(latest.recent, [utc("2026-12-04T16:00:00Z")]);
    assert!(!latest.exact);
    let all = schedule.missed(since, now, 3);
    assert_eq!(
        all.recent,
        [
            utc("2026-12-04T15:59:58Z"),
            utc("2026-12-04T16:00:00Z") - chrono::Duration::seconds(1),
            utc("2026-12-04T16:00:00Z")
        ]
    );
    // A short downtime is counted exactly.
    let short = schedule.missed(utc("2026-12-04T15:59:50Z"), now, 1);
    assert_eq!((short.count, short.exact), (10, true));
    // Nothing missed.
    assert!(schedule.missed(now, now, 1).recent.is_empty());
}
