//! `egress-deny-without-dns`: a policy isolates egress for some endpoints, and nothing that
//! applies to them allows DNS (UDP or TCP port 53) out: name resolution breaks.

use crate::{
    evaluator::Endpoint,
    model::{
        Action, Direction, Inventory, Policy, PolicyKind, PortSpec, Protocol, Rule, TierDefault,
    },
};

use super::{LintCode, Selection, Warning, enforced, shadow::is_catch_all};

const K8S_SNIPPET: &str = "add an egress rule allowing DNS, e.g.:
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
    ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53";

const CALICO_SNIPPET: &str = "add egress rules allowing DNS before any Deny, e.g.:
  egress:
  - action: Allow
    protocol: UDP
    destination:
      namespaceSelector: projectcalico.org/name == 'kube-system'
      selector: k8s-app == 'kube-dns'
      ports: [53]
  - action: Allow
    protocol: TCP
    destination:
      namespaceSelector: projectcalico.org/name == 'kube-system'
      selector: k8s-app == 'kube-dns'
      ports: [53]";

fn port_may_be_dns(p: &PortSpec) -> bool {
    match p {
        PortSpec::Range(a, b) => (*a..=*b).contains(&53),
        PortSpec::Named(n) => n.to_ascii_lowercase().contains("dns"),
    }
}

/// Whether an egress rule lets DNS out (to somewhere): Allow (or Pass, which hands the traffic
/// to a later tier that may well allow it), UDP or TCP, destination port 53.
pub(crate) fn allows_dns(rule: &Rule) -> bool {
    if !matches!(rule.action, Action::Allow | Action::Pass) {
        return false;
    }
    let proto_ok = match rule.protocol {
        // notProtocol excludes one protocol at most: UDP or TCP remains.
        None => true,
        Some(p) => p == Protocol::UDP || p == Protocol::TCP,
    };
    proto_ok
        && rule.icmp.is_none()
        && rule.source.ports.is_empty()
        && (rule.destination.ports.is_empty() || rule.destination.ports.iter().any(port_may_be_dns))
        && !rule
            .destination
            .not_ports
            .iter()
            .any(|p| matches!(p, PortSpec::Range(a, b) if (*a..=*b).contains(&53)))
}

fn has_dns_allow(p: &Policy) -> bool {
    p.applies_to(Direction::Egress) && p.egress.iter().any(allows_dns)
}

/// Whether the policy makes egress default-deny for what it selects: its tier denies at the
/// end, or it ends its egress rules with a catch-all Deny itself.
fn isolates_egress(inv: &Inventory, p: &Policy) -> bool {
    if !p.applies_to(Direction::Egress) {
        return false;
    }
    let tier_denies = inv
        .tiers_with_builtins()
        .iter()
        .find(|t| t.name == p.tier)
        .is_none_or(|t| t.default_action == TierDefault::Deny);
    tier_denies
        || p.egress
            .iter()
            .any(|r| r.action == Action::Deny && is_catch_all(r))
}

fn suggestion(p: &Policy) -> &'static str {
    if p.kind == PolicyKind::KubernetesNetworkPolicy {
        K8S_SNIPPET
    } else {
        CALICO_SNIPPET
    }
}

/// `egress-deny-without-dns`.
pub fn egress_deny_without_dns(inv: &Inventory) -> Vec<Warning> {
    let mut out = Vec::new();
    let sel = Selection::new(inv);
    let dns_policies: Vec<&Policy> = enforced(inv).filter(|p| has_dns_allow(p)).collect();
    for p in enforced(inv).filter(|p| isolates_egress(inv, p)) {
        if has_dns_allow(p) {
            continue;
        }
        if !inv.pods.is_empty() {
            // Per pod: does any enforced egress policy that selects it let DNS out?
            let stranded: Vec<String> = sel
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, ep)| {
                    matches!(ep, Endpoint::Workload(_))
                        && sel.selects(p, *i)
                        && !dns_policies.iter().any(|o| sel.selects(o, *i))
                })
                .map(|(_, ep)| match ep {
                    Endpoint::Workload(pod) => format!("{}/{}", pod.namespace, pod.name),
                    other => other.name(),
                })
                .collect();
            if stranded.is_empty() {
                continue;
            }
            let shown: Vec<&str> = stranded.iter().take(5).map(String::as_str).collect();
            let more = stranded.len().saturating_sub(shown.len());
            out.push(Warning::for_policy(
                LintCode::EgressDenyWithoutDns,
                p,
                None,
                format!(
                    "policy {} isolates egress for {} pod(s) ({}{}) and no policy applying to them \
                     allows DNS (UDP/TCP 53): name lookups will time out",
                    p.qualified_name(),
                    stranded.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(", and {more} more")
                    } else {
                        String::new()
                    }
                ),
                suggestion(p),
            ));
        } else {
            // No pods: judge from the policies alone. Another policy covers DNS for these
            // endpoints when it is in the same scope and selects all() or the same selector.
            let covered = enforced(inv).any(|o| {
                has_dns_allow(o)
                    && (o.namespace.is_none() || o.namespace == p.namespace)
                    && o.namespace_selector.as_ref().is_none_or(|s| s.is_all())
                    && (o.selector.is_all() || o.selector == p.selector)
            });
            if covered {
                continue;
            }
            out.push(Warning::for_policy(
                LintCode::EgressDenyWithoutDns,
                p,
                None,
                format!(
                    "policy {} isolates egress for the endpoints it selects ({}) and neither it \
                     nor any policy for the same endpoints allows DNS (UDP/TCP 53): name lookups \
                     will time out",
                    p.qualified_name(),
                    p.selector
                ),
                suggestion(p),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::testutil::*;

    fn egress_policy(ns: &str, name: &str, selector: &str, rules: Vec<Rule>) -> Policy {
        let mut p = k8s(ns, name, selector);
        p.types = vec![Direction::Egress];
        p.egress = rules;
        p
    }

    #[test]
    fn default_deny_egress_without_dns_is_reported_with_k8s_snippet() {
        let p = egress_policy("prod", "deny-egress", "all()", vec![]);
        let w = egress_deny_without_dns(&inventory(vec![p]));
        assert_eq!(w.len(), 1);
        assert!(w[0].suggestion.contains("k8s-app: kube-dns"));
    }

    #[test]
    fn dns_allow_in_same_or_other_policy_is_enough() {
        let dns = port_rule(Action::Allow, Protocol::UDP, 53);
        let p = egress_policy("prod", "egress", "app == 'web'", vec![dns.clone()]);
        assert!(egress_deny_without_dns(&inventory(vec![p])).is_empty());
        let deny_all = egress_policy("prod", "deny", "all()", vec![]);
        let allow_dns = egress_policy("prod", "dns", "all()", vec![dns]);
        assert!(egress_deny_without_dns(&inventory(vec![deny_all, allow_dns])).is_empty());
    }

    #[test]
    fn other_ports_do_not_count_and_calico_gets_calico_snippet() {
        let mut p = calico("prod", "egress", "all()", Some(1.0));
        p.types = vec![Direction::Egress];
        p.egress = vec![port_rule(Action::Allow, Protocol::TCP, 443)];
        let w = egress_deny_without_dns(&inventory(vec![p]));
        assert_eq!(w.len(), 1);
        assert!(w[0].suggestion.contains("action: Allow"));
    }

    #[test]
    fn per_pod_check_uses_other_policies_selecting_the_pod() {
        let deny_all = egress_policy("prod", "deny", "all()", vec![]);
        let dns_for_web = egress_policy(
            "prod",
            "dns-web",
            "app == 'web'",
            vec![port_rule(Action::Allow, Protocol::UDP, 53)],
        );
        let mut inv = inventory(vec![deny_all, dns_for_web]);
        inv.pods
            .push(pod("prod", "web", &[("app", "web")], "10.0.0.1"));
        assert!(egress_deny_without_dns(&inv).is_empty());
        inv.pods
            .push(pod("prod", "db", &[("app", "db")], "10.0.0.2"));
        let w = egress_deny_without_dns(&inv);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("prod/db"), "{}", w[0].message);
        assert!(!w[0].message.contains("prod/web"), "{}", w[0].message);
    }

    #[test]
    fn pass_tier_without_catch_all_deny_does_not_isolate() {
        let mut p = calico("prod", "p", "all()", Some(1.0));
        p.tier = "platform".to_string();
        p.types = vec![Direction::Egress];
        p.egress = vec![port_rule(Action::Deny, Protocol::TCP, 25)];
        let mut inv = inventory(vec![p]);
        inv.tiers.push(tier("platform", 10.0, TierDefault::Pass));
        assert!(egress_deny_without_dns(&inv).is_empty());
    }
}
