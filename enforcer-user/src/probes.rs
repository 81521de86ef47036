//! Probes: flows written down to test policy (`{from, to, port, protocol}`), as used by the
//! conformance corpus, `examples/*/probes.yaml` and (later) `enforcer lab --probes`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    evaluator::{FlowSpec, Peer, Verdict},
    model::Protocol,
};

/// A protocol as written in a probe: a name or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProtocolField {
    Number(u8),
    Name(String),
}

impl ProtocolField {
    pub fn protocol(&self) -> Option<Protocol> {
        match self {
            ProtocolField::Number(n) => Some(Protocol(*n)),
            ProtocolField::Name(s) => Protocol::parse(s),
        }
    }
}

impl Default for ProtocolField {
    fn default() -> Self {
        ProtocolField::Name("TCP".to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: ProtocolField,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    /// The verdict the probe's author expects, if written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Verdict>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{file}: cannot read the probe file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a YAML list of probes ({{from, to, port, protocol}}): {source}")]
    Parse {
        file: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("probe {index} ({from} -> {to}): {message}")]
    Invalid {
        index: usize,
        from: String,
        to: String,
        message: String,
    },
}

impl<'de> Deserialize<'de> for Verdict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "allow" | "allowed" => Ok(Verdict::Allow),
            "deny" | "denied" => Ok(Verdict::Deny),
            _ => Err(serde::de::Error::custom(format!(
                "verdict must be allow or deny, not {s:?}"
            ))),
        }
    }
}

impl Probe {
    /// The flow this probe describes. `index` (1-based) names the probe in errors.
    pub fn flow(&self, index: usize) -> Result<FlowSpec, ProbeError> {
        let invalid = |message: String| ProbeError::Invalid {
            index,
            from: self.from.clone(),
            to: self.to.clone(),
            message,
        };
        let src: Peer = self
            .from
            .parse()
            .map_err(|e| invalid(format!("from: {e}")))?;
        let dst: Peer = self.to.parse().map_err(|e| invalid(format!("to: {e}")))?;
        let protocol = self.protocol.protocol().ok_or_else(|| {
            invalid(format!(
                "protocol {:?} is not TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 0-255",
                self.protocol
            ))
        })?;
        if protocol.has_ports() && self.port.is_none() {
            return Err(invalid(format!("protocol {protocol} needs a port")));
        }
        Ok(FlowSpec {
            src,
            dst,
            protocol,
            src_port: self.src_port,
            dst_port: self.port,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            ip_version: self.ip_version,
        })
    }
}

/// Reads a YAML list of probes.
pub fn load_probes(path: &Path) -> Result<Vec<Probe>, ProbeError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ProbeError::Read {
        file: file.clone(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| ProbeError::Parse { file, source })
}
