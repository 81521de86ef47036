//! Endpoint discovery: which interfaces of this node carry which endpoints.
//!
//! - **Pods**: local pods (not `hostNetwork`; `spec.nodeName`, when set, equal to this node's
//!   name, when one is configured) are found by the route to their addresses in the agent's
//!   network namespace: the longest-prefix unicast route of the main table whose output
//!   interface name starts with the workload prefix (`cali` by default) is the pod's
//!   host-side veth, as Calico's CNI plugin routes each pod (`<pod ip>/32 dev cali...`).
//! - **Host endpoints**: a HostEndpoint whose `node` is this node (any node when no node name
//!   is configured) and whose `interfaceName` exists here protects that interface. `*` (all
//!   interfaces) is not supported yet and is reported.
//!
//! The pure part ([`discover`], [`parse_route`], [`parse_link`]) is separate from reading the
//! kernel state ([`read_net_state`]) and watching it ([`watch_links`]), so it is unit-tested
//! without root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use ipnet::IpNet;
use rtnetlink::{
    Handle, MulticastGroup, RouteMessageBuilder,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
    },
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{compile::EndpointId, model::Inventory};

/// What an interface carries, which decides how the programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A pod's host-side veth: tc ingress is the pod's egress.
    Workload,
    /// A host interface (HostEndpoint): tc ingress is the host's ingress.
    Host,
}

/// A route as discovery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub oif: u32,
}

/// The interfaces and routes of the agent's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetState {
    /// ifindex → name.
    pub links: BTreeMap<u32, String>,
    /// Unicast routes of the main table with an output interface.
    pub routes: Vec<Route>,
}

impl NetState {
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.links
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(i, _)| *i)
    }

    /// The route the kernel would use for `addr` (longest prefix; first one on ties).
    pub fn route(&self, addr: IpAddr) -> Option<&Route> {
        self.routes.iter().filter(|r| r.dst.contains(&addr)).fold(
            None,
            |best: Option<&Route>, r| match best {
                Some(b) if b.dst.prefix_len() >= r.dst.prefix_len() => Some(b),
                _ => Some(r),
            },
        )
    }
}

/// Which endpoints are local, and how to tell workload interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub node_name: Option<String>,
    pub interface_prefix: String,
}

/// One local interface and the endpoint on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalInterface {
    pub id: EndpointId,
    pub ifindex: u32,
    pub ifname: String,
    pub role: Role,
}

/// The outcome of [`discover`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// By ifindex: at most one endpoint per interface.
    pub interfaces: BTreeMap<u32, LocalInterface>,
    /// Local endpoints without an interface yet (a pod whose veth is not there yet, a host
    /// endpoint naming a missing interface): informational, retried on the next change.
    pub pending: Vec<String>,
    /// Conflicts and unsupported input: logged as warnings.
    pub problems: Vec<String>,
}

impl Discovery {
    /// The ifindexes of an endpoint (for `compile::to_map_entries`).
    pub fn ifindexes(&self, id: &EndpointId) -> Vec<u32> {
        self.interfaces
            .values()
            .filter(|l| &l.id == id)
            .map(|l| l.ifindex)
            .collect()
    }
}

/// Maps the inventory's local endpoints to interfaces of `net`.
pub fn discover(inv: &Inventory, net: &NetState, sel: &Selector) -> Discovery {
    let mut d = Discovery::default();
    let mut claims: BTreeMap<u32, Vec<LocalInterface>> = BTreeMap::new();
    for p in &inv.pods {
        if p.host_network {
            continue;
        }
        if let (Some(want), Some(node)) = (&sel.node_name, &p.node_name)
            && want != node
        {
            continue;
        }
        let id = EndpointId::Pod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        let mut found: BTreeSet<u32> = BTreeSet::new();
        for ip in &p.ips {
            let Some(route) = net.route(*ip) else {
                continue;
            };
            let Some(name) = net.links.get(&route.oif) else {
                continue;
            };
            if name.starts_with(&sel.interface_prefix) {
                found.insert(route.oif);
            }
        }
        if found.len() > 1 {
            d.problems.push(format!(
                "{id}: its addresses route to several workload interfaces ({}); using the first",
                found
                    .iter()
                    .filter_map(|i| net.links.get(i).cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        match found.first() {
            Some(&ifindex) => claims.entry(ifindex).or_default().push(LocalInterface {
                id,
                ifindex,
                ifname: net.links.get(&ifindex).cloned().unwrap_or_default(),
                role: Role::Workload,
            }),
            // Not routed through a workload interface: another node's pod (or not yet wired).
            None if p.node_name.is_some() && sel.node_name.is_some() => {
                d.pending.push(format!(
                    "{id}: no route through a {}* interface yet",
                    sel.interface_prefix
                ));
            }
            None => {}
        }
    }
    for h in &inv.host_endpoints {
        let local = match (&sel.node_name, &h.node) {
            (Some(want), Some(node)) => want == node,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if !local {
            continue;
        }
        let id = EndpointId::Host {
            name: h.name.clone(),
        };
        let Some(name) = &h.interface_name else {
            // Calico: a HostEndpoint without interfaceName protects the interfaces owning its
            // expectedIPs; not supported yet.
            d.problems.push(format!(
                "{id}: no interfaceName; host endpoints by expectedIPs only are not supported \
                 yet, so it protects nothing"
            ));
            continue;
        };
        if name == "*" {
            d.problems.push(format!(
                "{id}: interfaceName \"*\" (all interfaces) is not supported yet; it protects \
                 nothing"
            ));
            continue;
        }
        match net.ifindex(name) {
            Some(ifindex) => claims.entry(ifindex).or_default().push(LocalInterface {
                id,
                ifindex,
                ifname: name.clone(),
                role: Role::Host,
            }),
            None => d
                .pending
                .push(format!("{id}: interface {name} does not exist here")),
        }
    }
    for (ifindex, mut list) in claims {
        if list.len() == 1 {
            if let Some(one) = list.pop() {
                d.interfaces.insert(ifindex, one);
            }
        } else {
            let names: Vec<String> = list.iter().map(|l| l.id.to_string()).collect();
            d.problems.push(format!(
                "interface {} is claimed by {}: one interface carries one endpoint, so \
                 none of them is enforced there until the conflict is resolved",
                list.first().map(|l| l.ifname.as_str()).unwrap_or("?"),
                names.join(" and ")
            ));
        }
    }
    d
}

/// A route of `msg` if it is a unicast route of the main table with one output interface.
pub fn parse_route(msg: &RouteMessage) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst: Option<IpAddr> = None;
    let mut oif = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match (dst, msg.header.address_family) {
        (Some(a), _) => a,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let dst = IpNet::new(dst, msg.header.destination_prefix_length)
        .ok()?
        .trunc();
    Some(Route { dst, oif: oif? })
}

/// (ifindex, name) of a link message.
pub fn parse_link(msg: &LinkMessage) -> Option<(u32, String)> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some((msg.header.index, n.clone())),
        _ => None,
    })
}

/// Dumps links and IPv4/IPv6 routes of the caller's network namespace.
pub async fn read_net_state(handle: &Handle) -> Result<NetState, rtnetlink::Error> {
    let mut state = NetState::default();
    let mut links = handle.link().get().execute();
    while let Some(l) = links.try_next().await? {
        if let Some((i, n)) = parse_link(&l) {
            state.links.insert(i, n);
        }
    }
    for msg in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(msg).execute();
        while let Some(r) = routes.try_next().await? {
            if let Some(r) = parse_route(&r) {
                state.routes.push(r);
            }
        }
    }
    Ok(state)
}

/// A netlink connection for dumps, its task spawned on the current runtime.
pub fn netlink_handle() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Watches link and route changes (netlink multicast `RTNLGRP_LINK`, `RTNLGRP_IPV4_ROUTE`,
/// `RTNLGRP_IPV6_ROUTE`): one `()` on `tx` per burst of changes (after `debounce` of quiet).
/// Falls back to a `fallback` rescan timer if the multicast socket cannot be opened. Ends when
/// `tx` closes.
pub async fn watch_links(tx: mpsc::Sender<()>, debounce: Duration, fallback: Duration) {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (conn, _handle, mut messages) = match rtnetlink::new_multicast_connection(&groups) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                error = %e,
                every = ?fallback,
                "cannot subscribe to netlink link/route notifications; rescanning on a timer"
            );
            let mut tick = tokio::time::interval(fallback);
            loop {
                tick.tick().await;
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        }
    };
    let conn = tokio::spawn(conn);
    loop {
        let Some((msg, _)) = messages.next().await else {
            tracing::warn!("netlink notifications ended; rescanning on a timer");
            conn.abort();
            let mut tick = tokio::time::interval(fallback);
            loop {
                tick.tick().await;
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        };
        if !is_interesting(&msg.payload) {
            continue;
        }
        // Coalesce a burst (a CNI ADD creates the veth, brings it up, adds the route).
        while let Ok(Some(_)) = tokio::time::timeout(debounce, messages.next()).await {}
        // A full channel already holds a pending rescan.
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
            conn.abort();
            return;
        }
    }
}

fn is_interesting(payload: &rtnetlink::packet_core::NetlinkPayload<RouteNetlinkMessage>) -> bool {
    use rtnetlink::packet_core::NetlinkPayload;
    matches!(
        payload,
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewLink(_)
                | RouteNetlinkMessage::DelLink(_)
                | RouteNetlinkMessage::NewRoute(_)
                | RouteNetlinkMessage::DelRoute(_)
        )
    )
}
