//! New-flow judgment: the class lookups of the contract (`enforcer_common` module docs).
//!
//! 1. peer address → peer class (`PEER_V4`/`PEER_V6`, key `slot BE ++ address`, prefix
//!    length 32 + address bits);
//! 2. (protocol, destination port) → destination port class (`PORTS`, key
//!    `slot BE ++ PORT_KIND_DST ++ protocol ++ port BE`, prefix length 64); with
//!    `CONFIG_SRC_PORTS` the source port likewise under `PORT_KIND_SRC`, else class 0;
//!    `port_class = dst_class << 16 | src_class`;
//! 3. `VERDICTS` exact, then the row default `(set, peer, ANY)`, then the set default
//!    `(set, ANY, ANY)`.
//!
//! A `PORTS` miss is class `PORT_CLASS_ON_MISS` (0): the protocols and ports no rule names,
//! for which the compiler installs no prefix. A `PEER_*` miss means "no tables for this
//! slot" (userspace installs a catch-all peer prefix, length 32 = the slot alone, for every
//! slot it fills): like a `VERDICTS` miss it denies the flow (`REASON_DENY_NO_VERDICT`, fail
//! closed). An empty slot is caught either way: it has no verdicts.

use aya_ebpf::maps::lpm_trie::Key;
use enforcer_common::{
    ACTION_ALLOW, ANY, CONFIG_SRC_PORTS, CtValue, DIR_INGRESS, EndpointValue, MAX_RULE_COUNTERS,
    PEER_KEY_FIXED_BITS, PORT_CLASS_ON_MISS, PORT_KIND_DST, PORT_KIND_SRC, PeerV4Data, PeerV6Data,
    PortData, REASON_ALLOW_POLICY, REASON_CT_FULL, REASON_DENY_NO_VERDICT, REASON_DENY_POLICY,
    VerdictKey, VerdictValue,
};

use crate::{
    Outcome, Snapshot,
    conntrack::{self, CtRef},
    events,
    maps::{
        CONNTRACK, PEER_V4, PEER_V6, PORTS, RULE_COUNTERS, STAGED_COUNTERS, VERDICTS, bump, count,
    },
    parse::Flow,
};

/// Full prefix length of a `PORTS` key: slot, kind, protocol and the 16 port bits.
const PORT_KEY_BITS: u32 = 64;
const PEER_V4_KEY_BITS: u32 = PEER_KEY_FIXED_BITS + 32;
const PEER_V6_KEY_BITS: u32 = PEER_KEY_FIXED_BITS + 128;

/// A packet as policy judges it: the flow's original orientation and direction.
#[derive(Clone, Copy)]
pub(crate) struct Subject {
    /// Policy direction (`DIR_INGRESS`: into the endpoint).
    pub dir: u8,
    pub family: u8,
    pub protocol: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    /// Destination port, or ICMP `type << 8 | code`.
    pub policy_port: u16,
}

impl Subject {
    #[inline(always)]
    fn of(flow: &Flow, dir: u8) -> Self {
        Self {
            dir,
            family: flow.family,
            protocol: flow.protocol,
            src: flow.src,
            dst: flow.dst,
            src_port: flow.src_port,
            policy_port: flow.policy_port,
        }
    }
}

/// The verdict the current tables give `subject`; `None` when a lookup found no state.
#[inline(always)]
pub(crate) fn judge(
    config: &Snapshot,
    endpoint: &EndpointValue,
    subject: &Subject,
) -> Option<VerdictValue> {
    let slot = config.slot;
    let (set, peer) = if subject.dir == DIR_INGRESS {
        (endpoint.ingress_set, &subject.src)
    } else {
        (endpoint.egress_set, &subject.dst)
    };
    let peer_class = peer_class(slot, subject.family, peer)?;
    let dst_class = port_class(slot, PORT_KIND_DST, subject.protocol, subject.policy_port);
    let src_class = if config.flags & CONFIG_SRC_PORTS != 0 {
        port_class(slot, PORT_KIND_SRC, subject.protocol, subject.src_port)
    } else {
        PORT_CLASS_ON_MISS
    };
    let port_class = (dst_class << 16) | (src_class & 0xffff);
    verdict(slot, set, peer_class, port_class)
}

#[inline(always)]
fn peer_class(slot: u32, family: u8, addr: &[u8; 16]) -> Option<u32> {
    let slot = slot.to_be_bytes();
    let class = if family == 4 {
        let mut data: PeerV4Data = [0; 8];
        data[..4].copy_from_slice(&slot);
        data[4..].copy_from_slice(&addr[..4]);
        PEER_V4.get(Key::new(PEER_V4_KEY_BITS, data))
    } else {
        let mut data: PeerV6Data = [0; 20];
        data[..4].copy_from_slice(&slot);
        data[4..].copy_from_slice(addr);
        PEER_V6.get(Key::new(PEER_V6_KEY_BITS, data))
    };
    class.copied()
}

#[inline(always)]
fn port_class(slot: u32, kind: u8, protocol: u8, port: u16) -> u32 {
    let slot = slot.to_be_bytes();
    let port = port.to_be_bytes();
    let data: PortData = [
        slot[0], slot[1], slot[2], slot[3], kind, protocol, port[0], port[1],
    ];
    PORTS
        .get(Key::new(PORT_KEY_BITS, data))
        .copied()
        .unwrap_or(PORT_CLASS_ON_MISS)
}

#[inline(always)]
fn verdict(slot: u32, set: u32, peer_class: u32, port_class: u32) -> Option<VerdictValue> {
    let mut key = VerdictKey {
        slot,
        set,
        peer_class,
        port_class,
    };
    if let Some(v) = lookup_verdict(&key) {
        return Some(v);
    }
    key.port_class = ANY;
    if let Some(v) = lookup_verdict(&key) {
        return Some(v);
    }
    key.peer_class = ANY;
    lookup_verdict(&key)
}

#[inline(always)]
fn lookup_verdict(key: &VerdictKey) -> Option<VerdictValue> {
    // SAFETY: a successful lookup points at a live element (NO_PREALLOC: RCU-protected);
    // we copy it out at once.
    VERDICTS.get_ptr(key).map(|v| unsafe { *v })
}

/// Judges a flow conntrack does not know, and remembers it if allowed.
#[inline(always)]
pub(crate) fn new_flow(
    config: &Snapshot,
    endpoint: &EndpointValue,
    ifindex: u32,
    dir: u8,
    flow: &Flow,
    ct: &CtRef,
    now: u64,
) -> Outcome {
    let subject = Subject::of(flow, dir);
    let Some(v) = judge(config, endpoint, &subject) else {
        events::report(ifindex, dir, &subject, None, now);
        return Outcome::drop(REASON_DENY_NO_VERDICT);
    };
    if v.rule_id < MAX_RULE_COUNTERS {
        bump(&RULE_COUNTERS, v.rule_id);
    }
    if v.staged_rule_id < MAX_RULE_COUNTERS {
        bump(&STAGED_COUNTERS, v.staged_rule_id);
    }
    if v.action != ACTION_ALLOW {
        // ACTION_DENY, or an action this datapath does not know: fail closed.
        events::report(ifindex, dir, &subject, Some(&v), now);
        return Outcome::drop(REASON_DENY_POLICY);
    }
    let entry = CtValue {
        created_ns: now,
        last_seen_ns: now,
        generation: config.generation,
        rule_id: v.rule_id,
        flags: conntrack::new_entry_flags(flow, ct.src_is_a),
        _pad: 0,
    };
    if CONNTRACK.insert(ct.key, entry, 0).is_err() {
        // Allowed anyway: the flow's next packet is judged again.
        count(REASON_CT_FULL, dir);
    }
    if v.staged_action != v.action {
        events::report(ifindex, dir, &subject, Some(&v), now);
    }
    Outcome::allow(REASON_ALLOW_POLICY)
}
