//! The reference evaluator: the design brief's §2 (Calico's policy semantics) implemented
//! directly over the model, favouring obviousness over speed. It is the oracle every faster
//! path (compiled tables, the BPF datapath) is differentially tested against, and the engine
//! behind `enforcer explain`.
//!
//! A flow is judged twice: by the source endpoint's egress policy and by the destination
//! endpoint's ingress policy; it passes only when both allow. An address that belongs to no
//! pod and no host endpoint is a host outside the cluster and has no policy of its own.
//!
//! Where Kubernetes leaves behaviour open we do what Calico does (see `docs/semantics.md`):
//! ipBlock matches pod addresses; traffic from a pod to itself never leaves the pod and is
//! allowed; host-network pods are not workload endpoints (only host endpoints police them).

mod entity;
#[cfg(test)]
mod tests;
mod trace;

use std::{cmp::Ordering, net::IpAddr, str::FromStr};

pub use entity::{
    Endpoint, EntityRef, RuleSelector, endpoint_labels, entities_at, namespace_labels,
    namespace_selector_matches, service_account_labels, service_account_matches,
};
pub use trace::{
    Decision, DirectionTrace, EndpointInfo, Explanation, FlowSummary, PolicyTrace, RuleHit,
    RuleRef, StagedTrace, TierOutcome, TierTrace, Verdict,
};

use crate::model::{
    Action, Direction, EntityRule, HostEndpoint, Inventory, Policy, PolicyKind, PortSpec, Protocol,
    Rule, StagedAction, Tier, TierDefault,
};

/// The profile Calico gives host endpoints to allow traffic no policy decided.
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

/// One side of a flow as the user names it: `namespace/pod` or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Pod { namespace: String, name: String },
    Address(IpAddr),
}

impl FromStr for Peer {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Peer::Address(ip));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Peer::Pod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(EvalError::BadPeer(s.to_string())),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Peer::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// A flow to judge: who talks to whom, with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub src: Peer,
    pub dst: Peer,
    pub protocol: Protocol,
    /// Source port; `None` means unknown (an ephemeral port): rules constraining source
    /// ports do not match it and `notPorts` on the source do.
    pub src_port: Option<u16>,
    /// Destination port (protocols with ports).
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// 4 or 6: which address family to use for dual-stack pods. `None`: the family both
    /// sides have, IPv4 first.
    pub ip_version: Option<u8>,
}

/// Calico's failsafe ports: host-endpoint traffic no policy can close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe {
    /// (protocol, destination port) always allowed into a host endpoint.
    pub inbound: Vec<(Protocol, u16)>,
    /// (protocol, destination port) always allowed out of a host endpoint.
    pub outbound: Vec<(Protocol, u16)>,
}

impl Failsafe {
    /// Calico's defaults (`FailsafeInboundHostPorts`, `FailsafeOutboundHostPorts`).
    pub fn calico_defaults() -> Failsafe {
        let tcp = |p| (Protocol::TCP, p);
        let udp = |p| (Protocol::UDP, p);
        Failsafe {
            inbound: vec![
                tcp(22),
                udp(68),
                tcp(179),
                tcp(2379),
                tcp(2380),
                tcp(5473),
                tcp(6443),
                tcp(6666),
                tcp(6667),
            ],
            outbound: vec![
                udp(53),
                udp(67),
                tcp(179),
                tcp(2379),
                tcp(2380),
                tcp(5473),
                tcp(6443),
                tcp(6666),
                tcp(6667),
            ],
        }
    }

    pub fn none() -> Failsafe {
        Failsafe {
            inbound: Vec::new(),
            outbound: Vec::new(),
        }
    }
}

impl Default for Failsafe {
    fn default() -> Self {
        Failsafe::calico_defaults()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub failsafe: Failsafe,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("{0:?} is neither `namespace/pod` nor an IP address")]
    BadPeer(String),
    #[error("pod {0} is not in the loaded files; load the file that defines it with -f")]
    UnknownPod(String),
    #[error("pod {0} has no IP address (status.podIP / status.podIPs); add one to probe it")]
    PodWithoutAddress(String),
    #[error(
        "{src} and {dst} have no address family in common{}",
        if let Some(v) = .version { format!(" for IPv{v}") } else { String::new() }
    )]
    NoCommonFamily {
        src: String,
        dst: String,
        version: Option<u8>,
    },
    #[error("protocol {protocol} carries ports: give a destination port")]
    MissingPort { protocol: Protocol },
    #[error("--icmp-type/--icmp-code apply only to ICMP and ICMPv6, not {protocol}")]
    IcmpOnNonIcmp { protocol: Protocol },
    #[error("ip version must be 4 or 6, not {0}")]
    BadIpVersion(u8),
}

/// A concrete packet's header fields, as the datapath would see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

/// Judges a flow and explains the verdict.
pub fn explain(inv: &Inventory, flow: &FlowSpec, opts: &Options) -> Result<Explanation, EvalError> {
    if let Some(v) = flow.ip_version
        && v != 4
        && v != 6
    {
        return Err(EvalError::BadIpVersion(v));
    }
    let is_icmp = matches!(flow.protocol, Protocol::ICMP | Protocol::ICMPV6);
    if !is_icmp && (flow.icmp_type.is_some() || flow.icmp_code.is_some()) {
        return Err(EvalError::IcmpOnNonIcmp {
            protocol: flow.protocol,
        });
    }
    if flow.protocol.has_ports() && flow.dst_port.is_none() {
        return Err(EvalError::MissingPort {
            protocol: flow.protocol,
        });
    }
    let src_addrs = peer_addresses(inv, &flow.src)?;
    let dst_addrs = peer_addresses(inv, &flow.dst)?;
    let (src, dst) = pick_family(&src_addrs, &dst_addrs, flow.ip_version).ok_or_else(|| {
        EvalError::NoCommonFamily {
            src: flow.src.to_string(),
            dst: flow.dst.to_string(),
            version: flow.ip_version,
        }
    })?;
    // ICMP type and code exist only for the family's own ICMP (ICMP over IPv4, ICMPv6 over
    // IPv6), as the datapath parses them and as Calico renders ICMP rules per IP version.
    let is_icmp = match flow.protocol {
        Protocol::ICMP => src.is_ipv4(),
        Protocol::ICMPV6 => src.is_ipv6(),
        _ => false,
    };
    let packet = Packet {
        src,
        dst,
        protocol: flow.protocol,
        src_port: if flow.protocol.has_ports() {
            flow.src_port
        } else {
            None
        },
        dst_port: if flow.protocol.has_ports() {
            flow.dst_port
        } else {
            None
        },
        icmp_type: if is_icmp { flow.icmp_type } else { None },
        icmp_code: if is_icmp { flow.icmp_code } else { None },
    };
    // A pod named explicitly is that pod even when it is host-networked.
    let src_ep = match &flow.src {
        Peer::Pod { namespace, name } => endpoint_for_pod(inv, namespace, name, src),
        Peer::Address(ip) => Endpoint::for_address(inv, *ip),
    };
    let dst_ep = match &flow.dst {
        Peer::Pod { namespace, name } => endpoint_for_pod(inv, namespace, name, dst),
        Peer::Address(ip) => Endpoint::for_address(inv, *ip),
    };
    Ok(judge(inv, &packet, &src_ep, &dst_ep, opts))
}

/// Judges a concrete packet (addresses resolved to endpoints by the inventory).
pub fn evaluate_packet(inv: &Inventory, packet: &Packet, opts: &Options) -> Explanation {
    let src_ep = Endpoint::for_address(inv, packet.src);
    let dst_ep = Endpoint::for_address(inv, packet.dst);
    judge(inv, packet, &src_ep, &dst_ep, opts)
}

fn endpoint_for_pod<'a>(inv: &'a Inventory, ns: &str, name: &str, addr: IpAddr) -> Endpoint<'a> {
    match inv.pod(ns, name) {
        Some(pod) if !pod.host_network => Endpoint::Workload(pod),
        _ => Endpoint::for_address(inv, addr),
    }
}

fn peer_addresses(inv: &Inventory, peer: &Peer) -> Result<Vec<IpAddr>, EvalError> {
    match peer {
        Peer::Address(ip) => Ok(vec![*ip]),
        Peer::Pod { namespace, name } => {
            let pod = inv
                .pod(namespace, name)
                .ok_or_else(|| EvalError::UnknownPod(peer.to_string()))?;
            if pod.ips.is_empty() {
                return Err(EvalError::PodWithoutAddress(peer.to_string()));
            }
            Ok(pod.ips.clone())
        }
    }
}

fn pick_family(src: &[IpAddr], dst: &[IpAddr], version: Option<u8>) -> Option<(IpAddr, IpAddr)> {
    let versions: &[u8] = match version {
        Some(4) => &[4],
        Some(6) => &[6],
        _ => &[4, 6],
    };
    versions.iter().find_map(|&v| {
        let fam = |a: &&IpAddr| if v == 4 { a.is_ipv4() } else { a.is_ipv6() };
        Some((*src.iter().find(fam)?, *dst.iter().find(fam)?))
    })
}

fn judge(
    inv: &Inventory,
    packet: &Packet,
    src_ep: &Endpoint<'_>,
    dst_ep: &Endpoint<'_>,
    opts: &Options,
) -> Explanation {
    let mut notes = Vec::new();
    let same_endpoint = src_ep.is_policed() && src_ep == dst_ep;
    let (egress, ingress) = if is_icmpv6_neighbour_discovery(packet) {
        notes.push(format!(
            "ICMPv6 type {} (neighbour discovery / MLD) is always allowed before policy, as \
             Felix's ICMPv6Filter does: IPv6 cannot work without it",
            packet.icmp_type.unwrap_or_default()
        ));
        (None, None)
    } else if same_endpoint {
        notes.push(
            "source and destination are the same endpoint: the traffic never leaves it, so no \
             policy applies (Calico behaves the same)"
                .to_string(),
        );
        (None, None)
    } else {
        (
            src_ep
                .is_policed()
                .then(|| judge_direction(inv, packet, src_ep, Direction::Egress, opts)),
            dst_ep
                .is_policed()
                .then(|| judge_direction(inv, packet, dst_ep, Direction::Ingress, opts)),
        )
    };
    for (ep, side) in [(src_ep, "source"), (dst_ep, "destination")] {
        if let Endpoint::Host(hep) = ep
            && hep.interface_name.as_deref() == Some("*")
        {
            notes.push(format!(
                "{side} is the all-interfaces host endpoint {}",
                hep.name
            ));
        }
        if let Endpoint::External(Some(pod)) = ep {
            notes.push(format!(
                "{side} pod {}/{} uses the host network: it is not a workload endpoint, so pod \
                 policy does not apply to it (as in Calico)",
                pod.namespace, pod.name
            ));
        }
    }
    let verdict_of = |t: &Option<DirectionTrace>| t.as_ref().map_or(Verdict::Allow, |t| t.verdict);
    let staged_of =
        |t: &Option<DirectionTrace>| t.as_ref().map_or(Verdict::Allow, |t| t.staged_verdict);
    let verdict = verdict_of(&egress).and(verdict_of(&ingress));
    let staged_verdict = staged_of(&egress).and(staged_of(&ingress));
    Explanation {
        verdict,
        staged_verdict,
        flow: FlowSummary::of(packet),
        source: src_ep.info(packet.src),
        destination: dst_ep.info(packet.dst),
        egress,
        ingress,
        notes,
    }
}

/// ICMPv6 neighbour discovery and MLD (types 130-133, 135, 136), which Calico (and the
/// datapath) pass before any policy.
pub fn is_icmpv6_neighbour_discovery(packet: &Packet) -> bool {
    packet.protocol == Protocol::ICMPV6
        && packet.src.is_ipv6()
        && matches!(packet.icmp_type, Some(130..=133 | 135 | 136))
}

/// Sort key of tiers and policies: ascending order, missing order after every number, ties
/// by name.
fn order_cmp(a: Option<f64>, an: &str, b: Option<f64>, bn: &str) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| an.cmp(bn))
}

/// The name Calico sorts policies by when their orders tie.
pub fn policy_sort_name(p: &Policy) -> String {
    match (&p.namespace, p.kind) {
        (Some(ns), PolicyKind::KubernetesNetworkPolicy) => format!("{ns}/knp.default.{}", p.name),
        (Some(ns), _) => format!("{ns}/{}", p.name),
        (None, _) => p.name.clone(),
    }
}

/// Tiers in evaluation order.
pub fn sorted_tiers(inv: &Inventory) -> Vec<Tier> {
    let mut tiers = inv.tiers_with_builtins();
    tiers.sort_by(|a, b| order_cmp(a.order, &a.name, b.order, &b.name));
    tiers
}

/// Policies of one tier in evaluation order.
pub fn sorted_policies<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Vec<&'a Policy> {
    let mut v: Vec<&Policy> = policies.into_iter().collect();
    v.sort_by(|a, b| order_cmp(a.order, &policy_sort_name(a), b.order, &policy_sort_name(b)));
    v
}

/// The enforced policy set, or the set as it would be with every staged policy enforced
/// (a staged `Set` replaces the enforced policy of the same name or adds itself; a staged
/// `Delete` removes it).
pub fn policy_view(inv: &Inventory, staged: bool) -> Vec<&Policy> {
    let enforced = inv.policies.iter().filter(|p| !p.kind.is_staged());
    if !staged {
        return enforced.collect();
    }
    let staged_pols: Vec<&Policy> = inv.policies.iter().filter(|p| p.kind.is_staged()).collect();
    let replaced = |p: &Policy| {
        staged_pols.iter().any(|s| {
            s.kind.is_global() == p.kind.is_global()
                && s.namespace == p.namespace
                && s.name == p.name
                && p.kind != PolicyKind::KubernetesNetworkPolicy
        })
    };
    let mut out: Vec<&Policy> = enforced.filter(|p| !replaced(p)).collect();
    out.extend(
        staged_pols
            .into_iter()
            .filter(|s| s.staged_action == StagedAction::Set),
    );
    out
}

/// Whether a policy selects an endpoint (ignoring `types`), as Calico's policy selector
/// does: a namespaced policy selects workloads of its namespace; a global policy's
/// `namespaceSelector` and `serviceAccountSelector` look at the namespace's and service
/// account's labels, and in them (and in the policy selector, once either is set) `all()`
/// means "any workload" (libcalico-go `globalnetworkpolicyprocessor.go`).
pub fn policy_selects(inv: &Inventory, policy: &Policy, ep: &Endpoint<'_>) -> bool {
    match ep {
        Endpoint::Workload(pod) => {
            if let Some(ns) = &policy.namespace
                && ns != &pod.namespace
            {
                return false;
            }
            policy.selector.evaluate(&endpoint_labels(ep), false)
                && policy.namespace_selector.as_ref().is_none_or(|s| {
                    s.evaluate_with(&namespace_labels(inv, &pod.namespace), true, false)
                })
                && policy.service_account_selector.as_ref().is_none_or(|s| {
                    s.evaluate_with(
                        &service_account_labels(inv, &pod.namespace, &pod.service_account),
                        true,
                        false,
                    )
                })
        }
        Endpoint::Host(_) => {
            if policy.namespace.is_some() {
                return false;
            }
            let scoped =
                policy.namespace_selector.is_some() || policy.service_account_selector.is_some();
            let empty = crate::model::Labels::new();
            let selector_ok = if scoped {
                policy
                    .selector
                    .evaluate_with(&endpoint_labels(ep), false, true)
            } else {
                policy.selector.evaluate(&endpoint_labels(ep), true)
            };
            selector_ok
                && policy
                    .namespace_selector
                    .as_ref()
                    .is_none_or(|s| s.evaluate_with(&empty, false, true))
                && policy
                    .service_account_selector
                    .as_ref()
                    .is_none_or(|s| s.evaluate_with(&empty, false, true))
        }
        Endpoint::External(_) => false,
    }
}

fn judge_direction(
    inv: &Inventory,
    packet: &Packet,
    ep: &Endpoint<'_>,
    direction: Direction,
    opts: &Options,
) -> DirectionTrace {
    let (verdict, decided_by, tiers, logs) =
        run_tiers(inv, &policy_view(inv, false), packet, ep, direction, opts);
    let (staged_verdict, staged_decided_by, staged_tiers, _) =
        run_tiers(inv, &policy_view(inv, true), packet, ep, direction, opts);
    // Report every staged policy that selects the endpoint and what it would do on its own.
    let staged = inv
        .policies
        .iter()
        .filter(|p| p.kind.is_staged() && p.applies_to(direction) && policy_selects(inv, p, ep))
        .map(|p| {
            let hits = policy_hits(inv, p, packet, direction);
            StagedTrace {
                policy: p.qualified_name(),
                kind: p.kind,
                tier: p.tier.clone(),
                staged_action: p.staged_action,
                outcome: hits.last().map(|h| h.action).filter(|a| *a != Action::Log),
                hits,
            }
        })
        .collect();
    DirectionTrace {
        direction,
        endpoint: ep.name(),
        verdict,
        decided_by,
        tiers,
        logs,
        staged_verdict,
        staged_decided_by,
        staged_tiers: if staged_verdict != verdict {
            staged_tiers
        } else {
            Vec::new()
        },
        staged,
    }
}

/// Rule hits of one policy for a packet: Log rules and the first Allow/Deny/Pass.
fn policy_hits(inv: &Inventory, p: &Policy, packet: &Packet, direction: Direction) -> Vec<RuleHit> {
    let mut hits = Vec::new();
    for (index, rule) in p.rules(direction).iter().enumerate() {
        if rule_matches(inv, p, rule, packet) {
            hits.push(RuleHit {
                index,
                action: rule.action,
            });
            if rule.action != Action::Log {
                break;
            }
        }
    }
    hits
}

type TierRun = (Verdict, Decision, Vec<TierTrace>, Vec<RuleRef>);

fn run_tiers(
    inv: &Inventory,
    policies: &[&Policy],
    packet: &Packet,
    ep: &Endpoint<'_>,
    direction: Direction,
    opts: &Options,
) -> TierRun {
    let mut traces = Vec::new();
    let mut logs = Vec::new();
    if let Endpoint::Host(hep) = ep
        && let Some((protocol, port)) = failsafe_hit(&opts.failsafe, hep, packet, direction)
    {
        return (
            Verdict::Allow,
            Decision::Failsafe { protocol, port },
            traces,
            logs,
        );
    }
    for tier in sorted_tiers(inv) {
        let applying = sorted_policies(policies.iter().copied().filter(|p| {
            p.tier == tier.name && p.applies_to(direction) && policy_selects(inv, p, ep)
        }));
        if applying.is_empty() {
            continue;
        }
        let mut trace = TierTrace {
            tier: tier.name.clone(),
            order: tier.order,
            default_action: tier.default_action,
            policies: Vec::new(),
            outcome: TierOutcome::DefaultDeny,
        };
        let mut decided: Option<(Action, RuleRef)> = None;
        for p in applying {
            let hits = policy_hits(inv, p, packet, direction);
            let rule_ref = |index: usize, action: Action| RuleRef {
                tier: tier.name.clone(),
                policy: p.qualified_name(),
                kind: p.kind,
                direction,
                index,
                action,
                origin: p.origin.clone(),
            };
            for h in &hits {
                if h.action == Action::Log {
                    logs.push(rule_ref(h.index, h.action));
                }
            }
            let last = hits.last().copied().filter(|h| h.action != Action::Log);
            trace.policies.push(PolicyTrace {
                policy: p.qualified_name(),
                kind: p.kind,
                order: p.order,
                hits,
                outcome: last.map(|h| h.action),
            });
            if let Some(h) = last {
                decided = Some((h.action, rule_ref(h.index, h.action)));
                break;
            }
        }
        match decided {
            Some((Action::Allow, r)) => {
                trace.outcome = TierOutcome::Allow;
                traces.push(trace);
                return (Verdict::Allow, Decision::Rule(r), traces, logs);
            }
            Some((Action::Deny, r)) => {
                trace.outcome = TierOutcome::Deny;
                traces.push(trace);
                return (Verdict::Deny, Decision::Rule(r), traces, logs);
            }
            Some((_, _)) => {
                trace.outcome = TierOutcome::Pass;
                traces.push(trace);
            }
            None => match tier.default_action {
                TierDefault::Deny => {
                    trace.outcome = TierOutcome::DefaultDeny;
                    traces.push(trace);
                    return (
                        Verdict::Deny,
                        Decision::TierDefault {
                            tier: tier.name.clone(),
                        },
                        traces,
                        logs,
                    );
                }
                TierDefault::Pass => {
                    trace.outcome = TierOutcome::DefaultPass;
                    traces.push(trace);
                }
            },
        }
    }
    let (verdict, decision) = profile_decision(ep);
    (verdict, decision, traces, logs)
}

fn profile_decision(ep: &Endpoint<'_>) -> (Verdict, Decision) {
    match ep {
        Endpoint::Workload(pod) => (
            Verdict::Allow,
            Decision::Profile {
                profile: format!("kns.{}", pod.namespace),
            },
        ),
        Endpoint::Host(hep) => {
            if hep.profiles.iter().any(|p| p == DEFAULT_ALLOW_PROFILE) {
                (
                    Verdict::Allow,
                    Decision::Profile {
                        profile: DEFAULT_ALLOW_PROFILE.to_string(),
                    },
                )
            } else {
                (Verdict::Deny, Decision::HostEndpointDefaultDeny)
            }
        }
        Endpoint::External(_) => (Verdict::Allow, Decision::NotPoliced),
    }
}

fn failsafe_hit(
    failsafe: &Failsafe,
    _hep: &HostEndpoint,
    packet: &Packet,
    direction: Direction,
) -> Option<(Protocol, u16)> {
    let port = packet.dst_port?;
    let list = match direction {
        Direction::Ingress => &failsafe.inbound,
        Direction::Egress => &failsafe.outbound,
    };
    list.iter()
        .find(|(proto, p)| *proto == packet.protocol && *p == port)
        .copied()
}

/// Whether one rule matches a packet, in the context of its policy.
pub fn rule_matches(inv: &Inventory, policy: &Policy, rule: &Rule, packet: &Packet) -> bool {
    let v6 = packet.src.is_ipv6();
    if let Some(v) = rule.ip_version
        && (v == 6) != v6
    {
        return false;
    }
    if let Some(p) = rule.protocol
        && p != packet.protocol
    {
        return false;
    }
    if let Some(p) = rule.not_protocol
        && p == packet.protocol
    {
        return false;
    }
    if let Some(icmp) = rule.icmp
        && !icmp_matches(icmp, packet)
    {
        return false;
    }
    if let Some(icmp) = rule.not_icmp
        && icmp_matches(icmp, packet)
    {
        return false;
    }
    entity_matches(
        inv,
        policy,
        &rule.source,
        packet.src,
        packet.src_port,
        packet.protocol,
    ) && entity_matches(
        inv,
        policy,
        &rule.destination,
        packet.dst,
        packet.dst_port,
        packet.protocol,
    )
}

fn icmp_matches(icmp: crate::model::IcmpMatch, packet: &Packet) -> bool {
    if !matches!(packet.protocol, Protocol::ICMP | Protocol::ICMPV6) {
        return false;
    }
    packet.icmp_type == Some(icmp.icmp_type)
        && icmp.code.is_none_or(|c| packet.icmp_code == Some(c))
}

/// Whether an address (with its port) matches a rule's source or destination.
///
/// Mirrors how Calico turns an entity rule into one selector (libcalico-go
/// `updateprocessors/rules.go`, `getEndpointSelector`): the rule's `selector` and
/// `serviceAccounts` are ANDed with a namespace clause (the rule's `namespaceSelector`, or
/// for a namespaced policy its own namespace) as soon as any of `selector`,
/// `serviceAccounts`, `notSelector` or `namespaceSelector` is set; `notSelector` itself is
/// not namespaced. An address matches a selector when any entity owning it (pod, host
/// endpoint, network set) matches.
fn entity_matches(
    inv: &Inventory,
    policy: &Policy,
    er: &EntityRule,
    addr: IpAddr,
    port: Option<u16>,
    protocol: Protocol,
) -> bool {
    if !er.nets.is_empty() && !er.nets.iter().any(|n| n.contains(&addr)) {
        return false;
    }
    if er.not_nets.iter().any(|n| n.contains(&addr)) {
        return false;
    }
    let entities = entity::entities_at(inv, addr);
    let selects = entity::RuleSelector::new(policy, er);
    let selected: Vec<&EntityRef<'_>> = entities.iter().filter(|e| selects.picks(inv, e)).collect();
    if selects.is_active() && selected.is_empty() {
        return false;
    }
    if let Some(ns) = &er.not_selector
        && entities
            .iter()
            .any(|e| ns.evaluate(&e.labels(), e.namespace().is_none()))
    {
        return false;
    }
    let port_ok = |spec: &PortSpec| -> bool {
        let Some(port) = port else { return false };
        match spec {
            PortSpec::Range(a, b) => (*a..=*b).contains(&port),
            PortSpec::Named(name) => {
                // A named port resolves against the endpoints at this address that the
                // rule's selector picks (every endpoint when it has none), as Calico's
                // named-port IP sets do.
                let candidates: Vec<&EntityRef<'_>> = if selects.is_active() {
                    selected.clone()
                } else {
                    entities.iter().collect()
                };
                candidates.iter().any(|e| {
                    e.named_ports()
                        .iter()
                        .any(|np| np.name == *name && np.port == port && np.protocol == protocol)
                })
            }
        }
    };
    if !er.ports.is_empty() && !er.ports.iter().any(port_ok) {
        return false;
    }
    if er.not_ports.iter().any(port_ok) {
        return false;
    }
    true
}
