//! `enforcer`: the command-line entry point.
//!
//! Subcommands: `check` (validate files and summarise them), `explain` (why a flow is allowed
//! or denied), `lint` (common policy mistakes). The implementations live in `src/cli/`.

#[path = "../cli/mod.rs"]
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::EXIT_BAD_INPUT)
        }
    }
}
