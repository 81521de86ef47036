//! `enforcer lab` (issue 3 §3): namespaces, traffic and whole lab runs with the real datapath.
//!
//! Every test here is `privileged_`: it needs root (network namespaces, eBPF) and FAILS, never
//! skips, without it. The tests share kernel state (namespaces, bpffs), so they run one at a
//! time behind [`serial`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use enforcer_user::{
    evaluator::Verdict,
    lab::{
        self, LabOptions, LabReport, Observed, Status,
        netns::{self, Cleanup},
        topology::{HostKind, HostSpec, Topology},
        traffic::{self, Flow, ListenSpec, Listeners},
    },
    model::Protocol,
    probes::load_probes,
    sources,
};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged lab test needs root (network namespaces, eBPF); effective uid is {euid}. \
         Run `cargo xtask test` as root."
    );
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

/// This process's lab namespaces (`enf<pid % 10000><2 digits>-...`). Other processes on the
/// machine (other test suites) create and delete namespaces of their own at any time, so
/// before/after comparisons look at ours only.
fn our_netns() -> Vec<String> {
    let prefix = format!("enf{}", std::process::id() % 10_000);
    netns::list_netns()
        .expect("list namespaces")
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&prefix).is_some_and(|rest| {
                let b = rest.as_bytes();
                b.len() > 2 && b[0].is_ascii_digit() && b[1].is_ascii_digit() && b[2] == b'-'
            })
        })
        .collect()
}

fn lab_netns(id_prefix: &str) -> Vec<String> {
    netns::list_netns()
        .expect("list namespaces")
        .into_iter()
        .filter(|n| n.starts_with(id_prefix))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn links_named(prefix: &str) -> Vec<String> {
    // Host-side veths live in lab namespaces only; nothing of a lab may show up in the root
    // namespace at any time.
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(prefix))
        .map(str::to_string)
        .collect()
}

/// Two pods and an outside host: namespaces appear, then go without a trace.
#[test]
fn privileged_topology_is_created_and_removed_without_leftovers() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let id = netns::new_lab_id();
    let specs = vec![
        HostSpec {
            kind: HostKind::Pod {
                namespace: "a".into(),
                name: "one".into(),
            },
            addrs: vec![ip("198.18.200.1"), ip("fd00:198:18:200::1")],
        },
        HostSpec {
            kind: HostKind::Pod {
                namespace: "a".into(),
                name: "two".into(),
            },
            addrs: vec![ip("198.18.200.2")],
        },
        HostSpec {
            kind: HostKind::External,
            addrs: vec![ip("fd00:198:18:201::9")],
        },
    ];
    let topo = Topology::build(&id, &specs, Cleanup::new()).expect("build");
    let created = lab_netns(&format!("{id}-"));
    assert_eq!(created.len(), 4, "node + 3 hosts: {created:?}");
    assert!(topo.hosts.iter().all(|h| h.ifindex > 0));
    assert!(links_named(&id).is_empty(), "nothing in the root namespace");
    // Each host has its addresses and the gateway routes.
    let out = netns::ip(&[
        "-n",
        &topo.hosts[0].netns,
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ])
    .expect("ip addr");
    assert!(
        out.contains("198.18.200.1/32") && out.contains("fd00:198:18:200::1/128"),
        "{out}"
    );
    let routes = netns::ip(&["-n", &topo.node_netns, "route", "show"]).expect("routes");
    assert!(routes.contains("198.18.200.2 dev"), "{routes}");

    let problems = topo.remove();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(lab_netns(&format!("{id}-")).is_empty());
    assert_eq!(our_netns(), before);
}

/// A failure half-way through (here: a duplicate address) leaves nothing behind.
#[test]
fn privileged_topology_failure_cleans_up() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let id = netns::new_lab_id();
    let specs = vec![
        HostSpec {
            kind: HostKind::External,
            addrs: vec![ip("198.18.202.1")],
        },
        HostSpec {
            kind: HostKind::External,
            addrs: vec![ip("198.18.202.1")],
        },
    ];
    let cleanup = Cleanup::new();
    let err = Topology::build(&id, &specs, cleanup.clone()).expect_err("duplicate route");
    assert!(err.to_string().contains("File exists"), "{err}");
    assert!(cleanup.run().is_empty());
    assert_eq!(our_netns(), before);
}

fn flow(topo: &Topology, src: &str, dst: &str, protocol: Protocol, port: Option<u16>) -> Flow {
    let (s, d) = (ip(src), ip(dst));
    Flow {
        src_netns: topo.host_of(s).expect("src host").netns.clone(),
        dst_netns: topo.host_of(d).expect("dst host").netns.clone(),
        src: s,
        dst: d,
        protocol,
        src_port: None,
        dst_port: port,
        icmp_type: match protocol {
            Protocol::ICMP => 8,
            Protocol::ICMPV6 => 128,
            _ => 0,
        },
        icmp_code: 0,
    }
}

/// The traffic engine sees both outcomes without any datapath: everything passes through the
/// node, and a blackhole route on the node makes every protocol read as denied.
#[test]
fn privileged_traffic_observes_allow_and_deny() {
    require_root();
    let _g = serial();
    let id = netns::new_lab_id();
    let specs = vec![
        HostSpec {
            kind: HostKind::Pod {
                namespace: "t".into(),
                name: "client".into(),
            },
            addrs: vec![ip("198.18.203.1"), ip("fd00:198:18:203::1")],
        },
        HostSpec {
            kind: HostKind::Pod {
                namespace: "t".into(),
                name: "server".into(),
            },
            addrs: vec![ip("198.18.203.2"), ip("fd00:198:18:203::2")],
        },
    ];
    let topo = Topology::build(&id, &specs, Cleanup::new()).expect("build");
    let server_ns = topo.hosts[1].netns.clone();
    let listen: BTreeSet<ListenSpec> = [(Protocol::TCP, 8080), (Protocol::UDP, 5353)]
        .into_iter()
        .map(|(protocol, port)| ListenSpec {
            netns: server_ns.clone(),
            protocol,
            port,
        })
        .collect();
    let mut listeners = Listeners::start(&listen).expect("listeners");
    assert_eq!(listeners.count, 2);
    let timeout = Duration::from_millis(250);
    let cases = [
        ("198.18.203.1", "198.18.203.2", Protocol::TCP, Some(8080)),
        ("198.18.203.1", "198.18.203.2", Protocol::TCP, Some(9999)), // refused = arrived
        ("198.18.203.1", "198.18.203.2", Protocol::UDP, Some(5353)),
        ("198.18.203.1", "198.18.203.2", Protocol::ICMP, None),
        ("198.18.203.1", "198.18.203.2", Protocol::SCTP, Some(7777)),
        ("198.18.203.1", "198.18.203.2", Protocol(47), None),
        (
            "fd00:198:18:203::1",
            "fd00:198:18:203::2",
            Protocol::TCP,
            Some(8080),
        ),
        (
            "fd00:198:18:203::1",
            "fd00:198:18:203::2",
            Protocol::UDP,
            Some(5353),
        ),
        (
            "fd00:198:18:203::1",
            "fd00:198:18:203::2",
            Protocol::ICMPV6,
            None,
        ),
        (
            "fd00:198:18:203::1",
            "fd00:198:18:203::2",
            Protocol::SCTP,
            Some(7777),
        ),
        (
            "fd00:198:18:203::1",
            "fd00:198:18:203::2",
            Protocol::UDPLITE,
            Some(7),
        ),
        // To itself: over lo, not through the node.
        ("198.18.203.1", "198.18.203.1", Protocol::ICMP, None),
    ];
    for (s, d, p, port) in cases {
        let obs = traffic::send(&flow(&topo, s, d, p, port), timeout).expect("send");
        assert_eq!(
            obs.verdict,
            Verdict::Allow,
            "{s} -> {d} {p} {port:?}: {obs:?}"
        );
    }
    // Blackhole the server's addresses on the node: nothing arrives any more.
    netns::ip_batch(
        Some(&topo.node_netns),
        &[
            "route replace blackhole 198.18.203.2/32".to_string(),
            "route replace blackhole fd00:198:18:203::2/128".to_string(),
        ],
        false,
    )
    .expect("blackhole");
    for (s, d, p, port) in cases.iter().filter(|c| c.0 != c.1 && c.3 != Some(9999)) {
        let started = Instant::now();
        let obs = traffic::send(&flow(&topo, s, d, *p, *port), timeout).expect("send");
        assert_eq!(
            obs.verdict,
            Verdict::Deny,
            "{s} -> {d} {p} {port:?}: {obs:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    listeners.stop();
    assert!(topo.remove().is_empty());
    assert!(lab_netns(&format!("{id}-")).is_empty());
}

const SMALL: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: tools, labels: {team: tools}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: web
    ports:
    - {name: http, containerPort: 80, protocol: TCP}
status:
  podIPs: [{ip: 198.18.210.10}, {ip: "fd00:198:18:210::10"}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec:
  containers:
  - name: db
    ports:
    - {name: sql, containerPort: 5432, protocol: TCP}
    - {name: stats, containerPort: 9000, protocol: UDP}
status:
  podIPs: [{ip: 198.18.210.20}, {ip: "fd00:198:18:210::20"}]
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: tools, labels: {app: probe}}
spec:
  containers:
  - name: probe
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
status:
  podIPs: [{ip: 198.18.211.10}, {ip: "fd00:198:18:211::10"}]
---
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: tools, labels: {app: bad}}
spec:
  containers:
  - name: bad
status:
  podIPs: [{ip: 198.18.211.20}, {ip: "fd00:198:18:211::20"}]
---
# Kubernetes: default-deny ingress in shop.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
# Kubernetes: db accepts web on its ports.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: sql}, {port: 9000, protocol: UDP}]
---
# Kubernetes: web accepts everyone on http, and the outside 198.19.0.0/16.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-public, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {}}, {ipBlock: {cidr: 198.19.0.0/16}}, {ipBlock: {cidr: "fd00:198:18::/48"}}]
    ports: [{port: 80}]
---
# Calico: web answers pings (ICMP echo and ICMPv6 echo only).
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-ping, namespace: shop}
spec:
  selector: app == 'web'
  order: 10
  ingress:
  - {action: Allow, protocol: ICMP, icmp: {type: 8}}
  - {action: Allow, protocol: ICMPv6, icmp: {type: 128}}
---
# Calico: a quarantined pod may send nothing.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: quarantine}
spec:
  selector: app == 'bad'
  order: 1
  types: [Egress]
  egress:
  - action: Deny
"#;

const SMALL_PROBES: &str = r#"
- {from: shop/web, to: shop/db, port: 5432, protocol: TCP, expected: allow}
- {from: tools/probe, to: shop/db, port: 5432, protocol: TCP, expected: deny}
- {from: shop/web, to: shop/db, port: 9000, protocol: UDP, expected: allow}
- {from: tools/probe, to: shop/db, port: 9000, protocol: UDP, expected: deny}
- {from: tools/probe, to: shop/web, port: 80, protocol: TCP, expected: allow}
- {from: tools/bad, to: shop/web, port: 80, protocol: TCP, expected: deny}
- {from: tools/probe, to: shop/web, protocol: ICMP, icmpType: 8, icmpCode: 0, expected: allow}
- {from: tools/probe, to: shop/web, protocol: ICMP, icmpType: 13, expected: deny}
- {from: tools/probe, to: shop/db, protocol: ICMP, icmpType: 8, expected: deny}
- {from: "fd00:198:18:211::10", to: "fd00:198:18:210::10", port: 80, protocol: TCP, expected: allow}
- {from: tools/probe, to: shop/db, port: 5432, protocol: TCP, ipVersion: 6, expected: deny}
- {from: tools/probe, to: shop/web, protocol: ICMPv6, icmpType: 128, ipVersion: 6, expected: allow}
- {from: tools/bad, to: shop/web, protocol: ICMPv6, icmpType: 128, ipVersion: 6, expected: deny}
- {from: 198.19.5.5, to: shop/web, port: 80, protocol: TCP, expected: allow}
- {from: 198.19.5.5, to: shop/db, port: 5432, protocol: TCP, expected: deny}
- {from: "fd00:198:18:299::5", to: shop/web, port: 80, protocol: TCP, expected: allow}
- {from: shop/db, to: tools/probe, port: 8080, protocol: TCP, expected: allow}
- {from: shop/db, to: tools/probe, port: 53, protocol: UDP, expected: allow}
- {from: tools/bad, to: 198.19.5.5, port: 53, protocol: UDP, expected: deny}
- {from: tools/probe, to: 198.19.5.5, port: 443, protocol: TCP, expected: allow}
- {from: shop/web, to: tools/probe, port: 7777, protocol: SCTP, expected: allow}
- {from: tools/probe, to: shop/db, port: 5432, protocol: SCTP, expected: deny}
- {from: shop/web, to: tools/probe, protocol: 47, expected: allow}
- {from: tools/bad, to: tools/probe, protocol: 47, expected: deny}
"#;

fn write_small(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(policy.join("small.yaml"), SMALL).unwrap();
    let probes = dir.join("probes.yaml");
    std::fs::write(&probes, SMALL_PROBES).unwrap();
    (policy, probes)
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("enforcer-lab-test-{}-{name}", std::process::id()))
}

fn show(report: &LabReport) -> String {
    report.table()
}

fn assert_all_as_expected(report: &LabReport) {
    let bad: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.status != Status::Ok)
        .collect();
    assert!(
        bad.is_empty(),
        "{} probes differ:\n{}\n{:#?}",
        bad.len(),
        show(report),
        bad
    );
}

fn no_leftovers(report: &LabReport, before: &[String]) {
    assert!(lab_netns(&format!("{}-", report.id)).is_empty());
    assert_eq!(our_netns(), before);
    assert!(
        !Path::new("/sys/fs/bpf")
            .join(format!("enforcer-lab-{}", report.id))
            .exists(),
        "pins left behind"
    );
}

/// The small inventory without the datapath: the lab itself works (every probe passes), so
/// any deny seen with the datapath is the datapath's.
#[test]
fn privileged_lab_without_datapath_passes_everything() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let dir = scratch("nodp");
    let (policy, probes) = write_small(&dir);
    let report = lab::run(LabOptions {
        files: vec![policy],
        probes: Some(probes),
        enforce: false,
        ..LabOptions::default()
    })
    .expect("lab");
    eprintln!("{}", show(&report));
    assert!(
        report.results.iter().all(|r| r.verdict == Observed::Allow),
        "{}",
        show(&report)
    );
    assert_eq!(report.pods, 4);
    assert_eq!(report.external_hosts, 2);
    no_leftovers(&report, &before);
    let _ = std::fs::remove_dir_all(dir);
}

/// The small inventory through the real datapath: every observed verdict equals the
/// evaluator's (and the probe file's), and both verdicts occur.
#[test]
fn privileged_lab_small_inventory_matches_evaluator() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let dir = scratch("small");
    let (policy, probes) = write_small(&dir);
    let started = Instant::now();
    let report = lab::run(LabOptions {
        files: vec![policy],
        probes: Some(probes),
        ..LabOptions::default()
    })
    .expect("lab");
    eprintln!("{}\n(total {:?})", show(&report), started.elapsed());
    assert_all_as_expected(&report);
    assert!(report.results.iter().any(|r| r.verdict == Observed::Allow));
    assert!(report.results.iter().any(|r| r.verdict == Observed::Deny));
    assert!(report.success());
    no_leftovers(&report, &before);
    let _ = std::fs::remove_dir_all(dir);
}

/// examples/production with examples/probes/production.yaml.
#[test]
fn privileged_lab_production_example() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let probes = workspace().join("examples/probes/production.yaml");
    let report = lab::run(LabOptions {
        files: vec![workspace().join("examples/production")],
        probes: Some(probes.clone()),
        ..LabOptions::default()
    })
    .expect("lab");
    eprintln!("{}", show(&report));
    assert_eq!(report.results.len(), load_probes(&probes).unwrap().len());
    assert_all_as_expected(&report);
    no_leftovers(&report, &before);
}

/// Two labs back to back (the same files): distinct ids, both clean, same verdicts.
#[test]
fn privileged_two_labs_back_to_back() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let dir = scratch("twice");
    let (policy, probes) = write_small(&dir);
    let opts = LabOptions {
        files: vec![policy],
        probes: Some(probes),
        ..LabOptions::default()
    };
    let first = lab::run(opts.clone()).expect("first lab");
    no_leftovers(&first, &before);
    let second = lab::run(opts).expect("second lab");
    no_leftovers(&second, &before);
    assert_ne!(first.id, second.id);
    let verdicts = |r: &LabReport| r.results.iter().map(|x| x.verdict).collect::<Vec<_>>();
    assert_eq!(verdicts(&first), verdicts(&second));
    assert_all_as_expected(&second);
    let _ = std::fs::remove_dir_all(dir);
}

/// Without --probes: every pod pair on every declared port of the destination.
#[test]
fn privileged_lab_all_pairs_without_probe_file() {
    require_root();
    let _g = serial();
    let dir = scratch("pairs");
    let (policy, _) = write_small(&dir);
    let inv = sources::load_paths(&[&policy]).expect("load");
    let pairs = lab::all_pairs(&inv);
    // web: 80; db: 5432, 9000; probe: 8080; bad: none. 3 sources each.
    assert_eq!(pairs.len(), 3 * 4);
    let report = lab::run(LabOptions {
        files: vec![policy],
        ..LabOptions::default()
    })
    .expect("lab");
    eprintln!("{}", show(&report));
    assert_eq!(report.results.len(), 12);
    assert_all_as_expected(&report);
    let _ = std::fs::remove_dir_all(dir);
}

/// Set in the child process of [`privileged_ctrl_c_removes_everything`].
const SIGINT_CHILD: &str = "ENFORCER_LAB_TEST_SIGINT_CHILD";

/// Not a test on its own: the child process of [`privileged_ctrl_c_removes_everything`] (it
/// returns at once unless that test started it). It runs a slow lab until interrupted.
#[test]
fn lab_sigint_child_helper() {
    let Ok(dir) = std::env::var(SIGINT_CHILD) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (policy, probes) = write_small(&dir);
    let _ = lab::run(LabOptions {
        files: vec![policy],
        probes: Some(probes),
        timeout: Duration::from_secs(2),
        ..LabOptions::default()
    });
    panic!("the lab ended before the parent's SIGINT");
}

/// Ctrl-C in the middle of a lab: the process exits with 130 and leaves no namespace and no
/// pin behind.
#[test]
fn privileged_ctrl_c_removes_everything() {
    require_root();
    let _g = serial();
    let dir = scratch("sigint");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "lab_sigint_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SIGINT_CHILD, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let child_prefix = format!("enf{}", child.id() % 10_000);
    let pins = || -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/bpf")
            .expect("bpffs")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("enforcer-lab-{child_prefix}")))
            })
            .collect()
    };
    let theirs = || lab_netns(&child_prefix);
    // Wait until the lab is up (namespaces and pins) and probing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (theirs().is_empty() || pins().is_empty()) && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !theirs().is_empty() && !pins().is_empty(),
        "the child's lab never came up"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().expect("wait for the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(theirs().is_empty(), "namespaces left: {:?}", theirs());
    assert!(pins().is_empty(), "pins left: {:?}", pins());
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(Debug, serde::Deserialize)]
struct CaseHeader {
    probes: Vec<enforcer_user::probes::Probe>,
}

/// Every case of the conformance corpus (tests/conformance, ~100 cases and 600 probes)
/// through the real datapath: observed == the evaluator's verdict == the case's `expected`.
/// One lab per case, so it takes minutes: run it with
/// `cargo test -p enforcer-user --test lab -- --ignored privileged_lab_conformance_corpus`.
#[test]
#[ignore = "one lab per conformance case: several minutes; run explicitly with --ignored"]
fn privileged_lab_conformance_corpus() {
    use serde::Deserialize as _;
    require_root();
    let _g = serial();
    let before = our_netns();
    let dir = workspace().join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let opts = LabOptions {
        timeout: Duration::from_millis(150),
        ..LabOptions::default()
    };
    let (mut failures, mut probes, mut skipped) = (Vec::new(), 0, 0);
    let started = Instant::now();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let first = serde_yaml::Deserializer::from_str(&text).next().unwrap();
        let header = CaseHeader::deserialize(first).unwrap();
        let objects = match text.find("\n---") {
            Some(at) => format!("# ConformanceCase header{}", &text[at..]),
            None => String::new(),
        };
        let inv = sources::load_str(&objects, f).unwrap();
        let report = match lab::run_inventory(&inv, Some(&header.probes), &opts) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: lab failed: {e}", f.display()));
                continue;
            }
        };
        probes += report.results.len();
        for r in &report.results {
            match r.status {
                Status::Ok => {}
                Status::Skipped => skipped += 1,
                _ => failures.push(format!(
                    "{}: {} -> {} {} {:?}/{:?}: observed {}, evaluator {:?}, case {:?} ({}) {}",
                    f.file_name().unwrap().to_string_lossy(),
                    r.from,
                    r.to,
                    r.protocol_number,
                    r.port,
                    r.icmp_type,
                    r.verdict,
                    r.expected,
                    r.probe_expected,
                    r.detail,
                    r.diagnosis.as_deref().unwrap_or_default()
                )),
            }
        }
    }
    eprintln!(
        "{} cases, {probes} probes, {skipped} skipped, {} differ, in {:?}",
        files.len(),
        failures.len(),
        started.elapsed()
    );
    assert_eq!(our_netns(), before);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Neighbour resolution on the wire (no permanent entries): ARP is not IP and passes, and
/// IPv6 neighbour discovery must pass the datapath too (Calico always allows it), or pods
/// under a default deny lose IPv6 altogether.
#[test]
fn privileged_lab_without_static_neighbours() {
    require_root();
    let _g = serial();
    let dir = scratch("nd");
    let (policy, probes) = write_small(&dir);
    let report = lab::run(LabOptions {
        files: vec![policy],
        probes: Some(probes),
        static_neighbours: false,
        ..LabOptions::default()
    })
    .expect("lab");
    eprintln!("{}", show(&report));
    assert_all_as_expected(&report);
    let _ = std::fs::remove_dir_all(dir);
}

/// The lab refuses clearly, before creating anything, when it cannot work: not root, no bpffs.
#[test]
fn privileged_lab_refuses_when_it_cannot_run() {
    require_root();
    let _g = serial();
    let before = our_netns();
    // Not root: the binary run as nobody.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_enforcer"))
        .args(["lab", "-f"])
        .arg(workspace().join("examples/production"))
        .output()
        .expect("setpriv (util-linux) runs the binary as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("run it as root"),
        "{stderr}"
    );
    // No bpffs where the pins would go.
    let err = lab::run(LabOptions {
        files: vec![workspace().join("examples/production")],
        pin_base: std::env::temp_dir(),
        ..LabOptions::default()
    })
    .expect_err("pins outside bpffs");
    assert!(matches!(err, lab::LabError::NoBpffs { .. }), "{err}");
    assert!(err.to_string().contains("mount -t bpf"), "{err}");
    // A bad probe file: nothing is created either.
    let dir = scratch("badprobe");
    let (policy, probes) = write_small(&dir);
    std::fs::write(&probes, "- {from: shop/nope, to: shop/web, port: 80}\n").unwrap();
    let err = lab::run(LabOptions {
        files: vec![policy],
        probes: Some(probes),
        ..LabOptions::default()
    })
    .expect_err("unknown pod");
    assert!(err.to_string().contains("shop/nope"), "{err}");
    assert_eq!(our_netns(), before);
    let _ = std::fs::remove_dir_all(dir);
}

/// `enforcer lab` end to end: the table, `-o json` (a list repeating each probe's fields with
/// `verdict` and `expected`) and the exit status (0 all as expected, 1 a difference).
#[test]
fn privileged_enforcer_lab_command() {
    require_root();
    let _g = serial();
    let before = our_netns();
    let enforcer = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_enforcer"))
            .args(args)
            .current_dir(workspace())
            .output()
            .expect("run enforcer")
    };
    let out = enforcer(&[
        "lab",
        "-f",
        "examples/production",
        "--probes",
        "examples/probes/production.yaml",
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("a JSON list");
    assert_eq!(rows.len(), 29);
    for r in &rows {
        for key in ["from", "to", "protocol", "verdict", "expected"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert_eq!(r["verdict"], r["expected"], "{r}");
    }
    assert!(rows.iter().any(|r| r["verdict"] == "deny"));

    // A probe file whose author expects otherwise: marked, exit 1.
    let dir = scratch("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let probes = dir.join("probes.yaml");
    std::fs::write(
        &probes,
        "- {from: production/frontend, to: production/backend, port: 8080, expected: deny}\n\
         - {from: production/frontend, to: production/backend, protocol: ICMP}\n",
    )
    .unwrap();
    let out = enforcer(&[
        "lab",
        "-f",
        "examples/production",
        "--probes",
        probes.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("the probe file expects deny"), "{stdout}");
    assert!(
        stdout.contains("8/0"),
        "the ICMP row shows type/code: {stdout}"
    );
    assert_eq!(our_netns(), before);
    let _ = std::fs::remove_dir_all(dir);
}
