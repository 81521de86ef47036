//! veth packets/s: frames routed through a "node" network namespace into a pod's veth, with
//! no program, Enforcer, the iptables reference (legacy and nft) and the linear-scan eBPF
//! reference judging the pod's ingress.
//!
//! Topology (one per configuration and rule count, so no conntrack table, netfilter hook or
//! program of one configuration sees another's packets; the five of a rule count live side by
//! side so their repetitions can interleave):
//!
//! ```text
//!  ns A (sender pod)        ns R (node / router)                  ns B (receiver pod)
//!  p0 ──veth── h0 198.18.0.1/24   forwarding on   198.18.1.1/24 h1 ──veth── p1
//!                        routes: 198.18.128.0/17, 198.19.0.0/16 (rule nets) via A
//! ```
//!
//! The generator is `BPF_PROG_RUN` in live-frames mode: the XDP program
//! `enforcer_bench_gen` (enforcer-ebpf `bench_gen.rs`) returns `XDP_PASS` with
//! `ingress_ifindex = h0`, so each frame is received on h0, routed, and leaves through h1
//! (where Enforcer's to-endpoint program, the linear reference or the iptables `FORWARD -o h1`
//! chain judges it) to B, all on the injecting CPU: a batch of 64 frames traverses the router
//! in the syscall, and B's share runs from the backlog when the batch re-enables softirqs.
//! Packets/s = frames / wall time of the syscall, taken as the difference of a short and a
//! full run (each call also pays a fixed ~15-20 ms for the live-frames setup and teardown,
//! which the difference cancels; the plain frames / wall time is reported too); B's `p1`
//! receive counter must have grown by exactly the frames injected when each call returns. B owns no address and does not forward, so
//! it drops every frame at its routing step without answering (the same work in every
//! configuration).
//!
//! Traffic is TCP from the last rule's source net to the last rule's port (every rule before
//! it is checked and fails: the worst case for a linear chain), allowed. Shapes: one long flow
//! (a SYN, the SYN-ACK injected on h1, then the same ACK; iptables sees it ESTABLISHED) and
//! every packet a new flow (SYNs whose source port and address low bits the XDP program
//! rewrites from a counter; distinct within a configuration's run, and fewer than the
//! netfilter conntrack table holds).
//!
//! Repetitions interleave (one of every configuration, then the next round) and "× no program"
//! is the median of the per-round ratios, so a change in the shared machine's load during the
//! run touches every configuration alike.
//!
//! Counter checks (on every measured run; a mismatch fails the section): frames the generator
//! saw, packets B received, and the configuration's own verdict counter: Enforcer's
//! `VERDICT_COUNTERS` (allow_conntrack for the long flow, allow_policy for new flows, ingress),
//! the iptables line counters (the `RELATED,ESTABLISHED` accept; the last rule's mark line; the
//! default drop line stays at 0), the linear reference's counters (allowed; denied stays 0).
//!
//! trafgen (netsniff-ng) cross-check: the same long-flow ACK frame sent from ns A on p0 for a
//! fixed time, packets/s counted at B, for no program, Enforcer and iptables-legacy at the
//! largest rule count.

use std::{
    fmt::Write as _,
    fs::File,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::Array,
    programs::{TcAttachType, TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use enforcer_common::{REASON_ALLOW_CONNTRACK, REASON_ALLOW_POLICY};
use enforcer_user::{
    compile::{Compiled, EndpointId, compile, to_map_entries},
    datapath::{Datapath, OpenOptions},
    evaluator::Options,
    lab::netns,
    model::{Inventory, Namespace, Pod},
    testsupport::{PinBase, frame},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    flat::{self, FlatRuleset},
    inventories::{RULES_PER_POLICY, allow_from, labels, origin, policy, rule_port, selector},
    iptables::{self, Backend},
    linear::{self, Linear},
    report::{Aim, Plot, RunOpts, Section, Series},
};

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

const H0_MAC: [u8; 6] = [0x02, 0xbe, 0x00, 0x00, 0x00, 0x10];
const P0_MAC: [u8; 6] = [0x02, 0xbe, 0x00, 0x00, 0x00, 0x20];
const H1_MAC: [u8; 6] = [0x02, 0xbe, 0x00, 0x00, 0x00, 0x11];
const P1_MAC: [u8; 6] = [0x02, 0xbe, 0x00, 0x00, 0x00, 0x21];
const H0_ADDR: &str = "198.18.0.1/24";
const H1_ADDR: &str = "198.18.1.1/24";
/// Pod A (the sender; its address is the next hop towards the rule nets).
const POD_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Pod B, the endpoint under test.
const POD_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The rule nets: /29s from 198.18.128.0 up (12,288 of them fit in 198.18.0.0/15).
const RULE_NET_BASE: u32 = 0xc612_8000;
const RULE_NET_LEN: u8 = 29;
const MAX_RULES: usize = ((0xc614_0000 - RULE_NET_BASE) >> (32 - RULE_NET_LEN)) as usize;
const _: () = assert!(MAX_RULES >= 10_000, "the section's 10,000 rules must fit");

/// Rule `r`'s IPv4 source net.
fn rule_net_v4(r: usize) -> Ipv4Net {
    let addr = RULE_NET_BASE + ((r as u32) << (32 - RULE_NET_LEN));
    Ipv4Net::new(Ipv4Addr::from(addr), RULE_NET_LEN).unwrap_or_default()
}

/// Rule `r`'s IPv6 source net: a /124 in fd00:198:18:1::/64.
fn rule_net_v6(r: usize) -> Ipv6Net {
    let base = 0xfd00_0198_0018_0001_0000_0000_0000_0000u128 | ((r as u128) << 4);
    Ipv6Net::new(Ipv6Addr::from(base), 124).unwrap_or_default()
}

/// The long flow's source port; new flows use [`NEW_PORT_BASE`].. below it.
const LONG_FLOW_PORT: u16 = 65_001;
const NEW_PORT_BASE: u16 = 1024;
const NEW_PORTS: u32 = (LONG_FLOW_PORT - NEW_PORT_BASE) as u32;
/// Source addresses new flows cycle through: the whole /29.
const NEW_ADDRS: u32 = 1 << (32 - RULE_NET_LEN);
/// New flows per configuration run, at most: below the generator's `NEW_PORTS × NEW_ADDRS`
/// distinct tuples, and (see [`flow_budget`]) below netfilter's conntrack table size.
const NEW_FLOW_BUDGET: u64 = 230_000;

/// [`NEW_FLOW_BUDGET`], or 7/8 of `nf_conntrack_max` when that is smaller, so the iptables
/// configurations never run with a full conntrack table (which would evict or drop).
fn flow_budget() -> u64 {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(NEW_FLOW_BUDGET, |max| NEW_FLOW_BUDGET.min(max / 8 * 7))
}

/// The inventory of the section: the rules of [`crate::inventories::rules_inventory`] (10 a
/// policy, TCP from one net to one of 16 ports, every policy selecting every pod) with
/// source nets and pods in 198.18.0.0/15 and fd00:198:18::/48.
fn veth_inventory(rules: usize) -> Result<Inventory> {
    if rules > MAX_RULES {
        bail!("{rules} rules do not fit the address plan (at most {MAX_RULES})");
    }
    let mut inv = Inventory::default();
    inv.namespaces.push(Namespace {
        name: "bench".into(),
        labels: labels(&[("kubernetes.io/metadata.name", "bench".into())]),
        origin: origin(),
    });
    for (name, v4, v6) in [
        ("a", POD_A, 0xfd00_0198_0018_0000_0000_0000_0000_0002u128),
        ("b", POD_B, 0xfd00_0198_0018_0000_0000_0000_0001_0002u128),
    ] {
        inv.pods.push(Pod {
            namespace: "bench".into(),
            name: name.into(),
            labels: labels(&[("app", "bench".into())]),
            service_account: "default".into(),
            ports: Vec::new(),
            host_network: false,
            node_name: None,
            ips: vec![IpAddr::V4(v4), IpAddr::V6(Ipv6Addr::from(v6))],
            origin: origin(),
        });
    }
    let all = selector("all()")?;
    for j in 0..rules.div_ceil(RULES_PER_POLICY) {
        let ingress = (j * RULES_PER_POLICY..((j + 1) * RULES_PER_POLICY).min(rules))
            .map(|r| {
                allow_from(
                    vec![IpNet::V4(rule_net_v4(r)), IpNet::V6(rule_net_v6(r))],
                    None,
                    rule_port(r),
                )
            })
            .collect();
        inv.policies.push(policy(j, all.clone(), ingress));
    }
    Ok(inv)
}

fn pod_id(name: &str) -> EndpointId {
    EndpointId::Pod {
        namespace: "bench".into(),
        name: name.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

const TCP_SYN: u8 = frame::TCP_SYN;
const TCP_ACK: u8 = frame::TCP_ACK;

/// An Ethernet + IPv4 + TCP frame (no options, no payload: 54 bytes) with valid checksums.
#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let c = frame::l4_checksum(IpAddr::V4(src), IpAddr::V4(dst), 6, &h);
    h[16..18].copy_from_slice(&c.to_be_bytes());
    let ip = frame::V4::new(src.octets(), dst.octets(), 6).packet(&h);
    frame::ethernet(dst_mac, src_mac, frame::ETH_P_IP, &ip)
}

/// The frames of one rule count: the long flow's handshake and ACK, and the new-flow template.
struct Frames {
    syn: Vec<u8>,
    syn_ack: Vec<u8>,
    ack: Vec<u8>,
    new_flow: Vec<u8>,
}

fn frames(rules: usize) -> Frames {
    let net = rule_net_v4(rules - 1);
    let base = net.network();
    let long_src = Ipv4Addr::from(u32::from(base) + 1);
    let dport = rule_port(rules - 1);
    let (a_seq, b_seq) = (1_000, 5_000);
    Frames {
        syn: tcp_frame(
            H0_MAC,
            P0_MAC,
            long_src,
            POD_B,
            LONG_FLOW_PORT,
            dport,
            a_seq,
            0,
            TCP_SYN,
        ),
        syn_ack: tcp_frame(
            H1_MAC,
            P1_MAC,
            POD_B,
            long_src,
            dport,
            LONG_FLOW_PORT,
            b_seq,
            a_seq + 1,
            TCP_SYN | TCP_ACK,
        ),
        ack: tcp_frame(
            H0_MAC,
            P0_MAC,
            long_src,
            POD_B,
            LONG_FLOW_PORT,
            dport,
            a_seq + 1,
            b_seq + 1,
            TCP_ACK,
        ),
        new_flow: tcp_frame(
            H0_MAC,
            P0_MAC,
            base,
            POD_B,
            NEW_PORT_BASE,
            dport,
            a_seq,
            0,
            TCP_SYN,
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a thread that entered the network namespace `ns` refers to (setns changes
/// only that thread).
fn in_ns<T: Send>(ns: &File, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(ns).context("setns")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread inside a network namespace panicked"))?
    })
}

/// `ip ARGS` ([`netns::ip`]); a failure carries `ip`'s stderr.
fn ip(args: &[&str]) -> Result<()> {
    netns::ip(args)?;
    Ok(())
}

/// The three namespaces of one configuration run; deleted (with their veth pairs, IP sets,
/// iptables rules and conntrack tables) on drop.
struct Topology {
    names: [String; 3],
    router: File,
    a_name: String,
    b: File,
    h0: u32,
    h1: u32,
    /// Where this topology's new flows continue in the generator's sequence: each
    /// configuration walks the sequence from 0, so its new flows are distinct however runs
    /// of configurations interleave.
    flow_seq: std::sync::atomic::AtomicU64,
}

impl Topology {
    fn new(tag: &str) -> Result<Topology> {
        let id = format!("enf-pps-{}-{tag}", std::process::id());
        let names = [format!("{id}-r"), format!("{id}-a"), format!("{id}-b")];
        // Registered before creation: a failure half way still deletes what exists.
        let mut t = Topology {
            names: names.clone(),
            router: File::open("/dev/null").context("opening /dev/null")?,
            a_name: names[1].clone(),
            b: File::open("/dev/null").context("opening /dev/null")?,
            h0: 0,
            h1: 0,
            flow_seq: std::sync::atomic::AtomicU64::new(0),
        };
        let [r, a, b] = &names;
        for n in &names {
            ip(&["netns", "add", n])?;
        }
        let open = |n: &str| netns::open_netns(n).with_context(|| format!("opening netns {n}"));
        t.router = open(r)?;
        t.b = open(b)?;
        // No IPv6 (no router solicitations or DAD in the counters), no reverse-path filter.
        for (n, router) in [(r, true), (a, false), (b, false)] {
            netns::sysctls(
                n,
                &[
                    ("net/ipv6/conf/all/disable_ipv6".into(), "1"),
                    ("net/ipv6/conf/default/disable_ipv6".into(), "1"),
                    ("net/ipv4/conf/all/rp_filter".into(), "0"),
                    ("net/ipv4/conf/default/rp_filter".into(), "0"),
                    ("net/ipv4/ip_forward".into(), if router { "1" } else { "0" }),
                ],
            )?;
        }
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        for (h, hm, p, pm, peer_ns) in [
            ("h0", H0_MAC, "p0", P0_MAC, a.as_str()),
            ("h1", H1_MAC, "p1", P1_MAC, b.as_str()),
        ] {
            ip(&[
                "-n",
                r,
                "link",
                "add",
                h,
                "address",
                &mac(hm),
                "type",
                "veth",
                "peer",
                "name",
                p,
                "address",
                &mac(pm),
                "netns",
                peer_ns,
            ])?;
            ip(&["-n", peer_ns, "link", "set", p, "up"])?;
            ip(&["-n", r, "link", "set", h, "up"])?;
        }
        ip(&["-n", r, "link", "set", "lo", "up"])?;
        ip(&["-n", r, "addr", "add", H0_ADDR, "dev", "h0"])?;
        ip(&["-n", r, "addr", "add", H1_ADDR, "dev", "h1"])?;
        for (addr, m, dev) in [(POD_A, P0_MAC, "h0"), (POD_B, P1_MAC, "h1")] {
            ip(&[
                "-n",
                r,
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac(m),
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        for net in ["198.18.128.0/17", "198.19.0.0/16"] {
            ip(&[
                "-n",
                r,
                "route",
                "add",
                net,
                "via",
                &POD_A.to_string(),
                "dev",
                "h0",
            ])?;
        }
        let (h0, h1) = in_ns(&t.router, || {
            let idx = |n: &str| {
                enforcer_user::datapath::netif::ifindex(n)
                    .with_context(|| format!("no interface {n}"))
            };
            Ok((idx("h0")?, idx("h1")?))
        })?;
        t.h0 = h0;
        t.h1 = h1;
        Ok(t)
    }

    fn router_name(&self) -> &str {
        &self.names[0]
    }

    /// Packets p1 (pod B) has received.
    fn b_received(&self) -> Result<u64> {
        in_ns(&self.b, || {
            let dev = std::fs::read_to_string("/proc/thread-self/net/dev")
                .context("reading /proc/thread-self/net/dev")?;
            dev.lines()
                .find_map(|l| {
                    let (name, rest) = l.split_once(':')?;
                    (name.trim() == "p1")
                        .then(|| rest.split_whitespace().nth(1)?.parse::<u64>().ok())
                        .flatten()
                })
                .context("no p1 line in B's /proc/net/dev")
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            if std::path::Path::new(netns::NETNS_DIR).join(n).exists()
                && let Err(e) = ip(&["netns", "del", n])
            {
                eprintln!("pps cleanup: {e:#}; remove it with `ip netns del {n}`");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// `BENCH_GEN_CONFIG`'s value layout (see enforcer-ebpf `bench_gen.rs`).
const GEN_CONFIG_BYTES: usize = 128;
const GEN_TEMPLATE_OFF: usize = 64;
const GEN_TEMPLATE_LEN: usize = 54;
const MODE_FIXED: u32 = 0;
const MODE_NEW_FLOW: u32 = 1;
const BATCH: u32 = 64;

struct Generator {
    ebpf: Ebpf,
}

impl Generator {
    fn load() -> Result<Generator> {
        // The object holds every program's maps; the generator needs two. The production
        // maps it would create for nothing get one entry (the event ring keeps its size: it
        // must be a page multiple; the bench maps are declared with one entry).
        let mut ebpf = linear::load_bench_object(&[], "for the generator")?;
        let prog: &mut Xdp = ebpf
            .program_mut("enforcer_bench_gen")
            .context("enforcer_bench_gen is not in the eBPF object")?
            .try_into()
            .context("enforcer_bench_gen is not an XDP program")?;
        prog.load().context("loading enforcer_bench_gen")?;
        Ok(Generator { ebpf })
    }

    fn configure(&mut self, template: &[u8], mode: u32) -> Result<()> {
        if template.len() != GEN_TEMPLATE_LEN {
            bail!(
                "the generator takes {GEN_TEMPLATE_LEN}-byte frames, not {}",
                template.len()
            );
        }
        let mut v = [0u8; GEN_CONFIG_BYTES];
        v[0..4].copy_from_slice(&mode.to_le_bytes());
        v[4..8].copy_from_slice(&NEW_ADDRS.to_le_bytes());
        v[8..12].copy_from_slice(&u32::from(NEW_PORT_BASE).to_le_bytes());
        v[12..16].copy_from_slice(&NEW_PORTS.to_le_bytes());
        v[GEN_TEMPLATE_OFF..GEN_TEMPLATE_OFF + GEN_TEMPLATE_LEN].copy_from_slice(template);
        let mut map: Array<_, [u8; GEN_CONFIG_BYTES]> = Array::try_from(
            self.ebpf
                .map_mut("BENCH_GEN_CONFIG")
                .context("no BENCH_GEN_CONFIG map")?,
        )?;
        map.set(0, v, 0).context("writing BENCH_GEN_CONFIG")?;
        Ok(())
    }

    /// The sequence number of the next frame.
    fn seq(&self) -> Result<u64> {
        let map: Array<_, u64> = Array::try_from(
            self.ebpf
                .map("BENCH_GEN_SEQ")
                .context("no BENCH_GEN_SEQ map")?,
        )?;
        Ok(map.get(&0, 0)?)
    }

    fn set_seq(&mut self, seq: u64) -> Result<()> {
        let mut map: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut("BENCH_GEN_SEQ")
                .context("no BENCH_GEN_SEQ map")?,
        )?;
        map.set(0, seq, 0).context("writing BENCH_GEN_SEQ")?;
        Ok(())
    }

    /// Injects `count` copies of `template` (mode `mode`) as received on `ifindex` of the
    /// router namespace; returns the wall time of the run. Checks the generator saw them all.
    fn inject(
        &mut self,
        topo: &Topology,
        ifindex: u32,
        template: &[u8],
        mode: u32,
        count: u32,
    ) -> Result<Duration> {
        self.configure(template, mode)?;
        let before = if mode == MODE_NEW_FLOW {
            topo.flow_seq.load(std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        };
        self.set_seq(before)?;
        let prog: &Xdp = self
            .ebpf
            .program("enforcer_bench_gen")
            .context("no enforcer_bench_gen")?
            .try_into()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(template.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let elapsed = in_ns(&topo.router, || {
            let started = Instant::now();
            prog.test_run(TestRunOptions {
                data_in: Some(template),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_RUN (live frames)")?;
            Ok(started.elapsed())
        })?;
        let after = self.seq()?;
        let seen = after - before;
        if seen != u64::from(count) {
            bail!("the generator saw {seen} frames, {count} were asked for");
        }
        if mode == MODE_NEW_FLOW {
            topo.flow_seq
                .store(after, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(elapsed)
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    None,
    Enforcer,
    Iptables(Backend),
    Linear,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::None => "no program",
            Config::Enforcer => "Enforcer",
            Config::Iptables(b) => b.name(),
            Config::Linear => "linear eBPF",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    LongFlow,
    NewFlows,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::LongFlow => "one long flow",
            Shape::NewFlows => "every packet a new flow",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Shape::LongFlow => "long",
            Shape::NewFlows => "new",
        }
    }
}

/// A configuration installed in a topology. Field order is drop order.
enum Installed {
    None,
    Enforcer {
        /// Boxed: the datapath's handles are large next to the other variants.
        dp: Box<Datapath>,
        _pins: PinBase,
    },
    Iptables {
        backend: Backend,
        rendered: iptables::Rendered,
        last_rule: usize,
    },
    Linear(Linear),
}

impl Installed {
    fn install(
        config: Config,
        topo: &Topology,
        compiled: &Compiled,
        flat: &FlatRuleset,
    ) -> Result<Installed> {
        Ok(match config {
            Config::None => Installed::None,
            Config::Enforcer => {
                let pins = PinBase::new("pps");
                let mut dp = Datapath::open(OpenOptions {
                    flip_grace: Duration::ZERO,
                    ..pins.open_options()
                })
                .with_context(|| format!("Datapath::open under {}", pins.path().display()))?;
                let (h0, h1) = (topo.h0, topo.h1);
                let entries = to_map_entries(compiled, 0, &|id| match id {
                    EndpointId::Pod { name, .. } if name == "a" => vec![h0],
                    EndpointId::Pod { name, .. } if name == "b" => vec![h1],
                    _ => Vec::new(),
                })
                .context("rendering map entries")?;
                dp.program(&entries).context("programming the datapath")?;
                in_ns(&topo.router, || {
                    dp.attach(h1).context("attaching to h1")?;
                    Ok(())
                })?;
                Installed::Enforcer {
                    dp: Box::new(dp),
                    _pins: pins,
                }
            }
            Config::Iptables(backend) => {
                let rendered = iptables::render(flat, "h1")?;
                iptables::apply(topo.router_name(), backend, &rendered)?;
                let last_rule = flat
                    .rules
                    .len()
                    .checked_sub(1)
                    .context("an empty ruleset")?;
                if rendered.rule_lines[last_rule].is_empty() {
                    bail!("the last rule has no IPv4 line");
                }
                Installed::Iptables {
                    backend,
                    rendered,
                    last_rule,
                }
            }
            Config::Linear => {
                let mut linear = Linear::load(flat)?;
                in_ns(&topo.router, || {
                    linear.attach(topo.h1, TcAttachType::Egress)?;
                    Ok(())
                })?;
                linear.reset()?;
                Installed::Linear(linear)
            }
        })
    }

    /// The verdict counter that must grow by one per packet of `shape`; `None` without one.
    fn verdicts(&self, topo: &Topology, shape: Shape) -> Result<Option<u64>> {
        Ok(match self {
            Installed::None => None,
            Installed::Enforcer { dp, .. } => {
                let reason = match shape {
                    Shape::LongFlow => REASON_ALLOW_CONNTRACK,
                    Shape::NewFlows => REASON_ALLOW_POLICY,
                };
                Some(
                    dp.counters()?
                        .iter()
                        .filter(|c| c.reason == reason && c.direction == "ingress")
                        .map(|c| c.packets)
                        .sum(),
                )
            }
            Installed::Iptables {
                backend,
                rendered,
                last_rule,
            } => {
                let c = iptables::counters(topo.router_name(), *backend)?;
                // Every packet is allowed: none may reach the default drop.
                let dropped = c
                    .get(&rendered.default_line)
                    .context("the default line is missing")?;
                if dropped != 0 {
                    bail!("{dropped} packets reached the endpoint chain's default drop");
                }
                let lines = match shape {
                    Shape::LongFlow => std::slice::from_ref(&rendered.established),
                    Shape::NewFlows => rendered.rule_lines[*last_rule].as_slice(),
                };
                Some(c.sum(lines).context("a counted iptables line is missing")?)
            }
            Installed::Linear(linear) => {
                let c = linear.counters()?;
                if c.denied != 0 {
                    bail!("the linear reference denied {} packets", c.denied);
                }
                Some(c.allowed)
            }
        })
    }

    fn counter_name(&self, shape: Shape) -> &'static str {
        match (self, shape) {
            (Installed::None, _) => "packets at B",
            (Installed::Enforcer { .. }, Shape::LongFlow) => "allow_conntrack (ingress)",
            (Installed::Enforcer { .. }, Shape::NewFlows) => "allow_policy (ingress)",
            (Installed::Iptables { .. }, Shape::LongFlow) => "RELATED,ESTABLISHED accept line",
            (Installed::Iptables { .. }, Shape::NewFlows) => "last rule's mark line",
            (Installed::Linear(_), _) => "allowed (conntrack hits and rule allows)",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Row {
    config: Config,
    rules: usize,
    shape: Shape,
    packets: u32,
    /// Marginal Mpps of every repetition: (full − short run frames) / (full − short run time).
    mpps: Vec<f64>,
    /// Frames / wall time of every repetition's full run (includes the syscall's fixed cost).
    raw_mpps: Vec<f64>,
    counters: String,
}

impl Row {
    fn median(&self) -> f64 {
        crate::median(self.mpps.clone())
    }

    fn raw_median(&self) -> f64 {
        crate::median(self.raw_mpps.clone())
    }
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    reps: usize,
    /// Wall time to aim one repetition at.
    target: Duration,
    rules: &'static [usize],
    trafgen_time: Duration,
    trafgen_rounds: usize,
    /// New flows per configuration and rule count, at most.
    flow_budget: u64,
}

/// One timed, checked injection; returns Mpps.
fn run_once(
    generator: &mut Generator,
    topo: &Topology,
    installed: &Installed,
    shape: Shape,
    template: &[u8],
    count: u32,
) -> Result<f64> {
    let mode = match shape {
        Shape::LongFlow => MODE_FIXED,
        Shape::NewFlows => MODE_NEW_FLOW,
    };
    let b0 = topo.b_received()?;
    let v0 = installed.verdicts(topo, shape)?;
    let elapsed = generator.inject(topo, topo.h0, template, mode, count)?;
    let b1 = topo.b_received()?;
    let v1 = installed.verdicts(topo, shape)?;
    let n = u64::from(count);
    if b1 - b0 != n {
        bail!(
            "pod B received {} packets, {n} were injected ({shape:?})",
            b1 - b0
        );
    }
    if let (Some(v0), Some(v1)) = (v0, v1)
        && v1 - v0 != n
    {
        bail!(
            "{} grew by {}, {n} packets were injected ({shape:?})",
            installed.counter_name(shape),
            v1 - v0
        );
    }
    Ok(n as f64 / elapsed.as_secs_f64() / 1e6)
}

fn round_batch(x: f64) -> u32 {
    let n = (x / f64::from(BATCH)).ceil().max(16.0) * f64::from(BATCH);
    n.min(f64::from(u32::MAX - BATCH)) as u32
}

/// Frames per repetition: grows a checked run until it takes at least half of `target`
/// (so the syscall's fixed cost, the page-pool setup of live-frames mode, is negligible),
/// never using more than `budget` frames in all (calibration and repetitions); returns the
/// per-repetition count and the frames calibration used.
#[allow(clippy::too_many_arguments)]
fn calibrate(
    generator: &mut Generator,
    topo: &Topology,
    installed: &Installed,
    shape: Shape,
    template: &[u8],
    plan: &Plan,
    budget: u64,
) -> Result<(u32, u64)> {
    let per_rep = |used: u64| (budget.saturating_sub(used) / plan.reps as u64) as f64;
    let mut count = 16 * BATCH;
    let mut used = 0u64;
    let target = plan.target.as_secs_f64();
    for _ in 0..8 {
        let mpps = run_once(generator, topo, installed, shape, template, count)?;
        used += u64::from(count);
        let elapsed = f64::from(count) / (mpps * 1e6);
        if std::env::var_os("ENFORCER_PPS_DEBUG").is_some() {
            eprintln!(
                "    calibrate {shape:?}: {count} frames in {:.2} ms",
                elapsed * 1e3
            );
        }
        let want = f64::from(count) * target / elapsed.max(1e-6);
        if elapsed >= target / 2.0 || want >= per_rep(used) {
            return Ok((round_batch(want.min(per_rep(used)) - 63.0), used));
        }
        let next =
            (f64::from(count) * (target / elapsed).clamp(2.0, 64.0)).min(per_rep(used) / 2.0);
        if next <= f64::from(count) {
            return Ok((round_batch(want.min(per_rep(used)) - 63.0), used));
        }
        count = round_batch(next);
    }
    Ok((count, used))
}

/// One configuration, installed in its own topology. Field order is drop order: the
/// configuration goes before its namespaces.
struct Bed {
    config: Config,
    installed: Installed,
    topo: Topology,
}

/// Both shapes for every configuration of one rule count. Repetitions are interleaved
/// (repetition 1 of every configuration, then repetition 2, ...) so a change in the machine's
/// background load during the run touches every configuration alike.
fn measure(
    generator: &mut Generator,
    beds: &[Bed],
    frames: &Frames,
    plan: &Plan,
    rules: usize,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // One long flow: open it (SYN from A, SYN-ACK from B), then ACKs.
    for bed in beds {
        generator.inject(&bed.topo, bed.topo.h0, &frames.syn, MODE_FIXED, 1)?;
        generator.inject(&bed.topo, bed.topo.h1, &frames.syn_ack, MODE_FIXED, 1)?;
    }
    // Every packet a new flow: within the flow budget.
    for (shape, template, budget) in [
        (Shape::LongFlow, &frames.ack, u64::from(u32::MAX / 2)),
        // Each repetition sends 1.25× the count (the short run too).
        (Shape::NewFlows, &frames.new_flow, plan.flow_budget / 5 * 4),
    ] {
        let mut counts = Vec::new();
        for bed in beds {
            let (count, _) = calibrate(
                generator,
                &bed.topo,
                &bed.installed,
                shape,
                template,
                plan,
                budget,
            )
            .with_context(|| format!("{}, {rules} rules, {}", bed.config.name(), shape.name()))?;
            counts.push(count);
        }
        let mut mpps = vec![Vec::new(); beds.len()];
        let mut raw = vec![Vec::new(); beds.len()];
        for _ in 0..plan.reps {
            for (k, bed) in beds.iter().enumerate() {
                // A short run and a full one: their difference cancels the syscall's fixed
                // cost (live-frames setup and teardown, ~15-20 ms here).
                let small = (counts[k] / 4 / BATCH).max(1) * BATCH;
                let mut timed = |count: u32| {
                    run_once(generator, &bed.topo, &bed.installed, shape, template, count)
                        .map(|mpps| f64::from(count) / (mpps * 1e6))
                        .with_context(|| {
                            format!("{}, {rules} rules, {}", bed.config.name(), shape.name())
                        })
                };
                let t_small = timed(small)?;
                let t_full = timed(counts[k])?;
                raw[k].push(f64::from(counts[k]) / t_full / 1e6);
                mpps[k].push(f64::from(counts[k] - small) / (t_full - t_small).max(1e-9) / 1e6);
            }
        }
        for (k, bed) in beds.iter().enumerate() {
            rows.push(Row {
                config: bed.config,
                rules,
                shape,
                packets: counts[k],
                mpps: std::mem::take(&mut mpps[k]),
                raw_mpps: std::mem::take(&mut raw[k]),
                counters: bed.installed.counter_name(shape).into(),
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// trafgen
// ---------------------------------------------------------------------------------------------

fn trafgen_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("trafgen").is_file()))
}

/// Packets/s at B while trafgen sends `frame` on p0 (ns A) from one CPU, over `time` after
/// a short warm-up.
fn trafgen_pps(topo: &Topology, frame: &[u8], time: Duration) -> Result<f64> {
    let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    let conf = format!("{{ {} }}\n", bytes.join(", "));
    // --no-sock-mem and --notouch-irq: leave the machine's socket memory sysctls and IRQ affinities alone.
    let mut child = Command::new("ip")
        .process_group(0)
        .args(["netns", "exec", &topo.a_name])
        .args([
            "trafgen",
            "-o",
            "p0",
            "-i",
            "-",
            "-P",
            "1",
            "--no-sock-mem",
            "--notouch-irq",
            "-C",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting trafgen")?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.as_bytes());
    }
    let measured = (|| -> Result<f64> {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("trafgen exited early ({status}): {}", err.trim());
        }
        let (b0, t0) = (topo.b_received()?, Instant::now());
        std::thread::sleep(time);
        let (b1, t1) = (topo.b_received()?, Instant::now());
        Ok((b1 - b0) as f64 / (t1 - t0).as_secs_f64())
    })();
    // trafgen sends from a forked worker that outlives a signal to the parent alone: signal
    // the process group the child leads (our child's own id), SIGINT first, SIGKILL after 3 s,
    // and wait until the group is empty so no sender runs into the next measurement.
    let group = child.id() as libc::pid_t;
    let signal_group = |sig: libc::c_int| {
        // SAFETY: kill(2) on the process group of our own child (negative pid = group).
        unsafe { libc::kill(-group, sig) == 0 }
    };
    signal_group(libc::SIGINT);
    let mut deadline = Instant::now() + Duration::from_secs(3);
    let mut killed = false;
    loop {
        let _ = child.try_wait();
        // Signal 0: is any process of the group left?
        if !signal_group(0) {
            break;
        }
        if Instant::now() > deadline {
            if killed {
                bail!("trafgen (process group {group}) does not exit");
            }
            signal_group(libc::SIGKILL);
            killed = true;
            deadline = Instant::now() + Duration::from_secs(3);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    measured
}

// ---------------------------------------------------------------------------------------------
// The section
// ---------------------------------------------------------------------------------------------

const CONFIGS: [Config; 5] = [
    Config::None,
    Config::Enforcer,
    Config::Iptables(Backend::Legacy),
    Config::Iptables(Backend::Nft),
    Config::Linear,
];

pub(crate) fn run(opts: &RunOpts) -> Result<Section> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the packets/s section creates namespaces and loads eBPF programs: run as root");
    }
    let plan = if opts.quick {
        Plan {
            reps: 5,
            target: Duration::from_millis(120),
            rules: &[10, 1_000, 10_000],
            trafgen_time: Duration::from_millis(1_000),
            trafgen_rounds: 2,
            flow_budget: flow_budget(),
        }
    } else {
        Plan {
            reps: 5,
            target: Duration::from_millis(400),
            rules: &[10, 100, 1_000, 3_000, 10_000],
            trafgen_time: Duration::from_millis(2_000),
            trafgen_rounds: 3,
            flow_budget: flow_budget(),
        }
    };
    let started = Instant::now();
    let mut generator = Generator::load()?;
    let trafgen = trafgen_available();
    let largest = plan.rules.last().copied().unwrap_or(10);
    let mut rows: Vec<Row> = Vec::new();
    let mut tg: Vec<(Config, f64)> = Vec::new();
    let mut setup_notes: Vec<String> = Vec::new();
    for &n in plan.rules {
        let inv = veth_inventory(n)?;
        let t = Instant::now();
        let compiled = compile(&inv, &Options::default()).context("compile")?;
        let compile_s = t.elapsed().as_secs_f64();
        let flat = flat::flatten(&inv, &pod_id("b"))?;
        let frames = frames(n);
        let mut beds = Vec::new();
        for config in CONFIGS {
            let tag = format!("{n}-{}", config.name().replace(' ', ""));
            let topo = Topology::new(&tag)?;
            let t = Instant::now();
            let installed = Installed::install(config, &topo, &compiled, &flat)
                .with_context(|| format!("installing {} with {n} rules", config.name()))?;
            let install_s = t.elapsed().as_secs_f64();
            match &installed {
                Installed::Enforcer { .. } => setup_notes.push(format!(
                    "{n} rules: Enforcer compile {compile_s:.2} s, program + attach {install_s:.2} s"
                )),
                Installed::Iptables {
                    backend, rendered, ..
                } => setup_notes.push(format!(
                    "{n} rules: {} restore of {} lines {install_s:.2} s",
                    backend.name(),
                    rendered.lines
                )),
                Installed::None | Installed::Linear(_) => {}
            }
            beds.push(Bed {
                config,
                installed,
                topo,
            });
        }
        let measured = measure(&mut generator, &beds, &frames, &plan, n)?;
        for r in &measured {
            eprintln!(
                "  pps {:>16} {:>6} rules {:<24}: {:.3} Mpps (reps {:?}, {} packets each)",
                r.config.name(),
                n,
                r.shape.name(),
                r.median(),
                r.mpps
                    .iter()
                    .map(|x| (x * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>(),
                r.packets
            );
        }
        rows.extend(measured);
        if n == largest && trafgen {
            // Rounds of (no program, Enforcer, iptables-legacy): each ratio pairs runs of
            // one round.
            let order = [
                Config::None,
                Config::Enforcer,
                Config::Iptables(Backend::Legacy),
            ];
            for config in (0..plan.trafgen_rounds).flat_map(|_| order) {
                let Some(bed) = beds.iter().find(|b| b.config == config) else {
                    continue;
                };
                let pps = trafgen_pps(&bed.topo, &frames.ack, plan.trafgen_time)
                    .with_context(|| format!("trafgen, {}", config.name()))?;
                eprintln!(
                    "  trafgen {:>16} {n:>6} rules: {:.3} Mpps",
                    config.name(),
                    pps / 1e6
                );
                tg.push((config, pps / 1e6));
            }
        }
        drop(beds);
    }
    Ok(section(
        opts,
        &plan,
        &rows,
        &tg,
        trafgen,
        &setup_notes,
        started.elapsed(),
    ))
}

fn find(rows: &[Row], config: Config, rules: usize, shape: Shape) -> Option<&Row> {
    rows.iter()
        .find(|r| r.config == config && r.rules == rules && r.shape == shape)
}

/// `row` relative to no program: the median over repetitions of `row`'s Mpps / no program's
/// Mpps in the same round (repetitions are interleaved, so each pair ran moments apart).
fn paired_ratio(rows: &[Row], row: &Row) -> f64 {
    let Some(none) = find(rows, Config::None, row.rules, row.shape) else {
        return f64::NAN;
    };
    crate::median(
        row.mpps
            .iter()
            .zip(&none.mpps)
            .map(|(a, b)| a / b)
            .collect(),
    )
}

fn section(
    opts: &RunOpts,
    plan: &Plan,
    rows: &[Row],
    tg: &[(Config, f64)],
    trafgen: bool,
    setup_notes: &[String],
    took: Duration,
) -> Section {
    let ratio = |r: &Row| paired_ratio(rows, r);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## veth packets/s\n\n\
         Frames are injected with `BPF_PROG_RUN` in live-frames mode (XDP `enforcer_bench_gen` \
         returning `XDP_PASS`, `ingress_ifindex` = the node side of pod A's veth, batches of {BATCH}) \
         into a node namespace that routes them out of pod B's veth to pod B (TCP from the last \
         rule's source net to its port: every rule before it is checked). Pod B's policy is \
         judged there by: nothing; Enforcer (tcx egress of B's host-side veth); the same \
         policies as iptables chains (a per-endpoint chain from `FORWARD -o`, conntrack \
         `RELATED,ESTABLISHED` accept and `INVALID` drop first, one chain per policy whose allow \
         rules mark and return, default drop; ipsets for selectors) loaded with \
         `iptables-legacy-restore` or `iptables-nft-restore`; the linear-scan eBPF reference \
         (rules compiled to one straight chain scanned in order behind an LRU conntrack, as \
         Calico's eBPF dataplane does; tcx egress of the same veth). Every configuration gets fresh \
         namespaces. Each repetition is a short run (¼ of the frames) and a full run, both \
         checked; Mpps = (full − short frames) / (full − short wall time of the syscall), which \
         cancels the syscall's fixed cost (live-frames setup and teardown: ~15-20 ms a call \
         here); \"Mpps incl. syscall cost\" is the full run's frames / wall time. Medians of {} \
         repetitions, which run \
         interleaved (one of every configuration, then the next round); \"× no program\" is the \
         median of the per-round ratios; \
         \"counters\" says which verdict counter grew by exactly the frames injected on every \
         repetition (besides the generator's own count and the packets pod B received, checked \
         for every configuration). One long flow: a handshake, then the same ACK (ESTABLISHED \
         in netfilter's conntrack, allow_conntrack in Enforcer's). New flows: SYNs whose source \
         port and address the generator rewrites per packet (fewer than {} per configuration, \
         so netfilter's conntrack table never fills). Section time {:.0} s ({}).\n",
        plan.reps,
        plan.flow_budget,
        took.as_secs_f64(),
        if opts.quick { "quick" } else { "full" }
    );
    let _ = writeln!(
        md,
        "| configuration | rules | traffic | Mpps | × no program | Mpps incl. syscall cost | packets/rep | counters checked |\n|---|---:|---|---:|---:|---:|---:|---|"
    );
    let mut csv = String::from(
        "config,rules,shape,packets_per_rep,reps,mpps_median,mpps_min,mpps_max,ratio_to_none,mpps_incl_syscall_median,counters_checked\n",
    );
    for &n in plan.rules {
        for shape in [Shape::LongFlow, Shape::NewFlows] {
            for config in CONFIGS {
                let Some(r) = find(rows, config, n, shape) else {
                    continue;
                };
                let min = r.mpps.iter().copied().fold(f64::INFINITY, f64::min);
                let max = r.mpps.iter().copied().fold(0.0, f64::max);
                let _ = writeln!(
                    md,
                    "| {} | {n} | {} | {:.3} | {:.2} | {:.3} | {} | ok: {} |",
                    config.name(),
                    shape.name(),
                    r.median(),
                    ratio(r),
                    r.raw_median(),
                    r.packets,
                    if config == Config::None {
                        "packets at B".to_string()
                    } else {
                        format!("{}, packets at B", r.counters)
                    }
                );
                let _ = writeln!(
                    csv,
                    "{},{n},{},{},{},{:.4},{min:.4},{max:.4},{:.4},{:.4},\"{}\"",
                    config.name(),
                    shape.short(),
                    r.packets,
                    r.mpps.len(),
                    r.median(),
                    ratio(r),
                    r.raw_median(),
                    r.counters
                );
            }
        }
    }
    if !setup_notes.is_empty() {
        let _ = writeln!(md, "\nSetup times: {}.", setup_notes.join("; "));
    }
    let _ = writeln!(md, "\n### trafgen cross-check\n");
    if !trafgen {
        let _ = writeln!(
            md,
            "trafgen is not installed (`cargo xtask setup` installs netsniff-ng): not measured."
        );
    } else {
        let largest = plan.rules.last().copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "trafgen (netsniff-ng) sends the long flow's ACK frame from pod A's veth (one CPU, \
             `AF_PACKET` ring, qdisc bypass) for {:.0} s after a 0.3 s warm-up; packets/s counted \
             at pod B. {largest} rules, one long flow (opened by the live-frames handshake). {} \
             rounds of (no program, Enforcer, iptables-legacy); Mpps is the mean over rounds (each \
             round's value in brackets), \"× no program\" the mean of the per-round ratios. The \
             live-frames columns repeat the table above.\n\n\
             | configuration | trafgen Mpps | × no program (trafgen) | live frames Mpps | × no program (live frames) |\n|---|---:|---:|---:|---:|",
            plan.trafgen_time.as_secs_f64(),
            plan.trafgen_rounds
        );
        let nones: Vec<f64> = tg
            .iter()
            .filter(|t| t.0 == Config::None)
            .map(|t| t.1)
            .collect();
        let live_none = find(rows, Config::None, largest, Shape::LongFlow);
        for config in [
            Config::None,
            Config::Enforcer,
            Config::Iptables(Backend::Legacy),
        ] {
            let runs: Vec<f64> = tg.iter().filter(|t| t.0 == config).map(|t| t.1).collect();
            if runs.is_empty() {
                continue;
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let ratios: Vec<f64> = runs.iter().zip(&nones).map(|(a, b)| a / b).collect();
            let live = find(rows, config, largest, Shape::LongFlow);
            let _ = writeln!(
                md,
                "| {} | {:.3} ({}) | {:.2} | {:.3} | {:.2} |",
                config.name(),
                mean(&runs),
                runs.iter()
                    .map(|r| format!("{r:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                mean(&ratios),
                live.map_or(f64::NAN, Row::median),
                match (live, live_none) {
                    (Some(l), Some(_)) => paired_ratio(rows, l),
                    _ => f64::NAN,
                }
            );
        }
    }

    let mut series = Vec::new();
    for config in CONFIGS {
        for shape in [Shape::LongFlow, Shape::NewFlows] {
            let points: Vec<(f64, f64)> = plan
                .rules
                .iter()
                .filter_map(|&n| find(rows, config, n, shape).map(|r| (n as f64, r.median())))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    name: format!("{}, {}", config.name(), shape.short()),
                    points,
                });
            }
        }
    }
    let plot = Plot {
        file: "veth_pps.png".into(),
        title: "veth packets/s through the node (live frames)".into(),
        x_label: "rules".into(),
        y_label: "Mpps".into(),
        log_x: true,
        log_y: false,
        series,
    };

    let mut aims = Vec::new();
    let largest = plan.rules.last().copied().unwrap_or(0);
    for shape in [Shape::LongFlow, Shape::NewFlows] {
        if let (Some(e), Some(none)) = (
            find(rows, Config::Enforcer, largest, shape),
            find(rows, Config::None, largest, shape),
        ) {
            let value = paired_ratio(rows, e);
            aims.push(Aim {
                aim: format!(
                    "veth packets/s with Enforcer at {largest} rules at least 90% of no program ({})",
                    shape.name()
                ),
                measured: format!(
                    "median of per-repetition ratios; medians {:.3} Mpps / {:.3} Mpps",
                    e.median(),
                    none.median()
                ),
                value,
                met: value >= 0.9,
            });
        }
    }
    for (n, expect, lo, hi) in [(largest, 0.1, 0.05, 0.2), (1_000, 0.5, 0.25, 1.0)] {
        if let (Some(ipt), Some(none)) = (
            find(rows, Config::Iptables(Backend::Legacy), n, Shape::NewFlows),
            find(rows, Config::None, n, Shape::NewFlows),
        ) {
            let value = paired_ratio(rows, ipt);
            aims.push(Aim {
                aim: format!(
                    "iptables-legacy at {n} rules near {expect}× of no program (every packet a new flow; \"near\": within a factor of 2)"
                ),
                measured: format!(
                    "median of per-repetition ratios; medians {:.3} Mpps / {:.3} Mpps",
                    ipt.median(),
                    none.median()
                ),
                value,
                met: (lo..=hi).contains(&value),
            });
        }
    }
    Section {
        markdown: md,
        csv: vec![("veth_pps.csv".into(), csv)],
        plots: vec![plot],
        aims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::FlatAction;

    #[test]
    fn rule_nets_stay_in_the_benchmark_range() {
        let range: Ipv4Net = "198.18.0.0/15".parse().unwrap_or_default();
        for r in [0, 1, 9_999, MAX_RULES - 1] {
            let n = rule_net_v4(r);
            assert!(range.contains(&n), "{n}");
            assert!(!n.contains(&POD_A) && !n.contains(&POD_B));
        }
        assert_eq!(rule_net_v4(1).network(), Ipv4Addr::new(198, 18, 128, 8));
        assert!(veth_inventory(MAX_RULES + 1).is_err());
    }

    #[test]
    fn frames_are_54_bytes_with_valid_ipv4_checksums() {
        let f = frames(1_000);
        for fr in [&f.syn, &f.syn_ack, &f.ack, &f.new_flow] {
            assert_eq!(fr.len(), GEN_TEMPLATE_LEN);
            assert_eq!(frame::checksum(&fr[14..34]), 0);
        }
        assert_eq!(&f.ack[0..6], &H0_MAC);
        assert_eq!(&f.syn_ack[0..6], &H1_MAC);
    }

    /// The traffic is decided by the last rule, allowed: the long flow and every source
    /// address the generator cycles through.
    #[test]
    fn the_last_rule_decides_the_traffic() {
        let n = 1_000;
        let inv = veth_inventory(n).unwrap_or_else(|e| panic!("{e}"));
        let flat = flat::flatten(&inv, &pod_id("b")).unwrap_or_else(|e| panic!("{e}"));
        let base = u32::from(rule_net_v4(n - 1).network());
        for k in 0..NEW_ADDRS {
            let src = IpAddr::V4(Ipv4Addr::from(base + k));
            assert_eq!(
                flat.decide(src, 6, Some(rule_port(n - 1))),
                (Some(n - 1), FlatAction::Allow)
            );
        }
        assert_eq!(
            flat.decide(IpAddr::V4(Ipv4Addr::from(base)), 6, Some(9)).1,
            FlatAction::Deny
        );
    }
}
