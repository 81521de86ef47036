//! Enforcer's TC programs.
//!
//! For now a minimal datapath: both directions parse Ethernet, IPv4/IPv6 and (for TCP, UDP and
//! SCTP) the port words with explicit bounds checks, count what they saw in `ENFORCER_COUNTERS`
//! and let every packet continue (`TCX_NEXT`). Policy lookups replace the verdict later.
//!
//! Directions are named from the endpoint: `enforcer_ingress` sees traffic *to* a pod (attached
//! at tc egress of its host-side veth), `enforcer_egress` traffic *from* it (tc ingress).
//!
//! Built for `bpfel-unknown-none` by enforcer-user's build.rs; on the host it compiles to an
//! empty `main` so `cargo clippy --workspace` covers it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::tcx_action_base::TCX_NEXT,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};

/// `ENFORCER_COUNTERS[0]`: packets the programs ran on.
const COUNTER_SEEN: u32 = 0;
/// `ENFORCER_COUNTERS[1]`: packets whose headers were truncated or malformed.
const COUNTER_UNPARSEABLE: u32 = 1;
const COUNTERS_LEN: u32 = 2;

/// Per-CPU packet counters, indexed by the `COUNTER_*` constants; userspace sums the CPUs.
#[map]
static ENFORCER_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// Verdict for "no opinion": the next tcx program (or the legacy tc chain) decides; with nothing
/// after us the packet passes. Numerically `TC_ACT_UNSPEC`.
const VERDICT_CONTINUE: i32 = TCX_NEXT;

#[classifier]
pub fn enforcer_ingress(ctx: TcContext) -> i32 {
    handle(&ctx)
}

#[classifier]
pub fn enforcer_egress(ctx: TcContext) -> i32 {
    handle(&ctx)
}

#[inline(always)]
fn handle(ctx: &TcContext) -> i32 {
    count(COUNTER_SEEN);
    if parse(ctx).is_err() {
        count(COUNTER_UNPARSEABLE);
    }
    VERDICT_CONTINUE
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = ENFORCER_COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful map lookup on this CPU's slot; per-CPU
        // values are not shared with other CPUs and the program is not re-entered on one CPU.
        unsafe { *counter += 1 };
    }
}

/// What the datapath needs from a packet's headers (the flow key, later).
#[derive(Clone, Copy)]
#[expect(
    dead_code,
    reason = "read by the policy lookup that replaces this placeholder"
)]
struct Headers {
    /// IP protocol / IPv6 next header; 0 for non-IP frames.
    protocol: u8,
    /// Source and destination port (host order) for TCP/UDP/SCTP first fragments.
    ports: Option<(u16, u16)>,
}

/// The frame is shorter than its headers claim, or a version field is wrong.
struct Unparseable;

/// A reference to `N` packet bytes at `offset`, bounds-checked against `data_end` the way the
/// verifier wants to see it.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &TcContext, offset: usize) -> Result<&[u8; N], Unparseable> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return Err(Unparseable);
    }
    // SAFETY: [start + offset, start + offset + N) lies inside the linear packet data checked
    // above; `[u8; N]` has alignment 1.
    Ok(unsafe { &*((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Headers, Unparseable> {
    let eth = bytes_at::<ETH_HLEN>(ctx, 0)?;
    let ether_type = u16::from_be_bytes([eth[12], eth[13]]);

    let (protocol, l4_offset) = match ether_type {
        ETH_P_IP => {
            let ip = bytes_at::<IPV4_MIN_HLEN>(ctx, ETH_HLEN)?;
            if ip[0] >> 4 != 4 {
                return Err(Unparseable);
            }
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            if header_len < IPV4_MIN_HLEN || ctx.data() + ETH_HLEN + header_len > ctx.data_end() {
                return Err(Unparseable);
            }
            let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            // Only the first fragment carries the L4 header.
            let l4 = (fragment_offset == 0).then_some(ETH_HLEN + header_len);
            (ip[9], l4)
        }
        ETH_P_IPV6 => {
            let ip = bytes_at::<IPV6_HLEN>(ctx, ETH_HLEN)?;
            if ip[0] >> 4 != 6 {
                return Err(Unparseable);
            }
            // Extension headers are walked by the policy datapath; here only the fixed header.
            (ip[6], Some(ETH_HLEN + IPV6_HLEN))
        }
        _ => {
            return Ok(Headers {
                protocol: 0,
                ports: None,
            });
        }
    };

    let ports = match (protocol, l4_offset) {
        (IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP, Some(offset)) => {
            let l4 = bytes_at::<4>(ctx, offset)?;
            Some((
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ))
        }
        _ => None,
    };
    Ok(Headers { protocol, ports })
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
