//! `enforcer get endpoints|policies|maps|conntrack`: what the datapath holds, read from the
//! pinned maps (never loading anything) and named with the agent's state file, so it works
//! while the agent is down (`docs/observe.md`).
//!
//! Exit status: 0 shown; 2 the pins cannot be read (none under `--pin-base`, not root).

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use enforcer_user::{
    datapath::{DEFAULT_PIN_BASE, Datapath},
    observe::{
        DEFAULT_STATE_DIR, InspectState,
        inspect::{self},
    },
};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// Interfaces with their endpoint, policy sets and attached hooks.
    #[value(alias = "endpoint", alias = "ep")]
    Endpoints,
    /// Tier → policy → rule with hit counts (enforced and staged).
    #[value(alias = "policy", alias = "pol")]
    Policies,
    /// Every pinned map: entries per slot, capacity, fill.
    #[value(alias = "map")]
    Maps,
    /// Tracked flows: tuple, age, state, generation and the rule that allowed them.
    #[value(alias = "ct")]
    Conntrack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GetFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[arg(value_enum)]
    pub what: What,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = GetFormat::Table)]
    pub output: GetFormat,
    /// Where the agent pins its maps (the layout directory `v<N>` goes under it).
    #[arg(long, value_name = "DIR", env = "ENFORCER_PIN_BASE", default_value = DEFAULT_PIN_BASE)]
    pub pin_base: PathBuf,
    /// The agent's state directory (its `state.json` names endpoints and rules).
    #[arg(long, value_name = "DIR", env = "ENFORCER_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

fn print<V: Serialize>(
    view: &V,
    format: GetFormat,
    table: impl FnOnce(&V) -> String,
    empty: bool,
    note: Option<&String>,
) -> anyhow::Result<()> {
    let text = match format {
        GetFormat::Table => {
            if let Some(n) = note {
                eprintln!("note: {n}");
            }
            if empty {
                eprintln!("No resources found.");
            }
            table(view)
        }
        GetFormat::Json => format!("{}\n", serde_json::to_string_pretty(view)?),
        GetFormat::Yaml => serde_yaml::to_string(view)?,
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

pub fn run(a: GetArgs) -> anyhow::Result<ExitCode> {
    let dp = Datapath::adopt(&a.pin_base).with_context(|| {
        format!(
            "reading the pinned datapath under {} (has the agent run on this node? another \
             --pin-base?)",
            a.pin_base.display()
        )
    })?;
    let state = match InspectState::read(&a.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: ignoring the agent state file: {e}");
            None
        }
    };
    let state = state.as_ref();
    match a.what {
        What::Endpoints => {
            let v = inspect::endpoints(&dp, state)?;
            print(
                &v,
                a.output,
                inspect::EndpointsView::table,
                v.endpoints.is_empty(),
                v.note.as_ref(),
            )?;
        }
        What::Policies => {
            let v = inspect::policies(&dp, state)?;
            let empty = v.tiers.is_empty() && v.defaults.is_empty() && v.unnamed.is_empty();
            print(
                &v,
                a.output,
                inspect::PoliciesView::table,
                empty,
                v.note.as_ref(),
            )?;
        }
        What::Maps => {
            let v = inspect::maps(&dp)?;
            print(&v, a.output, inspect::MapsView::table, false, None)?;
        }
        What::Conntrack => {
            let v = inspect::conntrack(&dp, state)?;
            print(
                &v,
                a.output,
                inspect::ConntrackView::table,
                v.entries.is_empty(),
                v.note.as_ref(),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
