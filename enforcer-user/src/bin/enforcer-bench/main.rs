//! `enforcer-bench`: the benchmarks behind `cargo xtask bench [--quick]` (see
//! `docs/benchmarks.md`). Needs root and the real eBPF object; built with the `testgen`
//! feature (it uses `enforcer_user::testsupport` for pin bases and frames).
//!
//! - Per-packet cost of the TC program under `BPF_PROG_TEST_RUN`, in ns/packet, as rules,
//!   endpoints and network-set CIDRs grow, IPv4 and IPv6.
//! - Control plane: compile + program time and peak RSS for N policies × M endpoints (each
//!   size in a child process, so peak RSS is that size's own), and the time of one rule change.
//!
//! Output: tables on stdout (progress on stderr), `<out>/datapath.csv`,
//! `<out>/control_plane.csv` and `<out>/results.md`.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

mod flat;
mod inventories;
mod iptables;
mod linear;
mod plot;
mod pps;
mod report;

use inventories::*;

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{HashMap, Map, MapData},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use clap::Parser;
use enforcer_common::{CtKey, CtValue, maps, programs};
use enforcer_user::{
    compile::{EndpointId, MapEntries, compile, to_map_entries},
    datapath::{Datapath, OpenOptions},
    evaluator::{Options, Packet},
    model::{Inventory, PortSpec, Protocol},
    testsupport::{PinBase, frame},
};

/// `TCX_NEXT`: allowed.
const PASS: u32 = u32::MAX;
/// `TC_ACT_SHOT`.
const DROP: u32 = 2;
/// Loopback: the device a tc `BPF_PROG_TEST_RUN` gives the skb; the endpoint under test.
const LO: u32 = 1;

#[derive(Parser)]
#[command(about = "Enforcer benchmarks (run through `cargo xtask bench`)")]
struct Args {
    /// Smaller sizes and fewer repetitions (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Where results.md and the CSV files go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// The command line to record in results.md.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
    /// Internal: run one control-plane size in this process and print one result line.
    #[arg(long, num_args = 2, value_names = ["POLICIES", "ENDPOINTS"], hide = true)]
    control_plane_child: Option<Vec<usize>>,
    /// Run only this section (its module's name, e.g. `pps`) and print it; for development.
    #[arg(long)]
    section: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Generated inventories
// ---------------------------------------------------------------------------------------------

/// Map entries with pod 0 on loopback (the test-run device) and pod i on a made-up ifindex,
/// so `ENDPOINTS` holds every endpoint.
fn entries(inv: &Inventory, under_test: bool) -> Result<(MapEntries, Duration, Duration)> {
    let started = Instant::now();
    let compiled = compile(inv, &Options::default()).context("compile")?;
    let compile_time = started.elapsed();
    let started = Instant::now();
    let entries = to_map_entries(&compiled, 0, &|id| match id {
        EndpointId::Pod { name, .. } => {
            let i: u32 = name[1..].parse().unwrap_or(0);
            if i == 0 && under_test {
                vec![LO]
            } else {
                vec![10_000 + i]
            }
        }
        EndpointId::Host { .. } => Vec::new(),
    })
    .context("rendering map entries")?;
    Ok((entries, compile_time, started.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// The datapath under BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------------------------------

/// Field order is drop order: handles close before the pin base goes.
struct Bench {
    dp: Datapath,
    to_endpoint: SchedClassifier,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    _pins: PinBase,
}

impl Bench {
    fn open(tag: &str) -> Result<Bench> {
        let pins = PinBase::new(tag);
        let dp = Datapath::open(OpenOptions {
            flip_grace: Duration::ZERO,
            ..pins.open_options()
        })
        .with_context(|| format!("Datapath::open under {}", pins.path().display()))?;
        let to_endpoint = SchedClassifier::from_pin(dp.paths().program(programs::TO_ENDPOINT))
            .context("opening the pinned to-endpoint program")?;
        let data = MapData::from_pin(dp.paths().map(maps::CONNTRACK)).context("CONNTRACK pin")?;
        let conntrack = HashMap::try_from(Map::from_map_data(data)?)?;
        Ok(Bench {
            dp,
            to_endpoint,
            conntrack,
            _pins: pins,
        })
    }

    fn clear_conntrack(&mut self) {
        let keys: Vec<CtKey> = self.conntrack.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.conntrack.remove(&k);
        }
    }

    fn conntrack_len(&self) -> usize {
        self.conntrack.keys().filter_map(Result::ok).count()
    }

    /// ns/packet of `frame` run `repeat` times; checks the return value.
    fn run(&self, frame: &[u8], repeat: u32, want: u32) -> Result<f64> {
        let r = self
            .to_endpoint
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        if r.return_value != want {
            bail!(
                "the program returned {} (want {}) for\n{}",
                r.return_value as i32,
                want as i32,
                frame::hex(frame)
            );
        }
        Ok(r.duration.as_nanos() as f64)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A TCP frame into pod 0 from `src`.
fn tcp_frame(src: IpAddr, src_port: u16, dst_port: u16, flags: u8) -> Result<Vec<u8>> {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(pod_v4(0)),
        IpAddr::V6(_) => IpAddr::V6(pod_v6(0)),
    };
    let p = Packet {
        src,
        dst,
        protocol: Protocol::TCP,
        src_port: Some(src_port),
        dst_port: Some(dst_port),
        icmp_type: None,
        icmp_code: None,
    };
    frame::packet_frame(&p, flags, &[]).context("building a frame")
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Distinct frames per measurement (medians over them).
    variants: usize,
    /// `repeat` of each repeated run.
    repeat: u32,
    /// Distinct new flows, one run each, for "new flow allowed".
    new_flows: usize,
}

/// One row of datapath results (ns/packet, medians).
#[derive(Debug, Clone)]
struct Row {
    axis: &'static str,
    size: usize,
    family: &'static str,
    established: f64,
    new_allowed_1: f64,
    new_denied: f64,
    new_denied_1: f64,
    established_1: f64,
    program_ms: f64,
}

/// Measures one programmed table set. `peer(k)` gives the k-th allowed peer and its port.
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
    // New flow allowed: every run a new 5-tuple (repeat 1, conntrack misses, then inserts).
    let mut new1 = Vec::new();
    // Peers other than the denied loop's (which would have warmed their table entries).
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

/// ns/packet of the program's early exit: a packet on an interface with no `ENDPOINTS`
/// entry (repeat N, and repeat 1).
fn floor(b: &mut Bench, s: Sizes) -> Result<(f64, f64)> {
    let mut rep = Vec::new();
    let mut one = Vec::new();
    for k in 0..s.variants {
        let f = tcp_frame(
            in_rule_net(k, false, k),
            40_000,
            rule_port(k),
            frame::TCP_SYN,
        )?;
        rep.push(b.run(&f, s.repeat, PASS)?);
        for _ in 0..(s.new_flows / s.variants).max(1) {
            one.push(b.run(&f, 1, PASS)?);
        }
    }
    Ok((median(rep), median(one)))
}

// ---------------------------------------------------------------------------------------------
// An empty tc program, loaded with raw bpf(2) (no change to enforcer-ebpf)
// ---------------------------------------------------------------------------------------------

mod empty_prog {
    use anyhow::{Result, bail};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

    /// `r0 = -1 (TCX_NEXT); exit`.
    const INSNS: [u64; 2] = [
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm -1
        0xffff_ffff_0000_00b7,
        // BPF_JMP | BPF_EXIT
        0x0000_0000_0000_0095,
    ];

    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        words: [u64; 20],
    }

    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> libc::c_long {
        // SAFETY: attr is a zero-padded bpf_attr-sized buffer that lives across the call.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut Attr,
                std::mem::size_of::<Attr>() as u32,
            )
        }
    }

    pub struct Empty(std::os::fd::OwnedFd);

    impl Empty {
        pub fn load() -> Result<Empty> {
            let license = c"GPL";
            let mut a = Attr::default();
            // prog_type, insn_cnt | insns | license
            a.words[0] = u64::from(BPF_PROG_TYPE_SCHED_CLS) | (INSNS.len() as u64) << 32;
            a.words[1] = INSNS.as_ptr() as u64;
            a.words[2] = license.as_ptr() as u64;
            let fd = bpf(BPF_PROG_LOAD, &mut a);
            if fd < 0 {
                bail!(
                    "loading the empty program: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: the kernel just gave us this descriptor.
            Ok(Empty(unsafe {
                std::os::fd::FromRawFd::from_raw_fd(fd as i32)
            }))
        }

        /// ns/packet over `repeat` runs.
        pub fn run(&self, frame: &[u8], repeat: u32) -> Result<f64> {
            use std::os::fd::AsRawFd as _;
            let mut a = Attr::default();
            // prog_fd, retval | data_size_in, data_size_out | data_in | data_out | repeat, duration
            a.words[0] = self.0.as_raw_fd() as u64;
            a.words[1] = frame.len() as u64;
            a.words[2] = frame.as_ptr() as u64;
            a.words[4] = u64::from(repeat);
            if bpf(BPF_PROG_TEST_RUN, &mut a) < 0 {
                bail!(
                    "test run of the empty program: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok((a.words[4] >> 32) as f64)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Control plane
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct CpRow {
    policies: usize,
    endpoints: usize,
    build_ms: f64,
    compile_ms: f64,
    render_ms: f64,
    program_ms: f64,
    entries: usize,
    verdicts: usize,
    peak_rss_mib: f64,
    compile_rss_mib: f64,
    change_compile_ms: f64,
    change_program_ms: f64,
    change_written: usize,
}

/// This process's peak RSS (`VmHWM`, KiB). Not `getrusage`: its `ru_maxrss` carries the
/// parent's peak across fork and exec.
fn max_rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn control_plane_child(policies: usize, endpoints: usize) -> Result<()> {
    let started = Instant::now();
    let mut inv = control_plane_inventory(policies, endpoints)?;
    let build_ms = ms(started.elapsed());
    let (e, compile_time, render_time) = entries(&inv, false)?;
    let compile_rss = max_rss_kib() / 1024.0;
    let mut b = Bench::open("bench-cp")?;
    let started = Instant::now();
    b.dp.program(&e).context("program")?;
    let program_ms = ms(started.elapsed());
    let count =
        e.endpoints.len() + e.peer_v4.len() + e.peer_v6.len() + e.ports.len() + e.verdicts.len();
    let verdicts = e.verdicts.len();
    drop(e);
    // One rule change: policy 0's net rule moves to another port.
    if let Some(r) = inv.policies.first_mut().and_then(|p| p.ingress.first_mut()) {
        r.destination.ports = vec![PortSpec::Range(DENIED_PORT + 1, DENIED_PORT + 1)];
    }
    let started = Instant::now();
    let (e2, _, _) = entries(&inv, false)?;
    let change_compile_ms = ms(started.elapsed());
    let started = Instant::now();
    let report = b.dp.program(&e2).context("program (one change)")?;
    let change_program_ms = ms(started.elapsed());
    let row = CpRow {
        policies,
        endpoints,
        build_ms,
        compile_ms: ms(compile_time),
        render_ms: ms(render_time),
        program_ms,
        entries: count,
        verdicts,
        peak_rss_mib: max_rss_kib() / 1024.0,
        compile_rss_mib: compile_rss,
        change_compile_ms,
        change_program_ms,
        change_written: report.written + report.deleted,
    };
    println!(
        "CP {} {} {} {} {} {} {} {} {} {} {} {} {}",
        row.policies,
        row.endpoints,
        row.build_ms,
        row.compile_ms,
        row.render_ms,
        row.program_ms,
        row.entries,
        row.verdicts,
        row.peak_rss_mib,
        row.change_compile_ms,
        row.change_program_ms,
        row.change_written,
        row.compile_rss_mib
    );
    Ok(())
}

fn control_plane(policies: usize, endpoints: usize) -> Result<CpRow> {
    let exe = std::env::current_exe().context("current_exe")?;
    let out = Command::new(exe)
        .args([
            "--control-plane-child",
            &policies.to_string(),
            &endpoints.to_string(),
        ])
        .output()
        .context("running the control-plane child")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "control-plane child {policies}x{endpoints} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CP "))
        .context("no result line from the control-plane child")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(f64::NAN))
        .collect();
    if f.len() != 13 {
        bail!("bad control-plane line {line:?}");
    }
    Ok(CpRow {
        policies: f[0] as usize,
        endpoints: f[1] as usize,
        build_ms: f[2],
        compile_ms: f[3],
        render_ms: f[4],
        program_ms: f[5],
        entries: f[6] as usize,
        verdicts: f[7] as usize,
        peak_rss_mib: f[8],
        change_compile_ms: f[9],
        change_program_ms: f[10],
        change_written: f[11] as usize,
        compile_rss_mib: f[12],
    })
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn machine_facts() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<f64>().ok())
        .map_or("unknown".into(), |k| {
            format!("{:.1} GiB", k / 1024.0 / 1024.0)
        });
    let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!(
        "- kernel: {kernel}\n- CPU: {model}, {cores} cores\n- memory: {mem}\n- bpf_jit_enable: {jit}\n"
    )
}

fn fmt_ns(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.0}")
    }
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if let Some(pm) = &args.control_plane_child {
        control_plane_child(pm[0], pm[1])?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = &args.section {
        let opts = report::RunOpts {
            quick: args.quick,
            out: args.out.clone(),
        };
        let section = match name.as_str() {
            // One arm per section module, added by its owner, e.g.:
            // "pps" => pps::run(&opts)?,
            _ => bail!("unknown section {name:?}"),
        };
        report::emit(&opts, &section)?;
        return Ok(ExitCode::SUCCESS);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load eBPF programs: run as root");
    }
    enforcer_user::ebpf_object::object().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let s = if args.quick {
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
    };
    let rule_sizes: &[usize] = if args.quick {
        &[10, 100, 1_000, 10_000]
    } else {
        // 100,000 is the aim, but the compiler's cost grows with rules × peer classes (0.3 s
        // at 1,000 rules, 2.7 s at 3,000): 100,000 does not compile in reasonable time.
        &[10, 100, 1_000, 3_000, 10_000, 30_000]
    };
    let endpoint_sizes: &[usize] = if args.quick {
        &[10, 1_000, 10_000]
    } else {
        &[10, 100, 1_000, 10_000]
    };
    let netset_sizes: &[usize] = if args.quick {
        &[10, 1_000, 100_000]
    } else {
        &[10, 1_000, 10_000, 100_000, 1_000_000]
    };
    let cp_sizes: &[(usize, usize)] = if args.quick {
        &[(100, 100), (1_000, 1_000)]
    } else {
        &[(100, 100), (1_000, 1_000), (10_000, 5_000)]
    };

    eprintln!(
        "bench: {} ({} variants x repeat {}, {} new flows a size)",
        if args.quick { "quick" } else { "full" },
        s.variants,
        s.repeat,
        s.new_flows
    );
    let mut b = Bench::open("bench")?;

    // Floors.
    let empty = empty_prog::Empty::load()?;
    let f4 = tcp_frame(in_rule_net(0, false, 0), 40_000, 1000, frame::TCP_SYN)?;
    let f6 = tcp_frame(in_rule_net(0, true, 0), 40_000, 1000, frame::TCP_SYN)?;
    let mut er = Vec::new();
    let mut e1 = Vec::new();
    for f in [&f4, &f6] {
        for _ in 0..s.variants {
            er.push(empty.run(f, s.repeat)?);
        }
        for _ in 0..s.new_flows {
            e1.push(empty.run(f, 1)?);
        }
    }
    let (empty_rep, empty_one) = (median(er), median(e1));
    let (floor_rep, floor_one) = floor(&mut b, s)?;
    eprintln!(
        "floors: empty program {empty_rep:.0} ns (repeat 1: {empty_one:.0}); \
         no-endpoint early exit {floor_rep:.0} ns (repeat 1: {floor_one:.0})"
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut run_size = |b: &mut Bench,
                        axis: &'static str,
                        size: usize,
                        inv: Inventory,
                        peer: &dyn Fn(usize, bool) -> (IpAddr, u16),
                        families: &[bool]|
     -> Result<()> {
        let (e, compile_time, _) = entries(&inv, true)?;
        drop(inv);
        let t = Instant::now();
        b.dp.program(&e).context("program")?;
        let program_ms = ms(t.elapsed());
        drop(e);
        for &v6 in families {
            let (est, new1, den, den1, est1) = measure(b, s, &|k| peer(k, v6))?;
            let row = Row {
                axis,
                size,
                family: if v6 { "IPv6" } else { "IPv4" },
                established: est,
                new_allowed_1: new1,
                new_denied: den,
                new_denied_1: den1,
                established_1: est1,
                program_ms,
            };
            eprintln!(
                "  {axis:>9} {size:>9} {:<4}: established {} | new allowed (rep 1) {} | new denied {} (rep 1: {}) | compile {:.0} ms, program {:.0} ms",
                row.family,
                fmt_ns(est),
                fmt_ns(new1),
                fmt_ns(den),
                fmt_ns(den1),
                ms(compile_time),
                program_ms
            );
            rows.push(row);
        }
        Ok(())
    };

    eprintln!("rules (10 endpoints):");
    for &n in rule_sizes {
        let inv = rules_inventory(n, 10)?;
        // The k-th peer: an address in rule r's net, to r's port; r spread over the rules.
        let peer = |k: usize, v6: bool| {
            let r = (k * 7919) % n;
            (in_rule_net(r, v6, k), rule_port(r))
        };
        run_size(&mut b, "rules", n, inv, &peer, &[false, true])?;
    }
    eprintln!("endpoints (10 rules; peers are other endpoints, allowed by a selector rule):");
    for &m in endpoint_sizes {
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
        let peer = |k: usize, v6: bool| {
            let i = 1 + (k * 7919) % (m - 1).max(1);
            let a = if v6 {
                IpAddr::V6(pod_v6(i))
            } else {
                IpAddr::V4(pod_v4(i))
            };
            (a, 80)
        };
        run_size(&mut b, "endpoints", m, inv, &peer, &[false, true])?;
    }
    eprintln!("network-set CIDRs (random IPv4 /24../32, 10 rules, 10 endpoints):");
    for &c in netset_sizes {
        let cidrs = random_cidrs(c, 0x5eed + c as u64);
        let inv = netset_inventory(&cidrs)?;
        let peer = |k: usize, _v6: bool| {
            let n = cidrs[(k * 7919) % cidrs.len()];
            let host = (k as u32) % (n.hosts().count().max(1) as u32);
            (
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + host)),
                NETSET_PORT,
            )
        };
        run_size(&mut b, "netset", c, inv, &peer, &[false])?;
    }
    drop(b);

    eprintln!("control plane (each size in a child process):");
    let mut cp = Vec::new();
    for &(p, m) in cp_sizes {
        let row = control_plane(p, m)?;
        eprintln!(
            "  {p:>6} policies x {m:>5} endpoints: compile {:.0} ms, program {:.0} ms, peak RSS {:.0} MiB; one rule change: compile {:.0} ms + program {:.1} ms",
            row.compile_ms,
            row.program_ms,
            row.peak_rss_mib,
            row.change_compile_ms,
            row.change_program_ms
        );
        cp.push(row);
    }
    let total = started.elapsed();

    // Output.
    std::fs::create_dir_all(&args.out)?;
    let mut csv = String::from(
        "axis,size,family,established_ns,new_allowed_repeat1_ns,new_denied_ns,new_denied_repeat1_ns,established_repeat1_ns,program_ms\n",
    );
    for r in &rows {
        let _ = writeln!(
            csv,
            "{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.2}",
            r.axis,
            r.size,
            r.family,
            r.established,
            r.new_allowed_1,
            r.new_denied,
            r.new_denied_1,
            r.established_1,
            r.program_ms
        );
    }
    let _ = writeln!(
        csv,
        "floor-empty-program,0,IPv4+IPv6,{empty_rep:.1},,,,{empty_one:.1},\nfloor-no-endpoint-exit,0,IPv4,{floor_rep:.1},,,,{floor_one:.1},"
    );
    std::fs::write(args.out.join("datapath.csv"), &csv)?;
    let mut cpcsv = String::from(
        "policies,endpoints,build_ms,compile_ms,render_ms,program_ms,map_entries,verdict_entries,peak_rss_mib,peak_rss_after_compile_mib,change_compile_ms,change_program_ms,change_entries_written\n",
    );
    for r in &cp {
        let _ = writeln!(
            cpcsv,
            "{},{},{:.1},{:.1},{:.1},{:.1},{},{},{:.1},{:.1},{:.1},{:.2},{}",
            r.policies,
            r.endpoints,
            r.build_ms,
            r.compile_ms,
            r.render_ms,
            r.program_ms,
            r.entries,
            r.verdicts,
            r.peak_rss_mib,
            r.compile_rss_mib,
            r.change_compile_ms,
            r.change_program_ms,
            r.change_written
        );
    }
    std::fs::write(args.out.join("control_plane.csv"), &cpcsv)?;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Enforcer benchmark results\n\nCommand: `{}` ({} run, {:.0} s).\n\n{}",
        args.command,
        if args.quick { "quick" } else { "full" },
        total.as_secs_f64(),
        machine_facts()
    );
    let _ = writeln!(
        md,
        "Per-packet cost: the to-endpoint (ingress) TC program under `BPF_PROG_TEST_RUN`, ns/packet, \
         median over {} distinct frames (different peers, rules and ports) each run with repeat {} \
         (\"repeat 1\" columns: one run per frame, which adds the kernel timer's own overhead; compare \
         them with the repeat-1 floors; \"new denied (repeat 1)\" runs over the same number of distinct frames as \"new allowed\"). New flow allowed is measured with repeat 1 over {} distinct \
         5-tuples (every run a conntrack miss, a full lookup and a conntrack insert). Methods: \
         `docs/benchmarks.md`.\n",
        s.variants, s.repeat, s.new_flows
    );
    let _ = writeln!(
        md,
        "## Floors\n\n| floor | ns/packet (repeat {}) | ns/packet (repeat 1) |\n|---|---:|---:|\n\
         | empty tc program (`r0 = TCX_NEXT; exit`) | {} | {} |\n\
         | Enforcer, no-endpoint early exit (parse Ethernet, ENDPOINTS miss) | {} | {} |\n",
        s.repeat,
        fmt_ns(empty_rep),
        fmt_ns(empty_one),
        fmt_ns(floor_rep),
        fmt_ns(floor_one)
    );
    let _ = writeln!(
        md,
        "## Per packet (ns/packet)\n\n| axis | size | family | established | new allowed (repeat 1) | new denied | new denied (repeat 1) | established (repeat 1) | program() ms |\n|---|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            r.axis,
            r.size,
            r.family,
            fmt_ns(r.established),
            fmt_ns(r.new_allowed_1),
            fmt_ns(r.new_denied),
            fmt_ns(r.new_denied_1),
            fmt_ns(r.established_1),
            r.program_ms
        );
    }
    // Ratios, all from this run.
    let find = |axis: &str, size: usize, fam: &str| {
        rows.iter()
            .find(|r| r.axis == axis && r.size == size && r.family == fam)
    };
    let _ = writeln!(md, "\n## Ratios (this run)\n");
    fn ratio(md: &mut String, name: String, a: f64, b: f64) {
        let _ = writeln!(md, "- {name}: {a:.0} / {b:.0} = **{:.2}×**", a / b);
        eprintln!("ratio: {name}: {:.2}x", a / b);
    }
    for fam in ["IPv4", "IPv6"] {
        let small = find("rules", rule_sizes[0], fam);
        let big = find("rules", *rule_sizes.last().unwrap_or(&0), fam);
        if let (Some(a), Some(z)) = (small, big) {
            ratio(
                &mut md,
                format!(
                    "{fam} new flow allowed, {} rules / {} rules",
                    z.size, a.size
                ),
                z.new_allowed_1,
                a.new_allowed_1,
            );
            ratio(
                &mut md,
                format!("{fam} new flow denied, {} rules / {} rules", z.size, a.size),
                z.new_denied,
                a.new_denied,
            );
            ratio(
                &mut md,
                format!("{fam} established, {} rules / {} rules", z.size, a.size),
                z.established,
                a.established,
            );
            ratio(
                &mut md,
                format!(
                    "{fam} established ({} rules) / no-endpoint early exit",
                    a.size
                ),
                a.established,
                floor_rep,
            );
            ratio(
                &mut md,
                format!("{fam} established ({} rules) / empty program", a.size),
                a.established,
                empty_rep,
            );
            let _ = writeln!(
                md,
                "- {fam} new flow allowed ({} rules) minus the empty program, both repeat 1: {:.0} − {:.0} = **{:.0} ns**",
                a.size,
                a.new_allowed_1,
                empty_one,
                a.new_allowed_1 - empty_one
            );
            let _ = writeln!(
                md,
                "- {fam} new flow denied ({} rules) minus the empty program, both repeat {}: {:.0} − {:.0} = **{:.0} ns**",
                a.size,
                s.repeat,
                a.new_denied,
                empty_rep,
                a.new_denied - empty_rep
            );
        }
    }
    for (axis, sizes) in [("endpoints", endpoint_sizes), ("netset", netset_sizes)] {
        if let (Some(a), Some(z)) = (
            find(axis, sizes[0], "IPv4"),
            find(axis, *sizes.last().unwrap_or(&0), "IPv4"),
        ) {
            ratio(
                &mut md,
                format!(
                    "IPv4 new flow allowed, {} {axis} / {} {axis}",
                    z.size, a.size
                ),
                z.new_allowed_1,
                a.new_allowed_1,
            );
            ratio(
                &mut md,
                format!(
                    "IPv4 new flow denied, {} {axis} / {} {axis}",
                    z.size, a.size
                ),
                z.new_denied,
                a.new_denied,
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Control plane\n\nPolicy j selects group `g<j mod 10>` of the endpoints and allows TCP from one /28 + /124 \
         (its own port) and from the next group's endpoints. Each size runs in a fresh child process: \
         peak RSS is that process's `VmHWM` (userspace only; map memory is kernel memory, not counted); \"after compile\" is before the eBPF object is loaded, \"at end\" includes loading it. \
         \"One rule change\" edits one rule's port, recompiles everything and calls `Datapath::program` \
         (time until the maps are updated and the slot flipped; no flip grace).\n\n\
         | policies | endpoints | compile ms | render ms | program() ms | map entries | verdict entries | peak RSS MiB after compile | peak RSS MiB at end | change: compile ms | change: program() ms | change: entries written |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &cp {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            r.policies,
            r.endpoints,
            r.compile_ms,
            r.render_ms,
            r.program_ms,
            r.entries,
            r.verdicts,
            r.compile_rss_mib,
            r.peak_rss_mib,
            r.change_compile_ms,
            r.change_program_ms,
            r.change_written
        );
    }
    let _ = writeln!(
        md,
        "\nNot measured yet: a parse-only program floor, veth packets/s with live frames, the \
         iptables/ipset and linear-scan eBPF references, map memory bytes, plots (see \
         `docs/benchmarks.md`)."
    );
    std::fs::write(args.out.join("results.md"), &md)?;
    println!("\n{md}");
    eprintln!(
        "bench: done in {:.0} s; wrote {}/results.md, datapath.csv, control_plane.csv",
        total.as_secs_f64(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
