//! The maps of the contract (`enforcer_common::maps`), and the counter helpers.
//!
//! aya-ebpf's `#[map(name = "...")]` sets the ELF symbol (the name userspace looks up) and
//! takes a string literal only, so each map names its literal once and a const assertion
//! proves it equals the contract's constant.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    Config, CtKey, CtValue, EVENTS_RING_BYTES, EndpointKey, EndpointValue, EventLimit,
    MAX_CONNTRACK, MAX_ENDPOINTS, MAX_PEER_PREFIXES, MAX_PORT_PREFIXES, MAX_RULE_COUNTERS,
    MAX_VERDICTS, NUM_REASONS, PeerV4Data, PeerV6Data, PortData, VerdictKey, VerdictValue, maps,
};

/// `a == b`, usable in const assertions.
const fn str_eq(a: &str, b: &str) -> bool {
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

/// Declares a map under its contract name, checked at compile time.
macro_rules! contract_map {
    ($(#[$meta:meta])* $name:literal = $contract:path; static $ident:ident: $ty:ty = $init:expr;) => {
        const _: () = assert!(
            str_eq($name, $contract),
            concat!("map name ", $name, " differs from enforcer_common::maps")
        );
        $(#[$meta])*
        #[map(name = $name)]
        pub(crate) static $ident: $ty = $init;
    };
}

contract_map! {
    /// One entry: active slot, generation, flags.
    "ENFORCER_CONFIG" = maps::CONFIG;
    static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
}

contract_map! {
    /// `(slot, ifindex)` → the endpoint's policy sets.
    "ENFORCER_ENDPOINTS" = maps::ENDPOINTS;
    static ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
        HashMap::with_max_entries(MAX_ENDPOINTS, BPF_F_NO_PREALLOC);
}

contract_map! {
    /// `slot ++ IPv4 address` → peer class. (LpmTrie adds BPF_F_NO_PREALLOC itself.)
    "ENFORCER_PEER_V4" = maps::PEER_V4;
    static PEER_V4: LpmTrie<PeerV4Data, u32> =
        LpmTrie::with_max_entries(MAX_PEER_PREFIXES, BPF_F_NO_PREALLOC);
}

contract_map! {
    /// `slot ++ IPv6 address` → peer class.
    "ENFORCER_PEER_V6" = maps::PEER_V6;
    static PEER_V6: LpmTrie<PeerV6Data, u32> =
        LpmTrie::with_max_entries(MAX_PEER_PREFIXES, BPF_F_NO_PREALLOC);
}

contract_map! {
    /// `slot ++ kind ++ protocol ++ port` → port class.
    "ENFORCER_PORTS" = maps::PORTS;
    static PORTS: LpmTrie<PortData, u32> =
        LpmTrie::with_max_entries(MAX_PORT_PREFIXES, BPF_F_NO_PREALLOC);
}

contract_map! {
    /// `(slot, set, peer class, port class)` → verdict (with row and set defaults).
    "ENFORCER_VERDICTS" = maps::VERDICTS;
    static VERDICTS: HashMap<VerdictKey, VerdictValue> =
        HashMap::with_max_entries(MAX_VERDICTS, BPF_F_NO_PREALLOC);
}

contract_map! {
    /// Established flows; LRU so a full table evicts the stalest flow instead of failing.
    "ENFORCER_CONNTRACK" = maps::CONNTRACK;
    static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(MAX_CONNTRACK, 0);
}

contract_map! {
    /// `reason * 2 + direction` → packets.
    "ENFORCER_VERDICT_COUNTERS" = maps::VERDICT_COUNTERS;
    static VERDICT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_REASONS * 2, 0);
}

contract_map! {
    /// Rule id → new flows it decided.
    "ENFORCER_RULE_COUNTERS" = maps::RULE_COUNTERS;
    static RULE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_RULE_COUNTERS, 0);
}

contract_map! {
    /// Staged rule id → new flows the staged view decided by it.
    "ENFORCER_STAGED_COUNTERS" = maps::STAGED_COUNTERS;
    static STAGED_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_RULE_COUNTERS, 0);
}

contract_map! {
    /// `FlowEvent`s.
    "ENFORCER_EVENTS" = maps::EVENTS;
    static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);
}

contract_map! {
    /// Per-CPU event rate limiter.
    "ENFORCER_EVENT_LIMIT" = maps::EVENT_LIMIT;
    static EVENT_LIMIT: PerCpuArray<EventLimit> = PerCpuArray::with_max_entries(1, 0);
}

/// This CPU's last reading of the coarse clock and the jiffies value it was taken at.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ClockCache {
    jiffies: u64,
    now_ns: u64,
}

/// Private to the object (not in the contract, not pinned, never read by userspace): a
/// per-CPU cache for [`coarse_now`].
#[map(name = "ENFORCER_CLOCK_CACHE")]
static CLOCK_CACHE: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);

/// CLOCK_MONOTONIC at jiffy resolution (`bpf_ktime_get_coarse_ns`), read at most once per
/// jiffy per CPU. `bpf_jiffies64` is inlined by the verifier (a load of `jiffies`) and the
/// per-CPU array lookup by the JIT, so a packet in the same jiffy as the last reading on its
/// CPU makes no helper call: measured under `BPF_PROG_TEST_RUN`, an established packet went
/// from 104 to 89 ns (the helper call with its return thunk cost about 15 ns).
///
/// The coarse clock itself only moves once per tick, so a cached reading is what the helper
/// would return, except that the tick updates `jiffies` slightly before the timekeeper: a
/// reading taken in between is one tick old and is then kept for that whole jiffy. Times are
/// thus at most two ticks behind (the helper alone: one), and still never go backwards on a
/// CPU. Timeouts are seconds; event timestamps are documented at jiffy resolution.
#[inline(always)]
pub(crate) fn coarse_now() -> u64 {
    // SAFETY: neither helper has preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(cache) = CLOCK_CACHE.get_ptr_mut(0) else {
        // SAFETY: as above.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's slot of a per-CPU array; a tc program is not re-entered on one CPU.
    unsafe {
        if (*cache).jiffies == jiffies && (*cache).now_ns != 0 {
            return (*cache).now_ns;
        }
        let now = bpf_ktime_get_coarse_ns();
        (*cache).jiffies = jiffies;
        (*cache).now_ns = now;
        now
    }
}

/// Adds one to a per-CPU `u64` counter; out-of-range indices are ignored.
#[inline(always)]
pub(crate) fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = counters.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful lookup of this CPU's slot; per-CPU
        // values are not shared and a tc program is not re-entered on one CPU.
        unsafe { *counter = (*counter).wrapping_add(1) };
    }
}

/// Counts a packet (or a side event) under `reason` for the hook's direction.
#[inline(always)]
pub(crate) fn count(reason: u32, dir: u8) {
    if reason < NUM_REASONS {
        bump(&VERDICT_COUNTERS, reason * 2 + u32::from(dir & 1));
    }
}
