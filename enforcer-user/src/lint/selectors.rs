//! `selector-matches-nothing`: a policy selector, or a rule's selector / namespaceSelector,
//! that matches nothing in the loaded files. Only meaningful when the files hold the
//! cluster's pods; [`super::lint`] skips it otherwise.

use std::collections::BTreeSet;

use crate::{
    evaluator::{EntityRef, RuleSelector, namespace_selector_matches},
    model::{Direction, EntityRule, Inventory, Policy, PolicyKind},
};

use super::{LintCode, Selection, Warning};

/// Every entity a rule selector can match: pods with their own network namespace, host
/// endpoints, network sets.
fn entities(inv: &Inventory) -> Vec<EntityRef<'_>> {
    inv.pods
        .iter()
        .filter(|p| !p.host_network)
        .map(EntityRef::Pod)
        .chain(inv.host_endpoints.iter().map(EntityRef::Host))
        .chain(inv.network_sets.iter().map(EntityRef::NetworkSet))
        .collect()
}

/// Every namespace name the inventory knows (Namespace objects and pods' namespaces).
fn namespace_names(inv: &Inventory) -> BTreeSet<&str> {
    inv.namespaces
        .iter()
        .map(|n| n.name.as_str())
        .chain(inv.pods.iter().map(|p| p.namespace.as_str()))
        .chain(
            inv.network_sets
                .iter()
                .filter_map(|s| s.namespace.as_deref()),
        )
        .collect()
}

/// `selector-matches-nothing`.
pub fn selector_matches_nothing(inv: &Inventory) -> Vec<Warning> {
    let sel = Selection::new(inv);
    let ents = entities(inv);
    let namespaces = namespace_names(inv);
    let mut out = Vec::new();
    for p in &inv.policies {
        if !sel.selects_any(p) {
            let mut what = format!("selector `{}`", p.selector.as_str());
            if let Some(n) = &p.namespace_selector {
                what.push_str(&format!(" with namespaceSelector `{}`", n.as_str()));
            }
            if let Some(s) = &p.service_account_selector {
                what.push_str(&format!(" with serviceAccountSelector `{}`", s.as_str()));
            }
            let scope = match &p.namespace {
                Some(ns) => format!("pod in namespace {ns}"),
                None => "pod or host endpoint".to_string(),
            };
            out.push(Warning::for_policy(
                LintCode::SelectorMatchesNothing,
                p,
                None,
                format!("the policy's {what} matches no {scope} in the loaded files, so it applies to nothing"),
                "check the selector's label keys and values against the pods' labels (a typo, a \
                 missing namespace, or a label your deployment does not set)",
            ));
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            for (ri, rule) in p.rules(dir).iter().enumerate() {
                for (source, er) in [(true, &rule.source), (false, &rule.destination)] {
                    if let Some(msg) = entity_rule_problem(inv, p, er, &ents, &namespaces) {
                        out.push(Warning::for_policy(
                            LintCode::SelectorMatchesNothing,
                            p,
                            Some((dir, ri)),
                            format!(
                                "{dir} rule {ri}: the {} {msg}",
                                if source { "source" } else { "destination" }
                            ),
                            "check the selector's label keys and values against the loaded pods, \
                             namespaces and network sets (the rule never matches as written)",
                        ));
                    }
                }
            }
        }
    }
    out
}

/// What is wrong with one side of a rule, if its selectors match nothing loaded.
fn entity_rule_problem(
    inv: &Inventory,
    p: &Policy,
    er: &EntityRule,
    ents: &[EntityRef<'_>],
    namespaces: &BTreeSet<&str>,
) -> Option<String> {
    let nss = er.namespace_selector.as_ref();
    if er.selector.is_none() && er.service_accounts.is_none() {
        // A namespaceSelector alone: it must match some namespace (or, through global(),
        // some global entity).
        let sel = nss?;
        let any_ns = namespaces
            .iter()
            .any(|ns| namespace_selector_matches(inv, sel, Some(ns)));
        let any_global = p.kind != PolicyKind::KubernetesNetworkPolicy
            && ents
                .iter()
                .any(|e| e.namespace().is_none() && namespace_selector_matches(inv, sel, None));
        return (!any_ns && !any_global).then(|| {
            format!(
                "namespaceSelector `{}` matches no namespace in the loaded files",
                sel.as_str()
            )
        });
    }
    let rule_selector = RuleSelector::new(p, er);
    let hit = ents.iter().any(|e| rule_selector.picks(inv, e));
    if hit {
        return None;
    }
    let mut what = Vec::new();
    if let Some(s) = &er.selector {
        what.push(format!("selector `{}`", s.as_str()));
    }
    if let Some(n) = nss {
        what.push(format!("namespaceSelector `{}`", n.as_str()));
    }
    if er.service_accounts.is_some() {
        what.push("serviceAccounts".to_string());
    }
    let scope = match (&p.namespace, nss) {
        (Some(ns), None) => format!(" in namespace {ns}"),
        _ => String::new(),
    };
    let kinds = if p.kind == PolicyKind::KubernetesNetworkPolicy {
        "pod"
    } else {
        "pod, host endpoint or network set"
    };
    Some(format!(
        "{} matches no {kinds}{scope} in the loaded files",
        what.join(" with ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{lint::testutil::*, model::Action};

    fn inv_with_pods(policies: Vec<Policy>) -> Inventory {
        let mut inv = inventory(policies);
        inv.namespaces.push(namespace("prod", &[("env", "prod")]));
        inv.pods
            .push(pod("prod", "web", &[("app", "web")], "10.0.0.1"));
        inv.pods
            .push(pod("prod", "db", &[("app", "db")], "10.0.0.2"));
        inv
    }

    #[test]
    fn policy_selector_typo_is_reported() {
        let p = calico("prod", "p", "app == 'wbe'", Some(1.0));
        let w = selector_matches_nothing(&inv_with_pods(vec![p]));
        assert_eq!(w.len(), 1);
        assert!(w[0].rule.is_none());
        assert!(w[0].message.contains("wbe"));
    }

    #[test]
    fn policy_in_other_namespace_matches_nothing() {
        let p = calico("dev", "p", "app == 'web'", Some(1.0));
        assert_eq!(selector_matches_nothing(&inv_with_pods(vec![p])).len(), 1);
    }

    #[test]
    fn rule_selector_and_namespace_selector_are_checked() {
        let mut p = calico("prod", "p", "app == 'db'", Some(1.0));
        let mut ok = rule(Action::Allow);
        ok.source.selector = Some(sel("app == 'web'"));
        let mut typo = rule(Action::Allow);
        typo.source.selector = Some(sel("app == 'frontend'"));
        let mut ns_ok = rule(Action::Allow);
        ns_ok.source.namespace_selector = Some(sel("env == 'prod'"));
        let mut ns_typo = rule(Action::Allow);
        ns_typo.source.namespace_selector = Some(sel("env == 'production'"));
        p.ingress = vec![ok, typo, ns_ok, ns_typo];
        let w = selector_matches_nothing(&inv_with_pods(vec![p]));
        let idx: Vec<usize> = w.iter().filter_map(|w| w.rule.map(|r| r.index)).collect();
        assert_eq!(idx, vec![1, 3], "{w:#?}");
    }

    #[test]
    fn rule_selector_is_scoped_to_the_policy_namespace() {
        let mut p = calico("prod", "p", "app == 'db'", Some(1.0));
        let mut r = rule(Action::Allow);
        r.source.selector = Some(sel("app == 'agent'"));
        p.ingress = vec![r];
        let mut inv = inv_with_pods(vec![p]);
        inv.pods
            .push(pod("monitoring", "agent", &[("app", "agent")], "10.0.0.3"));
        assert_eq!(selector_matches_nothing(&inv).len(), 1);
        inv.policies[0].ingress[0].source.namespace_selector = Some(sel("all()"));
        assert!(selector_matches_nothing(&inv).is_empty());
    }
}
