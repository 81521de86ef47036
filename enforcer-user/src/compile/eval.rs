//! Evaluating rules by parts.
//!
//! The reference evaluator's `rule_matches` is a conjunction of independent predicates: the
//! rule's protocol/ICMP/IP-version fields (which see only the packet's protocol, ports and
//! family), its source entity (which sees only the source address and port) and its
//! destination entity (destination address and port). Each entity predicate is in turn the
//! conjunction of an address part (nets, selectors) and, for numeric port ranges, a port part.
//! The compiler evaluates each part on its own, always through `rule_matches` itself on a copy
//! of the rule with the other fields cleared (an empty `EntityRule` matches everything), so
//! the semantics stay the evaluator's:
//!
//! - the *common* part per (family, port cell), shared by every endpoint and peer;
//! - the *local* part (the side of the endpoint being protected) per endpoint;
//! - the *peer* part per peer region.
//!
//! Named ports are resolved against the entities the rule's selector picks at the address,
//! so a side with named ports is evaluated whole, per (address, port cell).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use crate::{
    evaluator::{
        DEFAULT_ALLOW_PROFILE, Endpoint, Options, Packet, RuleSelector, policy_selects,
        policy_view, rule_matches, sorted_policies,
    },
    model::{
        Action, Direction, EntityRule, IcmpMatch, Inventory, Policy, PortSpec, Protocol, Rule,
        Tier, TierDefault,
    },
};

use super::{
    CompileError,
    bits::Bits,
    peers::{Regions, unspecified},
    ports::{Combo, PortSpace, is_family_icmp},
    rules::RuleTable,
};

/// A decision: allow or deny, and the rule table id of what decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Decided {
    pub allow: bool,
    pub id: u32,
}

/// The value of one rule side for one address: per port cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SideVal {
    False,
    True,
    /// The address part holds; the side's numeric port part decides per cell.
    PortBits,
    Bits(Bits),
}

/// One side (source or destination) of a rule, split into parts.
struct Side {
    /// Address part (ports cleared); `None` when it is trivially true.
    addr: Option<Box<Rule>>,
    /// Numeric port part, evaluated per cell once; `None` when the side has no ports.
    ports: Option<Bits>,
    /// The whole side, when it has named ports (evaluated per address and cell).
    full: Option<Box<Rule>>,
}

/// A non-Log rule, ready for evaluation by parts.
pub(crate) struct RulePart {
    policy: usize,
    dir: Direction,
    action: Action,
    decided: Option<Decided>,
    /// Index into `Ctx::commons`; `None`: the rule has no protocol/ICMP/IP-version match.
    common: Option<usize>,
    local: Side,
    peer: Side,
}

/// Which rule parts can match which peer regions, so that a region evaluates only those.
///
/// Parts whose peer side is evaluated through an address part are grouped by *shape*: the
/// evaluated entity rule (whole with named ports, without ports otherwise), whether the side
/// has a numeric port part (`side_val` answers `PortBits` rather than `True` then), the
/// direction, and the policy's namespace and kind, which is all `rule_matches` reads of the
/// policy.
/// Parts of one shape have equal peer values at every address. Each shape is anchored by a
/// necessary condition of `entity_matches` for a match:
///
/// - with `nets`: the address is in one of them, so the region is one of those nets or
///   inside one (`by_net`, keyed by the net's region);
/// - else with an active rule selector: some entity (pod, host endpoint, network set) owns
///   or contains the address (`by_entity`);
/// - else anywhere (`dense`).
///
/// A region that meets no anchor of a shape has the peer value `False` for its parts, as
/// the full evaluation would give.
#[derive(Default)]
struct PeerIndex {
    /// Per shape: a representative part, and every part of the shape.
    shapes: Vec<(usize, Vec<usize>)>,
    by_net: HashMap<usize, Vec<u32>>,
    by_entity: Vec<u32>,
    dense: Vec<u32>,
}

type CommonKey = (
    Option<Protocol>,
    Option<Protocol>,
    Option<IcmpMatch>,
    Option<IcmpMatch>,
    Option<u8>,
);

/// A compiled endpoint program for one view (enforced or staged) and direction: the tiers
/// that apply, each with its non-Log rules in evaluation order and its default, then the
/// profile's decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Program {
    tiers: Vec<ProgTier>,
    end: Decided,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProgTier {
    rules: Vec<usize>,
    /// `None`: the tier passes.
    default: Option<Decided>,
}

/// Everything that decides a policy set's verdicts: endpoints with equal `SetData` get equal
/// tables (this is the exact grouping signature).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SetData {
    pub direction: Direction,
    pub host: bool,
    enforced: Program,
    staged: Program,
    /// The local part of every rule in either program, per family (v4, v6).
    local: Vec<(usize, [SideVal; 2])>,
}

pub(crate) struct Ctx<'a> {
    pub inv: &'a Inventory,
    regions: &'a Regions,
    ports: &'a PortSpace,
    rules: &'a RuleTable,
    tiers: &'a [Tier],
    parts: Vec<RulePart>,
    part_index: HashMap<(usize, Direction, usize), usize>,
    commons: Vec<[Bits; 2]>,
    views: [Vec<usize>; 2],
    ptr_index: HashMap<usize, usize>,
    peer_index: PeerIndex,
    /// Failsafe cells per direction (ingress, egress): (combo, decision).
    failsafe: [Vec<(usize, Decided)>; 2],
}

fn dir_idx(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The packet of a port cell between a local and a peer address. ICMPv6 in IPv4 and ICMP in
/// IPv6 carry no type and code: the datapath does not read them (it looks them up as port
/// 0), so neither does the compiler.
fn packet(dir: Direction, local: IpAddr, peer: IpAddr, c: &Combo) -> Packet {
    let (src, dst) = match dir {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    let icmp = is_family_icmp(c.protocol.0, local.is_ipv6());
    Packet {
        src,
        dst,
        protocol: c.protocol,
        src_port: c.src_port,
        dst_port: c.dst_port,
        icmp_type: if icmp { c.icmp_type } else { None },
        icmp_code: if icmp { c.icmp_code } else { None },
    }
}

const ANY_COMBO: Combo = Combo {
    dst: 0,
    src: None,
    protocol: Protocol(0),
    dst_port: None,
    src_port: None,
    icmp_type: None,
    icmp_code: None,
};

fn bare(rule: &Rule) -> Rule {
    Rule {
        action: rule.action,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        ip_version: None,
        source: EntityRule::default(),
        destination: EntityRule::default(),
        annotations: Default::default(),
    }
}

/// `rule` reduced to one entity side (`local` or peer) set to `er`.
fn with_side(rule: &Rule, dir: Direction, local: bool, er: EntityRule) -> Rule {
    let mut r = bare(rule);
    let is_dst = (dir == Direction::Ingress) == local;
    if is_dst {
        r.destination = er;
    } else {
        r.source = er;
    }
    r
}

/// The rule a part's peer side is evaluated with, and whether it is the whole side (named
/// ports); `None` when the peer side has no address part.
fn shape_of(part: &RulePart) -> Option<(&Rule, bool)> {
    match (&part.peer.full, &part.peer.addr) {
        (Some(r), _) => Some((r, true)),
        (None, Some(r)) => Some((r, false)),
        (None, None) => None,
    }
}

/// Groups the parts' peer sides into shapes and anchors them (see [`PeerIndex`]).
fn build_peer_index(
    inv: &Inventory,
    regions: &Regions,
    parts: &[RulePart],
) -> Result<PeerIndex, CompileError> {
    /// Everything `rule_matches` reads of a peer side at an address (see [`PeerIndex`]).
    type ShapeKey<'r> = (
        Direction,
        bool,
        bool,
        crate::model::PolicyKind,
        Option<&'r str>,
        &'r EntityRule,
    );
    let mut index = PeerIndex::default();
    let mut by_key: HashMap<ShapeKey<'_>, u32> = HashMap::new();
    for (pi, part) in parts.iter().enumerate() {
        let Some((rule, full)) = shape_of(part) else {
            continue;
        };
        let p = inv
            .policies
            .get(part.policy)
            .ok_or(CompileError::Internal("policy index out of range"))?;
        let er = rule.peer(part.dir);
        // Whether the side has a numeric port part: its value is then `PortBits`, not `True`.
        let ports = part.peer.ports.is_some();
        let key = (part.dir, full, ports, p.kind, p.namespace.as_deref(), er);
        let s = match by_key.get(&key) {
            Some(&s) => s,
            None => {
                let s = index.shapes.len() as u32;
                index.shapes.push((pi, Vec::new()));
                by_key.insert(key, s);
                let nets: Option<Vec<usize>> =
                    er.nets.iter().map(|n| regions.region_index(n)).collect();
                match nets {
                    Some(nets) if !nets.is_empty() => {
                        for ri in nets {
                            index.by_net.entry(ri).or_default().push(s);
                        }
                    }
                    _ if RuleSelector::new(p, er).is_active() => index.by_entity.push(s),
                    _ => index.dense.push(s),
                }
                s
            }
        };
        if let Some((_, list)) = index.shapes.get_mut(s as usize) {
            list.push(pi);
        }
    }
    Ok(index)
}

impl<'a> Ctx<'a> {
    pub fn new(
        inv: &'a Inventory,
        opts: &Options,
        regions: &'a Regions,
        ports: &'a PortSpace,
        rules: &'a RuleTable,
        tiers: &'a [Tier],
    ) -> Result<Ctx<'a>, CompileError> {
        let empty = Inventory::default();
        let ptr_index: HashMap<usize, usize> = inv
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p as *const Policy as usize, i))
            .collect();
        let view = |staged: bool| -> Vec<usize> {
            policy_view(inv, staged)
                .into_iter()
                .filter_map(|p| ptr_index.get(&(p as *const Policy as usize)).copied())
                .collect()
        };
        let views = [view(false), view(true)];
        let n = ports.combos.len();
        let v4 = unspecified(false);
        let v6 = unspecified(true);
        let mut common_index: HashMap<CommonKey, usize> = HashMap::new();
        let mut commons: Vec<[Bits; 2]> = Vec::new();
        let mut parts = Vec::new();
        let mut part_index = HashMap::new();
        for (pi, p) in inv.policies.iter().enumerate() {
            for dir in [Direction::Ingress, Direction::Egress] {
                for (index, rule) in p.rules(dir).iter().enumerate() {
                    if rule.action == Action::Log {
                        continue;
                    }
                    let key: CommonKey = (
                        rule.protocol,
                        rule.not_protocol,
                        rule.icmp,
                        rule.not_icmp,
                        rule.ip_version,
                    );
                    let common = if key == (None, None, None, None, None) {
                        None
                    } else if let Some(&ci) = common_index.get(&key) {
                        Some(ci)
                    } else {
                        let mut r = bare(rule);
                        r.protocol = rule.protocol;
                        r.not_protocol = rule.not_protocol;
                        r.icmp = rule.icmp;
                        r.not_icmp = rule.not_icmp;
                        r.ip_version = rule.ip_version;
                        let fam = |a: IpAddr| {
                            let mut b = Bits::zeros(n);
                            for (ci, c) in ports.combos.iter().enumerate() {
                                if rule_matches(&empty, p, &r, &packet(dir, a, a, c)) {
                                    b.set(ci);
                                }
                            }
                            b
                        };
                        commons.push([fam(v4), fam(v6)]);
                        common_index.insert(key, commons.len() - 1);
                        Some(commons.len() - 1)
                    };
                    let side = |local: bool| -> Side {
                        let er = match (dir == Direction::Ingress) == local {
                            true => &rule.destination,
                            false => &rule.source,
                        };
                        let specs = || er.ports.iter().chain(&er.not_ports);
                        if specs().any(|s| matches!(s, PortSpec::Named(_))) {
                            return Side {
                                addr: None,
                                ports: None,
                                full: Some(Box::new(with_side(rule, dir, local, er.clone()))),
                            };
                        }
                        let mut addr_er = er.clone();
                        addr_er.ports.clear();
                        addr_er.not_ports.clear();
                        let addr = (!addr_er.is_empty())
                            .then(|| Box::new(with_side(rule, dir, local, addr_er)));
                        let ports = (specs().next().is_some()).then(|| {
                            let port_er = EntityRule {
                                ports: er.ports.clone(),
                                not_ports: er.not_ports.clone(),
                                ..EntityRule::default()
                            };
                            let r = with_side(rule, dir, local, port_er);
                            let mut b = Bits::zeros(n);
                            for (ci, c) in ports.combos.iter().enumerate() {
                                if rule_matches(&empty, p, &r, &packet(dir, v4, v4, c)) {
                                    b.set(ci);
                                }
                            }
                            b
                        });
                        Side {
                            addr,
                            ports,
                            full: None,
                        }
                    };
                    let decided = match rule.action {
                        Action::Allow | Action::Deny => Some(Decided {
                            allow: rule.action == Action::Allow,
                            id: rules.rule_id(pi, dir, index).ok_or(CompileError::Internal(
                                "rule missing from the rule table",
                            ))?,
                        }),
                        _ => None,
                    };
                    parts.push(RulePart {
                        policy: pi,
                        dir,
                        action: rule.action,
                        decided,
                        common,
                        local: side(true),
                        peer: side(false),
                    });
                    part_index.insert((pi, dir, index), parts.len() - 1);
                }
            }
        }
        let peer_index = build_peer_index(inv, regions, &parts)?;
        let mut failsafe: [Vec<(usize, Decided)>; 2] = [Vec::new(), Vec::new()];
        if !inv.host_endpoints.is_empty() {
            for (d, list) in [(0, &opts.failsafe.inbound), (1, &opts.failsafe.outbound)] {
                for (ci, c) in ports.combos.iter().enumerate() {
                    // The evaluator takes the first entry of the list that matches.
                    if let Some(&(proto, port)) = list
                        .iter()
                        .find(|(proto, port)| *proto == c.protocol && c.dst_port == Some(*port))
                    {
                        let id = rules
                            .failsafe_id(proto, port)
                            .ok_or(CompileError::Internal(
                                "failsafe port missing from the rule table",
                            ))?;
                        failsafe[d].push((ci, Decided { allow: true, id }));
                    }
                }
            }
        }
        Ok(Ctx {
            inv,
            regions,
            ports,
            rules,
            tiers,
            parts,
            part_index,
            commons,
            views,
            ptr_index,
            peer_index,
            failsafe,
        })
    }

    fn policy(&self, i: usize) -> Result<&'a Policy, CompileError> {
        self.inv
            .policies
            .get(i)
            .ok_or(CompileError::Internal("policy index out of range"))
    }

    /// Evaluates one side of a rule for an address.
    fn side_val(
        &self,
        part: &RulePart,
        local: bool,
        scoped: &Inventory,
        addr: IpAddr,
        dir: Direction,
    ) -> Result<SideVal, CompileError> {
        let side = if local { &part.local } else { &part.peer };
        let policy = self.policy(part.policy)?;
        let other = unspecified(addr.is_ipv6());
        let pkt = |c: &Combo| {
            if local {
                packet(dir, addr, other, c)
            } else {
                packet(dir, other, addr, c)
            }
        };
        if let Some(full) = &side.full {
            let mut b = Bits::zeros(self.ports.combos.len());
            for (ci, c) in self.ports.combos.iter().enumerate() {
                if rule_matches(scoped, policy, full, &pkt(c)) {
                    b.set(ci);
                }
            }
            return Ok(if b.is_zero() {
                SideVal::False
            } else if b.is_ones() {
                SideVal::True
            } else {
                SideVal::Bits(b)
            });
        }
        if let Some(r) = &side.addr
            && !rule_matches(scoped, policy, r, &pkt(&ANY_COMBO))
        {
            return Ok(SideVal::False);
        }
        Ok(if side.ports.is_some() {
            SideVal::PortBits
        } else {
            SideVal::True
        })
    }

    /// The program of one endpoint, direction and view.
    fn program(
        &self,
        ep: &Endpoint<'_>,
        selects: &[bool],
        dir: Direction,
        staged: bool,
    ) -> Result<Program, CompileError> {
        let view = &self.views[usize::from(staged)];
        let mut tiers = Vec::new();
        for tier in self.tiers {
            let candidates = view.iter().filter_map(|&i| {
                let p = self.inv.policies.get(i)?;
                (p.tier == tier.name
                    && p.applies_to(dir)
                    && selects.get(i).copied().unwrap_or(false))
                .then_some(p)
            });
            let applying = sorted_policies(candidates);
            if applying.is_empty() {
                continue;
            }
            let mut rules = Vec::new();
            for p in applying {
                let pi = *self
                    .ptr_index
                    .get(&(p as *const Policy as usize))
                    .ok_or(CompileError::Internal("policy not in the inventory"))?;
                for (index, r) in p.rules(dir).iter().enumerate() {
                    if r.action != Action::Log {
                        rules.push(
                            *self
                                .part_index
                                .get(&(pi, dir, index))
                                .ok_or(CompileError::Internal("rule part missing"))?,
                        );
                    }
                }
            }
            let default =
                match tier.default_action {
                    TierDefault::Pass => None,
                    TierDefault::Deny => Some(Decided {
                        allow: false,
                        id: self.rules.tier_default_id(&tier.name).ok_or(
                            CompileError::Internal("tier default missing from the rule table"),
                        )?,
                    }),
                };
            tiers.push(ProgTier { rules, default });
        }
        let missing = CompileError::Internal("profile missing from the rule table");
        let end = match ep {
            Endpoint::Workload(pod) => Decided {
                allow: true,
                id: self
                    .rules
                    .profile_id(&format!("kns.{}", pod.namespace))
                    .ok_or(missing)?,
            },
            Endpoint::Host(hep) if hep.profiles.iter().any(|p| p == DEFAULT_ALLOW_PROFILE) => {
                Decided {
                    allow: true,
                    id: self
                        .rules
                        .profile_id(DEFAULT_ALLOW_PROFILE)
                        .ok_or(missing)?,
                }
            }
            _ => Decided {
                allow: false,
                id: self.rules.host_default_deny_id().ok_or(missing)?,
            },
        };
        Ok(Program { tiers, end })
    }

    /// The set data (grouping signature) of an endpoint in one direction. `local` holds the
    /// endpoint's address per family (v4, v6), `None` when it has none in that family.
    pub fn set_data(
        &self,
        ep: &Endpoint<'_>,
        local: [Option<IpAddr>; 2],
        dir: Direction,
        selects: &[bool],
        scoped: &mut [Option<Inventory>; 2],
    ) -> Result<SetData, CompileError> {
        let enforced = self.program(ep, selects, dir, false)?;
        let staged = self.program(ep, selects, dir, true)?;
        let used: BTreeSet<usize> = enforced
            .tiers
            .iter()
            .chain(&staged.tiers)
            .flat_map(|t| t.rules.iter().copied())
            .collect();
        let mut vals = Vec::with_capacity(used.len());
        for pi in used {
            let part = self
                .parts
                .get(pi)
                .ok_or(CompileError::Internal("rule part out of range"))?;
            let mut pair = [SideVal::True, SideVal::True];
            for (f, slot) in pair.iter_mut().enumerate() {
                let addr = local[f].unwrap_or_else(|| unspecified(f == 1));
                let inv = match &mut scoped[f] {
                    Some(i) => &*i,
                    s @ None => &*s.insert(self.regions.scoped_inventory(self.inv, addr, None)),
                };
                *slot = self.side_val(part, true, inv, addr, dir)?;
            }
            vals.push((pi, pair));
        }
        Ok(SetData {
            direction: dir,
            host: matches!(ep, Endpoint::Host(_)),
            enforced,
            staged,
            local: vals,
        })
    }

    /// Which policies select an endpoint (by policy index).
    pub fn selects(&self, ep: &Endpoint<'_>) -> Vec<bool> {
        self.inv
            .policies
            .iter()
            .map(|p| policy_selects(self.inv, p, ep))
            .collect()
    }
}

/// Where a rule part sits in a program, and which parts of it match regardless of the peer.
struct ProgIndex {
    /// (tier, index within the tier) of each part of the program.
    pos: HashMap<usize, (u32, u32)>,
    /// Per family (v4, v6), per tier: the parts whose peer side is the same at every address
    /// and whose local side can match, as (index within the tier, part).
    constant: [Vec<Vec<(u32, usize)>>; 2],
}

/// A set with its local parts indexed for evaluation.
pub(crate) struct PreparedSet<'s> {
    data: &'s SetData,
    local: HashMap<usize, &'s [SideVal; 2]>,
    /// Enforced and staged programs indexed.
    progs: [ProgIndex; 2],
    /// The staged program equals the enforced one (one walk serves both).
    same_staged: bool,
}

/// The peer-side values of one region: every rule part whose peer side depends on the
/// address and does not rule the region out. Parts absent here are `False` at the region
/// (their address part cannot hold: see `PeerIndex`), or have a constant peer side.
pub(crate) struct PeerVals {
    v6: bool,
    /// (part, index into `vals`), sorted by part.
    entries: Vec<(usize, u32)>,
    vals: Vec<SideVal>,
}

/// The parts of a set that a region's peer values touch: (part, index into
/// `PeerVals::vals`), sorted by part.
pub(crate) type Matched = Vec<(usize, u32)>;

impl Ctx<'_> {
    /// Indexes a set's local parts and programs for [`Ctx::peer_key`] and [`Ctx::evaluate`].
    pub fn prepare<'s>(&self, data: &'s SetData) -> PreparedSet<'s> {
        let local: HashMap<usize, &'s [SideVal; 2]> =
            data.local.iter().map(|(pi, v)| (*pi, v)).collect();
        let index = |prog: &Program| {
            let mut pos = HashMap::new();
            let mut constant: [Vec<Vec<(u32, usize)>>; 2] = [Vec::new(), Vec::new()];
            for (ti, tier) in prog.tiers.iter().enumerate() {
                let mut c: [Vec<(u32, usize)>; 2] = [Vec::new(), Vec::new()];
                for (i, &pi) in tier.rules.iter().enumerate() {
                    pos.insert(pi, (ti as u32, i as u32));
                    let is_constant = self.parts.get(pi).is_some_and(|p| shape_of(p).is_none());
                    if !is_constant {
                        continue;
                    }
                    for (fam, list) in c.iter_mut().enumerate() {
                        if local.get(&pi).is_some_and(|l| l[fam] != SideVal::False) {
                            list.push((i as u32, pi));
                        }
                    }
                }
                let [c4, c6] = c;
                constant[0].push(c4);
                constant[1].push(c6);
            }
            ProgIndex { pos, constant }
        };
        let progs = [index(&data.enforced), index(&data.staged)];
        PreparedSet {
            data,
            local,
            progs,
            same_staged: data.staged == data.enforced,
        }
    }

    /// The peer values of a region (`addr` its representative; `has_entities`: some pod,
    /// host endpoint or network set owns or contains the address). Only the parts whose
    /// address part can hold there are evaluated, once per shape: those anchored at a net
    /// containing the region, those needing an entity when there is one, and the rest.
    pub fn peer_vals(
        &self,
        addr: IpAddr,
        region: usize,
        has_entities: bool,
    ) -> Result<PeerVals, CompileError> {
        let index = &self.peer_index;
        let mut shapes: Vec<u32> = index.dense.clone();
        let mut r = Some(region);
        while let Some(ri) = r {
            if let Some(s) = index.by_net.get(&ri) {
                shapes.extend_from_slice(s);
            }
            r = self.regions.parent.get(ri).copied().flatten();
        }
        if has_entities {
            shapes.extend_from_slice(&index.by_entity);
        }
        shapes.sort_unstable();
        shapes.dedup();
        let mut scoped: Option<Inventory> = None;
        let mut entries = Vec::new();
        let mut vals = Vec::new();
        for s in shapes {
            let (rep, parts) = index
                .shapes
                .get(s as usize)
                .ok_or(CompileError::Internal("peer shape"))?;
            let part = self
                .parts
                .get(*rep)
                .ok_or(CompileError::Internal("rule part out of range"))?;
            let inv = match &mut scoped {
                Some(i) => &*i,
                s @ None => &*s.insert(self.regions.scoped_inventory(self.inv, addr, Some(region))),
            };
            let v = self.side_val(part, false, inv, addr, part.dir)?;
            if v == SideVal::False {
                continue;
            }
            let vi = vals.len() as u32;
            vals.push(v);
            entries.extend(parts.iter().map(|&pi| (pi, vi)));
        }
        entries.sort_unstable();
        Ok(PeerVals {
            v6: addr.is_ipv6(),
            entries,
            vals,
        })
    }

    /// What a set's verdicts depend on at one peer region: the family and the peer value of
    /// each rule whose local side can match and whose peer side depends on the address
    /// (sparse: (part, value code) pairs of the parts whose peer value is not `False`; parts
    /// with a constant peer side are the same at every region). Regions with equal keys get
    /// equal rows for the set. Bit patterns are numbered through `bits`. Also returns the
    /// matched parts, for [`Ctx::evaluate`].
    pub fn peer_key(
        &self,
        set: &PreparedSet<'_>,
        pv: &PeerVals,
        bits: &mut HashMap<Bits, u32>,
    ) -> Result<((bool, Vec<u32>), Matched), CompileError> {
        let fam = usize::from(pv.v6);
        let mut matched: Matched = Vec::new();
        if set.data.local.len() < pv.entries.len() {
            for (pi, local) in &set.data.local {
                if local[fam] == SideVal::False {
                    continue;
                }
                if let Ok(at) = pv.entries.binary_search_by_key(pi, |(p, _)| *p) {
                    matched.extend(pv.entries.get(at).copied());
                }
            }
        } else {
            for &(pi, vi) in &pv.entries {
                if set.local.get(&pi).is_some_and(|l| l[fam] != SideVal::False) {
                    matched.push((pi, vi));
                }
            }
        }
        let mut key = Vec::with_capacity(matched.len() * 2);
        for &(pi, vi) in &matched {
            let code = match pv.vals.get(vi as usize) {
                Some(SideVal::False) | None => return Err(CompileError::Internal("peer value")),
                Some(SideVal::True) => 1,
                Some(SideVal::PortBits) => 2,
                Some(SideVal::Bits(b)) => {
                    let n = bits.len() as u32;
                    3 + match bits.get(b) {
                        Some(&id) => id,
                        None => {
                            bits.insert(b.clone(), n);
                            n
                        }
                    }
                }
            };
            key.push(pi as u32);
            key.push(code);
        }
        Ok(((pv.v6, key), matched))
    }

    /// Runs one program over every port cell for one peer region: the program's parts with
    /// a constant peer side, and the `matched` ones, in program order.
    fn run(
        &self,
        set: &PreparedSet<'_>,
        staged: bool,
        pv: &PeerVals,
        matched: &[(usize, u32)],
    ) -> Result<Vec<Decided>, CompileError> {
        let data = set.data;
        let (prog, index) = if staged {
            (&data.staged, &set.progs[1])
        } else {
            (&data.enforced, &set.progs[0])
        };
        let n = self.ports.combos.len();
        let fam = usize::from(pv.v6);
        let mut items: Vec<(u32, u32, usize, Option<u32>)> = matched
            .iter()
            .filter_map(|&(pi, vi)| {
                let &(t, i) = index.pos.get(&pi)?;
                Some((t, i, pi, Some(vi)))
            })
            .collect();
        items.sort_unstable();
        let mut out: Vec<Option<Decided>> = vec![None; n];
        let mut undecided = Bits::ones(n);
        if data.host {
            for &(c, d) in &self.failsafe[dir_idx(data.direction)] {
                if let Some(o) = out.get_mut(c) {
                    *o = Some(d);
                }
                undecided.clear(c);
            }
        }
        let mut in_tier = Bits::zeros(n);
        let mut m = Bits::zeros(n);
        let mut next = 0;
        for (ti, tier) in prog.tiers.iter().enumerate() {
            let ti = ti as u32;
            let constant: &[(u32, usize)] = index
                .constant
                .get(fam)
                .and_then(|c| c.get(ti as usize))
                .map_or(&[], |c| c.as_slice());
            // This tier's matched parts.
            while items.get(next).is_some_and(|it| it.0 < ti) {
                next += 1;
            }
            let start = next;
            while items.get(next).is_some_and(|it| it.0 == ti) {
                next += 1;
            }
            let tier_items = items.get(start..next).unwrap_or(&[]);
            in_tier.copy_from(&undecided);
            // Merge the constant parts and the matched ones by position.
            let (mut a, mut b) = (0, 0);
            loop {
                if in_tier.is_zero() {
                    break;
                }
                let (pi, peer) = match (constant.get(a), tier_items.get(b)) {
                    (Some(&(ia, pa)), Some(&(_, ib, pb, vb))) => {
                        if ia < ib {
                            a += 1;
                            (pa, None)
                        } else {
                            b += 1;
                            (pb, vb)
                        }
                    }
                    (Some(&(_, pa)), None) => {
                        a += 1;
                        (pa, None)
                    }
                    (None, Some(&(_, _, pb, vb))) => {
                        b += 1;
                        (pb, vb)
                    }
                    (None, None) => break,
                };
                let part = self
                    .parts
                    .get(pi)
                    .ok_or(CompileError::Internal("rule part out of range"))?;
                m.copy_from(&in_tier);
                if let Some(ci) = part.common {
                    let c = self
                        .commons
                        .get(ci)
                        .ok_or(CompileError::Internal("common part"))?;
                    m.and_with(&c[fam]);
                }
                let lv = set
                    .local
                    .get(&pi)
                    .ok_or(CompileError::Internal("local part missing"))?;
                match &lv[fam] {
                    SideVal::False => continue,
                    SideVal::True => {}
                    SideVal::PortBits => {
                        if let Some(b) = &part.local.ports {
                            m.and_with(b);
                        }
                    }
                    SideVal::Bits(b) => m.and_with(b),
                }
                if m.is_zero() {
                    continue;
                }
                // A constant peer side is `PortBits` with ports, `True` without.
                let peer_val = match peer {
                    Some(vi) => pv
                        .vals
                        .get(vi as usize)
                        .ok_or(CompileError::Internal("peer value"))?,
                    None if part.peer.ports.is_some() => &SideVal::PortBits,
                    None => &SideVal::True,
                };
                match peer_val {
                    SideVal::False => continue,
                    SideVal::True => {}
                    SideVal::PortBits => {
                        if let Some(b) = &part.peer.ports {
                            m.and_with(b);
                        }
                    }
                    SideVal::Bits(b) => m.and_with(b),
                }
                if m.is_zero() {
                    continue;
                }
                in_tier.and_not(&m);
                if let Some(d) = part.decided {
                    for c in m.ones_iter() {
                        if let Some(o) = out.get_mut(c) {
                            *o = Some(d);
                        }
                    }
                    undecided.and_not(&m);
                } else {
                    debug_assert_eq!(part.action, Action::Pass);
                }
            }
            if let Some(d) = tier.default {
                for c in in_tier.ones_iter() {
                    if let Some(o) = out.get_mut(c) {
                        *o = Some(d);
                    }
                }
                undecided.and_not(&in_tier);
            }
        }
        Ok(out.into_iter().map(|d| d.unwrap_or(prog.end)).collect())
    }

    /// The (enforced, staged) decisions of a set for one peer region, per port cell.
    /// `matched` is what [`Ctx::peer_key`] returned for the set and region.
    pub fn evaluate(
        &self,
        set: &PreparedSet<'_>,
        pv: &PeerVals,
        matched: &[(usize, u32)],
    ) -> Result<Vec<(Decided, Decided)>, CompileError> {
        let enforced = self.run(set, false, pv, matched)?;
        let staged = if set.same_staged {
            enforced.clone()
        } else {
            self.run(set, true, pv, matched)?
        };
        Ok(enforced.into_iter().zip(staged).collect())
    }
}
