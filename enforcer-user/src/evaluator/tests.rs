//! Unit tests of the reference evaluator on small inventories. The broad coverage is the
//! conformance corpus in `tests/conformance/`; these pin down the corner cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::sources;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  serviceAccountName: web-sa
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 198.18.0.10, podIPs: [{ip: 198.18.0.10}, {ip: "fd00:198:18::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec:
  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]
status: {podIP: 198.18.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
status: {podIP: 198.18.0.20, podIPs: [{ip: 198.18.0.20}, {ip: "fd00:198:18::20"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: hostpod, namespace: b, labels: {app: agent}}
spec: {hostNetwork: true}
status: {podIP: 198.18.9.9}
"#;

fn inv(extra: &str) -> Inventory {
    let text = format!("{BASE}\n---\n{extra}");
    let inv = sources::load_str(&text, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let errs = sources::validate(&inv);
    assert!(errs.is_empty(), "{errs:?}");
    inv
}

fn flow(from: &str, to: &str, proto: Protocol, port: Option<u16>) -> FlowSpec {
    FlowSpec {
        src: from.parse().unwrap(),
        dst: to.parse().unwrap(),
        protocol: proto,
        src_port: None,
        dst_port: port,
        icmp_type: None,
        icmp_code: None,
        ip_version: None,
    }
}

fn verdict(inv: &Inventory, from: &str, to: &str, port: u16) -> Verdict {
    explain(
        inv,
        &flow(from, to, Protocol::TCP, Some(port)),
        &Options::default(),
    )
    .unwrap()
    .verdict
}

#[test]
fn no_policy_allows_through_the_namespace_profile() {
    let inv = inv("");
    let e = explain(
        &inv,
        &flow("b/client", "a/web", Protocol::TCP, Some(80)),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress.unwrap().decided_by,
        Decision::Profile {
            profile: "kns.a".into()
        }
    );
}

#[test]
fn order_ties_are_broken_by_name() {
    // Same order: "a-deny" sorts before "b-allow", so the deny decides.
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-allow, namespace: a}
spec: {order: 10, selector: app == 'web', ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-deny, namespace: a}
spec: {order: 10, selector: app == 'web', ingress: [{action: Deny}]}
"#);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Deny);
}

#[test]
fn missing_order_sorts_after_numbered_policies() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-unordered-deny, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: z-allow, namespace: a}
spec: {order: 5000, selector: app == 'web', ingress: [{action: Allow}]}
"#);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Allow);
}

#[test]
fn log_continues_and_pass_skips_to_the_next_tier() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.log-and-pass}
spec:
  tier: security
  selector: all()
  ingress: [{action: Log}, {action: Pass}]
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-web, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]}
"#);
    let e = explain(
        &inv,
        &flow("b/client", "a/web", Protocol::TCP, Some(80)),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(e.verdict, Verdict::Deny);
    let ing = e.ingress.unwrap();
    assert_eq!(ing.logs.len(), 1);
    assert_eq!(ing.tiers.len(), 2);
    assert_eq!(ing.tiers[0].outcome, TierOutcome::Pass);
    // Port 81: the default tier applies (deny-web selects web) but no rule matches.
    assert_eq!(verdict(&inv, "b/client", "a/web", 81), Verdict::Deny);
}

#[test]
fn tier_default_pass_falls_through_to_the_profile() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform.nothing-matches}
spec:
  tier: platform
  selector: all()
  ingress: [{action: Deny, protocol: UDP}]
"#);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Allow);
}

#[test]
fn staged_policies_never_decide_but_are_reported() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: would-deny, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Deny}]}
"#);
    let e = explain(
        &inv,
        &flow("b/client", "a/web", Protocol::TCP, Some(80)),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(e.staged_verdict, Verdict::Deny);
    let ing = e.ingress.unwrap();
    assert_eq!(ing.staged.len(), 1);
    assert_eq!(ing.staged[0].outcome, Some(Action::Deny));
}

#[test]
fn staged_set_replaces_the_enforced_policy_of_the_same_name() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
"#);
    let e = explain(
        &inv,
        &flow("b/client", "a/web", Protocol::TCP, Some(80)),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(
        (e.verdict, e.staged_verdict),
        (Verdict::Deny, Verdict::Allow)
    );
}

#[test]
fn namespaced_rule_selectors_stay_in_the_policy_namespace() {
    // `app == 'client'` in namespace a's policy cannot match b/client.
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Allow, source: {selector: app == 'client'}}]}
"#);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Deny);
    let inv2 = inv_with_ns_selector();
    assert_eq!(verdict(&inv2, "b/client", "a/web", 80), Verdict::Allow);
}

fn inv_with_ns_selector() -> Inventory {
    inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {selector: app == 'client', namespaceSelector: team == 'blue'}}]
"#)
}

#[test]
fn not_selector_alone_is_scoped_to_the_namespace_in_a_namespaced_policy() {
    // Calico's rules.go: a lone notSelector still ANDs the policy's namespace in.
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Allow, source: {notSelector: app == 'db'}}]}
"#);
    assert_eq!(verdict(&inv, "a/db", "a/web", 80), Verdict::Deny);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Deny);
    assert_eq!(verdict(&inv, "198.19.0.1", "a/web", 80), Verdict::Deny);
}

#[test]
fn global_namespace_selector_matches_global_network_sets_only() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [198.19.7.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {selector: role == 'partner', namespaceSelector: global()}}]
"#);
    assert_eq!(verdict(&inv, "198.19.7.5", "a/web", 80), Verdict::Allow);
    assert_eq!(verdict(&inv, "198.19.8.5", "a/web", 80), Verdict::Deny);
}

#[test]
fn kubernetes_peers_match_pods_only() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: office, namespace: b}
spec: {nets: [198.19.1.0/24]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-blue, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]
"#);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Allow);
    assert_eq!(verdict(&inv, "198.19.1.1", "a/web", 80), Verdict::Deny);
}

#[test]
fn egress_named_ports_resolve_against_each_peer() {
    let inv = inv(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-out, namespace: b}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {}}], ports: [{port: http}]}]
"#);
    assert_eq!(verdict(&inv, "b/client", "a/web", 8080), Verdict::Allow);
    // db has no port named http.
    assert_eq!(verdict(&inv, "b/client", "a/db", 8080), Verdict::Deny);
    assert_eq!(verdict(&inv, "b/client", "a/web", 80), Verdict::Deny);
}

#[test]
fn traffic_to_self_and_from_host_network_pods() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all}
spec: {selector: all(), types: [Ingress, Egress]}
"#);
    assert_eq!(verdict(&inv, "a/web", "a/web", 80), Verdict::Allow);
    let e = explain(
        &inv,
        &flow("b/hostpod", "a/web", Protocol::TCP, Some(80)),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(e.source.kind, "host-network-pod");
    assert!(e.egress.is_none());
    assert_eq!(e.verdict, Verdict::Deny, "web's ingress still denies");
}

#[test]
fn host_endpoints_get_failsafe_ports_and_deny_by_default() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: node1}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [198.18.100.1]}
"#);
    let mut opts = Options::default();
    let ssh = flow("198.19.0.5", "198.18.100.1", Protocol::TCP, Some(22));
    assert_eq!(explain(&inv, &ssh, &opts).unwrap().verdict, Verdict::Allow);
    assert_eq!(
        verdict(&inv, "198.19.0.5", "198.18.100.1", 80),
        Verdict::Deny
    );
    opts.failsafe = Failsafe::none();
    let e = explain(&inv, &ssh, &opts).unwrap();
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(
        e.ingress.unwrap().decided_by,
        Decision::HostEndpointDefaultDeny
    );
}

#[test]
fn dual_stack_picks_the_common_family_or_the_requested_one() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: v6-only, namespace: a}
spec: {selector: app == 'web', ingress: [{action: Allow, ipVersion: 6}]}
"#);
    let mut f = flow("b/client", "a/web", Protocol::TCP, Some(80));
    assert_eq!(
        explain(&inv, &f, &Options::default()).unwrap().verdict,
        Verdict::Deny
    );
    f.ip_version = Some(6);
    let e = explain(&inv, &f, &Options::default()).unwrap();
    assert_eq!(e.verdict, Verdict::Allow);
    assert!(e.flow.src.is_ipv6());
    // db has no IPv6 address.
    let mut g = flow("b/client", "a/db", Protocol::TCP, Some(80));
    g.ip_version = Some(6);
    assert!(matches!(
        explain(&inv, &g, &Options::default()),
        Err(EvalError::NoCommonFamily { .. })
    ));
}

#[test]
fn bad_flows_are_errors() {
    let inv = inv("");
    assert!(matches!("nope".parse::<Peer>(), Err(EvalError::BadPeer(_))));
    assert!(matches!(
        explain(
            &inv,
            &flow("a/ghost", "a/web", Protocol::TCP, Some(80)),
            &Options::default()
        ),
        Err(EvalError::UnknownPod(_))
    ));
    assert!(matches!(
        explain(
            &inv,
            &flow("b/client", "a/web", Protocol::TCP, None),
            &Options::default()
        ),
        Err(EvalError::MissingPort { .. })
    ));
    let mut f = flow("b/client", "a/web", Protocol::UDP, Some(53));
    f.icmp_type = Some(8);
    assert!(matches!(
        explain(&inv, &f, &Options::default()),
        Err(EvalError::IcmpOnNonIcmp { .. })
    ));
}

#[test]
fn icmp_type_and_code() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ping, namespace: a}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}}]
"#);
    let mut f = flow("b/client", "a/web", Protocol::ICMP, None);
    f.icmp_type = Some(8);
    f.icmp_code = Some(0);
    assert_eq!(
        explain(&inv, &f, &Options::default()).unwrap().verdict,
        Verdict::Allow
    );
    f.icmp_code = Some(1);
    assert_eq!(
        explain(&inv, &f, &Options::default()).unwrap().verdict,
        Verdict::Deny
    );
}

#[test]
fn icmpv6_neighbour_discovery_is_always_allowed() {
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all}
spec: {selector: all(), types: [Ingress, Egress]}
"#);
    let mut f = flow("b/client", "a/web", Protocol::ICMPV6, None);
    f.ip_version = Some(6);
    f.icmp_type = Some(135);
    let e = explain(&inv, &f, &Options::default()).unwrap();
    assert_eq!(e.verdict, Verdict::Allow);
    assert!(e.ingress.is_none() && e.egress.is_none());
    f.icmp_type = Some(128);
    assert_eq!(
        explain(&inv, &f, &Options::default()).unwrap().verdict,
        Verdict::Deny
    );
}

#[test]
fn icmp_type_applies_only_to_the_family_s_own_icmp() {
    // ICMP (protocol 1) carried over IPv6 has no type the datapath reads.
    let inv = inv(r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: ping, namespace: a}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, protocol: ICMP, icmp: {type: 8}}]
"#);
    let mut f = flow("b/client", "a/web", Protocol::ICMP, None);
    f.icmp_type = Some(8);
    assert_eq!(
        explain(&inv, &f, &Options::default()).unwrap().verdict,
        Verdict::Allow
    );
    f.ip_version = Some(6);
    let e = explain(&inv, &f, &Options::default()).unwrap();
    assert_eq!(e.flow.icmp_type, None);
    assert_eq!(e.verdict, Verdict::Deny);
}
