//! `kind: files_present` — checks that a directory holds the files a run needs: at least
//! `min_count` files matching `pattern` (`*` and `?`), each at least `min_bytes` long.
//! With `short_circuit: true`, too few files end the branch with "nothing to do" (a
//! sensor's check, without its waiting); otherwise the task fails.

use orchestrator_plugin::{Ending, Plugin};
use serde_json::json;

fn main() {
    Plugin::new(
        "files_present",
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "description": "The directory; relative to the workflow file's directory."},
                "pattern": {"type": "string", "default": "*", "description": "File names to count: `*` any run of characters, `?` one."},
                "min_count": {"type": "integer", "minimum": 0, "default": 1, "description": "Fewest matching files."},
                "min_bytes": {"type": "integer", "minimum": 0, "default": 0, "description": "Smallest size a matching file may have."}
            }
        }),
    )
    .description("Checks that a directory holds at least `min_count` files matching `pattern`.")
    .output("count", "how many files match")
    .output("bytes", "their total size")
    .output("files", "their names, sorted")
    .short_circuit()
    .serve(|run| {
        let f = &run.fields;
        let dir = run.workflow_dir().join(f["path"].as_str().unwrap_or("."));
        let pattern = f["pattern"].as_str().unwrap_or("*");
        let min_count = f["min_count"].as_u64().unwrap_or(1);
        let min_bytes = f["min_bytes"].as_u64().unwrap_or(0);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && run.may_short_circuit() => {
                return Ending::ShortCircuit(format!("{} does not exist yet", dir.display()));
            }
            Err(e) => return Ending::Failed(format!("cannot read {}: {e}", dir.display())),
        };
        let mut files = Vec::new();
        let mut bytes = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && glob(pattern, &name) {
                if meta.len() < min_bytes {
                    return Ending::Failed(format!(
                        "{name} is {} bytes, under min_bytes {min_bytes}",
                        meta.len()
                    ));
                }
                bytes += meta.len();
                files.push(name);
            }
        }
        files.sort();
        run.output("count", json!(files.len()));
        run.output("bytes", json!(bytes));
        run.output("files", json!(files));
        if (files.len() as u64) < min_count {
            let why = format!(
                "{} has {} files matching `{pattern}`, fewer than {min_count}",
                dir.display(),
                files.len()
            );
            return if run.may_short_circuit() {
                Ending::ShortCircuit(why)
            } else {
                Ending::Failed(why)
            };
        }
        Ending::Succeeded
    });
}

/// `*` and `?` over a file name.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs() {
        assert!(super::glob("*.csv", "a.csv"));
        assert!(super::glob("bars_??.csv", "bars_01.csv"));
        assert!(!super::glob("*.csv", "a.json"));
        assert!(super::glob("*", ""));
    }
}
