#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::model::{
    Action, Direction, EntityRule, IcmpMatch, NamedPort, PolicyKind, PortSpec, Protocol,
    StagedAction, TierDefault,
};
use crate::selector::Selector;

fn load(text: &str) -> Inventory {
    match load_str(text, Path::new("test.yaml")) {
        Ok(inv) => inv,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<LoadError> {
    match load_str(text, Path::new("test.yaml")) {
        Ok(inv) => panic!("expected errors, loaded {inv:?}"),
        Err(e) => e.0,
    }
}

/// The one error of `text`, as displayed.
fn one_error(text: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs[0].to_string()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Documents and errors.

#[test]
fn documents_are_numbered_like_a_yaml_parser() {
    let docs = split_documents("a: 1\n---\nb: 2\n");
    assert_eq!(docs.len(), 2);
    assert_eq!((docs[0].number, docs[0].first_line), (1, 0));
    assert_eq!((docs[1].number, docs[1].first_line), (2, 1));

    // A leading `---` does not make an empty first document; comments before it neither.
    let docs = split_documents("# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\n");
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0].number, 1);
    assert!(docs[0].text.contains("a: 1"));
    assert_eq!(docs[2].number, 3);
    assert!(docs[2].text.contains("b: 2"));

    // `...` ends a document; `--- # comment` keeps its comment.
    let docs = split_documents("a: 1\n...\n--- # two\nb: 2\n");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].number, 2);

    // `----` and `---x` are not markers.
    assert_eq!(split_documents("a: |\n  ----\n  x\n").len(), 1);
}

#[test]
fn empty_documents_are_ignored_but_counted() {
    let inv = load(
        "---\n# nothing here\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n",
    );
    assert_eq!(inv.namespaces.len(), 1);
    assert_eq!(inv.namespaces[0].origin.document, 2);
}

#[test]
fn malformed_yaml_names_the_document_and_file_line_and_the_rest_still_loads() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [oops\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].origin.document, 2);
    assert_eq!(errs[0].field, "-");
    assert!(errs[0].message.starts_with("invalid YAML"), "{}", errs[0]);
    assert!(errs[0].message.contains("line 6"), "{}", errs[0]);
    assert_eq!(errs[1].origin.document, 3);
}

#[test]
fn error_display() {
    let e = LoadError {
        origin: Origin {
            file: "p.yaml".into(),
            document: 3,
        },
        field: "spec.order".into(),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "p.yaml, document 3: spec.order: bad");
    let errs = LoadErrors(vec![e.clone(), e]);
    assert_eq!(errs.to_string().lines().count(), 2);
}

#[test]
fn not_a_mapping_and_missing_kind() {
    let e = one_error("- a\n- b\n");
    assert!(
        e.contains("expected an object with apiVersion and kind"),
        "{e}"
    );
    let e = one_error("apiVersion: v1\nmetadata: {name: x}\n");
    assert!(e.contains("document 1: kind: missing"), "{e}");
}

#[test]
fn unknown_kinds_are_skipped() {
    let inv = load(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {whatever: 1}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n",
    );
    assert_eq!(inv.skipped.len(), 2);
    assert_eq!(inv.skipped[0].kind, "Deployment");
    assert_eq!(inv.skipped[0].name.as_deref(), Some("web"));
    assert_eq!(inv.skipped[1].origin.document, 2);
}

// ---------------------------------------------------------------------------------------------
// Lenient kinds.

#[test]
fn namespace_gets_the_metadata_name_label() {
    let inv = load(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels: {team: a}\n  uid: 123\nspec: {finalizers: [kubernetes]}\nstatus: {phase: Active}\n",
    );
    let ns = &inv.namespaces[0];
    assert_eq!(ns.name, "prod");
    assert_eq!(ns.labels["team"], "a");
    assert_eq!(ns.labels["kubernetes.io/metadata.name"], "prod");
}

#[test]
fn pod_fields_and_defaults() {
    let inv = load(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
  annotations: {x: y}
spec:
  nodeName: node-a
  containers:
  - name: c
    image: nginx
    ports:
    - {name: http, containerPort: 8080}
    - {containerPort: 53, protocol: UDP}
  - name: d
    ports:
    - {name: metrics, containerPort: 9090, protocol: TCP}
status:
  podIP: 10.0.0.5
  podIPs: [{ip: 10.0.0.5}, {ip: "fd00::5"}]
  phase: Running
"#,
    );
    let p = &inv.pods[0];
    assert_eq!(p.namespace, "default");
    assert_eq!(p.service_account, "default");
    assert!(!p.host_network);
    assert_eq!(p.node_name.as_deref(), Some("node-a"));
    assert_eq!(
        p.ports,
        vec![
            NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::TCP
            },
            NamedPort {
                name: String::new(),
                port: 53,
                protocol: Protocol::UDP
            },
            NamedPort {
                name: "metrics".into(),
                port: 9090,
                protocol: Protocol::TCP
            },
        ]
    );
    assert_eq!(
        p.ips,
        vec![
            "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
}

#[test]
fn pod_errors_name_fields() {
    let e = one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - ports: [{containerPort: 70000}]\n",
    );
    assert!(
        e.contains("spec.containers[0].ports[0].containerPort: port 70000 is out of range"),
        "{e}"
    );
    let e = one_error("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {version: [1]}}\n");
    assert!(e.contains("metadata.labels.version"), "{e}");
    let e = one_error("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: nope}\n");
    assert!(e.contains("status.podIP: invalid IP address"), "{e}");
}

#[test]
fn service_account() {
    let inv = load(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api, namespace: prod, labels: {role: api}}\nsecrets: [{name: x}]\n",
    );
    let sa = &inv.service_accounts[0];
    assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("prod", "api"));
    assert_eq!(sa.labels["role"], "api");
}

// ---------------------------------------------------------------------------------------------
// Calico policy.

#[test]
fn calico_network_policy_full() {
    let inv = load(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: prod
  resourceVersion: "123"
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  order: 100
  selector: app == 'web'
  serviceAccountSelector: role == 'api'
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == 'lb'
      namespaceSelector: team == 'edge'
      nets: [10.0.0.0/8, 192.168.1.5]
      notNets: [10.1.0.0/16]
    destination:
      ports: [80, "443", "8000:8080", http]
      notPorts: [8081]
  - action: Deny
    protocol: ICMP
    icmp: {type: 8, code: 0}
    ipVersion: 4
    metadata:
      annotations: {why: "no ping"}
  - action: Log
    notProtocol: 17
    notICMP: {type: 3}
    protocol: icmpv6
  egress:
  - action: Pass
    destination:
      notSelector: app == 'db'
      serviceAccounts: {names: [api], selector: tier == 'x'}
"#,
    );
    assert_eq!(inv.policies.len(), 1);
    let p = &inv.policies[0];
    assert_eq!(p.kind, PolicyKind::NetworkPolicy);
    assert_eq!(p.namespace.as_deref(), Some("prod"));
    assert_eq!(p.tier, "default");
    assert_eq!(p.order, Some(100.0));
    assert_eq!(p.selector, sel("app == 'web'"));
    assert_eq!(p.service_account_selector, Some(sel("role == 'api'")));
    assert_eq!(p.namespace_selector, None);
    assert_eq!(p.types, vec![Direction::Ingress, Direction::Egress]);
    assert!(!p.types_explicit);
    assert_eq!(p.ingress.len(), 3);

    let r = &p.ingress[0];
    assert_eq!(r.action, Action::Allow);
    assert_eq!(r.protocol, Some(Protocol::TCP));
    assert_eq!(r.source.selector, Some(sel("app == 'lb'")));
    assert_eq!(r.source.namespace_selector, Some(sel("team == 'edge'")));
    assert_eq!(
        r.source.nets,
        vec![net("10.0.0.0/8"), net("192.168.1.5/32")]
    );
    assert_eq!(r.source.not_nets, vec![net("10.1.0.0/16")]);
    assert_eq!(
        r.destination.ports,
        vec![
            PortSpec::Range(80, 80),
            PortSpec::Range(443, 443),
            PortSpec::Range(8000, 8080),
            PortSpec::Named("http".into())
        ]
    );
    assert_eq!(r.destination.not_ports, vec![PortSpec::Range(8081, 8081)]);

    let r = &p.ingress[1];
    assert_eq!(r.action, Action::Deny);
    assert_eq!(
        r.icmp,
        Some(IcmpMatch {
            icmp_type: 8,
            code: Some(0)
        })
    );
    assert_eq!(r.ip_version, Some(4));
    assert_eq!(r.annotations["why"], "no ping");

    let r = &p.ingress[2];
    assert_eq!(r.action, Action::Log);
    assert_eq!(r.protocol, Some(Protocol::ICMPV6));
    assert_eq!(r.not_protocol, Some(Protocol::UDP));
    assert_eq!(
        r.not_icmp,
        Some(IcmpMatch {
            icmp_type: 3,
            code: None
        })
    );

    let r = &p.egress[0];
    assert_eq!(r.action, Action::Pass);
    assert_eq!(r.destination.not_selector, Some(sel("app == 'db'")));
    let sa = r.destination.service_accounts.as_ref().unwrap();
    assert_eq!(sa.names, vec!["api".to_string()]);
    assert_eq!(sa.selector, Some(sel("tier == 'x'")));
}

#[test]
fn calico_defaults() {
    let inv = load(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  egress: [{action: Allow}]\n",
    );
    let p = &inv.policies[0];
    assert_eq!(p.namespace.as_deref(), Some("default"));
    assert_eq!(p.order, None);
    assert!(p.selector.is_all());
    assert_eq!(p.types, vec![Direction::Egress]);
    assert!(p.egress[0].source.is_empty() && p.egress[0].destination.is_empty());

    // No rules at all: Ingress.
    let inv = load("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\n");
    assert_eq!(inv.policies[0].types, vec![Direction::Ingress]);

    // Explicit types.
    let inv = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {types: [Egress], ingress: [{action: Deny}]}\n",
    );
    assert_eq!(inv.policies[0].types, vec![Direction::Egress]);
    assert!(inv.policies[0].types_explicit);
}

#[test]
fn global_network_policy_fields() {
    let inv = load(
        r#"
apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: security.ssh}
spec:
  tier: security
  order: 10.5
  selector: has(host)
  namespaceSelector: env == 'prod'
  applyOnForward: true
  preDNAT: true
  ingress:
  - action: Allow
    protocol: TCP
    source: {nets: ["10.0.0.0/8"], namespaceSelector: global()}
    destination: {ports: [22]}
"#,
    );
    let p = &inv.policies[0];
    assert_eq!(p.kind, PolicyKind::GlobalNetworkPolicy);
    assert_eq!(p.namespace, None);
    assert_eq!(p.name, "security.ssh");
    assert_eq!(p.tier, "security");
    assert_eq!(p.order, Some(10.5));
    assert_eq!(p.namespace_selector, Some(sel("env == 'prod'")));
    assert!(p.apply_on_forward && p.pre_dnat && !p.do_not_track);
    assert_eq!(
        p.ingress[0].source.namespace_selector,
        Some(sel("global()"))
    );
}

#[test]
fn global_network_policy_flag_rules() {
    let errs = errors(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {preDNAT: true, doNotTrack: true, egress: [{action: Allow}]}\n",
    );
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("spec.preDNAT: preDNAT and doNotTrack")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("spec.egress: a preDNAT policy cannot have egress rules")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|e| e.contains("spec.applyOnForward")),
        "{text:#?}"
    );
}

#[test]
fn namespaced_kinds_reject_global_only_fields() {
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {namespaceSelector: all()}\n",
    );
    assert!(
        e.contains("spec.namespaceSelector: unknown field `namespaceSelector`"),
        "{e}"
    );
    assert!(e.contains("`serviceAccountSelector`"), "{e}");
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p, namespace: x}\n",
    );
    assert!(
        e.contains("metadata.namespace: GlobalNetworkPolicy is cluster-scoped"),
        "{e}"
    );
}

#[test]
fn staged_policies() {
    let inv = load(
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: n}\nspec: {ingress: [{action: Deny}]}\n---\napiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: g}\nspec: {stagedAction: Delete, tier: default}\n",
    );
    assert_eq!(inv.policies[0].kind, PolicyKind::StagedNetworkPolicy);
    assert_eq!(inv.policies[0].staged_action, StagedAction::Set);
    assert!(inv.policies[0].kind.is_staged());
    assert_eq!(inv.policies[1].kind, PolicyKind::StagedGlobalNetworkPolicy);
    assert_eq!(inv.policies[1].staged_action, StagedAction::Delete);

    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: g}\nspec: {stagedAction: Delete, ingress: [{action: Deny}]}\n",
    );
    assert!(e.contains("stagedAction Delete"), "{e}");
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: g}\nspec: {stagedAction: Remove}\n",
    );
    assert!(
        e.contains("spec.stagedAction: invalid stagedAction \"Remove\": expected Set or Delete"),
        "{e}"
    );
    // Enforced kinds have no stagedAction.
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: g}\nspec: {stagedAction: Set}\n",
    );
    assert!(e.contains("unknown field `stagedAction`"), "{e}");
}

#[test]
fn calico_rule_errors() {
    let policy = |rule: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  ingress:\n  - {rule}\n"
        )
    };
    let cases = [
        (
            "{action: allow}",
            "spec.ingress[0].action: invalid action \"allow\": expected Allow, Deny, Pass or Log (actions are case-sensitive: write \"Allow\")",
        ),
        ("{action: Reject}", "invalid action \"Reject\""),
        (
            "{action: Allow, ipVersion: 5}",
            "spec.ingress[0].ipVersion: invalid ipVersion 5: expected 4 or 6",
        ),
        (
            "{action: Allow, protocol: GRE}",
            "spec.ingress[0].protocol: invalid protocol \"GRE\"",
        ),
        ("{action: Allow, protocol: 0}", "invalid protocol 0"),
        (
            "{action: Allow, notProtocol: 300}",
            "spec.ingress[0].notProtocol: invalid protocol 300",
        ),
        (
            "{action: Allow, destination: {ports: [80]}}",
            "spec.ingress[0].destination.ports: ports need protocol TCP, UDP or SCTP (no protocol is set)",
        ),
        (
            "{action: Allow, protocol: ICMP, source: {notPorts: [80]}}",
            "spec.ingress[0].source.notPorts: ports need protocol TCP, UDP or SCTP (protocol is ICMP)",
        ),
        (
            "{action: Allow, protocol: UDPLite, destination: {ports: [80]}}",
            "Calico does not accept ports with UDPLite",
        ),
        (
            "{action: Allow, protocol: TCP, destination: {ports: [0]}}",
            "spec.ingress[0].destination.ports[0]: port 0 is out of range",
        ),
        (
            "{action: Allow, protocol: TCP, destination: {ports: [\"90:80\"]}}",
            "spec.ingress[0].destination.ports[0]: invalid port range \"90:80\"",
        ),
        (
            "{action: Allow, protocol: TCP, destination: {ports: [HTTP]}}",
            "invalid port \"HTTP\"",
        ),
        (
            "{action: Allow, protocol: TCP, icmp: {type: 8}}",
            "spec.ingress[0].icmp: ICMP type/code matches need protocol ICMP or ICMPv6 (protocol is TCP)",
        ),
        (
            "{action: Allow, notICMP: {type: 8}}",
            "spec.ingress[0].notICMP: ICMP type/code matches need protocol ICMP or ICMPv6",
        ),
        (
            "{action: Allow, protocol: ICMP, icmp: {type: 255}}",
            "spec.ingress[0].icmp.type: invalid ICMP type 255: expected 0 to 254",
        ),
        (
            "{action: Allow, protocol: ICMP, icmp: {type: 3, code: 256}}",
            "spec.ingress[0].icmp.code: invalid ICMP code 256",
        ),
        (
            "{action: Allow, protocol: ICMP, icmp: {code: 1}}",
            "spec.ingress[0].icmp.code: an ICMP code needs an ICMP type",
        ),
        (
            "{action: Allow, protocol: ICMP, ipVersion: 6}",
            "spec.ingress[0].ipVersion: protocol ICMP is IPv4-only",
        ),
        (
            "{action: Allow, source: {nets: [10.0.0.0/33]}}",
            "spec.ingress[0].source.nets[0]: invalid CIDR \"10.0.0.0/33\"",
        ),
        (
            "{action: Allow, source: {nets: [10.0.0.1/8]}}",
            "host bits set; write 10.0.0.0/8",
        ),
        (
            "{action: Allow, source: {nets: [10.0.0.0/8], notNets: [\"fd00::/8\"]}}",
            "spec.ingress[0].source.notNets: the rule mixes IPv4 and IPv6",
        ),
        (
            "{action: Allow, ipVersion: 6, destination: {nets: [10.0.0.0/8]}}",
            "spec.ingress[0].destination.nets: the CIDRs' IP version does not match the rule's ipVersion 6",
        ),
        (
            "{action: Allow, source: {selector: \"app == \"}}",
            "spec.ingress[0].source.selector: invalid selector \"app == \"",
        ),
        (
            "{action: Allow, source: {selector: global()}}",
            "global(), which is only valid as a rule's namespaceSelector",
        ),
        (
            "{action: Allow, source: {namespaceSelector: \"global() && a == 'b'\"}}",
            "global() cannot be combined",
        ),
        (
            "{action: Allow, http: {methods: [GET]}}",
            "spec.ingress[0].http: HTTP matching (application layer policy) is not supported yet",
        ),
        (
            "{action: Allow, destination: {services: {name: kube-dns, namespace: kube-system}}}",
            "spec.ingress[0].destination.services: matching Kubernetes Services is not supported yet",
        ),
        (
            "{action: Allow, destination: {domains: [api.stripe.com]}}",
            "spec.ingress[0].destination.domains: domain names are not supported yet",
        ),
        ("{protocol: TCP}", "spec.ingress[0]: missing field `action`"),
        (
            "{action: Allow, source: {selectr: all()}}",
            "spec.ingress[0].source.selectr: unknown field `selectr`, expected one of `nets`, `notNets`, `selector`",
        ),
    ];
    for (rule, want) in cases {
        let errs = errors(&policy(rule));
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e.contains(want)),
            "rule {rule}: wanted {want:?} in {text:#?}"
        );
        assert!(
            text.iter()
                .all(|e| e.starts_with("test.yaml, document 1: ")),
            "{text:#?}"
        );
    }
}

#[test]
fn selector_errors_name_the_column() {
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {selector: \"app == 'a' &&\"}\n",
    );
    assert!(e.contains("spec.selector: invalid selector"), "{e}");
    assert!(e.contains("at column"), "{e}");
}

#[test]
fn every_unknown_field_is_reported() {
    let errs = errors(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p, lables: {a: b}}\nspec:\n  ordr: 1\n  ingress: [{action: Allow, destinaton: {}}]\n",
    );
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["metadata.lables", "spec.ordr", "spec.ingress[0].destinaton"],
        "{errs:#?}"
    );
    assert!(
        errs[0].message.contains("expected one of `name`"),
        "{}",
        errs[0]
    );
}

#[test]
fn policy_names_and_tiers() {
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: Bad_Name}\n",
    );
    assert!(
        e.contains("metadata.name: invalid name \"Bad_Name\""),
        "{e}"
    );
    let e =
        one_error("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {}\n");
    assert!(e.contains("metadata.name: missing"), "{e}");
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {tier: Sec}\n",
    );
    assert!(e.contains("spec.tier: invalid tier name"), "{e}");
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {types: [ingress]}\n",
    );
    assert!(e.contains("spec.types[0]: invalid type \"ingress\": expected Ingress or Egress (types are case-sensitive)"), "{e}");
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {order: abc}\n",
    );
    assert!(
        e.contains("spec.order: invalid type: string \"abc\", expected f64"),
        "{e}"
    );
}

#[test]
fn performance_hints_are_checked_and_ignored() {
    load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {performanceHints: [AssumeNeededOnEveryNode]}\n",
    );
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {performanceHints: [Fast]}\n",
    );
    assert!(e.contains("spec.performanceHints[0]"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Network sets, tiers, host endpoints.

#[test]
fn network_sets() {
    let inv = load(
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s, namespace: n, labels: {role: db}}\nspec: {nets: [10.0.0.0/24, 10.1.1.1, 10.2.0.1/16, \"fd00::/64\"]}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: feed}\nspec:\n  nets:\n  - 1.2.3.0/24\n",
    );
    let s = &inv.network_sets[0];
    assert_eq!(s.namespace.as_deref(), Some("n"));
    assert_eq!(s.labels["role"], "db");
    assert_eq!(
        s.nets,
        vec![
            net("10.0.0.0/24"),
            net("10.1.1.1/32"),
            net("10.2.0.0/16"),
            net("fd00::/64")
        ]
    );
    let g = &inv.network_sets[1];
    assert_eq!(g.namespace, None);
    assert_eq!(g.nets, vec![net("1.2.3.0/24")]);

    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: feed}\nspec: {nets: [1.2.3.4/40]}\n",
    );
    assert!(e.contains("spec.nets[0]: invalid CIDR"), "{e}");
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: feed}\nspec: {nets: [1.2.3.4/24], allowedEgressDomains: [x.com]}\n",
    );
    assert!(
        e.contains("unknown field `allowedEgressDomains`, expected `nets`"),
        "{e}"
    );
}

#[test]
fn tiers() {
    let inv = load(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100, defaultAction: Pass}\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: later}\n",
    );
    assert_eq!(inv.tiers[0].name, "security");
    assert_eq!(inv.tiers[0].order, Some(100.0));
    assert_eq!(inv.tiers[0].default_action, TierDefault::Pass);
    assert_eq!(inv.tiers[0].origin.as_ref().unwrap().document, 1);
    assert_eq!(inv.tiers[1].order, None);
    assert_eq!(inv.tiers[1].default_action, TierDefault::Deny);

    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {defaultAction: Allow}\n",
    );
    assert!(
        e.contains("spec.defaultAction: invalid defaultAction \"Allow\": expected Deny or Pass"),
        "{e}"
    );
    let e = one_error(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
    );
    assert!(
        e.contains("built-in tier \"default\" must have order 1000000"),
        "{e}"
    );
    let e = one_error("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a.b}\n");
    assert!(e.contains("metadata.name: invalid name \"a.b\""), "{e}");
}

#[test]
fn host_endpoints() {
    let inv = load(
        r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {role: node}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [192.168.0.1, "fd00::1"]
  profiles: [projectcalico-default-allow]
  ports:
  - {name: ssh, port: 22, protocol: TCP}
"#,
    );
    let h = &inv.host_endpoints[0];
    assert_eq!(h.node.as_deref(), Some("node1"));
    assert_eq!(h.interface_name.as_deref(), Some("eth0"));
    assert_eq!(h.expected_ips.len(), 2);
    assert_eq!(h.profiles, vec!["projectcalico-default-allow".to_string()]);
    assert_eq!(
        h.ports,
        vec![NamedPort {
            name: "ssh".into(),
            port: 22,
            protocol: Protocol::TCP
        }]
    );

    let errs = errors(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec:\n  expectedIPs: [not-an-ip]\n  ports: [{name: ssh, port: 22, protocol: ICMP}]\n",
    );
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|e| e.contains("spec.node: missing")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("spec.expectedIPs[0]: invalid IP address")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("spec.ports[0].protocol: protocol ICMP has no ports")),
        "{text:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes NetworkPolicy.

fn k8s(spec: &str) -> crate::model::Policy {
    let inv = load(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: prod}}\nspec:\n{spec}"
    ));
    assert_eq!(inv.policies.len(), 1);
    inv.policies.into_iter().next().unwrap()
}

fn k8s_error(spec: &str) -> String {
    one_error(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: prod}}\nspec:\n{spec}"
    ))
}

#[test]
fn k8s_policy_basics() {
    let p = k8s("  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - {}\n");
    assert_eq!(p.kind, PolicyKind::KubernetesNetworkPolicy);
    assert_eq!(p.namespace.as_deref(), Some("prod"));
    assert_eq!(p.tier, "default");
    assert_eq!(p.order, Some(1000.0));
    assert_eq!(
        p.selector,
        Selector::from_label_selector(&serde_yaml::from_str("matchLabels: {app: web}").unwrap())
            .unwrap()
    );
    assert_eq!(p.types, vec![Direction::Ingress]);
    assert!(!p.types_explicit);
    // `- {}`: one rule allowing everything.
    assert_eq!(p.ingress.len(), 1);
    assert_eq!(p.ingress[0].action, Action::Allow);
    assert_eq!(p.ingress[0].protocol, None);
    assert!(p.ingress[0].source.is_empty() && p.ingress[0].destination.is_empty());

    // Default deny: podSelector {} and no rules.
    let p = k8s("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n");
    assert!(p.selector.is_all());
    assert_eq!(p.types, vec![Direction::Ingress, Direction::Egress]);
    assert!(p.types_explicit);
    assert!(p.ingress.is_empty() && p.egress.is_empty());

    // policyTypes omitted with egress rules: Ingress and Egress.
    let p = k8s("  podSelector: {}\n  egress: [{}]\n");
    assert_eq!(p.types, vec![Direction::Ingress, Direction::Egress]);
}

#[test]
fn k8s_rules_are_split_per_protocol_and_peer_like_calico() {
    let p = k8s(r#"  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a}}
    - namespaceSelector: {}
    - namespaceSelector: {matchLabels: {team: x}}
      podSelector: {matchExpressions: [{key: tier, operator: In, values: [fe]}]}
    ports:
    - {port: 81}
    - {port: 80, protocol: TCP}
    - {port: 53, protocol: UDP}
    - {port: http}
    - {port: 8000, endPort: 8080}
"#);
    // Two protocols (TCP, UDP: sorted) × three peers.
    assert_eq!(p.ingress.len(), 6);
    let tcp_ports = vec![
        PortSpec::Named("http".into()),
        PortSpec::Range(80, 81),
        PortSpec::Range(8000, 8080),
    ];
    for r in &p.ingress[..3] {
        assert_eq!(r.protocol, Some(Protocol::TCP));
        assert_eq!(r.destination.ports, tcp_ports);
        assert_eq!(r.destination.selector, None);
    }
    for r in &p.ingress[3..] {
        assert_eq!(r.protocol, Some(Protocol::UDP));
        assert_eq!(r.destination.ports, vec![PortSpec::Range(53, 53)]);
    }
    let r = &p.ingress[0].source;
    assert_eq!(r.selector, Some(sel("app == 'a'")));
    assert_eq!(r.namespace_selector, None);
    let r = &p.ingress[1].source;
    assert_eq!(r.selector, None);
    assert!(r.namespace_selector.as_ref().unwrap().is_all());
    let r = &p.ingress[2].source;
    assert_eq!(r.selector, Some(sel("tier in {'fe'}")));
    assert_eq!(r.namespace_selector, Some(sel("team == 'x'")));
}

#[test]
fn k8s_port_without_number_means_every_port_of_the_protocol() {
    let p = k8s(
        "  podSelector: {}\n  egress:\n  - ports: [{protocol: UDP}, {protocol: UDP, port: 53}, {port: 443}]\n",
    );
    assert_eq!(p.egress.len(), 2);
    assert_eq!(p.egress[0].protocol, Some(Protocol::TCP));
    assert_eq!(
        p.egress[0].destination.ports,
        vec![PortSpec::Range(443, 443)]
    );
    assert_eq!(p.egress[1].protocol, Some(Protocol::UDP));
    assert!(p.egress[1].destination.ports.is_empty());
}

#[test]
fn k8s_egress_peer_goes_to_destination_and_ip_block_to_nets() {
    let p = k8s(
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4/32]}\n    ports: [{port: 5432}]\n",
    );
    assert_eq!(p.types, vec![Direction::Egress]);
    let r = &p.egress[0];
    assert!(r.source.is_empty());
    assert_eq!(r.destination.nets, vec![net("10.0.0.0/8")]);
    assert_eq!(
        r.destination.not_nets,
        vec![net("10.1.0.0/16"), net("10.2.3.4/32")]
    );
    assert_eq!(r.destination.ports, vec![PortSpec::Range(5432, 5432)]);
    assert_eq!(
        r.destination,
        EntityRule {
            nets: vec![net("10.0.0.0/8")],
            not_nets: vec![net("10.1.0.0/16"), net("10.2.3.4/32")],
            ports: vec![PortSpec::Range(5432, 5432)],
            ..EntityRule::default()
        }
    );
    // Host bits are masked, as Calico's converter does.
    let p = k8s("  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.1/8}}]\n");
    assert_eq!(p.ingress[0].source.nets, vec![net("10.0.0.0/8")]);
}

#[test]
fn k8s_errors() {
    let cases = [
        (
            "  ingress: [{ports: [{port: 0}]}]\n",
            "spec.ingress[0].ports[0].port: port 0 is out of range",
        ),
        (
            "  ingress: [{ports: [{port: 80, endPort: 70}]}]\n",
            "spec.ingress[0].ports[0].endPort: endPort 70 is less than port 80",
        ),
        (
            "  ingress: [{ports: [{endPort: 70}]}]\n",
            "spec.ingress[0].ports[0].endPort: endPort needs a numeric port",
        ),
        (
            "  ingress: [{ports: [{port: http, endPort: 70}]}]\n",
            "endPort needs a numeric port, not the named port",
        ),
        (
            "  ingress: [{ports: [{port: \"80\"}]}]\n",
            "write the number without quotes",
        ),
        (
            "  ingress: [{ports: [{protocol: ICMP}]}]\n",
            "spec.ingress[0].ports[0].protocol: unsupported protocol \"ICMP\": expected TCP, UDP or SCTP",
        ),
        (
            "  ingress: [{ports: [{protocol: tcp}]}]\n",
            "case-sensitive",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]\n",
            "spec.ingress[0].from[0].ipBlock.except[0]: except 11.0.0.0/8 must be a strict subset of cidr 10.0.0.0/8",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]\n",
            "spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"10.0.0.1\": a prefix length is required",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
            "spec.ingress[0].from[0]: ipBlock cannot be combined",
        ),
        (
            "  ingress: [{from: [{}]}]\n",
            "spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        (
            "  podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}\n",
            "spec.podSelector: invalid label selector: matchExpressions[0]: unknown operator \"Equals\"",
        ),
        (
            "  egress: [{to: [{namespaceSelector: {matchLabels: {\"bad key!\": x}}}]}]\n",
            "spec.egress[0].to[0].namespaceSelector: invalid label selector",
        ),
        (
            "  policyTypes: [Ingress, Ingress]\n",
            "spec.policyTypes[1]: \"Ingress\" is listed more than once",
        ),
        (
            "  policyTypes: [Both]\n",
            "spec.policyTypes[0]: unsupported policy type \"Both\"",
        ),
        (
            "  podSelector: {matchLabel: {a: b}}\n",
            "spec.podSelector.matchLabel: unknown field `matchLabel`, expected `matchLabels` or `matchExpressions`",
        ),
        (
            "  ingress: [{form: []}]\n",
            "spec.ingress[0].form: unknown field `form`, expected `from` or `ports`",
        ),
    ];
    for (spec, want) in cases {
        let e = k8s_error(spec);
        assert!(e.contains(want), "spec {spec}: wanted {want:?} in {e}");
    }
}

#[test]
fn k8s_status_is_allowed() {
    let inv = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, generation: 2, uid: abc, managedFields: [{}]}\nspec: {podSelector: {}}\nstatus: {}\n",
    );
    assert_eq!(inv.policies[0].namespace.as_deref(), Some("default"));
}

// ---------------------------------------------------------------------------------------------
// Lists.

#[test]
fn lists_and_typed_lists() {
    let inv = load(
        r#"
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: v1
  kind: List
  items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: p, namespace: a}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicyList
items:
- metadata: {name: g1}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata: {name: g2}
"#,
    );
    assert_eq!(inv.namespaces.len(), 1);
    assert_eq!(inv.pods.len(), 1);
    assert_eq!(inv.pods[0].origin.document, 1);
    assert_eq!(inv.policies.len(), 2);
    assert_eq!(inv.policies[0].kind, PolicyKind::GlobalNetworkPolicy);
    assert_eq!(inv.policies[1].origin.document, 2);
}

#[test]
fn list_item_errors_carry_the_item_path() {
    let e = one_error(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: g}\n  spec: {ingress: [{action: Nope}]}\n",
    );
    assert!(
        e.contains("document 1: items[1].spec.ingress[0].action: invalid action"),
        "{e}"
    );
    let e = one_error("apiVersion: v1\nkind: List\nitems: {a: 1}\n");
    assert!(e.contains("items: expected a list"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Whole-inventory checks and files.

#[test]
fn duplicates_and_unknown_tiers() {
    let inv = load(
        r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.a}
spec: {tier: security}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a}
spec: {tier: security}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a}
spec: {tier: kube-admin}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a}
spec: {podSelector: {}}
"#,
    );
    let errs = validate(&inv);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(errs[0].origin.document, 2);
    assert!(
        errs[0]
            .message
            .contains("duplicate GlobalNetworkPolicy a: already defined in test.yaml (document 1)"),
        "{}",
        errs[0]
    );
    assert!(errs.iter().filter(|e| e.field == "spec.tier").count() == 2);
    assert!(
        errs[1]
            .message
            .contains("tier \"security\", which does not exist"),
        "{}",
        errs[1]
    );
    assert!(
        errs[1]
            .message
            .contains("known tiers: default, kube-admin, kube-baseline"),
        "{}",
        errs[1]
    );

    // With the Tier defined, only the duplicate remains.
    let mut inv = inv;
    inv.extend(load("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 10}\n"));
    assert_eq!(validate(&inv).len(), 1);
}

#[test]
fn load_paths_walks_directories_in_order() {
    let dir = std::env::temp_dir().join(format!("enforcer-sources-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::create_dir_all(dir.join("..data")).unwrap();
    fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
    )
    .unwrap();
    fs::write(
        dir.join("a.yml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    fs::write(
        dir.join("sub/c.json"),
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
    )
    .unwrap();
    fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
    fs::write(
        dir.join("..data/a.yml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    let inv = load_paths(&[&dir]).unwrap();
    let names: Vec<&str> = inv.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);

    // A file named explicitly is read whatever its extension; errors are collected.
    let errs = load_paths(&[dir.join("notes.txt"), dir.join("missing.yaml")]).unwrap_err();
    assert_eq!(errs.0.len(), 2, "{errs}");
    assert!(
        errs.0[0]
            .to_string()
            .contains("notes.txt, document 1: -: invalid YAML"),
        "{errs}"
    );
    assert!(
        errs.0[1]
            .to_string()
            .contains("missing.yaml: -: cannot read"),
        "{errs}"
    );

    // Duplicates across files are reported by load_paths.
    fs::write(
        dir.join("sub/dup.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    let errs = load_paths(&[&dir]).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    assert!(
        errs.0[0].message.contains("duplicate Namespace a"),
        "{errs}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn yaml_merge_keys_are_applied() {
    let inv = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - &allow {action: Allow, protocol: TCP}\n  - <<: *allow\n    destination: {ports: [80]}\n",
    );
    assert_eq!(inv.policies[0].ingress[1].protocol, Some(Protocol::TCP));
    assert_eq!(
        inv.policies[0].ingress[1].destination.ports,
        vec![PortSpec::Range(80, 80)]
    );
}
