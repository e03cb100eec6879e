//! A run's DAG as SVG, left to right (a task's column is its longest path from a root),
//! and its Gantt timeline of attempts. Laid out here so that the browser needs no layout
//! script.
//!
//! A drawing of up to [`VIRTUAL_AT`] shapes is sent as one SVG. A bigger one (a
//! 1,000-task run: ~3,000 shapes, 650 KB as markup) is sent as an empty SVG of its full
//! size, in a box that scrolls, with its shapes as JSON beside it (templates and values:
//! 230 KB); `app.js` puts into the SVG only the shapes that intersect the visible part of
//! the box (plus a screen's margin), again as it scrolls. Without scripts the box links
//! to the whole SVG (`?drawing=dag|gantt`).

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

/// Above this many shapes a drawing is drawn by the browser, a screenful at a time.
pub const VIRTUAL_AT: usize = 600;

/// One shape of a drawing: its bounding box (user units) and its markup, as one of the
/// drawing's templates and the values of its `{0}`, `{1}`, ... placeholders (strings
/// already escaped, numbers as numbers). The server and `app.js` fill templates the same
/// way, so a shape looks the same drawn by either; and 1,000 nodes as values are a fifth
/// of their markup.
struct Shape {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    template: usize,
    values: Vec<Value>,
}

/// A drawing: the `<svg>` element's opening tag, markup always shown (axis labels), its
/// shapes' templates and its shapes.
struct Drawing {
    open: String,
    fixed: String,
    templates: &'static [&'static str],
    shapes: Vec<Shape>,
}

/// How a drawing is sent: whole, or (`full_url` is where the whole SVG is) as data.
pub enum Mode<'a> {
    Whole,
    Virtual { full_url: &'a str },
}

/// `template` with each `{N}` replaced by `values[N]` (a string as it is, a number as
/// JavaScript's `String()` writes it: both write the shortest form that reads back).
fn fill(out: &mut String, template: &str, values: &[Value]) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match (
            after[..digits].parse::<usize>(),
            after[digits..].starts_with('}'),
        ) {
            (Ok(n), true) => {
                match values.get(n) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v) => {
                        let _ = write!(out, "{v}");
                    }
                    None => {}
                }
                rest = &after[digits + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// A coordinate rounded to a tenth: short in JSON, written the same by both sides.
fn tenth(v: f64) -> Value {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 && r.abs() < 1e15 {
        Value::from(r as i64)
    } else {
        Value::from(r)
    }
}

impl Drawing {
    fn render(&self, id: &str, mode: Mode) -> String {
        let virtual_url = match mode {
            Mode::Virtual { full_url } if self.shapes.len() > VIRTUAL_AT => Some(full_url),
            _ => None,
        };
        let Some(full_url) = virtual_url else {
            let mut out = String::with_capacity(self.shapes.len() * 160 + 256);
            out.push_str(&self.open);
            out.push_str(&self.fixed);
            for s in &self.shapes {
                fill(&mut out, self.templates[s.template], &s.values);
            }
            out.push_str("</svg>");
            return out;
        };
        // {"templates": [...], "shapes": [[x, y, w, h, template, values...], ...]}; `<`
        // is escaped so that nothing can end the script element early (serde_json
        // leaves it alone).
        let shapes: Vec<Value> = self
            .shapes
            .iter()
            .map(|s| {
                let mut row = vec![
                    tenth(s.x),
                    tenth(s.y),
                    tenth(s.w),
                    tenth(s.h),
                    Value::from(s.template),
                ];
                row.extend(s.values.iter().cloned());
                Value::Array(row)
            })
            .collect();
        let json = serde_json::json!({"templates": self.templates, "shapes": shapes})
            .to_string()
            .replace('<', "\\u003c");
        let open = self
            .open
            .replacen("<svg ", &format!(r#"<svg data-shapes="{id}-shapes" "#), 1);
        format!(
            r#"<div class="scroll tall" data-virtual="{id}">{open}{fixed}</svg></div><script type="application/json" id="{id}-shapes">{json}</script><noscript><p><a href="{url}">The whole drawing</a> ({n} shapes; this page draws it with its script).</p></noscript>"#,
            fixed = self.fixed,
            url = esc(full_url),
            n = self.shapes.len(),
        )
    }
}

/// The run's DAG: whole, or (a big one) for `app.js` to draw a screenful at a time.
pub fn svg(run: &Value, mode: Mode) -> String {
    dag(run).render("dag", mode)
}

/// The run's timeline of attempts, the same way.
pub fn gantt(run: &Value, mode: Mode) -> String {
    timeline(run).render("gantt", mode)
}

const EDGE: usize = 0;
const NODE: usize = 1;
const NODE_SHORT: usize = 2;
/// A node's values: id, status, x, y, text x, text y, then (NODE) its title and label; a
/// short id with no error (NODE_SHORT) is its own label and its title is `id: status`.
const DAG_TEMPLATES: [&str; 3] = [
    r#"<path class="edge" d="M{0},{1} C{2},{1} {2},{3} {4},{3}"/>"#,
    r##"<a href="#task-{0}"><g class="node {1}" data-task="{0}" data-status="{1}"><title>{6}</title><rect x="{2}" y="{3}" width="160" height="30" rx="5"/><text x="{4}" y="{5}">{7}</text></g></a>"##,
    r##"<a href="#task-{0}"><g class="node {1}" data-task="{0}" data-status="{1}"><title>{0}: {1}</title><rect x="{2}" y="{3}" width="160" height="30" rx="5"/><text x="{4}" y="{5}">{0}</text></g></a>"##,
];

/// `run` is the run JSON: `tasks` (in definition order) and `upstream`.
fn dag(run: &Value) -> Drawing {
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
    let open = format!(
        r#"<svg class="dag{fit}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="task graph">"#
    );
    let mut shapes = Vec::with_capacity(n * 2);
    for (t, ups) in upstream.iter().enumerate() {
        for &u in ups {
            let (x1, y1) = (pos[u].0 + W, pos[u].1 + H / 2.0);
            let (x2, y2) = (pos[t].0, pos[t].1 + H / 2.0);
            let mid = (x1 + x2) / 2.0;
            shapes.push(Shape {
                x: x1.min(x2),
                y: y1.min(y2),
                w: (x2 - x1).abs(),
                h: (y2 - y1).abs(),
                template: EDGE,
                values: vec![tenth(x1), tenth(y1), tenth(mid), tenth(y2), tenth(x2)],
            });
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
        shapes.push(Shape {
            x,
            y,
            w: W,
            h: H,
            template: if why.is_empty() && label == id {
                NODE_SHORT
            } else {
                NODE
            },
            values: {
                let mut v = vec![
                    Value::from(esc(id)),
                    Value::from(esc(status)),
                    tenth(x),
                    tenth(y),
                    tenth(x + 8.0),
                    tenth(y + 19.0),
                ];
                if !why.is_empty() || label != id {
                    v.push(Value::from(esc(&title)));
                    v.push(Value::from(esc(&label)));
                }
                v
            },
        });
    }
    Drawing {
        open,
        fixed: String::new(),
        templates: &DAG_TEMPLATES,
        shapes,
    }
}

/// The attempts of every task on one time axis: one row per task, one bar per attempt
/// (failed attempts in red, so retries are visible).
fn timeline(run: &Value) -> Drawing {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_millis())
    };
    let start = parse(&run["started_at"]).unwrap_or(0);
    let now = chrono::Utc::now().timestamp_millis();
    let end = parse(&run["ended_at"]).unwrap_or(now).max(start + 1);
    let empty = Vec::new();
    let tasks = run["tasks"].as_array().unwrap_or(&empty);
    let label_w = 170.0;
    let plot_w = 700.0;
    let row = 20.0;
    let width = label_w + plot_w + 10.0;
    let height = 24.0 + tasks.len() as f64 * row;
    let scale = plot_w / (end - start) as f64;
    let open = format!(
        r#"<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timeline of attempts">"#,
    );
    let fixed = format!(
        r#"<text class="axis" x="{label_w}" y="12">0 s</text><text class="axis" x="{x}" y="12" text-anchor="end">{secs:.2} s</text>"#,
        x = label_w + plot_w,
        secs = (end - start) as f64 / 1000.0
    );
    // A shape per task (its label) and per attempt (a bar).
    let mut shapes = Vec::with_capacity(tasks.len() * 2);
    for (i, t) in tasks.iter().enumerate() {
        let y = 20.0 + i as f64 * row;
        let id = esc(t["id"].as_str().unwrap_or_default());
        shapes.push(Shape {
            x: 0.0,
            y,
            w: label_w,
            h: row,
            template: LABEL,
            values: vec![Value::from(id.clone()), tenth(y + 13.0)],
        });
        for a in t["history"].as_array().into_iter().flatten() {
            let Some(s) = parse(&a["started_at"]) else {
                continue;
            };
            let e = parse(&a["ended_at"]).unwrap_or(now);
            let x = label_w + (s - start).max(0) as f64 * scale;
            let w = ((e - s).max(0) as f64 * scale).max(2.0);
            let status = a["status"].as_str().unwrap_or("running");
            shapes.push(Shape {
                x,
                y,
                w,
                h: row,
                template: BAR,
                values: vec![
                    Value::from(esc(status)),
                    tenth(x),
                    tenth(y),
                    tenth(w),
                    Value::from(id.clone()),
                    a["attempt"].clone(),
                    Value::from(format!("{:.3}", (e - s) as f64 / 1000.0)),
                ],
            });
        }
    }
    Drawing {
        open,
        fixed,
        templates: &GANTT_TEMPLATES,
        shapes,
    }
}

const LABEL: usize = 0;
const BAR: usize = 1;
const GANTT_TEMPLATES: [&str; 2] = [
    r#"<text x="0" y="{1}">{0}</text>"#,
    r#"<rect class="bar {0}" x="{1}" y="{2}" width="{3}" height="14"><title>{4} attempt {5}: {0}, {6} s</title></rect>"#,
];

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
        let s = svg(&run, Mode::Whole);
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
        let s = svg(&json!({"tasks": tasks, "upstream": upstream}), Mode::Whole);
        assert_eq!(s.matches("<rect").count(), n);
    }

    #[test]
    fn fill_replaces_numbered_placeholders_only() {
        let mut out = String::new();
        fill(
            &mut out,
            "a{0}b{1}{x}{}{12c{0}",
            &[json!("&lt;"), json!(2.5), json!(null)],
        );
        assert_eq!(out, "a&lt;b2.5{x}{}{12c&lt;");
        assert_eq!(tenth(3.0), json!(3));
        assert_eq!(tenth(1.25), json!(1.3));
    }

    #[test]
    fn a_big_drawing_sent_as_data_holds_every_shape_of_the_whole_one() {
        let n = 700;
        let tasks: Vec<Value> = (0..n)
            .map(|i| {
                json!({"id": format!("t<{i}>"), "status": if i % 7 == 0 { "failed" } else { "succeeded" },
                       "history": [{"attempt": 1, "status": "succeeded",
                                    "started_at": "2026-01-01T00:00:00.100Z",
                                    "ended_at": "2026-01-01T00:00:00.350Z"}]})
            })
            .collect();
        let upstream: serde_json::Map<String, Value> = (1..n)
            .map(|i| (format!("t<{i}>"), json!([format!("t<{}>", i / 2)])))
            .collect();
        let run = json!({"tasks": tasks, "upstream": upstream,
                         "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:01Z"});
        for (whole, sent) in [
            (
                svg(&run, Mode::Whole),
                svg(&run, Mode::Virtual { full_url: "/x" }),
            ),
            (
                gantt(&run, Mode::Whole),
                gantt(&run, Mode::Virtual { full_url: "/x" }),
            ),
        ] {
            assert!(whole.matches("<title>").count() >= n, "{}", &whole[..200]);
            let json = sent
                .split_once(r#"type="application/json""#)
                .and_then(|(_, r)| r.split_once('>'))
                .and_then(|(_, r)| r.split_once("</script>"))
                .map(|(j, _)| j)
                .expect("the shapes' script");
            assert!(!json.contains('<'), "nothing can end the script early");
            let data: Value = serde_json::from_str(json).unwrap();
            let templates: Vec<&str> = data["templates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let mut drawn = String::new();
            for row in data["shapes"].as_array().unwrap() {
                let row = row.as_array().unwrap();
                fill(
                    &mut drawn,
                    templates[row[4].as_u64().unwrap() as usize],
                    &row[5..],
                );
            }
            let open_end = whole.find('>').unwrap() + 1;
            let fixed_and_shapes = &whole[open_end..whole.len() - "</svg>".len()];
            assert!(
                fixed_and_shapes.ends_with(&drawn),
                "same shapes, same markup"
            );
            assert!(sent.contains("data-virtual"));
            assert!(!sent.contains("<rect"), "the page itself carries no shape");
        }
    }
}
