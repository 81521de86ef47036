//! Reading denied-flow events from the `EVENTS` ring buffer.
//!
//! A BPF ring buffer has one consumer position, shared by every reader that maps it: run one
//! [`EventReader`] per node (the agent's), or readers steal each other's events.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    path::Path,
};

use aya::maps::{MapData, RingBuf};
use enforcer_common::{FlowEvent, maps};
use tokio::io::unix::AsyncFd;

use super::{bpf_maps::open_pinned, error::DatapathError};

/// A polling reader of `EVENTS`. It implements [`AsFd`] (readable when events are waiting), so
/// it can be polled with epoll; [`EventReader::into_async`] wraps it for tokio.
pub struct EventReader {
    ring: RingBuf<MapData>,
    /// Records shorter than a `FlowEvent` (a mismatched object); skipped.
    malformed: u64,
}

impl EventReader {
    pub(crate) fn open(path: &Path) -> Result<EventReader, DatapathError> {
        let (ring, ..) = open_pinned(maps::EVENTS, path)?;
        Ok(EventReader { ring, malformed: 0 })
    }

    /// The next waiting event, if any (never blocks).
    pub fn next_event(&mut self) -> Option<FlowEvent> {
        loop {
            let item = self.ring.next()?;
            if item.len() >= size_of::<FlowEvent>() {
                // SAFETY: the record holds at least size_of::<FlowEvent>() bytes, FlowEvent is
                // plain data valid for any bit pattern, and read_unaligned has no alignment
                // requirement.
                return Some(unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>())
                });
            }
            self.malformed += 1;
        }
    }

    /// Every waiting event.
    pub fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// Records skipped because they were shorter than a `FlowEvent`.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Wraps the reader for tokio (call inside a runtime with IO enabled).
    pub fn into_async(self) -> io::Result<AsyncEventReader> {
        // SAFETY: the descriptor is the ring buffer map's, owned by `self.ring`, which the
        // AsyncFd owns and never replaces: it stays open and the same until the AsyncFd drops.
        let inner = unsafe { AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(AsyncEventReader { inner })
    }
}

impl AsFd for EventReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// An async reader of `EVENTS`.
pub struct AsyncEventReader {
    inner: AsyncFd<EventReader>,
}

impl AsyncEventReader {
    /// Waits for events and returns every one waiting (never an empty batch).
    pub async fn next_batch(&mut self) -> io::Result<Vec<FlowEvent>> {
        loop {
            let mut guard = self.inner.readable_mut().await?;
            let batch = guard.get_inner_mut().drain();
            if !batch.is_empty() {
                // Readiness stays set: the next call drains again before waiting.
                return Ok(batch);
            }
            guard.clear_ready();
        }
    }

    pub fn get_mut(&mut self) -> &mut EventReader {
        self.inner.get_mut()
    }
}
