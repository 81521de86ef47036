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
    let before = netns::list_netns().expect("list");
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
    assert_eq!(netns::list_netns().expect("list"), before);
}

/// A failure half-way through (here: a duplicate address) leaves nothing behind.
#[test]
fn privileged_topology_failure_cleans_up() {
    require_root();
    let _g = serial();
    let before = netns::list_netns().expect("list");
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
    assert_eq!(netns::list_netns().expect("list"), before);
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
    assert_eq!(netns::list_netns().expect("list"), before);
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
    let before = netns::list_netns().expect("list");
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
    let before = netns::list_netns().expect("list");
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
    let before = netns::list_netns().expect("list");
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
    let before = netns::list_netns().expect("list");
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
