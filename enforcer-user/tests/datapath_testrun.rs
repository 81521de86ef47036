//! The real TC datapath (enforcer-ebpf) under `BPF_PROG_TEST_RUN`: crafted Ethernet frames
//! through both programs, with the maps filled by hand the way the loader will fill them.
//!
//! Privileged: every test loads the object into the kernel and FAILS (never skips) when not
//! root or when this binary embeds the stub object. The tests share the kernel, so they
//! serialise on a process-wide mutex (as if run with `--test-threads=1`). Maps are not
//! pinned: each test gets fresh maps.
//!
//! `BPF_PROG_TEST_RUN` runs a tc program on an skb whose device is loopback unless the
//! context says otherwise, so `skb->ifindex` is 1 here and the endpoints sit on ifindex 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, MutexGuard, PoisonError};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DENY, ANY, CONFIG_FAIL_CLOSED, CONFIG_SRC_PORTS, CT_ICMP_TYPE_CODE_SHIFT,
    CT_INITIATOR_A, CT_SEEN_REPLY, CT_TCP_FIN, CT_TCP_RST, CT_TCP_SYN, Config, CtKey, CtValue,
    DIR_EGRESS, DIR_INGRESS, EVENTS_PER_WINDOW, EndpointKey, EndpointValue, FlowEvent, NUM_REASONS,
    PORT_CLASS_ON_MISS, PORT_KIND_DST, PORT_KIND_SRC, PeerV4Data, PeerV6Data, PortData,
    REASON_ALLOW_CONNTRACK, REASON_ALLOW_POLICY, REASON_DENY_NO_ENDPOINT, REASON_DENY_NO_VERDICT,
    REASON_DENY_POLICY, REASON_DENY_UNPARSEABLE, REASON_EVENT_DROPPED, REASON_PASS_FRAGMENT,
    REASON_PASS_NO_ENDPOINT, REASON_PASS_NON_IP, REASON_RECHECK, VerdictKey, VerdictValue, maps,
    programs,
};
use enforcer_user::ebpf_object;

/// `TCX_NEXT`: allowed, the next program or the stack decides.
const PASS: i32 = -1;
/// `TC_ACT_SHOT`.
const DROP: i32 = 2;
/// Loopback: the device `BPF_PROG_TEST_RUN` gives the skb.
const LO: u32 = 1;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

static KERNEL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// Environment guard
// ---------------------------------------------------------------------------------------------

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("reading /proc/self/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status"))
}

/// Fails (never skips) when the test cannot do its job: privileged tests must prove the
/// datapath, not pass vacuously on a machine that cannot run it.
fn require_privileged_environment() -> &'static [u8] {
    let euid = effective_uid();
    assert!(
        euid == 0,
        "privileged test needs root (CAP_BPF + CAP_NET_ADMIN) to load eBPF programs; \
         effective uid is {euid}. Run `cargo xtask test` as root."
    );
    ebpf_object::object().unwrap_or_else(|e| panic!("privileged test cannot run: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The loaded datapath and its maps
// ---------------------------------------------------------------------------------------------

struct Datapath {
    ebpf: Ebpf,
    config: Array<MapData, Config>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    peer_v4: LpmTrie<MapData, PeerV4Data, u32>,
    peer_v6: LpmTrie<MapData, PeerV6Data, u32>,
    ports: LpmTrie<MapData, PortData, u32>,
    verdicts: HashMap<MapData, VerdictKey, VerdictValue>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    verdict_counters: PerCpuArray<MapData, u64>,
    rule_counters: PerCpuArray<MapData, u64>,
    staged_counters: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    _kernel: MutexGuard<'static, ()>,
}

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> T
where
    T::Error: std::fmt::Display,
{
    let map = ebpf
        .take_map(name)
        .unwrap_or_else(|| panic!("the eBPF object has no map {name}"));
    T::try_from(map).unwrap_or_else(|e| panic!("map {name} has the wrong type: {e}"))
}

fn load_classifier(ebpf: &mut Ebpf, name: &str) {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("the eBPF object has no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name} is not a tc classifier: {e}"));
    program
        .load()
        .unwrap_or_else(|e| panic!("the verifier rejected {name}: {e:#?}"));
}

impl Datapath {
    /// Loads the object with fresh maps and both programs. Holds the kernel lock until
    /// dropped.
    fn new() -> Self {
        let kernel = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = require_privileged_environment();
        let mut ebpf =
            Ebpf::load(bytes).unwrap_or_else(|e| panic!("loading the eBPF object: {e:#?}"));
        load_classifier(&mut ebpf, programs::FROM_ENDPOINT);
        load_classifier(&mut ebpf, programs::TO_ENDPOINT);
        Self {
            config: take(&mut ebpf, maps::CONFIG),
            endpoints: take(&mut ebpf, maps::ENDPOINTS),
            peer_v4: take(&mut ebpf, maps::PEER_V4),
            peer_v6: take(&mut ebpf, maps::PEER_V6),
            ports: take(&mut ebpf, maps::PORTS),
            verdicts: take(&mut ebpf, maps::VERDICTS),
            conntrack: take(&mut ebpf, maps::CONNTRACK),
            verdict_counters: take(&mut ebpf, maps::VERDICT_COUNTERS),
            rule_counters: take(&mut ebpf, maps::RULE_COUNTERS),
            staged_counters: take(&mut ebpf, maps::STAGED_COUNTERS),
            events: take(&mut ebpf, maps::EVENTS),
            ebpf,
            _kernel: kernel,
        }
    }

    fn set_config(&mut self, active_slot: u32, generation: u32, flags: u32) {
        let config = Config {
            active_slot,
            generation,
            flags,
            _pad: 0,
        };
        self.config.set(0, config, 0).expect("write CONFIG[0]");
    }

    fn set_endpoint(&mut self, slot: u32, ifindex: u32, ingress_set: u32, egress_set: u32) {
        let value = EndpointValue {
            ingress_set,
            egress_set,
            flags: 0,
            _pad: 0,
        };
        self.endpoints
            .insert(EndpointKey { slot, ifindex }, value, 0)
            .expect("write ENDPOINTS");
    }

    fn peer_v4(&mut self, slot: u32, addr: [u8; 4], prefix: u32, class: u32) {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&slot.to_be_bytes());
        data[4..].copy_from_slice(&addr);
        self.peer_v4
            .insert(&Key::new(32 + prefix, data), class, 0)
            .expect("write PEER_V4");
    }

    fn peer_v6(&mut self, slot: u32, addr: [u8; 16], prefix: u32, class: u32) {
        let mut data = [0u8; 20];
        data[..4].copy_from_slice(&slot.to_be_bytes());
        data[4..].copy_from_slice(&addr);
        self.peer_v6
            .insert(&Key::new(32 + prefix, data), class, 0)
            .expect("write PEER_V6");
    }

    /// A `PORTS` entry: `bits` = how many key bits after slot count (8 = kind only,
    /// 16 = kind + protocol, 32 = exact port).
    fn port_prefix(&mut self, slot: u32, kind: u8, proto: u8, port: u16, bits: u32, class: u32) {
        let s = slot.to_be_bytes();
        let p = port.to_be_bytes();
        let data = [s[0], s[1], s[2], s[3], kind, proto, p[0], p[1]];
        self.ports
            .insert(&Key::new(32 + bits, data), class, 0)
            .expect("write PORTS");
    }

    fn port(&mut self, slot: u32, proto: u8, port: u16, class: u32) {
        self.port_prefix(slot, PORT_KIND_DST, proto, port, 32, class);
    }

    /// Catch-all entries (class 0) for the peers of `slot`, as userspace installs them, and
    /// for ports (equivalent to a `PORTS` miss, which is class 0 too).
    fn catch_alls(&mut self, slot: u32) {
        self.peer_v4(slot, [0; 4], 0, 0);
        self.peer_v6(slot, [0; 16], 0, 0);
        self.port_prefix(slot, PORT_KIND_DST, 0, 0, 8, 0);
        self.port_prefix(slot, PORT_KIND_SRC, 0, 0, 8, 0);
    }

    #[allow(clippy::too_many_arguments)]
    fn verdict_staged(
        &mut self,
        slot: u32,
        set: u32,
        peer_class: u32,
        port_class: u32,
        action: u8,
        rule_id: u32,
        staged_action: u8,
        staged_rule_id: u32,
    ) {
        let key = VerdictKey {
            slot,
            set,
            peer_class,
            port_class,
        };
        let value = VerdictValue {
            action,
            staged_action,
            _pad: [0; 2],
            rule_id,
            staged_rule_id,
            _pad2: 0,
        };
        self.verdicts.insert(key, value, 0).expect("write VERDICTS");
    }

    fn verdict(
        &mut self,
        slot: u32,
        set: u32,
        peer_class: u32,
        port_class: u32,
        action: u8,
        rule: u32,
    ) {
        self.verdict_staged(
            slot, set, peer_class, port_class, action, rule, action, rule,
        );
    }

    fn program(&self, name: &str) -> &SchedClassifier {
        self.ebpf
            .program(name)
            .unwrap_or_else(|| panic!("program {name} vanished"))
            .try_into()
            .unwrap_or_else(|e| panic!("{name} is not a tc classifier: {e}"))
    }

    fn run_repeat(&self, name: &str, frame: &[u8], repeat: u32) -> i32 {
        let result = self
            .program(name)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name} failed: {e:#?}"));
        i32::from_ne_bytes(result.return_value.to_ne_bytes())
    }

    /// Runs `enforcer_to_endpoint` (the endpoint's ingress).
    fn inbound(&self, frame: &[u8]) -> i32 {
        self.run_repeat(programs::TO_ENDPOINT, frame, 1)
    }

    /// Runs `enforcer_from_endpoint` (the endpoint's egress).
    fn outbound(&self, frame: &[u8]) -> i32 {
        self.run_repeat(programs::FROM_ENDPOINT, frame, 1)
    }

    fn reason(&self, reason: u32, dir: u8) -> u64 {
        let index = reason * 2 + u32::from(dir);
        self.verdict_counters
            .get(&index, 0)
            .expect("read VERDICT_COUNTERS")
            .iter()
            .sum()
    }

    /// All `VERDICT_COUNTERS` as `(reason, dir) -> packets`, nonzero only.
    fn reasons(&self) -> Vec<(u32, u8, u64)> {
        let mut out = Vec::new();
        for reason in 0..NUM_REASONS {
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                let n = self.reason(reason, dir);
                if n != 0 {
                    out.push((reason, dir, n));
                }
            }
        }
        out
    }

    fn rule_hits(&self, rule: u32) -> u64 {
        self.rule_counters
            .get(&rule, 0)
            .expect("read RULE_COUNTERS")
            .iter()
            .sum()
    }

    fn staged_hits(&self, rule: u32) -> u64 {
        self.staged_counters
            .get(&rule, 0)
            .expect("read STAGED_COUNTERS")
            .iter()
            .sum()
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(item.len(), size_of::<FlowEvent>(), "event record size");
            // SAFETY: the record holds exactly one FlowEvent (repr(C), no invalid bit
            // patterns); the ring buffer gives no alignment guarantee, so read unaligned.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
        }
        out
    }

    fn ct_entries(&self) -> Vec<(CtKey, CtValue)> {
        self.conntrack
            .iter()
            .map(|r| r.expect("iterate CONNTRACK"))
            .collect()
    }

    fn only_ct_entry(&self) -> (CtKey, CtValue) {
        let entries = self.ct_entries();
        assert_eq!(entries.len(), 1, "conntrack entries: {entries:?}");
        entries[0]
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct V4 {
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: Vec<u8>,
    /// The flags + fragment offset word.
    frag: u16,
    /// Overrides the total length field.
    total_len: Option<u16>,
    /// Overrides the IHL field.
    ihl: Option<u8>,
}

impl V4 {
    fn new(src: [u8; 4], dst: [u8; 4], proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            options: Vec::new(),
            frag: 0x4000, // DF
            total_len: None,
            ihl: None,
        }
    }

    fn frame(&self, l4: &[u8]) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0, "IPv4 options pad to 4 bytes");
        let header_len = 20 + self.options.len();
        let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
        let total = self.total_len.unwrap_or((header_len + l4.len()) as u16);
        let mut ip = vec![0x40 | ihl, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let csum = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        ip.extend_from_slice(l4);
        ethernet(0x0800, &ip)
    }
}

fn v6_frame(src: [u8; 16], dst: [u8; 16], next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let payload_len = (ext.len() + l4.len()) as u16;
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&payload_len.to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(ext);
    ip.extend_from_slice(l4);
    ethernet(0x86dd, &ip)
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 12, 0, 0, b'p', b'i', b'n', b'g']);
    h
}

fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    h
}

fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1]
}

fn v4_tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    V4::new(src, dst, TCP).frame(&tcp(sport, dport, flags))
}

fn v6(last: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0xfd, 0x00, 0x00, 0x01]);
    a[14..].copy_from_slice(&last.to_be_bytes());
    a
}

/// Port class for a destination class alone.
const fn dst_class(class: u32) -> u32 {
    class << 16
}

// Addresses used throughout: the endpoint (pod) and two peers.
const POD: [u8; 4] = [10, 1, 0, 2];
const PEER: [u8; 4] = [10, 0, 0, 9];
const STRANGER: [u8; 4] = [192, 168, 7, 7];

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn privileged_object_has_the_contract_maps_and_programs() {
    let mut dp = Datapath::new();
    // Datapath::new took every contract map; EVENT_LIMIT is still in the object.
    assert!(dp.ebpf.take_map(maps::EVENT_LIMIT).is_some());
    assert_eq!(dp.verdict_counters.len(), NUM_REASONS * 2);
    // A zeroed CONFIG and no endpoints: everything passes as "no endpoint".
    assert_eq!(dp.inbound(&v4_tcp(PEER, 1, POD, 2, SYN)), PASS);
    assert_eq!(
        dp.reasons(),
        vec![(REASON_PASS_NO_ENDPOINT, DIR_INGRESS, 1)]
    );
}

#[test]
fn privileged_allow_and_deny_by_peer_and_port_class() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 8);
    dp.catch_alls(0);
    dp.peer_v4(0, [10, 0, 0, 0], 24, 1);
    dp.port(0, TCP, 80, 1);
    dp.port(0, UDP, 53, 2);
    dp.port(0, SCTP, 9000, 3);
    // Ingress set 7: peer class 1 may reach TCP 80, UDP 53 and SCTP 9000; nothing else.
    dp.verdict(0, 7, 1, dst_class(1), ACTION_ALLOW, 11);
    dp.verdict(0, 7, 1, dst_class(2), ACTION_ALLOW, 14);
    dp.verdict(0, 7, 1, dst_class(3), ACTION_ALLOW, 15);
    dp.verdict(0, 7, 1, ANY, ACTION_DENY, 12);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 13);

    // Ingress: the peer is the source.
    assert_eq!(
        dp.inbound(&v4_tcp([10, 0, 0, 5], 40000, POD, 80, SYN)),
        PASS
    );
    assert_eq!(
        dp.inbound(&v4_tcp([10, 0, 0, 5], 40001, POD, 81, SYN)),
        DROP
    );
    assert_eq!(dp.inbound(&v4_tcp(STRANGER, 40002, POD, 80, SYN)), DROP);
    let udp_frame = V4::new([10, 0, 0, 6], POD, UDP).frame(&udp(5353, 53));
    assert_eq!(dp.inbound(&udp_frame), PASS);
    let udp_wrong_port = V4::new([10, 0, 0, 6], POD, UDP).frame(&udp(5353, 80));
    assert_eq!(dp.inbound(&udp_wrong_port), DROP, "class 1 is TCP 80 only");
    let sctp_frame = V4::new([10, 0, 0, 6], POD, SCTP).frame(&sctp(5000, 9000));
    assert_eq!(dp.inbound(&sctp_frame), PASS);

    assert_eq!(dp.rule_hits(11), 1);
    assert_eq!(
        dp.rule_hits(12),
        2,
        "port 81 and UDP to 80 hit the row default"
    );
    assert_eq!(dp.rule_hits(13), 1);
    assert_eq!(dp.rule_hits(14), 1);
    assert_eq!(dp.rule_hits(15), 1);
    assert_eq!(
        dp.staged_hits(11),
        1,
        "no staged policies: staged view = enforced view"
    );
    assert_eq!(
        dp.reasons(),
        vec![
            (REASON_ALLOW_POLICY, DIR_INGRESS, 3),
            (REASON_DENY_POLICY, DIR_INGRESS, 3)
        ]
    );
    // Each allowed flow is in conntrack; denied ones are not.
    assert_eq!(dp.ct_entries().len(), 3);
}

#[test]
fn privileged_row_and_set_default_fallbacks_and_missing_state() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 8);
    dp.catch_alls(0);
    dp.peer_v4(0, PEER, 32, 2);
    dp.peer_v4(0, [10, 0, 0, 0], 8, 3);
    dp.port(0, TCP, 443, 5);
    // Egress set 8: exact (2, 443) denies; row default of class 2 allows; class 3 has no
    // row; the set default allows.
    dp.verdict(0, 8, 2, dst_class(5), ACTION_DENY, 21);
    dp.verdict(0, 8, 2, ANY, ACTION_ALLOW, 22);
    dp.verdict(0, 8, ANY, ANY, ACTION_ALLOW, 23);

    // Egress: the peer is the destination.
    assert_eq!(
        dp.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)),
        DROP,
        "exact"
    );
    assert_eq!(
        dp.outbound(&v4_tcp(POD, 40001, PEER, 8443, SYN)),
        PASS,
        "row"
    );
    assert_eq!(
        dp.outbound(&v4_tcp(POD, 40002, [10, 9, 9, 9], 443, SYN)),
        PASS,
        "set"
    );
    assert_eq!(
        (dp.rule_hits(21), dp.rule_hits(22), dp.rule_hits(23)),
        (1, 1, 1)
    );

    // Ingress set 7 has no entries at all: fail closed.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 40003, POD, 80, SYN)), DROP);
    assert_eq!(dp.reason(REASON_DENY_NO_VERDICT, DIR_INGRESS), 1);

    // No peer catch-all for the slot ("no tables"): fail closed too, even with a verdict.
    let mut dp2 = {
        drop(dp);
        Datapath::new()
    };
    dp2.set_config(0, 1, 0);
    dp2.set_endpoint(0, LO, 7, 8);
    dp2.verdict(0, 8, ANY, ANY, ACTION_ALLOW, 23);
    assert_eq!(dp2.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)), DROP);
    assert_eq!(dp2.reason(REASON_DENY_NO_VERDICT, DIR_EGRESS), 1);
    assert_eq!(dp2.rule_hits(23), 0);
    // A PORTS miss is port class 0 (PORT_CLASS_ON_MISS): no catch-all port prefix needed.
    dp2.peer_v4(0, [0; 4], 0, 0);
    dp2.verdict(0, 8, 0, dst_class(PORT_CLASS_ON_MISS), ACTION_ALLOW, 24);
    assert_eq!(dp2.outbound(&v4_tcp(POD, 40001, PEER, 443, SYN)), PASS);
    assert_eq!(dp2.rule_hits(24), 1);
    let events = dp2.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].rule_id, events[0].action),
        (ANY, ACTION_DENY),
        "a no-verdict deny is reported with rule id ANY"
    );
}

#[test]
fn privileged_missing_endpoint_passes_unless_fail_closed() {
    let mut dp = Datapath::new();
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 1);
    // An endpoint on another interface only.
    dp.set_endpoint(0, 4242, 7, 7);
    dp.set_config(0, 1, 0);
    let frame = v4_tcp(PEER, 1000, POD, 80, SYN);
    assert_eq!(dp.inbound(&frame), PASS);
    assert_eq!(dp.outbound(&frame), PASS);
    dp.set_config(0, 1, CONFIG_FAIL_CLOSED);
    assert_eq!(dp.inbound(&frame), DROP);
    assert_eq!(
        dp.reasons(),
        vec![
            (REASON_PASS_NO_ENDPOINT, DIR_INGRESS, 1),
            (REASON_PASS_NO_ENDPOINT, DIR_EGRESS, 1),
            (REASON_DENY_NO_ENDPOINT, DIR_INGRESS, 1),
        ]
    );
    // With the endpoint on lo, the policy decides.
    dp.set_endpoint(0, LO, 7, 7);
    assert_eq!(dp.inbound(&frame), DROP);
    assert_eq!(dp.reason(REASON_DENY_POLICY, DIR_INGRESS), 1);
}

/// Egress set 8 allows TCP to PEER:443 (rule 31); ingress set 7 denies everything (rule 32).
fn client_policy(dp: &mut Datapath, slot: u32) {
    dp.set_endpoint(slot, LO, 7, 8);
    dp.catch_alls(slot);
    dp.peer_v4(slot, PEER, 32, 1);
    dp.port(slot, TCP, 443, 1);
    dp.verdict(slot, 8, 1, dst_class(1), ACTION_ALLOW, 31);
    dp.verdict(slot, 8, ANY, ANY, ACTION_DENY, 33);
    dp.verdict(slot, 7, ANY, ANY, ACTION_DENY, 32);
}

#[test]
fn privileged_tcp_reply_is_allowed_by_conntrack_in_the_other_program() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    client_policy(&mut dp, 0);

    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)), PASS);
    let (key, entry) = dp.only_ct_entry();
    assert_eq!(key.ifindex, LO);
    assert_eq!((key.protocol, key.family), (TCP, 4));
    // Canonical order: 10.0.0.9 < 10.1.0.2, so the peer is side a and the pod (initiator)
    // side b.
    assert_eq!(&key.addr_a[..4], &PEER);
    assert_eq!(&key.addr_b[..4], &POD);
    assert_eq!((key.port_a, key.port_b), (443, 40000));
    assert_eq!(entry.flags & CT_INITIATOR_A, 0);
    assert_ne!(entry.flags & CT_TCP_SYN, 0);
    assert_eq!(entry.flags & CT_SEEN_REPLY, 0);
    assert_eq!((entry.generation, entry.rule_id), (1, 31));
    assert_eq!(entry.created_ns, entry.last_seen_ns);

    // The SYN-ACK comes back through the other program; the ingress set denies all, but
    // conntrack allows the reply.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, SYN | ACK)), PASS);
    let (_, entry) = dp.only_ct_entry();
    assert_ne!(entry.flags & CT_SEEN_REPLY, 0);
    assert!(entry.last_seen_ns >= entry.created_ns);
    // The rest of the conversation, both ways.
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, ACK)), PASS);
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, ACK)), PASS);
    // Another port of the peer is not part of the flow.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40001, SYN | ACK)), DROP);

    assert_eq!(dp.reason(REASON_ALLOW_POLICY, DIR_EGRESS), 1);
    assert_eq!(dp.reason(REASON_ALLOW_CONNTRACK, DIR_INGRESS), 2);
    assert_eq!(dp.reason(REASON_ALLOW_CONNTRACK, DIR_EGRESS), 1);
    assert_eq!(dp.reason(REASON_DENY_POLICY, DIR_INGRESS), 1);
    assert_eq!(dp.rule_hits(31), 1, "rule counters count new flows only");

    // FIN marks the entry closing; a later SYN on the same tuple is a new flow, judged again.
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, FIN | ACK)), PASS);
    let (_, entry) = dp.only_ct_entry();
    assert_ne!(entry.flags & CT_TCP_FIN, 0);
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)), PASS);
    assert_eq!(dp.rule_hits(31), 2);
    let (_, entry) = dp.only_ct_entry();
    assert_eq!(
        entry.flags & (CT_TCP_FIN | CT_SEEN_REPLY),
        0,
        "a fresh entry"
    );
    // A RST marks it too.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, RST)), PASS);
    let (_, entry) = dp.only_ct_entry();
    assert_ne!(entry.flags & CT_TCP_RST, 0);
}

#[test]
fn privileged_expired_entry_is_judged_as_a_new_flow() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    client_policy(&mut dp, 0);
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)), PASS);
    // Age the SYN-only entry past its 30 s timeout (times are the kernel's monotonic ns).
    let (key, mut entry) = dp.only_ct_entry();
    entry.last_seen_ns = entry.last_seen_ns.saturating_sub(31_000_000_000);
    dp.conntrack.insert(key, entry, 0).expect("age the entry");
    // The reply no longer matches a live flow: the ingress set denies it.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, SYN | ACK)), DROP);
    assert_eq!(dp.reason(REASON_DENY_POLICY, DIR_INGRESS), 1);
}

#[test]
fn privileged_generation_change_with_a_new_deny_cuts_the_flow() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    client_policy(&mut dp, 0);
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)), PASS);
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, SYN | ACK)), PASS);

    // Slot 1: the same, except egress to PEER:443 is now denied by rule 41.
    client_policy(&mut dp, 1);
    dp.verdict(1, 8, 1, dst_class(1), ACTION_DENY, 41);
    dp.set_config(1, 2, 0);

    // The reply direction: re-checked as the original egress packet POD → PEER:443.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, ACK)), DROP);
    assert_eq!(dp.reason(REASON_RECHECK, DIR_INGRESS), 1);
    assert_eq!(dp.reason(REASON_DENY_POLICY, DIR_INGRESS), 1);
    assert!(dp.ct_entries().is_empty(), "the flow is cut");
    let events = dp.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(
        (e.direction, e.rule_id, e.action, e.protocol, e.family),
        (DIR_EGRESS, 41, ACTION_DENY, TCP, 4),
        "the event describes the original packet"
    );
    assert_eq!((&e.src[..4], &e.dst[..4]), (&POD[..], &PEER[..]));
    assert_eq!((e.src_port, e.dst_port), (40000, 443));

    // Later packets, either way, are new flows and denied.
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, ACK)), DROP);
    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, ACK)), DROP);
    assert_eq!(dp.rule_hits(41), 1);
    assert_eq!(dp.reason(REASON_RECHECK, DIR_EGRESS), 0);
}

#[test]
fn privileged_generation_change_with_allow_keeps_the_flow() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    client_policy(&mut dp, 0);
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, SYN)), PASS);

    // Slot 1 allows the flow by another rule; its ingress set still denies everything, so a
    // re-check that judged the reply as an ingress packet would cut the flow.
    client_policy(&mut dp, 1);
    dp.verdict(1, 8, 1, dst_class(1), ACTION_ALLOW, 51);
    dp.set_config(1, 2, 0);

    assert_eq!(dp.inbound(&v4_tcp(PEER, 443, POD, 40000, SYN | ACK)), PASS);
    assert_eq!(dp.reason(REASON_RECHECK, DIR_INGRESS), 1);
    assert_eq!(dp.reason(REASON_ALLOW_CONNTRACK, DIR_INGRESS), 1);
    let (_, entry) = dp.only_ct_entry();
    assert_eq!((entry.generation, entry.rule_id), (2, 51));
    assert_ne!(entry.flags & CT_SEEN_REPLY, 0);
    // Now current: no second re-check.
    assert_eq!(dp.outbound(&v4_tcp(POD, 40000, PEER, 443, ACK)), PASS);
    assert_eq!(dp.reason(REASON_RECHECK, DIR_EGRESS), 0);
    assert_eq!(dp.reason(REASON_ALLOW_CONNTRACK, DIR_EGRESS), 1);
    assert!(dp.events().is_empty());
    assert_eq!(dp.rule_hits(51), 0, "re-checks are not new flows");
}

#[test]
fn privileged_slot_flip_switches_tables_atomically() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    // Slot 0 allows everything; slot 1 denies everything.
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_ALLOW, 1);
    dp.set_endpoint(1, LO, 9, 9);
    dp.catch_alls(1);
    dp.verdict(1, 9, ANY, ANY, ACTION_DENY, 2);

    assert_eq!(dp.inbound(&v4_tcp(PEER, 1000, POD, 80, SYN)), PASS);
    assert_eq!(
        dp.rule_hits(2),
        0,
        "slot 1 is ignored while slot 0 is active"
    );
    dp.set_config(1, 2, 0);
    assert_eq!(dp.inbound(&v4_tcp(PEER, 1001, POD, 80, SYN)), DROP);
    assert_eq!(dp.rule_hits(2), 1);
    // An endpoint present only in the inactive slot is not an endpoint.
    dp.endpoints
        .remove(&EndpointKey {
            slot: 1,
            ifindex: LO,
        })
        .expect("remove endpoint");
    assert_eq!(dp.inbound(&v4_tcp(PEER, 1002, POD, 80, SYN)), PASS);
    assert_eq!(dp.reason(REASON_PASS_NO_ENDPOINT, DIR_INGRESS), 1);
}

#[test]
fn privileged_ipv4_options_are_skipped() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.port(0, TCP, 80, 1);
    dp.verdict(0, 7, 0, dst_class(1), ACTION_ALLOW, 1);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 2);

    let mut ip = V4::new(PEER, POD, TCP);
    // Record route (7, len 11, ptr 4, 2 slots) + EOL: IHL 8. Its bytes would read as ports
    // 0x070b/0x0400 if the options were not skipped.
    ip.options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(dp.inbound(&ip.frame(&tcp(40000, 80, SYN))), PASS);
    assert_eq!(dp.inbound(&ip.frame(&tcp(40000, 81, SYN))), DROP);
    // 10.0.0.9 sorts before 10.1.0.2: the peer's (address, port) is side a.
    let (key, _) = dp.only_ct_entry();
    assert_eq!((key.port_a, key.port_b), (40000, 80));
}

#[test]
fn privileged_ipv6_extension_headers_before_tcp() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    let mut net = v6(0);
    net[14] = 0;
    net[15] = 0;
    dp.peer_v6(0, net, 64, 4);
    dp.port(0, TCP, 80, 1);
    dp.verdict(0, 7, 4, dst_class(1), ACTION_ALLOW, 61);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 62);

    // Hop-by-hop (PadN, 8 bytes) → destination options (8 bytes) → TCP.
    let hbh = [60, 0, 1, 4, 0, 0, 0, 0];
    let dstopts = [TCP, 0, 1, 4, 0, 0, 0, 0];
    let ext: Vec<u8> = hbh.iter().chain(dstopts.iter()).copied().collect();
    let peer = v6(9);
    let pod = {
        let mut a = v6(2);
        a[3] = 2; // fd00:2::2, outside the peer's /64
        a
    };
    assert_eq!(
        dp.inbound(&v6_frame(peer, pod, 0, &ext, &tcp(40000, 80, SYN))),
        PASS
    );
    assert_eq!(
        dp.inbound(&v6_frame(peer, pod, 0, &ext, &tcp(40000, 81, SYN))),
        DROP
    );
    // Routing header (type 0 segments left 0, 24 bytes: hdr ext len 2) + AH (len 4 → 24
    // bytes) before TCP.
    let mut routing = vec![51, 2, 0, 0, 0, 0, 0, 0];
    routing.extend_from_slice(&[0; 16]);
    let mut ah = vec![TCP, 4, 0, 0];
    ah.extend_from_slice(&[0; 20]);
    let ext2: Vec<u8> = routing.iter().chain(ah.iter()).copied().collect();
    assert_eq!(
        dp.inbound(&v6_frame(peer, pod, 43, &ext2, &tcp(40001, 80, SYN))),
        PASS
    );
    assert_eq!(dp.rule_hits(61), 2);

    // The reply goes back through the other program, allowed by conntrack.
    assert_eq!(
        dp.outbound(&v6_frame(pod, peer, TCP, &[], &tcp(80, 40000, SYN | ACK))),
        PASS
    );
    assert_eq!(dp.reason(REASON_ALLOW_CONNTRACK, DIR_EGRESS), 1);
    let entries = dp.ct_entries();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|(k, _)| k.family == 6 && k.protocol == TCP)
    );

    // Nine extension headers: more than the datapath walks.
    let mut many = Vec::new();
    for i in 0..9 {
        let next = if i == 8 { TCP } else { 60 };
        many.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    assert_eq!(
        dp.inbound(&v6_frame(peer, pod, 60, &many, &tcp(40002, 80, SYN))),
        DROP
    );
    assert_eq!(dp.reason(REASON_DENY_UNPARSEABLE, DIR_INGRESS), 1);
}

#[test]
fn privileged_icmp_type_and_code_classify_ports() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 8);
    dp.catch_alls(0);
    // ICMP echo request (8/0) → class 3; the type alone (8/any code) would be prefix 56.
    dp.port_prefix(0, PORT_KIND_DST, ICMP, 0x0800, 32, 3);
    dp.verdict(0, 7, 0, dst_class(3), ACTION_ALLOW, 71);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 72);
    dp.verdict(0, 8, ANY, ANY, ACTION_DENY, 73);

    let echo = V4::new(PEER, POD, ICMP).frame(&icmp(8, 0));
    let unreachable = V4::new(PEER, POD, ICMP).frame(&icmp(3, 1));
    assert_eq!(dp.inbound(&echo), PASS);
    assert_eq!(dp.inbound(&unreachable), DROP);
    let (key, entry) = dp.only_ct_entry();
    assert_eq!((key.protocol, key.port_a, key.port_b), (ICMP, 0, 0));
    assert_eq!(entry.flags >> CT_ICMP_TYPE_CODE_SHIFT, 0x0800);
    // The echo reply (0/0) leaves through the other program: conntrack, not egress policy.
    let reply = V4::new(POD, PEER, ICMP).frame(&icmp(0, 0));
    assert_eq!(dp.outbound(&reply), PASS);
    assert_eq!(dp.reason(REASON_ALLOW_CONNTRACK, DIR_EGRESS), 1);
    assert_eq!((dp.rule_hits(71), dp.rule_hits(72)), (1, 1));
    let events = dp.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].protocol, events[0].dst_port, events[0].src_port),
        (ICMP, 0x0301, 0)
    );

    // The responder's own echo request is not an answer: a new flow, judged (and denied)
    // by the endpoint's egress policy.
    let reverse_ping = V4::new(POD, PEER, ICMP).frame(&icmp(8, 0));
    assert_eq!(dp.outbound(&reverse_ping), DROP);
    assert_eq!(dp.rule_hits(73), 1);
    // Another ICMP type from the initiator is not part of the flow either.
    assert_eq!(
        dp.inbound(&V4::new(PEER, POD, ICMP).frame(&icmp(13, 0))),
        DROP
    );
    assert_eq!(dp.rule_hits(72), 2);
    let _ = dp.events();

    // A generation change re-checks the ICMP flow with the stored type/code (the reply's
    // own type 0 would not be allowed).
    dp.set_config(0, 2, 0);
    assert_eq!(dp.outbound(&reply), PASS);
    assert_eq!(dp.reason(REASON_RECHECK, DIR_EGRESS), 1);
    assert_eq!(dp.only_ct_entry().1.generation, 2);
}

#[test]
fn privileged_icmpv6_types_classify_ports() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 8);
    dp.catch_alls(0);
    // Echo request (128/0) only.
    dp.port(0, ICMPV6, 128 << 8, 2);
    dp.verdict(0, 8, 0, dst_class(2), ACTION_ALLOW, 81);
    dp.verdict(0, 8, ANY, ANY, ACTION_DENY, 82);
    let (pod, peer) = (v6(2), v6(9));
    assert_eq!(
        dp.outbound(&v6_frame(pod, peer, ICMPV6, &[], &icmp(128, 0))),
        PASS
    );
    assert_eq!(
        dp.outbound(&v6_frame(pod, peer, ICMPV6, &[], &icmp(1, 4))),
        DROP
    );
    assert_eq!((dp.rule_hits(81), dp.rule_hits(82)), (1, 1));
    // Neighbour discovery and MLD pass before policy (Felix's ICMPv6Filter), no rule hit.
    for nd_type in [130, 131, 132, 133, 135, 136] {
        assert_eq!(
            dp.outbound(&v6_frame(pod, peer, ICMPV6, &[], &icmp(nd_type, 0))),
            PASS,
            "ICMPv6 type {nd_type}"
        );
    }
    assert_eq!((dp.rule_hits(81), dp.rule_hits(82)), (1, 1));
    // Router advertisements (134) are judged by policy like any other type.
    assert_eq!(
        dp.outbound(&v6_frame(pod, peer, ICMPV6, &[], &icmp(134, 0))),
        DROP
    );
    assert_eq!(dp.rule_hits(82), 2);
    // IPv4 ICMP's protocol number inside IPv6 is not ICMPv6: port 0, denied.
    assert_eq!(
        dp.outbound(&v6_frame(pod, peer, ICMP, &[], &icmp(128, 0))),
        DROP
    );
    assert_eq!(dp.rule_hits(82), 3);
}

#[test]
fn privileged_non_first_fragments_pass_and_first_fragments_are_judged() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, CONFIG_FAIL_CLOSED);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 1);

    // IPv4: offset 185 (1480 bytes), no transport header.
    let mut later = V4::new(PEER, POD, UDP);
    later.frag = 185;
    assert_eq!(dp.inbound(&later.frame(&[0xaa; 16])), PASS);
    // The first fragment (MF set, offset 0) carries the ports and is judged.
    let mut first = V4::new(PEER, POD, UDP);
    first.frag = 0x2000;
    assert_eq!(dp.inbound(&first.frame(&udp(1000, 53))), DROP);

    // IPv6: fragment header with offset 185 (×8), M set.
    let (peer, pod) = (v6(9), v6(2));
    let frag_later = [UDP, 0, 0x05, 0xc9, 0, 0, 0, 1];
    assert_eq!(
        dp.inbound(&v6_frame(peer, pod, 44, &frag_later, &[0xaa; 16])),
        PASS
    );
    // Offset 0, M set: the first fragment, judged by its UDP ports.
    let frag_first = [UDP, 0, 0x00, 0x01, 0, 0, 0, 1];
    assert_eq!(
        dp.inbound(&v6_frame(peer, pod, 44, &frag_first, &udp(1000, 53))),
        DROP
    );

    assert_eq!(dp.reason(REASON_PASS_FRAGMENT, DIR_INGRESS), 2);
    assert_eq!(dp.reason(REASON_DENY_POLICY, DIR_INGRESS), 2);
}

#[test]
fn privileged_truncated_and_malformed_packets_drop_as_unparseable() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_ALLOW, 1);

    // TCP header cut after 10 bytes (the IP length says so too).
    let cut = V4::new(PEER, POD, TCP).frame(&tcp(40000, 80, SYN)[..10]);
    assert_eq!(dp.inbound(&cut), DROP);
    // TCP header present in the frame but beyond the IP total length (Ethernet padding).
    let mut short = V4::new(PEER, POD, TCP);
    short.total_len = Some(30);
    assert_eq!(dp.inbound(&short.frame(&tcp(40000, 80, SYN))), DROP);
    // IP total length larger than the frame.
    let mut long = V4::new(PEER, POD, TCP);
    long.total_len = Some(200);
    assert_eq!(dp.inbound(&long.frame(&tcp(40000, 80, SYN))), DROP);
    // IHL below 5.
    let mut bad_ihl = V4::new(PEER, POD, TCP);
    bad_ihl.ihl = Some(4);
    assert_eq!(dp.inbound(&bad_ihl.frame(&tcp(40000, 80, SYN))), DROP);
    // IHL larger than the packet.
    let mut big_ihl = V4::new(PEER, POD, TCP);
    big_ihl.ihl = Some(15);
    assert_eq!(dp.inbound(&big_ihl.frame(&tcp(40000, 80, SYN))), DROP);
    // UDP header cut; IPv6 TCP header cut.
    let udp_cut = V4::new(PEER, POD, UDP).frame(&udp(1, 2)[..6]);
    assert_eq!(dp.inbound(&udp_cut), DROP);
    let v6_cut = v6_frame(v6(9), v6(2), TCP, &[], &tcp(1, 2, SYN)[..12]);
    assert_eq!(dp.inbound(&v6_cut), DROP);
    // IPv6 extension header running past the packet.
    let v6_ext_cut = v6_frame(
        v6(9),
        v6(2),
        0,
        &[TCP, 3, 0, 0, 0, 0, 0, 0],
        &tcp(1, 2, SYN),
    );
    assert_eq!(dp.inbound(&v6_ext_cut), DROP);

    assert_eq!(dp.reason(REASON_DENY_UNPARSEABLE, DIR_INGRESS), 8);
    assert_eq!(dp.reason(REASON_ALLOW_POLICY, DIR_INGRESS), 0);
    // The same intact packet is allowed.
    assert_eq!(dp.inbound(&v4_tcp(PEER, 40000, POD, 80, SYN)), PASS);
}

#[test]
fn privileged_arp_passes() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 1);
    let arp = ethernet(
        0x0806,
        &[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 9,
        ],
    );
    assert_eq!(dp.inbound(&arp), PASS);
    assert_eq!(dp.outbound(&arp), PASS);
    assert_eq!(
        dp.reasons(),
        vec![
            (REASON_PASS_NON_IP, DIR_INGRESS, 1),
            (REASON_PASS_NON_IP, DIR_EGRESS, 1)
        ]
    );
}

#[test]
fn privileged_deny_emits_an_event_and_staged_differences_are_reported() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 8);
    dp.catch_alls(0);
    dp.port(0, TCP, 22, 1);
    dp.port(0, TCP, 80, 2);
    // TCP 22: denied (rule 91). TCP 80: allowed by rule 92, but a staged policy would deny
    // it (staged rule 93). Everything else: allowed, staged the same.
    dp.verdict(0, 7, 0, dst_class(1), ACTION_DENY, 91);
    dp.verdict_staged(0, 7, 0, dst_class(2), ACTION_ALLOW, 92, ACTION_DENY, 93);
    dp.verdict(0, 7, ANY, ANY, ACTION_ALLOW, 94);

    assert_eq!(dp.inbound(&v4_tcp(STRANGER, 50000, POD, 22, SYN)), DROP);
    assert_eq!(dp.inbound(&v4_tcp(STRANGER, 50001, POD, 80, SYN)), PASS);
    assert_eq!(dp.inbound(&v4_tcp(STRANGER, 50002, POD, 8080, SYN)), PASS);
    let events = dp.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let deny = events[0];
    assert_eq!(deny.ifindex, LO);
    assert_eq!(
        (deny.direction, deny.family, deny.protocol),
        (DIR_INGRESS, 4, TCP)
    );
    assert_eq!(
        (
            deny.action,
            deny.staged_action,
            deny.rule_id,
            deny.staged_rule_id
        ),
        (ACTION_DENY, ACTION_DENY, 91, 91)
    );
    assert_eq!((&deny.src[..4], &deny.dst[..4]), (&STRANGER[..], &POD[..]));
    assert!(deny.src[4..].iter().chain(&deny.dst[4..]).all(|b| *b == 0));
    assert_eq!((deny.src_port, deny.dst_port), (50000, 22));
    assert!(deny.timestamp_ns > 0);
    let staged = events[1];
    assert_eq!(
        (
            staged.action,
            staged.staged_action,
            staged.rule_id,
            staged.staged_rule_id
        ),
        (ACTION_ALLOW, ACTION_DENY, 92, 93)
    );
    assert_eq!(dp.staged_hits(93), 1);
    assert_eq!(dp.rule_hits(92), 1);
}

#[test]
fn privileged_events_are_rate_limited_per_cpu() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 1);
    let frame = v4_tcp(STRANGER, 50000, POD, 22, SYN);
    // One test run repeats on one CPU, well within one window.
    let runs = EVENTS_PER_WINDOW + 5;
    assert_eq!(dp.run_repeat(programs::TO_ENDPOINT, &frame, runs), DROP);
    let dropped = dp.reason(REASON_EVENT_DROPPED, DIR_INGRESS);
    let events = dp.events().len() as u64;
    assert_eq!(dp.reason(REASON_DENY_POLICY, DIR_INGRESS), u64::from(runs));
    assert_eq!(events + dropped, u64::from(runs));
    assert!(dropped >= 5, "{dropped} events dropped, {events} sent");
}

#[test]
fn privileged_source_port_classes_when_configured() {
    let mut dp = Datapath::new();
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.port(0, UDP, 53, 1);
    // Source ports 1024-2047 (UDP) → source class 2: prefix 32 + 8 + 8 + 6 bits.
    dp.port_prefix(0, PORT_KIND_SRC, UDP, 1024, 22, 2);
    dp.verdict(0, 7, 0, dst_class(1) | 2, ACTION_ALLOW, 1);
    dp.verdict(0, 7, 0, dst_class(1), ACTION_ALLOW, 3);
    dp.verdict(0, 7, ANY, ANY, ACTION_DENY, 2);

    let from_1500 = V4::new(PEER, POD, UDP).frame(&udp(1500, 53));
    let from_3000 = V4::new(PEER, POD, UDP).frame(&udp(3000, 53));
    // Without CONFIG_SRC_PORTS the source class is 0.
    dp.set_config(0, 1, 0);
    assert_eq!(dp.inbound(&from_1500), PASS);
    assert_eq!(dp.rule_hits(3), 1);
    let keys: Vec<CtKey> = dp
        .conntrack
        .keys()
        .collect::<Result<_, _>>()
        .expect("CONNTRACK keys");
    for key in &keys {
        dp.conntrack.remove(key).expect("clear CONNTRACK");
    }
    dp.set_config(0, 2, CONFIG_SRC_PORTS);
    assert_eq!(dp.inbound(&from_1500), PASS);
    assert_eq!(dp.rule_hits(1), 1);
    assert_eq!(
        dp.inbound(&from_3000),
        PASS,
        "source class 0 → the (0, dst 1) entry"
    );
    assert_eq!(dp.rule_hits(3), 2);
}

#[test]
fn privileged_counters_sum_over_packets() {
    let mut dp = Datapath::new();
    dp.set_config(0, 1, 0);
    dp.set_endpoint(0, LO, 7, 7);
    dp.catch_alls(0);
    dp.verdict(0, 7, ANY, ANY, ACTION_ALLOW, 5);
    for port in 0..10u16 {
        assert_eq!(dp.inbound(&v4_tcp(PEER, 30000 + port, POD, 80, SYN)), PASS);
    }
    // Repeated runs of one established packet.
    assert_eq!(
        dp.run_repeat(programs::TO_ENDPOINT, &v4_tcp(PEER, 30000, POD, 80, ACK), 7),
        PASS
    );
    assert_eq!(dp.rule_hits(5), 10);
    assert_eq!(
        dp.reasons(),
        vec![
            (REASON_ALLOW_POLICY, DIR_INGRESS, 10),
            (REASON_ALLOW_CONNTRACK, DIR_INGRESS, 7)
        ]
    );
    assert_eq!(dp.ct_entries().len(), 10);
}

/// Budget for the verifier's work per program (the kernel's limit is 1M instructions): a
/// change that makes verification explode fails here, not on a node.
const VERIFIED_INSNS_BUDGET: u32 = 100_000;

#[test]
fn privileged_programs_verify_within_budget() {
    let dp = Datapath::new();
    for name in [programs::FROM_ENDPOINT, programs::TO_ENDPOINT] {
        let info = dp.program(name).info().expect("program info");
        let verified = info
            .verified_instruction_count()
            .expect("kernel reports verified_insns");
        println!(
            "{name}: {verified} instructions processed by the verifier, {} translated bytes, \
             {} JITed bytes",
            info.size_translated().unwrap_or(0),
            info.size_jitted()
        );
        assert!(
            verified < VERIFIED_INSNS_BUDGET,
            "{name}: the verifier processed {verified} instructions (budget \
             {VERIFIED_INSNS_BUDGET})"
        );
    }
}
