//! Who is connected: one live session per identity, and the handles other connections
//! use to push frames to it. Owns routing only; it never looks inside a frame.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

use crate::protocol::IdentityKey;

/// How other tasks reach one connection.
#[derive(Clone)]
pub struct SessionHandle {
    /// Unique per connection, so a stale connection cannot unregister its successor.
    pub conn_id: u64,
    /// Serialized frames to push (bounded; a full queue means the client is too slow).
    pub tx: mpsc::Sender<Utf8Bytes>,
    /// Poked when the identity's mailbox gains an envelope.
    pub mailbox: Arc<Notify>,
    /// Poked when a newer connection of the same identity takes over.
    pub replaced: Arc<Notify>,
}

/// Why a push did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No connection for that identity.
    Offline,
    /// Its queue is full.
    Busy,
}

/// The table of live sessions.
#[derive(Default)]
pub struct Hub {
    sessions: HashMap<IdentityKey, SessionHandle>,
}

impl Hub {
    /// Register a session; a previous session of the same identity is told to close.
    pub fn register(&mut self, identity: IdentityKey, handle: SessionHandle) {
        if let Some(old) = self.sessions.insert(identity, handle) {
            old.replaced.notify_one();
        }
    }

    /// Forget a session, unless a newer one has already replaced it.
    /// Returns false when it had been replaced (the identity is connected elsewhere).
    pub fn unregister(&mut self, identity: &IdentityKey, conn_id: u64) -> bool {
        if self
            .sessions
            .get(identity)
            .is_some_and(|h| h.conn_id == conn_id)
        {
            self.sessions.remove(identity);
            true
        } else {
            false
        }
    }

    /// Queue a frame for an identity without waiting.
    pub fn push(&self, to: &IdentityKey, frame: Utf8Bytes) -> Result<(), PushError> {
        let handle = self.sessions.get(to).ok_or(PushError::Offline)?;
        handle.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PushError::Busy,
            mpsc::error::TrySendError::Closed(_) => PushError::Offline,
        })
    }

    /// Tell an identity's session (if any) that its mailbox changed.
    pub fn poke_mailbox(&self, to: &IdentityKey) {
        if let Some(handle) = self.sessions.get(to) {
            handle.mailbox.notify_one();
        }
    }
}
