//! How a running source (a watched directory, the Kubernetes API) feeds the agent.
//!
//! A source sends a whole new [`Inventory`] whenever anything it watches changes (the agent is
//! level-triggered: it compiles everything from the latest snapshot), or the errors of an
//! input it could not take, in which case the agent keeps the last good state in force.

use std::sync::Arc;

use crate::model::Inventory;

use super::LoadErrors;

/// One message from a source to the agent.
#[derive(Debug)]
pub enum Update {
    /// The complete current inventory from this source.
    Snapshot(Arc<Inventory>),
    /// The source's input is invalid; the previous snapshot stays in force.
    Invalid(LoadErrors),
}

/// The sending half a source task owns. Bounded: a slow agent makes the source coalesce.
pub type UpdateSender = tokio::sync::mpsc::Sender<Update>;
pub type UpdateReceiver = tokio::sync::mpsc::Receiver<Update>;

/// A channel of the size sources and the agent use.
pub fn channel() -> (UpdateSender, UpdateReceiver) {
    tokio::sync::mpsc::channel(16)
}
