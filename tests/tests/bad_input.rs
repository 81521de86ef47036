//! Bad input: each fixture in `tests/bad-input/` holds one class of mistake; loading it must
//! fail with an error that names the file, the document, the field and what would be valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use enforcer_user::sources::{LoadError, load_paths};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("bad-input")
        .join(name)
}

/// Loads the fixture and returns every error; panics if it loads.
fn errors(name: &str) -> Vec<LoadError> {
    match load_paths(&[fixture(name)]) {
        Ok(inv) => panic!("{name} loaded without errors: {inv:#?}"),
        Err(e) => {
            for err in &e.0 {
                // Every error names its file.
                assert!(
                    err.to_string()
                        .starts_with(&fixture(name).display().to_string()),
                    "{err}"
                );
            }
            e.0
        }
    }
}

/// The fixture's only error.
fn only_error(name: &str) -> LoadError {
    let errs = errors(name);
    assert_eq!(errs.len(), 1, "{name}: expected one error, got {errs:#?}");
    errs.into_iter().next().unwrap()
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "{n:?} not in {haystack:?}");
    }
}

#[test]
fn malformed_yaml_names_the_document_and_line() {
    let e = only_error("malformed-yaml.yaml");
    assert_eq!(e.origin.document, 2);
    assert_eq!(e.field, "-");
    assert_contains(&e.message, &["invalid YAML", "line 17"]);
    assert_contains(
        &e.to_string(),
        &["malformed-yaml.yaml, document 2: -: invalid YAML"],
    );
}

#[test]
fn unknown_field_is_named_and_valid_fields_listed() {
    let e = only_error("unknown-field.yaml");
    assert_eq!(e.origin.document, 1);
    assert_eq!(e.field, "spec.ingress[0].destination.port");
    assert_contains(
        &e.message,
        &[
            "unknown field `port`",
            "expected one of",
            "`ports`",
            "`notPorts`",
            "`nets`",
            "`selector`",
        ],
    );
}

#[test]
fn out_of_range_port() {
    let e = only_error("bad-port.yaml");
    assert_eq!(e.field, "spec.ingress[0].destination.ports[2]");
    assert_contains(&e.message, &["port 70000 is out of range", "1 to 65535"]);
}

#[test]
fn reversed_port_range() {
    let e = only_error("bad-range.yaml");
    assert_eq!(e.field, "spec.egress[0].destination.ports[0]");
    assert_contains(
        &e.message,
        &[
            "invalid port range \"33000:32768\"",
            "greater than",
            "\"32768:33000\"",
        ],
    );
}

#[test]
fn invalid_cidr() {
    let e = only_error("invalid-cidr.yaml");
    assert_eq!(e.field, "spec.ingress[0].from[0].ipBlock.cidr");
    assert_contains(
        &e.message,
        &["invalid CIDR \"10.20.300.0/24\"", "10.0.0.0/8"],
    );
}

#[test]
fn invalid_selector_names_the_column() {
    let e = only_error("invalid-selector.yaml");
    assert_eq!(e.field, "spec.selector");
    assert_contains(
        &e.message,
        &[
            "invalid selector \"app == 'web' && && tier == 'fe'\"",
            "at column 17: expected a label key",
        ],
    );
}

#[test]
fn unknown_protocol() {
    let e = only_error("bad-protocol.yaml");
    assert_eq!(e.field, "spec.ingress[0].protocol");
    assert_contains(
        &e.message,
        &[
            "invalid protocol \"GRE\"",
            "TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite",
            "1-255",
        ],
    );
}

#[test]
fn ports_need_a_protocol_with_ports() {
    let e = only_error("ports-with-icmp.yaml");
    assert_eq!(e.field, "spec.ingress[0].destination.ports");
    assert_contains(
        &e.message,
        &["ports need protocol TCP, UDP or SCTP", "protocol is ICMP"],
    );
}

#[test]
fn bad_actions_are_all_reported() {
    let errs = errors("bad-action.yaml");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].field, "spec.ingress[0].action");
    assert_contains(
        &errs[0].message,
        &["invalid action \"Reject\"", "Allow, Deny, Pass or Log"],
    );
    assert_eq!(errs[1].field, "spec.egress[0].action");
    assert_contains(&errs[1].message, &["case-sensitive", "\"Allow\""]);
}

#[test]
fn duplicate_names_name_both_documents() {
    let e = only_error("duplicate-names.yaml");
    assert_eq!(e.origin.document, 2);
    assert_eq!(e.field, "metadata.name");
    assert_contains(
        &e.message,
        &[
            "duplicate",
            "shop/default-deny",
            "duplicate-names.yaml (document 1)",
        ],
    );
}

#[test]
fn policy_in_unknown_tier() {
    let e = only_error("unknown-tier.yaml");
    assert_eq!(e.origin.document, 2);
    assert_eq!(e.field, "spec.tier");
    assert_contains(
        &e.message,
        &[
            "tier \"security\", which does not exist",
            "Tier object",
            "platform",
        ],
    );
}

#[test]
fn icmp_type_out_of_range() {
    let e = only_error("icmp-out-of-range.yaml");
    assert_eq!(e.field, "spec.ingress[0].icmp.type");
    assert_contains(&e.message, &["invalid ICMP type 300", "0 to 254"]);
}

#[test]
fn bad_match_expressions_operator() {
    let e = only_error("bad-match-expressions.yaml");
    assert_eq!(e.field, "spec.ingress[0].from[0].namespaceSelector");
    assert_contains(
        &e.message,
        &[
            "unknown operator \"Equals\"",
            "In, NotIn, Exists and DoesNotExist",
        ],
    );
}

#[test]
fn ip_version_5() {
    let e = only_error("ip-version-5.yaml");
    assert_eq!(e.field, "spec.ingress[0].ipVersion");
    assert_contains(&e.message, &["invalid ipVersion 5", "expected 4 or 6"]);
}

#[test]
fn every_error_is_collected() {
    let errs = errors("many-errors.yaml");
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "{shown:#?}");
    assert_contains(
        &shown[0],
        &["document 1: spec.ordr: unknown field `ordr`", "`order`"],
    );
    assert_contains(
        &shown[1],
        &["document 2: spec.nets[1]: invalid CIDR \"198.51.100.0/33\""],
    );
    assert_contains(
        &shown[2],
        &["document 3: spec.containers[0].ports[0].containerPort: port 99999 is out of range"],
    );
}

#[test]
fn the_whole_directory_reports_every_fixture() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bad-input");
    let errs = load_paths(&[dir]).unwrap_err();
    let files: std::collections::BTreeSet<_> =
        errs.0.iter().map(|e| e.origin.file.clone()).collect();
    let fixtures = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bad-input"))
        .unwrap()
        .count();
    // Every fixture contributes at least one error (duplicates across fixtures add more).
    assert_eq!(files.len(), fixtures, "{errs}");
}
