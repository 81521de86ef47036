//! The conformance corpus: cases written from public sources (Kubernetes docs and netpol e2e
//! tests, Calico docs and tests), each a YAML file whose first document is a
//! `ConformanceCase` header naming its source and listing probes with expected verdicts.
//! Every probe must get the expected verdict from the reference evaluator.

use std::path::{Path, PathBuf};

use enforcer_tests::{check_probes, workspace_root};
use enforcer_user::{probes::Probe, sources};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseHeader {
    kind: String,
    source: String,
    description: String,
    probes: Vec<Probe>,
}

fn case_files() -> Vec<PathBuf> {
    let dir = workspace_root().join("tests").join("conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn header(path: &Path, text: &str) -> CaseHeader {
    let first = serde_yaml::Deserializer::from_str(text)
        .next()
        .unwrap_or_else(|| panic!("{}: empty case file", path.display()));
    let header = CaseHeader::deserialize(first)
        .unwrap_or_else(|e| panic!("{}: bad ConformanceCase header: {e}", path.display()));
    assert_eq!(
        header.kind,
        "ConformanceCase",
        "{}: first document",
        path.display()
    );
    assert!(
        header.source.starts_with("https://"),
        "{}: every case cites a public source",
        path.display()
    );
    assert!(
        !header.description.is_empty(),
        "{}: description",
        path.display()
    );
    assert!(!header.probes.is_empty(), "{}: probes", path.display());
    header
}

#[test]
fn corpus_has_enough_cases_and_both_verdicts() {
    let files = case_files();
    assert!(files.len() >= 50, "only {} conformance cases", files.len());
    let (mut allow, mut deny) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for p in header(f, &text).probes {
            match p.expected {
                Some(enforcer_user::evaluator::Verdict::Allow) => allow += 1,
                Some(enforcer_user::evaluator::Verdict::Deny) => deny += 1,
                None => panic!("{}: probe without `expected`", f.display()),
            }
        }
    }
    assert!(allow > 50 && deny > 50, "allow {allow}, deny {deny}");
}

#[test]
fn reference_evaluator_agrees_with_every_case() {
    let mut failures = Vec::new();
    let mut probes = 0;
    for f in case_files() {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let header = header(&f, &text);
        // The header is not a Kubernetes object: blank it (keeping document numbers).
        let objects = match text.find("\n---") {
            Some(at) => format!("# ConformanceCase header{}", &text[at..]),
            None => String::new(),
        };
        let inv = match sources::load_str(&objects, &f) {
            Ok(inv) => inv,
            Err(e) => {
                failures.push(format!("{}: does not load:\n{e}", f.display()));
                continue;
            }
        };
        let unexpected: Vec<_> = inv
            .skipped
            .iter()
            .map(|s| format!("{} {}", s.api_version, s.kind))
            .collect();
        if !unexpected.is_empty() {
            failures.push(format!(
                "{}: skipped unknown kinds {unexpected:?}",
                f.display()
            ));
        }
        probes += header.probes.len();
        for d in check_probes(&inv, &header.probes) {
            failures.push(format!("{}: {d}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {probes} probes disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn production_example_probes_hold() {
    let dir = workspace_root().join("examples").join("production");
    let inv = sources::load_paths(&[&dir]).unwrap_or_else(|e| panic!("examples/production: {e}"));
    let probes = enforcer_user::probes::load_probes(
        &workspace_root().join("examples/probes/production.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(probes.len() >= 10);
    let failures = check_probes(&inv, &probes);
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
