//! The agent's state file, `<state_dir>/state.json`: what `enforcer get` needs to name what the
//! pinned maps hold by number (rule ids, interfaces) while the agent is down.
//!
//! The agent writes it after every successful sync ([`InspectState::from_synced`] then
//! [`InspectState::write`]: a temporary file renamed over the old one, so readers never see a
//! torn file). Readers are tolerant: besides this module's own form, `rules` may be the serde
//! form of the compiler's [`crate::compile::RuleTable`] (`{"entries": [RuleInfo..]}`) or a list of
//! `RuleInfo`s, so a state file written by the agent from its own structures reads too.

use std::{
    fs, io,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::{DecidedBy, EndpointName, RuleBook, protocol_name};
use crate::agent::status::SyncedState;

/// The file name under the state directory.
pub const STATE_FILE: &str = "state.json";
/// The default state directory (tmpfs, like the bpffs pins: both go at a reboot).
pub const DEFAULT_STATE_DIR: &str = "/run/enforcer";
/// Version of this module's format.
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
    pub fn from_synced(s: &SyncedState) -> InspectState {
        InspectState {
            version: STATE_VERSION,
            generation: s.generation,
            endpoints: s
                .endpoints
                .iter()
                .map(|e| EndpointRecord {
                    id: EndpointName::from(&e.id),
                    ifindex: e.ifindex,
                    ifname: e.ifname.clone(),
                })
                .collect(),
            rules: RuleBook::from_table(&s.compiled.rules)
                .iter()
                .map(|(id, d)| RuleRecord {
                    id,
                    decided_by: d.clone(),
                })
                .collect(),
        }
    }

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

    /// Writes `dir/state.json` atomically (temporary file, fsync, rename), creating `dir`.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let path = Self::path(dir);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            serde_json::to_writer(&mut f, self).map_err(io::Error::other)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads `dir/state.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> io::Result<Option<InspectState>> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
    }

    /// Parses a state file (this module's form, or `rules`/`endpoints` in the compiler's and
    /// the agent's serde forms).
    pub fn parse(text: &str) -> Result<InspectState, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Some(obj) = v.as_object_mut() else {
            return Err("the state file is not a JSON object".into());
        };
        if let Some(rules) = obj.get_mut("rules") {
            *rules = Value::Array(normalize_rules(rules.take())?);
        }
        if let Some(Value::Array(eps)) = obj.get_mut("endpoints") {
            for e in eps.iter_mut() {
                // `endpoint` as another name for `id`.
                if let Some(o) = e.as_object_mut()
                    && !o.contains_key("id")
                    && let Some(id) = o.remove("endpoint")
                {
                    o.insert("id".into(), id);
                }
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
    fn write_then_read_round_trips() {
        let dir = std::env::temp_dir().join(format!("enforcer-state-test-{}", std::process::id()));
        let s = sample();
        s.write(&dir).unwrap_or_else(|e| panic!("write: {e}"));
        let back = InspectState::read(&dir).unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(back, Some(s));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(InspectState::read(&dir).ok(), Some(None), "a missing file is None");
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
            Some(&EndpointName::Host { name: "eth0".into() })
        );
        let book = s.rule_book();
        assert_eq!(
            book.name(0).to_string(),
            "tier default / policy p / egress rule 1 (Deny)"
        );
        assert_eq!(book.name(1), DecidedBy::EndOfTier { tier: "default".into() });
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
        let e = InspectState::parse(r#"{"rules": 3}"#).err().unwrap_or_default();
        assert!(e.contains("rules"), "{e}");
    }
}
