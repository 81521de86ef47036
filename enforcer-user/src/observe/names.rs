//! Names for what the datapath reports by number: rule ids (what decided a verdict) and
//! interfaces (which endpoint).
//!
//! The datapath knows a verdict's deciding rule only as an index into the compiler's
//! [`RuleTable`]; [`RuleBook`] turns those indexes back into tier / policy / rule, built either
//! from a live [`RuleTable`] (the agent's flow log and metrics) or from the agent's state file
//! (`enforcer get`, with the agent down).

use std::{collections::BTreeMap, fmt};

use enforcer_common::ANY;
use serde::{Deserialize, Serialize};

use crate::{
    compile::{EndpointId, RuleTable},
    evaluator::Decision,
};

/// What decided a verdict, named the way operators find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum DecidedBy {
    /// An Allow or Deny rule of a policy.
    Rule {
        tier: String,
        /// `namespace/name` for namespaced policies, `name` for global ones.
        policy: String,
        /// The kind the policy was written as (`NetworkPolicy`, `GlobalNetworkPolicy`,
        /// `KubernetesNetworkPolicy`, `StagedNetworkPolicy`, ...).
        kind: String,
        /// `ingress` or `egress`: the policy section the rule is in.
        direction: String,
        /// 0-based index in that section.
        index: usize,
        /// `Allow` or `Deny`.
        action: String,
    },
    /// A tier applied to the endpoint but none of its rules decided: the tier's default
    /// action, Deny ("end-of-tier deny").
    EndOfTier { tier: String },
    /// No tier decided: the endpoint's profile allowed (Kubernetes' default allow).
    Profile { profile: String },
    /// No tier decided for a host endpoint without the default-allow profile.
    HostEndpointDefaultDeny,
    /// A failsafe port of host endpoints, open whatever the policy says.
    Failsafe { protocol: String, port: u16 },
    /// The tables had no verdict for the flow (the datapath's fail-closed
    /// `REASON_DENY_NO_VERDICT`, rule id `ANY`).
    NoVerdict,
    /// A rule id the rule table does not have (no synced state yet, or an event from before
    /// the last policy change).
    Unknown { rule_id: u32 },
}

impl DecidedBy {
    /// The deciding action, where the decision implies one.
    pub fn action(&self) -> Option<&str> {
        match self {
            DecidedBy::Rule { action, .. } => Some(action),
            DecidedBy::EndOfTier { .. }
            | DecidedBy::HostEndpointDefaultDeny
            | DecidedBy::NoVerdict => Some("Deny"),
            DecidedBy::Profile { .. } | DecidedBy::Failsafe { .. } => Some("Allow"),
            DecidedBy::Unknown { .. } => None,
        }
    }

    /// The tier, for decisions that belong to one.
    pub fn tier(&self) -> Option<&str> {
        match self {
            DecidedBy::Rule { tier, .. } | DecidedBy::EndOfTier { tier } => Some(tier),
            _ => None,
        }
    }

    fn of(decision: &Decision) -> DecidedBy {
        match decision {
            Decision::Rule(r) => DecidedBy::Rule {
                tier: r.tier.clone(),
                policy: r.policy.clone(),
                kind: policy_kind_name(r.kind),
                direction: r.direction.to_string(),
                index: r.index,
                action: r.action.to_string(),
            },
            Decision::TierDefault { tier } => DecidedBy::EndOfTier { tier: tier.clone() },
            Decision::Profile { profile } => DecidedBy::Profile {
                profile: profile.clone(),
            },
            Decision::HostEndpointDefaultDeny => DecidedBy::HostEndpointDefaultDeny,
            Decision::Failsafe { protocol, port } => DecidedBy::Failsafe {
                protocol: protocol_name(protocol.0),
                port: *port,
            },
            // The compiler never puts this in a table; treat it as unknown if it did.
            Decision::NotPoliced => DecidedBy::Unknown { rule_id: ANY },
        }
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::Rule {
                tier,
                policy,
                direction,
                index,
                action,
                ..
            } => write!(
                f,
                "tier {tier} / policy {policy} / {direction} rule {index} ({action})"
            ),
            DecidedBy::EndOfTier { tier } => write!(f, "tier {tier} / end-of-tier deny"),
            DecidedBy::Profile { profile } => write!(f, "profile {profile} (no policy decided)"),
            DecidedBy::HostEndpointDefaultDeny => f.write_str("host endpoint default deny"),
            DecidedBy::Failsafe { protocol, port } => write!(f, "failsafe {protocol}:{port}"),
            DecidedBy::NoVerdict => f.write_str("no verdict in the tables (fail closed)"),
            DecidedBy::Unknown { rule_id } => write!(f, "rule #{rule_id} (not in the rule table)"),
        }
    }
}

/// The serde name of a policy kind (`StagedNetworkPolicy`, ...).
fn policy_kind_name(kind: crate::model::PolicyKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

/// A protocol's lower-case name (`tcp`, `icmpv6`, ...) or its number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

/// The endpoint an interface carries, as the agent names it (the serde form of
/// [`EndpointId`]: `{"kind":"pod","namespace":..,"name":..}` or `{"kind":"host","name":..}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EndpointName {
    Pod { namespace: String, name: String },
    Host { name: String },
}

impl From<&EndpointId> for EndpointName {
    fn from(id: &EndpointId) -> Self {
        match id {
            EndpointId::Pod { namespace, name } => EndpointName::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            EndpointId::Host { name } => EndpointName::Host { name: name.clone() },
        }
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointName::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            EndpointName::Host { name } => write!(f, "host {name}"),
        }
    }
}

/// Rule ids → what they mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleBook {
    rules: BTreeMap<u32, DecidedBy>,
}

impl RuleBook {
    pub fn from_table(table: &RuleTable) -> RuleBook {
        RuleBook {
            rules: table
                .iter()
                .map(|r| (r.id, DecidedBy::of(&r.decision)))
                .collect(),
        }
    }

    pub fn from_entries(entries: impl IntoIterator<Item = (u32, DecidedBy)>) -> RuleBook {
        RuleBook {
            rules: entries.into_iter().collect(),
        }
    }

    /// What rule id `id` means (`ANY`: no verdict; unknown ids are reported as such).
    pub fn name(&self, id: u32) -> DecidedBy {
        if id == ANY {
            return DecidedBy::NoVerdict;
        }
        self.rules
            .get(&id)
            .cloned()
            .unwrap_or(DecidedBy::Unknown { rule_id: id })
    }

    pub fn get(&self, id: u32) -> Option<&DecidedBy> {
        self.rules.get(&id)
    }

    /// One past the highest rule id (how far to scan the rule counters).
    pub fn id_bound(&self) -> u32 {
        self.rules
            .keys()
            .next_back()
            .map_or(0, |id| id.saturating_add(1))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &DecidedBy)> {
        self.rules.iter().map(|(id, d)| (*id, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tier: &str, policy: &str, index: usize, action: &str) -> DecidedBy {
        DecidedBy::Rule {
            tier: tier.into(),
            policy: policy.into(),
            kind: "NetworkPolicy".into(),
            direction: "ingress".into(),
            index,
            action: action.into(),
        }
    }

    #[test]
    fn decisions_serialize_with_a_by_tag_and_round_trip() {
        let cases = [
            (
                rule("default", "ns/deny-db", 0, "Deny"),
                r#"{"by":"rule","tier":"default","policy":"ns/deny-db","kind":"NetworkPolicy","direction":"ingress","index":0,"action":"Deny"}"#,
            ),
            (
                DecidedBy::EndOfTier {
                    tier: "security".into(),
                },
                r#"{"by":"end-of-tier","tier":"security"}"#,
            ),
            (DecidedBy::NoVerdict, r#"{"by":"no-verdict"}"#),
            (
                DecidedBy::Failsafe {
                    protocol: "tcp".into(),
                    port: 22,
                },
                r#"{"by":"failsafe","protocol":"tcp","port":22}"#,
            ),
        ];
        for (d, json) in cases {
            assert_eq!(serde_json::to_string(&d).ok().as_deref(), Some(json));
            let back: Option<DecidedBy> = serde_json::from_str(json).ok();
            assert_eq!(back.as_ref(), Some(&d));
        }
    }

    #[test]
    fn display_names_tier_policy_and_rule() {
        assert_eq!(
            rule("default", "ns/deny-db", 2, "Deny").to_string(),
            "tier default / policy ns/deny-db / ingress rule 2 (Deny)"
        );
        assert_eq!(
            DecidedBy::EndOfTier { tier: "sec".into() }.to_string(),
            "tier sec / end-of-tier deny"
        );
    }

    #[test]
    fn rule_book_names_any_and_unknown_ids() {
        let book = RuleBook::from_entries([(0, rule("t", "p", 0, "Allow"))]);
        assert_eq!(book.name(0), rule("t", "p", 0, "Allow"));
        assert_eq!(book.name(ANY), DecidedBy::NoVerdict);
        assert_eq!(book.name(7), DecidedBy::Unknown { rule_id: 7 });
        assert_eq!(book.id_bound(), 1);
        assert_eq!(RuleBook::default().id_bound(), 0);
    }

    #[test]
    fn endpoint_names_match_the_compilers_serde_form() {
        let id = EndpointId::Pod {
            namespace: "prod".into(),
            name: "web-0".into(),
        };
        let mine = EndpointName::from(&id);
        assert_eq!(
            serde_json::to_value(&id).ok(),
            serde_json::to_value(&mine).ok()
        );
        assert_eq!(mine.to_string(), "pod prod/web-0");
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_name(6), "tcp");
        assert_eq!(protocol_name(58), "icmpv6");
        assert_eq!(protocol_name(47), "47");
    }
}
