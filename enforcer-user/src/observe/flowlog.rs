//! The flow log: the datapath's flow events (denied flows, and allowed flows a staged policy
//! would deny) as JSON lines, one [`FlowRecord`] per line.
//!
//! The agent runs [`run_flow_log`] (or [`FlowLog::run`]) on the `EVENTS` ring buffer; it
//! appends to a file (default [`DEFAULT_FLOW_LOG`]) that is rotated by size to `<file>.1`
//! (one old file kept). `enforcer flows` reads and follows the file ([`read_records`],
//! [`Follower`]), so it works while the agent is down.
//!
//! Names come from the agent's current [`SyncedState`]: the interface → endpoint, the rule id →
//! tier / policy / rule ([`RuleBook`]). Events carry no generation, so an event raised just
//! before a policy change and read just after it is named with the new rule table (the
//! record's `generation` says which table named it); rule ids are stable while the policies
//! are, so only a change racing the event can misname it.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    fs::{self, File},
    io::{self, BufRead as _, BufReader, BufWriter, Read as _, Seek as _, SeekFrom, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use enforcer_common::{ACTION_ALLOW, ANY, DIR_INGRESS, FlowEvent};
use serde::{Deserialize, Serialize};

use super::{
    names::{DecidedBy, EndpointName, RuleBook, protocol_name},
    time::{Clocks, rfc3339_nanos},
};
use crate::{
    agent::status::{AgentStatus, SyncedState},
    datapath::{AsyncEventReader, netif},
};

/// Where the agent writes the flow log unless told otherwise.
pub const DEFAULT_FLOW_LOG: &str = "/run/enforcer/flows.jsonl";
/// The size at which the flow log is rotated to `<file>.1`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// A flow's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    Allowed,
    Denied,
}

impl FlowVerdict {
    fn of(action: u8) -> FlowVerdict {
        if action == ACTION_ALLOW {
            FlowVerdict::Allowed
        } else {
            // ACTION_DENY, or an action the datapath does not know (it fails closed).
            FlowVerdict::Denied
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlowVerdict::Allowed => "allowed",
            FlowVerdict::Denied => "denied",
        }
    }
}

/// What the staged view (staged policies enforced) would have done, when it differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRecord {
    pub verdict: FlowVerdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    pub decided_by: DecidedBy,
}

/// One line of the flow log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When the datapath saw the packet, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// The datapath's timestamp (`CLOCK_MONOTONIC`, coarse), for ordering and joins.
    pub mono_ns: u64,
    pub verdict: FlowVerdict,
    /// The datapath reason (`VERDICT_COUNTERS` names): `deny_policy`, `deny_no_verdict`, or
    /// `allow_policy` for an allowed flow a staged policy would deny.
    pub reason: String,
    /// From the endpoint's point of view: `ingress` (into it) or `egress` (out of it).
    pub direction: String,
    pub protocol: String,
    pub src: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dst: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    pub ifindex: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The endpoint on the interface (none: the agent has no synced state naming it).
    #[serde(default)]
    pub endpoint: Option<EndpointName>,
    /// The deciding rule's id (none: no verdict in the tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    pub decided_by: DecidedBy,
    /// The staged view, when its verdict or deciding rule differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<StagedRecord>,
    /// The policy generation whose rule table named the rule (none: no synced state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132 | 136)
}

fn is_family_icmp(protocol: u8, family: u8) -> bool {
    (protocol == 1 && family == 4) || (protocol == 58 && family == 6)
}

fn address(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == 6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

fn rule_id(id: u32) -> Option<u32> {
    (id != ANY).then_some(id)
}

/// What names events: interfaces → endpoints and rule ids → rules, from one synced state.
#[derive(Debug, Clone, Default)]
pub struct FlowContext {
    generation: Option<u32>,
    endpoints: HashMap<u32, (EndpointName, String)>,
    rules: RuleBook,
}

impl FlowContext {
    pub fn new(state: Option<&SyncedState>) -> FlowContext {
        let Some(s) = state else {
            return FlowContext::default();
        };
        FlowContext {
            generation: Some(s.generation),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| (e.ifindex, (EndpointName::from(&e.id), e.ifname.clone())))
                .collect(),
            rules: RuleBook::from_table(&s.compiled.rules),
        }
    }

    /// A context from parts (the state file, tests).
    pub fn from_parts(
        generation: Option<u32>,
        endpoints: impl IntoIterator<Item = (u32, EndpointName, String)>,
        rules: RuleBook,
    ) -> FlowContext {
        FlowContext {
            generation,
            endpoints: endpoints
                .into_iter()
                .map(|(i, id, name)| (i, (id, name)))
                .collect(),
            rules,
        }
    }

    /// The record of one event.
    pub fn record(&self, ev: &FlowEvent, clocks: &Clocks) -> FlowRecord {
        let verdict = FlowVerdict::of(ev.action);
        let reason = match (verdict, ev.rule_id) {
            (FlowVerdict::Denied, ANY) => "deny_no_verdict",
            (FlowVerdict::Denied, _) => "deny_policy",
            (FlowVerdict::Allowed, _) => "allow_policy",
        };
        let (src_port, dst_port, icmp_type, icmp_code) = if has_ports(ev.protocol) {
            (Some(ev.src_port), Some(ev.dst_port), None, None)
        } else if is_family_icmp(ev.protocol, ev.family) {
            let [t, c] = ev.dst_port.to_be_bytes();
            (None, None, Some(t), Some(c))
        } else {
            (None, None, None, None)
        };
        let (endpoint, ifname) = match self.endpoints.get(&ev.ifindex) {
            Some((id, name)) => (Some(id.clone()), Some(name.clone())),
            None => (None, netif::ifname(ev.ifindex)),
        };
        let staged_verdict = FlowVerdict::of(ev.staged_action);
        let staged =
            (staged_verdict != verdict || ev.staged_rule_id != ev.rule_id).then(|| StagedRecord {
                verdict: staged_verdict,
                rule_id: rule_id(ev.staged_rule_id),
                decided_by: self.rules.name(ev.staged_rule_id),
            });
        FlowRecord {
            time: rfc3339_nanos(clocks.wall_of(ev.timestamp_ns)),
            mono_ns: ev.timestamp_ns,
            verdict,
            reason: reason.to_owned(),
            direction: if ev.direction == DIR_INGRESS {
                "ingress"
            } else {
                "egress"
            }
            .to_owned(),
            protocol: protocol_name(ev.protocol),
            src: address(ev.family, &ev.src),
            src_port,
            dst: address(ev.family, &ev.dst),
            dst_port,
            icmp_type,
            icmp_code,
            ifindex: ev.ifindex,
            ifname,
            endpoint,
            rule_id: rule_id(ev.rule_id),
            decided_by: self.rules.name(ev.rule_id),
            staged,
            generation: self.generation,
        }
    }
}

/// Counters of the flow log writer (shared with the metrics).
#[derive(Debug, Default)]
pub struct FlowLogStats {
    /// Records written.
    pub written: AtomicU64,
    /// Events lost in userspace (the file could not be written).
    pub dropped: AtomicU64,
    /// Write errors (each may lose a batch).
    pub write_errors: AtomicU64,
    /// Rotations to `<file>.1`.
    pub rotations: AtomicU64,
    /// Ring buffer records too short to be a `FlowEvent` (a mismatched object).
    pub malformed: AtomicU64,
}

/// `<path>.1`, where a rotated flow log goes.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// An append-only file rotated to `<path>.1` when a write would take it past `max_bytes`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    out: BufWriter<File>,
    size: u64,
    ino: u64,
}

impl RotatingFile {
    /// Opens `path` for appending, creating it and its directory.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            out: BufWriter::new(file),
            size: meta.len(),
            ino: meta.ino(),
        })
    }

    /// Appends `line` (which should end with a newline), rotating first if it would not fit.
    /// Returns whether it rotated.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<bool> {
        let rotated = self.size > 0 && self.size + line.len() as u64 > self.max_bytes;
        if rotated {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(rotated)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        fs::rename(&self.path, rotated_path(&self.path))?;
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        *self = RotatingFile::open(&self.path, self.max_bytes)?;
        Ok(())
    }

    /// Reopens the file if someone moved or removed it (an external logrotate).
    pub fn reopen_if_moved(&mut self) -> io::Result<bool> {
        let moved = match fs::metadata(&self.path) {
            Ok(m) => m.ino() != self.ino,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if moved {
            self.out.flush()?;
            self.reopen()?;
        }
        Ok(moved)
    }
}

/// The flow log writer: where, how big, and its counters.
#[derive(Debug, Clone)]
pub struct FlowLog {
    pub path: PathBuf,
    pub max_bytes: u64,
    stats: Arc<FlowLogStats>,
}

impl FlowLog {
    pub fn new(path: impl Into<PathBuf>) -> FlowLog {
        FlowLog {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            stats: Arc::default(),
        }
    }

    pub fn with_max_bytes(mut self, max_bytes: u64) -> FlowLog {
        self.max_bytes = max_bytes;
        self
    }

    /// Counters to hand to [`super::MetricsSource::with_flow_log`].
    pub fn stats(&self) -> Arc<FlowLogStats> {
        self.stats.clone()
    }

    /// Writes events from `reader` until reading the ring buffer fails. Fails at once if the
    /// file cannot be opened; later write errors are counted (`dropped`, `write_errors`),
    /// logged, and retried with the next batch. Writes are synchronous (a batch is at most a
    /// few hundred KiB to the page cache), so run it on a multi-threaded runtime.
    pub async fn run(
        self,
        mut reader: AsyncEventReader,
        status: Arc<AgentStatus>,
    ) -> io::Result<()> {
        let mut out = Some(RotatingFile::open(&self.path, self.max_bytes)?);
        let mut named: Option<(Arc<SyncedState>, FlowContext)> = None;
        let mut line = Vec::with_capacity(512);
        loop {
            let batch = reader.next_batch().await?;
            let current = status.current();
            let stale = match (&named, &current) {
                (Some((a, _)), Some(b)) => !Arc::ptr_eq(a, b),
                (None, Some(_)) => true,
                _ => false,
            };
            if stale && let Some(s) = current {
                let ctx = FlowContext::new(Some(&s));
                named = Some((s, ctx));
            }
            let empty = FlowContext::default();
            let ctx = named.as_ref().map_or(&empty, |(_, c)| c);
            let clocks = Clocks::now();
            let result = self.write_batch(&mut out, &batch, ctx, &clocks, &mut line);
            if let Err(e) = result {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), error = %e, "writing the flow log");
            }
            self.stats
                .malformed
                .store(reader.get_mut().malformed(), Ordering::Relaxed);
        }
    }

    /// Writes one batch; events not written are counted as dropped.
    fn write_batch(
        &self,
        out: &mut Option<RotatingFile>,
        batch: &[FlowEvent],
        ctx: &FlowContext,
        clocks: &Clocks,
        line: &mut Vec<u8>,
    ) -> io::Result<()> {
        let file = match out {
            Some(f) => {
                if let Err(e) = f.reopen_if_moved() {
                    *out = None;
                    self.drop_events(batch.len());
                    return Err(e);
                }
                f
            }
            None => match RotatingFile::open(&self.path, self.max_bytes) {
                Ok(f) => out.insert(f),
                Err(e) => {
                    self.drop_events(batch.len());
                    return Err(e);
                }
            },
        };
        for (i, ev) in batch.iter().enumerate() {
            line.clear();
            if let Err(e) = serde_json::to_writer(&mut *line, &ctx.record(ev, clocks)) {
                self.drop_events(1);
                tracing::warn!(error = %e, "encoding a flow record");
                continue;
            }
            line.push(b'\n');
            match file.write_line(line) {
                Ok(rotated) => {
                    if rotated {
                        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                    }
                    self.stats.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    *out = None;
                    self.drop_events(batch.len() - i);
                    return Err(e);
                }
            }
        }
        file.flush().inspect_err(|_| *out = None)
    }

    fn drop_events(&self, n: usize) {
        self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Writes `events` synchronously (the agent's loop does the same per batch; for tests and
    /// tools that hold a [`crate::datapath::EventReader`]).
    pub fn write_events(&self, events: &[FlowEvent], ctx: &FlowContext) -> io::Result<()> {
        let mut out = None;
        self.write_batch(&mut out, events, ctx, &Clocks::now(), &mut Vec::new())
    }
}

/// Appends flow records from `reader` to `path` (rotated at [`DEFAULT_MAX_BYTES`]) until the
/// ring buffer fails; see [`FlowLog::run`]. Use [`FlowLog`] directly to get its counters.
pub async fn run_flow_log(
    reader: AsyncEventReader,
    status: Arc<AgentStatus>,
    path: impl Into<PathBuf>,
) -> io::Result<()> {
    FlowLog::new(path).run(reader, status).await
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Which records to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub verdict: Option<FlowVerdict>,
}

impl FlowFilter {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        self.verdict.is_none_or(|v| v == r.verdict)
    }
}

/// A line of the flow log: the record, or why it is not one.
pub type ParsedLine = Result<FlowRecord, String>;

pub fn parse_line(line: &str) -> ParsedLine {
    serde_json::from_str(line).map_err(|e| format!("not a flow record ({e}): {line}"))
}

/// Keeps the last `last` records (errors always kept) of a growing list.
fn push_limited(out: &mut VecDeque<ParsedLine>, parsed: ParsedLine, last: Option<usize>) {
    out.push_back(parsed);
    if let Some(n) = last {
        while out.iter().filter(|r| r.is_ok()).count() > n {
            out.pop_front();
        }
    }
}

/// Parses and filters lines into `out` (see [`read_records`]).
pub fn collect_lines(
    lines: impl IntoIterator<Item = String>,
    filter: FlowFilter,
    last: Option<usize>,
    out: &mut VecDeque<ParsedLine>,
) {
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(&line);
        if parsed.as_ref().is_ok_and(|r| !filter.matches(r)) {
            continue;
        }
        push_limited(out, parsed, last);
    }
}

/// Every line of `path` into `out`; `Ok(false)` if there is no such file.
pub fn collect_file(
    path: &Path,
    filter: FlowFilter,
    last: Option<usize>,
    out: &mut VecDeque<ParsedLine>,
) -> io::Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let lines = BufReader::new(file)
        .lines()
        .collect::<io::Result<Vec<_>>>()?;
    collect_lines(lines, filter, last, out);
    Ok(true)
}

/// The error for a flow log that is not there.
pub fn missing_log(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no flow log at {} (is the agent running with this --flow-log path?)",
            path.display()
        ),
    )
}

/// Every line of `<path>.1` (if present) then `<path>`, in order; `last` keeps only the last
/// that many records that pass `filter` (unparseable lines are always kept, as errors).
pub fn read_records(
    path: &Path,
    filter: FlowFilter,
    last: Option<usize>,
) -> io::Result<Vec<ParsedLine>> {
    let mut out = VecDeque::new();
    let old = collect_file(&rotated_path(path), filter, last, &mut out)?;
    let current = collect_file(path, filter, last, &mut out)?;
    if !old && !current {
        return Err(missing_log(path));
    }
    Ok(out.into())
}

/// Follows a flow log like `tail -F`: new complete lines since the last poll, across
/// rotations (the old file is read to its end before the new one) and truncation.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the beginning of `path`: the first poll returns every line in it.
    pub fn from_start(path: &Path) -> Follower {
        Follower {
            path: path.to_owned(),
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
        }
    }

    /// Starts at the current end of `path` (or at the start of the file once it appears).
    pub fn from_end(path: &Path) -> Follower {
        let mut f = Follower {
            path: path.to_owned(),
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = File::open(path)
            && let Ok(meta) = file.metadata()
        {
            f.ino = meta.ino();
            f.pos = meta.len();
            f.file = Some(file);
        }
        f
    }

    fn drain(&mut self, lines: &mut Vec<String>) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        let n = file.read_to_end(&mut buf)?;
        self.pos += n as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let rest = self.partial.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.partial, rest);
            line.pop();
            let text = String::from_utf8_lossy(&line).into_owned();
            if !text.trim().is_empty() {
                lines.push(text);
            }
        }
        Ok(())
    }

    /// Complete lines written since the last poll.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        self.drain(&mut lines)?;
        let (replaced, truncated) = match fs::metadata(&self.path) {
            Ok(m) => (
                self.file.is_none() || m.ino() != self.ino,
                self.file.is_some() && m.ino() == self.ino && m.len() < self.pos,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (false, false),
            Err(e) => return Err(e),
        };
        if replaced || truncated {
            match File::open(&self.path) {
                Ok(file) => {
                    self.ino = file.metadata()?.ino();
                    self.file = Some(file);
                    self.pos = 0;
                    self.partial.clear();
                    self.drain(&mut lines)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(lines)
    }
}

/// One line for people: time (ms), verdict, direction, endpoint, the flow, what decided and
/// the staged verdict when it differs.
pub fn format_text(r: &FlowRecord) -> String {
    let mut s = String::with_capacity(160);
    // RFC 3339 with nanoseconds → milliseconds (`...:00.123Z`).
    let time = match r.time.len() {
        30 => format!("{}Z", &r.time[..23]),
        _ => r.time.clone(),
    };
    let endpoint = match (&r.endpoint, &r.ifname) {
        (Some(e), Some(i)) => format!("{e} ({i})"),
        (Some(e), None) => e.to_string(),
        (None, Some(i)) => format!("if {i}"),
        (None, None) => format!("ifindex {}", r.ifindex),
    };
    let host = |a: &IpAddr| match a {
        IpAddr::V6(_) => format!("[{a}]"),
        IpAddr::V4(_) => a.to_string(),
    };
    let flow = match (r.src_port, r.dst_port, r.icmp_type, r.icmp_code) {
        (Some(sp), Some(dp), ..) => {
            format!(
                "{} {}:{sp} -> {}:{dp}",
                r.protocol,
                host(&r.src),
                host(&r.dst)
            )
        }
        (.., Some(t), Some(c)) => {
            format!("{} {} -> {} type {t} code {c}", r.protocol, r.src, r.dst)
        }
        _ => format!("{} {} -> {}", r.protocol, r.src, r.dst),
    };
    let _ = write!(
        s,
        "{time}  {:<7} {:<7}  {endpoint}  {flow}  by {}",
        r.verdict.as_str(),
        r.direction,
        r.decided_by
    );
    if let Some(st) = &r.staged {
        let _ = write!(
            s,
            "  [staged: {} by {}]",
            st.verdict.as_str(),
            st.decided_by
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    use enforcer_common::{ACTION_DENY, DIR_EGRESS};

    fn book() -> RuleBook {
        RuleBook::from_entries([
            (
                3,
                DecidedBy::Rule {
                    tier: "security".into(),
                    policy: "deny-db".into(),
                    kind: "GlobalNetworkPolicy".into(),
                    direction: "ingress".into(),
                    index: 1,
                    action: "Deny".into(),
                },
            ),
            (
                4,
                DecidedBy::EndOfTier {
                    tier: "security".into(),
                },
            ),
            (
                5,
                DecidedBy::Profile {
                    profile: "kns.prod".into(),
                },
            ),
        ])
    }

    fn ctx() -> FlowContext {
        FlowContext::from_parts(
            Some(9),
            [(
                12,
                EndpointName::Pod {
                    namespace: "prod".into(),
                    name: "db-0".into(),
                },
                "cali12".to_owned(),
            )],
            book(),
        )
    }

    fn clocks() -> Clocks {
        Clocks {
            wall: UNIX_EPOCH + Duration::from_secs(1_777_636_800),
            monotonic_ns: 10_000_000_000,
        }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    fn tcp_event() -> FlowEvent {
        FlowEvent {
            timestamp_ns: 9_500_000_000,
            ifindex: 12,
            rule_id: 3,
            staged_rule_id: 3,
            direction: DIR_INGRESS,
            family: 4,
            protocol: 6,
            action: ACTION_DENY,
            staged_action: ACTION_DENY,
            src_port: 43_512,
            dst_port: 5432,
            src: v4([10, 0, 0, 5]),
            dst: v4([10, 0, 0, 7]),
            ..FlowEvent::default()
        }
    }

    #[test]
    fn a_denied_tcp_flow_names_the_endpoint_and_the_deciding_rule() {
        let r = ctx().record(&tcp_event(), &clocks());
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "2026-05-01T11:59:59.500000000Z",
                "mono_ns": 9_500_000_000u64,
                "verdict": "denied",
                "reason": "deny_policy",
                "direction": "ingress",
                "protocol": "tcp",
                "src": "10.0.0.5",
                "src_port": 43512,
                "dst": "10.0.0.7",
                "dst_port": 5432,
                "ifindex": 12,
                "ifname": "cali12",
                "endpoint": {"kind": "pod", "namespace": "prod", "name": "db-0"},
                "rule_id": 3,
                "decided_by": {"by": "rule", "tier": "security", "policy": "deny-db",
                    "kind": "GlobalNetworkPolicy", "direction": "ingress", "index": 1,
                    "action": "Deny"},
                "generation": 9,
            })
        );
        let back = parse_line(&json.to_string());
        assert_eq!(back.as_ref().ok(), Some(&r));
        assert_eq!(
            format_text(&r),
            "2026-05-01T11:59:59.500Z  denied  ingress  pod prod/db-0 (cali12)  \
             tcp 10.0.0.5:43512 -> 10.0.0.7:5432  \
             by tier security / policy deny-db / ingress rule 1 (Deny)"
        );
    }

    #[test]
    fn icmp_carries_type_and_code_and_staged_differences_are_reported() {
        let ev = FlowEvent {
            protocol: 1,
            src_port: 0,
            dst_port: 8 << 8,
            action: ACTION_ALLOW,
            staged_action: ACTION_DENY,
            rule_id: 5,
            staged_rule_id: 4,
            direction: DIR_EGRESS,
            ..tcp_event()
        };
        let r = ctx().record(&ev, &clocks());
        assert_eq!((r.src_port, r.dst_port), (None, None));
        assert_eq!((r.icmp_type, r.icmp_code), (Some(8), Some(0)));
        assert_eq!(r.verdict, FlowVerdict::Allowed);
        assert_eq!(r.reason, "allow_policy");
        assert_eq!(r.direction, "egress");
        assert_eq!(
            r.staged,
            Some(StagedRecord {
                verdict: FlowVerdict::Denied,
                rule_id: Some(4),
                decided_by: DecidedBy::EndOfTier {
                    tier: "security".into()
                },
            })
        );
        let text = format_text(&r);
        assert!(
            text.contains("icmp 10.0.0.5 -> 10.0.0.7 type 8 code 0"),
            "{text}"
        );
        assert!(
            text.ends_with("[staged: denied by tier security / end-of-tier deny]"),
            "{text}"
        );
    }

    #[test]
    fn no_verdict_ipv6_and_unknown_interfaces() {
        let mut src = [0u8; 16];
        src[0] = 0xfd;
        src[15] = 1;
        let ev = FlowEvent {
            family: 6,
            protocol: 58,
            dst_port: (128 << 8) | 3,
            rule_id: ANY,
            staged_rule_id: ANY,
            ifindex: 4_000_000,
            src,
            dst: src,
            ..tcp_event()
        };
        let r = ctx().record(&ev, &clocks());
        assert_eq!(r.reason, "deny_no_verdict");
        assert_eq!(r.decided_by, DecidedBy::NoVerdict);
        assert_eq!(r.rule_id, None);
        assert_eq!(r.staged, None, "same verdict, same rule");
        assert_eq!(r.src.to_string(), "fd00::1");
        assert_eq!((r.icmp_type, r.icmp_code), (Some(128), Some(3)));
        assert_eq!((r.endpoint, r.ifname), (None, None));
        // Without synced state, rules are unknown by id.
        let bare = FlowContext::default().record(&tcp_event(), &clocks());
        assert_eq!(bare.decided_by, DecidedBy::Unknown { rule_id: 3 });
        assert_eq!(bare.generation, None);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("enforcer-flowlog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_writer_rotates_by_size_and_readers_see_both_files_in_order() {
        let dir = temp_dir("rotate");
        let path = dir.join("flows.jsonl");
        let log = FlowLog::new(&path).with_max_bytes(1000);
        let ctx = ctx();
        for i in 0..6u16 {
            let ev = FlowEvent {
                src_port: 1000 + i,
                ..tcp_event()
            };
            log.write_events(&[ev], &ctx)
                .unwrap_or_else(|e| panic!("write: {e}"));
        }
        let stats = log.stats();
        assert_eq!(stats.written.load(Ordering::Relaxed), 6);
        assert!(stats.rotations.load(Ordering::Relaxed) >= 1);
        assert!(rotated_path(&path).exists());
        assert!(fs::metadata(&path).map(|m| m.len()).unwrap_or(u64::MAX) <= 1000);
        let all = read_records(&path, FlowFilter::default(), None)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let ports: Vec<u16> = all
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|r| r.src_port))
            .collect();
        // One old file is kept: the newest records, in order, end with the last written.
        assert!(
            ports.len() >= 2 && ports.ends_with(&[1004, 1005]),
            "{ports:?}"
        );
        assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");
        let last = read_records(&path, FlowFilter::default(), Some(1))
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(last.len(), 1);
        let allowed = read_records(
            &path,
            FlowFilter {
                verdict: Some(FlowVerdict::Allowed),
            },
            None,
        )
        .unwrap_or_else(|e| panic!("read: {e}"));
        assert!(allowed.is_empty());
        let _ = fs::remove_dir_all(&dir);
        let missing = read_records(&path, FlowFilter::default(), None);
        assert!(missing.is_err_and(|e| e.to_string().contains("no flow log")));
    }

    #[test]
    fn the_follower_sees_appends_partial_lines_and_rotations() {
        let dir = temp_dir("follow");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("flows.jsonl");
        let append = |p: &Path, s: &str| {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("{e}"));
            f.write_all(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        };
        let mut tail = Follower::from_end(&path);
        assert!(tail.poll().unwrap_or_default().is_empty(), "no file yet");
        append(&path, "a\nb");
        assert_eq!(tail.poll().unwrap_or_default(), vec!["a".to_owned()]);
        append(&path, "\nc\n");
        assert_eq!(
            tail.poll().unwrap_or_default(),
            vec!["b".to_owned(), "c".to_owned()]
        );
        // Rotation: the old file gets one more line, then moves; a new file starts.
        append(&path, "d\n");
        fs::rename(&path, rotated_path(&path)).unwrap_or_else(|e| panic!("{e}"));
        append(&path, "e\nee\n");
        assert_eq!(
            tail.poll().unwrap_or_default(),
            vec!["d".to_owned(), "e".to_owned(), "ee".to_owned()]
        );
        // Truncation starts over.
        fs::write(&path, "f\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tail.poll().unwrap_or_default(), vec!["f".to_owned()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
