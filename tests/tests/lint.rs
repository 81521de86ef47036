//! The lint library on `examples/lint`: each example triggers exactly its own lint, and
//! `clean.yaml` triggers none.

use std::path::PathBuf;

use enforcer_tests::workspace_root;
use enforcer_user::{
    lint::{self, LintCode},
    sources,
};

fn example(name: &str) -> PathBuf {
    workspace_root().join("examples").join("lint").join(name)
}

#[test]
fn every_lint_code_has_an_example_and_documentation() {
    let doc = std::fs::read_to_string(workspace_root().join("docs").join("lint.md"))
        .unwrap_or_else(|e| panic!("docs/lint.md: {e}"));
    for code in LintCode::ALL {
        let f = example(&format!("{code}.yaml"));
        assert!(f.exists(), "missing example {}", f.display());
        assert!(
            doc.contains(&format!("## {code}")),
            "docs/lint.md has no section for {code}"
        );
    }
}

#[test]
fn each_example_triggers_only_its_own_lint() {
    for code in LintCode::ALL {
        let f = example(&format!("{code}.yaml"));
        let warnings = match sources::load_paths(&[&f]) {
            Ok(inv) => lint::lint(&inv).warnings,
            // A template that cannot be loaded: the lint command converts the errors.
            Err(errors) => errors
                .0
                .iter()
                .map(|e| {
                    lint::warning_for_load_error(&e.origin, &e.field, &e.message)
                        .unwrap_or_else(|| panic!("{}: genuine load error: {e}", f.display()))
                })
                .collect(),
        };
        assert!(!warnings.is_empty(), "{code}: no warnings");
        for w in &warnings {
            assert_eq!(w.code, code, "{}: unexpected warning\n{w}", f.display());
            assert_eq!(w.origin.file, f, "{w}");
            assert!(!w.suggestion.is_empty(), "{w}");
        }
    }
}

#[test]
fn clean_example_triggers_nothing() {
    let f = example("clean.yaml");
    let inv = sources::load_paths(&[&f]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    let report = lint::lint(&inv);
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
}

#[test]
fn warnings_point_at_the_right_policy_and_rule() {
    let f = example("shadowed-rule.yaml");
    let inv = sources::load_paths(&[&f]).unwrap_or_else(|e| panic!("{e}"));
    let w = &lint::lint(&inv).warnings;
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].policy.as_deref(), Some("billing/web-ingress"));
    assert_eq!(
        w[0].rule.map(|r| (r.direction.to_string(), r.index)),
        Some(("ingress".to_string(), 1))
    );
    assert_eq!(w[0].origin.document, 3);

    let f = example("egress-deny-without-dns.yaml");
    let inv = sources::load_paths(&[&f]).unwrap_or_else(|e| panic!("{e}"));
    let w = &lint::lint(&inv).warnings;
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].message.contains("checkout/web"), "{}", w[0].message);
    assert!(!w[0].message.contains("checkout/db"), "{}", w[0].message);
    assert!(w[0].suggestion.contains("kube-dns"));
}

#[test]
fn production_example_lints_without_panicking() {
    let dir = workspace_root().join("examples").join("production");
    if let Ok(inv) = sources::load_paths(&[&dir]) {
        let report = lint::lint(&inv);
        for w in &report.warnings {
            assert!(!w.message.is_empty() && !w.suggestion.is_empty(), "{w}");
        }
    }
}
