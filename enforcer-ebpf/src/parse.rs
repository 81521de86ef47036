//! Header parsing: Ethernet, IPv4 (with options), IPv6 (with extension headers), and the
//! transport words policy and conntrack need.
//!
//! Every read is a fixed-size copy ([`load`]): straight from the linear packet data when the
//! bytes are there (the common case), else through `bpf_skb_load_bytes`, so non-linear skbs
//! (GRO/GSO on veth) parse like linear ones. Each read is first checked against the end of
//! the IP packet the headers declare, so Ethernet padding after the packet is never mistaken
//! for a header, and a header the packet does not hold makes it unparseable.

use aya_ebpf::programs::TcContext;

/// The frame is shorter than its headers claim, or a header field is impossible.
pub(crate) struct Unparseable;

pub(crate) enum Parsed {
    /// Not IPv4 or IPv6 (ARP, ...).
    NonIp,
    /// A fragment other than the first: no transport header.
    LaterFragment,
    Flow(Flow),
}

/// What the datapath needs from an IP packet.
#[derive(Clone, Copy)]
pub(crate) struct Flow {
    /// 4 or 6.
    pub family: u8,
    /// IPv4 protocol / the IPv6 header after the extension headers.
    pub protocol: u8,
    /// TCP flags byte (FIN, SYN, RST, PSH, ACK, ...); 0 for other protocols.
    pub tcp_flags: u8,
    /// Addresses in network order; IPv4 in the first 4 bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order; TCP, UDP, UDPLite and SCTP only, else 0 (ICMP included: conntrack keys
    /// carry no ICMP identifiers).
    pub src_port: u16,
    pub dst_port: u16,
    /// The destination "port" the `PORTS` lookup uses: the destination port, or for
    /// ICMP/ICMPv6 `type << 8 | code`.
    pub policy_port: u16,
}

impl Flow {
    /// ICMP for IPv4, ICMPv6 for IPv6.
    #[inline(always)]
    pub(crate) fn is_icmp(&self) -> bool {
        is_icmp(self.family, self.protocol)
    }
}

#[inline(always)]
pub(crate) fn is_icmp(family: u8, protocol: u8) -> bool {
    (family == 4 && protocol == IPPROTO_ICMP) || (family == 6 && protocol == IPPROTO_ICMPV6)
}

pub(crate) const ETH_HLEN: u32 = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_MIN_HLEN: u32 = 20;
const IPV6_HLEN: u32 = 40;
/// Fragment offset bits of the IPv4 `frag_off` field.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// Fragment offset bits of the IPv6 fragment header's offset word.
const IPV6_OFFSET_MASK: u16 = 0xfff8;

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
pub(crate) const IPPROTO_SCTP: u8 = 132;
pub(crate) const IPPROTO_UDPLITE: u8 = 136;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// IPv6 extension headers walked before giving up (and dropping the packet as
/// unparseable): enough for any sane packet, bounded for the verifier.
pub(crate) const MAX_IPV6_EXT_HEADERS: u32 = 8;

/// Fixed header bytes required per transport protocol: a packet cut inside them is
/// unparseable.
const TCP_MIN_HLEN: u32 = 20;
const UDP_HLEN: u32 = 8;
const SCTP_COMMON_HLEN: u32 = 12;
const ICMP_MIN_HLEN: u32 = 4;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// `N` bytes at `offset`, which must end by `end` (the IP packet's end).
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: u32, end: u32) -> Result<[u8; N], Unparseable> {
    if offset + N as u32 > end {
        return Err(Unparseable);
    }
    let at = ctx.data() + offset as usize;
    if at + N <= ctx.data_end() {
        // SAFETY: [at, at + N) lies inside the linear packet data, checked just above the
        // way the verifier wants it; [u8; N] has alignment 1.
        return Ok(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) });
    }
    // Not in the linear part (a GRO/GSO skb's frags): copy through the helper.
    ctx.load::<[u8; N]>(offset as usize)
        .map_err(|_| Unparseable)
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// Size of a GSO packet's segments; nonzero only for GSO super-packets, whose IP length
/// field may be 0 (BIG TCP: packets above 64 KiB).
#[inline(always)]
fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: `gso_size` is a readable `__sk_buff` field for tc programs.
    unsafe { (*ctx.skb.skb).gso_size }
}

#[inline(always)]
pub(crate) fn parse(ctx: &TcContext) -> Result<Parsed, Unparseable> {
    let skb_len = ctx.len();
    let eth = match load::<2>(ctx, 12, skb_len) {
        Ok(ether_type) => be16(ether_type[0], ether_type[1]),
        // Shorter than an Ethernet header: not an IP packet we could judge.
        Err(_) => return Ok(Parsed::NonIp),
    };
    match eth {
        ETH_P_IP => parse_ipv4(ctx, skb_len),
        ETH_P_IPV6 => parse_ipv6(ctx, skb_len),
        _ => Ok(Parsed::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, skb_len: u32) -> Result<Parsed, Unparseable> {
    let ip = load::<20>(ctx, ETH_HLEN, skb_len)?;
    if ip[0] >> 4 != 4 {
        return Err(Unparseable);
    }
    let header_len = u32::from(ip[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(Unparseable);
    }
    let total_len = u32::from(be16(ip[2], ip[3]));
    let ip_end = if total_len == 0 && gso_size(ctx) != 0 {
        skb_len
    } else {
        if total_len < header_len || ETH_HLEN + total_len > skb_len {
            return Err(Unparseable);
        }
        ETH_HLEN + total_len
    };
    let l4 = ETH_HLEN + header_len;
    if l4 > ip_end {
        return Err(Unparseable);
    }
    if be16(ip[6], ip[7]) & IPV4_OFFSET_MASK != 0 {
        return Ok(Parsed::LaterFragment);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&ip[12..16]);
    dst[..4].copy_from_slice(&ip[16..20]);
    transport(ctx, 4, ip[9], l4, ip_end, src, dst)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, skb_len: u32) -> Result<Parsed, Unparseable> {
    let ip = load::<40>(ctx, ETH_HLEN, skb_len)?;
    if ip[0] >> 4 != 6 {
        return Err(Unparseable);
    }
    let payload_len = u32::from(be16(ip[4], ip[5]));
    let ip_end = if payload_len == 0 && gso_size(ctx) != 0 {
        skb_len
    } else {
        let end = ETH_HLEN + IPV6_HLEN + payload_len;
        if end > skb_len {
            return Err(Unparseable);
        }
        end
    };

    let mut next = ip[6];
    let mut offset = ETH_HLEN + IPV6_HLEN;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let h = load::<2>(ctx, offset, ip_end)?;
                next = h[0];
                offset += (u32::from(h[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                let h = load::<2>(ctx, offset, ip_end)?;
                next = h[0];
                offset += (u32::from(h[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let h = load::<4>(ctx, offset, ip_end)?;
                if be16(h[2], h[3]) & IPV6_OFFSET_MASK != 0 {
                    return Ok(Parsed::LaterFragment);
                }
                next = h[0];
                offset += 8;
            }
            _ => break,
        }
        walked += 1;
    }
    if is_ipv6_extension(next) {
        // More extension headers than we walk: no transport header to judge.
        return Err(Unparseable);
    }
    if offset > ip_end {
        return Err(Unparseable);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    dst.copy_from_slice(&ip[24..40]);
    transport(ctx, 6, next, offset, ip_end, src, dst)
}

#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

#[inline(always)]
fn transport(
    ctx: &TcContext,
    family: u8,
    protocol: u8,
    l4: u32,
    ip_end: u32,
    src: [u8; 16],
    dst: [u8; 16],
) -> Result<Parsed, Unparseable> {
    let mut flow = Flow {
        family,
        protocol,
        tcp_flags: 0,
        src,
        dst,
        src_port: 0,
        dst_port: 0,
        policy_port: 0,
    };
    match protocol {
        IPPROTO_TCP => {
            // The 20 fixed bytes: ports, and the flags conntrack follows.
            let h = load::<{ TCP_MIN_HLEN as usize }>(ctx, l4, ip_end)?;
            if u32::from(h[12] >> 4) * 4 < TCP_MIN_HLEN {
                return Err(Unparseable);
            }
            flow.src_port = be16(h[0], h[1]);
            flow.dst_port = be16(h[2], h[3]);
            flow.tcp_flags = h[13];
        }
        IPPROTO_UDP | IPPROTO_UDPLITE => {
            let h = load::<{ UDP_HLEN as usize }>(ctx, l4, ip_end)?;
            flow.src_port = be16(h[0], h[1]);
            flow.dst_port = be16(h[2], h[3]);
        }
        IPPROTO_SCTP => {
            let h = load::<{ SCTP_COMMON_HLEN as usize }>(ctx, l4, ip_end)?;
            flow.src_port = be16(h[0], h[1]);
            flow.dst_port = be16(h[2], h[3]);
        }
        _ if is_icmp(family, protocol) => {
            let h = load::<{ ICMP_MIN_HLEN as usize }>(ctx, l4, ip_end)?;
            flow.policy_port = be16(h[0], h[1]);
            return Ok(Parsed::Flow(flow));
        }
        // Other protocols (GRE, ESP, ICMP inside IPv6, ...): judged with port 0.
        _ => {}
    }
    flow.policy_port = flow.dst_port;
    Ok(Parsed::Flow(flow))
}
