//! The linear-scan eBPF reference and the parse-only floor (`enforcer-ebpf`'s `bench_linear`
//! and `bench_floor`), and the "linear" section.
//!
//! [`Linear`] loads `enforcer_bench_linear` with a [`FlatRuleset`] compiled to its chain, the
//! way Calico's eBPF dataplane evaluates policy: one entry per (rule, net or IP set, port
//! range), evaluated in order, first match wins, one chain per IP family; an LRU conntrack
//! in front. [`ParseOnly`] loads `enforcer_bench_parse_only`, which parses the headers exactly
//! as Enforcer does and stops: the floor Enforcer's established-flow cost is compared with.
//!
//! Both load the whole embedded object (every map of it is created, as it is for
//! production); the production maps, which these programs never touch, are shrunk to one
//! entry so the load stays cheap, and the bench maps are sized for the ruleset.

use std::{fmt::Write as _, net::IpAddr};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key as LpmKey},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, tc::TcAttachOptions,
    },
};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DENY,
    bench::{
        LINEAR_COUNT_ALLOWED, LINEAR_COUNT_DENIED, LINEAR_IPSET_FIXED_BITS, LINEAR_MAX_RULES,
        LINEAR_NUM_COUNTERS, LINEAR_PEER_ANY, LINEAR_PEER_IPSET, LINEAR_PEER_NET_V4,
        LINEAR_PEER_NET_V6, LinearConfig, LinearCtKey, LinearCtValue, LinearIpsetV4Data,
        LinearIpsetV6Data, LinearRule, maps as bench_maps, programs as bench_programs,
    },
    maps as prod_maps,
};
use enforcer_user::{
    compile::EndpointId,
    datapath::netif,
    model::{Action, Inventory, Protocol},
    testsupport::frame,
};
use ipnet::IpNet;

use crate::{
    DROP, PASS,
    flat::{FlatAction, FlatRuleset, flatten},
    fmt_ns, frame_from,
    inventories::{
        allow_from, in_rule_net, pod_v4, pod_v6, policy, rule_port, rules_inventory, selector,
    },
    median,
    packet::{Sizes, sizes},
    report::{Plot, RunOpts, Section, Series},
};

/// Conntrack capacity of the reference: Enforcer's own (`MAX_CONNTRACK`), so both hash
/// tables are the same size.
const CONNTRACK_ENTRIES: u32 = enforcer_common::MAX_CONNTRACK;

/// Production maps the bench programs never use: created with one entry when a bench object
/// loads. (`ENFORCER_EVENTS`, a ring buffer, keeps its size: it must be a page multiple.)
const UNUSED_PRODUCTION_MAPS: [&str; 11] = [
    prod_maps::CONFIG,
    prod_maps::ENDPOINTS,
    prod_maps::PEER_V4,
    prod_maps::PEER_V6,
    prod_maps::PORTS,
    prod_maps::VERDICTS,
    prod_maps::CONNTRACK,
    prod_maps::VERDICT_COUNTERS,
    prod_maps::RULE_COUNTERS,
    prod_maps::STAGED_COUNTERS,
    prod_maps::EVENT_LIMIT,
];

/// Loads the embedded object with `sizes` (map name, max entries) and the unused production
/// maps shrunk; no program is loaded yet. `what` completes the error context ("loading the
/// eBPF object {what}").
pub(crate) fn load_bench_object(sizes: &[(&str, u32)], what: &str) -> Result<Ebpf> {
    let bytes = enforcer_user::ebpf_object::object().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut loader = EbpfLoader::new();
    for name in UNUSED_PRODUCTION_MAPS {
        loader.map_max_entries(name, 1);
    }
    for (name, size) in sizes {
        loader.map_max_entries(name, *size);
    }
    loader
        .load(bytes)
        .with_context(|| format!("loading the eBPF object {what}"))
}

/// [`load_bench_object`], then loads (verifies) the classifier `program`.
fn load_object(sizes: &[(&str, u32)], program: &str) -> Result<Ebpf> {
    let mut ebpf = load_bench_object(sizes, "(bench maps)")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} is not in the object"))?
        .try_into()
        .with_context(|| format!("{program} is not a classifier"))?;
    // The verifier log is in the error's message.
    prog.load()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {program}"))?;
    Ok(ebpf)
}

/// (return value, ns/packet) of `program` on `frame` run `repeat` times.
fn test_run(ebpf: &Ebpf, program: &str, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let prog: &SchedClassifier = ebpf
        .program(program)
        .with_context(|| format!("program {program} is not in the object"))?
        .try_into()
        .with_context(|| format!("{program} is not a classifier"))?;
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: repeat.max(1),
            ..TestRunOptions::default()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

// ---------------------------------------------------------------------------------------------
// Compiling a FlatRuleset to the chain
// ---------------------------------------------------------------------------------------------

/// A 16-byte network-order address as the program reads it (two little-endian u64s).
fn halves(a: [u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// The 16 address bytes of `addr` (IPv4 in the first 4, the rest zero).
fn addr16(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// `net` as (kind, masked address, mask) in the program's representation.
fn inline_net(net: &IpNet) -> (u8, [u64; 2], [u64; 2]) {
    let (kind, mask) = match net {
        IpNet::V4(n) => (LINEAR_PEER_NET_V4, addr16(IpAddr::V4(n.netmask()))),
        IpNet::V6(n) => (LINEAR_PEER_NET_V6, addr16(IpAddr::V6(n.netmask()))),
    };
    (kind, halves(addr16(net.trunc().addr())), halves(mask))
}

/// The two chains (IPv4, IPv6) of `rules`: each rule becomes one entry per (peer match, port
/// range), peer matches being its nets of the chain's family and its IP set, or "any".
fn compile_chains(rules: &FlatRuleset) -> Result<(Vec<LinearRule>, Vec<LinearRule>)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for rule in &rules.rules {
        let base = LinearRule {
            action: match rule.action {
                FlatAction::Allow => ACTION_ALLOW,
                FlatAction::Deny => ACTION_DENY,
            },
            protocol: rule.protocol.unwrap_or(0),
            ..LinearRule::default()
        };
        let ports: Vec<Option<(u16, u16)>> = if rule.dst_ports.is_empty() {
            vec![None]
        } else {
            rule.dst_ports.iter().copied().map(Some).collect()
        };
        for range in ports {
            let mut e = base;
            if let Some((lo, hi)) = range {
                e.has_ports = 1;
                e.port_lo = lo;
                e.port_hi = hi;
            }
            if rule.src_nets.is_empty() && rule.src_ipset.is_none() {
                e.peer = LINEAR_PEER_ANY;
                v4.push(e);
                v6.push(e);
                continue;
            }
            for net in &rule.src_nets {
                let (kind, addr, mask) = inline_net(net);
                let n = LinearRule {
                    peer: kind,
                    net: addr,
                    mask,
                    ..e
                };
                if kind == LINEAR_PEER_NET_V4 {
                    v4.push(n);
                } else {
                    v6.push(n);
                }
            }
            if let Some(set) = rule.src_ipset {
                ensure!(
                    set < rules.ipsets.len(),
                    "rule of {} names IP set {set}, which does not exist",
                    rule.policy
                );
                let s = LinearRule {
                    peer: LINEAR_PEER_IPSET,
                    ipset: u32::try_from(set).context("IP set id")?,
                    ..e
                };
                v4.push(s);
                v6.push(s);
            }
        }
    }
    for (name, chain) in [("IPv4", &v4), ("IPv6", &v6)] {
        ensure!(
            chain.len() <= LINEAR_MAX_RULES as usize,
            "{name} chain of {} entries exceeds the program's {LINEAR_MAX_RULES}",
            chain.len()
        );
    }
    Ok((v4, v6))
}

// ---------------------------------------------------------------------------------------------
// The programs
// ---------------------------------------------------------------------------------------------

/// The linear-scan reference, loaded and filled for one ruleset. Owns the object: dropping it
/// detaches every attachment and frees the maps.
pub(crate) struct Linear {
    ebpf: Ebpf,
    /// Entries of the IPv4 and IPv6 chains.
    chain_entries: (usize, usize),
}

/// The reference's verdict counters, summed over CPUs. Packets passed before policy (not
/// IP, ICMPv6 neighbour discovery, later fragments) and unparseable ones count in neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LinearCounters {
    pub allowed: u64,
    pub denied: u64,
}

impl Linear {
    /// Loads the object with the linear program and its maps sized for `rules`, filled from it.
    pub(crate) fn load(rules: &FlatRuleset) -> Result<Linear> {
        let (v4, v6) = compile_chains(rules)?;
        let (mut members_v4, mut members_v6) = (0u32, 0u32);
        for set in &rules.ipsets {
            for m in &set.members {
                match m {
                    IpNet::V4(_) => members_v4 += 1,
                    IpNet::V6(_) => members_v6 += 1,
                }
            }
        }
        let entries = u32::try_from(v4.len() + v6.len()).context("chain length")?;
        let mut ebpf = load_object(
            &[
                (bench_maps::LINEAR_RULES, entries.max(1)),
                (bench_maps::LINEAR_IPSET_V4, members_v4.max(1)),
                (bench_maps::LINEAR_IPSET_V6, members_v6.max(1)),
                (bench_maps::LINEAR_CONNTRACK, CONNTRACK_ENTRIES),
            ],
            bench_programs::LINEAR,
        )?;

        let mut chain: Array<&mut MapData, LinearRule> =
            Array::try_from(map_mut(&mut ebpf, bench_maps::LINEAR_RULES)?)?;
        for (i, entry) in v4.iter().chain(v6.iter()).enumerate() {
            chain
                .set(i as u32, entry, 0)
                .with_context(|| format!("writing chain entry {i}"))?;
        }
        for (id, set) in rules.ipsets.iter().enumerate() {
            let id = u32::try_from(id).context("IP set id")?.to_be_bytes();
            for member in &set.members {
                let member = member.trunc();
                let bits = LINEAR_IPSET_FIXED_BITS + u32::from(member.prefix_len());
                match member {
                    IpNet::V4(n) => {
                        let mut trie: LpmTrie<&mut MapData, LinearIpsetV4Data, u32> =
                            LpmTrie::try_from(map_mut(&mut ebpf, bench_maps::LINEAR_IPSET_V4)?)?;
                        let mut data: LinearIpsetV4Data = [0; 8];
                        data[..4].copy_from_slice(&id);
                        data[4..].copy_from_slice(&n.addr().octets());
                        trie.insert(&LpmKey::new(bits, data), 1, 0)
                            .with_context(|| format!("adding {member} to IP set {}", set.name))?;
                    }
                    IpNet::V6(n) => {
                        let mut trie: LpmTrie<&mut MapData, LinearIpsetV6Data, u32> =
                            LpmTrie::try_from(map_mut(&mut ebpf, bench_maps::LINEAR_IPSET_V6)?)?;
                        let mut data: LinearIpsetV6Data = [0; 20];
                        data[..4].copy_from_slice(&id);
                        data[4..].copy_from_slice(&n.addr().octets());
                        trie.insert(&LpmKey::new(bits, data), 1, 0)
                            .with_context(|| format!("adding {member} to IP set {}", set.name))?;
                    }
                }
            }
        }
        let config = LinearConfig {
            v4_rules: v4.len() as u32,
            v6_rules: v6.len() as u32,
            default_action: match rules.default {
                FlatAction::Allow => ACTION_ALLOW,
                FlatAction::Deny => ACTION_DENY,
            },
            _pad: [0; 7],
        };
        let mut cfg: Array<&mut MapData, LinearConfig> =
            Array::try_from(map_mut(&mut ebpf, bench_maps::LINEAR_CONFIG)?)?;
        cfg.set(0, config, 0)
            .context("writing BENCH_LINEAR_CONFIG")?;
        Ok(Linear {
            ebpf,
            chain_entries: (v4.len(), v6.len()),
        })
    }

    /// Attaches the linear program with tcx at `hook` of interface `ifindex` (first in the
    /// chain), in the calling thread's network namespace; detached when `Linear` drops.
    pub(crate) fn attach(&mut self, ifindex: u32, hook: TcAttachType) -> Result<()> {
        let name = netif::ifname(ifindex).with_context(|| {
            format!(
                "no interface with index {ifindex}: {}",
                std::io::Error::last_os_error()
            )
        })?;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(bench_programs::LINEAR)
            .context("the linear program is not in the object")?
            .try_into()
            .context("the linear program is not a classifier")?;
        prog.attach_with_options(&name, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .with_context(|| {
                format!("attaching the linear program to {name} ({ifindex}) {hook:?}")
            })?;
        Ok(())
    }

    /// Summed per-CPU verdict counters.
    pub(crate) fn counters(&self) -> Result<LinearCounters> {
        let map = self
            .ebpf
            .map(bench_maps::LINEAR_COUNTERS)
            .context("BENCH_LINEAR_COUNTERS is not in the object")?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let sum = |i: u32| -> Result<u64> {
            Ok(counters
                .get(&i, 0)
                .with_context(|| format!("reading counter {i}"))?
                .iter()
                .sum())
        };
        Ok(LinearCounters {
            allowed: sum(LINEAR_COUNT_ALLOWED)?,
            denied: sum(LINEAR_COUNT_DENIED)?,
        })
    }

    /// Clears conntrack and counters.
    pub(crate) fn reset(&mut self) -> Result<()> {
        let mut ct: HashMap<&mut MapData, LinearCtKey, LinearCtValue> =
            HashMap::try_from(map_mut(&mut self.ebpf, bench_maps::LINEAR_CONNTRACK)?)?;
        let keys: Vec<LinearCtKey> = ct
            .keys()
            .collect::<Result<_, _>>()
            .context("listing conntrack")?;
        for k in keys {
            // An entry the LRU evicted meanwhile is gone already.
            match ct.remove(&k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("clearing conntrack"),
            }
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let mut counters: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map_mut(&mut self.ebpf, bench_maps::LINEAR_COUNTERS)?)?;
        for i in 0..LINEAR_NUM_COUNTERS {
            counters
                .set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)
                .with_context(|| format!("clearing counter {i}"))?;
        }
        Ok(())
    }

    /// (return value, ns/packet).
    fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        test_run(&self.ebpf, bench_programs::LINEAR, frame, repeat)
    }

    fn conntrack_len(&self) -> Result<usize> {
        let map = self
            .ebpf
            .map(bench_maps::LINEAR_CONNTRACK)
            .context("BENCH_LINEAR_CONNTRACK is not in the object")?;
        let ct: HashMap<&MapData, LinearCtKey, LinearCtValue> = HashMap::try_from(map)?;
        Ok(ct.keys().filter_map(Result::ok).count())
    }
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} is not in the object"))
}

/// The parse-only floor program, loaded.
pub(crate) struct ParseOnly {
    ebpf: Ebpf,
}

impl ParseOnly {
    pub(crate) fn load() -> Result<ParseOnly> {
        Ok(ParseOnly {
            ebpf: load_object(&[], bench_programs::PARSE_ONLY)?,
        })
    }

    /// ns/packet under BPF_PROG_TEST_RUN on `frame` with `repeat`; fails unless the program
    /// passed the frame (TCX_NEXT), as it does every parseable IP frame.
    pub(crate) fn test_run_ns(&self, frame: &[u8], repeat: u32) -> Result<f64> {
        let (ret, ns) = test_run(&self.ebpf, bench_programs::PARSE_ONLY, frame, repeat)?;
        if ret != PASS {
            bail!(
                "the parse-only program returned {} (want TCX_NEXT) for\n{}",
                ret as i32,
                frame::hex(frame)
            );
        }
        Ok(ns)
    }
}

// ---------------------------------------------------------------------------------------------
// The section
// ---------------------------------------------------------------------------------------------

/// `repeat` for a full scan of `rules` rules: the base repeat up to 100 rules, then inversely
/// proportional (at least 20), so one BPF_PROG_TEST_RUN call stays around the same length.
fn repeat_for(s: Sizes, rules: usize) -> u32 {
    let scaled = u64::from(s.repeat) * 100 / rules.max(100) as u64;
    scaled.clamp(20, u64::from(s.repeat)) as u32
}

/// The endpoint under test: pod 0 of the generated inventories.
fn pod0() -> EndpointId {
    EndpointId::Pod {
        namespace: "bench".into(),
        name: "p0".into(),
    }
}

/// A frame to run: source, protocol, source port, destination port, TCP flags.
struct Probe(IpAddr, Protocol, u16, u16, u8);

/// The linear reference under test with the oracle and the counters it should show.
struct Checked<'a> {
    linear: &'a mut Linear,
    rules: &'a FlatRuleset,
    want: LinearCounters,
}

impl Checked<'_> {
    /// ns/packet of a frame from `src` (protocol, destination port); fails unless the
    /// program's verdict is the ruleset's (`FlatRuleset::decide`), or, when `established`,
    /// an allow.
    fn run(&mut self, probe: Probe, repeat: u32, established: bool) -> Result<f64> {
        let Probe(src, protocol, sport, dport, flags) = probe;
        let f = frame_from(src, protocol, sport, dport, flags)?;
        let has_ports = protocol.has_ports();
        let (rule, action) = self
            .rules
            .decide(src, protocol.0, has_ports.then_some(dport));
        let allow = established || action == FlatAction::Allow;
        let (ret, ns) = self.linear.run(&f, repeat)?;
        let want = if allow { PASS } else { DROP };
        if ret != want {
            bail!(
                "linear reference verdict {} differs from the flat ruleset's {:?} (rule {rule:?}) for \
                 {src} proto {} port {dport}{}:\n{}",
                ret as i32,
                if allow { FlatAction::Allow } else { action },
                protocol.0,
                if established { " (established)" } else { "" },
                frame::hex(&f)
            );
        }
        if allow {
            self.want.allowed += u64::from(repeat.max(1));
        } else {
            self.want.denied += u64::from(repeat.max(1));
        }
        Ok(ns)
    }

    fn reset(&mut self) -> Result<()> {
        self.linear.reset()?;
        self.want = LinearCounters::default();
        Ok(())
    }

    /// The counters must equal what the runs should have counted.
    fn check_counters(&self, what: &str) -> Result<()> {
        let got = self.linear.counters()?;
        if got != self.want {
            bail!(
                "{what}: linear counters {got:?}, expected {:?} from the runs",
                self.want
            );
        }
        Ok(())
    }
}

/// Checks the reference against the flat ruleset on a ruleset with every kind of entry: deny
/// before allow, an IP set (a selector rule), nets of both families, ports, protocol
/// mismatches; then conntrack and the counters. Fails loudly on any difference.
fn verify() -> Result<()> {
    let mut inv: Inventory = rules_inventory(20, 10)?;
    // First in order: deny TCP to rule 1's port from rule 1's net.
    let mut deny = allow_from(
        vec![
            IpNet::V4(crate::inventories::rule_v4(1)),
            IpNet::V6(crate::inventories::rule_v6(1)),
        ],
        None,
        rule_port(1),
    );
    deny.action = Action::Deny;
    let mut first = policy(0, selector("all()")?, vec![deny]);
    first.name = "bench-deny-first".into();
    first.order = Some(-1.0);
    inv.policies.push(first);
    // Last: allow TCP 80 from every pod (an IP set of the pods' addresses).
    inv.policies.push(policy(
        1_000_000,
        selector("all()")?,
        vec![allow_from(
            Vec::new(),
            Some(selector("app == 'bench'")?),
            80,
        )],
    ));
    let rules = flatten(&inv, &pod0()).context("flattening the verification inventory")?;
    ensure!(
        !rules.ipsets.is_empty(),
        "the verification ruleset has no IP set"
    );
    let mut linear = Linear::load(&rules)?;
    let mut c = Checked {
        linear: &mut linear,
        rules: &rules,
        want: LinearCounters::default(),
    };
    let tcp = Protocol::TCP;
    let syn = frame::TCP_SYN;
    let mut cases = 0;
    for v6 in [false, true] {
        let pod = |i| {
            if v6 {
                IpAddr::V6(pod_v6(i))
            } else {
                IpAddr::V4(pod_v4(i))
            }
        };
        // (src, protocol, dst port, expected action)
        let list: Vec<(IpAddr, Protocol, u16, FlatAction)> = vec![
            (in_rule_net(0, v6, 3), tcp, rule_port(0), FlatAction::Allow),
            (
                in_rule_net(19, v6, 5),
                tcp,
                rule_port(19),
                FlatAction::Allow,
            ),
            (in_rule_net(1, v6, 2), tcp, rule_port(1), FlatAction::Deny),
            (in_rule_net(19, v6, 5), tcp, rule_port(18), FlatAction::Deny),
            (in_rule_net(20, v6, 1), tcp, rule_port(20), FlatAction::Deny),
            (
                in_rule_net(0, v6, 3),
                Protocol::UDP,
                rule_port(0),
                FlatAction::Deny,
            ),
            (pod(3), tcp, 80, FlatAction::Allow),
            (pod(7), tcp, 81, FlatAction::Deny),
            (pod(7), Protocol::UDP, 80, FlatAction::Deny),
        ];
        for (k, (src, proto, port, expect)) in list.into_iter().enumerate() {
            let (_, oracle) = rules.decide(src, proto.0, Some(port));
            ensure!(
                oracle == expect,
                "verification case {src} proto {} port {port}: the flat ruleset says {oracle:?}, \
                 the case expects {expect:?}",
                proto.0
            );
            // New flow (repeat 1), then the same flow again: allowed ones now hit conntrack.
            let sport = 50_000 + k as u16;
            let flags = if proto == tcp { syn } else { 0 };
            c.run(Probe(src, proto, sport, port, flags), 1, false)?;
            c.run(
                Probe(src, proto, sport, port, flags),
                3,
                expect == FlatAction::Allow,
            )?;
            cases += 1;
        }
    }
    c.check_counters("verification")?;
    let flows = c.linear.conntrack_len()?;
    // One conntrack entry per allowed case: 3 a family.
    ensure!(
        flows == 6,
        "verification: {flows} conntrack entries, want 6 (one per allowed flow)"
    );
    c.reset()?;
    c.check_counters("verification after reset")?;
    ensure!(
        c.linear.conntrack_len()? == 0,
        "conntrack not empty after reset"
    );
    eprintln!(
        "linear: verified {cases} cases (deny before allow, first/last rule, IP set, ports, protocol, \
         conntrack, counters) against the flat ruleset"
    );
    Ok(())
}

/// Results of one (rules, family).
#[derive(Debug, Clone)]
struct Row {
    rules: usize,
    entries: usize,
    family: &'static str,
    floor: f64,
    floor_1: f64,
    est_first: f64,
    est_last: f64,
    new_first_1: f64,
    new_last_1: f64,
    denied: f64,
    denied_1: f64,
    repeat: u32,
}

/// Section "linear": per-packet ns (BPF_PROG_TEST_RUN, tc skb on loopback) of the parse-only
/// floor and of the linear-scan reference at 10, 100, 1,000, 10,000 (and 100,000 unless
/// quick) rules from `rules_inventory(n, 10)` flattened for pod 0, for the first rule's peer,
/// the last rule's peer (worst case) and a denied peer, established and new flows; IPv4 and
/// IPv6.
pub(crate) fn run(opts: &RunOpts) -> Result<Section> {
    // `repeat` applies at 10 and 100 rules; scaled down above (see [`repeat_for`]).
    let s = sizes(opts.quick);
    let sizes: &[usize] = if opts.quick {
        &[10, 100, 1_000, 10_000]
    } else {
        &[10, 100, 1_000, 10_000, 100_000]
    };

    verify()?;

    let floor = ParseOnly::load()?;
    let mut floors = Vec::new();
    for v6 in [false, true] {
        let (mut rep, mut one) = (Vec::new(), Vec::new());
        for k in 0..s.variants {
            let f = frame_from(
                in_rule_net(k, v6, k),
                Protocol::TCP,
                40_000 + k as u16,
                rule_port(k),
                frame::TCP_ACK,
            )?;
            rep.push(floor.test_run_ns(&f, s.repeat)?);
        }
        for k in 0..s.new_flows {
            let f = frame_from(
                in_rule_net(k, v6, k),
                Protocol::TCP,
                1024 + k as u16,
                rule_port(k),
                frame::TCP_SYN,
            )?;
            one.push(floor.test_run_ns(&f, 1)?);
        }
        floors.push((median(rep), median(one)));
    }
    drop(floor);
    eprintln!(
        "linear: parse-only floor IPv4 {} ns (repeat 1: {}), IPv6 {} ns (repeat 1: {})",
        fmt_ns(floors[0].0),
        fmt_ns(floors[0].1),
        fmt_ns(floors[1].0),
        fmt_ns(floors[1].1)
    );

    let mut rows = Vec::new();
    for &n in sizes {
        let inv = rules_inventory(n, 10)?;
        let rules = flatten(&inv, &pod0()).with_context(|| format!("flattening {n} rules"))?;
        drop(inv);
        ensure!(
            rules.rules.len() == n && rules.default == FlatAction::Deny,
            "{n} rules flattened to {} rules, default {:?}",
            rules.rules.len(),
            rules.default
        );
        let mut linear = Linear::load(&rules)?;
        let (e4, e6) = linear.chain_entries;
        let mut c = Checked {
            linear: &mut linear,
            rules: &rules,
            want: LinearCounters::default(),
        };
        let rep = repeat_for(s, n);
        for (fi, v6) in [false, true].into_iter().enumerate() {
            c.reset()?;
            let tcp = Protocol::TCP;
            let first = |k: usize| (in_rule_net(0, v6, k), rule_port(0));
            let last = |k: usize| (in_rule_net(n - 1, v6, k), rule_port(n - 1));
            // No rule has this net: every chain entry is tried, then the default denies.
            let denied = |k: usize| (in_rule_net(n, v6, k), rule_port(n));
            // Established: a SYN opens the flow, then its ACKs hit conntrack.
            let mut est = [Vec::new(), Vec::new()];
            for (which, peer) in [&first as &dyn Fn(usize) -> (IpAddr, u16), &last]
                .into_iter()
                .enumerate()
            {
                for k in 0..s.variants {
                    let (src, port) = peer(k);
                    let sport = 40_000 + k as u16;
                    c.run(Probe(src, tcp, sport, port, frame::TCP_SYN), 1, false)?;
                    est[which].push(c.run(
                        Probe(src, tcp, sport, port, frame::TCP_ACK),
                        s.repeat,
                        true,
                    )?);
                }
            }
            // New flows: every run a new 5-tuple (repeat 1: conntrack miss, scan, insert).
            let mut new = [Vec::new(), Vec::new()];
            for (which, peer) in [&first as &dyn Fn(usize) -> (IpAddr, u16), &last]
                .into_iter()
                .enumerate()
            {
                for k in 0..s.new_flows {
                    let (src, port) = peer(k);
                    let sport = 1024 + (k % 30_000) as u16 + 30_000 * which as u16;
                    new[which].push(c.run(
                        Probe(src, tcp, sport, port, frame::TCP_SYN),
                        1,
                        false,
                    )?);
                }
            }
            // Denied: the full scan, no conntrack entry.
            let (mut den, mut den1) = (Vec::new(), Vec::new());
            for k in 0..s.variants {
                let (src, port) = denied(k);
                den.push(c.run(
                    Probe(src, tcp, 30_000 + k as u16, port, frame::TCP_SYN),
                    rep,
                    false,
                )?);
            }
            for k in 0..s.new_flows {
                let (src, port) = denied(k);
                den1.push(c.run(
                    Probe(src, tcp, 1024 + k as u16, port, frame::TCP_SYN),
                    1,
                    false,
                )?);
            }
            let family = if v6 { "IPv6" } else { "IPv4" };
            c.check_counters(&format!("{n} rules {family}"))?;
            let [est_first, est_last] = est.map(median);
            let [new_first_1, new_last_1] = new.map(median);
            let row = Row {
                rules: n,
                entries: if v6 { e6 } else { e4 },
                family,
                floor: floors[fi].0,
                floor_1: floors[fi].1,
                est_first,
                est_last,
                new_first_1,
                new_last_1,
                denied: median(den),
                denied_1: median(den1),
                repeat: rep,
            };
            eprintln!(
                "  linear {n:>7} rules {family}: established {} / {} | new (rep 1) first {} last {} | denied {} (rep {rep}; rep 1: {})",
                fmt_ns(row.est_first),
                fmt_ns(row.est_last),
                fmt_ns(row.new_first_1),
                fmt_ns(row.new_last_1),
                fmt_ns(row.denied),
                fmt_ns(row.denied_1)
            );
            rows.push(row);
        }
        c.reset()?;
    }
    Ok(section(s, &rows))
}

fn section(s: Sizes, rows: &[Row]) -> Section {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Linear-scan reference and parse-only floor\n\n\
         `BPF_PROG_TEST_RUN` (tc skb on loopback), ns/packet, medians. The **parse-only floor** \
         (`enforcer_bench_parse_only`) parses Ethernet, IPv4/IPv6 (extension headers) and the \
         transport ports with Enforcer's own parser and passes the packet: the cost before any \
         map lookup. The **linear-scan reference** (`enforcer_bench_linear`) evaluates the same \
         policies the way Calico's eBPF dataplane does: the ruleset of \
         `rules_inventory(N, 10)` flattened for pod 0 and compiled to one chain per IP family \
         (one entry per rule, net and port range), scanned in order with `bpf_loop`, first \
         match wins, behind an LRU conntrack. Its verdicts were checked against the flat \
         ruleset on every frame measured here (and on a ruleset with a deny rule and an IP \
         set), and its per-CPU verdict counters against the runs.\n\n\
         Established: a SYN opens the flow, then its ACK runs with repeat {} (a conntrack hit), \
         median over {} peers. New (repeat 1): {} distinct 5-tuples, one run each (conntrack \
         miss, scan, insert); compare with the floor's repeat-1 column, which carries the same \
         timer overhead. Denied: a peer in no rule's net (the whole chain, then the default), \
         median over {} frames with the repeat given; \"first\"/\"last\": a peer of the first / \
         last rule in evaluation order.\n",
        s.repeat, s.variants, s.new_flows, s.variants
    );
    let _ = writeln!(
        md,
        "| rules | family | chain entries | parse-only floor | floor (repeat 1) | established, first rule | established, last rule | new, first rule (repeat 1) | new, last rule (repeat 1) | denied | denied repeat | denied (repeat 1) |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut csv = String::from(
        "rules,family,chain_entries,floor_ns,floor_repeat1_ns,established_first_ns,established_last_ns,new_first_repeat1_ns,new_last_repeat1_ns,denied_ns,denied_repeat,denied_repeat1_ns\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.rules,
            r.family,
            r.entries,
            fmt_ns(r.floor),
            fmt_ns(r.floor_1),
            fmt_ns(r.est_first),
            fmt_ns(r.est_last),
            fmt_ns(r.new_first_1),
            fmt_ns(r.new_last_1),
            fmt_ns(r.denied),
            r.repeat,
            fmt_ns(r.denied_1)
        );
        let _ = writeln!(
            csv,
            "{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{},{:.1}",
            r.rules,
            r.family,
            r.entries,
            r.floor,
            r.floor_1,
            r.est_first,
            r.est_last,
            r.new_first_1,
            r.new_last_1,
            r.denied,
            r.repeat,
            r.denied_1
        );
    }
    // Ratios from this run.
    let _ = writeln!(md);
    for fam in ["IPv4", "IPv6"] {
        let fam_rows: Vec<&Row> = rows.iter().filter(|r| r.family == fam).collect();
        if let (Some(a), Some(z)) = (fam_rows.first(), fam_rows.last()) {
            let _ = writeln!(
                md,
                "- {fam}: denied at {} rules / {} rules: {:.0} / {:.0} = **{:.0}×**; established (last rule) at {} rules / parse-only floor: {:.0} / {:.0} = **{:.2}×**",
                z.rules,
                a.rules,
                z.denied,
                a.denied,
                z.denied / a.denied,
                z.rules,
                z.est_last,
                z.floor,
                z.est_last / z.floor
            );
        }
    }
    let mut series = Vec::new();
    for fam in ["IPv4", "IPv6"] {
        let pts = |f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|r| r.family == fam)
                .map(|r| (r.rules as f64, f(r)))
                .collect()
        };
        series.push(Series {
            name: format!("linear {fam}, new flow, last rule (repeat 1)"),
            points: pts(&|r| r.new_last_1),
        });
        series.push(Series {
            name: format!("linear {fam}, denied"),
            points: pts(&|r| r.denied),
        });
        series.push(Series {
            name: format!("linear {fam}, established"),
            points: pts(&|r| r.est_last),
        });
        // The floor does not depend on the rules: a two-point horizontal line.
        let xs: Vec<f64> = rows
            .iter()
            .filter(|r| r.family == fam)
            .map(|r| r.rules as f64)
            .collect();
        if let (Some(&x0), Some(&x1), Some(r)) =
            (xs.first(), xs.last(), rows.iter().find(|r| r.family == fam))
        {
            series.push(Series {
                name: format!("parse-only floor {fam}"),
                points: vec![(x0, r.floor), (x1, r.floor)],
            });
        }
    }
    Section {
        markdown: md,
        csv: vec![("linear.csv".into(), csv)],
        plots: vec![Plot {
            file: "linear.png".into(),
            title: "Linear-scan eBPF reference: ns/packet vs rules".into(),
            x_label: "rules".into(),
            y_label: "ns/packet".into(),
            log_x: true,
            log_y: true,
            series,
        }],
        aims: Vec::new(),
    }
}
