//! The policy compiler: model → peer classes, port classes, policy sets and verdict tables
//! (the design brief's §3; `docs/datapath.md` describes the maps and the construction).
//!
//! RFC-style packet classification (Gupta & McKeown): each packet field is mapped to an
//! equivalence class of its own (peer address → peer class through an LPM trie, (protocol,
//! port) → port class through another), the local interface to a policy-set id, and a
//! cross-product table gives the verdict per (set, peer class, port class), stored as
//! exceptions to a per-row default and a per-set default.
//!
//! Semantics are the reference evaluator's: the compiler evaluates rules only through
//! [`crate::evaluator::rule_matches`] and orders policies with the evaluator's own functions
//! (see `eval.rs`), and `compiled_tables_agree_with_reference_evaluator` checks every
//! verdict and deciding rule against [`crate::evaluator::evaluate_packet`] on random
//! inventories.
//!
//! The output is slot-independent; [`to_map_entries`] renders it into the exact map keys
//! and values of `enforcer-common` for one table slot, [`diff`] compares two renderings and
//! [`check_capacity`] checks them against the maps' sizes.

mod bits;
mod eval;
mod maps;
mod peers;
mod ports;
mod rules;

#[cfg(test)]
mod difftest;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    hash::Hash,
    net::IpAddr,
    time::{Duration, Instant},
};

use enforcer_common::{PORT_CLASS_ON_MISS, PORT_KIND_DST, PORT_KIND_SRC};
use ipnet::IpNet;
use serde::Serialize;

pub use maps::{
    CapacityError, Change, LpmEntry, MapDiff, MapEntries, MapError, check_capacity, diff,
    lookup_entries, port_data, to_map_entries,
};
pub use ports::interval_prefixes;
pub use rules::{RuleInfo, RuleTable};

use crate::{
    evaluator::{Endpoint, Options, Packet, Verdict, sorted_tiers},
    model::{Direction, Inventory},
};

use self::{
    eval::{Ctx, Decided, PreparedSet, SetData},
    peers::{Membership, Regions},
    ports::{PortSpace, is_family_icmp},
};

/// An endpoint the compiler produces policy sets for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EndpointId {
    /// A workload pod (not host-networked).
    Pod { namespace: String, name: String },
    /// A HostEndpoint.
    Host { name: String },
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointId::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            EndpointId::Host { name } => write!(f, "host endpoint {name}"),
        }
    }
}

/// The policy sets of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EndpointSets {
    pub ingress: u32,
    pub egress: u32,
    /// A host endpoint (failsafe ports apply; `ENDPOINT_HOST`).
    pub is_host: bool,
}

impl EndpointSets {
    pub fn set(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

/// One verdict cell: the enforced decision and the one with staged policies enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CompiledVerdict {
    pub action: Verdict,
    pub staged_action: Verdict,
    pub rule_id: u32,
    pub staged_rule_id: u32,
}

impl CompiledVerdict {
    fn of(enforced: Decided, staged: Decided) -> CompiledVerdict {
        let v = |d: Decided| {
            if d.allow {
                Verdict::Allow
            } else {
                Verdict::Deny
            }
        };
        CompiledVerdict {
            action: v(enforced),
            staged_action: v(staged),
            rule_id: enforced.id,
            staged_rule_id: staged.id,
        }
    }
}

/// One peer class's row of a set: its default and the port classes that differ from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RowTable {
    /// `None`: the row default equals the set default (no row-default entry is written).
    pub default: Option<CompiledVerdict>,
    pub exceptions: BTreeMap<u32, CompiledVerdict>,
}

/// The verdict table of one policy set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SetTable {
    pub default: CompiledVerdict,
    /// Rows that differ from the set default, by peer class.
    pub rows: BTreeMap<u32, RowTable>,
}

/// A peer prefix and its class (`PEER_V4` / `PEER_V6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerPrefix {
    pub net: IpNet,
    pub class: u32,
}

/// Which port a `PORTS` entry classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// The destination port, or `type << 8 | code` for ICMP/ICMPv6, 0 for other protocols.
    Dst,
    /// The source port (port protocols only).
    Src,
}

impl PortKind {
    pub fn code(self) -> u8 {
        match self {
            PortKind::Dst => PORT_KIND_DST,
            PortKind::Src => PORT_KIND_SRC,
        }
    }
}

/// A `PORTS` prefix: `port` with its top `prefix_len` bits (0..=16) significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PortPrefix {
    pub kind: PortKind,
    pub protocol: u8,
    pub port: u16,
    pub prefix_len: u8,
    pub class: u32,
}

impl PortPrefix {
    fn matches(&self, kind: PortKind, protocol: u8, value: u16) -> bool {
        let shift = 16 - u32::from(self.prefix_len);
        self.kind == kind
            && self.protocol == protocol
            && (u32::from(self.port ^ value) >> shift) == 0
    }
}

/// The verdict key's port class: `dst_class << 16 | src_class`.
pub fn port_class(dst_class: u32, src_class: u32) -> u32 {
    (dst_class << 16) | src_class
}

/// The values the datapath looks `PORTS` up with: (protocol, destination value, source
/// value). The destination value is the destination port for TCP/UDP/SCTP/UDPLite,
/// `type << 8 | code` for ICMP in IPv4 and ICMPv6 in IPv6, 0 otherwise (ICMPv6 in IPv4 and
/// ICMP in IPv6 included: the datapath does not parse them); the source value is the source
/// port for port protocols, 0 otherwise.
pub fn port_key(packet: &Packet) -> (u8, u16, u16) {
    let p = packet.protocol;
    if p.has_ports() {
        (
            p.0,
            packet.dst_port.unwrap_or(0),
            packet.src_port.unwrap_or(0),
        )
    } else if is_family_icmp(p.0, packet.src.is_ipv6()) {
        let t = u16::from(packet.icmp_type.unwrap_or(0));
        let c = u16::from(packet.icmp_code.unwrap_or(0));
        (p.0, (t << 8) | c, 0)
    } else {
        (p.0, 0, 0)
    }
}

/// Sizes of a compilation, for logs, `check` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompileStats {
    pub endpoints: usize,
    /// Distinct prefixes (regions) considered, per family.
    pub regions_v4: usize,
    pub regions_v6: usize,
    pub peer_classes_v4: usize,
    pub peer_classes_v6: usize,
    /// `PEER_V4` + `PEER_V6` entries.
    pub peer_prefixes: usize,
    /// Elementary (protocol, port interval) cells evaluated.
    pub port_cells: usize,
    pub dst_port_classes: usize,
    pub src_port_classes: usize,
    pub port_prefixes: usize,
    /// Policy sets by exact signature, and after merging identical tables.
    pub signature_sets: usize,
    pub sets: usize,
    /// `VERDICTS` entries (exceptions, row defaults and set defaults).
    pub verdict_entries: usize,
    pub rules: usize,
    pub elapsed: Duration,
}

/// The compiler's output: everything the maps hold, slot-independent.
#[derive(Debug, Clone, Serialize)]
pub struct Compiled {
    pub endpoints: BTreeMap<EndpointId, EndpointSets>,
    /// `PEER_V4` prefixes (classes disjoint from `peers_v6`'s); the pruned LPM content.
    pub peers_v4: Vec<PeerPrefix>,
    pub peers_v6: Vec<PeerPrefix>,
    /// `PORTS` prefixes (classes other than the default).
    pub port_prefixes: Vec<PortPrefix>,
    /// Whether any rule constrains source ports (`CONFIG_SRC_PORTS`): the datapath looks the
    /// source port up only then.
    pub uses_src_ports: bool,
    /// Tables by set id.
    pub sets: Vec<SetTable>,
    pub rules: RuleTable,
    pub stats: CompileStats,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "two {0} entries have the same name: endpoint names must be unique (remove or rename the duplicate)"
    )]
    DuplicateEndpoint(EndpointId),
    #[error(
        "the rules need {needed} distinct {kind} port classes but the key holds at most {max}: \
         use fewer distinct port ranges"
    )]
    TooManyPortClasses {
        kind: &'static str,
        needed: usize,
        max: usize,
    },
    #[error("internal compiler error: {0} (please report this with the input)")]
    Internal(&'static str),
}

/// How a lookup found its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictHit {
    Exact,
    RowDefault,
    SetDefault,
}

/// What a lookup returns: the verdict, the classes on the way, and where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LookupResult {
    pub action: Verdict,
    pub rule_id: u32,
    pub staged_action: Verdict,
    pub staged_rule_id: u32,
    pub set: u32,
    pub peer_class: u32,
    pub port_class: u32,
    pub hit: VerdictHit,
}

/// A lookup that found no verdict; the datapath's matching fail mode in brackets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0} is not a compiled endpoint (REASON_PASS_NO_ENDPOINT / REASON_DENY_NO_ENDPOINT)")]
    UnknownEndpoint(String),
    #[error("no peer prefix matches {0} (REASON_DENY_NO_VERDICT)")]
    NoPeerClass(IpAddr),
    #[error("no verdict for set {set} (REASON_DENY_NO_VERDICT)")]
    NoVerdict { set: u32 },
}

fn lpm_peer(prefixes: &[PeerPrefix], addr: IpAddr) -> Option<u32> {
    prefixes
        .iter()
        .filter(|p| p.net.contains(&addr))
        .max_by_key(|p| p.net.prefix_len())
        .map(|p| p.class)
}

fn lpm_port(prefixes: &[PortPrefix], kind: PortKind, protocol: u8, value: u16) -> Option<u32> {
    prefixes
        .iter()
        .filter(|p| p.matches(kind, protocol, value))
        .max_by_key(|p| p.prefix_len)
        .map(|p| p.class)
}

impl Compiled {
    /// The verdict for a packet at an endpoint, looked up exactly as the datapath does:
    /// the endpoint's set for the direction; the peer (source for ingress, destination for
    /// egress) through the peer LPM; (protocol, port) through the port LPM (a miss is the
    /// default class), the source port too when `uses_src_ports`; then `VERDICTS` exact,
    /// row default, set default. Linear scans: for tests and `explain`, not for speed.
    pub fn lookup(
        &self,
        endpoint: &EndpointId,
        direction: Direction,
        packet: &Packet,
    ) -> Result<LookupResult, LookupError> {
        let sets = self
            .endpoints
            .get(endpoint)
            .ok_or_else(|| LookupError::UnknownEndpoint(endpoint.to_string()))?;
        let set = sets.set(direction);
        let peer = match direction {
            Direction::Ingress => packet.src,
            Direction::Egress => packet.dst,
        };
        let prefixes = if peer.is_ipv4() {
            &self.peers_v4
        } else {
            &self.peers_v6
        };
        let peer_class = lpm_peer(prefixes, peer).ok_or(LookupError::NoPeerClass(peer))?;
        let (proto, dst_value, src_value) = port_key(packet);
        let dst = lpm_port(&self.port_prefixes, PortKind::Dst, proto, dst_value)
            .unwrap_or(PORT_CLASS_ON_MISS);
        let src = if self.uses_src_ports {
            lpm_port(&self.port_prefixes, PortKind::Src, proto, src_value)
                .unwrap_or(PORT_CLASS_ON_MISS)
        } else {
            PORT_CLASS_ON_MISS
        };
        let port_class = port_class(dst, src);
        let table = self
            .sets
            .get(set as usize)
            .ok_or(LookupError::NoVerdict { set })?;
        let row = table.rows.get(&peer_class);
        let (v, hit) = if let Some(v) = row.and_then(|r| r.exceptions.get(&port_class)) {
            (*v, VerdictHit::Exact)
        } else if let Some(v) = row.and_then(|r| r.default) {
            (v, VerdictHit::RowDefault)
        } else {
            (table.default, VerdictHit::SetDefault)
        };
        Ok(LookupResult {
            action: v.action,
            rule_id: v.rule_id,
            staged_action: v.staged_action,
            staged_rule_id: v.staged_rule_id,
            set,
            peer_class,
            port_class,
            hit,
        })
    }

    /// The rule table entry of an id.
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(id)
    }
}

/// Interns values into dense ids in order of first appearance.
struct Interner<T> {
    ids: HashMap<T, u32>,
    values: Vec<T>,
}

impl<T: Hash + Eq + Clone> Interner<T> {
    fn new() -> Self {
        Interner {
            ids: HashMap::new(),
            values: Vec::new(),
        }
    }

    /// The id and whether it is new.
    fn intern(&mut self, v: T) -> (u32, bool) {
        if let Some(&id) = self.ids.get(&v) {
            return (id, false);
        }
        let id = self.values.len() as u32;
        self.values.push(v.clone());
        self.ids.insert(v, id);
        (id, true)
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.values.get(id as usize)
    }
}

/// The endpoints to compile: workload pods (not host-networked) and host endpoints, with
/// their first address per family.
/// What policy selection and local rule sides can see of an endpoint, besides its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum EndpointIdentity<'a> {
    Pod {
        namespace: &'a str,
        labels: &'a crate::model::Labels,
        service_account: &'a str,
        ports: &'a [crate::model::NamedPort],
    },
    /// Host endpoints are not grouped.
    Other(&'a EndpointId),
}

/// An endpoint to compile, with its first address per family (v4, v6).
type EndpointEntry<'a> = (EndpointId, Endpoint<'a>, [Option<IpAddr>; 2]);

fn endpoints(inv: &Inventory) -> Result<Vec<EndpointEntry<'_>>, CompileError> {
    let first = |ips: &[IpAddr]| {
        [
            ips.iter().find(|a| a.is_ipv4()).copied(),
            ips.iter().find(|a| a.is_ipv6()).copied(),
        ]
    };
    let mut out = Vec::new();
    for p in inv.pods.iter().filter(|p| !p.host_network) {
        let id = EndpointId::Pod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        out.push((id, Endpoint::Workload(p), first(&p.ips)));
    }
    for h in &inv.host_endpoints {
        out.push((
            EndpointId::Host {
                name: h.name.clone(),
            },
            Endpoint::Host(h),
            first(&h.expected_ips),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(CompileError::DuplicateEndpoint(w[0].0.clone()));
        }
    }
    Ok(out)
}

/// Renumbers keys densely in order of first appearance (`first` gets the first id).
fn renumber(keys: &[u32], base: u32) -> (Vec<u32>, usize) {
    let mut map: HashMap<u32, u32> = HashMap::new();
    let out = keys
        .iter()
        .map(|k| {
            let n = base + map.len() as u32;
            *map.entry(*k).or_insert(n)
        })
        .collect();
    (out, map.len())
}

/// Partition refinement of port intervals against rows: afterwards `keys[i] == keys[j]`
/// exactly when they were equal before and every row gives the cells of `i` (`cells[i]`, in
/// order) the same values as those of `j` (a cell past a row's end reads as `u32::MAX`).
/// The result is the common refinement of the per-row partitions, the same whatever the row
/// order; ids are only compared, never shown (see `renumber`).
fn refine(keys: &mut [u32], cells: &[Vec<usize>], rows: &[&[u32]]) {
    let value = |row: &[u32], c: usize| row.get(c).copied().unwrap_or(u32::MAX);
    // A hash of each interval's column narrows the comparisons; equal columns are confirmed
    // value by value.
    let hashes: Vec<u64> = cells
        .iter()
        .map(|cs| {
            let mut h: u64 = cs.len() as u64;
            for row in rows {
                for &c in cs {
                    h = (h.rotate_left(5) ^ u64::from(value(row, c)))
                        .wrapping_mul(0x517c_c1b7_2722_0a95);
                }
            }
            h
        })
        .collect();
    let same = |i: usize, j: usize| -> bool {
        match (cells.get(i), cells.get(j)) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && rows.iter().all(|row| {
                        a.iter()
                            .zip(b)
                            .all(|(&x, &y)| value(row, x) == value(row, y))
                    })
            }
            _ => false,
        }
    };
    let mut groups: HashMap<(u32, u64), Vec<usize>> = HashMap::new();
    let mut out: Vec<u32> = Vec::with_capacity(keys.len());
    for (i, (&k, &h)) in keys.iter().zip(&hashes).enumerate() {
        let reps = groups.entry((k, h)).or_default();
        let class = match reps.iter().find(|&&r| same(i, r)) {
            Some(&r) => out.get(r).copied().unwrap_or(u32::MAX),
            None => {
                reps.push(i);
                i as u32
            }
        };
        out.push(class);
    }
    keys.copy_from_slice(&out);
}

/// The most frequent value (ties: the smallest). `scratch` is reused between calls.
fn most_frequent(values: impl Iterator<Item = u32>, scratch: &mut Vec<u32>) -> Option<u32> {
    scratch.clear();
    scratch.extend(values);
    scratch.sort_unstable();
    let mut best: Option<(usize, u32)> = None;
    for run in scratch.chunk_by(|a, b| a == b) {
        if let Some(&v) = run.first()
            && best.is_none_or(|(n, _)| run.len() > n)
        {
            best = Some((run.len(), v));
        }
    }
    best.map(|(_, v)| v)
}

/// A row's default value and its exceptions (port class, value), sorted by port class.
type CompressedRow = (u32, Vec<(u32, u32)>);

/// Set tables deduplicated in order of first appearance, without keeping a second copy of
/// each as a hash key.
#[derive(Default)]
struct TableSet {
    tables: Vec<SetTable>,
    by_hash: HashMap<u64, Vec<u32>>,
}

impl TableSet {
    fn intern(&mut self, table: SetTable) -> u32 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(&table);
        let ids = self.by_hash.entry(h).or_default();
        if let Some(&id) = ids
            .iter()
            .find(|&&id| self.tables.get(id as usize) == Some(&table))
        {
            return id;
        }
        let id = self.tables.len() as u32;
        self.tables.push(table);
        ids.push(id);
        id
    }
}

/// Compiles the inventory (enforced and staged policies) into verdict tables.
pub fn compile(inv: &Inventory, opts: &Options) -> Result<Compiled, CompileError> {
    let started = Instant::now();
    let eps = endpoints(inv)?;
    let tiers = sorted_tiers(inv);
    let workload_namespaces: BTreeSet<String> = eps
        .iter()
        .filter_map(|(id, _, _)| match id {
            EndpointId::Pod { namespace, .. } => Some(namespace.clone()),
            EndpointId::Host { .. } => None,
        })
        .collect();
    let rules = RuleTable::build(inv, opts, &tiers, &workload_namespaces);
    let regions = Regions::build(inv);
    let space = PortSpace::build(inv, opts, !inv.host_endpoints.is_empty());
    let ctx = Ctx::new(inv, opts, &regions, &space, &rules, &tiers)?;

    // Policy sets, grouped by exact signature. Endpoints with the same identity (kind, what
    // selectors see of them, and their addresses' memberships) have the same sets: compute
    // those once per identity.
    let mut set_ids: HashMap<SetData, usize> = HashMap::new();
    let mut sets: Vec<SetData> = Vec::new();
    let mut ep_sets: Vec<(EndpointId, [usize; 2], bool)> = Vec::new();
    let mut by_identity: HashMap<(EndpointIdentity, [Option<Membership>; 2]), [usize; 2]> =
        HashMap::new();
    for (id, ep, local) in &eps {
        let identity = match ep {
            Endpoint::Workload(p) => EndpointIdentity::Pod {
                namespace: &p.namespace,
                labels: &p.labels,
                service_account: &p.service_account,
                ports: &p.ports,
            },
            _ => EndpointIdentity::Other(id),
        };
        let key = (
            identity,
            local.map(|a| a.map(|a| regions.membership(a, None))),
        );
        if let Some(ids) = by_identity.get(&key) {
            ep_sets.push((id.clone(), *ids, matches!(ep, Endpoint::Host(_))));
            continue;
        }
        let selects = ctx.selects(ep);
        let mut scoped = [None, None];
        let mut ids = [0usize; 2];
        for (i, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let data = ctx.set_data(ep, *local, dir, &selects, &mut scoped)?;
            ids[i] = match set_ids.get(&data) {
                Some(&s) => s,
                None => {
                    sets.push(data.clone());
                    set_ids.insert(data, sets.len() - 1);
                    sets.len() - 1
                }
            };
        }
        by_identity.insert(key, ids);
        ep_sets.push((id.clone(), ids, matches!(ep, Endpoint::Host(_))));
    }
    drop(set_ids);
    drop(by_identity);
    let prepared: Vec<PreparedSet<'_>> = sets.iter().map(|s| ctx.prepare(s)).collect();

    // Walk every region: its row over (sets × port cells) is its behaviour; equal rows make
    // one peer class. Each new row also refines the port cells.
    let mut by_dst: Vec<Vec<usize>> = vec![Vec::new(); space.dst.len()];
    let mut by_src: Vec<Vec<usize>> = vec![Vec::new(); space.src.len()];
    for (ci, c) in space.combos.iter().enumerate() {
        by_dst[c.dst].push(ci);
        if let Some(j) = c.src {
            by_src[j].push(ci);
        }
    }
    let mut dst_keys: Vec<u32> = space
        .dst
        .iter()
        .map(|d| match (space.uses_src_ports, d.proto) {
            (true, Some(p)) => u32::from(p) + 1,
            _ => 0,
        })
        .collect();
    let mut src_keys: Vec<u32> = space.src.iter().map(|s| u32::from(s.proto)).collect();
    let mut values: Interner<CompiledVerdict> = Interner::new();
    let mut set_rows: Vec<Interner<Vec<u32>>> = (0..sets.len()).map(|_| Interner::new()).collect();
    // Per set, the row of each peer key seen (see `Ctx::peer_key`).
    let mut row_of_key: Vec<HashMap<(bool, Vec<u32>), u32>> = vec![HashMap::new(); sets.len()];
    let mut bit_patterns: HashMap<bits::Bits, u32> = HashMap::new();
    let mut classes: Interner<(bool, Vec<u32>)> = Interner::new();
    let mut region_class: Vec<Option<u32>> = vec![None; regions.len()];
    // Regions with equal memberships behave alike: walk one of them.
    let mut by_membership: HashMap<Membership, u32> = HashMap::new();
    let mut pair_ids: HashMap<(Decided, Decided), u32> = HashMap::new();
    for (ri, rep) in regions.rep.iter().enumerate() {
        let Some(addr) = *rep else { continue };
        let membership = regions.membership(addr, Some(ri));
        if let Some(&k) = by_membership.get(&membership) {
            region_class[ri] = Some(k);
            continue;
        }
        let pv = ctx.peer_vals(addr, ri, membership.has_entities())?;
        let mut row_ids = Vec::with_capacity(sets.len());
        for (si, set) in prepared.iter().enumerate() {
            let (key, matched) = ctx.peer_key(set, &pv, &mut bit_patterns)?;
            let known = row_of_key.get(si).and_then(|m| m.get(&key)).copied();
            let row_id = match known {
                Some(id) => id,
                None => {
                    let mut last: Option<((Decided, Decided), u32)> = None;
                    let mut row = Vec::with_capacity(space.combos.len());
                    for pair in ctx.evaluate(set, &pv, &matched)? {
                        let id = match last {
                            Some((p, id)) if p == pair => id,
                            _ => *pair_ids.entry(pair).or_insert_with(|| {
                                values.intern(CompiledVerdict::of(pair.0, pair.1)).0
                            }),
                        };
                        last = Some((pair, id));
                        row.push(id);
                    }
                    let interner = set_rows
                        .get_mut(si)
                        .ok_or(CompileError::Internal("set rows"))?;
                    let (id, _) = interner.intern(row);
                    if let Some(m) = row_of_key.get_mut(si) {
                        m.insert(key, id);
                    }
                    id
                }
            };
            row_ids.push(row_id);
        }
        let (class, _) = classes.intern((addr.is_ipv6(), row_ids));
        region_class[ri] = Some(class);
        by_membership.insert(membership, class);
    }
    // Port cells are told apart by every distinct row.
    let all_rows: Vec<&[u32]> = set_rows
        .iter()
        .flat_map(|r| r.values.iter().map(Vec::as_slice))
        .collect();
    refine(&mut dst_keys, &by_dst, &all_rows);
    refine(&mut src_keys, &by_src, &all_rows);
    drop(all_rows);
    drop(row_of_key);

    // Port classes: the "other protocol" interval (first, when present) gets class 0.
    let (dst_class, n_dst) = renumber(&dst_keys, 0);
    let (src_class, n_src) = renumber(&src_keys, 1);
    if n_dst >= 0xffff {
        return Err(CompileError::TooManyPortClasses {
            kind: "destination",
            needed: n_dst,
            max: 0xfffe,
        });
    }
    if n_src >= 0xffff {
        return Err(CompileError::TooManyPortClasses {
            kind: "source",
            needed: n_src,
            max: 0xfffe,
        });
    }
    let combo_port_class: Vec<u32> = space
        .combos
        .iter()
        .map(|c| {
            port_class(
                dst_class.get(c.dst).copied().unwrap_or(0),
                c.src
                    .and_then(|j| src_class.get(j).copied())
                    .unwrap_or(PORT_CLASS_ON_MISS),
            )
        })
        .collect();
    let mut port_prefixes = Vec::new();
    let mut push_intervals = |kind: PortKind, ivs: Vec<(u8, u16, u16, u32)>| {
        // Merge adjacent intervals of one protocol and class, then cover them with prefixes.
        let mut merged: Vec<(u8, u16, u16, u32)> = Vec::new();
        for iv in ivs {
            match merged.last_mut() {
                Some(last)
                    if last.0 == iv.0
                        && last.3 == iv.3
                        && u32::from(last.2) + 1 == u32::from(iv.1) =>
                {
                    last.2 = iv.2;
                }
                _ => merged.push(iv),
            }
        }
        for (protocol, lo, hi, class) in merged {
            if kind == PortKind::Dst && class == PORT_CLASS_ON_MISS {
                continue;
            }
            for (port, prefix_len) in interval_prefixes(lo, hi) {
                port_prefixes.push(PortPrefix {
                    kind,
                    protocol,
                    port,
                    prefix_len,
                    class,
                });
            }
        }
    };
    push_intervals(
        PortKind::Dst,
        space
            .dst
            .iter()
            .zip(&dst_class)
            .filter_map(|(d, &c)| Some((d.proto?, d.lo, d.hi, c)))
            .collect(),
    );
    push_intervals(
        PortKind::Src,
        space
            .src
            .iter()
            .zip(&src_class)
            .map(|(s, &c)| (s.proto, s.lo, s.hi, c))
            .collect(),
    );

    // Peer prefixes: a region is written only when its class differs from the class the
    // LPM would otherwise find (its nearest written ancestor's).
    let mut effective: Vec<Option<u32>> = vec![None; regions.len()];
    let (mut peers_v4, mut peers_v6) = (Vec::new(), Vec::new());
    for (ri, net) in regions.nets.iter().enumerate() {
        let inherited = regions.parent[ri].and_then(|p| effective.get(p).copied().flatten());
        // Each family's root is always written (the datapath treats a peer miss as "no
        // tables in this slot"); a root its children cover whole takes any class, as no
        // lookup ends there.
        let class = match (region_class[ri], net.prefix_len()) {
            (None, 0) => region_class.iter().flatten().copied().find(|&k| {
                classes
                    .get(k)
                    .is_some_and(|(v6, _)| *v6 == net.addr().is_ipv6())
            }),
            (k, _) => k,
        };
        effective[ri] = match class {
            Some(k) => {
                if inherited != Some(k) {
                    let out = if net.addr().is_ipv4() {
                        &mut peers_v4
                    } else {
                        &mut peers_v6
                    };
                    out.push(PeerPrefix {
                        net: *net,
                        class: k,
                    });
                }
                Some(k)
            }
            None => inherited,
        };
    }

    // Per-set tables over (peer class × port class), compressed, then deduplicated. Each
    // distinct row is compressed once: its default (the most frequent value) and exceptions.
    let n_classes = classes.values.len();
    let mut tables = TableSet::default();
    let mut set_final: Vec<u32> = Vec::with_capacity(sets.len());
    let value = |id: u32| {
        values
            .get(id)
            .copied()
            .ok_or(CompileError::Internal("value"))
    };
    let mut cells: Vec<(u32, u32)> = Vec::new();
    let mut scratch: Vec<u32> = Vec::new();
    for (si, rows_of_set) in set_rows.iter().enumerate() {
        // Per distinct row: its default and its exceptions, sorted by port class.
        let mut compressed: Vec<CompressedRow> = Vec::with_capacity(rows_of_set.values.len());
        for row in &rows_of_set.values {
            cells.clear();
            for (ci, v) in row.iter().enumerate() {
                let pc = *combo_port_class
                    .get(ci)
                    .ok_or(CompileError::Internal("combo"))?;
                cells.push((pc, *v));
            }
            // Stable: the first cell of each port class stands for it (they are all equal).
            cells.sort_by_key(|c| c.0);
            cells.dedup_by(|b, a| {
                debug_assert!(
                    a.0 != b.0 || a.1 == b.1,
                    "port class merged cells that differ"
                );
                a.0 == b.0
            });
            let default = most_frequent(cells.iter().map(|c| c.1), &mut scratch)
                .ok_or(CompileError::Internal("empty row"))?;
            let exceptions: Vec<(u32, u32)> =
                cells.iter().copied().filter(|c| c.1 != default).collect();
            compressed.push((default, exceptions));
        }
        let class_row = |k: usize| -> Result<&CompressedRow, CompileError> {
            let (_, rows) = classes
                .get(k as u32)
                .ok_or(CompileError::Internal("class"))?;
            let row = rows
                .get(si)
                .copied()
                .ok_or(CompileError::Internal("class row"))?;
            compressed
                .get(row as usize)
                .ok_or(CompileError::Internal("row"))
        };
        let mut defaults = Vec::with_capacity(n_classes);
        for k in 0..n_classes {
            defaults.push(class_row(k)?.0);
        }
        let set_default = most_frequent(defaults.iter().copied(), &mut scratch)
            .ok_or(CompileError::Internal("no peer classes"))?;
        let mut table = SetTable {
            default: value(set_default)?,
            rows: BTreeMap::new(),
        };
        for k in 0..n_classes {
            let (d, exceptions) = class_row(k)?;
            if *d == set_default && exceptions.is_empty() {
                continue;
            }
            let ex = exceptions
                .iter()
                .map(|&(pc, v)| Ok((pc, value(v)?)))
                .collect::<Result<BTreeMap<u32, CompiledVerdict>, CompileError>>()?;
            table.rows.insert(
                k as u32,
                RowTable {
                    default: (*d != set_default).then(|| value(*d)).transpose()?,
                    exceptions: ex,
                },
            );
        }
        set_final.push(tables.intern(table));
    }
    let final_id = |s: usize| {
        set_final
            .get(s)
            .copied()
            .ok_or(CompileError::Internal("set id"))
    };
    let mut endpoints_out = BTreeMap::new();
    for (id, [i, e], is_host) in ep_sets {
        endpoints_out.insert(
            id,
            EndpointSets {
                ingress: final_id(i)?,
                egress: final_id(e)?,
                is_host,
            },
        );
    }
    let set_tables = tables.tables;
    let verdict_entries = set_tables
        .iter()
        .map(|t| {
            1 + t
                .rows
                .values()
                .map(|r| usize::from(r.default.is_some()) + r.exceptions.len())
                .sum::<usize>()
        })
        .sum();
    let n_v4_classes = classes.values.iter().filter(|(v6, _)| !v6).count();
    let stats = CompileStats {
        endpoints: endpoints_out.len(),
        regions_v4: regions.nets.iter().filter(|n| n.addr().is_ipv4()).count(),
        regions_v6: regions.nets.iter().filter(|n| n.addr().is_ipv6()).count(),
        peer_classes_v4: n_v4_classes,
        peer_classes_v6: n_classes - n_v4_classes,
        peer_prefixes: peers_v4.len() + peers_v6.len(),
        port_cells: space.combos.len(),
        dst_port_classes: n_dst,
        src_port_classes: n_src,
        port_prefixes: port_prefixes.len(),
        signature_sets: sets.len(),
        sets: set_tables.len(),
        verdict_entries,
        rules: rules.len(),
        elapsed: started.elapsed(),
    };
    Ok(Compiled {
        endpoints: endpoints_out,
        peers_v4,
        peers_v6,
        port_prefixes,
        uses_src_ports: space.uses_src_ports,
        sets: set_tables,
        rules,
        stats,
    })
}
