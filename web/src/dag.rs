//! A run's DAG as SVG, left to right (a task's column is its longest path from a root),
//! and its Gantt timeline of attempts. Drawn here so that a 1,000-task run page needs no
//! layout script in the browser.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

const COL: f64 = 200.0;
const ROW: f64 = 46.0;
const W: f64 = 160.0;
const H: f64 = 30.0;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `run` is the run JSON: `tasks` (in definition order) and `upstream`.
pub fn svg(run: &Value) -> String {
    let tasks: Vec<&Value> = run["tasks"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t["id"].as_str().map(|id| (id, i)))
        .collect();
    let upstream: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            run["upstream"][t["id"].as_str().unwrap_or_default()]
                .as_array()
                .map(|ups| {
                    ups.iter()
                        .filter_map(|u| u.as_str().and_then(|u| index.get(u).copied()))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    // Longest path from a root, by memoised depth-first search (no recursion: a
    // 1,000-task chain would be 1,000 frames deep).
    let n = tasks.len();
    let mut layer: Vec<Option<usize>> = vec![None; n];
    for start in 0..n {
        let mut stack = vec![(start, false)];
        while let Some((t, expanded)) = stack.pop() {
            if layer[t].is_some() {
                continue;
            }
            if expanded {
                let l = upstream[t]
                    .iter()
                    .map(|&u| layer[u].map_or(0, |x| x + 1))
                    .max()
                    .unwrap_or(0);
                layer[t] = Some(l);
            } else {
                stack.push((t, true));
                for &u in &upstream[t] {
                    if layer[u].is_none() {
                        stack.push((u, false));
                    }
                }
            }
        }
    }
    let mut rows_in: BTreeMap<usize, usize> = BTreeMap::new();
    let pos: Vec<(f64, f64)> = (0..n)
        .map(|t| {
            let l = layer[t].unwrap_or(0);
            let r = rows_in.entry(l).or_insert(0);
            let p = (10.0 + l as f64 * COL, 10.0 + *r as f64 * ROW);
            *r += 1;
            p
        })
        .collect();
    let width = 20.0 + (rows_in.len().max(1) as f64 - 1.0) * COL + W;
    let height = 20.0 + (*rows_in.values().max().unwrap_or(&1) as f64 - 1.0) * ROW + H;
    // A graph up to this wide shrinks to fit the page (the reference pipeline's seven
    // stages are ~1,500 px); a wider one keeps its size and scrolls in its box.
    let fit = if width <= 2400.0 { " fit" } else { "" };
    let mut out = format!(
        r#"<svg class="dag{fit}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="task graph">"#
    );
    for (t, ups) in upstream.iter().enumerate() {
        for &u in ups {
            let (x1, y1) = (pos[u].0 + W, pos[u].1 + H / 2.0);
            let (x2, y2) = (pos[t].0, pos[t].1 + H / 2.0);
            let mid = (x1 + x2) / 2.0;
            let _ = write!(
                out,
                r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>"#
            );
        }
    }
    for (t, task) in tasks.iter().enumerate() {
        let id = task["id"].as_str().unwrap_or_default();
        let status = task["status"].as_str().unwrap_or("pending");
        let (x, y) = pos[t];
        let why = task["error"].as_str().unwrap_or_default();
        let title = if why.is_empty() {
            format!("{id}: {status}")
        } else {
            format!("{id}: {status}: {why}")
        };
        let label: String = if id.chars().count() > 20 {
            id.chars().take(19).chain(['…']).collect()
        } else {
            id.to_string()
        };
        let _ = write!(
            out,
            r##"<a href="#task-{id_e}"><g class="node {status}" data-task="{id_e}" data-status="{status}"><title>{title}</title><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="5"/><text x="{tx}" y="{ty}">{label}</text></g></a>"##,
            id_e = esc(id),
            title = esc(&title),
            label = esc(&label),
            tx = x + 8.0,
            ty = y + 19.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// The attempts of every task on one time axis: one row per task, one bar per attempt
/// (failed attempts in red, so retries are visible).
pub fn gantt(run: &Value) -> String {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_millis())
    };
    let start = parse(&run["started_at"]).unwrap_or(0);
    let now = chrono::Utc::now().timestamp_millis();
    let end = parse(&run["ended_at"]).unwrap_or(now).max(start + 1);
    let tasks = run["tasks"].as_array().cloned().unwrap_or_default();
    let label_w = 170.0;
    let plot_w = 700.0;
    let row = 20.0;
    let height = 24.0 + tasks.len() as f64 * row;
    let scale = plot_w / (end - start) as f64;
    let mut out = format!(
        r#"<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="timeline of attempts">"#,
        w = label_w + plot_w + 10.0
    );
    let _ = write!(
        out,
        r#"<text class="axis" x="{label_w}" y="12">0 s</text><text class="axis" x="{x}" y="12" text-anchor="end">{secs:.2} s</text>"#,
        x = label_w + plot_w,
        secs = (end - start) as f64 / 1000.0
    );
    for (i, t) in tasks.iter().enumerate() {
        let y = 20.0 + i as f64 * row;
        let id = t["id"].as_str().unwrap_or_default();
        let _ = write!(
            out,
            r#"<text x="0" y="{ty}">{}</text>"#,
            esc(id),
            ty = y + 13.0
        );
        for a in t["history"].as_array().into_iter().flatten() {
            let Some(s) = parse(&a["started_at"]) else {
                continue;
            };
            let e = parse(&a["ended_at"]).unwrap_or(now);
            let x = label_w + (s - start).max(0) as f64 * scale;
            let w = ((e - s).max(0) as f64 * scale).max(2.0);
            let status = a["status"].as_str().unwrap_or("running");
            let _ = write!(
                out,
                r#"<rect class="bar {status}" x="{x:.1}" y="{y}" width="{w:.1}" height="{h}"><title>{} attempt {}: {status}, {:.3} s</title></rect>"#,
                esc(id),
                a["attempt"],
                (e - s) as f64 / 1000.0,
                h = row - 6.0,
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lays_out_by_longest_path_and_colours_by_status() {
        let run = json!({
            "tasks": [
                {"id": "a", "status": "succeeded"},
                {"id": "b", "status": "failed", "error": "boom <x>"},
                {"id": "c", "status": "skipped", "error": "upstream b failed"},
            ],
            "upstream": {"b": ["a"], "c": ["a", "b"]},
        });
        let s = svg(&run);
        assert!(s.contains(r#"data-task="c" data-status="skipped""#), "{s}");
        assert!(s.contains("c: skipped: upstream b failed"));
        assert!(s.contains("boom &lt;x&gt;"), "escaped: {s}");
        // c is in the third column (a -> b -> c), not the second.
        assert!(s.contains(r#"<rect x="410" y="10""#), "{s}");
        assert_eq!(s.matches("class=\"edge\"").count(), 3);
    }

    #[test]
    fn a_long_chain_does_not_recurse() {
        let n = 5000;
        let tasks: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("t{i}"), "status": "succeeded"}))
            .collect();
        let upstream: serde_json::Map<String, Value> = (1..n)
            .map(|i| (format!("t{i}"), json!([format!("t{}", i - 1)])))
            .collect();
        let s = svg(&json!({"tasks": tasks, "upstream": upstream}));
        assert_eq!(s.matches("<rect").count(), n);
    }
}
