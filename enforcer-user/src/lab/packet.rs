//! Crafted packets for the protocols the lab cannot send with ordinary sockets (ICMP and
//! ICMPv6 of any type and code, SCTP (this kernel has no SCTP sockets), UDPLite, any other
//! protocol number), and recognising them when they arrive.
//!
//! Packets are whole IP packets (the raw socket is `IPPROTO_RAW`, header included) with valid
//! checksums: the IPv4 header checksum, ICMP's, ICMPv6's and UDPLite's over the pseudo-header,
//! SCTP's CRC32c. Each carries a nonce so the receiver recognises exactly this probe.

use std::net::IpAddr;

use crate::model::Protocol;

/// Internet checksum (RFC 1071) of `data`, continuing from `initial` (unfolded sum).
fn sum16(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// The checksum of `l4` (whose checksum field is zero) with the pseudo-header of `src`,
/// `dst`, `protocol` and the upper-layer length `len`.
pub fn pseudo_checksum(src: IpAddr, dst: IpAddr, protocol: u8, len: usize, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            pseudo.extend_from_slice(&octets(src));
            pseudo.extend_from_slice(&octets(dst));
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
    }
    fold(sum16(l4, sum16(&pseudo, 0)))
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// CRC32c (Castagnoli, reflected, as SCTP uses it: RFC 9260 appendix A).
pub fn crc32c(data: &[u8]) -> u32 {
    const POLY: u32 = 0x82f6_3b78;
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// What goes into a crafted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crafted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Identifies the probe (also used as ICMP echo id/sequence and SCTP initiate tag).
    pub nonce: [u8; 16],
}

/// The transport part (the IP payload) of a crafted packet.
pub fn transport(c: &Crafted) -> Vec<u8> {
    let p = c.protocol.0;
    match c.protocol {
        Protocol::ICMP | Protocol::ICMPV6 => {
            // type, code, checksum, 4 bytes of "rest of header" (echo: id and sequence),
            // then the nonce as data.
            let mut m = vec![c.icmp_type, c.icmp_code, 0, 0];
            m.extend_from_slice(&c.nonce[..4]);
            m.extend_from_slice(&c.nonce);
            // ICMP has no pseudo-header; ICMPv6 has one (whatever the IP version: a
            // mismatched pairing is the user's probe, sent as asked).
            let sum = if c.protocol == Protocol::ICMPV6 {
                pseudo_checksum(c.src, c.dst, p, m.len(), &m)
            } else {
                checksum(&m)
            };
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            m
        }
        Protocol::SCTP => {
            // Common header (ports, verification tag 0 as an INIT requires, CRC32c), then an
            // INIT chunk whose initiate tag is the nonce's first word.
            let mut m = Vec::with_capacity(32);
            m.extend_from_slice(&c.src_port.to_be_bytes());
            m.extend_from_slice(&c.dst_port.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0]); // verification tag
            m.extend_from_slice(&[0, 0, 0, 0]); // checksum, filled below
            m.extend_from_slice(&[1, 0, 0, 20]); // INIT, flags, length 20
            let mut tag = [0u8; 4];
            tag.copy_from_slice(&c.nonce[..4]);
            if tag == [0; 4] {
                tag[3] = 1; // the initiate tag must not be 0
            }
            m.extend_from_slice(&tag);
            m.extend_from_slice(&65_535u32.to_be_bytes()); // a_rwnd
            m.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
            m.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
            m.extend_from_slice(&c.nonce[4..8]); // initial TSN
            let crc = crc32c(&m);
            // The CRC goes on the wire least significant byte first (RFC 9260 B).
            m[8..12].copy_from_slice(&crc.to_le_bytes());
            m
        }
        Protocol::UDPLITE | Protocol::UDP | Protocol::TCP => {
            // UDP-shaped header (UDPLite: checksum coverage 8 = the header only), then the
            // nonce. TCP and UDP are normally sent with real sockets; this shape only serves
            // arrival checks.
            let mut m = Vec::with_capacity(24);
            m.extend_from_slice(&c.src_port.to_be_bytes());
            m.extend_from_slice(&c.dst_port.to_be_bytes());
            let len_or_cov: u16 = if c.protocol == Protocol::UDPLITE {
                8
            } else {
                24
            };
            m.extend_from_slice(&len_or_cov.to_be_bytes());
            m.extend_from_slice(&[0, 0]);
            m.extend_from_slice(&c.nonce);
            let covered = if c.protocol == Protocol::UDPLITE {
                8
            } else {
                m.len()
            };
            let mut sum = pseudo_checksum(c.src, c.dst, p, m.len(), &m[..covered]);
            if sum == 0 {
                sum = 0xffff;
            }
            m[6..8].copy_from_slice(&sum.to_be_bytes());
            m
        }
        _ => c.nonce.to_vec(),
    }
}

/// A whole IP packet (IPv4 with a valid header checksum, or IPv6) around [`transport`].
pub fn ip_packet(c: &Crafted, ident: u16) -> Vec<u8> {
    let l4 = transport(c);
    match (c.src, c.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + l4.len();
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&(total as u16).to_be_bytes());
            h.extend_from_slice(&ident.to_be_bytes());
            h.extend_from_slice(&[0x40, 0]); // DF
            h.extend_from_slice(&[64, c.protocol.0, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let sum = checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            h.extend_from_slice(&l4);
            h
        }
        _ => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            h.extend_from_slice(&[c.protocol.0, 64]);
            h.extend_from_slice(&octets(c.src));
            h.extend_from_slice(&octets(c.dst));
            h.extend_from_slice(&l4);
            h
        }
    }
}

/// Whether an Ethernet frame is the crafted packet `c` (same addresses, protocol and nonce
/// material).
pub fn frame_matches(frame: &[u8], c: &Crafted) -> bool {
    if frame.len() < 14 {
        return false;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    ip_matches(ethertype, ip, c)
}

/// Whether an IP packet (after the link header) is the crafted packet `c`.
pub fn ip_matches(ethertype: u16, ip: &[u8], c: &Crafted) -> bool {
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, &[u8]) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < ihl {
                return false;
            }
            let s: [u8; 4] = [ip[12], ip[13], ip[14], ip[15]];
            let d: [u8; 4] = [ip[16], ip[17], ip[18], ip[19]];
            (ip[9], IpAddr::from(s), IpAddr::from(d), &ip[ihl..])
        }
        0x86dd if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            (ip[6], IpAddr::from(s), IpAddr::from(d), &ip[40..])
        }
        _ => return false,
    };
    if proto != c.protocol.0 || src != c.src || dst != c.dst {
        return false;
    }
    let expected = transport(c);
    // The whole transport part must be there, byte for byte, except checksums a device
    // might have rewritten (none here, but be lenient on them).
    if l4.len() < expected.len() {
        return false;
    }
    let skip: &[usize] = match c.protocol {
        Protocol::ICMP | Protocol::ICMPV6 => &[2, 3],
        Protocol::SCTP => &[8, 9, 10, 11],
        Protocol::UDPLITE | Protocol::UDP | Protocol::TCP => &[6, 7],
        _ => &[],
    };
    expected
        .iter()
        .zip(l4)
        .enumerate()
        .all(|(i, (a, b))| a == b || skip.contains(&i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answers() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let c = Crafted {
            src: "198.18.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            dst: "198.18.0.2".parse().unwrap_or_else(|e| panic!("{e}")),
            protocol: Protocol::SCTP,
            src_port: 40000,
            dst_port: 7777,
            icmp_type: 0,
            icmp_code: 0,
            nonce: [7; 16],
        };
        let p = ip_packet(&c, 1);
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(p.len(), 20 + 32);
        // SCTP CRC: recompute with the field zeroed.
        let mut l4 = p[20..].to_vec();
        let wire = u32::from_le_bytes([l4[8], l4[9], l4[10], l4[11]]);
        l4[8..12].fill(0);
        assert_eq!(crc32c(&l4), wire);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&p);
        assert!(frame_matches(&frame, &c));
        let other = Crafted {
            dst_port: 7778,
            ..c
        };
        assert!(!frame_matches(&frame, &other));
    }

    #[test]
    fn icmp_checksums_verify() {
        let v4 = Crafted {
            src: "198.18.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            dst: "198.18.0.2".parse().unwrap_or_else(|e| panic!("{e}")),
            protocol: Protocol::ICMP,
            src_port: 0,
            dst_port: 0,
            icmp_type: 8,
            icmp_code: 0,
            nonce: [3; 16],
        };
        assert_eq!(checksum(&transport(&v4)), 0);
        let v6 = Crafted {
            src: "fd00:198:18::1".parse().unwrap_or_else(|e| panic!("{e}")),
            dst: "fd00:198:18::2".parse().unwrap_or_else(|e| panic!("{e}")),
            protocol: Protocol::ICMPV6,
            icmp_type: 128,
            ..v4
        };
        let m = transport(&v6);
        assert_eq!(pseudo_checksum(v6.src, v6.dst, 58, m.len(), &m), 0);
        let p = ip_packet(&v6, 0);
        assert_eq!(p.len(), 40 + m.len());
        assert!(ip_matches(0x86dd, &p, &v6));
        assert!(!ip_matches(0x0800, &p, &v6));
    }
}
