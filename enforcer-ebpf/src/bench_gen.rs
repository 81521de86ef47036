//! Benchmark-only program: the packet generator of `enforcer-bench --section pps`; never
//! attached by the agent.
//!
//! `enforcer_bench_gen` is an XDP program run with `BPF_PROG_RUN` in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`): every frame it returns `XDP_PASS` for enters the network
//! stack as if received on the `ingress_ifindex` of the run's context. It always returns
//! `XDP_PASS`.
//!
//! In live-frames mode the kernel recycles the frame pages without restoring their content,
//! and the stack writes into them (a forwarded packet gets a decremented TTL, a new IPv4
//! checksum and the next hop's Ethernet header). So the program never trusts the frame it is
//! given: it first copies the Ethernet + IPv4 + TCP header template of `BENCH_GEN_CONFIG`
//! over the frame, then, in "new flow" mode, rewrites the TCP source port and the low bits of
//! the IPv4 source address from a sequence number and fixes the IPv4 header and TCP checksums
//! incrementally (RFC 1624) from the template's valid checksums.
//!
//! `BENCH_GEN_CONFIG[0]` (128 bytes, little-endian u32 words; written by
//! `enforcer-bench`'s `pps` module, which documents the same layout):
//!
//! | offset | field |
//! |---:|---|
//! | 0 | mode: [`MODE_FIXED`] or [`MODE_NEW_FLOW`] |
//! | 4 | source addresses to cycle through (added to the template's, low 16 bits, no carry) |
//! | 8 | first source port |
//! | 12 | source ports to cycle through |
//! | 64 | the 54-byte header template: Ethernet, IPv4 without options, TCP without options |
//!
//! `BENCH_GEN_SEQ[0]` is the sequence number of the next frame, advanced by every frame (one
//! global counter, not per CPU: a run may move between CPUs between batches, and only one run
//! injects at a time); userspace sets it before a run and reads it after (the frames the
//! program saw). Frame `k` gets source port `port_base + k % ports` and address offset
//! `(k / ports) % addresses`, so `ports × addresses` consecutive frames are distinct flows.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

/// Send the template as it is: one long flow.
const MODE_FIXED: u32 = 0;
/// Every frame a new 5-tuple.
const MODE_NEW_FLOW: u32 = 1;

const OFF_MODE: usize = 0;
const OFF_ADDR_COUNT: usize = 4;
const OFF_PORT_BASE: usize = 8;
const OFF_PORT_COUNT: usize = 12;
const OFF_TEMPLATE: usize = 64;
/// Ethernet (14) + IPv4 (20) + TCP (20).
const TEMPLATE_LEN: usize = 54;
const CONFIG_BYTES: usize = 128;

/// Offsets in the frame.
const IP_CHECKSUM: usize = 24;
const IP_SRC_LOW16: usize = 28;
const TCP_SRC_PORT: usize = 34;
const TCP_CHECKSUM: usize = 50;

const _: () = assert!(OFF_TEMPLATE + TEMPLATE_LEN <= CONFIG_BYTES);

#[map(name = "BENCH_GEN_CONFIG")]
static BENCH_GEN_CONFIG: Array<[u8; CONFIG_BYTES]> = Array::with_max_entries(1, 0);

#[map(name = "BENCH_GEN_SEQ")]
static BENCH_GEN_SEQ: Array<u64> = Array::with_max_entries(1, 0);

#[xdp]
pub fn enforcer_bench_gen(ctx: XdpContext) -> u32 {
    // A frame too short for the template, or a missing map value, passes untouched.
    let _ = generate(&ctx);
    xdp_action::XDP_PASS
}

/// One's-complement update of checksum `csum` when a 16-bit word changes from `old` to
/// `new` (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline(always)]
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
fn generate(ctx: &XdpContext) -> Option<()> {
    let config = BENCH_GEN_CONFIG.get_ptr(0)?.cast::<u8>();
    let seq_ptr = BENCH_GEN_SEQ.get_ptr_mut(0)?;
    let start = ctx.data();
    if start + TEMPLATE_LEN > ctx.data_end() {
        return None;
    }
    let frame = start as *mut u8;
    // SAFETY: `frame .. frame + TEMPLATE_LEN` lies inside the packet (checked above) and
    // `config .. config + CONFIG_BYTES` is the map value of a successful lookup; the copies
    // are unaligned-safe fixed-size moves. The sequence counter is a live map value.
    unsafe {
        let t = config.add(OFF_TEMPLATE);
        for off in [0usize, 8, 16, 24, 32, 40] {
            let w = core::ptr::read_unaligned(t.add(off).cast::<u64>());
            core::ptr::write_unaligned(frame.add(off).cast::<u64>(), w);
        }
        let w = core::ptr::read_unaligned(t.add(48).cast::<u32>());
        core::ptr::write_unaligned(frame.add(48).cast::<u32>(), w);
        let w = core::ptr::read_unaligned(t.add(52).cast::<u16>());
        core::ptr::write_unaligned(frame.add(52).cast::<u16>(), w);

        let seq = *seq_ptr;
        *seq_ptr = seq.wrapping_add(1);

        let word = |off: usize| core::ptr::read_unaligned(config.add(off).cast::<u32>());
        if word(OFF_MODE) != MODE_NEW_FLOW {
            return Some(());
        }
        let addresses = u64::from(word(OFF_ADDR_COUNT).max(1));
        let ports = u64::from(word(OFF_PORT_COUNT).max(1));
        let port = (u64::from(word(OFF_PORT_BASE)) + seq % ports) as u16;
        let addr_offset = ((seq / ports) % addresses) as u16;

        let be16 = |off: usize| u16::from_be(core::ptr::read_unaligned(t.add(off).cast::<u16>()));
        let put16 = |off: usize, v: u16| {
            core::ptr::write_unaligned(frame.add(off).cast::<u16>(), v.to_be());
        };
        let old_port = be16(TCP_SRC_PORT);
        let old_low = be16(IP_SRC_LOW16);
        let new_low = old_low.wrapping_add(addr_offset);
        // The TCP checksum covers the port and (pseudo-header) the source address.
        let tcp = csum_replace(be16(TCP_CHECKSUM), old_port, port);
        let tcp = csum_replace(tcp, old_low, new_low);
        let ip = csum_replace(be16(IP_CHECKSUM), old_low, new_low);
        put16(TCP_SRC_PORT, port);
        put16(IP_SRC_LOW16, new_low);
        put16(TCP_CHECKSUM, tcp);
        put16(IP_CHECKSUM, ip);
    }
    Some(())
}

const _: () = assert!(MODE_FIXED != MODE_NEW_FLOW);
