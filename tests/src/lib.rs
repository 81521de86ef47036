//! Helpers shared by Enforcer's integration tests.

use std::path::{Path, PathBuf};

use enforcer_user::{
    evaluator::{self, Options, Verdict},
    model::Inventory,
    probes::Probe,
};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A probe whose evaluated verdict differs from the expected one, with what decided.
#[derive(Debug)]
pub struct Disagreement {
    pub index: usize,
    pub probe: Probe,
    pub got: Result<Verdict, String>,
    pub detail: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.probe;
        write!(
            f,
            "probe {} {} -> {} {:?} port {:?} icmp {:?}/{:?}: expected {:?}, got {:?}; {}",
            self.index,
            p.from,
            p.to,
            p.protocol,
            p.port,
            p.icmp_type,
            p.icmp_code,
            p.expected,
            self.got,
            self.detail
        )
    }
}

/// Runs probes through the reference evaluator and returns those that disagree with their
/// `expected` verdict (probes without one must at least evaluate).
pub fn check_probes(inv: &Inventory, probes: &[Probe]) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let index = i + 1;
        let result = probe
            .flow(index)
            .map_err(|e| e.to_string())
            .and_then(|flow| {
                evaluator::explain(inv, &flow, &Options::default()).map_err(|e| e.to_string())
            });
        match result {
            Ok(exp) if Some(exp.verdict) == probe.expected || probe.expected.is_none() => {}
            Ok(exp) => {
                let side = |t: &Option<evaluator::DirectionTrace>| {
                    t.as_ref()
                        .map(|t| format!("{} {}: {}", t.endpoint, t.direction, t.decided_by))
                        .unwrap_or_else(|| "-".into())
                };
                out.push(Disagreement {
                    index,
                    probe: probe.clone(),
                    got: Ok(exp.verdict),
                    detail: format!(
                        "egress [{}] ingress [{}]",
                        side(&exp.egress),
                        side(&exp.ingress)
                    ),
                })
            }
            Err(e) => out.push(Disagreement {
                index,
                probe: probe.clone(),
                got: Err(e),
                detail: String::new(),
            }),
        }
    }
    out
}
