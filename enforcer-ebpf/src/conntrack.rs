//! Conntrack: one `CONNTRACK` entry per (interface, flow), shared by both directions.
//!
//! Keys are canonical: `addr_a`/`port_a` is the lower (address, port) pair (addresses
//! compared as big-endian numbers, then ports), ports in host order, 0 for ICMP and
//! portless protocols. `CT_INITIATOR_A` records which side opened the flow, so a packet
//! knows whether it travels like the original packet (from the initiator) or against it.
//!
//! An entry is live while `now - last_seen_ns` stays within its state's timeout. A live entry
//! whose `generation` is the current policy generation allows the packet outright, before
//! the endpoint lookup ([`lookup`]); an older one is re-checked against the current tables in
//! the flow's original orientation ([`recheck`]).

use enforcer_common::{
    ACTION_ALLOW, CT_ICMP_TYPE_CODE_SHIFT, CT_INITIATOR_A, CT_SEEN_REPLY, CT_TCP_FIN, CT_TCP_RST,
    CT_TCP_SYN, CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, EndpointValue, REASON_ALLOW_CONNTRACK,
    REASON_DENY_NO_VERDICT, REASON_DENY_POLICY, REASON_RECHECK,
};

use crate::{
    Outcome, Snapshot, events,
    maps::{CONNTRACK, count},
    parse::{
        Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, TCP_ACK,
        TCP_FIN, TCP_RST, TCP_SYN,
    },
    policy::{self, Subject},
};

const SECOND_NS: u64 = 1_000_000_000;
/// TCP flow whose responder has not answered yet (Linux: SYN_SENT 120 s; shorter here so
/// scans and SYN floods leave the table quickly).
pub(crate) const CT_TIMEOUT_TCP_SYN_NS: u64 = 30 * SECOND_NS;
/// TCP flow that has seen traffic both ways (Linux: 5 days; an idle hour is plenty for a
/// datapath that re-checks policy, and keepalives refresh it).
pub(crate) const CT_TIMEOUT_TCP_ESTABLISHED_NS: u64 = 3_600 * SECOND_NS;
/// TCP flow after a FIN or RST from either side.
pub(crate) const CT_TIMEOUT_TCP_CLOSING_NS: u64 = 10 * SECOND_NS;
/// UDP and UDPLite (Linux: 30 s unreplied, 120 s streams).
pub(crate) const CT_TIMEOUT_UDP_NS: u64 = 60 * SECOND_NS;
/// ICMP and ICMPv6.
pub(crate) const CT_TIMEOUT_ICMP_NS: u64 = 30 * SECOND_NS;
/// Every other protocol.
pub(crate) const CT_TIMEOUT_OTHER_NS: u64 = 60 * SECOND_NS;

/// A packet's conntrack key, and whether its source is the key's `a` side.
pub(crate) struct CtRef {
    pub key: CtKey,
    pub src_is_a: bool,
}

/// The canonical key of `flow` on `ifindex`.
#[inline(always)]
pub(crate) fn key(ifindex: u32, flow: &Flow) -> CtRef {
    let src_is_a = !is_lower(&flow.dst, flow.dst_port, &flow.src, flow.src_port);
    let (addr_a, port_a, addr_b, port_b) = if src_is_a {
        (flow.src, flow.src_port, flow.dst, flow.dst_port)
    } else {
        (flow.dst, flow.dst_port, flow.src, flow.src_port)
    };
    CtRef {
        key: CtKey {
            ifindex,
            protocol: flow.protocol,
            family: flow.family,
            _pad: [0; 2],
            addr_a,
            addr_b,
            port_a,
            port_b,
        },
        src_is_a,
    }
}

/// `(x, x_port) < (y, y_port)`, addresses compared as big-endian numbers. Two u64 halves:
/// array comparisons would call `memcmp`, which BPF does not have.
#[inline(always)]
fn is_lower(x: &[u8; 16], x_port: u16, y: &[u8; 16], y_port: u16) -> bool {
    let (x_hi, x_lo) = halves(x);
    let (y_hi, y_lo) = halves(y);
    if x_hi != y_hi {
        return x_hi < y_hi;
    }
    if x_lo != y_lo {
        return x_lo < y_lo;
    }
    x_port < y_port
}

#[inline(always)]
fn halves(addr: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&addr[..8]);
    lo.copy_from_slice(&addr[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

/// How long an idle entry in this state lives.
#[inline(always)]
fn timeout(protocol: u8, flags: u32) -> u64 {
    match protocol {
        IPPROTO_TCP => {
            if flags & (CT_TCP_FIN | CT_TCP_RST) != 0 {
                CT_TIMEOUT_TCP_CLOSING_NS
            } else if flags & CT_SEEN_REPLY != 0 {
                CT_TIMEOUT_TCP_ESTABLISHED_NS
            } else {
                CT_TIMEOUT_TCP_SYN_NS
            }
        }
        IPPROTO_UDP | IPPROTO_UDPLITE => CT_TIMEOUT_UDP_NS,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => CT_TIMEOUT_ICMP_NS,
        _ => CT_TIMEOUT_OTHER_NS,
    }
}

/// State bits this packet adds to its flow's entry.
#[inline(always)]
pub(crate) fn packet_bits(flow: &Flow, from_initiator: bool) -> u32 {
    let mut bits = if from_initiator { 0 } else { CT_SEEN_REPLY };
    if flow.protocol == IPPROTO_TCP {
        let tcp = flow.tcp_flags;
        if from_initiator && tcp & TCP_SYN != 0 {
            bits |= CT_TCP_SYN;
        }
        if tcp & TCP_FIN != 0 {
            bits |= CT_TCP_FIN;
        }
        if tcp & TCP_RST != 0 {
            bits |= CT_TCP_RST;
        }
    }
    bits
}

/// The flags of a new entry for a flow `flow` opens.
#[inline(always)]
pub(crate) fn new_entry_flags(flow: &Flow, src_is_a: bool) -> u32 {
    let mut flags = packet_bits(flow, true);
    if src_is_a {
        flags |= CT_INITIATOR_A;
    }
    if flow.is_icmp() {
        flags |= u32::from(flow.policy_port) << CT_ICMP_TYPE_CODE_SHIFT;
    }
    flags
}

/// What conntrack knows about a packet's flow ([`lookup`]).
pub(crate) enum Lookup {
    /// A live entry of the current generation: the packet is allowed (the entry's
    /// `last_seen_ns` and state bits are already updated). Needs no endpoint and no policy.
    Allowed,
    /// A live entry of an older generation: the flow must be judged again ([`recheck`]).
    Stale(Stale),
    /// No entry, an expired one, or a TCP SYN reopening a closed flow's tuple: a new flow.
    New,
}

/// A live entry from an older policy generation, as [`lookup`] found it.
pub(crate) struct Stale {
    entry: *mut CtValue,
    from_initiator: bool,
    /// The entry's flags before this packet.
    old_flags: u32,
    /// The entry's flags with this packet's state bits added.
    flags: u32,
}

/// Looks the packet's flow up. One `CONNTRACK` lookup; a live entry of the current
/// generation is refreshed and allows the packet at once.
#[inline(always)]
pub(crate) fn lookup(config: &Snapshot, flow: &Flow, ct: &CtRef, now: u64) -> Lookup {
    let Some(entry) = CONNTRACK.get_ptr_mut(ct.key) else {
        return Lookup::New;
    };
    // SAFETY: a successful lookup returns a pointer to the live element (RCU-protected for
    // the program's run); we copy it, and write back single fields.
    let old = unsafe { *entry };
    if now.saturating_sub(old.last_seen_ns) > timeout(flow.protocol, old.flags) {
        return Lookup::New;
    }
    if flow.protocol == IPPROTO_TCP
        && old.flags & (CT_TCP_FIN | CT_TCP_RST) != 0
        && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    {
        return Lookup::New;
    }
    let from_initiator = ct.src_is_a == (old.flags & CT_INITIATOR_A != 0);
    if flow.is_icmp() {
        let opened_by = (old.flags >> CT_ICMP_TYPE_CODE_SHIFT) as u16;
        let belongs = if from_initiator {
            flow.policy_port == opened_by
        } else {
            icmp_answers(flow.family, opened_by, flow.policy_port)
        };
        if !belongs {
            return Lookup::New;
        }
    }
    let flags = old.flags | packet_bits(flow, from_initiator);

    if old.generation == config.generation {
        // The clock is coarse: most packets of a busy flow see the same `now` and leave the
        // entry's cache line clean.
        // SAFETY: as above; racing writers on other CPUs can only lose a state bit, which
        // the flow's next packet sets again.
        unsafe {
            if now != old.last_seen_ns {
                (*entry).last_seen_ns = now;
            }
            if flags != old.flags {
                (*entry).flags = flags;
            }
        }
        return Lookup::Allowed;
    }
    Lookup::Stale(Stale {
        entry,
        from_initiator,
        old_flags: old.flags,
        flags,
    })
}

/// Judges a flow from an older policy generation again, in its original orientation: still
/// allowed → the entry moves to the current generation and the packet passes; now denied
/// (or no verdict state) → the entry is removed and the packet dropped.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "one inlined step of the datapath; the packet's context, passed as is"
)]
pub(crate) fn recheck(
    config: &Snapshot,
    endpoint: &EndpointValue,
    ifindex: u32,
    dir: u8,
    flow: &Flow,
    ct: &CtRef,
    stale: &Stale,
    now: u64,
) -> Outcome {
    count(REASON_RECHECK, dir);
    let subject = original(flow, stale.from_initiator, stale.old_flags, dir);
    let verdict = policy::judge(config, endpoint, &subject);
    if let Some(v) = &verdict
        && v.action == ACTION_ALLOW
    {
        let entry = stale.entry;
        // SAFETY: `entry` came from a successful `CONNTRACK` lookup in this run of the
        // program (RCU keeps the element alive until it ends); single-field writes.
        unsafe {
            (*entry).generation = config.generation;
            (*entry).rule_id = v.rule_id;
            (*entry).last_seen_ns = now;
            (*entry).flags = stale.flags;
        }
        if v.staged_action != v.action {
            events::report(ifindex, dir, &subject, verdict.as_ref(), now);
        }
        return Outcome::allow(REASON_ALLOW_CONNTRACK);
    }
    // Now denied (or no verdict state): cut the flow.
    let _ = CONNTRACK.remove(ct.key);
    events::report(ifindex, dir, &subject, verdict.as_ref(), now);
    Outcome::drop(if verdict.is_some() {
        REASON_DENY_POLICY
    } else {
        REASON_DENY_NO_VERDICT
    })
}

/// Whether an ICMP message from the responder (`answer`, `type << 8 | code`) answers the
/// initiator's `request`: the matching reply type, or an error message. Anything else from
/// the responder (its own echo request, say) is a new flow, judged by policy.
#[inline(always)]
fn icmp_answers(family: u8, request: u16, answer: u16) -> bool {
    let (request, answer) = ((request >> 8) as u8, (answer >> 8) as u8);
    if family == 4 {
        match answer {
            // Destination unreachable, source quench, redirect, time exceeded, parameter
            // problem.
            3 | 4 | 5 | 11 | 12 => true,
            // Echo, timestamp, information, address mask replies.
            0 => request == 8,
            14 => request == 13,
            16 => request == 15,
            18 => request == 17,
            _ => false,
        }
    } else {
        match answer {
            // Destination unreachable, packet too big, time exceeded, parameter problem.
            1..=4 => true,
            // Echo reply; router and neighbour advertisements.
            129 => request == 128,
            134 => request == 133,
            136 => request == 135,
            _ => false,
        }
    }
}

/// The flow's original packet (initiator → responder) as policy judged it. It crossed this
/// interface in this hook's direction if `flow` comes from the initiator, else in the other.
#[inline(always)]
fn original(flow: &Flow, from_initiator: bool, ct_flags: u32, dir: u8) -> Subject {
    let icmp_port = (ct_flags >> CT_ICMP_TYPE_CODE_SHIFT) as u16;
    if from_initiator {
        Subject {
            dir,
            family: flow.family,
            protocol: flow.protocol,
            src: flow.src,
            dst: flow.dst,
            src_port: flow.src_port,
            policy_port: if flow.is_icmp() {
                icmp_port
            } else {
                flow.dst_port
            },
        }
    } else {
        Subject {
            dir: if dir == DIR_INGRESS {
                DIR_EGRESS
            } else {
                DIR_INGRESS
            },
            family: flow.family,
            protocol: flow.protocol,
            src: flow.dst,
            dst: flow.src,
            src_port: flow.dst_port,
            policy_port: if flow.is_icmp() {
                icmp_port
            } else {
                flow.src_port
            },
        }
    }
}
