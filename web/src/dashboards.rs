//! Dashboards: panels defined in YAML (`dashboards/*.yaml`), each a query drawn as a
//! chart or a table. Read on every request, so an edit shows at the next reload.
//!
//! ```yaml
//! title: Semiconductor stocks
//! params:
//!   symbol: { default: NVDA, choices: "SELECT DISTINCT symbol FROM stock_daily ORDER BY 1" }
//! panels:
//!   - title: Average price
//!     type: line                 # line | bar | scatter | table
//!     time_range: 90d            # {{ days }} in the SQL; the page can change it
//!     sql: |
//!       SELECT date, symbol, avg_price FROM stock_daily
//!       WHERE date > (SELECT max(date) FROM stock_daily) - INTERVAL '{{ days }} days'
//!     x: date
//!     y: avg_price               # or a list: [close, sma_5, sma_20]
//!     series: symbol             # one series per value (optional)
//!     markers: signal            # a marker where this column is set (optional)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::chart::Kind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub default: String,
    /// A query whose first column lists the values to choose from.
    #[serde(default)]
    pub choices: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    pub title: String,
    #[serde(rename = "type", default = "line")]
    pub kind: Kind,
    pub sql: String,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<OneOrMany>,
    #[serde(default)]
    pub series: Option<String>,
    #[serde(default)]
    pub markers: Option<String>,
    /// `90d`, `52w`, `1y`: the default of `{{ days }}`.
    #[serde(default)]
    pub time_range: Option<String>,
}

fn line() -> Kind {
    Kind::Line
}

impl Panel {
    pub fn y(&self) -> Vec<String> {
        match &self.y {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        }
    }
}

/// `90d` -> 90, `2w` -> 14, `1y` -> 365.
pub fn days(range: &str) -> Option<u32> {
    let range = range.trim();
    let (n, unit) = range.split_at(range.len().checked_sub(1)?);
    let n: u32 = n.parse().ok()?;
    match unit {
        "d" => Some(n),
        "w" => n.checked_mul(7),
        "y" => n.checked_mul(365),
        _ => None,
    }
}

/// Loads `dir/NAME.yaml`; an error names the file, line and what to fix.
pub fn load(dir: &Path, name: &str) -> Result<Dashboard, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(format!("no dashboard `{name}`"));
    }
    let path = dir.join(format!("{name}.yaml"));
    let shown = path.display();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{shown}: {e}"))?;
    let node = orchestrator_engine::yaml::parse(&text)
        .map_err(|e| format!("{shown}:{}:{}: {}", e.pos.line, e.pos.col, e.message))?
        .ok_or_else(|| format!("{shown}: is empty; give it `title:` and `panels:`"))?;
    let d: Dashboard = node.parse().map_err(|e| {
        let at = e
            .pos
            .map(|p| format!(":{}:{}", p.line, p.col))
            .unwrap_or_default();
        format!("{shown}{at}: {e}")
    })?;
    for (i, p) in d.panels.iter().enumerate() {
        if p.kind != Kind::Table && (p.x.is_none() || p.y().is_empty()) {
            return Err(format!(
                "{shown}: panel {} (`{}`): a {:?} chart needs `x:` and `y:` columns",
                i + 1,
                p.title,
                p.kind
            ));
        }
        if let Some(r) = &p.time_range {
            if days(r).is_none() {
                return Err(format!(
                    "{shown}: panel `{}`: `time_range: {r}` is not like 90d, 12w or 1y",
                    p.title
                ));
            }
        }
    }
    Ok(d)
}

/// The dashboards in `dir`: `(name, title or the error)`, by name.
pub fn list(dir: &Path) -> Vec<(String, Result<String, String>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "yaml")
                        .then(|| p.file_stem()?.to_str().map(String::from))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let title = load(dir, &n).map(|d| d.title);
            (n, title)
        })
        .collect()
}

/// A param value safe to put into SQL text: letters, digits and `_.- :`.
pub fn safe_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.- :".contains(c))
}

/// Renders a panel's SQL with `{{ params.NAME }}` and `{{ days }}`.
pub fn render_sql(
    sql: &str,
    params: &BTreeMap<String, String>,
    days: u32,
) -> Result<String, String> {
    let env = minijinja::Environment::new();
    env.render_str(sql, minijinja::context! { params => params, days => days })
        .map_err(|e| format!("the panel's SQL template: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_values() {
        assert_eq!(days("90d"), Some(90));
        assert_eq!(days("2w"), Some(14));
        assert_eq!(days("1y"), Some(365));
        assert_eq!(days("ninety"), None);
        assert!(safe_value("NVDA"));
        assert!(!safe_value("x'; DROP TABLE t; --"));
    }

    #[test]
    fn the_shipped_stocks_dashboard_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
        let d = load(&dir, "stocks").unwrap();
        assert!(d.panels.len() >= 5, "{d:?}");
        assert!(d.params.contains_key("symbol"));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.yaml"),
            "title: X\npanels:\n  - title: P\n    type: pie\n    sql: SELECT 1\n",
        )
        .unwrap();
        let e = load(dir.path(), "x").unwrap_err();
        assert!(e.contains("x.yaml:4:"), "{e}");
        assert!(load(dir.path(), "../etc/passwd").is_err());
    }
}
