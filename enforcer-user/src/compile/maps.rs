//! Rendering a compilation into the exact map keys and values of `enforcer-common` for one
//! table slot, comparing two renderings, checking capacities, and looking a packet up in
//! the raw entries the way the datapath does.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::Hash,
    net::IpAddr,
};

use enforcer_common::{
    ACTION_ALLOW, ACTION_DENY, ANY, CONFIG_SRC_PORTS, ENDPOINT_HOST, EndpointKey, EndpointValue,
    MAX_ENDPOINTS, MAX_PEER_PREFIXES, MAX_PORT_PREFIXES, MAX_VERDICTS, PEER_KEY_FIXED_BITS,
    PORT_CLASS_ON_MISS, PORT_KEY_FIXED_BITS, PeerV4Data, PeerV6Data, PortData, VerdictKey,
    VerdictValue,
};

use crate::{
    evaluator::{Packet, Verdict},
    model::Direction,
};

use super::{
    Compiled, CompiledVerdict, EndpointId, LookupError, LookupResult, PortKind, VerdictHit,
    port_class, port_key,
};

/// An LPM trie entry: `prefix_len` leading bits of `data` are significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LpmEntry<D> {
    pub prefix_len: u32,
    pub data: D,
    /// The class (the map's value).
    pub class: u32,
}

/// Every map entry of one table slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapEntries {
    pub slot: u32,
    /// `CONFIG.flags` bits the tables need (`CONFIG_SRC_PORTS`).
    pub config_flags: u32,
    pub endpoints: HashMap<EndpointKey, EndpointValue>,
    pub peer_v4: Vec<LpmEntry<PeerV4Data>>,
    pub peer_v6: Vec<LpmEntry<PeerV6Data>>,
    pub ports: Vec<LpmEntry<PortData>>,
    pub verdicts: HashMap<VerdictKey, VerdictValue>,
}

/// Errors rendering map entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "interface {ifindex} is claimed by both {first} and {second}: one interface can carry one endpoint"
    )]
    IfindexConflict {
        ifindex: u32,
        first: EndpointId,
        second: EndpointId,
    },
}

/// The `PORTS` key data.
pub fn port_data(slot: u32, kind: u8, protocol: u8, port: u16) -> PortData {
    let s = slot.to_be_bytes();
    let p = port.to_be_bytes();
    [s[0], s[1], s[2], s[3], kind, protocol, p[0], p[1]]
}

fn peer_v4_data(slot: u32, a: [u8; 4]) -> PeerV4Data {
    let mut d = [0u8; 8];
    d[..4].copy_from_slice(&slot.to_be_bytes());
    d[4..].copy_from_slice(&a);
    d
}

fn peer_v6_data(slot: u32, a: [u8; 16]) -> PeerV6Data {
    let mut d = [0u8; 20];
    d[..4].copy_from_slice(&slot.to_be_bytes());
    d[4..].copy_from_slice(&a);
    d
}

fn verdict_value(v: &CompiledVerdict) -> VerdictValue {
    let a = |v: Verdict| match v {
        Verdict::Allow => ACTION_ALLOW,
        Verdict::Deny => ACTION_DENY,
    };
    VerdictValue {
        action: a(v.action),
        staged_action: a(v.staged_action),
        rule_id: v.rule_id,
        staged_rule_id: v.staged_rule_id,
        ..VerdictValue::default()
    }
}

/// Renders a compilation for one slot. `ifindexes` gives the interfaces of each endpoint on
/// this node (none: not local, so not written; several: an all-interfaces host endpoint).
/// Only the sets of written endpoints are written.
pub fn to_map_entries(
    c: &Compiled,
    slot: u32,
    ifindexes: &dyn Fn(&EndpointId) -> Vec<u32>,
) -> Result<MapEntries, MapError> {
    let mut m = MapEntries {
        slot,
        config_flags: if c.uses_src_ports {
            CONFIG_SRC_PORTS
        } else {
            0
        },
        ..MapEntries::default()
    };
    let mut owner: HashMap<u32, &EndpointId> = HashMap::new();
    let mut used_sets: HashSet<u32> = HashSet::new();
    for (id, sets) in &c.endpoints {
        for ifindex in ifindexes(id) {
            if let Some(first) = owner.insert(ifindex, id) {
                return Err(MapError::IfindexConflict {
                    ifindex,
                    first: first.clone(),
                    second: id.clone(),
                });
            }
            m.endpoints.insert(
                EndpointKey { slot, ifindex },
                EndpointValue {
                    ingress_set: sets.ingress,
                    egress_set: sets.egress,
                    flags: if sets.is_host { ENDPOINT_HOST } else { 0 },
                    _pad: 0,
                },
            );
            used_sets.extend([sets.ingress, sets.egress]);
        }
    }
    for p in &c.peers_v4 {
        if let IpAddr::V4(a) = p.net.network() {
            m.peer_v4.push(LpmEntry {
                prefix_len: PEER_KEY_FIXED_BITS + u32::from(p.net.prefix_len()),
                data: peer_v4_data(slot, a.octets()),
                class: p.class,
            });
        }
    }
    for p in &c.peers_v6 {
        if let IpAddr::V6(a) = p.net.network() {
            m.peer_v6.push(LpmEntry {
                prefix_len: PEER_KEY_FIXED_BITS + u32::from(p.net.prefix_len()),
                data: peer_v6_data(slot, a.octets()),
                class: p.class,
            });
        }
    }
    for p in &c.port_prefixes {
        m.ports.push(LpmEntry {
            prefix_len: PORT_KEY_FIXED_BITS + u32::from(p.prefix_len),
            data: port_data(slot, p.kind.code(), p.protocol, p.port),
            class: p.class,
        });
    }
    for (set, t) in c.sets.iter().enumerate() {
        let set = set as u32;
        if !used_sets.contains(&set) {
            continue;
        }
        let key = |peer_class, port_class| VerdictKey {
            slot,
            set,
            peer_class,
            port_class,
        };
        m.verdicts.insert(key(ANY, ANY), verdict_value(&t.default));
        for (k, row) in &t.rows {
            if let Some(d) = &row.default {
                m.verdicts.insert(key(*k, ANY), verdict_value(d));
            }
            for (pc, v) in &row.exceptions {
                m.verdicts.insert(key(*k, *pc), verdict_value(v));
            }
        }
    }
    Ok(m)
}

/// One difference between two renderings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<K, V> {
    Insert { key: K, value: V },
    Update { key: K, old: V, new: V },
    Delete { key: K, old: V },
}

/// What turning `old` into `new` writes, per map, in a stable order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapDiff {
    /// (old, new) `CONFIG.flags` bits, when they differ.
    pub config_flags: Option<(u32, u32)>,
    pub endpoints: Vec<Change<EndpointKey, EndpointValue>>,
    pub peer_v4: Vec<Change<(u32, PeerV4Data), u32>>,
    pub peer_v6: Vec<Change<(u32, PeerV6Data), u32>>,
    pub ports: Vec<Change<(u32, PortData), u32>>,
    pub verdicts: Vec<Change<VerdictKey, VerdictValue>>,
}

fn count<K, V>(v: &[Change<K, V>]) -> (usize, usize, usize) {
    v.iter().fold((0, 0, 0), |(i, u, d), c| match c {
        Change::Insert { .. } => (i + 1, u, d),
        Change::Update { .. } => (i, u + 1, d),
        Change::Delete { .. } => (i, u, d + 1),
    })
}

impl MapDiff {
    pub fn is_empty(&self) -> bool {
        self.config_flags.is_none()
            && self.endpoints.is_empty()
            && self.peer_v4.is_empty()
            && self.peer_v6.is_empty()
            && self.ports.is_empty()
            && self.verdicts.is_empty()
    }

    /// Entries written or deleted in all.
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.peer_v4.len()
            + self.peer_v6.len()
            + self.ports.len()
            + self.verdicts.len()
    }
}

/// A one-line-per-map summary: `ENDPOINTS +1 ~0 -2`.
impl fmt::Display for MapDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, (i, u, d): (usize, usize, usize)| {
            writeln!(f, "{name:<9} +{i} ~{u} -{d}")
        };
        if let Some((o, n)) = self.config_flags {
            writeln!(f, "CONFIG    flags {o:#x} -> {n:#x}")?;
        }
        line(f, "ENDPOINTS", count(&self.endpoints))?;
        line(f, "PEER_V4", count(&self.peer_v4))?;
        line(f, "PEER_V6", count(&self.peer_v6))?;
        line(f, "PORTS", count(&self.ports))?;
        line(f, "VERDICTS", count(&self.verdicts))
    }
}

fn diff_map<K, V, S>(
    old: impl IntoIterator<Item = (K, V)>,
    new: impl IntoIterator<Item = (K, V)>,
    sort_key: impl Fn(&K) -> S,
) -> Vec<Change<K, V>>
where
    K: Hash + Eq + Copy,
    V: PartialEq + Copy,
    S: Ord,
{
    let old: HashMap<K, V> = old.into_iter().collect();
    let new: HashMap<K, V> = new.into_iter().collect();
    let mut out = Vec::new();
    for (k, v) in &new {
        match old.get(k) {
            None => out.push(Change::Insert { key: *k, value: *v }),
            Some(o) if o != v => out.push(Change::Update {
                key: *k,
                old: *o,
                new: *v,
            }),
            Some(_) => {}
        }
    }
    for (k, v) in &old {
        if !new.contains_key(k) {
            out.push(Change::Delete { key: *k, old: *v });
        }
    }
    out.sort_by(|a, b| {
        let key = |c: &Change<K, V>| match c {
            Change::Insert { key, .. }
            | Change::Update { key, .. }
            | Change::Delete { key, .. } => sort_key(key),
        };
        key(a).cmp(&key(b))
    });
    out
}

fn lpm_pairs<D: Copy>(v: &[LpmEntry<D>]) -> impl Iterator<Item = ((u32, D), u32)> + '_ {
    v.iter().map(|e| ((e.prefix_len, e.data), e.class))
}

/// The writes that turn the maps' `old` content into `new` (compare renderings of the same
/// slot: the inactive slot's previous content and the new tables).
pub fn diff(old: &MapEntries, new: &MapEntries) -> MapDiff {
    MapDiff {
        config_flags: (old.config_flags != new.config_flags)
            .then_some((old.config_flags, new.config_flags)),
        endpoints: diff_map(
            old.endpoints.iter().map(|(k, v)| (*k, *v)),
            new.endpoints.iter().map(|(k, v)| (*k, *v)),
            |k| (k.slot, k.ifindex),
        ),
        peer_v4: diff_map(lpm_pairs(&old.peer_v4), lpm_pairs(&new.peer_v4), |k| {
            (k.1, k.0)
        }),
        peer_v6: diff_map(lpm_pairs(&old.peer_v6), lpm_pairs(&new.peer_v6), |k| {
            (k.1, k.0)
        }),
        ports: diff_map(lpm_pairs(&old.ports), lpm_pairs(&new.ports), |k| (k.1, k.0)),
        verdicts: diff_map(
            old.verdicts.iter().map(|(k, v)| (*k, *v)),
            new.verdicts.iter().map(|(k, v)| (*k, *v)),
            |k| (k.slot, k.set, k.peer_class, k.port_class),
        ),
    }
}

/// A map would overflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "map {map} needs {needed} entries for one table slot but a slot may use at most {max} \
     (half of {constant}, since both slots are resident while the active one is flipped): {hint}"
)]
pub struct CapacityError {
    pub map: &'static str,
    pub needed: usize,
    pub max: usize,
    pub constant: &'static str,
    pub hint: &'static str,
}

/// Checks one slot's entries against the map sizes in `enforcer-common` (each slot may use
/// half of a map).
pub fn check_capacity(m: &MapEntries) -> Result<(), CapacityError> {
    let checks: [(&'static str, usize, u32, &'static str, &'static str); 4] = [
        (
            "ENDPOINTS",
            m.endpoints.len(),
            MAX_ENDPOINTS,
            "MAX_ENDPOINTS",
            "this node has more interfaces to police than Enforcer supports; raise MAX_ENDPOINTS in enforcer-common and rebuild",
        ),
        (
            "PEER_V4+PEER_V6",
            m.peer_v4.len().max(m.peer_v6.len()),
            MAX_PEER_PREFIXES,
            "MAX_PEER_PREFIXES",
            "too many distinct network-set CIDRs and pod addresses that policy treats differently; merge or shrink network sets (aggregate CIDRs) or raise MAX_PEER_PREFIXES",
        ),
        (
            "PORTS",
            m.ports.len(),
            MAX_PORT_PREFIXES,
            "MAX_PORT_PREFIXES",
            "too many distinct port ranges in rules; use fewer, wider ranges or raise MAX_PORT_PREFIXES",
        ),
        (
            "VERDICTS",
            m.verdicts.len(),
            MAX_VERDICTS,
            "MAX_VERDICTS",
            "too many (policy set, peer class, port class) combinations differ from their defaults; reduce per-pod policy variety or raise MAX_VERDICTS",
        ),
    ];
    for (map, needed, max, constant, hint) in checks {
        let max = (max / 2) as usize;
        if needed > max {
            return Err(CapacityError {
                map,
                needed,
                max,
                constant,
                hint,
            });
        }
    }
    Ok(())
}

fn lpm_hit(prefix_len: u32, data: &[u8], key: &[u8]) -> bool {
    let bits = prefix_len as usize;
    if bits > data.len() * 8 || data.len() != key.len() {
        return false;
    }
    let full = bits / 8;
    if data[..full] != key[..full] {
        return false;
    }
    let rem = bits % 8;
    rem == 0 || {
        let mask = 0xffu8 << (8 - rem);
        (data[full] & mask) == (key[full] & mask)
    }
}

fn lpm<D: AsRef<[u8]>>(entries: &[LpmEntry<D>], key: &[u8]) -> Option<u32> {
    entries
        .iter()
        .filter(|e| lpm_hit(e.prefix_len, e.data.as_ref(), key))
        .max_by_key(|e| e.prefix_len)
        .map(|e| e.class)
}

/// Looks a packet up in raw map entries exactly as the datapath does (see
/// [`Compiled::lookup`](super::Compiled::lookup)), at the interface `ifindex`.
pub fn lookup_entries(
    m: &MapEntries,
    ifindex: u32,
    direction: Direction,
    packet: &Packet,
) -> Result<LookupResult, LookupError> {
    let slot = m.slot;
    let ep = m
        .endpoints
        .get(&EndpointKey { slot, ifindex })
        .ok_or_else(|| LookupError::UnknownEndpoint(format!("ifindex {ifindex}")))?;
    let set = match direction {
        Direction::Ingress => ep.ingress_set,
        Direction::Egress => ep.egress_set,
    };
    let peer = match direction {
        Direction::Ingress => packet.src,
        Direction::Egress => packet.dst,
    };
    let peer_class = match peer {
        IpAddr::V4(a) => lpm(&m.peer_v4, &peer_v4_data(slot, a.octets())),
        IpAddr::V6(a) => lpm(&m.peer_v6, &peer_v6_data(slot, a.octets())),
    }
    .ok_or(LookupError::NoPeerClass(peer))?;
    let (proto, dst_value, src_value) = port_key(packet);
    let dst = lpm(
        &m.ports,
        &port_data(slot, PortKind::Dst.code(), proto, dst_value),
    )
    .unwrap_or(PORT_CLASS_ON_MISS);
    let src = if m.config_flags & CONFIG_SRC_PORTS != 0 {
        lpm(
            &m.ports,
            &port_data(slot, PortKind::Src.code(), proto, src_value),
        )
        .unwrap_or(PORT_CLASS_ON_MISS)
    } else {
        PORT_CLASS_ON_MISS
    };
    let port_class = port_class(dst, src);
    let get = |peer_class, port_class| {
        m.verdicts.get(&VerdictKey {
            slot,
            set,
            peer_class,
            port_class,
        })
    };
    let (v, hit) = if let Some(v) = get(peer_class, port_class) {
        (v, VerdictHit::Exact)
    } else if let Some(v) = get(peer_class, ANY) {
        (v, VerdictHit::RowDefault)
    } else if let Some(v) = get(ANY, ANY) {
        (v, VerdictHit::SetDefault)
    } else {
        return Err(LookupError::NoVerdict { set });
    };
    let verdict = |a: u8| {
        if a == ACTION_ALLOW {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    };
    Ok(LookupResult {
        action: verdict(v.action),
        rule_id: v.rule_id,
        staged_action: verdict(v.staged_action),
        staged_rule_id: v.staged_rule_id,
        set,
        peer_class,
        port_class,
        hit,
    })
}
