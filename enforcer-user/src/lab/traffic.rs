//! Real traffic: listeners in the hosts' namespaces and the probes sent between them.
//!
//! * TCP: `connect` with a short timeout. Connected, or refused (an RST: the SYN reached the
//!   destination and the answer came back), is *allow*; no answer in time is *deny*.
//! * UDP: one datagram to an echo listener; the echo back (or an ICMP port unreachable, which
//!   also proves arrival) is *allow*; silence is *deny*.
//! * Everything else (ICMP and ICMPv6 of any type and code, SCTP, UDPLite, any protocol
//!   number): a crafted IP packet from a raw socket in the source namespace, and an `AF_PACKET`
//!   socket in the destination namespace watching for its *arrival*. Arrival is what policy
//!   decides; what the destination's kernel does next (answer an echo, reject SCTP it does
//!   not speak) does not matter.
//!
//! Sockets are created on a thread that entered the namespace ([`in_netns`]) and then used from
//! anywhere: a socket stays in the namespace it was created in.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{BuildHasher, RandomState},
    io::{self, Read as _},
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};

use super::{
    LabError,
    netns::in_netns,
    packet::{Crafted, frame_matches, ip_packet},
};
use crate::{evaluator::Verdict, model::Protocol};

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, 4.20+): do not see our own transmissions.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `ETH_P_ALL`.
const ETH_P_ALL: u16 = 0x0003;

/// A listener to open: TCP (accept and close) or UDP (echo), on every address of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenSpec {
    pub netns: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// Running listeners: one thread serves every socket (sockets keep their namespaces).
/// Dropping it stops the thread and closes the sockets.
#[derive(Debug)]
pub struct Listeners {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// How many sockets are served.
    pub count: usize,
}

impl Listeners {
    /// Opens every listener (dual-stack `[::]:port`) and starts serving.
    pub fn start(specs: &BTreeSet<ListenSpec>) -> Result<Listeners, LabError> {
        let mut by_ns: HashMap<&str, Vec<&ListenSpec>> = HashMap::new();
        for s in specs {
            if s.port != 0 && matches!(s.protocol, Protocol::TCP | Protocol::UDP) {
                by_ns.entry(s.netns.as_str()).or_default().push(s);
            }
        }
        let mut sockets: Vec<(Socket, Protocol)> = Vec::new();
        for (ns, list) in by_ns {
            let opened = in_netns(ns, || {
                let mut out = Vec::new();
                for s in &list {
                    let ty = if s.protocol == Protocol::TCP {
                        Type::STREAM
                    } else {
                        Type::DGRAM
                    };
                    let sock = Socket::new(Domain::IPV6, ty, None)?;
                    sock.set_only_v6(false)?;
                    sock.set_reuse_address(true)?;
                    let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), s.port);
                    sock.bind(&addr.into()).map_err(|e| {
                        io::Error::new(e.kind(), format!("{} port {}: {e}", s.protocol, s.port))
                    })?;
                    if s.protocol == Protocol::TCP {
                        sock.listen(128)?;
                    }
                    sock.set_nonblocking(true)?;
                    out.push((sock, s.protocol));
                }
                Ok(out)
            })?;
            sockets.extend(opened);
        }
        let count = sockets.len();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lab-listeners".to_string())
            .spawn(move || serve(sockets, &flag))
            .map_err(|e| LabError::Setup {
                step: "starting the listener thread".to_string(),
                message: e.to_string(),
            })?;
        Ok(Listeners {
            stop,
            thread: Some(thread),
            count,
        })
    }

    /// Stops serving and closes every socket.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(sockets: Vec<(Socket, Protocol)>, stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|(s, _)| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        for (pfd, (sock, proto)) in fds.iter_mut().zip(&sockets) {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            if *proto == Protocol::TCP {
                // Accept and close: the handshake is what the probe checks.
                while let Ok((conn, _)) = sock.accept() {
                    drop(conn);
                }
            } else {
                while let Ok((len, from)) = sock.recv_from(&mut buf) {
                    // SAFETY: recv_from initialised the first `len` bytes.
                    let data: Vec<u8> = buf[..len]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    let _ = sock.send_to(&data, &from);
                }
            }
        }
    }
}

/// One probe as sent: resolved addresses and the namespaces they live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src_netns: String,
    pub dst_netns: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: u8,
    pub icmp_code: u8,
}

/// What one attempt observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub verdict: Verdict,
    /// How: `connected`, `refused`, `echoed`, `arrived`, `timeout`, an error.
    pub detail: String,
}

impl Observation {
    fn allow(detail: impl Into<String>) -> Observation {
        Observation {
            verdict: Verdict::Allow,
            detail: detail.into(),
        }
    }
    fn deny(detail: impl Into<String>) -> Observation {
        Observation {
            verdict: Verdict::Deny,
            detail: detail.into(),
        }
    }
}

/// Sends one probe and observes whether it got through within `timeout`.
pub fn send(p: &Flow, timeout: Duration) -> Result<Observation, LabError> {
    match p.protocol {
        Protocol::TCP => tcp(p, timeout),
        Protocol::UDP => udp(p, timeout),
        _ => raw(p, timeout),
    }
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn bound_socket(p: &Flow, ty: Type) -> Result<Socket, LabError> {
    let (src, dst, sport) = (p.src, p.dst, p.src_port.unwrap_or(0));
    in_netns(&p.src_netns, move || {
        let s = Socket::new(Domain::for_address(SocketAddr::new(dst, 0)), ty, None)?;
        s.set_reuse_address(true)?;
        // The evaluator's source address, in case the host has several of this family.
        let local = if src == unspecified(src) {
            unspecified(dst)
        } else {
            src
        };
        s.bind(&SocketAddr::new(local, sport).into())?;
        Ok(s)
    })
}

fn tcp(p: &Flow, timeout: Duration) -> Result<Observation, LabError> {
    let port = p.dst_port.unwrap_or(0);
    let sock = bound_socket(p, Type::STREAM)?;
    let dst = SocketAddr::new(p.dst, port);
    Ok(match sock.connect_timeout(&dst.into(), timeout) {
        Ok(()) => {
            // Close with an RST: no TIME_WAIT left on the client's 4-tuple.
            let _ = sock.set_linger(Some(Duration::ZERO));
            Observation::allow("connected")
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Observation::allow("refused (the SYN arrived; nothing listens)")
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Observation::deny(format!("no answer in {} ms", timeout.as_millis()))
        }
        Err(e) => Observation::deny(format!("connect failed: {e}")),
    })
}

fn udp(p: &Flow, timeout: Duration) -> Result<Observation, LabError> {
    let port = p.dst_port.unwrap_or(0);
    let sock = bound_socket(p, Type::DGRAM)?;
    let dst = SocketAddr::new(p.dst, port);
    let io_err = |step: &str, e: io::Error| LabError::Setup {
        step: format!("UDP probe {} -> {dst}: {step}", p.src),
        message: e.to_string(),
    };
    sock.connect(&dst.into())
        .map_err(|e| io_err("connect", e))?;
    let payload = nonce();
    sock.send(&payload).map_err(|e| io_err("send", e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Observation::deny(format!(
                "no echo in {} ms",
                timeout.as_millis()
            )));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| io_err("set timeout", e))?;
        match (&sock).read(&mut buf) {
            Ok(n) if buf[..n] == payload => return Ok(Observation::allow("echoed")),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Ok(Observation::allow(
                    "port unreachable (the datagram arrived; nothing listens)",
                ));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Ok(Observation::deny(format!("receive failed: {e}"))),
        }
    }
}

fn raw(p: &Flow, timeout: Duration) -> Result<Observation, LabError> {
    let n = nonce();
    let sport = p
        .src_port
        .unwrap_or_else(|| 32_768 + u16::from_be_bytes([n[0], n[1]]) % 28_000);
    let crafted = Crafted {
        src: p.src,
        dst: p.dst,
        protocol: p.protocol,
        src_port: sport,
        dst_port: p.dst_port.unwrap_or(0),
        icmp_type: p.icmp_type,
        icmp_code: p.icmp_code,
        nonce: n,
    };
    // Watch first, then send.
    let watcher = in_netns(&p.dst_netns, || {
        let s = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(i32::from(ETH_P_ALL.to_be()).into()),
        )?;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    })?;
    let sender = in_netns(&p.src_netns, || {
        Socket::new(
            Domain::for_address(SocketAddr::new(p.dst, 0)),
            Type::RAW,
            Some(libc::IPPROTO_RAW.into()),
        )
    })?;
    let packet = ip_packet(&crafted, u16::from_be_bytes([n[2], n[3]]));
    if let Err(e) = sender.send_to(&packet, &SocketAddr::new(p.dst, 0).into()) {
        return Ok(Observation::deny(format!("send failed: {e}")));
    }
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Observation::deny(format!(
                "did not arrive in {} ms",
                timeout.as_millis()
            )));
        }
        watcher
            .set_read_timeout(Some(left))
            .map_err(|e| LabError::Setup {
                step: "packet socket timeout".to_string(),
                message: e.to_string(),
            })?;
        match (&watcher).read(&mut buf) {
            Ok(len) if frame_matches(&buf[..len], &crafted) => {
                return Ok(Observation::allow("arrived"));
            }
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Observation::deny(format!("packet socket: {e}"))),
        }
    }
}

/// 16 unpredictable bytes (per-process random keys, a counter and the clock).
pub fn nonce() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    let a = RandomState::new().hash_one((c, t));
    let b = RandomState::new().hash_one((t, c, a));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}
