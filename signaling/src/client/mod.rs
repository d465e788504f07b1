//! A typed client for Sotto signaling (protocol v1, see `signaling/PROTOCOL.md`).
//!
//! [`SignalingClient::connect`] opens the WebSocket, answers the server's challenge with
//! the identity's signature and returns once the server has said `welcome`. A background
//! task then owns the socket: it matches replies to requests, turns pushes into
//! [`Event`]s, and when the connection drops it reconnects with [`Backoff`], authenticates
//! again and rejoins the rooms it was in. Nothing here reads or logs payloads.

mod backoff;
mod driver;
mod handle;

use std::time::Duration;

use crate::protocol::{
    Answer, Candidate, ClientMessage, ErrorCode, Hangup, IdentityKey, InviteToken, Layers, Offer,
    Outgoing, Participant, PresenceState, RestartRequest, RoomId, Subscription,
};

pub use backoff::Backoff;

/// Who a client authenticates as: a person's identity in the engine, or an SFU's key.
pub trait Authenticator: Send + Sync + 'static {
    /// The public identity.
    fn public(&self) -> IdentityKey;
    /// The signed `auth` answer to this connection's `hello` (see `auth_payload`).
    fn auth(&self, server_id: &str, challenge: crate::protocol::Blob) -> crate::protocol::Auth;
}

/// An [`Authenticator`] over a bare Ed25519 key (an SFU, a load generator).
pub struct KeyAuthenticator {
    key: ed25519_dalek::SigningKey,
    display_name: Option<String>,
}

impl KeyAuthenticator {
    /// Authenticate with `key`, showing `display_name` in rooms.
    pub fn new(key: ed25519_dalek::SigningKey, display_name: Option<String>) -> Self {
        KeyAuthenticator { key, display_name }
    }
}

impl Authenticator for KeyAuthenticator {
    fn public(&self) -> IdentityKey {
        IdentityKey(self.key.verifying_key().to_bytes())
    }

    fn auth(&self, server_id: &str, challenge: crate::protocol::Blob) -> crate::protocol::Auth {
        use ed25519_dalek::Signer as _;
        let payload = crate::protocol::auth_payload(server_id, challenge.as_bytes());
        crate::protocol::Auth {
            version: crate::protocol::PROTOCOL_VERSION,
            identity: self.public(),
            challenge,
            signature: self.key.sign(&payload).to_bytes().to_vec().into(),
            display_name: self.display_name.clone(),
        }
    }
}
pub use handle::{SignalingClient, SignalingSender};

/// How to reach and treat the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// WebSocket URL, e.g. `ws://127.0.0.1:7000/v1/ws`.
    pub url: String,
    /// Refuse a server whose `server_id` differs (pinning), if set.
    pub expected_server_id: Option<String>,
    /// First reconnect delay (doubled per failed attempt, with jitter).
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How long connecting and authenticating may take.
    pub connect_timeout: Duration,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
    /// Register as an SFU with this shared secret after authenticating (SFUs only).
    pub sfu_secret: Option<Vec<u8>>,
}

impl ClientConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            expected_server_id: None,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_message_bytes: 1 << 20,
            sfu_secret: None,
        }
    }
}

/// A failed client operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server refused the request (or the authentication).
    #[error("the server refused: {code}: {message}")]
    Server {
        /// Stable code.
        code: ErrorCode,
        /// The server's sentence.
        message: String,
    },
    /// The server's id is not the pinned one.
    #[error("the server's id is {got}, not the expected {expected}")]
    ServerIdMismatch {
        /// Pinned.
        expected: String,
        /// Presented.
        got: String,
    },
    /// No protocol version in common.
    #[error("the server speaks protocol versions {0:?}; this client speaks 1")]
    UnsupportedVersion(Vec<u32>),
    /// The server sent something this client did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection dropped before the reply came (the client is reconnecting).
    #[error("disconnected from the signaling server")]
    Disconnected,
    /// No reply within the request timeout.
    #[error("the signaling server did not answer in time")]
    Timeout,
    /// The client was closed, or the server ended the session for good.
    #[error("the signaling client is closed")]
    Closed,
}

impl ClientError {
    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A room the client created: share `room_id` and `invite_token` with those to invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInvite {
    /// The room.
    pub room_id: RoomId,
    /// The secret that admits.
    pub invite_token: InviteToken,
    /// Its participant cap.
    pub max_participants: u32,
    /// The SFU hosting its media (group rooms only).
    pub sfu: Option<IdentityKey>,
}

/// Call setup exchanged with one peer.
#[derive(Debug, Clone, PartialEq)]
pub enum CallSignal {
    /// An SDP offer (or an ICE-restart offer).
    Offer(Offer),
    /// An SDP answer.
    Answer(Answer),
    /// A trickled ICE candidate.
    Candidate(Candidate),
    /// The end of the call.
    Hangup(Hangup),
    /// The callee asks the caller to restart ICE.
    RestartRequest(RestartRequest),
    /// A participant's wishes about a stream the SFU forwards it (to the SFU).
    Subscription(Subscription),
    /// Which of our simulcast layers anyone receives (from the SFU).
    Layers(Layers),
}

impl CallSignal {
    /// The call this belongs to.
    pub fn call_id(&self) -> &str {
        match self {
            CallSignal::Offer(m) => &m.call_id,
            CallSignal::Answer(m) => &m.call_id,
            CallSignal::Candidate(m) => &m.call_id,
            CallSignal::Hangup(m) => &m.call_id,
            CallSignal::RestartRequest(m) => &m.call_id,
            CallSignal::Subscription(m) => &m.call_id,
            CallSignal::Layers(m) => &m.call_id,
        }
    }

    pub(crate) fn into_message(self, to: IdentityKey) -> ClientMessage {
        match self {
            CallSignal::Offer(body) => ClientMessage::Offer(Outgoing { to, body }),
            CallSignal::Answer(body) => ClientMessage::Answer(Outgoing { to, body }),
            CallSignal::Candidate(body) => ClientMessage::Candidate(Outgoing { to, body }),
            CallSignal::Hangup(body) => ClientMessage::Hangup(Outgoing { to, body }),
            CallSignal::RestartRequest(body) => {
                ClientMessage::RestartRequest(Outgoing { to, body })
            }
            CallSignal::Subscription(body) => ClientMessage::Subscription(Outgoing { to, body }),
            CallSignal::Layers(body) => ClientMessage::Layers(Outgoing { to, body }),
        }
    }
}

/// Something that happened without being asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Someone joined or left a room this client is in.
    Presence {
        /// The room.
        room_id: RoomId,
        /// Who.
        participant: Participant,
        /// Joined or left.
        state: PresenceState,
    },
    /// Call setup from a peer (`from` is authenticated by the server).
    Call {
        /// The sender.
        from: IdentityKey,
        /// What they sent.
        signal: CallSignal,
    },
    /// An envelope from the mailbox. Acknowledge it with `mailbox_ack` once stored;
    /// unacknowledged ones come again after a reconnect (this client drops repeats it
    /// already handed out).
    Envelope {
        /// Its id (increasing).
        message_id: u64,
        /// Opaque bytes.
        envelope: Vec<u8>,
    },
    /// The connection dropped; the client is reconnecting.
    Disconnected {
        /// Why, for humans.
        reason: String,
    },
    /// Connected and authenticated again.
    Reconnected {
        /// Envelopes waiting.
        mailbox_depth: u64,
    },
    /// A room was joined again after a reconnect.
    RoomRejoined {
        /// The room.
        room_id: RoomId,
        /// Who is in it now.
        participants: Vec<Participant>,
    },
    /// A room could not be rejoined after a reconnect (e.g. the server restarted).
    RoomLost {
        /// The room.
        room_id: RoomId,
        /// Why.
        reason: String,
    },
    /// The server ended the session for good (replaced by a newer connection of this
    /// identity, authentication refused, or abuse); the client will not reconnect.
    Closed {
        /// The code the server gave.
        code: ErrorCode,
        /// Its sentence.
        message: String,
    },
}
