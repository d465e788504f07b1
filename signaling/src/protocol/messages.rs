//! The messages of protocol v1. Every frame is one JSON object with a `type` tag; requests
//! may carry a numeric `id` that the server echoes in its reply. See `PROTOCOL.md`.

use serde::{Deserialize, Serialize};

use super::blobs::{BlobId, UploadToken};
use super::bytes::{Blob, IdentityKey};
use super::codes::ErrorCode;

/// A room's id: chosen by the server, unguessable (128 random bits, base64url).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(pub String);

/// The secret that admits a holder to a room (256 random bits, base64url).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InviteToken(pub String);

impl std::fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteToken(..)")
    }
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client frame: an optional request id plus the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Echoed in the server's reply (and in an error about this frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The message itself.
    #[serde(flatten)]
    pub message: ClientMessage,
}

/// A server frame: the id of the request it answers (absent for pushed events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// The `id` of the client frame this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The message itself.
    #[serde(flatten)]
    pub message: ServerMessage,
}

/// Messages from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The answer to `hello`: the chosen version and the signed challenge.
    Auth(Auth),
    /// Create a room; the creator joins it at once.
    RoomCreate {
        /// Lower the server's participant cap for this room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_participants: Option<u32>,
        /// Host the room's media on an SFU (a group call): the server assigns one, tells
        /// it who joins and leaves, and names it in `room_created` / `room_joined`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sfu: bool,
    },
    /// Join a room by id and invite token.
    RoomJoin {
        /// The room.
        room_id: RoomId,
        /// Its invite token.
        invite_token: InviteToken,
    },
    /// Leave a room.
    RoomLeave {
        /// The room.
        room_id: RoomId,
    },
    /// An SDP offer for `to`.
    Offer(Outgoing<Offer>),
    /// An SDP answer for `to`.
    Answer(Outgoing<Answer>),
    /// A trickled ICE candidate for `to`.
    Candidate(Outgoing<Candidate>),
    /// End a call with `to`.
    Hangup(Outgoing<Hangup>),
    /// Ask the caller `to` to restart ICE (the callee's network changed; only the caller
    /// sends restart offers).
    RestartRequest(Outgoing<RestartRequest>),
    /// A participant's wishes about one stream an SFU forwards it (pause, resume, the
    /// largest simulcast layer), for the SFU `to`.
    Subscription(Outgoing<Subscription>),
    /// Which simulcast layers of one of `to`'s video tracks anyone receives (an SFU
    /// sends these to its publishers).
    Layers(Outgoing<Layers>),
    /// Publish this identity's key packages (opaque bytes).
    KeyPackagesPublish {
        /// One-time key packages, consumed one per fetch.
        #[serde(default)]
        key_packages: Vec<Blob>,
        /// The last-resort package, handed out when no one-time package is left. Replaces
        /// an earlier one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_resort: Option<Blob>,
    },
    /// Ask how many of this identity's own key packages remain.
    KeyPackageCount {},
    /// Take one key package of another identity.
    KeyPackageFetch {
        /// Whose.
        identity: IdentityKey,
    },
    /// Queue an opaque envelope for an identity.
    MailboxSend {
        /// The recipient.
        to: IdentityKey,
        /// Ciphertext; the server never reads it.
        envelope: Blob,
    },
    /// Acknowledge every delivered envelope with `message_id <= up_to`; they are deleted.
    MailboxAck {
        /// The highest message id the client has stored.
        up_to: u64,
    },
    /// Submit an MLS commit (and its welcome) for a group. The server orders commits per
    /// group: it accepts one only if it was built on the group's current epoch and the
    /// sender is a current member, then queues the commit and welcome in the recipients'
    /// mailboxes in one transaction. The bytes stay opaque.
    GroupCommit(GroupCommit),
    /// An authenticated connection declares itself an SFU by proving it holds the
    /// server's SFU secret (see [`crate::protocol::sfu_proof`]).
    SfuRegister {
        /// HMAC-SHA256 under the shared secret of this connection's challenge.
        proof: Blob,
    },
    /// Open a blob in the server's blob store for an encrypted file; its chunks are then
    /// uploaded over HTTP with the token the server hands out (see "Blob store").
    BlobCreate {
        /// Total bytes of all chunks (ciphertext), at most the server's `--max-blob-bytes`.
        size: u64,
        /// Number of chunks: at least 1, at most one per started 256 KiB of `size`.
        chunks: u32,
    },
    /// Ask for short-lived credentials for the server's TURN relay.
    TurnCredentials {},
}

impl ClientMessage {
    /// Every `type` a client may send.
    pub const TYPES: &'static [&'static str] = &[
        "auth",
        "room_create",
        "room_join",
        "room_leave",
        "offer",
        "answer",
        "candidate",
        "hangup",
        "restart_request",
        "subscription",
        "layers",
        "key_packages_publish",
        "key_package_count",
        "key_package_fetch",
        "mailbox_send",
        "mailbox_ack",
        "group_commit",
        "sfu_register",
        "blob_create",
        "turn_credentials",
    ];

    /// This message's `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Auth(_) => "auth",
            ClientMessage::RoomCreate { .. } => "room_create",
            ClientMessage::RoomJoin { .. } => "room_join",
            ClientMessage::RoomLeave { .. } => "room_leave",
            ClientMessage::Offer(_) => "offer",
            ClientMessage::Answer(_) => "answer",
            ClientMessage::Candidate(_) => "candidate",
            ClientMessage::Hangup(_) => "hangup",
            ClientMessage::RestartRequest(_) => "restart_request",
            ClientMessage::Subscription(_) => "subscription",
            ClientMessage::Layers(_) => "layers",
            ClientMessage::KeyPackagesPublish { .. } => "key_packages_publish",
            ClientMessage::KeyPackageCount {} => "key_package_count",
            ClientMessage::KeyPackageFetch { .. } => "key_package_fetch",
            ClientMessage::MailboxSend { .. } => "mailbox_send",
            ClientMessage::MailboxAck { .. } => "mailbox_ack",
            ClientMessage::GroupCommit(_) => "group_commit",
            ClientMessage::SfuRegister { .. } => "sfu_register",
            ClientMessage::BlobCreate { .. } => "blob_create",
            ClientMessage::TurnCredentials {} => "turn_credentials",
        }
    }
}

/// `auth`: proves the client holds the private key of `identity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    /// The protocol version the client will speak (one the server offered).
    pub version: u32,
    /// The client's Ed25519 public key.
    pub identity: IdentityKey,
    /// The challenge from `hello`, echoed.
    pub challenge: Blob,
    /// Ed25519 signature over [`super::auth_payload`].
    pub signature: Blob,
    /// An optional self-chosen name shown to room peers (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A call-setup message addressed by the sender (`to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing<T> {
    /// The recipient.
    pub to: IdentityKey,
    /// The payload.
    #[serde(flatten)]
    pub body: T,
}

/// A call-setup message as the recipient sees it, stamped with the authenticated sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incoming<T> {
    /// The authenticated sender.
    pub from: IdentityKey,
    /// The payload.
    #[serde(flatten)]
    pub body: T,
}

/// `group_commit`: an MLS commit for a group, ordered by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommit {
    /// The MLS group id (opaque to the server; random, at most 64 bytes).
    pub group: Blob,
    /// The epoch the commit was built on. The server accepts it only if this is the
    /// group's current epoch (or the server has not seen the group yet).
    pub epoch: u64,
    /// The group's members after the commit, the sender included: only they may submit
    /// the next commit.
    pub members: Vec<IdentityKey>,
    /// The commit (ciphertext).
    pub commit: Blob,
    /// Who gets the commit: the members before it other than the sender (removed
    /// members included, so they learn they are out).
    #[serde(default)]
    pub to: Vec<IdentityKey>,
    /// The welcome for members the commit adds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<Blob>,
    /// Who gets the welcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub welcome_to: Vec<IdentityKey>,
}

/// A TURN (or STUN) server and the credentials to use it with, as WebRTC configures one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:host:port?transport=udp` and the like.
    pub urls: Vec<String>,
    /// The TURN user name.
    pub username: String,
    /// The TURN password.
    pub credential: String,
}

/// An SDP offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Chosen by the caller; ties together every message of one call.
    pub call_id: String,
    /// The SDP.
    pub sdp: String,
    /// True when this offer restarts ICE on an established call.
    #[serde(default)]
    pub ice_restart: bool,
    /// The caller encrypts media end to end and expects the callee to as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<MediaE2ee>,
}

/// An SDP answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The call.
    pub call_id: String,
    /// The SDP.
    pub sdp: String,
    /// The callee encrypts media end to end, with the keys the offer named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<MediaE2ee>,
}

/// End-to-end media encryption in a call: SFrame (RFC 9605) with keys from an MLS group's
/// exporter (RFC 9605 §5.2). Names the group and the epoch the sender starts in; no keys.
/// The server relays it like the SDP and never acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaE2ee {
    /// The MLS group id, hex.
    pub group: String,
    /// The MLS epoch whose exporter keys the media.
    pub epoch: u64,
}

/// A trickled ICE candidate; an empty `candidate` marks the end of candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The call.
    pub call_id: String,
    /// The `candidate:` attribute value.
    pub candidate: String,
    /// The media section's mid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The media section's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
}

/// The end of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hangup {
    /// The call.
    pub call_id: String,
    /// Why.
    pub reason: HangupReason,
}

/// The callee's request that the caller restart ICE: its local addresses changed, so
/// the path the call uses may be gone, and a restart offer from the caller (who alone
/// sends offers) rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequest {
    /// The call.
    pub call_id: String,
}

/// What a participant wants of one forwarded stream, for the SFU. The stream is named by
/// its track id, as the SFU's offer gave it (`a=msid:<stream> <track>`); fields left out
/// are left as they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The room (the call).
    pub call_id: String,
    /// The forwarded track.
    pub track: String,
    /// Stop (`true`) or restart (`false`) forwarding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The largest simulcast layer wanted: 0 (smallest) to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_quality: Option<u8>,
}

/// Which simulcast layers of one video track of a publisher anyone receives, from the
/// SFU to the publisher ("dynacast"): the publisher may stop encoding the others until a
/// later `layers` names them again. Sent when the set changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// The room (the call).
    pub call_id: String,
    /// The publisher's media section, its `a=mid`.
    pub mid: String,
    /// The layers someone receives, by rank (0 the smallest; RIDs rank as the SFU ranks
    /// them: `q`, `l`, `0` are 0; `h`, `m`, `1` are 1; others 2), lowest first. Empty:
    /// nobody receives the track.
    pub active: Vec<u8>,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupReason {
    /// A person hung up.
    Normal,
    /// The callee is in another call.
    Busy,
    /// The callee declined.
    Declined,
    /// Nobody answered in time.
    NoAnswer,
    /// Media could not be set up or was lost (ICE, DTLS, codecs).
    Failed,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

/// A member of a room as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Their identity.
    pub identity: IdentityKey,
    /// Their self-chosen name, if they gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A room presence change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Joined the room.
    Joined,
    /// Left the room (or disconnected).
    Left,
}

/// The limits a server enforces, announced in `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection.
    pub rate_per_sec: u32,
    /// Messages that may arrive at once above the sustained rate.
    pub rate_burst: u32,
    /// Silence after which the connection is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Most participants any room may hold.
    pub max_room_participants: u32,
}

/// Messages from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First frame on every connection: versions spoken and a fresh challenge.
    Hello {
        /// Protocol versions this server speaks.
        versions: Vec<u32>,
        /// This server's stable id; signed into `auth` so a signature is bound to it.
        server_id: String,
        /// 32 random bytes, valid for this connection only.
        challenge: Blob,
        /// Limits the server enforces.
        limits: Limits,
    },
    /// Authentication succeeded; the version is fixed for the connection.
    Welcome {
        /// The protocol version in force.
        version: u32,
        /// The authenticated identity.
        identity: IdentityKey,
        /// Envelopes waiting in the mailbox; they follow as `envelope` messages.
        mailbox_depth: u64,
    },
    /// A room was created; the creator is its first participant.
    RoomCreated {
        /// The room.
        room_id: RoomId,
        /// Give this to those who may join.
        invite_token: InviteToken,
        /// The room's participant cap.
        max_participants: u32,
        /// The SFU hosting the room's media, for rooms created with `sfu: true`. Offers,
        /// answers and candidates for the group call are addressed to it, with the room id
        /// as `call_id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sfu: Option<IdentityKey>,
    },
    /// Joined a room.
    RoomJoined {
        /// The room.
        room_id: RoomId,
        /// Everyone in it, the joiner included.
        participants: Vec<Participant>,
        /// The SFU hosting the room's media, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sfu: Option<IdentityKey>,
    },
    /// Left a room.
    RoomLeft {
        /// The room.
        room_id: RoomId,
    },
    /// Someone joined or left a room the client is in.
    Presence {
        /// The room.
        room_id: RoomId,
        /// Who.
        participant: Participant,
        /// Joined or left.
        state: PresenceState,
    },
    /// A relayed offer.
    Offer(Incoming<Offer>),
    /// A relayed answer.
    Answer(Incoming<Answer>),
    /// A relayed ICE candidate.
    Candidate(Incoming<Candidate>),
    /// A relayed hang-up.
    Hangup(Incoming<Hangup>),
    /// A relayed request to restart ICE.
    RestartRequest(Incoming<RestartRequest>),
    /// A relayed subscription request (an SFU receives these).
    Subscription(Incoming<Subscription>),
    /// A relayed `layers` message (publishers receive these from their SFU).
    Layers(Incoming<Layers>),
    /// A call-setup message was handed to the recipient's connection.
    Relayed {},
    /// This connection is now a registered SFU: it is told who joins and leaves the
    /// rooms assigned to it.
    SfuRegistered {},
    /// The count of this identity's key packages after a publish or count request.
    KeyPackagesStored {
        /// One-time packages left.
        regular: u32,
        /// Whether a last-resort package is stored.
        last_resort: bool,
    },
    /// A key package of another identity.
    KeyPackage {
        /// Whose.
        identity: IdentityKey,
        /// The opaque package.
        key_package: Blob,
        /// True when this is the reusable last-resort package.
        last_resort: bool,
    },
    /// An envelope is stored durably for the recipient.
    MailboxAccepted {
        /// Its id in the recipient's mailbox.
        message_id: u64,
    },
    /// An envelope from the mailbox (delivered in id order; kept until acknowledged).
    Envelope {
        /// Increasing per recipient; acknowledge with `mailbox_ack`.
        message_id: u64,
        /// The opaque envelope.
        envelope: Blob,
    },
    /// Envelopes up to `up_to` are deleted.
    MailboxAcked {
        /// The acknowledged id.
        up_to: u64,
        /// How many envelopes were deleted.
        removed: u64,
    },
    /// A `group_commit` was accepted: the group is at `epoch` now and the commit and
    /// welcome are in the recipients' mailboxes.
    CommitAccepted {
        /// The group's new epoch.
        epoch: u64,
    },
    /// A blob was opened: upload its chunks with `upload_token`; share `blob_id` (the read
    /// capability) only inside end-to-end encrypted messages.
    BlobCreated {
        /// 128 random bits, base64url.
        blob_id: BlobId,
        /// 256 random bits, base64url: `Authorization: Bearer <upload_token>` on uploads.
        upload_token: UploadToken,
    },
    /// Credentials for the server's TURN relay, for this identity; `servers` is empty
    /// when the server runs none.
    TurnCredentials {
        /// Where to use them.
        servers: Vec<IceServer>,
        /// Seconds since the Unix epoch after which the relay refuses them (0: none).
        expires: u64,
    },
    /// A rejected message (or the reason the connection is about to close).
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// A sentence for humans.
        message: String,
    },
}

impl ServerMessage {
    /// Shorthand for an `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}
