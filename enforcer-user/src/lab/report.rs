//! What a lab run reports: one row per probe (observed beside expected), a table for people
//! and a JSON list for programs.

use std::{fmt::Write as _, net::IpAddr, time::Duration};

use serde::Serialize;

use crate::{
    evaluator::Verdict,
    model::Protocol,
    probes::{Probe, ProtocolField},
};

/// What got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Observed {
    Allow,
    Deny,
    /// Not sent: the lab does not emulate an end of it (host endpoint, host-network pod).
    Skipped,
    /// Could not be sent (a socket error in the lab itself).
    Error,
}

impl From<Verdict> for Observed {
    fn from(v: Verdict) -> Observed {
        match v {
            Verdict::Allow => Observed::Allow,
            Verdict::Deny => Observed::Deny,
        }
    }
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Observed::Allow => "allow",
            Observed::Deny => "deny",
            Observed::Skipped => "skipped",
            Observed::Error => "error",
        })
    }
}

/// How a row compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Observed as the evaluator predicts (and as the probe says, if it says).
    Ok,
    /// The datapath did something else than the evaluator predicts.
    Mismatch,
    /// The datapath agrees with the evaluator, but the probe's own `expected` says otherwise.
    ProbeDisagrees,
    Skipped,
    Error,
}

/// One probe's outcome. Serialised in the probe file's field names plus `verdict` (observed)
/// and `expected` (the evaluator's).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// As the probe wrote it (a name or a number).
    pub protocol: ProtocolField,
    /// ICMP type and code as sent (echo request 0 when the probe gives none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    /// Observed.
    pub verdict: Observed,
    /// The reference evaluator's verdict (`enforcer explain`).
    pub expected: Option<Verdict>,
    /// The probe's own `expected`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_expected: Option<Verdict>,
    pub status: Status,
    /// The addresses used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    /// How the verdict was observed (`connected`, `refused`, `echoed`, `arrived`, a timeout).
    pub detail: String,
    pub attempts: u32,
    /// The datapath's verdict counters that moved during the probe (`reason/direction+n`; all
    /// attempts, replies included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datapath: Vec<String>,
    /// For a mismatch: what the programmed tables say, and which side is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    #[serde(skip)]
    pub protocol_number: Protocol,
}

impl ProbeResult {
    pub fn new(
        probe: &Probe,
        protocol: Protocol,
        icmp: Option<(u8, u8)>,
        expected: Option<Verdict>,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
    ) -> ProbeResult {
        ProbeResult {
            from: probe.from.clone(),
            to: probe.to.clone(),
            port: probe.port,
            protocol: probe.protocol.clone(),
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
            src_port: probe.src_port,
            ip_version: probe.ip_version,
            verdict: Observed::Skipped,
            expected,
            probe_expected: probe.expected,
            status: Status::Skipped,
            src,
            dst,
            detail: String::new(),
            attempts: 0,
            datapath: Vec::new(),
            diagnosis: None,
            protocol_number: protocol,
        }
    }

    /// Compares observed, predicted and the probe's own expectation.
    pub fn compute_status(&self) -> Status {
        let observed = match self.verdict {
            Observed::Allow => Verdict::Allow,
            Observed::Deny => Verdict::Deny,
            Observed::Skipped => return Status::Skipped,
            Observed::Error => return Status::Error,
        };
        if Some(observed) != self.expected {
            Status::Mismatch
        } else if self.probe_expected.is_some() && self.probe_expected != self.expected {
            Status::ProbeDisagrees
        } else {
            Status::Ok
        }
    }
}

/// Time spent per phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    pub setup: Duration,
    pub probes: Duration,
    pub teardown: Duration,
    pub total: Duration,
}

/// A lab run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabReport {
    pub id: String,
    pub pods: usize,
    pub external_hosts: usize,
    /// Whether the real datapath enforced (false only when testing the lab itself).
    pub enforced: bool,
    pub results: Vec<ProbeResult>,
    pub notes: Vec<String>,
    pub timings: Timings,
}

impl LabReport {
    /// Rows whose status is not `Ok` or `Skipped`.
    pub fn differences(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !matches!(r.status, Status::Ok | Status::Skipped))
            .count()
    }

    /// No observed verdict differs from the evaluator's, no probe disagrees with the
    /// evaluator, nothing failed to send.
    pub fn success(&self) -> bool {
        self.differences() == 0
    }

    /// The JSON list of `-o json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(&self.results).unwrap_or(serde_json::Value::Null)
    }

    /// The matrix for people: one row per probe, marks on the rows that differ, then a summary.
    pub fn table(&self) -> String {
        let port = |r: &ProbeResult| match (r.icmp_type, r.icmp_code, r.port) {
            (Some(t), Some(c), _) => format!("{t}/{c}"),
            (_, _, Some(p)) => p.to_string(),
            _ => "-".to_string(),
        };
        let opt = |v: Option<Verdict>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let mut rows: Vec<[String; 7]> = vec![[
            "FROM".into(),
            "TO".into(),
            "PORT".into(),
            "PROTOCOL".into(),
            "OBSERVED".into(),
            "EXPECTED".into(),
            String::new(),
        ]];
        for r in &self.results {
            let mark = match r.status {
                Status::Ok => String::new(),
                Status::Mismatch => "<< MISMATCH".to_string(),
                Status::ProbeDisagrees => format!(
                    "<< the probe file expects {} (the evaluator and the datapath agree)",
                    opt(r.probe_expected)
                ),
                Status::Skipped | Status::Error => format!("({})", r.detail),
            };
            rows.push([
                r.from.clone(),
                r.to.clone(),
                port(r),
                r.protocol_number.to_string(),
                r.verdict.to_string(),
                opt(r.expected),
                mark,
            ]);
        }
        let mut widths = [0usize; 6];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let _ = write!(line, "{:<w$}  ", row[i], w = *w);
            }
            line.push_str(&row[6]);
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let count = |s: Status| self.results.iter().filter(|r| r.status == s).count();
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let _ = writeln!(
            out,
            "\n{} probes: {} as expected, {} mismatched, {} where the probe file disagrees with the \
             evaluator, {} skipped, {} errors",
            self.results.len(),
            count(Status::Ok),
            count(Status::Mismatch),
            count(Status::ProbeDisagrees),
            count(Status::Skipped),
            count(Status::Error),
        );
        let _ = writeln!(
            out,
            "lab {}: {} pods, {} outside hosts, {}; setup {}, probes {}, cleanup {}",
            self.id,
            self.pods,
            self.external_hosts,
            if self.enforced {
                "enforced by the eBPF datapath"
            } else {
                "NOT enforced (no datapath)"
            },
            secs(self.timings.setup),
            secs(self.timings.probes),
            secs(self.timings.teardown),
        );
        for r in self.results.iter().filter(|r| r.diagnosis.is_some()) {
            let _ = writeln!(
                out,
                "mismatch {} -> {} {} {}: {}",
                r.from,
                r.to,
                r.protocol_number,
                port(r),
                r.diagnosis.as_deref().unwrap_or_default()
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}
