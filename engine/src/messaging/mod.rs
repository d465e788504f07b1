//! End-to-end encrypted messaging: every conversation (one-to-one included) is an MLS
//! group whose state lives in the local store; text, edits, deletes, receipts, typing and
//! file offers travel as MLS application messages through the signaling mailbox (and,
//! during a call, the data channel). The servers see ciphertext only.
//!
//! Layers: [`mls`] wraps openmls (credentials, key packages, commits, welcomes, the
//! exporter); [`conversations`] is the sans-IO core that turns actions into bytes to send
//! and received bytes into history; [`history`] reads what is stored; [`messenger`]
//! drives the core over a signaling connection.

pub mod content;
pub mod conversations;
pub mod history;
pub mod messenger;
pub mod mls;

pub use content::{Body, Content, MessageId};
pub use conversations::{
    ConversationError, Conversations, GroupId, Outgoing, ReceiveError, Received,
};

#[cfg(test)]
mod tests;
