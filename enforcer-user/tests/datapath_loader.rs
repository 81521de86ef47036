//! The userspace datapath (`enforcer_user::datapath`) against the real kernel: pinning and
//! adopting, tcx attach/detach with pinned links, slot flips, capacity checks, and one
//! end-to-end check that programmed tables reach packets.
//!
//! Privileged: every test FAILS (never skips) when not root or when this binary embeds the stub
//! object. Tests share the kernel and bpffs, so they serialise on a process-wide mutex.
//!
//! Isolation: each test pins under its own base `/sys/fs/bpf/enforcer-test-<pid>-<n>/` and
//! creates its own network namespaces `enforcer-t-<pid>-<n>-<role>` with `ip netns add`; drop
//! guards remove exactly those, even when the test panics. Interfaces live inside the test
//! namespaces, so their names need not be unique. Work that must see a namespace's interfaces
//! (attach, `if_nametoindex`, tcx queries, sockets) runs on a scoped thread that `setns(2)`s
//! into it: a network namespace switch affects only the calling thread, which then ends, so
//! the test process itself never changes namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    fs::File,
    net::UdpSocket,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType, loaded_programs};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DENY, ANY, CONFIG_FAIL_CLOSED, CONFIG_SRC_PORTS, DIR_EGRESS, EndpointKey,
    EndpointValue, LAYOUT_VERSION, PORT_KIND_DST, VerdictKey, VerdictValue, maps,
};
use enforcer_user::{
    compile::{LpmEntry, MapEntries},
    datapath::{
        Datapath, DatapathError, Hook, LoadReason, OpenOptions, Origin, netif,
        paths::{ALL_MAPS, ALL_PROGRAMS},
    },
    ebpf_object,
};

static KERNEL: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("reading /proc/self/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status"))
}

/// Serialises the test and fails (never skips) when it cannot do its job.
fn privileged() -> MutexGuard<'static, ()> {
    let guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    let euid = effective_uid();
    assert!(
        euid == 0,
        "privileged test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for setns); effective \
         uid is {euid}. Run `cargo xtask test` as root."
    );
    if let Err(e) = ebpf_object::object() {
        panic!("privileged test cannot run: {e}");
    }
    guard
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pin base of this test; removed (with every pin under it) on drop.
struct PinBase(PathBuf);

impl PinBase {
    fn new() -> PinBase {
        PinBase(PathBuf::from("/sys/fs/bpf").join(unique("enforcer-test")))
    }
    fn opts(&self) -> OpenOptions {
        OpenOptions::new(&self.0)
    }
    fn open(&self) -> Datapath {
        Datapath::open(self.opts()).unwrap_or_else(|e| panic!("Datapath::open: {e}"))
    }
    fn layout(&self) -> PathBuf {
        self.0.join(format!("v{LAYOUT_VERSION}"))
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

/// A network namespace created by this test; deleted on drop (with its interfaces).
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("{}-{role}", unique("enforcer-t"));
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.0);
        thread::scope(|s| {
            let handle = s.spawn(|| {
                let file =
                    File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                // SAFETY: setns on a namespace descriptor we hold; it changes only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {}: {}",
                    self.0,
                    std::io::Error::last_os_error()
                );
                f()
            });
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip").args(["netns", "del", &self.0]).output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("cleanup: could not delete netns {}", self.0);
        }
    }
}

const HOST_IF: &str = "veth-h";
const POD_IF: &str = "veth-p";
const HOST_ADDR: [u8; 4] = [10, 99, 0, 1];
const POD_ADDR: [u8; 4] = [10, 99, 0, 2];

/// `host` holds `veth-h` (10.99.0.1/24, where programs attach); `pod` holds its peer `veth-p`
/// (10.99.0.2/24). Returns veth-h's ifindex.
fn veth_pair(host: &Netns, pod: &Netns) -> u32 {
    ip(&[
        "-n", &host.0, "link", "add", HOST_IF, "type", "veth", "peer", "name", POD_IF, "netns",
        &pod.0,
    ]);
    ip(&["-n", &host.0, "addr", "add", "10.99.0.1/24", "dev", HOST_IF]);
    ip(&["-n", &pod.0, "addr", "add", "10.99.0.2/24", "dev", POD_IF]);
    ip(&["-n", &host.0, "link", "set", HOST_IF, "up"]);
    ip(&["-n", &pod.0, "link", "set", POD_IF, "up"]);
    host.run(|| netif::ifindex(HOST_IF).unwrap_or_else(|| panic!("{HOST_IF} missing")))
}

/// Program ids attached at `hook` of `ifname`, queried inside the current thread's namespace.
fn tcx_programs(ifname: &str, hook: TcAttachType) -> Vec<u32> {
    let (_, progs) = SchedClassifier::query_tcx(ifname, hook)
        .unwrap_or_else(|e| panic!("query_tcx {ifname}: {e:?}"));
    progs.iter().map(|p| p.id()).collect()
}

fn loaded_program_ids() -> Vec<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// A table set for one endpoint on `ifindex`: catch-all peer and port classes (the datapath
/// denies on a trie miss) and a set default `action` decided by `rule`. Rendered for slot 0;
/// the writer re-slots it.
fn tables(ifindex: u32, action: u8, rule: u32, extra_verdicts: u32) -> MapEntries {
    let slot = 0;
    let mut m = MapEntries {
        slot,
        ..MapEntries::default()
    };
    m.endpoints.insert(
        EndpointKey { slot, ifindex },
        EndpointValue {
            ingress_set: 1,
            egress_set: 1,
            flags: 0,
            _pad: 0,
        },
    );
    m.peer_v4.push(LpmEntry {
        prefix_len: 32,
        data: [0; 8],
        class: 0,
    });
    m.peer_v6.push(LpmEntry {
        prefix_len: 32,
        data: [0; 20],
        class: 0,
    });
    m.ports.push(LpmEntry {
        prefix_len: 40,
        data: [0, 0, 0, 0, PORT_KIND_DST, 0, 0, 0],
        class: 0,
    });
    let verdict = |action, rule_id| VerdictValue {
        action,
        staged_action: action,
        rule_id,
        staged_rule_id: rule_id,
        ..VerdictValue::default()
    };
    m.verdicts.insert(
        VerdictKey {
            slot,
            set: 1,
            peer_class: ANY,
            port_class: ANY,
        },
        verdict(action, rule),
    );
    for i in 0..extra_verdicts {
        m.verdicts.insert(
            VerdictKey {
                slot,
                set: 1,
                peer_class: 100 + i,
                port_class: ANY,
            },
            verdict(ACTION_ALLOW, 1000 + i),
        );
    }
    m
}

/// `m` as the datapath stores it in `slot`.
fn reslotted(m: &MapEntries, slot: u32) -> MapEntries {
    let s = slot.to_be_bytes();
    let mut out = m.clone();
    out.slot = slot;
    out.endpoints = m
        .endpoints
        .iter()
        .map(|(k, v)| (EndpointKey { slot, ..*k }, *v))
        .collect();
    out.verdicts = m
        .verdicts
        .iter()
        .map(|(k, v)| (VerdictKey { slot, ..*k }, *v))
        .collect();
    for e in &mut out.peer_v4 {
        e.data[..4].copy_from_slice(&s);
    }
    for e in &mut out.peer_v6 {
        e.data[..4].copy_from_slice(&s);
    }
    for e in &mut out.ports {
        e.data[..4].copy_from_slice(&s);
    }
    out
}

fn empty(slot: u32) -> MapEntries {
    MapEntries {
        slot,
        ..MapEntries::default()
    }
}

/// Compares as the maps return them (LPM entries sorted by data, then prefix length).
fn normalized(mut m: MapEntries) -> MapEntries {
    m.peer_v4.sort_by_key(|e| (e.data, e.prefix_len));
    m.peer_v6.sort_by_key(|e| (e.data, e.prefix_len));
    m.ports.sort_by_key(|e| (e.data, e.prefix_len));
    m
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn privileged_open_pins_everything_and_a_reopen_adopts() {
    let _k = privileged();
    let base = PinBase::new();

    let dp = base.open();
    assert_eq!(
        dp.origin(),
        &Origin::Loaded {
            reason: LoadReason::NoPins,
            relinked: 0,
            pruned: 0
        }
    );
    for name in ALL_MAPS {
        let p = base.layout().join("maps").join(name);
        assert!(p.exists(), "{} not pinned", p.display());
    }
    for name in ALL_PROGRAMS {
        let p = base.layout().join("progs").join(name);
        assert!(p.exists(), "{} not pinned", p.display());
    }
    assert!(base.layout().join("links").is_dir());
    let ids = dp.program_ids().unwrap();
    let map_ids = dp.map_ids().to_vec();
    assert_eq!(map_ids.len(), ALL_MAPS.len());
    let cfg = dp.config().unwrap();
    assert_eq!((cfg.active_slot, cfg.generation, cfg.flags), (0, 0, 0));
    drop(dp);

    // Pinned programs outlive the process's handles.
    let loaded = loaded_program_ids();
    assert!(loaded.contains(&ids.from_endpoint) && loaded.contains(&ids.to_endpoint));

    let dp = base.open();
    assert!(dp.adopted(), "{:?}", dp.origin());
    assert_eq!(dp.program_ids().unwrap(), ids, "adopting must not reload");
    assert_eq!(dp.map_ids(), map_ids.as_slice());
    drop(dp);

    let adopted = Datapath::adopt(&base.0).unwrap();
    assert!(adopted.adopted());
    drop(adopted);

    let mut opts = base.opts();
    opts.force_fresh = true;
    let dp = Datapath::open(opts).unwrap();
    assert!(matches!(
        dp.origin(),
        Origin::Loaded {
            reason: LoadReason::ForceFresh,
            ..
        }
    ));
    let fresh = dp.program_ids().unwrap();
    assert_ne!(fresh.from_endpoint, ids.from_endpoint);
    assert_ne!(fresh.to_endpoint, ids.to_endpoint);
    drop(dp);
    let loaded = loaded_program_ids();
    assert!(
        !loaded.contains(&ids.from_endpoint),
        "the replaced programs were unpinned and unloaded"
    );
}

#[test]
fn privileged_incomplete_pins_are_reloaded_and_missing_pins_refused_by_adopt() {
    let _k = privileged();
    let base = PinBase::new();
    let err = Datapath::adopt(&base.0).expect_err("nothing pinned yet");
    assert!(matches!(err, DatapathError::NotPinned { .. }), "{err}");
    assert!(err.to_string().contains("start the agent"), "{err}");

    drop(base.open());
    std::fs::remove_file(base.layout().join("maps").join(maps::VERDICTS)).unwrap();
    let dp = base.open();
    let Origin::Loaded {
        reason: LoadReason::Incomplete { missing },
        ..
    } = dp.origin()
    else {
        panic!("expected a reload, got {:?}", dp.origin());
    };
    assert_eq!(missing, &vec![format!("maps/{}", maps::VERDICTS)]);
    assert!(base.layout().join("maps").join(maps::VERDICTS).exists());
}

#[test]
fn privileged_non_bpffs_pin_base_is_refused_with_the_mount_hint() {
    let _k = privileged();
    let err = Datapath::open(OpenOptions::new(
        std::env::temp_dir().join(unique("enforcer-pins")),
    ))
    .expect_err("a tmpfs pin base must be refused");
    assert!(matches!(err, DatapathError::NotBpffs { .. }), "{err}");
    assert!(
        err.to_string().contains("mount -t bpf bpf /sys/fs/bpf"),
        "{err}"
    );
}

#[test]
fn privileged_attach_pins_links_idempotently_and_detach_removes_them() {
    let _k = privileged();
    let host = Netns::new("host");
    let pod = Netns::new("pod");
    let base = PinBase::new();
    let ifindex = veth_pair(&host, &pod);

    host.run(|| {
        let mut dp = base.open();
        let ids = dp.program_ids().unwrap();
        let a = dp.attach(HOST_IF).unwrap();
        assert_eq!(a.ifindex, ifindex);
        assert_eq!(a.new_hooks, vec![Hook::TcIngress, Hook::TcEgress]);
        for suffix in ["ingress", "egress"] {
            let p = base
                .layout()
                .join("links")
                .join(format!("{ifindex}-{suffix}"));
            assert!(p.exists(), "{} not pinned", p.display());
        }
        assert_eq!(
            tcx_programs(HOST_IF, TcAttachType::Ingress),
            vec![ids.from_endpoint]
        );
        assert_eq!(
            tcx_programs(HOST_IF, TcAttachType::Egress),
            vec![ids.to_endpoint]
        );

        // Idempotent, by name or by index.
        assert!(dp.attach(HOST_IF).unwrap().new_hooks.is_empty());
        assert!(dp.attach(ifindex).unwrap().new_hooks.is_empty());
        assert_eq!(tcx_programs(HOST_IF, TcAttachType::Ingress).len(), 1);

        let attached = dp.attached().unwrap();
        assert_eq!(attached.len(), 2);
        for l in &attached {
            assert!(l.alive, "{l:?}");
            assert_eq!(l.ifindex, ifindex);
            assert_eq!(l.ifname.as_deref(), Some(HOST_IF));
            let want = match l.hook {
                Hook::TcIngress => ids.from_endpoint,
                Hook::TcEgress => ids.to_endpoint,
            };
            assert_eq!(l.program_id, want);
        }

        // Links are pinned: they outlive the handle, and a new process adopts them.
        drop(dp);
        assert_eq!(
            tcx_programs(HOST_IF, TcAttachType::Ingress),
            vec![ids.from_endpoint]
        );
        let dp = base.open();
        assert!(dp.adopted());
        assert_eq!(dp.attached().unwrap().len(), 2);
        drop(dp);

        // A forced reload moves the pinned links to the new programs in place.
        let mut opts = base.opts();
        opts.force_fresh = true;
        let mut dp = Datapath::open(opts).unwrap();
        assert!(
            matches!(
                dp.origin(),
                Origin::Loaded {
                    reason: LoadReason::ForceFresh,
                    relinked: 2,
                    pruned: 0
                }
            ),
            "{:?}",
            dp.origin()
        );
        let fresh = dp.program_ids().unwrap();
        assert_ne!(fresh, ids);
        assert_eq!(
            tcx_programs(HOST_IF, TcAttachType::Ingress),
            vec![fresh.from_endpoint]
        );
        assert_eq!(
            tcx_programs(HOST_IF, TcAttachType::Egress),
            vec![fresh.to_endpoint]
        );

        let detached = dp.detach(ifindex).unwrap();
        assert_eq!(detached, vec![Hook::TcIngress, Hook::TcEgress]);
        assert!(tcx_programs(HOST_IF, TcAttachType::Ingress).is_empty());
        assert!(tcx_programs(HOST_IF, TcAttachType::Egress).is_empty());
        assert!(dp.attached().unwrap().is_empty());
        assert!(
            dp.detach(ifindex).unwrap().is_empty(),
            "detach is idempotent"
        );

        // Links of a deleted interface are reported dead and pruned.
        dp.attach(HOST_IF).unwrap();
        ip(&["-n", &host.0, "link", "del", HOST_IF]);
        let attached = dp.attached().unwrap();
        assert_eq!(attached.len(), 2);
        assert!(
            attached.iter().all(|l| !l.alive && l.ifname.is_none()),
            "{attached:?}"
        );
        assert_eq!(dp.prune_defunct_links().unwrap().len(), 2);
        assert!(dp.attached().unwrap().is_empty());

        let err = dp.attach("nonexistent0").expect_err("no such interface");
        assert!(err.to_string().contains("nonexistent0"), "{err}");
    });
}

#[test]
fn privileged_program_flips_slots_and_keeps_both_resident() {
    let _k = privileged();
    let base = PinBase::new();
    let mut dp = base.open();

    let a = tables(7, ACTION_DENY, 1, 3);
    let r = dp.program(&a).unwrap();
    assert_eq!((r.previous.active_slot, r.previous.generation), (0, 0));
    assert_eq!((r.config.active_slot, r.config.generation), (1, 1));
    assert!(
        r.missing_catch_alls.is_empty(),
        "{:?}",
        r.missing_catch_alls
    );
    assert_eq!(
        normalized(dp.entries(1).unwrap()),
        normalized(reslotted(&a, 1))
    );
    assert_eq!(dp.entries(0).unwrap(), empty(0));

    let mut b = tables(8, ACTION_ALLOW, 2, 1);
    b.config_flags = CONFIG_SRC_PORTS;
    let r = dp.program(&b).unwrap();
    assert_eq!((r.config.active_slot, r.config.generation), (0, 2));
    assert!(r.config.src_ports);
    assert_eq!(
        (r.written, r.deleted),
        (1 + 1 + 1 + 1 + 2, 0),
        "slot 0 held nothing: every entry is written"
    );
    assert_eq!(
        normalized(dp.entries(0).unwrap()),
        normalized(reslotted(&b, 0))
    );
    // Slot 1 keeps its tables (the base of the next write).
    assert_eq!(
        normalized(dp.entries(1).unwrap()),
        normalized(MapEntries {
            config_flags: CONFIG_SRC_PORTS,
            ..reslotted(&a, 1)
        })
    );
    assert_eq!(
        normalized(dp.active_entries().unwrap()),
        normalized(reslotted(&b, 0))
    );

    // Operator flags survive flips; table flags follow the tables.
    let c = dp.set_flags(true, true).unwrap();
    assert_eq!((c.active_slot, c.generation), (0, 2));
    assert_eq!(c.flags, CONFIG_FAIL_CLOSED | CONFIG_SRC_PORTS);
    let r = dp.program(&a).unwrap();
    assert_eq!(r.config.flags, CONFIG_FAIL_CLOSED);
    assert_eq!((r.config.active_slot, r.config.generation), (1, 3));
    assert!(!r.unchanged);
    assert_eq!(
        (r.written, r.deleted),
        (0, 0),
        "slot 1 already holds a: only the flip"
    );

    // A new process sees the same state.
    drop(dp);
    let dp = base.open();
    assert!(dp.adopted());
    assert_eq!(dp.config().unwrap().generation, 3);
    assert_eq!(
        normalized(dp.entries(1).unwrap()),
        normalized(reslotted(&a, 1))
    );
    assert_eq!(
        normalized(dp.entries(0).unwrap()).verdicts,
        reslotted(&b, 0).verdicts
    );
}

#[test]
fn privileged_leftovers_of_an_interrupted_write_are_cleared() {
    let _k = privileged();
    let base = PinBase::new();
    let mut dp = base.open();
    dp.program(&tables(7, ACTION_DENY, 1, 0)).unwrap(); // active slot 1
    drop(dp);

    // Another writer died half-way through writing slot 0: put entries there by hand.
    {
        let path = base.layout().join("maps").join(maps::VERDICTS);
        let map = aya::maps::MapData::from_pin(&path).unwrap();
        let mut verdicts: aya::maps::HashMap<_, VerdictKey, VerdictValue> =
            aya::maps::Map::from_map_data(map)
                .unwrap()
                .try_into()
                .unwrap();
        for i in 0..5 {
            let key = VerdictKey {
                slot: 0,
                set: 9,
                peer_class: i,
                port_class: ANY,
            };
            verdicts.insert(key, VerdictValue::default(), 0).unwrap();
        }
    }
    let mut dp = base.open();
    assert_eq!(dp.entries(0).unwrap().verdicts.len(), 5);
    let next = tables(7, ACTION_ALLOW, 2, 0);
    let r = dp.program(&next).unwrap();
    assert!(r.read_back, "a new process reads both slots back");
    assert_eq!(r.deleted, 5, "the leftovers are deleted");
    assert_eq!(
        normalized(dp.entries(0).unwrap()),
        normalized(reslotted(&next, 0))
    );
}

/// `m` with verdict `(set 1, peer_class, ANY)` given `rule_id`.
fn with_rule(m: &MapEntries, peer_class: u32, rule_id: u32) -> MapEntries {
    let mut m = m.clone();
    let key = VerdictKey {
        slot: 0,
        set: 1,
        peer_class,
        port_class: ANY,
    };
    let v = m
        .verdicts
        .get_mut(&key)
        .unwrap_or_else(|| panic!("no verdict {key:?}"));
    v.rule_id = rule_id;
    v.staged_rule_id = rule_id;
    m
}

/// Both slots stay resident: a write changes only what differs from the inactive slot, which
/// holds the tables of two writes ago.
#[test]
fn privileged_program_writes_only_what_changed() {
    let _k = privileged();
    let base = PinBase::new();
    let mut dp = base.open();
    let total = 1 + 1 + 1 + 1 + 5_001;

    // A into slot 1 (empty): everything.
    let a = tables(7, ACTION_DENY, 1, 5_000);
    let r = dp.program(&a).unwrap();
    assert!(r.read_back, "a new handle reads both slots back first");
    assert_eq!((r.config.active_slot, r.config.generation), (1, 1));
    assert_eq!((r.written, r.deleted), (total, 0));

    // B = A + one changed verdict, into slot 0, which held nothing: its first fill.
    let b = with_rule(&a, 100, 7);
    let r = dp.program(&b).unwrap();
    assert_eq!((r.config.active_slot, r.config.generation), (0, 2));
    assert_eq!((r.written, r.deleted), (total, 0));

    // C = B + one more change, into slot 1, which holds A: the two verdicts that differ.
    let c = with_rule(&b, 101, 8);
    let r = dp.program(&c).unwrap();
    assert!(!r.read_back && !r.unchanged);
    assert_eq!((r.config.active_slot, r.config.generation), (1, 3));
    assert_eq!((r.written, r.deleted), (2, 0));
    let v = r.maps.iter().find(|m| m.map == maps::VERDICTS).unwrap();
    assert_eq!((v.written, v.deleted, v.entries), (2, 0, 5_001));
    assert_eq!(
        normalized(dp.entries(1).unwrap()),
        normalized(reslotted(&c, 1))
    );
    assert_eq!(
        normalized(dp.entries(0).unwrap()).verdicts,
        reslotted(&b, 0).verdicts,
        "slot 0 keeps B"
    );

    // D = C minus one verdict, into slot 0 (holds B): 101 differs, 102 goes.
    let mut d = c.clone();
    d.verdicts.remove(&VerdictKey {
        slot: 0,
        set: 1,
        peer_class: 102,
        port_class: ANY,
    });
    let r = dp.program(&d).unwrap();
    assert_eq!((r.config.active_slot, r.config.generation), (0, 4));
    assert_eq!((r.written, r.deleted), (1, 1));
    assert_eq!(
        normalized(dp.entries(0).unwrap()),
        normalized(reslotted(&d, 0))
    );

    // The same tables again: nothing written, no flip, no generation bump.
    let r = dp.program(&d).unwrap();
    assert!(r.unchanged);
    assert_eq!((r.written, r.deleted), (0, 0));
    assert_eq!(r.config, r.previous);
    assert_eq!(dp.config().unwrap().generation, 4);

    // A new process reads the slots back and still writes only the difference with slot 1
    // (which holds C: 102 goes, 103 changes).
    drop(dp);
    let mut dp = base.open();
    let e = with_rule(&d, 103, 9);
    let r = dp.program(&e).unwrap();
    assert!(r.read_back);
    assert_eq!((r.config.active_slot, r.config.generation), (1, 5));
    assert_eq!((r.written, r.deleted), (1, 1));
    assert_eq!(
        normalized(dp.entries(1).unwrap()),
        normalized(reslotted(&e, 1))
    );
}

/// Prints what a one-verdict change costs once the tables hold 100k verdicts (informational:
/// debug builds are slower than release).
#[test]
fn privileged_a_one_entry_change_at_100k_entries_is_timed() {
    let _k = privileged();
    let base = PinBase::new();
    let mut dp = base.open();
    let a = tables(7, ACTION_DENY, 1, 100_000);
    let r = dp.program(&a).unwrap();
    eprintln!(
        "100k: first write (slot 1): {} entries in {:.1} ms",
        r.written,
        r.elapsed.as_secs_f64() * 1e3
    );
    let b = with_rule(&a, 100, 7);
    let r = dp.program(&b).unwrap();
    eprintln!(
        "100k: second write (slot 0's first fill): {} entries in {:.1} ms",
        r.written,
        r.elapsed.as_secs_f64() * 1e3
    );
    let mut last = b;
    for (i, peer_class) in (101..106).enumerate() {
        let next = with_rule(&last, peer_class, 7);
        // Changes are not back to back: the flip grace period (5 ms) since the previous
        // write has passed, so the write does not wait for it.
        thread::sleep(Duration::from_millis(10));
        let started = std::time::Instant::now();
        let r = dp.program(&next).unwrap();
        let wall = started.elapsed();
        // The inactive slot lags by two writes: this change and the previous one.
        assert_eq!((r.written, r.deleted), (2, 0), "write {i}");
        eprintln!(
            "100k: one-verdict change: {} written, {} deleted, program() {:.2} ms \
             (report {:.2} ms)",
            r.written,
            r.deleted,
            wall.as_secs_f64() * 1e3,
            r.elapsed.as_secs_f64() * 1e3
        );
        last = next;
    }
    assert_eq!(
        normalized(dp.active_entries().unwrap()).verdicts.len(),
        100_001
    );
}

#[test]
fn privileged_capacity_error_names_the_map_and_keeps_the_old_policy() {
    let _k = privileged();
    let base = PinBase::new();
    let mut opts = base.opts();
    opts.limits.verdicts = 6;
    let mut dp = Datapath::open(opts).unwrap();
    let a = tables(7, ACTION_DENY, 1, 2); // 3 verdicts
    dp.program(&a).unwrap();
    let before = dp.config().unwrap();

    let b = tables(7, ACTION_ALLOW, 2, 3); // 4 verdicts + 3 active > 6
    let err = dp
        .program(&b)
        .expect_err("4 + 3 verdicts must not fit in 6");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DatapathError::Capacity {
                map: maps::VERDICTS,
                needed: 4,
                in_active: 3,
                max: 6
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(maps::VERDICTS) && msg.contains("old policy stays in force"),
        "{msg}"
    );
    assert_eq!(dp.config().unwrap(), before);
    assert_eq!(
        normalized(dp.entries(1).unwrap()),
        normalized(reslotted(&a, 1))
    );
    assert_eq!(dp.entries(0).unwrap(), empty(0));

    // What fits still goes through.
    dp.program(&tables(7, ACTION_ALLOW, 2, 1)).unwrap();
}

#[test]
fn privileged_programmed_tables_reach_packets() {
    let _k = privileged();
    let host = Netns::new("host");
    let pod = Netns::new("pod");
    let base = PinBase::new();
    let ifindex = veth_pair(&host, &pod);

    let receiver = host.run(|| {
        let s = UdpSocket::bind(("10.99.0.1", 9999)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    let sender = pod.run(|| UdpSocket::bind(("10.99.0.2", 0)).unwrap());
    // Sends one datagram pod → host; whether it arrived.
    let probe = |payload: &[u8]| -> bool {
        sender.send_to(payload, ("10.99.0.1", 9999)).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match receiver.recv_from(&mut buf) {
                Ok((n, _)) if &buf[..n] == payload => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };

    let mut dp = host.run(|| {
        let mut dp = base.open();
        dp.attach(HOST_IF).unwrap();
        dp
    });
    // Liveness does not depend on the caller's namespace (this thread is in the root one).
    let links = dp.attached().unwrap();
    assert_eq!(links.len(), 2);
    assert!(links.iter().all(|l| l.alive), "{links:?}");
    let mut events = dp.events().unwrap();
    events.drain();
    // Warm ARP while no endpoint is programmed (unknown interfaces pass).
    assert!(probe(b"warmup"), "no policy yet: traffic passes");

    dp.program(&tables(ifindex, ACTION_DENY, 7, 0)).unwrap();
    assert!(
        !probe(b"denied"),
        "a set-default deny must drop pod → host traffic"
    );
    let denied: u64 = dp
        .counters()
        .unwrap()
        .iter()
        .filter(|c| c.name == "deny_policy" && c.direction == "egress")
        .map(|c| c.packets)
        .sum();
    assert!(denied >= 1, "{:?}", dp.counters().unwrap());
    let rules: HashMap<u32, u64> = dp.rule_counters_below(64).unwrap().into_iter().collect();
    assert!(rules.get(&7).is_some_and(|n| *n >= 1), "{rules:?}");
    let evs = events.drain();
    let ev = evs
        .iter()
        .find(|e| e.rule_id == 7)
        .unwrap_or_else(|| panic!("no flow event for rule 7 in {evs:?}"));
    assert_eq!(ev.direction, DIR_EGRESS);
    assert_eq!(ev.ifindex, ifindex);
    assert_eq!(ev.protocol, 17);
    assert_eq!(&ev.src[..4], &POD_ADDR);
    assert_eq!(&ev.dst[..4], &HOST_ADDR);
    assert_eq!(ev.dst_port, 9999);

    // The flip to an allow reaches the next packet.
    dp.program(&tables(ifindex, ACTION_ALLOW, 8, 0)).unwrap();
    assert!(probe(b"allowed"), "a set-default allow must pass");
    assert!(
        dp.conntrack()
            .unwrap()
            .iter()
            .any(|(k, _)| k.ifindex == ifindex && k.protocol == 17),
        "the allowed flow is tracked"
    );
    // Attached interfaces stay enforced after the handle is gone.
    drop(dp);
    assert!(probe(b"still allowed"));
    let mut dp = base.open();
    dp.program(&tables(ifindex, ACTION_DENY, 9, 0)).unwrap();
    assert!(
        !probe(b"denied again"),
        "the generation bump re-checks the tracked flow"
    );
}

#[test]
fn privileged_stale_layouts_are_reported_and_removed_only_on_request() {
    let _k = privileged();
    let base = PinBase::new();
    let dp = base.open();
    let old = base.0.join(format!("v{}", LAYOUT_VERSION + 100));
    std::fs::create_dir_all(old.join("links")).unwrap();
    std::fs::create_dir_all(base.0.join("not-a-layout")).unwrap();

    let stale = dp.stale_layouts().unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].version, LAYOUT_VERSION + 100);
    assert_eq!(stale[0].path, old);
    drop(dp);
    // Opening again never deletes them.
    let dp = base.open();
    assert!(old.exists());
    assert_eq!(dp.remove_stale().unwrap().len(), 1);
    assert!(!old.exists());
    assert!(base.layout().exists());
}
