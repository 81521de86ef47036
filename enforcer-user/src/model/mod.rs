//! The policy model: every object Enforcer reads, normalised into one shape.
//!
//! `sources` parses YAML into these types (validating strictly as it goes); everything
//! downstream (the reference evaluator, explain, lint, the compiler) reads only these types.
//! Kubernetes NetworkPolicies are converted by `sources` into Calico's model (Allow-only
//! policies in tier `default` at order 1000), so no later stage has to know two flavours.

use std::{collections::BTreeMap, fmt, net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use serde::Serialize;

use crate::selector::Selector;

/// Object labels (sorted, so output is stable).
pub type Labels = BTreeMap<String, String>;

/// Where an object came from: the file and the 1-based index of the YAML document in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based index of the document in the file (`---` separated).
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, 136 UDPLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);
    pub const UDPLITE: Protocol = Protocol(136);

    /// Parses a protocol as Calico accepts it: a name (case-insensitive: TCP, UDP, ICMP,
    /// ICMPv6, SCTP, UDPLite) or a number 0..=255.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::TCP),
            "udp" => Some(Self::UDP),
            "icmp" => Some(Self::ICMP),
            "icmpv6" => Some(Self::ICMPV6),
            "sctp" => Some(Self::SCTP),
            "udplite" => Some(Self::UDPLITE),
            n => n.parse::<u8>().ok().map(Protocol),
        }
    }

    /// Whether the protocol carries ports (TCP, UDP, SCTP, UDPLite).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::TCP | Self::UDP | Self::SCTP | Self::UDPLITE)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TCP => f.write_str("TCP"),
            Self::UDP => f.write_str("UDP"),
            Self::ICMP => f.write_str("ICMP"),
            Self::ICMPV6 => f.write_str("ICMPv6"),
            Self::SCTP => f.write_str("SCTP"),
            Self::UDPLITE => f.write_str("UDPLite"),
            Protocol(n) => write!(f, "{n}"),
        }
    }
}

/// A named container port (`spec.containers[].ports[]` with a `name`), or a HostEndpoint port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.serviceAccountName`, `default` when absent (as Kubernetes does).
    pub service_account: String,
    /// Every container port, named or not (unnamed ones have an empty name).
    pub ports: Vec<NamedPort>,
    pub host_network: bool,
    pub node_name: Option<String>,
    /// `status.podIPs` (or `status.podIP`), deduplicated, in file order.
    pub ips: Vec<IpAddr>,
    pub origin: Origin,
}

/// A NetworkSet (namespaced) or GlobalNetworkSet (`namespace == None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSet {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: Labels,
    pub nets: Vec<IpNet>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEndpoint {
    pub name: String,
    pub labels: Labels,
    pub node: Option<String>,
    /// `spec.interfaceName`; `*` means all host interfaces.
    pub interface_name: Option<String>,
    pub expected_ips: Vec<IpAddr>,
    /// `spec.profiles`; `projectcalico-default-allow` makes unmatched traffic allowed.
    pub profiles: Vec<String>,
    pub ports: Vec<NamedPort>,
    pub origin: Origin,
}

/// What a tier does with traffic no policy in it decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum TierDefault {
    Deny,
    Pass,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    pub name: String,
    /// `None` sorts after every numbered tier.
    pub order: Option<f64>,
    pub default_action: TierDefault,
    /// `None` for the built-in tiers (`default`, `kube-admin`, `kube-baseline`).
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum Action {
    Allow,
    Deny,
    Pass,
    Log,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
            Action::Log => "Log",
        })
    }
}

/// The kind a policy was written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` NetworkPolicy.
    KubernetesNetworkPolicy,
    /// `projectcalico.org/v3` NetworkPolicy.
    NetworkPolicy,
    /// `projectcalico.org/v3` GlobalNetworkPolicy.
    GlobalNetworkPolicy,
    /// `projectcalico.org/v3` StagedNetworkPolicy.
    StagedNetworkPolicy,
    /// `projectcalico.org/v3` StagedGlobalNetworkPolicy.
    StagedGlobalNetworkPolicy,
}

impl PolicyKind {
    pub fn is_staged(self) -> bool {
        matches!(
            self,
            PolicyKind::StagedNetworkPolicy | PolicyKind::StagedGlobalNetworkPolicy
        )
    }
    pub fn is_global(self) -> bool {
        matches!(
            self,
            PolicyKind::GlobalNetworkPolicy | PolicyKind::StagedGlobalNetworkPolicy
        )
    }
    /// The name users write in YAML `kind:`.
    pub fn kind_name(self) -> &'static str {
        match self {
            PolicyKind::KubernetesNetworkPolicy => "NetworkPolicy (networking.k8s.io/v1)",
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            PolicyKind::StagedNetworkPolicy => "StagedNetworkPolicy",
            PolicyKind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
        }
    }
}

/// Calico's `stagedAction` for staged policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum StagedAction {
    /// The staged policy would be created or would replace the enforced one of the same name.
    #[default]
    Set,
    /// The enforced policy of the same name would be deleted.
    Delete,
}

/// A policy in Calico's model. Kubernetes NetworkPolicies are converted into this form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub kind: PolicyKind,
    /// `None` for global policies.
    pub namespace: Option<String>,
    /// The name as written in metadata.
    pub name: String,
    /// `spec.tier`, `default` when absent; Kubernetes policies are in `default`.
    pub tier: String,
    /// `spec.order`; `None` sorts after every numbered policy. Kubernetes policies get 1000.
    pub order: Option<f64>,
    /// Endpoint selector (`spec.selector`, or the converted `podSelector`). For namespaced
    /// policies it only ever selects endpoints in `namespace`.
    pub selector: Selector,
    /// GlobalNetworkPolicy `spec.namespaceSelector`: the endpoint's namespace labels must match.
    pub namespace_selector: Option<Selector>,
    /// `spec.serviceAccountSelector`: the endpoint's service account labels must match.
    pub service_account_selector: Option<Selector>,
    /// After defaulting ([`default_calico_types`] or [`default_kubernetes_types`]).
    pub types: Vec<Direction>,
    /// Whether `types` was written by the user (false: it was defaulted).
    pub types_explicit: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    /// GlobalNetworkPolicy `applyOnForward` (host endpoints only).
    pub apply_on_forward: bool,
    /// GlobalNetworkPolicy `preDNAT` (host endpoints only).
    pub pre_dnat: bool,
    /// GlobalNetworkPolicy `doNotTrack` (host endpoints only).
    pub do_not_track: bool,
    pub staged_action: StagedAction,
    pub origin: Origin,
}

impl Policy {
    /// `namespace/name` or `name`, the way Calico prints policy names.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn applies_to(&self, direction: Direction) -> bool {
        self.types.contains(&direction)
    }
}

/// ICMP type and optional code (`icmp: {type, code}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    pub code: Option<u8>,
}

/// A port or port range, or a named port resolved against the endpoint it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum PortSpec {
    /// Inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    Named(String),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Range(a, b) if a == b => write!(f, "{a}"),
            PortSpec::Range(a, b) => write!(f, "{a}:{b}"),
            PortSpec::Named(n) => f.write_str(n),
        }
    }
}

/// `serviceAccounts: {names, selector}` in a rule's source or destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServiceAccountMatch {
    /// Empty: any name.
    pub names: Vec<String>,
    pub selector: Option<Selector>,
}

/// A rule's `source` or `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
pub struct EntityRule {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub selector: Option<Selector>,
    pub not_selector: Option<Selector>,
    pub namespace_selector: Option<Selector>,
    pub ports: Vec<PortSpec>,
    pub not_ports: Vec<PortSpec>,
    pub service_accounts: Option<ServiceAccountMatch>,
}

impl EntityRule {
    /// True when the entity rule matches everything (no constraint at all).
    pub fn is_empty(&self) -> bool {
        self == &EntityRule::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub action: Action,
    pub protocol: Option<Protocol>,
    pub not_protocol: Option<Protocol>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    pub source: EntityRule,
    pub destination: EntityRule,
    /// Free-form `metadata.annotations` of the rule, kept for explain output.
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// The peer side of the rule: the source for ingress, the destination for egress.
    pub fn peer(&self, dir: Direction) -> &EntityRule {
        match dir {
            Direction::Ingress => &self.source,
            Direction::Egress => &self.destination,
        }
    }
}

/// Everything loaded from a set of files: the input to every later stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub namespaces: Vec<Namespace>,
    pub service_accounts: Vec<ServiceAccount>,
    pub pods: Vec<Pod>,
    pub network_sets: Vec<NetworkSet>,
    pub host_endpoints: Vec<HostEndpoint>,
    /// User-defined tiers only; see [`Inventory::tiers_with_builtins`].
    pub tiers: Vec<Tier>,
    /// Enforced and staged policies, in load order.
    pub policies: Vec<Policy>,
    /// Documents of kinds Enforcer does not know, listed and skipped.
    pub skipped: Vec<SkippedDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedDocument {
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    pub origin: Origin,
}

/// Orders of Calico's built-in tiers.
pub const KUBE_ADMIN_TIER_ORDER: f64 = 1_000.0;
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
pub const KUBE_BASELINE_TIER_ORDER: f64 = 10_000_000.0;
/// The order Calico gives converted Kubernetes NetworkPolicies.
pub const KUBERNETES_POLICY_ORDER: f64 = 1_000.0;

impl Inventory {
    /// User tiers plus the built-ins (`kube-admin`, `default`, `kube-baseline`) unless the user
    /// defined a tier of the same name. Not sorted.
    pub fn tiers_with_builtins(&self) -> Vec<Tier> {
        let mut tiers = self.tiers.clone();
        for (name, order, default_action) in [
            ("kube-admin", KUBE_ADMIN_TIER_ORDER, TierDefault::Pass),
            ("default", DEFAULT_TIER_ORDER, TierDefault::Deny),
            ("kube-baseline", KUBE_BASELINE_TIER_ORDER, TierDefault::Pass),
        ] {
            if !tiers.iter().any(|t| t.name == name) {
                tiers.push(Tier {
                    name: name.to_string(),
                    order: Some(order),
                    default_action,
                    origin: None,
                });
            }
        }
        tiers
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    pub fn service_account(&self, namespace: &str, name: &str) -> Option<&ServiceAccount> {
        self.service_accounts
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// Merges another inventory (e.g. from another file) into this one.
    pub fn extend(&mut self, other: Inventory) {
        self.namespaces.extend(other.namespaces);
        self.service_accounts.extend(other.service_accounts);
        self.pods.extend(other.pods);
        self.network_sets.extend(other.network_sets);
        self.host_endpoints.extend(other.host_endpoints);
        self.tiers.extend(other.tiers);
        self.policies.extend(other.policies);
        self.skipped.extend(other.skipped);
    }
}

/// Calico's `types` defaulting: Ingress when there are no egress rules, Egress when there
/// are only egress rules, both when there are both.
pub fn default_calico_types(has_ingress_rules: bool, has_egress_rules: bool) -> Vec<Direction> {
    match (has_ingress_rules, has_egress_rules) {
        (_, false) => vec![Direction::Ingress],
        (false, true) => vec![Direction::Egress],
        (true, true) => vec![Direction::Ingress, Direction::Egress],
    }
}

/// Kubernetes `policyTypes` defaulting: Ingress always, plus Egress when egress rules exist.
pub fn default_kubernetes_types(has_egress_rules: bool) -> Vec<Direction> {
    if has_egress_rules {
        vec![Direction::Ingress, Direction::Egress]
    } else {
        vec![Direction::Ingress]
    }
}
