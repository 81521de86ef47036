//! The `enforcer` command line: argument definitions and dispatch.
//!
//! Exit codes: 0 success; 1 `check` found invalid input / `lint` found warnings; 2 bad input
//! (unreadable or invalid files for `explain` and `lint`, bad arguments, unknown pods).

mod check;
mod explain;
mod flows;
mod get;
mod lab;
mod lint;
mod run;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};
use enforcer_user::{
    model::{Inventory, Origin},
    sources::{self, LoadError},
};

/// Exit status for bad input (clap uses 2 for bad arguments too).
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    about = "Kubernetes and Calico network policy, enforced with eBPF",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and validate policy files; print what they contain and the evaluation order.
    Check(check::CheckArgs),
    /// Explain why a flow is allowed or denied, step by step.
    Explain(explain::ExplainArgs),
    /// Report common policy mistakes (shadowed rules, missing DNS allows, ...).
    Lint(lint::LintArgs),
    /// Run the files as a local cluster in network namespaces, enforced by the eBPF datapath,
    /// and test them with real packets (needs root).
    Lab(lab::LabArgs),
    /// Run the node agent: enforce a directory of YAML (--policy-dir) or the Kubernetes API
    /// (--kubernetes) on this node's interfaces, until SIGTERM (needs root).
    Run(Box<run::RunArgs>),
    /// Show what the datapath holds (endpoints, policies with hit counts, maps, conntrack),
    /// read from the pinned maps: works while the agent is down (needs root).
    Get(get::GetArgs),
    /// Show the flow log: denied flows (and staged differences) with the rule that decided.
    Flows(flows::FlowsArgs),
}

/// Files or directories to load (`-f` may be repeated).
#[derive(Debug, Args)]
pub struct Files {
    /// YAML file or directory of YAML files (repeatable; directories are read recursively).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Lint(a) => lint::run(a),
        Command::Lab(a) => lab::run(a),
        Command::Run(a) => run::run(*a),
        Command::Get(a) => get::run(a),
        Command::Flows(a) => flows::run(a),
    }
}

/// Loads the files, or returns every load error.
pub fn load(files: &[PathBuf]) -> Result<Inventory, Vec<LoadError>> {
    sources::load_paths(files).map_err(|e| e.0)
}

/// A load error as JSON.
pub fn error_json(e: &LoadError) -> serde_json::Value {
    let origin: &Origin = &e.origin;
    serde_json::json!({
        "file": origin.file,
        "document": origin.document,
        "field": e.field,
        "message": e.message,
        "error": e.to_string(),
    })
}

/// Prints load errors to stderr, one per line.
pub fn print_errors(errors: &[LoadError]) {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error{} in the input",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

/// Writes JSON to stdout.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
