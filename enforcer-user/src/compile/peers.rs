//! Peer regions: the distinct prefixes every address predicate of the evaluator is built
//! from, arranged as a tree (prefixes are nested or disjoint), with one representative
//! address per region whose longest matching prefix is exactly that region.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::{EntityRule, Inventory};

/// Every prefix the evaluator's address predicates can distinguish, as a laminar family.
pub(crate) struct Regions {
    /// Sorted (IPv4 first, then by network address, shorter prefixes first), truncated.
    pub nets: Vec<IpNet>,
    pub parent: Vec<Option<usize>>,
    /// An address whose longest match is this region; `None` when children cover it whole.
    pub rep: Vec<Option<IpAddr>>,
    index: HashMap<IpNet, usize>,
    /// Non host-network pods by address (indices into `inv.pods`).
    pods_at: HashMap<IpAddr, Vec<usize>>,
    /// Host endpoints by expected address (indices into `inv.host_endpoints`).
    heps_at: HashMap<IpAddr, Vec<usize>>,
    /// Network sets having a net equal to the region: (set index, the net as written).
    sets_at: HashMap<usize, Vec<(usize, IpNet)>>,
    /// Whether a region is some rule's net or notNet.
    is_rule_net: Vec<bool>,
    /// Identity id of each pod: pods with equal ids look the same to every selector.
    pod_identity: Vec<u32>,
}

/// Everything about an address that the evaluator's rule predicates can see: addresses with
/// equal memberships are treated alike by every rule (see `docs/datapath.md`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Membership {
    v6: bool,
    /// Identities of the pods at the address, sorted.
    pods: Vec<u32>,
    /// Host endpoints expecting the address.
    heps: Vec<usize>,
    /// Network sets containing the address.
    sets: Vec<usize>,
    /// Rule nets containing the address (region indices).
    rule_nets: Vec<usize>,
}

impl Membership {
    /// Whether some entity (pod, host endpoint, network set) owns or contains the address:
    /// only then can an active rule selector pick it.
    pub fn has_entities(&self) -> bool {
        !self.pods.is_empty() || !self.heps.is_empty() || !self.sets.is_empty()
    }
}

fn rule_nets(er: &EntityRule) -> impl Iterator<Item = &IpNet> {
    er.nets.iter().chain(&er.not_nets)
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v4: bool, x: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(x).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(x))
    }
}

/// The root prefix of an address's family.
pub(crate) fn root_of(v6: bool) -> IpNet {
    if v6 {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).unwrap_or_default())
    } else {
        IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or_default())
    }
}

pub(crate) fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

impl Regions {
    pub fn build(inv: &Inventory) -> Regions {
        let mut set: BTreeSet<IpNet> = BTreeSet::new();
        set.insert(root_of(false));
        set.insert(root_of(true));
        let mut pods_at: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, p) in inv.pods.iter().enumerate().filter(|(_, p)| !p.host_network) {
            for ip in &p.ips {
                set.insert(IpNet::from(*ip));
                let v = pods_at.entry(*ip).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        let mut heps_at: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, h) in inv.host_endpoints.iter().enumerate() {
            for ip in &h.expected_ips {
                set.insert(IpNet::from(*ip));
                let v = heps_at.entry(*ip).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        for s in &inv.network_sets {
            set.extend(s.nets.iter().map(IpNet::trunc));
        }
        let mut rule_net_set: BTreeSet<IpNet> = BTreeSet::new();
        for p in &inv.policies {
            for r in p.ingress.iter().chain(&p.egress) {
                rule_net_set.extend(rule_nets(&r.source).map(IpNet::trunc));
                rule_net_set.extend(rule_nets(&r.destination).map(IpNet::trunc));
            }
        }
        set.extend(rule_net_set.iter().copied());
        let nets: Vec<IpNet> = set.into_iter().collect();
        let is_rule_net = nets.iter().map(|n| rule_net_set.contains(n)).collect();
        // What a rule can see of a pod: namespace, labels, service account, named ports.
        let mut identities: HashMap<
            (
                &str,
                &crate::model::Labels,
                &str,
                &[crate::model::NamedPort],
            ),
            u32,
        > = HashMap::new();
        let pod_identity = inv
            .pods
            .iter()
            .map(|p| {
                let n = identities.len() as u32;
                *identities
                    .entry((
                        p.namespace.as_str(),
                        &p.labels,
                        p.service_account.as_str(),
                        p.ports.as_slice(),
                    ))
                    .or_insert(n)
            })
            .collect();
        let index: HashMap<IpNet, usize> = nets.iter().enumerate().map(|(i, n)| (*n, i)).collect();

        // Parents by a stack walk over the sorted prefixes.
        let mut parent = vec![None; nets.len()];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); nets.len()];
        let mut stack: Vec<usize> = Vec::new();
        for (i, n) in nets.iter().enumerate() {
            while let Some(&top) = stack.last() {
                if nets[top].contains(n) {
                    break;
                }
                stack.pop();
            }
            if let Some(&top) = stack.last() {
                parent[i] = Some(top);
                children[top].push(i);
            }
            stack.push(i);
        }
        // Representatives: the first address of the region no child covers.
        let rep = nets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v4 = matches!(n, IpNet::V4(_));
                let end = to_u128(n.broadcast());
                let mut start = to_u128(n.network());
                for &c in &children[i] {
                    let cs = to_u128(nets[c].network());
                    if cs > start {
                        return Some(from_u128(v4, start));
                    }
                    let ce = to_u128(nets[c].broadcast());
                    if ce >= end {
                        return None;
                    }
                    start = ce + 1;
                }
                Some(from_u128(v4, start))
            })
            .collect();

        let mut sets_at: HashMap<usize, Vec<(usize, IpNet)>> = HashMap::new();
        for (si, s) in inv.network_sets.iter().enumerate() {
            for n in &s.nets {
                if let Some(&ri) = index.get(&n.trunc()) {
                    sets_at.entry(ri).or_default().push((si, *n));
                }
            }
        }
        Regions {
            nets,
            parent,
            rep,
            index,
            pods_at,
            heps_at,
            sets_at,
            is_rule_net,
            pod_identity,
        }
    }

    /// The membership of an address (`region`: its region, when the caller knows it).
    pub fn membership(&self, addr: IpAddr, region: Option<usize>) -> Membership {
        let mut pods: Vec<u32> = self
            .pods_at
            .get(&addr)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.pod_identity.get(i).copied())
            .collect();
        pods.sort_unstable();
        let heps = self.heps_at.get(&addr).cloned().unwrap_or_default();
        let mut sets = Vec::new();
        let mut rule_nets = Vec::new();
        let mut r = region.or_else(|| self.region_of(addr));
        while let Some(ri) = r {
            sets.extend(
                self.sets_at
                    .get(&ri)
                    .into_iter()
                    .flatten()
                    .map(|(si, _)| *si),
            );
            if self.is_rule_net.get(ri).copied().unwrap_or(false) {
                rule_nets.push(ri);
            }
            r = self.parent[ri];
        }
        sets.sort_unstable();
        sets.dedup();
        Membership {
            v6: addr.is_ipv6(),
            pods,
            heps,
            sets,
            rule_nets,
        }
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// The region of a prefix (host bits ignored), if it is one.
    pub fn region_index(&self, net: &IpNet) -> Option<usize> {
        self.index.get(&net.trunc()).copied()
    }

    /// The region an address falls in: its longest matching prefix.
    pub fn region_of(&self, addr: IpAddr) -> Option<usize> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let net = IpNet::new(addr, len).ok()?.trunc();
            self.index.get(&net).copied()
        })
    }

    /// The part of the inventory `rule_matches` consults for one address: the entities at it
    /// (pods, host endpoints, network sets, each set cut down to one net containing the
    /// address) and the namespaces and service accounts whose labels they carry. Evaluating a
    /// rule half that constrains only this address against it gives the same answer as the
    /// whole inventory, at a cost independent of the inventory's size.
    pub fn scoped_inventory(
        &self,
        inv: &Inventory,
        addr: IpAddr,
        region: Option<usize>,
    ) -> Inventory {
        let pods: Vec<_> = self
            .pods_at
            .get(&addr)
            .into_iter()
            .flatten()
            .filter_map(|&i| inv.pods.get(i).cloned())
            .collect();
        let host_endpoints: Vec<_> = self
            .heps_at
            .get(&addr)
            .into_iter()
            .flatten()
            .filter_map(|&i| inv.host_endpoints.get(i).cloned())
            .collect();
        let mut set_nets: Vec<(usize, IpNet)> = Vec::new();
        let mut r = region.or_else(|| self.region_of(addr));
        while let Some(ri) = r {
            set_nets.extend(self.sets_at.get(&ri).into_iter().flatten().copied());
            r = self.parent[ri];
        }
        set_nets.sort_by_key(|(si, _)| *si);
        set_nets.dedup_by_key(|(si, _)| *si);
        if pods.is_empty() && host_endpoints.is_empty() && set_nets.is_empty() {
            // Nothing at the address, so no namespace or service account is referred to.
            return Inventory::default();
        }
        let network_sets: Vec<_> = set_nets
            .iter()
            .filter_map(|&(si, net)| {
                let s = inv.network_sets.get(si)?;
                Some(crate::model::NetworkSet {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    labels: s.labels.clone(),
                    nets: vec![net],
                    origin: s.origin.clone(),
                })
            })
            .collect();
        let ns_names: BTreeSet<&str> = pods
            .iter()
            .map(|p| p.namespace.as_str())
            .chain(network_sets.iter().filter_map(|s| s.namespace.as_deref()))
            .collect();
        let sas: BTreeSet<(&str, &str)> = pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.service_account.as_str()))
            .collect();
        let namespaces = inv
            .namespaces
            .iter()
            .filter(|n| ns_names.contains(n.name.as_str()))
            .cloned()
            .collect();
        let service_accounts = inv
            .service_accounts
            .iter()
            .filter(|s| sas.contains(&(s.namespace.as_str(), s.name.as_str())))
            .cloned()
            .collect();
        Inventory {
            namespaces,
            service_accounts,
            pods,
            network_sets,
            host_endpoints,
            ..Inventory::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::{NetworkSet, Origin};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn representatives_avoid_children() {
        let mut inv = Inventory::default();
        inv.network_sets.push(NetworkSet {
            namespace: None,
            name: "s".into(),
            labels: Default::default(),
            nets: vec![
                net("10.0.0.0/8"),
                net("10.0.0.0/9"),
                net("10.128.0.0/9"),
                net("10.1.2.3/16"),
            ],
            origin: Origin::default(),
        });
        let r = Regions::build(&inv);
        let i8 = r.index[&net("10.0.0.0/8")];
        assert_eq!(r.rep[i8], None, "fully covered by its two halves");
        let i16 = r.index[&net("10.1.0.0/16")];
        assert_eq!(r.parent[i16], Some(r.index[&net("10.0.0.0/9")]));
        let i9 = r.index[&net("10.0.0.0/9")];
        assert_eq!(r.rep[i9], Some("10.0.0.0".parse().unwrap()));
        let root = r.index[&net("0.0.0.0/0")];
        assert_eq!(r.rep[root], Some("0.0.0.0".parse().unwrap()));
        assert_eq!(r.region_of("10.1.9.9".parse().unwrap()), Some(i16));
        assert_eq!(
            r.region_of("::1".parse().unwrap()),
            Some(r.index[&net("::/0")])
        );
        let scoped = r.scoped_inventory(&inv, "10.1.9.9".parse().unwrap(), None);
        assert_eq!(scoped.network_sets.len(), 1, "one set, once");
        assert_eq!(scoped.network_sets[0].nets, vec![net("10.1.2.3/16")]);
    }

    #[test]
    fn first_gap_is_the_representative() {
        let mut inv = Inventory::default();
        inv.network_sets.push(NetworkSet {
            namespace: None,
            name: "s".into(),
            labels: Default::default(),
            nets: vec![net("0.0.0.0/1"), net("128.0.0.0/2")],
            origin: Origin::default(),
        });
        let r = Regions::build(&inv);
        let root = r.index[&net("0.0.0.0/0")];
        assert_eq!(r.rep[root], Some("192.0.0.0".parse().unwrap()));
    }
}
