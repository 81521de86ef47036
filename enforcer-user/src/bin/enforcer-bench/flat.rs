//! A flat, ordered ruleset: the same policies as Enforcer's, as an iptables (Calico-iptables /
//! kube-router style) or linear-scan eBPF enforcer sees them — one endpoint, one direction,
//! rules in evaluation order, first match wins, selectors expanded to IP sets.
//!
//! Contract (shared by `iptables.rs` and `linear.rs`; `flatten` implemented in this module):
//! a packet matches a [`FlatRule`] when its protocol equals `protocol` (or `protocol` is
//! `None`), its destination port lies in one of `dst_ports` (or `dst_ports` is empty), and
//! its peer address (the source for ingress) is in one of `src_nets` or in the IP set
//! `src_ipset` — or `src_nets` is empty and `src_ipset` is `None` (any peer). The first
//! matching rule's action decides; no match: `default`.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Result, bail};
use enforcer_user::{
    compile::EndpointId,
    evaluator::{
        Endpoint, EntityRef, RuleSelector, policy_selects, policy_view, sorted_policies,
        sorted_tiers,
    },
    model::{Action, Direction, EntityRule, Inventory, Policy, PortSpec, Rule, TierDefault},
};
use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlatAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatRule {
    pub action: FlatAction,
    /// IP protocol number (6 = TCP, 17 = UDP); `None` = any.
    pub protocol: Option<u8>,
    /// Inclusive destination port ranges; empty = any port.
    pub dst_ports: Vec<(u16, u16)>,
    /// Peer CIDRs (IPv4 and IPv6 mixed).
    pub src_nets: Vec<IpNet>,
    /// Index into [`FlatRuleset::ipsets`].
    pub src_ipset: Option<usize>,
    /// The policy the rule came from (chain names, explain).
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpSet {
    /// A valid ipset name (at most 31 characters).
    pub name: String,
    pub members: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatRuleset {
    pub rules: Vec<FlatRule>,
    /// What happens when no rule matches (Deny when any policy selects the endpoint).
    pub default: FlatAction,
    pub ipsets: Vec<IpSet>,
}

impl FlatRule {
    /// Whether the rule matches a packet from `src` with `protocol` to `dst_port` (the
    /// contract in the module documentation).
    pub(crate) fn matches(
        &self,
        ipsets: &[IpSet],
        src: IpAddr,
        protocol: u8,
        dst_port: Option<u16>,
    ) -> bool {
        if self.protocol.is_some_and(|p| p != protocol) {
            return false;
        }
        if !self.dst_ports.is_empty()
            && !dst_port
                .is_some_and(|port| self.dst_ports.iter().any(|&(a, b)| (a..=b).contains(&port)))
        {
            return false;
        }
        if self.src_nets.is_empty() && self.src_ipset.is_none() {
            return true;
        }
        self.src_nets.iter().any(|n| n.contains(&src))
            || self
                .src_ipset
                .and_then(|i| ipsets.get(i))
                .is_some_and(|set| set.members.iter().any(|n| n.contains(&src)))
    }
}

impl FlatRuleset {
    /// First match: (index of the deciding rule, action); `None` and the default when no
    /// rule matches.
    pub(crate) fn decide(
        &self,
        src: IpAddr,
        protocol: u8,
        dst_port: Option<u16>,
    ) -> (Option<usize>, FlatAction) {
        match self
            .rules
            .iter()
            .position(|r| r.matches(&self.ipsets, src, protocol, dst_port))
        {
            Some(i) => (Some(i), self.rules[i].action),
            None => (None, self.default),
        }
    }
}

/// The ingress policy of `endpoint` as a flat ruleset: the policies that select it, tier by
/// tier in evaluation order (the evaluator's own ordering and selection functions), each rule
/// one [`FlatRule`], rule selectors expanded to IP sets of the matching pods', host
/// endpoints' and network sets' addresses. A tier whose default is `Deny` ends the ruleset
/// with a default Deny; tiers whose default is `Pass` fall through to the next one; when no
/// tier ends it the workload profile allows.
///
/// Supported: workload endpoints; Allow and Deny rules with an optional protocol, destination
/// port ranges, and source nets *or* a source selector / service-account match. Anything else
/// (Pass and Log rules, `notNets`, `notSelector`, `namespaceSelector`, `notPorts`, named
/// ports, ICMP matches, `ipVersion`, source ports, destination nets or selectors, nets and a
/// selector in one rule, host endpoints) is an error naming the policy and rule.
pub(crate) fn flatten(inv: &Inventory, endpoint: &EndpointId) -> Result<FlatRuleset> {
    let pod = match endpoint {
        EndpointId::Pod { namespace, name } => inv
            .pod(namespace, name)
            .ok_or_else(|| anyhow::anyhow!("{endpoint} is not in the inventory"))?,
        EndpointId::Host { .. } => bail!(
            "{endpoint}: host endpoints (failsafe ports, pre-DNAT, apply-on-forward) are not flattened"
        ),
    };
    if pod.host_network {
        bail!("{endpoint} uses the host network: it is not a workload endpoint");
    }
    let ep = Endpoint::Workload(pod);
    let enforced = policy_view(inv, false);
    let mut out = FlatRuleset {
        rules: Vec::new(),
        default: FlatAction::Allow,
        ipsets: Vec::new(),
    };
    let mut sets: BTreeMap<Vec<IpNet>, usize> = BTreeMap::new();
    for tier in sorted_tiers(inv) {
        let applying = sorted_policies(enforced.iter().copied().filter(|p| {
            p.tier == tier.name && p.applies_to(Direction::Ingress) && policy_selects(inv, p, &ep)
        }));
        if applying.is_empty() {
            continue;
        }
        for p in applying {
            for (index, rule) in p.rules(Direction::Ingress).iter().enumerate() {
                let flat = flat_rule(inv, p, rule, &mut sets, &mut out.ipsets).map_err(|e| {
                    anyhow::anyhow!("policy {} ingress rule {index}: {e}", p.qualified_name())
                })?;
                out.rules.push(flat);
            }
        }
        if tier.default_action == TierDefault::Deny {
            out.default = FlatAction::Deny;
            break;
        }
    }
    Ok(out)
}

fn flat_rule(
    inv: &Inventory,
    policy: &Policy,
    rule: &Rule,
    sets: &mut BTreeMap<Vec<IpNet>, usize>,
    ipsets: &mut Vec<IpSet>,
) -> Result<FlatRule> {
    let action = match rule.action {
        Action::Allow => FlatAction::Allow,
        Action::Deny => FlatAction::Deny,
        other => bail!("{other} rules are not flattened (only Allow and Deny)"),
    };
    if rule.not_protocol.is_some() {
        bail!("notProtocol is not flattened");
    }
    if rule.icmp.is_some() || rule.not_icmp.is_some() {
        bail!("ICMP type/code matches are not flattened");
    }
    if rule.ip_version.is_some() {
        bail!("ipVersion is not flattened");
    }
    let src = &rule.source;
    let dst = &rule.destination;
    if !src.not_nets.is_empty()
        || src.not_selector.is_some()
        || src.namespace_selector.is_some()
        || !src.ports.is_empty()
        || !src.not_ports.is_empty()
    {
        bail!(
            "source notNets, notSelector, namespaceSelector and ports are not flattened (only nets or a selector)"
        );
    }
    if *dst
        != (EntityRule {
            ports: dst.ports.clone(),
            ..EntityRule::default()
        })
    {
        bail!("the destination may only give ports (no nets, selectors or notPorts)");
    }
    let protocol = rule.protocol.map(|p| p.0);
    let mut dst_ports = Vec::new();
    for spec in &dst.ports {
        match spec {
            PortSpec::Range(a, b) => dst_ports.push((*a, *b)),
            PortSpec::Named(name) => bail!("named port {name:?} is not flattened"),
        }
    }
    if !dst_ports.is_empty() && !rule.protocol.is_some_and(|p| p.has_ports()) {
        bail!("destination ports need a protocol with ports (TCP, UDP, SCTP, UDPLite)");
    }
    let selects = RuleSelector::new(policy, src);
    let src_ipset = if selects.is_active() {
        if !src.nets.is_empty() {
            bail!("source nets and a selector in one rule are not flattened");
        }
        let mut members = selected_members(inv, &selects);
        members.sort();
        members.dedup();
        let next = ipsets.len();
        let index = *sets.entry(members.clone()).or_insert(next);
        if index == next {
            ipsets.push(IpSet {
                name: format!("enf-s{index}"),
                members,
            });
        }
        Some(index)
    } else {
        None
    };
    Ok(FlatRule {
        action,
        protocol,
        dst_ports,
        src_nets: src.nets.clone(),
        src_ipset,
        policy: policy.qualified_name(),
    })
}

/// The addresses of every entity the rule selector picks: pods' (not host-networked)
/// addresses, host endpoints' expected addresses, network sets' nets.
fn selected_members(inv: &Inventory, selects: &RuleSelector<'_>) -> Vec<IpNet> {
    let host = |a: &IpAddr| IpNet::from(*a);
    let mut members = Vec::new();
    for pod in inv.pods.iter().filter(|p| !p.host_network) {
        if selects.picks(inv, &EntityRef::Pod(pod)) {
            members.extend(pod.ips.iter().map(host));
        }
    }
    for hep in &inv.host_endpoints {
        if selects.picks(inv, &EntityRef::Host(hep)) {
            members.extend(hep.expected_ips.iter().map(host));
        }
    }
    for set in &inv.network_sets {
        if selects.picks(inv, &EntityRef::NetworkSet(set)) {
            members.extend(set.nets.iter().copied());
        }
    }
    members
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use enforcer_user::{
        evaluator::{Options, Packet, Verdict, evaluate_packet},
        model::{Action, Inventory, Protocol},
    };

    use super::*;
    use crate::inventories::*;

    fn under_test() -> EndpointId {
        EndpointId::Pod {
            namespace: "bench".into(),
            name: "p0".into(),
        }
    }

    /// Every (source, protocol, port) packet into pod 0: first match over the flat ruleset
    /// equals the reference evaluator's ingress verdict.
    fn check(inv: &Inventory, sources: &[IpAddr]) -> usize {
        let flat = match flatten(inv, &under_test()) {
            Ok(f) => f,
            Err(e) => panic!("flatten: {e:#}"),
        };
        let mut ports: Vec<u16> = (0..RULE_PORTS as u16 + 1).map(|p| 1000 + p).collect();
        ports.extend([DENIED_PORT, NETSET_PORT, 80]);
        let mut checked = 0;
        let (mut allowed, mut denied) = (0, 0);
        for &src in sources {
            let dst = if src.is_ipv6() {
                IpAddr::V6(pod_v6(0))
            } else {
                IpAddr::V4(pod_v4(0))
            };
            if src == dst {
                continue;
            }
            for protocol in [Protocol::TCP, Protocol::UDP] {
                for &port in &ports {
                    let packet = Packet {
                        src,
                        dst,
                        protocol,
                        src_port: Some(40_000),
                        dst_port: Some(port),
                        icmp_type: None,
                        icmp_code: None,
                    };
                    let reference = evaluate_packet(inv, &packet, &Options::default());
                    let Some(ingress) = reference.ingress else {
                        panic!("pod 0 is not policed for {packet:?}");
                    };
                    let want = match ingress.verdict {
                        Verdict::Allow => FlatAction::Allow,
                        Verdict::Deny => FlatAction::Deny,
                    };
                    let (_, got) = flat.decide(src, protocol.0, Some(port));
                    assert_eq!(got, want, "{packet:?}");
                    match got {
                        FlatAction::Allow => allowed += 1,
                        FlatAction::Deny => denied += 1,
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            allowed > 0 && denied > 0,
            "{allowed} allowed, {denied} denied"
        );
        checked
    }

    fn spread_sources(rules: usize, endpoints: usize) -> Vec<IpAddr> {
        let mut v = Vec::new();
        for r in (0..rules + 3).step_by(7) {
            for v6 in [false, true] {
                v.push(in_rule_net(r, v6, r));
            }
        }
        for i in (0..endpoints).step_by(3) {
            v.push(IpAddr::V4(pod_v4(i)));
            v.push(IpAddr::V6(pod_v6(i)));
        }
        v.push("192.0.2.1".parse().unwrap_or(IpAddr::V4(pod_v4(0))));
        v
    }

    #[test]
    fn rules_inventory_matches_the_evaluator() {
        let inv = rules_inventory(120, 12).unwrap_or_else(|e| panic!("{e}"));
        let flat = flatten(&inv, &under_test()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(flat.rules.len(), 120);
        assert_eq!(flat.default, FlatAction::Deny);
        assert!(check(&inv, &spread_sources(120, 12)) > 1000);
    }

    #[test]
    fn control_plane_inventory_matches_the_evaluator() {
        // Selector rules: IP sets of the next group's pods.
        let inv = control_plane_inventory(40, 60).unwrap_or_else(|e| panic!("{e}"));
        let flat = flatten(&inv, &under_test()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!flat.ipsets.is_empty());
        assert!(flat.ipsets.iter().all(|s| s.name.len() <= 31));
        assert!(check(&inv, &spread_sources(40, 60)) > 1000);
    }

    #[test]
    fn netset_inventory_matches_the_evaluator() {
        let cidrs = random_cidrs(60, 7);
        let inv = netset_inventory(&cidrs).unwrap_or_else(|e| panic!("{e}"));
        let mut sources = spread_sources(10, 10);
        for n in &cidrs {
            sources.push(IpAddr::V4(n.network()));
        }
        let flat = flatten(&inv, &under_test()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(flat.ipsets.len(), 1);
        assert_eq!(flat.ipsets[0].members.len(), {
            let mut c = cidrs.clone();
            c.sort();
            c.dedup();
            c.len()
        });
        check(&inv, &sources);
    }

    #[test]
    fn unpolicied_endpoint_allows_everything() {
        let mut inv = rules_inventory(10, 3).unwrap_or_else(|e| panic!("{e}"));
        inv.policies.clear();
        let flat = flatten(&inv, &under_test()).unwrap_or_else(|e| panic!("{e}"));
        assert!(flat.rules.is_empty());
        assert_eq!(flat.default, FlatAction::Allow);
    }

    #[test]
    fn unsupported_rules_are_named_errors() {
        let mut inv = rules_inventory(10, 3).unwrap_or_else(|e| panic!("{e}"));
        inv.policies[0].ingress[3].action = Action::Pass;
        let e = flatten(&inv, &under_test()).err().map(|e| format!("{e:#}"));
        let e = e.unwrap_or_default();
        assert!(
            e.contains("bench-0") && e.contains("rule 3") && e.contains("Pass"),
            "{e}"
        );

        let mut inv = rules_inventory(10, 3).unwrap_or_else(|e| panic!("{e}"));
        inv.policies[0].ingress[0].source.not_nets = inv.policies[0].ingress[0].source.nets.clone();
        assert!(flatten(&inv, &under_test()).is_err());
    }
}
