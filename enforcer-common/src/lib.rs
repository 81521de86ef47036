//! Map key and value types shared by Enforcer's eBPF programs and its userspace.
//!
//! Every type is `#[repr(C)]` with explicit padding and a compile-time size assertion, so
//! both sides agree on the layout byte for byte. `aya::Pod` impls sit behind the `user`
//! feature so the eBPF side stays `no_std` without aya.
//!
//! ## How a new flow is judged (see `docs/datapath.md`)
//! 1. `CONFIG[0]` gives the active table slot (0 or 1) and the policy generation.
//! 2. `ENDPOINTS[(slot, ifindex)]` gives the interface's policy-set id per direction.
//! 3. The peer address → peer class (`PEER_V4` / `PEER_V6` LPM tries, keyed by slot).
//! 4. (protocol, port) → port class (`PORTS` LPM trie, keyed by slot); ICMP uses
//!    `type << 8 | code` as the port.
//! 5. `VERDICTS[(slot, set, peer class, port class)]`, falling back to the row default
//!    `(slot, set, peer class, ANY)` and then the set default `(slot, set, ANY, ANY)`.
//!
//! Userspace writes a whole new table set into the inactive slot, then flips
//! `CONFIG.active_slot` in one write: a packet reads the slot once, so it sees the old
//! policy or the new one, never a mix.
#![no_std]

pub mod bench;

/// Version of the map layout; pins live under `/sys/fs/bpf/enforcer/v<LAYOUT_VERSION>/`.
pub const LAYOUT_VERSION: u32 = 1;

/// Wildcard class id in `VerdictKey` (row and set defaults).
pub const ANY: u32 = u32::MAX;

/// Map capacities (entries). Userspace checks them before writing; see `docs/datapath.md`.
pub const MAX_ENDPOINTS: u32 = 2 * 16_384;
pub const MAX_PEER_PREFIXES: u32 = 2 * 1_048_576;
pub const MAX_PORT_PREFIXES: u32 = 2 * 65_536;
pub const MAX_VERDICTS: u32 = 2 * 1_048_576;
pub const MAX_CONNTRACK: u32 = 262_144;
pub const MAX_RULE_COUNTERS: u32 = 262_144;

/// `CONFIG` array map: one entry at index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Which table slot (0 or 1) new-flow lookups use.
    pub active_slot: u32,
    /// Bumped on every policy change; conntrack entries from older generations are re-checked.
    pub generation: u32,
    /// `CONFIG_*` flags.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

/// Packets of interfaces not in `ENDPOINTS` are dropped instead of passed.
pub const CONFIG_FAIL_CLOSED: u32 = 1;
/// Some rule constrains source ports: look up the source port class too.
pub const CONFIG_SRC_PORTS: u32 = 2;

/// `ENDPOINTS` hash key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub slot: u32,
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 8);

/// `ENDPOINTS` hash value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    /// Policy set judging traffic into the endpoint (tc egress of the host-side veth).
    pub ingress_set: u32,
    /// Policy set judging traffic out of the endpoint (tc ingress of the host-side veth).
    pub egress_set: u32,
    /// `ENDPOINT_*` flags.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointValue>() == 16);

/// The endpoint is a host endpoint (failsafe ports apply).
pub const ENDPOINT_HOST: u32 = 1;

/// `PEER_V4` LPM key data: slot (big-endian) then the IPv4 address (network order).
/// The LPM prefix length counts the 32 slot bits plus the address prefix.
pub type PeerV4Data = [u8; 8];
/// `PEER_V6` LPM key data: slot (big-endian) then the IPv6 address.
pub type PeerV6Data = [u8; 20];
/// `PORTS` LPM key data: slot (big-endian, 4 bytes), kind (1 byte: `PORT_KIND_DST` or
/// `PORT_KIND_SRC`), protocol (1 byte), port (2 bytes, big-endian; ICMP: `type << 8 | code`).
pub type PortData = [u8; 8];
/// Bits of `PortData` before the port: slot, kind and protocol.
pub const PORT_KEY_FIXED_BITS: u32 = 48;
pub const PORT_KIND_DST: u8 = 0;
pub const PORT_KIND_SRC: u8 = 1;
/// The port class a `PORTS` miss stands for, destination or source: the protocols and ports
/// no rule names. (A `PEER_*` miss, unlike this, means the slot has no tables: the datapath
/// denies the flow, so userspace installs a catch-all peer prefix per slot.)
pub const PORT_CLASS_ON_MISS: u32 = 0;
/// Bits of `PeerV4Data`/`PeerV6Data` before the address: the slot.
pub const PEER_KEY_FIXED_BITS: u32 = 32;

/// `VERDICTS` hash key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub slot: u32,
    pub set: u32,
    pub peer_class: u32,
    pub port_class: u32,
}
const _: () = assert!(core::mem::size_of::<VerdictKey>() == 16);

/// Verdict actions.
pub const ACTION_ALLOW: u8 = 1;
pub const ACTION_DENY: u8 = 2;

/// `VERDICTS` hash value: the enforced decision and the staged one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictValue {
    /// `ACTION_ALLOW` or `ACTION_DENY`.
    pub action: u8,
    /// What the verdict would be with staged policies enforced.
    pub staged_action: u8,
    pub _pad: [u8; 2],
    /// Rule (or default) that decided: an index into userspace's rule table.
    pub rule_id: u32,
    pub staged_rule_id: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<VerdictValue>() == 16);

/// Conntrack key: the interface, and the flow's addresses and ports in canonical order
/// (`addr_a`/`port_a` is the lower (address, port) pair), so both directions share it.
/// IPv4 addresses sit in the first 4 bytes, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub ifindex: u32,
    pub protocol: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    pub port_a: u16,
    pub port_b: u16,
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 44);

/// Conntrack value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Policy generation that allowed the flow.
    pub generation: u32,
    /// Rule that allowed the flow.
    pub rule_id: u32,
    /// `CT_*` flags (who initiated, TCP state).
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CtValue>() == 32);

/// The flow was initiated by the `a` side of the key.
pub const CT_INITIATOR_A: u32 = 1;
/// A SYN was seen from the initiator.
pub const CT_TCP_SYN: u32 = 2;
/// The responder answered (SYN-ACK or any reply).
pub const CT_SEEN_REPLY: u32 = 4;
/// A FIN was seen (either side).
pub const CT_TCP_FIN: u32 = 8;
/// A RST was seen.
pub const CT_TCP_RST: u32 = 16;
/// ICMP/ICMPv6 flows: bits 16..32 of `CtValue.flags` hold the initiator's `type << 8 | code`
/// (the port the policy judged), so a re-check after a generation change can judge the
/// original packet again. Conntrack keys carry ports 0 for ICMP.
pub const CT_ICMP_TYPE_CODE_SHIFT: u32 = 16;
/// The `CT_*` state bits below [`CT_ICMP_TYPE_CODE_SHIFT`].
pub const CT_STATE_MASK: u32 = (1 << CT_ICMP_TYPE_CODE_SHIFT) - 1;

/// Directions, from the endpoint's point of view.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// `VERDICT_COUNTERS` per-CPU array index: `reason * 2 + direction`.
pub const REASON_ALLOW_POLICY: u32 = 0;
pub const REASON_DENY_POLICY: u32 = 1;
pub const REASON_ALLOW_CONNTRACK: u32 = 2;
pub const REASON_DENY_UNPARSEABLE: u32 = 3;
pub const REASON_PASS_NO_ENDPOINT: u32 = 4;
pub const REASON_DENY_NO_ENDPOINT: u32 = 5;
pub const REASON_DENY_NO_VERDICT: u32 = 6;
pub const REASON_PASS_FRAGMENT: u32 = 7;
pub const REASON_CT_FULL: u32 = 8;
pub const REASON_RECHECK: u32 = 9;
pub const REASON_EVENT_DROPPED: u32 = 10;
pub const REASON_PASS_NON_IP: u32 = 11;
/// ICMPv6 neighbour discovery and MLD (types 130-133, 135, 136): always passed, as Felix's
/// `ICMPv6Filter` does, because IPv6 cannot work without them.
pub const REASON_PASS_ICMPV6_ND: u32 = 12;
pub const NUM_REASONS: u32 = 13;

/// A flow event sent to the `EVENTS` ring buffer (denied flows, rate-limited).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub rule_id: u32,
    pub staged_rule_id: u32,
    pub direction: u8,
    pub family: u8,
    pub protocol: u8,
    pub action: u8,
    pub staged_action: u8,
    pub _pad: [u8; 3],
    pub src_port: u16,
    pub dst_port: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 64);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type is repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for EndpointValue {}
    unsafe impl aya::Pod for VerdictKey {}
    unsafe impl aya::Pod for VerdictValue {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for FlowEvent {}
}

/// Map names in the eBPF object (and pin file names under `maps/`).
pub mod maps {
    pub const CONFIG: &str = "ENFORCER_CONFIG";
    pub const ENDPOINTS: &str = "ENFORCER_ENDPOINTS";
    pub const PEER_V4: &str = "ENFORCER_PEER_V4";
    pub const PEER_V6: &str = "ENFORCER_PEER_V6";
    pub const PORTS: &str = "ENFORCER_PORTS";
    pub const VERDICTS: &str = "ENFORCER_VERDICTS";
    pub const CONNTRACK: &str = "ENFORCER_CONNTRACK";
    /// Per-CPU array: `reason * 2 + direction` → packets.
    pub const VERDICT_COUNTERS: &str = "ENFORCER_VERDICT_COUNTERS";
    /// Per-CPU array: rule id → new flows decided by it.
    pub const RULE_COUNTERS: &str = "ENFORCER_RULE_COUNTERS";
    /// Per-CPU array: staged rule id → new flows the staged view decided by it.
    pub const STAGED_COUNTERS: &str = "ENFORCER_STAGED_COUNTERS";
    /// Ring buffer of `FlowEvent`s.
    pub const EVENTS: &str = "ENFORCER_EVENTS";
    /// Per-CPU array, one entry: event rate limiter state.
    pub const EVENT_LIMIT: &str = "ENFORCER_EVENT_LIMIT";
}

/// Program names in the eBPF object.
pub mod programs {
    /// tc ingress of the host-side interface: traffic leaving the endpoint (its egress).
    pub const FROM_ENDPOINT: &str = "enforcer_from_endpoint";
    /// tc egress of the host-side interface: traffic entering the endpoint (its ingress).
    pub const TO_ENDPOINT: &str = "enforcer_to_endpoint";
}

/// Size of the `EVENTS` ring buffer in bytes.
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// At most this many flow events per CPU per `EVENT_WINDOW_NS`.
pub const EVENTS_PER_WINDOW: u32 = 1_000;
pub const EVENT_WINDOW_NS: u64 = 1_000_000_000;

/// `EVENT_LIMIT` value (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventLimit {
    pub window_start_ns: u64,
    pub sent: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EventLimit>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, explicit padding.
unsafe impl aya::Pod for EventLimit {}
