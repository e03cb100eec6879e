//! The workflow's own top-level fields: `name:`, `description:`, `params:` (and the
//! `--param` overrides), `max_parallel:`, `max_active_runs:`, `sla:`, `retention:`,
//! `warehouse:`, `defaults:`, `backend:` and `aws:`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::tasks::{is_valid_name, DefaultsSpec};
use super::{Loader, Top, TOP_FIELDS};
use crate::backend::{AwsBlock, Backend};
use crate::suggest::closest;
use crate::task::Dur;
use crate::yaml::{Node, Pos};

impl Loader<'_, '_> {
    pub(super) fn name(&mut self, v: &Node) -> Option<String> {
        match self.read::<String>(v, "in `name`")? {
            n if is_valid_name(&n, false) => Some(n),
            n => {
                self.err(Some(v.pos), format!("invalid workflow name `{n}`"))
                    .help = Some("use lowercase letters, digits, `_` and `-`".into());
                None
            }
        }
    }

    pub(super) fn description(&mut self, v: &Node) -> Option<String> {
        self.read::<Option<String>>(v, "in `description`")?
    }

    /// `plugins:`: kind name to plugin executable, relative to the workflow file.
    pub(super) fn plugins(&mut self, v: &Node) -> Option<BTreeMap<String, (PathBuf, Pos)>> {
        let Some(entries) = v.as_map() else {
            self.err(
                Some(v.pos),
                format!(
                    "`plugins` must be a mapping of kind to executable (e.g. `dbt_build: ./plugins/dbt-build`), found {}",
                    v.describe()
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, path) in entries {
            let kind = k.as_str().unwrap_or_default();
            let ok = !kind.is_empty()
                && kind
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                self.err(Some(k.pos), format!("invalid plugin kind `{kind}`"))
                    .help =
                    Some("a kind is lowercase letters, digits and `_`, e.g. `dbt_build`".into());
                continue;
            }
            match path
                .as_str()
                .filter(|p| !p.trim().is_empty() && !path.is_null())
            {
                Some(p) => {
                    out.insert(kind.to_string(), (PathBuf::from(p), path.pos));
                }
                None => {
                    self.err(
                        Some(path.pos),
                        format!("`plugins.{kind}` must be the path of the plugin's executable"),
                    );
                }
            }
        }
        Some(out)
    }

    pub(super) fn params(&mut self, v: &Node) -> Option<BTreeMap<String, String>> {
        self.read::<Option<BTreeMap<String, String>>>(v, "in `params` (a mapping of name: value)")
            .map(Option::unwrap_or_default)
    }

    pub(super) fn max_parallel(&mut self, v: &Node) -> Option<usize> {
        self.at_least_one(v, "max_parallel")
    }

    pub(super) fn max_active_runs(&mut self, v: &Node) -> Option<usize> {
        self.at_least_one(v, "max_active_runs")
    }

    fn at_least_one(&mut self, v: &Node, field: &str) -> Option<usize> {
        match self.read(v, &format!("in `{field}`"))? {
            0 => {
                self.err(Some(v.pos), format!("`{field}` must be at least 1"));
                None
            }
            n => Some(n),
        }
    }

    /// `sla:`: how long a run may take before `sla_miss` is notified.
    pub(super) fn sla(&mut self, v: &Node) -> Option<Duration> {
        match self.read::<Dur>(v, "in `sla` (e.g. sla: 45m)")? {
            t if t.0.is_zero() => {
                self.err(
                    Some(v.pos),
                    "`sla` must be longer than 0s: it is how long a run may take before `sla_miss` is notified; leave it out for none",
                );
                None
            }
            t => Some(t.0),
        }
    }

    /// `retention:`: how long runs are kept.
    pub(super) fn retention(&mut self, v: &Node) -> Option<Duration> {
        match self.read::<Dur>(v, "in `retention` (e.g. retention: 90d)")? {
            t if t.0 < Duration::from_secs(86_400) => {
                self.err(
                    Some(v.pos),
                    "`retention` must be at least 1d: it is how long runs are kept",
                );
                None
            }
            t => Some(t.0),
        }
    }

    /// `warehouse:`: where created tables are written (relative to the file's directory).
    pub(super) fn warehouse(&mut self, v: &Node) -> Option<PathBuf> {
        match self.read::<String>(v, "in `warehouse`")? {
            w if w.starts_with("s3://") => {
                let bucket = w["s3://".len()..].split('/').next().unwrap_or_default();
                if bucket.is_empty() {
                    self.err(
                        Some(v.pos),
                        format!("`warehouse: {w}` names no bucket; write s3://BUCKET/PREFIX"),
                    );
                    return None;
                }
                Some(PathBuf::from(w))
            }
            w if !w.trim().is_empty() => Some(PathBuf::from(w)),
            _ => {
                self.err(
                    Some(v.pos),
                    "`warehouse` is empty; give a directory or leave it out",
                );
                None
            }
        }
    }

    /// `defaults:`: retries and timeout for every task that does not set its own.
    pub(super) fn defaults(&mut self, v: &Node) -> Option<DefaultsSpec> {
        let defaults = self
            .read::<Option<DefaultsSpec>>(v, "in `defaults`")?
            .unwrap_or_default();
        if let Some(b) = defaults.retry_backoff {
            if !(b >= 1.0 && b.is_finite()) {
                let pos = v.get("retry_backoff").map(|n| n.pos);
                self.err(
                    pos,
                    format!("`retry_backoff` must be 1.0 or more, found {b}"),
                );
            }
        }
        Some(defaults)
    }

    pub(super) fn backend(&mut self, v: &Node) -> Option<(Backend, Pos)> {
        let b = self.read(v, "in `backend` (local or aws)")?;
        Some((b, v.pos))
    }

    /// `aws:`: the AWS backend's region, database and S3 locations (checked to be
    /// `s3://` URLs; that the aws backend has what it needs is [`Loader::choose_backend`]'s
    /// to check).
    pub(super) fn aws(&mut self, v: &Node) -> Option<(AwsBlock, Pos)> {
        let block = match v.parse::<AwsBlock>() {
            Ok(block) => block,
            Err(e) => {
                self.de_err(
                    e,
                    "in `aws`",
                    &[
                        "region",
                        "profile",
                        "workgroup",
                        "database",
                        "output_location",
                        "warehouse",
                    ],
                );
                return None;
            }
        };
        for (field, value) in [
            ("output_location", &block.output_location),
            ("warehouse", &block.warehouse),
        ] {
            if let Some(url) = value.as_deref().filter(|u| !u.starts_with("s3://")) {
                let at = v.get(field).map_or(v.pos, |n| n.pos);
                self.err(
                    Some(at),
                    format!("`aws: {field}:` `{url}` is not an s3:// URL"),
                )
                .help = Some("write it as s3://bucket/prefix/".to_string());
            }
        }
        Some((block, v.pos))
    }

    pub(super) fn unknown_top_field(&mut self, key: &Node, name: &str) {
        let help = match closest(name, TOP_FIELDS.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("allowed fields: {}", TOP_FIELDS.join(", ")),
        };
        self.err(
            Some(key.pos),
            format!("unknown field `{name}` at the top level"),
        )
        .help = Some(help);
    }

    /// The declared params with a rerun's inherited values and the `--param` overrides
    /// applied; an override must name a declared param.
    pub(super) fn params_with_overrides(
        &mut self,
        mut params: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        for (k, v) in &self.opts.inherited {
            if let Some(p) = params.get_mut(k) {
                p.clone_from(v);
            }
        }
        for (k, v) in &self.opts.overrides {
            if params.contains_key(k) {
                params.insert(k.clone(), v.clone());
            } else {
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                let help = match closest(k, declared.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if declared.is_empty() => {
                        "this workflow declares no params; add it under `params:` first".into()
                    }
                    None => format!("declared params: {}", declared.join(", ")),
                };
                self.err(
                    None,
                    format!("--param {k}: the workflow declares no param `{k}`"),
                )
                .help = Some(help);
            }
        }
        params
    }

    /// Where the data tasks run: `--backend`, else `backend:`, else local. The aws
    /// backend needs an `aws:` block with a database, an output location and a warehouse.
    pub(super) fn choose_backend(&mut self, top: &Top, root: &Node) {
        let chosen = self
            .opts
            .backend
            .or(top.backend.map(|(b, _)| b))
            .unwrap_or_default();
        if chosen == Backend::Aws {
            let at = top
                .backend
                .map(|(_, p)| p)
                .or(top.aws.as_ref().map(|(_, p)| *p));
            let block = top.aws.as_ref().map(|(b, _)| b.clone()).unwrap_or_default();
            let missing: Vec<&str> = [
                ("database", &block.database),
                ("output_location", &block.output_location),
                ("warehouse", &block.warehouse),
            ]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                self.err(
                    at.or(Some(root.pos)),
                    format!(
                        "the aws backend needs `aws:` with {}",
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .help = Some(
                    "e.g. aws: { region: us-east-1, database: lake, output_location: s3://my-athena-results/, warehouse: s3://my-lake/warehouse/ }".into(),
                );
            }
        }
        self.backend = chosen;
        self.aws = top.aws.as_ref().map(|(b, _)| b.clone());
    }
}
