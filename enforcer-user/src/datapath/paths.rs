//! Where Enforcer pins its BPF objects, in one place (as bpfman groups its pin paths).
//!
//! ```text
//! <base>/                       default /sys/fs/bpf/enforcer
//!   v<LAYOUT_VERSION>/          one directory per map layout (`enforcer_common::LAYOUT_VERSION`)
//!     maps/<MAP_NAME>           every map of `enforcer_common::maps`
//!     progs/<program>           both classifiers of `enforcer_common::programs`
//!     links/<ifindex>-ingress   tcx link at the tc *ingress* hook (program `from_endpoint`)
//!     links/<ifindex>-egress    tcx link at the tc *egress* hook (program `to_endpoint`)
//!     links/<ifindex>-host-ingress  host endpoint: tc *ingress* hook, program `to_endpoint`
//!     links/<ifindex>-host-egress   host endpoint: tc *egress* hook, program `from_endpoint`
//! ```
//!
//! Link pins are named after the kernel hook, not the endpoint's direction: `<ifindex>-ingress`
//! judges traffic *leaving* the endpoint (its egress policy). Ifindexes are those of the network
//! namespace the agent runs in (the host's, where pods' host-side veths live).
//!
//! A layout change bumps `LAYOUT_VERSION`, so a new binary pins into a fresh `v<N>` directory
//! and never misreads old maps; older directories are reported by [`stale_layouts`] and removed
//! only on request ([`remove_stale_layouts`]).

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use enforcer_common::{LAYOUT_VERSION, maps, programs};

use super::error::DatapathError;

/// The default pin base (the layout directory `v<LAYOUT_VERSION>` goes under it).
pub const DEFAULT_PIN_BASE: &str = "/sys/fs/bpf/enforcer";
/// Where bpffs is conventionally mounted.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
/// `statfs(2)` magic of bpffs (`BPF_FS_MAGIC` in `linux/magic.h`).
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Every map of the contract, in the order they are pinned and reported.
pub const ALL_MAPS: [&str; 12] = [
    maps::CONFIG,
    maps::ENDPOINTS,
    maps::PEER_V4,
    maps::PEER_V6,
    maps::PORTS,
    maps::VERDICTS,
    maps::CONNTRACK,
    maps::VERDICT_COUNTERS,
    maps::RULE_COUNTERS,
    maps::STAGED_COUNTERS,
    maps::EVENTS,
    maps::EVENT_LIMIT,
];

/// Both programs of the contract.
pub const ALL_PROGRAMS: [&str; 2] = [programs::FROM_ENDPOINT, programs::TO_ENDPOINT];

/// The tc hook a link is attached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// tc ingress of the host-side interface: traffic leaving the endpoint (its egress policy),
    /// judged by `programs::FROM_ENDPOINT`.
    TcIngress,
    /// tc egress of the host-side interface: traffic entering the endpoint (its ingress policy),
    /// judged by `programs::TO_ENDPOINT`.
    TcEgress,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::TcIngress, Hook::TcEgress];

    /// The pin file suffix (`ingress` or `egress`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Hook::TcIngress => "ingress",
            Hook::TcEgress => "egress",
        }
    }

    /// The program attached at this hook.
    pub const fn program(self) -> &'static str {
        match self {
            Hook::TcIngress => programs::FROM_ENDPOINT,
            Hook::TcEgress => programs::TO_ENDPOINT,
        }
    }

    /// The program attached at this hook of a *host* interface (a HostEndpoint): swapped,
    /// since packets arriving at tc ingress of a host interface enter the host (its ingress
    /// policy, `to_endpoint`).
    pub const fn host_program(self) -> &'static str {
        match self {
            Hook::TcIngress => programs::TO_ENDPOINT,
            Hook::TcEgress => programs::FROM_ENDPOINT,
        }
    }

    pub(crate) const fn attach_type(self) -> aya::programs::TcAttachType {
        match self {
            Hook::TcIngress => aya::programs::TcAttachType::Ingress,
            Hook::TcEgress => aya::programs::TcAttachType::Egress,
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tc {}", self.suffix())
    }
}

/// The pin paths of one layout version under one base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPaths {
    base: PathBuf,
    layout: PathBuf,
}

impl Default for PinPaths {
    fn default() -> Self {
        PinPaths::new(DEFAULT_PIN_BASE)
    }
}

impl PinPaths {
    /// Pins under `base/v<LAYOUT_VERSION>/`.
    pub fn new(base: impl Into<PathBuf>) -> PinPaths {
        let base = base.into();
        let layout = base.join(layout_dir_name(LAYOUT_VERSION));
        PinPaths { base, layout }
    }

    /// The base (holding one directory per layout version).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `base/v<LAYOUT_VERSION>`.
    pub fn layout_dir(&self) -> &Path {
        &self.layout
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.layout.join("maps")
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.layout.join("progs")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.layout.join("links")
    }

    /// `maps/<MAP_NAME>`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// `progs/<program>`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    /// `links/<ifindex>-<ingress|egress>`.
    pub fn link(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.links_dir().join(link_file_name(ifindex, hook))
    }

    /// `links/<ifindex>-host-<ingress|egress>`: a host endpoint's link (programs swapped).
    pub fn host_link(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.links_dir()
            .join(format!("{ifindex}-host-{}", hook.suffix()))
    }

    /// The host-endpoint link pins present (see [`PinPaths::host_link`]).
    pub fn pinned_host_links(&self) -> Result<Vec<(u32, Hook)>, DatapathError> {
        let mut out = Vec::new();
        for name in list_dir(&self.links_dir())? {
            if let Some(parsed) = parse_host_link_file_name(&name) {
                out.push(parsed);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates `maps/`, `progs/` and `links/`.
    pub fn create_dirs(&self) -> Result<(), DatapathError> {
        for dir in [self.maps_dir(), self.progs_dir(), self.links_dir()] {
            fs::create_dir_all(&dir).map_err(|error| DatapathError::Io {
                what: "creating the pin directory",
                path: dir.clone(),
                hint: "is the pin base on a bpffs mount and are we root?",
                error,
            })?;
        }
        Ok(())
    }

    /// The link pins present, parsed from their file names (unparseable names are skipped).
    pub fn pinned_links(&self) -> Result<Vec<(u32, Hook)>, DatapathError> {
        let dir = self.links_dir();
        let mut out = Vec::new();
        for name in list_dir(&dir)? {
            if let Some(parsed) = parse_link_file_name(&name) {
                out.push(parsed);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn layout_dir_name(version: u32) -> String {
    format!("v{version}")
}

fn link_file_name(ifindex: u32, hook: Hook) -> String {
    format!("{ifindex}-{}", hook.suffix())
}

/// Parses `<ifindex>-<ingress|egress>`.
pub fn parse_link_file_name(name: &str) -> Option<(u32, Hook)> {
    let (index, suffix) = name.split_once('-')?;
    let hook = match suffix {
        "ingress" => Hook::TcIngress,
        "egress" => Hook::TcEgress,
        _ => return None,
    };
    Some((index.parse().ok()?, hook))
}

/// Parses `<ifindex>-host-<ingress|egress>`.
pub fn parse_host_link_file_name(name: &str) -> Option<(u32, Hook)> {
    let (index, suffix) = name.split_once("-host-")?;
    let hook = match suffix {
        "ingress" => Hook::TcIngress,
        "egress" => Hook::TcEgress,
        _ => return None,
    };
    Some((index.parse().ok()?, hook))
}

/// File names in `dir` (none if it does not exist).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, DatapathError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(DatapathError::Io {
                what: "listing",
                path: dir.to_owned(),
                hint: "check the permissions of the pin directory",
                error,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| DatapathError::Io {
            what: "listing",
            path: dir.to_owned(),
            hint: "check the permissions of the pin directory",
            error,
        })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes one pin file; a missing file is fine.
pub(crate) fn remove_pin(path: &Path) -> Result<bool, DatapathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(DatapathError::Io {
            what: "removing the pin",
            path: path.to_owned(),
            hint: "are we root?",
            error,
        }),
    }
}

/// Checks that `path` (or, if it does not exist yet, its nearest existing ancestor) is on a
/// bpffs mount: pins anywhere else fail with a confusing EPERM.
pub fn check_bpffs(path: &Path) -> Result<(), DatapathError> {
    let mut probe = path;
    while !probe.exists() {
        match probe.parent() {
            Some(parent) => probe = parent,
            None => break,
        }
    }
    let c_path = CString::new(probe.as_os_str().as_bytes()).map_err(|_| DatapathError::Io {
        what: "checking the filesystem of",
        path: probe.to_owned(),
        hint: "the path contains a NUL byte",
        error: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `statfs` writes into the zeroed struct we pass and reads the NUL-terminated path.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if rc != 0 {
        return Err(DatapathError::Io {
            what: "checking the filesystem of",
            path: probe.to_owned(),
            hint: "mount bpffs with `mount -t bpf bpf /sys/fs/bpf` (or run `cargo xtask setup`)",
            error: io::Error::last_os_error(),
        });
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type is i64 on some targets, not others"
    )]
    let fs_type = buf.f_type as i64;
    if fs_type != BPF_FS_MAGIC {
        return Err(DatapathError::NotBpffs {
            path: path.to_owned(),
            checked: probe.to_owned(),
            fs_type,
        });
    }
    Ok(())
}

/// A pin directory of another layout version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StaleLayout {
    pub version: u32,
    pub path: PathBuf,
    /// Link pins still in it: interfaces the old programs still police.
    pub links: usize,
}

/// Layout directories under `base` other than the current `v<LAYOUT_VERSION>`.
pub fn stale_layouts(base: &Path) -> Result<Vec<StaleLayout>, DatapathError> {
    let mut out = Vec::new();
    for name in list_dir(base)? {
        let Some(version) = name.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        if version == LAYOUT_VERSION {
            continue;
        }
        let path = base.join(&name);
        let links = list_dir(&path.join("links"))?.len();
        out.push(StaleLayout {
            version,
            path,
            links,
        });
    }
    Ok(out)
}

/// Removes the stale layout directories (their link pins too, which detaches the old programs
/// from those interfaces: attach the current layout first). Returns what was removed.
pub fn remove_stale_layouts(base: &Path) -> Result<Vec<StaleLayout>, DatapathError> {
    let stale = stale_layouts(base)?;
    for layout in &stale {
        // Detach the old links first, so their programs are off the hooks on return rather
        // than after the pins' inodes are freed (see [`detach_link_pin`]).
        let links = layout.path.join("links");
        if links.is_dir() {
            for name in list_dir(&links)? {
                detach_link_pin(&links.join(name))?;
            }
        }
        fs::remove_dir_all(&layout.path).map_err(|error| DatapathError::Io {
            what: "removing the stale layout directory",
            path: layout.path.clone(),
            hint: "are we root?",
            error,
        })?;
    }
    Ok(stale)
}

/// Detaches the tcx link pinned at `path` from its hook *now*, then removes the pin; a missing
/// pin is fine (`Ok(false)`).
///
/// Removing a bpffs pin alone does not detach synchronously: the pin's inode is freed after an
/// RCU grace period, and only then does the last link reference go and the program leave the
/// hook. Callers (and operators) that remove a link expect the hook to be empty on return, so
/// we issue `BPF_LINK_DETACH` on the pinned link first. A link whose device is already gone
/// answers `ENOLINK`/`ENOENT`, which is fine: there is nothing left to detach.
pub(crate) fn detach_link_pin(path: &Path) -> Result<bool, DatapathError> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let io_err = |what, hint, error| DatapathError::Io {
        what,
        path: path.to_owned(),
        hint,
        error,
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_err(
            "opening the link pin",
            "the path contains a NUL byte",
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    })?;
    // bpf_attr, zero-padded; BPF_OBJ_GET reads `pathname` (u64) at offset 0.
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    // SAFETY: `attr` is a zeroed bpf_attr-sized buffer and `c_path` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    if fd < 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOENT) {
            return Ok(false);
        }
        return Err(io_err("opening the link pin", "are we root?", error));
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it from here.
    let fd: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) };
    let mut attr = [0u64; 16];
    attr[0] = u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32);
    // SAFETY: as above; BPF_LINK_DETACH reads `link_fd` (u32) at offset 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    if rc < 0 {
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // Already detached (device gone) or a kernel without BPF_LINK_DETACH for this
            // link type: removing the pin below is then all there is to do.
            Some(libc::ENOLINK | libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL) => {}
            _ => return Err(io_err("detaching the pinned link", "are we root?", error)),
        }
    }
    drop(fd);
    remove_pin(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let p = PinPaths::new("/sys/fs/bpf/enforcer");
        assert_eq!(
            p.map(maps::CONFIG),
            PathBuf::from(format!(
                "/sys/fs/bpf/enforcer/v{LAYOUT_VERSION}/maps/ENFORCER_CONFIG"
            ))
        );
        assert_eq!(
            p.program(programs::TO_ENDPOINT),
            PathBuf::from(format!(
                "/sys/fs/bpf/enforcer/v{LAYOUT_VERSION}/progs/enforcer_to_endpoint"
            ))
        );
        assert_eq!(
            p.link(7, Hook::TcEgress),
            PathBuf::from(format!(
                "/sys/fs/bpf/enforcer/v{LAYOUT_VERSION}/links/7-egress"
            ))
        );
        assert_eq!(PinPaths::default().base(), Path::new(DEFAULT_PIN_BASE));
    }

    #[test]
    fn link_names_round_trip() {
        for hook in Hook::BOTH {
            let name = link_file_name(42, hook);
            assert_eq!(parse_link_file_name(&name), Some((42, hook)));
        }
        assert_eq!(parse_link_file_name("42-sideways"), None);
        assert_eq!(parse_link_file_name("x-ingress"), None);
        assert_eq!(parse_link_file_name("42"), None);
        // Host-endpoint pins are told apart from workload pins.
        let p = PinPaths::new("/x");
        for hook in Hook::BOTH {
            let path = p.host_link(42, hook);
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            assert_eq!(parse_host_link_file_name(name), Some((42, hook)));
            assert_eq!(parse_link_file_name(name), None);
            assert_eq!(parse_host_link_file_name(&link_file_name(42, hook)), None);
        }
    }

    #[test]
    fn hooks_run_the_contract_programs() {
        assert_eq!(Hook::TcIngress.program(), programs::FROM_ENDPOINT);
        assert_eq!(Hook::TcEgress.program(), programs::TO_ENDPOINT);
    }

    #[test]
    fn non_bpffs_paths_are_refused_with_the_mount_command() {
        let Err(e) = check_bpffs(Path::new("/proc/self")) else {
            panic!("/proc is not bpffs");
        };
        let msg = e.to_string();
        assert!(msg.contains("mount -t bpf bpf /sys/fs/bpf"), "{msg}");
        assert!(msg.contains("cargo xtask setup"), "{msg}");
    }

    #[test]
    fn stale_layouts_of_a_missing_base_are_none() {
        assert_eq!(
            stale_layouts(Path::new("/nonexistent/enforcer-pins")).ok(),
            Some(Vec::new())
        );
    }
}
