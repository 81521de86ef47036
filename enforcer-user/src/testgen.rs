//! Random inventories and packets for differential tests (`testgen` feature, and `cfg(test)`).
//!
//! [`case`] generates a [`Case`]: an [`Inventory`] built directly as model types (2–4
//! namespaces, 3–12 pods with IPv4/IPv6 addresses in 198.18.0.0/15 and fd00:198:18::/48,
//! service accounts, named ports, network sets, host endpoints, 0–2 tiers and 1–8 policies of
//! every kind with rules over a small vocabulary, so that selectors, nets and ports overlap
//! often), failsafe options, and probe seeds. A seed is resolved against the inventory by
//! [`resolve`] into a [`Probe`]: a local endpoint, a direction and a packet whose peer is a
//! pod or host address, a boundary address of some net, or a random address, with ports near
//! rule boundaries. Everything is drawn from small integers, so proptest shrinks failures to
//! small inventories; [`describe`] prints one compactly.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use proptest::{prelude::*, sample::Index};

use crate::{
    compile::EndpointId,
    evaluator::{DEFAULT_ALLOW_PROFILE, Failsafe, Options, Packet},
    model::{
        Action, Direction, EntityRule, HostEndpoint, IcmpMatch, Inventory, Labels, NamedPort,
        Namespace, NetworkSet, Origin, Pod, Policy, PolicyKind, PortSpec, Protocol, Rule,
        ServiceAccount, ServiceAccountMatch, StagedAction, Tier, TierDefault, default_calico_types,
        default_kubernetes_types,
    },
    selector::Selector,
};

/// Endpoint selectors (policy `selector`, rule `selector`/`notSelector`).
pub const ENDPOINT_SELECTORS: &[&str] = &[
    "all()",
    "app == 'a'",
    "app == 'b'",
    "app != 'a'",
    "has(tier)",
    "!has(app)",
    "app in {'a', 'c'}",
    "tier not in {'db'}",
    "app == 'a' && tier == 'web'",
    "app == 'b' || env == 'prod'",
    "global()",
    "kind == 'feed'",
    "has(kind)",
    "role == 'node'",
    "projectcalico.org/namespace == 'ns1'",
    "projectcalico.org/serviceaccount == 'sa1'",
    "projectcalico.org/orchestrator == 'k8s'",
    "app starts with 'b'",
    "!global() && has(app)",
];

/// Policy (endpoint) selectors: broad ones more often, so policies apply.
pub const POLICY_SELECTORS: &[&str] = &[
    "all()",
    "all()",
    "all()",
    "has(app)",
    "app != 'a'",
    "app == 'a'",
    "app == 'b' || env == 'prod'",
    "tier not in {'db'}",
    "role == 'node'",
    "global()",
    "!global() && has(app)",
    "projectcalico.org/namespace == 'ns1'",
];

/// Kubernetes-expressible pod selectors.
pub const POD_SELECTORS: &[&str] = &[
    "all()",
    "app == 'a'",
    "app == 'b'",
    "has(tier)",
    "!has(app)",
    "app in {'a', 'c'}",
    "tier not in {'db'}",
    "app == 'a' && tier == 'web'",
];

/// Namespace selectors.
pub const NAMESPACE_SELECTORS: &[&str] = &[
    "all()",
    "global()",
    "team == 'x'",
    "has(team)",
    "!has(env)",
    "env != 'prod'",
    "kubernetes.io/metadata.name == 'ns0'",
    "projectcalico.org/name in {'ns1', 'ns2'}",
    "team == 'y' || global()",
];

/// Service-account selectors.
pub const SERVICE_ACCOUNT_SELECTORS: &[&str] = &[
    "role == 'admin'",
    "all()",
    "!has(role)",
    "projectcalico.org/name == 'sa1'",
];

const PROTOCOLS: &[u8] = &[6, 17, 132, 1, 58, 136, 47, 6, 17, 6];
const PORT_POOL: &[u16] = &[0, 1, 22, 53, 79, 80, 81, 443, 1000, 1024, 8080, 9090, 65535];
const PORT_NAMES: &[&str] = &["http", "dns", "metrics", "nope"];
const NAMED_PORT_NUMBERS: &[u16] = &[80, 53, 8080, 9090, 443, 1000];
const ICMP_TYPES: &[u8] = &[0, 3, 8, 128, 129];
/// Ports probes use: around rule boundaries, named ports and failsafe ports.
pub const PROBE_PORTS: &[u16] = &[
    0, 1, 2, 21, 22, 23, 52, 53, 54, 67, 68, 78, 79, 80, 81, 82, 179, 442, 443, 444, 999, 1000,
    1001, 1023, 1024, 1025, 2379, 6443, 8079, 8080, 8081, 9089, 9090, 9091, 65534, 65535,
];

fn labels(kv: &[(&str, Option<&str>)]) -> Labels {
    kv.iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
        .collect()
}

fn pick<T: Copy>(pool: &[T], i: usize) -> T {
    pool[i % pool.len()]
}

fn origin(doc: usize) -> Origin {
    Origin {
        file: "testgen.yaml".into(),
        document: doc,
    }
}

fn selector(pool: &[&str], i: usize) -> Selector {
    Selector::parse(pick(pool, i)).unwrap_or_default()
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
    none_weight: u32,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![none_weight => Just(None), 1 => s.prop_map(Some)]
}

/// Which pool a net is drawn from and where in it.
#[derive(Debug, Clone, Copy)]
pub struct NetSeed {
    v6: bool,
    len: usize,
    subnet: u8,
    host: u8,
}

fn net_seed() -> impl Strategy<Value = NetSeed> {
    (
        prop::bool::weighted(0.35),
        any::<usize>(),
        0u8..3,
        any::<u8>(),
    )
        .prop_map(|(v6, len, subnet, host)| NetSeed {
            v6,
            len,
            subnet,
            host,
        })
}

fn v4_addr(subnet: u8, host: u8) -> Ipv4Addr {
    match subnet {
        0 | 1 => Ipv4Addr::new(198, 18, subnet, host),
        _ => Ipv4Addr::new(198, 19, 0, host),
    }
}

fn v6_addr(subnet: u8, host: u8) -> Ipv6Addr {
    match subnet {
        0 | 1 => Ipv6Addr::new(
            0xfd00,
            0x198,
            0x18,
            u16::from(subnet),
            0,
            0,
            0,
            u16::from(host),
        ),
        _ => Ipv6Addr::new(0xfd00, 0x198, 0x19, 0, 0, 0, 0, u16::from(host)),
    }
}

fn make_net(s: NetSeed) -> IpNet {
    if s.v6 {
        let len = pick(&[0u8, 32, 47, 48, 63, 64, 120, 124, 126, 127, 128], s.len);
        IpNet::new(IpAddr::V6(v6_addr(s.subnet, s.host)), len)
            .unwrap_or_default()
            .trunc()
    } else {
        let len = pick(&[0u8, 8, 15, 16, 23, 24, 25, 26, 28, 30, 31, 32], s.len);
        IpNet::new(IpAddr::V4(v4_addr(s.subnet, s.host)), len)
            .unwrap_or_default()
            .trunc()
    }
}

#[derive(Debug, Clone)]
pub struct PodSeed {
    ns: usize,
    app: Option<usize>,
    tier: Option<usize>,
    env: Option<usize>,
    sa1: bool,
    ip_mode: u8,
    subnet: u8,
    r: u8,
    ports: Vec<(usize, usize, usize)>,
    host_network: bool,
    /// A replica of an earlier pod (same namespace, labels, service account and ports), as
    /// pods of one deployment are.
    replica_of: Option<Index>,
}

fn pod_seed() -> impl Strategy<Value = PodSeed> {
    (
        any::<usize>(),
        opt(0usize..3, 1),
        opt(0usize..2, 1),
        opt(0usize..2, 2),
        any::<bool>(),
        0u8..4,
        0u8..2,
        0u8..16,
        prop::collection::vec((0usize..3, any::<usize>(), 0usize..3), 0..=2),
        prop::bool::weighted(0.08),
        opt(any::<Index>(), 2),
    )
        .prop_map(
            |(ns, app, tier, env, sa1, ip_mode, subnet, r, ports, host_network, replica_of)| {
                PodSeed {
                    ns,
                    app,
                    tier,
                    env,
                    sa1,
                    ip_mode,
                    subnet,
                    r,
                    ports,
                    host_network,
                    replica_of,
                }
            },
        )
}

#[derive(Debug, Clone)]
pub struct EntitySeed {
    nets: Vec<NetSeed>,
    not_nets: Vec<NetSeed>,
    selector: Option<usize>,
    not_selector: Option<usize>,
    namespace_selector: Option<usize>,
    ports: Vec<(bool, usize, usize)>,
    not_ports: Vec<(bool, usize, usize)>,
    service_accounts: Option<(u8, Option<usize>)>,
}

fn maybe_vec<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
    empty_weight: u32,
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![empty_weight => Just(Vec::new()), 1 => prop::collection::vec(s, 1..=max)]
}

/// An entity rule's seed; `port_weight` is the odds against it having ports.
fn entity_seed(port_weight: u32) -> impl Strategy<Value = EntitySeed> {
    let port = (prop::bool::weighted(0.25), any::<usize>(), any::<usize>());
    (
        maybe_vec(net_seed(), 3, 2),
        maybe_vec(net_seed(), 9, 1),
        opt(any::<usize>(), 2),
        opt(any::<usize>(), 9),
        opt(any::<usize>(), 6),
        maybe_vec(port, port_weight, 2),
        maybe_vec(port, 6 * port_weight, 1),
        opt((0u8..4, opt(any::<usize>(), 1)), 15),
    )
        .prop_map(
            |(
                nets,
                not_nets,
                selector,
                not_selector,
                namespace_selector,
                ports,
                not_ports,
                service_accounts,
            )| {
                EntitySeed {
                    nets,
                    not_nets,
                    selector,
                    not_selector,
                    namespace_selector,
                    ports,
                    not_ports,
                    service_accounts,
                }
            },
        )
}

#[derive(Debug, Clone)]
pub struct RuleSeed {
    action: u8,
    protocol: Option<usize>,
    not_protocol: Option<usize>,
    icmp: Option<(usize, Option<u8>)>,
    not_icmp: Option<(usize, Option<u8>)>,
    ip_version: Option<bool>,
    source: EntitySeed,
    destination: EntitySeed,
}

fn rule_seed() -> impl Strategy<Value = RuleSeed> {
    (
        0u8..9,
        opt(any::<usize>(), 1),
        opt(any::<usize>(), 9),
        opt((any::<usize>(), opt(0u8..2, 1)), 9),
        opt((any::<usize>(), opt(0u8..2, 1)), 19),
        opt(any::<bool>(), 6),
        entity_seed(24),
        entity_seed(1),
    )
        .prop_map(
            |(action, protocol, not_protocol, icmp, not_icmp, ip_version, source, destination)| {
                RuleSeed {
                    action,
                    protocol,
                    not_protocol,
                    icmp,
                    not_icmp,
                    ip_version,
                    source,
                    destination,
                }
            },
        )
}

#[derive(Debug, Clone)]
pub struct PolicySeed {
    kind: u8,
    name: usize,
    ns: usize,
    tier: u8,
    order: usize,
    selector: usize,
    namespace_selector: Option<usize>,
    service_account_selector: Option<usize>,
    types: u8,
    ingress: Vec<RuleSeed>,
    egress: Vec<RuleSeed>,
    delete: bool,
}

fn policy_seed() -> impl Strategy<Value = PolicySeed> {
    (
        0u8..11,
        0usize..4,
        any::<usize>(),
        0u8..8,
        any::<usize>(),
        any::<usize>(),
        opt(any::<usize>(), 2),
        opt(any::<usize>(), 6),
        0u8..5,
        prop::collection::vec(rule_seed(), 0..=4),
        prop::collection::vec(rule_seed(), 0..=4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                kind,
                name,
                ns,
                tier,
                order,
                selector,
                namespace_selector,
                service_account_selector,
                types,
                ingress,
                egress,
                delete,
            )| PolicySeed {
                kind,
                name,
                ns,
                tier,
                order,
                selector,
                namespace_selector,
                service_account_selector,
                types,
                ingress,
                egress,
                delete,
            },
        )
}

/// (role, app, has IPv6, default-allow profile, `*` interface, named ports).
type HepSeed = (
    usize,
    Option<usize>,
    bool,
    bool,
    bool,
    Vec<(usize, usize, usize)>,
);
/// (namespace, kind label, app label, nets).
type SetSeed = (Option<usize>, usize, Option<usize>, Vec<NetSeed>);

#[derive(Debug, Clone)]
pub struct InventorySeed {
    namespaces: Vec<(Option<usize>, Option<usize>)>,
    sa_roles: Vec<Option<usize>>,
    pods: Vec<PodSeed>,
    heps: Vec<HepSeed>,
    sets: Vec<SetSeed>,
    tiers: Vec<(usize, bool)>,
    policies: Vec<PolicySeed>,
}

fn inventory_seed() -> impl Strategy<Value = InventorySeed> {
    (
        prop::collection::vec((opt(0usize..2, 1), opt(0usize..2, 1)), 2..=4),
        prop::collection::vec(opt(0usize..2, 1), 8),
        prop::collection::vec(pod_seed(), 3..=12),
        prop::collection::vec(
            (
                0usize..2,
                opt(0usize..3, 1),
                any::<bool>(),
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.2),
                prop::collection::vec((0usize..3, any::<usize>(), 0usize..3), 0..=2),
            ),
            0..=2,
        ),
        prop::collection::vec(
            (
                opt(any::<usize>(), 1),
                0usize..2,
                opt(0usize..3, 1),
                prop::collection::vec(net_seed(), 1..=3),
            ),
            0..=3,
        ),
        prop::collection::vec((any::<usize>(), any::<bool>()), 0..=2),
        prop::collection::vec(policy_seed(), 1..=8),
    )
        .prop_map(
            |(namespaces, sa_roles, pods, heps, sets, tiers, policies)| InventorySeed {
                namespaces,
                sa_roles,
                pods,
                heps,
                sets,
                tiers,
                policies,
            },
        )
}

fn named_ports(seeds: &[(usize, usize, usize)]) -> Vec<NamedPort> {
    seeds
        .iter()
        .map(|&(name, port, proto)| NamedPort {
            name: PORT_NAMES[name % 3].to_string(),
            port: pick(NAMED_PORT_NUMBERS, port),
            protocol: Protocol(pick(&[6u8, 17, 132], proto)),
        })
        .collect()
}

fn entity(s: &EntitySeed, k8s: bool) -> EntityRule {
    let port = |&(named, a, b): &(bool, usize, usize)| {
        if named {
            PortSpec::Named(pick(PORT_NAMES, a).to_string())
        } else {
            let (x, y) = (pick(PORT_POOL, a), pick(PORT_POOL, b));
            PortSpec::Range(x.min(y), x.max(y))
        }
    };
    let mut er = EntityRule {
        nets: s.nets.iter().copied().map(make_net).collect(),
        not_nets: s.not_nets.iter().copied().map(make_net).collect(),
        selector: s.selector.map(|i| {
            selector(
                if k8s {
                    POD_SELECTORS
                } else {
                    ENDPOINT_SELECTORS
                },
                i,
            )
        }),
        not_selector: s.not_selector.map(|i| selector(ENDPOINT_SELECTORS, i)),
        namespace_selector: s
            .namespace_selector
            .map(|i| selector(NAMESPACE_SELECTORS, i)),
        ports: s.ports.iter().map(port).collect(),
        not_ports: s.not_ports.iter().map(port).collect(),
        service_accounts: s.service_accounts.map(|(names, sel)| ServiceAccountMatch {
            names: match names {
                0 => Vec::new(),
                1 => vec!["default".to_string()],
                2 => vec!["sa1".to_string()],
                _ => vec!["default".to_string(), "sa1".to_string()],
            },
            selector: sel.map(|i| selector(SERVICE_ACCOUNT_SELECTORS, i)),
        }),
    };
    if k8s {
        // ipBlock peers have no selectors; selector peers have no nets.
        if !er.nets.is_empty() {
            er.selector = None;
            er.namespace_selector = None;
        } else {
            er.not_nets.clear();
        }
        er.not_selector = None;
        er.not_ports.clear();
        er.service_accounts = None;
    }
    er
}

fn rule(s: &RuleSeed, k8s: bool, egress: bool) -> Rule {
    let action = if k8s {
        Action::Allow
    } else {
        match s.action {
            0..=3 => Action::Allow,
            4..=6 => Action::Deny,
            7 => Action::Pass,
            _ => Action::Log,
        }
    };
    let icmp = |(t, code): (usize, Option<u8>)| IcmpMatch {
        icmp_type: pick(ICMP_TYPES, t),
        code,
    };
    let mut r = Rule {
        action,
        protocol: s.protocol.map(|i| Protocol(pick(PROTOCOLS, i))),
        not_protocol: s.not_protocol.map(|i| Protocol(pick(PROTOCOLS, i))),
        icmp: s.icmp.map(icmp),
        not_icmp: s.not_icmp.map(icmp),
        ip_version: s.ip_version.map(|v6| if v6 { 6 } else { 4 }),
        source: entity(&s.source, k8s),
        destination: entity(&s.destination, k8s),
        annotations: BTreeMap::new(),
    };
    if k8s {
        r.protocol = r
            .protocol
            .map(|p| if p.has_ports() { p } else { Protocol::TCP });
        r.not_protocol = None;
        r.icmp = None;
        r.not_icmp = None;
        r.ip_version = None;
        // Kubernetes peers are on the remote side only; ports on the local pod's side.
        let (peer, local) = if egress {
            (&mut r.destination, &mut r.source)
        } else {
            (&mut r.source, &mut r.destination)
        };
        let ports = std::mem::take(&mut local.ports);
        *local = EntityRule::default();
        if egress {
            peer.ports = ports
                .into_iter()
                .chain(std::mem::take(&mut peer.ports))
                .collect();
        } else {
            local.ports = ports
                .into_iter()
                .chain(std::mem::take(&mut peer.ports))
                .collect();
        }
    }
    r
}

fn build(seed: &InventorySeed) -> Inventory {
    let mut inv = Inventory::default();
    let ns_names: Vec<String> = (0..seed.namespaces.len())
        .map(|i| format!("ns{i}"))
        .collect();
    for (i, (team, env)) in seed.namespaces.iter().enumerate() {
        inv.namespaces.push(Namespace {
            name: ns_names[i].clone(),
            labels: labels(&[
                ("team", team.map(|t| ["x", "y"][t])),
                ("env", env.map(|e| ["prod", "dev"][e])),
            ]),
            origin: origin(1),
        });
        for (j, sa) in ["default", "sa1"].iter().enumerate() {
            let role = seed.sa_roles.get(2 * i + j).copied().flatten();
            inv.service_accounts.push(ServiceAccount {
                namespace: ns_names[i].clone(),
                name: sa.to_string(),
                labels: labels(&[("role", role.map(|r| ["admin", "web"][r]))]),
                origin: origin(1),
            });
        }
    }
    for (i, p) in seed.pods.iter().enumerate() {
        let host = (16 * i as u32 + u32::from(p.r)).min(255) as u8;
        let ips = if p.host_network {
            vec![IpAddr::V4(Ipv4Addr::new(198, 19, 255, i as u8 + 1))]
        } else {
            let v4 = IpAddr::V4(v4_addr(p.subnet, host));
            let v6 = IpAddr::V6(v6_addr(p.subnet, host));
            match p.ip_mode {
                1 => vec![v4],
                2 => vec![v6],
                _ => vec![v4, v6],
            }
        };
        inv.pods.push(Pod {
            namespace: ns_names[p.ns % ns_names.len()].clone(),
            name: format!("pod{i}"),
            labels: labels(&[
                ("app", p.app.map(|a| ["a", "b", "c"][a])),
                ("tier", p.tier.map(|t| ["web", "db"][t])),
                ("env", p.env.map(|e| ["prod", "dev"][e])),
            ]),
            service_account: if p.sa1 { "sa1" } else { "default" }.to_string(),
            ports: named_ports(&p.ports),
            host_network: p.host_network,
            node_name: Some("node1".to_string()),
            ips,
            origin: origin(1),
        });
        if let Some(of) = p.replica_of.filter(|_| i > 0)
            && let Some(original) = inv.pods.get(of.index(i)).cloned()
            && let Some(pod) = inv.pods.last_mut()
        {
            pod.namespace = original.namespace;
            pod.labels = original.labels;
            pod.service_account = original.service_account;
            pod.ports = original.ports;
        }
    }
    for (i, (role, app, v6, allow, star, ports)) in seed.heps.iter().enumerate() {
        let h = i as u8 + 1;
        let mut expected_ips = vec![IpAddr::V4(v4_addr(2, h))];
        if *v6 {
            expected_ips.push(IpAddr::V6(v6_addr(2, h)));
        }
        inv.host_endpoints.push(HostEndpoint {
            name: format!("hep{i}"),
            labels: labels(&[
                ("role", Some(["node", "edge"][*role])),
                ("app", app.map(|a| ["a", "b", "c"][a])),
            ]),
            node: Some("node1".to_string()),
            interface_name: Some(if *star { "*" } else { "eth0" }.to_string()),
            expected_ips,
            profiles: if *allow {
                vec![DEFAULT_ALLOW_PROFILE.to_string()]
            } else {
                Vec::new()
            },
            ports: named_ports(ports),
            origin: origin(1),
        });
    }
    for (i, (ns, kind, app, nets)) in seed.sets.iter().enumerate() {
        inv.network_sets.push(NetworkSet {
            namespace: ns.map(|n| ns_names[n % ns_names.len()].clone()),
            name: format!("set{i}"),
            labels: labels(&[
                ("kind", Some(["feed", "partner"][*kind])),
                ("app", app.map(|a| ["a", "b", "c"][a])),
            ]),
            nets: nets.iter().copied().map(make_net).collect(),
            origin: origin(1),
        });
    }
    for (i, (order, pass)) in seed.tiers.iter().enumerate() {
        inv.tiers.push(Tier {
            name: format!("t{i}"),
            order: pick(
                &[
                    None,
                    Some(100.0),
                    Some(100.0),
                    Some(500.0),
                    Some(1_000_000.0),
                    Some(2_000_000.0),
                ],
                *order,
            ),
            default_action: if *pass {
                TierDefault::Pass
            } else {
                TierDefault::Deny
            },
            origin: Some(origin(1)),
        });
    }
    let mut seen: BTreeSet<(String, Option<String>, String)> = BTreeSet::new();
    for (i, s) in seed.policies.iter().enumerate() {
        let kind = match s.kind {
            0..=2 => PolicyKind::KubernetesNetworkPolicy,
            3..=4 => PolicyKind::NetworkPolicy,
            5..=8 => PolicyKind::GlobalNetworkPolicy,
            9 => PolicyKind::StagedNetworkPolicy,
            _ => PolicyKind::StagedGlobalNetworkPolicy,
        };
        let k8s = kind == PolicyKind::KubernetesNetworkPolicy;
        let namespace = (!kind.is_global()).then(|| ns_names[s.ns % ns_names.len()].clone());
        let mut name = format!("p{}", s.name);
        if !seen.insert((
            kind.kind_name().to_string(),
            namespace.clone(),
            name.clone(),
        )) {
            name = format!("p{}-{i}", s.name);
            seen.insert((
                kind.kind_name().to_string(),
                namespace.clone(),
                name.clone(),
            ));
        }
        let ingress: Vec<Rule> = s.ingress.iter().map(|r| rule(r, k8s, false)).collect();
        let egress: Vec<Rule> = s.egress.iter().map(|r| rule(r, k8s, true)).collect();
        let (types, types_explicit) = match s.types {
            0 if k8s => (default_kubernetes_types(!egress.is_empty()), false),
            0 => (
                default_calico_types(!ingress.is_empty(), !egress.is_empty()),
                false,
            ),
            1 => (vec![Direction::Ingress], true),
            2 => (vec![Direction::Egress], true),
            3 => (vec![Direction::Egress, Direction::Ingress], true),
            _ => (vec![Direction::Ingress, Direction::Egress], true),
        };
        let tier = if k8s {
            "default".to_string()
        } else {
            match s.tier {
                0..=3 => "default".to_string(),
                4 => "t0".to_string(),
                5 => "t1".to_string(),
                6 => "kube-admin".to_string(),
                _ => "kube-baseline".to_string(),
            }
        };
        inv.policies.push(Policy {
            kind,
            namespace,
            name,
            tier,
            order: if k8s {
                Some(1000.0)
            } else {
                pick(
                    &[
                        None,
                        Some(1.0),
                        Some(10.0),
                        Some(100.0),
                        Some(100.0),
                        Some(1000.0),
                    ],
                    s.order,
                )
            },
            selector: if k8s && s.selector % 2 == 0 {
                Selector::all()
            } else {
                selector(
                    if k8s { POD_SELECTORS } else { POLICY_SELECTORS },
                    s.selector,
                )
            },
            namespace_selector: if kind.is_global() {
                s.namespace_selector
                    .map(|i| selector(NAMESPACE_SELECTORS, i))
            } else {
                None
            },
            service_account_selector: if k8s {
                None
            } else {
                s.service_account_selector
                    .map(|i| selector(SERVICE_ACCOUNT_SELECTORS, i))
            },
            types,
            types_explicit,
            ingress,
            egress,
            apply_on_forward: false,
            pre_dnat: false,
            do_not_track: false,
            staged_action: if kind.is_staged() && s.delete {
                StagedAction::Delete
            } else {
                StagedAction::Set
            },
            origin: origin(i + 1),
        });
    }
    inv
}

/// Random inventories.
pub fn inventory() -> impl Strategy<Value = Inventory> {
    inventory_seed().prop_map(|s| build(&s))
}

/// Failsafe settings: Calico's defaults, none, or a short custom list.
pub fn options() -> impl Strategy<Value = Options> {
    prop_oneof![
        Just(Options::default()),
        Just(Options {
            failsafe: Failsafe::none()
        }),
        Just(Options {
            failsafe: Failsafe {
                inbound: vec![
                    (Protocol::TCP, 22),
                    (Protocol::UDP, 53),
                    (Protocol::TCP, 22)
                ],
                outbound: vec![(Protocol::UDP, 53), (Protocol::SCTP, 80)],
            }
        }),
    ]
}

/// What a probe's peer address is drawn from.
#[derive(Debug, Clone)]
pub struct ProbeSeed {
    endpoint: Index,
    ingress: bool,
    v6: bool,
    peer_kind: u8,
    peer: Index,
    offset: i8,
    random: u128,
    protocol: usize,
    random_protocol: u8,
    dst_port: (bool, usize, u16),
    src_port: (bool, usize, u16),
    icmp: (usize, u8),
}

/// Probe seeds.
pub fn probe_seed() -> impl Strategy<Value = ProbeSeed> {
    let port = (prop::bool::weighted(0.85), any::<usize>(), any::<u16>());
    (
        any::<Index>(),
        any::<bool>(),
        prop::bool::weighted(0.35),
        0u8..8,
        any::<Index>(),
        -1i8..=1,
        any::<u128>(),
        0usize..11,
        any::<u8>(),
        port,
        port,
        (any::<usize>(), 0u8..3),
    )
        .prop_map(
            |(
                endpoint,
                ingress,
                v6,
                peer_kind,
                peer,
                offset,
                random,
                protocol,
                random_protocol,
                dst_port,
                src_port,
                icmp,
            )| {
                ProbeSeed {
                    endpoint,
                    ingress,
                    v6,
                    peer_kind,
                    peer,
                    offset,
                    random,
                    protocol,
                    random_protocol,
                    dst_port,
                    src_port,
                    icmp,
                }
            },
        )
}

/// A packet judged at one endpoint in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub endpoint: EndpointId,
    pub direction: Direction,
    /// The packet; the endpoint's own address (its first of the family) is the local side.
    pub packet: Packet,
}

/// The protocol and ports of a packet, without addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketShape {
    pub protocol: Protocol,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

/// Packet shapes: mostly TCP and UDP to ports near rule boundaries.
pub fn packet_shape() -> impl Strategy<Value = PacketShape> {
    (
        0usize..11,
        any::<u8>(),
        any::<usize>(),
        any::<usize>(),
        any::<usize>(),
        0u8..3,
    )
        .prop_map(|(p, random, dport, sport, itype, icode)| {
            let protocol = if p < PROTOCOLS.len() {
                Protocol(PROTOCOLS[p])
            } else {
                Protocol(random)
            };
            let is_icmp = protocol == Protocol::ICMP || protocol == Protocol::ICMPV6;
            PacketShape {
                protocol,
                src_port: protocol.has_ports().then(|| pick(PROBE_PORTS, sport)),
                dst_port: protocol.has_ports().then(|| pick(PROBE_PORTS, dport)),
                icmp_type: is_icmp.then(|| pick(ICMP_TYPES, itype)),
                icmp_code: is_icmp.then_some(icode),
            }
        })
}

/// A generated test case.
#[derive(Debug, Clone)]
pub struct Case {
    pub inventory: Inventory,
    pub options: Options,
    /// Random probes.
    pub probes: Vec<ProbeSeed>,
    /// Shapes for [`sweep`]: every endpoint against every endpoint address.
    pub shapes: Vec<PacketShape>,
}

/// Random cases with `probes` probe seeds and `shapes` sweep shapes each.
pub fn case(probes: usize, shapes: usize) -> impl Strategy<Value = Case> {
    (
        inventory(),
        options(),
        prop::collection::vec(probe_seed(), probes),
        prop::collection::vec(packet_shape(), shapes),
    )
        .prop_map(|(inventory, options, probes, shapes)| Case {
            inventory,
            options,
            probes,
            shapes,
        })
}

/// Probes from every policed endpoint, in both directions, to every pod and host endpoint
/// address of the same family (its own excepted), with each shape.
pub fn sweep(inv: &Inventory, shapes: &[PacketShape]) -> Vec<Probe> {
    let mut locals: Vec<(EndpointId, Vec<IpAddr>)> = inv
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .map(|p| {
            let id = EndpointId::Pod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            };
            (id, p.ips.clone())
        })
        .collect();
    locals.extend(inv.host_endpoints.iter().map(|h| {
        (
            EndpointId::Host {
                name: h.name.clone(),
            },
            h.expected_ips.clone(),
        )
    }));
    let peers: Vec<IpAddr> = inv
        .pods
        .iter()
        .flat_map(|p| p.ips.iter())
        .chain(
            inv.host_endpoints
                .iter()
                .flat_map(|h| h.expected_ips.iter()),
        )
        .copied()
        .collect();
    let mut out = Vec::new();
    for (id, own) in &locals {
        for v6 in [false, true] {
            let Some(local) = own.iter().copied().find(|a| a.is_ipv6() == v6) else {
                continue;
            };
            for peer in peers
                .iter()
                .copied()
                .filter(|a| a.is_ipv6() == v6 && !own.contains(a))
            {
                for direction in [Direction::Ingress, Direction::Egress] {
                    let (src, dst) = match direction {
                        Direction::Ingress => (peer, local),
                        Direction::Egress => (local, peer),
                    };
                    for s in shapes {
                        let icmp = s.protocol == if v6 { Protocol::ICMPV6 } else { Protocol::ICMP };
                        out.push(Probe {
                            endpoint: id.clone(),
                            direction,
                            packet: Packet {
                                src,
                                dst,
                                protocol: s.protocol,
                                src_port: s.src_port,
                                dst_port: s.dst_port,
                                icmp_type: s.icmp_type.filter(|_| icmp),
                                icmp_code: s.icmp_code.filter(|_| icmp),
                            },
                        });
                    }
                }
            }
        }
    }
    out
}

fn shift(a: IpAddr, by: i8) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(
            u32::from(v).wrapping_add_signed(i32::from(by)),
        )),
        IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v).wrapping_add_signed(i128::from(by)),
        )),
    }
}

/// Every address the inventory mentions: pod and host addresses, and the first and last
/// address of every net.
pub fn interesting_addresses(inv: &Inventory, v6: bool) -> Vec<IpAddr> {
    let mut out: BTreeSet<IpAddr> = BTreeSet::new();
    out.extend(inv.pods.iter().flat_map(|p| p.ips.iter().copied()));
    out.extend(
        inv.host_endpoints
            .iter()
            .flat_map(|h| h.expected_ips.iter().copied()),
    );
    let mut nets: Vec<IpNet> = inv
        .network_sets
        .iter()
        .flat_map(|s| s.nets.iter().copied())
        .collect();
    for p in &inv.policies {
        for r in p.ingress.iter().chain(&p.egress) {
            for er in [&r.source, &r.destination] {
                nets.extend(er.nets.iter().chain(&er.not_nets).copied());
            }
        }
    }
    for n in nets {
        out.insert(n.network());
        out.insert(n.broadcast());
    }
    out.into_iter().filter(|a| a.is_ipv6() == v6).collect()
}

/// Resolves a seed against an inventory: `None` when no endpoint has an address of the
/// family, or the peer is the endpoint itself.
pub fn resolve(inv: &Inventory, seed: &ProbeSeed) -> Option<Probe> {
    let v6 = seed.v6;
    let fam = |ips: &[IpAddr]| ips.iter().copied().find(|a| a.is_ipv6() == v6);
    let mut eps: Vec<(EndpointId, IpAddr, Vec<IpAddr>)> = Vec::new();
    for p in inv.pods.iter().filter(|p| !p.host_network) {
        if let Some(a) = fam(&p.ips) {
            let id = EndpointId::Pod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            };
            eps.push((id, a, p.ips.clone()));
        }
    }
    for h in &inv.host_endpoints {
        if let Some(a) = fam(&h.expected_ips) {
            eps.push((
                EndpointId::Host {
                    name: h.name.clone(),
                },
                a,
                h.expected_ips.clone(),
            ));
        }
    }
    if eps.is_empty() {
        return None;
    }
    let (endpoint, local, own) = seed.endpoint.get(&eps).clone();
    let endpoint_addrs: Vec<IpAddr> = inv
        .pods
        .iter()
        .flat_map(|p| p.ips.iter())
        .chain(
            inv.host_endpoints
                .iter()
                .flat_map(|h| h.expected_ips.iter()),
        )
        .copied()
        .filter(|a| a.is_ipv6() == v6 && !own.contains(a))
        .collect();
    let boundaries = interesting_addresses(inv, v6);
    let random_in_range = |r: u128| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(
                (0xfd00_0198_0018u128 << 80) | (r & ((1u128 << 80) - 1)),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(0xc612_0000u32 | (r as u32 & 0x1ffff)))
        }
    };
    let peer = match seed.peer_kind {
        0..=3 if !endpoint_addrs.is_empty() => *seed.peer.get(&endpoint_addrs),
        4 | 5 if !boundaries.is_empty() => shift(*seed.peer.get(&boundaries), seed.offset),
        6 => {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(seed.random))
            } else {
                IpAddr::V4(Ipv4Addr::from(seed.random as u32))
            }
        }
        _ => random_in_range(seed.random),
    };
    if own.contains(&peer) {
        return None;
    }
    let protocol = match seed.protocol {
        0..=9 => Protocol(PROTOCOLS[seed.protocol]),
        _ => Protocol(seed.random_protocol),
    };
    let port = |(pool, i, r): (bool, usize, u16)| if pool { pick(PROBE_PORTS, i) } else { r };
    let direction = if seed.ingress {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let (src, dst) = match direction {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    // The datapath reads type and code of ICMP in IPv4 and ICMPv6 in IPv6 only.
    let is_icmp = protocol == if v6 { Protocol::ICMPV6 } else { Protocol::ICMP };
    let packet = Packet {
        src,
        dst,
        protocol,
        src_port: protocol.has_ports().then(|| port(seed.src_port)),
        dst_port: protocol.has_ports().then(|| port(seed.dst_port)),
        icmp_type: is_icmp
            .then(|| pick(ICMP_TYPES, seed.icmp.0).wrapping_add(u8::from(seed.icmp.1 == 2))),
        icmp_code: is_icmp.then_some(seed.icmp.1),
    };
    Some(Probe {
        endpoint,
        direction,
        packet,
    })
}

/// A compact YAML-like rendering of an inventory, for failure reports.
pub fn describe(inv: &Inventory) -> String {
    let mut s = String::new();
    let lab = |l: &Labels| {
        l.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let _ = writeln!(s, "namespaces:");
    for n in &inv.namespaces {
        let _ = writeln!(s, "  - {} {{{}}}", n.name, lab(&n.labels));
    }
    let _ = writeln!(s, "serviceAccounts:");
    for a in inv.service_accounts.iter().filter(|a| !a.labels.is_empty()) {
        let _ = writeln!(s, "  - {}/{} {{{}}}", a.namespace, a.name, lab(&a.labels));
    }
    let _ = writeln!(s, "pods:");
    for p in &inv.pods {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|np| format!("{}={}/{}", np.name, np.port, np.protocol))
            .collect();
        let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "  - {}/{} {{{}}} sa={} ips=[{}] ports=[{}]{}",
            p.namespace,
            p.name,
            lab(&p.labels),
            p.service_account,
            ips.join(","),
            ports.join(","),
            if p.host_network { " hostNetwork" } else { "" }
        );
    }
    let _ = writeln!(s, "hostEndpoints:");
    for h in &inv.host_endpoints {
        let ports: Vec<String> = h
            .ports
            .iter()
            .map(|np| format!("{}={}/{}", np.name, np.port, np.protocol))
            .collect();
        let ips: Vec<String> = h.expected_ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "  - {} {{{}}} ips=[{}] ports=[{}] profiles={:?}",
            h.name,
            lab(&h.labels),
            ips.join(","),
            ports.join(","),
            h.profiles
        );
    }
    let _ = writeln!(s, "networkSets:");
    for n in &inv.network_sets {
        let nets: Vec<String> = n.nets.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "  - {}{} {{{}}} nets=[{}]",
            n.namespace
                .as_deref()
                .map(|ns| format!("{ns}/"))
                .unwrap_or_default(),
            n.name,
            lab(&n.labels),
            nets.join(",")
        );
    }
    let _ = writeln!(s, "tiers:");
    for t in &inv.tiers {
        let _ = writeln!(
            s,
            "  - {} order={:?} default={:?}",
            t.name, t.order, t.default_action
        );
    }
    let _ = writeln!(s, "policies:");
    for p in &inv.policies {
        let _ = writeln!(
            s,
            "  - {} {} tier={} order={:?} selector={:?} types={:?}{}{}{}",
            p.kind.kind_name(),
            p.qualified_name(),
            p.tier,
            p.order,
            p.selector.to_string(),
            p.types,
            p.namespace_selector
                .as_ref()
                .map(|x| format!(" namespaceSelector={:?}", x.to_string()))
                .unwrap_or_default(),
            p.service_account_selector
                .as_ref()
                .map(|x| format!(" serviceAccountSelector={:?}", x.to_string()))
                .unwrap_or_default(),
            if p.kind.is_staged() {
                format!(" stagedAction={:?}", p.staged_action)
            } else {
                String::new()
            },
        );
        for (dir, rules) in [("ingress", &p.ingress), ("egress", &p.egress)] {
            for (i, r) in rules.iter().enumerate() {
                let _ = writeln!(s, "      {dir}[{i}]: {}", describe_rule(r));
            }
        }
    }
    s
}

fn describe_entity(e: &EntityRule) -> String {
    let mut parts = Vec::new();
    let nets = |v: &[IpNet]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let ports = |v: &[PortSpec]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !e.nets.is_empty() {
        parts.push(format!("nets=[{}]", nets(&e.nets)));
    }
    if !e.not_nets.is_empty() {
        parts.push(format!("notNets=[{}]", nets(&e.not_nets)));
    }
    if let Some(x) = &e.selector {
        parts.push(format!("selector={:?}", x.to_string()));
    }
    if let Some(x) = &e.not_selector {
        parts.push(format!("notSelector={:?}", x.to_string()));
    }
    if let Some(x) = &e.namespace_selector {
        parts.push(format!("namespaceSelector={:?}", x.to_string()));
    }
    if !e.ports.is_empty() {
        parts.push(format!("ports=[{}]", ports(&e.ports)));
    }
    if !e.not_ports.is_empty() {
        parts.push(format!("notPorts=[{}]", ports(&e.not_ports)));
    }
    if let Some(sa) = &e.service_accounts {
        parts.push(format!(
            "serviceAccounts={{names={:?}, selector={:?}}}",
            sa.names,
            sa.selector.as_ref().map(ToString::to_string)
        ));
    }
    format!("{{{}}}", parts.join(" "))
}

fn describe_rule(r: &Rule) -> String {
    let mut s = format!("{}", r.action);
    if let Some(p) = r.protocol {
        let _ = write!(s, " protocol={p}");
    }
    if let Some(p) = r.not_protocol {
        let _ = write!(s, " notProtocol={p}");
    }
    if let Some(i) = r.icmp {
        let _ = write!(s, " icmp={}/{:?}", i.icmp_type, i.code);
    }
    if let Some(i) = r.not_icmp {
        let _ = write!(s, " notICMP={}/{:?}", i.icmp_type, i.code);
    }
    if let Some(v) = r.ip_version {
        let _ = write!(s, " ipVersion={v}");
    }
    if !r.source.is_empty() {
        let _ = write!(s, " source={}", describe_entity(&r.source));
    }
    if !r.destination.is_empty() {
        let _ = write!(s, " destination={}", describe_entity(&r.destination));
    }
    s
}
