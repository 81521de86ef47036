//! Enforcer's TC datapath: one pair of programs for every endpoint.
//!
//! * `enforcer_from_endpoint` runs at tc ingress of an endpoint's host-side interface: the
//!   packets leaving the endpoint, judged by its egress policy (`DIR_EGRESS`).
//! * `enforcer_to_endpoint` runs at tc egress of that interface: the packets entering the
//!   endpoint, judged by its ingress policy (`DIR_INGRESS`).
//!
//! Per packet ([`decide`]): read `CONFIG[0]` once, parse the headers ([`parse`]), look the
//! flow up in conntrack ([`conntrack`]): a live flow of the current generation passes there;
//! otherwise find the endpoint by `(slot, ifindex)` and re-check the flow or, for a new flow,
//! run the class lookups of the contract in `enforcer_common` ([`policy`]). Every packet
//! counts exactly one final reason in `VERDICT_COUNTERS`; side events (re-check, conntrack
//! full, event dropped) count on top. Allowed packets return `TCX_NEXT` (the next tcx program
//! or the stack decides), denied ones `TC_ACT_SHOT`. `docs/datapath-kernel.md` has the rules,
//! fail modes and timeouts.
//!
//! Built for `bpfel-unknown-none` by enforcer-user's build.rs; on the host it compiles to an
//! empty `main` so `cargo clippy --workspace` covers it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(
    not(target_arch = "bpf"),
    allow(dead_code, reason = "the host build only type-checks the datapath")
)]

mod bench_floor;
mod bench_gen;
mod bench_linear;
mod conntrack;
mod events;
mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, tcx_action_base::TCX_NEXT},
    macros::classifier,
    programs::TcContext,
};
use enforcer_common::{
    CONFIG_FAIL_CLOSED, Config, DIR_EGRESS, DIR_INGRESS, EndpointKey, EndpointValue,
    REASON_ALLOW_CONNTRACK, REASON_DENY_NO_ENDPOINT, REASON_DENY_UNPARSEABLE, REASON_PASS_FRAGMENT,
    REASON_PASS_ICMPV6_ND, REASON_PASS_NO_ENDPOINT, REASON_PASS_NON_IP,
};

use crate::{
    maps::{CONFIG, ENDPOINTS, coarse_now, count},
    parse::Parsed,
};

/// Let the packet continue: the next tcx program (or the legacy tc chain, or the stack)
/// decides; with nothing after us it passes. Numerically `TC_ACT_UNSPEC`.
pub(crate) const VERDICT_ALLOW: i32 = TCX_NEXT;
/// Drop the packet.
pub(crate) const VERDICT_DROP: i32 = TC_ACT_SHOT;

/// A packet's fate: the tc return code and the final reason counted for it.
#[derive(Clone, Copy)]
pub(crate) struct Outcome {
    pub verdict: i32,
    pub reason: u32,
}

impl Outcome {
    pub(crate) const fn allow(reason: u32) -> Self {
        Self {
            verdict: VERDICT_ALLOW,
            reason,
        }
    }

    pub(crate) const fn drop(reason: u32) -> Self {
        Self {
            verdict: VERDICT_DROP,
            reason,
        }
    }
}

/// What happens to non-first fragments (IPv4 fragment offset != 0, or an IPv6 fragment
/// header with a nonzero offset). They carry no transport header, so no ports to judge.
/// The first fragment carries the ports and is judged like any packet; a receiver cannot
/// reassemble a datagram whose first fragment was dropped, so passing the rest lets nothing
/// through that policy denied. Change this one constant to drop them instead.
pub(crate) const NON_FIRST_FRAGMENT: Outcome = Outcome::allow(REASON_PASS_FRAGMENT);

/// Frames that are not IPv4/IPv6 (ARP, LLDP, VLAN-tagged frames in the payload...): policy
/// is about IP, and ARP must work for IP to work.
pub(crate) const NON_IP: Outcome = Outcome::allow(REASON_PASS_NON_IP);

/// ICMPv6 neighbour discovery and multicast listener messages (types 130-133, 135, 136):
/// passed before policy, as Felix's `ICMPv6Filter` does (`felix/rules/static.go`): without
/// them a pod behind a default-deny policy loses IPv6 altogether.
pub(crate) const ICMPV6_ND: Outcome = Outcome::allow(REASON_PASS_ICMPV6_ND);

/// Whether an ICMPv6 `type << 8 | code` is neighbour discovery or MLD.
#[inline(always)]
fn is_icmpv6_nd(flow: &parse::Flow) -> bool {
    flow.family == 6 && flow.is_icmp() && matches!(flow.policy_port >> 8, 130..=133 | 135 | 136)
}

/// Truncated or malformed IP packets: dropped, never guessed at.
pub(crate) const UNPARSEABLE: Outcome = Outcome::drop(REASON_DENY_UNPARSEABLE);

/// `CONFIG[0]` as one packet sees it.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot {
    pub slot: u32,
    pub generation: u32,
    pub flags: u32,
}

#[classifier]
pub fn enforcer_from_endpoint(ctx: TcContext) -> i32 {
    handle(&ctx, DIR_EGRESS)
}

#[classifier]
pub fn enforcer_to_endpoint(ctx: TcContext) -> i32 {
    handle(&ctx, DIR_INGRESS)
}

#[inline(always)]
fn handle(ctx: &TcContext, dir: u8) -> i32 {
    let outcome = decide(ctx, dir);
    count(outcome.reason, dir);
    outcome.verdict
}

/// The packet's fate. The order is chosen for the common case: an established flow of the
/// current policy generation is allowed after the parse and ONE conntrack lookup, without the
/// `ENDPOINTS` lookup: such an entry was created (or re-checked) under this generation, whose
/// tables held the endpoint (every endpoint change is a new generation). Everything else
/// looks the endpoint up first and keeps the rule that an interface missing from `ENDPOINTS`
/// gets the fail-mode answer whatever its packets hold (see docs/datapath-kernel.md).
#[inline(always)]
fn decide(ctx: &TcContext, dir: u8) -> Outcome {
    let config = read_config();
    // SAFETY: `skb` is the context pointer the kernel passed in; `ifindex` is a readable
    // `__sk_buff` field for tc programs.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };

    let flow = match parse::parse(ctx) {
        Ok(Parsed::Flow(flow)) if !is_icmpv6_nd(&flow) => flow,
        other => {
            if endpoint(config.slot, ifindex).is_none() {
                return no_endpoint(&config);
            }
            return match other {
                Ok(Parsed::Flow(_)) => ICMPV6_ND,
                Ok(Parsed::NonIp) => NON_IP,
                Ok(Parsed::LaterFragment) => NON_FIRST_FRAGMENT,
                Err(parse::Unparseable) => UNPARSEABLE,
            };
        }
    };

    // CLOCK_MONOTONIC at jiffy resolution: plenty for timeouts of seconds and event
    // timestamps, and cheaper than `bpf_ktime_get_ns` (no clocksource read); cached per CPU
    // for the jiffy.
    let now = coarse_now();
    let ct = conntrack::key(ifindex, &flow);
    let found = conntrack::lookup(&config, &flow, &ct, now);
    if let conntrack::Lookup::Allowed = found {
        return Outcome::allow(REASON_ALLOW_CONNTRACK);
    }
    let Some(endpoint) = endpoint(config.slot, ifindex) else {
        return no_endpoint(&config);
    };
    match found {
        conntrack::Lookup::Stale(stale) => {
            conntrack::recheck(&config, &endpoint, ifindex, dir, &flow, &ct, &stale, now)
        }
        _ => policy::new_flow(&config, &endpoint, ifindex, dir, &flow, &ct, now),
    }
}

/// An interface missing from `ENDPOINTS` (active slot): pass, or drop with
/// `CONFIG_FAIL_CLOSED`.
#[inline(always)]
fn no_endpoint(config: &Snapshot) -> Outcome {
    if config.flags & CONFIG_FAIL_CLOSED != 0 {
        Outcome::drop(REASON_DENY_NO_ENDPOINT)
    } else {
        Outcome::allow(REASON_PASS_NO_ENDPOINT)
    }
}

/// Reads `CONFIG[0]`. `active_slot` and `generation` come from one 8-byte load so a packet
/// never pairs a slot with another write's generation when the kernel copies the value in
/// 8-byte words (see docs/datapath-kernel.md for the two-write flip that makes this safe
/// whatever the copy width).
#[inline(always)]
fn read_config() -> Snapshot {
    match CONFIG.get_ptr(0) {
        Some(config) => {
            // SAFETY: array map values are 8-byte aligned and `Config` is 16 bytes;
            // `active_slot` (offset 0) and `generation` (offset 4) share the first u64,
            // little-endian on bpfel.
            let (head, flags) = unsafe {
                (
                    core::ptr::read_volatile(config.cast::<u64>()),
                    core::ptr::read_volatile(core::ptr::addr_of!((*config).flags)),
                )
            };
            Snapshot {
                slot: head as u32,
                generation: (head >> 32) as u32,
                flags,
            }
        }
        // Index 0 of a 1-entry array always exists; keep a defined answer anyway.
        None => Snapshot {
            slot: 0,
            generation: 0,
            flags: 0,
        },
    }
}

const _: () = {
    assert!(core::mem::offset_of!(Config, active_slot) == 0);
    assert!(core::mem::offset_of!(Config, generation) == 4);
};

#[inline(always)]
fn endpoint(slot: u32, ifindex: u32) -> Option<EndpointValue> {
    let key = EndpointKey { slot, ifindex };
    // SAFETY: a successful lookup returns a pointer to a live value of the map's value
    // type; we copy it out at once (NO_PREALLOC hash: the element is RCU-protected).
    ENDPOINTS.get_ptr(key).map(|value| unsafe { *value })
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// Needed by GPL-only helpers; the crate itself is MIT OR Apache-2.0.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
