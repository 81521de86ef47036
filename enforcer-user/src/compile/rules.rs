//! The rule table: what each `rule_id` in a verdict means.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::{
    evaluator::{DEFAULT_ALLOW_PROFILE, Decision, Options, RuleRef},
    model::{Action, Direction, Inventory, Protocol, Tier, TierDefault},
};

/// One entry of the rule table: the rule or default that decided a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    /// Exactly what the reference evaluator reports as `decided_by`.
    pub decision: Decision,
    /// The policy (index into `Inventory::policies`) of a rule; `None` for defaults.
    pub policy_index: Option<usize>,
}

impl std::fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} {}", self.id, self.decision)
    }
}

/// Every decision a compiled verdict can name, with ids stable for identical input: rules
/// sorted by (tier, policy, kind, direction, index), then tier defaults, profiles, the host
/// endpoint default deny and failsafe ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleTable {
    entries: Vec<RuleInfo>,
    #[serde(skip)]
    rules: HashMap<(usize, Direction, usize), u32>,
    #[serde(skip)]
    tier_defaults: HashMap<String, u32>,
    #[serde(skip)]
    profiles: HashMap<String, u32>,
    #[serde(skip)]
    host_default_deny: Option<u32>,
    #[serde(skip)]
    failsafe: HashMap<(u8, u16), u32>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Rule(String, String, &'static str, Direction, usize, usize),
    TierDefault(String),
    Profile(String),
    HostDefaultDeny,
    Failsafe(u8, u16),
}

impl RuleTable {
    pub(crate) fn build(
        inv: &Inventory,
        opts: &Options,
        tiers: &[Tier],
        workload_namespaces: &BTreeSet<String>,
    ) -> RuleTable {
        let mut items: Vec<(SortKey, Decision, Option<usize>)> = Vec::new();
        for (pi, p) in inv.policies.iter().enumerate() {
            for dir in [Direction::Ingress, Direction::Egress] {
                for (index, r) in p.rules(dir).iter().enumerate() {
                    if !matches!(r.action, Action::Allow | Action::Deny) {
                        continue;
                    }
                    let rr = RuleRef {
                        tier: p.tier.clone(),
                        policy: p.qualified_name(),
                        kind: p.kind,
                        direction: dir,
                        index,
                        action: r.action,
                        origin: p.origin.clone(),
                    };
                    items.push((
                        SortKey::Rule(
                            rr.tier.clone(),
                            rr.policy.clone(),
                            p.kind.kind_name(),
                            dir,
                            index,
                            pi,
                        ),
                        Decision::Rule(rr),
                        Some(pi),
                    ));
                }
            }
        }
        for t in tiers
            .iter()
            .filter(|t| t.default_action == TierDefault::Deny)
        {
            items.push((
                SortKey::TierDefault(t.name.clone()),
                Decision::TierDefault {
                    tier: t.name.clone(),
                },
                None,
            ));
        }
        let mut profiles: BTreeSet<String> = workload_namespaces
            .iter()
            .map(|ns| format!("kns.{ns}"))
            .collect();
        if inv
            .host_endpoints
            .iter()
            .any(|h| h.profiles.iter().any(|p| p == DEFAULT_ALLOW_PROFILE))
        {
            profiles.insert(DEFAULT_ALLOW_PROFILE.to_string());
        }
        for profile in profiles {
            items.push((
                SortKey::Profile(profile.clone()),
                Decision::Profile { profile },
                None,
            ));
        }
        if !inv.host_endpoints.is_empty() {
            items.push((
                SortKey::HostDefaultDeny,
                Decision::HostEndpointDefaultDeny,
                None,
            ));
            let fs: BTreeSet<(u8, u16)> = opts
                .failsafe
                .inbound
                .iter()
                .chain(&opts.failsafe.outbound)
                .map(|(p, port)| (p.0, *port))
                .collect();
            for (p, port) in fs {
                items.push((
                    SortKey::Failsafe(p, port),
                    Decision::Failsafe {
                        protocol: Protocol(p),
                        port,
                    },
                    None,
                ));
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut t = RuleTable::default();
        for (i, (key, decision, policy_index)) in items.into_iter().enumerate() {
            let id = i as u32;
            match &key {
                SortKey::Rule(_, _, _, dir, index, pi) => {
                    t.rules.insert((*pi, *dir, *index), id);
                }
                SortKey::TierDefault(name) => {
                    t.tier_defaults.insert(name.clone(), id);
                }
                SortKey::Profile(name) => {
                    t.profiles.insert(name.clone(), id);
                }
                SortKey::HostDefaultDeny => t.host_default_deny = Some(id),
                SortKey::Failsafe(p, port) => {
                    t.failsafe.insert((*p, *port), id);
                }
            }
            t.entries.push(RuleInfo {
                id,
                decision,
                policy_index,
            });
        }
        t
    }

    pub fn get(&self, id: u32) -> Option<&RuleInfo> {
        self.entries.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RuleInfo> {
        self.entries.iter()
    }

    /// The id of an evaluator decision, if the table has it.
    pub fn id_of(&self, decision: &Decision) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| &e.decision == decision)
            .map(|e| e.id)
    }

    pub(crate) fn rule_id(&self, policy: usize, dir: Direction, index: usize) -> Option<u32> {
        self.rules.get(&(policy, dir, index)).copied()
    }

    pub(crate) fn tier_default_id(&self, tier: &str) -> Option<u32> {
        self.tier_defaults.get(tier).copied()
    }

    pub(crate) fn profile_id(&self, profile: &str) -> Option<u32> {
        self.profiles.get(profile).copied()
    }

    pub(crate) fn host_default_deny_id(&self) -> Option<u32> {
        self.host_default_deny
    }

    pub(crate) fn failsafe_id(&self, proto: Protocol, port: u16) -> Option<u32> {
        self.failsafe.get(&(proto.0, port)).copied()
    }
}
