//! Calico `projectcalico.org/v3` (and `crd.projectcalico.org/v1`) kinds into the model,
//! validating as Calico's `libcalico-go/lib/validator/v3/validator.go` does.

use std::net::IpAddr;

use ipnet::IpNet;

use super::common::{
    Ctx, HostBits, calico_supports_ports, check_labels, is_dns_label, is_dns_subdomain,
    parse_calico_port, parse_net, parse_protocol, parse_selector, port_name_problem, protocol_name,
};
use super::raw::{
    CalicoPolicySpec, HostEndpointSpec, NetworkSetSpec, RawEntityRule, RawIcmp, RawRule,
    StrictMeta, TierSpec,
};
use crate::model::{
    Action, DEFAULT_TIER_ORDER, Direction, EntityRule, HostEndpoint, IcmpMatch,
    KUBE_ADMIN_TIER_ORDER, KUBE_BASELINE_TIER_ORDER, NamedPort, NetworkSet, Policy, PolicyKind,
    Protocol, Rule, ServiceAccountMatch, StagedAction, Tier, TierDefault, default_calico_types,
};
use crate::selector::Selector;

/// `metadata.name`, required; `check` says what a valid name is when it is not.
pub(crate) fn name(
    meta: &StrictMeta,
    ctx: &mut Ctx<'_>,
    valid: fn(&str) -> bool,
    what: &str,
) -> Option<String> {
    match meta.name.as_deref() {
        None | Some("") => {
            ctx.err("metadata.name", "missing: every object needs a name");
            None
        }
        Some(n) if !valid(n) => {
            ctx.err("metadata.name", format!("invalid name {n:?}: {what}"));
            None
        }
        Some(n) => Some(n.to_string()),
    }
}

/// `metadata.namespace` of a namespaced kind: `default` when absent (as kubectl does).
pub(crate) fn namespace(meta: &StrictMeta, ctx: &mut Ctx<'_>) -> String {
    match meta.namespace.as_deref() {
        None | Some("") => "default".to_string(),
        Some(ns) => {
            if !is_dns_label(ns) {
                ctx.err(
                    "metadata.namespace",
                    format!(
                        "invalid namespace {ns:?}: a namespace name is 1-63 lower-case alphanumerics or '-', starting and ending alphanumeric"
                    ),
                );
            }
            ns.to_string()
        }
    }
}

/// Cluster-scoped kinds take no namespace.
pub(crate) fn no_namespace(meta: &StrictMeta, ctx: &mut Ctx<'_>, kind: &str) {
    if let Some(ns) = meta.namespace.as_deref().filter(|ns| !ns.is_empty()) {
        ctx.err(
            "metadata.namespace",
            format!("{kind} is cluster-scoped and takes no namespace (found {ns:?}); remove it"),
        );
    }
}

const LABEL_NAME: &str =
    "expected 1-63 lower-case alphanumerics or '-', starting and ending alphanumeric";
const SUBDOMAIN_NAME: &str = "expected lower-case alphanumerics, '-' and '.', at most 253 characters, each dot-separated part starting and ending alphanumeric";

/// Calico's `networkPolicyNameRegex`: a DNS label, optionally one `tier.` prefix, or the
/// `knp.default.`/`ossg.default.` forms Calico generates.
fn valid_namespaced_policy_name(n: &str) -> bool {
    if n.len() > 253 {
        return false;
    }
    if let Some(rest) = n
        .strip_prefix("knp.default.")
        .or_else(|| n.strip_prefix("ossg.default."))
    {
        return is_dns_subdomain(rest);
    }
    valid_global_policy_name(n)
}

/// Calico's `globalNetworkPolicyNameRegex`: a DNS label with at most one `tier.` prefix.
fn valid_global_policy_name(n: &str) -> bool {
    match n.split_once('.') {
        Some((tier, rest)) => is_dns_label(tier) && is_dns_label(rest),
        None => is_dns_label(n),
    }
}

/// Parses an optional selector field; empty text is `None`.
fn optional_selector(
    text: Option<&str>,
    field: &str,
    ctx: &mut Ctx<'_>,
    allow_global: bool,
) -> Option<Selector> {
    let text = text?;
    if text.trim().is_empty() {
        return None;
    }
    match parse_selector(text) {
        Ok(s) => {
            if !allow_global && s.uses_global() {
                ctx.err(
                    field,
                    format!(
                        "selector {text:?} uses global(), which is only valid as a rule's namespaceSelector"
                    ),
                );
            }
            Some(s)
        }
        Err(e) => {
            ctx.err(field, e);
            None
        }
    }
}

fn check_order(order: Option<f64>, field: &str, ctx: &mut Ctx<'_>) -> Option<f64> {
    match order {
        Some(o) if !o.is_finite() => {
            ctx.err(
                field,
                format!("invalid order {o}: expected a finite number"),
            );
            None
        }
        o => o,
    }
}

/// A Calico policy of any of the four kinds.
pub(crate) fn policy(
    kind: PolicyKind,
    meta: &StrictMeta,
    spec: CalicoPolicySpec,
    ctx: &mut Ctx<'_>,
) -> Option<Policy> {
    let global = kind.is_global();
    let name = if global {
        no_namespace(meta, ctx, kind.kind_name());
        name(
            meta,
            ctx,
            valid_global_policy_name,
            "expected a DNS label (lower-case alphanumerics and '-'), optionally prefixed by \"<tier>.\"",
        )
    } else {
        name(
            meta,
            ctx,
            valid_namespaced_policy_name,
            "expected a DNS label (lower-case alphanumerics and '-'), optionally prefixed by \"<tier>.\"",
        )
    };
    let namespace = (!global).then(|| namespace(meta, ctx));
    check_labels(ctx, "metadata.labels", &meta.labels);

    let tier = match spec.tier.as_deref() {
        None | Some("") => "default".to_string(),
        Some(t) => {
            if !is_dns_label(t) {
                ctx.err(
                    "spec.tier",
                    format!("invalid tier name {t:?}: {LABEL_NAME}"),
                );
            }
            t.to_string()
        }
    };

    let staged_action = match spec.staged_action.as_deref() {
        None | Some("") | Some("Set") => StagedAction::Set,
        Some("Delete") => StagedAction::Delete,
        Some(a @ ("Learn" | "Ignore")) => {
            ctx.err(
                "spec.stagedAction",
                format!("stagedAction {a:?} is not supported; Enforcer supports Set and Delete"),
            );
            StagedAction::Set
        }
        Some(a) => {
            ctx.err(
                "spec.stagedAction",
                format!("invalid stagedAction {a:?}: expected Set or Delete"),
            );
            StagedAction::Set
        }
    };
    if staged_action == StagedAction::Delete {
        // Calico: "Spec fields, except Tier, should all be zero-value if stagedAction is Delete".
        let non_empty = spec.order.is_some()
            || spec.selector.as_deref().is_some_and(|s| !s.is_empty())
            || !spec.types.is_empty()
            || !spec.ingress.is_empty()
            || !spec.egress.is_empty()
            || spec
                .service_account_selector
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            || spec
                .namespace_selector
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            || spec.do_not_track == Some(true)
            || spec.pre_dnat == Some(true)
            || spec.apply_on_forward == Some(true)
            || !spec.performance_hints.is_empty();
        if non_empty {
            ctx.err(
                "spec",
                "with stagedAction Delete every spec field except tier must be empty",
            );
        }
    }

    let order = check_order(spec.order, "spec.order", ctx);
    let selector = optional_selector(spec.selector.as_deref(), "spec.selector", ctx, false)
        .unwrap_or_else(Selector::all);
    let namespace_selector = optional_selector(
        spec.namespace_selector.as_deref(),
        "spec.namespaceSelector",
        ctx,
        false,
    );
    let service_account_selector = optional_selector(
        spec.service_account_selector.as_deref(),
        "spec.serviceAccountSelector",
        ctx,
        false,
    );

    let mut types = Vec::new();
    for (i, t) in spec.types.iter().enumerate() {
        let field = format!("spec.types[{i}]");
        let d = match t.as_str() {
            "Ingress" => Direction::Ingress,
            "Egress" => Direction::Egress,
            other => {
                let hint = if other.eq_ignore_ascii_case("ingress")
                    || other.eq_ignore_ascii_case("egress")
                {
                    " (types are case-sensitive)"
                } else {
                    ""
                };
                ctx.err(
                    field,
                    format!("invalid type {other:?}: expected Ingress or Egress{hint}"),
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

    let mut seen_hints = Vec::new();
    for (i, h) in spec.performance_hints.iter().enumerate() {
        // Hints "never change the enforcement behaviour of the policy" (Calico API docs), so
        // they are checked and ignored.
        let field = format!("spec.performanceHints[{i}]");
        if h != "AssumeNeededOnEveryNode" {
            ctx.err(
                field,
                format!("invalid performance hint {h:?}: the only hint is AssumeNeededOnEveryNode"),
            );
        } else if seen_hints.contains(&h) {
            ctx.err(field, format!("{h:?} is listed more than once"));
        }
        seen_hints.push(h);
    }

    let do_not_track = spec.do_not_track.unwrap_or(false);
    let pre_dnat = spec.pre_dnat.unwrap_or(false);
    let apply_on_forward = spec.apply_on_forward.unwrap_or(false);
    if do_not_track && pre_dnat {
        ctx.err("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
    }
    if pre_dnat && !spec.egress.is_empty() {
        ctx.err("spec.egress", "a preDNAT policy cannot have egress rules");
    }
    if pre_dnat && types.contains(&Direction::Egress) {
        ctx.err("spec.types", "a preDNAT policy cannot have type Egress");
    }
    if (do_not_track || pre_dnat) && !apply_on_forward {
        ctx.err(
            "spec.applyOnForward",
            "applyOnForward must be true when preDNAT or doNotTrack is true",
        );
    }

    let ingress: Vec<Rule> = spec
        .ingress
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule(r, &format!("spec.ingress[{i}]"), ctx))
        .collect();
    let egress: Vec<Rule> = spec
        .egress
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule(r, &format!("spec.egress[{i}]"), ctx))
        .collect();

    let types_explicit = !types.is_empty();
    if !types_explicit {
        types = default_calico_types(!spec.ingress.is_empty(), !spec.egress.is_empty());
    }

    if !ctx.ok() {
        return None;
    }
    Some(Policy {
        kind,
        namespace,
        name: name?,
        tier,
        order,
        selector,
        namespace_selector,
        service_account_selector,
        types,
        types_explicit,
        ingress,
        egress,
        apply_on_forward,
        pre_dnat,
        do_not_track,
        staged_action,
        origin: ctx.origin.clone(),
    })
}

fn action(a: &str) -> Result<Action, String> {
    match a {
        "Allow" => Ok(Action::Allow),
        "Deny" => Ok(Action::Deny),
        "Pass" => Ok(Action::Pass),
        "Log" => Ok(Action::Log),
        other => {
            let hint = ["Allow", "Deny", "Pass", "Log"]
                .iter()
                .find(|v| v.eq_ignore_ascii_case(other))
                .map(|v| format!(" (actions are case-sensitive: write {v:?})"))
                .unwrap_or_default();
            Err(format!(
                "invalid action {other:?}: expected Allow, Deny, Pass or Log{hint}"
            ))
        }
    }
}

fn icmp(
    raw: &RawIcmp,
    field: &str,
    protocol: Option<Protocol>,
    ctx: &mut Ctx<'_>,
) -> Option<IcmpMatch> {
    if !matches!(protocol, Some(Protocol::ICMP | Protocol::ICMPV6)) {
        ctx.err(
            field,
            format!(
                "ICMP type/code matches need protocol ICMP or ICMPv6 ({})",
                protocol_name(protocol)
            ),
        );
    }
    let icmp_type = match raw.icmp_type {
        None => None,
        Some(t @ 0..=254) => Some(t as u8),
        Some(t) => {
            ctx.err(
                format!("{field}.type"),
                format!("invalid ICMP type {t}: expected 0 to 254"),
            );
            None
        }
    };
    let code = match raw.code {
        None => None,
        Some(c @ 0..=255) => Some(c as u8),
        Some(c) => {
            ctx.err(
                format!("{field}.code"),
                format!("invalid ICMP code {c}: expected 0 to 255"),
            );
            None
        }
    };
    if raw.code.is_some() && raw.icmp_type.is_none() {
        ctx.err(
            format!("{field}.code"),
            "an ICMP code needs an ICMP type as well",
        );
    }
    icmp_type.map(|icmp_type| IcmpMatch { icmp_type, code })
}

/// One Calico rule; `field` is its path (`spec.ingress[0]`).
pub(crate) fn rule(raw: &RawRule, field: &str, ctx: &mut Ctx<'_>) -> Option<Rule> {
    let start = ctx.errors.len();
    let action = match action(&raw.action) {
        Ok(a) => Some(a),
        Err(e) => {
            ctx.err(format!("{field}.action"), e);
            None
        }
    };
    let ip_version = match raw.ip_version {
        None => None,
        Some(v @ (4 | 6)) => Some(v as u8),
        Some(v) => {
            ctx.err(
                format!("{field}.ipVersion"),
                format!("invalid ipVersion {v}: expected 4 or 6"),
            );
            None
        }
    };
    let proto = |p: &Option<super::raw::IntOrString>, name: &str, ctx: &mut Ctx<'_>| {
        p.as_ref().and_then(|p| match parse_protocol(p) {
            Ok(p) => Some(p),
            Err(e) => {
                ctx.err(format!("{field}.{name}"), e);
                None
            }
        })
    };
    let protocol = proto(&raw.protocol, "protocol", ctx);
    let not_protocol = proto(&raw.not_protocol, "notProtocol", ctx);
    let protocol_ok = raw.protocol.is_none() || protocol.is_some();

    if raw.http.is_some() {
        ctx.err(
            format!("{field}.http"),
            "HTTP matching (application layer policy) is not supported yet",
        );
    }
    let icmp_match = raw
        .icmp
        .as_ref()
        .and_then(|i| icmp(i, &format!("{field}.icmp"), protocol, ctx));
    let not_icmp = raw
        .not_icmp
        .as_ref()
        .and_then(|i| icmp(i, &format!("{field}.notICMP"), protocol, ctx));

    // Calico: ICMP needs IPv4, ICMPv6 needs IPv6 when ipVersion is given.
    for (p, which) in [(protocol, "protocol"), (not_protocol, "notProtocol")] {
        match (p, ip_version) {
            (Some(Protocol::ICMP), Some(6)) => ctx.err(
                format!("{field}.ipVersion"),
                format!("{which} ICMP is IPv4-only: set ipVersion 4 or use ICMPv6"),
            ),
            (Some(Protocol::ICMPV6), Some(4)) => ctx.err(
                format!("{field}.ipVersion"),
                format!("{which} ICMPv6 is IPv6-only: set ipVersion 6 or use ICMP"),
            ),
            _ => {}
        }
    }

    let source = entity(&raw.source, &format!("{field}.source"), ctx);
    let destination = entity(&raw.destination, &format!("{field}.destination"), ctx);

    // Ports need a protocol that has them (Calico: TCP, UDP or SCTP).
    if protocol_ok {
        for (which, raw_ports) in [
            ("source.ports", &raw.source.ports),
            ("source.notPorts", &raw.source.not_ports),
            ("destination.ports", &raw.destination.ports),
            ("destination.notPorts", &raw.destination.not_ports),
        ] {
            if raw_ports.is_empty() || protocol.is_some_and(calico_supports_ports) {
                continue;
            }
            let extra = if protocol == Some(Protocol::UDPLITE) {
                "; Calico does not accept ports with UDPLite"
            } else {
                ""
            };
            ctx.err(
                format!("{field}.{which}"),
                format!(
                    "ports need protocol TCP, UDP or SCTP ({}){extra}",
                    protocol_name(protocol)
                ),
            );
        }
    }

    // One IP family per rule, matching ipVersion (Calico's validateRule).
    let mut seen_v4 = false;
    let mut seen_v6 = false;
    for (which, nets) in [
        ("source.nets", &source.nets),
        ("source.notNets", &source.not_nets),
        ("destination.nets", &destination.nets),
        ("destination.notNets", &destination.not_nets),
    ] {
        let v4 = nets.iter().any(|n| matches!(n, IpNet::V4(_)));
        let v6 = nets.iter().any(|n| matches!(n, IpNet::V6(_)));
        if (v4 && ip_version == Some(6)) || (v6 && ip_version == Some(4)) {
            ctx.err(
                format!("{field}.{which}"),
                format!(
                    "the CIDRs' IP version does not match the rule's ipVersion {}",
                    ip_version.unwrap_or_default()
                ),
            );
        }
        if (v4 && (v6 || seen_v6)) || (v6 && seen_v4) {
            ctx.err(
                format!("{field}.{which}"),
                "the rule mixes IPv4 and IPv6 CIDRs; a rule matches one IP family: split it into two rules",
            );
        }
        seen_v4 |= v4;
        seen_v6 |= v6;
    }

    if ctx.errors.len() != start {
        return None;
    }
    Some(Rule {
        action: action?,
        protocol,
        not_protocol,
        icmp: icmp_match,
        not_icmp,
        ip_version,
        source,
        destination,
        annotations: raw
            .metadata
            .as_ref()
            .map(|m| m.annotations.clone())
            .unwrap_or_default(),
    })
}

fn entity(raw: &RawEntityRule, field: &str, ctx: &mut Ctx<'_>) -> EntityRule {
    let nets = |list: &[String], name: &str, ctx: &mut Ctx<'_>| -> Vec<IpNet> {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| match parse_net(s, true, HostBits::Reject) {
                Ok(n) => Some(n),
                Err(e) => {
                    ctx.err(format!("{field}.{name}[{i}]"), e);
                    None
                }
            })
            .collect()
    };
    let nets_v = nets(&raw.nets, "nets", ctx);
    let not_nets = nets(&raw.not_nets, "notNets", ctx);
    let selector = optional_selector(
        raw.selector.as_deref(),
        &format!("{field}.selector"),
        ctx,
        false,
    );
    let not_selector = optional_selector(
        raw.not_selector.as_deref(),
        &format!("{field}.notSelector"),
        ctx,
        false,
    );
    let namespace_selector = optional_selector(
        raw.namespace_selector.as_deref(),
        &format!("{field}.namespaceSelector"),
        ctx,
        true,
    );
    if let Some(ns) = &namespace_selector
        && ns.uses_global()
        && ns.as_str().trim() != "global()"
    {
        ctx.err(
            format!("{field}.namespaceSelector"),
            format!(
                "namespaceSelector {:?}: global() cannot be combined with other selector terms",
                ns.as_str()
            ),
        );
    }
    let ports = |list: &[super::raw::IntOrString], name: &str, ctx: &mut Ctx<'_>| {
        list.iter()
            .enumerate()
            .filter_map(|(i, p)| match parse_calico_port(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    ctx.err(format!("{field}.{name}[{i}]"), e);
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    let ports_v = ports(&raw.ports, "ports", ctx);
    let not_ports = ports(&raw.not_ports, "notPorts", ctx);
    let service_accounts = raw.service_accounts.as_ref().and_then(|sa| {
        let selector = optional_selector(
            sa.selector.as_deref(),
            &format!("{field}.serviceAccounts.selector"),
            ctx,
            false,
        );
        for (i, n) in sa.names.iter().enumerate() {
            if !is_dns_subdomain(n) {
                ctx.err(
                    format!("{field}.serviceAccounts.names[{i}]"),
                    format!("invalid service account name {n:?}: {SUBDOMAIN_NAME}"),
                );
            }
        }
        (!sa.names.is_empty() || selector.is_some()).then(|| ServiceAccountMatch {
            names: sa.names.clone(),
            selector,
        })
    });
    if raw.services.is_some() {
        ctx.err(
            format!("{field}.services"),
            "matching Kubernetes Services is not supported yet",
        );
    }
    if raw.domains.is_some() {
        ctx.err(
            format!("{field}.domains"),
            "domain names are not supported yet (a later milestone)",
        );
    }
    EntityRule {
        nets: nets_v,
        not_nets,
        selector,
        not_selector,
        namespace_selector,
        ports: ports_v,
        not_ports,
        service_accounts,
    }
}

/// NetworkSet (`global == false`) or GlobalNetworkSet.
pub(crate) fn network_set(
    global: bool,
    meta: &StrictMeta,
    spec: NetworkSetSpec,
    ctx: &mut Ctx<'_>,
) -> Option<NetworkSet> {
    let name = name(meta, ctx, is_dns_subdomain, SUBDOMAIN_NAME);
    let namespace = if global {
        no_namespace(meta, ctx, "GlobalNetworkSet");
        None
    } else {
        Some(namespace(meta, ctx))
    };
    check_labels(ctx, "metadata.labels", &meta.labels);
    if meta.labels.contains_key("projectcalico.org/namespace") {
        ctx.err(
            "metadata.labels.projectcalico.org/namespace",
            "projectcalico.org/namespace is reserved by Calico and not a valid label on network sets",
        );
    }
    let mut nets = Vec::with_capacity(spec.nets.len());
    for (i, s) in spec.nets.iter().enumerate() {
        // Calico's `cidr` validator: a bare address or a CIDR, host bits allowed.
        match parse_net(s, true, HostBits::Mask) {
            Ok(n) => nets.push(n),
            Err(e) => ctx.err(format!("spec.nets[{i}]"), e),
        }
    }
    if !ctx.ok() {
        return None;
    }
    Some(NetworkSet {
        namespace,
        name: name?,
        labels: meta.labels.clone(),
        nets,
        origin: ctx.origin.clone(),
    })
}

pub(crate) fn tier(meta: &StrictMeta, spec: TierSpec, ctx: &mut Ctx<'_>) -> Option<Tier> {
    no_namespace(meta, ctx, "Tier");
    let name = name(meta, ctx, is_dns_label, LABEL_NAME);
    check_labels(ctx, "metadata.labels", &meta.labels);
    let order = check_order(spec.order, "spec.order", ctx);
    let default_action = match spec.default_action.as_deref() {
        None | Some("") | Some("Deny") => TierDefault::Deny,
        Some("Pass") => TierDefault::Pass,
        Some(other) => {
            let hint = ["Deny", "Pass"]
                .iter()
                .find(|v| v.eq_ignore_ascii_case(other))
                .map(|v| format!(" (write {v:?}: the value is case-sensitive)"))
                .unwrap_or_default();
            ctx.err(
                "spec.defaultAction",
                format!("invalid defaultAction {other:?}: expected Deny or Pass{hint}"),
            );
            TierDefault::Deny
        }
    };
    // Calico's validateTier: the built-in tiers keep their orders.
    if let Some(n) = name.as_deref() {
        let builtin = match n {
            "default" => Some(DEFAULT_TIER_ORDER),
            "kube-admin" => Some(KUBE_ADMIN_TIER_ORDER),
            "kube-baseline" => Some(KUBE_BASELINE_TIER_ORDER),
            _ => None,
        };
        if let Some(required) = builtin
            && order != Some(required)
        {
            ctx.err(
                "spec.order",
                format!("the built-in tier {n:?} must have order {required}"),
            );
        }
    }
    if !ctx.ok() {
        return None;
    }
    Some(Tier {
        name: name?,
        order,
        default_action,
        origin: Some(ctx.origin.clone()),
    })
}

fn valid_interface_name(s: &str) -> bool {
    s == "*"
        || (!s.is_empty()
            && s.len() <= 15
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
}

pub(crate) fn host_endpoint(
    meta: &StrictMeta,
    spec: HostEndpointSpec,
    ctx: &mut Ctx<'_>,
) -> Option<HostEndpoint> {
    no_namespace(meta, ctx, "HostEndpoint");
    let name = name(meta, ctx, is_dns_subdomain, SUBDOMAIN_NAME);
    check_labels(ctx, "metadata.labels", &meta.labels);
    let node = spec.node.clone().filter(|n| !n.is_empty());
    match node.as_deref() {
        None => ctx.err(
            "spec.node",
            "missing: a HostEndpoint needs the node it is on",
        ),
        Some(n) if !is_dns_subdomain(n) => ctx.err(
            "spec.node",
            format!("invalid node name {n:?}: {SUBDOMAIN_NAME}"),
        ),
        Some(_) => {}
    }
    let interface_name = spec.interface_name.clone().filter(|n| !n.is_empty());
    if let Some(i) = interface_name.as_deref()
        && !valid_interface_name(i)
    {
        ctx.err(
            "spec.interfaceName",
            format!(
                "invalid interface name {i:?}: expected \"*\" or 1-15 characters of letters, digits, '_', '.' and '-'"
            ),
        );
    }
    if interface_name.is_none() && spec.expected_ips.is_empty() {
        ctx.err(
            "spec",
            "a HostEndpoint needs interfaceName, expectedIPs or both",
        );
    }
    let mut expected_ips = Vec::new();
    for (i, s) in spec.expected_ips.iter().enumerate() {
        match s.parse::<IpAddr>() {
            Ok(ip) => expected_ips.push(ip),
            Err(_) => ctx.err(
                format!("spec.expectedIPs[{i}]"),
                format!(
                    "invalid IP address {s:?}: expected an address such as 10.0.0.1 or fd00::1"
                ),
            ),
        }
    }
    for (i, p) in spec.profiles.iter().enumerate() {
        if !is_dns_subdomain(p) {
            ctx.err(
                format!("spec.profiles[{i}]"),
                format!("invalid profile name {p:?}: {SUBDOMAIN_NAME}"),
            );
        }
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        if let Some(why) = port_name_problem(&p.name) {
            ctx.err(
                format!("{field}.name"),
                format!("invalid port name {:?}: {why}", p.name),
            );
        }
        let port = match p.port {
            n @ 1..=65535 => Some(n as u16),
            n => {
                ctx.err(
                    format!("{field}.port"),
                    format!("port {n} is out of range: ports are 1 to 65535"),
                );
                None
            }
        };
        let protocol = match parse_protocol(&p.protocol) {
            Ok(pr) if calico_supports_ports(pr) => Some(pr),
            Ok(pr) => {
                ctx.err(
                    format!("{field}.protocol"),
                    format!("protocol {pr} has no ports: expected TCP, UDP or SCTP"),
                );
                None
            }
            Err(e) => {
                ctx.err(format!("{field}.protocol"), e);
                None
            }
        };
        if let (Some(port), Some(protocol)) = (port, protocol) {
            ports.push(NamedPort {
                name: p.name.clone(),
                port,
                protocol,
            });
        }
    }
    if !ctx.ok() {
        return None;
    }
    Some(HostEndpoint {
        name: name?,
        labels: meta.labels.clone(),
        node,
        interface_name,
        expected_ips,
        profiles: spec.profiles,
        ports,
        origin: ctx.origin.clone(),
    })
}
