//! The standalone source: a directory of YAML (the kinds [`super::load_paths`] reads), watched
//! with inotify.
//!
//! [`watch`] loads the directory at once, then reloads it after every change: inotify events
//! (through `notify`, recursive) are coalesced for [`QUIET`] of quiet, at most [`MAX_DELAY`]
//! after the first event, so a change is applied well within 100 ms of the write while an
//! editor's write-rename-chmod burst is one reload. A reload that yields the same inventory
//! (or the same errors) as the previous one sends nothing.
//!
//! Every load is of the whole directory, so the agent sees each state of the files as a whole:
//! a valid one as [`Update::Snapshot`], an invalid one (any file with any error) as
//! [`Update::Invalid`] with every error, and the agent keeps the last good snapshot in force.
//!
//! The directory may be missing at first or be replaced (a Kubernetes ConfigMap volume swaps a
//! `..data` symlink; `rm -r` and re-create): a missing directory is an invalid input, and the
//! watch is re-established when the directory (its inode) changes, checked every
//! [`RECHECK`] as well as on every event.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash as _, Hasher as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::{
    LoadErrors,
    feed::{self, Update, UpdateReceiver, UpdateSender},
};
use crate::model::Inventory;

/// Quiet time after an event before reloading.
pub const QUIET: Duration = Duration::from_millis(15);
/// Longest delay between the first event of a burst and the reload.
pub const MAX_DELAY: Duration = Duration::from_millis(50);
/// How often the directory's identity is checked (a replaced directory is re-watched).
pub const RECHECK: Duration = Duration::from_secs(2);

/// Starts watching `dir`; the first message is the initial load. The task ends when the
/// receiver is dropped.
pub fn watch(dir: impl Into<PathBuf>) -> (JoinHandle<()>, UpdateReceiver) {
    let (tx, rx) = feed::channel();
    let dir = dir.into();
    let task = tokio::spawn(run(dir, tx));
    (task, rx)
}

/// What the last load produced (to skip sending the same thing twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Valid(u64),
    Invalid(u64),
}

struct Watch {
    _watcher: RecommendedWatcher,
    /// (device, inode) of the directory when the watch was set up.
    identity: (u64, u64),
}

fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

fn start_watch(dir: &Path, events: &mpsc::UnboundedSender<()>) -> Result<Watch, String> {
    let identity = identity(dir).ok_or_else(|| format!("{} does not exist", dir.display()))?;
    let events = events.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match &res {
            // Opening and reading (our own loads included) changes nothing.
            // (A close after writing is a change.)
            Ok(ev)
                if matches!(ev.kind, notify::EventKind::Access(a)
                    if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write)) =>
            {
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "policy directory watch error; reloading"),
        }
        // Any other event (an error included: inotify queue overflow) means "reload".
        let _ = events.send(());
    })
    .map_err(|e| format!("cannot create an inotify watcher: {e}"))?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(Watch {
        _watcher: watcher,
        identity,
    })
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

async fn load(dir: &Path) -> Result<Inventory, LoadErrors> {
    let owned = dir.to_owned();
    match tokio::task::spawn_blocking(move || super::load_paths(&[owned])).await {
        Ok(r) => r,
        Err(e) => Err(LoadErrors(vec![super::LoadError {
            origin: crate::model::Origin {
                file: dir.to_owned(),
                document: 0,
            },
            field: "-".to_owned(),
            message: format!("loading panicked: {e}"),
        }])),
    }
}

async fn run(dir: PathBuf, tx: UpdateSender) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let mut watch: Option<Watch> = None;
    let mut last: Option<Seen> = None;
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // (Re-)establish the watch before loading, so no write between the load and the watch
        // is missed.
        let current = identity(&dir);
        if watch.as_ref().map(|w| Some(w.identity)) != Some(current) {
            watch = None;
            if current.is_some() {
                match start_watch(&dir, &ev_tx) {
                    Ok(w) => {
                        tracing::debug!(dir = %dir.display(), "watching the policy directory");
                        watch = Some(w);
                    }
                    Err(e) => tracing::warn!("{e}; checking again in {RECHECK:?}"),
                }
            }
        }
        let update = match load(&dir).await {
            Ok(inv) => {
                let h = serde_json::to_vec(&inv).map(|b| hash_of(&b)).unwrap_or(0);
                (last != Some(Seen::Valid(h))).then(|| {
                    last = Some(Seen::Valid(h));
                    Update::Snapshot(Arc::new(inv))
                })
            }
            Err(errors) => {
                let h = hash_of(errors.to_string().as_bytes());
                (last != Some(Seen::Invalid(h))).then(|| {
                    last = Some(Seen::Invalid(h));
                    Update::Invalid(errors)
                })
            }
        };
        if let Some(u) = update
            && tx.send(u).await.is_err()
        {
            return;
        }
        // Wait for a change: an event, or a replaced/created directory.
        loop {
            tokio::select! {
                ev = ev_rx.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    break;
                }
                _ = recheck.tick() => {
                    if watch.as_ref().map(|w| w.identity) != identity(&dir) {
                        break;
                    }
                }
                _ = tx.closed() => return,
            }
        }
        // Coalesce the burst.
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let wait = QUIET.min(deadline.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            match tokio::time::timeout(wait, ev_rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        while ev_rx.try_recv().is_ok() {}
    }
}
