//! Generated inventories shared by every benchmark section: the same policies are given to
//! Enforcer, the iptables/ipset ruleset and the linear-scan eBPF reference.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use enforcer_user::{
    model::{
        Action, Direction, EntityRule, Inventory, Labels, Namespace, NetworkSet, Origin, Pod,
        Policy, PolicyKind, PortSpec, Protocol, Rule, StagedAction,
    },
    selector::Selector,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Rules per generated policy.
pub(crate) const RULES_PER_POLICY: usize = 10;
/// Label groups endpoints are spread over (control-plane inventories).
pub(crate) const GROUPS: usize = 10;
/// Destination port no rule allows.
pub(crate) const DENIED_PORT: u16 = 9;
pub(crate) const NETSET_PORT: u16 = 443;

pub(crate) fn origin() -> Origin {
    Origin {
        file: "bench.yaml".into(),
        document: 1,
    }
}

pub(crate) fn labels(kv: &[(&str, String)]) -> Labels {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Pod `i`'s addresses: 172.16.0.0/12 and fd00:172::/64.
pub(crate) fn pod_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000u32 + i as u32 + 1)
}
pub(crate) fn pod_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::from(0xfd00_0172_0000_0000_0000_0000_0000_0000u128 + i as u128 + 1)
}

/// Rule `r`'s source nets: a distinct /28 in 10.0.0.0/8 and a distinct /124 in fd00:10::/64.
pub(crate) fn rule_v4(r: usize) -> Ipv4Net {
    let base = 0x0a00_0000u32 | ((r as u32 & 0xf_ffff) << 4);
    Ipv4Net::new(Ipv4Addr::from(base), 28).unwrap_or_default()
}
pub(crate) fn rule_v6(r: usize) -> Ipv6Net {
    let base = 0xfd00_0010_0000_0000_0000_0000_0000_0000u128 | ((r as u128) << 4);
    Ipv6Net::new(Ipv6Addr::from(base), 124).unwrap_or_default()
}
/// Distinct destination ports the generated rules use. The compiler evaluates every (peer
/// class, port class) cell of a policy set, so distinct nets × distinct ports is its cost:
/// 1,000 rules with 1,000 distinct ports took 0.55 s to compile here (0.3 s with 16 ports).
pub(crate) const RULE_PORTS: usize = 16;

/// Rule `r`'s destination port (one of [`RULE_PORTS`]).
pub(crate) fn rule_port(r: usize) -> u16 {
    1000 + (r % RULE_PORTS) as u16
}
/// An address inside rule `r`'s net (`k` picks which).
pub(crate) fn in_rule_net(r: usize, v6: bool, k: usize) -> IpAddr {
    let host = 1 + (k % 14);
    if v6 {
        IpAddr::V6(Ipv6Addr::from(
            u128::from(rule_v6(r).network()) + host as u128,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            u32::from(rule_v4(r).network()) + host as u32,
        ))
    }
}

pub(crate) fn allow_from(nets: Vec<IpNet>, selector: Option<Selector>, port: u16) -> Rule {
    Rule {
        action: Action::Allow,
        protocol: Some(Protocol::TCP),
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        ip_version: None,
        source: EntityRule {
            nets,
            selector,
            ..EntityRule::default()
        },
        destination: EntityRule {
            ports: vec![PortSpec::Range(port, port)],
            ..EntityRule::default()
        },
        annotations: BTreeMap::new(),
    }
}

pub(crate) fn policy(j: usize, selector: Selector, ingress: Vec<Rule>) -> Policy {
    Policy {
        kind: PolicyKind::GlobalNetworkPolicy,
        namespace: None,
        name: format!("bench-{j}"),
        tier: "default".into(),
        order: Some(j as f64),
        selector,
        namespace_selector: None,
        service_account_selector: None,
        types: vec![Direction::Ingress],
        types_explicit: true,
        ingress,
        egress: Vec::new(),
        apply_on_forward: false,
        pre_dnat: false,
        do_not_track: false,
        staged_action: StagedAction::Set,
        origin: origin(),
    }
}

pub(crate) fn selector(text: &str) -> Result<Selector> {
    Selector::parse(text).map_err(|e| anyhow::anyhow!("selector {text:?}: {e}"))
}

/// `endpoints` pods in namespace `bench` (labels `app=bench`, `group=g<i % 10>`), pod 0 the
/// endpoint under test.
pub(crate) fn pods(inv: &mut Inventory, endpoints: usize) {
    inv.namespaces.push(Namespace {
        name: "bench".into(),
        labels: labels(&[("kubernetes.io/metadata.name", "bench".into())]),
        origin: origin(),
    });
    for i in 0..endpoints {
        inv.pods.push(Pod {
            namespace: "bench".into(),
            name: format!("p{i}"),
            labels: labels(&[
                ("app", "bench".into()),
                ("group", format!("g{}", i % GROUPS)),
            ]),
            service_account: "default".into(),
            ports: Vec::new(),
            host_network: false,
            node_name: None,
            ips: vec![IpAddr::V4(pod_v4(i)), IpAddr::V6(pod_v6(i))],
            origin: origin(),
        });
    }
}

/// `rules` allow rules (TCP from a distinct v4 and v6 net to one port each), 10 a policy, in
/// the default tier, all selecting every endpoint (the endpoint under test sees every rule).
pub(crate) fn rules_inventory(rules: usize, endpoints: usize) -> Result<Inventory> {
    let mut inv = Inventory::default();
    pods(&mut inv, endpoints);
    let all = selector("all()")?;
    for j in 0..rules.div_ceil(RULES_PER_POLICY) {
        let ingress = (j * RULES_PER_POLICY..((j + 1) * RULES_PER_POLICY).min(rules))
            .map(|r| {
                allow_from(
                    vec![IpNet::V4(rule_v4(r)), IpNet::V6(rule_v6(r))],
                    None,
                    rule_port(r),
                )
            })
            .collect();
        inv.policies.push(policy(j, all.clone(), ingress));
    }
    Ok(inv)
}

/// Deterministic xorshift.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random /24../32 IPv4 CIDRs in 11.0.0.0–126.255.255.255 (clear of the rule nets and pods).
pub(crate) fn random_cidrs(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|_| {
            let x = rng.next();
            let addr = 0x0b00_0000u32 + (x as u32 % (0x7f00_0000 - 0x0b00_0000));
            let len = 24 + ((x >> 32) % 9) as u8;
            Ipv4Net::new(Ipv4Addr::from(addr), len)
                .map(|n| n.trunc())
                .unwrap_or_default()
        })
        .collect()
}

/// 10 endpoints, 10 rules, and one rule allowing TCP 443 from a GlobalNetworkSet of `cidrs`.
pub(crate) fn netset_inventory(cidrs: &[Ipv4Net]) -> Result<Inventory> {
    let mut inv = rules_inventory(10, 10)?;
    inv.network_sets.push(NetworkSet {
        namespace: None,
        name: "bench-set".into(),
        labels: labels(&[("set", "bench".into())]),
        nets: cidrs.iter().map(|n| IpNet::V4(*n)).collect(),
        origin: origin(),
    });
    let rule = allow_from(Vec::new(), Some(selector("set == 'bench'")?), NETSET_PORT);
    inv.policies
        .push(policy(1_000_000, selector("all()")?, vec![rule]));
    Ok(inv)
}

/// N policies for M endpoints: policy j selects group g<j % 10> and allows TCP from one net
/// (its own port) and from the endpoints of the next group.
pub(crate) fn control_plane_inventory(policies: usize, endpoints: usize) -> Result<Inventory> {
    let mut inv = Inventory::default();
    pods(&mut inv, endpoints);
    for j in 0..policies {
        let g = j % GROUPS;
        let rules = vec![
            allow_from(
                vec![IpNet::V4(rule_v4(j)), IpNet::V6(rule_v6(j))],
                None,
                rule_port(j),
            ),
            allow_from(
                Vec::new(),
                Some(selector(&format!("group == 'g{}'", (g + 1) % GROUPS))?),
                rule_port(j + 1),
            ),
        ];
        inv.policies
            .push(policy(j, selector(&format!("group == 'g{g}'"))?, rules));
    }
    Ok(inv)
}
