//! The real datapath inside the lab's node namespace.
//!
//! tcx attachment resolves interface indexes in the network namespace of the thread that
//! attaches, so the datapath lives on a thread of its own that entered the node namespace; the
//! rest of the lab talks to it over a channel. Maps and programs are pinned under the lab's
//! own pin root (`/sys/fs/bpf/enforcer-lab-<id>/`), never under the agent's.

use std::{
    path::PathBuf,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use super::{LabError, netns};
use crate::{
    compile::MapEntries,
    datapath::{Datapath, OpenOptions},
};

enum Command {
    /// Write a table set (into the inactive slot, then flip).
    Program(Box<MapEntries>, SyncSender<Result<String, String>>),
    /// `VERDICT_COUNTERS`: (`reason/direction`, packets), non-zero ones.
    Counters(SyncSender<Result<Vec<(String, u64)>, String>>),
}

/// The datapath thread. Dropping it detaches the programs (the pins go with the lab's
/// cleanup).
#[derive(Debug)]
pub struct Enforcement {
    tx: Option<SyncSender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Enforcement {
    /// Loads the programs afresh (pinning under `pin_root`), programs `entries`, then attaches
    /// to `ifindexes` (host-side veths of `node_netns`), so no packet ever sees an attached
    /// program with empty tables. Runs on a thread inside the node namespace.
    pub fn start(
        node_netns: &str,
        pin_root: PathBuf,
        ifindexes: Vec<u32>,
        entries: MapEntries,
    ) -> Result<Enforcement, LabError> {
        let handle = netns::open_netns(node_netns).map_err(|e| LabError::Setup {
            step: format!("open network namespace {node_netns}"),
            message: e.to_string(),
        })?;
        let (tx, rx) = sync_channel::<Command>(1);
        let (ready_tx, ready_rx) = sync_channel::<Result<String, String>>(1);
        let thread = std::thread::Builder::new()
            .name("lab-datapath".to_string())
            .spawn(move || {
                if let Err(e) = netns::enter(&handle) {
                    let _ = ready_tx.send(Err(format!("entering the node namespace: {e}")));
                    return;
                }
                drop(handle);
                serve(pin_root, ifindexes, entries, rx, ready_tx);
            })
            .map_err(|e| LabError::Setup {
                step: "starting the datapath thread".to_string(),
                message: e.to_string(),
            })?;
        let mut me = Enforcement {
            tx: Some(tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(summary)) => {
                tracing::debug!("lab datapath ready: {summary}");
                Ok(me)
            }
            Ok(Err(message)) => {
                me.stop();
                Err(LabError::Datapath { message })
            }
            Err(_) => {
                me.stop();
                Err(LabError::Datapath {
                    message: "the datapath thread ended while loading".to_string(),
                })
            }
        }
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(SyncSender<Result<T, String>>) -> Command,
    ) -> Result<T, LabError> {
        let gone = || LabError::Datapath {
            message: "the datapath thread is gone".to_string(),
        };
        let (reply_tx, reply_rx) = sync_channel(1);
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send(make(reply_tx)).map_err(|_| gone())?;
        match reply_rx.recv() {
            Ok(r) => r.map_err(|message| LabError::Datapath { message }),
            Err(_) => Err(gone()),
        }
    }

    /// Writes a table set and flips to it; returns a one-line summary.
    pub fn program(&self, entries: MapEntries) -> Result<String, LabError> {
        self.ask(|reply| Command::Program(Box::new(entries), reply))
    }

    /// The datapath's non-zero verdict counters (`reason/direction`, packets).
    pub fn counters(&self) -> Result<Vec<(String, u64)>, LabError> {
        self.ask(Command::Counters)
    }

    /// Detaches and unloads (the thread ends).
    pub fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Enforcement {
    fn drop(&mut self) {
        self.stop();
    }
}

fn program(dp: &mut Datapath, entries: &MapEntries) -> Result<String, String> {
    dp.program(entries)
        .map(|r| {
            format!(
                "generation {} in slot {} ({} ms)",
                r.config.generation,
                r.config.active_slot,
                r.elapsed.as_millis()
            )
        })
        .map_err(|e| format!("programming the maps: {e}"))
}

/// The thread's body: load, program, attach, then serve requests until the channel closes;
/// then detach.
fn serve(
    pin_root: PathBuf,
    ifindexes: Vec<u32>,
    entries: MapEntries,
    rx: Receiver<Command>,
    ready: SyncSender<Result<String, String>>,
) {
    let mut attached = Vec::new();
    let opened = (|| -> Result<(Datapath, String), String> {
        let mut dp = Datapath::open(OpenOptions {
            force_fresh: true,
            ..OpenOptions::new(&pin_root)
        })
        .map_err(|e| format!("loading the programs: {e}"))?;
        let summary = program(&mut dp, &entries)?;
        for &i in &ifindexes {
            dp.attach(i)
                .map_err(|e| format!("attaching to ifindex {i}: {e}"))?;
            attached.push(i);
        }
        Ok((dp, summary))
    })();
    let mut dp = match opened {
        Ok((dp, summary)) => {
            let _ = ready.send(Ok(summary));
            dp
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(entries);
    for cmd in rx {
        match cmd {
            Command::Program(entries, reply) => {
                let _ = reply.send(program(&mut dp, &entries));
            }
            Command::Counters(reply) => {
                let r = dp
                    .counters()
                    .map(|cs| {
                        cs.into_iter()
                            .filter(|c| c.packets > 0)
                            .map(|c| (format!("{}/{}", c.name, c.direction), c.packets))
                            .collect()
                    })
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
        }
    }
    for i in attached {
        if let Err(e) = dp.detach(i) {
            tracing::warn!("lab: detaching from ifindex {i}: {e}");
        }
    }
}
