//! Helpers for the privileged integration tests (`tests/differential_bpf.rs`,
//! `tests/netns_datapath.rs`); `testgen` feature (and `cfg(test)`).
//!
//! - [`require_privileged`]: the tests FAIL, never skip, when not root or when this build embeds
//!   the stub eBPF object.
//! - [`PinBase`]: a unique pin base under `/sys/fs/bpf`, removed (with every pin under it,
//!   which detaches pinned links) on drop, also when the test panics.
//! - [`in_netns`]: runs a closure on a thread that entered a named network namespace
//!   (`setns(2)` changes only that thread; sockets it creates stay in the namespace).
//! - [`frame`]: crafted packets (IPv4 with a valid header checksum, IPv6, and
//!   TCP/UDP/UDPLite/SCTP/ICMP/ICMPv6 headers with valid checksums) for
//!   `BPF_PROG_TEST_RUN` and for raw and `AF_PACKET` sockets.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{datapath::OpenOptions, ebpf_object};

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Fails (never skips) when a privileged test cannot do its job: it must prove the datapath,
/// not pass vacuously on a machine that cannot run it.
pub fn require_privileged() {
    let euid = effective_uid();
    assert!(
        euid == 0,
        "privileged test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for setns); \
         effective uid is {euid}. Run `cargo xtask test` as root."
    );
    if let Err(e) = ebpf_object::object() {
        panic!("privileged test cannot run: {e}");
    }
}

/// `<prefix>-<pid>-<n>`, unique on this machine while the process lives.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pin base of one test, `/sys/fs/bpf/enforcer-<tag>-<pid>-<n>`; removed with everything
/// under it on drop (unpinning the links detaches the programs from their interfaces).
#[derive(Debug)]
pub struct PinBase(PathBuf);

impl PinBase {
    /// A fresh, not yet existing, pin base named after `tag`.
    pub fn new(tag: &str) -> PinBase {
        let path = Path::new("/sys/fs/bpf").join(unique(&format!("enforcer-{tag}")));
        assert!(!path.exists(), "{} exists already", path.display());
        PinBase(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Options for a fresh load under this base.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            force_fresh: true,
            ..OpenOptions::new(&self.0)
        }
    }
}

impl Drop for PinBase {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.0)
        {
            eprintln!("cleanup: removing {}: {e}", self.0.display());
        }
    }
}

/// Runs `f` on a scoped thread inside the named network namespace (`ip netns` name) and
/// returns its result; a panic in `f` is resumed here.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = Path::new("/run/netns").join(ns);
    let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace descriptor we hold; it changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into {ns}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Crafted packets.
pub mod frame {
    use std::net::IpAddr;

    use crate::{evaluator::Packet, model::Protocol};

    pub const ETH_P_IP: u16 = 0x0800;
    pub const ETH_P_IPV6: u16 = 0x86dd;
    pub const TCP_FIN: u8 = 0x01;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_RST: u8 = 0x04;
    pub const TCP_ACK: u8 = 0x10;
    /// IPv4 "don't fragment" in the flags/offset word.
    pub const IPV4_DF: u16 = 0x4000;
    /// IPv4 "more fragments".
    pub const IPV4_MF: u16 = 0x2000;
    /// The MAC Calico (and the lab) gives every host-side veth.
    pub const HOST_SIDE_MAC: [u8; 6] = [0xee; 6];
    /// A locally administered MAC for crafted sources.
    pub const CRAFTED_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    /// IPv6 next-header values the datapath walks as extension headers (hop-by-hop,
    /// routing, fragment, AH, destination options): a packet cannot carry them as its
    /// upper-layer protocol.
    pub const IPV6_EXTENSION_HEADERS: &[u8] = &[0, 43, 44, 51, 60];

    /// The internet checksum (RFC 1071) of `bytes`.
    pub fn checksum(bytes: &[u8]) -> u16 {
        !fold(sum(bytes, 0))
    }

    fn sum(bytes: &[u8], mut acc: u32) -> u32 {
        for c in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        acc
    }

    fn fold(mut s: u32) -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn octets(a: IpAddr) -> Vec<u8> {
        match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The transport checksum over the IPv4/IPv6 pseudo-header and `l4` (whose checksum
    /// field must be zero).
    pub fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, l4: &[u8]) -> u16 {
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(&octets(src));
        pseudo.extend_from_slice(&octets(dst));
        if dst.is_ipv4() {
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        } else {
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
        let c = !fold(sum(l4, sum(&pseudo, 0)));
        // UDP sends a computed zero as 0xffff (zero means "no checksum").
        if c == 0 && protocol == 17 { 0xffff } else { c }
    }

    /// An Ethernet frame.
    pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An IPv4 header; [`V4::packet`] builds the packet.
    #[derive(Debug, Clone)]
    pub struct V4 {
        pub src: [u8; 4],
        pub dst: [u8; 4],
        pub protocol: u8,
        pub ident: u16,
        /// Flags and fragment offset (in 8-byte units).
        pub frag: u16,
        pub options: Vec<u8>,
        /// Overrides the IHL field (malformed packets).
        pub ihl: Option<u8>,
        /// Overrides the total length field (malformed packets).
        pub total_len: Option<u16>,
    }

    impl V4 {
        pub fn new(src: [u8; 4], dst: [u8; 4], protocol: u8) -> V4 {
            V4 {
                src,
                dst,
                protocol,
                ident: 0x1234,
                frag: IPV4_DF,
                options: Vec::new(),
                ihl: None,
                total_len: None,
            }
        }

        /// The IPv4 packet: this header (valid checksum) followed by `payload`.
        pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
            let header_len = 20 + self.options.len();
            let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
            let total = self
                .total_len
                .unwrap_or((header_len + payload.len()) as u16);
            let mut ip = vec![0x40 | (ihl & 0x0f), 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&self.ident.to_be_bytes());
            ip.extend_from_slice(&self.frag.to_be_bytes());
            ip.extend_from_slice(&[64, self.protocol, 0, 0]);
            ip.extend_from_slice(&self.src);
            ip.extend_from_slice(&self.dst);
            ip.extend_from_slice(&self.options);
            let csum = checksum(&ip);
            ip[10..12].copy_from_slice(&csum.to_be_bytes());
            ip.extend_from_slice(payload);
            ip
        }
    }

    /// An IPv6 packet (no extension headers).
    pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[next, 64]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(payload);
        ip
    }

    /// Transport bytes for `protocol` between `src` and `dst`, `payload` after the header,
    /// with checksums: TCP (20-byte header with `tcp_flags`), UDP and UDPLite (8), SCTP
    /// (12-byte common header), ICMP in IPv4 and ICMPv6 in IPv6 (type, code, checksum, id,
    /// sequence). Any other protocol (ICMP in IPv6, ICMPv6 in IPv4 included) is `payload`
    /// alone.
    #[allow(clippy::too_many_arguments)]
    pub fn transport(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
        icmp: (u8, u8),
        tcp_flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let v6 = dst.is_ipv6();
        let mut h = Vec::with_capacity(20 + payload.len());
        let ports = |h: &mut Vec<u8>| {
            h.extend_from_slice(&src_port.to_be_bytes());
            h.extend_from_slice(&dst_port.to_be_bytes());
        };
        match protocol {
            6 => {
                ports(&mut h);
                h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff]);
                h.extend_from_slice(&[0, 0, 0, 0]);
                h.extend_from_slice(payload);
                let c = l4_checksum(src, dst, protocol, &h);
                h[16..18].copy_from_slice(&c.to_be_bytes());
            }
            17 | 136 => {
                ports(&mut h);
                // UDPLite: checksum coverage 0 means the whole datagram.
                let len = if protocol == 17 {
                    (8 + payload.len()) as u16
                } else {
                    0
                };
                h.extend_from_slice(&len.to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(payload);
                let c = l4_checksum(src, dst, protocol, &h);
                h[6..8].copy_from_slice(&c.to_be_bytes());
            }
            132 => {
                ports(&mut h);
                // Verification tag and CRC32c left zero: nothing on our path checks them.
                h.extend_from_slice(&[0; 8]);
                h.extend_from_slice(payload);
            }
            1 if !v6 => {
                h.extend_from_slice(&[icmp.0, icmp.1, 0, 0, 0x12, 0x34, 0, 1]);
                h.extend_from_slice(payload);
                let c = checksum(&h);
                h[2..4].copy_from_slice(&c.to_be_bytes());
            }
            58 if v6 => {
                h.extend_from_slice(&[icmp.0, icmp.1, 0, 0, 0x12, 0x34, 0, 1]);
                h.extend_from_slice(payload);
                let c = l4_checksum(src, dst, protocol, &h);
                h[2..4].copy_from_slice(&c.to_be_bytes());
            }
            _ => h.extend_from_slice(payload),
        }
        h
    }

    /// The IP packet (no Ethernet header) a [`Packet`] describes, as the first packet of a
    /// flow with `tcp_flags` (see [`first_packet_flags`]) and `payload` after the transport
    /// header. `None` when no real packet looks like that: an IPv6 packet whose "protocol"
    /// is an extension header, or mixed address families.
    pub fn ip_packet(p: &Packet, tcp_flags: u8, payload: &[u8]) -> Option<Vec<u8>> {
        let proto = p.protocol.0;
        let l4 = transport(
            p.src,
            p.dst,
            proto,
            p.src_port.unwrap_or(0),
            p.dst_port.unwrap_or(0),
            (p.icmp_type.unwrap_or(0), p.icmp_code.unwrap_or(0)),
            tcp_flags,
            payload,
        );
        match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                Some(V4::new(s.octets(), d.octets(), proto).packet(&l4))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) if !IPV6_EXTENSION_HEADERS.contains(&proto) => {
                Some(ipv6(s.octets(), d.octets(), proto, &l4))
            }
            _ => None,
        }
    }

    /// [`ip_packet`] in an Ethernet frame (to [`HOST_SIDE_MAC`], from [`CRAFTED_MAC`]).
    pub fn packet_frame(p: &Packet, tcp_flags: u8, payload: &[u8]) -> Option<Vec<u8>> {
        let ip = ip_packet(p, tcp_flags, payload)?;
        let ether_type = if p.dst.is_ipv6() {
            ETH_P_IPV6
        } else {
            ETH_P_IP
        };
        Some(ethernet(HOST_SIDE_MAC, CRAFTED_MAC, ether_type, &ip))
    }

    /// The TCP flags of a flow's first packet: SYN for TCP, none otherwise.
    pub fn first_packet_flags(protocol: Protocol) -> u8 {
        if protocol == Protocol::TCP {
            TCP_SYN
        } else {
            0
        }
    }

    /// A hex dump, 16 bytes a line, for failure reports.
    pub fn hex(bytes: &[u8]) -> String {
        bytes
            .chunks(16)
            .map(|c| {
                c.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ipv4_header_checksum_verifies() {
            let ip = V4::new([10, 0, 0, 1], [10, 0, 0, 2], 17).packet(&[0; 8]);
            assert_eq!(checksum(&ip[..20]), 0);
        }

        #[test]
        fn udp_checksum_is_over_the_pseudo_header() {
            let s = IpAddr::from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            let d = IpAddr::from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            let l4 = transport(s, d, 17, 1000, 53, (0, 0), 0, b"hello");
            let mut zeroed = l4.clone();
            zeroed[6..8].copy_from_slice(&[0, 0]);
            assert_eq!(
                l4_checksum(s, d, 17, &zeroed),
                u16::from_be_bytes([l4[6], l4[7]])
            );
            assert_ne!(u16::from_be_bytes([l4[6], l4[7]]), 0);
        }
    }
}
