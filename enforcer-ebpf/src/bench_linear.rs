//! Benchmark-only: the linear-scan reference (`enforcer_bench_linear`). Never attached by the
//! agent; `enforcer-bench` loads it (with its maps sized by `EbpfLoader::map_max_entries`)
//! to compare Enforcer's class lookups with the way Calico's eBPF dataplane evaluates policy:
//! rules compiled to a straight chain, evaluated in order, first match wins.
//!
//! Per packet, judged as *ingress* to the endpoint (peer = source address, like
//! `enforcer_to_endpoint`):
//! 1. parse with the same [`parse::parse`] as Enforcer (non-IP, later fragments and ICMPv6
//!    neighbour discovery pass before policy, unparseable packets drop, as in Enforcer);
//! 2. conntrack: the packet's 5-tuple in `BENCH_LINEAR_CONNTRACK` (LRU hash); a hit refreshes
//!    the entry's timestamp and allows;
//! 3. otherwise scan the packet's family's chain in `BENCH_LINEAR_RULES` (`LinearConfig`) in
//!    order with the `bpf_loop` helper (the verifier checks the loop body once, so 100,000
//!    rules verify like 10); each entry is protocol (0 = any), a destination port range, and
//!    one peer match: an inline IPv4/IPv6 CIDR, an IP set (an LPM trie keyed by set id and
//!    address), or any;
//! 4. the first matching entry's action decides, else `LinearConfig::default_action`; an
//!    allowed packet inserts its conntrack entry.
//!
//! Every packet counts once in `BENCH_LINEAR_COUNTERS` (`LINEAR_COUNT_*`).

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, tcx_action_base::TCX_NEXT},
    cty::c_void,
    helpers::{bpf_ktime_get_coarse_ns, generated::bpf_loop},
    macros::{classifier, map},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use enforcer_common::{
    ACTION_ALLOW,
    bench::{
        LINEAR_COUNT_ALLOWED, LINEAR_COUNT_DENIED, LINEAR_COUNT_PASSED, LINEAR_COUNT_UNPARSEABLE,
        LINEAR_IPSET_FIXED_BITS, LINEAR_MAX_RULES, LINEAR_NUM_COUNTERS, LINEAR_PEER_ANY,
        LINEAR_PEER_IPSET, LINEAR_PEER_NET_V4, LINEAR_PEER_NET_V6, LinearConfig, LinearCtKey,
        LinearCtValue, LinearIpsetV4Data, LinearIpsetV6Data, LinearRule, maps, programs,
    },
};

use crate::parse::{self, Flow, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, Parsed};

/// `a == b`, usable in const assertions (map and program names against the contract).
pub(crate) const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = {
    assert!(str_eq("BENCH_LINEAR_CONFIG", maps::LINEAR_CONFIG));
    assert!(str_eq("BENCH_LINEAR_RULES", maps::LINEAR_RULES));
    assert!(str_eq("BENCH_LINEAR_IPSET_V4", maps::LINEAR_IPSET_V4));
    assert!(str_eq("BENCH_LINEAR_IPSET_V6", maps::LINEAR_IPSET_V6));
    assert!(str_eq("BENCH_LINEAR_CONNTRACK", maps::LINEAR_CONNTRACK));
    assert!(str_eq("BENCH_LINEAR_COUNTERS", maps::LINEAR_COUNTERS));
    assert!(str_eq("enforcer_bench_linear", programs::LINEAR));
};

/// One entry: the rule count and the default action.
#[map(name = "BENCH_LINEAR_CONFIG")]
static BENCH_LINEAR_CONFIG: Array<LinearConfig> = Array::with_max_entries(1, 0);

/// The chain, in evaluation order. Declared with 1 entry (nothing to pay when the production
/// object loads); `enforcer-bench` sizes it.
#[map(name = "BENCH_LINEAR_RULES")]
static BENCH_LINEAR_RULES: Array<LinearRule> = Array::with_max_entries(1, 0);

/// `set id BE ++ IPv4 address` → 1.
#[map(name = "BENCH_LINEAR_IPSET_V4")]
static BENCH_LINEAR_IPSET_V4: LpmTrie<LinearIpsetV4Data, u32> = LpmTrie::with_max_entries(1, 0);

/// `set id BE ++ IPv6 address` → 1.
#[map(name = "BENCH_LINEAR_IPSET_V6")]
static BENCH_LINEAR_IPSET_V6: LpmTrie<LinearIpsetV6Data, u32> = LpmTrie::with_max_entries(1, 0);

/// Allowed flows.
#[map(name = "BENCH_LINEAR_CONNTRACK")]
static BENCH_LINEAR_CONNTRACK: LruHashMap<LinearCtKey, LinearCtValue> =
    LruHashMap::with_max_entries(1, 0);

/// `LINEAR_COUNT_*` → packets.
#[map(name = "BENCH_LINEAR_COUNTERS")]
static BENCH_LINEAR_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(LINEAR_NUM_COUNTERS, 0);

const IPSET_V4_KEY_BITS: u32 = LINEAR_IPSET_FIXED_BITS + 32;
const IPSET_V6_KEY_BITS: u32 = LINEAR_IPSET_FIXED_BITS + 128;
/// `bpf_loop` callback: go on / stop.
const LOOP_CONTINUE: i64 = 0;
const LOOP_STOP: i64 = 1;
/// `Scan::matched` before any rule matched.
const NO_MATCH: u32 = u32::MAX;

/// A 16-byte address as two little-endian `u64`s (the representation of
/// `LinearRule::net`/`mask`).
#[inline(always)]
pub(crate) fn halves(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// The packet as the scan sees it, and its result; lives on the program's stack and is
/// handed to every `bpf_loop` iteration.
#[repr(C)]
struct Scan {
    src_hi: u64,
    src_lo: u64,
    src: [u8; 16],
    /// `LINEAR_PEER_NET_V4` or `LINEAR_PEER_NET_V6`: the only net kind this packet can match.
    net_kind: u32,
    protocol: u32,
    dst_port: u32,
    /// 1 when the protocol has ports.
    has_ports: u32,
    /// Index of the chain's first entry in `BENCH_LINEAR_RULES`.
    start: u32,
    /// Index of the first matching rule, or `NO_MATCH`.
    matched: u32,
    action: u32,
}

#[classifier]
pub fn enforcer_bench_linear(ctx: TcContext) -> i32 {
    let (counter, verdict) = judge(&ctx);
    if let Some(slot) = BENCH_LINEAR_COUNTERS.get_ptr_mut(counter) {
        // SAFETY: this CPU's slot, from a successful lookup; a tc program is not re-entered
        // on one CPU.
        unsafe { *slot = (*slot).wrapping_add(1) };
    }
    verdict
}

/// The packet's counter and tc verdict.
#[inline(always)]
fn judge(ctx: &TcContext) -> (u32, i32) {
    let flow = match parse::parse(ctx) {
        Ok(Parsed::Flow(flow)) => flow,
        Ok(Parsed::NonIp) | Ok(Parsed::LaterFragment) => return (LINEAR_COUNT_PASSED, TCX_NEXT),
        Err(parse::Unparseable) => return (LINEAR_COUNT_UNPARSEABLE, TC_ACT_SHOT),
    };
    if crate::is_icmpv6_nd(&flow) {
        return (LINEAR_COUNT_PASSED, TCX_NEXT);
    }

    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let key = LinearCtKey {
        family: flow.family,
        protocol: flow.protocol,
        _pad: [0; 2],
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        src: flow.src,
        dst: flow.dst,
    };
    if let Some(entry) = BENCH_LINEAR_CONNTRACK.get_ptr_mut(key) {
        // SAFETY: a live element of this map from a successful lookup; a racing writer can
        // only store another timestamp.
        unsafe { (*entry).last_seen_ns = now };
        return (LINEAR_COUNT_ALLOWED, TCX_NEXT);
    }

    let (start, rules, default_action) = match BENCH_LINEAR_CONFIG.get(0) {
        Some(c) if flow.family == 4 => (0, c.v4_rules, c.default_action),
        Some(c) => (c.v4_rules, c.v6_rules, c.default_action),
        // Index 0 of a 1-entry array always exists; an empty chain denies.
        None => (0, 0, 0),
    };
    let rule = scan(&flow, start, rules);
    let (matched, action) = match rule {
        Some(found) => found,
        None => (NO_MATCH, u32::from(default_action)),
    };
    if action != u32::from(ACTION_ALLOW) {
        return (LINEAR_COUNT_DENIED, TC_ACT_SHOT);
    }
    let value = LinearCtValue {
        last_seen_ns: now,
        rule: matched,
        _pad: 0,
    };
    // A full LRU evicts; an insert failure only costs the next packet another scan.
    let _ = BENCH_LINEAR_CONNTRACK.insert(key, value, 0);
    (LINEAR_COUNT_ALLOWED, TCX_NEXT)
}

/// The first of the `rules` entries from index `start` that matches `flow`: (index, action).
#[inline(always)]
fn scan(flow: &Flow, start: u32, rules: u32) -> Option<(u32, u32)> {
    let (src_hi, src_lo) = halves(&flow.src);
    let has_ports = matches!(
        flow.protocol,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP
    );
    let mut state = Scan {
        src_hi,
        src_lo,
        src: flow.src,
        net_kind: if flow.family == 4 {
            u32::from(LINEAR_PEER_NET_V4)
        } else {
            u32::from(LINEAR_PEER_NET_V6)
        },
        protocol: u32::from(flow.protocol),
        dst_port: u32::from(flow.dst_port),
        has_ports: u32::from(has_ports),
        start,
        matched: NO_MATCH,
        action: 0,
    };
    let n = if rules > LINEAR_MAX_RULES {
        LINEAR_MAX_RULES
    } else {
        rules
    };
    if n == 0 {
        return None;
    }
    let step: extern "C" fn(u64, *mut c_void) -> i64 = scan_step;
    // SAFETY: `step` is a static BPF subprogram with the callback signature bpf_loop wants;
    // `state` outlives the call (bpf_loop runs synchronously).
    unsafe {
        bpf_loop(
            n,
            step as *mut c_void,
            core::ptr::addr_of_mut!(state).cast::<c_void>(),
            0,
        );
    }
    if state.matched == NO_MATCH {
        None
    } else {
        Some((state.matched, state.action))
    }
}

/// One `bpf_loop` iteration: rule `index` against the packet in `ctx` (a `Scan`).
#[inline(never)]
extern "C" fn scan_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer `scan` gave it: the caller's live `Scan`.
    let state = unsafe { &mut *ctx.cast::<Scan>() };
    let at = state.start.wrapping_add(index as u32);
    let Some(rule) = BENCH_LINEAR_RULES.get_ptr(at) else {
        return LOOP_STOP;
    };
    // SAFETY: a successful array lookup points at a live element.
    let rule = unsafe { &*rule };
    if rule_matches(rule, state) {
        state.matched = at;
        state.action = u32::from(rule.action);
        return LOOP_STOP;
    }
    LOOP_CONTINUE
}

#[inline(always)]
fn rule_matches(rule: &LinearRule, s: &Scan) -> bool {
    if rule.protocol != 0 && u32::from(rule.protocol) != s.protocol {
        return false;
    }
    if rule.has_ports != 0
        && (s.has_ports == 0
            || s.dst_port < u32::from(rule.port_lo)
            || s.dst_port > u32::from(rule.port_hi))
    {
        return false;
    }
    match rule.peer {
        LINEAR_PEER_ANY => true,
        LINEAR_PEER_NET_V4 | LINEAR_PEER_NET_V6 => {
            u32::from(rule.peer) == s.net_kind
                && s.src_hi & rule.mask[0] == rule.net[0]
                && s.src_lo & rule.mask[1] == rule.net[1]
        }
        LINEAR_PEER_IPSET => in_ipset(rule.ipset, s),
        _ => false,
    }
}

#[inline(always)]
fn in_ipset(set: u32, s: &Scan) -> bool {
    let id = set.to_be_bytes();
    if s.net_kind == u32::from(LINEAR_PEER_NET_V4) {
        let data: LinearIpsetV4Data = [
            id[0], id[1], id[2], id[3], s.src[0], s.src[1], s.src[2], s.src[3],
        ];
        BENCH_LINEAR_IPSET_V4
            .get(Key::new(IPSET_V4_KEY_BITS, data))
            .is_some()
    } else {
        let mut data: LinearIpsetV6Data = [0; 20];
        data[..4].copy_from_slice(&id);
        data[4..].copy_from_slice(&s.src);
        BENCH_LINEAR_IPSET_V6
            .get(Key::new(IPSET_V6_KEY_BITS, data))
            .is_some()
    }
}
