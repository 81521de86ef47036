//! `broad-allow-before-deny`: an Allow rule with a broad peer, evaluated before a Deny rule
//! for overlapping endpoints and traffic: the Deny never fires for what the Allow takes.

use crate::model::{Action, Direction, EntityRule, Inventory, Policy, Rule};

use super::{
    LintCode, Selection, Warning, describe_rule, evaluation_order,
    shadow::{nets_may_overlap, ports_may_overlap, rule_covers},
};

fn is_default_route(n: &ipnet::IpNet) -> bool {
    n.prefix_len() == 0
}

/// How broad a peer is, described for the message; `None` when it is narrow.
fn broad_peer(p: &Policy, e: &EntityRule) -> Option<&'static str> {
    if !e.not_nets.is_empty() || e.not_selector.is_some() || e.service_accounts.is_some() {
        return None;
    }
    let sel_all = e.selector.as_ref().is_none_or(|s| s.is_all());
    let nss_all = e.namespace_selector.as_ref().is_none_or(|s| s.is_all());
    if !sel_all || !nss_all {
        return None;
    }
    if !e.nets.is_empty() {
        return e
            .nets
            .iter()
            .any(is_default_route)
            .then_some("every address (0.0.0.0/0 or ::/0)");
    }
    match (&e.selector, &e.namespace_selector) {
        (None, None) => Some("any peer (no selector, no nets)"),
        (_, Some(_)) => Some("every endpoint in every namespace"),
        (Some(_), None) if p.namespace.is_some() => {
            Some("every endpoint in the policy's namespace")
        }
        (Some(_), None) => Some("every endpoint (all())"),
    }
}

/// Whether a Deny rule targets specific peers (a selector, nets, ...). Deny rules with an
/// unconstrained peer are backstops ("deny whatever was not allowed"): an earlier broad Allow
/// is then the intended exception, not a mistake.
fn targets_specific_peers(deny: &Rule, dir: Direction) -> bool {
    let e = deny.peer(dir);
    e.selector.as_ref().is_some_and(|s| !s.is_all())
        || e.namespace_selector.as_ref().is_some_and(|s| !s.is_all())
        || e.not_selector.is_some()
        || e.service_accounts.is_some()
        || e.nets.iter().any(|n| !is_default_route(n))
        || !e.not_nets.is_empty()
}

/// Whether some packet may match both rules (a cheap over-approximation of the overlap, made
/// stricter by the broad peer: only the protocol, ports, ICMP and IP family can separate them).
fn traffic_may_overlap(allow: &Rule, deny: &Rule, dir: Direction) -> bool {
    if let (Some(a), Some(b)) = (allow.ip_version, deny.ip_version)
        && a != b
    {
        return false;
    }
    if let (Some(a), Some(b)) = (allow.protocol, deny.protocol)
        && a != b
    {
        return false;
    }
    if allow.not_protocol.is_some() && allow.not_protocol == deny.protocol {
        return false;
    }
    if deny.not_protocol.is_some() && deny.not_protocol == allow.protocol {
        return false;
    }
    if let (Some(a), Some(b)) = (allow.icmp, deny.icmp)
        && (a.icmp_type != b.icmp_type || matches!((a.code, b.code), (Some(x), Some(y)) if x != y))
    {
        return false;
    }
    let ap = allow.peer(dir);
    let dp = deny.peer(dir);
    nets_may_overlap(&ap.nets, &dp.nets)
        && ports_may_overlap(&allow.source.ports, &deny.source.ports)
        && ports_may_overlap(&allow.destination.ports, &deny.destination.ports)
        && nets_may_overlap(&allow.source.nets, &deny.source.nets)
        && nets_may_overlap(&allow.destination.nets, &deny.destination.nets)
}

/// Whether two policies may apply to a common endpoint: checked against the loaded endpoints
/// when there are any; otherwise when one selects `all()` or both use the same selector in
/// compatible scopes.
fn endpoints_may_overlap(sel: &Selection<'_>, p: &Policy, q: &Policy) -> bool {
    if !sel.is_empty() {
        return sel.overlap(p, q);
    }
    let scope_ok = match (&p.namespace, &q.namespace) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let nss_ok = match (&p.namespace_selector, &q.namespace_selector) {
        (Some(a), Some(b)) => a.is_all() || b.is_all() || a == b,
        _ => true,
    };
    let sel_ok = p.selector.is_all() || q.selector.is_all() || p.selector == q.selector;
    scope_ok && nss_ok && sel_ok
}

/// `broad-allow-before-deny`.
pub fn broad_allow_before_deny(inv: &Inventory) -> Vec<Warning> {
    let order = evaluation_order(inv);
    let sel = Selection::new(inv);
    let mut out = Vec::new();
    for (pi, &(_, p)) in order.iter().enumerate() {
        for dir in [Direction::Ingress, Direction::Egress] {
            if !p.applies_to(dir) {
                continue;
            }
            for (ri, allow) in p.rules(dir).iter().enumerate() {
                if allow.action != Action::Allow {
                    continue;
                }
                let Some(breadth) = broad_peer(p, allow.peer(dir)) else {
                    continue;
                };
                // Deny rules reached after this Allow: later in the same policy, or in later
                // policies (same or later tier) for overlapping endpoints.
                let mut victims: Vec<String> = Vec::new();
                for (di, deny) in p.rules(dir).iter().enumerate().skip(ri + 1) {
                    if deny.action == Action::Deny
                        && targets_specific_peers(deny, dir)
                        && traffic_may_overlap(allow, deny, dir)
                        && !rule_covers(allow, deny)
                    {
                        victims.push(format!(
                            "{dir} rule {di} of the same policy ({})",
                            describe_rule(deny)
                        ));
                    }
                }
                for &(_, q) in &order[pi + 1..] {
                    if !q.applies_to(dir) || !endpoints_may_overlap(&sel, p, q) {
                        continue;
                    }
                    for (di, deny) in q.rules(dir).iter().enumerate() {
                        if deny.action == Action::Deny
                            && targets_specific_peers(deny, dir)
                            && traffic_may_overlap(allow, deny, dir)
                        {
                            victims.push(format!(
                                "policy {} (tier {}) {dir} rule {di} ({})",
                                q.qualified_name(),
                                q.tier,
                                describe_rule(deny)
                            ));
                        }
                    }
                }
                if victims.is_empty() {
                    continue;
                }
                const SHOWN: usize = 3;
                let more = victims.len().saturating_sub(SHOWN);
                let mut list = victims
                    .into_iter()
                    .take(SHOWN)
                    .collect::<Vec<_>>()
                    .join("; ");
                if more > 0 {
                    list.push_str(&format!("; and {more} more"));
                }
                out.push(Warning::for_policy(
                    LintCode::BroadAllowBeforeDeny,
                    p,
                    Some((dir, ri)),
                    format!(
                        "{dir} rule {ri} ({}) allows {breadth} and is evaluated before Deny rules \
                         for the same endpoints, which therefore never fire for that traffic: {list}",
                        describe_rule(allow)
                    ),
                    format!(
                        "narrow the Allow's {} (selector, namespaceSelector or nets), or give the \
                         denying policy a lower order (or an earlier tier) so it is evaluated first",
                        if dir == Direction::Ingress { "source" } else { "destination" }
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lint::testutil::*,
        model::{PortSpec, Protocol},
    };

    #[test]
    fn broad_allow_at_low_order_before_deny_is_reported() {
        let mut allow_all = calico("prod", "allow-all", "all()", Some(10.0));
        allow_all.ingress = vec![port_rule(Action::Allow, Protocol::TCP, 22)];
        let mut deny_ssh = calico("prod", "deny-ssh", "all()", Some(100.0));
        let mut d = port_rule(Action::Deny, Protocol::TCP, 22);
        d.source.nets = nets(&["192.168.0.0/16"]);
        deny_ssh.ingress = vec![d];
        let w = broad_allow_before_deny(&inventory(vec![deny_ssh, allow_all]));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].policy.as_deref(), Some("prod/allow-all"));
        assert!(w[0].message.contains("prod/deny-ssh"), "{}", w[0].message);
    }

    #[test]
    fn deny_first_or_other_ports_or_narrow_peer_is_fine() {
        let mut allow_web = calico("prod", "allow-web", "all()", Some(100.0));
        allow_web.ingress = vec![port_rule(Action::Allow, Protocol::TCP, 80)];
        let mut deny_ssh = calico("prod", "deny-ssh", "all()", Some(10.0));
        deny_ssh.ingress = vec![port_rule(Action::Deny, Protocol::TCP, 80)];
        deny_ssh.ingress[0].source.nets = nets(&["192.168.0.0/16"]);
        // Deny is first.
        assert!(
            broad_allow_before_deny(&inventory(vec![allow_web.clone(), deny_ssh.clone()]))
                .is_empty()
        );
        // Different port.
        deny_ssh.order = Some(200.0);
        deny_ssh.ingress[0].destination.ports = vec![PortSpec::Range(22, 22)];
        assert!(
            broad_allow_before_deny(&inventory(vec![allow_web.clone(), deny_ssh.clone()]))
                .is_empty()
        );
        // Narrow peer.
        deny_ssh.ingress[0].destination.ports = vec![PortSpec::Range(80, 80)];
        allow_web.ingress[0].source.selector = Some(sel("role == 'lb'"));
        assert!(broad_allow_before_deny(&inventory(vec![allow_web, deny_ssh])).is_empty());
    }

    #[test]
    fn default_route_nets_are_broad_and_other_namespace_is_not_overlapping() {
        let mut egress_any = calico("prod", "egress-any", "all()", Some(10.0));
        egress_any.types = vec![Direction::Egress];
        let mut a = allow();
        a.destination.nets = nets(&["0.0.0.0/0"]);
        egress_any.egress = vec![a];
        let mut deny_meta = calico("prod", "deny-metadata", "all()", Some(20.0));
        deny_meta.types = vec![Direction::Egress];
        let mut d = deny();
        d.destination.nets = nets(&["169.254.169.254/32"]);
        deny_meta.egress = vec![d];
        let mut other_ns = deny_meta.clone();
        other_ns.namespace = Some("dev".to_string());
        assert_eq!(
            broad_allow_before_deny(&inventory(vec![egress_any.clone(), deny_meta])).len(),
            1
        );
        assert!(broad_allow_before_deny(&inventory(vec![egress_any, other_ns])).is_empty());
    }

    #[test]
    fn port_ranges_overlap() {
        let mut allow_range = calico("prod", "a", "all()", Some(1.0));
        let mut r = allow();
        r.protocol = Some(Protocol::TCP);
        r.destination.ports = vec![PortSpec::Range(1000, 2000)];
        allow_range.ingress = vec![r];
        let mut deny_p = calico("prod", "d", "all()", Some(2.0));
        let mut d = port_rule(Action::Deny, Protocol::TCP, 1500);
        d.source.selector = Some(sel("role == 'untrusted'"));
        deny_p.ingress = vec![d];
        assert_eq!(
            broad_allow_before_deny(&inventory(vec![allow_range.clone(), deny_p.clone()])).len(),
            1
        );
        // A backstop deny (no peer constraint) is not reported.
        deny_p.ingress[0].source.selector = None;
        assert!(broad_allow_before_deny(&inventory(vec![allow_range, deny_p])).is_empty());
    }
}
