//! Unit tests of the compiler on hand-written inventories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use enforcer_common::{
    ANY, CONFIG_SRC_PORTS, MAX_VERDICTS, PORT_KEY_FIXED_BITS, PORT_KIND_DST, VerdictKey,
};

use super::*;
use crate::{
    evaluator::{Decision, Options, Packet, Verdict, evaluate_packet},
    model::{
        Action, Direction, EntityRule, HostEndpoint, Inventory, Labels, NamedPort, Namespace,
        NetworkSet, Origin, Pod, Policy, PolicyKind, PortSpec, Protocol, Rule, StagedAction,
    },
    selector::Selector,
};

fn origin() -> Origin {
    Origin {
        file: PathBuf::from("t.yaml"),
        document: 1,
    }
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(ns: &str, name: &str, kv: &[(&str, &str)], ips: &[&str]) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(kv),
        service_account: "default".into(),
        ports: Vec::new(),
        host_network: false,
        node_name: None,
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        origin: origin(),
    }
}

fn rule(action: Action) -> Rule {
    Rule {
        action,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        ip_version: None,
        source: EntityRule::default(),
        destination: EntityRule::default(),
        annotations: BTreeMap::new(),
    }
}

fn tcp_to(action: Action, ports: &[(u16, u16)]) -> Rule {
    let mut r = rule(action);
    r.protocol = Some(Protocol::TCP);
    r.destination.ports = ports.iter().map(|&(a, b)| PortSpec::Range(a, b)).collect();
    r
}

fn policy(
    kind: PolicyKind,
    ns: Option<&str>,
    name: &str,
    selector: &str,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
) -> Policy {
    let mut types = Vec::new();
    if !ingress.is_empty() {
        types.push(Direction::Ingress);
    }
    if !egress.is_empty() {
        types.push(Direction::Egress);
    }
    Policy {
        kind,
        namespace: ns.map(String::from),
        name: name.into(),
        tier: "default".into(),
        order: Some(100.0),
        selector: Selector::parse(selector).unwrap(),
        namespace_selector: None,
        service_account_selector: None,
        types,
        types_explicit: true,
        ingress,
        egress,
        apply_on_forward: false,
        pre_dnat: false,
        do_not_track: false,
        staged_action: StagedAction::Set,
        origin: origin(),
    }
}

fn base() -> Inventory {
    Inventory {
        namespaces: vec![Namespace {
            name: "ns".into(),
            labels: Labels::new(),
            origin: origin(),
        }],
        pods: vec![
            pod("ns", "web", &[("app", "web")], &["10.0.0.1", "fd00::1"]),
            pod("ns", "db", &[("app", "db")], &["10.0.0.2", "fd00::2"]),
            pod("ns", "other", &[], &["10.0.0.3"]),
        ],
        ..Inventory::default()
    }
}

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: Protocol::TCP,
        src_port: Some(40000),
        dst_port: Some(dport),
        icmp_type: None,
        icmp_code: None,
    }
}

fn pod_id(name: &str) -> EndpointId {
    EndpointId::Pod {
        namespace: "ns".into(),
        name: name.into(),
    }
}

/// The compiled verdict and deciding rule equal the evaluator's.
fn agrees(
    inv: &Inventory,
    opts: &Options,
    c: &Compiled,
    ep: &EndpointId,
    dir: Direction,
    p: &Packet,
) -> LookupResult {
    let got = c.lookup(ep, dir, p).unwrap();
    let e = evaluate_packet(inv, p, opts);
    let t = match dir {
        Direction::Ingress => e.ingress.unwrap(),
        Direction::Egress => e.egress.unwrap(),
    };
    assert_eq!(got.action, t.verdict, "{p:?}");
    assert_eq!(c.rule(got.rule_id).unwrap().decision, t.decided_by, "{p:?}");
    assert_eq!(got.staged_action, t.staged_verdict, "{p:?}");
    assert_eq!(
        c.rule(got.staged_rule_id).unwrap().decision,
        t.staged_decided_by,
        "{p:?}"
    );
    got
}

/// `db` accepts TCP 5432 and 6000-6010 from `web` only.
fn db_policy_inventory() -> Inventory {
    let mut inv = base();
    let mut r = tcp_to(Action::Allow, &[(5432, 5432), (6000, 6010)]);
    r.source.selector = Some(Selector::parse("app == 'web'").unwrap());
    inv.policies.push(policy(
        PolicyKind::KubernetesNetworkPolicy,
        Some("ns"),
        "db",
        "app == 'db'",
        vec![r],
        vec![],
    ));
    inv
}

#[test]
fn allow_from_selected_peer_on_listed_ports() {
    let inv = db_policy_inventory();
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    let db = pod_id("db");
    let r = agrees(
        &inv,
        &opts,
        &c,
        &db,
        Direction::Ingress,
        &tcp("10.0.0.1", "10.0.0.2", 5432),
    );
    assert_eq!(r.action, Verdict::Allow);
    assert_eq!(r.hit, VerdictHit::Exact);
    for (src, port) in [
        ("10.0.0.3", 5432),
        ("10.0.0.1", 5433),
        ("10.0.0.1", 6011),
        ("192.0.2.1", 5432),
    ] {
        let r = agrees(
            &inv,
            &opts,
            &c,
            &db,
            Direction::Ingress,
            &tcp(src, "10.0.0.2", port),
        );
        assert_eq!(r.action, Verdict::Deny, "{src}:{port}");
    }
    agrees(
        &inv,
        &opts,
        &c,
        &db,
        Direction::Ingress,
        &tcp("10.0.0.1", "10.0.0.2", 6005),
    );
    agrees(
        &inv,
        &opts,
        &c,
        &db,
        Direction::Ingress,
        &tcp("fd00::1", "fd00::2", 6005),
    );
    agrees(
        &inv,
        &opts,
        &c,
        &db,
        Direction::Ingress,
        &tcp("fd00::9", "fd00::2", 6005),
    );
    // Unselected pods are allowed by their profile.
    let r = agrees(
        &inv,
        &opts,
        &c,
        &pod_id("web"),
        Direction::Ingress,
        &tcp("10.0.0.3", "10.0.0.1", 1),
    );
    assert_eq!(
        c.rule(r.rule_id).unwrap().decision,
        Decision::Profile {
            profile: "kns.ns".into()
        }
    );

    // Classes: web's address is the only peer that differs (one prefix per family besides the
    // roots); 5432 and 6000-6010 are one port class, everything else the default class.
    assert_eq!(c.stats.peer_classes_v4, 2);
    assert_eq!(c.stats.peer_classes_v6, 2);
    let v4: Vec<String> = c.peers_v4.iter().map(|p| p.net.to_string()).collect();
    assert_eq!(v4, vec!["0.0.0.0/0", "10.0.0.1/32"]);
    assert_eq!(c.stats.dst_port_classes, 2);
    assert!(
        c.port_prefixes
            .iter()
            .all(|p| p.protocol == 6 && p.class == 1)
    );
    assert_eq!(
        c.port_prefixes.len(),
        1 + interval_prefixes(6000, 6010).len()
    );
    // Two sets: db's ingress, and "profile allows" shared by everything else.
    assert_eq!(c.sets.len(), 2);
    assert!(!c.uses_src_ports);
}

#[test]
fn map_entries_encode_keys_as_documented() {
    let inv = db_policy_inventory();
    let c = compile(&inv, &Options::default()).unwrap();
    let ifx: BTreeMap<EndpointId, u32> = [(pod_id("db"), 7), (pod_id("web"), 8)]
        .into_iter()
        .collect();
    let m = to_map_entries(&c, 1, &|id| ifx.get(id).copied().into_iter().collect()).unwrap();
    assert_eq!(m.endpoints.len(), 2, "only endpoints with an interface");
    let web = m
        .peer_v4
        .iter()
        .find(|e| e.prefix_len == 32 + 32)
        .expect("web's /32");
    assert_eq!(web.data, [0, 0, 0, 1, 10, 0, 0, 1]);
    let root6 = m.peer_v6.iter().find(|e| e.prefix_len == 32).expect("::/0");
    assert_eq!(&root6.data[..4], &[0, 0, 0, 1]);
    let p5432 = m
        .ports
        .iter()
        .find(|e| e.prefix_len == PORT_KEY_FIXED_BITS + 16)
        .expect("5432/16");
    assert_eq!(p5432.data, [0, 0, 0, 1, PORT_KIND_DST, 6, 0x15, 0x38]);
    let db_set = c.endpoints[&pod_id("db")].ingress;
    assert!(m.verdicts.contains_key(&VerdictKey {
        slot: 1,
        set: db_set,
        peer_class: ANY,
        port_class: ANY,
    }));
    assert!(m.verdicts.keys().all(|k| k.slot == 1));
    // The raw lookup agrees with the structured one.
    let p = tcp("10.0.0.1", "10.0.0.2", 6001);
    assert_eq!(
        lookup_entries(&m, 7, Direction::Ingress, &p).unwrap(),
        c.lookup(&pod_id("db"), Direction::Ingress, &p).unwrap()
    );
    assert!(matches!(
        lookup_entries(&m, 99, Direction::Ingress, &p),
        Err(LookupError::UnknownEndpoint(_))
    ));
    check_capacity(&m).unwrap();
}

#[test]
fn ifindex_conflicts_are_errors() {
    let c = compile(&db_policy_inventory(), &Options::default()).unwrap();
    let e = to_map_entries(&c, 0, &|_| vec![3]).unwrap_err();
    assert!(e.to_string().contains("interface 3"), "{e}");
}

#[test]
fn diff_lists_inserts_updates_and_deletes() {
    let a = db_policy_inventory();
    let mut b = a.clone();
    // db now also accepts 7000 and web gets a policy of its own.
    b.policies[0].ingress[0]
        .destination
        .ports
        .push(PortSpec::Range(7000, 7000));
    b.policies.push(policy(
        PolicyKind::NetworkPolicy,
        Some("ns"),
        "web",
        "app == 'web'",
        vec![rule(Action::Deny)],
        vec![],
    ));
    let ifx = |id: &EndpointId| match id {
        EndpointId::Pod { name, .. } => vec![name.len() as u32],
        _ => vec![],
    };
    let (ca, cb) = (
        compile(&a, &Options::default()).unwrap(),
        compile(&b, &Options::default()).unwrap(),
    );
    let (ma, mb) = (
        to_map_entries(&ca, 0, &ifx).unwrap(),
        to_map_entries(&cb, 0, &ifx).unwrap(),
    );
    assert!(diff(&ma, &ma).is_empty());
    let d = diff(&ma, &mb);
    assert!(!d.is_empty());
    assert!(
        d.ports.iter().any(|c| matches!(c, Change::Insert { .. })),
        "{d}"
    );
    // Applying the diff to the old entries gives the new ones.
    let mut verdicts = ma.verdicts.clone();
    for c in &d.verdicts {
        match *c {
            Change::Insert { key, value } => {
                verdicts.insert(key, value);
            }
            Change::Update { key, new, .. } => {
                verdicts.insert(key, new);
            }
            Change::Delete { key, .. } => {
                verdicts.remove(&key);
            }
        }
    }
    assert_eq!(verdicts, mb.verdicts);
    assert!(d.to_string().contains("VERDICTS"));
}

#[test]
fn capacity_errors_name_the_map() {
    let mut m = MapEntries::default();
    for i in 0..=(MAX_VERDICTS / 2) {
        m.verdicts.insert(
            VerdictKey {
                slot: 0,
                set: 0,
                peer_class: i,
                port_class: 0,
            },
            Default::default(),
        );
    }
    let e = check_capacity(&m).unwrap_err();
    assert_eq!(e.map, "VERDICTS");
    assert_eq!(e.needed, (MAX_VERDICTS / 2 + 1) as usize);
    assert!(e.to_string().contains("MAX_VERDICTS"), "{e}");
}

#[test]
fn duplicate_endpoints_are_errors() {
    let mut inv = base();
    inv.pods.push(pod("ns", "web", &[], &["10.0.0.9"]));
    assert!(matches!(
        compile(&inv, &Options::default()),
        Err(CompileError::DuplicateEndpoint(_))
    ));
}

#[test]
fn compilation_is_deterministic() {
    let inv = db_policy_inventory();
    let a = compile(&inv, &Options::default()).unwrap();
    let b = compile(&inv, &Options::default()).unwrap();
    assert_eq!(a.sets, b.sets);
    assert_eq!(a.endpoints, b.endpoints);
    assert_eq!(a.peers_v4, b.peers_v4);
    assert_eq!(a.port_prefixes, b.port_prefixes);
    assert_eq!(a.rules, b.rules);
}

fn hep(name: &str, ips: &[&str], profiles: &[&str]) -> HostEndpoint {
    HostEndpoint {
        name: name.into(),
        labels: labels(&[("role", "node")]),
        node: None,
        interface_name: Some("eth0".into()),
        expected_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        profiles: profiles.iter().map(|s| s.to_string()).collect(),
        ports: vec![NamedPort {
            name: "ssh".into(),
            port: 2222,
            protocol: Protocol::TCP,
        }],
        origin: origin(),
    }
}

#[test]
fn host_endpoints_get_failsafe_ports_and_default_deny() {
    let mut inv = base();
    inv.host_endpoints.push(hep("node1", &["192.0.2.10"], &[]));
    inv.host_endpoints
        .push(hep("bare", &[], &["projectcalico-default-allow"]));
    let mut ssh = tcp_to(Action::Allow, &[]);
    ssh.destination.ports = vec![PortSpec::Named("ssh".into())];
    ssh.source.nets = vec!["10.0.0.0/8".parse().unwrap()];
    inv.policies.push(policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "ssh",
        "role == 'node'",
        vec![ssh],
        vec![],
    ));
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    let node = EndpointId::Host {
        name: "node1".into(),
    };
    assert!(c.endpoints[&node].is_host);
    let r = agrees(
        &inv,
        &opts,
        &c,
        &node,
        Direction::Ingress,
        &tcp("203.0.113.1", "192.0.2.10", 22),
    );
    assert!(matches!(
        c.rule(r.rule_id).unwrap().decision,
        Decision::Failsafe { port: 22, .. }
    ));
    let r = agrees(
        &inv,
        &opts,
        &c,
        &node,
        Direction::Ingress,
        &tcp("10.0.0.3", "192.0.2.10", 2222),
    );
    assert_eq!(r.action, Verdict::Allow);
    let r = agrees(
        &inv,
        &opts,
        &c,
        &node,
        Direction::Ingress,
        &tcp("203.0.113.1", "192.0.2.10", 2222),
    );
    assert_eq!(r.action, Verdict::Deny);
    // No policy for egress: host endpoints without the default-allow profile deny.
    let r = agrees(
        &inv,
        &opts,
        &c,
        &node,
        Direction::Egress,
        &tcp("192.0.2.10", "203.0.113.1", 80),
    );
    assert_eq!(
        c.rule(r.rule_id).unwrap().decision,
        Decision::HostEndpointDefaultDeny
    );
    // A host endpoint without addresses is compiled with the unspecified address as its
    // own. Nothing owns that address, so a named port on its side never resolves (as in
    // Calico, whose named-port IP sets hold the endpoint's addresses): the policy selects it,
    // no rule matches, the tier denies.
    let bare = EndpointId::Host {
        name: "bare".into(),
    };
    let r = c
        .lookup(
            &bare,
            Direction::Ingress,
            &tcp("10.0.0.3", "192.0.2.99", 2222),
        )
        .unwrap();
    assert_eq!(
        c.rule(r.rule_id).unwrap().decision,
        Decision::TierDefault {
            tier: "default".into()
        }
    );
    let r = c
        .lookup(&bare, Direction::Egress, &tcp("0.0.0.0", "10.0.0.3", 2222))
        .unwrap();
    assert_eq!(
        c.rule(r.rule_id).unwrap().decision,
        Decision::Profile {
            profile: "projectcalico-default-allow".into()
        }
    );
}

#[test]
fn source_ports_get_their_own_lookup() {
    let mut inv = base();
    let mut r = rule(Action::Deny);
    r.protocol = Some(Protocol::UDP);
    r.source.ports = vec![PortSpec::Range(53, 53)];
    inv.policies.push(policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "no-dns-replies",
        "all()",
        vec![r, rule(Action::Allow)],
        vec![],
    ));
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    assert!(c.uses_src_ports);
    let udp = |sport| Packet {
        protocol: Protocol::UDP,
        src_port: Some(sport),
        ..tcp("10.0.0.1", "10.0.0.2", 5000)
    };
    let web = pod_id("db");
    assert_eq!(
        agrees(&inv, &opts, &c, &web, Direction::Ingress, &udp(53)).action,
        Verdict::Deny
    );
    assert_eq!(
        agrees(&inv, &opts, &c, &web, Direction::Ingress, &udp(54)).action,
        Verdict::Allow
    );
    let m = to_map_entries(&c, 0, &|_| vec![]).unwrap();
    assert_eq!(m.config_flags, CONFIG_SRC_PORTS);
    assert!(c.port_prefixes.iter().any(|p| p.kind == PortKind::Src));
}

#[test]
fn staged_policies_decide_only_the_staged_verdict() {
    let mut inv = db_policy_inventory();
    let mut staged = policy(
        PolicyKind::StagedGlobalNetworkPolicy,
        None,
        "lockdown",
        "all()",
        vec![rule(Action::Deny)],
        vec![],
    );
    staged.order = Some(1.0);
    inv.policies.push(staged);
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    let r = agrees(
        &inv,
        &opts,
        &c,
        &pod_id("web"),
        Direction::Ingress,
        &tcp("10.0.0.3", "10.0.0.1", 80),
    );
    assert_eq!((r.action, r.staged_action), (Verdict::Allow, Verdict::Deny));
}

#[test]
fn nested_network_sets_make_nested_classes() {
    let mut inv = base();
    inv.network_sets.push(NetworkSet {
        namespace: None,
        name: "feed".into(),
        labels: labels(&[("feed", "bad")]),
        nets: vec!["198.51.100.0/24".parse().unwrap()],
        origin: origin(),
    });
    let mut deny = rule(Action::Deny);
    deny.destination.selector = Some(Selector::parse("feed == 'bad'").unwrap());
    let mut allow = rule(Action::Allow);
    allow.destination.nets = vec!["198.51.100.128/25".parse().unwrap()];
    let mut allow_first = allow.clone();
    allow_first.destination.nets = vec!["198.51.100.7/32".parse().unwrap()];
    inv.policies.push(policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "egress",
        "all()",
        vec![],
        vec![allow_first, deny, allow, rule(Action::Allow)],
    ));
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    let web = pod_id("web");
    for (dst, want) in [
        ("198.51.100.7", Verdict::Allow),
        ("198.51.100.8", Verdict::Deny),
        ("198.51.100.200", Verdict::Deny),
        ("198.51.101.1", Verdict::Allow),
    ] {
        let r = agrees(
            &inv,
            &opts,
            &c,
            &web,
            Direction::Egress,
            &tcp("10.0.0.1", dst, 443),
        );
        assert_eq!(r.action, want, "{dst}");
    }
    // The /25 behaves like the /24 around it (the deny comes first), so it is not written.
    assert!(c.peers_v4.iter().all(|p| p.net.prefix_len() != 25));
    let nets: Vec<IpAddr> = c.peers_v4.iter().map(|p| p.net.addr()).collect();
    assert!(nets.contains(&"198.51.100.7".parse().unwrap()));
}

/// A synthetic cluster: `pods` pods in 10 namespaces with `apps` app labels, one Kubernetes
/// policy per app (ingress from the next app on one TCP port, egress DNS), a global deny of a
/// threat feed of `cidrs` /24s, and a global allow-all at the end.
pub(crate) fn synthetic(pods: usize, apps: usize, cidrs: usize) -> Inventory {
    let mut inv = Inventory::default();
    for n in 0..10 {
        inv.namespaces.push(Namespace {
            name: format!("ns{n}"),
            labels: labels(&[("team", if n % 2 == 0 { "a" } else { "b" })]),
            origin: origin(),
        });
    }
    for i in 0..pods {
        let app = i % apps;
        // App a lives in namespace a % 10 and accepts from app a + 10 (the same namespace).
        let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
        let mut p = pod(
            &format!("ns{}", app % 10),
            &format!("pod{i}"),
            &[("app", &format!("app{app}"))],
            &[&ip],
        );
        p.ports.push(NamedPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::TCP,
        });
        inv.pods.push(p);
    }
    for a in 0..apps {
        let mut from = tcp_to(Action::Allow, &[(8000 + a as u16, 8000 + a as u16)]);
        from.source.selector =
            Some(Selector::parse(&format!("app == 'app{}'", (a + 10) % apps)).unwrap());
        let mut named = tcp_to(Action::Allow, &[]);
        named.destination.ports = vec![PortSpec::Named("http".into())];
        named.source.namespace_selector = Some(Selector::parse("team == 'a'").unwrap());
        let mut dns = rule(Action::Allow);
        dns.protocol = Some(Protocol::UDP);
        dns.destination.ports = vec![PortSpec::Range(53, 53)];
        inv.policies.push(policy(
            PolicyKind::KubernetesNetworkPolicy,
            Some(&format!("ns{}", a % 10)),
            &format!("app{a}"),
            &format!("app == 'app{a}'"),
            vec![from, named],
            vec![dns],
        ));
    }
    inv.network_sets.push(NetworkSet {
        namespace: None,
        name: "feed".into(),
        labels: labels(&[("feed", "bad")]),
        nets: (0..cidrs)
            .map(|i| {
                format!("{}.{}.{}.0/24", 100 + i / 65536, (i / 256) % 256, i % 256)
                    .parse()
                    .unwrap()
            })
            .collect(),
        origin: origin(),
    });
    let mut deny = rule(Action::Deny);
    deny.destination.selector = Some(Selector::parse("feed == 'bad'").unwrap());
    let mut gnp = policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "feed",
        "all()",
        vec![],
        vec![deny],
    );
    gnp.order = Some(10.0);
    inv.policies.push(gnp);
    inv
}

#[test]
#[ignore]
fn compile_scaling_report() {
    for (pods, apps, cidrs) in [
        (100, 10, 100),
        (1000, 100, 100),
        (1000, 100, 10_000),
        (1000, 100, 1_000_000),
        (10_000, 100, 10_000),
        (10_000, 1000, 10_000),
    ] {
        let inv = synthetic(pods, apps, cidrs);
        let c = compile(&inv, &Options::default()).unwrap();
        let t = std::time::Instant::now() - c.stats.elapsed;
        let ifx: BTreeMap<EndpointId, u32> =
            c.endpoints.keys().take(200).cloned().zip(1..).collect();
        let m = to_map_entries(&c, 0, &|id| ifx.get(id).copied().into_iter().collect()).unwrap();
        println!(
            "pods {pods:6} apps {apps:5} cidrs {cidrs:8}: {:9.1} ms; sets {} peer classes {} port classes {} \
             peer prefixes {} port prefixes {} verdict entries {} (render {} endpoints: {:.1} ms)",
            c.stats.elapsed.as_secs_f64() * 1e3,
            c.stats.sets,
            c.stats.peer_classes_v4 + c.stats.peer_classes_v6,
            c.stats.dst_port_classes,
            c.stats.peer_prefixes,
            c.stats.port_prefixes,
            c.stats.verdict_entries,
            m.endpoints.len(),
            (t.elapsed() - c.stats.elapsed).as_secs_f64() * 1e3,
        );
    }
}

#[test]
fn roots_are_written_even_when_children_cover_them() {
    let mut inv = base();
    let mut a = rule(Action::Deny);
    a.source.nets = vec!["0.0.0.0/1".parse().unwrap()];
    let mut b = rule(Action::Allow);
    b.source.nets = vec!["128.0.0.0/1".parse().unwrap()];
    inv.policies.push(policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "halves",
        "all()",
        vec![a, b],
        vec![],
    ));
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    assert!(
        c.peers_v4.iter().any(|p| p.net.prefix_len() == 0),
        "{:?}",
        c.peers_v4
    );
    assert!(c.peers_v6.iter().any(|p| p.net.prefix_len() == 0));
    let db = pod_id("db");
    assert_eq!(
        agrees(
            &inv,
            &opts,
            &c,
            &db,
            Direction::Ingress,
            &tcp("10.0.0.1", "10.0.0.2", 1)
        )
        .action,
        Verdict::Deny
    );
    assert_eq!(
        agrees(
            &inv,
            &opts,
            &c,
            &db,
            Direction::Ingress,
            &tcp("200.0.0.1", "10.0.0.2", 1)
        )
        .action,
        Verdict::Allow
    );
}

#[test]
fn icmp_types_are_read_only_for_the_family_protocol() {
    let mut inv = base();
    let mut ping = rule(Action::Allow);
    ping.icmp = Some(crate::model::IcmpMatch {
        icmp_type: 0,
        code: None,
    });
    inv.policies.push(policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "ping",
        "all()",
        vec![ping],
        vec![],
    ));
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    let icmp = |proto: Protocol, src: &str, dst: &str, t: Option<u8>| Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: proto,
        src_port: None,
        dst_port: None,
        icmp_type: t,
        icmp_code: t,
    };
    let db = pod_id("db");
    let ok = |p: &Packet| agrees(&inv, &opts, &c, &db, Direction::Ingress, p).action;
    assert_eq!(
        ok(&icmp(Protocol::ICMP, "10.0.0.1", "10.0.0.2", Some(0))),
        Verdict::Allow
    );
    assert_eq!(
        ok(&icmp(Protocol::ICMP, "10.0.0.1", "10.0.0.2", Some(8))),
        Verdict::Deny
    );
    assert_eq!(
        ok(&icmp(Protocol::ICMPV6, "fd00::1", "fd00::2", Some(0))),
        Verdict::Allow
    );
    // ICMPv6 over IPv4: the datapath reads no type (port 0), nor does the packet it sees.
    assert_eq!(
        ok(&icmp(Protocol::ICMPV6, "10.0.0.1", "10.0.0.2", None)),
        Verdict::Deny
    );
    assert_eq!(
        port_key(&icmp(Protocol::ICMPV6, "10.0.0.1", "10.0.0.2", Some(3))),
        (58, 0, 0)
    );
    assert_eq!(
        port_key(&icmp(Protocol::ICMP, "10.0.0.1", "10.0.0.2", Some(3))),
        (1, 0x0303, 0)
    );
}

/// Two rules whose peer sides select the same peers, one of them limited to a peer port: the
/// compiler evaluates their address parts once (one peer shape), but the port limit must
/// still apply to the second (a regression found by the differential test).
#[test]
fn equal_peer_selectors_keep_their_own_peer_ports() {
    let mut inv = base();
    let mut any_port = rule(Action::Deny);
    any_port.destination.selector = Some(Selector::parse("app == 'db'").unwrap());
    let mut one_port = rule(Action::Allow);
    one_port.protocol = Some(Protocol::TCP);
    one_port.destination.selector = Some(Selector::parse("app == 'db'").unwrap());
    one_port.destination.ports = vec![PortSpec::Range(5432, 5432)];
    let mut first = policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "first",
        "app == 'web'",
        vec![],
        vec![one_port],
    );
    first.order = Some(1.0);
    let mut last = policy(
        PolicyKind::GlobalNetworkPolicy,
        None,
        "last",
        "app == 'web'",
        vec![],
        vec![any_port],
    );
    last.order = Some(2.0);
    // The rule without the port limit comes first in the inventory: it represents the shape.
    inv.policies.extend([last, first]);
    let opts = Options::default();
    let c = compile(&inv, &opts).unwrap();
    let web = pod_id("web");
    let allowed = agrees(
        &inv,
        &opts,
        &c,
        &web,
        Direction::Egress,
        &tcp("10.0.0.1", "10.0.0.2", 5432),
    );
    assert_eq!(allowed.action, Verdict::Allow);
    let denied = agrees(
        &inv,
        &opts,
        &c,
        &web,
        Direction::Egress,
        &tcp("10.0.0.1", "10.0.0.2", 80),
    );
    assert_eq!(denied.action, Verdict::Deny);
    let v6 = agrees(
        &inv,
        &opts,
        &c,
        &web,
        Direction::Egress,
        &tcp("fd00::1", "fd00::2", 80),
    );
    assert_eq!(v6.action, Verdict::Deny);
}

/// Copies of the benchmark's generated inventories (`enforcer-bench`'s `inventories.rs`, which
/// lives in the binary and cannot be imported here), for the scaling and output-stability
/// harnesses below.
pub(crate) mod bench_inv {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use ipnet::{IpNet, Ipv4Net, Ipv6Net};

    use super::{labels, origin};
    use crate::{
        model::{
            Action, Direction, EntityRule, Inventory, Namespace, NetworkSet, Policy, PolicyKind,
            PortSpec, Protocol, Rule, StagedAction,
        },
        selector::Selector,
    };

    const GROUPS: usize = 10;

    fn pod_v4(i: usize) -> Ipv4Addr {
        Ipv4Addr::from(0xac10_0000u32 + i as u32 + 1)
    }
    fn pod_v6(i: usize) -> Ipv6Addr {
        Ipv6Addr::from(0xfd00_0172_0000_0000_0000_0000_0000_0000u128 + i as u128 + 1)
    }
    fn rule_v4(r: usize) -> Ipv4Net {
        let base = 0x0a00_0000u32 | ((r as u32 & 0xf_ffff) << 4);
        Ipv4Net::new(Ipv4Addr::from(base), 28).unwrap()
    }
    fn rule_v6(r: usize) -> Ipv6Net {
        let base = 0xfd00_0010_0000_0000_0000_0000_0000_0000u128 | ((r as u128) << 4);
        Ipv6Net::new(Ipv6Addr::from(base), 124).unwrap()
    }
    fn rule_port(r: usize) -> u16 {
        1000 + (r % 16) as u16
    }

    fn allow_from(nets: Vec<IpNet>, selector: Option<Selector>, port: u16) -> Rule {
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
            annotations: Default::default(),
        }
    }

    fn policy(j: usize, selector: Selector, ingress: Vec<Rule>) -> Policy {
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

    fn pods(inv: &mut Inventory, endpoints: usize) {
        inv.namespaces.push(Namespace {
            name: "bench".into(),
            labels: labels(&[("kubernetes.io/metadata.name", "bench")]),
            origin: origin(),
        });
        for i in 0..endpoints {
            let g = format!("g{}", i % GROUPS);
            let mut p = super::pod(
                "bench",
                &format!("p{i}"),
                &[("app", "bench"), ("group", &g)],
                &[],
            );
            p.ips = vec![IpAddr::V4(pod_v4(i)), IpAddr::V6(pod_v6(i))];
            inv.pods.push(p);
        }
    }

    pub(crate) fn rules_inventory(rules: usize, endpoints: usize) -> Inventory {
        let mut inv = Inventory::default();
        pods(&mut inv, endpoints);
        let all = Selector::parse("all()").unwrap();
        for j in 0..rules.div_ceil(10) {
            let ingress = (j * 10..((j + 1) * 10).min(rules))
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
        inv
    }

    fn random_cidrs(n: usize, seed: u64) -> Vec<Ipv4Net> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let x = s;
                let addr = 0x0b00_0000u32 + (x as u32 % (0x7f00_0000 - 0x0b00_0000));
                let len = 24 + ((x >> 32) % 9) as u8;
                Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc()
            })
            .collect()
    }

    pub(crate) fn netset_inventory(cidrs: usize) -> Inventory {
        let mut inv = rules_inventory(10, 10);
        inv.network_sets.push(NetworkSet {
            namespace: None,
            name: "bench-set".into(),
            labels: labels(&[("set", "bench")]),
            nets: random_cidrs(cidrs, 42).into_iter().map(IpNet::V4).collect(),
            origin: origin(),
        });
        let rule = allow_from(
            Vec::new(),
            Some(Selector::parse("set == 'bench'").unwrap()),
            443,
        );
        inv.policies.push(policy(
            1_000_000,
            Selector::parse("all()").unwrap(),
            vec![rule],
        ));
        inv
    }

    pub(crate) fn control_plane_inventory(policies: usize, endpoints: usize) -> Inventory {
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
                    Some(Selector::parse(&format!("group == 'g{}'", (g + 1) % GROUPS)).unwrap()),
                    rule_port(j + 1),
                ),
            ];
            inv.policies.push(policy(
                j,
                Selector::parse(&format!("group == 'g{g}'")).unwrap(),
                rules,
            ));
        }
        inv
    }
}

/// The compiled output in a canonical text form (its `Debug`, elapsed time cleared), for
/// output-stability checks.
fn canonical_json(mut c: Compiled) -> String {
    c.stats.elapsed = std::time::Duration::ZERO;
    // The rule table's lookup maps are hash maps: print its entries only.
    let rules: Vec<&RuleInfo> = c.rules.iter().collect();
    format!(
        "endpoints {:?}\npeers_v4 {:?}\npeers_v6 {:?}\nport_prefixes {:?}\nsrc {}\nsets {:?}\nrules {rules:?}\nstats {:?}\n",
        c.endpoints, c.peers_v4, c.peers_v6, c.port_prefixes, c.uses_src_ports, c.sets, c.stats
    )
}

/// Inventories whose compiled output is compared before and after compiler changes: bench
/// inventories, the conformance corpus, the production example, and deterministic random
/// `testgen` inventories.
fn stability_inventories() -> Vec<(String, Inventory, Options)> {
    use proptest::strategy::{Strategy, ValueTree};
    let mut out = vec![
        (
            "cp-300x300".to_string(),
            bench_inv::control_plane_inventory(300, 300),
            Options::default(),
        ),
        (
            "rules-1000x10".to_string(),
            bench_inv::rules_inventory(1000, 10),
            Options::default(),
        ),
        (
            "netset-2000".to_string(),
            bench_inv::netset_inventory(2000),
            Options::default(),
        ),
        (
            "synthetic-1000-100-100".to_string(),
            synthetic(1000, 100, 100),
            Options::default(),
        ),
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/conformance"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let objects = match text.find("\n---") {
            Some(at) => format!("# header{}", &text[at..]),
            None => String::new(),
        };
        if let Ok(inv) = crate::sources::load_str(&objects, &f) {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            out.push((name, inv, Options::default()));
        }
    }
    if let Ok(inv) = crate::sources::load_paths(&[root.join("examples/production")]) {
        out.push(("production".to_string(), inv, Options::default()));
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (crate::testgen::inventory(), crate::testgen::options());
    for i in 0..300 {
        let (inv, opts) = strategy.new_tree(&mut runner).unwrap().current();
        out.push((format!("random-{i:03}"), inv, opts));
    }
    out
}

/// Writes every stability inventory's compiled output to `$COMPILE_DUMP_DIR/<name>.json`, or,
/// with `COMPILE_COMPARE_DIR`, compares against such a dump. Run with
/// `cargo test --release -p enforcer-user --lib compile::tests::compiled_output_dump -- --ignored`.
#[test]
#[ignore]
fn compiled_output_dump() {
    let dump = std::env::var("COMPILE_DUMP_DIR").ok().map(PathBuf::from);
    let compare = std::env::var("COMPILE_COMPARE_DIR").ok().map(PathBuf::from);
    if let Some(d) = &dump {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut differ = Vec::new();
    let mut n = 0;
    for (name, inv, opts) in stability_inventories() {
        let out = match compile(&inv, &opts) {
            Ok(c) => canonical_json(c),
            Err(e) => format!("error: {e}"),
        };
        n += 1;
        if let Some(d) = &dump {
            std::fs::write(d.join(format!("{name}.txt")), &out).unwrap();
        }
        if let Some(d) = &compare {
            let before = std::fs::read_to_string(d.join(format!("{name}.txt"))).unwrap();
            if before != out {
                differ.push(name);
            }
        }
    }
    println!("{n} inventories compiled");
    assert!(differ.is_empty(), "outputs differ: {differ:?}");
}
