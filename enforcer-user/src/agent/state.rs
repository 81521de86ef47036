//! `<state-dir>/state.json`: what read-only tools (`enforcer get`, `enforcer flows`) need to
//! interpret the pinned maps while the agent is down: the rule table (what a `rule_id` in a
//! verdict, a counter or a flow event means) and the endpoint list (which pod or host
//! endpoint an ifindex carries).
//!
//! Written by the agent after every sync that changed something and after every rejected
//! input (counters and the errors), atomically: a temporary file in the same directory,
//! fsynced, then renamed over `state.json`, so a reader sees the old file or the new one.
//! The file describes the tables of `generation`; a reader can compare that with the pinned
//! `CONFIG.generation` to tell whether the file matches the maps (it does not, for example,
//! after a crash between the flip and the write: the next sync rewrites it).
//!
//! The format is versioned by [`STATE_FORMAT`]; fields are only ever added within a version,
//! so readers should ignore unknown fields (serde does by default).

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::compile::{Compiled, EndpointId, RuleInfo};
use crate::evaluator::Decision;

use super::status::AttachedEndpoint;

/// The file name under the state directory.
pub const STATE_FILE: &str = "state.json";
/// The format version (`version` in the file).
pub const STATE_FORMAT: u32 = 1;

/// `<state_dir>/state.json`.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// [`STATE_FORMAT`].
    pub version: u32,
    /// When this file was written (milliseconds since the Unix epoch).
    pub written_at_unix_ms: u64,
    /// The agent process that wrote it.
    pub agent_pid: u32,
    pub node_name: Option<String>,
    /// The pin layout directory (`<pin-base>/v<LAYOUT_VERSION>`) these tables are in.
    pub pin_dir: PathBuf,
    /// `adopted` (pins from an earlier process) or `loaded` (this process loaded the object).
    pub datapath_origin: String,
    pub program_ids: Option<ProgramIds>,
    /// `CONFIG.generation` of the tables described here.
    pub generation: u32,
    /// `CONFIG.active_slot` holding them.
    pub active_slot: u32,
    pub last_sync: Option<LastSync>,
    pub counters: Counters,
    /// The errors of the last rejected input (empty once a valid input was applied).
    pub last_input_errors: Vec<String>,
    /// Enforced endpoints, sorted by ifindex.
    pub endpoints: Vec<PersistedEndpoint>,
    /// The rule table: index = rule id.
    pub rules: Vec<PersistedRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramIds {
    pub from_endpoint: u32,
    pub to_endpoint: u32,
}

/// The last successful sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastSync {
    pub at_unix_ms: u64,
    /// Compile + discover + program, in milliseconds.
    pub took_ms: f64,
    /// Map entries inserted, updated or deleted relative to the tables in force before (0:
    /// nothing was written and no flip happened).
    pub map_changes: usize,
    /// The per-map summary (`ENDPOINTS +1 ~0 -0`, ...), empty when nothing changed.
    pub map_diff: String,
}

/// The agent's counters (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub syncs_total: u64,
    pub sync_failures_total: u64,
    pub invalid_inputs_total: u64,
}

/// Which endpoint: the serde form of [`EndpointId`] (`{"kind": "pod", "namespace", "name"}` or
/// `{"kind": "host", "name"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EndpointRef {
    Pod { namespace: String, name: String },
    Host { name: String },
}

impl From<&EndpointId> for EndpointRef {
    fn from(id: &EndpointId) -> Self {
        match id {
            EndpointId::Pod { namespace, name } => EndpointRef::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            EndpointId::Host { name } => EndpointRef::Host { name: name.clone() },
        }
    }
}

/// One enforced endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedEndpoint {
    pub id: EndpointRef,
    pub ifindex: u32,
    pub ifname: String,
    /// Policy-set ids (`VERDICTS` keys) per direction.
    pub ingress_set: u32,
    pub egress_set: u32,
}

/// One rule-table entry: what decided a verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedRule {
    pub id: u32,
    /// One line, as `explain` prints it.
    pub text: String,
    /// `rule`, `tier-default`, `profile`, `host-endpoint-default-deny`, `failsafe`.
    pub by: String,
    pub tier: Option<String>,
    pub policy: Option<String>,
    /// `ingress` or `egress` (rules only).
    pub direction: Option<String>,
    /// 0-based index in the policy's rules of that direction.
    pub index: Option<usize>,
    /// `Allow` or `Deny` (rules), `Deny` (defaults), `Allow` (profiles, failsafe).
    pub action: Option<String>,
    /// Where the policy was defined (file path or API object reference).
    pub file: Option<PathBuf>,
    pub document: Option<usize>,
    /// The full decision as `explain -o json` prints it.
    pub decision: serde_json::Value,
}

impl PersistedRule {
    pub fn from_info(r: &RuleInfo) -> PersistedRule {
        let lower = |s: String| s.to_ascii_lowercase();
        let mut out = PersistedRule {
            id: r.id,
            text: r.decision.to_string(),
            decision: serde_json::to_value(&r.decision).unwrap_or(serde_json::Value::Null),
            ..PersistedRule::default()
        };
        out.by = out
            .decision
            .get("by")
            .and_then(|b| b.as_str())
            .unwrap_or_default()
            .to_owned();
        match &r.decision {
            Decision::Rule(rr) => {
                out.tier = Some(rr.tier.clone());
                out.policy = Some(rr.policy.clone());
                out.direction = Some(lower(rr.direction.to_string()));
                out.index = Some(rr.index);
                out.action = Some(format!("{:?}", rr.action));
                out.file = Some(rr.origin.file.clone());
                out.document = Some(rr.origin.document);
            }
            Decision::TierDefault { tier } => {
                out.tier = Some(tier.clone());
                out.action = Some("Deny".to_owned());
            }
            Decision::HostEndpointDefaultDeny => out.action = Some("Deny".to_owned()),
            Decision::Profile { .. } | Decision::Failsafe { .. } => {
                out.action = Some("Allow".to_owned());
            }
            Decision::NotPoliced => {}
        }
        out
    }
}

impl PersistedEndpoint {
    pub fn new(e: &AttachedEndpoint, compiled: &Compiled) -> PersistedEndpoint {
        let sets = compiled.endpoints.get(&e.id);
        PersistedEndpoint {
            id: EndpointRef::from(&e.id),
            ifindex: e.ifindex,
            ifname: e.ifname.clone(),
            ingress_set: sets.map_or(u32::MAX, |s| s.ingress),
            egress_set: sets.map_or(u32::MAX, |s| s.egress),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reading or writing the state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{} is not a state file this version understands: {error}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error(
        "{} has version {found}; this enforcer reads version {STATE_FORMAT} (upgrade the CLI)",
        path.display()
    )]
    Format { path: PathBuf, found: u32 },
}

/// Reads `<state_dir>/state.json`.
pub fn read(state_dir: &Path) -> Result<PersistedState, StateError> {
    let path = state_path(state_dir);
    let bytes = fs::read(&path).map_err(|error| StateError::Io {
        what: "reading",
        path: path.clone(),
        error,
    })?;
    let state: PersistedState =
        serde_json::from_slice(&bytes).map_err(|error| StateError::Parse {
            path: path.clone(),
            error,
        })?;
    if state.version != STATE_FORMAT {
        return Err(StateError::Format {
            path,
            found: state.version,
        });
    }
    Ok(state)
}

/// Writes `<state_dir>/state.json` atomically (temporary file, fsync, rename), creating the
/// directory if needed.
pub fn write(state_dir: &Path, state: &PersistedState) -> Result<(), StateError> {
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |error| StateError::Io { what, path, error }
    };
    fs::create_dir_all(state_dir).map_err(io_err("creating", state_dir))?;
    let path = state_path(state_dir);
    let tmp = state_dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
        what: "serializing",
        path: path.clone(),
        error: io::Error::other(e),
    })?;
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(&bytes).map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the state file (after `--detach-on-exit`: nothing is enforced any more).
pub fn remove(state_dir: &Path) -> Result<(), StateError> {
    let path = state_path(state_dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StateError::Io {
            what: "removing",
            path,
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `enforcer get` reads this file with `observe::InspectState`: it must understand it.
    #[test]
    fn observe_reads_the_agent_state_file() {
        use crate::{
            evaluator::RuleRef,
            model::{Action, Direction, Origin, PolicyKind, Protocol},
            observe::{EndpointName, InspectState},
        };
        let rule = |id, decision| {
            PersistedRule::from_info(&RuleInfo {
                id,
                decision,
                policy_index: None,
            })
        };
        let state = PersistedState {
            version: STATE_FORMAT,
            generation: 3,
            endpoints: vec![PersistedEndpoint {
                id: EndpointRef::Host {
                    name: "eth0".into(),
                },
                ifindex: 2,
                ifname: "eth0".into(),
                ingress_set: 1,
                egress_set: 2,
            }],
            rules: vec![
                rule(
                    0,
                    Decision::Rule(RuleRef {
                        tier: "default".into(),
                        policy: "ns/p".into(),
                        kind: PolicyKind::KubernetesNetworkPolicy,
                        direction: Direction::Ingress,
                        index: 0,
                        action: Action::Allow,
                        origin: Origin {
                            file: "p.yaml".into(),
                            document: 1,
                        },
                    }),
                ),
                rule(
                    1,
                    Decision::Failsafe {
                        protocol: Protocol::TCP,
                        port: 22,
                    },
                ),
            ],
            ..PersistedState::default()
        };
        let text = serde_json::to_string(&state).unwrap_or_else(|e| panic!("{e}"));
        let read = InspectState::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.generation, 3);
        assert_eq!(
            read.endpoint(2).map(|e| &e.id),
            Some(&EndpointName::Host {
                name: "eth0".into()
            })
        );
        let book = read.rule_book();
        assert!(
            book.name(0).to_string().contains("ns/p"),
            "{}",
            book.name(0)
        );
        assert!(book.name(1).to_string().contains("22"), "{}", book.name(1));
        assert_eq!(state.rules[0].direction.as_deref(), Some("ingress"));
        assert_eq!(state.rules[0].action.as_deref(), Some("Allow"));
    }

    #[test]
    fn round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("enforcer-state-test-{}", std::process::id()));
        let state = PersistedState {
            version: STATE_FORMAT,
            generation: 7,
            endpoints: vec![PersistedEndpoint {
                id: EndpointRef::Pod {
                    namespace: "ns".into(),
                    name: "a".into(),
                },
                ifindex: 4,
                ifname: "cali1".into(),
                ingress_set: 0,
                egress_set: 1,
            }],
            ..PersistedState::default()
        };
        write(&dir, &state).unwrap_or_else(|e| panic!("{e}"));
        let back = read(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, state);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        let _ = fs::remove_dir_all(&dir);
    }
}
