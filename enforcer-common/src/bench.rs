//! Map key and value types of the benchmark-only programs in `enforcer-ebpf`
//! (`bench_floor`, `bench_linear`). The agent never attaches these programs; `enforcer-bench`
//! loads them to measure Enforcer against a parse-only floor and a linear-scan reference.
//!
//! The bench maps are declared with `max_entries` 1 (so loading the production object costs
//! next to nothing for them); `enforcer-bench` sets real sizes with
//! `EbpfLoader::map_max_entries` before it loads the object for a benchmark.
//!
//! Same rules as the rest of the crate: `#[repr(C)]`, explicit padding, size assertions,
//! `aya::Pod` behind the `user` feature.

/// Map names in the eBPF object.
pub mod maps {
    /// Per-CPU array, one `u64`: the parse-only floor folds the parsed fields into it, so the
    /// compiler cannot drop the parse.
    pub const FLOOR_SINK: &str = "BENCH_FLOOR_SINK";
    /// Array, one [`LinearConfig`](super::LinearConfig) at index 0.
    pub const LINEAR_CONFIG: &str = "BENCH_LINEAR_CONFIG";
    /// Array of [`LinearRule`](super::LinearRule)s in evaluation order (sized by userspace).
    pub const LINEAR_RULES: &str = "BENCH_LINEAR_RULES";
    /// LPM trie: [`LinearIpsetV4Data`](super::LinearIpsetV4Data) → 1 (sized by userspace).
    pub const LINEAR_IPSET_V4: &str = "BENCH_LINEAR_IPSET_V4";
    /// LPM trie: [`LinearIpsetV6Data`](super::LinearIpsetV6Data) → 1 (sized by userspace).
    pub const LINEAR_IPSET_V6: &str = "BENCH_LINEAR_IPSET_V6";
    /// LRU hash: [`LinearCtKey`](super::LinearCtKey) → [`LinearCtValue`](super::LinearCtValue)
    /// (sized by userspace).
    pub const LINEAR_CONNTRACK: &str = "BENCH_LINEAR_CONNTRACK";
    /// Per-CPU array of `u64`, indexed by `LINEAR_COUNT_*`.
    pub const LINEAR_COUNTERS: &str = "BENCH_LINEAR_COUNTERS";
}

/// Program names in the eBPF object.
pub mod programs {
    /// Parses the headers as Enforcer does, then passes the packet: the per-packet floor.
    pub const PARSE_ONLY: &str = "enforcer_bench_parse_only";
    /// The linear-scan reference (Calico-eBPF style), judging packets as ingress to the
    /// endpoint (peer = source address).
    pub const LINEAR: &str = "enforcer_bench_linear";
}

/// `BENCH_LINEAR_COUNTERS` indices.
/// Packets allowed (by conntrack or by a rule or the default).
pub const LINEAR_COUNT_ALLOWED: u32 = 0;
/// Packets denied by a rule or the default.
pub const LINEAR_COUNT_DENIED: u32 = 1;
/// Packets passed before policy: not IP, ICMPv6 neighbour discovery/MLD, later fragments.
pub const LINEAR_COUNT_PASSED: u32 = 2;
/// Packets dropped as unparseable.
pub const LINEAR_COUNT_UNPARSEABLE: u32 = 3;
/// Entries of `BENCH_LINEAR_COUNTERS`.
pub const LINEAR_NUM_COUNTERS: u32 = 4;

/// Most entries the linear program scans per chain (its `bpf_loop` count is capped here).
pub const LINEAR_MAX_RULES: u32 = 1 << 22;

/// `BENCH_LINEAR_CONFIG[0]`. `BENCH_LINEAR_RULES` holds two chains, as Calico's eBPF
/// dataplane compiles one program per IP family: the IPv4 chain at indices `0..v4_rules`,
/// the IPv6 chain right after it at `v4_rules..v4_rules + v6_rules`. A chain holds the
/// entries that can match its family (nets of that family, IP sets, any peer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearConfig {
    /// Entries of the IPv4 chain.
    pub v4_rules: u32,
    /// Entries of the IPv6 chain.
    pub v6_rules: u32,
    /// `ACTION_ALLOW` or `ACTION_DENY` (crate root): the verdict when no entry matches.
    pub default_action: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<LinearConfig>() == 16);

/// [`LinearRule::peer`]: any peer address.
pub const LINEAR_PEER_ANY: u8 = 0;
/// [`LinearRule::peer`]: the peer is an IPv4 address inside `net`/`mask`.
pub const LINEAR_PEER_NET_V4: u8 = 1;
/// [`LinearRule::peer`]: the peer is an IPv6 address inside `net`/`mask`.
pub const LINEAR_PEER_NET_V6: u8 = 2;
/// [`LinearRule::peer`]: the peer is in IP set `ipset` (`BENCH_LINEAR_IPSET_V4`/`_V6`).
pub const LINEAR_PEER_IPSET: u8 = 3;

/// One entry of the linear chain. A packet matches when its protocol equals `protocol` (0 =
/// any), when `has_ports` is 0 or the packet is TCP/UDP/UDPLite/SCTP with a destination port
/// in `port_lo..=port_hi`, and when its peer (source) address matches `peer`. A policy rule
/// with several nets (or port ranges) becomes several consecutive entries, one each.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearRule {
    /// `ACTION_ALLOW` or `ACTION_DENY` (crate root).
    pub action: u8,
    /// IP protocol number; 0 = any.
    pub protocol: u8,
    /// `LINEAR_PEER_*`.
    pub peer: u8,
    /// 1: the destination port must lie in `port_lo..=port_hi`.
    pub has_ports: u8,
    /// Host order, inclusive.
    pub port_lo: u16,
    pub port_hi: u16,
    /// IP set id (`LINEAR_PEER_IPSET`).
    pub ipset: u32,
    pub _pad: u32,
    /// The net's address, masked: the 16 address bytes in network order (IPv4 in the first
    /// 4, the rest zero) read as two little-endian `u64`s (`u64::from_le_bytes` of bytes
    /// 0..8 and 8..16), the same way the program reads the packet's address.
    pub net: [u64; 2],
    /// The prefix mask, in the same representation.
    pub mask: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<LinearRule>() == 48);

/// IP-set LPM key data, IPv4: set id (big-endian) then the address (network order). The
/// prefix length counts the 32 set-id bits plus the member's prefix.
pub type LinearIpsetV4Data = [u8; 8];
/// IP-set LPM key data, IPv6: set id (big-endian) then the address.
pub type LinearIpsetV6Data = [u8; 20];
/// Bits of the IP-set key data before the address.
pub const LINEAR_IPSET_FIXED_BITS: u32 = 32;

/// Linear reference conntrack key: the flow as the ingress packet carries it (peer =
/// source). Addresses in network order, IPv4 in the first 4 bytes; ports in host order, 0 for
/// protocols without ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinearCtKey {
    /// 4 or 6.
    pub family: u8,
    pub protocol: u8,
    pub _pad: [u8; 2],
    pub src_port: u16,
    pub dst_port: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<LinearCtKey>() == 40);

/// Linear reference conntrack value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearCtValue {
    /// `bpf_ktime_get_coarse_ns` of the last packet (refreshed on every hit, as a real
    /// conntrack does).
    pub last_seen_ns: u64,
    /// Index of the rule that allowed the flow; `u32::MAX` for the default.
    pub rule: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<LinearCtValue>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type is repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for LinearConfig {}
    unsafe impl aya::Pod for LinearRule {}
    unsafe impl aya::Pod for LinearCtKey {}
    unsafe impl aya::Pod for LinearCtValue {}
}
