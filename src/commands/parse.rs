//! Value parsers for arguments, each with an error that says what to write instead.

/// `--param KEY=VALUE`.
pub fn param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A logical date: exactly `YYYY-MM-DD` (see [`orchestrator_engine::runner::parse_logical_date`]).
pub fn date(s: &str) -> Result<String, String> {
    orchestrator_engine::runner::parse_logical_date(s)
}

pub fn backend(s: &str) -> Result<orchestrator_engine::workflow::Backend, String> {
    orchestrator_engine::workflow::Backend::parse(s)
}

/// An instant written in RFC 3339 (`2026-03-06T12:00:00Z`, `2026-03-06T07:00:00-05:00`).
pub fn instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("`{s}` is not an RFC 3339 instant like 2026-03-06T12:00:00Z"))
}

/// `--limit`: a whole number of at least 1, said in words when it is not.
pub fn limit(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("`--limit` must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`--limit` takes a whole number of runs, like 20, not `{s}`"
        )),
    }
}

/// `gc --older-than`: a duration in which `m` is refused, since it reads as months to
/// many (humantime takes it as minutes): `min` or `d` say which.
pub fn age(s: &str) -> Result<std::time::Duration, String> {
    let ambiguous = s
        .split(|c: char| c.is_ascii_digit() || c.is_whitespace())
        .any(|u| u == "m");
    if ambiguous {
        return Err(format!(
            "`{s}`: `m` could mean minutes or months; write `min` for minutes, or days (`30d`)"
        ));
    }
    duration(s)
}

pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 30s, 5m, 1h"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_must_be_written_in_full() {
        assert_eq!(super::date("2026-01-31").unwrap(), "2026-01-31");
        for bad in [
            "26-01-01",
            "2026-1-1",
            "+2026-01-01",
            "0000-01-01",
            "2026-02-30",
            "2026-01-31 ",
            "",
        ] {
            assert!(super::date(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(super::date("0000-01-01").unwrap_err().contains("1900"));
    }
}
