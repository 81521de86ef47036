//! `enforcer check`: load and validate files, summarise what they hold.

use std::process::ExitCode;

use clap::Args;
use enforcer_user::{
    evaluator,
    model::{Direction, Inventory, Origin, PolicyKind, SkippedDocument, TierDefault},
};
use serde::Serialize;

use super::{Files, Format, OutputArg};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub files: Files,
    #[command(flatten)]
    pub output: OutputArg,
}

/// Objects per kind.
#[derive(Debug, Serialize)]
struct Counts {
    namespaces: usize,
    pods: usize,
    service_accounts: usize,
    kubernetes_network_policies: usize,
    network_policies: usize,
    global_network_policies: usize,
    staged_network_policies: usize,
    staged_global_network_policies: usize,
    network_sets: usize,
    global_network_sets: usize,
    tiers: usize,
    host_endpoints: usize,
}

impl Counts {
    fn of(inv: &Inventory) -> Counts {
        let kind = |k: PolicyKind| inv.policies.iter().filter(|p| p.kind == k).count();
        Counts {
            namespaces: inv.namespaces.len(),
            pods: inv.pods.len(),
            service_accounts: inv.service_accounts.len(),
            kubernetes_network_policies: kind(PolicyKind::KubernetesNetworkPolicy),
            network_policies: kind(PolicyKind::NetworkPolicy),
            global_network_policies: kind(PolicyKind::GlobalNetworkPolicy),
            staged_network_policies: kind(PolicyKind::StagedNetworkPolicy),
            staged_global_network_policies: kind(PolicyKind::StagedGlobalNetworkPolicy),
            network_sets: inv
                .network_sets
                .iter()
                .filter(|s| s.namespace.is_some())
                .count(),
            global_network_sets: inv
                .network_sets
                .iter()
                .filter(|s| s.namespace.is_none())
                .count(),
            tiers: inv.tiers.len(),
            host_endpoints: inv.host_endpoints.len(),
        }
    }

    fn rows(&self) -> [(&'static str, usize); 12] {
        [
            ("Namespaces", self.namespaces),
            ("Pods", self.pods),
            ("ServiceAccounts", self.service_accounts),
            ("NetworkPolicies (k8s)", self.kubernetes_network_policies),
            ("Calico NetworkPolicies", self.network_policies),
            ("GlobalNetworkPolicies", self.global_network_policies),
            ("StagedNetworkPolicies", self.staged_network_policies),
            (
                "StagedGlobalNetworkPolicies",
                self.staged_global_network_policies,
            ),
            ("NetworkSets", self.network_sets),
            ("GlobalNetworkSets", self.global_network_sets),
            ("Tiers", self.tiers),
            ("HostEndpoints", self.host_endpoints),
        ]
    }

    fn total(&self) -> usize {
        self.rows().iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, Serialize)]
struct PolicyRow {
    name: String,
    kind: PolicyKind,
    order: Option<f64>,
    types: Vec<Direction>,
    types_explicit: bool,
    staged: bool,
    ingress_rules: usize,
    egress_rules: usize,
    origin: Origin,
}

#[derive(Debug, Serialize)]
struct TierRow {
    name: String,
    order: Option<f64>,
    default_action: TierDefault,
    builtin: bool,
    /// Enforced and staged policies of the tier, in evaluation order.
    policies: Vec<PolicyRow>,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    valid: bool,
    counts: Counts,
    skipped: &'a [SkippedDocument],
    tiers: Vec<TierRow>,
}

fn tier_rows(inv: &Inventory) -> Vec<TierRow> {
    evaluator::sorted_tiers(inv)
        .into_iter()
        .map(|t| {
            let policies =
                evaluator::sorted_policies(inv.policies.iter().filter(|p| p.tier == t.name))
                    .into_iter()
                    .map(|p| PolicyRow {
                        name: p.qualified_name(),
                        kind: p.kind,
                        order: p.order,
                        types: p.types.clone(),
                        types_explicit: p.types_explicit,
                        staged: p.kind.is_staged(),
                        ingress_rules: p.ingress.len(),
                        egress_rules: p.egress.len(),
                        origin: p.origin.clone(),
                    })
                    .collect();
            TierRow {
                builtin: t.origin.is_none(),
                name: t.name,
                order: t.order,
                default_action: t.default_action,
                policies,
            }
        })
        .collect()
}

pub(crate) fn fmt_order(o: Option<f64>) -> String {
    o.map_or_else(|| "none".to_string(), |o| o.to_string())
}

fn kind_short(k: PolicyKind) -> &'static str {
    match k {
        PolicyKind::KubernetesNetworkPolicy => "NetworkPolicy (k8s)",
        other => other.kind_name(),
    }
}

fn types_text(types: &[Direction]) -> String {
    let v: Vec<&str> = types
        .iter()
        .map(|d| match d {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        })
        .collect();
    format!("[{}]", v.join(", "))
}

fn print_text(files: &[std::path::PathBuf], inv: &Inventory, summary: &Summary<'_>) {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!(
        "{}: valid, {} object{} loaded",
        names.join(", "),
        summary.counts.total(),
        if summary.counts.total() == 1 { "" } else { "s" }
    );
    for (label, n) in summary.counts.rows() {
        println!("  {label:<30} {n:>6}");
    }
    if !inv.skipped.is_empty() {
        println!();
        println!(
            "skipped {} document(s) of kinds Enforcer does not know:",
            inv.skipped.len()
        );
        for s in &inv.skipped {
            println!(
                "  {} {}{} ({})",
                s.api_version,
                s.kind,
                s.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default(),
                s.origin
            );
        }
    }
    println!();
    println!(
        "policies in evaluation order (per endpoint: tiers by order, then policies by order):"
    );
    let name_w = summary
        .tiers
        .iter()
        .flat_map(|t| &t.policies)
        .map(|p| p.name.len() + if p.staged { 9 } else { 0 })
        .max()
        .unwrap_or(0);
    let mut any = false;
    for t in &summary.tiers {
        if t.policies.is_empty() && t.builtin {
            continue;
        }
        any = true;
        println!(
            "  tier {} (order {}, default action {:?}){}",
            t.name,
            fmt_order(t.order),
            t.default_action,
            if t.policies.is_empty() {
                ": no policies"
            } else {
                ""
            }
        );
        for p in &t.policies {
            let name = format!("{}{}", p.name, if p.staged { " (staged)" } else { "" });
            let types = format!(
                "{}{}",
                types_text(&p.types),
                if p.types_explicit { "" } else { " (defaulted)" }
            );
            println!(
                "    {:>9}  {:<27} {name:<name_w$}  {types:<27} {}",
                fmt_order(p.order),
                kind_short(p.kind),
                p.origin
            );
        }
    }
    if !any {
        println!("  (no policies)");
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let inv = match super::load(&args.files.files) {
        Ok(inv) => inv,
        Err(errors) => {
            super::print_errors(&errors);
            if args.output.output == Format::Json {
                let errs: Vec<serde_json::Value> = errors.iter().map(super::error_json).collect();
                super::print_json(&serde_json::json!({ "valid": false, "errors": errs }))?;
            }
            return Ok(ExitCode::from(1));
        }
    };
    let summary = Summary {
        valid: true,
        counts: Counts::of(&inv),
        skipped: &inv.skipped,
        tiers: tier_rows(&inv),
    };
    match args.output.output {
        Format::Json => super::print_json(&summary)?,
        Format::Text => print_text(&args.files.files, &inv, &summary),
    }
    Ok(ExitCode::SUCCESS)
}
