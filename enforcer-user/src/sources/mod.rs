//! YAML sources: files and directories of multi-document YAML into the model.
//!
//! [`load_paths`] reads files (or directories, walked recursively for `*.yaml`, `*.yml` and
//! `*.json` in sorted order), splits each into `---`-separated documents and converts every
//! object into [`Inventory`]; then [`validate`] runs the checks that need the whole inventory
//! (duplicate objects, policies in tiers that do not exist). Every error is collected, not
//! just the first; each names the file, the 1-based document, the field path and what would
//! be valid.
//!
//! Kinds:
//! - `v1` `List` (recursively; typed lists such as `NetworkPolicyList` too: items without
//!   `apiVersion`/`kind` take them from the list), `Namespace`, `Pod`, `ServiceAccount`:
//!   lenient, reading only the fields Enforcer uses (as `kubectl get -o yaml` prints them).
//! - `networking.k8s.io/v1` `NetworkPolicy`: strict, converted into Calico's model.
//! - `projectcalico.org/v3` and `crd.projectcalico.org/v1` `NetworkPolicy`,
//!   `GlobalNetworkPolicy`, `StagedNetworkPolicy`, `StagedGlobalNetworkPolicy`, `NetworkSet`,
//!   `GlobalNetworkSet`, `Tier`, `HostEndpoint`: strict (unknown fields are errors listing
//!   the valid ones), validated as Calico's validator does.
//! - Anything else is listed in [`Inventory::skipped`].
//!
//! Directory walks skip names starting with `.`, so a Kubernetes ConfigMap volume (whose
//! files are symlinks into a hidden `..data` directory) is read once.
//!
//! Decisions (Calico's `libcalico-go/lib/validator/v3/validator.go` and
//! `libcalico-go/lib/backend/k8s/conversion/conversion.go` are the references):
//! - Documents are numbered as a YAML parser numbers them: every `---` starts one, text before
//!   the first `---` counts only if it has content, comment-only documents count but are
//!   skipped. Objects inside a `List` keep the List's document number; their field paths
//!   start with `items[i]`.
//! - Strict kinds report every unknown field of an object (each is removed and parsing
//!   retried); any other shape error (wrong type, missing `action`) stops that object.
//! - Ports are 1-65535 everywhere (Calico's `validatePort` rejects 0 too). Rule `ports` and
//!   `notPorts` need protocol TCP, UDP or SCTP: Calico's `SupportsPorts` excludes UDPLite.
//! - Protocol names are accepted in any case (`Protocol::parse`); numbers are 1-255.
//!   Actions are exactly `Allow`, `Deny`, `Pass`, `Log` (Calico's `actionRegex`), `types`
//!   exactly `Ingress`/`Egress`; a wrong case gets a hint.
//! - `icmp` and `notICMP` both need protocol ICMP or ICMPv6 (Calico checks only `icmp`, but
//!   its dataplane cannot render `notICMP` without a protocol); type 0-254, code 0-255, a
//!   code needs a type; ICMP needs `ipVersion` 4 and ICMPv6 6 when one is given.
//! - Rule `nets`/`notNets` take a CIDR or a bare address (/32, /128) but not host bits set
//!   (Calico's `net` validator); one IP family per rule, matching `ipVersion`. Network-set
//!   nets (Calico's `cidr` validator) and Kubernetes `ipBlock`s (Calico's converter) are
//!   masked instead.
//! - `global()` only as a whole rule `namespaceSelector`.
//! - Unsupported features are errors, not ignored: rule `http`, `services`, `domains`,
//!   `stagedAction` Learn/Ignore. `performanceHints` are checked and ignored: Calico
//!   documents that they "never change the enforcement behaviour of the policy".
//! - Kubernetes NetworkPolicy is checked as the API server does (case-sensitive protocols,
//!   `port: "80"` is not a number, `endPort` needs a numeric `port`, `except` inside `cidr`,
//!   one peer type) and converted as Calico does: one rule per protocol (sorted) and peer,
//!   ports merged like `SimplifyPorts`.
//! - Names follow Calico's name regexes; a policy in tier `t` may be named `t.name` or
//!   `name` (both are the same policy for duplicate detection).

mod calico;
mod common;
pub mod directory;
pub mod feed;
mod k8s;
pub mod kubernetes;
mod raw;

use std::{
    collections::{BTreeSet, HashMap},
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::model::{Inventory, Origin, PolicyKind, SkippedDocument};
use common::Ctx;

/// One problem in the input: where it is and what is wrong.
///
/// Displays as `{file}, document {n}: {field}: {message}`; `field` is a path such as
/// `spec.ingress[0].destination.ports[1]`, or `-` when the problem is not about one field.
/// Problems with a whole file (unreadable) have document 0 and display as
/// `{file}: {field}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub origin: Origin,
    pub field: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.origin.document == 0 {
            write!(
                f,
                "{}: {}: {}",
                self.origin.file.display(),
                self.field,
                self.message
            )
        } else {
            write!(
                f,
                "{}, document {}: {}: {}",
                self.origin.file.display(),
                self.origin.document,
                self.field,
                self.message
            )
        }
    }
}

/// Every problem found, in file order, then the whole-inventory ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Loads files and directories (walked recursively for `*.yaml`, `*.yml` and `*.json`, in
/// sorted order, skipping hidden names) into one inventory, then runs [`validate`].
pub fn load_paths(paths: &[impl AsRef<Path>]) -> Result<Inventory, LoadErrors> {
    let mut inv = Inventory::default();
    let mut errors = Vec::new();
    for p in paths {
        let mut files = Vec::new();
        collect_files(
            p.as_ref(),
            true,
            &mut files,
            &mut BTreeSet::new(),
            &mut errors,
        );
        for file in files {
            match fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => load_text(&text, &file, &mut inv, &mut errors),
                    Err(_) => errors.push(file_error(&file, "is not UTF-8 text")),
                },
                Err(e) => errors.push(file_error(&file, &format!("cannot read: {e}"))),
            }
        }
    }
    errors.extend(validate(&inv));
    if errors.is_empty() {
        Ok(inv)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Loads one file's text; `file` is used in origins and messages. Runs the per-document
/// checks only: [`validate`] needs every file (a tier may be defined in another one).
pub fn load_str(text: &str, file: &Path) -> Result<Inventory, LoadErrors> {
    let mut inv = Inventory::default();
    let mut errors = Vec::new();
    load_text(text, file, &mut inv, &mut errors);
    if errors.is_empty() {
        Ok(inv)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Converts one already-parsed object (for example one the Kubernetes API returned) with the
/// same per-object checks as a YAML document; `origin` names it in errors. Like [`load_str`],
/// it does not run [`validate`]: call that on the assembled inventory.
pub fn load_value(value: Value, origin: &Origin) -> Result<Inventory, LoadErrors> {
    let mut inv = Inventory::default();
    let mut errors = Vec::new();
    load_object(value, origin, String::new(), None, 0, &mut inv, &mut errors);
    if errors.is_empty() {
        Ok(inv)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Whole-inventory checks: duplicate objects (same kind, namespace and name) and policies in
/// tiers that neither a Tier object nor the built-ins (`default`, `kube-admin`,
/// `kube-baseline`) define.
pub fn validate(inv: &Inventory) -> Vec<LoadError> {
    let mut errors = Vec::new();
    let mut seen: HashMap<(&'static str, Option<String>, String), Origin> = HashMap::new();
    let mut check = |kind: &'static str, ns: Option<&str>, name: &str, origin: &Origin| {
        let key = (kind, ns.map(str::to_string), name.to_string());
        if let Some(first) = seen.get(&key) {
            let what = match ns {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            errors.push(LoadError {
                origin: origin.clone(),
                field: "metadata.name".to_string(),
                message: format!("duplicate {kind} {what}: already defined in {first}"),
            });
        } else {
            seen.insert(key, origin.clone());
        }
    };
    for n in &inv.namespaces {
        check("Namespace", None, &n.name, &n.origin);
    }
    for s in &inv.service_accounts {
        check("ServiceAccount", Some(&s.namespace), &s.name, &s.origin);
    }
    for p in &inv.pods {
        check("Pod", Some(&p.namespace), &p.name, &p.origin);
    }
    for s in &inv.network_sets {
        let kind = if s.namespace.is_some() {
            "NetworkSet"
        } else {
            "GlobalNetworkSet"
        };
        check(kind, s.namespace.as_deref(), &s.name, &s.origin);
    }
    for h in &inv.host_endpoints {
        check("HostEndpoint", None, &h.name, &h.origin);
    }
    for t in &inv.tiers {
        if let Some(origin) = &t.origin {
            check("Tier", None, &t.name, origin);
        }
    }
    for p in &inv.policies {
        // `tier.name` and `name` are the same policy in a non-default tier (Calico before 3.28
        // required the prefix; later versions accept both).
        let name = p
            .name
            .strip_prefix(&format!("{}.", p.tier))
            .unwrap_or(&p.name);
        check(p.kind.kind_name(), p.namespace.as_deref(), name, &p.origin);
    }

    let tiers = inv.tiers_with_builtins();
    let known: BTreeSet<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    for p in &inv.policies {
        if !known.contains(p.tier.as_str()) {
            let list = known.iter().copied().collect::<Vec<_>>().join(", ");
            errors.push(LoadError {
                origin: p.origin.clone(),
                field: "spec.tier".to_string(),
                message: format!(
                    "{} {} is in tier {:?}, which does not exist: add a Tier object named {:?} (known tiers: {list})",
                    p.kind.kind_name(),
                    p.qualified_name(),
                    p.tier,
                    p.tier
                ),
            });
        }
    }
    errors
}

fn file_error(file: &Path, message: &str) -> LoadError {
    LoadError {
        origin: Origin {
            file: file.to_path_buf(),
            document: 0,
        },
        field: "-".to_string(),
        message: message.to_string(),
    }
}

fn is_source_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

/// Adds `path` (a file, or a directory walked recursively) to `files`. Files named explicitly
/// are read whatever their extension.
fn collect_files(
    path: &Path,
    explicit: bool,
    files: &mut Vec<PathBuf>,
    visited: &mut BTreeSet<PathBuf>,
    errors: &mut Vec<LoadError>,
) {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(file_error(path, &format!("cannot read: {e}")));
            return;
        }
    };
    if !meta.is_dir() {
        if explicit || is_source_file(path) {
            files.push(path.to_path_buf());
        }
        return;
    }
    // Symlinked directories could loop.
    if let Ok(canonical) = fs::canonicalize(path)
        && !visited.insert(canonical)
    {
        return;
    }
    let entries = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(file_error(path, &format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => {
                if !e.file_name().to_string_lossy().starts_with('.') {
                    children.push(e.path());
                }
            }
            Err(e) => errors.push(file_error(path, &format!("cannot read directory: {e}"))),
        }
    }
    children.sort();
    for child in children {
        collect_files(&child, false, files, visited, errors);
    }
}

/// One `---`-separated document of a file.
#[derive(Debug, PartialEq)]
struct Document {
    /// 1-based.
    number: usize,
    /// 0-based line of the file where the document's text starts.
    first_line: usize,
    text: String,
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#') && !line.starts_with('%')
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Splits a YAML stream into documents the way a YAML parser numbers them: every `---`
/// starts a document; text before the first `---` is a document only if it has content;
/// `...` ends one. Splitting by lines (rather than with the YAML parser's multi-document
/// reader) lets a syntax error in one document leave the others readable.
fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut first_line = 0;
    let mut explicit = false;
    let mut has_content = false;
    let mut flush = |cur: &mut String, first_line: usize, explicit: bool, has_content: bool| {
        if explicit || has_content {
            let number = docs.len() + 1;
            docs.push(Document {
                number,
                first_line,
                text: std::mem::take(cur),
            });
        }
        cur.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let start = is_marker(line, "---");
        if start || is_marker(line, "...") {
            flush(&mut cur, first_line, explicit, has_content);
            has_content = false;
            explicit = start;
            first_line = i;
            if start {
                // Keep anything after the marker (`--- # comment`), at the same columns.
                let rest = &line[3..];
                cur.push_str("   ");
                cur.push_str(rest);
                cur.push('\n');
                has_content = is_content(rest);
            } else {
                first_line = i + 1;
            }
            continue;
        }
        if cur.is_empty() && !explicit {
            first_line = i;
        }
        cur.push_str(line);
        cur.push('\n');
        has_content |= is_content(line);
    }
    flush(&mut cur, first_line, explicit, has_content);
    docs
}

fn load_text(text: &str, file: &Path, inv: &mut Inventory, errors: &mut Vec<LoadError>) {
    for doc in split_documents(text) {
        let origin = Origin {
            file: file.to_path_buf(),
            document: doc.number,
        };
        let value: Value = match serde_yaml::from_str(&doc.text) {
            Ok(v) => v,
            Err(_) => {
                // Parse again with the document at its place in the file, so the error's
                // line numbers are the file's.
                let padded = format!("{}{}", "\n".repeat(doc.first_line), doc.text);
                let message = match serde_yaml::from_str::<Value>(&padded) {
                    Err(e) => format!("invalid YAML: {e}"),
                    Ok(_) => "invalid YAML".to_string(),
                };
                errors.push(LoadError {
                    origin,
                    field: "-".to_string(),
                    message,
                });
                continue;
            }
        };
        if value.is_null() {
            continue; // An empty document (only comments).
        }
        // YAML merge keys (`<<: *anchor`).
        let mut value = value;
        if let Err(e) = value.apply_merge() {
            errors.push(LoadError {
                origin,
                field: "-".to_string(),
                message: format!("invalid YAML merge key: {e}"),
            });
            continue;
        }
        load_object(value, &origin, String::new(), None, 0, inv, errors);
    }
}

const CALICO_API_VERSIONS: [&str; 2] = ["projectcalico.org/v3", "crd.projectcalico.org/v1"];

/// What Enforcer does with an (apiVersion, kind).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Namespace,
    Pod,
    ServiceAccount,
    K8sNetworkPolicy,
    CalicoPolicy(PolicyKind),
    NetworkSet,
    GlobalNetworkSet,
    Tier,
    HostEndpoint,
}

fn known_kind(api_version: &str, kind: &str) -> Option<Kind> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(Kind::Namespace),
        ("v1", "Pod") => Some(Kind::Pod),
        ("v1", "ServiceAccount") => Some(Kind::ServiceAccount),
        ("networking.k8s.io/v1", "NetworkPolicy") => Some(Kind::K8sNetworkPolicy),
        (av, k) if CALICO_API_VERSIONS.contains(&av) => match k {
            "NetworkPolicy" => Some(Kind::CalicoPolicy(PolicyKind::NetworkPolicy)),
            "GlobalNetworkPolicy" => Some(Kind::CalicoPolicy(PolicyKind::GlobalNetworkPolicy)),
            "StagedNetworkPolicy" => Some(Kind::CalicoPolicy(PolicyKind::StagedNetworkPolicy)),
            "StagedGlobalNetworkPolicy" => {
                Some(Kind::CalicoPolicy(PolicyKind::StagedGlobalNetworkPolicy))
            }
            "NetworkSet" => Some(Kind::NetworkSet),
            "GlobalNetworkSet" => Some(Kind::GlobalNetworkSet),
            "Tier" => Some(Kind::Tier),
            "HostEndpoint" => Some(Kind::HostEndpoint),
            _ => None,
        },
        _ => None,
    }
}

/// Lists inside lists deeper than this are refused.
const MAX_LIST_DEPTH: usize = 8;
/// Unknown-field errors reported per object before giving up on it.
const MAX_UNKNOWN_FIELDS: usize = 20;

fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Converts one object (a document, or an item of a List); `prefix` is its path in the
/// document, `inherited` the (apiVersion, kind) of a typed list's items.
fn load_object(
    mut value: Value,
    origin: &Origin,
    prefix: String,
    inherited: Option<(&str, &str)>,
    depth: usize,
    inv: &mut Inventory,
    errors: &mut Vec<LoadError>,
) {
    let mut ctx = Ctx::new(origin, prefix, errors);
    let Some(map) = value.as_mapping_mut() else {
        let found = value_type(&value);
        ctx.err(
            "-",
            format!("expected an object with apiVersion and kind, found {found}"),
        );
        return;
    };
    if let Some((av, k)) = inherited {
        for (key, v) in [("apiVersion", av), ("kind", k)] {
            if !map.contains_key(key) {
                map.insert(Value::String(key.to_string()), Value::String(v.to_string()));
            }
        }
    }
    let header = |key: &str, ctx: &mut Ctx<'_>| match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(Value::Null) => {
            ctx.err(
                key,
                "missing: every object needs apiVersion and kind (e.g. apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy)",
            );
            None
        }
        Some(v) => {
            ctx.err(key, format!("expected a string, found {}", value_type(v)));
            None
        }
    };
    let api_version = header("apiVersion", &mut ctx);
    let kind = header("kind", &mut ctx);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return;
    };

    // Lists: `v1` `List`, and typed lists (`NetworkPolicyList`) of kinds we know.
    let item_kind = if kind == "List" && api_version == "v1" {
        Some(None)
    } else {
        kind.strip_suffix("List")
            .filter(|base| known_kind(&api_version, base).is_some())
            .map(|base| Some((api_version.clone(), base.to_string())))
    };
    if let Some(item_kind) = item_kind {
        if depth >= MAX_LIST_DEPTH {
            ctx.err(
                "items",
                format!("lists nested deeper than {MAX_LIST_DEPTH} levels"),
            );
            return;
        }
        let items = match map.remove("items") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(v) => {
                ctx.err(
                    "items",
                    format!("expected a list, found {}", value_type(&v)),
                );
                return;
            }
        };
        let prefix = ctx.prefix.clone();
        for (i, item) in items.into_iter().enumerate() {
            let item_prefix = if prefix.is_empty() {
                format!("items[{i}]")
            } else {
                format!("{prefix}.items[{i}]")
            };
            let inherited = item_kind.as_ref().map(|(a, k)| (a.as_str(), k.as_str()));
            load_object(
                item,
                origin,
                item_prefix,
                inherited,
                depth + 1,
                inv,
                ctx.errors,
            );
        }
        return;
    }

    let Some(known) = known_kind(&api_version, &kind) else {
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        inv.skipped.push(SkippedDocument {
            api_version,
            kind,
            name,
            origin: origin.clone(),
        });
        return;
    };

    match known {
        Kind::Namespace => {
            if let Some(obj) = lenient(&value, &mut ctx)
                && let Some(ns) = k8s::namespace_object(obj, &mut ctx)
            {
                inv.namespaces.push(ns);
            }
        }
        Kind::ServiceAccount => {
            if let Some(obj) = lenient(&value, &mut ctx)
                && let Some(sa) = k8s::service_account(obj, &mut ctx)
            {
                inv.service_accounts.push(sa);
            }
        }
        Kind::Pod => {
            if let Some(obj) = lenient(&value, &mut ctx)
                && let Some(pod) = k8s::pod(obj, &mut ctx)
            {
                inv.pods.push(pod);
            }
        }
        Kind::K8sNetworkPolicy => {
            if let Some(np) = strict::<raw::K8sNetworkPolicy>(&value, &mut ctx)
                && let Some(p) = k8s::network_policy(&np, &mut ctx)
            {
                inv.policies.push(p);
            }
        }
        Kind::CalicoPolicy(pk) => {
            let parsed: Option<(raw::StrictMeta, raw::CalicoPolicySpec)> = match pk {
                PolicyKind::NetworkPolicy => {
                    strict::<raw::Object<raw::CalicoNetworkPolicySpec>>(&value, &mut ctx)
                        .map(|o| (o.metadata, o.spec.unwrap_or_default().into()))
                }
                PolicyKind::StagedNetworkPolicy => {
                    strict::<raw::Object<raw::CalicoStagedNetworkPolicySpec>>(&value, &mut ctx)
                        .map(|o| (o.metadata, o.spec.unwrap_or_default().into()))
                }
                PolicyKind::GlobalNetworkPolicy => {
                    strict::<raw::Object<raw::CalicoGlobalNetworkPolicySpec>>(&value, &mut ctx)
                        .map(|o| (o.metadata, o.spec.unwrap_or_default().into()))
                }
                PolicyKind::StagedGlobalNetworkPolicy => strict::<
                    raw::Object<raw::CalicoStagedGlobalNetworkPolicySpec>,
                >(&value, &mut ctx)
                .map(|o| (o.metadata, o.spec.unwrap_or_default().into())),
                PolicyKind::KubernetesNetworkPolicy => None,
            };
            if let Some((meta, spec)) = parsed
                && let Some(p) = calico::policy(pk, &meta, spec, &mut ctx)
            {
                inv.policies.push(p);
            }
        }
        Kind::NetworkSet | Kind::GlobalNetworkSet => {
            if let Some(o) = strict::<raw::Object<raw::NetworkSetSpec>>(&value, &mut ctx)
                && let Some(s) = calico::network_set(
                    known == Kind::GlobalNetworkSet,
                    &o.metadata,
                    o.spec.unwrap_or_default(),
                    &mut ctx,
                )
            {
                inv.network_sets.push(s);
            }
        }
        Kind::Tier => {
            if let Some(o) = strict::<raw::Object<raw::TierSpec>>(&value, &mut ctx)
                && let Some(t) = calico::tier(&o.metadata, o.spec.unwrap_or_default(), &mut ctx)
            {
                inv.tiers.push(t);
            }
        }
        Kind::HostEndpoint => {
            if let Some(o) = strict::<raw::Object<raw::HostEndpointSpec>>(&value, &mut ctx)
                && let Some(h) =
                    calico::host_endpoint(&o.metadata, o.spec.unwrap_or_default(), &mut ctx)
            {
                inv.host_endpoints.push(h);
            }
        }
    }
}

/// The path serde reports, `-` for the object itself.
fn serde_path(path: &serde_path_to_error::Path) -> String {
    if path.iter().next().is_none() {
        "-".to_string()
    } else {
        path.to_string()
    }
}

/// Deserializes a lenient kind; type errors name the field.
fn lenient<T: DeserializeOwned>(value: &Value, ctx: &mut Ctx<'_>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            ctx.err(serde_path(e.path()), e.inner().to_string());
            None
        }
    }
}

/// Removes the mapping entry `path` points at; false if there is none.
fn remove_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        let next = match seg {
            Segment::Map { key } => cur.get_mut(key.as_str()),
            Segment::Seq { index } => cur.get_mut(*index),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur.as_mapping_mut()) {
        (Segment::Map { key }, Some(map)) => map.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Deserializes a strict kind. An unknown field is reported and removed and deserialization
/// retried, so every misspelt field of an object is reported at once; any other error stops
/// at the first.
fn strict<T: DeserializeOwned>(value: &Value, ctx: &mut Ctx<'_>) -> Option<T> {
    let mut owned: Option<Value> = None;
    let mut failed = false;
    for _ in 0..MAX_UNKNOWN_FIELDS {
        let current = owned.as_ref().unwrap_or(value);
        match serde_path_to_error::deserialize::<_, T>(current) {
            Ok(t) => return (!failed).then_some(t),
            Err(e) => {
                failed = true;
                let message = e.inner().to_string();
                ctx.err(serde_path(e.path()), message.clone());
                if !message.starts_with("unknown field") {
                    return None;
                }
                let mut next = owned.take().unwrap_or_else(|| value.clone());
                if !remove_at(&mut next, e.path()) {
                    return None;
                }
                owned = Some(next);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
