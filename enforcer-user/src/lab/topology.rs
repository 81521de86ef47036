//! The lab's network: one "node" namespace and one namespace per host (pod or outside
//! address), wired the way Calico wires pods.
//!
//! ```text
//!   <id>-p3 (pod)                   <id>-node                        <id>-p4 (pod)
//!   eth0 198.18.10.10/32  <--veth-->  <id>p3   <id>p4  <--veth-->  eth0 198.18.10.20/32
//!        fd00:..::10/128               routes: 198.18.10.10/32 dev <id>p3, ...
//!   default via 169.254.1.1            forwarding on, 169.254.1.1/32 on lo,
//!   default via fe80::1                fe80::1/64 on every host-side veth
//! ```
//!
//! As in Calico, a pod has a /32 (/128) address and a default route through a link-local
//! gateway; the node has one host route per pod address and answers the pod's ARP for
//! `169.254.1.1` (proxy ARP in Calico; here the node owns the address on `lo`, because a lab
//! node has no uplink for proxy ARP to route to) and ND for `fe80::1` (owned by every
//! host-side veth, as Calico does). Host-side veths all have Calico's MAC `ee:ee:ee:ee:ee:ee`.
//! Neighbour entries are written permanent on both ends (Felix does the same on the host
//! side), so no first packet waits for ARP or ND and no probe depends on neighbour timing.
//! Namespaces of addresses outside the cluster are wired the same way; only pods get the
//! datapath.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use serde::Deserialize;

use super::{
    LabError,
    netns::{Cleanup, ip, ip_batch, sysctls},
};

/// The MAC of every host-side veth (Calico uses the same).
pub const HOST_SIDE_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' IPv4 gateway.
pub const GATEWAY_V4: &str = "169.254.1.1";
/// The pods' IPv6 gateway.
pub const GATEWAY_V6: &str = "fe80::1";

/// What a lab host stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKind {
    Pod {
        namespace: String,
        name: String,
    },
    /// An address outside the cluster (no policy of its own, no datapath).
    External,
}

/// A host to create: what it is and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub kind: HostKind,
    pub addrs: Vec<IpAddr>,
}

/// A created host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub kind: HostKind,
    pub addrs: Vec<IpAddr>,
    /// Its network namespace (`ip netns` name).
    pub netns: String,
    /// The host side of its veth pair, in the node namespace.
    pub veth: String,
    /// `veth`'s ifindex in the node namespace (where the datapath attaches).
    pub ifindex: u32,
}

impl Host {
    pub fn label(&self) -> String {
        match &self.kind {
            HostKind::Pod { namespace, name } => format!("{namespace}/{name}"),
            HostKind::External => self
                .addrs
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }
}

/// The lab's namespaces and links. Dropping it deletes them (and whatever else the shared
/// [`Cleanup`] holds).
#[derive(Debug)]
pub struct Topology {
    pub id: String,
    pub node_netns: String,
    pub hosts: Vec<Host>,
    cleanup: Arc<Cleanup>,
}

#[derive(Deserialize)]
struct IpLink {
    ifindex: u32,
    ifname: String,
}

impl Topology {
    /// Creates the node namespace and one namespace per spec. Everything is registered with
    /// `cleanup` before it is created; on error everything `cleanup` holds is removed before
    /// returning, and once built, dropping the topology removes it.
    pub fn build(
        id: &str,
        specs: &[HostSpec],
        cleanup: Arc<Cleanup>,
    ) -> Result<Topology, LabError> {
        Self::build_with(id, specs, cleanup, true)
    }

    /// [`Topology::build`]; `static_neighbours: false` writes no permanent ARP/ND entries, so
    /// neighbour resolution happens on the wire (and crosses the datapath) as on a real node.
    pub fn build_with(
        id: &str,
        specs: &[HostSpec],
        cleanup: Arc<Cleanup>,
        static_neighbours: bool,
    ) -> Result<Topology, LabError> {
        match Self::try_build(id, specs, &cleanup, static_neighbours) {
            Ok((node_netns, hosts)) => Ok(Topology {
                id: id.to_string(),
                node_netns,
                hosts,
                cleanup,
            }),
            Err(e) => {
                for p in cleanup.run() {
                    tracing::warn!("lab cleanup: {p}");
                }
                Err(e)
            }
        }
    }

    fn try_build(
        id: &str,
        specs: &[HostSpec],
        cleanup: &Cleanup,
        static_neighbours: bool,
    ) -> Result<(String, Vec<Host>), LabError> {
        let node = format!("{id}-node");
        // Interface names: IFNAMSIZ is 16 with the NUL.
        let longest = format!("{id}x{}", specs.len());
        if longest.len() > 15 {
            return Err(LabError::Setup {
                step: "naming interfaces".to_string(),
                message: format!("lab id {id:?} is too long for {} hosts", specs.len()),
            });
        }
        let mut hosts: Vec<Host> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let tag = match s.kind {
                    HostKind::Pod { .. } => 'p',
                    HostKind::External => 'x',
                };
                Host {
                    kind: s.kind.clone(),
                    addrs: s.addrs.clone(),
                    netns: format!("{id}-{tag}{i}"),
                    veth: format!("{id}{tag}{i}"),
                    ifindex: 0,
                }
            })
            .collect();

        // Namespaces, registered first so any failure below is cleaned up.
        cleanup.add_netns(&node);
        for h in &hosts {
            cleanup.add_netns(&h.netns);
        }
        let mut adds = vec![format!("netns add {node}")];
        adds.extend(hosts.iter().map(|h| format!("netns add {}", h.netns)));
        ip_batch(None, &adds, false)?;

        // The node: forwarding, no reverse-path filter, the IPv4 gateway address, no DAD on
        // new interfaces.
        sysctls(
            &node,
            &[
                ("net/ipv4/ip_forward".to_string(), "1"),
                ("net/ipv6/conf/all/forwarding".to_string(), "1"),
                ("net/ipv4/conf/all/rp_filter".to_string(), "0"),
                ("net/ipv4/conf/default/rp_filter".to_string(), "0"),
                ("net/ipv4/conf/default/proxy_arp".to_string(), "1"),
                ("net/ipv6/conf/default/accept_dad".to_string(), "0"),
            ],
        )?;
        let mut node_cmds = vec![
            "link set lo up".to_string(),
            format!("addr add {GATEWAY_V4}/32 dev lo"),
        ];
        for (i, h) in hosts.iter().enumerate() {
            let mac = host_mac(i);
            let v = &h.veth;
            node_cmds.push(format!(
                "link add {v} address {HOST_SIDE_MAC} type veth peer name eth0 address {mac} netns {}",
                h.netns
            ));
            node_cmds.push(format!("link set {v} addrgenmode none"));
            if h.addrs.iter().any(IpAddr::is_ipv6) {
                node_cmds.push(format!("addr add {GATEWAY_V6}/64 dev {v} nodad"));
            }
            node_cmds.push(format!("link set {v} up"));
            for a in &h.addrs {
                let len = if a.is_ipv4() { 32 } else { 128 };
                node_cmds.push(format!("route add {a}/{len} dev {v}"));
                node_cmds.push(format!(
                    "neigh replace {a} lladdr {mac} dev {v} nud permanent"
                ));
            }
        }
        ip_batch(Some(&node), &node_cmds, false)?;

        for h in &hosts {
            let mut cmds = vec![
                "link set lo up".to_string(),
                "link set eth0 addrgenmode none".to_string(),
            ];
            for a in &h.addrs {
                if a.is_ipv4() {
                    cmds.push(format!("addr add {a}/32 dev eth0"));
                } else {
                    cmds.push(format!("addr add {a}/128 dev eth0 nodad"));
                }
            }
            cmds.push("link set eth0 up".to_string());
            if h.addrs.iter().any(IpAddr::is_ipv4) {
                cmds.push(format!("route add {GATEWAY_V4} dev eth0 scope link"));
                cmds.push(format!(
                    "route add default via {GATEWAY_V4} dev eth0 onlink"
                ));
                if static_neighbours {
                    cmds.push(format!(
                        "neigh replace {GATEWAY_V4} lladdr {HOST_SIDE_MAC} dev eth0 nud permanent"
                    ));
                }
            }
            if h.addrs.iter().any(IpAddr::is_ipv6) {
                cmds.push(format!("route add ::/0 via {GATEWAY_V6} dev eth0"));
                if static_neighbours {
                    cmds.push(format!(
                        "neigh replace {GATEWAY_V6} lladdr {HOST_SIDE_MAC} dev eth0 nud permanent"
                    ));
                }
            }
            ip_batch(Some(&h.netns), &cmds, false)?;
        }

        // ifindexes of the host-side veths, where the datapath attaches.
        let json = ip(&["-n", &node, "-j", "link", "show"])?;
        let links: Vec<IpLink> = serde_json::from_str(&json).map_err(|e| LabError::Setup {
            step: format!("ip -n {node} -j link show"),
            message: format!("unexpected output: {e}"),
        })?;
        let by_name: HashMap<&str, u32> = links
            .iter()
            .map(|l| (l.ifname.as_str(), l.ifindex))
            .collect();
        for h in &mut hosts {
            h.ifindex = *by_name
                .get(h.veth.as_str())
                .ok_or_else(|| LabError::Setup {
                    step: format!("ip -n {node} link show"),
                    message: format!("{} is missing after creation", h.veth),
                })?;
        }
        Ok((node, hosts))
    }

    /// The host owning `addr`.
    pub fn host_of(&self, addr: IpAddr) -> Option<&Host> {
        self.hosts.iter().find(|h| h.addrs.contains(&addr))
    }

    /// The pod's host.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| {
            matches!(&h.kind, HostKind::Pod { namespace: n, name: m } if n == namespace && m == name)
        })
    }

    /// Every namespace name of this topology.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.node_netns.clone())
            .chain(self.hosts.iter().map(|h| h.netns.clone()))
            .collect()
    }

    /// Removes the namespaces now (also what Drop does); returns what could not be removed.
    pub fn remove(self) -> Vec<String> {
        self.cleanup.run()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for p in self.cleanup.run() {
            tracing::warn!("lab cleanup: {p}");
        }
    }
}

/// A locally administered, per-lab-unique MAC for host `i`'s eth0.
fn host_mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}
