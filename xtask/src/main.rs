//! `cargo xtask <task>`: project automation that plain cargo cannot express.
//!
//! - `setup`: install what building and testing Enforcer needs (idempotent, quick when done).
//! - `test`: build the default members and run the whole test suite.
//! - `bench`: build and run the benchmarks (`enforcer-bench`, release), writing `bench/`.

use std::{
    env,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod ebpf_env;
mod setup;

#[derive(Parser)]
#[command(about = "Enforcer project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install build and test prerequisites: apt packages (LLVM 22, iproute2), a nightly
    /// toolchain with rust-src, bpf-linker, and the bpffs mount. Safe to rerun.
    Setup {
        /// Skip optional packages (netsniff-ng for the benchmarks).
        #[arg(long)]
        no_optional: bool,
    },
    /// `cargo build` then `cargo test` for the default workspace members; extra arguments go to
    /// `cargo test` (e.g. `cargo xtask test -- privileged_`). Privileged tests need root.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (release) and run the benchmarks as root: prints tables, writes bench/results.md
    /// and bench/*.csv (docs/benchmarks.md).
    Bench {
        /// Smaller sizes and fewer repetitions (about three minutes here).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<ExitCode> {
    match Cli::parse().task {
        Task::Setup { no_optional } => {
            let started = Instant::now();
            setup::run(&workspace_root(), !no_optional)?;
            println!("setup: done in {:.1}s", started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Task::Test { args } => test(&args),
        Task::Bench { quick } => bench(quick),
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The cargo that runs us (`cargo xtask` sets `$CARGO`), else `cargo` from PATH.
pub(crate) fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Effective uid, from `/proc/self/status` (no libc dependency needed).
pub(crate) fn effective_uid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

/// Bumps a file's mtime so cargo reruns the build script that owns it.
pub(crate) fn touch(path: &Path) -> Result<()> {
    File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .with_context(|| format!("touching {}", path.display()))
}

fn test(args: &[String]) -> Result<ExitCode> {
    let root = workspace_root();
    if effective_uid()? != 0 {
        eprintln!("xtask test: not root; the privileged_ tests will fail (they never skip)");
    }
    let status = cargo()
        .arg("build")
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    // Nothing is printed after cargo test, so its summary stays the last lines of the output.
    let status = cargo()
        .arg("test")
        .args(args)
        .current_dir(&root)
        .status()
        .context("running cargo test")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn bench(quick: bool) -> Result<ExitCode> {
    let root = workspace_root();
    if effective_uid()? != 0 {
        bail!("xtask bench: the benchmarks load eBPF programs; run as root");
    }
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let mut run = cargo();
    run.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "enforcer-user",
        "--features",
        "testgen",
        "--bin",
        "enforcer-bench",
        "--",
        "--out",
    ])
    .arg(root.join("bench"))
    .args(["--command", command]);
    if quick {
        run.arg("--quick");
    }
    let status = run
        .current_dir(&root)
        .status()
        .context("running enforcer-bench")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
