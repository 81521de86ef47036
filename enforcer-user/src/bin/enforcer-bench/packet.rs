//! Per-packet cost of Enforcer's to-endpoint (ingress) TC program under `BPF_PROG_TEST_RUN`,
//! in ns/packet, against the floors (an empty program, a parse-only program, Enforcer's own
//! no-endpoint exit), as rules, endpoints and network-set CIDRs grow, IPv4 and IPv6.
//!
//! Every (axis, size) runs in a child process of the bench (`--packet-child AXIS SIZE`) with a
//! time limit: a size whose compile does not finish in time is reported as not finished
//! instead of hanging the run, and each size starts from fresh maps and a fresh heap.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use enforcer_user::{model::Inventory, testsupport::frame};
use serde::{Deserialize, Serialize};

use crate::{
    Bench, DROP, PASS, empty_prog, entries, fmt_ns,
    inventories::*,
    map_memory, median, ms,
    report::{Aim, Plot, RunOpts, Section, Series},
    run_child, tcp_frame,
};

/// The sizes of every axis; edit here. Rules: N allow rules (10 a policy, all selecting
/// every endpoint), 10 endpoints. Endpoints: M pods, 10 rules plus a selector rule. Netset: a
/// GlobalNetworkSet of C random IPv4 CIDRs.
const RULES_QUICK: &[usize] = &[10, 100, 1_000, 10_000, 100_000];
const RULES_FULL: &[usize] = &[10, 100, 1_000, 10_000, 100_000];
const ENDPOINTS_QUICK: &[usize] = &[10, 1_000, 10_000];
const ENDPOINTS_FULL: &[usize] = &[10, 100, 1_000, 10_000];
const NETSET_QUICK: &[usize] = &[10, 1_000, 100_000];
const NETSET_FULL: &[usize] = &[10, 1_000, 10_000, 100_000, 1_000_000];
/// Time limit of one (axis, size) child: building, compiling, programming and measuring.
const LIMIT_QUICK: Duration = Duration::from_secs(90);
const LIMIT_FULL: Duration = Duration::from_secs(300);

/// Repetitions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Distinct frames per measurement (medians over them).
    pub variants: usize,
    /// `repeat` of each repeated run.
    pub repeat: u32,
    /// Distinct new flows, one run each, for "new flow allowed".
    pub new_flows: usize,
}

pub(crate) fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            variants: 8,
            repeat: 20_000,
            new_flows: 256,
        }
    } else {
        Sizes {
            variants: 16,
            repeat: 100_000,
            new_flows: 1024,
        }
    }
}

/// One measured (axis, size, family): ns/packet medians.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub axis: String,
    pub size: usize,
    pub family: String,
    pub established: f64,
    pub new_allowed_1: f64,
    pub new_denied: f64,
    pub new_denied_1: f64,
    pub established_1: f64,
    pub compile_ms: f64,
    pub program_ms: f64,
    /// Kernel memory of every Enforcer map (`memlock` in fdinfo) after programming.
    pub map_bytes: u64,
}

/// What one (axis, size) gave: rows, or the time limit it did not finish within.
enum Outcome {
    Rows(Vec<Row>),
    NotFinished(Duration),
}

/// Floors, ns/packet. `exit_*`: Enforcer on a device with no `ENDPOINTS` entry (nothing
/// programmed): the full parse, a conntrack miss and an `ENDPOINTS` miss.
#[derive(Debug, Clone, Copy)]
struct Floors {
    empty_rep: f64,
    empty_one: f64,
    exit_rep: f64,
    exit_one: f64,
    parse_v4: f64,
    parse_v6: f64,
}

// ---------------------------------------------------------------------------------------------
// Measurements (child side)
// ---------------------------------------------------------------------------------------------

/// Measures one programmed table set. `peer(k)` gives the k-th allowed peer and its port.
/// Returns (established, new allowed repeat 1, new denied, new denied repeat 1, established
/// repeat 1).
fn measure(
    b: &mut Bench,
    s: Sizes,
    peer: &dyn Fn(usize) -> (IpAddr, u16),
) -> Result<(f64, f64, f64, f64, f64)> {
    use frame::{TCP_ACK, TCP_SYN};
    // Established: a SYN opens the flow, then its ACKs hit conntrack.
    b.clear_conntrack();
    let mut est = Vec::new();
    let mut est1 = Vec::new();
    for k in 0..s.variants {
        let (src, port) = peer(k);
        let sport = 40_000 + k as u16;
        b.run(&tcp_frame(src, sport, port, TCP_SYN)?, 1, PASS)?;
        let ack = tcp_frame(src, sport, port, TCP_ACK)?;
        est.push(b.run(&ack, s.repeat, PASS)?);
        est1.push(b.run(&ack, 1, PASS)?);
    }
    // New flow denied: right peer, a port no rule allows; denies create no conntrack entry.
    b.clear_conntrack();
    let mut den = Vec::new();
    let mut den1 = Vec::new();
    for k in 0..s.variants {
        let (src, _) = peer(k);
        let f = tcp_frame(src, 30_000 + k as u16, DENIED_PORT, TCP_SYN)?;
        den.push(b.run(&f, s.repeat, DROP)?);
    }
    // The same, one run each over as many distinct frames as the allowed new flows below (so
    // both see the same spread of table entries, not one cache-hot frame).
    for k in 0..s.new_flows {
        let (src, _) = peer(k);
        let f = tcp_frame(src, 1024 + (k % 60_000) as u16, DENIED_PORT, TCP_SYN)?;
        den1.push(b.run(&f, 1, DROP)?);
    }
    let left = b.conntrack_len();
    if left != 0 {
        bail!("denied packets left {left} conntrack entries");
    }
    // New flow allowed: every run a new 5-tuple (repeat 1, conntrack misses, then inserts),
    // on peers other than the denied loop's (which would have warmed their table entries).
    let mut new1 = Vec::new();
    for k in 0..s.new_flows {
        let (src, port) = peer(s.new_flows + k);
        let f = tcp_frame(src, 1024 + (k % 60_000) as u16, port, TCP_SYN)?;
        new1.push(b.run(&f, 1, PASS)?);
    }
    b.clear_conntrack();
    Ok((
        median(est),
        median(new1),
        median(den),
        median(den1),
        median(est1),
    ))
}

/// The inventory of `axis` at `size`, and the k-th allowed peer (address, port) per family.
#[allow(clippy::type_complexity, reason = "one local closure type")]
fn axis_setup(
    axis: &str,
    size: usize,
) -> Result<(
    Inventory,
    Box<dyn Fn(usize, bool) -> (IpAddr, u16)>,
    Vec<bool>,
)> {
    Ok(match axis {
        "rules" => {
            let n = size.max(1);
            let inv = rules_inventory(n, 10)?;
            // The k-th peer: an address in rule r's net, to r's port; r spread over the rules.
            let peer = move |k: usize, v6: bool| {
                let r = (k * 7919) % n;
                (in_rule_net(r, v6, k), rule_port(r))
            };
            (inv, Box::new(peer), vec![false, true])
        }
        "endpoints" => {
            let m = size.max(2);
            let mut inv = rules_inventory(10, m)?;
            inv.policies.push(policy(
                1_000_000,
                selector("all()")?,
                vec![allow_from(
                    Vec::new(),
                    Some(selector("app == 'bench'")?),
                    80,
                )],
            ));
            let peer = move |k: usize, v6: bool| {
                let i = 1 + (k * 7919) % (m - 1);
                let a = if v6 {
                    IpAddr::V6(pod_v6(i))
                } else {
                    IpAddr::V4(pod_v4(i))
                };
                (a, 80)
            };
            (inv, Box::new(peer), vec![false, true])
        }
        "netset" => {
            let cidrs = random_cidrs(size.max(1), 0x5eed + size as u64);
            let inv = netset_inventory(&cidrs)?;
            let peer = move |k: usize, _v6: bool| {
                let n = cidrs[(k * 7919) % cidrs.len()];
                let hosts = 1u64 << (32 - u32::from(n.prefix_len()));
                let host = (k as u64 % hosts) as u32;
                (
                    IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + host)),
                    NETSET_PORT,
                )
            };
            (inv, Box::new(peer), vec![false])
        }
        _ => bail!("unknown per-packet axis {axis:?}"),
    })
}

/// `--packet-child AXIS SIZE`: builds, compiles and programs one size, measures it and
/// prints `RESULT <json rows>`.
pub(crate) fn child(axis: &str, size: usize, quick: bool) -> Result<()> {
    let s = sizes(quick);
    let (inv, peer, families) = axis_setup(axis, size)?;
    let (e, compile_time, _) = entries(&inv, true)?;
    drop(inv);
    let mut b = Bench::open("bench-pkt")?;
    let t = Instant::now();
    b.dp.program(&e).context("program")?;
    let program_ms = ms(t.elapsed());
    drop(e);
    let map_bytes = map_memory(&b.dp)?.iter().map(|(_, bytes)| bytes).sum();
    let mut rows = Vec::new();
    for v6 in families {
        let (est, new1, den, den1, est1) = measure(&mut b, s, &|k| peer(k, v6))?;
        rows.push(Row {
            axis: axis.to_string(),
            size,
            family: if v6 { "IPv6" } else { "IPv4" }.into(),
            established: est,
            new_allowed_1: new1,
            new_denied: den,
            new_denied_1: den1,
            established_1: est1,
            compile_ms: ms(compile_time),
            program_ms,
            map_bytes,
        });
    }
    println!("RESULT {}", serde_json::to_string(&rows)?);
    Ok(())
}

/// `--spin CASE RULES SECONDS`: programs the rules axis at `RULES` and runs one case in a
/// loop for `SECONDS`, for profiling (`perf record -a -g` alongside; docs/benchmarks.md).
/// Cases: `established` (ACKs of open flows, repeat 10,000), `denied` (new flows to a denied
/// port over distinct peers, repeat 1,000), `new` (allowed SYNs, each a new 5-tuple, repeat 1).
pub(crate) fn spin(case: &str, rules: usize, secs: u64) -> Result<()> {
    use frame::{TCP_ACK, TCP_SYN};
    let (inv, peer, _) = axis_setup("rules", rules)?;
    let (e, _, _) = entries(&inv, true)?;
    drop(inv);
    let mut b = Bench::open("bench-spin")?;
    b.dp.program(&e).context("program")?;
    drop(e);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut packets) = (0u64, 0u64);
    let mut k = 0usize;
    while Instant::now() < deadline {
        let (src, port) = peer(k % 4096, k % 2 == 1);
        let sport = 1024 + (k % 60_000) as u16;
        match case {
            "established" => {
                b.run(&tcp_frame(src, sport, port, TCP_SYN)?, 1, PASS)?;
                b.run(&tcp_frame(src, sport, port, TCP_ACK)?, 10_000, PASS)?;
                packets += 10_001;
            }
            "denied" => {
                b.run(&tcp_frame(src, sport, DENIED_PORT, TCP_SYN)?, 1_000, DROP)?;
                packets += 1_000;
            }
            "new" => {
                if k.is_multiple_of(50_000) {
                    b.clear_conntrack();
                }
                b.run(&tcp_frame(src, sport, port, TCP_SYN)?, 1, PASS)?;
                packets += 1;
            }
            _ => bail!("unknown spin case {case:?} (established, denied, new)"),
        }
        runs += 1;
        k += 1;
    }
    eprintln!("spin {case} at {rules} rules: {runs} test runs, {packets} packets in {secs} s");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Floors (parent side)
// ---------------------------------------------------------------------------------------------

/// Parse-only floor (IPv4, IPv6): Ethernet, IP and L4 headers parsed, no map lookup
/// (`linear::ParseOnly`, the same parse the linear-scan reference uses).
fn parse_only(s: Sizes, f4: &[u8], f6: &[u8]) -> Result<(f64, f64)> {
    let parse = crate::linear::ParseOnly::load()?;
    let ns = |f: &[u8]| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..s.variants {
            v.push(parse.test_run_ns(f, s.repeat)?);
        }
        Ok(median(v))
    };
    Ok((ns(f4)?, ns(f6)?))
}

fn floors(s: Sizes) -> Result<Floors> {
    let f4 = tcp_frame(in_rule_net(0, false, 0), 40_000, 1000, frame::TCP_SYN)?;
    let f6 = tcp_frame(in_rule_net(0, true, 0), 40_000, 1000, frame::TCP_SYN)?;
    // Empty program: the cost of BPF_PROG_TEST_RUN itself around a program that does nothing.
    let empty = empty_prog::Empty::load()?;
    let (mut er, mut e1) = (Vec::new(), Vec::new());
    for f in [&f4, &f6] {
        for _ in 0..s.variants {
            er.push(empty.run(f, s.repeat)?);
        }
        for _ in 0..s.new_flows {
            e1.push(empty.run(f, 1)?);
        }
    }
    let (parse_v4, parse_v6) = parse_only(s, &f4, &f6)?;
    // Enforcer's no-endpoint exit: no ENDPOINTS entry for the device (nothing programmed).
    let b = Bench::open("bench-floor")?;
    let (mut xr, mut x1) = (Vec::new(), Vec::new());
    for k in 0..s.variants {
        let f = tcp_frame(
            in_rule_net(k, false, k),
            40_000,
            rule_port(k),
            frame::TCP_SYN,
        )?;
        xr.push(b.run(&f, s.repeat, PASS)?);
        for _ in 0..(s.new_flows / s.variants).max(1) {
            x1.push(b.run(&f, 1, PASS)?);
        }
    }
    Ok(Floors {
        empty_rep: median(er),
        empty_one: median(e1),
        exit_rep: median(xr),
        exit_one: median(x1),
        parse_v4,
        parse_v6,
    })
}

// ---------------------------------------------------------------------------------------------
// The section
// ---------------------------------------------------------------------------------------------

/// Floors and every axis; each (axis, size) in a child process with a time limit.
pub(crate) fn run(opts: &RunOpts) -> Result<Section> {
    let s = sizes(opts.quick);
    let (limit, axes): (Duration, [(&str, &[usize]); 3]) = if opts.quick {
        (
            LIMIT_QUICK,
            [
                ("rules", RULES_QUICK),
                ("endpoints", ENDPOINTS_QUICK),
                ("netset", NETSET_QUICK),
            ],
        )
    } else {
        (
            LIMIT_FULL,
            [
                ("rules", RULES_FULL),
                ("endpoints", ENDPOINTS_FULL),
                ("netset", NETSET_FULL),
            ],
        )
    };
    let limit = opts.size_limit.unwrap_or(limit);
    eprintln!(
        "per packet: {} variants x repeat {}, {} new flows a size; each size in a child (limit {} s)",
        s.variants,
        s.repeat,
        s.new_flows,
        limit.as_secs()
    );
    let fl = floors(s)?;
    eprintln!(
        "  floors: empty program {:.0} ns (repeat 1: {:.0}); parse-only {:.0} / {:.0} ns (IPv4 / IPv6); \
         no-endpoint exit {:.0} ns (repeat 1: {:.0})",
        fl.empty_rep, fl.empty_one, fl.parse_v4, fl.parse_v6, fl.exit_rep, fl.exit_one
    );
    let mut done: Vec<(&str, usize, Outcome)> = Vec::new();
    for (axis, sizes) in axes {
        for &size in sizes {
            let started = Instant::now();
            let mut args = vec!["--packet-child".to_string(), axis.into(), size.to_string()];
            if opts.quick {
                args.push("--quick".into());
            }
            let outcome = match run_child::<Vec<Row>>(&args, limit)
                .with_context(|| format!("per packet, {axis} {size}"))?
            {
                Some(rows) => {
                    for r in &rows {
                        eprintln!(
                            "  {:>9} {:>9} {:<4}: established {} | new allowed (rep 1) {} | new denied {} (rep 1: {}) | compile {:.0} ms, program {:.0} ms, maps {:.1} MiB ({:.1} s)",
                            r.axis,
                            r.size,
                            r.family,
                            fmt_ns(r.established),
                            fmt_ns(r.new_allowed_1),
                            fmt_ns(r.new_denied),
                            fmt_ns(r.new_denied_1),
                            r.compile_ms,
                            r.program_ms,
                            r.map_bytes as f64 / 1_048_576.0,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    Outcome::Rows(rows)
                }
                None => {
                    eprintln!(
                        "  {axis:>9} {size:>9}: not finished within {} s",
                        limit.as_secs()
                    );
                    Outcome::NotFinished(limit)
                }
            };
            done.push((axis, size, outcome));
        }
    }
    Ok(section(s, &fl, &done))
}

fn section(s: Sizes, fl: &Floors, done: &[(&str, usize, Outcome)]) -> Section {
    let rows: Vec<&Row> = done
        .iter()
        .flat_map(|(_, _, o)| match o {
            Outcome::Rows(r) => r.iter().collect(),
            Outcome::NotFinished(_) => Vec::new(),
        })
        .collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Per packet (BPF_PROG_TEST_RUN)\n\n\
         The to-endpoint (ingress) TC program under `BPF_PROG_TEST_RUN`, ns/packet, median over {} \
         distinct frames (different peers, rules and ports) each run with repeat {}. \"Repeat 1\" \
         columns run each of {} distinct frames once (which adds the kernel timer's own overhead: \
         compare them with the repeat-1 floors). New flow allowed is repeat 1 over {} distinct \
         5-tuples: every run a conntrack miss, the full lookup and a conntrack insert. Each size \
         runs in its own child process; map memory is the `memlock` of every Enforcer map after \
         programming.\n",
        s.variants, s.repeat, s.new_flows, s.new_flows
    );
    let _ = writeln!(
        md,
        "### Floors\n\n| floor | ns/packet (repeat {}) | ns/packet (repeat 1) |\n|---|---:|---:|\n\
         | empty tc program (`r0 = TCX_NEXT; exit`) | {} | {} |\n\
         | parse-only program, IPv4 (Ethernet, IPv4, TCP parsed; no lookups) | {} | |\n\
         | parse-only program, IPv6 | {} | |\n\
         | Enforcer, no-endpoint exit (full parse, conntrack miss, `ENDPOINTS` miss, pass) | {} | {} |\n",
        s.repeat,
        fmt_ns(fl.empty_rep),
        fmt_ns(fl.empty_one),
        fmt_ns(fl.parse_v4),
        fmt_ns(fl.parse_v6),
        fmt_ns(fl.exit_rep),
        fmt_ns(fl.exit_one)
    );
    let _ = writeln!(
        md,
        "### ns/packet by size\n\n| axis | size | family | established | new allowed (repeat 1) | new denied | new denied (repeat 1) | established (repeat 1) | compile ms | program() ms | map memory MiB |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (axis, size, o) in done {
        match o {
            Outcome::Rows(rs) => {
                for r in rs {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.1} |",
                        r.axis,
                        r.size,
                        r.family,
                        fmt_ns(r.established),
                        fmt_ns(r.new_allowed_1),
                        fmt_ns(r.new_denied),
                        fmt_ns(r.new_denied_1),
                        fmt_ns(r.established_1),
                        r.compile_ms,
                        r.program_ms,
                        r.map_bytes as f64 / 1_048_576.0
                    );
                }
            }
            Outcome::NotFinished(limit) => {
                let _ = writeln!(
                    md,
                    "| {axis} | {size} | | not finished within {} s | | | | | | | |",
                    limit.as_secs()
                );
            }
        }
    }
    let mut csv = String::from(
        "axis,size,family,established_ns,new_allowed_repeat1_ns,new_denied_ns,new_denied_repeat1_ns,established_repeat1_ns,compile_ms,program_ms,map_bytes\n",
    );
    for r in &rows {
        let _ = writeln!(
            csv,
            "{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.2},{}",
            r.axis,
            r.size,
            r.family,
            r.established,
            r.new_allowed_1,
            r.new_denied,
            r.new_denied_1,
            r.established_1,
            r.compile_ms,
            r.program_ms,
            r.map_bytes
        );
    }
    for (axis, size, o) in done {
        if let Outcome::NotFinished(limit) = o {
            let _ = writeln!(
                csv,
                "{axis},{size},not finished within {} s,,,,,,,,",
                limit.as_secs()
            );
        }
    }
    let _ = writeln!(
        csv,
        "floor-empty-program,0,IPv4+IPv6,{:.1},,,,{:.1},,,\n\
         floor-parse-only,0,IPv4,{:.1},,,,,,,\n\
         floor-parse-only,0,IPv6,{:.1},,,,,,,\n\
         floor-no-endpoint-exit,0,IPv4,{:.1},,,,{:.1},,,",
        fl.empty_rep, fl.empty_one, fl.parse_v4, fl.parse_v6, fl.exit_rep, fl.exit_one
    );
    let (aims, ratios) = aims(s, fl, done);
    md.push_str(&ratios);
    Section {
        markdown: md,
        csv: vec![("datapath.csv".into(), csv)],
        plots: plots(fl, &rows),
        aims,
    }
}

fn find<'a>(rows: &'a [&'a Row], axis: &str, size: usize, fam: &str) -> Option<&'a Row> {
    rows.iter()
        .copied()
        .find(|r| r.axis == axis && r.size == size && r.family == fam)
}

/// The per-packet aims from this run, and a markdown list of the other ratios.
fn aims(s: Sizes, fl: &Floors, done: &[(&str, usize, Outcome)]) -> (Vec<Aim>, String) {
    let rows: Vec<&Row> = done
        .iter()
        .flat_map(|(_, _, o)| match o {
            Outcome::Rows(r) => r.iter().collect(),
            Outcome::NotFinished(_) => Vec::new(),
        })
        .collect();
    let mut aims = Vec::new();
    let mut md = String::from("\n### Ratios (this run)\n\n");
    let fams = ["IPv4", "IPv6"];
    let smallest = done
        .iter()
        .filter(|(a, _, _)| *a == "rules")
        .map(|(_, n, _)| *n)
        .min()
        .unwrap_or(10);
    // New-flow decision minus the empty program (worst family).
    let diff = |get: &dyn Fn(&Row) -> f64, floor: f64| -> Option<(f64, String)> {
        let parts: Vec<(f64, String)> = fams
            .iter()
            .filter_map(|f| find(&rows, "rules", smallest, f))
            .map(|r| {
                let d = get(r) - floor;
                (
                    d,
                    format!("{} {:.0} − {:.0} = {:.0} ns", r.family, get(r), floor, d),
                )
            })
            .collect();
        let worst = parts.iter().map(|p| p.0).fold(f64::NAN, f64::max);
        (!parts.is_empty()).then(|| {
            (
                worst,
                parts
                    .into_iter()
                    .map(|p| p.1)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    };
    if let Some((d, text)) = diff(&|r| r.new_denied, fl.empty_rep) {
        aims.push(Aim {
            aim: format!(
                "new-flow decision within 60 ns of the empty program (new flow denied, repeat {}, {smallest} rules)",
                s.repeat
            ),
            measured: format!("{text} (difference, ns)"),
            value: d,
            met: d <= 60.0,
        });
    }
    if let Some((d, text)) = diff(&|r| r.new_allowed_1, fl.empty_one) {
        aims.push(Aim {
            aim: format!(
                "new-flow decision within 60 ns of the empty program (new flow allowed incl. conntrack insert, repeat 1, {smallest} rules)"
            ),
            measured: format!("{text} (difference, ns)"),
            value: d,
            met: d <= 60.0,
        });
    }
    // 100,000 rules within 1.2x of 10 rules.
    let rule_sizes: Vec<(usize, bool)> = done
        .iter()
        .filter(|(a, _, _)| *a == "rules")
        .map(|(_, n, o)| (*n, matches!(o, Outcome::Rows(_))))
        .collect();
    let largest_done = rule_sizes.iter().filter(|x| x.1).map(|x| x.0).max();
    let unfinished: Vec<String> = rule_sizes
        .iter()
        .filter(|x| !x.1)
        .map(|x| x.0.to_string())
        .collect();
    if let Some(big) = largest_done.filter(|&b| b > smallest) {
        for (what, get) in [
            (
                "new flow allowed (repeat 1)",
                (|r: &Row| r.new_allowed_1) as fn(&Row) -> f64,
            ),
            (
                "new flow denied (repeat N)",
                (|r: &Row| r.new_denied) as fn(&Row) -> f64,
            ),
        ] {
            let parts: Vec<(f64, String)> = fams
                .iter()
                .filter_map(|f| {
                    Some((
                        find(&rows, "rules", big, f)?,
                        find(&rows, "rules", smallest, f)?,
                    ))
                })
                .map(|(z, a)| {
                    let q = get(z) / get(a);
                    (
                        q,
                        format!("{} {:.0} / {:.0} = {q:.2}", z.family, get(z), get(a)),
                    )
                })
                .collect();
            if parts.is_empty() {
                continue;
            }
            let worst = parts.iter().map(|p| p.0).fold(f64::NAN, f64::max);
            let note = if big < 100_000 {
                if unfinished.is_empty() {
                    format!(" (measured at {big} rules: 100,000 is not in this run)")
                } else {
                    format!(
                        " (measured at {big} rules: {} did not finish within the time limit)",
                        unfinished.join(", ")
                    )
                }
            } else {
                String::new()
            };
            aims.push(Aim {
                aim: format!("{what} at 100,000 rules within 1.2× of the same at {smallest} rules"),
                measured: format!(
                    "{}{note}",
                    parts
                        .into_iter()
                        .map(|p| p.1)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                value: worst,
                met: big >= 100_000 && worst <= 1.2,
            });
        }
    }
    // Established within 1.5x of the parse-only floor.
    let parts: Vec<(f64, String)> = fams
        .iter()
        .filter_map(|f| find(&rows, "rules", smallest, f))
        .map(|r| {
            let floor = if r.family == "IPv6" {
                fl.parse_v6
            } else {
                fl.parse_v4
            };
            let q = r.established / floor;
            (
                q,
                format!("{} {:.0} / {:.0} = {q:.2}", r.family, r.established, floor),
            )
        })
        .collect();
    if !parts.is_empty() {
        let worst = parts.iter().map(|p| p.0).fold(f64::NAN, f64::max);
        aims.push(Aim {
            aim: format!(
                "established flow within 1.5× of the parse-only floor ({smallest} rules, repeat {})",
                s.repeat
            ),
            measured: parts.into_iter().map(|p| p.1).collect::<Vec<_>>().join("; "),
            value: worst,
            met: worst <= 1.5,
        });
    }
    // Other ratios, for the reader.
    let mut ratio = |name: String, a: f64, b: f64| {
        let _ = writeln!(md, "- {name}: {a:.0} / {b:.0} = **{:.2}×**", a / b);
    };
    for fam in fams {
        if let (Some(a), Some(big)) = (find(&rows, "rules", smallest, fam), largest_done)
            && let Some(z) = find(&rows, "rules", big, fam)
        {
            ratio(
                format!("{fam} established, {} rules / {} rules", z.size, a.size),
                z.established,
                a.established,
            );
            ratio(
                format!("{fam} established ({} rules) / no-endpoint exit", a.size),
                a.established,
                fl.exit_rep,
            );
            ratio(
                format!("{fam} established ({} rules) / empty program", a.size),
                a.established,
                fl.empty_rep,
            );
            ratio(
                format!(
                    "{fam} new flow denied over distinct frames (repeat 1), {} rules / {} rules",
                    z.size, a.size
                ),
                z.new_denied_1,
                a.new_denied_1,
            );
        }
    }
    for axis in ["endpoints", "netset"] {
        let finished: Vec<usize> = done
            .iter()
            .filter(|(a, _, o)| *a == axis && matches!(o, Outcome::Rows(_)))
            .map(|(_, n, _)| *n)
            .collect();
        if let (Some(&lo), Some(&hi)) = (finished.iter().min(), finished.iter().max())
            && let (Some(a), Some(z)) =
                (find(&rows, axis, lo, "IPv4"), find(&rows, axis, hi, "IPv4"))
            && hi > lo
        {
            ratio(
                format!("IPv4 new flow allowed (repeat 1), {hi} {axis} / {lo} {axis}"),
                z.new_allowed_1,
                a.new_allowed_1,
            );
            ratio(
                format!("IPv4 new flow denied, {hi} {axis} / {lo} {axis}"),
                z.new_denied,
                a.new_denied,
            );
        }
    }
    (aims, md)
}

/// ns/packet against each axis (log x, log y), with the floors as dashed levels.
fn plots(fl: &Floors, rows: &[&Row]) -> Vec<Plot> {
    let mut plots = Vec::new();
    for (axis, title, x_label) in [
        ("rules", "ns/packet vs rules (10 endpoints)", "rules"),
        (
            "endpoints",
            "ns/packet vs endpoints (10 rules + a selector rule)",
            "endpoints",
        ),
        (
            "netset",
            "ns/packet vs network-set CIDRs (IPv4)",
            "CIDRs in the network set",
        ),
    ] {
        let mine: Vec<&Row> = rows.iter().copied().filter(|r| r.axis == axis).collect();
        if mine.is_empty() {
            continue;
        }
        let lo = mine.iter().map(|r| r.size).min().unwrap_or(1) as f64;
        let hi = mine.iter().map(|r| r.size).max().unwrap_or(1) as f64;
        let mut series = Vec::new();
        for fam in ["IPv4", "IPv6"] {
            let of: Vec<&Row> = mine.iter().copied().filter(|r| r.family == fam).collect();
            if of.is_empty() {
                continue;
            }
            for (what, get) in [
                ("established", (|r: &Row| r.established) as fn(&Row) -> f64),
                ("new allowed (repeat 1)", |r: &Row| r.new_allowed_1),
                ("new denied", |r: &Row| r.new_denied),
            ] {
                series.push(Series {
                    name: format!("{fam} {what}"),
                    points: of.iter().map(|r| (r.size as f64, get(r))).collect(),
                });
            }
        }
        for (name, y) in [
            ("floor: empty program".to_string(), fl.empty_rep),
            ("floor: empty program (repeat 1)".to_string(), fl.empty_one),
            ("floor: parse-only (IPv4)".to_string(), fl.parse_v4),
        ] {
            series.push(Series {
                name,
                points: vec![(lo, y), (hi, y)],
            });
        }
        plots.push(Plot {
            file: format!("packet_{axis}.png"),
            title: title.into(),
            x_label: x_label.into(),
            y_label: "ns/packet (median)".into(),
            log_x: true,
            log_y: true,
            series,
        });
    }
    plots
}
