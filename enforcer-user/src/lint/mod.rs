//! Policy lint: common mistakes, each naming file, policy and rule, with a fix.
//!
//! Every lint is a function over an [`Inventory`] returning [`Warning`]s; [`lint`] runs them
//! all. The lints are deliberately conservative: a warning should be worth reading, so the
//! superset and overlap checks are syntactic (or, when the files hold pods, checked against
//! those pods) and say so. `docs/lint.md` documents each code: what it catches, why it
//! matters, how to fix it.

mod broad;
mod describe;
mod dns;
mod selectors;
mod shadow;
mod template;
#[cfg(test)]
mod testutil;
mod types;

use std::{collections::HashMap, fmt};

use serde::Serialize;

use crate::{
    evaluator::{self, Endpoint},
    model::{Direction, Inventory, Origin, Policy},
};

pub use broad::broad_allow_before_deny;
pub use describe::{describe_entity, describe_rule};
pub use dns::egress_deny_without_dns;
pub use selectors::selector_matches_nothing;
pub use shadow::{shadowed_policies, shadowed_rules};
pub use template::{
    has_placeholder, placeholder_in_document, template_placeholders, warning_for_load_error,
};
pub use types::types_defaulting;

/// What a warning is about. The text form (`shadowed-rule`, ...) is what users see and what
/// `docs/lint.md` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LintCode {
    ShadowedRule,
    ShadowedPolicy,
    BroadAllowBeforeDeny,
    EgressDenyWithoutDns,
    SelectorMatchesNothing,
    TemplatePlaceholder,
    TypesDefaulting,
}

impl LintCode {
    pub const ALL: [LintCode; 7] = [
        LintCode::ShadowedRule,
        LintCode::ShadowedPolicy,
        LintCode::BroadAllowBeforeDeny,
        LintCode::EgressDenyWithoutDns,
        LintCode::SelectorMatchesNothing,
        LintCode::TemplatePlaceholder,
        LintCode::TypesDefaulting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LintCode::ShadowedRule => "shadowed-rule",
            LintCode::ShadowedPolicy => "shadowed-policy",
            LintCode::BroadAllowBeforeDeny => "broad-allow-before-deny",
            LintCode::EgressDenyWithoutDns => "egress-deny-without-dns",
            LintCode::SelectorMatchesNothing => "selector-matches-nothing",
            LintCode::TemplatePlaceholder => "template-placeholder",
            LintCode::TypesDefaulting => "types-defaulting",
        }
    }
}

impl fmt::Display for LintCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule position: its direction and 0-based index in the policy's `ingress`/`egress` list
/// (for Kubernetes policies, in the list of rules after conversion to Calico's model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RulePos {
    pub direction: Direction,
    pub index: usize,
}

impl fmt::Display for RulePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}", self.direction, self.index)
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: LintCode,
    /// The file and document of the object the warning is about.
    pub origin: Origin,
    /// The policy (`namespace/name` or `name`), when the warning is about one.
    pub policy: Option<String>,
    /// The rule, when the warning is about one.
    pub rule: Option<RulePos>,
    pub message: String,
    /// What to change; may span several lines (YAML snippets).
    pub suggestion: String,
}

impl Warning {
    /// A warning about a policy (and optionally one of its rules).
    pub fn for_policy(
        code: LintCode,
        policy: &Policy,
        rule: Option<(Direction, usize)>,
        message: impl Into<String>,
        suggestion: impl Into<String>,
    ) -> Warning {
        Warning {
            code,
            origin: policy.origin.clone(),
            policy: Some(policy.qualified_name()),
            rule: rule.map(|(direction, index)| RulePos { direction, index }),
            message: message.into(),
            suggestion: suggestion.into(),
        }
    }

    /// Where the warning points: `file (document n): policy p, ingress rule i`.
    pub fn location(&self) -> String {
        let mut s = self.origin.to_string();
        if let Some(p) = &self.policy {
            s.push_str(&format!(": policy {p}"));
        }
        if let Some(r) = &self.rule {
            s.push_str(&format!(", {r}"));
        }
        s
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "warning[{}]: {}", self.code, self.location())?;
        writeln!(f, "  {}", self.message)?;
        let mut lines = self.suggestion.lines();
        if let Some(first) = lines.next() {
            writeln!(f, "  fix: {first}")?;
            for l in lines {
                writeln!(f, "       {l}")?;
            }
        }
        Ok(())
    }
}

/// The result of linting an inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LintReport {
    pub warnings: Vec<Warning>,
    /// Information that is not a warning (e.g. a lint that was skipped, and why).
    pub notes: Vec<String>,
}

impl LintReport {
    /// Sorts warnings by file, document, policy, rule and code, and drops exact duplicates.
    pub fn normalize(&mut self) {
        self.warnings.sort_by(|a, b| {
            (&a.origin, &a.policy, &a.rule, a.code, &a.message)
                .cmp(&(&b.origin, &b.policy, &b.rule, b.code, &b.message))
        });
        self.warnings.dedup();
    }
}

/// Runs every lint.
pub fn lint(inv: &Inventory) -> LintReport {
    let mut report = LintReport::default();
    report.warnings.extend(shadowed_rules(inv));
    report.warnings.extend(shadowed_policies(inv));
    report.warnings.extend(broad_allow_before_deny(inv));
    report.warnings.extend(egress_deny_without_dns(inv));
    report.warnings.extend(template_placeholders(inv));
    report.warnings.extend(types_defaulting(inv));
    if has_endpoints(inv) {
        report.warnings.extend(selector_matches_nothing(inv));
    } else {
        report.notes.push(
            "selector-matches-nothing skipped: the files hold no pods, so there is nothing to \
             match selectors against (load the cluster's pods and namespaces with -f to enable it)"
                .to_string(),
        );
    }
    if inv.pods.is_empty() {
        report.notes.push(
            "no pods loaded: endpoint overlaps were judged from selectors alone (same selector, \
             all(), or the same namespace)"
                .to_string(),
        );
    }
    report.normalize();
    report
}

/// Whether the inventory has pods to check selectors against.
fn has_endpoints(inv: &Inventory) -> bool {
    !inv.pods.is_empty()
}

/// The endpoints policies could apply to in this inventory (pods with their own network
/// namespace, and host endpoints), and which of them each policy selects: computed once, so
/// the pairwise checks stay cheap on large inventories.
pub(crate) struct Selection<'a> {
    pub endpoints: Vec<Endpoint<'a>>,
    /// Per policy (keyed by address; never dereferenced): a flag per endpoint.
    sets: HashMap<*const Policy, Vec<bool>>,
}

impl<'a> Selection<'a> {
    pub fn new(inv: &'a Inventory) -> Selection<'a> {
        let endpoints: Vec<Endpoint<'a>> = inv
            .pods
            .iter()
            .filter(|p| !p.host_network)
            .map(Endpoint::Workload)
            .chain(inv.host_endpoints.iter().map(Endpoint::Host))
            .collect();
        let sets = inv
            .policies
            .iter()
            .map(|p| {
                let set = endpoints
                    .iter()
                    .map(|ep| evaluator::policy_selects(inv, p, ep))
                    .collect();
                (p as *const Policy, set)
            })
            .collect();
        Selection { endpoints, sets }
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Which endpoints the policy selects (one flag per [`Self::endpoints`] entry).
    pub fn of(&self, p: &Policy) -> &[bool] {
        self.sets
            .get(&(p as *const Policy))
            .map_or(&[], Vec::as_slice)
    }

    pub fn selects(&self, p: &Policy, i: usize) -> bool {
        self.of(p).get(i).copied().unwrap_or(false)
    }

    pub fn selects_any(&self, p: &Policy) -> bool {
        self.of(p).iter().any(|b| *b)
    }

    /// Whether some endpoint is selected by both.
    pub fn overlap(&self, p: &Policy, q: &Policy) -> bool {
        self.of(p).iter().zip(self.of(q)).any(|(a, b)| *a && *b)
    }

    /// Whether `q` selects at least one endpoint and `p` selects every one `q` does.
    pub fn superset(&self, p: &Policy, q: &Policy) -> bool {
        self.selects_any(q)
            && self
                .of(q)
                .iter()
                .zip(self.of(p))
                .all(|(qs, ps)| !*qs || *ps)
    }
}

/// The enforced (not staged) policies.
pub(crate) fn enforced(inv: &Inventory) -> impl Iterator<Item = &Policy> {
    inv.policies.iter().filter(|p| !p.kind.is_staged())
}

/// Enforced policies in evaluation order: tier order, then policy order, with each one's tier
/// position.
pub(crate) fn evaluation_order(inv: &Inventory) -> Vec<(usize, &Policy)> {
    let mut out = Vec::new();
    for (ti, tier) in evaluator::sorted_tiers(inv).iter().enumerate() {
        for p in evaluator::sorted_policies(enforced(inv).filter(|p| p.tier == tier.name)) {
            out.push((ti, p));
        }
    }
    out
}

/// `namespace "x"` or `all namespaces`, for messages.
pub(crate) fn scope_of(p: &Policy) -> String {
    match &p.namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "global".to_string(),
    }
}
