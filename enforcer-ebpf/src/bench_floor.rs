//! Benchmark-only: the parse-only floor (`enforcer_bench_parse_only`). Never attached by the
//! agent; `enforcer-bench` runs it under `BPF_PROG_TEST_RUN`.
//!
//! It does exactly what Enforcer's programs do before their first policy map lookup: read the
//! headers with the same [`parse::parse`](crate::parse::parse) (Ethernet, IPv4 options, IPv6
//! extension headers, transport ports and flags), and returns `TCX_NEXT`, or `TC_ACT_SHOT`
//! for an unparseable packet as Enforcer does. "Established-flow ns/packet within 1.5× of the
//! parse-only floor" is measured against it.
//!
//! So the compiler cannot drop the parse, the parsed fields are folded into one per-CPU
//! counter (`BENCH_FLOOR_SINK`, one entry): a per-CPU array read-modify-write, the cheapest
//! side effect a program can have, and the only cost here beyond the parse itself.

use aya_ebpf::{macros::classifier, macros::map, maps::PerCpuArray, programs::TcContext};

use crate::{
    NON_FIRST_FRAGMENT, NON_IP, UNPARSEABLE,
    bench_linear::{halves, str_eq},
    parse::{self, Flow, Parsed},
};

const _: () = assert!(str_eq(
    "BENCH_FLOOR_SINK",
    enforcer_common::bench::maps::FLOOR_SINK
));
const _: () = assert!(str_eq(
    "enforcer_bench_parse_only",
    enforcer_common::bench::programs::PARSE_ONLY
));

/// The fold of every parsed packet's fields (meaningless as a number; it only has to exist).
#[map(name = "BENCH_FLOOR_SINK")]
static BENCH_FLOOR_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[classifier]
pub fn enforcer_bench_parse_only(ctx: TcContext) -> i32 {
    let outcome = match parse::parse(&ctx) {
        Ok(Parsed::Flow(flow)) => {
            sink(fold(&flow));
            return crate::VERDICT_ALLOW;
        }
        Ok(Parsed::NonIp) => NON_IP,
        Ok(Parsed::LaterFragment) => NON_FIRST_FRAGMENT,
        Err(parse::Unparseable) => UNPARSEABLE,
    };
    outcome.verdict
}

/// Every field the datapath uses, mixed into one word.
#[inline(always)]
fn fold(flow: &Flow) -> u64 {
    let (s_hi, s_lo) = halves(&flow.src);
    let (d_hi, d_lo) = halves(&flow.dst);
    let small = u64::from(flow.family)
        | u64::from(flow.protocol) << 8
        | u64::from(flow.tcp_flags) << 16
        | u64::from(flow.src_port) << 24
        | u64::from(flow.dst_port) << 40
        | u64::from(flow.policy_port) << 48;
    s_hi ^ s_lo.rotate_left(7) ^ d_hi.rotate_left(13) ^ d_lo.rotate_left(29) ^ small
}

#[inline(always)]
fn sink(value: u64) {
    if let Some(slot) = BENCH_FLOOR_SINK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a 1-entry per-CPU array, from a successful lookup; a tc
        // program is not re-entered on one CPU.
        unsafe { *slot = (*slot).wrapping_add(value) };
    }
}
