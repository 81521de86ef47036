//! A profiling driver for the TC datapath, not a test: it asserts no timings, it prints
//! ns/packet under `BPF_PROG_TEST_RUN` and can loop one scenario while `perf record`/`perf stat`
//! watch it. `#[ignore]`d; run it by hand as root:
//!
//! ```text
//! cargo test --release -p enforcer-user --test perf_probe -- --ignored --nocapture
//! ```
//!
//! Environment:
//! - `PERF_PROBE_RULES` — comma-separated rule counts (default `10,10000`), programmed with the
//!   benchmark's `rules_inventory(rules, 10)` (10 endpoints, pod 0 on loopback).
//! - `PERF_PROBE_BASELINE` — paths (`:`-separated) of other builds of the eBPF object (e.g. a
//!   copy of `target/release/build/enforcer-user-*/out/enforcer-ebpf` taken before a change).
//!   Their `enforcer_to_endpoint` is loaded on the SAME pinned maps (aya reuses a map pin), so
//!   all programs see the same tables and are measured interleaved, frame by frame, in one
//!   run; rows are named after the files ("current" is the embedded object).
//! - `PERF_PROBE_LOOP` — `established`, `denied`, `denied1`, `allowed1`: instead of the table,
//!   loop that scenario for `PERF_PROBE_SECS` seconds (default 10) at the last rule count, on
//!   the current program (or the first baseline with `PERF_PROBE_LOOP_BASELINE=1`), for
//!   `perf record -g -- <test binary> ...`.
//!
//! - Experimental objects: an object given in `PERF_PROBE_BASELINE` may declare `EXP_PEER4`
//!   (hash: `{u32 address prefix length, slot BE ++ masked IPv4 address}` → peer class, a
//!   stand-in for per-prefix-length peer hash maps) or `EXP_DIR1`/`EXP_DIR2` (arrays: a
//!   DIR-24-8 stand-in for `PEER_V4`); after each `program()` the driver fills them from the
//!   `PEER_V4` entries. Such objects are built from a private copy of `enforcer-ebpf`, never
//!   from the tree; the tree's object has neither map, and then nothing is filled.
//!
//! Scenarios (the benchmark's, IPv4 and IPv6 TCP into pod 0): established (a SYN opened the
//! flow, then its ACK), new denied (an allowed peer to a port no rule allows: three `VERDICTS`
//! lookups, a deny event), new allowed (a new 5-tuple each run: conntrack miss, lookups,
//! conntrack insert). "N" columns: repeat 20000 over 8 frames (median); "1" columns: repeat 1
//! over 256 distinct frames (median; includes the kernel timer's own overhead).

#[path = "../src/bin/enforcer-bench/inventories.rs"]
#[allow(dead_code, unused_imports)]
mod inventories;

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::{HashMap, Map, MapData},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use enforcer_common::{CtKey, CtValue, maps, programs};
use enforcer_user::{
    compile::{EndpointId, compile, to_map_entries},
    datapath::{Datapath, OpenOptions},
    evaluator::{Options, Packet},
    model::Protocol,
    testsupport::{PinBase, frame},
};
use inventories::{DENIED_PORT, in_rule_net, pod_v4, pod_v6, rule_port, rules_inventory};

/// `TCX_NEXT`.
const PASS: u32 = u32::MAX;
/// `TC_ACT_SHOT`.
const DROP: u32 = 2;
const LO: u32 = 1;
const VARIANTS: usize = 8;
const REPEAT: u32 = 20_000;
const DISTINCT: usize = 256;

const ALL_MAPS: [&str; 12] = [
    maps::CONFIG,
    maps::ENDPOINTS,
    maps::PEER_V4,
    maps::PEER_V6,
    maps::PORTS,
    maps::VERDICTS,
    maps::CONNTRACK,
    maps::VERDICT_COUNTERS,
    maps::RULE_COUNTERS,
    maps::STAGED_COUNTERS,
    maps::EVENTS,
    maps::EVENT_LIMIT,
];

/// One loaded `enforcer_to_endpoint`.
struct Prog {
    name: String,
    prog: SchedClassifier,
}

impl Prog {
    fn run(&self, frame: &[u8], repeat: u32, want: u32) -> Result<f64> {
        let r = self
            .prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        if r.return_value != want {
            bail!(
                "{}: returned {} (want {}) for\n{}",
                self.name,
                r.return_value as i32,
                want as i32,
                frame::hex(frame)
            );
        }
        Ok(r.duration.as_nanos() as f64)
    }
}

struct Probe {
    dp: Datapath,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    progs: Vec<Prog>,
    /// Objects loaded from files (baseline, floor): keeps their programs and maps alive.
    objects: Vec<aya::Ebpf>,
    _pins: PinBase,
}

impl Probe {
    fn open(baseline: Vec<PathBuf>) -> Result<Probe> {
        let pins = PinBase::new("perf-probe");
        let dp = Datapath::open(OpenOptions {
            flip_grace: Duration::ZERO,
            ..pins.open_options()
        })
        .context("Datapath::open")?;
        let current = SchedClassifier::from_pin(dp.paths().program(programs::TO_ENDPOINT))
            .context("pinned to-endpoint program")?;
        let data = MapData::from_pin(dp.paths().map(maps::CONNTRACK)).context("CONNTRACK pin")?;
        let conntrack = HashMap::try_from(Map::from_map_data(data)?)?;
        let mut progs = Vec::new();
        let mut objects = Vec::new();
        for path in baseline {
            let (ebpf, prog) = load_from_object(&dp, &pins, &path, programs::TO_ENDPOINT)?;
            let name = path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("baseline")
                .to_owned();
            progs.push(Prog { name, prog });
            objects.push(ebpf);
        }
        progs.push(Prog {
            name: "current".into(),
            prog: current,
        });
        Ok(Probe {
            dp,
            conntrack,
            progs,
            objects,
            _pins: pins,
        })
    }

    fn clear_conntrack(&mut self) {
        let keys: Vec<CtKey> = self.conntrack.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.conntrack.remove(&k);
        }
    }

    fn program(&mut self, rules: usize) -> Result<()> {
        let inv = rules_inventory(rules, 10)?;
        let compiled = compile(&inv, &Options::default()).context("compile")?;
        let entries = to_map_entries(&compiled, 0, &|id| match id {
            EndpointId::Pod { name, .. } => {
                let i: u32 = name[1..].parse().unwrap_or(0);
                if i == 0 { vec![LO] } else { vec![10_000 + i] }
            }
            EndpointId::Host { .. } => Vec::new(),
        })
        .context("map entries")?;
        self.dp.program(&entries).context("program")?;
        self.fill_experiments(&entries)
    }

    /// Experimental objects (built outside the tree, see the report) may carry `EXP_PEER4`, a
    /// hash map standing in for per-prefix-length peer hash maps: key (address prefix length,
    /// slot BE ++ masked IPv4 address) → peer class. Fills it from the `PEER_V4` entries just
    /// programmed, re-slotted to the active slot.
    fn fill_experiments(&mut self, entries: &enforcer_user::compile::MapEntries) -> Result<()> {
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct ExpKey {
            len: u32,
            data: [u8; 8],
        }
        // SAFETY: repr(C), no padding (4 + 8 bytes), every bit pattern valid.
        unsafe impl aya::Pod for ExpKey {}
        let slot = self.dp.config()?.active_slot;
        // `EXP_DIR1`/`EXP_DIR2`: a DIR-24-8 stand-in for `PEER_V4` (active slot only). DIR1
        // is indexed by the top 24 address bits: 0 = the catch-all class (kept at DIR2[0]),
        // `1 << 31 | chunk` = look at DIR2[chunk * 256 + low byte], else class + 1.
        let mut v4: Vec<(u32, u32, u32)> = entries
            .peer_v4
            .iter()
            .map(|e| {
                let len = e.prefix_len - enforcer_common::PEER_KEY_FIXED_BITS;
                let a = u32::from_be_bytes([e.data[4], e.data[5], e.data[6], e.data[7]]);
                (len, a, e.class)
            })
            .collect();
        v4.sort_by_key(|e| e.0);
        for ebpf in &mut self.objects {
            if ebpf.map("EXP_DIR1").is_none() {
                continue;
            }
            let catch_all = v4.iter().find(|e| e.0 == 0).map(|e| e.2).unwrap_or(0);
            let mut l1: std::collections::HashMap<u32, u32> = Default::default();
            let mut chunks: Vec<[u32; 256]> = vec![[catch_all; 256]];
            for &(len, a, class) in &v4 {
                if len == 0 {
                    continue;
                }
                if len <= 24 {
                    let first = a >> 8;
                    for i in first..first + (1u32 << (24 - len)) {
                        l1.insert(i, class + 1);
                    }
                    continue;
                }
                let hi = a >> 8;
                let chunk = match l1.get(&hi) {
                    Some(v) if v & 0x8000_0000 != 0 => (v & 0x7fff_ffff) as usize,
                    other => {
                        let fill = match other {
                            Some(v) => v - 1,
                            None => catch_all,
                        };
                        chunks.push([fill; 256]);
                        let c = chunks.len() - 1;
                        l1.insert(hi, 0x8000_0000 | c as u32);
                        c
                    }
                };
                let lo = (a & 0xff) as usize;
                let n = 1usize << (32 - len);
                for x in &mut chunks[chunk][lo..lo + n] {
                    *x = class;
                }
            }
            {
                let map = ebpf.map_mut("EXP_DIR2").context("EXP_DIR2")?;
                let mut d2: aya::maps::Array<&mut MapData, u32> = aya::maps::Array::try_from(map)?;
                for (c, chunk) in chunks.iter().enumerate() {
                    for (i, v) in chunk.iter().enumerate() {
                        d2.set((c * 256 + i) as u32, *v, 0)?;
                    }
                }
            }
            let map = ebpf.map_mut("EXP_DIR1").context("EXP_DIR1")?;
            let mut d1: aya::maps::Array<&mut MapData, u32> = aya::maps::Array::try_from(map)?;
            for (i, v) in &l1 {
                d1.set(*i, *v, 0)?;
            }
            println!(
                "EXP_DIR: {} level-1 entries, {} chunks of 256",
                l1.len(),
                chunks.len()
            );
        }
        for ebpf in &mut self.objects {
            let Some(map) = ebpf.map_mut("EXP_PEER4") else {
                continue;
            };
            let mut m: HashMap<&mut MapData, ExpKey, u32> = HashMap::try_from(map)?;
            let old: Vec<ExpKey> = m.keys().filter_map(Result::ok).collect();
            for k in old {
                let _ = m.remove(&k);
            }
            for e in &entries.peer_v4 {
                let len = e.prefix_len - enforcer_common::PEER_KEY_FIXED_BITS;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let a = u32::from_be_bytes([e.data[4], e.data[5], e.data[6], e.data[7]]) & mask;
                let mut data = [0u8; 8];
                data[..4].copy_from_slice(&slot.to_be_bytes());
                data[4..].copy_from_slice(&a.to_be_bytes());
                m.insert(ExpKey { len, data }, e.class, 0)?;
            }
        }
        Ok(())
    }
}

/// Loads program `name` of the object at `path` on the datapath's pinned maps (aya reuses a
/// map pin given with `map_pin_path`); maps the datapath does not have are created afresh.
fn load_from_object(
    dp: &Datapath,
    pins: &PinBase,
    path: &std::path::Path,
    name: &str,
) -> Result<(aya::Ebpf, SchedClassifier)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    load_from_bytes(dp, pins, &bytes, path, name)
}

fn load_from_bytes(
    dp: &Datapath,
    pins: &PinBase,
    bytes: &[u8],
    path: &std::path::Path,
    name: &str,
) -> Result<(aya::Ebpf, SchedClassifier)> {
    // aya wants the object 8-byte aligned.
    let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `aligned` holds at least `bytes.len()` bytes; u8 has no alignment needs.
    let view =
        unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), bytes.len()) };
    view.copy_from_slice(bytes);
    let mut loader = EbpfLoader::new();
    let map_paths: Vec<(&str, PathBuf)> =
        ALL_MAPS.iter().map(|n| (*n, dp.paths().map(n))).collect();
    for (map, p) in &map_paths {
        loader.map_pin_path(map, p.as_path());
    }
    let mut ebpf = loader
        .load(view)
        .with_context(|| format!("loading {}", path.display()))?;
    let p: &mut SchedClassifier = ebpf
        .program_mut(name)
        .with_context(|| format!("{} has no program {name}", path.display()))?
        .try_into()?;
    p.load().with_context(|| format!("loading {name}"))?;
    // Measure through a pin: the simplest owned handle aya gives for a loaded program.
    // bpffs refuses names with a dot.
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("object");
    let pin = pins
        .path()
        .join(format!("probe_{}_{name}", file.replace('.', "_")));
    p.pin(&pin).with_context(|| format!("pinning {name}"))?;
    let prog = SchedClassifier::from_pin(&pin).context("program pin")?;
    Ok((ebpf, prog))
}

/// The parse-only program of the embedded object, when it has one.
const PARSE_ONLY: &str = "enforcer_bench_parse_only";

/// Floors on the established-flow ACK frames: the empty program and the parse-only program
/// (repeat N median over the variants, repeat 1 median over `DISTINCT` runs).
fn floors(p: &mut Probe) -> Result<()> {
    let empty = empty_prog::Empty::load()?;
    let bytes = enforcer_user::ebpf_object::object().map_err(|e| anyhow::anyhow!("{e}"))?;
    let parse_only = match load_from_bytes(
        &p.dp,
        &p._pins,
        bytes,
        std::path::Path::new("embedded"),
        PARSE_ONLY,
    ) {
        Ok((ebpf, prog)) => {
            p.objects.push(ebpf);
            Some(Prog {
                name: PARSE_ONLY.into(),
                prog,
            })
        }
        Err(e) => {
            println!("no parse-only floor: {e:#}");
            None
        }
    };
    for v6 in [false, true] {
        let frames: Vec<Vec<u8>> = (0..VARIANTS)
            .map(|k| {
                let (src, port) = peer(10, k, v6);
                tcp_frame(src, 40_000 + k as u16, port, frame::TCP_ACK)
            })
            .collect::<Result<_>>()?;
        let (mut en, mut e1, mut pn, mut p1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for f in &frames {
            en.push(empty.run(f, REPEAT)?);
            if let Some(po) = &parse_only {
                pn.push(po.run(f, REPEAT, PASS)?);
            }
        }
        for j in 0..DISTINCT {
            let f = &frames[j % VARIANTS];
            e1.push(empty.run(f, 1)?);
            if let Some(po) = &parse_only {
                p1.push(po.run(f, 1, PASS)?);
            }
        }
        println!(
            "floor {}: empty program {:.0} ns (repeat 1: {:.0}); parse-only {:.0} ns (repeat 1: {:.0})",
            if v6 { "IPv6" } else { "IPv4" },
            median(en),
            median(e1),
            median(pn),
            median(p1)
        );
    }
    Ok(())
}

/// An empty tc program (`r0 = TCX_NEXT; exit`) loaded with raw bpf(2), as the benchmark's.
mod empty_prog {
    use anyhow::{Result, bail};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const INSNS: [u64; 2] = [0xffff_ffff_0000_00b7, 0x0000_0000_0000_0095];

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

        pub fn run(&self, frame: &[u8], repeat: u32) -> Result<f64> {
            use std::os::fd::AsRawFd as _;
            let mut a = Attr::default();
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

fn peer(rules: usize, k: usize, v6: bool) -> (IpAddr, u16) {
    let r = (k * 7919) % rules;
    (in_rule_net(r, v6, k), rule_port(r))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per program: [established N, established 1, denied N, denied 1, allowed 1].
fn measure(p: &mut Probe, rules: usize, v6: bool) -> Result<Vec<[f64; 5]>> {
    use frame::{TCP_ACK, TCP_SYN};
    let n = p.progs.len();
    let mut cols: Vec<[Vec<f64>; 5]> = (0..n).map(|_| Default::default()).collect();
    p.clear_conntrack();
    let mut acks = Vec::new();
    for k in 0..VARIANTS {
        let (src, port) = peer(rules, k, v6);
        let sport = 40_000 + k as u16;
        p.progs[n - 1].run(&tcp_frame(src, sport, port, TCP_SYN)?, 1, PASS)?;
        acks.push(tcp_frame(src, sport, port, TCP_ACK)?);
    }
    for ack in &acks {
        for (i, prog) in p.progs.iter().enumerate() {
            cols[i][0].push(prog.run(ack, REPEAT, PASS)?);
        }
    }
    for j in 0..DISTINCT {
        for (i, prog) in p.progs.iter().enumerate() {
            cols[i][1].push(prog.run(&acks[j % VARIANTS], 1, PASS)?);
        }
    }
    p.clear_conntrack();
    for k in 0..VARIANTS {
        let (src, _) = peer(rules, k, v6);
        let f = tcp_frame(src, 30_000 + k as u16, DENIED_PORT, TCP_SYN)?;
        for (i, prog) in p.progs.iter().enumerate() {
            cols[i][2].push(prog.run(&f, REPEAT, DROP)?);
        }
    }
    // Each program gets its own distinct frames (a frame one program ran is cache-warm for
    // the other): program i takes the frames k ≡ i (mod n).
    for k in 0..DISTINCT * n {
        let (src, _) = peer(rules, k, v6);
        let f = tcp_frame(src, 1024 + (k % 60_000) as u16, DENIED_PORT, TCP_SYN)?;
        cols[k % n][3].push(p.progs[k % n].run(&f, 1, DROP)?);
    }
    for k in 0..DISTINCT * n {
        let (src, port) = peer(rules, DISTINCT * n + k, v6);
        let f = tcp_frame(src, 1024 + (k % 60_000) as u16, port, TCP_SYN)?;
        cols[k % n][4].push(p.progs[k % n].run(&f, 1, PASS)?);
    }
    p.clear_conntrack();
    Ok(cols.into_iter().map(|c| c.map(median)).collect::<Vec<_>>())
}

/// Loops one scenario for `secs` seconds; prints runs and mean ns/packet.
fn run_loop(p: &mut Probe, rules: usize, what: &str, secs: u64, baseline: bool) -> Result<()> {
    use frame::{TCP_ACK, TCP_SYN};
    let idx = if baseline { 0 } else { p.progs.len() - 1 };
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut total) = (0u64, 0f64);
    p.clear_conntrack();
    match what {
        "established" => {
            let (src, port) = peer(rules, 0, false);
            p.progs[idx].run(&tcp_frame(src, 40_000, port, TCP_SYN)?, 1, PASS)?;
            let ack = tcp_frame(src, 40_000, port, TCP_ACK)?;
            while Instant::now() < until {
                total += p.progs[idx].run(&ack, REPEAT, PASS)?;
                runs += 1;
            }
        }
        "denied" => {
            let (src, _) = peer(rules, 0, false);
            let f = tcp_frame(src, 30_000, DENIED_PORT, TCP_SYN)?;
            while Instant::now() < until {
                total += p.progs[idx].run(&f, REPEAT, DROP)?;
                runs += 1;
            }
        }
        "denied1" | "allowed1" => {
            let allowed = what == "allowed1";
            let frames: Vec<Vec<u8>> = (0..4096)
                .map(|k| {
                    let (src, port) = peer(rules, k, false);
                    let dport = if allowed { port } else { DENIED_PORT };
                    tcp_frame(src, 1024 + (k % 60_000) as u16, dport, TCP_SYN)
                })
                .collect::<Result<_>>()?;
            let want = if allowed { PASS } else { DROP };
            'outer: loop {
                for f in &frames {
                    if Instant::now() >= until {
                        break 'outer;
                    }
                    total += p.progs[idx].run(f, 1, want)?;
                    runs += 1;
                }
                if allowed {
                    p.clear_conntrack();
                }
            }
        }
        other => bail!("PERF_PROBE_LOOP={other}: want established, denied, denied1 or allowed1"),
    }
    println!(
        "loop {what} on {} ({rules} rules): {runs} runs, mean {:.1} ns/run",
        p.progs[idx].name,
        total / runs.max(1) as f64
    );
    Ok(())
}

#[test]
#[ignore = "profiling driver: root, prints numbers, asserts nothing"]
fn perf_probe() -> Result<()> {
    let rules: Vec<usize> = std::env::var("PERF_PROBE_RULES")
        .unwrap_or_else(|_| "10,10000".into())
        .split(',')
        .map(|s| s.trim().parse().context("PERF_PROBE_RULES"))
        .collect::<Result<_>>()?;
    let baseline: Vec<PathBuf> = std::env::var_os("PERF_PROBE_BASELINE")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let mut p = Probe::open(baseline)?;
    if let Ok(what) = std::env::var("PERF_PROBE_LOOP") {
        let secs = std::env::var("PERF_PROBE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let on_baseline = std::env::var_os("PERF_PROBE_LOOP_BASELINE").is_some();
        let n = *rules.last().context("no rule count")?;
        p.program(n)?;
        return run_loop(&mut p, n, &what, secs, on_baseline);
    }
    floors(&mut p)?;
    println!(
        "| program | rules | family | established N | established 1 | new denied N | new denied 1 | new allowed 1 |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    for &n in &rules {
        p.program(n)?;
        for v6 in [false, true] {
            let res = measure(&mut p, n, v6)?;
            for (prog, r) in p.progs.iter().zip(res) {
                println!(
                    "| {} | {n} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    prog.name,
                    if v6 { "IPv6" } else { "IPv4" },
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4]
                );
            }
        }
    }
    Ok(())
}
