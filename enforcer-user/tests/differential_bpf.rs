//! The real eBPF programs against the compiled tables and the reference evaluator (issue 3
//! §4, design brief §4): random inventories (`enforcer_user::testgen`) and random packets,
//! IPv4 and IPv6, every protocol the datapath parses and others, ports near rule boundaries,
//! peers among pod and host addresses, network-set and rule-net boundaries and random
//! addresses.
//!
//! For every case: compile → render the map entries → program the real maps through
//! [`Datapath::program`] (a fresh load pinned under a unique base in `/sys/fs/bpf`, removed at
//! the end, also on panic) → for each endpoint, point `ENDPOINTS` for the interface
//! `BPF_PROG_TEST_RUN` uses (loopback, ifindex 1: a tc test run gives the skb that device
//! unless the context names another) at the endpoint's policy sets, by programming the tables
//! with the endpoint on ifindex 1 → run `enforcer_to_endpoint` (the endpoint's ingress: the
//! peer is the source) or `enforcer_from_endpoint` (egress: the peer is the destination) on a
//! crafted Ethernet frame → compare three answers:
//!
//! 1. the reference evaluator's verdict and deciding rule for that endpoint and direction;
//! 2. the compiled tables, looked up in userspace ([`Compiled::lookup`] and, on the very
//!    entries written, [`lookup_entries`]);
//! 3. the BPF program: its return code (`TCX_NEXT` allow, `TC_ACT_SHOT` deny), the final
//!    `VERDICT_COUNTERS` reason, the `RULE_COUNTERS` and `STAGED_COUNTERS` deltas (the
//!    deciding rule and staged rule) and, for denies and staged differences, the flow event.
//!
//! `CONNTRACK` is emptied before every packet, so each packet is a new flow, and the event
//! rate limiter is reset, so no event is lost to it. A disagreement prints a reproducer: the
//! inventory (testgen's YAML-like rendering), the options, the packet, the frame and the three
//! answers; proptest shrinks it first and records the seed in
//! `tests/differential_bpf.proptest-regressions`, whose seeds (failures found so far and a
//! fixed set) run before the random cases on every run.
//!
//! Known, documented differences the comparison encodes rather than reports:
//! - ICMPv6 neighbour discovery and MLD (types 130–133, 135, 136 in IPv6) pass before policy
//!   (`REASON_PASS_ICMPV6_ND`, as Felix's `ICMPv6Filter` does), in the evaluator
//!   ([`is_icmpv6_neighbour_discovery`]: allowed, no direction judged) and in the datapath
//!   alike; the tables are never consulted for them. For them the test checks the evaluator
//!   allows and the program passes with that reason, counting no rule and emitting no event.
//! - An IPv6 packet whose "protocol" is an extension header (0, 43, 44, 51, 60) does not
//!   exist on the wire (the datapath walks those headers to the transport header): such
//!   probes are skipped and counted.
//!
//! Privileged: FAILS (never skips) when not root or when this build embeds the stub object.
//! `PROPTEST_CASES` sets the number of random cases (default 64).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DENY, CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, EventLimit, FlowEvent,
    MAX_RULE_COUNTERS, NUM_REASONS, REASON_ALLOW_POLICY, REASON_DENY_POLICY, REASON_PASS_ICMPV6_ND,
    maps, programs,
};
use enforcer_user::{
    compile::{
        Compiled, EndpointId, LookupResult, MapEntries, compile, lookup_entries, to_map_entries,
    },
    datapath::{Datapath, EventReader, OpenOptions, reason_name},
    evaluator::{DirectionTrace, Packet, Verdict, evaluate_packet, is_icmpv6_neighbour_discovery},
    model::Direction,
    testgen::{self, Case, Probe, describe, resolve, sweep},
    testsupport::{PinBase, frame, require_privileged},
};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

/// `TCX_NEXT`: allowed.
const PASS: i32 = -1;
/// `TC_ACT_SHOT`: dropped.
const DROP: i32 = 2;
/// Loopback: the device a tc `BPF_PROG_TEST_RUN` gives the skb.
const LO: u32 = 1;

/// Random probes per case (resolved against the inventory), plus a sweep of every endpoint
/// pair with `SHAPES_PER_CASE` packet shapes, capped at `MAX_SWEEP_PROBES` per case.
const PROBES_PER_CASE: usize = 48;
const SHAPES_PER_CASE: usize = 2;
const MAX_SWEEP_PROBES: usize = 160;
const DEFAULT_CASES: u32 = 64;

static KERNEL: Mutex<()> = Mutex::new(());

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

// ---------------------------------------------------------------------------------------------
// The datapath under test
// ---------------------------------------------------------------------------------------------

/// The loaded programs and the maps the comparison reads, opened from the pins
/// [`Datapath::open`] made. Field order is drop order: every handle closes before the pin base
/// is removed.
struct Bpf {
    dp: Datapath,
    to_endpoint: SchedClassifier,
    from_endpoint: SchedClassifier,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    verdict_counters: PerCpuArray<MapData, u64>,
    rule_counters: PerCpuArray<MapData, u64>,
    staged_counters: PerCpuArray<MapData, u64>,
    event_limit: PerCpuArray<MapData, EventLimit>,
    events: EventReader,
    cpus: usize,
    /// Table writes and test runs, for the timing line.
    programmed: usize,
    runs: usize,
    _pins: PinBase,
}

fn pinned<T: TryFrom<Map, Error = MapError>>(dp: &Datapath, name: &str) -> T {
    let path = dp.paths().map(name);
    let data = MapData::from_pin(&path)
        .unwrap_or_else(|e| panic!("opening the pinned map {}: {e}", path.display()));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("map {name}: {e}"));
    T::try_from(map).unwrap_or_else(|e| panic!("map {name} has an unexpected type: {e}"))
}

fn pinned_program(dp: &Datapath, name: &str) -> SchedClassifier {
    let path = dp.paths().program(name);
    SchedClassifier::from_pin(&path)
        .unwrap_or_else(|e| panic!("opening the pinned program {}: {e}", path.display()))
}

/// What the BPF program did with one packet.
#[derive(Debug, Clone, Default)]
struct BpfAnswer {
    ret: i32,
    /// `VERDICT_COUNTERS` deltas in the hook's direction: (reason, packets).
    reasons: Vec<(u32, u64)>,
    /// `RULE_COUNTERS` / `STAGED_COUNTERS` deltas at the ids the tables name.
    rule_delta: Option<u64>,
    staged_delta: Option<u64>,
    events: Vec<FlowEvent>,
}

impl BpfAnswer {
    fn show(&self) -> String {
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{}x{n}", reason_name(*r)))
            .collect();
        let ret = match self.ret {
            PASS => "TCX_NEXT (allow)".to_string(),
            DROP => "TC_ACT_SHOT (deny)".to_string(),
            other => format!("{other} (?)"),
        };
        let mut s = format!(
            "{ret}; reasons [{}]; rule counter +{:?}; staged counter +{:?}",
            reasons.join(", "),
            self.rule_delta,
            self.staged_delta
        );
        for e in &self.events {
            let _ = write!(
                s,
                "\n    event: dir {} action {} staged {} rule {} staged rule {} proto {} ports {}->{}",
                e.direction,
                e.action,
                e.staged_action,
                e.rule_id,
                e.staged_rule_id,
                e.protocol,
                e.src_port,
                e.dst_port
            );
        }
        s
    }
}

impl Bpf {
    fn open() -> Bpf {
        let pins = PinBase::new("difftest");
        let dp = Datapath::open(OpenOptions {
            // Nothing runs concurrently with the writes: no grace period needed.
            flip_grace: Duration::ZERO,
            ..pins.open_options()
        })
        .unwrap_or_else(|e| panic!("Datapath::open under {}: {e}", pins.path().display()));
        let events = dp
            .events()
            .unwrap_or_else(|e| panic!("opening EVENTS: {e}"));
        let cpus = aya::util::nr_cpus().unwrap_or_else(|(what, e)| panic!("{what}: {e}"));
        Bpf {
            to_endpoint: pinned_program(&dp, programs::TO_ENDPOINT),
            from_endpoint: pinned_program(&dp, programs::FROM_ENDPOINT),
            conntrack: pinned(&dp, maps::CONNTRACK),
            verdict_counters: pinned(&dp, maps::VERDICT_COUNTERS),
            rule_counters: pinned(&dp, maps::RULE_COUNTERS),
            staged_counters: pinned(&dp, maps::STAGED_COUNTERS),
            event_limit: pinned(&dp, maps::EVENT_LIMIT),
            events,
            cpus,
            programmed: 0,
            runs: 0,
            dp,
            _pins: pins,
        }
    }

    fn program(&mut self, entries: &MapEntries) -> Result<(), String> {
        self.programmed += 1;
        self.dp
            .program(entries)
            .map(|_| ())
            .map_err(|e| format!("Datapath::program failed: {e}"))
    }

    fn clear_conntrack(&mut self) {
        let keys: Vec<CtKey> = self.conntrack.keys().filter_map(Result::ok).collect();
        for k in keys {
            // A concurrent eviction is fine: the entry is gone either way.
            let _ = self.conntrack.remove(&k);
        }
    }

    fn reset_event_limit(&mut self) {
        let zeros = PerCpuValues::try_from(vec![EventLimit::default(); self.cpus])
            .unwrap_or_else(|e| panic!("per-CPU values: {e}"));
        self.event_limit
            .set(0, zeros, 0)
            .unwrap_or_else(|e| panic!("resetting EVENT_LIMIT: {e}"));
    }

    fn per_cpu_sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
        map.get(&index, 0)
            .unwrap_or_else(|e| panic!("reading per-CPU index {index}: {e}"))
            .iter()
            .sum()
    }

    fn reasons(&self, dir: u8) -> Vec<u64> {
        (0..NUM_REASONS)
            .map(|r| Self::per_cpu_sum(&self.verdict_counters, r * 2 + u32::from(dir)))
            .collect()
    }

    fn counter(map: &PerCpuArray<MapData, u64>, id: u32) -> Option<u64> {
        (id < MAX_RULE_COUNTERS).then(|| Self::per_cpu_sum(map, id))
    }

    /// Runs one packet as a new flow through the program of `direction` and reports what it
    /// did, reading the rule counters at `rule_id` and `staged_rule_id`.
    fn run(
        &mut self,
        direction: Direction,
        frame: &[u8],
        rule_id: u32,
        staged_rule_id: u32,
    ) -> BpfAnswer {
        self.runs += 1;
        self.clear_conntrack();
        self.reset_event_limit();
        let stale = self.events.drain();
        assert!(
            stale.is_empty(),
            "events left from an earlier packet: {stale:?}"
        );
        let dir = match direction {
            Direction::Ingress => DIR_INGRESS,
            Direction::Egress => DIR_EGRESS,
        };
        let before = self.reasons(dir);
        let rule_before = Self::counter(&self.rule_counters, rule_id);
        let staged_before = Self::counter(&self.staged_counters, staged_rule_id);
        let program = match direction {
            Direction::Ingress => &self.to_endpoint,
            Direction::Egress => &self.from_endpoint,
        };
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e:#?}"));
        let ret = i32::from_ne_bytes(result.return_value.to_ne_bytes());
        let after = self.reasons(dir);
        let reasons = (0..NUM_REASONS)
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a != b)
            .map(|(r, (b, a))| (r, a - b))
            .collect();
        let delta = |before: Option<u64>, map: &PerCpuArray<MapData, u64>, id: u32| {
            before.map(|b| Self::counter(map, id).unwrap_or(b) - b)
        };
        BpfAnswer {
            ret,
            reasons,
            rule_delta: delta(rule_before, &self.rule_counters, rule_id),
            staged_delta: delta(staged_before, &self.staged_counters, staged_rule_id),
            events: self.events.drain(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One case
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    cases: usize,
    endpoints: usize,
    checked: usize,
    v6: usize,
    denies: usize,
    staged_differs: usize,
    nd: usize,
    skipped_ext: usize,
}

fn action_code(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => ACTION_ALLOW,
        Verdict::Deny => ACTION_DENY,
    }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&v.octets());
            out
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// The `FlowEvent` the datapath must emit for this packet and verdict (timestamp aside).
fn expected_event(p: &Packet, direction: Direction, v: &LookupResult) -> FlowEvent {
    let (src_port, dst_port) = if p.protocol.has_ports() {
        (p.src_port.unwrap_or(0), p.dst_port.unwrap_or(0))
    } else {
        let (_, dst, _) = enforcer_user::compile::port_key(p);
        (0, dst)
    };
    FlowEvent {
        timestamp_ns: 0,
        ifindex: LO,
        rule_id: v.rule_id,
        staged_rule_id: v.staged_rule_id,
        direction: match direction {
            Direction::Ingress => DIR_INGRESS,
            Direction::Egress => DIR_EGRESS,
        },
        family: if p.dst.is_ipv6() { 6 } else { 4 },
        protocol: p.protocol.0,
        action: action_code(v.action),
        staged_action: action_code(v.staged_action),
        _pad: [0; 3],
        src_port,
        dst_port,
        src: addr16(p.src),
        dst: addr16(p.dst),
    }
}

/// Checks one probe; `Err` is the reproducer.
#[allow(clippy::too_many_arguments)]
fn check_probe(
    bpf: &mut Bpf,
    case: &Case,
    compiled: &Compiled,
    entries: &MapEntries,
    probe: &Probe,
    tally: &mut Tally,
) -> Result<(), String> {
    let inv = &case.inventory;
    let p = &probe.packet;
    let flags = frame::first_packet_flags(p.protocol);
    let Some(frame) = frame::packet_frame(p, flags, b"enforcer") else {
        tally.skipped_ext += 1;
        return Ok(());
    };
    let explanation = evaluate_packet(inv, p, &case.options);
    if is_icmpv6_neighbour_discovery(p) {
        tally.nd += 1;
        let answer = bpf.run(probe.direction, &frame, u32::MAX, u32::MAX);
        let policed = explanation.ingress.is_some() || explanation.egress.is_some();
        if explanation.verdict == Verdict::Allow
            && !policed
            && answer.ret == PASS
            && answer.reasons == [(REASON_PASS_ICMPV6_ND, 1)]
            && answer.events.is_empty()
        {
            tally.checked += 1;
            return Ok(());
        }
        return Err(format!(
            "DISAGREEMENT on ICMPv6 neighbour discovery / MLD (passed before policy) at {} {}\n\
             packet: {p:?}\n  evaluator: {} (policed: {policed})\n  BPF:       {}\n\
             frame:\n{}\ninventory:\n{}",
            probe.endpoint,
            probe.direction,
            explanation.verdict,
            answer.show(),
            frame::hex(&frame),
            describe(inv)
        ));
    }
    let trace: Option<&DirectionTrace> = match probe.direction {
        Direction::Ingress => explanation.ingress.as_ref(),
        Direction::Egress => explanation.egress.as_ref(),
    };
    let Some(trace) = trace else {
        return Err(format!(
            "generator bug: the evaluator does not police {} for {p:?}",
            probe.endpoint
        ));
    };
    let looked_up = compiled.lookup(&probe.endpoint, probe.direction, p);
    let raw = lookup_entries(entries, LO, probe.direction, p);
    let (rule_id, staged_rule_id) = match &looked_up {
        Ok(v) => (v.rule_id, v.staged_rule_id),
        Err(_) => (u32::MAX, u32::MAX),
    };
    let answer = bpf.run(probe.direction, &frame, rule_id, staged_rule_id);

    let mut problems: Vec<String> = Vec::new();
    let rule = |id: u32| compiled.rule(id).map(|r| r.decision.clone());
    match &looked_up {
        Err(e) => problems.push(format!("compiled lookup failed: {e}")),
        Ok(v) => {
            if v.action != trace.verdict || rule(v.rule_id).as_ref() != Some(&trace.decided_by) {
                problems.push("compiled tables disagree with the evaluator".into());
            }
            if v.staged_action != trace.staged_verdict
                || rule(v.staged_rule_id).as_ref() != Some(&trace.staged_decided_by)
            {
                problems.push("compiled staged verdict disagrees with the evaluator".into());
            }
            if raw.as_ref().ok() != Some(v) {
                problems.push(format!("raw map entries give {raw:?}"));
            }
        }
    }
    let (want_ret, want_reason) = match trace.verdict {
        Verdict::Allow => (PASS, REASON_ALLOW_POLICY),
        Verdict::Deny => (DROP, REASON_DENY_POLICY),
    };
    if answer.ret != want_ret {
        problems.push(format!(
            "BPF returned {} but the evaluator says {}",
            answer.ret, trace.verdict
        ));
    }
    if answer.reasons != [(want_reason, 1)] {
        problems.push(format!(
            "BPF counted reasons {:?}, want exactly {}",
            answer.reasons,
            reason_name(want_reason)
        ));
    }
    if let Ok(v) = &looked_up {
        if answer.rule_delta.is_some_and(|d| d != 1) {
            problems.push(format!(
                "BPF did not count the deciding rule {} ({:?})",
                v.rule_id,
                rule(v.rule_id)
            ));
        }
        if answer.staged_delta.is_some_and(|d| d != 1) {
            problems.push(format!(
                "BPF did not count the staged deciding rule {}",
                v.staged_rule_id
            ));
        }
        let want_event = v.action == Verdict::Deny || v.staged_action != v.action;
        let want = expected_event(p, probe.direction, v);
        match answer.events.as_slice() {
            [] if !want_event => {}
            [e] if want_event => {
                let got = FlowEvent {
                    timestamp_ns: 0,
                    ..*e
                };
                if got != want {
                    problems.push(format!("BPF event differs; want {want:?}"));
                }
            }
            got => problems.push(format!(
                "BPF emitted {} events, want {}",
                got.len(),
                usize::from(want_event)
            )),
        }
    }
    tally.checked += 1;
    tally.v6 += usize::from(p.dst.is_ipv6());
    tally.denies += usize::from(trace.verdict == Verdict::Deny);
    tally.staged_differs += usize::from(trace.staged_verdict != trace.verdict);
    if problems.is_empty() {
        return Ok(());
    }
    let compiled_shown = match &looked_up {
        Ok(v) => format!(
            "{} by {:?} / staged {} by {:?} ({v:?})",
            v.action,
            rule(v.rule_id),
            v.staged_action,
            rule(v.staged_rule_id)
        ),
        Err(e) => format!("error: {e}"),
    };
    Err(format!(
        "DISAGREEMENT at {} {} ({} program)\n  - {}\n\
         packet: {p:?}\n\
         answers:\n  evaluator: {} by {:?} / staged {} by {:?}\n  compiled:  {compiled_shown}\n  BPF:       {}\n\
         options: {:?}\n\
         frame ({} bytes):\n{}\n\
         compile stats: {:?}\n\
         inventory:\n{}",
        probe.endpoint,
        probe.direction,
        match probe.direction {
            Direction::Ingress => programs::TO_ENDPOINT,
            Direction::Egress => programs::FROM_ENDPOINT,
        },
        problems.join("\n  - "),
        trace.verdict,
        trace.decided_by,
        trace.staged_verdict,
        trace.staged_decided_by,
        answer.show(),
        case.options,
        frame.len(),
        frame::hex(&frame),
        compiled.stats,
        describe(inv),
    ))
}

/// Checks every probe of a case.
fn check_case(bpf: &mut Bpf, case: &Case, tally: &mut Tally) -> Result<(), String> {
    let inv = &case.inventory;
    let compiled = compile(inv, &case.options)
        .map_err(|e| format!("compile failed: {e}\ninventory:\n{}", describe(inv)))?;
    let mut sweep_probes = sweep(inv, &case.shapes);
    if sweep_probes.len() > MAX_SWEEP_PROBES {
        // An even sample keeps every endpoint and direction represented.
        let step = sweep_probes.len().div_ceil(MAX_SWEEP_PROBES);
        sweep_probes = sweep_probes.into_iter().step_by(step).collect();
    }
    let mut by_endpoint: BTreeMap<EndpointId, Vec<Probe>> = BTreeMap::new();
    for probe in case
        .probes
        .iter()
        .filter_map(|seed| resolve(inv, seed))
        .chain(sweep_probes)
    {
        by_endpoint
            .entry(probe.endpoint.clone())
            .or_default()
            .push(probe);
    }
    tally.cases += 1;
    for (endpoint, probes) in &by_endpoint {
        // This endpoint alone, on the interface the test runs use.
        let entries = to_map_entries(&compiled, 0, &|id| {
            if id == endpoint { vec![LO] } else { Vec::new() }
        })
        .map_err(|e| e.to_string())?;
        bpf.program(&entries)?;
        tally.endpoints += 1;
        for probe in probes {
            check_probe(bpf, case, &compiled, &entries, probe, tally)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn privileged_bpf_agrees_with_compiled_tables_and_reference_evaluator() {
    require_privileged();
    let _kernel = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let bpf = RefCell::new(Bpf::open());
    let tally = RefCell::new(Tally::default());
    let config = Config {
        cases: cases(),
        max_shrink_iters: 2048,
        // Shrinking runs real programs; bound it so a failure reports in reasonable time.
        max_shrink_time: 120_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/differential_bpf.proptest-regressions"
        )))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&testgen::case(PROBES_PER_CASE, SHAPES_PER_CASE), |case| {
        let mut t = Tally::default();
        let r = check_case(&mut bpf.borrow_mut(), &case, &mut t);
        if r.is_ok() {
            let mut all = tally.borrow_mut();
            all.cases += t.cases;
            all.endpoints += t.endpoints;
            all.checked += t.checked;
            all.v6 += t.v6;
            all.denies += t.denies;
            all.staged_differs += t.staged_differs;
            all.nd += t.nd;
            all.skipped_ext += t.skipped_ext;
        }
        r.map_err(TestCaseError::fail)
    });
    let bpf = bpf.into_inner();
    let t = tally.into_inner();
    eprintln!(
        "differential_bpf: {} cases, {} endpoint programmings ({} table writes), {} packets \
         through BPF ({} checked: {} IPv6, {} denied, {} staged differs, {} ICMPv6 ND; {} \
         IPv6 extension-header protocols skipped) in {:.1} s",
        t.cases,
        t.endpoints,
        bpf.programmed,
        bpf.runs,
        t.checked,
        t.v6,
        t.denies,
        t.staged_differs,
        t.nd,
        t.skipped_ext,
        started.elapsed().as_secs_f64()
    );
    drop(bpf);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => panic!(
            "the BPF datapath, the compiled tables and the reference evaluator disagree \
             (minimal case after shrinking):\n{reason}\n\nshrunk case (Debug):\n{case:#?}"
        ),
        Err(TestError::Abort(reason)) => panic!("proptest aborted: {reason}"),
    }
    // Not vacuous: the generator must reach both families and both verdicts.
    assert!(
        t.checked >= 20 * t.cases,
        "only {} packets checked",
        t.checked
    );
    assert!(t.v6 > 0 && t.denies > 0 && t.denies < t.checked, "{t:?}");
}
