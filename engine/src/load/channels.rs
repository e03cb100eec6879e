//! `channels:` (the workflow's and the shared `channels.yaml`) and `notify:`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::Loader;
use crate::channel::{Channel, SHARED_CHANNELS};
use crate::model::{NotifyEvent, Subscription};
use crate::suggest::closest;
use crate::template::Renderer;
use crate::yaml::Node;

impl Loader<'_, '_> {
    /// The channels the workflow may use: its own `channels:` (`node`), over those of the
    /// shared channels file (`--channels FILE`, or `channels.yaml` beside the workflow).
    pub(super) fn all_channels(
        &mut self,
        node: Option<&Node>,
        lineage: Option<&Node>,
        renderer: &Renderer,
    ) {
        if let Some(node) = node {
            self.channels(node, renderer);
        }
        if let Some(node) = lineage {
            self.lineage(node, renderer);
        }
        let path = self.file;
        if let Some(file) = &self.opts.channels_file {
            // Named on purpose: a missing file is an error, not "no shared channels".
            self.shared_channels(file, renderer);
        } else if let Some(shared) = path
            .parent()
            .map(|d| d.join(SHARED_CHANNELS))
            .filter(|p| p.is_file() && p != path)
        {
            self.shared_channels(&shared, renderer);
        }
    }

    /// `lineage: {kind: http, url: ...}` or `{kind: file, path: ...}`: where OpenLineage
    /// events go, kept as the channel [`crate::lineage::CHANNEL`] so that the outbox
    /// delivers them like notifications.
    fn lineage(&mut self, node: &Node, renderer: &Renderer) {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Kind {
            Http,
            File,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            kind: Kind,
            url: Option<String>,
            endpoint: Option<String>,
            path: Option<std::path::PathBuf>,
            namespace: Option<String>,
        }
        const SHAPE: &str = "lineage: { kind: http, url: \"http://marquez:5000\" } or { kind: file, path: lineage.jsonl }";
        let mut node = node.clone();
        let before = self.errs.len();
        self.render(&mut node, renderer, "`lineage`", None);
        if self.errs.len() != before {
            return;
        }
        let spec = match node.parse::<Spec>() {
            Ok(s) => s,
            Err(e) => {
                self.de_err(e, &format!("in `lineage` ({SHAPE})"), &[]);
                return;
            }
        };
        let at = |f: &str| node.get(f).map_or(node.pos, |n| n.pos);
        let channel = match spec.kind {
            Kind::Http => {
                let Some(url) = spec
                    .url
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                else {
                    self.err(
                        Some(at("url")),
                        "`lineage` of kind http needs `url`, an http:// or https:// URL (the receiver's base: events are POSTed to URL/api/v1/lineage)",
                    )
                    .help = Some("e.g. lineage: { kind: http, url: \"{{ env.MARQUEZ_URL }}\" }".into());
                    return;
                };
                let endpoint = spec.endpoint.unwrap_or_else(|| "api/v1/lineage".into());
                Channel::Webhook {
                    url: format!(
                        "{}/{}",
                        url.trim_end_matches('/'),
                        endpoint.trim_start_matches('/')
                    ),
                    format: None,
                    secret: None,
                }
            }
            Kind::File => {
                let Some(path) = spec.path else {
                    self.err(
                        Some(node.pos),
                        "`lineage` of kind file needs `path` (one JSON event per line; a relative path is in the state dir)",
                    );
                    return;
                };
                Channel::File {
                    path: if path.is_relative() {
                        self.opts
                            .default_warehouse
                            .parent()
                            .map_or_else(|| path.clone(), |dir| dir.join(&path))
                    } else {
                        path
                    },
                }
            }
        };
        self.channels
            .insert(crate::lineage::CHANNEL.to_string(), channel);
        self.lineage = Some(crate::lineage::Lineage {
            namespace: spec.namespace.unwrap_or_else(|| "orchestrator".into()),
        });
    }

    /// `channels:`, rendered (a webhook URL usually comes from `{{ env.NAME }}`) and checked.
    fn channels(&mut self, node: &Node, renderer: &Renderer) {
        let mut node = node.clone();
        let before = self.errs.len();
        self.render(&mut node, renderer, "`channels`", None);
        if self.errs.len() != before {
            return;
        }
        // Each channel on its own, so one bad channel does not hide the others' problems.
        let Some(entries) = node.as_map() else {
            self.err(
                Some(node.pos),
                format!(
                    "`channels` must be a mapping of names to channels (NAME: {{kind: webhook | file | command | email | sns, ...}}), found {}",
                    node.describe()
                ),
            );
            return;
        };
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = k.as_str() else { continue };
            match v.parse::<Channel>() {
                Ok(ch) => {
                    map.insert(name.to_string(), ch);
                }
                Err(e) => self.de_err(
                    e,
                    &format!(
                        "in channel `{name}` ({{kind: webhook | file | command | email | sns, ...}})"
                    ),
                    &[],
                ),
            }
        }
        for (name, ch) in map {
            let field = |f: &str| {
                let entry = node.get(&name);
                entry
                    .and_then(|n| n.get(f))
                    .or(entry)
                    .map_or(node.pos, |n| n.pos)
            };
            if let Channel::Webhook { url, format, .. } = &ch {
                // The URL is often a secret (Slack's are): never echo it.
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.err(
                        Some(field("url")),
                        format!("channel `{name}`: `url` is not an http:// or https:// URL"),
                    )
                    .help = Some(
                        "e.g. url: \"{{ env.SLACK_WEBHOOK_URL }}\" with the variable set".into(),
                    );
                }
                if format
                    .as_deref()
                    .is_some_and(|f| f != "slack" && f != "json")
                {
                    self.err(
                        Some(field("format")),
                        format!("channel `{name}`: `format` is `json` (the default) or `slack`"),
                    );
                }
            }
            if let Channel::Email { smtp, to, .. } = &ch {
                if !(smtp.starts_with("smtp://") || smtp.starts_with("smtps://")) {
                    self.err(
                        Some(field("smtp")),
                        format!("channel `{name}`: `smtp` is not an smtp:// or smtps:// URL"),
                    )
                    .help = Some("e.g. smtp: \"smtps://{{ env.SMTP_USER }}:{{ env.SMTP_PASSWORD }}@smtp.example.com\"".into());
                }
                if to.is_empty() {
                    self.err(
                        Some(field("to")),
                        format!("channel `{name}`: `to` is empty; give at least one address"),
                    );
                }
            }
            if let Channel::Sns { topic_arn, .. } = &ch {
                if !(topic_arn.starts_with("arn:aws") && topic_arn.split(':').count() == 6) {
                    self.err(
                        Some(field("topic_arn")),
                        format!("channel `{name}`: `topic_arn` is not an SNS topic ARN"),
                    )
                    .help = Some(
                        "e.g. topic_arn: arn:aws:sns:us-east-1:123456789012:pipeline-alerts".into(),
                    );
                }
            }
            // A file channel's relative path is in the state dir, whoever delivers.
            let ch = match ch {
                Channel::File { path } if path.is_relative() => Channel::File {
                    path: self
                        .opts
                        .default_warehouse
                        .parent()
                        .map_or_else(|| path.clone(), |dir| dir.join(&path)),
                },
                other => other,
            };
            self.channels.insert(name, ch);
        }
    }

    /// `channels.yaml` beside the workflow: channels every workflow of the directory may
    /// use; the workflow's own `channels:` win on a name both define. Its problems name
    /// its own file, line and column.
    fn shared_channels(&mut self, file: &Path, renderer: &Renderer) {
        let shown = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                self.err(None, format!("cannot read shared channels {shown} ({e})"));
                return;
            }
        };
        let node = match crate::yaml::parse(&text) {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                self.err(
                    None,
                    format!("{shown}:{}:{}: {}", e.pos.line, e.pos.col, e.message),
                );
                return;
            }
        };
        let (channels, lineage) = (node.get("channels"), node.get("lineage"));
        if channels.is_none() && lineage.is_none() {
            self.err(
                None,
                format!("{shown}: expected `channels:` at the top, a mapping of channel name to channel (and optionally `lineage:`)"),
            );
            return;
        }
        let own = std::mem::take(&mut self.channels);
        let before = self.errs.len();
        if let Some(channels) = channels {
            self.channels(channels, renderer);
        }
        // The workflow's own `lineage:` wins.
        if let Some(l) = lineage.filter(|_| self.lineage.is_none()) {
            self.lineage(l, renderer);
        }
        for e in &mut self.errs[before..] {
            let at = e.pos.take().map_or_else(
                || shown.clone(),
                |p| format!("{shown}:{}:{}", p.line, p.col),
            );
            e.message = format!("{at}: {}", e.message);
        }
        self.channels.extend(own);
    }

    /// `notify:`: a list of `{on: EVENT | [EVENTS], to: CHANNEL | [CHANNELS]}`; channels
    /// must be defined under `channels:`.
    pub(super) fn notify(&mut self, node: &Node) -> Vec<Subscription> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany<T> {
            One(T),
            Many(Vec<T>),
        }
        impl<T> OneOrMany<T> {
            fn list(self) -> Vec<T> {
                match self {
                    OneOrMany::One(t) => vec![t],
                    OneOrMany::Many(v) => v,
                }
            }
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            on: OneOrMany<NotifyEvent>,
            to: OneOrMany<String>,
        }
        let Some(items) = node.as_seq() else {
            self.err(
                Some(node.pos),
                format!("`notify` must be a list, found {}", node.describe()),
            )
            .help = Some("e.g. notify: [{ on: [failure], to: ops }]".into());
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let spec = match item.parse::<Spec>() {
                Ok(s) => s,
                Err(e) => {
                    self.de_err(
                        e,
                        "in `notify` (on: failure | success | retry | interrupted | sla_miss, to: CHANNEL)",
                        &[],
                    );
                    continue;
                }
            };
            let sub = Subscription {
                on: spec.on.list(),
                to: spec.to.list(),
            };
            for name in &sub.to {
                if !self.channels.contains_key(name) {
                    let known: Vec<&str> = self.channels.keys().map(String::as_str).collect();
                    let at = item.get("to").map_or(item.pos, |n| n.pos);
                    self.err(
                        Some(at),
                        format!("`notify` sends to `{name}`, which is not defined under `channels:`"),
                    )
                    .help = Some(match closest(name, known.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if known.is_empty() => {
                            "define it, e.g. channels: { ops: { kind: webhook, url: \"{{ env.SLACK_WEBHOOK_URL }}\", format: slack } }".into()
                        }
                        None => format!("channels: {}", known.join(", ")),
                    });
                }
            }
            out.push(sub);
        }
        out
    }
}
