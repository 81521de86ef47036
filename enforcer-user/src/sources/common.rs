//! Helpers shared by the converters: error collection with field paths, port, CIDR, protocol,
//! selector and name checks.

use std::net::IpAddr;

use ipnet::IpNet;

use super::LoadError;
use super::raw::IntOrString;
use crate::model::{Origin, PortSpec, Protocol};
use crate::selector::{LabelSelector, Selector};

/// Collects the errors of one document (or one `List` item), prefixing every field path.
pub(crate) struct Ctx<'a> {
    pub origin: &'a Origin,
    /// Path of the object inside its document: empty, or `items[3]` for a List item.
    pub prefix: String,
    pub errors: &'a mut Vec<LoadError>,
    /// Number of errors when this object started, to tell whether it added any.
    start: usize,
}

impl<'a> Ctx<'a> {
    pub fn new(origin: &'a Origin, prefix: String, errors: &'a mut Vec<LoadError>) -> Ctx<'a> {
        let start = errors.len();
        Ctx {
            origin,
            prefix,
            errors,
            start,
        }
    }

    /// The full field path of `field` (relative to the object).
    pub fn path(&self, field: &str) -> String {
        match (self.prefix.is_empty(), field.is_empty() || field == "-") {
            (true, true) => "-".to_string(),
            (true, false) => field.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) if field.starts_with('[') => format!("{}{field}", self.prefix),
            (false, false) => format!("{}.{field}", self.prefix),
        }
    }

    pub fn err(&mut self, field: impl AsRef<str>, message: impl Into<String>) {
        let field = self.path(field.as_ref());
        self.errors.push(LoadError {
            origin: self.origin.clone(),
            field,
            message: message.into(),
        });
    }

    /// True if no error was recorded since this context was created.
    pub fn ok(&self) -> bool {
        self.errors.len() == self.start
    }
}

/// Kubernetes `IsValidPortName` (IANA_SVC_NAME): 1-15 characters of lower-case alphanumerics
/// and `-`, at least one letter, no leading, trailing or doubled `-`.
pub(crate) fn port_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        return Some("a port name must be 1 to 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("a port name may contain only lower-case letters, digits and '-'");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("a port name must contain at least one letter");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Some("a port name must not begin or end with '-' or contain '--'");
    }
    None
}

fn port_number(n: i64) -> Result<u16, String> {
    if (1..=65535).contains(&n) {
        Ok(n as u16)
    } else {
        Err(format!("port {n} is out of range: ports are 1 to 65535"))
    }
}

fn port_digits(s: &str) -> Result<u16, String> {
    match s.parse::<i64>() {
        Ok(n) => port_number(n),
        Err(_) => Err(format!("port {s:?} is out of range: ports are 1 to 65535")),
    }
}

/// A Calico rule port: a number, a string of digits, a range `"a:b"` or a port name.
pub(crate) fn parse_calico_port(p: &IntOrString) -> Result<PortSpec, String> {
    match p {
        IntOrString::Int(n) => port_number(*n).map(|p| PortSpec::Range(p, p)),
        IntOrString::Str(s) => {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return port_digits(s).map(|p| PortSpec::Range(p, p));
            }
            if let Some((a, b)) = s.split_once(':') {
                let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
                if !digits(a) || !digits(b) {
                    return Err(format!(
                        "invalid port range {s:?}: expected \"first:last\" with two port numbers, e.g. \"8000:8080\""
                    ));
                }
                let (lo, hi) = (port_digits(a)?, port_digits(b)?);
                if lo > hi {
                    return Err(format!(
                        "invalid port range {s:?}: the first port ({lo}) is greater than the last ({hi}); write \"{hi}:{lo}\""
                    ));
                }
                return Ok(PortSpec::Range(lo, hi));
            }
            match port_name_problem(s) {
                None => Ok(PortSpec::Named(s.clone())),
                Some(why) => Err(format!(
                    "invalid port {s:?}: expected a number 1-65535, a range \"first:last\" or a port name ({why})"
                )),
            }
        }
    }
}

/// A protocol as Calico accepts it in rules: a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite,
/// any case) or a number 1-255 (as an integer or a string of digits).
pub(crate) fn parse_protocol(p: &IntOrString) -> Result<Protocol, String> {
    const VALID: &str = "expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a protocol number 1-255";
    match p {
        IntOrString::Int(n) if (1..=255).contains(n) => Ok(Protocol(*n as u8)),
        IntOrString::Int(n) => Err(format!("invalid protocol {n}: {VALID}")),
        IntOrString::Str(s) => match Protocol::parse(s) {
            Some(Protocol(0)) | None => Err(format!("invalid protocol {s:?}: {VALID}")),
            Some(p) => Ok(p),
        },
    }
}

/// The protocols Calico accepts `ports`/`notPorts` with (`numorstring.Protocol.SupportsPorts`:
/// TCP, UDP and SCTP; not UDPLite).
pub(crate) fn calico_supports_ports(p: Protocol) -> bool {
    matches!(p, Protocol::TCP | Protocol::UDP | Protocol::SCTP)
}

pub(crate) fn protocol_name(p: Option<Protocol>) -> String {
    match p {
        Some(p) => format!("protocol is {p}"),
        None => "no protocol is set".to_string(),
    }
}

/// How a CIDR with host bits set (e.g. `10.0.0.1/8`) is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostBits {
    /// Rejected, naming the masked form (Calico rule `nets`: the `net` validator).
    Reject,
    /// Accepted and masked (Kubernetes ipBlock via Calico's converter, Calico network sets).
    Mask,
}

/// Parses a CIDR or, when `bare_ip` is set, a bare address meaning /32 or /128.
pub(crate) fn parse_net(s: &str, bare_ip: bool, host_bits: HostBits) -> Result<IpNet, String> {
    let example = if bare_ip {
        "an address or CIDR such as 10.0.0.0/8, 192.168.1.5 or fd00::/8"
    } else {
        "a CIDR such as 10.0.0.0/8 or fd00::/8"
    };
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) if bare_ip => IpNet::from(ip),
            Ok(_) => {
                return Err(format!(
                    "invalid CIDR {s:?}: a prefix length is required, e.g. {s}/{}",
                    if s.contains(':') { 128 } else { 32 }
                ));
            }
            Err(_) => return Err(format!("invalid CIDR {s:?}: expected {example}")),
        },
    };
    if net.trunc() != net {
        match host_bits {
            HostBits::Mask => return Ok(net.trunc()),
            HostBits::Reject => {
                return Err(format!(
                    "invalid network {s:?}: it has host bits set; write {} (or {} for the single address)",
                    net.trunc(),
                    IpNet::from(net.addr())
                ));
            }
        }
    }
    Ok(net)
}

/// Parses a Calico selector; the error names the column.
pub(crate) fn parse_selector(text: &str) -> Result<Selector, String> {
    Selector::parse(text).map_err(|e| {
        format!(
            "invalid selector {:?} at column {}: {}",
            e.input, e.column, e.message
        )
    })
}

/// Converts a Kubernetes label selector (`{}` is all).
pub(crate) fn label_selector(ls: &LabelSelector) -> Result<Selector, String> {
    let empty = ls.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && ls.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    if empty {
        return Ok(Selector::all());
    }
    Selector::from_label_selector(ls).map_err(|e| format!("invalid label selector: {}", e.message))
}

/// DNS-1123 label: 1-63 lower-case alphanumerics or `-`, starting and ending alphanumeric.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Kubernetes qualified name (label keys): `[prefix/]name`.
pub(crate) fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!(
            "label key {key:?}: the prefix before '/' must be a DNS subdomain (lower-case alphanumerics, '-' and '.')"
        ));
    }
    if let Some(why) = label_name_problem(name) {
        return Some(format!("label key {key:?}: {why}"));
    }
    None
}

pub(crate) fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    label_name_problem(value).map(|why| format!("label value {value:?}: {why}"))
}

fn label_name_problem(s: &str) -> Option<&'static str> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if s.is_empty() || s.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || !alnum(s.chars().next())
        || !alnum(s.chars().last())
    {
        return Some(
            "must consist of alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric",
        );
    }
    None
}

/// Checks label keys and values as the API server would, reporting under `field`.
pub(crate) fn check_labels(ctx: &mut Ctx<'_>, field: &str, labels: &crate::model::Labels) {
    for (k, v) in labels {
        if let Some(why) = label_key_problem(k) {
            ctx.err(format!("{field}.{k}"), why);
        }
        if let Some(why) = label_value_problem(v) {
            ctx.err(format!("{field}.{k}"), why);
        }
    }
}

/// Merges numeric port ranges the way Calico's `SimplifyPorts` does for converted Kubernetes
/// rules: named ports first (in input order), then the numeric ports as the fewest sorted
/// ranges. Left unchanged when there is at most one numeric port, as Calico does.
pub(crate) fn simplify_ports(ports: Vec<PortSpec>) -> Vec<PortSpec> {
    let numeric: Vec<(u16, u16)> = ports
        .iter()
        .filter_map(|p| match p {
            PortSpec::Range(a, b) => Some((*a, *b)),
            PortSpec::Named(_) => None,
        })
        .collect();
    let numeric_count: usize = numeric
        .iter()
        .map(|(a, b)| usize::from(*b) - usize::from(*a) + 1)
        .sum();
    if ports.len() <= 1 || numeric_count <= 1 {
        return ports;
    }
    let mut out: Vec<PortSpec> = ports
        .iter()
        .filter(|p| matches!(p, PortSpec::Named(_)))
        .cloned()
        .collect();
    let mut sorted = numeric;
    sorted.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (a, b) in sorted {
        match merged.last_mut() {
            Some((_, hi)) if u32::from(a) <= u32::from(*hi) + 1 => *hi = (*hi).max(b),
            _ => merged.push((a, b)),
        }
    }
    out.extend(merged.into_iter().map(|(a, b)| PortSpec::Range(a, b)));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        assert_eq!(port_name_problem("http"), None);
        assert_eq!(port_name_problem("h2c-8080"), None);
        assert!(port_name_problem("8080").is_some());
        assert!(port_name_problem("HTTP").is_some());
        assert!(port_name_problem("a-very-long-port-name").is_some());
        assert!(port_name_problem("-http").is_some());
        assert!(port_name_problem("ht--tp").is_some());
        assert!(port_name_problem("").is_some());
    }

    #[test]
    fn calico_ports() {
        let s = |x: &str| IntOrString::Str(x.to_string());
        assert_eq!(
            parse_calico_port(&IntOrString::Int(80)),
            Ok(PortSpec::Range(80, 80))
        );
        assert_eq!(parse_calico_port(&s("443")), Ok(PortSpec::Range(443, 443)));
        assert_eq!(
            parse_calico_port(&s("1000:2000")),
            Ok(PortSpec::Range(1000, 2000))
        );
        assert_eq!(
            parse_calico_port(&s("http")),
            Ok(PortSpec::Named("http".into()))
        );
        assert!(parse_calico_port(&IntOrString::Int(0)).is_err());
        assert!(parse_calico_port(&IntOrString::Int(65536)).is_err());
        assert!(
            parse_calico_port(&s("2000:1000"))
                .unwrap_err()
                .contains("greater")
        );
        assert!(
            parse_calico_port(&s("1:70000"))
                .unwrap_err()
                .contains("65535")
        );
        assert!(parse_calico_port(&s("a:b")).is_err());
        assert!(parse_calico_port(&s("Bad_Name")).is_err());
    }

    #[test]
    fn protocols() {
        let s = |x: &str| IntOrString::Str(x.to_string());
        assert_eq!(parse_protocol(&s("tcp")), Ok(Protocol::TCP));
        assert_eq!(parse_protocol(&s("ICMPv6")), Ok(Protocol::ICMPV6));
        assert_eq!(parse_protocol(&IntOrString::Int(47)), Ok(Protocol(47)));
        assert_eq!(parse_protocol(&s("47")), Ok(Protocol(47)));
        assert!(parse_protocol(&IntOrString::Int(0)).is_err());
        assert!(parse_protocol(&IntOrString::Int(256)).is_err());
        assert!(parse_protocol(&s("0")).is_err());
        assert!(parse_protocol(&s("gre")).is_err());
        assert!(parse_protocol(&s("any")).is_err());
    }

    #[test]
    fn nets() {
        assert_eq!(
            parse_net("10.0.0.0/8", true, HostBits::Reject)
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_net("10.1.2.3", true, HostBits::Reject)
                .unwrap()
                .to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            parse_net("fd00::1", true, HostBits::Reject)
                .unwrap()
                .to_string(),
            "fd00::1/128"
        );
        assert!(parse_net("10.1.2.3", false, HostBits::Mask).is_err());
        assert!(
            parse_net("10.0.0.1/8", true, HostBits::Reject)
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert_eq!(
            parse_net("10.0.0.1/8", false, HostBits::Mask)
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_net("10.0.0.0/33", true, HostBits::Mask).is_err());
        assert!(parse_net("banana", true, HostBits::Mask).is_err());
    }

    #[test]
    fn simplify() {
        let r = |a, b| PortSpec::Range(a, b);
        let n = |x: &str| PortSpec::Named(x.into());
        assert_eq!(
            simplify_ports(vec![
                r(82, 82),
                n("dns"),
                r(80, 80),
                r(81, 81),
                r(9090, 9090)
            ]),
            vec![n("dns"), r(80, 82), r(9090, 9090)]
        );
        // One numeric port: unchanged order.
        assert_eq!(
            simplify_ports(vec![r(80, 80), n("dns")]),
            vec![r(80, 80), n("dns")]
        );
        assert_eq!(
            simplify_ports(vec![r(1000, 2000), r(1500, 3000)]),
            vec![r(1000, 3000)]
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_label("my-ns"));
        assert!(!is_dns_label("My-ns"));
        assert!(!is_dns_label("a.b"));
        assert!(is_dns_subdomain("a.b"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(label_key_problem("app.kubernetes.io/name").is_none());
        assert!(label_key_problem("-bad").is_some());
        assert!(label_value_problem("").is_none());
        assert!(label_value_problem("has space").is_some());
    }
}
