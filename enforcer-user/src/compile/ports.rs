//! Port cells: per protocol, the elementary intervals of the destination "port" (the port,
//! or `type << 8 | code` for ICMP and ICMPv6) and, when any rule constrains source ports, of
//! the source port, cut at every boundary a rule, a named port or a failsafe port puts there.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    evaluator::Options,
    model::{Inventory, PortSpec, Protocol},
};

/// The protocols that carry ports.
pub(crate) const PORT_PROTOCOLS: [u8; 4] = [6, 17, 132, 136];

pub(crate) fn is_icmp(proto: u8) -> bool {
    proto == Protocol::ICMP.0 || proto == Protocol::ICMPV6.0
}

/// ICMP in IPv4 or ICMPv6 in IPv6: the protocols whose type and code the datapath reads.
pub(crate) fn is_family_icmp(proto: u8, v6: bool) -> bool {
    proto
        == if v6 {
            Protocol::ICMPV6.0
        } else {
            Protocol::ICMP.0
        }
}

/// One elementary destination interval. `proto == None` is the shared interval of every
/// protocol no rule names (the "other protocol" class, looked up as a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DstInterval {
    pub proto: Option<u8>,
    pub lo: u16,
    pub hi: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SrcInterval {
    pub proto: u8,
    pub lo: u16,
    pub hi: u16,
}

/// A cell of the port dimension: one destination interval and, for port protocols when
/// source ports matter, one source interval; with the header fields of a packet in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Combo {
    pub dst: usize,
    pub src: Option<usize>,
    pub protocol: Protocol,
    pub dst_port: Option<u16>,
    pub src_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

pub(crate) struct PortSpace {
    pub dst: Vec<DstInterval>,
    pub src: Vec<SrcInterval>,
    pub combos: Vec<Combo>,
    pub uses_src_ports: bool,
}

fn intervals(cuts: Option<&BTreeSet<u32>>) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut lo: u32 = 0;
    for &c in cuts.into_iter().flatten() {
        if c > lo && c <= 0xffff {
            out.push((lo as u16, (c - 1) as u16));
            lo = c;
        }
    }
    out.push((lo as u16, 0xffff));
    out
}

fn packet_fields(
    proto: u8,
    dst_value: u16,
    src_value: u16,
) -> (Option<u16>, Option<u16>, Option<u8>, Option<u8>) {
    if Protocol(proto).has_ports() {
        (Some(dst_value), Some(src_value), None, None)
    } else if is_icmp(proto) {
        (
            None,
            None,
            Some((dst_value >> 8) as u8),
            Some((dst_value & 0xff) as u8),
        )
    } else {
        (None, None, None, None)
    }
}

impl PortSpace {
    pub fn build(inv: &Inventory, opts: &Options, has_hosts: bool) -> PortSpace {
        let mut named: HashMap<&str, Vec<(u8, u16)>> = HashMap::new();
        let pod_ports = inv
            .pods
            .iter()
            .filter(|p| !p.host_network)
            .flat_map(|p| &p.ports);
        for np in pod_ports.chain(inv.host_endpoints.iter().flat_map(|h| &h.ports)) {
            if !np.name.is_empty() {
                named
                    .entry(np.name.as_str())
                    .or_default()
                    .push((np.protocol.0, np.port));
            }
        }
        let mut distinguished: BTreeSet<u8> = BTreeSet::new();
        let mut dst_cuts: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
        let mut src_cuts: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
        let mut icmp_cuts: BTreeSet<u32> = BTreeSet::new();
        let mut uses_ports = false;
        let mut uses_src_ports = false;
        let mut uses_icmp = false;
        let cut = |cuts: &mut BTreeMap<u8, BTreeSet<u32>>, proto: u8, lo: u16, hi: u16| {
            let c = cuts.entry(proto).or_default();
            c.insert(u32::from(lo));
            c.insert(u32::from(hi) + 1);
        };
        for p in &inv.policies {
            for r in p.ingress.iter().chain(&p.egress) {
                distinguished.extend(r.protocol.iter().chain(&r.not_protocol).map(|p| p.0));
                for icmp in r.icmp.iter().chain(&r.not_icmp) {
                    uses_icmp = true;
                    let t = u32::from(icmp.icmp_type) << 8;
                    match icmp.code {
                        None => {
                            icmp_cuts.insert(t);
                            icmp_cuts.insert(t + 256);
                        }
                        Some(c) => {
                            icmp_cuts.insert(t | u32::from(c));
                            icmp_cuts.insert((t | u32::from(c)) + 1);
                        }
                    }
                }
                let protos: Vec<u8> = match r.protocol {
                    Some(q) if q.has_ports() => vec![q.0],
                    Some(_) => Vec::new(),
                    None => PORT_PROTOCOLS.to_vec(),
                };
                for (er, is_src) in [(&r.destination, false), (&r.source, true)] {
                    let specs: Vec<&PortSpec> = er.ports.iter().chain(&er.not_ports).collect();
                    if specs.is_empty() {
                        continue;
                    }
                    uses_ports = true;
                    uses_src_ports |= is_src;
                    let cuts = if is_src { &mut src_cuts } else { &mut dst_cuts };
                    for spec in specs {
                        match spec {
                            PortSpec::Range(a, b) => {
                                for &q in &protos {
                                    cut(cuts, q, *a, *b);
                                }
                            }
                            PortSpec::Named(n) => {
                                for &(q, port) in named.get(n.as_str()).into_iter().flatten() {
                                    if Protocol(q).has_ports() {
                                        cut(cuts, q, port, port);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if has_hosts {
            for &(proto, port) in opts.failsafe.inbound.iter().chain(&opts.failsafe.outbound) {
                if proto.has_ports() {
                    distinguished.insert(proto.0);
                    cut(&mut dst_cuts, proto.0, port, port);
                }
            }
        }
        if uses_ports {
            distinguished.extend(PORT_PROTOCOLS);
        }
        if uses_icmp {
            distinguished.extend([Protocol::ICMP.0, Protocol::ICMPV6.0]);
        }
        let other_protocol = (0..=255u8).find(|p| !distinguished.contains(p));

        let mut dst = Vec::new();
        let mut src = Vec::new();
        let mut combos = Vec::new();
        let push_dst = |dst: &mut Vec<DstInterval>, proto: Option<u8>, lo, hi| {
            dst.push(DstInterval { proto, lo, hi });
            dst.len() - 1
        };
        if let Some(o) = other_protocol {
            let i = push_dst(&mut dst, None, 0, 0xffff);
            let (dp, sp, it, ic) = packet_fields(o, 0, 0);
            combos.push(Combo {
                dst: i,
                src: None,
                protocol: Protocol(o),
                dst_port: dp,
                src_port: sp,
                icmp_type: it,
                icmp_code: ic,
            });
        }
        for &proto in &distinguished {
            let has_ports = Protocol(proto).has_ports();
            let dst_ivs = if has_ports {
                intervals(dst_cuts.get(&proto))
            } else if is_icmp(proto) {
                intervals(Some(&icmp_cuts))
            } else {
                intervals(None)
            };
            let src_ids: Vec<usize> = if uses_src_ports && has_ports {
                intervals(src_cuts.get(&proto))
                    .into_iter()
                    .map(|(lo, hi)| {
                        src.push(SrcInterval { proto, lo, hi });
                        src.len() - 1
                    })
                    .collect()
            } else {
                Vec::new()
            };
            for (lo, hi) in dst_ivs {
                let i = push_dst(&mut dst, Some(proto), lo, hi);
                let srcs: Vec<Option<usize>> = if src_ids.is_empty() {
                    vec![None]
                } else {
                    src_ids.iter().map(|&j| Some(j)).collect()
                };
                for j in srcs {
                    let src_lo = j.and_then(|j| src.get(j)).map_or(0, |s| s.lo);
                    let (dp, sp, it, ic) = packet_fields(proto, lo, src_lo);
                    combos.push(Combo {
                        dst: i,
                        src: j,
                        protocol: Protocol(proto),
                        dst_port: dp,
                        src_port: sp,
                        icmp_type: it,
                        icmp_code: ic,
                    });
                }
            }
        }
        PortSpace {
            dst,
            src,
            combos,
            uses_src_ports,
        }
    }
}

/// The fewest prefixes of the 16-bit space covering `lo..=hi` exactly: (first port, prefix
/// length 0..=16). At most 30.
pub fn interval_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let mut s = u32::from(lo);
    let e = u32::from(hi);
    while s <= e {
        let mut k = if s == 0 {
            16
        } else {
            s.trailing_zeros().min(16)
        };
        while s + (1u32 << k) - 1 > e {
            k -= 1;
        }
        out.push((s as u16, (16 - k) as u8));
        s += 1u32 << k;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_exactly() {
        for (lo, hi) in [
            (0u16, 65535u16),
            (1, 65534),
            (80, 80),
            (1000, 2000),
            (0, 0),
            (65535, 65535),
            (1, 1024),
        ] {
            let ps = interval_prefixes(lo, hi);
            assert!(ps.len() <= 30, "{lo}-{hi}: {}", ps.len());
            let mut covered = 0u32;
            for (p, len) in &ps {
                let size = 1u32 << (16 - u32::from(*len));
                assert_eq!(u32::from(*p) % size, 0, "aligned");
                covered += size;
                assert!(
                    u32::from(*p) >= u32::from(lo) && u32::from(*p) + size - 1 <= u32::from(hi)
                );
            }
            assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1);
        }
        assert_eq!(interval_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(interval_prefixes(1, 65534).len(), 30);
    }

    #[test]
    fn elementary_intervals() {
        let cuts: BTreeSet<u32> = [0, 80, 81, 65536].into_iter().collect();
        assert_eq!(intervals(Some(&cuts)), vec![(0, 79), (80, 80), (81, 65535)]);
        assert_eq!(intervals(None), vec![(0, 65535)]);
    }
}
