//! Sotto's signaling service.
//!
//! * [`protocol`]: the wire types of protocol v1 (JSON over WebSocket). It builds without
//!   the server's dependencies (`default-features = false`), so clients share it.
//! * `server` (feature `server`, on by default): the axum WebSocket server, its in-memory
//!   rooms and presence, and the SQLite store for the mailbox and key-package directory.
//! * `client` (feature `client`): the typed client the engine and the SFU use: requests
//!   and events, reconnection with backoff, SFU registration.
//!
//! The server relays and stores opaque bytes only: SDP, ICE candidates, key packages and
//! ciphertext envelopes. It never needs, and never logs, their contents.

pub mod protocol;

#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "client")]
pub mod client;
