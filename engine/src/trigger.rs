//! Trigger rules: when a task with upstreams may start, or can never start.
//!
//! [`decide`] is a pure function of the rule and the upstreams' outcomes so far; the
//! executor calls it whenever an upstream of a pending task reaches a final state.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream succeeded (the default; Glue's conditional trigger on SUCCEEDED).
    #[default]
    AllSuccess,
    /// At least one upstream succeeded (Glue's ANY predicate); starts at the first.
    AnySuccess,
    /// Every upstream finished, whatever the outcome (cleanup, alerts).
    AllDone,
    /// At least one upstream failed (on-failure handlers); starts at the first failure.
    AnyFailed,
}

impl TriggerRule {
    pub const NAMES: &'static [&'static str] =
        &["all_success", "any_success", "all_done", "any_failed"];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AnySuccess => "any_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AnyFailed => "any_failed",
        }
    }
}

/// What an upstream task has come to, as far as trigger rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Not finished yet.
    Waiting,
    Succeeded,
    Failed,
    /// Skipped; `after_failure` when the skip was caused by a failure further up
    /// (Airflow's `upstream_failed`), which `any_failed` counts as a failure.
    Skipped {
        after_failure: bool,
    },
    Cancelled,
}

impl Upstream {
    fn is_final(self) -> bool {
        self != Upstream::Waiting
    }

    fn counts_as_failure(self) -> bool {
        matches!(
            self,
            Upstream::Failed
                | Upstream::Skipped {
                    after_failure: true
                }
        )
    }

    fn word(self) -> &'static str {
        match self {
            Upstream::Waiting => "waiting",
            Upstream::Succeeded => "succeeded",
            Upstream::Failed => "failed",
            Upstream::Skipped { .. } => "skipped",
            Upstream::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Run,
    /// Can never run. `after_failure` propagates to downstream `any_failed` handlers.
    Skip {
        reason: String,
        after_failure: bool,
    },
}

/// Decides for a task with rule `rule` whose upstreams are `upstream` (id, outcome).
/// A task without upstreams always runs.
pub fn decide(rule: TriggerRule, upstream: &[(&str, Upstream)]) -> Decision {
    if upstream.is_empty() {
        return Decision::Run;
    }
    let all_final = upstream.iter().all(|(_, u)| u.is_final());
    let any_failure = upstream.iter().any(|(_, u)| u.counts_as_failure());
    match rule {
        TriggerRule::AllSuccess => {
            if let Some((id, u)) = upstream
                .iter()
                .find(|(_, u)| u.is_final() && *u != Upstream::Succeeded)
            {
                Decision::Skip {
                    reason: format!("upstream {}: {id}", u.word()),
                    after_failure: u.counts_as_failure(),
                }
            } else if all_final {
                Decision::Run
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AnySuccess => {
            if upstream.iter().any(|(_, u)| *u == Upstream::Succeeded) {
                Decision::Run
            } else if all_final {
                Decision::Skip {
                    reason: format!("no upstream succeeded ({})", summary(upstream)),
                    after_failure: any_failure,
                }
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AllDone => {
            if all_final {
                Decision::Run
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AnyFailed => {
            if any_failure {
                Decision::Run
            } else if all_final {
                Decision::Skip {
                    reason: format!("no upstream failed ({})", summary(upstream)),
                    after_failure: false,
                }
            } else {
                Decision::Wait
            }
        }
    }
}

fn summary(upstream: &[(&str, Upstream)]) -> String {
    upstream
        .iter()
        .map(|(id, u)| format!("{id} {}", u.word()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::Upstream::*;
    use super::*;

    fn skip(reason: &str, after_failure: bool) -> Decision {
        Decision::Skip {
            reason: reason.into(),
            after_failure,
        }
    }

    #[test]
    fn rules_table() {
        use TriggerRule::*;
        let fail_after_skip = Skipped {
            after_failure: true,
        };
        let plain_skip = Skipped {
            after_failure: false,
        };
        type Case = (TriggerRule, Vec<(&'static str, Upstream)>, Decision);
        let cases: Vec<Case> = vec![
            (AllSuccess, vec![], Decision::Run),
            (
                AllSuccess,
                vec![("a", Succeeded), ("b", Waiting)],
                Decision::Wait,
            ),
            (
                AllSuccess,
                vec![("a", Succeeded), ("b", Succeeded)],
                Decision::Run,
            ),
            (
                AllSuccess,
                vec![("a", Waiting), ("b", Failed)],
                skip("upstream failed: b", true),
            ),
            (
                AllSuccess,
                vec![("a", plain_skip)],
                skip("upstream skipped: a", false),
            ),
            (
                AllSuccess,
                vec![("a", fail_after_skip)],
                skip("upstream skipped: a", true),
            ),
            (
                AnySuccess,
                vec![("a", Succeeded), ("b", Waiting)],
                Decision::Run,
            ),
            (
                AnySuccess,
                vec![("a", Failed), ("b", Waiting)],
                Decision::Wait,
            ),
            (
                AnySuccess,
                vec![("a", Failed), ("b", plain_skip)],
                skip("no upstream succeeded (a failed, b skipped)", true),
            ),
            (AllDone, vec![("a", Failed), ("b", Waiting)], Decision::Wait),
            (
                AllDone,
                vec![("a", Failed), ("b", Cancelled)],
                Decision::Run,
            ),
            (
                AnyFailed,
                vec![("a", Failed), ("b", Waiting)],
                Decision::Run,
            ),
            (AnyFailed, vec![("a", fail_after_skip)], Decision::Run),
            (
                AnyFailed,
                vec![("a", Succeeded), ("b", Waiting)],
                Decision::Wait,
            ),
            (
                AnyFailed,
                vec![("a", Succeeded), ("b", plain_skip)],
                skip("no upstream failed (a succeeded, b skipped)", false),
            ),
        ];
        for (rule, upstream, want) in cases {
            assert_eq!(decide(rule, &upstream), want, "{rule:?} {upstream:?}");
        }
    }
}
