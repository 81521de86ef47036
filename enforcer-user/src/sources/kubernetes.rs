//! The Kubernetes source: kube-rs watchers and reflectors over the API server, feeding the agent
//! whole-inventory snapshots (see [`super::feed`]).
//!
//! Shape (kube-rs `examples/pod_reflector.rs`, not the `Controller` machinery): one
//! `watcher → default_backoff → modify (prune) → reflect(writer)` stream per watched kind, all
//! polled by one task. Nothing is sent until every kind has finished its initial list
//! (`InitDone`, or a 404 for a Calico CRD that is not installed); then the task sends a
//! [`Update::Snapshot`] of everything at once, and after that a fresh snapshot at most
//! [`KubernetesOptions::debounce`] after any store changed. The agent is level-triggered: it
//! compiles the whole snapshot.
//!
//! Watched kinds ([`WATCHED_KINDS`]; the ClusterRole in `deploy/rbac.yaml` grants exactly
//! these):
//! - `v1` Pods, Namespaces, ServiceAccounts; `networking.k8s.io/v1` NetworkPolicies;
//! - the Calico resources as the Kubernetes datastore stores them, `crd.projectcalico.org/v1`:
//!   GlobalNetworkPolicy, NetworkPolicy, StagedNetworkPolicy, StagedGlobalNetworkPolicy,
//!   GlobalNetworkSet, NetworkSet, Tier, HostEndpoint. A 404 on one of them (the CRD is not
//!   installed) makes that kind empty, logged once; the watcher keeps retrying with backoff and
//!   picks the kind up if the CRD appears later.
//!
//! Decisions:
//! - **Pods: all of them, split by node.** Policy evaluation needs every pod's labels and IPs
//!   (a rule `selector: app == 'db'` matches pods on other nodes by their IPs), as Calico's
//!   felix needs remote workload endpoints from its datastore. With a node name, Pods are
//!   watched as two streams with complementary field selectors, `spec.nodeName=<node>` (the
//!   local pods, the ones the agent attaches to) and `spec.nodeName!=<node>` (the peers): the
//!   same objects a single all-pods watch would fetch, no more, and which pods are local is
//!   decided by the API server. In the snapshot a pod is local when `Pod::node_name` is the
//!   node name ([`is_local`]). Without a node name, one stream watches all pods.
//! - **Finished pods are left out** (phase `Succeeded` or `Failed`): their IPs can already
//!   belong to new pods. Calico does the same (`libcalico-go` `converter.IsFinished`).
//! - **Objects go through the strict loader**: each object becomes one document of
//!   `k8s://<Kind>[.<group>]/[<namespace>/]<name>` (for example
//!   `k8s://GlobalNetworkPolicy.crd.projectcalico.org/allow-dns`,
//!   `k8s://Pod/default/web-0`) and is converted by [`super::load_value`], then the whole
//!   inventory is checked by [`super::validate`]. Server-maintained fields the loader does not
//!   know (`status` of policies and Calico objects, `metadata.managedFields`) are dropped
//!   first.
//! - **An object that does not validate is left out and the rest applies**: the errors are sent
//!   as [`Update::Invalid`] (once per distinct error, not on every snapshot) followed by a
//!   snapshot without the object. This is felix's behaviour (its calculation graph's
//!   `ValidationFilter` turns an update that fails validation into a deletion); with
//!   Calico's API server such an object would have been rejected at write time. An object
//!   that fails the whole-inventory checks (a policy in a tier that does not exist) is left
//!   out the same way.
//! - Lists use the watcher's default `MostRecent` semantic (a consistent read, served from the
//!   watch cache by API servers with `ConsistentListFromCache`, 1.31+); watches ask for
//!   bookmarks; a `410 Gone` makes the watcher relist, and the store is swapped for the new
//!   list at `InitDone`, so a snapshot never mixes the old and the new list.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use futures::{
    StreamExt,
    stream::{self, BoxStream},
};
use kube::{
    Api, Client, Config,
    api::{ApiResource, DynamicObject},
    config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::{
        WatchStreamExt,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use tokio::{task::JoinHandle, time::Instant};

use super::{
    LoadError, LoadErrors,
    feed::{self, Update, UpdateReceiver, UpdateSender},
    load_value, validate,
};
use crate::model::{Inventory, Origin, Pod};

/// One kind the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name (what RBAC rules and URLs use).
    pub plural: &'static str,
    /// A 404 means "not installed" and the kind is empty (the Calico CRDs).
    pub optional: bool,
}

impl WatchedKind {
    const fn core(kind: &'static str, plural: &'static str) -> WatchedKind {
        WatchedKind {
            group: "",
            version: "v1",
            kind,
            plural,
            optional: false,
        }
    }

    const fn calico(kind: &'static str, plural: &'static str) -> WatchedKind {
        WatchedKind {
            group: CALICO_GROUP,
            version: "v1",
            kind,
            plural,
            optional: true,
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as kubectl and RBAC name resources.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// The origin of one object: `k8s://<Kind>[.<group>]/[<namespace>/]<name>`.
    pub fn origin(&self, namespace: Option<&str>, name: &str) -> Origin {
        let kind = if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        let file = match namespace {
            Some(ns) => format!("k8s://{kind}/{ns}/{name}"),
            None => format!("k8s://{kind}/{name}"),
        };
        // Document 0: errors display as `k8s://…: field: message`.
        Origin {
            file: PathBuf::from(file),
            document: 0,
        }
    }
}

/// The Calico CRD group (the Kubernetes datastore's storage of `projectcalico.org/v3`).
pub const CALICO_GROUP: &str = "crd.projectcalico.org";

/// Every kind the source watches, in the order snapshots list them.
pub const WATCHED_KINDS: [WatchedKind; 12] = [
    WatchedKind::core("Namespace", "namespaces"),
    WatchedKind::core("ServiceAccount", "serviceaccounts"),
    WatchedKind::core("Pod", "pods"),
    WatchedKind {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        optional: false,
    },
    WatchedKind::calico("Tier", "tiers"),
    WatchedKind::calico("GlobalNetworkPolicy", "globalnetworkpolicies"),
    WatchedKind::calico("NetworkPolicy", "networkpolicies"),
    WatchedKind::calico("StagedGlobalNetworkPolicy", "stagedglobalnetworkpolicies"),
    WatchedKind::calico("StagedNetworkPolicy", "stagednetworkpolicies"),
    WatchedKind::calico("GlobalNetworkSet", "globalnetworksets"),
    WatchedKind::calico("NetworkSet", "networksets"),
    WatchedKind::calico("HostEndpoint", "hostendpoints"),
];

/// How to reach the API server and what to watch.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// This node's name (`NODE_NAME` from the downward API): pods on it are the local ones.
    /// `None` watches all pods as one stream (no pod is known to be local).
    pub node_name: Option<String>,
    /// A kubeconfig file; otherwise the in-cluster service account, otherwise the default
    /// kubeconfig (`KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
    /// How long changes are collected before a new snapshot is sent.
    pub debounce: Duration,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        KubernetesOptions {
            node_name: None,
            kubeconfig: None,
            context: None,
            debounce: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("cannot use kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "no Kubernetes API configuration: not running in a pod ({in_cluster}) and no usable kubeconfig ({kubeconfig}); pass a kubeconfig or run inside the cluster"
    )]
    NoConfig {
        in_cluster: InClusterError,
        kubeconfig: KubeconfigError,
    },
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "invalid node name {0:?}: expected a Kubernetes node name (lower-case alphanumerics, '-' and '.'); check that NODE_NAME comes from the downward API field spec.nodeName"
    )]
    NodeName(String),
}

/// Whether `pod` runs on `node` (the local pods are those the agent attaches to).
pub fn is_local(pod: &Pod, node: &str) -> bool {
    pod.node_name.as_deref() == Some(node)
}

/// Connects (see [`KubernetesOptions::kubeconfig`] for the order) and starts the source task.
/// The task runs until the receiver is dropped; errors talking to the API server are logged
/// and retried with backoff, never returned.
pub async fn watch(
    opts: KubernetesOptions,
) -> Result<(JoinHandle<()>, UpdateReceiver), KubernetesError> {
    check_node_name(opts.node_name.as_deref())?;
    let config = client_config(&opts).await?;
    let client = Client::try_from(config).map_err(KubernetesError::Client)?;
    watch_with_client(client, &opts)
}

/// [`watch`] with a client the caller built.
pub fn watch_with_client(
    client: Client,
    opts: &KubernetesOptions,
) -> Result<(JoinHandle<()>, UpdateReceiver), KubernetesError> {
    check_node_name(opts.node_name.as_deref())?;
    let (tx, rx) = feed::channel();
    let (watches, streams) = start_watches(&client, opts.node_name.as_deref());
    let debounce = opts.debounce;
    let handle = tokio::spawn(run(watches, streams, tx, debounce));
    Ok((handle, rx))
}

fn check_node_name(node: Option<&str>) -> Result<(), KubernetesError> {
    match node {
        None => Ok(()),
        Some(n)
            if !n.is_empty()
                && n.len() <= 253
                && n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                }) =>
        {
            Ok(())
        }
        Some(n) => Err(KubernetesError::NodeName(n.to_string())),
    }
}

async fn client_config(opts: &KubernetesOptions) -> Result<Config, KubernetesError> {
    let options = KubeConfigOptions {
        context: opts.context.clone(),
        ..KubeConfigOptions::default()
    };
    if let Some(path) = &opts.kubeconfig {
        let err = |source| KubernetesError::Kubeconfig {
            path: path.clone(),
            source,
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(err)?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(err);
    }
    match Config::incluster() {
        Ok(config) => Ok(config),
        Err(in_cluster) => Config::from_kubeconfig(&options)
            .await
            .map_err(|kubeconfig| KubernetesError::NoConfig {
                in_cluster,
                kubeconfig,
            }),
    }
}

/// Where a watched stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The initial list (or a relist before the first `InitDone`) is not complete.
    Listing,
    /// The store holds a complete list, kept current by the watch.
    Synced,
    /// The resource does not exist on the server (a Calico CRD not installed): empty.
    Missing,
}

/// One watched stream and its store.
struct Watch {
    kind: WatchedKind,
    /// For logs: `pods`, `pods on node-1`, `tiers.crd.projectcalico.org`, …
    what: String,
    store: Store<DynamicObject>,
    phase: Phase,
    missing_logged: bool,
}

type EventStream = BoxStream<'static, (usize, watcher::Result<watcher::Event<DynamicObject>>)>;

fn start_watches(client: &Client, node: Option<&str>) -> (Vec<Watch>, EventStream) {
    let mut watches = Vec::new();
    let mut streams: Vec<EventStream> = Vec::new();
    let mut add = |kind: WatchedKind, what: String, config: watcher::Config| {
        let ar = kind.api_resource();
        let writer = Writer::<DynamicObject>::new(ar.clone());
        let store = writer.as_reader();
        let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
        let index = watches.len();
        let prune: fn(&mut DynamicObject) = if kind.kind == "Pod" && kind.group.is_empty() {
            prune_pod
        } else {
            prune_object
        };
        let s = watcher(api, config)
            .default_backoff()
            .modify(prune)
            .reflect(writer)
            .map(move |event| (index, event))
            .boxed();
        streams.push(s);
        watches.push(Watch {
            kind,
            what,
            store,
            phase: Phase::Listing,
            missing_logged: false,
        });
    };
    for kind in WATCHED_KINDS {
        let base = watcher::Config::default();
        if kind.kind == "Pod"
            && kind.group.is_empty()
            && let Some(node) = node
        {
            add(
                kind,
                format!("pods on {node}"),
                base.clone().fields(&format!("spec.nodeName={node}")),
            );
            add(
                kind,
                format!("pods on other nodes than {node}"),
                base.fields(&format!("spec.nodeName!={node}")),
            );
        } else {
            add(kind, kind.resource(), base);
        }
    }
    (watches, stream::select_all(streams).boxed())
}

/// Drops what no stage reads and the API server maintains: managed fields, kubectl's
/// last-applied copy, and `status` (policies and Calico objects have none the loader reads,
/// and their strict parsing would reject one).
fn prune_object(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    if let Some(data) = obj.data.as_object_mut() {
        data.remove("status");
    }
}

/// Keeps only what the loader reads from a Pod (`sources::raw::PodObject`) and its phase:
/// Pods are the largest objects and every pod of the cluster is held.
fn prune_pod(obj: &mut DynamicObject) {
    use serde_json::{Map, Value};
    obj.metadata.managed_fields = None;
    obj.metadata.annotations = None;
    obj.metadata.owner_references = None;
    let keep = |from: Option<&Value>, fields: &[&str]| -> Value {
        let mut out = Map::new();
        if let Some(Value::Object(m)) = from {
            for f in fields {
                if let Some(v) = m.get(*f) {
                    out.insert((*f).to_string(), v.clone());
                }
            }
        }
        Value::Object(out)
    };
    let containers = |from: Option<&Value>| -> Value {
        match from {
            Some(Value::Array(cs)) => Value::Array(
                cs.iter()
                    .map(|c| keep(Some(c), &["name", "ports"]))
                    .collect(),
            ),
            _ => Value::Array(Vec::new()),
        }
    };
    let spec = obj.data.get("spec");
    let mut new_spec = keep(
        spec,
        &[
            "serviceAccountName",
            "serviceAccount",
            "hostNetwork",
            "nodeName",
        ],
    );
    if let Value::Object(m) = &mut new_spec {
        m.insert(
            "containers".to_string(),
            containers(spec.and_then(|s| s.get("containers"))),
        );
    }
    let status = keep(obj.data.get("status"), &["phase", "podIP", "podIPs"]);
    let mut data = Map::new();
    data.insert("spec".to_string(), new_spec);
    data.insert("status".to_string(), status);
    obj.data = Value::Object(data);
}

/// The watch task: apply events, send snapshots.
async fn run(
    mut watches: Vec<Watch>,
    mut events: EventStream,
    tx: UpdateSender,
    debounce: Duration,
) {
    let mut builder = SnapshotBuilder::default();
    let mut synced = false;
    let mut deadline: Option<Instant> = None;
    loop {
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = events.next() => {
                let Some((index, event)) = item else {
                    tracing::error!("every Kubernetes watch stream ended; the source stops");
                    return;
                };
                let Some(watch) = watches.get_mut(index) else { continue };
                let changed = handle_event(watch, event);
                if !synced {
                    if watches.iter().all(|w| w.phase != Phase::Listing) {
                        synced = true;
                        let summary = watches
                            .iter()
                            .map(|w| format!("{} {}", w.store.len(), w.what))
                            .collect::<Vec<_>>()
                            .join(", ");
                        tracing::info!(%summary, "Kubernetes source: initial lists complete");
                        if publish(&watches, &mut builder, &tx).await.is_err() {
                            return;
                        }
                    }
                } else if changed && deadline.is_none() {
                    deadline = Some(Instant::now() + debounce);
                }
            }
            () = timer => {
                deadline = None;
                if publish(&watches, &mut builder, &tx).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// Applies one watcher event to the stream's phase; true if the store's contents (or whether
/// they count) changed. The reflector has already updated the store.
fn handle_event(w: &mut Watch, event: watcher::Result<watcher::Event<DynamicObject>>) -> bool {
    match event {
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => false,
        Ok(watcher::Event::InitDone) => {
            if w.phase == Phase::Missing {
                tracing::info!(resource = %w.what, "resource now exists; watching it");
                w.missing_logged = false;
            }
            w.phase = Phase::Synced;
            true
        }
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => true,
        Err(e) => {
            let status = match &e {
                watcher::Error::InitialListFailed(kube::Error::Api(s))
                | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                | watcher::Error::WatchFailed(kube::Error::Api(s))
                | watcher::Error::WatchError(s) => Some(s.code),
                _ => None,
            };
            match status {
                Some(404) if w.kind.optional => {
                    if !w.missing_logged {
                        tracing::info!(
                            resource = %w.what,
                            "resource not found (the Calico CRDs are not installed?): treating it as empty until it appears"
                        );
                        w.missing_logged = true;
                    }
                    let changed = w.phase == Phase::Synced;
                    w.phase = Phase::Missing;
                    changed
                }
                Some(410) => {
                    tracing::info!(resource = %w.what, "watch expired (410 Gone): relisting");
                    false
                }
                Some(403) => {
                    tracing::warn!(
                        resource = %w.what,
                        error = %e,
                        "forbidden: the agent's ClusterRole must grant get, list and watch on {} (see deploy/rbac.yaml)",
                        w.kind.resource()
                    );
                    false
                }
                _ => {
                    tracing::warn!(resource = %w.what, error = %e, "Kubernetes watch failed; retrying");
                    false
                }
            }
        }
    }
}

/// Builds and sends one snapshot, preceded by the errors not reported before.
async fn publish(
    watches: &[Watch],
    builder: &mut SnapshotBuilder,
    tx: &UpdateSender,
) -> Result<(), ()> {
    let started = std::time::Instant::now();
    let parts: Vec<(WatchedKind, Phase, Vec<Arc<DynamicObject>>)> = watches
        .iter()
        .map(|w| (w.kind, w.phase, w.store.state()))
        .collect();
    let (inventory, new_errors) = builder.build(&parts);
    tracing::debug!(
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        pods = inventory.pods.len(),
        policies = inventory.policies.len(),
        "Kubernetes snapshot"
    );
    if !new_errors.is_empty() {
        for e in &new_errors {
            tracing::warn!(error = %e, "Kubernetes object rejected: left out, the rest applies");
        }
        tx.send(Update::Invalid(LoadErrors(new_errors)))
            .await
            .map_err(|_| ())?;
    }
    tx.send(Update::Snapshot(Arc::new(inventory)))
        .await
        .map_err(|_| ())
}

/// One object's conversion, kept while its `resourceVersion` does not change.
struct Cached {
    resource_version: Option<String>,
    uid: Option<String>,
    result: Result<Inventory, LoadErrors>,
}

/// Converts store contents into inventories, caching per object, and remembers which errors
/// were already reported.
#[derive(Default)]
pub(crate) struct SnapshotBuilder {
    cache: HashMap<(String, Option<String>, String), Cached>,
    reported: HashSet<String>,
}

impl SnapshotBuilder {
    /// The inventory of every `Synced` part (a `Missing` part is empty; a `Listing` one, which
    /// only happens when the caller builds early, too), and the errors not reported before.
    pub(crate) fn build(
        &mut self,
        parts: &[(WatchedKind, Phase, Vec<Arc<DynamicObject>>)],
    ) -> (Inventory, Vec<LoadError>) {
        let mut inv = Inventory::default();
        let mut errors: Vec<LoadError> = Vec::new();
        let mut cache = HashMap::with_capacity(self.cache.len());
        // Pods seen, so one that briefly sits in both pod streams (while the local stream
        // already has its binding and the remote one has not yet seen it leave) counts once.
        let mut seen: HashSet<(String, Option<String>, String)> = HashSet::new();
        for (kind, phase, objects) in parts {
            if *phase != Phase::Synced {
                continue;
            }
            let mut objects: Vec<&Arc<DynamicObject>> = objects.iter().collect();
            objects.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            for obj in objects {
                let name = obj.metadata.name.clone().unwrap_or_default();
                let key = (kind.resource(), obj.metadata.namespace.clone(), name);
                if !seen.insert(key.clone()) {
                    continue;
                }
                if is_finished_pod(kind, obj) {
                    continue;
                }
                let entry = match self.cache.remove(&key) {
                    Some(c)
                        if c.resource_version.is_some()
                            && c.resource_version == obj.metadata.resource_version
                            && c.uid == obj.metadata.uid =>
                    {
                        c
                    }
                    _ => Cached {
                        resource_version: obj.metadata.resource_version.clone(),
                        uid: obj.metadata.uid.clone(),
                        result: convert(kind, obj),
                    },
                };
                match &entry.result {
                    Ok(part) => extend(&mut inv, part),
                    Err(e) => errors.extend(e.0.iter().cloned()),
                }
                cache.insert(key, entry);
            }
        }
        self.cache = cache;

        let invalid = validate(&inv);
        if !invalid.is_empty() {
            let bad: BTreeSet<Origin> = invalid.iter().map(|e| e.origin.clone()).collect();
            remove_origins(&mut inv, &bad);
            errors.extend(invalid);
        }

        let current: HashSet<String> = errors.iter().map(ToString::to_string).collect();
        let new_errors = errors
            .into_iter()
            .filter(|e| !self.reported.contains(&e.to_string()))
            .collect();
        self.reported = current;
        (inv, new_errors)
    }
}

/// Calico's `IsFinished`: a pod whose phase is `Succeeded` or `Failed` has released its IPs.
fn is_finished_pod(kind: &WatchedKind, obj: &DynamicObject) -> bool {
    kind.kind == "Pod"
        && kind.group.is_empty()
        && matches!(
            obj.data.pointer("/status/phase").and_then(|p| p.as_str()),
            Some("Succeeded" | "Failed")
        )
}

/// One API object through the strict loader, as document `k8s://…`.
fn convert(kind: &WatchedKind, obj: &DynamicObject) -> Result<Inventory, LoadErrors> {
    let origin = kind.origin(
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    );
    let value = to_value(kind, obj).map_err(|message| {
        LoadErrors(vec![LoadError {
            origin: origin.clone(),
            field: "-".to_string(),
            message,
        }])
    })?;
    load_value(value, &origin)
}

/// The object as the loader reads a document: `apiVersion` and `kind` from the watched kind
/// (list items from the API server carry neither), `metadata`, then the other fields.
fn to_value(kind: &WatchedKind, obj: &DynamicObject) -> Result<serde_yaml::Value, String> {
    use serde_json::{Map, Value};
    let mut map = Map::new();
    map.insert("apiVersion".to_string(), Value::String(kind.api_version()));
    map.insert("kind".to_string(), Value::String(kind.kind.to_string()));
    let metadata = serde_json::to_value(&obj.metadata).map_err(|e| format!("metadata: {e}"))?;
    map.insert("metadata".to_string(), metadata);
    match &obj.data {
        Value::Object(data) => {
            for (k, v) in data {
                if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Null => {}
        other => return Err(format!("expected an object, found {other}")),
    }
    serde_yaml::to_value(Value::Object(map)).map_err(|e| e.to_string())
}

fn extend(into: &mut Inventory, from: &Inventory) {
    // Destructured so a new Inventory field is a compile error here, not a silent loss.
    let Inventory {
        namespaces,
        service_accounts,
        pods,
        network_sets,
        host_endpoints,
        tiers,
        policies,
        skipped,
    } = from;
    into.namespaces.extend(namespaces.iter().cloned());
    into.service_accounts
        .extend(service_accounts.iter().cloned());
    into.pods.extend(pods.iter().cloned());
    into.network_sets.extend(network_sets.iter().cloned());
    into.host_endpoints.extend(host_endpoints.iter().cloned());
    into.tiers.extend(tiers.iter().cloned());
    into.policies.extend(policies.iter().cloned());
    into.skipped.extend(skipped.iter().cloned());
}

fn remove_origins(inv: &mut Inventory, bad: &BTreeSet<Origin>) {
    let Inventory {
        namespaces,
        service_accounts,
        pods,
        network_sets,
        host_endpoints,
        tiers,
        policies,
        skipped,
    } = inv;
    namespaces.retain(|x| !bad.contains(&x.origin));
    service_accounts.retain(|x| !bad.contains(&x.origin));
    pods.retain(|x| !bad.contains(&x.origin));
    network_sets.retain(|x| !bad.contains(&x.origin));
    host_endpoints.retain(|x| !bad.contains(&x.origin));
    tiers.retain(|x| x.origin.as_ref().is_none_or(|o| !bad.contains(o)));
    policies.retain(|x| !bad.contains(&x.origin));
    skipped.retain(|x| !bad.contains(&x.origin));
}

#[cfg(test)]
mod tests;
