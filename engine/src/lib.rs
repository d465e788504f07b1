//! Sotto's client engine.
//!
//! Today: the user's [`identity`] (an Ed25519 key pair in a 0600 file, no account) and a
//! typed [`signaling`] client that authenticates, joins rooms, relays call setup, uses
//! the key-package directory and the mailbox, and reconnects with backoff. Audio, WebRTC
//! transport and end-to-end encryption arrive with later issues (see DESIGN.md).

pub mod audio;
pub mod backup;
pub mod call;
pub mod data_dir;
pub mod e2ee;
pub mod files;
pub mod identity;
pub mod messaging;
pub mod procstat;
pub mod signaling;
pub mod store;
pub mod video;

pub use identity::{Identity, IdentityError};
pub use signaling::{CallSignal, ClientConfig, ClientError, Event, RoomInvite, SignalingClient};
