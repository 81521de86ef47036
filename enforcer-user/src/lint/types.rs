//! `types-defaulting`: policies whose omitted `policyTypes` / `types` default to something
//! the author may not expect.

use crate::model::{Inventory, PolicyKind};

use super::{LintCode, Warning};

/// `types-defaulting`.
pub fn types_defaulting(inv: &Inventory) -> Vec<Warning> {
    let mut out = Vec::new();
    for p in inv.policies.iter().filter(|p| !p.types_explicit) {
        let has_in = !p.ingress.is_empty();
        let has_eg = !p.egress.is_empty();
        if p.kind == PolicyKind::KubernetesNetworkPolicy {
            // Kubernetes: Ingress always, plus Egress when egress rules exist.
            if has_eg && !has_in {
                out.push(Warning::for_policy(
                    LintCode::TypesDefaulting,
                    p,
                    None,
                    "policyTypes is omitted and the policy has only egress rules: Kubernetes \
                     defaults policyTypes to [Ingress, Egress], so it also isolates ingress and, \
                     with no ingress rules, all ingress to the selected pods is denied",
                    "if only egress should be restricted, add `policyTypes: [Egress]`; if \
                     ingress should be denied too, write `policyTypes: [Ingress, Egress]` to say so",
                ));
            }
        } else if has_eg && !has_in {
            out.push(Warning::for_policy(
                LintCode::TypesDefaulting,
                p,
                None,
                "types is omitted and the policy has only egress rules: Calico defaults types to \
                 [Egress], so ingress to the selected endpoints is not affected by this policy",
                "write `types: [Egress]` to make it explicit, or `types: [Ingress, Egress]` if \
                 ingress should be denied too",
            ));
        } else if !has_eg && !has_in {
            out.push(Warning::for_policy(
                LintCode::TypesDefaulting,
                p,
                None,
                "types is omitted and the policy has no rules: Calico defaults types to \
                 [Ingress], so it denies all ingress to the selected endpoints (and leaves \
                 egress alone)",
                "write `types: [Ingress]` to make the ingress default-deny explicit, or \
                 `types: [Ingress, Egress]` to deny egress as well",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lint::testutil::*,
        model::{Action, Direction},
    };

    #[test]
    fn k8s_egress_only_without_policy_types() {
        let mut p = k8s("prod", "egress", "all()");
        p.types_explicit = false;
        p.types = vec![Direction::Ingress, Direction::Egress];
        p.egress = vec![allow()];
        let w = types_defaulting(&inventory(vec![p.clone()]));
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("all ingress"));
        // With explicit types: nothing to say.
        p.types_explicit = true;
        assert!(types_defaulting(&inventory(vec![p.clone()])).is_empty());
        // With ingress rules too: what the author wrote.
        p.types_explicit = false;
        p.ingress = vec![allow()];
        assert!(types_defaulting(&inventory(vec![p])).is_empty());
    }

    #[test]
    fn k8s_default_deny_idiom_is_fine() {
        let mut p = k8s("prod", "default-deny", "all()");
        p.types_explicit = false;
        assert!(types_defaulting(&inventory(vec![p])).is_empty());
    }

    #[test]
    fn calico_egress_only_and_empty_policies() {
        let mut eg = calico("prod", "eg", "all()", Some(1.0));
        eg.types_explicit = false;
        eg.types = vec![Direction::Egress];
        eg.egress = vec![rule(Action::Deny)];
        let mut empty = calico("prod", "empty", "all()", Some(1.0));
        empty.types_explicit = false;
        let mut both = calico("prod", "both", "all()", Some(1.0));
        both.types_explicit = false;
        both.ingress = vec![allow()];
        both.egress = vec![allow()];
        let w = types_defaulting(&inventory(vec![eg, empty, both]));
        let names: Vec<_> = w.iter().filter_map(|w| w.policy.clone()).collect();
        assert_eq!(names, vec!["prod/eg", "prod/empty"]);
    }
}
