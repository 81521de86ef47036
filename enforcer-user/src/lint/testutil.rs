//! Builders for lint unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, path::PathBuf};

use ipnet::IpNet;

use crate::{
    model::{
        Action, Direction, EntityRule, Inventory, Labels, Namespace, Origin, Pod, Policy,
        PolicyKind, PortSpec, Protocol, Rule, StagedAction, Tier, TierDefault,
    },
    selector::Selector,
};

pub fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("test selector parses")
}

pub fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter()
        .map(|s| s.parse().expect("test net parses"))
        .collect()
}

pub fn origin(doc: usize) -> Origin {
    Origin {
        file: PathBuf::from("test.yaml"),
        document: doc,
    }
}

pub fn rule(action: Action) -> Rule {
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

pub fn allow() -> Rule {
    rule(Action::Allow)
}

pub fn deny() -> Rule {
    rule(Action::Deny)
}

/// `action protocol to ports [port]`.
pub fn port_rule(action: Action, proto: Protocol, port: u16) -> Rule {
    let mut r = rule(action);
    r.protocol = Some(proto);
    r.destination.ports = vec![PortSpec::Range(port, port)];
    r
}

/// A Calico NetworkPolicy in `ns` with explicit types.
pub fn calico(ns: &str, name: &str, selector: &str, order: Option<f64>) -> Policy {
    Policy {
        kind: PolicyKind::NetworkPolicy,
        namespace: Some(ns.to_string()),
        name: name.to_string(),
        tier: "default".to_string(),
        order,
        selector: sel(selector),
        namespace_selector: None,
        service_account_selector: None,
        types: vec![Direction::Ingress],
        types_explicit: true,
        ingress: Vec::new(),
        egress: Vec::new(),
        apply_on_forward: false,
        pre_dnat: false,
        do_not_track: false,
        staged_action: StagedAction::Set,
        origin: origin(1),
    }
}

/// A converted Kubernetes NetworkPolicy.
pub fn k8s(ns: &str, name: &str, selector: &str) -> Policy {
    let mut p = calico(ns, name, selector, Some(1000.0));
    p.kind = PolicyKind::KubernetesNetworkPolicy;
    p
}

pub fn global(name: &str, selector: &str, order: Option<f64>) -> Policy {
    let mut p = calico("x", name, selector, order);
    p.kind = PolicyKind::GlobalNetworkPolicy;
    p.namespace = None;
    p
}

pub fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn pod(ns: &str, name: &str, kv: &[(&str, &str)], ip: &str) -> Pod {
    Pod {
        namespace: ns.to_string(),
        name: name.to_string(),
        labels: labels(kv),
        service_account: "default".to_string(),
        ports: Vec::new(),
        host_network: false,
        node_name: None,
        ips: vec![ip.parse().expect("test ip parses")],
        origin: origin(1),
    }
}

pub fn namespace(name: &str, kv: &[(&str, &str)]) -> Namespace {
    Namespace {
        name: name.to_string(),
        labels: labels(kv),
        origin: origin(1),
    }
}

pub fn tier(name: &str, order: f64, default_action: TierDefault) -> Tier {
    Tier {
        name: name.to_string(),
        order: Some(order),
        default_action,
        origin: Some(origin(1)),
    }
}

pub fn inventory(policies: Vec<Policy>) -> Inventory {
    Inventory {
        policies,
        ..Inventory::default()
    }
}
