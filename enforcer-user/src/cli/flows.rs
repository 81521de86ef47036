//! `enforcer flows`: the agent's flow log (denied flows, and allowed flows a staged policy
//! would deny), read from its file, so it works while the agent is down (`docs/observe.md`).
//!
//! Exit status: 0 shown (or followed until interrupted); 2 no flow log at the path.

use std::{collections::VecDeque, io, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, ValueEnum};
use enforcer_user::observe::{
    DEFAULT_FLOW_LOG, FlowVerdict,
    flowlog::{self, FlowFilter, Follower, ParsedLine},
};

use super::EXIT_BAD_INPUT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictArg {
    Denied,
    Allowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum FlowFormat {
    /// One line per flow for people.
    #[default]
    Text,
    /// The flow log's JSON lines.
    Json,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Keep printing flows as they are logged (across rotations) until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only flows with this verdict.
    #[arg(long, value_enum)]
    pub verdict: Option<VerdictArg>,
    /// The flow log (its rotated predecessor `<file>.1` is read first).
    #[arg(long, value_name = "PATH", env = "ENFORCER_FLOW_LOG", default_value = DEFAULT_FLOW_LOG)]
    pub file: PathBuf,
    /// Only the last N matching flows (then follow, with --follow).
    #[arg(short = 'n', long = "tail", value_name = "N")]
    pub tail: Option<usize>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = FlowFormat::Text)]
    pub output: FlowFormat,
}

/// Prints records; `Err` only when stdout is gone (a closed pipe ends the command quietly).
fn emit(
    out: &mut impl io::Write,
    lines: impl IntoIterator<Item = ParsedLine>,
    format: FlowFormat,
) -> io::Result<()> {
    for parsed in lines {
        match parsed {
            Ok(r) => {
                let text = match format {
                    FlowFormat::Text => flowlog::format_text(&r),
                    FlowFormat::Json => serde_json::to_string(&r).map_err(io::Error::other)?,
                };
                writeln!(out, "{text}")?;
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    out.flush()
}

pub fn run(a: FlowsArgs) -> anyhow::Result<ExitCode> {
    let filter = FlowFilter {
        verdict: a.verdict.map(|v| match v {
            VerdictArg::Denied => FlowVerdict::Denied,
            VerdictArg::Allowed => FlowVerdict::Allowed,
        }),
    };
    let mut stdout = io::stdout().lock();
    if !a.follow {
        let records = match flowlog::read_records(&a.file, filter, a.tail) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        };
        let _ = emit(&mut stdout, records, a.output);
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: the rotated file, then the current one from its start through a follower, so no
    // line is lost or shown twice between the first read and the first poll.
    let mut first = VecDeque::new();
    let had_old =
        flowlog::collect_file(&flowlog::rotated_path(&a.file), filter, a.tail, &mut first)?;
    let mut tail = Follower::from_start(&a.file);
    flowlog::collect_lines(tail.poll()?, filter, a.tail, &mut first);
    if !had_old && !a.file.exists() {
        eprintln!("waiting for {} ...", a.file.display());
    }
    if emit(&mut stdout, first, a.output).is_err() {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let mut batch = VecDeque::new();
        flowlog::collect_lines(tail.poll()?, filter, None, &mut batch);
        if emit(&mut stdout, batch, a.output).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
