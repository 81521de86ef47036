//! Reading the agent's state file, `<state_dir>/state.json` (written by the agent after every
//! sync, atomically; `crate::agent::state` owns the format): what `enforcer get` needs to name
//! what the pinned maps hold by number (rule ids, interfaces) while the agent is down.
//!
//! The reader is deliberately tolerant, reading only what it needs: `generation`, `endpoints`
//! (each an endpoint object `{kind, namespace?, name, ifindex, ifname}`, or `{id|endpoint:
//! {kind, ..}, ifindex, ifname}`) and `rules` (a list, or a `RuleTable`'s `{entries: [..]}`,
//! of `{id, decision}` with `decision` in the evaluator's serde form, or `{id, decided_by}`).
//! Unknown fields are ignored, so the agent can add to its file freely.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::{DecidedBy, EndpointName, RuleBook, protocol_name};

/// The file name under the state directory.
pub const STATE_FILE: &str = "state.json";
/// The default state directory (tmpfs, like the bpffs pins: both go at a reboot).
pub const DEFAULT_STATE_DIR: &str = "/run/enforcer";
/// The newest state file format this reader understands (`format` in the file).
pub const STATE_VERSION: u32 = 1;

/// One enforced interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: EndpointName,
    pub ifindex: u32,
    pub ifname: String,
}

/// One rule-table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub id: u32,
    pub decided_by: DecidedBy,
}

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectState {
    #[serde(default)]
    pub version: u32,
    /// `CONFIG.generation` the state was programmed under.
    #[serde(default)]
    pub generation: u32,
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
    #[serde(default)]
    pub rules: Vec<RuleRecord>,
}

impl InspectState {
    pub fn rule_book(&self) -> RuleBook {
        RuleBook::from_entries(self.rules.iter().map(|r| (r.id, r.decided_by.clone())))
    }

    /// The endpoint on `ifindex`.
    pub fn endpoint(&self, ifindex: u32) -> Option<&EndpointRecord> {
        self.endpoints.iter().find(|e| e.ifindex == ifindex)
    }

    /// `dir/state.json`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads `dir/state.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> io::Result<Option<InspectState>> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::parse(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Parses a state file (this module's form, or `rules`/`endpoints` in the compiler's and
    /// the agent's serde forms).
    pub fn parse(text: &str) -> Result<InspectState, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Some(obj) = v.as_object_mut() else {
            return Err("the state file is not a JSON object".into());
        };
        if let Some(f) = ["format", "version"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_u64))
            && f > u64::from(STATE_VERSION)
        {
            return Err(format!(
                "the state file has format {f}; this enforcer reads format {STATE_VERSION} \
                 (upgrade the CLI)"
            ));
        }
        if let Some(rules) = obj.get_mut("rules") {
            *rules = Value::Array(normalize_rules(rules.take())?);
        }
        if let Some(Value::Array(eps)) = obj.get_mut("endpoints") {
            for e in eps.iter_mut() {
                let Some(o) = e.as_object_mut() else {
                    continue;
                };
                if o.contains_key("id") {
                    continue;
                }
                // `endpoint` as another name for `id`; or the endpoint's own `kind`,
                // `namespace` and `name` (the agent's form).
                let id = match o.remove("endpoint") {
                    Some(id) => id,
                    None => {
                        let mut id = serde_json::Map::new();
                        for k in ["kind", "namespace", "name"] {
                            if let Some(v) = o.get(k).filter(|v| !v.is_null()) {
                                id.insert(k.into(), v.clone());
                            }
                        }
                        Value::Object(id)
                    }
                };
                o.insert("id".into(), id);
            }
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// Rules as `[{id, decided_by}]`, from this module's form or the compiler's `RuleInfo`s
/// (`{id, decision: {by: ..}}`, possibly wrapped in a `RuleTable`'s `{entries: [..]}`).
fn normalize_rules(rules: Value) -> Result<Vec<Value>, String> {
    let list = match rules {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("entries") {
            Some(Value::Array(a)) => a,
            _ => return Err("`rules` is an object without an `entries` list".into()),
        },
        _ => return Err("`rules` is neither a list nor a rule table".into()),
    };
    let mut out = Vec::with_capacity(list.len());
    for mut r in list {
        let Some(o) = r.as_object_mut() else {
            return Err("a rule is not an object".into());
        };
        if !o.contains_key("decided_by") {
            let Some(mut d) = o.remove("decision") else {
                return Err("a rule has neither `decided_by` nor `decision`".into());
            };
            if let Some(d) = d.as_object_mut() {
                match d.get("by").and_then(Value::as_str) {
                    Some("tier-default") => {
                        d.insert("by".into(), "end-of-tier".into());
                    }
                    Some("not-policed") => {
                        let id = o.get("id").cloned().unwrap_or(Value::Null);
                        d.insert("by".into(), "unknown".into());
                        d.insert("rule_id".into(), id);
                    }
                    _ => {}
                }
                if let Some(p) = d.get("protocol").and_then(Value::as_u64) {
                    let name = protocol_name(u8::try_from(p).unwrap_or(0));
                    d.insert("protocol".into(), name.into());
                }
            }
            o.insert("decided_by".into(), d);
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InspectState {
        InspectState {
            version: STATE_VERSION,
            generation: 4,
            endpoints: vec![EndpointRecord {
                id: EndpointName::Pod {
                    namespace: "prod".into(),
                    name: "db-0".into(),
                },
                ifindex: 12,
                ifname: "cali12".into(),
            }],
            rules: vec![
                RuleRecord {
                    id: 0,
                    decided_by: DecidedBy::Rule {
                        tier: "default".into(),
                        policy: "prod/db".into(),
                        kind: "NetworkPolicy".into(),
                        direction: "ingress".into(),
                        index: 0,
                        action: "Allow".into(),
                    },
                },
                RuleRecord {
                    id: 1,
                    decided_by: DecidedBy::EndOfTier {
                        tier: "default".into(),
                    },
                },
            ],
        }
    }

    #[test]
    fn own_form_round_trips_and_read_handles_missing_files() {
        let s = sample();
        let text = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(InspectState::parse(&text).ok(), Some(s.clone()));
        let dir = std::env::temp_dir().join(format!("enforcer-state-test-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        fs::write(InspectState::path(&dir), &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(InspectState::read(&dir).ok(), Some(Some(s)));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            InspectState::read(&dir).ok(),
            Some(None),
            "a missing file is None"
        );
    }

    /// The agent's `state.json` (`crate::agent::state::PersistedState`), abridged.
    #[test]
    fn reads_the_agents_state_file() {
        let text = r#"{
          "format": 1, "written_at_unix_ms": 1, "agent_pid": 7, "node_name": null,
          "pin_dir": "/sys/fs/bpf/enforcer/v1", "datapath_origin": "adopted",
          "generation": 5, "active_slot": 1,
          "counters": {"syncs_total": 1, "sync_failures_total": 0, "invalid_inputs_total": 0},
          "last_input_errors": [],
          "endpoints": [
            {"kind": "pod", "namespace": "prod", "name": "db-0", "ifindex": 12, "ifname": "cali12",
             "ingress_set": 0, "egress_set": 1},
            {"kind": "host", "namespace": null, "name": "eth0", "ifindex": 2, "ifname": "eth0",
             "ingress_set": 2, "egress_set": 2}
          ],
          "rules": [
            {"id": 0, "text": "tier default / policy prod/db / ingress rule 0 (Allow)", "by": "rule",
             "tier": "default", "policy": "prod/db", "direction": "ingress", "index": 0,
             "action": "Allow", "file": "a.yaml", "document": 1,
             "decision": {"by": "rule", "tier": "default", "policy": "prod/db",
               "kind": "NetworkPolicy", "direction": "ingress", "index": 0, "action": "Allow",
               "origin": {"file": "a.yaml", "document": 1}}},
            {"id": 1, "text": "end of tier default", "by": "tier-default", "tier": "default",
             "action": "Deny", "decision": {"by": "tier-default", "tier": "default"}}
          ]
        }"#;
        let s = InspectState::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.generation, 5);
        assert_eq!(
            s.endpoint(12).map(|e| (&e.id, e.ifname.as_str())),
            Some((
                &EndpointName::Pod {
                    namespace: "prod".into(),
                    name: "db-0".into()
                },
                "cali12"
            ))
        );
        assert_eq!(
            s.endpoint(2).map(|e| &e.id),
            Some(&EndpointName::Host {
                name: "eth0".into()
            })
        );
        let book = s.rule_book();
        assert_eq!(
            book.name(0).to_string(),
            "tier default / policy prod/db / ingress rule 0 (Allow)"
        );
        assert_eq!(
            book.name(1),
            DecidedBy::EndOfTier {
                tier: "default".into()
            }
        );
        let newer = text.replacen("\"format\": 1", "\"format\": 2", 1);
        let e = InspectState::parse(&newer).err().unwrap_or_default();
        assert!(e.contains("format 2"), "{e}");
    }

    #[test]
    fn reads_the_compilers_rule_table_form() {
        let text = r#"{
          "generation": 2,
          "endpoints": [{"endpoint": {"kind": "host", "name": "eth0"}, "ifindex": 2, "ifname": "eth0"}],
          "rules": {"entries": [
            {"id": 0, "policy_index": 3, "decision": {"by": "rule", "tier": "default", "policy": "p",
              "kind": "GlobalNetworkPolicy", "direction": "egress", "index": 1, "action": "Deny",
              "origin": {"file": "a.yaml", "document": 1}}},
            {"id": 1, "policy_index": null, "decision": {"by": "tier-default", "tier": "default"}},
            {"id": 2, "policy_index": null, "decision": {"by": "failsafe", "protocol": 6, "port": 22}}
          ]}
        }"#;
        let s = InspectState::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.generation, 2);
        assert_eq!(
            s.endpoint(2).map(|e| &e.id),
            Some(&EndpointName::Host {
                name: "eth0".into()
            })
        );
        let book = s.rule_book();
        assert_eq!(
            book.name(0).to_string(),
            "tier default / policy p / egress rule 1 (Deny)"
        );
        assert_eq!(
            book.name(1),
            DecidedBy::EndOfTier {
                tier: "default".into()
            }
        );
        assert_eq!(
            book.name(2),
            DecidedBy::Failsafe {
                protocol: "tcp".into(),
                port: 22
            }
        );
    }

    #[test]
    fn garbage_is_an_error_naming_the_problem() {
        assert!(InspectState::parse("[1,2]").is_err());
        let e = InspectState::parse(r#"{"rules": 3}"#)
            .err()
            .unwrap_or_default();
        assert!(e.contains("rules"), "{e}");
    }
}
