//! The node agent (`enforcer run`) end to end, and its configuration and endpoint discovery.
//!
//! Privileged tests (`privileged_*`) FAIL (never skip) when not root or when this build embeds
//! the stub eBPF object. Each builds a node network namespace with two pod namespaces wired as
//! Calico wires pods (the lab's [`Topology`]: `/32` routes through host-side veths named
//! `<id>p0`, `<id>p1`), runs the real `enforcer` binary *inside the node namespace* with its own
//! pin base, policy directory and state directory, and sends continuous UDP and TCP traffic
//! between the pods while policy changes and the agent is killed and restarted.
//!
//! The agent process enters the node namespace with `setns(2)` between fork and exec (as
//! `nsenter --net` does), not with `ip netns exec`: the latter also remounts `/sys` for the
//! namespace, which hides the bpffs mounted at `/sys/fs/bpf` where the pins live.
//!
//! Everything created is removed by drop guards, also when an assertion fails: the agent is
//! SIGKILLed, the namespaces deleted (which deletes the veths), the pin and scratch directories
//! removed. Tests share the kernel, so they run one at a time (a process-wide mutex).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use enforcer_user::{
    agent::{
        config::{AgentConfig, ConfigLayer, LogFormat, PortList, SourceConfig, env_name},
        endpoints::{self, NetState, Role, Route, Selector},
        state::{self, PersistedState},
    },
    compile::EndpointId,
    ebpf_object,
    evaluator::Failsafe,
    lab::{
        netns::{self, Cleanup},
        topology::{HostKind, HostSpec, Topology},
    },
    model::Protocol,
    sources,
};

static KERNEL: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

fn serial() -> MutexGuard<'static, ()> {
    KERNEL.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_privileges() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged agent test needs root (network namespaces, eBPF); effective uid is {euid}. \
         Run `cargo xtask test` as root."
    );
    assert!(
        !ebpf_object::is_stub(),
        "this build embeds the stub eBPF object (bpf-linker or nightly rust-src were missing): \
         run `cargo xtask setup` and rebuild"
    );
}

// ---------------------------------------------------------------------------------------------
// A node with two pods, and the agent running in it
// ---------------------------------------------------------------------------------------------

const CLIENT_IP: &str = "198.18.77.10";
const SERVER_IP: &str = "198.18.77.20";
const ALLOWED: u16 = 8080;
const DENIED: u16 = 9090;

/// Namespace, pods (with the topology's addresses), no policy: everything is allowed.
fn inventory_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo, labels: {{name: demo}}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: demo, labels: {{app: client}}}}\n\
         spec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {CLIENT_IP}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: demo, labels: {{app: server}}}}\n\
         spec: {{containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {SERVER_IP}}}\n"
    )
}

/// The server accepts only port ALLOWED (TCP and UDP): DENIED is denied.
fn deny_policy_yaml() -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: server-only-{ALLOWED}, namespace: demo}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  ingress:\n  - ports:\n\
         \x20   - {{protocol: TCP, port: {ALLOWED}}}\n    - {{protocol: UDP, port: {ALLOWED}}}\n"
    )
}

struct Node {
    topo: Option<Topology>,
    prefix: String,
    pin_base: PathBuf,
    scratch: PathBuf,
}

impl Node {
    fn build() -> Node {
        Node::build_with(Vec::new())
    }

    /// The two pods plus `extra` hosts (their host-side veths are `<id>x2`, ...).
    fn build_with(extra: Vec<HostSpec>) -> Node {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("enft{}{n}", pid % 10_000);
        let pin_base = PathBuf::from(format!("/sys/fs/bpf/enforcer-agent-test-{pid}-{n}"));
        let scratch = std::env::temp_dir().join(format!("enforcer-agent-test-{pid}-{n}"));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(scratch.join("policy")).unwrap();
        let mut specs = vec![
            HostSpec {
                kind: HostKind::Pod {
                    namespace: "demo".into(),
                    name: "client".into(),
                },
                addrs: vec![CLIENT_IP.parse().unwrap()],
            },
            HostSpec {
                kind: HostKind::Pod {
                    namespace: "demo".into(),
                    name: "server".into(),
                },
                addrs: vec![SERVER_IP.parse().unwrap()],
            },
        ];
        specs.extend(extra);
        let cleanup = Cleanup::new();
        cleanup.set_id(&id);
        let topo = Topology::build(&id, &specs, cleanup).unwrap_or_else(|e| panic!("{e}"));
        Node {
            prefix: format!("{id}p"),
            topo: Some(topo),
            pin_base,
            scratch,
        }
    }

    fn topo(&self) -> &Topology {
        self.topo.as_ref().unwrap()
    }

    fn policy_dir(&self) -> PathBuf {
        self.scratch.join("policy")
    }

    fn state_dir(&self) -> PathBuf {
        self.scratch.join("state")
    }

    fn netns(&self, pod: &str) -> String {
        self.topo().pod("demo", pod).unwrap().netns.clone()
    }

    fn veth_ifindexes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.topo().hosts.iter().map(|h| h.ifindex).collect();
        v.sort();
        v
    }

    /// Starts `enforcer run` in the node namespace; stderr goes to `agent-<n>.log`.
    fn start_agent(&self, n: usize) -> Agent {
        self.start_agent_with(n, &[])
    }

    /// [`Node::start_agent`] with extra environment variables.
    fn start_agent_with(&self, n: usize, envs: &[(&str, &str)]) -> Agent {
        let log_path = self.scratch.join(format!("agent-{n}.log"));
        let log = fs::File::create(&log_path).unwrap();
        let ns = netns::open_netns(&self.topo().node_netns).unwrap();
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_enforcer"));
        cmd.args(["run", "--policy-dir"])
            .arg(self.policy_dir())
            .arg("--pin-base")
            .arg(&self.pin_base)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--interface-prefix", &self.prefix])
            .args(["--metrics-addr", "127.0.0.1:0", "--log-level", "info"])
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: between fork and exec only async-signal-safe calls: setns(2) on a descriptor
        // opened before the fork (O_CLOEXEC, so it closes at exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start enforcer run");
        drop(ns);
        Agent {
            child: Some(child),
            log: log_path,
        }
    }

    /// Waits until `state.json` shows a sync by agent `pid` with both veths enforced and
    /// `pred` true.
    fn wait_state(
        &self,
        agent: &mut Agent,
        what: &str,
        pred: impl Fn(&PersistedState) -> bool,
    ) -> PersistedState {
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = agent.pid();
        loop {
            if let Ok(s) = state::read(&self.state_dir())
                && s.agent_pid == pid
                && s.last_sync.is_some()
                && pred(&s)
            {
                return s;
            }
            if let Some(status) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the agent exited ({status}) waiting for {what}:\n{}",
                    agent.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; state: {:?}\nlog:\n{}",
                state::read(&self.state_dir()).map(|s| (s.generation, s.endpoints.len())),
                agent.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn enforced(&self, s: &PersistedState) -> bool {
        let mut got: Vec<u32> = s.endpoints.iter().map(|e| e.ifindex).collect();
        got.sort();
        got == self.veth_ifindexes()
    }

    fn link_pins(&self) -> Vec<String> {
        let dir = self
            .pin_base
            .join(format!("v{}", enforcer_common::LAYOUT_VERSION))
            .join("links");
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = self.topo.take() {
            for p in t.remove() {
                eprintln!("cleanup: {p}");
            }
        }
        let _ = fs::remove_dir_all(&self.pin_base);
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.scratch);
        } else {
            eprintln!("agent logs kept in {}", self.scratch.display());
        }
    }
}

/// A running agent; SIGKILLed on drop.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("the agent ignored SIGTERM:\n{}", self.log_text());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a thread inside network namespace `ns`.
fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let handle = netns::open_netns(ns).unwrap();
    thread::spawn(move || {
        netns::enter(&handle).expect("setns");
        drop(handle);
        f()
    })
}

#[derive(Default)]
struct Counts {
    udp_sent: AtomicU64,
    /// Arrival times of UDP datagrams, by destination port.
    udp_arrivals: Mutex<BTreeMap<u16, Vec<Instant>>>,
    tcp_stream_bytes_sent: AtomicU64,
    tcp_stream_bytes_received: AtomicU64,
    tcp_stream_error: Mutex<Option<String>>,
    /// Connections accepted on the denied port.
    tcp_denied_accepted: AtomicU64,
    tcp_denied_attempts: AtomicU64,
}

impl Counts {
    fn arrivals(&self, port: u16) -> Vec<Instant> {
        self.udp_arrivals
            .lock()
            .unwrap()
            .get(&port)
            .cloned()
            .unwrap_or_default()
    }
}

/// Continuous traffic from the client pod to the server pod: UDP datagrams to ALLOWED and
/// DENIED every 2 ms, a long-lived TCP stream to ALLOWED (64 bytes every 5 ms), and a TCP
/// connection attempt to DENIED every 50 ms.
struct Traffic {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(node: &Node) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let server = node.netns("server");
        let client = node.netns("client");
        let server_ip: IpAddr = SERVER_IP.parse().unwrap();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();

        for port in [ALLOWED, DENIED] {
            let (stop, counts, ready) = (stop.clone(), counts.clone(), ready_tx.clone());
            threads.push(spawn_in(&server, move || {
                let s = UdpSocket::bind((server_ip, port)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                ready.send(()).unwrap();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv(&mut buf).is_ok() {
                        let now = Instant::now();
                        counts
                            .udp_arrivals
                            .lock()
                            .unwrap()
                            .entry(port)
                            .or_default()
                            .push(now);
                    }
                }
            }));
        }
        // TCP listeners: the stream on ALLOWED, connection attempts on DENIED.
        {
            let (stop, counts, ready) = (stop.clone(), counts.clone(), ready_tx.clone());
            threads.push(spawn_in(&server, move || {
                let l = TcpListener::bind((server_ip, ALLOWED)).unwrap();
                l.set_nonblocking(true).unwrap();
                ready.send(()).unwrap();
                let mut conns: Vec<TcpStream> = Vec::new();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((c, _)) = l.accept() {
                        c.set_nonblocking(true).unwrap();
                        conns.push(c);
                    }
                    for c in &mut conns {
                        while let Ok(n) = c.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            counts
                                .tcp_stream_bytes_received
                                .fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        {
            let (stop, counts, ready) = (stop.clone(), counts.clone(), ready_tx.clone());
            threads.push(spawn_in(&server, move || {
                let l = TcpListener::bind((server_ip, DENIED)).unwrap();
                l.set_nonblocking(true).unwrap();
                ready.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if l.accept().is_ok() {
                        counts.tcp_denied_accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        drop(ready_tx);
        for _ in 0..4 {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("listeners ready");
        }

        // Client: UDP to both ports.
        {
            let (stop, counts) = (stop.clone(), counts.clone());
            threads.push(spawn_in(&client, move || {
                let s = UdpSocket::bind((CLIENT_IP.parse::<IpAddr>().unwrap(), 0)).unwrap();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for port in [ALLOWED, DENIED] {
                        let _ = s.send_to(&seq.to_be_bytes(), (server_ip, port));
                    }
                    seq += 1;
                    counts.udp_sent.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        // Client: the long-lived TCP stream.
        {
            let (stop, counts) = (stop.clone(), counts.clone());
            threads.push(spawn_in(&client, move || {
                let addr = SocketAddr::new(server_ip, ALLOWED);
                let mut c = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(c) => c,
                    Err(e) => {
                        *counts.tcp_stream_error.lock().unwrap() = Some(format!("connect: {e}"));
                        return;
                    }
                };
                c.set_nodelay(true).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let chunk = [7u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = c.write_all(&chunk) {
                        *counts.tcp_stream_error.lock().unwrap() = Some(format!("write: {e}"));
                        return;
                    }
                    counts
                        .tcp_stream_bytes_sent
                        .fetch_add(64, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        // Client: connection attempts to the denied port.
        {
            let (stop, counts) = (stop.clone(), counts.clone());
            threads.push(spawn_in(&client, move || {
                let addr = SocketAddr::new(server_ip, DENIED);
                while !stop.load(Ordering::Relaxed) {
                    counts.tcp_denied_attempts.fetch_add(1, Ordering::Relaxed);
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(30));
                    thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        Traffic {
            stop,
            counts,
            threads,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Largest gap between consecutive arrivals within [from, to].
fn max_gap(arrivals: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut prev = from;
    let mut gap = Duration::ZERO;
    for &t in arrivals.iter().filter(|t| **t >= from && **t <= to) {
        gap = gap.max(t - prev);
        prev = t;
    }
    gap.max(to.saturating_duration_since(prev))
}

// ---------------------------------------------------------------------------------------------
// Privileged tests
// ---------------------------------------------------------------------------------------------

/// A policy file written under traffic is enforced within ~100 ms; an invalid file is logged
/// (file, document, field), counted, and changes nothing; removing the policy opens the port
/// again.
#[test]
fn privileged_directory_change_applied_under_traffic() {
    require_privileges();
    let _g = serial();
    let node = Node::build();
    fs::write(
        node.policy_dir().join("00-inventory.yaml"),
        inventory_yaml(),
    )
    .unwrap();
    let mut agent = node.start_agent(1);
    let first = node.wait_state(&mut agent, "the first sync", |s| node.enforced(s));

    let mut traffic = Traffic::start(&node);
    thread::sleep(Duration::from_millis(400));
    let c = traffic.counts.clone();
    assert!(
        !c.arrivals(DENIED).is_empty() && !c.arrivals(ALLOWED).is_empty(),
        "without policy both ports receive"
    );

    // 1. The deny policy.
    let written = Instant::now();
    fs::write(node.policy_dir().join("10-policy.yaml"), deny_policy_yaml()).unwrap();
    let after = node.wait_state(&mut agent, "the policy", |s| {
        s.generation > first.generation
    });
    let applied_seen = Instant::now();
    thread::sleep(Duration::from_millis(600));
    let denied = c.arrivals(DENIED);
    let last_denied = *denied.last().unwrap();
    let latency = last_denied.saturating_duration_since(written);
    eprintln!(
        "deny applied: last datagram to the denied port {latency:?} after the write; \
         state.json showed generation {} {:?} after the write",
        after.generation,
        applied_seen - written
    );
    assert!(
        latency < Duration::from_millis(250),
        "the denied port kept receiving {latency:?} after the write (budget: 100 ms + slack)"
    );
    assert!(
        c.arrivals(ALLOWED).iter().any(|t| *t > applied_seen),
        "the allowed port keeps receiving"
    );
    let sync = after.last_sync.as_ref().unwrap();
    assert!(sync.map_changes > 0, "{sync:?}");
    let rule = after
        .rules
        .iter()
        .find(|r| r.policy.as_deref() == Some(&format!("demo/server-only-{ALLOWED}")[..]))
        .expect("the policy's rule is in the persisted rule table");
    assert_eq!(rule.action.as_deref(), Some("Allow"));

    // 2. An invalid file: logged with file, document and field, counted, nothing changes.
    let denied_before = c.arrivals(DENIED).len();
    fs::write(
        node.policy_dir().join("20-bad.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\n\
         spec:\n  selector: all()\n  ingress:\n  - action: Allow\n    destination: {ports: [99999]}\n",
    )
    .unwrap();
    let invalid = node.wait_state(&mut agent, "the invalid input", |s| {
        s.counters.invalid_inputs_total == 1
    });
    assert_eq!(
        invalid.generation, after.generation,
        "an invalid input changes nothing"
    );
    let errors = invalid.last_input_errors.join("\n");
    assert!(
        errors.contains("20-bad.yaml")
            && errors.contains("document 1")
            && errors.contains("ports[0]"),
        "{errors}"
    );
    thread::sleep(Duration::from_millis(400));
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("invalid input")
            && l.contains("20-bad.yaml")
            && l.contains("ports[0]")),
        "the error is logged with file and field:\n{log}"
    );
    assert_eq!(c.arrivals(DENIED).len(), denied_before, "still denied");
    let t = Instant::now() - Duration::from_millis(300);
    assert!(c.arrivals(ALLOWED).iter().any(|a| *a > t), "still allowed");

    // 3. Fix the input and remove the policy: the port opens again.
    fs::remove_file(node.policy_dir().join("20-bad.yaml")).unwrap();
    let removed = Instant::now();
    fs::remove_file(node.policy_dir().join("10-policy.yaml")).unwrap();
    let reopened = node.wait_state(&mut agent, "the policy removal", |s| {
        s.generation > after.generation && s.last_input_errors.is_empty()
    });
    thread::sleep(Duration::from_millis(300));
    let first_again = c
        .arrivals(DENIED)
        .into_iter()
        .find(|t| *t > removed)
        .expect("the port receives again once the policy is removed");
    eprintln!(
        "policy removed: the port receives again {:?} after the removal (generation {})",
        first_again - removed,
        reopened.generation
    );
    assert!(first_again - removed < Duration::from_millis(250));

    traffic.stop();
    assert_eq!(
        *c.tcp_stream_error.lock().unwrap(),
        None,
        "the TCP stream to the allowed port never broke"
    );
    assert!(c.tcp_stream_bytes_received.load(Ordering::Relaxed) > 0);
    assert_eq!(agent.terminate().code(), Some(0), "{}", agent.log_text());
}

/// SIGKILL and restart under traffic: not one packet reaches the denied port during the whole
/// run, the allowed flows keep flowing, and the restarted agent adopts the pinned programs
/// (same ids), compares with the tables in force and writes nothing (same generation).
#[test]
fn privileged_sigkill_and_restart_under_traffic() {
    require_privileges();
    let _g = serial();
    let node = Node::build();
    fs::write(
        node.policy_dir().join("00-inventory.yaml"),
        inventory_yaml(),
    )
    .unwrap();
    fs::write(node.policy_dir().join("10-policy.yaml"), deny_policy_yaml()).unwrap();
    let mut agent = node.start_agent(1);
    let first = node.wait_state(&mut agent, "the first sync", |s| node.enforced(s));
    assert_eq!(first.datapath_origin, "loaded");
    let pins = node.link_pins();
    assert_eq!(pins.len(), 4, "two hooks on each veth: {pins:?}");

    let started = Instant::now();
    let mut traffic = Traffic::start(&node);
    let c = traffic.counts.clone();
    thread::sleep(Duration::from_millis(400));

    // SIGKILL: enforcement continues from the pins.
    agent.kill();
    let killed = Instant::now();
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        node.link_pins(),
        pins,
        "the links stay pinned without the agent"
    );

    let mut agent = node.start_agent(2);
    let second = node.wait_state(&mut agent, "the restarted agent's first sync", |s| {
        node.enforced(s)
    });
    let restarted = Instant::now();
    assert_eq!(
        second.datapath_origin, "adopted",
        "the restarted agent adopts the pins"
    );
    assert_eq!(
        second.program_ids, first.program_ids,
        "the same programs keep running"
    );
    assert_eq!(
        second.generation, first.generation,
        "nothing changed, so nothing was written and no slot flipped"
    );
    assert_eq!(second.last_sync.as_ref().map(|s| s.map_changes), Some(0));
    assert!(agent.log_text().contains("Adopted"), "{}", agent.log_text());

    // A change after the restart is applied as usual, as a difference against what is in force.
    thread::sleep(Duration::from_millis(300));
    fs::write(
        node.policy_dir().join("30-more.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n\
         metadata: {name: also-7070, namespace: demo}\n\
         spec:\n  selector: app == 'server'\n  ingress:\n  - action: Allow\n    protocol: UDP\n\
         \x20   destination: {ports: [7070]}\n",
    )
    .unwrap();
    let third = node.wait_state(&mut agent, "a change after the restart", |s| {
        s.generation > second.generation
    });
    let sync = third.last_sync.clone().unwrap();
    eprintln!(
        "change after restart: {} map entries changed:\n{}",
        sync.map_changes, sync.map_diff
    );
    assert!(sync.map_changes > 0);
    assert_eq!(third.program_ids, first.program_ids);

    // Graceful stop: still enforcing afterwards.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.terminate().code(), Some(0), "{}", agent.log_text());
    thread::sleep(Duration::from_millis(400));
    assert_eq!(node.link_pins(), pins, "SIGTERM leaves the links attached");
    let ended = Instant::now();
    traffic.stop();

    let sent = c.udp_sent.load(Ordering::Relaxed);
    let allowed = c.arrivals(ALLOWED);
    let denied = c.arrivals(DENIED);
    eprintln!(
        "sent {sent} datagrams to each port over {:?}; received {} on the allowed port, {} on \
         the denied port; TCP stream {} of {} bytes; {} of {} connection attempts to the denied \
         port accepted; largest gap on the allowed port {:?} (agent down {:?})",
        ended - started,
        allowed.len(),
        denied.len(),
        c.tcp_stream_bytes_received.load(Ordering::Relaxed),
        c.tcp_stream_bytes_sent.load(Ordering::Relaxed),
        c.tcp_denied_accepted.load(Ordering::Relaxed),
        c.tcp_denied_attempts.load(Ordering::Relaxed),
        max_gap(&allowed, started + Duration::from_millis(50), ended),
        restarted - killed,
    );
    assert_eq!(denied.len(), 0, "not one datagram reached the denied port");
    assert_eq!(
        c.tcp_denied_accepted.load(Ordering::Relaxed),
        0,
        "no connection to the denied port"
    );
    assert!(c.tcp_denied_attempts.load(Ordering::Relaxed) > 10);
    assert!(
        allowed.len() as u64 * 100 >= sent * 95,
        "the allowed flow kept working: {} of {sent}",
        allowed.len()
    );
    assert!(
        max_gap(&allowed, started + Duration::from_millis(50), ended) < Duration::from_millis(200),
        "no interruption of the allowed flow"
    );
    assert_eq!(
        *c.tcp_stream_error.lock().unwrap(),
        None,
        "the TCP stream never broke"
    );
    let (tx, rx) = (
        c.tcp_stream_bytes_sent.load(Ordering::Relaxed),
        c.tcp_stream_bytes_received.load(Ordering::Relaxed),
    );
    assert!(
        rx > 0 && rx + 64 * 50 >= tx,
        "TCP stream: {rx} of {tx} bytes arrived"
    );

    // The agents' flow log (default `<state-dir>/flows.jsonl`) names the denied flows.
    let flows = fs::read_to_string(node.state_dir().join("flows.jsonl")).unwrap_or_default();
    let denied_flows: Vec<serde_json::Value> = flows
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| {
            v["verdict"] == "denied" && v["dst_port"] == u64::from(DENIED) && v["dst"] == SERVER_IP
        })
        .collect();
    assert!(
        !denied_flows.is_empty(),
        "denied flows to port {DENIED} are logged:\n{flows}"
    );
    assert_eq!(
        denied_flows[0]["direction"], "ingress",
        "{}",
        denied_flows[0]
    );
}

/// A HostEndpoint is attached with the programs swapped (traffic into the host at tc ingress
/// is the host endpoint's ingress): a policy allowing only UDP 7001 into the host admits 7001
/// and drops 7000, and the failsafe TCP 22 stays open although no policy allows it.
#[test]
fn privileged_host_endpoint_is_attached_with_host_directions() {
    require_privileges();
    let _g = serial();
    let outside: IpAddr = "198.18.78.1".parse().unwrap();
    let node = Node::build_with(vec![HostSpec {
        kind: HostKind::External,
        addrs: vec![outside],
    }]);
    let uplink = node.topo().hosts[2].clone();
    let host_ip: IpAddr = enforcer_user::lab::topology::GATEWAY_V4.parse().unwrap();
    fs::write(
        node.policy_dir().join("00-inventory.yaml"),
        inventory_yaml(),
    )
    .unwrap();
    fs::write(
        node.policy_dir().join("10-host.yaml"),
        format!(
            "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\n\
             metadata: {{name: node-1-uplink, labels: {{role: uplink}}}}\n\
             spec: {{node: node-1, interfaceName: {}}}\n---\n\
             apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n\
             metadata: {{name: uplink-in}}\n\
             spec:\n  selector: role == 'uplink'\n  types: [Ingress]\n  ingress:\n\
             \x20 - action: Allow\n    protocol: UDP\n    destination: {{ports: [7001]}}\n",
            uplink.veth
        ),
    )
    .unwrap();
    let mut agent = node.start_agent_with(1, &[("NODE_NAME", "node-1")]);
    let s = node.wait_state(&mut agent, "the first sync", |s| node.enforced(s));
    let hep = s
        .endpoints
        .iter()
        .find(|e| e.ifindex == uplink.ifindex)
        .unwrap();
    assert_eq!(
        hep.id,
        state::EndpointRef::Host {
            name: "node-1-uplink".into()
        }
    );
    let pins = node.link_pins();
    for hook in ["ingress", "egress"] {
        let name = format!("{}-host-{hook}", uplink.ifindex);
        assert!(pins.contains(&name), "{name} in {pins:?}");
    }

    // The host listens on its own address; the outside host sends to it through the uplink.
    let counts: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for port in [7000u16, 7001] {
        let (counts, stop, ready) = (counts.clone(), stop.clone(), ready_tx.clone());
        threads.push(spawn_in(&node.topo().node_netns, move || {
            let s = UdpSocket::bind((host_ip, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            ready.send(()).unwrap();
            let mut buf = [0u8; 16];
            while !stop.load(Ordering::Relaxed) {
                if s.recv(&mut buf).is_ok() {
                    *counts.lock().unwrap().entry(port).or_default() += 1;
                }
            }
        }));
    }
    let ssh = spawn_in(&node.topo().node_netns, move || {
        TcpListener::bind((host_ip, 22)).unwrap()
    })
    .join()
    .unwrap();
    let other = spawn_in(&node.topo().node_netns, move || {
        TcpListener::bind((host_ip, 2222)).unwrap()
    })
    .join()
    .unwrap();
    ready_rx.recv().unwrap();
    ready_rx.recv().unwrap();
    let (ssh_ok, other_ok) = spawn_in(&uplink.netns, move || {
        let s = UdpSocket::bind((outside, 0)).unwrap();
        for i in 0..50u32 {
            for port in [7000u16, 7001] {
                let _ = s.send_to(&i.to_be_bytes(), (host_ip, port));
            }
            thread::sleep(Duration::from_millis(2));
        }
        let connect = |port| {
            TcpStream::connect_timeout(&SocketAddr::new(host_ip, port), Duration::from_millis(300))
                .is_ok()
        };
        (connect(22), connect(2222))
    })
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop((ssh, other));
    let counts = counts.lock().unwrap().clone();
    eprintln!("into the host: {counts:?}; failsafe tcp:22 {ssh_ok}, tcp:2222 {other_ok}");
    assert_eq!(
        counts.get(&7001).copied().unwrap_or(0),
        50,
        "the policy admits UDP 7001"
    );
    assert_eq!(
        counts.get(&7000).copied().unwrap_or(0),
        0,
        "the host endpoint's default deny"
    );
    assert!(
        ssh_ok,
        "failsafe TCP 22 stays open into the host (and its replies leave)"
    );
    assert!(!other_ok, "TCP 2222 is denied");
    assert_eq!(agent.terminate().code(), Some(0));
}

/// Reloading never opens traffic: `--force-fresh` loads new programs but moves the pinned links
/// to them only after the new maps are programmed, and a pin directory of another layout
/// version (an upgrade: simulated by renaming the current one to `v0`) keeps enforcing until
/// the new layout's links are attached and programmed, then is removed.
#[test]
fn privileged_force_fresh_and_layout_upgrade_never_open_traffic() {
    require_privileges();
    let _g = serial();
    let node = Node::build();
    fs::write(
        node.policy_dir().join("00-inventory.yaml"),
        inventory_yaml(),
    )
    .unwrap();
    fs::write(node.policy_dir().join("10-policy.yaml"), deny_policy_yaml()).unwrap();
    let mut agent = node.start_agent(1);
    let first = node.wait_state(&mut agent, "the first sync", |s| node.enforced(s));
    let started = Instant::now();
    let mut traffic = Traffic::start(&node);
    let c = traffic.counts.clone();
    thread::sleep(Duration::from_millis(300));

    // 1. --force-fresh: new programs, the same links moved to them after programming.
    agent.kill();
    let pins = node.link_pins();
    let mut agent = node.start_agent_with(2, &[("ENFORCER_FORCE_FRESH", "true")]);
    let fresh = node.wait_state(&mut agent, "the fresh load's first sync", |s| {
        node.enforced(s)
    });
    assert_eq!(fresh.datapath_origin, "loaded");
    assert_ne!(fresh.program_ids, first.program_ids, "new programs");
    assert_eq!(node.link_pins(), pins, "the same pinned links, moved");
    assert!(
        agent.log_text().contains("moved the pinned links"),
        "{}",
        agent.log_text()
    );
    thread::sleep(Duration::from_millis(300));

    // 2. A layout upgrade: the running layout becomes "another version".
    agent.kill();
    let layout = node
        .pin_base
        .join(format!("v{}", enforcer_common::LAYOUT_VERSION));
    let old = node.pin_base.join("v0");
    fs::rename(&layout, &old).unwrap();
    thread::sleep(Duration::from_millis(200));
    let mut agent = node.start_agent(3);
    let upgraded = node.wait_state(&mut agent, "the new layout's first sync", |s| {
        node.enforced(s)
    });
    assert_eq!(upgraded.datapath_origin, "loaded");
    assert_ne!(upgraded.program_ids, fresh.program_ids);
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.exists() {
        assert!(
            Instant::now() < deadline,
            "the old layout is removed after the first sync"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(node.link_pins(), pins, "the new layout's own links");
    thread::sleep(Duration::from_millis(300));
    traffic.stop();

    let sent = c.udp_sent.load(Ordering::Relaxed);
    let allowed = c.arrivals(ALLOWED);
    let gap = max_gap(
        &allowed,
        started + Duration::from_millis(50),
        Instant::now(),
    );
    eprintln!(
        "force-fresh and upgrade: sent {sent}, allowed port received {}, denied port {}; \
         largest gap {gap:?}",
        allowed.len(),
        c.arrivals(DENIED).len()
    );
    assert_eq!(
        c.arrivals(DENIED).len(),
        0,
        "not one datagram reached the denied port"
    );
    assert_eq!(c.tcp_denied_accepted.load(Ordering::Relaxed), 0);
    assert!(
        allowed.len() as u64 * 100 >= sent * 95,
        "{} of {sent}",
        allowed.len()
    );
    assert_eq!(
        *c.tcp_stream_error.lock().unwrap(),
        None,
        "the TCP stream never broke"
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Configuration (no privileges)
// ---------------------------------------------------------------------------------------------

fn env_layer(pairs: &[(&str, &str)]) -> ConfigLayer {
    let vars = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    ConfigLayer::from_env(vars)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn file_layer(text: &str) -> ConfigLayer {
    ConfigLayer::from_yaml(text, Path::new("agent.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn config_defaults() {
    let flags = ConfigLayer {
        policy_dir: Some("/etc/enforcer/policy".into()),
        ..ConfigLayer::default()
    };
    let c = AgentConfig::resolve(flags, ConfigLayer::default(), ConfigLayer::default()).unwrap();
    assert_eq!(
        c.source,
        SourceConfig::Directory("/etc/enforcer/policy".into())
    );
    assert_eq!(c.interface_prefix, "cali");
    assert_eq!(c.pin_base, PathBuf::from("/sys/fs/bpf/enforcer"));
    assert_eq!(c.state_dir, PathBuf::from("/run/enforcer"));
    assert_eq!(c.metrics_addr, Some("127.0.0.1:9466".parse().unwrap()));
    assert_eq!(c.flow_log, Some(PathBuf::from("/run/enforcer/flows.jsonl")));
    assert!(!c.fail_closed && !c.force_fresh && !c.detach_on_exit);
    assert_eq!(c.failsafe, Failsafe::calico_defaults());
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.node_name, None);
}

#[test]
fn config_precedence_is_flags_then_env_then_file() {
    let file = file_layer(
        "policy-dir: /from/file\ninterface-prefix: file\nnode-name: file-node\n\
         state-dir: /file/state\nfail-closed: true\nlog-format: json\n\
         failsafe-inbound: [tcp:22, udp:68]\nmetrics-addr: 127.0.0.1:1000\n",
    );
    let env = env_layer(&[
        ("ENFORCER_INTERFACE_PREFIX", "env"),
        ("ENFORCER_STATE_DIR", "/env/state"),
        ("NODE_NAME", "env-node"),
        ("ENFORCER_FAIL_CLOSED", "false"),
        ("ENFORCER_METRICS_ADDR", "off"),
        ("UNRELATED", "x"),
    ]);
    let flags = ConfigLayer {
        interface_prefix: Some("flag".into()),
        ..ConfigLayer::default()
    };
    let c = AgentConfig::resolve(flags, env, file).unwrap();
    assert_eq!(c.interface_prefix, "flag", "flags win");
    assert_eq!(c.state_dir, PathBuf::from("/env/state"), "env over file");
    assert_eq!(
        c.node_name.as_deref(),
        Some("env-node"),
        "NODE_NAME over the file"
    );
    assert!(!c.fail_closed, "env false over file true");
    assert_eq!(c.metrics_addr, None, "`off` disables the listener");
    assert_eq!(
        c.source,
        SourceConfig::Directory("/from/file".into()),
        "file over defaults"
    );
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(
        c.failsafe.inbound,
        vec![(Protocol::TCP, 22), (Protocol::UDP, 68)]
    );
    assert_eq!(c.failsafe.outbound, Failsafe::calico_defaults().outbound);
    assert_eq!(
        c.flow_log,
        Some(PathBuf::from("/env/state/flows.jsonl")),
        "follows the state dir"
    );
}

#[test]
fn config_names_are_one_set() {
    // Every setting of the file is an environment variable of the same name and vice versa.
    assert_eq!(env_name("interface-prefix"), "ENFORCER_INTERFACE_PREFIX");
    let file = file_layer("fail-closed: true\nforce-fresh: true\ndetach-on-exit: true\n");
    let env = env_layer(&[
        ("ENFORCER_FAIL_CLOSED", "true"),
        ("ENFORCER_FORCE_FRESH", "yes"),
        ("ENFORCER_DETACH_ON_EXIT", "1"),
    ]);
    assert_eq!(
        (file.fail_closed, file.force_fresh, file.detach_on_exit),
        (env.fail_closed, env.force_fresh, env.detach_on_exit)
    );
}

#[test]
fn config_errors_name_the_source_and_setting() {
    let e =
        ConfigLayer::from_yaml("policy-dri: /x\n", Path::new("/etc/enforcer.yaml")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/etc/enforcer.yaml") && msg.contains("policy-dri"),
        "{msg}"
    );
    assert!(msg.contains("policy-dir"), "lists the valid names: {msg}");

    let e = ConfigLayer::from_env([("ENFORCER_FAIL_CLOSED".to_owned(), "maybe".to_owned())])
        .unwrap_err();
    assert!(e.to_string().contains("ENFORCER_FAIL_CLOSED"), "{e}");
    let e = ConfigLayer::from_env([("ENFORCER_FAILSAFE_INBOUND".to_owned(), "tcp:x".to_owned())])
        .unwrap_err();
    assert!(e.to_string().contains("ENFORCER_FAILSAFE_INBOUND"), "{e}");

    let (_, warnings) =
        ConfigLayer::from_env([("ENFORCER_POLICY_DRI".to_owned(), "/x".to_owned())]).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("ENFORCER_POLICY_DRI")),
        "{warnings:?}"
    );

    let none = AgentConfig::resolve(
        ConfigLayer::default(),
        ConfigLayer::default(),
        ConfigLayer::default(),
    );
    assert!(none.unwrap_err().to_string().contains("--policy-dir"));
    let both = ConfigLayer {
        policy_dir: Some("/x".into()),
        kubernetes: Some(true),
        ..ConfigLayer::default()
    };
    assert!(AgentConfig::resolve(both, ConfigLayer::default(), ConfigLayer::default()).is_err());
    let bad_addr = ConfigLayer {
        policy_dir: Some("/x".into()),
        metrics_addr: Some("localhost".into()),
        ..ConfigLayer::default()
    };
    let e =
        AgentConfig::resolve(bad_addr, ConfigLayer::default(), ConfigLayer::default()).unwrap_err();
    assert!(e.to_string().contains("metrics-addr"), "{e}");
    assert!("udp:68,icmp:3".parse::<PortList>().is_err());
}

#[test]
fn config_kubernetes_source() {
    let env = env_layer(&[("ENFORCER_KUBERNETES", "true"), ("NODE_NAME", "node-1")]);
    let c = AgentConfig::resolve(ConfigLayer::default(), env, ConfigLayer::default()).unwrap();
    assert_eq!(c.source, SourceConfig::Kubernetes { kubeconfig: None });
    assert_eq!(c.node_name.as_deref(), Some("node-1"));
}

// ---------------------------------------------------------------------------------------------
// Endpoint discovery (no privileges)
// ---------------------------------------------------------------------------------------------

fn net(links: &[(u32, &str)], routes: &[(&str, u32)]) -> NetState {
    NetState {
        links: links.iter().map(|(i, n)| (*i, (*n).to_owned())).collect(),
        routes: routes
            .iter()
            .map(|(d, oif)| Route {
                dst: d.parse().unwrap(),
                oif: *oif,
            })
            .collect(),
    }
}

fn inventory(yaml: &str) -> enforcer_user::model::Inventory {
    sources::load_str(yaml, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn pod(name: &str, ip: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns}}\n\
         spec: {{containers: [{{name: c, image: x}}]{extra}}}\nstatus: {{podIP: {ip}}}\n---\n"
    )
}

#[test]
fn discovery_finds_pods_by_route_through_prefixed_interfaces() {
    let inv = inventory(
        &[
            pod("a", "10.0.0.1", ""),
            pod("b", "10.0.0.2", ", nodeName: node-1"),
            pod("remote", "10.0.1.5", ", nodeName: node-2"),
            pod("hostnet", "192.168.1.10", ", hostNetwork: true"),
            pod("via-default", "10.9.9.9", ""),
        ]
        .concat(),
    );
    let state = net(
        &[
            (1, "lo"),
            (2, "eth0"),
            (7, "cali123"),
            (8, "cali456"),
            (9, "cali789"),
        ],
        &[
            ("0.0.0.0/0", 2),
            ("192.168.1.0/24", 2),
            ("10.0.0.1/32", 7),
            ("10.0.0.2/32", 8),
            // A remote pod's block routed through a (misnamed) local interface: excluded by
            // node name, not by route.
            ("10.0.1.0/26", 9),
        ],
    );
    let sel = Selector {
        node_name: Some("node-1".into()),
        interface_prefix: "cali".into(),
    };
    let d = endpoints::discover(&inv, &state, &sel);
    let got: Vec<(u32, String, Role)> = d
        .interfaces
        .values()
        .map(|l| (l.ifindex, l.id.to_string(), l.role))
        .collect();
    assert_eq!(
        got,
        vec![
            (7, "pod ns/a".to_owned(), Role::Workload),
            (8, "pod ns/b".to_owned(), Role::Workload),
        ]
    );
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    // Without a node name, pods are taken by route alone.
    let d = endpoints::discover(
        &inv,
        &state,
        &Selector {
            node_name: None,
            ..sel.clone()
        },
    );
    assert_eq!(d.interfaces.len(), 3);
    assert_eq!(
        d.ifindexes(&EndpointId::Pod {
            namespace: "ns".into(),
            name: "remote".into()
        }),
        vec![9]
    );
    // Another prefix: nothing is a workload interface.
    let d = endpoints::discover(
        &inv,
        &state,
        &Selector {
            interface_prefix: "enf".into(),
            ..sel
        },
    );
    assert!(d.interfaces.is_empty());
}

#[test]
fn discovery_uses_the_longest_prefix_and_reports_conflicts() {
    let inv = inventory(&[pod("a", "10.0.0.1", ""), pod("b", "10.0.0.1", "")].concat());
    // Two pods claiming one interface: neither is enforced, and it is reported.
    let state = net(
        &[(7, "cali1"), (8, "cali2")],
        &[("10.0.0.0/24", 8), ("10.0.0.1/32", 7)],
    );
    let sel = Selector {
        node_name: None,
        interface_prefix: "cali".into(),
    };
    assert_eq!(
        state.route("10.0.0.1".parse().unwrap()).map(|r| r.oif),
        Some(7)
    );
    assert_eq!(
        state.route("10.0.0.9".parse().unwrap()).map(|r| r.oif),
        Some(8)
    );
    let d = endpoints::discover(&inv, &state, &sel);
    assert!(d.interfaces.is_empty());
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("cali1") && p.contains("claimed")),
        "{:?}",
        d.problems
    );
}

#[test]
fn discovery_of_host_endpoints_by_interface_name() {
    let inv = inventory(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: n1-eth0}\n\
         spec: {node: node-1, interfaceName: eth0}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: n2-eth0}\n\
         spec: {node: node-2, interfaceName: eth0}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: n1-all}\n\
         spec: {node: node-1, interfaceName: '*'}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: n1-missing}\n\
         spec: {node: node-1, interfaceName: eth9}\n",
    );
    let state = net(&[(1, "lo"), (2, "eth0")], &[]);
    let sel = Selector {
        node_name: Some("node-1".into()),
        interface_prefix: "cali".into(),
    };
    let d = endpoints::discover(&inv, &state, &sel);
    let got: Vec<(u32, String, Role)> = d
        .interfaces
        .values()
        .map(|l| (l.ifindex, l.id.to_string(), l.role))
        .collect();
    assert_eq!(
        got,
        vec![(2, "host endpoint n1-eth0".to_owned(), Role::Host)]
    );
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("n1-all") && p.contains("not supported"))
    );
    assert!(d.pending.iter().any(|p| p.contains("eth9")));
}

#[test]
fn netlink_messages_parse_into_routes_and_links() {
    use rtnetlink::packet_route::{
        AddressFamily,
        link::{LinkAttribute, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
    };
    let route = |family, dst: Option<RouteAddress>, len, table: u8, kind, oif: Option<u32>| {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.destination_prefix_length = len;
        m.header.table = table;
        m.header.kind = kind;
        if let Some(d) = dst {
            m.attributes.push(RouteAttribute::Destination(d));
        }
        if let Some(o) = oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        m
    };
    let main = RouteHeader::RT_TABLE_MAIN;
    let pod = route(
        AddressFamily::Inet,
        Some(RouteAddress::Inet("10.0.0.1".parse().unwrap())),
        32,
        main,
        RouteType::Unicast,
        Some(7),
    );
    assert_eq!(
        endpoints::parse_route(&pod),
        Some(Route {
            dst: "10.0.0.1/32".parse().unwrap(),
            oif: 7
        })
    );
    let default6 = route(
        AddressFamily::Inet6,
        None,
        0,
        main,
        RouteType::Unicast,
        Some(2),
    );
    assert_eq!(
        endpoints::parse_route(&default6).map(|r| r.dst),
        Some("::/0".parse().unwrap())
    );
    // Local table, non-unicast and multipath (no oif) routes are not workload routes.
    let local = route(
        AddressFamily::Inet,
        Some(RouteAddress::Inet("169.254.1.1".parse().unwrap())),
        32,
        255,
        RouteType::Local,
        Some(1),
    );
    assert_eq!(endpoints::parse_route(&local), None);
    let blackhole = route(
        AddressFamily::Inet,
        None,
        0,
        main,
        RouteType::BlackHole,
        None,
    );
    assert_eq!(endpoints::parse_route(&blackhole), None);
    // A table id above 255 travels as an attribute.
    let mut other_table = pod.clone();
    other_table.attributes.push(RouteAttribute::Table(1000));
    assert_eq!(endpoints::parse_route(&other_table), None);

    let mut link = LinkMessage::default();
    link.header.index = 7;
    link.attributes
        .push(LinkAttribute::IfName("cali123".into()));
    assert_eq!(
        endpoints::parse_link(&link),
        Some((7, "cali123".to_owned()))
    );
}

/// The directory source sends the initial load, then a snapshot or the errors after each
/// change, and nothing when a change leaves the inventory as it was.
#[test]
fn directory_source_sends_snapshots_and_errors() {
    use enforcer_user::sources::feed::Update;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("enforcer-dirsource-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("a.yaml"), pod("a", "10.0.0.1", "")).unwrap();
    rt.block_on(async {
        let (task, mut rx) = sources::directory::watch(&dir);
        async fn next(rx: &mut sources::feed::UpdateReceiver) -> Option<Update> {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .ok()
                .flatten()
        }
        match next(&mut rx).await {
            Some(Update::Snapshot(inv)) => assert_eq!(inv.pods.len(), 1),
            other => panic!("{other:?}"),
        }
        let t = Instant::now();
        fs::write(dir.join("b.yaml"), pod("b", "10.0.0.2", "")).unwrap();
        match next(&mut rx).await {
            Some(Update::Snapshot(inv)) => assert_eq!(inv.pods.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        fs::write(
            dir.join("c.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: [x]}\n",
        )
        .unwrap();
        match next(&mut rx).await {
            Some(Update::Invalid(e)) => assert!(e.to_string().contains("c.yaml"), "{e}"),
            other => panic!("{other:?}"),
        }
        fs::remove_file(dir.join("c.yaml")).unwrap();
        match next(&mut rx).await {
            Some(Update::Snapshot(inv)) => assert_eq!(inv.pods.len(), 2),
            other => panic!("{other:?}"),
        }
        // Touching a file without changing the inventory sends nothing.
        fs::write(dir.join("b.yaml"), pod("b", "10.0.0.2", "")).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(quiet.is_err(), "{quiet:?}");
        task.abort();
    });
    let _ = fs::remove_dir_all(&dir);
}
