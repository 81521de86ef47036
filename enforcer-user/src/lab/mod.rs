//! `enforcer lab`: a local cluster in network namespaces, enforced by the real datapath and
//! tested with real packets (issue 3 §3; `docs/lab.md`).
//!
//! [`run`] loads Namespace/Pod YAML and policies, builds one namespace per pod (and one per
//! probe address outside the cluster) routed as Calico routes pods ([`topology`]), loads the
//! datapath in the lab's node namespace and programs it from the compiled policy
//! ([`enforce`]), opens listeners on every declared container port and every probed port,
//! sends each probe as real traffic ([`traffic`]) and compares what got through with the
//! reference evaluator's verdict ([`crate::evaluator::explain`]). Everything it created is
//! removed at the end, on error, and on Ctrl-C.

pub mod enforce;
pub mod netns;
pub mod packet;
pub mod report;
pub mod topology;
pub mod traffic;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use report::{LabReport, Observed, ProbeResult, Status, Timings};

use self::{
    enforce::Enforcement,
    netns::Cleanup,
    topology::{HostKind, HostSpec, Topology},
    traffic::{Flow, ListenSpec, Listeners},
};
use crate::{
    compile,
    evaluator::{self, Endpoint, Peer, Verdict},
    model::{Direction, Inventory, Protocol},
    probes::{Probe, ProtocolField, load_probes},
};

/// Where lab pin directories go (`<base>/enforcer-lab-<id>/`).
pub const DEFAULT_PIN_BASE: &str = "/sys/fs/bpf";

/// What to run.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Namespace, Pod and policy YAML files or directories (`-f`).
    pub files: Vec<PathBuf>,
    /// A probe file (`--probes`); `None`: every ordered pod pair on every declared container
    /// port of the destination.
    pub probes: Option<PathBuf>,
    /// How long one attempt waits for an answer (TCP connect, UDP echo, packet arrival).
    pub timeout: Duration,
    /// Attempts for a probe that looks denied when the evaluator predicts allow (a first
    /// packet lost to anything but policy must not read as a deny). An allow is conclusive.
    pub attempts: u32,
    /// Enforce with the real datapath. `false` builds the lab and sends the probes with no
    /// datapath at all (everything passes): for testing the lab itself.
    pub enforce: bool,
    /// Directory the lab's pin directory is created in (must be on bpffs).
    pub pin_base: PathBuf,
    /// The evaluator's options (failsafe ports), also given to the compiler.
    pub evaluator: evaluator::Options,
    /// Write permanent ARP/ND entries on both ends of every veth (the default; Felix does the
    /// same on the host side), so no probe depends on neighbour resolution. `false` leaves
    /// resolution to the wire, where IPv6 neighbour discovery crosses the datapath as it does
    /// on a real node.
    pub static_neighbours: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            files: Vec::new(),
            probes: None,
            timeout: Duration::from_millis(250),
            attempts: 3,
            enforce: true,
            pin_base: PathBuf::from(DEFAULT_PIN_BASE),
            evaluator: evaluator::Options::default(),
            static_neighbours: true,
        }
    }
}

/// Why a lab could not run. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "the lab needs root (it creates network namespaces and loads eBPF programs); effective \
         uid is {euid}: run it as root"
    )]
    NotRoot { euid: u32 },
    #[error("{message}")]
    NoDatapath { message: String },
    #[error(
        "{path} is not a mounted bpffs: mount it with `mount -t bpf bpf {path}` (or run \
         `cargo xtask setup`)"
    )]
    NoBpffs { path: String },
    #[error("{message}")]
    Tool { message: String },
    #[error("cannot load the files:\n{message}")]
    Load { message: String },
    #[error("{message}")]
    Input { message: String },
    #[error(transparent)]
    Probes(#[from] crate::probes::ProbeError),
    #[error("probe {index} ({from} -> {to}): {message}")]
    Probe {
        index: usize,
        from: String,
        to: String,
        message: String,
    },
    #[error("cannot compile the policy: {0}")]
    Compile(#[from] compile::CompileError),
    #[error("lab setup failed at `{step}`: {message}")]
    Setup { step: String, message: String },
    #[error("datapath: {message}")]
    Datapath { message: String },
}

/// Runs a lab on `opts.files` (and `opts.probes`) and reports what happened. The report's
/// [`LabReport::success`] is false when an observed verdict differs from the evaluator's (or a
/// probe's own `expected` differs from the evaluator's).
pub fn run(opts: LabOptions) -> Result<LabReport, LabError> {
    preflight(&opts)?;
    let inv = crate::sources::load_paths(&opts.files).map_err(|errors| LabError::Load {
        message: errors
            .0
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })?;
    let probes = match &opts.probes {
        Some(path) => Some(load_probes(path)?),
        None => None,
    };
    run_inventory(&inv, probes.as_deref(), &opts)
}

/// [`run`] on an already loaded inventory and probe list.
pub fn run_inventory(
    inv: &Inventory,
    probes: Option<&[Probe]>,
    opts: &LabOptions,
) -> Result<LabReport, LabError> {
    preflight(opts)?;
    let started = Instant::now();
    let generated;
    let probes = match probes {
        Some(p) => p,
        None => {
            generated = all_pairs(inv);
            &generated[..]
        }
    };
    let mut notes = Vec::new();
    let plan = plan(inv, probes, opts, &mut notes)?;

    netns::install_signal_handler()?;
    // Removes whatever was created if anything below fails or panics.
    let guard = CleanupGuard(Cleanup::new());
    let id = netns::new_lab_id();
    guard.0.set_id(&id);
    let mut lab = Lab::build(&id, inv, &plan, opts, guard.0.clone(), &mut notes)?;
    let setup = started.elapsed();
    let probing = Instant::now();
    let results = lab.probe_all(&plan, opts);
    let probes_time = probing.elapsed();
    let fail_mode: Vec<String> = results
        .iter()
        .filter(|r| {
            r.verdict == Observed::Deny
                && r.datapath
                    .iter()
                    .any(|c| c.starts_with("deny_") && !c.starts_with("deny_policy"))
        })
        .map(|r| {
            format!(
                "{} -> {} {} {}",
                r.from,
                r.to,
                r.protocol_number,
                r.port.map(|p| p.to_string()).unwrap_or_default()
            )
        })
        .collect();
    if !fail_mode.is_empty() {
        notes.push(format!(
            "{} denied probe(s) were dropped by a datapath fail mode (no verdict, unparseable, no \
             endpoint), not by a policy verdict: {}",
            fail_mode.len(),
            fail_mode.join(", ")
        ));
    }
    if let Some(e) = &lab.enforcement {
        match e.counters() {
            Ok(c) => notes.push(format!(
                "datapath counters: {}",
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            Err(err) => notes.push(format!("datapath counters unavailable: {err}")),
        }
    }
    let teardown_start = Instant::now();
    let (pods, external_hosts) = (lab.pods, lab.externals);
    // Listeners, then the datapath, then the namespaces and pins.
    drop(lab);
    for p in guard.0.run() {
        notes.push(format!("cleanup: {p}"));
    }
    let teardown = teardown_start.elapsed();
    Ok(LabReport {
        id,
        pods,
        external_hosts,
        enforced: opts.enforce,
        results,
        notes,
        timings: Timings {
            setup,
            probes: probes_time,
            teardown,
            total: started.elapsed(),
        },
    })
}

/// Refuses clearly when the lab cannot work here.
pub fn preflight(opts: &LabOptions) -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(LabError::NotRoot { euid });
    }
    if opts.enforce {
        if let Err(e) = crate::ebpf_object::object() {
            return Err(LabError::NoDatapath {
                message: format!("the lab enforces with the real datapath, but {e}"),
            });
        }
        check_bpffs(&opts.pin_base)?;
    }
    Ok(())
}

fn check_bpffs(path: &Path) -> Result<(), LabError> {
    crate::datapath::paths::check_bpffs(path).map_err(|_| LabError::NoBpffs {
        path: path.display().to_string(),
    })
}

/// Every ordered pair of distinct pods (with addresses, not host-networked) on every
/// declared container port of the destination, with its protocol.
pub fn all_pairs(inv: &Inventory) -> Vec<Probe> {
    let pods: Vec<_> = inv
        .pods
        .iter()
        .filter(|p| !p.host_network && !p.ips.is_empty())
        .collect();
    let mut out = Vec::new();
    for dst in &pods {
        let ports: BTreeSet<(u16, Protocol)> =
            dst.ports.iter().map(|p| (p.port, p.protocol)).collect();
        for src in &pods {
            if std::ptr::eq(*src, *dst) {
                continue;
            }
            for (port, protocol) in &ports {
                out.push(Probe {
                    from: format!("{}/{}", src.namespace, src.name),
                    to: format!("{}/{}", dst.namespace, dst.name),
                    port: Some(*port),
                    protocol: ProtocolField::Name(protocol.to_string()),
                    icmp_type: None,
                    icmp_code: None,
                    src_port: None,
                    ip_version: None,
                    expected: None,
                });
            }
        }
    }
    out
}

/// Where a probe's end lives in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Pod { namespace: String, name: String },
    External(IpAddr),
}

/// A probe resolved against the inventory: the evaluator's verdict and the concrete packet.
#[derive(Debug, Clone)]
struct Planned {
    probe: Probe,
    protocol: Protocol,
    icmp: Option<(u8, u8)>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    expected: Option<Verdict>,
    /// Why the lab cannot send it (it is reported, not sent).
    skip: Option<String>,
    places: Option<(Place, Place)>,
}

fn usable_address(a: IpAddr) -> Result<(), &'static str> {
    let bad = match a {
        IpAddr::V4(v) => {
            v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || v.is_broadcast()
                || v.is_link_local()
        }
        IpAddr::V6(v) => {
            v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || (v.segments()[0] & 0xffc0) == 0xfe80
                || v.to_ipv4_mapped().is_some()
        }
    };
    if bad {
        Err(
            "unspecified, loopback, multicast, broadcast, link-local and IPv4-mapped addresses cannot be lab hosts",
        )
    } else {
        Ok(())
    }
}

/// Resolves every probe (bad probes are errors: nothing is created for bad input).
fn plan(
    inv: &Inventory,
    probes: &[Probe],
    opts: &LabOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<Planned>, LabError> {
    // Two pods with one address would make the lab's routing ambiguous.
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    for p in inv.pods.iter().filter(|p| !p.host_network) {
        for ip in &p.ips {
            let me = format!("{}/{}", p.namespace, p.name);
            if let Some(other) = owners.insert(*ip, me.clone()) {
                return Err(LabError::Input {
                    message: format!(
                        "pods {other} and {me} both have address {ip}: give every pod its own addresses"
                    ),
                });
            }
        }
    }
    let mut out = Vec::with_capacity(probes.len());
    for (i, probe) in probes.iter().enumerate() {
        let index = i + 1;
        let err = |message: String| LabError::Probe {
            index,
            from: probe.from.clone(),
            to: probe.to.clone(),
            message,
        };
        let mut flow = probe.flow(index)?;
        let is_icmp = matches!(flow.protocol, Protocol::ICMP | Protocol::ICMPV6);
        if is_icmp {
            // A packet needs a type: echo request unless the probe says otherwise.
            let default = if flow.protocol == Protocol::ICMP {
                8
            } else {
                128
            };
            flow.icmp_type.get_or_insert(default);
            flow.icmp_code.get_or_insert(0);
        }
        let mut planned = Planned {
            probe: probe.clone(),
            protocol: flow.protocol,
            icmp: if is_icmp {
                Some((flow.icmp_type.unwrap_or(0), flow.icmp_code.unwrap_or(0)))
            } else {
                None
            },
            src: None,
            dst: None,
            expected: None,
            skip: None,
            places: None,
        };
        // A pod named explicitly but host-networked is not emulated.
        for peer in [&flow.src, &flow.dst] {
            if let Peer::Pod { namespace, name } = peer
                && let Some(pod) = inv.pod(namespace, name)
                && pod.host_network
            {
                planned.skip = Some(format!("{namespace}/{name} is a host-network pod"));
            }
        }
        let ex = evaluator::explain(inv, &flow, &opts.evaluator).map_err(|e| err(e.to_string()))?;
        planned.expected = Some(ex.verdict);
        planned.src = Some(ex.flow.src);
        planned.dst = Some(ex.flow.dst);
        if planned.skip.is_none() {
            let place = |addr: IpAddr| -> Result<Place, String> {
                match Endpoint::for_address(inv, addr) {
                    Endpoint::Workload(p) => Ok(Place::Pod {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                    }),
                    Endpoint::Host(h) => Err(format!("{addr} is host endpoint {}", h.name)),
                    Endpoint::External(Some(p)) => Err(format!(
                        "{addr} is host-network pod {}/{}",
                        p.namespace, p.name
                    )),
                    Endpoint::External(None) => {
                        usable_address(addr).map_err(|m| format!("{addr}: {m}"))?;
                        Ok(Place::External(addr))
                    }
                }
            };
            match (place(ex.flow.src), place(ex.flow.dst)) {
                (Ok(s), Ok(d)) => planned.places = Some((s, d)),
                (Err(m), _) | (_, Err(m)) => planned.skip = Some(m),
            }
        }
        if planned.skip.is_none() && flow.protocol.has_ports() && flow.dst_port == Some(0) {
            planned.skip = Some("port 0 cannot be probed".to_string());
        }
        out.push(planned);
    }
    let skipped = out.iter().filter(|p| p.skip.is_some()).count();
    if skipped > 0 {
        notes.push(format!(
            "{skipped} probe(s) skipped: the lab does not emulate host endpoints or host-network \
             pods (they would share the node's network namespace)"
        ));
    }
    Ok(out)
}

/// Runs the cleanup when dropped (error paths and panics).
struct CleanupGuard(Arc<Cleanup>);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        for p in self.0.run() {
            tracing::warn!("lab cleanup: {p}");
        }
    }
}

/// A built lab: listeners, datapath and topology, dropped in that order.
struct Lab {
    listeners: Option<Listeners>,
    enforcement: Option<Enforcement>,
    /// What was programmed (rendered for slot 0), to diagnose mismatches.
    tables: Option<compile::MapEntries>,
    topology: Topology,
    pods: usize,
    externals: usize,
}

impl Lab {
    fn build(
        id: &str,
        inv: &Inventory,
        plan: &[Planned],
        opts: &LabOptions,
        cleanup: Arc<Cleanup>,
        notes: &mut Vec<String>,
    ) -> Result<Lab, LabError> {
        let mut specs = Vec::new();
        for p in inv.pods.iter().filter(|p| !p.host_network) {
            if p.ips.is_empty() {
                notes.push(format!(
                    "pod {}/{} has no address (status.podIPs) and is not created",
                    p.namespace, p.name
                ));
                continue;
            }
            if let Some(bad) = p.ips.iter().find(|a| usable_address(**a).is_err()) {
                return Err(LabError::Input {
                    message: format!(
                        "pod {}/{} has address {bad}, which cannot be a lab host (use unicast \
                         addresses; 169.254.1.1 and fe80::1 are the pods' gateways)",
                        p.namespace, p.name
                    ),
                });
            }
            specs.push(HostSpec {
                kind: HostKind::Pod {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                },
                addrs: p.ips.clone(),
            });
        }
        let pods = specs.len();
        let externals: BTreeSet<IpAddr> = plan
            .iter()
            .filter_map(|p| p.places.as_ref())
            .flat_map(|(s, d)| [s, d])
            .filter_map(|pl| match pl {
                Place::External(a) => Some(*a),
                Place::Pod { .. } => None,
            })
            .collect();
        for a in &externals {
            specs.push(HostSpec {
                kind: HostKind::External,
                addrs: vec![*a],
            });
        }

        let pin_root = opts.pin_base.join(format!("enforcer-lab-{id}"));
        if opts.enforce {
            cleanup.set_pin_dir(&pin_root);
        }
        let topology = Topology::build_with(id, &specs, cleanup, opts.static_neighbours)?;

        // Listeners: every declared TCP/UDP container port, and every probed TCP/UDP port.
        let mut listen: BTreeSet<ListenSpec> = BTreeSet::new();
        for h in &topology.hosts {
            if let HostKind::Pod { namespace, name } = &h.kind
                && let Some(pod) = inv.pod(namespace, name)
            {
                for port in &pod.ports {
                    listen.insert(ListenSpec {
                        netns: h.netns.clone(),
                        protocol: port.protocol,
                        port: port.port,
                    });
                }
            }
        }
        for p in plan.iter().filter(|p| p.skip.is_none()) {
            if let (Some(dst), Some(port)) = (p.dst, p.probe.port)
                && matches!(p.protocol, Protocol::TCP | Protocol::UDP)
                && let Some(h) = topology.host_of(dst)
            {
                listen.insert(ListenSpec {
                    netns: h.netns.clone(),
                    protocol: p.protocol,
                    port,
                });
            }
        }
        let listeners = Listeners::start(&listen)?;

        let mut tables = None;
        let enforcement = if opts.enforce {
            let compiled = compile::compile(inv, &opts.evaluator)?;
            let ifindex: BTreeMap<compile::EndpointId, u32> = topology
                .hosts
                .iter()
                .filter_map(|h| match &h.kind {
                    HostKind::Pod { namespace, name } => Some((
                        compile::EndpointId::Pod {
                            namespace: namespace.clone(),
                            name: name.clone(),
                        },
                        h.ifindex,
                    )),
                    HostKind::External => None,
                })
                .collect();
            let entries = compile::to_map_entries(&compiled, 0, &|id| {
                ifindex.get(id).copied().into_iter().collect()
            })
            .map_err(|e| LabError::Datapath {
                message: e.to_string(),
            })?;
            compile::check_capacity(&entries).map_err(|e| LabError::Datapath {
                message: e.to_string(),
            })?;
            let attach: Vec<u32> = ifindex.values().copied().collect();
            tables = Some(entries.clone());
            Some(Enforcement::start(
                &topology.node_netns,
                pin_root,
                attach,
                entries,
            )?)
        } else {
            notes.push("no datapath (enforce = false): every probe should pass".to_string());
            None
        };
        Ok(Lab {
            listeners: Some(listeners),
            enforcement,
            tables,
            topology,
            pods,
            externals: externals.len(),
        })
    }

    fn probe_all(&mut self, plan: &[Planned], opts: &LabOptions) -> Vec<ProbeResult> {
        plan.iter()
            .map(|p| {
                let before = self.counters();
                let mut r = self.probe_one(p, opts);
                r.status = r.compute_status();
                if let (Some(before), Some(after)) = (before, self.counters()) {
                    r.datapath = after
                        .iter()
                        .filter_map(|(k, v)| {
                            let old = before.get(k).copied().unwrap_or(0);
                            (*v > old).then(|| format!("{k}+{}", v - old))
                        })
                        .collect();
                }
                if r.status == Status::Mismatch {
                    r.diagnosis = self.diagnose(p, &r);
                }
                r
            })
            .collect()
    }

    fn counters(&self) -> Option<BTreeMap<String, u64>> {
        let e = self.enforcement.as_ref()?;
        e.counters().ok().map(|c| c.into_iter().collect())
    }

    /// For a mismatch: what the programmed tables say (looked up in userspace exactly as the
    /// datapath should), which tells a compiler bug (tables agree with the datapath) from a
    /// datapath bug (tables agree with the evaluator).
    fn diagnose(&self, p: &Planned, r: &ProbeResult) -> Option<String> {
        let tables = self.tables.as_ref()?;
        let (src, dst) = (p.src?, p.dst?);
        let is_icmp = p.icmp.is_some();
        let packet = evaluator::Packet {
            src,
            dst,
            protocol: p.protocol,
            src_port: if p.protocol.has_ports() {
                p.probe.src_port
            } else {
                None
            },
            dst_port: if p.protocol.has_ports() {
                p.probe.port
            } else {
                None
            },
            icmp_type: if is_icmp { p.icmp.map(|i| i.0) } else { None },
            icmp_code: if is_icmp { p.icmp.map(|i| i.1) } else { None },
        };
        let mut parts = Vec::new();
        let mut verdict = Verdict::Allow;
        for (addr, direction) in [(src, Direction::Egress), (dst, Direction::Ingress)] {
            let Some(host) = self.topology.host_of(addr) else {
                continue;
            };
            if host.kind == HostKind::External {
                continue;
            }
            match compile::lookup_entries(tables, host.ifindex, direction, &packet) {
                Ok(l) => {
                    verdict = verdict.and(l.action);
                    parts.push(format!(
                        "{} {direction}: {} (set {}, peer class {}, port class {:#x}, {:?}, rule {})",
                        host.label(),
                        l.action,
                        l.set,
                        l.peer_class,
                        l.port_class,
                        l.hit,
                        l.rule_id
                    ));
                }
                Err(e) => {
                    verdict = Verdict::Deny;
                    parts.push(format!("{} {direction}: no verdict: {e}", host.label()));
                }
            }
        }
        let observed = match r.verdict {
            Observed::Allow => Verdict::Allow,
            _ => Verdict::Deny,
        };
        let blame = if Some(verdict) == r.expected {
            "the programmed tables (looked up in userspace by `compile::lookup_entries`) agree \
             with the evaluator: the datapath dropped the probe's packet or one it depends on \
             (its reply, neighbour discovery); the counters below say which verdict fired"
        } else if verdict == observed {
            "the programmed tables give the observed verdict: the compiler differs from the evaluator"
        } else {
            "the tables differ from both"
        };
        Some(format!(
            "tables say {verdict} ({}); {blame}; datapath counters during the probe: {}",
            parts.join("; "),
            r.datapath.join(" ")
        ))
    }

    fn probe_one(&self, p: &Planned, opts: &LabOptions) -> ProbeResult {
        let mut result = ProbeResult::new(&p.probe, p.protocol, p.icmp, p.expected, p.src, p.dst);
        if let Some(why) = &p.skip {
            result.verdict = Observed::Skipped;
            result.detail = format!("skipped: {why}");
            return result;
        }
        let (Some(src), Some(dst)) = (p.src, p.dst) else {
            result.verdict = Observed::Skipped;
            result.detail = "skipped: no addresses".to_string();
            return result;
        };
        let (Some(sh), Some(dh)) = (self.topology.host_of(src), self.topology.host_of(dst)) else {
            result.verdict = Observed::Skipped;
            result.detail = "skipped: an address has no lab host".to_string();
            return result;
        };
        let flow = Flow {
            src_netns: sh.netns.clone(),
            dst_netns: dh.netns.clone(),
            src,
            dst,
            protocol: p.protocol,
            src_port: p.probe.src_port,
            dst_port: p.probe.port,
            icmp_type: p.icmp.map(|i| i.0).unwrap_or(0),
            icmp_code: p.icmp.map(|i| i.1).unwrap_or(0),
        };
        let attempts = opts.attempts.max(1);
        for attempt in 1..=attempts {
            result.attempts = attempt;
            match traffic::send(&flow, opts.timeout) {
                Ok(obs) => {
                    result.verdict = obs.verdict.into();
                    result.detail = obs.detail;
                    // Allow is conclusive; a deny is retried only when allow is predicted.
                    if obs.verdict == Verdict::Allow || p.expected != Some(Verdict::Allow) {
                        break;
                    }
                }
                Err(e) => {
                    result.verdict = Observed::Error;
                    result.detail = e.to_string();
                    break;
                }
            }
        }
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut l) = self.listeners.take() {
            l.stop();
        }
        if let Some(mut e) = self.enforcement.take() {
            e.stop();
        }
        // The topology (namespaces, then pins) goes when the fields drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stub_binary_is_refused_with_what_to_do() {
        let e = LabError::NoDatapath {
            message: format!(
                "the lab enforces with the real datapath, but {}",
                crate::ebpf_object::EbpfObjectError::NotBuilt
            ),
        };
        assert!(e.to_string().contains("cargo xtask setup"), "{e}");
        // The real check, wherever this test runs: a stub build fails preflight with it.
        if crate::ebpf_object::is_stub() {
            let err = preflight(&LabOptions::default());
            assert!(err.is_err());
        }
    }

    #[test]
    fn unusable_addresses_are_refused() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "fe80::1",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
            assert!(usable_address(ip).is_err(), "{a}");
        }
        for a in ["198.18.0.1", "fd00:198:18::1", "10.0.0.1"] {
            let ip: IpAddr = a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
            assert!(usable_address(ip).is_ok(), "{a}");
        }
    }
}
