//! The differential test: compiled tables (through [`Compiled::lookup`] and through the raw
//! map entries) against the reference evaluator, on random inventories and packets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::{prelude::*, test_runner::TestCaseError};

use super::{Compiled, EndpointId, compile, lookup_entries, to_map_entries};
use crate::{
    evaluator::{DirectionTrace, evaluate_packet},
    model::Direction,
    testgen::{self, Case, describe, resolve, sweep},
};

const PROBES_PER_CASE: usize = 64;
const SHAPES_PER_CASE: usize = 2;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Checks every probe of a case; the error names the first disagreement with a reproducer.
pub(crate) fn check_case(case: &Case) -> Result<usize, String> {
    let inv = &case.inventory;
    let compiled: Compiled = compile(inv, &case.options)
        .map_err(|e| format!("compile failed: {e}\n{}", describe(inv)))?;
    // Fake interface numbers: position in the endpoint map, from 10.
    let ifindex: BTreeMap<EndpointId, u32> = compiled
        .endpoints
        .keys()
        .enumerate()
        .map(|(i, id)| (id.clone(), 10 + i as u32))
        .collect();
    let slot = 1;
    let entries = to_map_entries(&compiled, slot, &|id| {
        ifindex.get(id).copied().into_iter().collect()
    })
    .map_err(|e| e.to_string())?;
    let mut checked = 0;
    let probes = case
        .probes
        .iter()
        .filter_map(|seed| resolve(inv, seed))
        .chain(sweep(inv, &case.shapes));
    for probe in probes {
        let explanation = evaluate_packet(inv, &probe.packet, &case.options);
        // Neighbour discovery is passed before the tables (datapath and evaluator alike).
        if crate::evaluator::is_icmpv6_neighbour_discovery(&probe.packet) {
            if explanation.verdict != crate::evaluator::Verdict::Allow {
                return Err(format!(
                    "ICMPv6 neighbour discovery denied: {:?}",
                    probe.packet
                ));
            }
            continue;
        }
        let trace: Option<&DirectionTrace> = match probe.direction {
            Direction::Ingress => explanation.ingress.as_ref(),
            Direction::Egress => explanation.egress.as_ref(),
        };
        let Some(trace) = trace else {
            return Err(format!(
                "generator bug: the evaluator did not police {} for {:?}",
                probe.endpoint, probe.packet
            ));
        };
        let report = |what: &str, got: String| {
            format!(
                "{what} disagrees for {} {} packet {:?}\n  compiled: {got}\n  evaluator: verdict {} by {} / staged {} by {}\n  \
                 compile stats: {:?}\ninventory:\n{}",
                probe.endpoint,
                probe.direction,
                probe.packet,
                trace.verdict,
                trace.decided_by,
                trace.staged_verdict,
                trace.staged_decided_by,
                compiled.stats,
                describe(inv)
            )
        };
        let got = compiled
            .lookup(&probe.endpoint, probe.direction, &probe.packet)
            .map_err(|e| report("lookup", format!("error {e}")))?;
        let rule = |id| compiled.rule(id).map(|r| r.decision.clone());
        let shown = format!(
            "{} by {:?} / staged {} by {:?} ({:?})",
            got.action,
            rule(got.rule_id),
            got.staged_action,
            rule(got.staged_rule_id),
            got
        );
        if got.action != trace.verdict || rule(got.rule_id).as_ref() != Some(&trace.decided_by) {
            return Err(report("verdict", shown));
        }
        if got.staged_action != trace.staged_verdict
            || rule(got.staged_rule_id).as_ref() != Some(&trace.staged_decided_by)
        {
            return Err(report("staged verdict", shown));
        }
        let ifx = ifindex.get(&probe.endpoint).copied().unwrap_or(0);
        let raw = lookup_entries(&entries, ifx, probe.direction, &probe.packet)
            .map_err(|e| report("raw map lookup", format!("error {e}")))?;
        if raw != got {
            return Err(report("raw map lookup", format!("{raw:?} vs {got:?}")));
        }
        checked += 1;
    }
    Ok(checked)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_tables_agree_with_reference_evaluator(case in testgen::case(PROBES_PER_CASE, SHAPES_PER_CASE)) {
        check_case(&case).map_err(TestCaseError::fail)?;
    }
}

/// The generator must produce probes the evaluator polices, and mostly resolvable ones.
#[test]
fn generator_produces_checkable_probes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut checked = 0;
    for _ in 0..32 {
        let case = testgen::case(PROBES_PER_CASE, SHAPES_PER_CASE)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        checked += check_case(&case).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        checked > 32 * PROBES_PER_CASE / 2,
        "only {checked} probes resolved"
    );
}

#[test]
#[ignore]
fn coverage_report() {
    use proptest::strategy::ValueTree;
    use std::collections::BTreeMap as M;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut counts: M<String, usize> = M::new();
    for _ in 0..256 {
        let case = testgen::case(PROBES_PER_CASE, SHAPES_PER_CASE)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let c = compile(&case.inventory, &case.options).unwrap();
        *counts
            .entry(format!("sets {}", c.stats.sets.min(10)))
            .or_default() += 1;
        *counts
            .entry(format!(
                "peerclasses {}",
                (c.stats.peer_classes_v4 + c.stats.peer_classes_v6).min(12)
            ))
            .or_default() += 1;
        *counts
            .entry(format!("portclasses {}", c.stats.dst_port_classes.min(12)))
            .or_default() += 1;
        if c.uses_src_ports {
            *counts.entry("uses_src_ports".into()).or_default() += 1;
        }
        for seed in &case.probes {
            let Some(p) = resolve(&case.inventory, seed) else {
                *counts.entry("unresolved".into()).or_default() += 1;
                continue;
            };
            let r = c.lookup(&p.endpoint, p.direction, &p.packet).unwrap();
            *counts.entry(format!("action {:?}", r.action)).or_default() += 1;
            *counts.entry(format!("hit {:?}", r.hit)).or_default() += 1;
            if r.action != r.staged_action {
                *counts.entry("staged differs".into()).or_default() += 1;
            }
            let d = &c.rule(r.rule_id).unwrap().decision;
            let k = match d {
                crate::evaluator::Decision::Rule(rr) => {
                    format!("rule {:?} {:?}", rr.kind, rr.action)
                }
                o => format!("{o:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_string(),
            };
            *counts.entry(format!("decided {k}")).or_default() += 1;
            if matches!(p.endpoint, EndpointId::Host { .. }) {
                *counts.entry("host endpoint probes".into()).or_default() += 1;
            }
        }
    }
    for (k, v) in counts {
        println!("{k:40} {v}");
    }
}
