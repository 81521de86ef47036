//! What `enforcer get` shows: endpoints, policies with hit counts, maps and conntrack, read
//! from the pinned maps (through a [`Datapath`] handle, usually [`Datapath::adopt`]) and named
//! with the agent's state file ([`InspectState`]), so it works while the agent is down.
//!
//! Every view is `Serialize` (for `-o json|yaml`) and has a table rendering (`-o table`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use enforcer_common::{
    CT_ICMP_TYPE_CODE_SHIFT, CT_INITIATOR_A, CT_SEEN_REPLY, CT_STATE_MASK, CT_TCP_FIN, CT_TCP_RST,
    CT_TCP_SYN, CtKey, CtValue, ENDPOINT_HOST,
};
use serde::Serialize;

use super::{
    census::{MapStat, census},
    names::{DecidedBy, EndpointName, RuleBook, protocol_name},
    state::InspectState,
    table::Table,
    time::{Clocks, human_duration},
};
use crate::datapath::{ConfigView, Datapath, DatapathError, Hook};

/// A note for people when the state file and the maps disagree (or the state is missing).
fn state_note(state: Option<&InspectState>, generation: u32) -> Option<String> {
    match state {
        None => Some(
            "no agent state file: endpoints and rules are shown by number only (is the agent's \
             --state-dir the one given here?)"
                .into(),
        ),
        Some(s) if s.generation != generation => Some(format!(
            "the state file describes policy generation {} but the maps are at generation {}: \
             names may not match the numbers (the agent is changing policy, or is down after \
             a failed write)",
            s.generation, generation
        )),
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

/// One interface the datapath knows: programmed in the active slot, attached, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRow {
    pub ifindex: u32,
    pub ifname: Option<String>,
    pub endpoint: Option<EndpointName>,
    /// Policy-set ids (none: not programmed in the active slot).
    pub ingress_set: Option<u32>,
    pub egress_set: Option<u32>,
    pub host: bool,
    /// Hooks with a live pinned link (`tc-ingress`: the endpoint's egress policy, `tc-egress`:
    /// its ingress policy).
    pub attached: Vec<Hook>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointsView {
    pub active_slot: u32,
    pub generation: u32,
    pub fail_closed: bool,
    pub endpoints: Vec<EndpointRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub fn endpoints(
    dp: &Datapath,
    state: Option<&InspectState>,
) -> Result<EndpointsView, DatapathError> {
    let config = dp.config()?;
    let entries = dp.entries(config.active_slot)?;
    let mut attached: BTreeMap<u32, (Option<String>, Vec<Hook>)> = BTreeMap::new();
    for l in dp.attached()? {
        let e = attached.entry(l.ifindex).or_default();
        if l.ifname.is_some() {
            e.0 = l.ifname.clone();
        }
        if l.alive {
            e.1.push(l.hook);
        }
    }
    let ifindexes: BTreeSet<u32> = entries
        .endpoints
        .keys()
        .map(|k| k.ifindex)
        .chain(attached.keys().copied())
        .collect();
    let rows = ifindexes
        .into_iter()
        .map(|ifindex| {
            let value = entries
                .endpoints
                .iter()
                .find(|(k, _)| k.ifindex == ifindex)
                .map(|(_, v)| *v);
            let named = state.and_then(|s| s.endpoint(ifindex));
            let (link_name, hooks) = attached.remove(&ifindex).unwrap_or_default();
            EndpointRow {
                ifindex,
                ifname: named
                    .map(|e| e.ifname.clone())
                    .or(link_name)
                    .or_else(|| crate::datapath::netif::ifname(ifindex)),
                endpoint: named.map(|e| e.id.clone()),
                ingress_set: value.map(|v| v.ingress_set),
                egress_set: value.map(|v| v.egress_set),
                host: value.is_some_and(|v| v.flags & ENDPOINT_HOST != 0),
                attached: hooks,
            }
        })
        .collect();
    Ok(EndpointsView {
        active_slot: config.active_slot,
        generation: config.generation,
        fail_closed: config.fail_closed,
        endpoints: rows,
        note: state_note(state, config.generation),
    })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl EndpointsView {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "IFINDEX",
            "IFNAME",
            "ENDPOINT",
            "INGRESS-SET",
            "EGRESS-SET",
            "HOST",
            "ATTACHED",
        ]);
        for e in &self.endpoints {
            let hooks = if e.attached.is_empty() {
                "no".to_owned()
            } else {
                e.attached
                    .iter()
                    .map(|h| h.suffix())
                    .collect::<Vec<_>>()
                    .join("+")
            };
            t.row([
                e.ifindex.to_string(),
                opt(e.ifname.as_ref()),
                opt(e.endpoint.as_ref()),
                opt(e.ingress_set),
                opt(e.egress_set),
                if e.host { "yes" } else { "no" }.to_owned(),
                hooks,
            ]);
        }
        t.render()
    }
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRow {
    pub id: u32,
    pub direction: String,
    pub index: usize,
    pub action: String,
    /// New flows this rule decided.
    pub hits: u64,
    /// New flows it decided in the staged view.
    pub staged_hits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRow {
    pub policy: String,
    pub kind: String,
    pub hits: u64,
    pub staged_hits: u64,
    pub rules: Vec<RuleRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierRow {
    pub tier: String,
    pub policies: Vec<PolicyRow>,
    /// The end-of-tier deny's hits (none: the tier passes by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_tier: Option<DefaultRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultRow {
    pub id: u32,
    pub decided_by: DecidedBy,
    pub hits: u64,
    pub staged_hits: u64,
}

/// tier → policy → rules with hit counts (like `calico-node -bpf policy dump`), then the
/// defaults that are not a tier's (profiles, host endpoint default deny, failsafe ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoliciesView {
    pub generation: u32,
    pub tiers: Vec<TierRow>,
    pub defaults: Vec<DefaultRow>,
    /// Counters of rule ids the rule table does not name (no state file, or a stale one).
    pub unnamed: Vec<DefaultRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Builds the policy view from a rule book and (rule id, hits) counters.
pub fn policies_view(
    book: &RuleBook,
    generation: u32,
    hits: &[(u32, u64)],
    staged: &[(u32, u64)],
    note: Option<String>,
) -> PoliciesView {
    let hits: BTreeMap<u32, u64> = hits.iter().copied().collect();
    let staged: BTreeMap<u32, u64> = staged.iter().copied().collect();
    let h = |id: u32| hits.get(&id).copied().unwrap_or(0);
    let s = |id: u32| staged.get(&id).copied().unwrap_or(0);
    let mut tiers: Vec<TierRow> = Vec::new();
    let mut defaults = Vec::new();
    fn tier_mut<'a>(tiers: &'a mut Vec<TierRow>, name: &str) -> &'a mut TierRow {
        let i = match tiers.iter().position(|t| t.tier == name) {
            Some(i) => i,
            None => {
                tiers.push(TierRow {
                    tier: name.to_owned(),
                    policies: Vec::new(),
                    end_of_tier: None,
                });
                tiers.len() - 1
            }
        };
        &mut tiers[i]
    }
    for (id, d) in book.iter() {
        match d {
            DecidedBy::Rule {
                tier,
                policy,
                kind,
                direction,
                index,
                action,
            } => {
                let t = tier_mut(&mut tiers, tier);
                let p = match t.policies.iter().position(|p| &p.policy == policy) {
                    Some(i) => &mut t.policies[i],
                    None => {
                        t.policies.push(PolicyRow {
                            policy: policy.clone(),
                            kind: kind.clone(),
                            hits: 0,
                            staged_hits: 0,
                            rules: Vec::new(),
                        });
                        let last = t.policies.len() - 1;
                        &mut t.policies[last]
                    }
                };
                p.hits += h(id);
                p.staged_hits += s(id);
                p.rules.push(RuleRow {
                    id,
                    direction: direction.clone(),
                    index: *index,
                    action: action.clone(),
                    hits: h(id),
                    staged_hits: s(id),
                });
            }
            DecidedBy::EndOfTier { tier } => {
                tier_mut(&mut tiers, tier).end_of_tier = Some(DefaultRow {
                    id,
                    decided_by: d.clone(),
                    hits: h(id),
                    staged_hits: s(id),
                });
            }
            _ => defaults.push(DefaultRow {
                id,
                decided_by: d.clone(),
                hits: h(id),
                staged_hits: s(id),
            }),
        }
    }
    let ids: BTreeSet<u32> = hits.keys().chain(staged.keys()).copied().collect();
    let unnamed = ids
        .into_iter()
        .filter(|id| book.get(*id).is_none())
        .map(|id| DefaultRow {
            id,
            decided_by: DecidedBy::Unknown { rule_id: id },
            hits: h(id),
            staged_hits: s(id),
        })
        .collect();
    PoliciesView {
        generation,
        tiers,
        defaults,
        unnamed,
        note,
    }
}

pub fn policies(
    dp: &Datapath,
    state: Option<&InspectState>,
) -> Result<PoliciesView, DatapathError> {
    let config = dp.config()?;
    let book = state.map(InspectState::rule_book).unwrap_or_default();
    // Without names, scan every counter index (one syscall each).
    let (hits, staged) = if book.is_empty() {
        (dp.rule_counters()?, dp.staged_counters_below(u32::MAX)?)
    } else {
        (
            dp.rule_counters_below(book.id_bound())?,
            dp.staged_counters_below(book.id_bound())?,
        )
    };
    Ok(policies_view(
        &book,
        config.generation,
        &hits,
        &staged,
        state_note(state, config.generation),
    ))
}

impl PoliciesView {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "TIER",
            "POLICY",
            "KIND",
            "RULE",
            "ACTION",
            "HITS",
            "STAGED-HITS",
            "ID",
        ]);
        for tier in &self.tiers {
            for p in &tier.policies {
                t.row([
                    tier.tier.clone(),
                    p.policy.clone(),
                    p.kind.clone(),
                    "*".to_owned(),
                    String::new(),
                    p.hits.to_string(),
                    p.staged_hits.to_string(),
                    String::new(),
                ]);
                for r in &p.rules {
                    t.row([
                        tier.tier.clone(),
                        p.policy.clone(),
                        String::new(),
                        format!("{} {}", r.direction, r.index),
                        r.action.clone(),
                        r.hits.to_string(),
                        r.staged_hits.to_string(),
                        r.id.to_string(),
                    ]);
                }
            }
            if let Some(d) = &tier.end_of_tier {
                t.row([
                    tier.tier.clone(),
                    "(end of tier)".to_owned(),
                    String::new(),
                    "default".to_owned(),
                    "Deny".to_owned(),
                    d.hits.to_string(),
                    d.staged_hits.to_string(),
                    d.id.to_string(),
                ]);
            }
        }
        for d in self.defaults.iter().chain(&self.unnamed) {
            t.row([
                "-".to_owned(),
                d.decided_by.to_string(),
                String::new(),
                "default".to_owned(),
                d.decided_by.action().unwrap_or("?").to_owned(),
                d.hits.to_string(),
                d.staged_hits.to_string(),
                d.id.to_string(),
            ]);
        }
        t.render()
    }
}

// ---------------------------------------------------------------------------------------------
// Maps
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapsView {
    pub active_slot: u32,
    pub generation: u32,
    pub fail_closed: bool,
    pub src_ports: bool,
    pub pins: String,
    pub maps: Vec<MapStat>,
}

pub fn maps(dp: &Datapath) -> Result<MapsView, DatapathError> {
    let config: ConfigView = dp.config()?;
    Ok(MapsView {
        active_slot: config.active_slot,
        generation: config.generation,
        fail_closed: config.fail_closed,
        src_ports: config.src_ports,
        pins: dp.paths().layout_dir().display().to_string(),
        maps: census(dp.paths())?,
    })
}

/// `0%`, `<0.1%`, `12.5%`.
fn percent(ratio: f64) -> String {
    if ratio <= 0.0 {
        "0%".to_owned()
    } else if ratio < 0.001 {
        "<0.1%".to_owned()
    } else {
        format!("{:.1}%", ratio * 100.0)
    }
}

impl MapsView {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "MAP",
            "TYPE",
            "ENTRIES",
            "SLOT-0",
            "SLOT-1",
            "MAX",
            "FILL",
            "ACTIVE-SLOT",
            "GENERATION",
        ]);
        for m in &self.maps {
            let (s0, s1) = match m.slots {
                Some([a, b]) => (a.to_string(), b.to_string()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let slotted = m.slots.is_some();
            t.row([
                m.short.clone(),
                m.kind.clone(),
                opt(m.entries),
                s0,
                s1,
                m.max_entries.to_string(),
                m.fill_ratio.map_or_else(|| "-".to_owned(), percent),
                if slotted {
                    self.active_slot.to_string()
                } else {
                    "-".to_owned()
                },
                if slotted {
                    self.generation.to_string()
                } else {
                    "-".to_owned()
                },
            ]);
        }
        t.render()
    }
}

// ---------------------------------------------------------------------------------------------
// Conntrack
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConntrackRow {
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointName>,
    pub protocol: String,
    /// The flow's initiator and responder.
    pub src: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dst: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Since the flow was allowed.
    pub age_seconds: f64,
    /// Since its last packet.
    pub idle_seconds: f64,
    /// `syn`, `reply`, `fin`, `rst`.
    pub state: Vec<&'static str>,
    /// Policy generation that allowed it (older than the maps': re-checked on its next packet).
    pub generation: u32,
    pub stale: bool,
    pub rule_id: u32,
    pub decided_by: DecidedBy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConntrackView {
    pub generation: u32,
    pub entries: Vec<ConntrackRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn ct_addr(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == 6 {
        IpAddr::V6(Ipv6Addr::from(*a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

/// One conntrack entry as a row (`now`: the clocks to age it by).
pub fn conntrack_row(
    k: &CtKey,
    v: &CtValue,
    generation: u32,
    book: &RuleBook,
    state: Option<&InspectState>,
    now: &Clocks,
) -> ConntrackRow {
    let (a, b) = (ct_addr(k.family, &k.addr_a), ct_addr(k.family, &k.addr_b));
    let ((src, sp), (dst, dp)) = if v.flags & CT_INITIATOR_A != 0 {
        ((a, k.port_a), (b, k.port_b))
    } else {
        ((b, k.port_b), (a, k.port_a))
    };
    let ports = matches!(k.protocol, 6 | 17 | 132 | 136);
    let icmp = (k.protocol == 1 && k.family == 4) || (k.protocol == 58 && k.family == 6);
    let type_code = (v.flags >> CT_ICMP_TYPE_CODE_SHIFT) as u16;
    let state_bits = v.flags & CT_STATE_MASK;
    let ct_state = [
        (CT_TCP_SYN, "syn"),
        (CT_SEEN_REPLY, "reply"),
        (CT_TCP_FIN, "fin"),
        (CT_TCP_RST, "rst"),
    ]
    .into_iter()
    .filter(|(bit, _)| state_bits & bit != 0)
    .map(|(_, n)| n)
    .collect();
    let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    ConntrackRow {
        ifindex: k.ifindex,
        endpoint: state
            .and_then(|s| s.endpoint(k.ifindex))
            .map(|e| e.id.clone()),
        protocol: protocol_name(k.protocol),
        src,
        src_port: ports.then_some(sp),
        dst,
        dst_port: ports.then_some(dp),
        icmp_type: icmp.then_some((type_code >> 8) as u8),
        icmp_code: icmp.then_some(type_code as u8),
        age_seconds: secs(now.age(v.created_ns)),
        idle_seconds: secs(now.age(v.last_seen_ns)),
        state: ct_state,
        generation: v.generation,
        stale: v.generation != generation,
        rule_id: v.rule_id,
        decided_by: book.name(v.rule_id),
    }
}

pub fn conntrack(
    dp: &Datapath,
    state: Option<&InspectState>,
) -> Result<ConntrackView, DatapathError> {
    let config = dp.config()?;
    let book = state.map(InspectState::rule_book).unwrap_or_default();
    let now = Clocks::now();
    let mut entries: Vec<ConntrackRow> = dp
        .conntrack()?
        .iter()
        .map(|(k, v)| conntrack_row(k, v, config.generation, &book, state, &now))
        .collect();
    entries.sort_by(|x, y| {
        (x.ifindex, x.src, x.src_port, x.dst, x.dst_port, &x.protocol).cmp(&(
            y.ifindex,
            y.src,
            y.src_port,
            y.dst,
            y.dst_port,
            &y.protocol,
        ))
    });
    Ok(ConntrackView {
        generation: config.generation,
        entries,
        note: state_note(state, config.generation),
    })
}

impl ConntrackView {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "IFINDEX", "ENDPOINT", "PROTO", "SRC", "DST", "AGE", "IDLE", "STATE", "GEN", "RULE",
        ]);
        let end = |a: &IpAddr, p: Option<u16>| match (a, p) {
            (IpAddr::V6(_), Some(p)) => format!("[{a}]:{p}"),
            (_, Some(p)) => format!("{a}:{p}"),
            (_, None) => a.to_string(),
        };
        for c in &self.entries {
            let proto = match (c.icmp_type, c.icmp_code) {
                (Some(t), Some(code)) => format!("{} {t}/{code}", c.protocol),
                _ => c.protocol.clone(),
            };
            let gen_ = if c.stale {
                format!("{} (stale)", c.generation)
            } else {
                c.generation.to_string()
            };
            t.row([
                c.ifindex.to_string(),
                opt(c.endpoint.as_ref()),
                proto,
                end(&c.src, c.src_port),
                end(&c.dst, c.dst_port),
                human_duration(Duration::from_secs_f64(c.age_seconds)),
                human_duration(Duration::from_secs_f64(c.idle_seconds)),
                if c.state.is_empty() {
                    "-".to_owned()
                } else {
                    c.state.join(",")
                },
                gen_,
                c.decided_by.to_string(),
            ]);
        }
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> RuleBook {
        RuleBook::from_entries([
            (
                0,
                DecidedBy::Rule {
                    tier: "default".into(),
                    policy: "prod/db".into(),
                    kind: "NetworkPolicy".into(),
                    direction: "ingress".into(),
                    index: 0,
                    action: "Allow".into(),
                },
            ),
            (
                1,
                DecidedBy::EndOfTier {
                    tier: "default".into(),
                },
            ),
            (
                2,
                DecidedBy::Profile {
                    profile: "kns.prod".into(),
                },
            ),
        ])
    }

    #[test]
    fn policies_group_by_tier_and_policy_with_hits() {
        let v = policies_view(&book(), 3, &[(0, 7), (1, 2), (9, 1)], &[(0, 5)], None);
        assert_eq!(v.tiers.len(), 1);
        let tier = &v.tiers[0];
        assert_eq!(tier.policies[0].policy, "prod/db");
        assert_eq!(
            (tier.policies[0].hits, tier.policies[0].staged_hits),
            (7, 5)
        );
        assert_eq!(tier.end_of_tier.as_ref().map(|d| d.hits), Some(2));
        assert_eq!(v.defaults.len(), 1);
        assert_eq!(v.unnamed.iter().map(|d| d.id).collect::<Vec<_>>(), [9]);
        let table = v.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TIER "), "{table}");
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["default", "prod/db", "ingress", "0", "Allow", "7", "5", "0"]),
            "{table}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("(end of tier)") && l.contains("Deny")),
            "{table}"
        );
    }

    #[test]
    fn conntrack_rows_orient_by_initiator_and_decode_state() {
        let mut k = CtKey {
            ifindex: 7,
            protocol: 6,
            family: 4,
            port_a: 80,
            port_b: 40_000,
            ..CtKey::default()
        };
        k.addr_a[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.addr_b[..4].copy_from_slice(&[10, 0, 0, 2]);
        let v = CtValue {
            created_ns: 1_000_000_000,
            last_seen_ns: 4_000_000_000,
            generation: 2,
            rule_id: 0,
            flags: CT_TCP_SYN | CT_SEEN_REPLY,
            _pad: 0,
        };
        let now = Clocks {
            wall: std::time::SystemTime::UNIX_EPOCH,
            monotonic_ns: 5_000_000_000,
        };
        let row = conntrack_row(&k, &v, 3, &book(), None, &now);
        // Not CT_INITIATOR_A: b started it.
        assert_eq!(row.src.to_string(), "10.0.0.2");
        assert_eq!((row.src_port, row.dst_port), (Some(40_000), Some(80)));
        assert_eq!(row.state, vec!["syn", "reply"]);
        assert_eq!((row.age_seconds, row.idle_seconds), (4.0, 1.0));
        assert!(row.stale);
        let view = ConntrackView {
            generation: 3,
            entries: vec![row],
            note: None,
        };
        let table = view.table();
        assert!(table.contains("10.0.0.2:40000"), "{table}");
        assert!(table.contains("2 (stale)"), "{table}");
        assert!(
            table.contains("tier default / policy prod/db / ingress rule 0 (Allow)"),
            "{table}"
        );
        let json = serde_json::to_value(&view).unwrap_or_default();
        assert_eq!(
            json["entries"][0]["state"],
            serde_json::json!(["syn", "reply"])
        );
    }

    #[test]
    fn fill_percentages() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.00002), "<0.1%");
        assert_eq!(percent(0.125), "12.5%");
    }

    #[test]
    fn icmp_conntrack_rows_carry_type_and_code() {
        let k = CtKey {
            protocol: 1,
            family: 4,
            ..CtKey::default()
        };
        let v = CtValue {
            flags: CT_INITIATOR_A | (0x0800 << CT_ICMP_TYPE_CODE_SHIFT),
            ..CtValue::default()
        };
        let row = conntrack_row(&k, &v, 0, &RuleBook::default(), None, &Clocks::now());
        assert_eq!((row.icmp_type, row.icmp_code), (Some(8), Some(0)));
        assert_eq!(row.src_port, None);
        assert!(row.state.is_empty());
        assert_eq!(row.decided_by, DecidedBy::Unknown { rule_id: 0 });
    }
}
