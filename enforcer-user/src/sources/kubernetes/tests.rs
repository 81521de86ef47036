//! Snapshot building from reflector stores fed with `Writer::apply_watcher_event` (no API
//! server); the list/watch protocol itself is tested in `tests/kubernetes_source.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, sync::Arc};

use kube::{
    api::DynamicObject,
    runtime::{reflector::store::Writer, watcher::Event},
};
use serde_json::{Value, json};

use super::*;

fn kind(name: &str, group: &str) -> WatchedKind {
    *WATCHED_KINDS
        .iter()
        .find(|k| k.kind == name && k.group == group)
        .unwrap()
}

/// An object as a list item arrives: no apiVersion/kind for built-in kinds.
fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

/// A store holding `objects` after an initial list (Init, InitApply…, InitDone).
fn listed(k: WatchedKind, objects: Vec<DynamicObject>) -> Vec<Arc<DynamicObject>> {
    let mut w = Writer::<DynamicObject>::new(k.api_resource());
    w.apply_watcher_event(&Event::Init);
    for o in objects {
        w.apply_watcher_event(&Event::InitApply(o));
    }
    w.apply_watcher_event(&Event::InitDone);
    w.as_reader().state()
}

fn pod(name: &str, node: &str, rv: &str) -> DynamicObject {
    object(json!({
        "metadata": {
            "name": name, "namespace": "default", "resourceVersion": rv, "uid": format!("u-{name}"),
            "labels": { "app": name },
            "annotations": { "a": "b" },
            "managedFields": [{ "manager": "x" }]
        },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "c", "image": "i", "ports": [{ "name": "http", "containerPort": 80 }] }],
            "volumes": [{ "name": "v" }]
        },
        "status": { "phase": "Running", "podIP": "10.0.0.1", "conditions": [] }
    }))
}

fn gnp(name: &str, tier: &str, action: &str, rv: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "GlobalNetworkPolicy",
        "metadata": { "name": name, "resourceVersion": rv, "generation": 2 },
        "spec": { "tier": tier, "selector": "all()", "ingress": [{ "action": action }] }
    }))
}

#[test]
fn pod_pruning_keeps_what_the_loader_reads() {
    let mut p = pod("web", "n1", "1");
    prune_pod(&mut p);
    assert!(p.metadata.managed_fields.is_none());
    assert!(p.metadata.annotations.is_none());
    assert_eq!(
        p.data,
        json!({
            "spec": {
                "nodeName": "n1",
                "containers": [{ "name": "c", "ports": [{ "name": "http", "containerPort": 80 }] }]
            },
            "status": { "phase": "Running", "podIP": "10.0.0.1" }
        })
    );
    let k = kind("Pod", "");
    let inv = convert(&k, &p).unwrap();
    assert_eq!(inv.pods.len(), 1);
    assert_eq!(inv.pods[0].ports.len(), 1);
    assert_eq!(inv.pods[0].node_name.as_deref(), Some("n1"));
    assert_eq!(inv.pods[0].origin.file, Path::new("k8s://Pod/default/web"));
}

#[test]
fn object_pruning_drops_status_and_last_applied() {
    let mut np = object(json!({
        "metadata": {
            "name": "np", "namespace": "default",
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me" },
            "managedFields": [{}]
        },
        "spec": { "podSelector": {} },
        "status": { "conditions": [] }
    }));
    prune_object(&mut np);
    assert!(np.data.get("status").is_none());
    let ann = np.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann.keys().collect::<Vec<_>>(), ["keep"]);
    let inv = convert(&kind("NetworkPolicy", "networking.k8s.io"), &np).unwrap();
    assert_eq!(inv.policies.len(), 1);
}

#[test]
fn origins_name_kind_group_namespace_and_name() {
    assert_eq!(
        kind("NetworkPolicy", CALICO_GROUP)
            .origin(Some("prod"), "x")
            .file,
        Path::new("k8s://NetworkPolicy.crd.projectcalico.org/prod/x")
    );
    assert_eq!(
        kind("NetworkPolicy", "networking.k8s.io")
            .origin(Some("prod"), "x")
            .file,
        Path::new("k8s://NetworkPolicy.networking.k8s.io/prod/x")
    );
    assert_eq!(
        kind("Namespace", "").origin(None, "prod").file,
        Path::new("k8s://Namespace/prod")
    );
    assert_eq!(
        kind("Tier", CALICO_GROUP).resource(),
        "tiers.crd.projectcalico.org"
    );
}

#[test]
fn snapshot_skips_finished_pods_dedups_pods_and_ignores_missing_kinds() {
    let pk = kind("Pod", "");
    let mut finished = pod("done", "n1", "3");
    finished.data["status"]["phase"] = json!("Failed");
    let local = listed(pk, vec![pod("web", "n1", "1"), finished]);
    // The same pod also still in the remote stream: counted once.
    let remote = listed(pk, vec![pod("web", "n1", "1"), pod("db", "n2", "2")]);
    let tiers = listed(kind("Tier", CALICO_GROUP), vec![]);
    let gnps = listed(
        kind("GlobalNetworkPolicy", CALICO_GROUP),
        vec![gnp("p", "default", "Allow", "5")],
    );
    let mut b = SnapshotBuilder::default();
    let (inv, errors) = b.build(&[
        (pk, Phase::Synced, local),
        (pk, Phase::Synced, remote),
        (kind("Tier", CALICO_GROUP), Phase::Missing, tiers),
        (
            kind("GlobalNetworkPolicy", CALICO_GROUP),
            Phase::Missing,
            gnps,
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<&str> = inv.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web", "db"]);
    assert!(inv.policies.is_empty(), "a Missing kind is empty");
    assert!(is_local(&inv.pods[0], "n1") && !is_local(&inv.pods[1], "n1"));
}

#[test]
fn invalid_objects_are_left_out_and_reported_once() {
    let gk = kind("GlobalNetworkPolicy", CALICO_GROUP);
    let tk = kind("Tier", CALICO_GROUP);
    let mut b = SnapshotBuilder::default();
    let parts = |gnps: Vec<DynamicObject>| {
        vec![
            (tk, Phase::Synced, listed(tk, vec![])),
            (gk, Phase::Synced, listed(gk, gnps)),
        ]
    };
    let (inv, errors) = b.build(&parts(vec![
        gnp("good", "default", "Allow", "1"),
        gnp("bad", "default", "allow", "2"),
        gnp("orphan.x", "orphan", "Allow", "3"),
    ]));
    let names: Vec<&str> = inv.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    let files: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {}", e.origin.file.display(), e.field))
        .collect();
    assert_eq!(
        files,
        [
            "k8s://GlobalNetworkPolicy.crd.projectcalico.org/bad spec.ingress[0].action",
            "k8s://GlobalNetworkPolicy.crd.projectcalico.org/orphan.x spec.tier",
        ]
    );
    assert!(
        errors[0].to_string().starts_with(
            "k8s://GlobalNetworkPolicy.crd.projectcalico.org/bad: spec.ingress[0].action: "
        ),
        "{}",
        errors[0]
    );

    // The same state again: nothing new to report, same inventory.
    let (inv2, errors2) = b.build(&parts(vec![
        gnp("good", "default", "Allow", "1"),
        gnp("bad", "default", "allow", "2"),
        gnp("orphan.x", "orphan", "Allow", "3"),
    ]));
    assert!(errors2.is_empty(), "{errors2:?}");
    assert_eq!(inv2.policies.len(), 1);

    // Fixed, then broken again: reported again.
    let (inv3, errors3) = b.build(&parts(vec![gnp("bad", "default", "Allow", "4")]));
    assert!(errors3.is_empty());
    assert_eq!(inv3.policies.len(), 1);
    let (_, errors4) = b.build(&parts(vec![gnp("bad", "default", "allow", "5")]));
    assert_eq!(errors4.len(), 1);
}

#[test]
fn conversions_are_cached_by_resource_version() {
    let gk = kind("GlobalNetworkPolicy", CALICO_GROUP);
    let mut b = SnapshotBuilder::default();
    b.build(&[(
        gk,
        Phase::Synced,
        listed(gk, vec![gnp("p", "default", "Allow", "1")]),
    )]);
    // Poison the cache entry: an unchanged resourceVersion reuses it.
    let key = (gk.resource(), None, "p".to_string());
    b.cache.get_mut(&key).unwrap().result = Ok(Inventory::default());
    let (inv, _) = b.build(&[(
        gk,
        Phase::Synced,
        listed(gk, vec![gnp("p", "default", "Allow", "1")]),
    )]);
    assert!(inv.policies.is_empty(), "cached");
    let (inv, _) = b.build(&[(
        gk,
        Phase::Synced,
        listed(gk, vec![gnp("p", "default", "Allow", "2")]),
    )]);
    assert_eq!(
        inv.policies.len(),
        1,
        "a new resourceVersion is converted again"
    );
    // Deleted objects leave the cache.
    b.build(&[(gk, Phase::Synced, listed(gk, vec![]))]);
    assert!(b.cache.is_empty());
}

#[test]
fn node_names_are_checked() {
    assert!(check_node_name(Some("node-1.example")).is_ok());
    assert!(check_node_name(None).is_ok());
    for bad in ["", "Node", "a,b", "a=b", "n!=x"] {
        assert!(check_node_name(Some(bad)).is_err(), "{bad:?}");
    }
}
