//! The Kubernetes source (`sources::kubernetes`) against a fake API server on 127.0.0.1 that
//! speaks the list/watch protocol (chunked watch events, resourceVersion, bookmarks, 410 Gone),
//! since no API server can run here. The client is configured through a kubeconfig file, as an
//! operator would run it. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "kubernetes_source/fake_apiserver.rs"]
mod fake_apiserver;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use enforcer_user::{
    model::Inventory,
    sources::{
        LoadError,
        feed::{Update, UpdateReceiver},
        kubernetes::{self, KubernetesOptions, WATCHED_KINDS, WatchedKind},
    },
};
use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Upper bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn path_of(kind: &WatchedKind) -> String {
    if kind.group.is_empty() {
        format!("/api/{}/{}", kind.version, kind.plural)
    } else {
        format!("/apis/{}/{}/{}", kind.group, kind.version, kind.plural)
    }
}

fn path(kind: &str, group: &str) -> String {
    let k = WATCHED_KINDS
        .iter()
        .find(|k| k.kind == kind && k.group == group)
        .unwrap_or_else(|| panic!("{kind}.{group} is not watched"));
    path_of(k)
}

const CALICO: &str = "crd.projectcalico.org";

fn pods() -> String {
    path("Pod", "")
}

async fn start_server(kinds: &[WatchedKind]) -> FakeApiServer {
    let paths: Vec<(String, String, String)> = kinds
        .iter()
        .map(|k| (path_of(k), k.api_version(), k.kind.to_string()))
        .collect();
    let refs: Vec<(&str, &str, &str)> = paths
        .iter()
        .map(|(p, a, k)| (p.as_str(), a.as_str(), k.as_str()))
        .collect();
    FakeApiServer::start(&refs).await
}

/// A kubeconfig pointing at the fake server, in a fresh temporary file.
fn kubeconfig(server: &FakeApiServer) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "enforcer-kubernetes-source-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
current-context: fake
users:
- name: fake
  user:
    token: test-token
",
        server.url()
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// The updates a source sent, read with bounded waits.
struct Updates {
    rx: UpdateReceiver,
    task: JoinHandle<()>,
    /// Every `Update::Invalid` error seen so far.
    invalid: Vec<LoadError>,
    snapshots: usize,
    /// The kubeconfig file, removed on drop.
    kubeconfig: PathBuf,
}

impl Drop for Updates {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(dir) = self.kubeconfig.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Updates {
    async fn start(server: &FakeApiServer, node: &str) -> Updates {
        let file = kubeconfig(server);
        let opts = KubernetesOptions {
            node_name: Some(node.to_string()),
            kubeconfig: Some(file.clone()),
            ..KubernetesOptions::default()
        };
        let (task, rx) = kubernetes::watch(opts).await.expect("start the source");
        Updates {
            rx,
            task,
            invalid: Vec::new(),
            snapshots: 0,
            kubeconfig: file,
        }
    }

    /// The next update within `within`, if any.
    async fn next(&mut self, within: Duration) -> Option<Update> {
        let update = tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten();
        match &update {
            Some(Update::Invalid(errors)) => self.invalid.extend(errors.0.iter().cloned()),
            Some(Update::Snapshot(_)) => self.snapshots += 1,
            None => {}
        }
        update
    }

    /// The first snapshot for which `pred` holds, within [`WAIT`].
    async fn snapshot_where(
        &mut self,
        what: &str,
        pred: impl Fn(&Inventory) -> bool,
    ) -> Arc<Inventory> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Update::Snapshot(inv)) => {
                    if pred(&inv) {
                        return inv;
                    }
                    last = Some(inv);
                }
                Some(Update::Invalid(_)) => {}
                None => panic!(
                    "no snapshot where {what} within {WAIT:?}; last one: {}",
                    last.map(|i| summary(&i)).unwrap_or("(none)".to_string())
                ),
            }
        }
    }
}

fn summary(inv: &Inventory) -> String {
    format!(
        "pods {:?}, policies {:?}, tiers {:?}, namespaces {}",
        pod_names(inv),
        policy_names(inv),
        inv.tiers.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        inv.namespaces.len()
    )
}

fn pod_names(inv: &Inventory) -> Vec<String> {
    let mut v: Vec<String> = inv
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    v.sort();
    v
}

fn policy_names(inv: &Inventory) -> Vec<String> {
    let mut v: Vec<String> = inv
        .policies
        .iter()
        .map(|p| format!("{}:{}", p.kind.kind_name(), p.qualified_name()))
        .collect();
    v.sort();
    v
}

fn has_pod(inv: &Inventory, ns: &str, name: &str) -> bool {
    inv.pods.iter().any(|p| p.namespace == ns && p.name == name)
}

fn pod(ns: &str, name: &str, node: &str, ip: &str, app: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": { "app": app },
            "annotations": { "big": "x".repeat(1000) },
            "managedFields": [{ "manager": "kubectl", "operation": "Update" }]
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": "default",
            "containers": [{
                "name": "main",
                "image": "registry.example/app:1",
                "env": [{ "name": "A", "value": "b" }],
                "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }]
            }]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{ "ip": ip }],
            "conditions": [{ "type": "Ready", "status": "True" }]
        }
    })
}

fn namespace(name: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/metadata.name": name }
        },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" }
    })
}

fn gnp(name: &str, tier: &str, action: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "annotations": { "projectcalico.org/metadata": "{\"creationTimestamp\":null}" }
        },
        "spec": {
            "tier": tier,
            "order": 10,
            "selector": "all()",
            "types": ["Ingress"],
            "ingress": [{
                "action": action,
                "protocol": "TCP",
                "destination": { "ports": [22] }
            }]
        }
    })
}

/// A cluster with one object of every watched kind (plus some), 530 namespaces so the
/// namespace list takes two pages of kube's default 500.
fn seed(server: &FakeApiServer) {
    let ns = path("Namespace", "");
    for name in ["default", "prod"] {
        server.put(&ns, namespace(name));
    }
    for i in 0..528 {
        server.put(&ns, namespace(&format!("filler-{i:03}")));
    }
    server.put(
        &path("ServiceAccount", ""),
        json!({ "metadata": { "name": "default", "namespace": "default" }, "secrets": [] }),
    );
    server.put(
        &pods(),
        pod("default", "web-0", "node-1", "10.0.1.5", "web"),
    );
    server.put(&pods(), pod("prod", "db-0", "node-2", "10.0.2.7", "db"));
    // A finished pod: its IP may belong to a new pod already, so it is left out.
    let mut done = pod("default", "job-0", "node-1", "10.0.1.9", "job");
    done["status"]["phase"] = json!("Succeeded");
    server.put(&pods(), done);
    server.put(
        &path("NetworkPolicy", "networking.k8s.io"),
        json!({
            "metadata": { "name": "allow-web", "namespace": "default", "generation": 1 },
            "spec": {
                "podSelector": { "matchLabels": { "app": "web" } },
                "policyTypes": ["Ingress"],
                "ingress": [{ "ports": [{ "port": 8080 }] }]
            }
        }),
    );
    server.put(
        &path("Tier", CALICO),
        json!({ "metadata": { "name": "security" }, "spec": { "order": 100, "defaultAction": "Deny" } }),
    );
    server.put(
        &path("GlobalNetworkPolicy", CALICO),
        gnp("security.deny-ssh", "security", "Deny"),
    );
    // Invalid: Calico's actions are case-sensitive.
    server.put(
        &path("GlobalNetworkPolicy", CALICO),
        gnp("default.bad-action", "default", "allow"),
    );
    server.put(
        &path("NetworkPolicy", CALICO),
        json!({
            "metadata": { "name": "default.allow-db", "namespace": "prod" },
            "spec": {
                "tier": "default",
                "selector": "app == 'db'",
                "ingress": [{ "action": "Allow", "source": { "selector": "app == 'web'" } }]
            }
        }),
    );
    server.put(
        &path("StagedGlobalNetworkPolicy", CALICO),
        json!({
            "metadata": { "name": "default.what-if" },
            "spec": { "tier": "default", "selector": "all()", "types": ["Egress"], "egress": [{ "action": "Deny" }] }
        }),
    );
    server.put(
        &path("StagedNetworkPolicy", CALICO),
        json!({
            "metadata": { "name": "default.staged-db", "namespace": "prod" },
            "spec": { "tier": "default", "selector": "app == 'db'", "ingress": [{ "action": "Deny" }] }
        }),
    );
    server.put(
        &path("GlobalNetworkSet", CALICO),
        json!({ "metadata": { "name": "threats", "labels": { "feed": "threats" } }, "spec": { "nets": ["192.0.2.0/24"] } }),
    );
    server.put(
        &path("NetworkSet", CALICO),
        json!({ "metadata": { "name": "partners", "namespace": "prod" }, "spec": { "nets": ["198.51.100.0/24"] } }),
    );
    server.put(
        &path("HostEndpoint", CALICO),
        json!({
            "metadata": { "name": "node-1-eth0", "labels": { "role": "worker" } },
            "spec": { "node": "node-1", "interfaceName": "eth0", "expectedIPs": ["10.0.0.1"] }
        }),
    );
}

fn lists_of(server: &FakeApiServer, p: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path == p && !r.is_watch())
        .count()
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_then_watches_bookmarks_and_relists_after_gone() {
    let server = start_server(&WATCHED_KINDS).await;
    seed(&server);
    let tiers = path("Tier", CALICO);
    server.hold_lists(&tiers);
    let mut updates = Updates::start(&server, "node-1").await;

    // Every other kind gets listed; while the tier list hangs, nothing is sent.
    wait_for("every kind but tiers to be listed", || {
        WATCHED_KINDS
            .iter()
            .map(path_of)
            .filter(|p| *p != tiers)
            .all(|p| lists_of(&server, &p) > 0)
    })
    .await;
    wait_for("the held tier list request", || {
        lists_of(&server, &tiers) > 0
    })
    .await;
    assert!(
        updates.next(Duration::from_millis(500)).await.is_none(),
        "an update was sent before every kind was listed"
    );

    // The request shapes: node field selectors for the two pod streams, bookmarks on watches.
    let requests = server.requests();
    let pod_selectors: Vec<Option<String>> = requests
        .iter()
        .filter(|r| r.path == pods() && !r.is_watch())
        .map(|r| r.query.get("fieldSelector").cloned())
        .collect();
    assert!(
        pod_selectors.contains(&Some("spec.nodeName=node-1".to_string())),
        "{pod_selectors:?}"
    );
    assert!(
        pod_selectors.contains(&Some("spec.nodeName!=node-1".to_string())),
        "{pod_selectors:?}"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path != pods())
            .all(|r| !r.query.contains_key("fieldSelector")),
        "only pods are filtered"
    );
    let namespaces = path("Namespace", "");
    assert!(
        requests
            .iter()
            .any(|r| r.path == namespaces && r.query.contains_key("continue")),
        "the 530 namespaces are listed in pages"
    );

    // Release: first the invalid object's error, then the first snapshot.
    server.release_lists(&tiers);
    let first = updates.snapshot_where("anything", |_| true).await;
    assert_eq!(updates.snapshots, 1);
    let bad = "k8s://GlobalNetworkPolicy.crd.projectcalico.org/default.bad-action";
    assert!(
        updates
            .invalid
            .iter()
            .any(|e| e.origin.file == Path::new(bad) && e.field.contains("action")),
        "{:?}",
        updates.invalid
    );
    assert_eq!(
        pod_names(&first),
        ["default/web-0", "prod/db-0"],
        "both nodes' pods, not the finished one"
    );
    let web = first.pods.iter().find(|p| p.name == "web-0").unwrap();
    let db = first.pods.iter().find(|p| p.name == "db-0").unwrap();
    assert!(kubernetes::is_local(web, "node-1"));
    assert!(!kubernetes::is_local(db, "node-1"));
    assert_eq!(web.ips, ["10.0.1.5".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(web.ports.len(), 1);
    assert_eq!(
        web.origin.file,
        Path::new("k8s://Pod/default/web-0"),
        "origins name the object"
    );
    assert_eq!(first.namespaces.len(), 530);
    assert_eq!(first.service_accounts.len(), 1);
    assert_eq!(
        policy_names(&first),
        [
            "GlobalNetworkPolicy:security.deny-ssh",
            "NetworkPolicy (networking.k8s.io/v1):default/allow-web",
            "NetworkPolicy:prod/default.allow-db",
            "StagedGlobalNetworkPolicy:default.what-if",
            "StagedNetworkPolicy:prod/default.staged-db",
        ],
        "every policy kind, not the invalid one"
    );
    assert_eq!(first.tiers.len(), 1);
    assert_eq!(first.network_sets.len(), 2);
    assert_eq!(first.host_endpoints.len(), 1);

    // Watch events: ADDED, MODIFIED, DELETED.
    server.put(
        &pods(),
        pod("default", "api-0", "node-1", "10.0.1.6", "api"),
    );
    updates
        .snapshot_where("api-0 was added", |i| has_pod(i, "default", "api-0"))
        .await;
    server.put(
        &pods(),
        pod("default", "web-0", "node-1", "10.0.1.5", "frontend"),
    );
    updates
        .snapshot_where("web-0 was relabelled", |i| {
            i.pods.iter().any(|p| {
                p.name == "web-0" && p.labels.get("app").map(String::as_str) == Some("frontend")
            })
        })
        .await;
    server.delete(&pods(), "prod", "db-0");
    let inv = updates
        .snapshot_where("db-0 was deleted", |i| !has_pod(i, "prod", "db-0"))
        .await;
    assert_eq!(pod_names(&inv), ["default/api-0", "default/web-0"]);

    // A bookmark changes nothing and breaks nothing: the next event still arrives, on the same
    // watch (no relist).
    let pod_lists = lists_of(&server, &pods());
    for kind in &WATCHED_KINDS {
        server.bookmark(&path_of(kind));
    }
    server.put(
        &path("GlobalNetworkSet", CALICO),
        json!({ "metadata": { "name": "threats-2" }, "spec": { "nets": ["203.0.113.0/24"] } }),
    );
    updates
        .snapshot_where("threats-2 was added", |i| {
            i.network_sets.iter().any(|s| s.name == "threats-2")
        })
        .await;
    assert_eq!(
        lists_of(&server, &pods()),
        pod_lists,
        "a bookmark made a relist"
    );
    // Watches ask for bookmarks and resume from the list's resourceVersion.
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == pods() && r.is_watch())
        .collect();
    assert!(watches.len() >= 2, "{watches:?}");
    for w in &watches {
        assert_eq!(
            w.query.get("allowWatchBookmarks").map(String::as_str),
            Some("true")
        );
        assert!(
            w.query
                .get("resourceVersion")
                .is_some_and(|rv| rv.parse::<u64>().is_ok()),
            "{w:?}"
        );
        assert!(w.query.contains_key("fieldSelector"), "{w:?}");
    }

    // 410 Gone: changes whose events were lost (compacted) show up after the relist.
    server.delete_silently(&pods(), "default", "web-0");
    server.put_silently(
        &pods(),
        pod("default", "late-0", "node-1", "10.0.1.7", "late"),
    );
    server.put_silently(
        &pods(),
        pod("prod", "remote-0", "node-2", "10.0.2.8", "remote"),
    );
    server.gone(&pods());
    let inv = updates
        .snapshot_where("the relisted pods", |i| {
            !has_pod(i, "default", "web-0")
                && has_pod(i, "default", "late-0")
                && has_pod(i, "prod", "remote-0")
        })
        .await;
    assert_eq!(
        pod_names(&inv),
        ["default/api-0", "default/late-0", "prod/remote-0"]
    );
    assert!(
        lists_of(&server, &pods()) >= pod_lists + 2,
        "both pod streams relisted"
    );
    // The rest of the inventory survived the relist of pods.
    assert_eq!(inv.policies.len(), first.policies.len());

    // An object that turns invalid through a watch event is reported and left out.
    let before = updates.invalid.len();
    server.put(
        &path("GlobalNetworkPolicy", CALICO),
        gnp("security.deny-ssh", "security", "Reject"),
    );
    let inv = updates
        .snapshot_where("deny-ssh is left out", |i| {
            !i.policies.iter().any(|p| p.name == "security.deny-ssh")
        })
        .await;
    let reported: Vec<&LoadError> = updates.invalid[before..].iter().collect();
    assert!(
        reported.iter().any(|e| e.origin.file
            == Path::new("k8s://GlobalNetworkPolicy.crd.projectcalico.org/security.deny-ssh")),
        "{reported:?}"
    );
    assert!(
        !reported.iter().any(|e| e.origin.file == Path::new(bad)),
        "an error already reported is not reported again: {reported:?}"
    );
    assert!(inv.policies.iter().any(|p| p.name == "default.allow-db"));

    // A Tier deleted: its policy is left out with an error naming it.
    server.delete(&tiers, "", "security");
    server.put(
        &path("GlobalNetworkPolicy", CALICO),
        gnp("security.deny-ssh", "security", "Deny"),
    );
    updates
        .snapshot_where("the tier is gone", |i| i.tiers.is_empty())
        .await;
    assert!(
        updates.invalid.iter().any(|e| e.field == "spec.tier"
            && e.origin.file
                == Path::new("k8s://GlobalNetworkPolicy.crd.projectcalico.org/security.deny-ssh")),
        "{:?}",
        updates.invalid
    );
}

/// Without the Calico CRDs (404 on their group) the kinds are empty and the snapshot still
/// comes; a CRD installed later is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_calico_crds_are_empty_until_installed() {
    let server = start_server(&WATCHED_KINDS).await;
    for kind in WATCHED_KINDS.iter().filter(|k| k.group == CALICO) {
        server.set_missing(&path_of(kind), true);
    }
    server.put(&path("Namespace", ""), namespace("default"));
    server.put(
        &pods(),
        pod("default", "web-0", "node-1", "10.0.1.5", "web"),
    );
    let mut updates = Updates::start(&server, "node-1").await;
    let first = updates.snapshot_where("anything", |_| true).await;
    assert_eq!(pod_names(&first), ["default/web-0"]);
    assert!(first.policies.is_empty() && first.tiers.is_empty());
    assert!(updates.invalid.is_empty(), "{:?}", updates.invalid);

    let tiers = path("Tier", CALICO);
    server.set_missing(&tiers, false);
    server.put(
        &tiers,
        json!({ "metadata": { "name": "security" }, "spec": { "order": 100 } }),
    );
    updates
        .snapshot_where("the tier CRD was installed", |i| i.tiers.len() == 1)
        .await;
}

/// The ClusterRole in deploy/ grants get/list/watch on exactly the watched kinds.
#[test]
fn cluster_role_grants_exactly_the_watched_kinds() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("rbac.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut granted: Vec<(String, String)> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"].as_str() != Some("ClusterRole") {
            continue;
        }
        for rule in v["rules"].as_sequence().unwrap() {
            let mut verbs: Vec<&str> = rule["verbs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            verbs.sort();
            assert_eq!(verbs, ["get", "list", "watch"], "{rule:?}");
            for group in rule["apiGroups"].as_sequence().unwrap() {
                for resource in rule["resources"].as_sequence().unwrap() {
                    granted.push((
                        group.as_str().unwrap().to_string(),
                        resource.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    granted.sort();
    let mut watched: Vec<(String, String)> = WATCHED_KINDS
        .iter()
        .map(|k| (k.group.to_string(), k.plural.to_string()))
        .collect();
    watched.sort();
    assert_eq!(granted, watched);
}
