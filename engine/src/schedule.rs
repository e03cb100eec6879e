//! Schedules: when a workflow starts by itself, and the explicit daylight-saving policy.
//!
//! Syntaxes (one expression, or several whose fire times are merged):
//!
//! - Unix cron, 5 fields `min hour dom month dow` (`0 22 * * 1-5`): names, ranges,
//!   steps, lists, `7` = Sunday. Day fields follow cronie: when both day-of-month and
//!   day-of-week are restricted a day matches if *either* matches; a field beginning with
//!   `*` (such as `*/2`) counts as unrestricted (then both must match).
//! - 6 fields with seconds first (`*/10 * * * * *`), otherwise the same.
//! - EventBridge `cron(min hour dom month dow year)`: one of the day fields is `?`;
//!   day-of-week **1 = SUN … 7 = SAT**; `L` (last day of the month; in day-of-week, `nL`
//!   is the last such weekday of the month), `nW` and `LW` (nearest weekday), `n#k` (k-th
//!   such weekday of the month).
//! - EventBridge `rate(15 minutes)` / `rate(1 hour)` / `rate(1 day)` (and, beyond
//!   EventBridge, `rate(30 seconds)`): every interval
//!   after the schedule's start.
//!
//! **Daylight saving.** Local times are in the schedule's time zone (IANA name, default
//! UTC). Unix and 6-field expressions follow cronie: a *fixed-time* job (minute and hour
//! fields not starting with `*`) whose local time does not exist (spring forward) fires
//! at the first instant after the gap, and one whose local time happens twice (fall back)
//! fires once, at the first occurrence; a *wildcard* job fires at every real instant that
//! matches (nothing in the gap, both passes of a repeated hour). EventBridge expressions
//! follow AWS: a nonexistent local time is skipped that day, an ambiguous one fires once.
//! [`Dst`] overrides either choice for a workflow.
//!
//! Written here rather than taken from the `cron` crate, which has no EventBridge
//! day-of-week numbering, `W`, `#`, the cronie day rule, or a DST policy.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// What happens to a local fire time that does not exist (the spring-forward gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Fire at the first instant after the gap.
    RunAfter,
    /// Do not fire that day.
    Skip,
}

/// What happens to a local fire time that happens twice (the fall-back overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Fire at the first occurrence only.
    Once,
    /// Fire at both.
    Every,
}

/// A workflow's override of the default DST policy (`dst: {gap: ..., overlap: ...}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dst {
    pub gap: Option<Gap>,
    pub overlap: Option<Overlap>,
}

impl FromStr for Gap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "run_after" => Ok(Gap::RunAfter),
            "skip" => Ok(Gap::Skip),
            _ => Err(format!(
                "`{s}` is not a gap policy; use `run_after` or `skip`"
            )),
        }
    }
}

impl FromStr for Overlap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "once" => Ok(Overlap::Once),
            "every" => Ok(Overlap::Every),
            _ => Err(format!(
                "`{s}` is not an overlap policy; use `once` or `every`"
            )),
        }
    }
}

/// What the daemon does with fire times missed while it was down (`catchup:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Start nothing for them.
    None,
    /// Start one run, for the latest.
    #[default]
    Latest,
    /// Start one run for each, the latest `max_catchup` of them, oldest first.
    All,
}

/// What the daemon does when a run is due while the workflow's previous run is still
/// going (`concurrency:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// Record the due run as `skipped`, with the reason.
    #[default]
    Forbid,
    /// Start it when the previous run ends.
    Queue,
    /// Cancel the previous run, then start it.
    Replace,
}

/// How the daemon runs a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonPolicy {
    pub catchup: Catchup,
    /// At most this many catch-up runs (`catchup: all`).
    pub max_catchup: usize,
    pub concurrency: Concurrency,
    /// Resume (as `rerun` would) a run left `interrupted` by a crash, once, at start-up.
    pub resume_interrupted: bool,
    /// Fire times before this are never run; with no fire handled yet, catch-up starts
    /// here (`start_date:`). Without it, a new schedule starts from now.
    pub start: Option<DateTime<Utc>>,
    /// `deadline:`: a time of day (in the schedule's zone) by which a day with a fire
    /// time must have a successful run, or `sla_miss` is notified.
    pub deadline: Option<chrono::NaiveTime>,
}

impl Default for DaemonPolicy {
    fn default() -> Self {
        DaemonPolicy {
            catchup: Catchup::Latest,
            max_catchup: 10,
            concurrency: Concurrency::Forbid,
            resume_interrupted: true,
            start: None,
            deadline: None,
        }
    }
}

/// The first point of the grid `start + k * every` (k >= 0) strictly after `after`:
/// computed, not counted, so it is exact after any downtime.
fn rate_on_grid(
    start: DateTime<Utc>,
    every: Duration,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if after < start {
        return Some(start);
    }
    let step = i128::try_from(every.as_nanos()).ok().filter(|s| *s > 0)?;
    let since = i128::from((after - start).num_nanoseconds()?);
    let k = since / step + 1;
    let offset = i64::try_from(k.checked_mul(step)?).ok()?;
    start.checked_add_signed(chrono::Duration::nanoseconds(offset))
}

/// `start_date:`: an RFC 3339 instant, or a date (its midnight UTC).
pub fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("`{s}` is not a start date; write 2026-01-31 or 2026-01-31T22:00:00Z")
        })
}

/// What [`Schedule::missed`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Missed {
    /// The latest fire times, oldest first.
    pub recent: Vec<DateTime<Utc>>,
    /// Fire times counted; all of them when `exact`, else at least this many.
    pub count: u64,
    pub exact: bool,
}

/// A workflow's schedule: expressions, a time zone and a DST policy.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub exprs: Vec<Expr>,
    pub tz: Tz,
    pub dst: Dst,
    /// `start_date:`: no fire time before it, for the live schedule, catch-up and `next`
    /// alike; a `rate()` is a grid anchored at it (the first fire is the start itself).
    pub start: Option<DateTime<Utc>>,
}

/// One schedule expression, as written and parsed.
#[derive(Debug, Clone)]
pub struct Expr {
    pub text: String,
    kind: ExprKind,
}

#[derive(Debug, Clone)]
enum ExprKind {
    Cron(Box<Cron>),
    Rate(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Unix,
    EventBridge,
}

#[derive(Debug, Clone)]
struct Cron {
    flavor: Flavor,
    seconds: Vec<u32>,
    minutes: Vec<u32>,
    hours: Vec<u32>,
    months: [bool; 13],
    /// `None`: any year.
    years: Option<BTreeSet<i32>>,
    dom: DaySet,
    dow: WeekSet,
    /// The field began with `*` (cronie) or is `?` (EventBridge).
    dom_star: bool,
    dow_star: bool,
    /// Minute or hour field starts with `*`: a wildcard job in cronie's DST rule.
    wildcard: bool,
}

#[derive(Debug, Clone, Default)]
struct DaySet {
    days: [bool; 32],
    last: bool,
    last_weekday: bool,
    nearest_weekday: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
struct WeekSet {
    /// 0 = Sunday.
    days: [bool; 7],
    /// `nL`: the last such weekday of the month.
    last_of_month: Vec<u32>,
    /// `n#k`: the k-th such weekday of the month.
    nth: Vec<(u32, u32)>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Latest year a schedule is searched to (EventBridge's own limit).
const LAST_YEAR: i32 = 2199;

impl Expr {
    /// Parses one expression; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let t = text.trim();
        let kind = if let Some(inner) = strip_call(t, "cron") {
            ExprKind::Cron(Box::new(parse_eventbridge(inner)?))
        } else if let Some(inner) = strip_call(t, "rate") {
            ExprKind::Rate(parse_rate(inner)?)
        } else {
            let fields: Vec<&str> = t.split_whitespace().collect();
            match fields.len() {
                5 => ExprKind::Cron(Box::new(parse_unix(&["0"], &fields)?)),
                6 => ExprKind::Cron(Box::new(parse_unix(&fields[..1], &fields[1..])?)),
                n => {
                    return Err(format!(
                        "`{t}` has {n} fields; write 5 (`min hour day-of-month month day-of-week`, e.g. `0 22 * * 1-5`), 6 (seconds first), `cron(min hour dom month dow year)` or `rate(15 minutes)`"
                    ))
                }
            }
        };
        Ok(Expr {
            text: t.to_string(),
            kind,
        })
    }

    /// The first fire time strictly after `after`. For `rate()`, `after` is the start:
    /// the first fire is one interval later.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz, dst: Dst) -> Option<DateTime<Utc>> {
        match &self.kind {
            ExprKind::Rate(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| after.checked_add_signed(d)),
            ExprKind::Cron(c) => c.next_after(after, tz, dst),
        }
    }
}

impl Schedule {
    /// The first fire time strictly after `after`, over every expression.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.exprs
            .iter()
            .filter_map(|e| match (self.start, &e.kind) {
                (None, _) => e.next_after(after, self.tz, self.dst),
                (Some(start), ExprKind::Rate(d)) => rate_on_grid(start, *d, after),
                (Some(start), _) => {
                    let from = after.max(start - chrono::Duration::nanoseconds(1));
                    e.next_after(from, self.tz, self.dst)
                }
            })
            .min()
    }

    /// The fire times in `(since, now]`: the last `keep` of them, oldest first, and how
    /// many there were. Found from `now` backwards in growing windows, so a per-second
    /// schedule after a year away costs a few windows, not 31 million steps; the count is
    /// exact only when the window reached `since` (`Missed::exact`).
    pub fn missed(&self, since: DateTime<Utc>, now: DateTime<Utc>, keep: usize) -> Missed {
        let keep = keep.max(1);
        let mut window = chrono::Duration::minutes(1);
        loop {
            let from = now
                .checked_sub_signed(window)
                .map_or(since, |f| f.max(since));
            let mut recent: std::collections::VecDeque<DateTime<Utc>> = Default::default();
            let mut count = 0u64;
            let mut t = from;
            while let Some(n) = self.next_after(t) {
                if n > now {
                    break;
                }
                count += 1;
                recent.push_back(n);
                if recent.len() > keep {
                    recent.pop_front();
                }
                t = n;
            }
            let exact = from == since;
            if exact || recent.len() >= keep {
                return Missed {
                    recent: recent.into_iter().collect(),
                    count,
                    exact,
                };
            }
            window = window.checked_mul(4).unwrap_or(chrono::Duration::MAX);
        }
    }

    /// The next `n` fire times after `after` (exclusive).
    /// The first instant after `after` that is `time` of day in the schedule's zone (a
    /// time that does not exist that day, in a DST gap, moves to the next day).
    pub fn next_time_of_day(
        &self,
        time: chrono::NaiveTime,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut day = after.with_timezone(&self.tz).date_naive();
        for _ in 0..4 {
            if let Some(t) = self.tz.from_local_datetime(&day.and_time(time)).earliest() {
                let t = t.with_timezone(&Utc);
                if t > after {
                    return Some(t);
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// Whether it fires on the local day of `until` before `until`.
    pub fn fired_that_day_before(&self, until: DateTime<Utc>) -> bool {
        let day = until.with_timezone(&self.tz).date_naive();
        let Some(start) = day
            .and_hms_opt(0, 0, 0)
            .and_then(|m| self.tz.from_local_datetime(&m).earliest())
        else {
            return false;
        };
        let before = start.with_timezone(&Utc) - chrono::Duration::seconds(1);
        self.next_after(before).is_some_and(|t| t < until)
    }

    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = t;
                }
                None => break,
            }
        }
        out
    }
}

/// Parses an IANA time zone name, suggesting the closest one on a typo.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name.trim()).map_err(|_| {
        let hint = crate::suggest::closest(name, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        format!("`{name}` is not an IANA time zone name (like `America/New_York` or `UTC`){hint}")
    })
}

fn strip_call<'a>(t: &'a str, name: &str) -> Option<&'a str> {
    t.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`rate({inner})` is not a rate; write `rate(N unit)` with a whole N ≥ 1 and a unit of second(s), minute(s), hour(s) or day(s), e.g. `rate(15 minutes)`"
        )
    };
    let mut parts = inner.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    let secs = match unit {
        // Not in EventBridge (a minute at least); here for near-real-time pipelines.
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n.checked_mul(secs).ok_or_else(bad)?))
}

/// A field's values: `*`, `a`, `a-b`, `*/s`, `a/s`, `a-b/s`, and lists of them.
fn parse_values(
    field: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Vec<u32>, String> {
    let mut set = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{item}` in the {what} field: the step after `/` must be a whole number ≥ 1"))?,
            ),
            None => (item, 1),
        };
        let value = |s: &str| -> Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
                return Ok(i as u32 + name_base);
            }
            s.parse::<u32>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    format!(
                        "`{s}` in the {what} field is not a value from {min} to {max}{}",
                        names_hint(names)
                    )
                })
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!(
                    "`{range}` in the {what} field runs backwards; write the smaller value first"
                ));
            }
            (a, b)
        } else {
            let a = value(range)?;
            (a, if item.contains('/') { max } else { a })
        };
        set.extend((lo..=hi).step_by(step as usize));
    }
    Ok(set.into_iter().collect())
}

fn names_hint(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (or {}–{})", names[0], names[names.len() - 1])
    }
}

fn months_of(field: &str) -> Result<[bool; 13], String> {
    let mut m = [false; 13];
    for v in parse_values(field, "month", 1, 12, &MONTHS, 1)? {
        m[v as usize] = true;
    }
    Ok(m)
}

/// 5 or 6 Unix fields (`secs` holds the seconds field, `["0"]` for 5 fields).
fn parse_unix(secs: &[&str], f: &[&str]) -> Result<Cron, String> {
    let mut dom = DaySet::default();
    for d in parse_values(f[2], "day-of-month", 1, 31, &[], 0)? {
        dom.days[d as usize] = true;
    }
    let mut dow = WeekSet::default();
    for d in parse_values(f[4], "day-of-week", 0, 7, &DAYS, 0)? {
        dow.days[(d % 7) as usize] = true;
    }
    Ok(Cron {
        flavor: Flavor::Unix,
        seconds: parse_values(secs[0], "seconds", 0, 59, &[], 0)?,
        minutes: parse_values(f[0], "minute", 0, 59, &[], 0)?,
        hours: parse_values(f[1], "hour", 0, 23, &[], 0)?,
        months: months_of(f[3])?,
        years: None,
        dom,
        dow,
        dom_star: f[2].starts_with('*'),
        dow_star: f[4].starts_with('*'),
        wildcard: f[0].starts_with('*') || f[1].starts_with('*'),
    })
}

fn parse_eventbridge(inner: &str) -> Result<Cron, String> {
    let f: Vec<&str> = inner.split_whitespace().collect();
    if f.len() != 6 {
        return Err(format!(
            "`cron({inner})` has {} fields; EventBridge cron takes 6: `cron(minutes hours day-of-month month day-of-week year)`, e.g. `cron(0 22 ? * MON-FRI *)`",
            f.len()
        ));
    }
    let (dom_q, dow_q) = (f[2] == "?", f[4] == "?");
    if dom_q == dow_q {
        return Err(format!(
            "`cron({inner})`: exactly one of day-of-month and day-of-week must be `?` (e.g. `cron(0 22 ? * MON-FRI *)`, `cron(0 9 1 * ? *)`)"
        ));
    }
    let mut dom = DaySet::default();
    if !dom_q {
        for item in f[2].split(',') {
            if item == "L" {
                dom.last = true;
            } else if item == "LW" {
                dom.last_weekday = true;
            } else if let Some(n) = item.strip_suffix('W') {
                let n = n
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=31).contains(n))
                    .ok_or_else(|| format!("`{item}` in the day-of-month field: write `nW` with n from 1 to 31 (the weekday nearest day n)"))?;
                dom.nearest_weekday.push(n);
            } else {
                for d in parse_values(item, "day-of-month", 1, 31, &[], 0)? {
                    dom.days[d as usize] = true;
                }
            }
        }
    }
    let mut dow = WeekSet::default();
    if !dow_q {
        // 1 = SUN ... 7 = SAT; stored 0-based.
        let day = |s: &str| -> Result<u32, String> {
            parse_values(s, "day-of-week", 1, 7, &DAYS, 1).and_then(|v| match v.as_slice() {
                [d] => Ok(*d - 1),
                _ => Err(format!("`{s}` in the day-of-week field must be one day")),
            })
        };
        for item in f[4].split(',') {
            if item == "L" {
                dow.days[6] = true; // the last day of the week: Saturday
            } else if let Some(d) = item.strip_suffix('L') {
                dow.last_of_month.push(day(d)?);
            } else if let Some((d, k)) = item.split_once('#') {
                let k = k
                    .parse::<u32>()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .ok_or_else(|| format!("`{item}` in the day-of-week field: after `#` write which occurrence, 1 to 5"))?;
                dow.nth.push((day(d)?, k));
            } else {
                for d in parse_values(item, "day-of-week (1 = SUN … 7 = SAT)", 1, 7, &DAYS, 1)? {
                    dow.days[(d - 1) as usize] = true;
                }
            }
        }
    }
    let years = if f[5] == "*" {
        None
    } else {
        let y = parse_values(f[5], "year", 1970, LAST_YEAR as u32, &[], 0)?;
        Some(y.into_iter().map(|y| y as i32).collect())
    };
    Ok(Cron {
        flavor: Flavor::EventBridge,
        seconds: vec![0],
        minutes: parse_values(f[0], "minute", 0, 59, &[], 0)?,
        hours: parse_values(f[1], "hour", 0, 23, &[], 0)?,
        months: months_of(f[3])?,
        years,
        dom,
        dow,
        dom_star: dom_q,
        dow_star: dow_q,
        wildcard: f[0].starts_with('*') || f[1].starts_with('*'),
    })
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.and_then(|n| n.pred_opt()).map_or(28, |d| d.day())
}

/// The weekday nearest day `n` of the month, not leaving the month (Quartz/AWS `nW`).
fn nearest_weekday(y: i32, m: u32, n: u32) -> Option<u32> {
    let last = days_in_month(y, m);
    let n = n.min(last);
    let d = NaiveDate::from_ymd_opt(y, m, n)?;
    Some(match d.weekday().num_days_from_sunday() {
        6 if n == 1 => 3,        // Saturday the 1st: Monday the 3rd
        6 => n - 1,              // Saturday: Friday
        0 if n == last => n - 2, // Sunday the last: Friday
        0 => n + 1,              // Sunday: Monday
        _ => n,
    })
}

/// The UTC offset in seconds at local midnight of `d` (its earliest reading).
fn offset_at(tz: Tz, d: NaiveDate) -> Option<i32> {
    use chrono::Offset as _;
    let midnight = d.and_hms_opt(0, 0, 0)?;
    let t = tz.from_local_datetime(&midnight).earliest().or_else(|| {
        tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
            .earliest()
    })?;
    Some(t.offset().fix().local_minus_utc())
}

impl Cron {
    fn day_matches(&self, d: NaiveDate) -> bool {
        if !self.months[d.month() as usize] {
            return false;
        }
        if let Some(years) = &self.years {
            if !years.contains(&d.year()) {
                return false;
            }
        }
        let (y, m, day) = (d.year(), d.month(), d.day());
        let last = days_in_month(y, m);
        let dom = self.dom.days[day as usize]
            || (self.dom.last && day == last)
            || (self.dom.last_weekday && nearest_weekday(y, m, last) == Some(day))
            || self
                .dom
                .nearest_weekday
                .iter()
                .any(|n| nearest_weekday(y, m, *n) == Some(day));
        let wd = d.weekday().num_days_from_sunday();
        let dow = self.dow.days[wd as usize]
            || self
                .dow
                .last_of_month
                .iter()
                .any(|w| *w == wd && day + 7 > last)
            || self
                .dow
                .nth
                .iter()
                .any(|(w, k)| *w == wd && (day - 1) / 7 + 1 == *k);
        match self.flavor {
            Flavor::EventBridge if self.dom_star => dow,
            Flavor::EventBridge => dom,
            // cronie: a star in either day field means both must match.
            Flavor::Unix if self.dom_star || self.dow_star => dom && dow,
            Flavor::Unix => dom || dow,
        }
    }

    fn policy(&self, dst: Dst) -> (Gap, Overlap) {
        let (gap, overlap) = match (self.flavor, self.wildcard) {
            (Flavor::EventBridge, _) => (Gap::Skip, Overlap::Once),
            (Flavor::Unix, false) => (Gap::RunAfter, Overlap::Once),
            (Flavor::Unix, true) => (Gap::Skip, Overlap::Every),
        };
        (dst.gap.unwrap_or(gap), dst.overlap.unwrap_or(overlap))
    }

    /// The instants local time `t` stands for under the policy.
    fn resolve(tz: Tz, t: NaiveDateTime, gap: Gap, overlap: Overlap) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => vec![x.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                match overlap {
                    Overlap::Once => vec![a.min(b)],
                    Overlap::Every => vec![a, b],
                }
            }
            LocalResult::None => match gap {
                Gap::Skip => vec![],
                // The first local minute that exists again is the instant the gap ends.
                Gap::RunAfter => (1..=24 * 60)
                    .map(|m| t + chrono::Duration::minutes(m))
                    .find_map(|later| {
                        let later = later.with_second(0)?;
                        tz.from_local_datetime(&later).earliest()
                    })
                    .map(|x| vec![x.with_timezone(&Utc)])
                    .unwrap_or_default(),
            },
        }
    }

    fn next_after(&self, after: DateTime<Utc>, tz: Tz, dst: Dst) -> Option<DateTime<Utc>> {
        let (gap, overlap) = self.policy(dst);
        // Start a day early: a local date's fire times can land before its UTC midnight.
        let mut date = after.with_timezone(&tz).date_naive().pred_opt()?;
        while date.year() <= LAST_YEAR {
            if self.day_matches(date) {
                // On a day without a clock change, local order is UTC order: the first
                // fire after `after` ends the search. Otherwise look at the whole day.
                let steady = offset_at(tz, date) == date.succ_opt().and_then(|n| offset_at(tz, n));
                let mut first: Option<DateTime<Utc>> = None;
                'day: for &h in &self.hours {
                    for &m in &self.minutes {
                        for &s in &self.seconds {
                            let Some(t) = date.and_hms_opt(h, m, s) else {
                                continue;
                            };
                            for x in Cron::resolve(tz, t, gap, overlap) {
                                if x > after && first.is_none_or(|f| x < f) {
                                    first = Some(x);
                                    if steady {
                                        break 'day;
                                    }
                                }
                            }
                        }
                    }
                }
                if first.is_some() {
                    return first;
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

#[cfg(test)]
mod tests;
