//! The node agent (`enforcer run`): sources → compile → program the datapath, level-triggered.
//!
//! [`Agent::run`] is one loop on tokio. It takes [`Update`]s from a source (a watched directory,
//! the Kubernetes API): a snapshot replaces the inventory; an invalid input is logged error by
//! error (file, document, field), counted ([`AgentStatus::input_invalid`]) and otherwise
//! ignored, so the last good state stays in force. Whenever the inventory or the node's
//! interfaces change it runs a *sync*, which always starts from the whole current state:
//!
//! 1. compile the inventory ([`crate::compile::compile`]; cached until the inventory changes);
//! 2. discover the local endpoints ([`endpoints::discover`]): pods by the route to their IPs
//!    through a workload interface, host endpoints by interface name;
//! 3. render the map entries and compare them with what the active table slot holds (read from
//!    the maps on the first sync, so a restarted agent compares with what its predecessor
//!    left): if anything differs, [`Datapath::program`] writes the inactive slot and flips;
//!    if nothing differs, nothing is written (no flip, the generation stays);
//! 4. attach the programs to new interfaces (after the tables naming them are in force) and
//!    detach from interfaces that are gone or carry no endpoint any more — only interfaces
//!    whose links this agent's layout pinned, never anyone else's;
//! 5. record the result ([`AgentStatus::synced`]) and persist `state.json` ([`state`]).
//!
//! A failed sync ([`AgentStatus::sync_failed`]) changes nothing that was in force (the
//! datapath keeps the old slot on any error before the flip) and is retried with backoff
//! (1 s doubling to 30 s) as well as on the next input or interface change.
//!
//! Interfaces are re-discovered on every sync and after netlink link/route notifications
//! (coalesced for [`AgentOptions::link_debounce`]); if the notification socket cannot be
//! opened, on a [`AgentOptions::rescan`] timer instead.
//!
//! The datapath is synchronous (bpf syscalls, a directory lock), so each sync runs on a
//! blocking thread that owns the [`Datapath`] for its duration; the loop itself keeps the
//! heartbeat ([`AgentStatus::heartbeat`], every second) between syncs.

pub mod config;
pub mod endpoints;
pub mod state;
pub mod status;

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use self::{
    endpoints::{Discovery, NetState, Role, Selector},
    state::{Counters, LastSync, PersistedEndpoint, PersistedRule, PersistedState},
    status::{AgentStatus, AttachedEndpoint, SyncedState},
};
use crate::{
    compile::{self, CompileError, Compiled, MapDiff, MapEntries, MapError},
    datapath::{Datapath, DatapathError, Origin},
    evaluator,
    model::Inventory,
    sources::{
        LoadErrors,
        feed::{Update, UpdateReceiver},
    },
};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Which endpoints are local and how workload interfaces are named.
    pub selector: Selector,
    /// Compiler (and evaluator) options: the failsafe ports.
    pub compile: evaluator::Options,
    /// Set `CONFIG_FAIL_CLOSED`: packets on an attached interface with no `ENDPOINTS` entry are
    /// dropped instead of passed.
    pub fail_closed: bool,
    /// Where `state.json` goes; `None`: not written.
    pub state_dir: Option<PathBuf>,
    /// Quiet time that ends a burst of netlink notifications.
    pub link_debounce: Duration,
    /// Rescan period when netlink notifications are unavailable.
    pub rescan: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Longest wait between retries of a failed sync.
    pub max_backoff: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            selector: Selector {
                node_name: None,
                interface_prefix: config::DEFAULT_INTERFACE_PREFIX.to_owned(),
            },
            compile: evaluator::Options::default(),
            fail_closed: false,
            state_dir: Some(PathBuf::from(config::DEFAULT_STATE_DIR)),
            link_debounce: Duration::from_millis(20),
            rescan: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// The agent could not start or had to stop (enforcement continues from the pins either way).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    #[error("cannot open a netlink socket for endpoint discovery: {0}")]
    Netlink(#[source] std::io::Error),
    #[error("the sync worker thread failed: {0}")]
    Worker(String),
}

/// Why one sync failed (the previous state stays in force).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("compiling the policy: {0}")]
    Compile(#[from] CompileError),
    #[error("rendering the maps: {0}")]
    Render(#[from] MapError),
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    #[error("reading interfaces and routes over netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
}

impl From<DatapathError> for AgentError {
    fn from(e: DatapathError) -> Self {
        AgentError::Datapath(Box::new(e))
    }
}

impl From<DatapathError> for SyncError {
    fn from(e: DatapathError) -> Self {
        SyncError::Datapath(Box::new(e))
    }
}

/// What one successful sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub generation: u32,
    pub active_slot: u32,
    pub compiled: Arc<Compiled>,
    pub endpoints: Vec<AttachedEndpoint>,
    /// Against the tables in force before; empty: nothing written, no flip.
    pub diff: MapDiff,
    pub attached: Vec<u32>,
    pub detached: Vec<u32>,
    /// Interfaces that could not be attached or detached (retried).
    pub link_errors: Vec<String>,
    pub took: Duration,
}

impl SyncReport {
    /// Anything written to the kernel.
    pub fn changed(&self) -> bool {
        !self.diff.is_empty() || !self.attached.is_empty() || !self.detached.is_empty()
    }
}

/// The part of the agent that touches the datapath; runs on blocking threads.
struct Worker {
    dp: Datapath,
    opts: Arc<AgentOptions>,
    /// The compilation of inventory number `.0`.
    compiled: Option<(u64, Arc<Compiled>)>,
    /// What the active slot holds, rendered for slot 0; `None`: read it from the maps.
    in_force: Option<MapEntries>,
    /// Interfaces whose links this layout pinned, and how they were attached.
    owned: BTreeMap<u32, Role>,
    /// Discovery problems last logged (logged again only when they change).
    problems: Vec<String>,
    /// Other pin layouts were looked for (after the first complete sync).
    stale_checked: bool,
}

impl Worker {
    fn new(mut dp: Datapath, opts: Arc<AgentOptions>) -> Result<Worker, DatapathError> {
        for stale in dp.prune_defunct_links()? {
            tracing::info!(ifindex = stale.ifindex, hook = %stale.hook, "removed the pin of a link whose interface is gone");
        }
        let mut owned = BTreeMap::new();
        for l in dp.attached()? {
            owned.insert(l.ifindex, Role::Workload);
        }
        for l in dp.attached_host()? {
            owned.insert(l.ifindex, Role::Host);
        }
        let cfg = dp.config()?;
        if cfg.fail_closed != opts.fail_closed {
            dp.set_flags(opts.fail_closed, cfg.src_ports)?;
            tracing::info!(
                fail_closed = opts.fail_closed,
                "set the datapath's fail mode"
            );
        }
        Ok(Worker {
            dp,
            opts,
            compiled: None,
            in_force: None,
            owned,
            problems: Vec::new(),
            stale_checked: false,
        })
    }

    fn sync(
        &mut self,
        inv: &Inventory,
        inv_number: u64,
        net: &NetState,
    ) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let compiled = match &self.compiled {
            Some((n, c)) if *n == inv_number => c.clone(),
            _ => {
                let c = Arc::new(compile::compile(inv, &self.opts.compile)?);
                tracing::debug!(stats = ?c.stats, "compiled");
                self.compiled = Some((inv_number, c.clone()));
                c
            }
        };
        let disc = endpoints::discover(inv, net, &self.opts.selector);
        self.log_problems(&disc);
        let ifindexes = |id: &compile::EndpointId| disc.ifindexes(id);
        let normalized = compile::to_map_entries(&compiled, 0, &ifindexes)?;

        // Compare with what is in force: the last write, or (first sync) the maps themselves.
        let before = self.dp.config()?;
        let diff = match &self.in_force {
            Some(old) => compile::diff(old, &normalized),
            None => {
                let active = self.dp.active_entries()?;
                let new = compile::to_map_entries(&compiled, before.active_slot, &ifindexes)?;
                compile::diff(&active, &new)
            }
        };
        let (generation, active_slot) = if diff.is_empty() {
            (before.generation, before.active_slot)
        } else {
            let r = self.dp.program(&normalized)?;
            for m in &r.missing_catch_alls {
                tracing::warn!(missing = m, "the tables lack a catch-all entry");
            }
            tracing::info!(
                generation = r.config.generation,
                slot = r.config.active_slot,
                changes = diff.len(),
                written = r.written,
                deleted = r.deleted,
                ms = r.elapsed.as_secs_f64() * 1e3,
                "programmed new tables"
            );
            (r.config.generation, r.config.active_slot)
        };
        self.in_force = Some(normalized);
        if self.dp.relink_is_pending() {
            // A fresh load: the links kept running the old programs and tables until now.
            self.dp.relink_pending()?;
        }

        // Links: attach after the tables naming the interface are in force; detach what no
        // endpoint uses any more (ours only).
        let mut attached = Vec::new();
        let mut detached = Vec::new();
        let mut link_errors = Vec::new();
        let gone: Vec<(u32, Role)> = self
            .owned
            .iter()
            .filter(|(i, role)| disc.interfaces.get(i).map(|l| l.role) != Some(**role))
            .map(|(i, r)| (*i, *r))
            .collect();
        for (ifindex, role) in gone {
            match self.dp.detach(ifindex) {
                Ok(_) => {
                    tracing::info!(ifindex, ?role, "detached");
                    self.owned.remove(&ifindex);
                    detached.push(ifindex);
                }
                Err(e) => link_errors.push(format!("detaching ifindex {ifindex}: {e}")),
            }
        }
        for (ifindex, l) in &disc.interfaces {
            if self.owned.get(ifindex) == Some(&l.role) {
                continue;
            }
            let r = match l.role {
                Role::Workload => self.dp.attach(*ifindex).map(drop),
                Role::Host => self.dp.attach_host(*ifindex).map(drop),
            };
            match r {
                Ok(()) => {
                    tracing::info!(ifindex, ifname = %l.ifname, endpoint = %l.id, role = ?l.role, "attached");
                    self.owned.insert(*ifindex, l.role);
                    attached.push(*ifindex);
                }
                Err(e) => link_errors.push(format!("attaching to {} ({}): {e}", l.ifname, l.id)),
            }
        }
        if link_errors.is_empty() && !self.stale_checked {
            self.remove_stale_layouts();
        }
        let endpoints = disc
            .interfaces
            .values()
            .filter(|l| self.owned.get(&l.ifindex) == Some(&l.role))
            .map(|l| AttachedEndpoint {
                id: l.id.clone(),
                ifindex: l.ifindex,
                ifname: l.ifname.clone(),
            })
            .collect();
        Ok(SyncReport {
            generation,
            active_slot,
            compiled,
            endpoints,
            diff,
            attached,
            detached,
            link_errors,
            took: started.elapsed(),
        })
    }

    /// Once every local interface runs this layout's programs with current tables, the links
    /// of other layouts (an older or newer enforcer's pin directory) only add their frozen
    /// tables' denies: remove those directories, which detaches their links. Never before, so
    /// an upgrade never leaves an interface unenforced.
    fn remove_stale_layouts(&mut self) {
        self.stale_checked = true;
        match self.dp.stale_layouts() {
            Ok(stale) if stale.is_empty() => {}
            Ok(_) => match self.dp.remove_stale() {
                Ok(removed) => {
                    for l in removed {
                        tracing::info!(
                            version = l.version,
                            path = %l.path.display(),
                            links = l.links,
                            "removed the pin layout of another enforcer version (its links are detached; this layout enforces)"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove another version's pin layout"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot list other pin layouts"),
        }
    }

    fn log_problems(&mut self, disc: &Discovery) {
        if disc.problems != self.problems {
            for p in &disc.problems {
                tracing::warn!("{p}");
            }
            self.problems = disc.problems.clone();
        }
        for p in &disc.pending {
            tracing::debug!("{p}");
        }
    }
}

/// How the agent stopped.
#[derive(Debug)]
pub struct Exit {
    /// The datapath, for a caller that detaches on exit.
    pub datapath: Datapath,
    /// Interfaces whose links this layout pinned.
    pub owned: Vec<u32>,
}

/// The agent; see the module docs.
pub struct Agent {
    worker: Option<Worker>,
    opts: Arc<AgentOptions>,
    status: Arc<AgentStatus>,
    persisted: PersistedState,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Takes over an opened datapath: adopts its links as ours, sets the fail mode. Nothing is
    /// programmed until the first snapshot arrives, so a restarted agent keeps its
    /// predecessor's tables in force until then.
    pub fn new(
        dp: Datapath,
        status: Arc<AgentStatus>,
        opts: AgentOptions,
    ) -> Result<Agent, AgentError> {
        let opts = Arc::new(opts);
        let cfg = dp.config()?;
        let mut persisted = PersistedState {
            version: state::STATE_FORMAT,
            agent_pid: std::process::id(),
            node_name: opts.selector.node_name.clone(),
            pin_dir: dp.paths().layout_dir().to_owned(),
            datapath_origin: match dp.origin() {
                Origin::Adopted => "adopted".to_owned(),
                Origin::Loaded { .. } => "loaded".to_owned(),
            },
            program_ids: dp.program_ids().ok().map(|p| state::ProgramIds {
                from_endpoint: p.from_endpoint,
                to_endpoint: p.to_endpoint,
            }),
            generation: cfg.generation,
            active_slot: cfg.active_slot,
            ..PersistedState::default()
        };
        // A predecessor's file still describes the adopted tables until our first sync.
        if dp.adopted()
            && let Some(dir) = &opts.state_dir
            && let Ok(prev) = state::read(dir)
            && prev.generation == cfg.generation
            && prev.pin_dir == persisted.pin_dir
        {
            persisted.endpoints = prev.endpoints;
            persisted.rules = prev.rules;
            persisted.last_sync = prev.last_sync;
        }
        let worker = Worker::new(dp, opts.clone())?;
        Ok(Agent {
            worker: Some(worker),
            opts,
            status,
            persisted,
        })
    }

    pub fn status(&self) -> &Arc<AgentStatus> {
        &self.status
    }

    /// Runs until `shutdown` completes (or the worker fails), then returns the datapath. The
    /// datapath's links stay attached: enforcement continues without the agent.
    pub async fn run(
        mut self,
        mut updates: UpdateReceiver,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Exit, AgentError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(AgentError::Netlink)?;
        let conn = tokio::spawn(conn);
        let (link_tx, mut link_rx) = mpsc::channel::<()>(1);
        let links = tokio::spawn(endpoints::watch_links(
            link_tx,
            self.opts.link_debounce,
            self.opts.rescan,
        ));
        let mut heartbeat = tokio::time::interval(self.opts.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);

        let mut inventory: Option<Arc<Inventory>> = None;
        let mut inv_number: u64 = 0;
        // A sync is due; `input` if the inventory changed since the last recorded sync.
        let mut due = false;
        let mut input = false;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_secs(1);
        let mut source_open = true;
        let result = loop {
            self.status.heartbeat();
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                u = updates.recv(), if source_open => match u {
                    Some(u) => {
                        if self.take(u, &mut inventory, &mut inv_number) {
                            due = true;
                            input = true;
                        }
                    }
                    None => {
                        tracing::warn!("the policy source stopped; the last state stays in force");
                        source_open = false;
                    }
                },
                Some(()) = link_rx.recv() => due = true,
                () = retry => {
                    retry_at = None;
                    due = true;
                }
                _ = heartbeat.tick() => {
                    if let Some(w) = &mut self.worker {
                        w.dp.flush_ebpf_logs();
                    }
                }
            }
            // Coalesce whatever else arrived meanwhile: level-triggered, the latest wins.
            while let Ok(u) = updates.try_recv() {
                if self.take(u, &mut inventory, &mut inv_number) {
                    due = true;
                    input = true;
                }
            }
            let Some(inv) = inventory.clone() else {
                continue;
            };
            if !due {
                continue;
            }
            due = false;
            self.status.heartbeat();
            let outcome = match endpoints::read_net_state(&handle).await {
                Ok(net) => self.sync(inv, inv_number, net).await,
                Err(e) => Ok(Err(SyncError::Netlink(e))),
            };
            match outcome {
                Err(e) => break Err(e),
                Ok(Ok(report)) => {
                    let retry_links = !report.link_errors.is_empty();
                    if input || report.changed() {
                        self.record(&report);
                        input = false;
                    }
                    if retry_links {
                        for e in &report.link_errors {
                            tracing::error!("{e}");
                        }
                        self.status.sync_failed();
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(self.opts.max_backoff);
                    } else {
                        retry_at = None;
                        backoff = Duration::from_secs(1);
                    }
                }
                Ok(Err(e)) => {
                    self.status.sync_failed();
                    tracing::error!(error = %e, retry_in = ?backoff, "sync failed; the previous state stays in force");
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
            }
        };
        links.abort();
        conn.abort();
        result?;
        let worker = self
            .worker
            .take()
            .ok_or_else(|| AgentError::Worker("the worker was lost".to_owned()))?;
        Ok(Exit {
            owned: worker.owned.keys().copied().collect(),
            datapath: worker.dp,
        })
    }

    /// Applies one update; true if the inventory changed.
    fn take(&mut self, u: Update, inventory: &mut Option<Arc<Inventory>>, n: &mut u64) -> bool {
        match u {
            Update::Snapshot(inv) => {
                tracing::info!(
                    policies = inv.policies.len(),
                    pods = inv.pods.len(),
                    host_endpoints = inv.host_endpoints.len(),
                    network_sets = inv.network_sets.len(),
                    "new input"
                );
                *inventory = Some(inv);
                *n += 1;
                self.persisted.last_input_errors.clear();
                true
            }
            Update::Invalid(errors) => {
                self.invalid(&errors);
                false
            }
        }
    }

    fn invalid(&mut self, errors: &LoadErrors) {
        self.status.input_invalid();
        for e in &errors.0 {
            tracing::error!(
                file = %e.origin.file.display(),
                document = e.origin.document,
                field = %e.field,
                error = %e.message,
                "invalid input: {e}"
            );
        }
        tracing::error!(
            errors = errors.0.len(),
            "the input is invalid; the last good state stays in force"
        );
        self.persisted.last_input_errors = errors.0.iter().map(ToString::to_string).collect();
        self.persist();
    }

    async fn sync(
        &mut self,
        inv: Arc<Inventory>,
        n: u64,
        net: NetState,
    ) -> Result<Result<SyncReport, SyncError>, AgentError> {
        let mut worker = self
            .worker
            .take()
            .ok_or_else(|| AgentError::Worker("the worker was lost".to_owned()))?;
        let (worker, result) = tokio::task::spawn_blocking(move || {
            let r = worker.sync(&inv, n, &net);
            (worker, r)
        })
        .await
        .map_err(|e| AgentError::Worker(e.to_string()))?;
        self.worker = Some(worker);
        Ok(result)
    }

    fn record(&mut self, r: &SyncReport) {
        tracing::info!(
            generation = r.generation,
            endpoints = r.endpoints.len(),
            map_changes = r.diff.len(),
            attached = r.attached.len(),
            detached = r.detached.len(),
            ms = r.took.as_secs_f64() * 1e3,
            "synced"
        );
        self.status.synced(
            SyncedState {
                generation: r.generation,
                compiled: r.compiled.clone(),
                endpoints: r.endpoints.clone(),
            },
            r.took,
        );
        let p = &mut self.persisted;
        p.generation = r.generation;
        p.active_slot = r.active_slot;
        p.endpoints = r
            .endpoints
            .iter()
            .map(|e| PersistedEndpoint::new(e, &r.compiled))
            .collect();
        p.rules = r
            .compiled
            .rules
            .iter()
            .map(PersistedRule::from_info)
            .collect();
        p.last_sync = Some(LastSync {
            at_unix_ms: state::now_unix_ms(),
            took_ms: r.took.as_secs_f64() * 1e3,
            map_changes: r.diff.len() + usize::from(r.diff.config_flags.is_some()),
            map_diff: if r.diff.is_empty() {
                String::new()
            } else {
                r.diff.to_string()
            },
        });
        self.persist();
    }

    fn persist(&mut self) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        let s = &self.status;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        self.persisted.counters = Counters {
            syncs_total: load(&s.syncs_total),
            sync_failures_total: load(&s.sync_failures_total),
            invalid_inputs_total: load(&s.invalid_inputs_total),
        };
        self.persisted.written_at_unix_ms = state::now_unix_ms();
        if let Err(e) = state::write(dir, &self.persisted) {
            tracing::warn!(error = %e, "cannot write the state file (read-only tools will not name what they show)");
        }
    }
}
