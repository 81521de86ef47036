//! Endpoints (what policy applies to) and entities (what rule selectors match).

use std::net::IpAddr;

use crate::{
    model::{
        EntityRule, HostEndpoint, Inventory, Labels, NamedPort, NetworkSet, Pod, Policy,
        PolicyKind, ServiceAccountMatch,
    },
    selector::Selector,
};

use super::trace::EndpointInfo;

/// Label Calico puts on namespaced endpoints and sets: their namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// Label Calico puts on Kubernetes workload endpoints.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// Label Calico puts on workload endpoints: their service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";
/// Label Calico puts on namespaces and service accounts: their name.
pub const NAME_LABEL: &str = "projectcalico.org/name";

/// What a policy can apply to: one side of a flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Endpoint<'a> {
    /// A pod with its own network namespace.
    Workload(&'a Pod),
    /// A host interface protected by a HostEndpoint.
    Host(&'a HostEndpoint),
    /// Not policed: an address outside the cluster, or a host-network pod (`Some`).
    External(Option<&'a Pod>),
}

impl<'a> Endpoint<'a> {
    /// The endpoint owning an address: a (non host-network) pod, else a host endpoint
    /// expecting it, else nothing policed.
    pub fn for_address(inv: &'a Inventory, ip: IpAddr) -> Endpoint<'a> {
        if let Some(pod) = inv
            .pods
            .iter()
            .find(|p| !p.host_network && p.ips.contains(&ip))
        {
            return Endpoint::Workload(pod);
        }
        if let Some(hep) = inv
            .host_endpoints
            .iter()
            .find(|h| h.expected_ips.contains(&ip))
        {
            return Endpoint::Host(hep);
        }
        Endpoint::External(
            inv.pods
                .iter()
                .find(|p| p.host_network && p.ips.contains(&ip)),
        )
    }

    pub fn is_policed(&self) -> bool {
        !matches!(self, Endpoint::External(_))
    }

    pub fn name(&self) -> String {
        match self {
            Endpoint::Workload(p) => format!("pod {}/{}", p.namespace, p.name),
            Endpoint::Host(h) => format!("host endpoint {}", h.name),
            Endpoint::External(Some(p)) => format!("host-network pod {}/{}", p.namespace, p.name),
            Endpoint::External(None) => "outside the cluster".to_string(),
        }
    }

    pub fn info(&self, address: IpAddr) -> EndpointInfo {
        let (kind, name) = match self {
            Endpoint::Workload(p) => ("pod", Some(format!("{}/{}", p.namespace, p.name))),
            Endpoint::Host(h) => ("host-endpoint", Some(h.name.clone())),
            Endpoint::External(Some(p)) => (
                "host-network-pod",
                Some(format!("{}/{}", p.namespace, p.name)),
            ),
            Endpoint::External(None) => ("external", None),
        };
        EndpointInfo {
            kind: kind.to_string(),
            name,
            address,
        }
    }
}

/// The labels a policy's endpoint selector sees: the object's labels plus those Calico adds.
pub fn endpoint_labels(ep: &Endpoint<'_>) -> Labels {
    match ep {
        Endpoint::Workload(p) => pod_labels(p),
        Endpoint::Host(h) => h.labels.clone(),
        Endpoint::External(_) => Labels::new(),
    }
}

fn pod_labels(p: &Pod) -> Labels {
    let mut l = p.labels.clone();
    l.entry(NAMESPACE_LABEL.into())
        .or_insert_with(|| p.namespace.clone());
    l.entry(ORCHESTRATOR_LABEL.into())
        .or_insert_with(|| "k8s".into());
    l.entry(SERVICE_ACCOUNT_LABEL.into())
        .or_insert_with(|| p.service_account.clone());
    l
}

/// A namespace's labels as namespace selectors see them. A namespace missing from the
/// inventory still has its name labels (Kubernetes and Calico add them).
pub fn namespace_labels(inv: &Inventory, ns: &str) -> Labels {
    let mut l = inv
        .namespace(ns)
        .map(|n| n.labels.clone())
        .unwrap_or_default();
    l.entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| ns.to_string());
    l.entry(NAME_LABEL.into()).or_insert_with(|| ns.to_string());
    l
}

/// A service account's labels as service-account selectors see them.
pub fn service_account_labels(inv: &Inventory, ns: &str, name: &str) -> Labels {
    let mut l = inv
        .service_account(ns, name)
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    l.entry(NAME_LABEL.into())
        .or_insert_with(|| name.to_string());
    l
}

/// Something a rule's selector can match: the owner of an address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EntityRef<'a> {
    Pod(&'a Pod),
    Host(&'a HostEndpoint),
    NetworkSet(&'a NetworkSet),
}

impl<'a> EntityRef<'a> {
    pub fn labels(&self) -> Labels {
        match self {
            EntityRef::Pod(p) => pod_labels(p),
            EntityRef::Host(h) => h.labels.clone(),
            EntityRef::NetworkSet(s) => {
                let mut l = s.labels.clone();
                if let Some(ns) = &s.namespace {
                    l.entry(NAMESPACE_LABEL.into())
                        .or_insert_with(|| ns.clone());
                }
                l
            }
        }
    }

    /// The namespace of a namespaced entity; `None` for global ones.
    pub fn namespace(&self) -> Option<&'a str> {
        match self {
            EntityRef::Pod(p) => Some(&p.namespace),
            EntityRef::Host(_) => None,
            EntityRef::NetworkSet(s) => s.namespace.as_deref(),
        }
    }

    pub fn named_ports(&self) -> &'a [NamedPort] {
        match self {
            EntityRef::Pod(p) => &p.ports,
            EntityRef::Host(h) => &h.ports,
            EntityRef::NetworkSet(_) => &[],
        }
    }
}

/// Every entity owning an address: pods (not host-networked) with it, host endpoints
/// expecting it, network sets containing it.
pub fn entities_at(inv: &Inventory, addr: IpAddr) -> Vec<EntityRef<'_>> {
    let pods = inv
        .pods
        .iter()
        .filter(|p| !p.host_network && p.ips.contains(&addr))
        .map(EntityRef::Pod);
    let heps = inv
        .host_endpoints
        .iter()
        .filter(|h| h.expected_ips.contains(&addr))
        .map(EntityRef::Host);
    let sets = inv
        .network_sets
        .iter()
        .filter(|s| s.nets.iter().any(|n| n.contains(&addr)))
        .map(EntityRef::NetworkSet);
    pods.chain(heps).chain(sets).collect()
}

/// A namespace selector evaluated the way Calico rewrites it: keys look at the namespace's
/// labels (`pcns.` prefixed), `all()` means "any namespaced entity" and `global()` means
/// "any global entity" (GlobalNetworkSets, host endpoints).
pub fn namespace_selector_matches(
    inv: &Inventory,
    sel: &Selector,
    namespace: Option<&str>,
) -> bool {
    match namespace {
        Some(ns) => sel.evaluate_with(&namespace_labels(inv, ns), true, false),
        None => sel.evaluate_with(&Labels::new(), false, true),
    }
}

/// The selector Calico builds from a rule's source or destination.
pub struct RuleSelector<'a> {
    policy: &'a Policy,
    er: &'a EntityRule,
    /// Whether the combined selector exists at all (otherwise any address matches).
    active: bool,
}

impl<'a> RuleSelector<'a> {
    pub fn new(policy: &'a Policy, er: &'a EntityRule) -> RuleSelector<'a> {
        let sel_given = er.selector.is_some() || er.service_accounts.is_some();
        let ns_clause = er.namespace_selector.is_some() || policy.namespace.is_some();
        let active = sel_given
            || (ns_clause && (er.not_selector.is_some() || er.namespace_selector.is_some()));
        RuleSelector { policy, er, active }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether the combined selector picks this entity.
    pub fn picks(&self, inv: &Inventory, e: &EntityRef<'_>) -> bool {
        if !self.active {
            return false;
        }
        // Kubernetes peers always carry `projectcalico.org/orchestrator == 'k8s'`: pods only.
        if self.policy.kind == PolicyKind::KubernetesNetworkPolicy
            && !matches!(e, EntityRef::Pod(_))
        {
            return false;
        }
        let in_namespace = match (&self.er.namespace_selector, &self.policy.namespace) {
            (Some(sel), _) => namespace_selector_matches(inv, sel, e.namespace()),
            (None, Some(pns)) => e.namespace() == Some(pns.as_str()),
            (None, None) => true,
        };
        in_namespace
            && self
                .er
                .selector
                .as_ref()
                .is_none_or(|s| s.evaluate(&e.labels(), e.namespace().is_none()))
            && self
                .er
                .service_accounts
                .as_ref()
                .is_none_or(|sa| service_account_matches(inv, sa, e))
    }
}

/// `serviceAccounts: {names, selector}`, as Calico rewrites it: names become
/// `projectcalico.org/serviceaccount in {...}` (pods only), the selector looks at the service
/// account's labels (`pcsa.` prefixed, so entities without a service account see none).
pub fn service_account_matches(
    inv: &Inventory,
    sa: &ServiceAccountMatch,
    e: &EntityRef<'_>,
) -> bool {
    let pod = match e {
        EntityRef::Pod(p) => Some(*p),
        _ => None,
    };
    if !sa.names.is_empty() && !pod.is_some_and(|p| sa.names.contains(&p.service_account)) {
        return false;
    }
    sa.selector.as_ref().is_none_or(|s| {
        let labels = pod
            .map(|p| service_account_labels(inv, &p.namespace, &p.service_account))
            .unwrap_or_default();
        s.evaluate_with(&labels, true, e.namespace().is_none())
    })
}
