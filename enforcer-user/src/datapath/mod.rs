//! The userspace side of the datapath: loading (or adopting) the pinned programs and maps,
//! attaching to interfaces, programming policy with atomic slot flips, and reading state back.
//!
//! ## Lifecycle
//! [`Datapath::open`] looks under `<pin base>/v<LAYOUT_VERSION>/` (see [`paths`]):
//! - every map of `enforcer_common::maps` and both programs of `enforcer_common::programs`
//!   pinned → **adopt** them: nothing is loaded, attached links keep enforcing throughout;
//! - otherwise (nothing pinned, an incomplete set left by an interrupted start, or
//!   `force_fresh`) → remove the map and program pins of this layout, load the embedded object,
//!   pin every contract map and both programs, then move every pinned link of this layout to
//!   the new programs with `BPF_LINK_UPDATE` (atomic per link: an interface always has a
//!   program). The new maps are empty, so until the next [`Datapath::program`] every interface
//!   counts as unknown and passes (`CONFIG.flags` is 0): program right after opening. Link pins
//!   whose interface is gone are removed. Other processes' handles keep pointing at the old,
//!   now unpinned maps: reload only with the agent stopped. With
//!   [`OpenOptions::defer_relink`] the links stay on the old programs (and their old tables)
//!   until [`Datapath::relink_pending`], so the caller can program the new maps first.
//!
//! Host endpoints ([`Datapath::attach_host`]) are attached with the programs swapped and pinned
//! as `links/<ifindex>-host-<hook>`; relinking, pruning and [`Datapath::detach`] cover them.
//!
//! Links are pinned, so enforcement continues while no agent runs; dropping a [`Datapath`]
//! detaches nothing. Only [`Datapath::detach`] (or removing the pins) detaches.
//!
//! ## Programming
//! [`Datapath::program`] brings the inactive slot to a [`MapEntries`], writing only the
//! entries that differ from what that slot holds (both slots stay resident; the handle
//! remembers their contents and reads them back once after opening), and flips
//! `CONFIG.active_slot` in one update (then bumps the generation in a second one, as
//! `docs/datapath-kernel.md` requires against torn 8-byte reads); unchanged tables are
//! skipped. See [`tables`] for the steps and guarantees (capacity checked first; on any error
//! before the flip the old policy stays in force).
//!
//! ## Concurrency
//! One process should write (the agent). Mutating calls take an exclusive `flock` on the layout
//! directory so that a second writer (say, the CLI) waits instead of interleaving. The `EVENTS`
//! ring buffer has a single consumer position: one [`EventReader`] per node.
//!
//! ## Network namespaces
//! Interface names and indexes are those of the calling thread's network namespace, and tcx
//! links attach there; link pin names carry only the ifindex, so one pin base serves one
//! namespace (the host's).

mod bpf_maps;
pub mod error;
pub mod events;
pub mod netif;
pub mod paths;
pub mod tables;

use std::{
    collections::HashMap as StdHashMap,
    fs::File,
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use enforcer_common::{
    Config, CtKey, CtValue, DIR_EGRESS, DIR_INGRESS, NUM_REASONS, REASON_ALLOW_CONNTRACK,
    REASON_ALLOW_POLICY, REASON_CT_FULL, REASON_DENY_NO_ENDPOINT, REASON_DENY_NO_VERDICT,
    REASON_DENY_POLICY, REASON_DENY_UNPARSEABLE, REASON_EVENT_DROPPED, REASON_PASS_FRAGMENT,
    REASON_PASS_ICMPV6_ND, REASON_PASS_NO_ENDPOINT, REASON_PASS_NON_IP, REASON_RECHECK, programs,
};
use serde::Serialize;

use self::{
    bpf_maps::{BpfMaps, is_not_found},
    paths::{ALL_MAPS, ALL_PROGRAMS, check_bpffs, detach_link_pin, remove_pin},
    tables::Tables,
};
pub use self::{
    error::DatapathError,
    events::{AsyncEventReader, EventReader},
    netif::Interface,
    paths::{DEFAULT_PIN_BASE, Hook, PinPaths, StaleLayout},
    tables::{ConfigView, Limits, MapWrite, ProgramReport, SlotContents, SlotState, TABLE_FLAGS},
};
use crate::{compile::MapEntries, ebpf_object};

/// How long after a flip [`Datapath::program`] leaves the old slot alone before writing into
/// it again, so packets that read the old `active_slot` finish their lookups (a lookup takes
/// microseconds). The next write waits only for what is left of it.
pub const DEFAULT_FLIP_GRACE: Duration = Duration::from_millis(5);

/// Options of [`Datapath::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The pin base; the layout directory `v<LAYOUT_VERSION>` goes under it.
    pub pin_base: PathBuf,
    /// Replace this layout's map and program pins with a fresh load even if they are complete
    /// (pinned links are kept and moved to the new programs).
    pub force_fresh: bool,
    pub limits: Limits,
    pub flip_grace: Duration,
    /// When loading afresh, leave this layout's pinned links on the old programs (which keep
    /// enforcing their old tables) instead of moving them to the new programs, whose maps are
    /// still empty and would pass everything: the caller programs first, then calls
    /// [`Datapath::relink_pending`]. The agent does this, so a fresh load never opens traffic.
    pub defer_relink: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            pin_base: PathBuf::from(DEFAULT_PIN_BASE),
            force_fresh: false,
            limits: Limits::default(),
            flip_grace: DEFAULT_FLIP_GRACE,
            defer_relink: false,
        }
    }
}

impl OpenOptions {
    pub fn new(pin_base: impl Into<PathBuf>) -> Self {
        OpenOptions {
            pin_base: pin_base.into(),
            ..OpenOptions::default()
        }
    }
}

/// Why [`Datapath::open`] loaded the object instead of adopting pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LoadReason {
    NoPins,
    ForceFresh,
    /// Some pins were missing (an interrupted start?); these.
    Incomplete {
        missing: Vec<String>,
    },
}

/// Where the running programs and maps came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Origin {
    /// Pinned by an earlier process and adopted: nothing was loaded.
    Adopted,
    /// Loaded from the embedded object and pinned.
    Loaded {
        reason: LoadReason,
        /// Pinned links moved to the new programs.
        relinked: usize,
        /// Pinned links removed because their interface is gone.
        pruned: usize,
    },
}

/// Kernel ids of the two programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProgramIds {
    pub from_endpoint: u32,
    pub to_endpoint: u32,
}

/// A pinned link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedLink {
    pub ifindex: u32,
    pub hook: Hook,
    /// The name of interface `ifindex` in the caller's network namespace (none: no such
    /// interface there).
    pub ifname: Option<String>,
    pub link_id: u32,
    pub program_id: u32,
    /// The link still polices its interface (false: the interface is gone; the pin is stale
    /// and [`Datapath::prune_defunct_links`] removes it).
    pub alive: bool,
}

/// The outcome of [`Datapath::attach`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attached {
    pub ifindex: u32,
    pub ifname: String,
    /// Hooks attached by this call (empty: both were attached already).
    pub new_hooks: Vec<Hook>,
}

/// Packets counted for one (reason, direction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    pub reason: u32,
    pub name: &'static str,
    /// From the endpoint's point of view: `ingress` or `egress`.
    pub direction: &'static str,
    pub packets: u64,
}

/// The name of a `REASON_*` counter (metrics label).
pub fn reason_name(reason: u32) -> &'static str {
    match reason {
        REASON_ALLOW_POLICY => "allow_policy",
        REASON_DENY_POLICY => "deny_policy",
        REASON_ALLOW_CONNTRACK => "allow_conntrack",
        REASON_DENY_UNPARSEABLE => "deny_unparseable",
        REASON_PASS_NO_ENDPOINT => "pass_no_endpoint",
        REASON_DENY_NO_ENDPOINT => "deny_no_endpoint",
        REASON_DENY_NO_VERDICT => "deny_no_verdict",
        REASON_PASS_FRAGMENT => "pass_fragment",
        REASON_CT_FULL => "ct_full",
        REASON_RECHECK => "recheck",
        REASON_EVENT_DROPPED => "event_dropped",
        REASON_PASS_NON_IP => "pass_non_ip",
        REASON_PASS_ICMPV6_ND => "pass_icmpv6_nd",
        _ => "unknown",
    }
}

/// Holds an exclusive `flock` on a directory until dropped.
struct DirLock(#[allow(dead_code, reason = "held for its lock")] File);

impl DirLock {
    fn exclusive(dir: &Path) -> Result<DirLock, DatapathError> {
        let io_err = |error| DatapathError::Io {
            what: "locking",
            path: dir.to_owned(),
            hint: "another enforcer process may be writing; is it stuck?",
            error,
        };
        let file = File::open(dir).map_err(io_err)?;
        loop {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(DirLock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err(e));
            }
        }
    }
}

type LogFlush = Box<dyn FnMut() + Send>;

/// The loaded or adopted datapath. Dropping it detaches nothing (links are pinned).
pub struct Datapath {
    paths: PinPaths,
    limits: Limits,
    flip_grace: Duration,
    origin: Origin,
    maps: BpfMaps,
    from_endpoint: SchedClassifier,
    to_endpoint: SchedClassifier,
    ebpf_logs: Option<LogFlush>,
    /// The freshly loaded object (kept alive with its maps that are not pinned, such as
    /// `.rodata`); `None` when adopted.
    _ebpf: Option<Ebpf>,
    /// A fresh load whose relink was deferred ([`OpenOptions::defer_relink`]).
    pending_relink: Option<LoadReason>,
    /// What [`Datapath::program`] knows both table slots hold (unknown after opening: the
    /// first write reads them back).
    slots: SlotState,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pins", &self.paths.layout_dir())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Names of the contract's maps and programs whose pins are missing.
fn missing_pins(paths: &PinPaths) -> Vec<String> {
    let maps = ALL_MAPS
        .iter()
        .filter(|n| !paths.map(n).exists())
        .map(|n| format!("maps/{n}"));
    let progs = ALL_PROGRAMS
        .iter()
        .filter(|n| !paths.program(n).exists())
        .map(|n| format!("progs/{n}"));
    maps.chain(progs).collect()
}

/// Removes every pin under `maps/` and `progs/` (not `links/`).
fn clear_map_and_program_pins(paths: &PinPaths) -> Result<(), DatapathError> {
    for dir in [paths.maps_dir(), paths.progs_dir()] {
        for name in paths::list_dir(&dir)? {
            remove_pin(&dir.join(name))?;
        }
    }
    Ok(())
}

fn load_fresh(paths: &PinPaths) -> Result<Ebpf, DatapathError> {
    let bytes = ebpf_object::object()?;
    let pin_paths: Vec<(&'static str, PathBuf)> =
        ALL_MAPS.iter().map(|n| (*n, paths.map(n))).collect();
    let load = || -> Result<Ebpf, DatapathError> {
        let mut loader = EbpfLoader::new();
        for (name, path) in &pin_paths {
            // Creates the map and pins it there (aya would reuse an existing pin; we cleared them).
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(bytes)
            .map_err(|error| DatapathError::Load { error })?;
        for name in ALL_MAPS {
            if ebpf.map(name).is_none() {
                return Err(DatapathError::NotInObject { kind: "map", name });
            }
        }
        for name in ALL_PROGRAMS {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::NotInObject {
                    kind: "program",
                    name,
                })?
                .try_into()
                .map_err(|error| DatapathError::ProgramLoad { name, error })?;
            program
                .load()
                .map_err(|error| DatapathError::ProgramLoad { name, error })?;
            let path = paths.program(name);
            program
                .pin(&path)
                .map_err(|error| DatapathError::PinProgram { name, path, error })?;
        }
        Ok(ebpf)
    };
    let loaded = load();
    if loaded.is_err() {
        // Leave no half-pinned layout behind: the next start loads afresh.
        if let Err(e) = clear_map_and_program_pins(paths) {
            tracing::warn!(error = %e, "cleaning up after a failed load");
        }
    }
    loaded
}

fn open_program(paths: &PinPaths, name: &'static str) -> Result<SchedClassifier, DatapathError> {
    let path = paths.program(name);
    let open_err = |e: &dyn std::error::Error| DatapathError::OpenPin {
        kind: "program",
        name,
        path: path.clone(),
        error: e.to_string(),
    };
    let program = SchedClassifier::from_pin(&path).map_err(|e| DatapathError::OpenPin {
        kind: "program",
        name,
        path: path.clone(),
        error: error::chain(&e),
    })?;
    let info = program.info().map_err(|e| open_err(&e))?;
    // The kernel keeps the first 15 bytes of a program name.
    let found = info.name_as_str().unwrap_or_default();
    if !found.is_empty() && !name.starts_with(found) {
        return Err(DatapathError::WrongProgram {
            name,
            path,
            found: found.to_owned(),
        });
    }
    Ok(program)
}

fn is_errno(e: &aya::programs::ProgramError, errno: i32) -> bool {
    matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}

impl Datapath {
    /// Adopts this layout's pins under `opts.pin_base` or loads and pins the embedded object;
    /// see the module docs.
    pub fn open(opts: OpenOptions) -> Result<Datapath, DatapathError> {
        let paths = PinPaths::new(&opts.pin_base);
        check_bpffs(paths.base())?;
        paths.create_dirs()?;
        let _lock = DirLock::exclusive(paths.layout_dir())?;

        let missing = missing_pins(&paths);
        let total = ALL_MAPS.len() + ALL_PROGRAMS.len();
        let (reason, mut ebpf) = if !opts.force_fresh && missing.is_empty() {
            (None, None)
        } else {
            let reason = if opts.force_fresh {
                LoadReason::ForceFresh
            } else if missing.len() == total {
                LoadReason::NoPins
            } else {
                tracing::warn!(
                    pins = %paths.layout_dir().display(),
                    ?missing,
                    "incomplete pins (an interrupted start?): loading afresh"
                );
                LoadReason::Incomplete { missing }
            };
            clear_map_and_program_pins(&paths)?;
            (Some(reason), Some(load_fresh(&paths)?))
        };

        let maps = BpfMaps::open(&paths)?;
        let from_endpoint = open_program(&paths, programs::FROM_ENDPOINT)?;
        let to_endpoint = open_program(&paths, programs::TO_ENDPOINT)?;
        let mut dp = Datapath {
            paths,
            limits: opts.limits,
            flip_grace: opts.flip_grace,
            origin: Origin::Adopted,
            maps,
            from_endpoint,
            to_endpoint,
            ebpf_logs: None,
            _ebpf: None,
            pending_relink: None,
            slots: SlotState::default(),
        };
        if let Some(reason) = reason {
            let (relinked, pruned) = if opts.defer_relink {
                dp.pending_relink = Some(reason.clone());
                (0, 0)
            } else {
                dp.relink()?
            };
            dp.origin = Origin::Loaded {
                reason,
                relinked,
                pruned,
            };
        }
        dp.ebpf_logs = dp.init_ebpf_logs(ebpf.as_mut());
        dp._ebpf = ebpf;
        tracing::info!(pins = %dp.paths.layout_dir().display(), origin = ?dp.origin, "datapath open");
        Ok(dp)
    }

    /// Opens existing pins only, never loading (for read-only tools such as `enforcer get`).
    pub fn adopt(pin_base: impl Into<PathBuf>) -> Result<Datapath, DatapathError> {
        let opts = OpenOptions::new(pin_base);
        let paths = PinPaths::new(&opts.pin_base);
        if let Some(missing) = missing_pins(&paths).into_iter().next() {
            return Err(DatapathError::NotPinned {
                path: paths.layout_dir().to_owned(),
                missing,
            });
        }
        Datapath::open(opts)
    }

    /// aya-log is optional: if the object logs (an `AYA_LOGS` map), keep a reader whose
    /// records go to the `log` facade (drain them with [`Datapath::flush_ebpf_logs`]).
    fn init_ebpf_logs(&self, ebpf: Option<&mut Ebpf>) -> Option<LogFlush> {
        let logger = match ebpf {
            Some(ebpf) => aya_log::EbpfLogger::init(ebpf),
            None => {
                let id = self.from_endpoint.info().ok()?.id();
                aya_log::EbpfLogger::init_from_id(id)
            }
        };
        match logger {
            Ok(mut logger) => Some(Box::new(move || logger.flush())),
            Err(e) => {
                tracing::debug!(error = %e, "no eBPF logs");
                None
            }
        }
    }

    /// Drains the eBPF programs' aya-log records into the `log` facade (no-op without them).
    pub fn flush_ebpf_logs(&mut self) {
        if let Some(flush) = &mut self.ebpf_logs {
            flush();
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn adopted(&self) -> bool {
        self.origin == Origin::Adopted
    }

    pub fn paths(&self) -> &PinPaths {
        &self.paths
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn program_ids(&self) -> Result<ProgramIds, DatapathError> {
        let id = |p: &SchedClassifier, name: &'static str| {
            p.info()
                .map(|i| i.id())
                .map_err(|error| DatapathError::ProgramLoad { name, error })
        };
        Ok(ProgramIds {
            from_endpoint: id(&self.from_endpoint, programs::FROM_ENDPOINT)?,
            to_endpoint: id(&self.to_endpoint, programs::TO_ENDPOINT)?,
        })
    }

    /// (map name, kernel map id) of every contract map.
    pub fn map_ids(&self) -> &[(&'static str, u32)] {
        &self.maps.ids
    }

    /// The program at `hook` of a workload (`host: false`) or host (`host: true`) interface.
    fn program_for(&mut self, hook: Hook, host: bool) -> &mut SchedClassifier {
        match (hook, host) {
            (Hook::TcIngress, false) | (Hook::TcEgress, true) => &mut self.from_endpoint,
            (Hook::TcEgress, false) | (Hook::TcIngress, true) => &mut self.to_endpoint,
        }
    }

    /// The pin path of a workload or host link.
    fn link_path(&self, ifindex: u32, hook: Hook, host: bool) -> PathBuf {
        if host {
            self.paths.host_link(ifindex, hook)
        } else {
            self.paths.link(ifindex, hook)
        }
    }

    /// Whether a deferred relink is pending ([`OpenOptions::defer_relink`]).
    pub fn relink_is_pending(&self) -> bool {
        self.pending_relink.is_some()
    }

    /// Performs a relink deferred by [`OpenOptions::defer_relink`] (call it once the new maps
    /// are programmed): every pinned link of this layout moves to the new programs, atomically
    /// per link. Returns (moved, removed); (0, 0) when nothing was pending.
    pub fn relink_pending(&mut self) -> Result<(usize, usize), DatapathError> {
        let Some(reason) = self.pending_relink.take() else {
            return Ok((0, 0));
        };
        let _lock = DirLock::exclusive(self.paths.layout_dir())?;
        let (relinked, pruned) = match self.relink() {
            Ok(r) => r,
            Err(e) => {
                // Moving a link twice is harmless: the next call retries them all.
                self.pending_relink = Some(reason);
                return Err(e);
            }
        };
        tracing::info!(
            relinked,
            pruned,
            "moved the pinned links to the new programs"
        );
        self.origin = Origin::Loaded {
            reason,
            relinked,
            pruned,
        };
        Ok((relinked, pruned))
    }

    /// Moves every pinned link of this layout to the current programs (`BPF_LINK_UPDATE`),
    /// removing pins whose interface is gone. Returns (moved, removed).
    fn relink(&mut self) -> Result<(usize, usize), DatapathError> {
        let (mut moved, mut removed) = (0, 0);
        let workload = self
            .paths
            .pinned_links()?
            .into_iter()
            .map(|(i, h)| (i, h, false));
        let host = self
            .paths
            .pinned_host_links()?
            .into_iter()
            .map(|(i, h)| (i, h, true));
        let all: Vec<(u32, Hook, bool)> = workload.chain(host).collect();
        for (ifindex, hook, host) in all {
            let path = self.link_path(ifindex, hook, host);
            let pinned = PinnedLink::from_pin(&path).map_err(|error| DatapathError::Link {
                path: path.clone(),
                op: "opening",
                error,
            })?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|error| {
                DatapathError::Link {
                    path: path.clone(),
                    op: "reading it as a tcx link",
                    error,
                }
            })?;
            let program = self.program_for(hook, host);
            match program.attach_to_link(link) {
                Ok(id) => {
                    // Taking the link out of the program's set keeps it attached when the
                    // program handle drops; the pin holds it.
                    drop(program.take_link(id));
                    moved += 1;
                }
                Err(e) if is_errno(&e, libc::ENOLINK) => {
                    remove_pin(&path)?;
                    removed += 1;
                }
                Err(error) => {
                    return Err(DatapathError::ReplaceLink {
                        path,
                        program: if host {
                            hook.host_program()
                        } else {
                            hook.program()
                        },
                        error,
                    });
                }
            }
        }
        Ok((moved, removed))
    }

    /// Attaches both programs to `iface` with tcx (first in the chain) and pins the links.
    /// Idempotent: hooks whose pinned link is alive are left alone; stale pins are replaced.
    pub fn attach(&mut self, iface: impl Into<Interface>) -> Result<Attached, DatapathError> {
        self.attach_as(iface.into(), false)
    }

    /// Attaches to a *host* interface (a HostEndpoint such as `eth0`), with the programs
    /// swapped relative to [`Datapath::attach`]: `to_endpoint` at tc ingress (traffic into the
    /// host is the host endpoint's ingress), `from_endpoint` at tc egress. Pinned as
    /// `links/<ifindex>-host-<hook>`; [`Datapath::detach`] removes these too. Idempotent.
    pub fn attach_host(&mut self, iface: impl Into<Interface>) -> Result<Attached, DatapathError> {
        self.attach_as(iface.into(), true)
    }

    fn attach_as(&mut self, iface: Interface, host: bool) -> Result<Attached, DatapathError> {
        let (ifindex, ifname) = iface.resolve()?;
        let _lock = DirLock::exclusive(self.paths.layout_dir())?;
        let mut new_hooks = Vec::new();
        for hook in Hook::BOTH {
            let path = self.link_path(ifindex, hook, host);
            if path.exists() {
                if self.link_state_of(ifindex, hook, host)?.alive {
                    continue;
                }
                remove_pin(&path)?;
            }
            if let Err(e) = self.attach_hook(ifindex, &ifname, hook, host, &path) {
                for done in &new_hooks {
                    if let Err(undo) = detach_link_pin(&self.link_path(ifindex, *done, host)) {
                        tracing::warn!(error = %undo, "undoing a half attach");
                    }
                }
                return Err(e);
            }
            new_hooks.push(hook);
        }
        Ok(Attached {
            ifindex,
            ifname,
            new_hooks,
        })
    }

    fn attach_hook(
        &mut self,
        ifindex: u32,
        ifname: &str,
        hook: Hook,
        host: bool,
        path: &Path,
    ) -> Result<(), DatapathError> {
        let attach_err = |error| DatapathError::Attach {
            program: if host {
                hook.host_program()
            } else {
                hook.program()
            },
            ifname: ifname.to_owned(),
            ifindex,
            hook,
            error,
        };
        let program = self.program_for(hook, host);
        let id = program
            .attach_with_options(
                ifname,
                hook.attach_type(),
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .map_err(attach_err)?;
        let link = program.take_link(id).map_err(attach_err)?;
        let fd_link = FdLink::try_from(link).map_err(|error| DatapathError::Link {
            path: path.to_owned(),
            op: "taking the tcx link",
            error,
        })?;
        // On failure the link drops here, which detaches it.
        fd_link.pin(path).map_err(|error| DatapathError::PinLink {
            path: path.to_owned(),
            error,
        })?;
        Ok(())
    }

    /// Removes `ifindex`'s link pins (workload and host), which detaches the programs. Returns
    /// the hooks detached.
    pub fn detach(&mut self, ifindex: u32) -> Result<Vec<Hook>, DatapathError> {
        let _lock = DirLock::exclusive(self.paths.layout_dir())?;
        let mut done = Vec::new();
        for host in [false, true] {
            for hook in Hook::BOTH {
                if detach_link_pin(&self.link_path(ifindex, hook, host))? {
                    done.push(hook);
                }
            }
        }
        Ok(done)
    }

    /// A pinned link's state. Liveness is probed without looking at interfaces when the link
    /// runs our program: a `BPF_LINK_UPDATE` to the program it already runs is a no-op on a
    /// live tcx link and fails with `ENOLINK` once its device is gone, in whatever network
    /// namespace the caller is. A link running another program falls back to a tcx query of
    /// the interface in the caller's namespace.
    fn link_state(&self, ifindex: u32, hook: Hook) -> Result<AttachedLink, DatapathError> {
        self.link_state_of(ifindex, hook, false)
    }

    /// [`Datapath::link_state`] of a workload (`host: false`) or host link.
    fn link_state_of(
        &self,
        ifindex: u32,
        hook: Hook,
        host: bool,
    ) -> Result<AttachedLink, DatapathError> {
        let path = self.link_path(ifindex, hook, host);
        let link_err = |op, error| DatapathError::Link {
            path: path.clone(),
            op,
            error,
        };
        let pinned = PinnedLink::from_pin(&path).map_err(|e| link_err("opening", e))?;
        let fd_link = FdLink::from(pinned);
        let info = fd_link
            .info()
            .map_err(|e| link_err("reading link info", e))?;
        let ifname = netif::ifname(ifindex);
        let name = if host {
            hook.host_program()
        } else {
            hook.program()
        };
        let ours = if name == programs::FROM_ENDPOINT {
            &self.from_endpoint
        } else {
            &self.to_endpoint
        };
        let ours_id = ours.info().map(|i| i.id()).ok();
        let alive = if ours_id == Some(info.program_id()) {
            let mut probe = SchedClassifier::from_pin(self.paths.program(name)).map_err(|e| {
                DatapathError::OpenPin {
                    kind: "program",
                    name,
                    path: self.paths.program(name),
                    error: error::chain(&e),
                }
            })?;
            let link = SchedClassifierLink::try_from(fd_link)
                .map_err(|e| link_err("reading it as a tcx link", e))?;
            match probe.attach_to_link(link) {
                Ok(id) => {
                    drop(probe.take_link(id));
                    true
                }
                Err(e) if is_errno(&e, libc::ENOLINK) => false,
                Err(error) => {
                    return Err(DatapathError::Query {
                        what: format!("the link at {}", path.display()),
                        error,
                    });
                }
            }
        } else {
            match &ifname {
                None => false,
                Some(name) => {
                    let (_, progs) =
                        SchedClassifier::query_tcx(name, hook.attach_type()).map_err(|error| {
                            DatapathError::Query {
                                what: format!("{name} at {hook}"),
                                error,
                            }
                        })?;
                    progs.iter().any(|p| p.id() == info.program_id())
                }
            }
        };
        Ok(AttachedLink {
            ifindex,
            hook,
            ifname,
            link_id: info.id(),
            program_id: info.program_id(),
            alive,
        })
    }

    /// Every pinned link of this layout.
    pub fn attached(&self) -> Result<Vec<AttachedLink>, DatapathError> {
        self.paths
            .pinned_links()?
            .into_iter()
            .map(|(ifindex, hook)| self.link_state(ifindex, hook))
            .collect()
    }

    /// Every pinned host-endpoint link of this layout ([`Datapath::attach_host`]); `hook` is
    /// the kernel hook (the program there is [`Hook::host_program`]).
    pub fn attached_host(&self) -> Result<Vec<AttachedLink>, DatapathError> {
        self.paths
            .pinned_host_links()?
            .into_iter()
            .map(|(ifindex, hook)| self.link_state_of(ifindex, hook, true))
            .collect()
    }

    /// Removes link pins (workload and host) whose interface is gone; returns them.
    pub fn prune_defunct_links(&mut self) -> Result<Vec<AttachedLink>, DatapathError> {
        let _lock = DirLock::exclusive(self.paths.layout_dir())?;
        let mut pruned = Vec::new();
        for link in self.attached()? {
            if !link.alive {
                remove_pin(&self.paths.link(link.ifindex, link.hook))?;
                pruned.push(link);
            }
        }
        for link in self.attached_host()? {
            if !link.alive {
                remove_pin(&self.paths.host_link(link.ifindex, link.hook))?;
                pruned.push(link);
            }
        }
        Ok(pruned)
    }

    /// Writes `entries` (rendered for any slot: keys are re-slotted) into the inactive slot,
    /// changing only what differs from what it holds, and flips to it (one `CONFIG` update
    /// switches the slot, the next bumps the generation); tables equal to the active ones are
    /// skipped ([`ProgramReport::unchanged`]). See [`tables`].
    pub fn program(&mut self, entries: &MapEntries) -> Result<ProgramReport, DatapathError> {
        let _lock = DirLock::exclusive(self.paths.layout_dir())?;
        let m = &mut self.maps;
        tables::program(
            Tables {
                config: &mut m.config,
                endpoints: &mut m.endpoints,
                peer_v4: &mut m.peer_v4,
                peer_v6: &mut m.peer_v6,
                ports: &mut m.ports,
                verdicts: &mut m.verdicts,
                known: &mut self.slots,
            },
            entries,
            &self.limits,
            self.flip_grace,
        )
    }

    /// Sets `CONFIG_FAIL_CLOSED` and `CONFIG_SRC_PORTS` (one update; slot and generation
    /// kept). [`Datapath::program`] sets `CONFIG_SRC_PORTS` from the tables it writes.
    pub fn set_flags(
        &mut self,
        fail_closed: bool,
        src_ports: bool,
    ) -> Result<ConfigView, DatapathError> {
        let _lock = DirLock::exclusive(self.paths.layout_dir())?;
        tables::set_flags(&mut self.maps.config, fail_closed, src_ports).map(Into::into)
    }

    pub fn config(&self) -> Result<ConfigView, DatapathError> {
        self.raw_config().map(Into::into)
    }

    pub fn raw_config(&self) -> Result<Config, DatapathError> {
        tables::read_config(&self.maps.config)
    }

    /// The entries of `slot` (0 or 1) as they are in the maps.
    pub fn entries(&self, slot: u32) -> Result<MapEntries, DatapathError> {
        let m = &self.maps;
        tables::read_slot(
            &m.config,
            &m.endpoints,
            &m.peer_v4,
            &m.peer_v6,
            &m.ports,
            &m.verdicts,
            slot,
        )
    }

    /// The entries of the active slot.
    pub fn active_entries(&self) -> Result<MapEntries, DatapathError> {
        self.entries(self.raw_config()?.active_slot)
    }

    /// Packets per (reason, direction), summed over CPUs; every pair, zeros included.
    pub fn counters(&self) -> Result<Vec<ReasonCount>, DatapathError> {
        let map = &self.maps.verdict_counters;
        let mut out = Vec::with_capacity(2 * NUM_REASONS as usize);
        for reason in 0..NUM_REASONS {
            for (dir, direction) in [(DIR_INGRESS, "ingress"), (DIR_EGRESS, "egress")] {
                let index = reason * 2 + u32::from(dir);
                let packets = map
                    .get(&index, 0)
                    .map_err(|error| DatapathError::Map {
                        map: enforcer_common::maps::VERDICT_COUNTERS,
                        op: "reading",
                        error,
                    })?
                    .iter()
                    .sum();
                out.push(ReasonCount {
                    reason,
                    name: reason_name(reason),
                    direction,
                    packets,
                });
            }
        }
        Ok(out)
    }

    /// Nonzero (rule id, new flows) of `RULE_COUNTERS`, summed over CPUs. Reads every index
    /// (one syscall each); [`Datapath::rule_counters_below`] bounds the scan.
    pub fn rule_counters(&self) -> Result<Vec<(u32, u64)>, DatapathError> {
        per_cpu_nonzero(
            &self.maps.rule_counters,
            enforcer_common::maps::RULE_COUNTERS,
            u32::MAX,
        )
    }

    /// [`Datapath::rule_counters`] for rule ids below `n` (the rule table's size).
    pub fn rule_counters_below(&self, n: u32) -> Result<Vec<(u32, u64)>, DatapathError> {
        per_cpu_nonzero(
            &self.maps.rule_counters,
            enforcer_common::maps::RULE_COUNTERS,
            n,
        )
    }

    /// Nonzero (staged rule id, new flows) of `STAGED_COUNTERS`, for rule ids below `n`.
    pub fn staged_counters_below(&self, n: u32) -> Result<Vec<(u32, u64)>, DatapathError> {
        per_cpu_nonzero(
            &self.maps.staged_counters,
            enforcer_common::maps::STAGED_COUNTERS,
            n,
        )
    }

    /// A snapshot of the conntrack table (entries change while it is read; each key once).
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtValue)>, DatapathError> {
        let mut out: StdHashMap<CtKey, CtValue> = StdHashMap::new();
        for kv in self.maps.conntrack.iter() {
            match kv {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                Err(e) if is_not_found(&e) => {}
                Err(error) => {
                    return Err(DatapathError::Map {
                        map: enforcer_common::maps::CONNTRACK,
                        op: "reading",
                        error,
                    });
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// A reader of the `EVENTS` ring buffer (its own map handle; one reader per node).
    pub fn events(&self) -> Result<EventReader, DatapathError> {
        EventReader::open(&self.paths.map(enforcer_common::maps::EVENTS))
    }

    /// Layout directories of other versions under this pin base.
    pub fn stale_layouts(&self) -> Result<Vec<StaleLayout>, DatapathError> {
        paths::stale_layouts(self.paths.base())
    }

    /// Removes the stale layout directories, detaching their links (attach this layout to
    /// those interfaces first). Returns what was removed.
    pub fn remove_stale(&self) -> Result<Vec<StaleLayout>, DatapathError> {
        paths::remove_stale_layouts(self.paths.base())
    }
}

fn per_cpu_nonzero(
    map: &aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    name: &'static str,
    below: u32,
) -> Result<Vec<(u32, u64)>, DatapathError> {
    let mut out = Vec::new();
    for index in 0..map.len().min(below) {
        let sum: u64 = map
            .get(&index, 0)
            .map_err(|error| DatapathError::Map {
                map: name,
                op: "reading",
                error,
            })?
            .iter()
            .sum();
        if sum != 0 {
            out.push((index, sum));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_move_to_other_threads() {
        fn send<T: Send>() {}
        send::<Datapath>();
        send::<EventReader>();
        send::<AsyncEventReader>();
    }

    #[test]
    fn every_reason_has_a_name() {
        for reason in 0..NUM_REASONS {
            assert_ne!(reason_name(reason), "unknown", "reason {reason}");
        }
    }
}
