//! The signaling client, from `sotto_signaling::client` (shared with the SFU): typed
//! requests and events, reconnection with backoff. The engine's [`crate::Identity`]
//! authenticates it.

pub use sotto_signaling::client::*;
