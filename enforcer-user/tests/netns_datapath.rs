//! The real datapath with real sockets (issue 3 §4): two pods in network namespaces behind
//! veth pairs whose host sides, in a node namespace, carry the real TC programs.
//!
//! ```text
//!   <id>-p0 "demo/client"              <id>-node                      <id>-p1 "demo/server"
//!   eth0 198.18.120.1/32  <--veth-->  <id>p0   <id>p1  <--veth-->  eth0 198.18.120.2/32
//!        fd00:198:18:120::1/128       tcx: enforcer_from_endpoint (ingress),      ::2/128
//!                                          enforcer_to_endpoint (egress)
//! ```
//!
//! The topology is the lab's ([`Topology`]: Calico-style /32 and /128 routes through the
//! link-local gateways, permanent neighbour entries). The policy is YAML, loaded with the
//! strict loader, compiled, rendered for the host-side ifindexes and written with
//! [`Datapath::program`]; the datapath is loaded fresh under a unique pin base and attached
//! from a thread inside the node namespace. Every test checks its expectations against the
//! reference evaluator as well, so a wrong policy text cannot make a test pass.
//!
//! What each test proves:
//! - `privileged_allow_and_deny_in_both_directions`: an ingress policy (the server's) and then
//!   an egress policy (the client's) allow and deny TCP and UDP, IPv4 and IPv6; each deny is
//!   reported by an event at the right interface and direction.
//! - `privileged_replies_pass_and_the_reverse_new_flow_is_denied`: with both pods isolated both
//!   ways, the replies of allowed flows pass by conntrack (UDP echo, TCP data both ways) while
//!   the same tuple's reverse direction as a new flow is denied.
//! - `privileged_policy_change_cuts_an_established_connection`: a new Deny cuts an established
//!   TCP connection at the next packet (generation re-check); a change that keeps it allowed
//!   keeps it working.
//! - `privileged_policy_burst_under_traffic_never_judges_by_a_mixed_state`: ≥ 200 updates
//!   alternating two policies under continuous UDP traffic; see the test for the argument.
//! - `privileged_malformed_and_truncated_packets_are_dropped_and_counted`: crafted frames from
//!   the pod's `AF_PACKET` socket (IPv4 IHL < 5, truncated TCP headers, lengths beyond the
//!   frame) are dropped and counted as `REASON_DENY_UNPARSEABLE`; a well-formed control passes.
//! - `privileged_fragments_first_is_judged_the_rest_pass`: a UDP datagram larger than the MTU
//!   (IPv4 and IPv6): allowed, it arrives whole; denied, nothing arrives: the first fragment is
//!   dropped, the non-first fragments pass (`REASON_PASS_FRAGMENT`: they carry no ports) and
//!   reach the server, which cannot reassemble them.
//!
//! Privileged: every test FAILS (never skips) when not root or when this build embeds the
//! stub eBPF object. The tests share the kernel, so they run one at a time behind a
//! process-wide mutex. Each removes what it created (namespaces, pins) on drop, also when it
//! panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use enforcer_common::{
    ACTION_DENY, DIR_EGRESS, DIR_INGRESS, FlowEvent, REASON_ALLOW_CONNTRACK,
    REASON_DENY_UNPARSEABLE, REASON_PASS_FRAGMENT, REASON_RECHECK,
};
use enforcer_user::{
    compile::{MapEntries, compile, to_map_entries},
    datapath::{Datapath, EventReader},
    evaluator::{Options, Packet, Verdict, evaluate_packet},
    lab::{
        netns::{Cleanup, new_lab_id},
        topology::{Host, HostKind, HostSpec, Topology},
    },
    model::{Inventory, Protocol},
    sources,
    testsupport::{PinBase, frame, in_netns, require_privileged},
};
use socket2::{Domain, Socket, Type};

static KERNEL: Mutex<()> = Mutex::new(());

/// How long a probe expected to be denied waits before it counts as "nothing came back".
/// Allowed probes answer in well under a millisecond here.
const DENY_WAIT: Duration = Duration::from_millis(250);
/// How long a probe expected to pass may take (it returns as soon as it passes): generous,
/// so a loaded machine cannot make an allowed flow look denied.
const ALLOW_WAIT: Duration = Duration::from_secs(3);

/// The wait for a probe the evaluator predicts `v` for.
fn wait_for(v: Verdict) -> Duration {
    match v {
        Verdict::Allow => ALLOW_WAIT,
        Verdict::Deny => DENY_WAIT,
    }
}

const CLIENT_V4: &str = "198.18.120.1";
const CLIENT_V6: &str = "fd00:198:18:120::1";
const SERVER_V4: &str = "198.18.120.2";
const SERVER_V6: &str = "fd00:198:18:120::2";

const PODS: &str = r"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: demo
  labels:
    app: client
spec:
  containers:
    - name: c
      image: busybox
status:
  podIPs: [{ip: 198.18.120.1}, {ip: 'fd00:198:18:120::1'}]
---
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: demo
  labels:
    app: server
spec:
  containers:
    - name: s
      image: busybox
status:
  podIPs: [{ip: 198.18.120.2}, {ip: 'fd00:198:18:120::2'}]
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn serial() -> MutexGuard<'static, ()> {
    let guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    require_privileged();
    guard
}

// ---------------------------------------------------------------------------------------------
// The environment: topology, policy, datapath
// ---------------------------------------------------------------------------------------------

/// One test's world. Field order is drop order: the datapath handles close, then the
/// namespaces go (with the veths and the tcx links on them), then the pins.
struct Env {
    dp: Datapath,
    events: EventReader,
    inv: Inventory,
    client: Host,
    server: Host,
    topo: Topology,
    _pins: PinBase,
}

fn inventory(policy: &str) -> Inventory {
    let text = format!("{PODS}\n---\n{policy}");
    let inv = sources::load_str(&text, Path::new("netns_datapath.yaml"))
        .unwrap_or_else(|e| panic!("policy YAML does not load: {e:?}\n{text}"));
    let problems = sources::validate(&inv);
    assert!(problems.is_empty(), "{problems:?}");
    inv
}

fn render(inv: &Inventory, topo: &Topology) -> MapEntries {
    let compiled = compile(inv, &Options::default()).unwrap_or_else(|e| panic!("compile: {e}"));
    to_map_entries(&compiled, 0, &|id| {
        let enforcer_user::compile::EndpointId::Pod { namespace, name } = id else {
            return Vec::new();
        };
        topo.pod(namespace, name)
            .map(|h| vec![h.ifindex])
            .unwrap_or_default()
    })
    .unwrap_or_else(|e| panic!("rendering map entries: {e}"))
}

impl Env {
    /// Builds the namespaces, loads and programs the datapath with `policy` (YAML documents
    /// added to the two pods), then attaches it to both host-side veths.
    fn new(policy: &str) -> Env {
        let pins = PinBase::new("netns");
        let id = new_lab_id();
        let pod = |name: &str, v4: &str, v6: &str| HostSpec {
            kind: HostKind::Pod {
                namespace: "demo".into(),
                name: name.into(),
            },
            addrs: vec![ip(v4), ip(v6)],
        };
        let specs = [
            pod("client", CLIENT_V4, CLIENT_V6),
            pod("server", SERVER_V4, SERVER_V6),
        ];
        let topo = Topology::build(&id, &specs, Cleanup::new())
            .unwrap_or_else(|e| panic!("building the topology: {e}"));
        let client = topo.pod("demo", "client").cloned().expect("client host");
        let server = topo.pod("demo", "server").cloned().expect("server host");
        let inv = inventory(policy);
        let entries = render(&inv, &topo);
        let opts = pins.open_options();
        let ifindexes = [client.ifindex, server.ifindex];
        // tcx attaches by ifindex in the calling thread's namespace: the node's.
        let dp = in_netns(&topo.node_netns, move || {
            let mut dp = Datapath::open(opts).unwrap_or_else(|e| panic!("Datapath::open: {e}"));
            dp.program(&entries)
                .unwrap_or_else(|e| panic!("Datapath::program: {e}"));
            for i in ifindexes {
                dp.attach(i)
                    .unwrap_or_else(|e| panic!("attaching to ifindex {i}: {e}"));
            }
            dp
        });
        let events = dp.events().unwrap_or_else(|e| panic!("EVENTS: {e}"));
        Env {
            dp,
            events,
            inv,
            client,
            server,
            topo,
            _pins: pins,
        }
    }

    /// Compiles `policy` and writes it (inactive slot, flip, generation bump).
    fn reprogram(&mut self, policy: &str) -> u32 {
        self.inv = inventory(policy);
        let entries = render(&self.inv, &self.topo);
        self.dp
            .program(&entries)
            .unwrap_or_else(|e| panic!("Datapath::program: {e}"))
            .config
            .generation
    }

    /// `VERDICT_COUNTERS[reason, direction]` summed over CPUs.
    fn counter(&self, reason: u32, dir: u8) -> u64 {
        let name = enforcer_user::datapath::reason_name(reason);
        let direction = if dir == DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        };
        self.dp
            .counters()
            .unwrap_or_else(|e| panic!("reading counters: {e}"))
            .into_iter()
            .find(|c| c.name == name && c.direction == direction)
            .map_or(0, |c| c.packets)
    }

    /// The reference evaluator's verdict for a packet of the two pods.
    fn expect(&self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Verdict {
        let packet = Packet {
            src,
            dst,
            protocol,
            src_port: None,
            dst_port: Some(port),
            icmp_type: None,
            icmp_code: None,
        };
        evaluate_packet(&self.inv, &packet, &Options::default()).verdict
    }

    /// The denied-flow events waiting in the ring buffer.
    fn deny_events(&mut self) -> Vec<FlowEvent> {
        self.events
            .drain()
            .into_iter()
            .filter(|e| e.action == ACTION_DENY)
            .collect()
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

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// Echo servers in one namespace: TCP (every accepted connection echoes until closed) and
/// UDP, on the given addresses and ports. Dropping it stops and joins every thread.
struct Echo {
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Echo {
    fn start(ns: &str, addrs: &[IpAddr], tcp: &[u16], udp: &[u16]) -> Echo {
        let (listeners, sockets) = in_netns(ns, || {
            let mut l = Vec::new();
            let mut u = Vec::new();
            for &a in addrs {
                for &p in tcp {
                    let s = TcpListener::bind(SocketAddr::new(a, p))
                        .unwrap_or_else(|e| panic!("listen {a} TCP {p}: {e}"));
                    s.set_nonblocking(true).expect("nonblocking");
                    l.push(s);
                }
                for &p in udp {
                    let s = UdpSocket::bind(SocketAddr::new(a, p))
                        .unwrap_or_else(|e| panic!("bind {a} UDP {p}: {e}"));
                    s.set_read_timeout(Some(Duration::from_millis(20)))
                        .expect("timeout");
                    u.push(s);
                }
            }
            (l, u)
        });
        let echo = Echo {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Arc::new(Mutex::new(Vec::new())),
        };
        for s in sockets {
            let stop = echo.stop.clone();
            echo.spawn(move || {
                let mut buf = [0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            });
        }
        for l in listeners {
            let stop = echo.stop.clone();
            let threads = echo.threads.clone();
            echo.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((conn, _)) => {
                            let stop = stop.clone();
                            let handle = thread::spawn(move || echo_stream(conn, &stop));
                            threads
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(handle);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        echo
    }

    fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let handle = thread::spawn(f);
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle);
    }
}

fn echo_stream(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        loop {
            let next = self
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match next {
                Some(h) => {
                    let _ = h.join();
                }
                None => break,
            }
        }
    }
}

/// A TCP connection from `src` (in `ns`) to `dst`, or `None` when no answer came in time.
fn tcp_connect(ns: &str, src: IpAddr, dst: SocketAddr, timeout: Duration) -> Option<TcpStream> {
    let sock = in_netns(ns, || {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).expect("socket");
        s.bind(&SocketAddr::new(src, 0).into())
            .unwrap_or_else(|e| panic!("bind {src}: {e}"));
        s
    });
    match sock.connect_timeout(&dst.into(), timeout) {
        Ok(()) => Some(sock.into()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            None
        }
        Err(e) => panic!("connect {src} -> {dst}: unexpected {e}"),
    }
}

/// Sends `msg` and waits up to `wait` for it to come back; `false` on silence.
fn tcp_roundtrip(stream: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    stream.write_all(msg).expect("TCP send");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < msg.len() {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(e) => panic!("TCP receive: {e}"),
        }
    }
    got == msg
}

/// Closes with an RST (no TIME_WAIT, no FIN handshake to wait for).
fn abort(stream: TcpStream) {
    let s = Socket::from(stream);
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Whether TCP from `src` in `ns` reaches `dst` within `wait` (a handshake completes; the
/// echo must then come back).
fn tcp_reaches(ns: &str, src: IpAddr, dst: SocketAddr, wait: Duration) -> bool {
    match tcp_connect(ns, src, dst, wait) {
        Some(mut s) => {
            let ok = tcp_roundtrip(&mut s, b"hello over tcp", ALLOW_WAIT);
            abort(s);
            assert!(
                ok,
                "{src} -> {dst}: connected but the echo did not come back"
            );
            true
        }
        None => false,
    }
}

/// A UDP socket bound to `src` in `ns`.
fn udp_socket(ns: &str, src: IpAddr, port: u16) -> UdpSocket {
    in_netns(ns, || {
        UdpSocket::bind(SocketAddr::new(src, port)).unwrap_or_else(|e| panic!("bind {src}: {e}"))
    })
}

/// Sends a datagram and waits up to `wait` for its echo; `false` on silence.
fn udp_echo(sock: &UdpSocket, dst: SocketAddr, msg: &[u8], wait: Duration) -> bool {
    sock.send_to(msg, dst).expect("UDP send");
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == dst && &buf[..n] == msg => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(e) => panic!("UDP receive from {dst}: {e}"),
        }
    }
}

fn udp_reaches(ns: &str, src: IpAddr, dst: SocketAddr, wait: Duration) -> bool {
    udp_echo(&udp_socket(ns, src, 0), dst, b"hello over udp", wait)
}

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const ETH_P_ALL: u16 = 0x0003;

/// An `AF_PACKET` socket seeing every frame a namespace receives.
struct Sniffer(Socket);

impl Sniffer {
    fn open(ns: &str) -> Sniffer {
        in_netns(ns, || {
            let s = Socket::new(
                Domain::PACKET,
                Type::RAW,
                Some(i32::from(ETH_P_ALL.to_be()).into()),
            )
            .expect("AF_PACKET socket");
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and a c_int option of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_PACKET,
                    PACKET_IGNORE_OUTGOING,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(
                rc,
                0,
                "PACKET_IGNORE_OUTGOING: {}",
                io::Error::last_os_error()
            );
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            Sniffer(s)
        })
    }

    /// Every frame received until `wait` has passed.
    fn frames(&self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 65_536];
        while Instant::now() < deadline {
            if let Ok(n) = self.0.recv(&mut buf) {
                // SAFETY: recv initialised the first n bytes.
                out.push(
                    buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect(),
                );
            }
        }
        out
    }
}

/// Sends Ethernet frames out of `eth0` of namespace `ns` through an `AF_PACKET` socket.
fn send_frames(ns: &str, frames: &[Vec<u8>]) {
    in_netns(ns, || {
        // SAFETY: plain socket(2); the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: a NUL-terminated interface name.
        let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
        assert_ne!(ifindex, 0, "no eth0 in {ns}");
        // SAFETY: sockaddr_ll is plain data; zero is a valid value for every field.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame::HOST_SIDE_MAC);
        for f in frames {
            // SAFETY: f is a valid buffer of f.len() bytes; sll a valid sockaddr_ll.
            let n = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(
                n,
                f.len() as isize,
                "sending a crafted frame: {}",
                io::Error::last_os_error()
            );
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
    });
}

// ---------------------------------------------------------------------------------------------
// (a) allow and deny, ingress and egress policies, TCP and UDP, IPv4 and IPv6
// ---------------------------------------------------------------------------------------------

const SERVER_INGRESS: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server-ingress
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: app == 'client'
      destination:
        ports: [8080]
    - action: Allow
      protocol: UDP
      source:
        selector: app == 'client'
      destination:
        ports: [8081]
";

const CLIENT_EGRESS: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: client-egress
  namespace: demo
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        selector: app == 'server'
        ports: [9080]
    - action: Allow
      protocol: UDP
      destination:
        selector: app == 'server'
        ports: [9081]
";

/// Probes client → server on TCP `tcp` and UDP `udp` ports in both families; returns
/// `(protocol, family, port) -> observed allow`, checking each against the evaluator.
fn probe_all(env: &Env, tcp: &[u16], udp: &[u16]) -> BTreeMap<(u8, u8, u16), bool> {
    let mut out = BTreeMap::new();
    for (src, dst) in [
        (ip(CLIENT_V4), ip(SERVER_V4)),
        (ip(CLIENT_V6), ip(SERVER_V6)),
    ] {
        let family = if dst.is_ipv6() { 6 } else { 4 };
        for (proto, ports) in [(Protocol::TCP, tcp), (Protocol::UDP, udp)] {
            for &port in ports {
                let to = SocketAddr::new(dst, port);
                let expected = env.expect(src, dst, proto, port);
                let got = if proto == Protocol::TCP {
                    tcp_reaches(&env.client.netns, src, to, wait_for(expected))
                } else {
                    udp_reaches(&env.client.netns, src, to, wait_for(expected))
                };
                let want = expected == Verdict::Allow;
                assert_eq!(
                    got,
                    want,
                    "{proto} {src} -> {to}: observed {}, the evaluator says {}",
                    if got { "allow" } else { "deny" },
                    if want { "allow" } else { "deny" }
                );
                out.insert((proto.0, family, port), got);
            }
        }
    }
    out
}

#[test]
fn privileged_allow_and_deny_in_both_directions() {
    let _g = serial();
    let mut env = Env::new(SERVER_INGRESS);
    let _echo = Echo::start(
        &env.server.netns,
        &[ip(SERVER_V4), ip(SERVER_V6)],
        &[8080, 9080],
        &[8081, 9081],
    );

    // The server's ingress policy: 8080/TCP and 8081/UDP from the client, nothing else.
    let seen = probe_all(&env, &[8080, 9080], &[8081, 9081]);
    for fam in [4, 6] {
        assert!(seen[&(6, fam, 8080)] && seen[&(17, fam, 8081)], "{seen:?}");
        assert!(
            !seen[&(6, fam, 9080)] && !seen[&(17, fam, 9081)],
            "{seen:?}"
        );
    }
    // Each denied first packet is an event at the server's interface, judged as its
    // ingress. (TCP retransmits its SYN; count distinct flows.)
    let all = env.deny_events();
    for port in [9080, 9081] {
        let events: Vec<&FlowEvent> = all.iter().filter(|e| e.dst_port == port).collect();
        assert!(!events.is_empty(), "no deny event for port {port}");
        for e in &events {
            assert_eq!(
                (e.ifindex, e.direction),
                (env.server.ifindex, DIR_INGRESS),
                "{e:?}"
            );
            assert!(
                [addr16(ip(CLIENT_V4)), addr16(ip(CLIENT_V6))].contains(&e.src),
                "{e:?}"
            );
        }
        assert!(events.iter().any(|e| e.family == 4) && events.iter().any(|e| e.family == 6));
    }

    // The client's egress policy instead: 9080/TCP and 9081/UDP to the server only.
    env.reprogram(CLIENT_EGRESS);
    let seen = probe_all(&env, &[8080, 9080], &[8081, 9081]);
    for fam in [4, 6] {
        assert!(seen[&(6, fam, 9080)] && seen[&(17, fam, 9081)], "{seen:?}");
        assert!(
            !seen[&(6, fam, 8080)] && !seen[&(17, fam, 8081)],
            "{seen:?}"
        );
    }
    let all = env.deny_events();
    for port in [8080, 8081] {
        let events: Vec<&FlowEvent> = all.iter().filter(|e| e.dst_port == port).collect();
        assert!(!events.is_empty(), "no deny event for port {port}");
        for e in &events {
            assert_eq!(
                (e.ifindex, e.direction),
                (env.client.ifindex, DIR_EGRESS),
                "{e:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) replies pass; the reverse direction as a new flow is denied
// ---------------------------------------------------------------------------------------------

/// Both pods isolated both ways; only client → server 8080/TCP and 8081/UDP are allowed, by
/// the client's egress and the server's ingress.
const ISOLATED: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: client
  namespace: demo
spec:
  selector: app == 'client'
  types: [Ingress, Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        selector: app == 'server'
        ports: [8080]
    - action: Allow
      protocol: UDP
      destination:
        selector: app == 'server'
        ports: [8081]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress, Egress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: app == 'client'
      destination:
        ports: [8080]
    - action: Allow
      protocol: UDP
      source:
        selector: app == 'client'
      destination:
        ports: [8081]
";

#[test]
fn privileged_replies_pass_and_the_reverse_new_flow_is_denied() {
    let _g = serial();
    let mut env = Env::new(ISOLATED);
    let _server = Echo::start(
        &env.server.netns,
        &[ip(SERVER_V4), ip(SERVER_V6)],
        &[8080],
        &[8081],
    );
    let _client = Echo::start(
        &env.client.netns,
        &[ip(CLIENT_V4), ip(CLIENT_V6)],
        &[8080],
        &[8081],
    );
    let ct_before = [
        env.counter(REASON_ALLOW_CONNTRACK, DIR_INGRESS),
        env.counter(REASON_ALLOW_CONNTRACK, DIR_EGRESS),
    ];
    for (c, s) in [
        (ip(CLIENT_V4), ip(SERVER_V4)),
        (ip(CLIENT_V6), ip(SERVER_V6)),
    ] {
        // The evaluator: replies' direction as new flows is denied by both policies.
        assert_eq!(env.expect(c, s, Protocol::TCP, 8080), Verdict::Allow);
        assert_eq!(env.expect(s, c, Protocol::TCP, 8080), Verdict::Deny);
        assert_eq!(env.expect(s, c, Protocol::UDP, 8081), Verdict::Deny);

        // TCP: data both ways over one connection (the server's replies are new flows for
        // nobody: conntrack passes them at both interfaces).
        let mut conn = tcp_connect(&env.client.netns, c, SocketAddr::new(s, 8080), ALLOW_WAIT)
            .unwrap_or_else(|| panic!("TCP {c} -> {s}:8080 must connect"));
        for i in 0..5 {
            let msg = format!("request {i} with some bytes");
            assert!(
                tcp_roundtrip(&mut conn, msg.as_bytes(), ALLOW_WAIT),
                "TCP echo {i} over {c} -> {s}"
            );
        }
        abort(conn);

        // UDP: the echo reply passes; several request/reply rounds on one socket.
        let sock = udp_socket(&env.client.netns, c, 0);
        for i in 0..5 {
            let msg = format!("datagram {i}");
            assert!(
                udp_echo(&sock, SocketAddr::new(s, 8081), msg.as_bytes(), ALLOW_WAIT),
                "UDP echo {i} over {c} -> {s}"
            );
        }
        drop(sock);

        // The reverse direction as a new flow: the server opens connections to the
        // client's listeners on the same ports. Denied at the first hook, the server's
        // egress.
        let _ = env.events.drain();
        assert!(!tcp_reaches(
            &env.server.netns,
            s,
            SocketAddr::new(c, 8080),
            DENY_WAIT
        ));
        assert!(!udp_reaches(
            &env.server.netns,
            s,
            SocketAddr::new(c, 8081),
            DENY_WAIT
        ));
        let events = env.deny_events();
        for port in [8080, 8081] {
            assert!(
                events.iter().any(|e| e.dst_port == port
                    && (e.ifindex, e.direction) == (env.server.ifindex, DIR_EGRESS)),
                "{events:?}"
            );
        }
    }
    let ct_after = [
        env.counter(REASON_ALLOW_CONNTRACK, DIR_INGRESS),
        env.counter(REASON_ALLOW_CONNTRACK, DIR_EGRESS),
    ];
    // Replies and later packets went through conntrack at both interfaces, both directions.
    assert!(
        ct_after[0] >= ct_before[0] + 20 && ct_after[1] >= ct_before[1] + 20,
        "ALLOW_CONNTRACK {ct_before:?} -> {ct_after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) a policy change cuts an established connection; an allowing change keeps it
// ---------------------------------------------------------------------------------------------

const ALLOW_8080: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: app == 'client'
      destination:
        ports: [8080]
";

/// Still allows 8080/TCP (another rule added, so the tables and the generation change).
const ALLOW_8080_AND_MORE: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: UDP
      destination:
        ports: [5353]
    - action: Allow
      protocol: TCP
      source:
        selector: app == 'client'
      destination:
        ports: [8080]
";

const DENY_8080: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
    - action: Deny
      protocol: TCP
      source:
        selector: app == 'client'
      destination:
        ports: [8080]
    - action: Allow
";

#[test]
fn privileged_policy_change_cuts_an_established_connection() {
    let _g = serial();
    let mut env = Env::new(ALLOW_8080);
    let _echo = Echo::start(
        &env.server.netns,
        &[ip(SERVER_V4), ip(SERVER_V6)],
        &[8080],
        &[],
    );
    let pairs = [
        (ip(CLIENT_V4), ip(SERVER_V4)),
        (ip(CLIENT_V6), ip(SERVER_V6)),
    ];
    let open = |env: &Env| -> Vec<TcpStream> {
        pairs
            .iter()
            .map(|&(c, s)| {
                let mut conn =
                    tcp_connect(&env.client.netns, c, SocketAddr::new(s, 8080), ALLOW_WAIT)
                        .unwrap_or_else(|| panic!("{c} -> {s}:8080 must connect"));
                assert!(tcp_roundtrip(&mut conn, b"before the change", ALLOW_WAIT));
                conn
            })
            .collect()
    };

    // A change that keeps the connection allowed: the next packets are re-checked against
    // the new tables and pass.
    let mut conns = open(&env);
    let recheck = env.counter(REASON_RECHECK, DIR_INGRESS);
    let generation = env.dp.config().expect("config").generation;
    let new_generation = env.reprogram(ALLOW_8080_AND_MORE);
    assert_eq!(new_generation, generation.wrapping_add(1));
    for (conn, (c, _)) in conns.iter_mut().zip(pairs) {
        assert!(
            tcp_roundtrip(conn, b"after an allowing change", ALLOW_WAIT),
            "{c}: still allowed, the connection must keep working"
        );
    }
    assert!(
        env.counter(REASON_RECHECK, DIR_INGRESS) >= recheck + 2,
        "each connection was re-checked at the server's interface"
    );
    for c in conns {
        abort(c);
    }

    // A new Deny cuts established connections at their next packet.
    let mut conns = open(&env);
    let recheck = env.counter(REASON_RECHECK, DIR_INGRESS);
    let _ = env.events.drain();
    env.reprogram(DENY_8080);
    for (conn, (c, s)) in conns.iter_mut().zip(pairs) {
        assert_eq!(env.expect(c, s, Protocol::TCP, 8080), Verdict::Deny);
        assert!(
            !tcp_roundtrip(conn, b"after the deny", DENY_WAIT),
            "{c} -> {s}: the Deny must cut the established connection"
        );
    }
    assert!(env.counter(REASON_RECHECK, DIR_INGRESS) >= recheck + 2);
    let events: Vec<FlowEvent> = env
        .deny_events()
        .into_iter()
        .filter(|e| e.dst_port == 8080)
        .collect();
    for fam in [4, 6] {
        assert!(
            events.iter().any(|e| e.family == fam
                && (e.ifindex, e.direction) == (env.server.ifindex, DIR_INGRESS)),
            "the re-check deny of the IPv{fam} connection is reported: {events:?}"
        );
    }
    for c in conns {
        abort(c);
    }
    // And a new connection is refused too.
    for (c, s) in pairs {
        assert!(!tcp_reaches(
            &env.client.netns,
            c,
            SocketAddr::new(s, 8080),
            DENY_WAIT
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// (d) a burst of policy updates under traffic: no packet judged by a mixed state
// ---------------------------------------------------------------------------------------------

const P1: u16 = 7001;
const P2: u16 = 7002;

fn only_port(port: u16) -> String {
    format!(
        r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: UDP
      source:
        selector: app == 'client'
      destination:
        ports: [{port}]
"
    )
}

const MAGIC: u32 = 0x454e_4643;

/// Sets its flag when dropped (also while unwinding).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One received datagram: (family, port, sequence, phase before sending, phase after
/// receiving).
type Received = (u8, u16, u64, u64, u64);

/// ≥ 200 updates alternate policy A (allow UDP P1, deny P2) and policy B (the opposite)
/// while the client sends UDP to both ports without pause, IPv4 and IPv6.
///
/// The check. The updater publishes a phase counter: `2k` while policy `k` is in force and
/// no update is running (policy `k` is A for even `k`, B for odd), `2k + 1` while update
/// `k + 1` runs (between calling and the return of [`Datapath::program`], which returns only
/// after the flip and the generation bump). The sender reads the phase just before `sendto`
/// and stamps it in the datagram; the receiver reads it just after `recv`. The packet was
/// judged between the two reads, and the phase only grows, so it was judged while the phase
/// was in `[before, after]`. When `before == after == 2k`, policy `k` alone was in force the
/// whole time: the packet must be on the port policy `k` allows. A packet on the other port
/// in such a window was judged by something other than policy `k`: the old tables, stale
/// conntrack state that escaped the generation re-check, or a mix of the two table sets.
/// Packets whose window overlaps an update (either policy may rightly judge them) are not
/// checked. The check is sound (no false alarm: a correct datapath never trips it) and not
/// vacuous: the test requires hundreds of checked packets on both ports.
///
/// Each direction of traffic uses one source port per family, so most packets are
/// established flows: conntrack and the generation re-check decide them, as they do for
/// long-lived traffic; the packets after a re-check deny are new flows judged by policy.
#[test]
fn privileged_policy_burst_under_traffic_never_judges_by_a_mixed_state() {
    const UPDATES: u64 = 200;
    let _g = serial();
    let policy_a = only_port(P1);
    let policy_b = only_port(P2);
    let mut env = Env::new(&policy_a);
    // The tables of both policies, rendered once.
    let entries_a = render(&inventory(&policy_a), &env.topo);
    let entries_b = render(&inventory(&policy_b), &env.topo);
    let ev = |p: &str, port| {
        let inv = inventory(p);
        let packet = Packet {
            src: ip(CLIENT_V4),
            dst: ip(SERVER_V4),
            protocol: Protocol::UDP,
            src_port: None,
            dst_port: Some(port),
            icmp_type: None,
            icmp_code: None,
        };
        evaluate_packet(&inv, &packet, &Options::default()).verdict
    };
    assert_eq!(
        [
            ev(&policy_a, P1),
            ev(&policy_a, P2),
            ev(&policy_b, P1),
            ev(&policy_b, P2)
        ],
        [Verdict::Allow, Verdict::Deny, Verdict::Deny, Verdict::Allow]
    );

    let phase = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the traffic threads if anything below panics.
    let _stopper = StopOnDrop(stop.clone());
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();

    // Receivers: one socket per family and port in the server.
    let receivers: Vec<UdpSocket> = in_netns(&env.server.netns, || {
        let mut out = Vec::new();
        for a in [ip(SERVER_V4), ip(SERVER_V6)] {
            for p in [P1, P2] {
                let s = UdpSocket::bind(SocketAddr::new(a, p)).expect("bind receiver");
                s.set_read_timeout(Some(Duration::from_millis(20)))
                    .expect("timeout");
                out.push(s);
            }
        }
        out
    });
    let mut threads = Vec::new();
    for s in receivers {
        let (phase, stop, received) = (phase.clone(), stop.clone(), received.clone());
        threads.push(thread::spawn(move || {
            let port = s.local_addr().expect("addr").port();
            let family = if s.local_addr().expect("addr").is_ipv6() {
                6
            } else {
                4
            };
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    let after = phase.load(Ordering::SeqCst);
                    if n == 20 && buf[..4] == MAGIC.to_be_bytes() {
                        let seq = u64::from_be_bytes(buf[4..12].try_into().expect("8 bytes"));
                        let before = u64::from_be_bytes(buf[12..20].try_into().expect("8 bytes"));
                        got.push((family, port, seq, before, after));
                    }
                }
            }
            received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(got);
        }));
    }
    // Senders: one socket per family in the client, alternating the two ports.
    let senders: Vec<(UdpSocket, IpAddr)> = in_netns(&env.client.netns, || {
        [
            (ip(CLIENT_V4), ip(SERVER_V4)),
            (ip(CLIENT_V6), ip(SERVER_V6)),
        ]
        .into_iter()
        .map(|(c, s)| {
            (
                UdpSocket::bind(SocketAddr::new(c, 0)).expect("bind sender"),
                s,
            )
        })
        .collect()
    });
    let sent = Arc::new(AtomicU64::new(0));
    for (sock, dst) in senders {
        let (phase, stop, sent) = (phase.clone(), stop.clone(), sent.clone());
        threads.push(thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for port in [P1, P2] {
                    seq += 1;
                    let before = phase.load(Ordering::SeqCst);
                    let mut msg = Vec::with_capacity(20);
                    msg.extend_from_slice(&MAGIC.to_be_bytes());
                    msg.extend_from_slice(&seq.to_be_bytes());
                    msg.extend_from_slice(&before.to_be_bytes());
                    // A full socket buffer or a denied packet is not an error here.
                    let _ = sock.send_to(&msg, SocketAddr::new(dst, port));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_micros(50));
            }
        }));
    }

    // The burst.
    thread::sleep(Duration::from_millis(30));
    let started = Instant::now();
    let first_generation = env.dp.config().expect("config").generation;
    for k in 1..=UPDATES {
        phase.store(2 * k - 1, Ordering::SeqCst);
        let entries = if k.is_multiple_of(2) {
            &entries_a
        } else {
            &entries_b
        };
        env.dp
            .program(entries)
            .unwrap_or_else(|e| panic!("update {k}: {e}"));
        phase.store(2 * k, Ordering::SeqCst);
        // A short stable window in which one policy alone is in force.
        thread::sleep(Duration::from_millis(3));
    }
    let burst = started.elapsed();
    thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
    let last_generation = env.dp.config().expect("config").generation;
    assert_eq!(
        last_generation.wrapping_sub(first_generation),
        UPDATES as u32,
        "one generation per update"
    );

    let received = std::mem::take(&mut *received.lock().unwrap_or_else(PoisonError::into_inner));
    let allowed_port = |k: u64| if k.is_multiple_of(2) { P1 } else { P2 };
    let mut checked: BTreeMap<(u8, u16), usize> = BTreeMap::new();
    let mut violations = Vec::new();
    for &(family, port, seq, before, after) in &received {
        if before == after && before.is_multiple_of(2) {
            *checked.entry((family, port)).or_default() += 1;
            if port != allowed_port(before / 2) {
                violations.push(format!(
                    "IPv{family} seq {seq} to port {port} arrived although policy {} (allowing \
                     only {}) was alone in force from before its send to after its receipt \
                     (phase {before})",
                    before / 2,
                    allowed_port(before / 2)
                ));
            }
        }
    }
    eprintln!(
        "burst: {UPDATES} updates in {:.2} s; {} datagrams sent, {} received, checked in \
         stable windows: {checked:?}",
        burst.as_secs_f64(),
        sent.load(Ordering::Relaxed),
        received.len()
    );
    assert!(
        violations.is_empty(),
        "{} packets were judged by a state that was not the policy in force:\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for key in [(4, P1), (4, P2), (6, P1), (6, P2)] {
        assert!(
            checked.get(&key).copied().unwrap_or(0) >= 50,
            "too few packets checked for {key:?}: {checked:?} (the check would be vacuous)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (e) malformed and truncated packets
// ---------------------------------------------------------------------------------------------

fn v4(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("{s} is not IPv4"),
    }
}

fn v6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("{s} is not IPv6"),
    }
}

/// An IPv6 packet with `mark` as its flow label.
fn v6_marked(next: u8, payload: &[u8], payload_len: Option<u16>, mark: u32) -> Vec<u8> {
    let mut p = frame::ipv6(v6(CLIENT_V6), v6(SERVER_V6), next, payload);
    p[1..4].copy_from_slice(&mark.to_be_bytes()[1..]);
    if let Some(len) = payload_len {
        p[4..6].copy_from_slice(&len.to_be_bytes());
    }
    p
}

/// The marker of a received frame: IPv4 identification or IPv6 flow label.
fn marker(f: &[u8]) -> Option<u32> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        frame::ETH_P_IP => Some(u32::from(u16::from_be_bytes([*f.get(18)?, *f.get(19)?]))),
        frame::ETH_P_IPV6 => Some(u32::from_be_bytes([
            0,
            *f.get(15)? & 0x0f,
            *f.get(16)?,
            *f.get(17)?,
        ])),
        _ => None,
    }
}

#[test]
fn privileged_malformed_and_truncated_packets_are_dropped_and_counted() {
    let _g = serial();
    // No policy: the profile allows everything, so only parsing can drop.
    let env = Env::new("");
    let (c4, s4) = (v4(CLIENT_V4), v4(SERVER_V4));
    let eth = |ether_type, ip: Vec<u8>| {
        frame::ethernet(frame::HOST_SIDE_MAC, frame::CRAFTED_MAC, ether_type, &ip)
    };
    let udp4 = frame::transport(
        ip(CLIENT_V4),
        ip(SERVER_V4),
        17,
        4000,
        7000,
        (0, 0),
        0,
        b"x",
    );
    let udp6 = frame::transport(
        ip(CLIENT_V6),
        ip(SERVER_V6),
        17,
        4000,
        7000,
        (0, 0),
        0,
        b"x",
    );
    let tcp4 = frame::transport(
        ip(CLIENT_V4),
        ip(SERVER_V4),
        6,
        4000,
        7000,
        (0, 0),
        frame::TCP_SYN,
        b"",
    );
    let tcp6 = frame::transport(
        ip(CLIENT_V6),
        ip(SERVER_V6),
        6,
        4000,
        7000,
        (0, 0),
        frame::TCP_SYN,
        b"",
    );
    let ipv4 = |ident: u16, proto: u8| frame::V4 {
        ident,
        ..frame::V4::new(c4, s4, proto)
    };

    let controls = vec![
        eth(frame::ETH_P_IP, ipv4(0xe001, 17).packet(&udp4)),
        eth(frame::ETH_P_IPV6, v6_marked(17, &udp6, None, 0xe001)),
    ];
    let malformed: Vec<(&str, u32, Vec<u8>)> = vec![
        (
            "IPv4 IHL 4",
            0xe002,
            eth(
                frame::ETH_P_IP,
                frame::V4 {
                    ihl: Some(4),
                    ..ipv4(0xe002, 17)
                }
                .packet(&udp4),
            ),
        ),
        (
            "IPv4 TCP header cut to 10 bytes",
            0xe003,
            eth(frame::ETH_P_IP, ipv4(0xe003, 6).packet(&tcp4[..10])),
        ),
        (
            "IPv4 UDP header cut to 4 bytes",
            0xe004,
            eth(frame::ETH_P_IP, ipv4(0xe004, 17).packet(&udp4[..4])),
        ),
        (
            "IPv4 total length beyond the frame",
            0xe005,
            eth(
                frame::ETH_P_IP,
                frame::V4 {
                    total_len: Some(200),
                    ..ipv4(0xe005, 17)
                }
                .packet(&udp4),
            ),
        ),
        (
            "IPv4 total length shorter than the header",
            0xe006,
            eth(
                frame::ETH_P_IP,
                frame::V4 {
                    total_len: Some(16),
                    ..ipv4(0xe006, 17)
                }
                .packet(&udp4),
            ),
        ),
        (
            "IPv6 TCP header cut to 10 bytes",
            0xe007,
            eth(frame::ETH_P_IPV6, v6_marked(6, &tcp6[..10], None, 0xe007)),
        ),
        (
            "IPv6 payload length beyond the frame",
            0xe008,
            eth(frame::ETH_P_IPV6, v6_marked(17, &udp6, Some(400), 0xe008)),
        ),
    ];

    let unparseable = env.counter(REASON_DENY_UNPARSEABLE, DIR_EGRESS);
    let sniffer = Sniffer::open(&env.server.netns);
    send_frames(&env.client.netns, &controls);
    let frames: Vec<Vec<u8>> = malformed.iter().map(|(_, _, f)| f.clone()).collect();
    send_frames(&env.client.netns, &frames);
    let arrived: Vec<u32> = sniffer
        .frames(Duration::from_millis(300))
        .iter()
        .filter_map(|f| marker(f))
        .collect();

    assert!(
        arrived.iter().filter(|&&m| m == 0xe001).count() == 2,
        "the well-formed controls (IPv4 and IPv6) must arrive: {arrived:x?}"
    );
    for (what, mark, _) in &malformed {
        assert!(
            !arrived.contains(mark),
            "{what} must be dropped, but it arrived"
        );
    }
    assert_eq!(
        env.counter(REASON_DENY_UNPARSEABLE, DIR_EGRESS) - unparseable,
        malformed.len() as u64,
        "every malformed frame is counted as unparseable at the client's interface"
    );
}

// ---------------------------------------------------------------------------------------------
// (f) fragments
// ---------------------------------------------------------------------------------------------

const FRAGMENT_POLICY: &str = r"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: server
  namespace: demo
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: UDP
      source:
        selector: app == 'client'
      destination:
        ports: [8081]
";

/// (first fragment?, non-first fragment?) of a received client → server UDP frame.
fn fragment_kind(f: &[u8]) -> Option<bool> {
    let ether_type = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let ip = f.get(14..)?;
    match ether_type {
        frame::ETH_P_IP => {
            if ip.get(9)? != &17 || ip.get(12..16)? != v4(CLIENT_V4) {
                return None;
            }
            let word = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            let (mf, offset) = (word & frame::IPV4_MF != 0, word & 0x1fff);
            (mf || offset != 0).then_some(offset == 0)
        }
        frame::ETH_P_IPV6 => {
            if ip.get(8..24)? != v6(CLIENT_V6) || ip.get(6)? != &44 || ip.get(40)? != &17 {
                return None;
            }
            let word = u16::from_be_bytes([*ip.get(42)?, *ip.get(43)?]);
            Some(word & 0xfff8 == 0)
        }
        _ => None,
    }
}

/// A UDP datagram larger than the MTU (1500 on the veths): the sender's kernel fragments it.
/// The first fragment carries the UDP header and is judged like any packet; non-first
/// fragments carry no ports and pass (`REASON_PASS_FRAGMENT`, `docs/datapath-kernel.md`).
/// Allowed: the datagram arrives whole. Denied: the first fragment is dropped at the
/// server's interface, the rest reach the server, which cannot reassemble them (they expire
/// in its reassembly queue): nothing is delivered.
#[test]
fn privileged_fragments_first_is_judged_the_rest_pass() {
    let _g = serial();
    let mut env = Env::new(FRAGMENT_POLICY);
    const SIZE: usize = 3000;
    let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let receivers: Vec<UdpSocket> = in_netns(&env.server.netns, || {
        [SERVER_V4, SERVER_V6]
            .iter()
            .flat_map(|a| [8081, 9081].map(|p| (ip(a), p)))
            .map(|(a, p)| UdpSocket::bind(SocketAddr::new(a, p)).expect("bind"))
            .collect()
    });
    let receiver = |dst: IpAddr, port: u16| {
        receivers
            .iter()
            .find(|r| r.local_addr().expect("addr") == SocketAddr::new(dst, port))
            .expect("receiver")
    };
    for (c, s) in [
        (ip(CLIENT_V4), ip(SERVER_V4)),
        (ip(CLIENT_V6), ip(SERVER_V6)),
    ] {
        let fam = if s.is_ipv6() { 6 } else { 4 };
        assert_eq!(env.expect(c, s, Protocol::UDP, 8081), Verdict::Allow);
        assert_eq!(env.expect(c, s, Protocol::UDP, 9081), Verdict::Deny);
        let sender = udp_socket(&env.client.netns, c, 0);
        let frag = [
            env.counter(REASON_PASS_FRAGMENT, DIR_EGRESS),
            env.counter(REASON_PASS_FRAGMENT, DIR_INGRESS),
        ];

        // Allowed: the whole datagram arrives.
        sender
            .send_to(&payload, SocketAddr::new(s, 8081))
            .expect("send");
        let mut buf = vec![0u8; 65_536];
        receiver(s, 8081)
            .set_read_timeout(Some(ALLOW_WAIT))
            .expect("timeout");
        let (n, _) = receiver(s, 8081).recv_from(&mut buf).unwrap_or_else(|e| {
            panic!("IPv{fam}: the allowed fragmented datagram must arrive: {e}")
        });
        assert_eq!(&buf[..n], &payload[..], "IPv{fam}: reassembled datagram");
        // Three fragments (1480 + 1480 + 48 bytes of UDP datagram in IPv4; IPv6 similar):
        // two non-first ones passed at each interface.
        let after_allowed = [
            env.counter(REASON_PASS_FRAGMENT, DIR_EGRESS),
            env.counter(REASON_PASS_FRAGMENT, DIR_INGRESS),
        ];
        assert_eq!(
            [after_allowed[0] - frag[0], after_allowed[1] - frag[1]],
            [2, 2],
            "IPv{fam}: non-first fragments pass as PASS_FRAGMENT at the client's and the \
             server's interface"
        );

        // Denied: the server's interface drops the first fragment; the others pass.
        let _ = env.events.drain();
        let sniffer = Sniffer::open(&env.server.netns);
        sender
            .send_to(&payload, SocketAddr::new(s, 9081))
            .expect("send");
        let kinds: Vec<bool> = sniffer
            .frames(Duration::from_millis(300))
            .iter()
            .filter_map(|f| fragment_kind(f))
            .collect();
        receiver(s, 9081)
            .set_read_timeout(Some(DENY_WAIT))
            .expect("timeout");
        assert!(
            receiver(s, 9081).recv_from(&mut buf).is_err(),
            "IPv{fam}: the denied datagram must not be delivered"
        );
        assert_eq!(
            kinds,
            vec![false, false],
            "IPv{fam}: exactly the two non-first fragments reach the server (true = first)"
        );
        let after_denied = [
            env.counter(REASON_PASS_FRAGMENT, DIR_EGRESS),
            env.counter(REASON_PASS_FRAGMENT, DIR_INGRESS),
        ];
        assert_eq!(
            [
                after_denied[0] - after_allowed[0],
                after_denied[1] - after_allowed[1]
            ],
            [2, 2]
        );
        // Exactly one deny: the first fragment, with its ports, at the server's interface.
        // (Counters are per direction for the whole node, so the attribution uses the
        // event; the node's own MLDv2 reports to the pods are denied by the same policy.)
        let denies: Vec<FlowEvent> = env
            .deny_events()
            .into_iter()
            .filter(|e| e.protocol == 17 && e.family == fam)
            .collect();
        assert_eq!(
            denies.len(),
            1,
            "IPv{fam}: one denied UDP packet, the first fragment: {denies:?}"
        );
        let e = denies[0];
        assert_eq!(
            (e.ifindex, e.direction, e.dst_port, e.src, e.dst),
            (env.server.ifindex, DIR_INGRESS, 9081, addr16(c), addr16(s)),
            "IPv{fam}: {e:?}"
        );
    }
}
