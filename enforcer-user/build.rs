//! Builds `enforcer-ebpf` for the bpf target and leaves the object at `$OUT_DIR/enforcer-ebpf`,
//! where `src/ebpf_object.rs` embeds it.
//!
//! When the tools are missing (no bpf-linker, no nightly with rust-src) this writes an empty stub
//! object instead, sets `cfg(enforcer_ebpf_stub)` and warns, so `cargo check`, `clippy`, `doc` and
//! the userspace-only tests work on any machine. The binary then refuses to load the datapath with
//! an error that says to run `cargo xtask setup`.
//!
//! `ENFORCER_BUILD_EBPF=1` makes the eBPF build mandatory (missing tools fail the build);
//! `ENFORCER_BUILD_EBPF=0` always writes the stub. `ENFORCER_EBPF_TOOLCHAIN` picks the rustup
//! toolchain. A compile error in the eBPF crate always fails the build.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};

#[path = "../xtask/src/ebpf_env.rs"]
mod ebpf_env;

/// The eBPF crate's bin target; aya-build copies the object to `$OUT_DIR/<bin name>`.
const OBJECT_NAME: &str = "enforcer-ebpf";
const EBPF_PACKAGE: &str = "enforcer-ebpf";

enum Mode {
    Auto,
    Force,
    Stub,
}

fn main() {
    // One readable line (anyhow's Debug would add a backtrace when RUST_BACKTRACE is set).
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(enforcer_ebpf_stub)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../xtask/src/ebpf_env.rs");
    println!("cargo:rerun-if-env-changed={}", ebpf_env::BUILD_EBPF_ENV);
    println!("cargo:rerun-if-env-changed={}", ebpf_env::TOOLCHAIN_ENV);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest_dir
        .parent()
        .context("enforcer-user has no parent directory")?;

    let mode = match env::var(ebpf_env::BUILD_EBPF_ENV).as_deref() {
        Err(_) | Ok("") => Mode::Auto,
        Ok("1" | "true") => Mode::Force,
        Ok("0" | "false") => Mode::Stub,
        Ok(other) => bail!(
            "{}={other:?}: expected 1 (build the eBPF object or fail) or 0 (stub)",
            ebpf_env::BUILD_EBPF_ENV
        ),
    };
    // aya-build honours AYA_BUILD_SKIP by writing nothing; we need at least the stub.
    let aya_skip =
        env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));

    if matches!(mode, Mode::Stub) || aya_skip {
        let why = if aya_skip {
            "AYA_BUILD_SKIP is set".to_owned()
        } else {
            format!("{}=0", ebpf_env::BUILD_EBPF_ENV)
        };
        return write_stub(&out_dir, &[why], "unset it and rebuild");
    }

    let ready = match ebpf_env::check() {
        Ok(ready) => ready,
        Err(missing) => {
            if matches!(mode, Mode::Force) {
                bail!(
                    "{}=1 but the eBPF object cannot be built: {}. Run `cargo xtask setup`.",
                    ebpf_env::BUILD_EBPF_ENV,
                    missing.join("; ")
                );
            }
            // Rerun once bpf-linker appears where `cargo install` puts it (`cargo xtask setup`
            // also touches this build script after installing anything).
            if let Some(bin) = ebpf_env::cargo_bin_dir().filter(|d| d.is_dir()) {
                println!("cargo:rerun-if-changed={}", bin.display());
            }
            return write_stub(
                &out_dir,
                &missing,
                "run `cargo xtask setup`, then rebuild (ENFORCER_BUILD_EBPF=1 makes this an error)",
            );
        }
    };

    // SAFETY: a build script is single-threaded here; nothing else reads the environment.
    // The nested cargo inherits both: rustc runs `bpf-linker` by name, so the one we found goes
    // first on PATH; and quiet keeps its progress lines out of our cargo:warning output
    // (diagnostics still come through).
    unsafe {
        if let Some(dir) = ready.bpf_linker.parent() {
            env::set_var("PATH", ebpf_env::path_with(dir));
        }
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    println!("cargo:rerun-if-changed={}", ready.bpf_linker.display());
    // aya-build already reruns on changes under enforcer-ebpf/; the shared types live here.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("enforcer-common").display()
    );

    let ebpf_dir = workspace.join(EBPF_PACKAGE);
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    let toolchain = ready.toolchain.name.as_str();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain),
    )
    .with_context(|| {
        format!(
            "building {EBPF_PACKAGE} with {toolchain} ({}) and bpf-linker {} failed; \
             the compiler output is in the warnings above",
            ready.toolchain.version, ready.bpf_linker_version
        )
    })?;

    let object = out_dir.join(OBJECT_NAME);
    let len = fs::metadata(&object)
        .with_context(|| format!("aya-build produced no {}", object.display()))?
        .len();
    if len == 0 {
        bail!("aya-build produced an empty {}", object.display());
    }
    Ok(())
}

fn write_stub(out_dir: &Path, why: &[String], fix: &str) -> anyhow::Result<()> {
    let object = out_dir.join(OBJECT_NAME);
    fs::write(&object, []).with_context(|| format!("writing stub {}", object.display()))?;
    println!("cargo:rustc-cfg=enforcer_ebpf_stub");
    println!(
        "cargo:warning=the eBPF datapath object was NOT built; this enforcer binary cannot enforce"
    );
    for reason in why {
        println!("cargo:warning=  reason: {reason}");
    }
    println!("cargo:warning=  fix: {fix}");
    Ok(())
}
