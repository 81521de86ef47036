//! Is this machine able to build the eBPF object? One answer, shared by `cargo xtask setup` and
//! `enforcer-user/build.rs` (which includes this file with `#[path]`), so the two never disagree.
//!
//! std only: a build script cannot depend on the xtask crate's dependencies.
#![allow(dead_code, reason = "each includer uses a different subset")]

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

/// LLVM major version `cargo xtask setup` builds bpf-linker against (Debian 12's `llvm-22-dev`).
/// The nightly rustc that compiles the eBPF crate must not emit newer bitcode than this.
pub const BPF_LINKER_LLVM_MAJOR: u32 = 22;
/// The bpf-linker release line we install and accept.
pub const BPF_LINKER_VERSION_PREFIX: &str = "0.13.";
/// `cargo install` requirement matching [`BPF_LINKER_VERSION_PREFIX`].
pub const BPF_LINKER_VERSION_REQ: &str = "^0.13";
/// Directory holding `llvm-config` for [`BPF_LINKER_LLVM_MAJOR`].
pub const LLVM_BIN_DIR: &str = "/usr/lib/llvm-22/bin";
/// First choice for building the eBPF crate.
pub const DEFAULT_NIGHTLY: &str = "nightly";
/// Fallback when `nightly` has moved past [`BPF_LINKER_LLVM_MAJOR`]: the nightly measured to work
/// (rustc 1.97.0-nightly e50aa6fba, LLVM 22.1.4).
pub const PINNED_NIGHTLY: &str = "nightly-2026-05-20";
/// Overrides the toolchain choice entirely (no LLVM check), e.g. `nightly-2026-06-01`.
pub const TOOLCHAIN_ENV: &str = "ENFORCER_EBPF_TOOLCHAIN";
/// `1` forces building the eBPF object (missing tools fail the build), `0` writes the stub.
pub const BUILD_EBPF_ENV: &str = "ENFORCER_BUILD_EBPF";

/// `$CARGO_HOME/bin`, defaulting to `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

/// Finds an executable on `PATH`, then in `$CARGO_HOME/bin` (where `cargo install` puts it).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_dirs = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(cargo_bin_dir())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a command and returns its stdout when it exits 0.
fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `bpf-linker --version` → `"0.13.0"`; `None` if it does not run (e.g. libLLVM is gone).
pub fn bpf_linker_version(bpf_linker: &Path) -> Option<String> {
    let out = output_of(Command::new(bpf_linker).arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// What an installed rustup toolchain offers for building eBPF.
#[derive(Debug, Clone)]
pub struct ToolchainInfo {
    pub name: String,
    /// `rustc -vV`'s first line, e.g. `rustc 1.97.0-nightly (e50aa6fba 2026-05-19)`.
    pub version: String,
    pub llvm_major: Option<u32>,
    pub rust_src: bool,
}

/// Probes `toolchain` through rustup; `None` when it is not installed.
pub fn probe_toolchain(rustup: &Path, toolchain: &str) -> Option<ToolchainInfo> {
    // `rustup run` never installs a missing toolchain; it fails, which is what we want.
    let vv = output_of(Command::new(rustup).args(["run", toolchain, "rustc", "-vV"]))?;
    let version = vv.lines().next().unwrap_or_default().to_owned();
    let llvm_major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok());
    let sysroot =
        output_of(Command::new(rustup).args(["run", toolchain, "rustc", "--print", "sysroot"]))?;
    let rust_src = Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file();
    Some(ToolchainInfo {
        name: toolchain.to_owned(),
        version,
        llvm_major,
        rust_src,
    })
}

/// Everything `aya_build::build_ebpf` needs, found.
#[derive(Debug, Clone)]
pub struct Ready {
    pub toolchain: ToolchainInfo,
    pub bpf_linker: PathBuf,
    pub bpf_linker_version: String,
}

/// Checks whether the eBPF object can be built here; `Err` lists what is missing.
pub fn check() -> Result<Ready, Vec<String>> {
    let mut missing = Vec::new();

    let bpf_linker = match find_program("bpf-linker") {
        None => {
            missing.push("bpf-linker is not on PATH nor in $CARGO_HOME/bin".to_owned());
            None
        }
        Some(path) => match bpf_linker_version(&path) {
            None => {
                missing.push(format!(
                    "{} does not run (is libLLVM {BPF_LINKER_LLVM_MAJOR} installed?)",
                    path.display()
                ));
                None
            }
            Some(v) if !v.starts_with(BPF_LINKER_VERSION_PREFIX) => {
                missing.push(format!(
                    "{} is version {v}, need {BPF_LINKER_VERSION_REQ}",
                    path.display()
                ));
                None
            }
            Some(v) => Some((path, v)),
        },
    };

    let toolchain = match find_program("rustup") {
        None => {
            missing.push("rustup is not on PATH nor in $CARGO_HOME/bin".to_owned());
            None
        }
        Some(rustup) => match select_toolchain(&rustup) {
            Ok(tc) => Some(tc),
            Err(why) => {
                missing.push(why);
                None
            }
        },
    };

    match (toolchain, bpf_linker) {
        (Some(toolchain), Some((bpf_linker, bpf_linker_version))) if missing.is_empty() => {
            Ok(Ready {
                toolchain,
                bpf_linker,
                bpf_linker_version,
            })
        }
        _ => Err(missing),
    }
}

/// The toolchain named by `$ENFORCER_EBPF_TOOLCHAIN`, if set and non-empty.
pub fn toolchain_override() -> Option<String> {
    env::var(TOOLCHAIN_ENV).ok().filter(|s| !s.is_empty())
}

/// Picks the toolchain that builds the eBPF crate: `$ENFORCER_EBPF_TOOLCHAIN` as given, else the
/// first of [`DEFAULT_NIGHTLY`], [`PINNED_NIGHTLY`] that is installed, has `rust-src` and an LLVM
/// no newer than bpf-linker's.
pub fn select_toolchain(rustup: &Path) -> Result<ToolchainInfo, String> {
    if let Some(name) = toolchain_override() {
        return match probe_toolchain(rustup, &name) {
            None => Err(format!(
                "{TOOLCHAIN_ENV}={name} is not an installed toolchain"
            )),
            Some(tc) if !tc.rust_src => Err(format!(
                "{TOOLCHAIN_ENV}={name} lacks rust-src \
                 (rustup component add rust-src --toolchain {name})"
            )),
            Some(tc) => Ok(tc),
        };
    }
    let mut why = Vec::new();
    for name in [DEFAULT_NIGHTLY, PINNED_NIGHTLY] {
        match probe_toolchain(rustup, name) {
            None => why.push(format!("{name}: not installed")),
            Some(tc) if !tc.rust_src => why.push(format!("{name}: rust-src missing")),
            Some(tc) if tc.llvm_major.is_some_and(|m| m > BPF_LINKER_LLVM_MAJOR) => {
                why.push(format!(
                    "{name}: LLVM {} is newer than bpf-linker's LLVM {BPF_LINKER_LLVM_MAJOR}",
                    tc.llvm_major.unwrap_or_default()
                ))
            }
            Some(tc) => return Ok(tc),
        }
    }
    Err(format!("no usable nightly toolchain ({})", why.join("; ")))
}

/// `PATH` with `dir` in front, for child processes.
pub fn path_with(dir: &Path) -> OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path).filter(|d| d != dir));
    }
    env::join_paths(dirs).unwrap_or_else(|_| dir.as_os_str().to_owned())
}
