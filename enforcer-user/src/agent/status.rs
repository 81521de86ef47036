//! What the running agent shares with observers (metrics, health endpoints, the flow log).
//!
//! The agent loop is the only writer; everything here is cheap to read from other tasks.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::compile::{Compiled, EndpointId};

/// One endpoint the agent enforces on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedEndpoint {
    pub id: EndpointId,
    pub ifindex: u32,
    pub ifname: String,
}

/// The state the datapath currently enforces (the last successful sync).
#[derive(Debug)]
pub struct SyncedState {
    /// `CONFIG.generation` after the flip that installed this state.
    pub generation: u32,
    pub compiled: Arc<Compiled>,
    pub endpoints: Vec<AttachedEndpoint>,
}

/// Shared agent status. Create one with [`AgentStatus::new`] and share it in an `Arc`.
#[derive(Debug)]
pub struct AgentStatus {
    started: Instant,
    /// The first full sync has been programmed into the maps.
    ready: AtomicBool,
    /// When the loop last went round (liveness), as milliseconds since `started`.
    last_loop_ms: AtomicU64,
    pub syncs_total: AtomicU64,
    pub sync_failures_total: AtomicU64,
    /// Inputs rejected (invalid files, objects the API server sent that do not validate).
    pub invalid_inputs_total: AtomicU64,
    last_sync: Mutex<Option<Duration>>,
    current: RwLock<Option<Arc<SyncedState>>>,
}

impl Default for AgentStatus {
    fn default() -> Self {
        AgentStatus::new()
    }
}

impl AgentStatus {
    pub fn new() -> AgentStatus {
        AgentStatus {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            last_loop_ms: AtomicU64::new(0),
            syncs_total: AtomicU64::new(0),
            sync_failures_total: AtomicU64::new(0),
            invalid_inputs_total: AtomicU64::new(0),
            last_sync: Mutex::new(None),
            current: RwLock::new(None),
        }
    }

    /// The loop is alive: call once per iteration (and on a timer while idle).
    pub fn heartbeat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_loop_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last heartbeat.
    pub fn since_heartbeat(&self) -> Duration {
        let now = self.started.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_loop_ms.load(Ordering::Relaxed),
        ))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records a successful sync and marks the agent ready.
    pub fn synced(&self, state: SyncedState, took: Duration) {
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(state));
        }
        if let Ok(mut last) = self.last_sync.lock() {
            *last = Some(took);
        }
        self.syncs_total.fetch_add(1, Ordering::Relaxed);
        self.ready.store(true, Ordering::Release);
    }

    pub fn sync_failed(&self) {
        self.sync_failures_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn input_invalid(&self) {
        self.invalid_inputs_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn last_sync_duration(&self) -> Option<Duration> {
        self.last_sync.lock().ok().and_then(|d| *d)
    }

    /// The state the datapath enforces now, if any sync succeeded.
    pub fn current(&self) -> Option<Arc<SyncedState>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}
