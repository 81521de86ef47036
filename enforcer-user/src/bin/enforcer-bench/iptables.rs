//! The iptables reference: a [`FlatRuleset`] rendered the way a Calico-iptables or
//! kube-router style enforcer installs it, applied with `iptables-restore` (legacy or nft)
//! and `ipset restore` inside a network namespace, and its per-rule packet counters read back.
//!
//! Layout (IPv4 only: the benchmark sends IPv4; IPv6 nets and set members are left out, as
//! they would go to `ip6tables`):
//!
//! ```text
//! -A FORWARD -o <iface> -j enf-tw-<iface>                       traffic to the endpoint
//! -A enf-tw-<iface> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! -A enf-tw-<iface> -m conntrack --ctstate INVALID -j DROP
//! -A enf-tw-<iface> -j MARK --set-xmark 0x0/0x10000             clear the accept mark
//! -A enf-tw-<iface> -j enf-pi-<k>                               each policy, in order
//! -A enf-tw-<iface> -m mark --mark 0x10000/0x10000 -j ACCEPT    a policy allowed
//! ...
//! -A enf-tw-<iface> -j DROP                                     default (ACCEPT if none)
//!
//! -A enf-pi-<k> -p tcp -s <cidr> --dport <p> -j MARK --set-xmark 0x10000/0x10000   allow
//! -A enf-pi-<k> -m mark --mark 0x10000/0x10000 -j RETURN
//! -A enf-pi-<k> -p tcp -m set --match-set enf-s<j>-4 src --dport <p> -j DROP         deny
//! ```
//!
//! An allow rule marks and returns, as Calico's `cali-pi-*` chains and kube-router's
//! `KUBE-NWPLCY-*` chains do; a rule with several source nets becomes one marking line per
//! net followed by one RETURN.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;

use crate::flat::{FlatAction, FlatRule, FlatRuleset};

/// The mark an allow rule sets (Calico's accept bit).
const ACCEPT_MARK: &str = "0x10000/0x10000";

/// Which iptables implementation applies the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-restore",
            Backend::Nft => "iptables-nft-restore",
        }
    }

    fn save(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-save",
            Backend::Nft => "iptables-nft-save",
        }
    }
}

/// A rule line: (chain, position in the chain counting from 0).
pub(crate) type Line = (String, usize);

/// The scripts, and where each flat rule's lines are (for the counter check).
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    /// `iptables-restore` input (the filter table).
    pub restore: String,
    /// `ipset restore` input.
    pub ipset: String,
    /// The `RELATED,ESTABLISHED` accept line of the endpoint chain.
    pub established: Line,
    /// Per flat rule: the lines that decide for it (its marking or DROP lines); empty when
    /// the rule cannot match IPv4 (IPv6 nets only).
    pub rule_lines: Vec<Vec<Line>>,
    /// The endpoint chain's final default line.
    pub default_line: Line,
    /// Rule lines in the filter table, jumps and mark checks included.
    pub lines: usize,
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

/// The match part of one rule line (`-s` or set given by the caller).
fn rule_match(rule: &FlatRule, source: &str) -> Result<String> {
    let mut m = String::new();
    if let Some(p) = rule.protocol {
        let _ = write!(m, " -p {}", protocol_name(p));
    }
    m.push_str(source);
    if !rule.dst_ports.is_empty() {
        let Some(p) = rule.protocol else {
            bail!("destination ports without a protocol");
        };
        let spec = |&(a, b): &(u16, u16)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        };
        if rule.dst_ports.len() == 1 && matches!(p, 6 | 17) {
            let _ = write!(m, " --dport {}", spec(&rule.dst_ports[0]));
        } else {
            if rule.dst_ports.len() > 15 {
                bail!(
                    "{} port ranges: multiport takes at most 15",
                    rule.dst_ports.len()
                );
            }
            let list: Vec<String> = rule.dst_ports.iter().map(spec).collect();
            let _ = write!(m, " -m multiport --dports {}", list.join(","));
        }
    }
    Ok(m)
}

/// Renders `flat` as the filter table and IP sets of an enforcer protecting the endpoint
/// behind `iface` (traffic leaving the router through `iface` is the endpoint's ingress).
pub(crate) fn render(flat: &FlatRuleset, iface: &str) -> Result<Rendered> {
    let ep_chain = format!("enf-tw-{iface}");
    if ep_chain.len() > 28 {
        bail!("chain name {ep_chain} is longer than iptables' 28 characters");
    }
    // Consecutive rules of one policy make one chain.
    let mut policies: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in flat.rules.iter().enumerate() {
        match policies.last_mut() {
            Some((name, rules)) if *name == r.policy => rules.push(i),
            _ => policies.push((r.policy.clone(), vec![i])),
        }
    }
    let mut chains = format!("*filter\n:{ep_chain} - [0:0]\n");
    let mut body = format!("-A FORWARD -o {iface} -j {ep_chain}\n");
    let mut ep_lines: Vec<String> = vec![
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
        "-m conntrack --ctstate INVALID -j DROP".into(),
        "-j MARK --set-xmark 0x0/0x10000".into(),
    ];
    let mut rule_lines: Vec<Vec<Line>> = vec![Vec::new(); flat.rules.len()];
    let mut lines = 1;
    for (k, (_, rules)) in policies.iter().enumerate() {
        let chain = format!("enf-pi-{k}");
        let _ = writeln!(chains, ":{chain} - [0:0]");
        let mut pos = 0;
        for &i in rules {
            let rule = &flat.rules[i];
            let v4_nets: Vec<&IpNet> = rule
                .src_nets
                .iter()
                .filter(|n| matches!(n, IpNet::V4(_)))
                .collect();
            let sources: Vec<String> = if let Some(set) = rule.src_ipset {
                let set = flat
                    .ipsets
                    .get(set)
                    .with_context(|| format!("rule {i} names IP set {set}, which is missing"))?;
                vec![format!(" -m set --match-set {}-4 src", set.name)]
            } else if rule.src_nets.is_empty() {
                vec![String::new()]
            } else {
                v4_nets.iter().map(|n| format!(" -s {n}")).collect()
            };
            if sources.is_empty() {
                // IPv6 sources only: nothing for iptables.
                continue;
            }
            let target = match rule.action {
                FlatAction::Allow => format!("-j MARK --set-xmark {ACCEPT_MARK}"),
                FlatAction::Deny => "-j DROP".into(),
            };
            for source in &sources {
                let _ = writeln!(body, "-A {chain}{} {target}", rule_match(rule, source)?);
                rule_lines[i].push((chain.clone(), pos));
                pos += 1;
            }
            if rule.action == FlatAction::Allow {
                let _ = writeln!(body, "-A {chain} -m mark --mark {ACCEPT_MARK} -j RETURN");
                pos += 1;
            }
        }
        lines += pos;
        ep_lines.push(format!("-j {chain}"));
        ep_lines.push(format!("-m mark --mark {ACCEPT_MARK} -j ACCEPT"));
    }
    ep_lines.push(match flat.default {
        FlatAction::Allow => "-j ACCEPT".into(),
        FlatAction::Deny => "-j DROP".into(),
    });
    let default_line = (ep_chain.clone(), ep_lines.len() - 1);
    lines += ep_lines.len();
    for l in &ep_lines {
        let _ = writeln!(body, "-A {ep_chain} {l}");
    }
    let restore = format!("{chains}{body}COMMIT\n");

    let mut ipset = String::new();
    for set in &flat.ipsets {
        let name = format!("{}-4", set.name);
        if name.len() > 31 {
            bail!("IP set name {name} is longer than 31 characters");
        }
        let v4: Vec<&IpNet> = set
            .members
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .collect();
        let _ = writeln!(
            ipset,
            "create {name} hash:net family inet hashsize 1024 maxelem {}",
            v4.len().max(65_536)
        );
        for n in v4 {
            let _ = writeln!(ipset, "add {name} {n}");
        }
    }
    Ok(Rendered {
        restore,
        ipset,
        established: (ep_chain, 0),
        rule_lines,
        default_line,
        lines,
    })
}

/// Runs `ip netns exec <ns> <args>` with `input` on stdin; returns stdout.
fn in_ns(ns: &str, args: &[&str], input: &str) -> Result<String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} (install iptables and ipset)", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as the command's failure below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} in {ns} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the IP sets, then loads the filter table, in network namespace `ns` (both live in
/// the namespace and go with it).
pub(crate) fn apply(ns: &str, backend: Backend, r: &Rendered) -> Result<()> {
    if !r.ipset.is_empty() {
        in_ns(ns, &["ipset", "restore"], &r.ipset)?;
    }
    in_ns(ns, &[backend.restore()], &r.restore)?;
    Ok(())
}

/// Per-chain packet counters of every rule line of the filter table, in chain order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters(HashMap<String, Vec<u64>>);

impl Counters {
    pub(crate) fn get(&self, line: &Line) -> Option<u64> {
        self.0.get(&line.0).and_then(|v| v.get(line.1)).copied()
    }

    /// The summed counters of `lines`.
    pub(crate) fn sum(&self, lines: &[Line]) -> Option<u64> {
        lines.iter().map(|l| self.get(l)).sum()
    }
}

/// Reads the filter table's counters (`iptables-save -c`) in `ns`.
pub(crate) fn counters(ns: &str, backend: Backend) -> Result<Counters> {
    let out = in_ns(ns, &[backend.save(), "-c", "-t", "filter"], "")?;
    parse_counters(&out)
}

fn parse_counters(save: &str) -> Result<Counters> {
    let mut c: HashMap<String, Vec<u64>> = HashMap::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let (counts, rule) = rest
            .split_once(']')
            .with_context(|| format!("bad counter line {line:?}"))?;
        let Some(rule) = rule.trim_start().strip_prefix("-A ") else {
            continue;
        };
        let chain = rule.split_whitespace().next().unwrap_or_default();
        let packets: u64 = counts
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("bad counters in {line:?}"))?;
        c.entry(chain.to_string()).or_default().push(packets);
    }
    Ok(Counters(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::{FlatRule, IpSet};

    fn rule(policy: &str, nets: &[&str], set: Option<usize>, port: u16) -> FlatRule {
        FlatRule {
            action: FlatAction::Allow,
            protocol: Some(6),
            dst_ports: vec![(port, port)],
            src_nets: nets.iter().filter_map(|n| n.parse().ok()).collect(),
            src_ipset: set,
            policy: policy.into(),
        }
    }

    #[test]
    fn renders_calico_style_chains() {
        let flat = FlatRuleset {
            rules: vec![
                rule("a", &["10.0.0.0/28", "fd00::/124"], None, 1000),
                rule("a", &["fd00::/124"], None, 1001),
                rule("b", &[], Some(0), 1002),
            ],
            default: FlatAction::Deny,
            ipsets: vec![IpSet {
                name: "enf-s0".into(),
                members: vec!["198.18.0.2/32".parse().unwrap_or_default()],
            }],
        };
        let r = render(&flat, "h1").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.restore.contains("-A FORWARD -o h1 -j enf-tw-h1\n"));
        assert!(r.restore.contains(
            "-A enf-pi-0 -p tcp -s 10.0.0.0/28 --dport 1000 -j MARK --set-xmark 0x10000/0x10000\n"
        ));
        assert!(
            r.restore.contains(
                "-A enf-pi-1 -p tcp -m set --match-set enf-s0-4 src --dport 1002 -j MARK"
            )
        );
        assert!(r.restore.ends_with("-A enf-tw-h1 -j DROP\nCOMMIT\n"));
        assert_eq!(r.rule_lines[0], vec![("enf-pi-0".to_string(), 0)]);
        assert!(r.rule_lines[1].is_empty());
        assert_eq!(r.rule_lines[2], vec![("enf-pi-1".to_string(), 0)]);
        assert_eq!(r.default_line, ("enf-tw-h1".to_string(), 7));
        assert!(r.ipset.contains("add enf-s0-4 198.18.0.2/32\n"));
    }

    #[test]
    fn parses_save_counters() {
        let save = "*filter\n:FORWARD ACCEPT [5:300]\n[7:420] -A FORWARD -o h1 -j x\n\
                    [3:1] -A x -m mark --mark 0x1 -j ACCEPT\n[4:2] -A x -j DROP\nCOMMIT\n";
        let c = parse_counters(save).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.get(&("FORWARD".into(), 0)), Some(7));
        assert_eq!(c.get(&("x".into(), 1)), Some(4));
        assert_eq!(c.sum(&[("x".into(), 0), ("x".into(), 1)]), Some(7));
    }
}
