//! "Did you mean ...?" suggestions.

/// The candidate closest to `input`, if it is close enough to be a plausible typo.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(input, c), c))
        .filter(|(d, c)| *d > 0 && *d <= (input.len().max(c.len()) / 3).max(1) + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_only_near_misses() {
        let c = ["after", "trigger", "retries"];
        assert_eq!(super::closest("aftr", c), Some("after"));
        assert_eq!(super::closest("retires", c), Some("retries"));
        assert_eq!(super::closest("zzzzzz", c), None);
        assert_eq!(super::closest("after", c), None);
    }
}
