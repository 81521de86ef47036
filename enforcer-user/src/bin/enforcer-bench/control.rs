//! Control plane: time and peak memory to compile and program N policies for M endpoints,
//! kernel map memory, and the change latency — from a policy edited or a pod added (the new
//! `Inventory` available) until the first `BPF_PROG_TEST_RUN` of a packet whose verdict the
//! change flips returns the new verdict.
//!
//! Each size runs in a child process (`--control-plane-child P M`) with a time limit, so its
//! peak RSS (`VmHWM`) is its own and a size that does not finish is reported, not waited for.

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use enforcer_common::programs;
use enforcer_user::{
    model::{Inventory, Pod, PortSpec},
    testsupport::frame,
};
use serde::{Deserialize, Serialize};

use crate::{
    Bench, DROP, PASS, entries,
    inventories::*,
    map_memory, max_rss_kib, ms,
    report::{Aim, Plot, RunOpts, Section, Series},
    run_child, tcp_frame,
};

/// (policies, endpoints) of every size; edit here.
const SIZES_QUICK: &[(usize, usize)] = &[(100, 100), (1_000, 1_000), (10_000, 5_000)];
const SIZES_FULL: &[(usize, usize)] = &[(100, 100), (1_000, 1_000), (10_000, 5_000)];
/// Time limit of one size's child (build, compile, program, three more compiles for the
/// warm-up and the two changes).
const LIMIT_QUICK: Duration = Duration::from_secs(60);
const LIMIT_FULL: Duration = Duration::from_secs(400);
/// How long the test-run thread waits for the new verdict after `program()` returned.
const VERDICT_WAIT: Duration = Duration::from_secs(5);

/// One change and how long until a packet saw its effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Change {
    pub kind: String,
    pub compile_ms: f64,
    pub render_ms: f64,
    pub program_ms: f64,
    /// Map entries written plus deleted by `program()`.
    pub entries_written: usize,
    /// From the new inventory being available to the first test run returning the new verdict.
    pub total_ms: f64,
    /// Test runs the packet thread made from the change until the new verdict.
    pub test_runs: u64,
}

/// One size's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CpRow {
    pub policies: usize,
    pub endpoints: usize,
    pub build_ms: f64,
    pub compile_ms: f64,
    pub render_ms: f64,
    pub program_ms: f64,
    pub entries: usize,
    pub verdicts: usize,
    pub peak_rss_mib: f64,
    pub compile_rss_mib: f64,
    /// (map name, `memlock` bytes) after the first `program()`.
    pub map_bytes: Vec<(String, u64)>,
    pub changes: Vec<Change>,
}

impl CpRow {
    fn map_total(&self) -> u64 {
        self.map_bytes.iter().map(|(_, b)| b).sum()
    }
    fn to_programmed_ms(&self) -> f64 {
        self.compile_ms + self.render_ms + self.program_ms
    }
}

// ---------------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------------

/// Applies `inv` (compile, render, `program()`) while another thread loops test runs of
/// `frame` (verdict `DROP` before), and returns when that thread saw `PASS`.
fn change(b: &mut Bench, kind: &str, inv: &Inventory, frame: &[u8]) -> Result<Change> {
    b.run(frame, 1, DROP)
        .with_context(|| format!("{kind}: the packet must be denied before the change"))?;
    let prog_path = b.dp.paths().program(programs::TO_ENDPOINT);
    let ready = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| -> Result<Change> {
        let packets = sc.spawn(|| -> Result<(Instant, u64)> {
            let prog = SchedClassifier::from_pin(&prog_path)
                .context("opening the pinned to-endpoint program")?;
            let mut runs = 0u64;
            loop {
                let r = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        repeat: 1,
                        ..TestRunOptions::default()
                    })
                    .context("BPF_PROG_TEST_RUN")?;
                let now = Instant::now();
                ready.store(true, Ordering::Release);
                runs += 1;
                match r.return_value {
                    PASS => return Ok((now, runs)),
                    DROP => {}
                    other => bail!("unexpected verdict {}", other as i32),
                }
                if stop.load(Ordering::Acquire) {
                    bail!("no new verdict {VERDICT_WAIT:?} after program() returned");
                }
            }
        });
        while !ready.load(Ordering::Acquire) && !packets.is_finished() {
            std::thread::yield_now();
        }
        // t0: the new inventory is available.
        let t0 = Instant::now();
        let applied = entries(inv, true).and_then(|(e, c, r)| {
            let t = Instant::now();
            let report = b.dp.program(&e).context("program")?;
            Ok((c, r, t.elapsed(), report.written + report.deleted))
        });
        let deadline = Instant::now() + VERDICT_WAIT;
        while !packets.is_finished() && Instant::now() < deadline && applied.is_ok() {
            std::thread::sleep(Duration::from_micros(50));
        }
        stop.store(true, Ordering::Release);
        let seen = packets
            .join()
            .map_err(|_| anyhow::anyhow!("the test-run thread panicked"))?;
        let (compile, render, program, written) = applied?;
        let (t1, runs) = seen?;
        Ok(Change {
            kind: kind.into(),
            compile_ms: ms(compile),
            render_ms: ms(render),
            program_ms: ms(program),
            entries_written: written,
            total_ms: ms(t1.saturating_duration_since(t0)),
            test_runs: runs,
        })
    })
}

/// `--control-plane-child P M`: one size; prints `RESULT <json>`.
pub(crate) fn child(policies: usize, endpoints: usize) -> Result<()> {
    if policies < 1 || endpoints < 2 {
        bail!("control plane needs at least 1 policy and 2 endpoints");
    }
    let started = Instant::now();
    let inv = control_plane_inventory(policies, endpoints)?;
    let build_ms = ms(started.elapsed());
    let (e, compile_time, render_time) = entries(&inv, true)?;
    let compile_rss_mib = max_rss_kib() / 1024.0;
    let mut b = Bench::open("bench-cp")?;
    let started = Instant::now();
    b.dp.program(&e).context("program")?;
    let program_ms = ms(started.elapsed());
    let count =
        e.endpoints.len() + e.peer_v4.len() + e.peer_v6.len() + e.ports.len() + e.verdicts.len();
    let verdicts = e.verdicts.len();
    drop(e);
    let map_bytes = map_memory(&b.dp)?;
    let peak_rss_mib = max_rss_kib() / 1024.0;

    // Warm-up: an unrelated change (the last policy's net rule, group g9, moves port), so both
    // slots hold nearly the same tables, as in a running agent; not measured.
    let mut warm = inv;
    if let Some(r) = warm.policies.last_mut().and_then(|p| p.ingress.first_mut()) {
        r.destination.ports = vec![PortSpec::Range(DENIED_PORT + 2, DENIED_PORT + 2)];
    }
    let (e, _, _) = entries(&warm, true)?;
    b.dp.program(&e).context("program (warm-up)")?;
    drop(e);

    // A policy edited: policy 0 (selects pod 0's group) lets its net rule allow another port.
    let mut edited = warm;
    let rule = edited
        .policies
        .first_mut()
        .and_then(|p| p.ingress.first_mut())
        .context("policy 0 has no rule")?;
    rule.destination.ports = vec![PortSpec::Range(DENIED_PORT + 1, DENIED_PORT + 1)];
    let pol_frame = tcp_frame(
        in_rule_net(0, false, 1),
        41_000,
        DENIED_PORT + 1,
        frame::TCP_SYN,
    )?;
    let policy_change = change(&mut b, "policy edited", &edited, &pol_frame)?;

    // A pod added in group g1, which policy 0 allows into pod 0 on rule_port(1).
    let mut added = edited;
    added.pods.push(Pod {
        namespace: "bench".into(),
        name: format!("p{endpoints}"),
        labels: labels(&[("app", "bench".into()), ("group", "g1".into())]),
        service_account: "default".into(),
        ports: Vec::new(),
        host_network: false,
        node_name: None,
        ips: vec![IpAddr::V4(pod_v4(endpoints)), IpAddr::V6(pod_v6(endpoints))],
        origin: origin(),
    });
    let pod_frame = tcp_frame(
        IpAddr::V4(pod_v4(endpoints)),
        42_000,
        rule_port(1),
        frame::TCP_SYN,
    )?;
    let pod_change = change(&mut b, "pod added", &added, &pod_frame)?;

    let row = CpRow {
        policies,
        endpoints,
        build_ms,
        compile_ms: ms(compile_time),
        render_ms: ms(render_time),
        program_ms,
        entries: count,
        verdicts,
        peak_rss_mib: peak_rss_mib.max(max_rss_kib() / 1024.0),
        compile_rss_mib,
        map_bytes,
        changes: vec![policy_change, pod_change],
    };
    println!("RESULT {}", serde_json::to_string(&row)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The section
// ---------------------------------------------------------------------------------------------

enum Outcome {
    Done(Box<CpRow>),
    NotFinished(Duration),
}

pub(crate) fn run(opts: &RunOpts) -> Result<Section> {
    let (sizes, limit) = if opts.quick {
        (SIZES_QUICK, LIMIT_QUICK)
    } else {
        (SIZES_FULL, LIMIT_FULL)
    };
    let limit = opts.size_limit.unwrap_or(limit);
    eprintln!(
        "control plane: each size in a child process (limit {} s)",
        limit.as_secs()
    );
    let mut done = Vec::new();
    for &(p, m) in sizes {
        let args = [
            "--control-plane-child".to_string(),
            p.to_string(),
            m.to_string(),
        ];
        let outcome = match run_child::<CpRow>(&args, limit)
            .with_context(|| format!("control plane {p} x {m}"))?
        {
            Some(row) => {
                eprintln!(
                    "  {p:>6} policies x {m:>5} endpoints: compile {:.0} ms, render {:.0} ms, program {:.0} ms, peak RSS {:.0} MiB, maps {:.1} MiB",
                    row.compile_ms,
                    row.render_ms,
                    row.program_ms,
                    row.peak_rss_mib,
                    row.map_total() as f64 / 1_048_576.0
                );
                for c in &row.changes {
                    eprintln!(
                        "    {}: new verdict after {:.1} ms (compile {:.1} + render {:.1} + program {:.2} ms, {} entries written)",
                        c.kind,
                        c.total_ms,
                        c.compile_ms,
                        c.render_ms,
                        c.program_ms,
                        c.entries_written
                    );
                }
                Outcome::Done(Box::new(row))
            }
            None => {
                eprintln!(
                    "  {p:>6} policies x {m:>5} endpoints: not finished within {} s",
                    limit.as_secs()
                );
                Outcome::NotFinished(limit)
            }
        };
        done.push(((p, m), outcome));
    }
    Ok(section(&done))
}

fn section(done: &[((usize, usize), Outcome)]) -> Section {
    let rows: Vec<&CpRow> = done
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Done(r) => Some(&**r),
            Outcome::NotFinished(_) => None,
        })
        .collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Control plane\n\n\
         Policy j selects group `g<j mod 10>` of the endpoints and allows TCP from one /28 + /124 \
         (its own port) and from the next group's endpoints. Each size runs in a fresh child \
         process: peak RSS is that process's `VmHWM` (userspace; \"after compile\" is before the \
         eBPF object is loaded). Map memory is kernel memory: the sum of `memlock` in \
         `/proc/self/fdinfo` over every Enforcer map after the first `program()` (preallocated \
         hash maps count their capacity, LPM tries their entries).\n\n\
         | policies | endpoints | compile ms | render ms | program() ms | compile + render + program ms | map entries | verdict entries | peak RSS MiB after compile | peak RSS MiB at end | map memory MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((p, m), o) in done {
        match o {
            Outcome::Done(r) => {
                let _ = writeln!(
                    md,
                    "| {p} | {m} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.1} |",
                    r.compile_ms,
                    r.render_ms,
                    r.program_ms,
                    r.to_programmed_ms(),
                    r.entries,
                    r.verdicts,
                    r.compile_rss_mib,
                    r.peak_rss_mib,
                    r.map_total() as f64 / 1_048_576.0
                );
            }
            Outcome::NotFinished(l) => {
                let _ = writeln!(
                    md,
                    "| {p} | {m} | not finished within {} s | | | | | | | | |",
                    l.as_secs()
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\n### Change latency\n\n\
         With the datapath programmed (and one unrelated change applied, so both table slots hold \
         nearly the same tables, as in a running agent), a thread loops `BPF_PROG_TEST_RUN` \
         (repeat 1) of a packet the change flips from denied to allowed, while the main thread \
         applies the change: t0 is the new `Inventory` being available, then a full `compile`, \
         rendering to map entries and `Datapath::program` (flip grace 0); the total ends at the \
         first test run that returns the new verdict. *Policy edited*: policy 0's net rule allows \
         another port; the packet comes from that net to that port. *Pod added*: a new pod in \
         the group policy 0 allows; the packet comes from its address.\n\n\
         | policies | endpoints | change | compile ms | render ms | program() ms | entries written | new verdict after ms | test runs meanwhile |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        for c in &r.changes {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {} | {:.1} | {} |",
                r.policies,
                r.endpoints,
                c.kind,
                c.compile_ms,
                c.render_ms,
                c.program_ms,
                c.entries_written,
                c.total_ms,
                c.test_runs
            );
        }
    }
    if let Some(big) = rows.last() {
        let _ = writeln!(
            md,
            "\n### Map memory by map ({} policies × {} endpoints)\n\n| map | bytes |\n|---|---:|",
            big.policies, big.endpoints
        );
        for (name, bytes) in &big.map_bytes {
            let _ = writeln!(md, "| `{name}` | {bytes} |");
        }
        let _ = writeln!(md, "| total | {} |", big.map_total());
    }

    let mut csv = String::from(
        "policies,endpoints,build_ms,compile_ms,render_ms,program_ms,map_entries,verdict_entries,peak_rss_mib,peak_rss_after_compile_mib,map_bytes\n",
    );
    let mut change_csv = String::from(
        "policies,endpoints,change,compile_ms,render_ms,program_ms,entries_written,new_verdict_after_ms,test_runs\n",
    );
    let mut map_csv = String::from("policies,endpoints,map,bytes\n");
    for r in &rows {
        let _ = writeln!(
            csv,
            "{},{},{:.1},{:.1},{:.1},{:.1},{},{},{:.1},{:.1},{}",
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
            r.map_total()
        );
        for c in &r.changes {
            let _ = writeln!(
                change_csv,
                "{},{},{},{:.2},{:.2},{:.3},{},{:.3},{}",
                r.policies,
                r.endpoints,
                c.kind,
                c.compile_ms,
                c.render_ms,
                c.program_ms,
                c.entries_written,
                c.total_ms,
                c.test_runs
            );
        }
        for (name, bytes) in &r.map_bytes {
            let _ = writeln!(map_csv, "{},{},{name},{bytes}", r.policies, r.endpoints);
        }
    }
    for ((p, m), o) in done {
        if let Outcome::NotFinished(l) = o {
            let _ = writeln!(csv, "{p},{m},not finished within {} s,,,,,,,,", l.as_secs());
        }
    }
    Section {
        markdown: md,
        csv: vec![
            ("control_plane.csv".into(), csv),
            ("change_latency.csv".into(), change_csv),
            ("map_memory.csv".into(), map_csv),
        ],
        plots: plots(&rows),
        aims: aims(done),
    }
}

fn aims(done: &[((usize, usize), Outcome)]) -> Vec<Aim> {
    let mut aims = Vec::new();
    let target = done.iter().find(|((p, m), _)| *p == 10_000 && *m == 5_000);
    let largest = done.iter().rev().find_map(|(_, o)| match o {
        Outcome::Done(r) => Some(&**r),
        Outcome::NotFinished(_) => None,
    });
    const TIME_AIM: &str =
        "10,000 policies for 5,000 endpoints compiled and programmed in under 1 s";
    const MEM_AIM: &str =
        "10,000 policies for 5,000 endpoints compiled and programmed in under 1 GiB";
    match target {
        Some((_, Outcome::Done(r))) => {
            let t = r.to_programmed_ms();
            aims.push(Aim {
                aim: TIME_AIM.into(),
                measured: format!(
                    "compile {:.0} + render {:.0} + program {:.0} = {t:.0} ms / 1000 ms",
                    r.compile_ms, r.render_ms, r.program_ms
                ),
                value: t / 1000.0,
                met: t < 1000.0,
            });
            aims.push(Aim {
                aim: MEM_AIM.into(),
                measured: format!(
                    "peak RSS {:.0} MiB / 1024 MiB (kernel map memory, not in RSS: {:.1} MiB)",
                    r.peak_rss_mib,
                    r.map_total() as f64 / 1_048_576.0
                ),
                value: r.peak_rss_mib / 1024.0,
                met: r.peak_rss_mib < 1024.0,
            });
        }
        Some((_, Outcome::NotFinished(l))) => {
            for aim in [TIME_AIM, MEM_AIM] {
                aims.push(Aim {
                    aim: aim.into(),
                    measured: format!("not finished within {} s", l.as_secs()),
                    value: f64::NAN,
                    met: false,
                });
            }
        }
        None => {
            if let Some(r) = largest {
                aims.push(Aim {
                    aim: TIME_AIM.into(),
                    measured: format!(
                        "not in this run; at {} × {}: {:.0} ms",
                        r.policies,
                        r.endpoints,
                        r.to_programmed_ms()
                    ),
                    value: f64::NAN,
                    met: false,
                });
            }
        }
    }
    if let Some(r) = largest {
        for c in &r.changes {
            aims.push(Aim {
                aim: format!(
                    "one {} until the new verdict applies in under 10 ms (at {} policies × {} endpoints)",
                    if c.kind.starts_with("pod") { "pod change" } else { "rule change" },
                    r.policies,
                    r.endpoints
                ),
                measured: format!(
                    "{}: {:.1} ms (compile {:.1} + render {:.1} + program {:.2}) / 10 ms",
                    c.kind, c.total_ms, c.compile_ms, c.render_ms, c.program_ms
                ),
                value: c.total_ms / 10.0,
                met: c.total_ms < 10.0,
            });
        }
    }
    aims
}

fn plots(rows: &[&CpRow]) -> Vec<Plot> {
    if rows.is_empty() {
        return Vec::new();
    }
    let x = |r: &CpRow| r.policies as f64;
    let sizes = rows
        .iter()
        .map(|r| format!("{}×{}", r.policies, r.endpoints))
        .collect::<Vec<_>>()
        .join(", ");
    let x_label = format!("policies (policies × endpoints: {sizes})");
    let series = |name: &str, get: &dyn Fn(&CpRow) -> f64| Series {
        name: name.into(),
        points: rows.iter().map(|r| (x(r), get(r))).collect(),
    };
    let mut change_series = Vec::new();
    for kind in ["policy edited", "pod added"] {
        change_series.push(Series {
            name: format!("{kind}: new verdict after"),
            points: rows
                .iter()
                .filter_map(|r| {
                    let c = r.changes.iter().find(|c| c.kind == kind)?;
                    Some((x(r), c.total_ms))
                })
                .collect(),
        });
        change_series.push(Series {
            name: format!("{kind}: program()"),
            points: rows
                .iter()
                .filter_map(|r| {
                    let c = r.changes.iter().find(|c| c.kind == kind)?;
                    Some((x(r), c.program_ms))
                })
                .collect(),
        });
    }
    if let (Some(lo), Some(hi)) = (rows.first(), rows.last()) {
        change_series.push(Series {
            name: "aim: 10 ms".into(),
            points: vec![(x(lo), 10.0), (x(hi), 10.0)],
        });
    }
    vec![
        Plot {
            file: "control_plane_time.png".into(),
            title: "Compile and program time vs size".into(),
            x_label: x_label.clone(),
            y_label: "ms".into(),
            log_x: true,
            log_y: true,
            series: vec![
                series("compile", &|r| r.compile_ms),
                series("render map entries", &|r| r.render_ms),
                series("program() into fresh maps", &|r| r.program_ms),
                series("compile + render + program", &|r| r.to_programmed_ms()),
            ],
        },
        Plot {
            file: "control_plane_memory.png".into(),
            title: "Memory vs size".into(),
            x_label: x_label.clone(),
            y_label: "MiB".into(),
            log_x: true,
            log_y: true,
            series: vec![
                series("peak RSS (userspace)", &|r| r.peak_rss_mib),
                series("peak RSS after compile", &|r| r.compile_rss_mib),
                series("kernel map memory", &|r| r.map_total() as f64 / 1_048_576.0),
            ],
        },
        Plot {
            file: "change_latency.png".into(),
            title: "Change until the first packet gets the new verdict".into(),
            x_label,
            y_label: "ms".into(),
            log_x: true,
            log_y: true,
            series: change_series,
        },
    ]
}
