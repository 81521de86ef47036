//! The datapath's errors: each names the path, map or interface involved and says what to do.
//!
//! aya's errors print only their outer layer (`` `bpf_map_update_elem` failed ``) and keep the
//! errno in their source; these messages include the whole chain (see [`chain`]), so the
//! underlying error is a plain field (`error`), not a `source()`, to avoid printing it twice.

use std::{error::Error as StdError, io, path::PathBuf};

use aya::{
    EbpfError,
    maps::MapError,
    pin::PinError,
    programs::{ProgramError, links::LinkError},
};

use super::paths::Hook;
use crate::ebpf_object::EbpfObjectError;

/// `error: its source: its source's source`.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "{} is not on a bpffs mount ({} has filesystem magic {fs_type:#x}); mount it with \
         `mount -t bpf bpf /sys/fs/bpf` (or run `cargo xtask setup`)",
        path.display(),
        checked.display()
    )]
    NotBpffs {
        path: PathBuf,
        checked: PathBuf,
        fs_type: i64,
    },

    #[error("{what} {}: {error}; {hint}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
        error: io::Error,
    },

    #[error(transparent)]
    ObjectNotBuilt(#[from] EbpfObjectError),

    #[error(
        "loading the eBPF object failed: {}; are we root (CAP_BPF, CAP_NET_ADMIN) and is \
         /sys/fs/bpf a bpffs mount?",
        chain(error)
    )]
    Load { error: EbpfError },

    #[error(
        "the embedded eBPF object has no {kind} `{name}`: it does not implement the \
         enforcer-common contract; rebuild enforcer so the object and the userspace come from \
         the same tree"
    )]
    NotInObject {
        kind: &'static str,
        name: &'static str,
    },

    #[error("the kernel rejected program `{name}`: {}", chain(error))]
    ProgramLoad {
        name: &'static str,
        error: ProgramError,
    },

    #[error(
        "failed to pin program `{name}` at {}: {}; is it on a bpffs mount?",
        path.display(),
        chain(error)
    )]
    PinProgram {
        name: &'static str,
        path: PathBuf,
        error: PinError,
    },

    #[error(
        "failed to open pinned {kind} `{name}` at {}: {error}; restart with --force-fresh to \
         replace the pins",
        path.display()
    )]
    OpenPin {
        kind: &'static str,
        name: &'static str,
        path: PathBuf,
        /// The chain, already flattened.
        error: String,
    },

    #[error(
        "no datapath pinned at {} (missing {missing}); start the agent with the same pin base \
         first",
        path.display()
    )]
    NotPinned { path: PathBuf, missing: String },

    #[error(
        "pinned map `{name}` at {} does not have this build's layout ({}); LAYOUT_VERSION should \
         have been bumped with the change. Restart with --force-fresh to replace it",
        path.display(),
        chain(error)
    )]
    MapLayout {
        name: &'static str,
        path: PathBuf,
        error: MapError,
    },

    #[error(
        "pinned program at {} is `{found}`, not `{name}`; restart with --force-fresh to replace \
         the pins",
        path.display()
    )]
    WrongProgram {
        name: &'static str,
        path: PathBuf,
        found: String,
    },

    #[error("map `{map}`: {op} failed: {}", chain(error))]
    Map {
        map: &'static str,
        op: &'static str,
        error: MapError,
    },

    #[error(
        "map `{map}` cannot take the new policy: it needs {needed} entries in the inactive slot \
         while the active slot still holds {in_active}, but the map holds at most {max}; nothing \
         was written and the old policy stays in force"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        in_active: usize,
        max: usize,
    },

    #[error(
        "writing the new policy into map `{map}` failed: {}; the inactive slot was cleared{} and \
         the old policy stays in force",
        chain(error),
        if *cleanup_failed { " (partly: the next write clears the rest)" } else { "" }
    )]
    Write {
        map: &'static str,
        cleanup_failed: bool,
        error: MapError,
    },

    #[error(
        "the new tables are active (CONFIG.active_slot {slot}) but bumping CONFIG.generation \
         from {generation} failed: {}; established flows were not re-checked against them and \
         keep their old verdicts until the next successful write",
        chain(error)
    )]
    GenerationBump {
        slot: u32,
        generation: u32,
        error: MapError,
    },

    #[error("invalid entry for map `{map}`: {detail}; nothing was written")]
    InvalidEntry { map: &'static str, detail: String },

    #[error(
        "CONFIG.active_slot is {active_slot} (expected 0 or 1): the pinned maps were written by \
         something else; restart with --force-fresh"
    )]
    CorruptConfig { active_slot: u32 },

    #[error("no interface named `{name}` in this network namespace")]
    NoSuchInterface { name: String },

    #[error("no interface with index {ifindex} in this network namespace")]
    NoSuchIfindex { ifindex: u32 },

    #[error(
        "attaching `{program}` to {ifname} (ifindex {ifindex}) at {hook} with tcx failed: {}; \
         tcx needs Linux 6.6 or later",
        chain(error)
    )]
    Attach {
        program: &'static str,
        ifname: String,
        ifindex: u32,
        hook: Hook,
        error: ProgramError,
    },

    #[error(
        "failed to pin the link at {}: {}; is it on a bpffs mount?",
        path.display(),
        chain(error)
    )]
    PinLink { path: PathBuf, error: PinError },

    #[error("pinned link at {}: {op} failed: {}", path.display(), chain(error))]
    Link {
        path: PathBuf,
        op: &'static str,
        error: LinkError,
    },

    #[error(
        "moving the pinned link at {} to the freshly loaded `{program}` failed: {}",
        path.display(),
        chain(error)
    )]
    ReplaceLink {
        path: PathBuf,
        program: &'static str,
        error: ProgramError,
    },

    #[error("querying the tcx programs of {what}: {}", chain(error))]
    Query { what: String, error: ProgramError },
}
