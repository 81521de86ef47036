//! `enforcer explain`: why a flow is allowed or denied, step by step.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use enforcer_user::{
    evaluator::{
        self, Decision, DirectionTrace, EndpointInfo, Explanation, Failsafe, FlowSpec, Options,
        Peer, RuleRef, TierOutcome, Verdict,
    },
    lint::describe_rule,
    model::{Action, Direction, Inventory, Protocol, Rule},
};

use super::{EXIT_BAD_INPUT, Files, Format, OutputArg, check::fmt_order};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub files: Files,
    /// Source: `namespace/pod` or an IP address.
    #[arg(long = "from", value_name = "SRC")]
    pub from: Peer,
    /// Destination: `namespace/pod` or an IP address.
    #[arg(long = "to", value_name = "DST")]
    pub to: Peer,
    /// Destination port (required for TCP, UDP, SCTP, UDPLite).
    #[arg(long)]
    pub port: Option<u16>,
    /// Protocol: TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or a number 0-255.
    #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// ICMP type (ICMP and ICMPv6 only).
    #[arg(long = "icmp-type")]
    pub icmp_type: Option<u8>,
    /// ICMP code (ICMP and ICMPv6 only).
    #[arg(long = "icmp-code")]
    pub icmp_code: Option<u8>,
    /// Source port (default: an ephemeral port, which rules on source ports do not match).
    #[arg(long = "src-port")]
    pub src_port: Option<u16>,
    /// Address family to use for dual-stack pods.
    #[arg(long = "ip-version", value_parser = parse_ip_version)]
    pub ip_version: Option<u8>,
    /// Do not apply Calico's failsafe ports to host endpoints.
    #[arg(long = "no-failsafe")]
    pub no_failsafe: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| {
        format!("unknown protocol {s:?}: use TCP, UDP, SCTP, ICMP, ICMPv6, UDPLite or 0-255")
    })
}

fn parse_ip_version(s: &str) -> Result<u8, String> {
    match s {
        "4" => Ok(4),
        "6" => Ok(6),
        _ => Err(format!("ip version must be 4 or 6, not {s:?}")),
    }
}

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let inv = match super::load(&args.files.files) {
        Ok(inv) => inv,
        Err(errors) => {
            super::print_errors(&errors);
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let flow = FlowSpec {
        src: args.from,
        dst: args.to,
        protocol: args.protocol,
        src_port: args.src_port,
        dst_port: args.port,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
        ip_version: args.ip_version,
    };
    let opts = Options {
        failsafe: if args.no_failsafe {
            Failsafe::none()
        } else {
            Failsafe::calico_defaults()
        },
    };
    let explanation = evaluator::explain(&inv, &flow, &opts).context("cannot explain this flow")?;
    match args.output.output {
        Format::Json => super::print_json(&explanation)?,
        Format::Text => print!("{}", render(&inv, &explanation)),
    }
    Ok(ExitCode::SUCCESS)
}

fn caps(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
    }
}

fn endpoint_text(e: &EndpointInfo, port: Option<u16>) -> String {
    let addr = match (port, e.address) {
        (Some(p), std::net::IpAddr::V6(a)) => format!("[{a}]:{p}"),
        (Some(p), a) => format!("{a}:{p}"),
        (None, a) => a.to_string(),
    };
    match &e.name {
        Some(n) => format!("{} {n} ({addr})", e.kind),
        None => format!("{addr} ({})", e.kind),
    }
}

/// The model's rule a trace points to.
fn find_rule<'a>(inv: &'a Inventory, r: &RuleRef) -> Option<&'a Rule> {
    inv.policies
        .iter()
        .find(|p| p.qualified_name() == r.policy && p.kind == r.kind && p.origin == r.origin)
        .and_then(|p| p.rules(r.direction).get(r.index))
}

fn outcome_text(o: TierOutcome) -> &'static str {
    match o {
        TierOutcome::Allow => "a rule allowed",
        TierOutcome::Deny => "a rule denied",
        TierOutcome::Pass => "a rule passed to the next tier",
        TierOutcome::DefaultDeny => "no rule decided: end-of-tier deny",
        TierOutcome::DefaultPass => "no rule decided: tier default Pass, on to the next tier",
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Pass => "pass",
        Action::Log => "log",
    }
}

/// Renders the explanation as text.
pub fn render(inv: &Inventory, x: &Explanation) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let mut proto = x.flow.protocol.clone();
    if let Some(t) = x.flow.icmp_type {
        proto.push_str(&format!(" type {t}"));
        if let Some(c) = x.flow.icmp_code {
            proto.push_str(&format!(" code {c}"));
        }
    }
    line(format!(
        "{}  {proto} {} -> {}",
        caps(x.verdict),
        endpoint_text(&x.source, x.flow.src_port),
        endpoint_text(&x.destination, x.flow.dst_port)
    ));
    if x.staged_verdict != x.verdict {
        line(format!(
            "      with staged policies enforced it would be {}",
            caps(x.staged_verdict)
        ));
    }
    for (trace, side, info) in [
        (&x.egress, Direction::Egress, &x.source),
        (&x.ingress, Direction::Ingress, &x.destination),
    ] {
        line(String::new());
        match trace {
            None => line(format!(
                "{side} of the {}: not policed ({}), nothing to check",
                if side == Direction::Egress {
                    "source"
                } else {
                    "destination"
                },
                info.name
                    .as_ref()
                    .map_or_else(|| info.kind.clone(), |n| format!("{} {n}", info.kind)),
            )),
            Some(t) => direction_text(inv, t, &mut line),
        }
    }
    if !x.notes.is_empty() {
        line(String::new());
        line("notes:".to_string());
        for n in &x.notes {
            line(format!("  - {n}"));
        }
    }
    out
}

fn direction_text(inv: &Inventory, t: &DirectionTrace, line: &mut impl FnMut(String)) {
    line(format!(
        "{} of {}: {}",
        t.direction,
        t.endpoint,
        caps(t.verdict)
    ));
    if t.tiers.is_empty() {
        line("  no tier has a policy selecting this endpoint for this direction".to_string());
    }
    for tier in &t.tiers {
        line(format!(
            "  tier {} (order {}, default {:?}): {}",
            tier.tier,
            fmt_order(tier.order),
            tier.default_action,
            outcome_text(tier.outcome)
        ));
        for p in &tier.policies {
            let result = match p.outcome {
                Some(a) => match p.hits.last() {
                    Some(h) => format!("{} rule {} matched: {}", t.direction, h.index, a),
                    None => a.to_string(),
                },
                None => "no rule matched".to_string(),
            };
            line(format!(
                "    policy {} (order {}, {}): {result}",
                p.policy,
                fmt_order(p.order),
                p.kind.kind_name()
            ));
        }
    }
    for l in &t.logs {
        line(format!("  log: {l} at {}", l.origin));
    }
    line(format!("  decided by: {}", t.decided_by));
    if let Decision::Rule(r) = &t.decided_by {
        if let Some(rule) = find_rule(inv, r) {
            line(format!("    rule: {}", describe_rule(rule)));
        }
        line(format!("    at {}", r.origin));
    }
    // Staged policies.
    if t.staged.is_empty() && t.staged_verdict == t.verdict {
        line("  staged: no staged policy selects this endpoint".to_string());
        return;
    }
    line(format!(
        "  staged: with staged policies enforced: {} ({}){}",
        caps(t.staged_verdict),
        t.staged_decided_by,
        if t.staged_verdict == t.verdict {
            ", same as now"
        } else {
            ", a change"
        }
    ));
    for s in &t.staged {
        let what = match (s.outcome, s.hits.last()) {
            (Some(a), Some(h)) => format!(
                "would {} ({} rule {})",
                action_word(a),
                t.direction,
                h.index
            ),
            (Some(a), None) => format!("would {}", action_word(a)),
            (None, _) => "no rule would match".to_string(),
        };
        line(format!(
            "    staged policy {} ({}, tier {}, {:?}): {what}",
            s.policy,
            s.kind.kind_name(),
            s.tier,
            s.staged_action
        ));
    }
}
