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
    /// Build (release) and run the benchmarks as root: progress on stderr, tables on stdout;
    /// writes bench/results.md, bench/*.csv and bench/*.png (docs/benchmarks.md).
    Bench {
        /// Smaller sizes and fewer repetitions (a few minutes; the full run takes up to 30).
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
    // cargo test's output passes through line by line; its per-binary "test result:" lines
    // are added up into one closing line, `summary: N passed, N failed, N skipped`, so the
    // run ends with the whole suite's count rather than the last binary's (the doctests).
    let mut child = cargo()
        .arg("test")
        .args(args)
        .current_dir(&root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        use std::io::{BufRead as _, Write as _};
        let mut out = std::io::stdout().lock();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test's output")?;
            totals.add(&line);
            writeln!(out, "{line}").context("writing cargo test's output")?;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Sums of cargo test's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

fn bench(quick: bool) -> Result<ExitCode> {
    let root = workspace_root();
    if effective_uid()? != 0 {
        bail!("xtask bench: the benchmarks load eBPF programs; run as root");
    }
    let started = Instant::now();
    // The exact command, as typed (recorded in bench/results.md).
    let command = std::iter::once("cargo xtask".to_string())
        .chain(env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("xtask bench: building enforcer-bench (release)");
    let build = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "enforcer-user",
            "--features",
            "testgen",
            "--bin",
            "enforcer-bench",
        ])
        .current_dir(&root)
        .status()
        .context("building enforcer-bench")?;
    if !build.success() {
        bail!("xtask bench: building enforcer-bench failed ({build})");
    }
    let built = started.elapsed();
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("release").join("enforcer-bench");
    eprintln!(
        "xtask bench: built in {:.0} s; running {} (progress below, tables at the end)",
        built.as_secs_f64(),
        if quick {
            "the quick run"
        } else {
            "the full run"
        }
    );
    let mut run = Command::new(&exe);
    run.arg("--out")
        .arg(root.join("bench"))
        .args(["--command", &command]);
    if quick {
        run.arg("--quick");
    }
    let status = run
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    let total = started.elapsed();
    eprintln!(
        "xtask bench: {} in {:.0} s ({:.0} s build, {:.0} s benchmarks); results in {}",
        if status.success() { "done" } else { "FAILED" },
        total.as_secs_f64(),
        built.as_secs_f64(),
        (total - built).as_secs_f64(),
        root.join("bench").join("results.md").display()
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_add_up_cargo_test_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 215 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 4.56s");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        t.add("test foo ... ok");
        assert_eq!(
            t,
            Totals {
                passed: 218,
                failed: 1,
                ignored: 2
            }
        );
    }
}
