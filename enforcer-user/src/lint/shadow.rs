//! `shadowed-rule` and `shadowed-policy`: rules that can never match because something
//! earlier always decides first.
//!
//! The superset check ([`rule_covers`]) is syntactic and conservative: it answers "yes" only
//! when every packet the later rule matches is certainly matched by the earlier one, whatever
//! the endpoints and labels (same or absent protocol, port ranges and CIDRs that contain the
//! later rule's, identical selectors, ...). Two rules that overlap in a way only the labels
//! of today's pods reveal are not reported.

use ipnet::IpNet;

use crate::model::{
    Action, Direction, EntityRule, IcmpMatch, Inventory, Policy, PortSpec, Protocol, Rule,
};

use super::{LintCode, Selection, Warning, describe_rule, evaluation_order, scope_of};

/// Whether an action ends the evaluation of a policy (everything but Log).
pub(crate) fn is_terminal(a: Action) -> bool {
    matches!(a, Action::Allow | Action::Deny | Action::Pass)
}

/// A rule with no match criteria at all: it matches every packet.
pub(crate) fn is_catch_all(r: &Rule) -> bool {
    r.protocol.is_none()
        && r.not_protocol.is_none()
        && r.icmp.is_none()
        && r.not_icmp.is_none()
        && r.ip_version.is_none()
        && r.source.is_empty()
        && r.destination.is_empty()
}

/// Whether port spec `a` contains every port of `b`.
fn spec_covers(a: &PortSpec, b: &PortSpec) -> bool {
    match (a, b) {
        (PortSpec::Range(a1, a2), PortSpec::Range(b1, b2)) => a1 <= b1 && b2 <= a2,
        (PortSpec::Named(x), PortSpec::Named(y)) => x == y,
        _ => false,
    }
}

/// Whether two port specs certainly share no port.
fn spec_disjoint(a: &PortSpec, b: &PortSpec) -> bool {
    match (a, b) {
        (PortSpec::Range(a1, a2), PortSpec::Range(b1, b2)) => a2 < b1 || b2 < a1,
        _ => false,
    }
}

/// Whether two port lists may share a port (an empty list is "any port").
pub(crate) fn ports_may_overlap(a: &[PortSpec], b: &[PortSpec]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| !spec_disjoint(x, y)))
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Whether two net lists may share an address (an empty list is "any address").
pub(crate) fn nets_may_overlap(a: &[IpNet], b: &[IpNet]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| nets_overlap(x, y)))
}

/// Whether the rule side certainly needs an entity (pod, host endpoint, network set) at the
/// address: it has a selector, namespaceSelector or serviceAccounts.
fn needs_entity(e: &EntityRule) -> bool {
    e.selector.is_some() || e.namespace_selector.is_some() || e.service_accounts.is_some()
}

/// Whether the rule side may need an entity at the address: as [`needs_entity`], or a
/// notSelector (which makes Calico build an entity selector in namespaced policies).
fn may_need_entity(e: &EntityRule) -> bool {
    needs_entity(e) || e.not_selector.is_some()
}

/// Whether every address+port entity rule `b` matches is matched by `a` (same policy).
pub(crate) fn entity_covers(a: &EntityRule, b: &EntityRule) -> bool {
    // nets: a's nets contain all of b's.
    if !a.nets.is_empty()
        && (b.nets.is_empty()
            || !b
                .nets
                .iter()
                .all(|bn| a.nets.iter().any(|an| an.contains(bn))))
    {
        return false;
    }
    // notNets: b must avoid each of a's excluded nets.
    let avoids = |x: &IpNet| {
        b.not_nets.iter().any(|y| y.contains(x))
            || (!b.nets.is_empty() && b.nets.iter().all(|n| !nets_overlap(n, x)))
    };
    if !a.not_nets.iter().all(avoids) {
        return false;
    }
    // Identity (selector, namespaceSelector, serviceAccounts): a rule with any of them
    // requires an in-scope entity at the address; the same entity must satisfy a.
    if may_need_entity(a) {
        if !needs_entity(b) || a.namespace_selector != b.namespace_selector {
            return false;
        }
        let sel_ok = match &a.selector {
            None => true,
            Some(s) if s.is_all() => true,
            Some(s) => b.selector.as_ref() == Some(s),
        };
        let sa_ok = a.service_accounts.is_none() || a.service_accounts == b.service_accounts;
        if !sel_ok || !sa_ok {
            return false;
        }
    }
    if let Some(ns) = &a.not_selector
        && b.not_selector.as_ref() != Some(ns)
    {
        return false;
    }
    // ports: a's ports contain all of b's.
    if !a.ports.is_empty()
        && (b.ports.is_empty()
            || !b
                .ports
                .iter()
                .all(|bp| a.ports.iter().any(|ap| spec_covers(ap, bp))))
    {
        return false;
    }
    // notPorts: b must avoid each of a's excluded ports.
    a.not_ports.iter().all(|x| {
        b.not_ports.iter().any(|y| spec_covers(y, x))
            || (!b.ports.is_empty() && b.ports.iter().all(|p| spec_disjoint(p, x)))
    })
}

fn is_icmp_proto(p: Protocol) -> bool {
    matches!(p, Protocol::ICMP | Protocol::ICMPV6)
}

fn icmp_differs(a: IcmpMatch, b: IcmpMatch) -> bool {
    a.icmp_type != b.icmp_type || matches!((a.code, b.code), (Some(x), Some(y)) if x != y)
}

/// Whether every packet rule `b` matches is matched by rule `a` (both in the same policy).
/// Conservative: `false` whenever it cannot tell from the rules' text.
pub(crate) fn rule_covers(a: &Rule, b: &Rule) -> bool {
    if a.ip_version.is_some() && a.ip_version != b.ip_version {
        return false;
    }
    if a.protocol.is_some() && a.protocol != b.protocol {
        return false;
    }
    if let Some(np) = a.not_protocol
        && b.not_protocol != Some(np)
        && b.protocol.is_none_or(|p| p == np)
    {
        return false;
    }
    if let Some(ai) = a.icmp {
        match b.icmp {
            Some(bi)
                if bi.icmp_type == ai.icmp_type && (ai.code.is_none() || ai.code == bi.code) => {}
            _ => return false,
        }
    }
    if let Some(ni) = a.not_icmp {
        let avoided = b.not_icmp == Some(ni)
            || b.protocol.is_some_and(|p| !is_icmp_proto(p))
            || b.icmp.is_some_and(|bi| icmp_differs(bi, ni));
        if !avoided {
            return false;
        }
    }
    entity_covers(&a.source, &b.source) && entity_covers(&a.destination, &b.destination)
}

/// `shadowed-rule`: a rule that can never match because an earlier Allow/Deny/Pass rule of
/// the same policy and direction matches everything it matches.
pub fn shadowed_rules(inv: &Inventory) -> Vec<Warning> {
    let mut out = Vec::new();
    for p in &inv.policies {
        for dir in [Direction::Ingress, Direction::Egress] {
            let rules = p.rules(dir);
            for (j, later) in rules.iter().enumerate() {
                let Some((i, earlier)) = rules[..j]
                    .iter()
                    .enumerate()
                    .find(|(_, e)| is_terminal(e.action) && rule_covers(e, later))
                else {
                    continue;
                };
                let what = if earlier.action == later.action {
                    "it is redundant"
                } else {
                    "it never takes effect"
                };
                out.push(Warning::for_policy(
                    LintCode::ShadowedRule,
                    p,
                    Some((dir, j)),
                    format!(
                        "{dir} rule {j} ({}) can never match: {dir} rule {i} ({}) comes first and \
                         matches all of its traffic, so {what}",
                        describe_rule(later),
                        describe_rule(earlier)
                    ),
                    if earlier.action == later.action {
                        format!("delete {dir} rule {j}, or narrow rule {i}")
                    } else {
                        format!(
                            "move {dir} rule {j} before rule {i} if it should win, narrow rule {i}, \
                             or delete rule {j}"
                        )
                    },
                ));
            }
        }
    }
    out
}

/// Whether `p` certainly applies to every endpoint `q` applies to, whatever the labels:
/// same scope, and `all()` or the same selector.
pub(crate) fn selects_superset_syntactic(p: &Policy, q: &Policy) -> bool {
    let scope_ok = match (&p.namespace, &q.namespace) {
        (None, _) => match &p.namespace_selector {
            None => true,
            Some(s) if s.is_all() => true,
            Some(s) => q.namespace_selector.as_ref() == Some(s),
        },
        (Some(a), Some(b)) => a == b && p.namespace_selector.is_none(),
        (Some(_), None) => false,
    };
    let sel_ok = p.selector.is_all() || p.selector == q.selector;
    let sa_ok = p.service_account_selector.is_none()
        || p.service_account_selector == q.service_account_selector;
    scope_ok && sel_ok && sa_ok
}

/// `shadowed-policy`: a policy whose rules for a direction are never reached because an
/// earlier policy for a superset of its endpoints always decides (a catch-all
/// Allow/Deny/Pass rule in the same tier, or a catch-all Allow/Deny in an earlier tier).
pub fn shadowed_policies(inv: &Inventory) -> Vec<Warning> {
    let order = evaluation_order(inv);
    let sel = Selection::new(inv);
    let mut out = Vec::new();
    for (qi, &(q_tier, q)) in order.iter().enumerate() {
        for dir in [Direction::Ingress, Direction::Egress] {
            if !q.applies_to(dir) || q.rules(dir).is_empty() {
                continue;
            }
            let shadow = order[..qi].iter().find_map(|&(p_tier, p)| {
                if !p.applies_to(dir) {
                    return None;
                }
                let (ri, r) = p
                    .rules(dir)
                    .iter()
                    .enumerate()
                    .find(|(_, r)| is_terminal(r.action) && is_catch_all(r))?;
                if p_tier != q_tier && r.action == Action::Pass {
                    return None;
                }
                let how = if selects_superset_syntactic(p, q) {
                    "applies to every endpoint it applies to"
                } else if !sel.is_empty() && sel.superset(p, q) {
                    "applies to every loaded endpoint it applies to"
                } else {
                    return None;
                };
                Some((p, ri, r.action, how))
            });
            if let Some((p, ri, action, how)) = shadow {
                let first_rule = if p.tier == q.tier {
                    format!("earlier in tier {}", q.tier)
                } else {
                    format!("in earlier tier {}", p.tier)
                };
                let redundant = action == Action::Allow
                    && q.rules(dir).iter().all(|r| r.action == Action::Allow);
                let suggestion = if redundant {
                    format!(
                        "{} already allows all {dir} traffic of these endpoints, so the {dir} rules \
                         of {} add nothing: delete them, or narrow {dir} rule {ri} of {}",
                        p.qualified_name(),
                        q.qualified_name(),
                        p.qualified_name()
                    )
                } else {
                    format!(
                        "give policy {} a lower order than {} (or move it to an earlier tier), or \
                         narrow the catch-all {dir} rule {ri} of {}",
                        q.qualified_name(),
                        p.qualified_name(),
                        p.qualified_name()
                    )
                };
                out.push(Warning::for_policy(
                    LintCode::ShadowedPolicy,
                    q,
                    None,
                    format!(
                        "the {dir} rules of policy {} ({}) are never reached: policy {} ({}, order \
                         {}) {first_rule} {how} and its {dir} rule {ri} ({action} everything) \
                         always decides first",
                        q.qualified_name(),
                        scope_of(q),
                        p.qualified_name(),
                        scope_of(p),
                        p.order.map_or("none".to_string(), |o| o.to_string()),
                    ),
                    suggestion,
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
        model::{Action, Protocol, TierDefault},
    };

    fn codes(w: &[Warning]) -> Vec<(String, Option<usize>)> {
        w.iter()
            .map(|w| {
                (
                    w.policy.clone().unwrap_or_default(),
                    w.rule.map(|r| r.index),
                )
            })
            .collect()
    }

    #[test]
    fn catch_all_deny_shadows_later_allow() {
        let mut p = calico("prod", "p", "all()", Some(1.0));
        p.ingress = vec![deny(), port_rule(Action::Allow, Protocol::TCP, 80)];
        let w = shadowed_rules(&inventory(vec![p]));
        assert_eq!(codes(&w), vec![("prod/p".to_string(), Some(1))]);
        assert!(w[0].message.contains("ingress rule 0"), "{}", w[0].message);
    }

    #[test]
    fn wider_port_range_shadows_narrower() {
        let mut wide = port_rule(Action::Allow, Protocol::TCP, 0);
        wide.destination.ports = vec![PortSpec::Range(1, 1024)];
        let mut p = calico("prod", "p", "all()", Some(1.0));
        p.egress = vec![wide, port_rule(Action::Deny, Protocol::TCP, 443)];
        p.types = vec![Direction::Egress];
        assert_eq!(shadowed_rules(&inventory(vec![p])).len(), 1);
    }

    #[test]
    fn different_protocol_or_ports_do_not_shadow() {
        let mut p = calico("prod", "p", "all()", Some(1.0));
        p.ingress = vec![
            port_rule(Action::Deny, Protocol::TCP, 80),
            port_rule(Action::Allow, Protocol::UDP, 80),
            port_rule(Action::Allow, Protocol::TCP, 81),
        ];
        assert!(shadowed_rules(&inventory(vec![p])).is_empty());
    }

    #[test]
    fn log_rule_does_not_shadow() {
        let mut p = calico("prod", "p", "all()", Some(1.0));
        p.ingress = vec![rule(Action::Log), deny()];
        assert!(shadowed_rules(&inventory(vec![p])).is_empty());
    }

    #[test]
    fn nets_containment_shadows_and_not_nets_blocks() {
        let mut a = allow();
        a.source.nets = nets(&["10.0.0.0/8"]);
        let mut b = deny();
        b.source.nets = nets(&["10.1.0.0/16"]);
        assert!(rule_covers(&a, &b));
        a.source.not_nets = nets(&["10.1.2.0/24"]);
        assert!(!rule_covers(&a, &b));
        b.source.not_nets = nets(&["10.1.0.0/20"]);
        assert!(rule_covers(&a, &b));
    }

    #[test]
    fn selectors_must_be_identical_unless_absent() {
        let mut a = allow();
        a.source.selector = Some(sel("app == 'a'"));
        let mut b = allow();
        b.source.selector = Some(sel("app == 'a'"));
        b.destination.ports = vec![PortSpec::Range(80, 80)];
        assert!(rule_covers(&a, &b));
        b.source.selector = Some(sel("app == 'b'"));
        assert!(!rule_covers(&a, &b));
        // A rule without a selector matches any address: it covers one with a selector.
        assert!(rule_covers(&allow(), &b));
        // One with a namespaceSelector reaches other namespaces: not covered.
        let mut c = b.clone();
        c.source.selector = Some(sel("app == 'a'"));
        c.source.namespace_selector = Some(sel("all()"));
        assert!(!rule_covers(&a, &c));
    }

    #[test]
    fn catch_all_policy_shadows_later_policy_same_selector() {
        let mut first = calico("prod", "deny-all", "all()", Some(10.0));
        first.ingress = vec![deny()];
        let mut second = calico("prod", "allow-web", "app == 'web'", Some(20.0));
        second.ingress = vec![port_rule(Action::Allow, Protocol::TCP, 80)];
        let w = shadowed_policies(&inventory(vec![second, first]));
        assert_eq!(codes(&w), vec![("prod/allow-web".to_string(), None)]);
        assert!(w[0].message.contains("prod/deny-all"));
        assert!(w[0].suggestion.contains("lower order"));
    }

    #[test]
    fn allow_all_before_allow_policy_is_called_redundant() {
        let mut first = k8s("prod", "allow-all", "all()");
        first.ingress = vec![allow()];
        let mut second = k8s("prod", "allow-web", "app == 'web'");
        second.ingress = vec![port_rule(Action::Allow, Protocol::TCP, 80)];
        let w = shadowed_policies(&inventory(vec![first, second]));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].suggestion.contains("add nothing"),
            "{}",
            w[0].suggestion
        );
    }

    #[test]
    fn other_namespace_or_later_order_is_not_shadowed() {
        let mut first = calico("prod", "deny-all", "all()", Some(30.0));
        first.ingress = vec![deny()];
        let mut second = calico("prod", "allow-web", "app == 'web'", Some(20.0));
        second.ingress = vec![allow()];
        let mut third = calico("dev", "allow-web", "all()", Some(40.0));
        third.ingress = vec![allow()];
        assert!(shadowed_policies(&inventory(vec![first, second, third])).is_empty());
    }

    #[test]
    fn pass_shadows_only_within_its_tier() {
        let mut inv = inventory(Vec::new());
        inv.tiers.push(tier("security", 100.0, TierDefault::Deny));
        let mut pass = global("pass-all", "all()", Some(1.0));
        pass.tier = "security".to_string();
        pass.ingress = vec![rule(Action::Pass)];
        let mut later = calico("prod", "allow", "all()", Some(5.0));
        later.ingress = vec![allow()];
        inv.policies = vec![pass.clone(), later];
        assert!(shadowed_policies(&inv).is_empty());
        // An Allow in an earlier tier does shadow.
        pass.ingress = vec![allow()];
        inv.policies[0] = pass;
        assert_eq!(shadowed_policies(&inv).len(), 1);
    }

    #[test]
    fn loaded_pods_prove_superset() {
        let mut first = calico("prod", "deny-web", "app == 'web'", Some(10.0));
        first.ingress = vec![deny()];
        let mut second = calico(
            "prod",
            "allow-web-v2",
            "app == 'web' && v == '2'",
            Some(20.0),
        );
        second.ingress = vec![allow()];
        let mut inv = inventory(vec![first, second]);
        assert!(shadowed_policies(&inv).is_empty());
        inv.pods.push(pod(
            "prod",
            "web-2",
            &[("app", "web"), ("v", "2")],
            "10.0.0.2",
        ));
        inv.pods.push(pod(
            "prod",
            "web-1",
            &[("app", "web"), ("v", "1")],
            "10.0.0.1",
        ));
        let w = shadowed_policies(&inv);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("loaded endpoint"));
    }
}
