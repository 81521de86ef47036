//! `enforcer lab`: the files as a local cluster in network namespaces, enforced by the real
//! datapath and tested with real packets (`docs/lab.md`).
//!
//! Exit status: 0 every observed verdict is the evaluator's (and the probe file's); 1 some
//! differ; 2 the lab cannot run (bad input, not root, no datapath, no bpffs).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use enforcer_user::lab::{self, LabOptions};

use super::{EXIT_BAD_INPUT, Files, Format, OutputArg, print_json};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(flatten)]
    pub files: Files,
    /// YAML list of probes (`{from, to, port, protocol}`, plus `icmpType`/`icmpCode`);
    /// default: every pod pair on every declared container port of the destination.
    #[arg(long, value_name = "FILE")]
    pub probes: Option<PathBuf>,
    /// How long one attempt waits for an answer, in milliseconds.
    #[arg(long = "timeout-ms", value_name = "MS", default_value_t = 250)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub output: OutputArg,
}

pub fn run(a: LabArgs) -> anyhow::Result<ExitCode> {
    let opts = LabOptions {
        files: a.files.files,
        probes: a.probes,
        timeout: Duration::from_millis(a.timeout_ms.max(1)),
        ..LabOptions::default()
    };
    let report = match lab::run(opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    match a.output.output {
        Format::Text => print!("{}", report.table()),
        Format::Json => {
            // The rows themselves (not `report.json()`), so keys keep the probe file's order.
            print_json(&report.results)?;
            for n in &report.notes {
                eprintln!("note: {n}");
            }
        }
    }
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
