//! The YAML shapes, as serde structs. Policy kinds, network sets, tiers and host endpoints
//! deny unknown fields (so a typo is an error naming the valid fields); Pods, Namespaces and
//! ServiceAccounts read only the few fields Enforcer uses and ignore the rest, as `kubectl get
//! -o yaml` prints much more.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, Visitor},
};

use crate::model::Labels;
use crate::selector::LabelSelector;

/// `null` reads as the default (as Kubernetes treats it), so `ingress:` with no value is an
/// empty list rather than a type error.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer or a string (Kubernetes `IntOrString`, Calico `numorstring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `metadata` of strictly checked kinds: the fields users write plus those `kubectl get -o
/// yaml` adds.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct StrictMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    uid: Option<IgnoredAny>,
    #[serde(default)]
    resource_version: Option<IgnoredAny>,
    #[serde(default)]
    generation: Option<IgnoredAny>,
    #[serde(default)]
    creation_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    managed_fields: Option<IgnoredAny>,
    #[serde(default)]
    owner_references: Option<IgnoredAny>,
    #[serde(default)]
    finalizers: Option<IgnoredAny>,
    #[serde(default)]
    self_link: Option<IgnoredAny>,
    #[serde(default)]
    deletion_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<IgnoredAny>,
    #[serde(default)]
    generate_name: Option<IgnoredAny>,
}

/// A strictly checked object: `apiVersion`, `kind`, `metadata` and `spec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct Object<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: StrictMeta,
    #[serde(default)]
    pub spec: Option<S>,
}

// ---------------------------------------------------------------------------------------------
// Calico policy.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CalicoNetworkPolicySpec {
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub order: Option<f64>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub types: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<RawRule>,
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<RawRule>,
    #[serde(default)]
    pub service_account_selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub performance_hints: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CalicoStagedNetworkPolicySpec {
    #[serde(default)]
    pub staged_action: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub order: Option<f64>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub types: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<RawRule>,
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<RawRule>,
    #[serde(default)]
    pub service_account_selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub performance_hints: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CalicoGlobalNetworkPolicySpec {
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub order: Option<f64>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub types: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<RawRule>,
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<RawRule>,
    #[serde(default)]
    pub service_account_selector: Option<String>,
    #[serde(default)]
    pub namespace_selector: Option<String>,
    #[serde(default, rename = "doNotTrack")]
    pub do_not_track: Option<bool>,
    #[serde(default, rename = "preDNAT")]
    pub pre_dnat: Option<bool>,
    #[serde(default)]
    pub apply_on_forward: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub performance_hints: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CalicoStagedGlobalNetworkPolicySpec {
    #[serde(default)]
    pub staged_action: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub order: Option<f64>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub types: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<RawRule>,
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<RawRule>,
    #[serde(default)]
    pub service_account_selector: Option<String>,
    #[serde(default)]
    pub namespace_selector: Option<String>,
    #[serde(default, rename = "doNotTrack")]
    pub do_not_track: Option<bool>,
    #[serde(default, rename = "preDNAT")]
    pub pre_dnat: Option<bool>,
    #[serde(default)]
    pub apply_on_forward: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub performance_hints: Vec<String>,
}

/// The four Calico policy specs in one shape (fields a kind lacks stay `None`).
#[derive(Debug, Default)]
pub(crate) struct CalicoPolicySpec {
    pub staged_action: Option<String>,
    pub tier: Option<String>,
    pub order: Option<f64>,
    pub selector: Option<String>,
    pub types: Vec<String>,
    pub ingress: Vec<RawRule>,
    pub egress: Vec<RawRule>,
    pub service_account_selector: Option<String>,
    pub namespace_selector: Option<String>,
    pub do_not_track: Option<bool>,
    pub pre_dnat: Option<bool>,
    pub apply_on_forward: Option<bool>,
    pub performance_hints: Vec<String>,
}

impl From<CalicoNetworkPolicySpec> for CalicoPolicySpec {
    fn from(s: CalicoNetworkPolicySpec) -> Self {
        CalicoPolicySpec {
            tier: s.tier,
            order: s.order,
            selector: s.selector,
            types: s.types,
            ingress: s.ingress,
            egress: s.egress,
            service_account_selector: s.service_account_selector,
            performance_hints: s.performance_hints,
            ..Default::default()
        }
    }
}

impl From<CalicoStagedNetworkPolicySpec> for CalicoPolicySpec {
    fn from(s: CalicoStagedNetworkPolicySpec) -> Self {
        CalicoPolicySpec {
            staged_action: s.staged_action,
            tier: s.tier,
            order: s.order,
            selector: s.selector,
            types: s.types,
            ingress: s.ingress,
            egress: s.egress,
            service_account_selector: s.service_account_selector,
            performance_hints: s.performance_hints,
            ..Default::default()
        }
    }
}

impl From<CalicoGlobalNetworkPolicySpec> for CalicoPolicySpec {
    fn from(s: CalicoGlobalNetworkPolicySpec) -> Self {
        CalicoPolicySpec {
            staged_action: None,
            tier: s.tier,
            order: s.order,
            selector: s.selector,
            types: s.types,
            ingress: s.ingress,
            egress: s.egress,
            service_account_selector: s.service_account_selector,
            namespace_selector: s.namespace_selector,
            do_not_track: s.do_not_track,
            pre_dnat: s.pre_dnat,
            apply_on_forward: s.apply_on_forward,
            performance_hints: s.performance_hints,
        }
    }
}

impl From<CalicoStagedGlobalNetworkPolicySpec> for CalicoPolicySpec {
    fn from(s: CalicoStagedGlobalNetworkPolicySpec) -> Self {
        CalicoPolicySpec {
            staged_action: s.staged_action,
            tier: s.tier,
            order: s.order,
            selector: s.selector,
            types: s.types,
            ingress: s.ingress,
            egress: s.egress,
            service_account_selector: s.service_account_selector,
            namespace_selector: s.namespace_selector,
            do_not_track: s.do_not_track,
            pre_dnat: s.pre_dnat,
            apply_on_forward: s.apply_on_forward,
            performance_hints: s.performance_hints,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawRule {
    pub action: String,
    #[serde(default)]
    pub ip_version: Option<i64>,
    #[serde(default)]
    pub protocol: Option<IntOrString>,
    #[serde(default)]
    pub not_protocol: Option<IntOrString>,
    #[serde(default, rename = "icmp")]
    pub icmp: Option<RawIcmp>,
    #[serde(default, rename = "notICMP")]
    pub not_icmp: Option<RawIcmp>,
    #[serde(default, deserialize_with = "nullable")]
    pub source: RawEntityRule,
    #[serde(default, deserialize_with = "nullable")]
    pub destination: RawEntityRule,
    /// Application-layer policy: parsed so the error can say it is unsupported.
    #[serde(default)]
    pub http: Option<IgnoredAny>,
    #[serde(default)]
    pub metadata: Option<RawRuleMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawRuleMetadata {
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIcmp {
    #[serde(default, rename = "type")]
    pub icmp_type: Option<i64>,
    #[serde(default)]
    pub code: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawEntityRule {
    #[serde(default, deserialize_with = "nullable")]
    pub nets: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub not_nets: Vec<String>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub not_selector: Option<String>,
    #[serde(default)]
    pub namespace_selector: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<IntOrString>,
    #[serde(default, deserialize_with = "nullable")]
    pub not_ports: Vec<IntOrString>,
    #[serde(default)]
    pub service_accounts: Option<RawServiceAccountMatch>,
    /// Kubernetes Service matching: parsed so the error can say it is unsupported.
    #[serde(default)]
    pub services: Option<IgnoredAny>,
    /// Egress domain names (a later milestone): parsed so the error can say so.
    #[serde(default)]
    pub domains: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawServiceAccountMatch {
    #[serde(default, deserialize_with = "nullable")]
    pub names: Vec<String>,
    #[serde(default)]
    pub selector: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Other Calico kinds.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NetworkSetSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub nets: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TierSpec {
    #[serde(default)]
    pub order: Option<f64>,
    #[serde(default)]
    pub default_action: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HostEndpointSpec {
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub interface_name: Option<String>,
    #[serde(default, rename = "expectedIPs", deserialize_with = "nullable")]
    pub expected_ips: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub profiles: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<RawEndpointPort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawEndpointPort {
    pub name: String,
    pub port: i64,
    pub protocol: IntOrString,
}

// ---------------------------------------------------------------------------------------------
// Kubernetes NetworkPolicy.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct K8sNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: StrictMeta,
    #[serde(default)]
    pub spec: Option<K8sNetworkPolicySpec>,
    /// Printed by `kubectl get -o yaml` on some versions; ignored.
    #[serde(default)]
    status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct K8sNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, deserialize_with = "nullable")]
    pub policy_types: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<K8sIngressRule>,
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<K8sEgressRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct K8sIngressRule {
    #[serde(default, deserialize_with = "nullable")]
    pub from: Vec<K8sPeer>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<K8sPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct K8sEgressRule {
    #[serde(default, deserialize_with = "nullable")]
    pub to: Vec<K8sPeer>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<K8sPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct K8sPeer {
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub ip_block: Option<K8sIpBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct K8sIpBlock {
    pub cidr: String,
    #[serde(default, deserialize_with = "nullable")]
    pub except: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct K8sPort {
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: Option<IntOrString>,
    #[serde(default)]
    pub end_port: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Lenient kinds: only the fields Enforcer uses.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LenientMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: Labels,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LenientObject {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: LenientMeta,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodObject {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: LenientMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpec,
    #[serde(default, deserialize_with = "nullable")]
    pub status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Container {
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", deserialize_with = "nullable")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PodIp {
    pub ip: String,
}
