//! The `enforcer` binary end to end: `check`, `explain` and `lint` on fixtures,
//! `examples/production` and `examples/lint`, with their exit codes and output shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_path_buf()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn lint_example(name: &str) -> PathBuf {
    workspace().join("examples").join("lint").join(name)
}

fn enforcer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(args)
        .output()
        .expect("run enforcer")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = enforcer(args);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

// ---------------------------------------------------------------- check

#[test]
fn check_valid_prints_counts_skipped_and_order() {
    let f = fixture("explain.yaml");
    let (code, out, err) = run(&["check", "-f", path(&f)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("valid"), "{out}");
    for label in [
        "Namespaces",
        "Pods",
        "ServiceAccounts",
        "NetworkPolicies (k8s)",
        "Calico NetworkPolicies",
        "GlobalNetworkPolicies",
        "StagedNetworkPolicies",
        "NetworkSets",
        "GlobalNetworkSets",
        "Tiers",
        "HostEndpoints",
    ] {
        assert!(out.contains(label), "missing {label}:\n{out}");
    }
    let pods = out
        .lines()
        .find(|l| l.trim_start().starts_with("Pods"))
        .expect("Pods line");
    assert!(pods.trim_end().ends_with('2'), "{pods}");
    // The Deployment is listed as skipped.
    assert!(out.contains("Deployment"), "{out}");
    // Tier order: security (100) before default; policies listed with their order and types.
    let sec = out.find("tier security").expect("security tier");
    let def = out.find("tier default").expect("default tier");
    assert!(sec < def, "{out}");
    assert!(out.contains("security.block-telnet"), "{out}");
    assert!(out.contains("shop/db-from-web"), "{out}");
    assert!(out.contains("[Ingress]"), "{out}");
    assert!(out.contains("staged"), "{out}");
}

#[test]
fn check_json_has_counts_and_tiers() {
    let f = fixture("explain.yaml");
    let (code, out, _) = run(&["check", "-f", path(&f), "-o", "json"]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["counts"]["pods"], 2);
    assert_eq!(v["counts"]["kubernetes_network_policies"], 2);
    assert_eq!(v["counts"]["global_network_policies"], 1);
    assert_eq!(v["counts"]["staged_network_policies"], 1);
    assert_eq!(v["counts"]["tiers"], 1);
    let tiers = v["tiers"].as_array().expect("tiers");
    let names: Vec<&str> = tiers.iter().filter_map(|t| t["name"].as_str()).collect();
    let sec = names
        .iter()
        .position(|n| *n == "security")
        .expect("security");
    let def = names.iter().position(|n| *n == "default").expect("default");
    assert!(sec < def, "{names:?}");
    assert_eq!(v["skipped"].as_array().map(Vec::len), Some(1));
}

#[test]
fn check_invalid_lists_every_error_and_exits_1() {
    let f = fixture("invalid.yaml");
    let (code, out, err) = run(&["check", "-f", path(&f)]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("invalid.yaml"), "{err}");
    assert!(err.contains("document 2"), "{err}");
    // Both problems: the selector and the port.
    assert!(err.to_lowercase().contains("selector"), "{err}");
    assert!(err.contains("70000"), "{err}");
}

#[test]
fn check_invalid_json() {
    let f = fixture("invalid.yaml");
    let (code, out, _) = run(&["check", "-f", path(&f), "-o", "json"]);
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().expect("errors");
    assert!(errors.len() >= 2, "{v:#}");
    assert_eq!(errors[0]["document"], 2);
    assert!(
        errors[0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("invalid.yaml"))
    );
}

#[test]
fn check_missing_file_fails() {
    let (code, _, err) = run(&["check", "-f", "/nonexistent/enforcer.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/enforcer.yaml"), "{err}");
}

#[test]
fn check_requires_files() {
    let (code, _, err) = run(&["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("--filename"), "{err}");
}

#[test]
fn check_accepts_several_files_and_directories() {
    let a = fixture("explain.yaml");
    let dir = workspace().join("examples").join("lint");
    let clean = dir.join("clean.yaml");
    let (code, out, err) = run(&["check", "-f", path(&a), "-f", path(&clean)]);
    // Both define namespace shop: whether that is a duplicate is the loader's call; either
    // way the exit code must match the output.
    if code == 0 {
        assert!(out.contains("valid"), "{out}");
    } else {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("error"), "{err}");
    }
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_allow_text_names_tier_policy_rule_and_staged() {
    let f = fixture("explain.yaml");
    let (code, out, err) = run(&[
        "explain",
        "-f",
        path(&f),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "5432",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let first = out.lines().next().expect("header");
    assert!(first.starts_with("ALLOW"), "{out}");
    assert!(
        first.contains("shop/web") && first.contains("shop/db"),
        "{first}"
    );
    assert!(first.contains("TCP") && first.contains("5432"), "{first}");
    // Ingress of db: the security tier passes, the default tier's k8s policy allows.
    assert!(out.contains("ingress of pod shop/db"), "{out}");
    assert!(out.contains("tier security"), "{out}");
    assert!(out.contains("security.block-telnet"), "{out}");
    assert!(out.contains("shop/db-from-web"), "{out}");
    assert!(
        out.contains("decided by: tier default / policy shop/db-from-web / ingress rule 0 (Allow)"),
        "{out}"
    );
    assert!(out.contains("rule: Allow TCP"), "{out}");
    assert!(out.contains("explain.yaml (document"), "{out}");
    // The staged policy would deny.
    assert!(out.contains("shop/tighten-db"), "{out}");
    assert!(out.contains("would deny"), "{out}");
    assert!(
        out.contains("with staged policies enforced it would be DENY"),
        "{out}"
    );
    // Egress of web: no policy isolates it.
    assert!(out.contains("egress of pod shop/web"), "{out}");
    assert!(out.contains("kns.shop"), "{out}");
}

#[test]
fn explain_deny_by_rule_with_log() {
    let f = fixture("explain.yaml");
    let (code, out, err) = run(&[
        "explain",
        "-f",
        path(&f),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "23",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("DENY"), "{out}");
    assert!(
        out.contains("log: tier security / policy security.block-telnet / ingress rule 0 (Log)"),
        "{out}"
    );
    assert!(out.contains("ingress rule 1 (Deny)"), "{out}");
    assert!(
        out.contains("rule: Deny TCP from anywhere to anywhere ports [23]"),
        "{out}"
    );
}

#[test]
fn explain_deny_by_end_of_tier() {
    let f = fixture("explain.yaml");
    let (code, out, _) = run(&[
        "explain",
        "-f",
        path(&f),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "80",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("DENY"), "{out}");
    assert!(out.contains("end of tier default"), "{out}");
}

#[test]
fn explain_external_source_and_udp() {
    let f = fixture("explain.yaml");
    let (code, out, err) = run(&[
        "explain",
        "-f",
        path(&f),
        "--from",
        "192.0.2.1",
        "--to",
        "shop/web",
        "--port",
        "53",
        "--protocol",
        "udp",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("DENY  UDP"), "{out}");
    assert!(out.contains("not policed"), "{out}");
}

#[test]
fn explain_json_has_verdict_and_traces() {
    let f = fixture("explain.yaml");
    let (code, out, _) = run(&[
        "explain",
        "-f",
        path(&f),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "5432",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["staged_verdict"], "deny");
    assert_eq!(v["ingress"]["decided_by"]["by"], "rule");
    assert_eq!(v["ingress"]["decided_by"]["policy"], "shop/db-from-web");
    assert!(v["flow"]["dst_port"] == 5432, "{v:#}");
    let (code, out, _) = run(&[
        "explain",
        "-f",
        path(&f),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "23",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["verdict"], "deny");
}

#[test]
fn explain_bad_input_exits_2() {
    let f = fixture("explain.yaml");
    let p = path(&f);
    // Unknown pod.
    let (code, _, err) = run(&[
        "explain",
        "-f",
        p,
        "--from",
        "shop/nope",
        "--to",
        "shop/db",
        "--port",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("shop/nope"), "{err}");
    // TCP without a port.
    let (code, _, err) = run(&["explain", "-f", p, "--from", "shop/web", "--to", "shop/db"]);
    assert_eq!(code, 2);
    assert!(err.contains("port"), "{err}");
    // Bad peer, bad protocol, bad ip version: argument errors.
    for args in [
        ["--from", "a/b/c", "--protocol", "TCP"],
        ["--from", "shop/web", "--protocol", "bogus"],
    ] {
        let mut v = vec!["explain", "-f", p, "--to", "shop/db", "--port", "1"];
        v.extend(args);
        let (code, _, err) = run(&v);
        assert_eq!(code, 2, "{v:?}: {err}");
    }
    let (code, _, _) = run(&[
        "explain",
        "-f",
        p,
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "1",
        "--ip-version",
        "5",
    ]);
    assert_eq!(code, 2);
    // Invalid files.
    let bad = fixture("invalid.yaml");
    let (code, _, err) = run(&[
        "explain",
        "-f",
        path(&bad),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid.yaml"), "{err}");
}

/// `examples/production` (written alongside): explain must work on it in both formats.
#[test]
fn explain_on_examples_production() {
    let dir = workspace().join("examples").join("production");
    let has_yaml = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml")
            })
        })
        .unwrap_or(false);
    if !has_yaml {
        eprintln!("examples/production has no YAML yet: skipped");
        return;
    }
    let (code, out, err) = run(&["check", "-f", path(&dir), "-o", "json"]);
    assert_eq!(code, 0, "check examples/production: {err}");
    let _ = json(&out);
    // Pick two pods with addresses from the inventory and explain a flow between them.
    let (code, out, err) = run(&["check", "-f", path(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Pods"), "{out}");
    let pods = pods_in(&dir);
    if pods.len() < 2 {
        eprintln!("examples/production has fewer than two pods: explain skipped");
        return;
    }
    let (a, b) = (&pods[0], &pods[1]);
    for fmt in ["text", "json"] {
        let (code, out, err) = run(&[
            "explain",
            "-f",
            path(&dir),
            "--from",
            a,
            "--to",
            b,
            "--port",
            "443",
            "-o",
            fmt,
        ]);
        assert_eq!(code, 0, "{a} -> {b}: {err}");
        if fmt == "json" {
            let v = json(&out);
            assert!(v["verdict"] == "allow" || v["verdict"] == "deny", "{v:#}");
        } else {
            assert!(out.starts_with("ALLOW") || out.starts_with("DENY"), "{out}");
        }
    }
}

/// `namespace/name` of pods with an address, read through the library.
fn pods_in(dir: &Path) -> Vec<String> {
    let inv = enforcer_user::sources::load_paths(&[dir]).expect("examples/production loads");
    inv.pods
        .iter()
        .filter(|p| !p.ips.is_empty() && !p.host_network)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

// ---------------------------------------------------------------- lint

const LINTS: [&str; 7] = [
    "shadowed-rule",
    "shadowed-policy",
    "broad-allow-before-deny",
    "egress-deny-without-dns",
    "selector-matches-nothing",
    "template-placeholder",
    "types-defaulting",
];

#[test]
fn lint_each_example_reports_its_code_and_nothing_else() {
    for code_name in LINTS {
        let f = lint_example(&format!("{code_name}.yaml"));
        let (code, out, err) = run(&["lint", "-f", path(&f), "-o", "json"]);
        assert_eq!(
            code, 1,
            "{code_name}: exit code\nstdout:\n{out}\nstderr:\n{err}"
        );
        let v = json(&out);
        let codes: Vec<&str> = v["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .filter_map(|w| w["code"].as_str())
            .collect();
        assert!(!codes.is_empty(), "{code_name}: no warnings");
        assert!(
            codes.iter().all(|c| *c == code_name),
            "{code_name}: got {codes:?}\n{v:#}"
        );
        for w in v["warnings"].as_array().expect("warnings") {
            assert!(
                w["origin"]["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(&format!("{code_name}.yaml"))),
                "{w:#}"
            );
            assert!(
                w["suggestion"].as_str().is_some_and(|s| !s.is_empty()),
                "{w:#}"
            );
        }
    }
}

#[test]
fn lint_text_names_file_policy_rule_and_fix() {
    let f = lint_example("shadowed-rule.yaml");
    let (code, out, _) = run(&["lint", "-f", path(&f)]);
    assert_eq!(code, 1);
    assert!(out.contains("warning[shadowed-rule]"), "{out}");
    assert!(out.contains("shadowed-rule.yaml (document 3)"), "{out}");
    assert!(
        out.contains("policy billing/web-ingress, ingress rule 1"),
        "{out}"
    );
    assert!(out.contains("fix: "), "{out}");
    assert!(out.contains("1 warning"), "{out}");
}

#[test]
fn lint_clean_example_has_no_warnings() {
    let f = lint_example("clean.yaml");
    let (code, out, err) = run(&["lint", "-f", path(&f)]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("no warnings"), "{out}");
    let (code, out, _) = run(&["lint", "-f", path(&f), "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["warnings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn lint_whole_directory_lints_around_the_template() {
    let dir = workspace().join("examples").join("lint");
    let (code, out, err) = run(&["lint", "-f", path(&dir), "-o", "json"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let v = json(&out);
    let codes: std::collections::BTreeSet<&str> = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert!(codes.contains("template-placeholder"), "{codes:?}");
    assert!(
        codes.len() >= 3,
        "the other files were linted too: {codes:?}"
    );
    assert!(
        v["notes"].as_array().is_some_and(|n| n
            .iter()
            .any(|n| n.as_str().is_some_and(|s| s.contains("template")))),
        "{v:#}"
    );
}

#[test]
fn lint_load_errors_exit_2() {
    let f = fixture("invalid.yaml");
    let (code, _, err) = run(&["lint", "-f", path(&f)]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid.yaml"), "{err}");
}

#[test]
fn lint_without_pods_notes_the_skipped_lint() {
    // The template example's only document fails to load; use a pod-less policy file instead.
    let dir = std::env::temp_dir().join(format!("enforcer-cli-nopods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("p.yaml");
    std::fs::write(
        &f,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny-egress\n  namespace: shop\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    )
    .unwrap();
    let (code, out, err) = run(&["lint", "-f", path(&f)]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("warning[egress-deny-without-dns]"), "{out}");
    assert!(out.contains("kube-dns"), "{out}");
    assert!(
        out.contains("note: selector-matches-nothing skipped"),
        "{out}"
    );
}
