//! Kubernetes kinds: NetworkPolicy (strict, converted into Calico's model as libcalico-go's
//! `K8sNetworkPolicyToCalico` does) and Namespace, Pod, ServiceAccount (lenient).

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use super::calico::{name, namespace};
use super::common::{
    Ctx, HostBits, check_labels, is_dns_label, is_dns_subdomain, label_selector, parse_net,
    port_name_problem, simplify_ports,
};
use super::raw::{IntOrString, K8sNetworkPolicy, K8sPeer, K8sPort, LenientObject, PodObject};
use crate::model::{
    Action, Direction, EntityRule, KUBERNETES_POLICY_ORDER, NamedPort, Namespace, Pod, Policy,
    PolicyKind, PortSpec, Protocol, Rule, ServiceAccount, StagedAction, default_kubernetes_types,
};
use crate::selector::{LabelSelector, Selector};

const SUBDOMAIN_NAME: &str = "expected lower-case alphanumerics, '-' and '.', at most 253 characters, each dot-separated part starting and ending alphanumeric";

fn selector_field(ls: &LabelSelector, field: &str, ctx: &mut Ctx<'_>) -> Option<Selector> {
    match label_selector(ls) {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.err(field, e);
            None
        }
    }
}

/// The Kubernetes protocol names (case-sensitive, as the API server checks them).
fn k8s_protocol(p: Option<&str>) -> Result<Protocol, String> {
    match p {
        None | Some("TCP") => Ok(Protocol::TCP),
        Some("UDP") => Ok(Protocol::UDP),
        Some("SCTP") => Ok(Protocol::SCTP),
        Some(other) => {
            let hint = ["TCP", "UDP", "SCTP"]
                .iter()
                .find(|v| v.eq_ignore_ascii_case(other))
                .map(|v| format!(" (Kubernetes protocol names are case-sensitive: write {v:?})"))
                .unwrap_or_default();
            Err(format!(
                "unsupported protocol {other:?}: expected TCP, UDP or SCTP{hint}"
            ))
        }
    }
}

/// One `ports[]` entry: its protocol and, when it names a port, the port (`None`: every port
/// of the protocol).
fn k8s_port(p: &K8sPort, field: &str, ctx: &mut Ctx<'_>) -> Option<(Protocol, Option<PortSpec>)> {
    let protocol = match k8s_protocol(p.protocol.as_deref()) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.err(format!("{field}.protocol"), e);
            None
        }
    };
    let port = match &p.port {
        None => {
            if p.end_port.is_some() {
                ctx.err(
                    format!("{field}.endPort"),
                    "endPort needs a numeric port as the start of the range",
                );
            }
            return protocol.map(|pr| (pr, None));
        }
        Some(IntOrString::Int(n)) => {
            if !(1..=65535).contains(n) {
                ctx.err(
                    format!("{field}.port"),
                    format!("port {n} is out of range: ports are 1 to 65535"),
                );
                return None;
            }
            let start = *n as u16;
            match p.end_port {
                None => PortSpec::Range(start, start),
                Some(e) if !(1..=65535).contains(&e) => {
                    ctx.err(
                        format!("{field}.endPort"),
                        format!("endPort {e} is out of range: ports are 1 to 65535"),
                    );
                    return None;
                }
                Some(e) if e < *n => {
                    ctx.err(
                        format!("{field}.endPort"),
                        format!("endPort {e} is less than port {n}: endPort must be >= port"),
                    );
                    return None;
                }
                Some(e) => PortSpec::Range(start, e as u16),
            }
        }
        Some(IntOrString::Str(s)) => {
            if let Some(why) = port_name_problem(s) {
                let hint = if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
                    format!("; write the number without quotes ({s})")
                } else {
                    String::new()
                };
                ctx.err(
                    format!("{field}.port"),
                    format!(
                        "invalid port {s:?}: expected a number 1-65535 or a port name ({why}){hint}"
                    ),
                );
                return None;
            }
            if p.end_port.is_some() {
                ctx.err(
                    format!("{field}.endPort"),
                    format!("endPort needs a numeric port, not the named port {s:?}"),
                );
                return None;
            }
            PortSpec::Named(s.clone())
        }
    };
    protocol.map(|pr| (pr, Some(port)))
}

/// A peer's Calico fields: (selector, namespaceSelector, nets, notNets).
type PeerFields = (Option<Selector>, Option<Selector>, Vec<IpNet>, Vec<IpNet>);

fn k8s_peer(peer: &K8sPeer, field: &str, ctx: &mut Ctx<'_>) -> Option<PeerFields> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            ctx.err(
                field,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer; use separate peers",
            );
            return None;
        }
        let cidr = match parse_net(&block.cidr, false, HostBits::Mask) {
            Ok(n) => n,
            Err(e) => {
                ctx.err(format!("{field}.ipBlock.cidr"), e);
                return None;
            }
        };
        let mut except = Vec::new();
        for (i, s) in block.except.iter().enumerate() {
            let f = format!("{field}.ipBlock.except[{i}]");
            match parse_net(s, false, HostBits::Mask) {
                Ok(n) if cidr.contains(&n) && n != cidr => except.push(n),
                Ok(n) => ctx.err(
                    f,
                    format!("except {n} must be a strict subset of cidr {cidr}"),
                ),
                Err(e) => ctx.err(f, e),
            }
        }
        return Some((None, None, vec![cidr], except));
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        ctx.err(
            field,
            "a peer needs podSelector, namespaceSelector or ipBlock (to match everything, leave `from`/`to` out)",
        );
        return None;
    }
    let selector = peer
        .pod_selector
        .as_ref()
        .map(|ls| selector_field(ls, &format!("{field}.podSelector"), ctx));
    let namespace_selector = peer
        .namespace_selector
        .as_ref()
        .map(|ls| selector_field(ls, &format!("{field}.namespaceSelector"), ctx));
    if matches!(selector, Some(None)) || matches!(namespace_selector, Some(None)) {
        return None;
    }
    Some((
        selector.flatten(),
        namespace_selector.flatten(),
        vec![],
        vec![],
    ))
}

/// One Kubernetes ingress or egress rule as Calico rules: one per protocol (sorted by name)
/// and peer, as `k8sRuleToCalico` does.
fn k8s_rule(
    peers: &[K8sPeer],
    ports: &[K8sPort],
    field: &str,
    peer_key: &str,
    ingress: bool,
    ctx: &mut Ctx<'_>,
) -> Vec<Rule> {
    let converted_peers: Vec<Option<PeerFields>> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| k8s_peer(p, &format!("{field}.{peer_key}[{i}]"), ctx))
        .collect();
    // Protocol name → ports (None: every port of the protocol).
    let mut by_protocol: BTreeMap<String, (Protocol, Option<Vec<PortSpec>>)> = BTreeMap::new();
    let mut port_errors = false;
    for (i, p) in ports.iter().enumerate() {
        let Some((protocol, port)) = k8s_port(p, &format!("{field}.ports[{i}]"), ctx) else {
            port_errors = true;
            continue;
        };
        let entry = by_protocol
            .entry(protocol.to_string())
            .or_insert((protocol, Some(Vec::new())));
        match (port, &mut entry.1) {
            (None, slot) => *slot = None,
            (Some(port), Some(list)) => list.push(port),
            (Some(_), None) => {}
        }
    }
    if port_errors || converted_peers.iter().any(Option::is_none) {
        return Vec::new();
    }
    let peers: Vec<PeerFields> = if converted_peers.is_empty() {
        vec![(None, None, vec![], vec![])]
    } else {
        converted_peers.into_iter().flatten().collect()
    };
    let groups: Vec<(Option<Protocol>, Vec<PortSpec>)> = if by_protocol.is_empty() {
        vec![(None, Vec::new())]
    } else {
        by_protocol
            .into_values()
            .map(|(p, ports)| (Some(p), simplify_ports(ports.unwrap_or_default())))
            .collect()
    };
    let mut rules = Vec::new();
    for (protocol, ports) in &groups {
        for (selector, namespace_selector, nets, not_nets) in &peers {
            let peer = EntityRule {
                nets: nets.clone(),
                not_nets: not_nets.clone(),
                selector: selector.clone(),
                namespace_selector: namespace_selector.clone(),
                ..EntityRule::default()
            };
            let (source, destination) = if ingress {
                (
                    peer,
                    EntityRule {
                        ports: ports.clone(),
                        ..EntityRule::default()
                    },
                )
            } else {
                (
                    EntityRule::default(),
                    EntityRule {
                        ports: ports.clone(),
                        ..peer
                    },
                )
            };
            rules.push(Rule {
                action: Action::Allow,
                protocol: *protocol,
                not_protocol: None,
                icmp: None,
                not_icmp: None,
                ip_version: None,
                source,
                destination,
                annotations: BTreeMap::new(),
            });
        }
    }
    rules
}

/// A `networking.k8s.io/v1` NetworkPolicy as an Allow-only Calico policy in tier `default` at
/// order 1000.
pub(crate) fn network_policy(np: &K8sNetworkPolicy, ctx: &mut Ctx<'_>) -> Option<Policy> {
    let name = name(&np.metadata, ctx, is_dns_subdomain, SUBDOMAIN_NAME);
    let namespace = namespace(&np.metadata, ctx);
    check_labels(ctx, "metadata.labels", &np.metadata.labels);
    let default_spec = Default::default();
    let spec = np.spec.as_ref().unwrap_or(&default_spec);
    let selector = match &spec.pod_selector {
        None => Some(Selector::all()),
        Some(ls) => selector_field(ls, "spec.podSelector", ctx),
    };
    let mut types = Vec::new();
    for (i, t) in spec.policy_types.iter().enumerate() {
        let field = format!("spec.policyTypes[{i}]");
        let d = match t.as_str() {
            "Ingress" => Direction::Ingress,
            "Egress" => Direction::Egress,
            other => {
                ctx.err(
                    field,
                    format!("unsupported policy type {other:?}: expected Ingress or Egress"),
                );
                continue;
            }
        };
        if types.contains(&d) {
            ctx.err(field, format!("{t:?} is listed more than once"));
            continue;
        }
        types.push(d);
    }
    let types_explicit = !spec.policy_types.is_empty();
    if !types_explicit {
        types = default_kubernetes_types(!spec.egress.is_empty());
    }
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().enumerate() {
        ingress.extend(k8s_rule(
            &r.from,
            &r.ports,
            &format!("spec.ingress[{i}]"),
            "from",
            true,
            ctx,
        ));
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().enumerate() {
        egress.extend(k8s_rule(
            &r.to,
            &r.ports,
            &format!("spec.egress[{i}]"),
            "to",
            false,
            ctx,
        ));
    }
    if !ctx.ok() {
        return None;
    }
    Some(Policy {
        kind: PolicyKind::KubernetesNetworkPolicy,
        namespace: Some(namespace),
        name: name?,
        tier: "default".to_string(),
        order: Some(KUBERNETES_POLICY_ORDER),
        selector: selector?,
        namespace_selector: None,
        service_account_selector: None,
        types,
        types_explicit,
        ingress,
        egress,
        apply_on_forward: false,
        pre_dnat: false,
        do_not_track: false,
        staged_action: StagedAction::Set,
        origin: ctx.origin.clone(),
    })
}

fn lenient_name(name: Option<&str>, ctx: &mut Ctx<'_>) -> Option<String> {
    match name {
        None | Some("") => {
            ctx.err("metadata.name", "missing: every object needs a name");
            None
        }
        Some(n) => Some(n.to_string()),
    }
}

fn lenient_namespace(ns: Option<&str>) -> String {
    match ns {
        None | Some("") => "default".to_string(),
        Some(ns) => ns.to_string(),
    }
}

pub(crate) fn namespace_object(obj: LenientObject, ctx: &mut Ctx<'_>) -> Option<Namespace> {
    let name = lenient_name(obj.metadata.name.as_deref(), ctx)?;
    if !is_dns_label(&name) {
        ctx.err(
            "metadata.name",
            format!(
                "invalid namespace name {name:?}: expected 1-63 lower-case alphanumerics or '-', starting and ending alphanumeric"
            ),
        );
        return None;
    }
    let mut labels = obj.metadata.labels;
    // The API server sets this label on every namespace (Kubernetes 1.21+).
    labels
        .entry("kubernetes.io/metadata.name".to_string())
        .or_insert_with(|| name.clone());
    Some(Namespace {
        name,
        labels,
        origin: ctx.origin.clone(),
    })
}

pub(crate) fn service_account(obj: LenientObject, ctx: &mut Ctx<'_>) -> Option<ServiceAccount> {
    let name = lenient_name(obj.metadata.name.as_deref(), ctx)?;
    Some(ServiceAccount {
        namespace: lenient_namespace(obj.metadata.namespace.as_deref()),
        name,
        labels: obj.metadata.labels,
        origin: ctx.origin.clone(),
    })
}

pub(crate) fn pod(obj: PodObject, ctx: &mut Ctx<'_>) -> Option<Pod> {
    let name = lenient_name(obj.metadata.name.as_deref(), ctx);
    let mut ports = Vec::new();
    for (c, container) in obj.spec.containers.iter().enumerate() {
        for (i, p) in container.ports.iter().enumerate() {
            let field = format!("spec.containers[{c}].ports[{i}]");
            let port = match p.container_port {
                n @ 1..=65535 => n as u16,
                n => {
                    ctx.err(
                        format!("{field}.containerPort"),
                        format!("port {n} is out of range: ports are 1 to 65535"),
                    );
                    continue;
                }
            };
            let protocol = match k8s_protocol(p.protocol.as_deref()) {
                Ok(pr) => pr,
                Err(e) => {
                    ctx.err(format!("{field}.protocol"), e);
                    continue;
                }
            };
            let name = p.name.clone().unwrap_or_default();
            if !name.is_empty()
                && let Some(why) = port_name_problem(&name)
            {
                ctx.err(
                    format!("{field}.name"),
                    format!("invalid port name {name:?}: {why}"),
                );
                continue;
            }
            ports.push(NamedPort {
                name,
                port,
                protocol,
            });
        }
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut add_ip = |s: &str, field: String, ctx: &mut Ctx<'_>| match s.parse::<IpAddr>() {
        Ok(ip) => {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        Err(_) => ctx.err(field, format!("invalid IP address {s:?}")),
    };
    for (i, p) in obj.status.pod_ips.iter().enumerate() {
        add_ip(&p.ip, format!("status.podIPs[{i}].ip"), ctx);
    }
    if let Some(ip) = obj.status.pod_ip.as_deref().filter(|s| !s.is_empty()) {
        add_ip(ip, "status.podIP".to_string(), ctx);
    }
    if !ctx.ok() {
        return None;
    }
    Some(Pod {
        namespace: lenient_namespace(obj.metadata.namespace.as_deref()),
        name: name?,
        labels: obj.metadata.labels,
        service_account: obj
            .spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        ports,
        host_network: obj.spec.host_network.unwrap_or(false),
        node_name: obj.spec.node_name.filter(|s| !s.is_empty()),
        ips,
        origin: ctx.origin.clone(),
    })
}
