//! The US equity market's calendar, as far as a daily ingest needs it: which dates have
//! no session (weekends and the NYSE's regular holidays) and when a day's bar is final.
//!
//! Unscheduled closures (a national day of mourning, e.g. 2025-01-09) are not known here;
//! the ingest still recognises them when the service's data shows the day was skipped.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::America::New_York;

/// Why the market is closed on `date`, or `None` on a regular session day.
pub fn closed_because(date: NaiveDate) -> Option<&'static str> {
    match date.weekday() {
        Weekday::Sat => return Some("Saturday"),
        Weekday::Sun => return Some("Sunday"),
        _ => {}
    }
    holiday(date)
}

/// The NYSE's regular holidays, with its observance rules: a holiday on a Saturday is
/// observed the Friday before, on a Sunday the Monday after; New Year's Day on a
/// Saturday is not observed at all.
fn holiday(date: NaiveDate) -> Option<&'static str> {
    let y = date.year();
    let fixed = |m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d).map(observed);
    let nth = |m: u32, wd: Weekday, n: u8| NaiveDate::from_weekday_of_month_opt(y, m, wd, n);
    let last_monday_of_may = NaiveDate::from_ymd_opt(y, 5, 31).map(|d| {
        let back = d.weekday().num_days_from_monday();
        d - Duration::days(back.into())
    });
    let new_year = NaiveDate::from_ymd_opt(y, 1, 1)
        .filter(|d| d.weekday() != Weekday::Sat)
        .map(observed);
    let candidates = [
        (new_year, "New Year's Day"),
        (nth(1, Weekday::Mon, 3), "Martin Luther King Jr. Day"),
        (nth(2, Weekday::Mon, 3), "Washington's Birthday"),
        (easter(y).map(|e| e - Duration::days(2)), "Good Friday"),
        (last_monday_of_may, "Memorial Day"),
        (fixed(6, 19).filter(|_| y >= 2022), "Juneteenth"),
        (fixed(7, 4), "Independence Day"),
        (nth(9, Weekday::Mon, 1), "Labor Day"),
        (nth(11, Weekday::Thu, 4), "Thanksgiving Day"),
        (fixed(12, 25), "Christmas Day"),
    ];
    candidates
        .into_iter()
        .find(|(d, _)| *d == Some(date))
        .map(|(_, name)| name)
}

fn observed(d: NaiveDate) -> NaiveDate {
    match d.weekday() {
        Weekday::Sat => d - Duration::days(1),
        Weekday::Sun => d + Duration::days(1),
        _ => d,
    }
}

/// Easter Sunday (Gregorian; the anonymous "Meeus/Jones/Butcher" algorithm).
fn easter(y: i32) -> Option<NaiveDate> {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(y, month as u32, day as u32)
}

/// Whether the bar of `date` is final at `now`: the session closes at 16:00 US/Eastern,
/// and until then the service's newest bar is the day so far.
pub fn bar_is_final(date: NaiveDate, now: DateTime<Utc>) -> bool {
    let local = now.with_timezone(&New_York);
    let today = local.date_naive();
    date < today || (date == today && local.hour() >= 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn knows_the_nyse_holidays_of_the_sample_year_and_observance_rules() {
        // Every weekday the bundled sample (2025-05-12..2026-05-11) has no bar for.
        for (date, name) in [
            ("2025-05-26", "Memorial Day"),
            ("2025-06-19", "Juneteenth"),
            ("2025-07-04", "Independence Day"),
            ("2025-09-01", "Labor Day"),
            ("2025-11-27", "Thanksgiving Day"),
            ("2025-12-25", "Christmas Day"),
            ("2026-01-01", "New Year's Day"),
            ("2026-01-19", "Martin Luther King Jr. Day"),
            ("2026-02-16", "Washington's Birthday"),
            ("2026-04-03", "Good Friday"),
            ("2026-11-26", "Thanksgiving Day"),
            // Observed: July 4th 2026 is a Saturday, Christmas 2022 a Sunday.
            ("2026-07-03", "Independence Day"),
            ("2022-12-26", "Christmas Day"),
        ] {
            assert_eq!(closed_because(d(date)), Some(name), "{date}");
        }
        // New Year's Day 2022 was a Saturday: the Friday before was a trading day.
        assert_eq!(closed_because(d("2021-12-31")), None);
        assert_eq!(closed_because(d("2025-07-05")), Some("Saturday"));
        assert_eq!(closed_because(d("2025-07-07")), None);
        assert_eq!(closed_because(d("2026-11-25")), None);
    }

    #[test]
    fn a_bar_is_final_after_the_1600_eastern_close() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // 2026-11-24 15:59 EST is 20:59 UTC.
        assert!(!bar_is_final(d("2026-11-24"), at("2026-11-24T20:59:00Z")));
        assert!(bar_is_final(d("2026-11-24"), at("2026-11-24T21:00:00Z")));
        assert!(bar_is_final(d("2026-11-23"), at("2026-11-24T14:00:00Z")));
        // In summer (EDT) the close is 20:00 UTC.
        assert!(bar_is_final(d("2026-07-01"), at("2026-07-01T20:00:00Z")));
        assert!(!bar_is_final(d("2026-07-02"), at("2026-07-01T23:00:00Z")));
    }
}
