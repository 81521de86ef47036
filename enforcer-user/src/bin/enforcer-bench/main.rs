//! `enforcer-bench`: the benchmarks behind `cargo xtask bench [--quick]` (see
//! `docs/benchmarks.md`). Needs root and the real eBPF object; built with the `testgen`
//! feature (it uses `enforcer_user::testsupport` for pin bases and frames).
//!
//! Sections (one module each, all returning a [`report::Section`]):
//! - `packet`: per-packet cost under `BPF_PROG_TEST_RUN` (ns/packet) against the floors, as
//!   rules, endpoints and network-set CIDRs grow, IPv4 and IPv6;
//! - `control`: compile + program time, peak RSS and map memory for N policies × M endpoints,
//!   and the change latency (a policy edited, a pod added) until a packet gets the new verdict;
//! - `pps`: packets/s through a veth pair; `linear`: the linear-scan eBPF reference.
//!
//! The full run writes `<out>/results.md` (command, machine, every section, the aims table,
//! the plots), the sections' CSV files and PNG plots; tables go to stdout, progress to stderr.
//! Sizes that may take long run in child processes of this binary with a time limit
//! (`--packet-child`, `--control-plane-child`).

use std::{
    fmt::Write as _,
    io::Read as _,
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

mod control;
mod flat;
mod inventories;
mod iptables;
mod linear;
mod packet;
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
    model::{Inventory, Protocol},
    testsupport::{PinBase, frame},
};

/// `TCX_NEXT`: allowed.
pub(crate) const PASS: u32 = u32::MAX;
/// `TC_ACT_SHOT`.
pub(crate) const DROP: u32 = 2;
/// Loopback: the device a tc `BPF_PROG_TEST_RUN` gives the skb; the endpoint under test.
pub(crate) const LO: u32 = 1;

#[derive(Parser)]
#[command(about = "Enforcer benchmarks (run through `cargo xtask bench`)")]
struct Args {
    /// Smaller sizes and fewer repetitions (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Where results.md, the CSV files and the plots go.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// The command line to record in results.md.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
    /// Internal: run one control-plane size in this process and print one result line.
    #[arg(long, num_args = 2, value_names = ["POLICIES", "ENDPOINTS"], hide = true)]
    control_plane_child: Option<Vec<usize>>,
    /// Internal: measure one per-packet size in this process and print one result line.
    #[arg(long, num_args = 2, value_names = ["AXIS", "SIZE"], hide = true)]
    packet_child: Option<Vec<String>>,
    /// Time limit in seconds of every size that runs in a child process (per packet, control
    /// plane), instead of the sections' own; a size over it is reported as not finished.
    #[arg(long, value_name = "SECS")]
    size_limit: Option<u64>,
    /// Profiling aid: program the rules axis at RULES and loop one case (established, denied,
    /// new) under BPF_PROG_TEST_RUN for SECONDS (run `perf record -a -g` alongside).
    #[arg(long, num_args = 3, value_names = ["CASE", "RULES", "SECONDS"])]
    spin: Option<Vec<String>>,
    /// Run only this section (its module's name, e.g. `pps`) and print it; for development.
    #[arg(long)]
    section: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Shared by the sections
// ---------------------------------------------------------------------------------------------

/// Map entries with pod 0 on loopback (the test-run device) when `under_test`, and pod i on a
/// made-up ifindex, so `ENDPOINTS` holds every endpoint. Also returns the compile and render
/// times.
pub(crate) fn entries(
    inv: &Inventory,
    under_test: bool,
) -> Result<(MapEntries, Duration, Duration)> {
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

/// The datapath under `BPF_PROG_TEST_RUN`. Field order is drop order: handles close before
/// the pin base goes.
pub(crate) struct Bench {
    pub dp: Datapath,
    pub to_endpoint: SchedClassifier,
    pub conntrack: HashMap<MapData, CtKey, CtValue>,
    _pins: PinBase,
}

impl Bench {
    pub(crate) fn open(tag: &str) -> Result<Bench> {
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

    pub(crate) fn clear_conntrack(&mut self) {
        let keys: Vec<CtKey> = self.conntrack.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.conntrack.remove(&k);
        }
    }

    pub(crate) fn conntrack_len(&self) -> usize {
        self.conntrack.keys().filter_map(Result::ok).count()
    }

    /// ns/packet of `frame` run `repeat` times; checks the return value.
    pub(crate) fn run(&self, frame: &[u8], repeat: u32, want: u32) -> Result<f64> {
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

/// Kernel memory of every Enforcer map: (name, `memlock` bytes from `/proc/self/fdinfo`).
/// The kernel reports the map's own accounting (`map_mem_usage`): preallocated hash maps
/// their capacity, LPM tries their nodes.
pub(crate) fn map_memory(dp: &Datapath) -> Result<Vec<(String, u64)>> {
    dp.map_ids()
        .iter()
        .map(|&(name, id)| {
            let map =
                MapData::from_id(id).with_context(|| format!("opening map {name} (id {id})"))?;
            let fd = map.fd().as_fd().as_raw_fd();
            let path = format!("/proc/self/fdinfo/{fd}");
            let info = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let bytes = info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .with_context(|| format!("no memlock line in {path} ({name})"))?;
            Ok((name.to_string(), bytes))
        })
        .collect()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A TCP frame into pod 0 from `src`.
pub(crate) fn tcp_frame(src: IpAddr, src_port: u16, dst_port: u16, flags: u8) -> Result<Vec<u8>> {
    frame_from(src, Protocol::TCP, src_port, dst_port, flags)
}

/// A `protocol` frame into pod 0 from `src`.
pub(crate) fn frame_from(
    src: IpAddr,
    protocol: Protocol,
    src_port: u16,
    dst_port: u16,
    flags: u8,
) -> Result<Vec<u8>> {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(pod_v4(0)),
        IpAddr::V6(_) => IpAddr::V6(pod_v6(0)),
    };
    let p = Packet {
        src,
        dst,
        protocol,
        src_port: Some(src_port),
        dst_port: Some(dst_port),
        icmp_type: None,
        icmp_code: None,
    };
    frame::packet_frame(&p, flags, &[]).context("building a frame")
}

/// This process's peak RSS (`VmHWM`, KiB). Not `getrusage`: its `ru_maxrss` carries the
/// parent's peak across fork and exec.
pub(crate) fn max_rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn fmt_ns(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.0}")
    }
}

/// Runs this binary with `args` in a child process for at most `limit` and parses its
/// `RESULT <json>` stdout line; `None` when it did not finish in time (it is killed and the
/// pin bases it left under /sys/fs/bpf are removed). Its stderr (progress) goes to ours.
pub(crate) fn run_child<T: serde::de::DeserializeOwned>(
    args: &[String],
    limit: Duration,
) -> Result<Option<T>> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the child {args:?}"))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            break Some(status);
        }
        if started.elapsed() >= limit {
            child.kill().context("killing the child")?;
            child.wait().context("reaping the child")?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the child's stdout reader panicked"))?;
    let Some(status) = status else {
        remove_child_pins(pid);
        return Ok(None);
    };
    if !status.success() {
        remove_child_pins(pid);
        bail!("child {args:?} failed: {status}");
    }
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("no RESULT line from the child {args:?}"))?;
    Ok(Some(serde_json::from_str(line).with_context(|| {
        format!("parsing the child's {line:?}")
    })?))
}

/// Removes the pin bases (`/sys/fs/bpf/enforcer-bench*-<pid>-<n>`) a killed child left.
fn remove_child_pins(pid: u32) {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    let mark = format!("-{pid}-");
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("enforcer-bench")
            && name.contains(&mark)
            && let Err(err) = std::fs::remove_dir_all(e.path())
        {
            eprintln!("cleanup: removing {}: {err}", e.path().display());
        }
    }
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
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "- kernel: {kernel}\n- CPU: {model}, {cores} cores\n- memory: {mem}\n- bpf_jit_enable: {jit}\n\
         - load average at the start: {load}\n"
    )
}

/// The full run's sections, in `results.md` order: (name, runner).
type Runner = fn(&report::RunOpts) -> Result<report::Section>;

fn full_run_sections() -> Vec<(&'static str, Runner)> {
    vec![
        ("per packet", packet::run as Runner),
        ("control plane", control::run as Runner),
        ("veth packets/s", pps::run as Runner),
        ("linear-scan reference", linear::run as Runner),
    ]
}

fn aims_table(aims: &[report::Aim]) -> String {
    let mut md = String::from(
        "## Aims\n\nEvery aim of issue 5 measured in this run. Value: the measured ratio (to \
         compare with the aim's own ratio or 1.0), or the difference in ns where the measured \
         column says so.\n\n\
         | aim | measured | value | met? |\n|---|---|---:|---|\n",
    );
    for a in aims {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            a.aim,
            a.measured,
            if a.value.is_nan() {
                "-".to_string()
            } else {
                format!("{:.2}", a.value)
            },
            if a.met { "yes" } else { "**no**" }
        );
    }
    md
}

fn full_run(args: &Args) -> Result<ExitCode> {
    let opts = report::RunOpts {
        quick: args.quick,
        out: args.out.clone(),
        size_limit: args.size_limit.map(Duration::from_secs),
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let machine = machine_facts();
    let started = Instant::now();
    let sections = full_run_sections();
    let mut done: Vec<(&str, Result<report::Section>, Duration)> = Vec::new();
    for (i, (name, run)) in sections.iter().enumerate() {
        eprintln!(
            "\n== bench [{}/{}] {name} ({:.0} s elapsed)",
            i + 1,
            sections.len(),
            started.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let result = run(&opts);
        if let Err(e) = &result {
            eprintln!("== {name} failed: {e:#}");
        }
        done.push((name, result, t.elapsed()));
    }
    let total = started.elapsed();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Enforcer benchmark results\n\nCommand: `{}` ({} run, {:.0} s).\n\n{}\n\
         Methods, reproduction and what limits the numbers: `docs/benchmarks.md`. Section times: {}.\n",
        args.command,
        if args.quick { "quick" } else { "full" },
        total.as_secs_f64(),
        machine,
        done.iter()
            .map(|(n, _, t)| format!("{n} {:.0} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut aims = Vec::new();
    let mut plots = Vec::new();
    let mut failed = false;
    for (name, result, _) in &done {
        match result {
            Ok(s) => {
                md.push_str(s.markdown.trim_end());
                md.push_str("\n\n");
                for (file, content) in &s.csv {
                    let path = opts.out.join(file);
                    std::fs::write(&path, content)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                if let Err(e) = plot::render_all(&opts.out, &s.plots) {
                    eprintln!("plots of {name}: {e:#}");
                    failed = true;
                }
                plots.extend(s.plots.iter().map(|p| (p.file.clone(), p.title.clone())));
                aims.extend(s.aims.iter().cloned());
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(md, "## {name}\n\nFailed in this run: `{e:#}`\n");
            }
        }
    }
    md.push_str(&aims_table(&aims));
    if !plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for (file, title) in &plots {
            let _ = writeln!(md, "### {title}\n\n![{title}]({file})\n");
        }
    }
    let path = opts.out.join("results.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!("\n{md}");
    eprintln!(
        "bench: done in {:.0} s; wrote {} (and the CSV files and plots beside it)",
        total.as_secs_f64(),
        path.display()
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if let Some(pm) = &args.control_plane_child {
        control::child(pm[0], pm[1])?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(a) = &args.packet_child {
        let size = a[1].parse().with_context(|| format!("size {:?}", a[1]))?;
        packet::child(&a[0], size, args.quick)?;
        return Ok(ExitCode::SUCCESS);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load eBPF programs: run as root");
    }
    enforcer_user::ebpf_object::object().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(a) = &args.spin {
        let rules = a[1].parse().with_context(|| format!("rules {:?}", a[1]))?;
        let secs = a[2]
            .parse()
            .with_context(|| format!("seconds {:?}", a[2]))?;
        packet::spin(&a[0], rules, secs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = &args.section {
        let opts = report::RunOpts {
            quick: args.quick,
            out: args.out.clone(),
            size_limit: args.size_limit.map(Duration::from_secs),
        };
        let section = match name.as_str() {
            // One arm per section module, added by its owner, e.g.:
            // "pps" => pps::run(&opts)?,
            "pps" => pps::run(&opts)?,
            "packet" => packet::run(&opts)?,
            "control" => control::run(&opts)?,
            "linear" => linear::run(&opts)?,
            _ => bail!("unknown section {name:?}"),
        };
        report::emit(&opts, &section)?;
        return Ok(ExitCode::SUCCESS);
    }
    full_run(&args)
}
