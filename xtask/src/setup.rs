//! `cargo xtask setup`: from a bare Debian 12 with rustup to a machine that builds the eBPF
//! object and runs every test. Each step checks first and says what it did or skipped.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, ebpf_env, effective_uid, touch};

/// Needed to build bpf-linker (against LLVM 22) and to link Rust at all, by the tests
/// (`iproute2`), and by the benchmarks: `iptables` (its `iptables-legacy-restore` and
/// `iptables-nft-restore`) and `ipset` for the iptables reference of the packets/s section,
/// `fonts-dejavu-core` for the text in the plots.
const REQUIRED_PACKAGES: &[&str] = &[
    "build-essential",
    "zlib1g-dev",
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "iptables",
    "ipset",
    "fonts-dejavu-core",
];
/// Nice to have: trafgen for the packets/s benchmarks.
const OPTIONAL_PACKAGES: &[&str] = &["netsniff-ng"];

const BPFFS: &str = "/sys/fs/bpf";

pub(crate) fn run(root: &Path, optional: bool) -> Result<()> {
    let root_user = effective_uid()? == 0;
    apt_packages(root_user, optional)?;

    let rustup = ebpf_env::find_program("rustup").context(
        "rustup not found on PATH or in $CARGO_HOME/bin; install it from https://rustup.rs",
    )?;
    let mut changed = nightly(&rustup)?;
    changed |= bpf_linker()?;
    bpffs(root_user)?;

    if changed {
        // The build script only reruns when its inputs change; installing tools is not one.
        let build_rs = root.join("enforcer-user/build.rs");
        touch(&build_rs)?;
        step(
            "rebuild",
            "touched enforcer-user/build.rs so the next build embeds the real object",
        );
    }

    match ebpf_env::check() {
        Ok(ready) => {
            step(
                "ebpf",
                &format!(
                    "ready: {} ({}, LLVM {}), bpf-linker {} at {}",
                    ready.toolchain.name,
                    ready.toolchain.version,
                    ready
                        .toolchain
                        .llvm_major
                        .map_or_else(|| "?".to_owned(), |m| m.to_string()),
                    ready.bpf_linker_version,
                    ready.bpf_linker.display()
                ),
            );
            Ok(())
        }
        Err(missing) => bail!(
            "setup finished but the eBPF object still cannot be built: {}",
            missing.join("; ")
        ),
    }
}

fn step(name: &str, what: &str) {
    println!("setup: {name:<10} {what}");
}

/// Runs a command with inherited output, failing with its command line.
fn run_cmd(cmd: &mut Command) -> Result<()> {
    println!("setup: $ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn dpkg_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .context(
            "running dpkg-query (setup supports Debian/Ubuntu; elsewhere install the LLVM 22 \
             dev packages, iproute2 and a C toolchain yourself)",
        )?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).ends_with("install ok installed"))
}

fn missing_packages(packages: &[&str]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for p in packages {
        if !dpkg_installed(p)? {
            missing.push((*p).to_owned());
        }
    }
    Ok(missing)
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn apt_packages(root_user: bool, optional: bool) -> Result<()> {
    let required = missing_packages(REQUIRED_PACKAGES)?;
    let optional = if optional {
        missing_packages(OPTIONAL_PACKAGES)?
    } else {
        Vec::new()
    };
    if required.is_empty() && optional.is_empty() {
        step(
            "apt",
            &format!("skipped: {} installed", REQUIRED_PACKAGES.join(", ")),
        );
        return Ok(());
    }
    if !root_user {
        bail!(
            "apt packages missing ({}); rerun `cargo xtask setup` as root",
            [required.as_slice(), optional.as_slice()]
                .concat()
                .join(", ")
        );
    }
    run_cmd(apt_get().args(["update", "-q"]))?;
    if !required.is_empty() {
        run_cmd(
            apt_get()
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&required),
        )?;
        step("apt", &format!("installed {}", required.join(", ")));
    }
    if !optional.is_empty() {
        match run_cmd(
            apt_get()
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&optional),
        ) {
            Ok(()) => step(
                "apt",
                &format!("installed optional {}", optional.join(", ")),
            ),
            Err(e) => step(
                "apt",
                &format!("optional {} not installed: {e:#}", optional.join(", ")),
            ),
        }
    }
    Ok(())
}

/// Makes sure a toolchain with rust-src exists; returns whether anything was installed.
fn ensure_toolchain(rustup: &Path, name: &str) -> Result<bool> {
    match ebpf_env::probe_toolchain(rustup, name) {
        Some(tc) if tc.rust_src => {
            step(
                "toolchain",
                &format!("skipped: {name} with rust-src present ({})", tc.version),
            );
            Ok(false)
        }
        Some(_) => {
            run_cmd(Command::new(rustup).args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                name,
            ]))?;
            step("toolchain", &format!("added rust-src to {name}"));
            Ok(true)
        }
        None => {
            run_cmd(Command::new(rustup).args([
                "toolchain",
                "install",
                name,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            step("toolchain", &format!("installed {name} with rust-src"));
            Ok(true)
        }
    }
}

/// The eBPF crate needs a nightly (for `-Z build-std=core`) whose LLVM bpf-linker can read.
fn nightly(rustup: &Path) -> Result<bool> {
    if let Some(name) = ebpf_env::toolchain_override() {
        return ensure_toolchain(rustup, &name);
    }
    let mut changed = ensure_toolchain(rustup, ebpf_env::DEFAULT_NIGHTLY)?;
    let llvm =
        ebpf_env::probe_toolchain(rustup, ebpf_env::DEFAULT_NIGHTLY).and_then(|t| t.llvm_major);
    if llvm.is_some_and(|m| m > ebpf_env::BPF_LINKER_LLVM_MAJOR) {
        step(
            "toolchain",
            &format!(
                "{} uses LLVM {}, newer than bpf-linker's {}; falling back to {}",
                ebpf_env::DEFAULT_NIGHTLY,
                llvm.unwrap_or_default(),
                ebpf_env::BPF_LINKER_LLVM_MAJOR,
                ebpf_env::PINNED_NIGHTLY
            ),
        );
        changed |= ensure_toolchain(rustup, ebpf_env::PINNED_NIGHTLY)?;
    }
    Ok(changed)
}

/// bpf-linker 0.13 built against Debian's LLVM 22; returns whether it was installed.
fn bpf_linker() -> Result<bool> {
    if let Some(path) = ebpf_env::find_program("bpf-linker") {
        match ebpf_env::bpf_linker_version(&path) {
            Some(v) if v.starts_with(ebpf_env::BPF_LINKER_VERSION_PREFIX) => {
                step("bpf-linker", &format!("skipped: {v} at {}", path.display()));
                return Ok(false);
            }
            Some(v) => step(
                "bpf-linker",
                &format!("{} is {v}; replacing", path.display()),
            ),
            None => step(
                "bpf-linker",
                &format!("{} does not run; reinstalling", path.display()),
            ),
        }
    }
    let llvm_bin = Path::new(ebpf_env::LLVM_BIN_DIR);
    if !llvm_bin.join("llvm-config").is_file() {
        bail!(
            "{}/llvm-config missing: install llvm-22-dev and libpolly-22-dev (apt step)",
            llvm_bin.display()
        );
    }
    let feature = format!("llvm-{}", ebpf_env::BPF_LINKER_LLVM_MAJOR);
    run_cmd(
        cargo()
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
            ])
            .args([
                "--version",
                ebpf_env::BPF_LINKER_VERSION_REQ,
                "--features",
                &feature,
            ])
            .env("PATH", ebpf_env::path_with(llvm_bin)),
    )?;
    let path =
        ebpf_env::find_program("bpf-linker").context("bpf-linker not found after cargo install")?;
    let version = ebpf_env::bpf_linker_version(&path)
        .with_context(|| format!("{} installed but does not run", path.display()))?;
    step(
        "bpf-linker",
        &format!("installed {version} at {}", path.display()),
    );
    Ok(true)
}

/// bpffs at /sys/fs/bpf, where the agent pins maps and links.
fn bpffs(root_user: bool) -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        let (_dev, dir, fstype) = (fields.next(), fields.next(), fields.next());
        dir == Some(BPFFS) && fstype == Some("bpf")
    });
    if mounted {
        step("bpffs", &format!("skipped: mounted at {BPFFS}"));
        return Ok(());
    }
    if !root_user {
        bail!("bpffs is not mounted at {BPFFS}; rerun `cargo xtask setup` as root");
    }
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    step("bpffs", &format!("mounted at {BPFFS}"));
    Ok(())
}
