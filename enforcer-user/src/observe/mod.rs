//! Observe and inspect: the flow log, Prometheus metrics, health endpoints, and the data
//! behind `enforcer get` (`docs/observe.md`).
//!
//! Everything here reads; nothing writes policy. The running agent shares its state through
//! [`AgentStatus`](crate::agent::status::AgentStatus); the datapath's own numbers (per-CPU
//! counters, map contents) are read from the pins at the moment they are asked for, so the
//! read-only tools work the same with the agent up or down.
//!
//! ## Wiring into the agent
//! ```ignore
//! let flow_log = observe::FlowLog::new(&flow_log_path);   // default DEFAULT_FLOW_LOG
//! let source = observe::MetricsSource::new(&pin_base).with_flow_log(flow_log.stats());
//! tokio::spawn(observe::serve(metrics_addr, status.clone(), source));   // DEFAULT_ADDR
//! tokio::spawn(flow_log.run(datapath.events()?.into_async()?, status.clone()));
//! ```
//! The agent keeps [`AgentStatus`](crate::agent::status::AgentStatus) current (heartbeat,
//! `synced`, failures) and writes `<state_dir>/state.json` (`crate::agent::state`), which
//! `enforcer get` reads through [`InspectState`].

pub mod census;
pub mod flowlog;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod names;
pub mod state;
mod table;
pub mod time;

pub use self::{
    flowlog::{
        DEFAULT_FLOW_LOG, DEFAULT_MAX_BYTES, FlowLog, FlowLogStats, FlowRecord, FlowVerdict,
        run_flow_log,
    },
    http::{DEFAULT_ADDR, DEFAULT_LIVENESS_TIMEOUT, HttpOptions, Server, serve, serve_with},
    metrics::MetricsSource,
    names::{DecidedBy, EndpointName, RuleBook},
    state::{DEFAULT_STATE_DIR, InspectState},
};
