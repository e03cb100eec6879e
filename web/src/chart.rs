//! Charts drawn on the server as SVG: line, bar and scatter, one series per value of a
//! column (or per y column), with optional markers (e.g. BUY/SELL). Chosen over a
//! vendored JS library: no script to ship or load, the page is complete when it arrives,
//! and a test can count the series in the DOM.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::dag::esc;

/// How a panel is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Line,
    Bar,
    Scatter,
    Table,
}

pub struct Spec<'a> {
    pub kind: Kind,
    pub x: &'a str,
    pub y: &'a [String],
    pub series: Option<&'a str>,
    pub markers: Option<&'a str>,
}

const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 10.0;

/// An x value: a number, a date or instant (as milliseconds), or a category's index.
fn x_value(v: &Value, categories: &mut Vec<String>) -> Option<(f64, bool)> {
    if let Some(n) = v.as_f64() {
        return Some((n, false));
    }
    let s = v.as_str()?;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some((t.timestamp_millis() as f64, true));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
        return Some((t as f64, true));
    }
    let i = match categories.iter().position(|c| c == s) {
        Some(i) => i,
        None => {
            categories.push(s.to_string());
            categories.len() - 1
        }
    };
    Some((i as f64, false))
}

fn y_value(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .filter(|f: &f64| f.is_finite())
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_x(v: f64, dates: bool, categories: &[String]) -> String {
    if dates {
        chrono::DateTime::from_timestamp_millis(v as i64)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    } else if !categories.is_empty() {
        categories.get(v as usize).cloned().unwrap_or_default()
    } else {
        fmt_num(v)
    }
}

/// Draws `rows` (objects from a query) as SVG; an `Err` says which column is missing.
pub fn draw(rows: &[Value], spec: &Spec) -> Result<String, String> {
    let Some(first) = rows.first() else {
        return Ok(r#"<p class="empty">no rows</p>"#.into());
    };
    let columns: Vec<&str> = first
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let need = [spec.x]
        .into_iter()
        .chain(spec.y.iter().map(String::as_str))
        .chain(spec.series)
        .chain(spec.markers);
    for c in need {
        if !columns.contains(&c) {
            return Err(format!(
                "the query has no column `{c}`; its columns: {}",
                columns.join(", ")
            ));
        }
    }
    // Series name -> points, in row order.
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut markers: Vec<(f64, f64, String)> = Vec::new();
    let mut categories = Vec::new();
    let mut dates = false;
    for row in rows {
        let Some((x, is_date)) = x_value(&row[spec.x], &mut categories) else {
            continue;
        };
        dates |= is_date;
        for (i, y_col) in spec.y.iter().enumerate() {
            let Some(y) = y_value(&row[y_col.as_str()]) else {
                continue;
            };
            let name = match spec.series {
                Some(s) if spec.y.len() == 1 => match &row[s] {
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                },
                Some(s) => format!("{} {y_col}", row[s].as_str().unwrap_or_default()),
                None => y_col.clone(),
            };
            series.entry(name).or_default().push((x, y));
            if i == 0 {
                if let Some(m) = spec.markers.and_then(|m| row[m].as_str()) {
                    if !m.is_empty() {
                        markers.push((x, y, m.to_string()));
                    }
                }
            }
        }
    }
    let points = || series.values().flatten();
    let (mut x0, mut x1) =
        points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) =
        points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        return Ok(r#"<p class="empty">no numeric values to draw</p>"#.into());
    }
    if spec.kind == Kind::Bar {
        y0 = y0.min(0.0);
        y1 = y1.max(0.0);
        x0 -= 0.5 * (x1 - x0).max(1.0) / rows.len().max(1) as f64;
        x1 += 0.5 * (x1 - x0).max(1.0) / rows.len().max(1) as f64;
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let sy = |y: f64| TOP + (y1 - y) / (y1 - y0) * (H - TOP - BOTTOM);
    let mut out = format!(
        r#"<svg class="chart {kind:?}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" preserveAspectRatio="xMidYMid meet" role="img">"#,
        kind = spec.kind
    );
    // Axes: four y ticks, three x labels.
    for i in 0..=3 {
        let v = y0 + (y1 - y0) * i as f64 / 3.0;
        let y = sy(v);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}"/><text class="axis" x="{tx}" y="{ty:.1}" text-anchor="end">{}</text>"#,
            fmt_num(v),
            x2 = W - RIGHT,
            tx = LEFT - 4.0,
            ty = y + 4.0
        );
    }
    for (i, anchor) in [(0, "start"), (1, "middle"), (2, "end")] {
        let v = x0 + (x1 - x0) * i as f64 / 2.0;
        let _ = write!(
            out,
            r#"<text class="axis" x="{x:.1}" y="{y}" text-anchor="{anchor}">{}</text>"#,
            esc(&fmt_x(v, dates, &categories)),
            x = sx(v),
            y = H - 6.0
        );
    }
    if y0 < 0.0 && y1 > 0.0 {
        let _ = write!(
            out,
            r#"<line class="zero" x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}"/>"#,
            y = sy(0.0),
            x2 = W - RIGHT
        );
    }
    let count = series.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / rows.len().max(1) as f64 * spec.y.len() as f64;
    for (k, (name, pts)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let _ = write!(
            out,
            r#"<g class="series" data-series="{}" style="--c:{colour}"><title>{}</title>"#,
            esc(name),
            esc(name)
        );
        match spec.kind {
            Kind::Line | Kind::Table => {
                let mut sorted = pts.clone();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                let path: Vec<String> = sorted
                    .iter()
                    .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline fill="none" stroke="{colour}" points="{}"/>"#,
                    path.join(" ")
                );
            }
            Kind::Scatter => {
                for (x, y) in pts {
                    let _ = write!(
                        out,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                        sx(*x),
                        sy(*y)
                    );
                }
            }
            Kind::Bar => {
                let w = (slot / count * 0.8).max(1.0);
                for (x, y) in pts {
                    let left = sx(*x) - slot * 0.4 + k as f64 * w;
                    let (top, bottom) = (sy(y.max(0.0)), sy(y.min(0.0)));
                    let _ = write!(
                        out,
                        r#"<rect x="{left:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}"/>"#,
                        h = (bottom - top).max(0.5)
                    );
                }
            }
        }
        out.push_str("</g>");
    }
    for (x, y, label) in &markers {
        let (cx, cy) = (sx(*x), sy(*y));
        let up = !label.eq_ignore_ascii_case("sell");
        let d = if up {
            format!("M{cx:.1},{:.1} l-6,10 h12 z", cy + 4.0)
        } else {
            format!("M{cx:.1},{:.1} l-6,-10 h12 z", cy - 4.0)
        };
        let _ = write!(
            out,
            r#"<path class="marker {}" data-marker="{}" d="{d}"><title>{} {}</title></path>"#,
            if up { "up" } else { "down" },
            esc(label),
            esc(label),
            esc(&fmt_x(*x, dates, &categories)),
        );
    }
    out.push_str("</svg>");
    // The legend, in HTML (wraps; readable at any width).
    out.push_str(r#"<ul class="legend">"#);
    for (k, name) in series.keys().enumerate() {
        let _ = write!(
            out,
            r#"<li><span style="background:{}"></span>{}</li>"#,
            PALETTE[k % PALETTE.len()],
            esc(name)
        );
    }
    out.push_str("</ul>");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_series_per_value_of_the_series_column_and_markers() {
        let rows = vec![
            json!({"date": "2025-01-02", "symbol": "NVDA", "close": 10.0, "signal": null}),
            json!({"date": "2025-01-03", "symbol": "NVDA", "close": 11.0, "signal": "BUY"}),
            json!({"date": "2025-01-02", "symbol": "AMD", "close": 5.0, "signal": null}),
        ];
        let y = vec!["close".to_string()];
        let spec = Spec {
            kind: Kind::Line,
            x: "date",
            y: &y,
            series: Some("symbol"),
            markers: Some("signal"),
        };
        let svg = draw(&rows, &spec).unwrap();
        assert_eq!(svg.matches(r#"class="series""#).count(), 2);
        assert!(svg.contains(r#"data-series="NVDA""#));
        assert!(svg.contains(r#"data-marker="BUY""#));
        assert!(svg.contains("2025-01-02"), "date labels: {svg}");
        let bad = Spec {
            kind: Kind::Line,
            x: "day",
            y: &y,
            series: None,
            markers: None,
        };
        assert!(draw(&rows, &bad)
            .unwrap_err()
            .contains("no column `day`; its columns: date, symbol, close, signal"));
    }

    #[test]
    fn several_y_columns_are_several_series() {
        let rows = vec![
            json!({"d": 1, "close": 1.0, "sma_5": 2.0}),
            json!({"d": 2, "close": 1.5, "sma_5": null}),
        ];
        let y = vec!["close".to_string(), "sma_5".to_string()];
        let svg = draw(
            &rows,
            &Spec {
                kind: Kind::Bar,
                x: "d",
                y: &y,
                series: None,
                markers: None,
            },
        )
        .unwrap();
        assert!(svg.contains(r#"data-series="close""#) && svg.contains(r#"data-series="sma_5""#));
        assert_eq!(svg.matches("<rect").count(), 3, "a null draws nothing");
    }
}
