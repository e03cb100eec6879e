//! File-arrival triggers (`on: files:`): the local equivalent of S3 event notifications
//! and Glue's EVENT trigger. The daemon watches `path` (recursively) and starts one run
//! for the new or changed files whose name matches `pattern`, once the directory has been
//! quiet for `debounce` or `max_batch` files are waiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct FileTrigger {
    /// The directory watched (absolute).
    pub path: PathBuf,
    /// A glob on file names: `*` any run of characters, `?` one character.
    pub pattern: String,
    pub debounce: Duration,
    pub max_batch: usize,
    /// Poll at this interval instead of kernel notifications (network file systems).
    pub poll: Option<Duration>,
}

impl FileTrigger {
    /// The shortest `poll:` accepted.
    pub const MIN_POLL: Duration = Duration::from_millis(100);
    /// The shortest `debounce:` accepted.
    pub const MIN_DEBOUNCE: Duration = Duration::from_millis(100);
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_BATCH: usize = 100;

    /// Whether `file`'s name matches the pattern (files starting with `.` never do: they
    /// are temporaries of writers that rename into place).
    pub fn matches(&self, file: &Path) -> bool {
        file.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.') && glob(&self.pattern, n))
    }
}

/// `*` and `?` globbing, iterative with backtracking on the last `*`.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*.csv", "NVDA.csv", true),
            ("*.csv", "NVDA.csv.tmp", false),
            ("*", "anything", true),
            ("bars_??.csv", "bars_01.csv", true),
            ("bars_??.csv", "bars_1.csv", false),
            ("*_*.json", "a_b_c.json", true),
            ("a*b*c", "abxbyc", true),
            ("a*b*c", "abxbyd", false),
        ] {
            assert_eq!(glob(p, n), want, "{p} {n}");
        }
    }
}

/// `path` made absolute and without `.` and `..` (lexically: symbolic links are not
/// followed, and the directory need not exist yet). Watched paths and file records use
/// it, so that `wf/../inbox/x.csv` and `inbox/x.csv` are one file.
pub fn normalize(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = std::path::PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod normalize_tests {
    use super::normalize;
    use std::path::Path;

    #[test]
    fn dots_go_lexically() {
        assert_eq!(
            normalize(Path::new("/a/wf/../inbox/./x.csv")),
            Path::new("/a/inbox/x.csv")
        );
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
        assert!(normalize(Path::new("rel/../y")).is_absolute());
    }
}
