//! A flat, ordered ruleset: the same policies as Enforcer's, as an iptables (Calico-iptables /
//! kube-router style) or linear-scan eBPF enforcer sees them — one endpoint, one direction,
//! rules in evaluation order, first match wins, selectors expanded to IP sets.
//!
//! Contract (shared by `iptables.rs` and `linear.rs`; `flatten` implemented in this module):
//! a packet matches a [`FlatRule`] when its protocol equals `protocol` (or `protocol` is
//! `None`), its destination port lies in one of `dst_ports` (or `dst_ports` is empty), and
//! its peer address (the source for ingress) is in one of `src_nets` or in the IP set
//! `src_ipset` — or `src_nets` is empty and `src_ipset` is `None` (any peer). The first
//! matching rule's action decides; no match: `default`.

#![allow(dead_code, reason = "the contract is filled in by the iptables and linear sections")]

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlatAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatRule {
    pub action: FlatAction,
    /// IP protocol number (6 = TCP, 17 = UDP); `None` = any.
    pub protocol: Option<u8>,
    /// Inclusive destination port ranges; empty = any port.
    pub dst_ports: Vec<(u16, u16)>,
    /// Peer CIDRs (IPv4 and IPv6 mixed).
    pub src_nets: Vec<IpNet>,
    /// Index into [`FlatRuleset::ipsets`].
    pub src_ipset: Option<usize>,
    /// The policy the rule came from (chain names, explain).
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpSet {
    /// A valid ipset name (at most 31 characters).
    pub name: String,
    pub members: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatRuleset {
    pub rules: Vec<FlatRule>,
    /// What happens when no rule matches (Deny when any policy selects the endpoint).
    pub default: FlatAction,
    pub ipsets: Vec<IpSet>,
}
