//! Short, one-line renderings of rules for messages and `explain` output.

use crate::model::{EntityRule, PortSpec, Rule};

/// `Allow TCP from anywhere to selector(app == "db") ports [5432]`.
pub fn describe_rule(rule: &Rule) -> String {
    let mut parts = vec![rule.action.to_string()];
    if let Some(p) = rule.protocol {
        parts.push(p.to_string());
    }
    if let Some(p) = rule.not_protocol {
        parts.push(format!("notProtocol {p}"));
    }
    if let Some(v) = rule.ip_version {
        parts.push(format!("IPv{v}"));
    }
    if let Some(i) = rule.icmp {
        parts.push(match i.code {
            Some(c) => format!("icmp type {} code {c}", i.icmp_type),
            None => format!("icmp type {}", i.icmp_type),
        });
    }
    if let Some(i) = rule.not_icmp {
        parts.push(match i.code {
            Some(c) => format!("notICMP type {} code {c}", i.icmp_type),
            None => format!("notICMP type {}", i.icmp_type),
        });
    }
    parts.push(format!("from {}", describe_entity(&rule.source)));
    parts.push(format!("to {}", describe_entity(&rule.destination)));
    parts.join(" ")
}

fn ports(ps: &[PortSpec]) -> String {
    let v: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    format!("[{}]", v.join(","))
}

/// A rule's source or destination: `anywhere` when unconstrained.
pub fn describe_entity(e: &EntityRule) -> String {
    if e.is_empty() {
        return "anywhere".to_string();
    }
    let mut parts = Vec::new();
    if let Some(s) = &e.selector {
        parts.push(format!("selector({s})"));
    }
    if let Some(s) = &e.not_selector {
        parts.push(format!("notSelector({s})"));
    }
    if let Some(s) = &e.namespace_selector {
        parts.push(format!("namespaceSelector({s})"));
    }
    if let Some(sa) = &e.service_accounts {
        let mut s = Vec::new();
        if !sa.names.is_empty() {
            s.push(format!("names [{}]", sa.names.join(",")));
        }
        if let Some(sel) = &sa.selector {
            s.push(format!("selector({sel})"));
        }
        parts.push(format!("serviceAccounts({})", s.join(" ")));
    }
    if !e.nets.is_empty() {
        let v: Vec<String> = e.nets.iter().map(|n| n.to_string()).collect();
        parts.push(format!("nets [{}]", v.join(",")));
    }
    if !e.not_nets.is_empty() {
        let v: Vec<String> = e.not_nets.iter().map(|n| n.to_string()).collect();
        parts.push(format!("notNets [{}]", v.join(",")));
    }
    let only_ports = parts.is_empty();
    if !e.ports.is_empty() {
        parts.push(format!("ports {}", ports(&e.ports)));
    }
    if !e.not_ports.is_empty() {
        parts.push(format!("notPorts {}", ports(&e.not_ports)));
    }
    if only_ports {
        format!("anywhere {}", parts.join(" "))
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lint::testutil::{allow, nets, sel},
        model::Protocol,
    };

    #[test]
    fn describes_empty_rule_as_anywhere() {
        assert_eq!(describe_rule(&allow()), "Allow from anywhere to anywhere");
    }

    #[test]
    fn describes_selectors_nets_and_ports() {
        let mut r = allow();
        r.protocol = Some(Protocol::TCP);
        r.source.selector = Some(sel("app == 'web'"));
        r.source.not_nets = nets(&["10.0.0.0/8"]);
        r.destination.ports = vec![PortSpec::Range(80, 80), PortSpec::Range(8000, 8080)];
        let text = describe_rule(&r);
        assert!(text.starts_with("Allow TCP from selector("), "{text}");
        assert!(text.contains("notNets [10.0.0.0/8]"), "{text}");
        assert!(text.ends_with("to anywhere ports [80,8000:8080]"), "{text}");
    }
}
