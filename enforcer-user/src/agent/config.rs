//! The agent's configuration: one set of names, three sources.
//!
//! Every setting has one name, spelled three ways (see `docs/agent.md`):
//!
//! | source | spelling | example |
//! |---|---|---|
//! | command line | `--<name>` | `--interface-prefix cali` |
//! | environment | `ENFORCER_<NAME>` (upper case, `-` → `_`) | `ENFORCER_INTERFACE_PREFIX=cali` |
//! | config file (`--config FILE`, YAML) | `<name>:` | `interface-prefix: cali` |
//!
//! Precedence: command line > environment > config file > defaults. `NODE_NAME` (what the
//! Kubernetes downward API sets) is read when `ENFORCER_NODE_NAME` is absent.
//!
//! Each source is parsed into a [`ConfigLayer`] (every setting optional); [`AgentConfig::resolve`]
//! stacks them and fills the defaults. Parsing errors name the source and the setting.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Deserializer};

use crate::{datapath::DEFAULT_PIN_BASE, evaluator::Failsafe, model::Protocol};

/// Where `state.json` goes unless configured.
pub const DEFAULT_STATE_DIR: &str = "/run/enforcer";
/// The metrics/health listener unless configured (localhost only, as health endpoints should be).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9466";
/// The flow log's file name under the state directory unless configured.
pub const DEFAULT_FLOW_LOG_FILE: &str = "flows.jsonl";
/// Calico's workload interface prefix.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";
/// The environment variable prefix.
pub const ENV_PREFIX: &str = "ENFORCER_";

/// Every setting's name, as written on the command line without `--` and in the config file.
pub const SETTINGS: &[&str] = &[
    "config",
    "policy-dir",
    "kubernetes",
    "kubeconfig",
    "node-name",
    "interface-prefix",
    "pin-base",
    "state-dir",
    "metrics-addr",
    "flow-log",
    "fail-closed",
    "force-fresh",
    "detach-on-exit",
    "failsafe-inbound",
    "failsafe-outbound",
    "log-format",
    "log-level",
];

/// The environment variable of a setting: `ENFORCER_` + upper case, `-` → `_`.
pub fn env_name(setting: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        setting.to_ascii_uppercase().replace('-', "_")
    )
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format: use text or json")),
        }
    }
}

/// A failsafe port list: `tcp:22,udp:68`, Calico's `FailsafeInboundHostPorts` syntax
/// (`proto:port`, comma-separated; `none` or an empty string for no ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList(pub Vec<(Protocol, u16)>);

impl FromStr for PortList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(PortList(Vec::new()));
        }
        s.split(',')
            .map(|item| parse_port(item.trim()))
            .collect::<Result<_, _>>()
            .map(PortList)
    }
}

fn parse_port(item: &str) -> Result<(Protocol, u16), String> {
    let (proto, port) = item
        .split_once(':')
        .ok_or_else(|| format!("{item:?} is not protocol:port (e.g. tcp:22)"))?;
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::TCP,
        "udp" => Protocol::UDP,
        "sctp" => Protocol::SCTP,
        _ => {
            return Err(format!(
                "{item:?}: failsafe ports take protocol tcp, udp or sctp, not {proto:?}"
            ));
        }
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{item:?}: the port must be a number 1-65535"))?;
    Ok((protocol, port))
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, (p, port)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{port}", p.to_string().to_ascii_lowercase())?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PortList {
    /// A string (`tcp:22,udp:68`) or a list of strings (`[tcp:22, udp:68]`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let joined = match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(","),
        };
        joined.parse().map_err(serde::de::Error::custom)
    }
}

/// A bool from the environment: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean: use true or false")),
    }
}

/// One source's settings; `None` = not set here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigLayer {
    /// Watch this directory of YAML (the standalone source).
    pub policy_dir: Option<PathBuf>,
    /// Watch the Kubernetes API server.
    pub kubernetes: Option<bool>,
    /// A kubeconfig for `kubernetes` (default: in-cluster, then `KUBECONFIG`/`~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: pods of other nodes are not enforced here.
    pub node_name: Option<String>,
    /// Host-side workload interfaces start with this.
    pub interface_prefix: Option<String>,
    pub pin_base: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// `host:port`, or `off`.
    pub metrics_addr: Option<String>,
    /// A file, or `off`.
    pub flow_log: Option<PathBuf>,
    pub fail_closed: Option<bool>,
    pub force_fresh: Option<bool>,
    pub detach_on_exit: Option<bool>,
    pub failsafe_inbound: Option<PortList>,
    pub failsafe_outbound: Option<PortList>,
    pub log_format: Option<LogFormat>,
    /// A `tracing` filter (`info`, `enforcer_user=debug`); `RUST_LOG` is the fallback.
    pub log_level: Option<String>,
}

/// A configuration problem, naming where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl ConfigLayer {
    /// Reads `ENFORCER_*` variables (and `NODE_NAME` when `ENFORCER_NODE_NAME` is absent) from
    /// `vars`. Unknown `ENFORCER_*` names are returned as warnings, not errors (a newer
    /// DaemonSet may set settings an older binary does not know).
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(ConfigLayer, Vec<String>), ConfigError> {
        let mut layer = ConfigLayer::default();
        let mut warnings = Vec::new();
        let mut node_name_fallback = None;
        for (var, value) in vars {
            if var == "NODE_NAME" {
                node_name_fallback = Some(value);
                continue;
            }
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let setting = rest.to_ascii_lowercase().replace('_', "-");
            let err = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let boolean = |v: &str| parse_bool(v).map(Some).map_err(err);
            match setting.as_str() {
                // `--config` itself: read by the caller before the layers are built.
                "config" => {}
                "policy-dir" => layer.policy_dir = non_empty(&value).map(PathBuf::from),
                "kubernetes" => layer.kubernetes = boolean(&value)?,
                "kubeconfig" => layer.kubeconfig = non_empty(&value).map(PathBuf::from),
                "node-name" => layer.node_name = non_empty(&value).map(str::to_owned),
                "interface-prefix" => layer.interface_prefix = Some(value.clone()),
                "pin-base" => layer.pin_base = non_empty(&value).map(PathBuf::from),
                "state-dir" => layer.state_dir = non_empty(&value).map(PathBuf::from),
                "metrics-addr" => layer.metrics_addr = Some(value.clone()),
                "flow-log" => layer.flow_log = non_empty(&value).map(PathBuf::from),
                "fail-closed" => layer.fail_closed = boolean(&value)?,
                "force-fresh" => layer.force_fresh = boolean(&value)?,
                "detach-on-exit" => layer.detach_on_exit = boolean(&value)?,
                "failsafe-inbound" => layer.failsafe_inbound = Some(value.parse().map_err(err)?),
                "failsafe-outbound" => {
                    layer.failsafe_outbound = Some(value.parse().map_err(err)?);
                }
                "log-format" => layer.log_format = Some(value.parse().map_err(err)?),
                "log-level" => layer.log_level = non_empty(&value).map(str::to_owned),
                _ => warnings.push(format!(
                    "ignoring unknown environment variable {var} (settings: {})",
                    SETTINGS
                        .iter()
                        .map(|s| env_name(s))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        if layer.node_name.is_none() {
            layer.node_name = node_name_fallback
                .as_deref()
                .and_then(non_empty)
                .map(str::to_owned);
        }
        Ok((layer, warnings))
    }

    /// Parses a YAML config file's text (`path` names it in errors). An empty file is an
    /// empty layer; unknown keys are errors that list the valid ones.
    pub fn from_yaml(text: &str, path: &Path) -> Result<ConfigLayer, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ConfigLayer::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: format!("cannot read: {e}"),
        })?;
        ConfigLayer::from_yaml(&text, path)
    }

    /// `self` over `lower`: each setting from `self` when set there, else from `lower`.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            policy_dir: self.policy_dir.or(lower.policy_dir),
            kubernetes: self.kubernetes.or(lower.kubernetes),
            kubeconfig: self.kubeconfig.or(lower.kubeconfig),
            node_name: self.node_name.or(lower.node_name),
            interface_prefix: self.interface_prefix.or(lower.interface_prefix),
            pin_base: self.pin_base.or(lower.pin_base),
            state_dir: self.state_dir.or(lower.state_dir),
            metrics_addr: self.metrics_addr.or(lower.metrics_addr),
            flow_log: self.flow_log.or(lower.flow_log),
            fail_closed: self.fail_closed.or(lower.fail_closed),
            force_fresh: self.force_fresh.or(lower.force_fresh),
            detach_on_exit: self.detach_on_exit.or(lower.detach_on_exit),
            failsafe_inbound: self.failsafe_inbound.or(lower.failsafe_inbound),
            failsafe_outbound: self.failsafe_outbound.or(lower.failsafe_outbound),
            log_format: self.log_format.or(lower.log_format),
            log_level: self.log_level.or(lower.log_level),
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

/// Where policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// `policy-dir`: a directory of YAML, watched with inotify.
    Directory(PathBuf),
    /// `kubernetes`: the API server (in-cluster config, or `kubeconfig`).
    Kubernetes { kubeconfig: Option<PathBuf> },
}

/// The resolved configuration of `enforcer run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub source: SourceConfig,
    pub node_name: Option<String>,
    pub interface_prefix: String,
    pub pin_base: PathBuf,
    pub state_dir: PathBuf,
    /// `None`: no metrics/health listener (`metrics-addr: off`).
    pub metrics_addr: Option<SocketAddr>,
    /// Denied-flow log (JSON lines); default `<state-dir>/flows.jsonl`; `None`: off.
    pub flow_log: Option<PathBuf>,
    pub fail_closed: bool,
    pub force_fresh: bool,
    pub detach_on_exit: bool,
    pub failsafe: Failsafe,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
}

impl AgentConfig {
    /// Stacks the layers (command line over environment over file) and applies the defaults.
    pub fn resolve(
        flags: ConfigLayer,
        env: ConfigLayer,
        file: ConfigLayer,
    ) -> Result<AgentConfig, ConfigError> {
        let l = flags.over(env).over(file);
        let kubernetes = l.kubernetes.unwrap_or(false);
        let source = match (l.policy_dir, kubernetes) {
            (Some(_), true) => {
                return Err(ConfigError::Invalid {
                    setting: "policy-dir",
                    message: "policy-dir and kubernetes are exclusive: choose one source".into(),
                });
            }
            (Some(dir), false) => SourceConfig::Directory(dir),
            (None, true) => SourceConfig::Kubernetes {
                kubeconfig: l.kubeconfig,
            },
            (None, false) => {
                return Err(ConfigError::Invalid {
                    setting: "policy-dir",
                    message: "no policy source: give --policy-dir DIR (a directory of YAML) or \
                              --kubernetes (watch the API server)"
                        .into(),
                });
            }
        };
        let interface_prefix = l
            .interface_prefix
            .unwrap_or_else(|| DEFAULT_INTERFACE_PREFIX.to_owned());
        if interface_prefix.is_empty() || interface_prefix.len() >= 15 {
            return Err(ConfigError::Invalid {
                setting: "interface-prefix",
                message: format!(
                    "{interface_prefix:?}: give a non-empty prefix shorter than an interface \
                     name (15 characters)"
                ),
            });
        }
        let metrics_addr = match l.metrics_addr.as_deref().map(str::trim) {
            None => Some(parse_addr(DEFAULT_METRICS_ADDR)?),
            Some("") | Some("off") | Some("none") => None,
            Some(a) => Some(parse_addr(a)?),
        };
        let defaults = Failsafe::calico_defaults();
        let state_dir = l
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let flow_log = match l.flow_log {
            None => Some(state_dir.join(DEFAULT_FLOW_LOG_FILE)),
            Some(p) if matches!(p.to_str().map(str::trim), Some("" | "off" | "none")) => None,
            Some(p) => Some(p),
        };
        Ok(AgentConfig {
            source,
            node_name: l.node_name,
            interface_prefix,
            pin_base: l
                .pin_base
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_BASE)),
            state_dir,
            metrics_addr,
            flow_log,
            fail_closed: l.fail_closed.unwrap_or(false),
            force_fresh: l.force_fresh.unwrap_or(false),
            detach_on_exit: l.detach_on_exit.unwrap_or(false),
            failsafe: Failsafe {
                inbound: l.failsafe_inbound.map_or(defaults.inbound, |p| p.0),
                outbound: l.failsafe_outbound.map_or(defaults.outbound, |p| p.0),
            },
            log_format: l.log_format.unwrap_or_default(),
            log_level: l.log_level,
        })
    }
}

fn parse_addr(a: &str) -> Result<SocketAddr, ConfigError> {
    a.parse().map_err(|e| ConfigError::Invalid {
        setting: "metrics-addr",
        message: format!("{a:?} is not host:port ({e}); use e.g. 127.0.0.1:9466, or off"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigLayer {
        let vars = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        match ConfigLayer::from_env(vars) {
            Ok((l, _)) => l,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn env_names_are_derived_from_settings() {
        assert_eq!(env_name("policy-dir"), "ENFORCER_POLICY_DIR");
        assert_eq!(env_name("fail-closed"), "ENFORCER_FAIL_CLOSED");
        // Every setting round-trips through the environment parser without a warning.
        for s in SETTINGS {
            let value = match *s {
                "kubernetes" | "fail-closed" | "force-fresh" | "detach-on-exit" => "true",
                "failsafe-inbound" | "failsafe-outbound" => "tcp:22",
                "log-format" => "json",
                _ => "x",
            };
            let vars = vec![(env_name(s), value.to_owned())];
            let (_, warnings) = ConfigLayer::from_env(vars).unwrap_or_else(|e| panic!("{e}"));
            assert!(warnings.is_empty(), "{s}: {warnings:?}");
        }
    }

    #[test]
    fn node_name_falls_back_to_the_downward_api_variable() {
        assert_eq!(env(&[("NODE_NAME", "n1")]).node_name.as_deref(), Some("n1"));
        let both = env(&[("NODE_NAME", "n1"), ("ENFORCER_NODE_NAME", "n2")]);
        assert_eq!(both.node_name.as_deref(), Some("n2"));
    }

    #[test]
    fn port_lists_parse_like_calico() {
        let p: PortList = "tcp:22, udp:68".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.0, vec![(Protocol::TCP, 22), (Protocol::UDP, 68)]);
        assert_eq!(p.to_string(), "tcp:22,udp:68");
        assert_eq!("none".parse::<PortList>().map(|p| p.0.len()), Ok(0));
        assert!("icmp:1".parse::<PortList>().is_err());
        assert!("tcp:0".parse::<PortList>().is_err());
        assert!("22".parse::<PortList>().is_err());
    }
}
