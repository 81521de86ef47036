//! What the evaluator reports: the verdict and how it was reached, step by step.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Action, Direction, Origin, PolicyKind, Protocol, StagedAction, TierDefault};

use super::Packet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    /// Both must allow.
    pub fn and(self, other: Verdict) -> Verdict {
        if self == Verdict::Allow && other == Verdict::Allow {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// The whole answer for one flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The verdict if every staged policy were enforced.
    pub staged_verdict: Verdict,
    pub flow: FlowSummary,
    pub source: EndpointInfo,
    pub destination: EndpointInfo,
    /// The source endpoint's egress; absent when the source is not policed.
    pub egress: Option<DirectionTrace>,
    /// The destination endpoint's ingress; absent when the destination is not policed.
    pub ingress: Option<DirectionTrace>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowSummary {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

impl FlowSummary {
    pub fn of(p: &Packet) -> FlowSummary {
        FlowSummary {
            src: p.src,
            dst: p.dst,
            protocol: p.protocol.to_string(),
            src_port: p.src_port,
            dst_port: p.dst_port,
            icmp_type: p.icmp_type,
            icmp_code: p.icmp_code,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointInfo {
    /// `pod`, `host-endpoint`, `host-network-pod` or `external`.
    pub kind: String,
    pub name: Option<String>,
    pub address: IpAddr,
}

/// One endpoint's policy in one direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectionTrace {
    pub direction: Direction,
    pub endpoint: String,
    pub verdict: Verdict,
    pub decided_by: Decision,
    /// The tiers that applied, in order, up to the one that decided.
    pub tiers: Vec<TierTrace>,
    /// Log rules hit on the way.
    pub logs: Vec<RuleRef>,
    /// The verdict if staged policies were enforced.
    pub staged_verdict: Verdict,
    pub staged_decided_by: Decision,
    /// The staged run's tiers, when its verdict differs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub staged_tiers: Vec<TierTrace>,
    /// Each staged policy selecting the endpoint, and what it would do on its own.
    pub staged: Vec<StagedTrace>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierTrace {
    pub tier: String,
    pub order: Option<f64>,
    pub default_action: TierDefault,
    /// Policies of the tier that apply, in order, up to the one that decided.
    pub policies: Vec<PolicyTrace>,
    pub outcome: TierOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierOutcome {
    /// A rule allowed.
    Allow,
    /// A rule denied.
    Deny,
    /// A rule passed to the next tier.
    Pass,
    /// No rule decided; the tier's default action denied.
    DefaultDeny,
    /// No rule decided; the tier's default action passed.
    DefaultPass,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyTrace {
    pub policy: String,
    pub kind: PolicyKind,
    pub order: Option<f64>,
    /// Rules that matched: Log rules and the first Allow/Deny/Pass.
    pub hits: Vec<RuleHit>,
    /// The action that ended the policy's evaluation, if any.
    pub outcome: Option<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    /// 0-based index in the policy's rules for this direction.
    pub index: usize,
    pub action: Action,
}

/// A rule, named the way operators find it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRef {
    pub tier: String,
    pub policy: String,
    pub kind: PolicyKind,
    pub direction: Direction,
    /// 0-based index in the policy's `ingress` or `egress` list.
    pub index: usize,
    pub action: Action,
    pub origin: Origin,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tier {} / policy {} / {} rule {} ({})",
            self.tier, self.policy, self.direction, self.index, self.action
        )
    }
}

/// What decided a direction's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Decision {
    /// An Allow or Deny rule.
    Rule(RuleRef),
    /// A tier applied but none of its rules decided: its default action (Deny).
    TierDefault { tier: String },
    /// No tier decided: the endpoint's profile allowed (Kubernetes default allow).
    Profile { profile: String },
    /// No tier decided for a host endpoint without the default-allow profile.
    HostEndpointDefaultDeny,
    /// A failsafe port: host-endpoint traffic policy cannot close.
    Failsafe { protocol: Protocol, port: u16 },
    /// Not an endpoint Enforcer polices.
    NotPoliced,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Rule(r) => write!(f, "{r}"),
            Decision::TierDefault { tier } => write!(
                f,
                "end of tier {tier}: a policy in it applied but no rule matched (default action Deny)"
            ),
            Decision::Profile { profile } => {
                write!(f, "no policy decided: profile {profile} allows")
            }
            Decision::HostEndpointDefaultDeny => write!(
                f,
                "no policy decided: host endpoints without the projectcalico-default-allow profile deny"
            ),
            Decision::Failsafe { protocol, port } => {
                write!(
                    f,
                    "failsafe port {protocol}:{port} (always open on host endpoints)"
                )
            }
            Decision::NotPoliced => write!(f, "not policed"),
        }
    }
}

/// A staged policy's view of the flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagedTrace {
    pub policy: String,
    pub kind: PolicyKind,
    pub tier: String,
    pub staged_action: StagedAction,
    pub hits: Vec<RuleHit>,
    /// The Allow/Deny/Pass the staged policy would take, if any rule matched.
    pub outcome: Option<Action>,
}
