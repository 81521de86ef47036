//! Map key and value types shared by Enforcer's eBPF programs and its userspace.
//!
//! Every type is `#[repr(C)]` with explicit padding and a compile-time size assertion, so
//! both sides agree on the layout byte for byte. `aya::Pod` impls sit behind the `user`
//! feature so the eBPF side stays `no_std` without aya.
#![no_std]

/// Version of the map layout; pins live under `/sys/fs/bpf/enforcer/v<LAYOUT_VERSION>/`.
pub const LAYOUT_VERSION: u32 = 1;
