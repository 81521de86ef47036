//! Prometheus metrics, collected at scrape time from the pinned maps and the agent's status.
//!
//! Nothing is counted twice in userspace: packets, rule hits and kernel-side event drops are
//! the datapath's per-CPU counters (summed over CPUs at scrape time, as Cilium reads its
//! drop/forward counters); map fill is counted from the pins ([`super::census`]); the agent's
//! own counters come from [`AgentStatus`]. Names follow `enforcer_<subsystem>_<thing>_<unit|total>`
//! (`docs/observe.md` lists them). The text is OpenMetrics (`prometheus-client`'s encoder).
//!
//! Per-rule series are emitted only for rules with hits, labelled from the synced rule table;
//! without a synced state (agent not ready) rule ids cannot be named and are left out.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use aya::maps::MapInfo;
use enforcer_common::{
    REASON_ALLOW_CONNTRACK, REASON_ALLOW_POLICY, REASON_CT_FULL, REASON_DENY_NO_ENDPOINT,
    REASON_DENY_NO_VERDICT, REASON_DENY_POLICY, REASON_DENY_UNPARSEABLE, REASON_EVENT_DROPPED,
    REASON_PASS_FRAGMENT, REASON_PASS_NO_ENDPOINT, REASON_PASS_NON_IP, REASON_RECHECK, maps,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::{
    census::{MapStat, map_stat},
    flowlog::FlowLogStats,
    names::{DecidedBy, RuleBook},
};
use crate::{
    agent::status::{AgentStatus, SyncedState},
    datapath::{
        ConfigView, Datapath, DatapathError, PinPaths, ReasonCount, paths::ALL_MAPS, reason_name,
    },
};

/// The `Content-Type` of [`MetricsSource::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long policy-table counts are reused while the generation is unchanged (they change
/// only when the agent programs; conntrack is counted on every scrape).
const TABLE_COUNT_TTL: Duration = Duration::from_secs(60);

/// The verdict a `VERDICT_COUNTERS` reason stands for; `None` for side counters (conntrack
/// full, re-checks, dropped events), which count events, not packet verdicts. Reasons are
/// named `allow_*`/`pass_*` (the packet goes on) or `deny_*` (dropped), so a reason added to
/// the datapath is classified by its name.
pub fn reason_verdict(reason: u32) -> Option<&'static str> {
    match reason {
        REASON_CT_FULL | REASON_RECHECK | REASON_EVENT_DROPPED => None,
        REASON_ALLOW_POLICY
        | REASON_ALLOW_CONNTRACK
        | REASON_PASS_NO_ENDPOINT
        | REASON_PASS_FRAGMENT
        | REASON_PASS_NON_IP => Some("allowed"),
        REASON_DENY_POLICY
        | REASON_DENY_UNPARSEABLE
        | REASON_DENY_NO_ENDPOINT
        | REASON_DENY_NO_VERDICT => Some("denied"),
        other => {
            let name = reason_name(other);
            if name.starts_with("allow_") || name.starts_with("pass_") {
                Some("allowed")
            } else if name.starts_with("deny_") {
                Some("denied")
            } else {
                None
            }
        }
    }
}

/// What the datapath said at one scrape.
#[derive(Debug, Clone, Default)]
pub struct DatapathSnapshot {
    pub config: Option<ConfigView>,
    pub reasons: Vec<ReasonCount>,
    /// (rule id, new flows) with hits.
    pub rule_hits: Vec<(u32, u64)>,
    pub staged_hits: Vec<(u32, u64)>,
    pub maps: Vec<MapStat>,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ready: bool,
    pub heartbeat_age: Duration,
    pub syncs: u64,
    pub sync_failures: u64,
    pub invalid_inputs: u64,
    pub last_sync: Option<Duration>,
    pub endpoints: Option<usize>,
    pub rules: Option<Arc<RuleBook>>,
    /// `None` with `datapath_error` when the pins could not be read.
    pub datapath: Option<DatapathSnapshot>,
    pub datapath_error: Option<String>,
    pub flow_log: Option<FlowLogCounts>,
    pub scrape_duration: Duration,
}

/// The flow log writer's counters at one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowLogCounts {
    pub written: u64,
    pub dropped: u64,
    pub write_errors: u64,
    pub rotations: u64,
    pub malformed: u64,
}

struct TableCounts {
    key: (u32, u32),
    at: Instant,
    stats: Vec<MapStat>,
}

struct Inner {
    pin_base: Option<PathBuf>,
    datapath: Mutex<Option<Datapath>>,
    flow_log: Mutex<Option<Arc<FlowLogStats>>>,
    names: Mutex<Option<(Arc<SyncedState>, Arc<RuleBook>)>>,
    tables: Mutex<Option<TableCounts>>,
}

/// Where `/metrics` reads from: the pinned maps (through a read handle of its own, adopted on
/// the first scrape and again whenever the pins are replaced) and the flow log's counters.
/// Cheap to clone; collection blocks (map syscalls), so call [`MetricsSource::render`] from
/// `spawn_blocking` (the HTTP server does).
#[derive(Clone)]
pub struct MetricsSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSource")
            .field("pin_base", &self.inner.pin_base)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MetricsSource {
    fn build(pin_base: Option<PathBuf>, dp: Option<Datapath>) -> MetricsSource {
        MetricsSource {
            inner: Arc::new(Inner {
                pin_base,
                datapath: Mutex::new(dp),
                flow_log: Mutex::new(None),
                names: Mutex::new(None),
                tables: Mutex::new(None),
            }),
        }
    }

    /// Reads the maps pinned under `pin_base` (the agent's `--pin-base`).
    pub fn new(pin_base: impl Into<PathBuf>) -> MetricsSource {
        Self::build(Some(pin_base.into()), None)
    }

    /// Reads through `dp` (re-adopting its pin base if its pins are replaced).
    pub fn from_datapath(dp: Datapath) -> MetricsSource {
        let base = dp.paths().base().to_owned();
        Self::build(Some(base), Some(dp))
    }

    /// Agent metrics only (no datapath).
    pub fn agent_only() -> MetricsSource {
        Self::build(None, None)
    }

    /// Also reports the flow log writer's counters ([`super::FlowLog::stats`]).
    pub fn with_flow_log(self, stats: Arc<FlowLogStats>) -> MetricsSource {
        *lock(&self.inner.flow_log) = Some(stats);
        self
    }

    /// The rule book of the agent's current state (cached per synced state).
    fn rule_book(&self, state: Option<&Arc<SyncedState>>) -> Option<Arc<RuleBook>> {
        let state = state?;
        let mut names = lock(&self.inner.names);
        if let Some((s, book)) = &*names
            && Arc::ptr_eq(s, state)
        {
            return Some(book.clone());
        }
        let book = Arc::new(RuleBook::from_table(&state.compiled.rules));
        *names = Some((state.clone(), book.clone()));
        Some(book)
    }

    /// Reads everything a scrape reports (blocking).
    pub fn gather(&self, status: &AgentStatus) -> Snapshot {
        let started = Instant::now();
        let current = status.current();
        let rules = self.rule_book(current.as_ref());
        let mut snap = Snapshot {
            ready: status.is_ready(),
            heartbeat_age: status.since_heartbeat(),
            syncs: status.syncs_total.load(Ordering::Relaxed),
            sync_failures: status.sync_failures_total.load(Ordering::Relaxed),
            invalid_inputs: status.invalid_inputs_total.load(Ordering::Relaxed),
            last_sync: status.last_sync_duration(),
            endpoints: current.as_ref().map(|s| s.endpoints.len()),
            rules: rules.clone(),
            flow_log: lock(&self.inner.flow_log).as_ref().map(|s| FlowLogCounts {
                written: s.written.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
                write_errors: s.write_errors.load(Ordering::Relaxed),
                rotations: s.rotations.load(Ordering::Relaxed),
                malformed: s.malformed.load(Ordering::Relaxed),
            }),
            ..Snapshot::default()
        };
        if self.inner.pin_base.is_some() {
            match self.read_datapath(rules.as_deref()) {
                Ok(d) => snap.datapath = Some(d),
                Err(e) => {
                    tracing::debug!(error = %e, "metrics: reading the datapath");
                    snap.datapath_error = Some(e.to_string());
                }
            }
        }
        snap.scrape_duration = started.elapsed();
        snap
    }

    fn read_datapath(&self, rules: Option<&RuleBook>) -> Result<DatapathSnapshot, DatapathError> {
        let Some(base) = &self.inner.pin_base else {
            return Err(DatapathError::NotPinned {
                path: PathBuf::new(),
                missing: "no pin base configured".into(),
            });
        };
        let paths = PinPaths::new(base);
        let mut held = lock(&self.inner.datapath);
        // The pins may have been replaced (a fresh load): handles to the old maps read stale
        // counters, so compare the pinned CONFIG's id with ours.
        let pinned_config = MapInfo::from_pin(paths.map(maps::CONFIG))
            .map(|i| i.id())
            .ok();
        let ours = held.as_ref().and_then(|dp| {
            dp.map_ids()
                .iter()
                .find(|(n, _)| *n == maps::CONFIG)
                .map(|(_, id)| *id)
        });
        if held.is_none() || ours != pinned_config {
            *held = None;
            *held = Some(Datapath::adopt(base)?);
        }
        let Some(dp) = held.as_ref() else {
            return Err(DatapathError::NotPinned {
                path: paths.layout_dir().to_owned(),
                missing: maps::CONFIG.into(),
            });
        };
        let config = dp.config()?;
        let reasons = dp.counters()?;
        let (rule_hits, staged_hits) = match rules {
            Some(book) if !book.is_empty() => (
                dp.rule_counters_below(book.id_bound())?,
                dp.staged_counters_below(book.id_bound())?,
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let config_id = pinned_config.unwrap_or_default();
        drop(held);
        let maps = self.map_stats(&paths, (config_id, config.generation))?;
        Ok(DatapathSnapshot {
            config: Some(config),
            reasons,
            rule_hits,
            staged_hits,
            maps,
        })
    }

    /// Every map's stats: the policy tables from a cache keyed by (CONFIG id, generation),
    /// the rest fresh.
    fn map_stats(&self, paths: &PinPaths, key: (u32, u32)) -> Result<Vec<MapStat>, DatapathError> {
        const TABLES: [&str; 5] = [
            maps::ENDPOINTS,
            maps::PEER_V4,
            maps::PEER_V6,
            maps::PORTS,
            maps::VERDICTS,
        ];
        let mut cache = lock(&self.inner.tables);
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.key == key && c.at.elapsed() < TABLE_COUNT_TTL);
        if !fresh {
            let stats = TABLES
                .iter()
                .map(|n| map_stat(paths, n))
                .collect::<Result<Vec<_>, _>>()?;
            *cache = Some(TableCounts {
                key,
                at: Instant::now(),
                stats,
            });
        }
        let tables = cache.as_ref().map(|c| c.stats.clone()).unwrap_or_default();
        drop(cache);
        let mut out = Vec::with_capacity(ALL_MAPS.len());
        for name in ALL_MAPS {
            match tables.iter().find(|s| s.name == name) {
                Some(s) => out.push(s.clone()),
                None => out.push(map_stat(paths, name)?),
            }
        }
        Ok(out)
    }

    /// The OpenMetrics text of one scrape (blocking).
    pub fn render(&self, status: &AgentStatus) -> String {
        encode(self.gather(status))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

type Labels = Vec<(&'static str, String)>;

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter1(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        encode_gauge(*v, m.encode_family(labels)?)?;
    }
    Ok(())
}

/// Integral values print as integers (`250`, not `250.0`).
fn encode_gauge(
    v: f64,
    m: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        ConstGauge::new(v as i64).encode(m)
    } else {
        ConstGauge::new(v).encode(m)
    }
}

fn gauge1(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    encode_gauge(v, m)
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// Rule and default hits, split into (per rule, per policy, per default).
type Hits = (Vec<(Labels, u64)>, Vec<(Labels, u64)>, Vec<(Labels, u64)>);

fn hits(book: &RuleBook, counts: &[(u32, u64)]) -> Hits {
    let mut rules = Vec::new();
    let mut policies: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut defaults = Vec::new();
    for &(id, n) in counts {
        match book.name(id) {
            DecidedBy::Rule {
                tier,
                policy,
                kind,
                direction,
                index,
                action,
            } => {
                *policies
                    .entry((tier.clone(), policy.clone(), kind.clone()))
                    .or_default() += n;
                rules.push((
                    vec![
                        ("tier", tier),
                        ("policy", policy),
                        ("kind", kind),
                        ("direction", direction),
                        ("index", index.to_string()),
                        ("action", action),
                    ],
                    n,
                ));
            }
            d @ (DecidedBy::EndOfTier { .. }
            | DecidedBy::Profile { .. }
            | DecidedBy::HostEndpointDefaultDeny
            | DecidedBy::Failsafe { .. }) => {
                let action = d.action().unwrap_or_default().to_owned();
                let (decision, tier, name) = match d {
                    DecidedBy::EndOfTier { tier } => ("end-of-tier", tier, String::new()),
                    DecidedBy::Profile { profile } => ("profile", String::new(), profile),
                    DecidedBy::Failsafe { protocol, port } => {
                        ("failsafe", String::new(), format!("{protocol}:{port}"))
                    }
                    _ => ("host-endpoint-default-deny", String::new(), String::new()),
                };
                defaults.push((
                    vec![
                        ("decision", decision.to_owned()),
                        ("tier", tier),
                        ("name", name),
                        ("action", action),
                    ],
                    n,
                ));
            }
            DecidedBy::NoVerdict | DecidedBy::Unknown { .. } => {}
        }
    }
    let policies = policies
        .into_iter()
        .map(|((tier, policy, kind), n)| {
            (vec![("tier", tier), ("policy", policy), ("kind", kind)], n)
        })
        .collect();
    (rules, policies, defaults)
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let e = &mut enc;
        // Agent.
        gauge1(
            e,
            "enforcer_agent_ready",
            "1 once the first full sync is programmed",
            b(s.ready),
        )?;
        gauge1(
            e,
            "enforcer_agent_heartbeat_age_seconds",
            "Seconds since the agent loop last went round",
            s.heartbeat_age.as_secs_f64(),
        )?;
        counter1(
            e,
            "enforcer_agent_syncs",
            "Successful syncs (policy programmed)",
            s.syncs,
        )?;
        counter1(
            e,
            "enforcer_agent_sync_failures",
            "Syncs that failed (the previous policy stayed in force)",
            s.sync_failures,
        )?;
        counter1(
            e,
            "enforcer_agent_invalid_inputs",
            "Inputs rejected as invalid (files, API objects)",
            s.invalid_inputs,
        )?;
        if let Some(d) = s.last_sync {
            gauge1(
                e,
                "enforcer_agent_sync_duration_seconds",
                "Duration of the last successful sync (compile and program)",
                d.as_secs_f64(),
            )?;
        }
        if let Some(n) = s.endpoints {
            gauge1(
                e,
                "enforcer_agent_endpoints",
                "Endpoints enforced",
                n as f64,
            )?;
        }
        if let Some(book) = &s.rules {
            gauge1(
                e,
                "enforcer_agent_rules",
                "Entries in the rule table",
                book.len() as f64,
            )?;
        }
        gauge1(
            e,
            "enforcer_metrics_scrape_duration_seconds",
            "Time this scrape took to collect",
            s.scrape_duration.as_secs_f64(),
        )?;

        // Datapath.
        gauge1(
            e,
            "enforcer_datapath_up",
            "1 if the pinned maps could be read at this scrape",
            b(s.datapath.is_some()),
        )?;
        let mut kernel_dropped_events = None;
        if let Some(d) = &s.datapath {
            let mut packets = Vec::new();
            let (mut ct_full, mut rechecks, mut dropped_events) = (Vec::new(), Vec::new(), 0);
            for r in &d.reasons {
                let dir = || vec![("direction", r.direction.to_owned())];
                match (reason_verdict(r.reason), r.reason) {
                    (Some(v), _) => packets.push((
                        vec![
                            ("verdict", v.to_owned()),
                            ("reason", r.name.to_owned()),
                            ("direction", r.direction.to_owned()),
                        ],
                        r.packets,
                    )),
                    (None, REASON_CT_FULL) => ct_full.push((dir(), r.packets)),
                    (None, REASON_RECHECK) => rechecks.push((dir(), r.packets)),
                    (None, REASON_EVENT_DROPPED) => dropped_events += r.packets,
                    (None, _) => {}
                }
            }
            kernel_dropped_events = Some(dropped_events);
            counter(
                e,
                "enforcer_datapath_packets",
                "Packets judged by the datapath, by verdict, reason and direction (the endpoint's)",
                &packets,
            )?;
            counter(
                e,
                "enforcer_datapath_conntrack_full",
                "Allowed new flows conntrack could not remember (map full; the next packet is judged again)",
                &ct_full,
            )?;
            counter(
                e,
                "enforcer_datapath_conntrack_rechecks",
                "Tracked flows judged again after a policy change",
                &rechecks,
            )?;
            if let Some(c) = &d.config {
                gauge1(
                    e,
                    "enforcer_datapath_policy_generation",
                    "CONFIG.generation: bumped on every policy change",
                    f64::from(c.generation),
                )?;
                gauge1(
                    e,
                    "enforcer_datapath_active_slot",
                    "Table slot new flows are judged with",
                    f64::from(c.active_slot),
                )?;
                gauge1(
                    e,
                    "enforcer_datapath_fail_closed",
                    "1 if packets of unknown interfaces are dropped",
                    b(c.fail_closed),
                )?;
            }
            let with = |f: &dyn Fn(&MapStat) -> Option<f64>| -> Vec<(Labels, f64)> {
                d.maps
                    .iter()
                    .filter_map(|m| f(m).map(|v| (vec![("map", m.short.clone())], v)))
                    .collect()
            };
            gauge(
                e,
                "enforcer_datapath_map_entries",
                "Entries in a map (hash and LPM maps; both table slots)",
                &with(&|m| m.entries.map(|n| n as f64)),
            )?;
            gauge(
                e,
                "enforcer_datapath_map_max_entries",
                "A map's capacity (max_entries; bytes for the ring buffer)",
                &with(&|m| Some(f64::from(m.max_entries))),
            )?;
            gauge(
                e,
                "enforcer_datapath_map_fill_ratio",
                "entries / max_entries (map pressure)",
                &with(&|m| m.fill_ratio),
            )?;
            if let Some(ct) = d.maps.iter().find(|m| m.name == maps::CONNTRACK) {
                gauge1(
                    e,
                    "enforcer_datapath_conntrack_entries",
                    "Tracked flows",
                    ct.entries.unwrap_or_default() as f64,
                )?;
            }
            if let Some(book) = &s.rules {
                for (prefix, counts, what) in [
                    ("enforcer_policy", &d.rule_hits, "New flows decided"),
                    (
                        "enforcer_policy_staged",
                        &d.staged_hits,
                        "New flows the staged view (staged policies enforced) decided",
                    ),
                ] {
                    let (rules, policies, defaults) = hits(book, counts);
                    counter(
                        e,
                        &format!("{prefix}_rule_hits"),
                        &format!("{what} by a rule"),
                        &rules,
                    )?;
                    counter(
                        e,
                        &format!("{prefix}_hits"),
                        &format!("{what} by a policy's rules"),
                        &policies,
                    )?;
                    counter(
                        e,
                        &format!("{prefix}_default_hits"),
                        &format!(
                            "{what} by a default (end-of-tier deny, profile, host endpoint default deny, failsafe)"
                        ),
                        &defaults,
                    )?;
                }
            }
        }

        // Flow log.
        let mut dropped = Vec::new();
        if let Some(n) = kernel_dropped_events {
            dropped.push((vec![("stage", "kernel".to_owned())], n));
        }
        if let Some(f) = &s.flow_log {
            dropped.push((vec![("stage", "writer".to_owned())], f.dropped));
            counter1(
                e,
                "enforcer_flowlog_events_written",
                "Flow records written",
                f.written,
            )?;
            counter1(
                e,
                "enforcer_flowlog_write_errors",
                "Errors writing the flow log",
                f.write_errors,
            )?;
            counter1(
                e,
                "enforcer_flowlog_rotations",
                "Flow log rotations",
                f.rotations,
            )?;
            counter1(
                e,
                "enforcer_flowlog_events_malformed",
                "Ring buffer records too short to be a flow event (a mismatched eBPF object)",
                f.malformed,
            )?;
        }
        counter(
            e,
            "enforcer_flowlog_events_dropped",
            "Flow events lost: in the kernel (rate limit, ring full) or by the writer",
            &dropped,
        )?;
        Ok(())
    }
}

/// Encodes a snapshot as OpenMetrics text.
pub fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    out
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
                DecidedBy::Rule {
                    tier: "default".into(),
                    policy: "prod/db".into(),
                    kind: "NetworkPolicy".into(),
                    direction: "ingress".into(),
                    index: 1,
                    action: "Deny".into(),
                },
            ),
            (
                2,
                DecidedBy::EndOfTier {
                    tier: "default".into(),
                },
            ),
        ])
    }

    fn sample() -> Snapshot {
        Snapshot {
            ready: true,
            heartbeat_age: Duration::from_millis(1500),
            syncs: 3,
            sync_failures: 1,
            invalid_inputs: 2,
            last_sync: Some(Duration::from_millis(250)),
            endpoints: Some(4),
            rules: Some(Arc::new(book())),
            datapath: Some(DatapathSnapshot {
                config: Some(ConfigView {
                    active_slot: 1,
                    generation: 7,
                    flags: 0,
                    fail_closed: false,
                    src_ports: false,
                }),
                reasons: vec![
                    ReasonCount {
                        reason: REASON_DENY_POLICY,
                        name: "deny_policy",
                        direction: "ingress",
                        packets: 5,
                    },
                    ReasonCount {
                        reason: REASON_EVENT_DROPPED,
                        name: "event_dropped",
                        direction: "egress",
                        packets: 2,
                    },
                ],
                rule_hits: vec![(0, 10), (1, 5), (2, 1)],
                staged_hits: vec![(1, 4)],
                maps: vec![MapStat {
                    name: maps::CONNTRACK,
                    short: "conntrack".into(),
                    kind: "lru-hash".into(),
                    id: 9,
                    max_entries: 1000,
                    entries: Some(250),
                    slots: None,
                    fill_ratio: Some(0.25),
                }],
            }),
            datapath_error: None,
            flow_log: Some(FlowLogCounts {
                written: 6,
                dropped: 1,
                write_errors: 1,
                rotations: 0,
                malformed: 0,
            }),
            scrape_duration: Duration::from_millis(3),
        }
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn a_snapshot_encodes_every_family_with_its_labels() {
        let text = encode(sample());
        for line in [
            "enforcer_agent_ready 1",
            "enforcer_agent_syncs_total 3",
            "enforcer_agent_sync_failures_total 1",
            "enforcer_agent_invalid_inputs_total 2",
            "enforcer_agent_sync_duration_seconds 0.25",
            "enforcer_agent_endpoints 4",
            "enforcer_datapath_up 1",
            r#"enforcer_datapath_packets_total{verdict="denied",reason="deny_policy",direction="ingress"} 5"#,
            "enforcer_datapath_policy_generation 7",
            r#"enforcer_datapath_map_entries{map="conntrack"} 250"#,
            r#"enforcer_datapath_map_fill_ratio{map="conntrack"} 0.25"#,
            "enforcer_datapath_conntrack_entries 250",
            r#"enforcer_policy_rule_hits_total{tier="default",policy="prod/db",kind="NetworkPolicy",direction="ingress",index="1",action="Deny"} 5"#,
            r#"enforcer_policy_hits_total{tier="default",policy="prod/db",kind="NetworkPolicy"} 15"#,
            r#"enforcer_policy_default_hits_total{decision="end-of-tier",tier="default",name="",action="Deny"} 1"#,
            r#"enforcer_policy_staged_hits_total{tier="default",policy="prod/db",kind="NetworkPolicy"} 4"#,
            r#"enforcer_flowlog_events_dropped_total{stage="kernel"} 2"#,
            r#"enforcer_flowlog_events_dropped_total{stage="writer"} 1"#,
            "enforcer_flowlog_events_written_total 6",
            "# TYPE enforcer_datapath_packets counter",
            "# EOF",
        ] {
            assert!(has(&text, line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("reason=\"event_dropped\""),
            "side counters are not packet verdicts:\n{text}"
        );
    }

    #[test]
    fn without_a_datapath_only_agent_metrics_and_up_zero() {
        let snap = Snapshot {
            datapath: None,
            rules: None,
            flow_log: None,
            ..sample()
        };
        let text = encode(snap);
        assert!(has(&text, "enforcer_datapath_up 0"), "{text}");
        assert!(!text.contains("enforcer_datapath_packets"), "{text}");
        assert!(!text.contains("enforcer_policy_rule_hits"), "{text}");
    }

    #[test]
    fn every_reason_is_a_verdict_or_a_side_counter() {
        for r in 0..enforcer_common::NUM_REASONS {
            let side = matches!(r, REASON_CT_FULL | REASON_RECHECK | REASON_EVENT_DROPPED);
            assert_eq!(
                reason_verdict(r).is_none(),
                side,
                "reason {r} ({})",
                reason_name(r)
            );
        }
        assert_eq!(reason_verdict(REASON_PASS_NON_IP), Some("allowed"));
        assert_eq!(reason_verdict(REASON_DENY_UNPARSEABLE), Some("denied"));
    }
}
