//! Observe and inspect end to end: the flow log of a real denied flow, a metrics scrape over
//! real HTTP, health and readiness transitions, and `enforcer get` / `enforcer flows` output.
//!
//! Privileged tests (`privileged_*`) FAIL, never skip, when not root or when this build embeds
//! the stub eBPF object. Each loads the real datapath under its own pin base
//! (`/sys/fs/bpf/enforcer-observe-<pid>-<n>`, removed on drop), programs a compiled policy for
//! one endpoint on ifindex 1 (loopback: the device `BPF_PROG_TEST_RUN` gives the skb) and runs
//! crafted frames through the pinned `enforcer_to_endpoint` program (the endpoint's ingress).
//! Nothing is attached to any interface and no network namespace is needed. They serialise
//! on a process-wide mutex.
//!
//! The policy: tier `security` with `security.deny-db` (ingress to `app == 'db'`: Deny TCP
//! 5432, Pass the rest) and the staged `security.staged-allow-db` (Allow TCP 5432), so a
//! client → db:5432 flow is denied by `security.deny-db` rule 0 and the staged view allows it,
//! while client → db:80 passes to the namespace profile and is allowed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use enforcer_common::{ACTION_ALLOW, ACTION_DENY, DIR_INGRESS, FlowEvent, programs};
use enforcer_user::{
    agent::{
        state::{
            self as agent_state, PersistedEndpoint, PersistedRule, PersistedState, STATE_FORMAT,
        },
        status::{AgentStatus, AttachedEndpoint, SyncedState},
    },
    compile::{Compiled, EndpointId, compile, to_map_entries},
    datapath::{Datapath, PinPaths},
    evaluator::{Options, Packet},
    model::{Inventory, Protocol},
    observe::{
        DecidedBy, EndpointName, FlowLog, HttpOptions, MetricsSource, RuleBook, Server,
        flowlog::FlowContext,
    },
    sources,
    testsupport::{PinBase, frame, require_privileged, unique},
};
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
spec:
  order: 100
---
apiVersion: v1
kind: Namespace
metadata:
  name: prod
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: prod
  labels:
    app: db
spec:
  containers:
    - name: db
      image: postgres
status:
  podIP: 10.0.0.7
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: prod
  labels:
    app: client
spec:
  containers:
    - name: client
      image: curl
status:
  podIP: 10.0.0.5
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: security.deny-db
spec:
  tier: security
  order: 10
  selector: app == 'db'
  types:
    - Ingress
  ingress:
    - action: Deny
      protocol: TCP
      destination:
        ports: [5432]
    - action: Pass
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata:
  name: security.staged-allow-db
spec:
  tier: security
  order: 5
  selector: app == 'db'
  types:
    - Ingress
  ingress:
    - action: Allow
      protocol: TCP
      destination:
        ports: [5432]
"#;

/// Loopback: the skb's device under `BPF_PROG_TEST_RUN`.
const LO: u32 = 1;
/// `TCX_NEXT`: allowed.
const PASS: i32 = -1;
/// `TC_ACT_SHOT`.
const DROP: i32 = 2;
const CLIENT: [u8; 4] = [10, 0, 0, 5];
const DB: [u8; 4] = [10, 0, 0, 7];

static KERNEL: Mutex<()> = Mutex::new(());

fn kernel() -> MutexGuard<'static, ()> {
    KERNEL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn db_id() -> EndpointId {
    EndpointId::Pod {
        namespace: "prod".into(),
        name: "db".into(),
    }
}

fn compiled() -> Arc<Compiled> {
    let inv = sources::load_str(POLICY, Path::new("observe-test.yaml"))
        .unwrap_or_else(|e| panic!("the test policy does not load: {e}"));
    let errors = sources::validate(&inv);
    assert!(errors.is_empty(), "{errors:?}");
    Arc::new(compile(&inv, &Options::default()).unwrap_or_else(|e| panic!("compile: {e}")))
}

/// A real datapath under its own pin base with the test policy programmed for `prod/db` on
/// ifindex 1, and an agent status that has synced it.
struct Programmed {
    base: PinBase,
    dp: Datapath,
    compiled: Arc<Compiled>,
    status: Arc<AgentStatus>,
    generation: u32,
}

fn programmed() -> Programmed {
    require_privileged();
    let compiled = compiled();
    let db = db_id();
    let entries = to_map_entries(&compiled, 0, &|id| {
        if *id == db { vec![LO] } else { Vec::new() }
    })
    .unwrap_or_else(|e| panic!("to_map_entries: {e}"));
    let base = PinBase::new("observe");
    let mut dp = Datapath::open(base.open_options()).unwrap_or_else(|e| panic!("open: {e}"));
    dp.program(&entries)
        .unwrap_or_else(|e| panic!("program: {e}"));
    let generation = dp.config().unwrap().generation;
    let status = Arc::new(AgentStatus::new());
    status.heartbeat();
    status.synced(
        SyncedState {
            generation,
            compiled: compiled.clone(),
            endpoints: vec![AttachedEndpoint {
                id: db,
                ifindex: LO,
                ifname: "lo".into(),
            }],
        },
        Duration::from_millis(12),
    );
    Programmed {
        base,
        dp,
        compiled,
        status,
        generation,
    }
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Packet {
    Packet {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        protocol: Protocol::TCP,
        src_port: Some(sport),
        dst_port: Some(dport),
        icmp_type: None,
        icmp_code: None,
    }
}

/// Runs the first packet of `p` through the pinned `enforcer_to_endpoint` (the endpoint's
/// ingress) and returns the program's verdict.
fn into_endpoint(base: &PinBase, p: &Packet) -> i32 {
    let path = PinPaths::new(base.path()).program(programs::TO_ENDPOINT);
    let prog = SchedClassifier::from_pin(&path).unwrap_or_else(|e| panic!("from_pin: {e}"));
    let frame = frame::packet_frame(p, frame::first_packet_flags(p.protocol), b"")
        .unwrap_or_else(|| panic!("no frame for {p:?}"));
    let out = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e:#?}"));
    i32::from_ne_bytes(out.return_value.to_ne_bytes())
}

fn denied_flow(sport: u16) -> Packet {
    tcp(CLIENT, sport, DB, 5432)
}

fn allowed_flow(sport: u16) -> Packet {
    tcp(CLIENT, sport, DB, 80)
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(&format!("enforcer-observe-{tag}")));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET: (status, headers, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    (code, head.to_owned(), body.to_owned())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (code, _, body) = http(addr, "GET", path);
    (code, body)
}

/// The value of the sample `name{labels}` (exactly as written) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

fn enforcer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(args)
        .env_remove("ENFORCER_PIN_BASE")
        .env_remove("ENFORCER_STATE_DIR")
        .env_remove("ENFORCER_FLOW_LOG")
        .output()
        .unwrap()
}

fn stdout_of(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Flow log
// ---------------------------------------------------------------------------------------------

#[test]
fn privileged_flow_log_names_the_deciding_tier_policy_and_rule() {
    let _k = kernel();
    let p = programmed();
    let dir = TempDir::new("flowlog");
    let path = dir.0.join("flows.jsonl");
    let rt = runtime();
    let log = FlowLog::new(&path);
    let stats = log.stats();
    let reader = {
        let _enter = rt.enter();
        p.dp.events().unwrap().into_async().unwrap()
    };
    let task = rt.spawn(log.run(reader, p.status.clone()));

    assert_eq!(into_endpoint(&p.base, &denied_flow(40_000)), DROP);
    assert_eq!(
        into_endpoint(&p.base, &allowed_flow(40_001)),
        PASS,
        "port 80 passes the security tier and the profile allows it"
    );
    wait_for("the flow record", Duration::from_secs(5), || {
        stats.written.load(Ordering::Relaxed) >= 1
    });
    // Give a wrongly logged allowed flow the chance to show up too.
    std::thread::sleep(Duration::from_millis(200));
    task.abort();
    drop(rt);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one event: the denied flow only\n{text}");
    let mut r: Value = serde_json::from_str(lines[0]).unwrap();
    let time = r["time"].as_str().unwrap().to_owned();
    assert!(
        time.len() == 30 && time.ends_with('Z') && &time[10..11] == "T",
        "RFC 3339 with nanoseconds: {time}"
    );
    assert!(r["mono_ns"].as_u64().is_some_and(|n| n > 0));
    let rule_id = r["rule_id"].as_u64().unwrap();
    for k in ["time", "mono_ns", "rule_id"] {
        r.as_object_mut().unwrap().remove(k);
    }
    let staged_id = r["staged"]
        .as_object_mut()
        .unwrap()
        .remove("rule_id")
        .unwrap();
    assert_eq!(
        r,
        json!({
            "verdict": "denied",
            "reason": "deny_policy",
            "direction": "ingress",
            "protocol": "tcp",
            "src": "10.0.0.5",
            "src_port": 40000,
            "dst": "10.0.0.7",
            "dst_port": 5432,
            "ifindex": 1,
            "ifname": "lo",
            "endpoint": {"kind": "pod", "namespace": "prod", "name": "db"},
            "decided_by": {
                "by": "rule", "tier": "security", "policy": "security.deny-db",
                "kind": "GlobalNetworkPolicy", "direction": "ingress", "index": 0,
                "action": "Deny"
            },
            "staged": {
                "verdict": "allowed",
                "decided_by": {
                    "by": "rule", "tier": "security", "policy": "security.staged-allow-db",
                    "kind": "StagedGlobalNetworkPolicy", "direction": "ingress", "index": 0,
                    "action": "Allow"
                }
            },
            "generation": p.generation,
        })
    );
    // The ids are the compiled rule table's.
    let book = RuleBook::from_table(&p.compiled.rules);
    assert_eq!(
        book.name(rule_id as u32).to_string(),
        "tier security / policy security.deny-db / ingress rule 0 (Deny)"
    );
    assert!(matches!(
        book.name(staged_id.as_u64().unwrap() as u32),
        DecidedBy::Rule { ref policy, .. } if policy == "security.staged-allow-db"
    ));

    // `enforcer flows` reads it back.
    let file = path.to_str().unwrap();
    let shown = stdout_of(&enforcer(&["flows", "--file", file]), "enforcer flows");
    assert!(
        shown.contains("denied  ingress  pod prod/db (lo)  tcp 10.0.0.5:40000 -> 10.0.0.7:5432  by tier security / policy security.deny-db / ingress rule 0 (Deny)  [staged: allowed by tier security / policy security.staged-allow-db / ingress rule 0 (Allow)]"),
        "{shown}"
    );
    let allowed = stdout_of(
        &enforcer(&["flows", "--file", file, "--verdict", "allowed"]),
        "enforcer flows --verdict allowed",
    );
    assert!(allowed.is_empty(), "{allowed}");
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn privileged_metrics_scrape_over_http() {
    let _k = kernel();
    let p = programmed();
    for sport in [41_000, 41_001] {
        assert_eq!(into_endpoint(&p.base, &denied_flow(sport)), DROP);
    }
    assert_eq!(into_endpoint(&p.base, &allowed_flow(41_002)), PASS);

    let rt = runtime();
    let log = FlowLog::new("/nonexistent/never-written.jsonl");
    let source = MetricsSource::new(p.base.path()).with_flow_log(log.stats());
    let server = rt
        .block_on(Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            p.status.clone(),
            source,
            HttpOptions::default(),
        ))
        .unwrap();
    let addr = server.local_addr().unwrap();
    assert!(addr.ip().is_loopback());
    rt.spawn(server.run());

    let (code, head, text) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect("enforcer_agent_ready", 1.0);
    expect("enforcer_agent_syncs_total", 1.0);
    expect("enforcer_agent_sync_duration_seconds", 0.012);
    expect("enforcer_agent_endpoints", 1.0);
    expect("enforcer_datapath_up", 1.0);
    expect(
        "enforcer_datapath_policy_generation",
        f64::from(p.generation),
    );
    expect(
        r#"enforcer_datapath_packets_total{verdict="denied",reason="deny_policy",direction="ingress"}"#,
        2.0,
    );
    expect(
        r#"enforcer_datapath_packets_total{verdict="allowed",reason="allow_policy",direction="ingress"}"#,
        1.0,
    );
    expect(
        r#"enforcer_datapath_packets_total{verdict="denied",reason="deny_policy",direction="egress"}"#,
        0.0,
    );
    expect(
        r#"enforcer_policy_rule_hits_total{tier="security",policy="security.deny-db",kind="GlobalNetworkPolicy",direction="ingress",index="0",action="Deny"}"#,
        2.0,
    );
    expect(
        r#"enforcer_policy_hits_total{tier="security",policy="security.deny-db",kind="GlobalNetworkPolicy"}"#,
        2.0,
    );
    expect(
        r#"enforcer_policy_default_hits_total{decision="profile",tier="",name="kns.prod",action="Allow"}"#,
        1.0,
    );
    expect(
        r#"enforcer_policy_staged_rule_hits_total{tier="security",policy="security.staged-allow-db",kind="StagedGlobalNetworkPolicy",direction="ingress",index="0",action="Allow"}"#,
        2.0,
    );
    expect(
        r#"enforcer_policy_staged_default_hits_total{decision="profile",tier="",name="kns.prod",action="Allow"}"#,
        1.0,
    );
    expect(r#"enforcer_datapath_map_entries{map="endpoints"}"#, 1.0);
    expect(
        r#"enforcer_datapath_map_max_entries{map="endpoints"}"#,
        f64::from(enforcer_common::MAX_ENDPOINTS),
    );
    expect(
        r#"enforcer_datapath_map_fill_ratio{map="endpoints"}"#,
        1.0 / f64::from(enforcer_common::MAX_ENDPOINTS),
    );
    expect("enforcer_datapath_conntrack_entries", 1.0);
    expect(r#"enforcer_datapath_map_entries{map="conntrack"}"#, 1.0);
    let verdicts = sample(&text, r#"enforcer_datapath_map_entries{map="verdicts"}"#);
    assert!(verdicts.is_some_and(|n| n >= 1.0), "{text}");
    expect(
        r#"enforcer_flowlog_events_dropped_total{stage="kernel"}"#,
        0.0,
    );
    expect(
        r#"enforcer_flowlog_events_dropped_total{stage="writer"}"#,
        0.0,
    );
    expect("enforcer_flowlog_events_written_total", 0.0);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // A second scrape sees new packets (collected at scrape time, not cached).
    assert_eq!(into_endpoint(&p.base, &denied_flow(41_003)), DROP);
    let (_, again) = get(addr, "/metrics");
    assert_eq!(
        sample(
            &again,
            r#"enforcer_datapath_packets_total{verdict="denied",reason="deny_policy",direction="ingress"}"#
        ),
        Some(3.0),
        "{again}"
    );
}

// ---------------------------------------------------------------------------------------------
// Health and readiness
// ---------------------------------------------------------------------------------------------

#[test]
fn health_and_readiness_transitions() {
    let status = Arc::new(AgentStatus::new());
    status.heartbeat();
    let rt = runtime();
    let server = rt
        .block_on(Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            status.clone(),
            MetricsSource::agent_only(),
            HttpOptions {
                liveness_timeout: Duration::from_secs(1),
                ..HttpOptions::default()
            },
        ))
        .unwrap();
    let addr = server.local_addr().unwrap();
    rt.spawn(server.run());

    let (code, body) = get(addr, "/readyz");
    assert_eq!(code, 503, "not ready before the first sync: {body}");
    assert!(body.contains("not ready"), "{body}");
    status.heartbeat();
    assert_eq!(get(addr, "/healthz").0, 200);
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "enforcer_agent_ready"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "enforcer_datapath_up"),
        Some(0.0),
        "{metrics}"
    );

    let empty = compile(&Inventory::default(), &Options::default()).unwrap();
    status.synced(
        SyncedState {
            generation: 1,
            compiled: Arc::new(empty),
            endpoints: Vec::new(),
        },
        Duration::from_millis(5),
    );
    assert_eq!(get(addr, "/readyz"), (200, "ready\n".to_owned()));
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "enforcer_agent_ready"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "enforcer_agent_syncs_total"),
        Some(1.0),
        "{metrics}"
    );
    status.sync_failed();
    status.input_invalid();
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        sample(&metrics, "enforcer_agent_sync_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "enforcer_agent_invalid_inputs_total"),
        Some(1.0)
    );

    // No heartbeat for longer than the limit: the loop counts as stuck.
    std::thread::sleep(Duration::from_millis(1300));
    let (code, body) = get(addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("last went round"), "{body}");
    assert_eq!(
        get(addr, "/readyz").0,
        200,
        "readiness does not depend on liveness"
    );
    status.heartbeat();
    assert_eq!(get(addr, "/healthz"), (200, "ok\n".to_owned()));

    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(http(addr, "POST", "/metrics").0, 405);
}

// ---------------------------------------------------------------------------------------------
// enforcer get
// ---------------------------------------------------------------------------------------------

/// `state.json`, written by the agent's own writer (`agent::state`), so `get` is tested
/// against the real format.
fn write_agent_state(dir: &Path, p: &Programmed) {
    let attached = AttachedEndpoint {
        id: db_id(),
        ifindex: LO,
        ifname: "lo".into(),
    };
    let persisted = PersistedState {
        version: STATE_FORMAT,
        generation: p.generation,
        active_slot: p.dp.config().unwrap().active_slot,
        endpoints: vec![PersistedEndpoint::new(&attached, &p.compiled)],
        rules: p
            .compiled
            .rules
            .iter()
            .map(PersistedRule::from_info)
            .collect(),
        ..PersistedState::default()
    };
    agent_state::write(dir, &persisted).unwrap_or_else(|e| panic!("{e}"));
}

fn strip_ages(v: &mut Value) {
    if let Some(entries) = v.get_mut("entries").and_then(Value::as_array_mut) {
        for e in entries {
            if let Some(o) = e.as_object_mut() {
                o.remove("age_seconds");
                o.remove("idle_seconds");
            }
        }
    }
}

#[test]
fn privileged_get_prints_endpoints_policies_maps_and_conntrack_in_every_format() {
    let _k = kernel();
    let p = programmed();
    assert_eq!(into_endpoint(&p.base, &denied_flow(42_000)), DROP);
    assert_eq!(into_endpoint(&p.base, &denied_flow(42_001)), DROP);
    assert_eq!(into_endpoint(&p.base, &allowed_flow(42_002)), PASS);
    let state = TempDir::new("state");
    write_agent_state(&state.0, &p);
    let base = p.base.path().to_str().unwrap();
    let state_dir = state.0.to_str().unwrap();
    let run = |what: &str, format: &str| {
        stdout_of(
            &enforcer(&[
                "get",
                what,
                "-o",
                format,
                "--pin-base",
                base,
                "--state-dir",
                state_dir,
            ]),
            &format!("enforcer get {what} -o {format}"),
        )
    };
    let rows = |table: &str| -> Vec<Vec<String>> {
        table
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };

    for what in ["endpoints", "policies", "maps", "conntrack"] {
        let table = run(what, "table");
        let json_text = run(what, "json");
        let yaml_text = run(what, "yaml");
        let mut json: Value = serde_json::from_str(&json_text)
            .unwrap_or_else(|e| panic!("{what} -o json is not JSON ({e}): {json_text}"));
        let mut yaml: Value = serde_yaml::from_str(&yaml_text)
            .unwrap_or_else(|e| panic!("{what} -o yaml is not YAML ({e}): {yaml_text}"));
        strip_ages(&mut json);
        strip_ages(&mut yaml);
        assert_eq!(json, yaml, "{what}: -o json and -o yaml show the same data");
        let rows = rows(&table);
        match what {
            "endpoints" => {
                assert_eq!(
                    rows[0],
                    [
                        "IFINDEX",
                        "IFNAME",
                        "ENDPOINT",
                        "INGRESS-SET",
                        "EGRESS-SET",
                        "HOST",
                        "ATTACHED"
                    ]
                );
                let sets = p.compiled.endpoints.get(&db_id()).unwrap();
                assert_eq!(
                    rows[1],
                    [
                        "1".to_owned(),
                        "lo".into(),
                        "pod".into(),
                        "prod/db".into(),
                        sets.ingress.to_string(),
                        sets.egress.to_string(),
                        "no".into(),
                        "no".into()
                    ],
                    "{table}"
                );
                assert_eq!(
                    json["endpoints"][0]["endpoint"],
                    json!({"kind": "pod", "namespace": "prod", "name": "db"})
                );
                assert_eq!(json["generation"], json!(p.generation));
                assert!(json.get("note").is_none(), "state matches the maps: {json}");
            }
            "policies" => {
                assert_eq!(rows[0][..3], ["TIER", "POLICY", "KIND"]);
                let deny_row = rows
                    .iter()
                    .find(|r| r.len() > 4 && r[1] == "security.deny-db" && r[2] == "ingress")
                    .unwrap_or_else(|| panic!("no deny-db rule row in\n{table}"));
                assert_eq!(deny_row[3..7], ["0", "Deny", "2", "0"], "{table}");
                let staged_row = rows
                    .iter()
                    .find(|r| {
                        r.len() > 4 && r[1] == "security.staged-allow-db" && r[2] == "ingress"
                    })
                    .unwrap_or_else(|| panic!("no staged rule row in\n{table}"));
                assert_eq!(staged_row[3..7], ["0", "Allow", "0", "2"], "{table}");
                let tier = json["tiers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["tier"] == "security")
                    .unwrap_or_else(|| panic!("{json}"));
                let policy = tier["policies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["policy"] == "security.deny-db")
                    .unwrap_or_else(|| panic!("{json}"));
                assert_eq!(policy["hits"], json!(2));
                assert_eq!(policy["kind"], json!("GlobalNetworkPolicy"));
                assert_eq!(policy["rules"][0]["action"], json!("Deny"));
                assert_eq!(policy["rules"][0]["hits"], json!(2));
                // Pass rules decide nothing, so the policy lists its one deciding rule.
                assert_eq!(policy["rules"].as_array().unwrap().len(), 1);
                let profile = json["defaults"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["decided_by"]["by"] == "profile")
                    .unwrap_or_else(|| panic!("{json}"));
                assert_eq!(profile["hits"], json!(1));
                assert_eq!(json["unnamed"], json!([]));
            }
            "maps" => {
                assert_eq!(rows[0][..4], ["MAP", "TYPE", "ENTRIES", "SLOT-0"]);
                let endpoints = rows
                    .iter()
                    .find(|r| r[0] == "endpoints")
                    .unwrap_or_else(|| panic!("{table}"));
                let active = p.dp.config().unwrap().active_slot;
                let (s0, s1) = if active == 0 { ("1", "0") } else { ("0", "1") };
                assert_eq!(
                    endpoints[1..6],
                    [
                        "hash",
                        "1",
                        s0,
                        s1,
                        &enforcer_common::MAX_ENDPOINTS.to_string()
                    ],
                    "{table}"
                );
                let ct = rows.iter().find(|r| r[0] == "conntrack").unwrap();
                assert_eq!(ct[1..3], ["lru-hash", "1"], "{table}");
                let maps = json["maps"].as_array().unwrap();
                assert_eq!(maps.len(), 12, "every contract map: {json}");
                let m = maps
                    .iter()
                    .find(|m| m["name"] == "ENFORCER_ENDPOINTS")
                    .unwrap();
                assert_eq!(m["entries"], json!(1));
                assert_eq!(m["max_entries"], json!(enforcer_common::MAX_ENDPOINTS));
                assert_eq!(json["generation"], json!(p.generation));
            }
            "conntrack" => {
                assert_eq!(rows[0][..5], ["IFINDEX", "ENDPOINT", "PROTO", "SRC", "DST"]);
                assert_eq!(rows.len(), 2, "one tracked flow: {table}");
                assert!(
                    table.contains("10.0.0.5:42002") && table.contains("10.0.0.7:80"),
                    "{table}"
                );
                assert!(table.contains("profile kns.prod"), "{table}");
                let e = &json["entries"][0];
                assert_eq!(e["protocol"], json!("tcp"));
                assert_eq!(e["src"], json!("10.0.0.5"));
                assert_eq!(e["dst_port"], json!(80));
                assert_eq!(e["state"], json!(["syn"]));
                assert_eq!(e["stale"], json!(false));
                assert_eq!(
                    e["decided_by"],
                    json!({"by": "profile", "profile": "kns.prod"})
                );
                assert_eq!(
                    e["endpoint"],
                    json!({"kind": "pod", "namespace": "prod", "name": "db"})
                );
            }
            _ => unreachable!(),
        }
    }

    // Without the state file: numbers only, with a note saying why.
    let out = enforcer(&[
        "get",
        "policies",
        "--pin-base",
        base,
        "--state-dir",
        "/nonexistent/enforcer-state",
    ]);
    let table = stdout_of(&out, "enforcer get policies without state");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no agent state file"), "{stderr}");
    assert!(table.contains("(not in the rule table)"), "{table}");
}

// ---------------------------------------------------------------------------------------------
// Unprivileged: the CLI on files
// ---------------------------------------------------------------------------------------------

fn sample_context() -> FlowContext {
    FlowContext::from_parts(
        Some(3),
        [(
            12,
            EndpointName::Pod {
                namespace: "prod".into(),
                name: "db".into(),
            },
            "cali12".to_owned(),
        )],
        RuleBook::from_entries([
            (
                0,
                DecidedBy::Rule {
                    tier: "default".into(),
                    policy: "prod/db".into(),
                    kind: "NetworkPolicy".into(),
                    direction: "ingress".into(),
                    index: 0,
                    action: "Deny".into(),
                },
            ),
            (
                1,
                DecidedBy::EndOfTier {
                    tier: "default".into(),
                },
            ),
        ]),
    )
}

fn event(sport: u16, action: u8, staged_action: u8) -> FlowEvent {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&CLIENT);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&DB);
    FlowEvent {
        timestamp_ns: 1,
        ifindex: 12,
        rule_id: 0,
        staged_rule_id: 1,
        direction: DIR_INGRESS,
        family: 4,
        protocol: 6,
        action,
        staged_action,
        src_port: sport,
        dst_port: 5432,
        src,
        dst,
        ..FlowEvent::default()
    }
}

#[test]
fn flows_command_filters_formats_and_follows() {
    let dir = TempDir::new("flows-cli");
    let path = dir.0.join("flows.jsonl");
    let log = FlowLog::new(&path);
    let ctx = sample_context();
    log.write_events(
        &[
            event(1000, ACTION_DENY, ACTION_DENY),
            event(1001, ACTION_ALLOW, ACTION_DENY),
            event(1002, ACTION_DENY, ACTION_DENY),
        ],
        &ctx,
    )
    .unwrap();
    let file = path.to_str().unwrap();

    let all = stdout_of(&enforcer(&["flows", "--file", file]), "flows");
    assert_eq!(all.lines().count(), 3, "{all}");
    let denied = stdout_of(
        &enforcer(&["flows", "--file", file, "--verdict", "denied", "-o", "json"]),
        "flows --verdict denied -o json",
    );
    let ports: Vec<u64> = denied
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["src_port"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ports, [1000, 1002]);
    let last = stdout_of(
        &enforcer(&["flows", "--file", file, "-n", "1"]),
        "flows -n 1",
    );
    assert!(last.contains("10.0.0.5:1002"), "{last}");
    assert_eq!(last.lines().count(), 1);
    let allowed = stdout_of(
        &enforcer(&["flows", "--file", file, "--verdict", "allowed"]),
        "flows --verdict allowed",
    );
    assert!(
        allowed.contains("allowed ingress  pod prod/db (cali12)")
            && allowed.contains("[staged: denied by tier default / end-of-tier deny]"),
        "{allowed}"
    );

    let missing = enforcer(&["flows", "--file", "/nonexistent/flows.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no flow log at"));

    // --follow prints what is there, then what is appended.
    let mut child = Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(["flows", "--follow", "--file", file, "-n", "1", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines arrive through a channel so a broken follower fails the test instead of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.map(|l| tx.send(l)).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(10));
    let first = next();
    if first.is_err() {
        let _ = child.kill();
    }
    let first = first.expect("--follow printed the existing last line");
    assert!(first.contains("\"src_port\":1002"), "{first}");
    log.write_events(&[event(1003, ACTION_DENY, ACTION_DENY)], &ctx)
        .unwrap();
    let appended = next();
    let _ = child.kill();
    let _ = child.wait();
    let appended = appended.expect("--follow printed the appended line");
    assert!(appended.contains("\"src_port\":1003"), "{appended}");
}

#[test]
fn get_without_pins_says_where_it_looked() {
    let out = enforcer(&[
        "get",
        "maps",
        "--pin-base",
        "/sys/fs/bpf/enforcer-observe-none",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/sys/fs/bpf/enforcer-observe-none"),
        "{stderr}"
    );
}
