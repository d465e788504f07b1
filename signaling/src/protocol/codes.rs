//! Stable machine-readable codes: the `code` of an `error` message and the WebSocket close
//! codes the server uses. Their spelling is part of protocol v1; never rename one.

use serde::{Deserialize, Serialize};

/// Why a message was rejected. Serialized in snake_case (`"bad_signature"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON (or not UTF-8 text).
    MalformedJson,
    /// The JSON object had no string `type` field.
    MissingType,
    /// The `type` is not one protocol v1 defines.
    UnknownType,
    /// The message had the right type but a missing or invalid field.
    InvalidMessage,
    /// The client offered no protocol version the server speaks.
    UnsupportedVersion,
    /// The message needs an authenticated connection.
    NotAuthenticated,
    /// `auth` was sent twice on one connection.
    AlreadyAuthenticated,
    /// The signature did not verify for the claimed identity.
    BadSignature,
    /// The signed challenge is not this connection's challenge (stale or replayed).
    ChallengeMismatch,
    /// The client did not authenticate within the allowed time.
    AuthTimeout,
    /// Too many messages: this one was dropped.
    RateLimited,
    /// A frame exceeded the maximum message size.
    MessageTooLarge,
    /// No room with that id and invite token (the two cases are indistinguishable).
    InviteInvalid,
    /// The room is at its participant cap.
    RoomFull,
    /// The operation needs membership of a room the client is not in.
    NotInRoom,
    /// The addressed identity has no connection right now.
    PeerOffline,
    /// The addressed identity's connection cannot take more messages right now.
    PeerBusy,
    /// The identity has no key package published.
    NoKeyPackage,
    /// Publishing would exceed the per-identity key-package cap.
    TooManyKeyPackages,
    /// The recipient's mailbox is at its cap.
    MailboxFull,
    /// The server is at its connection cap.
    ServerFull,
    /// No message arrived within the idle timeout.
    IdleTimeout,
    /// The same identity connected again; this older connection is closed.
    SessionReplaced,
    /// The client kept breaking limits and is disconnected.
    Abusive,
    /// The server is shutting down.
    ShuttingDown,
    /// `sfu_register` was refused: the server takes no SFU, or the proof is wrong.
    SfuRefused,
    /// A room with an SFU was asked for and no SFU is registered.
    NoSfu,
    /// A `group_commit` was built on an epoch the group has left: another member's
    /// commit won. Process the mailbox, rebuild the commit on the new epoch and retry.
    StaleEpoch,
    /// A `group_commit` for a group whose current members do not include the sender.
    NotGroupMember,
    /// `blob_create` asked for more bytes than the server's `--max-blob-bytes`.
    BlobTooLarge,
    /// `blob_create` while the identity has its maximum of unfinished blobs.
    TooManyOpenBlobs,
    /// Something failed inside the server; the request may be retried.
    Internal,
    /// A code this client version does not know (forward compatibility).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire spelling, e.g. `"bad_signature"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MissingType => "missing_type",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::ChallengeMismatch => "challenge_mismatch",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::PeerOffline => "peer_offline",
            ErrorCode::PeerBusy => "peer_busy",
            ErrorCode::NoKeyPackage => "no_key_package",
            ErrorCode::TooManyKeyPackages => "too_many_key_packages",
            ErrorCode::MailboxFull => "mailbox_full",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::SessionReplaced => "session_replaced",
            ErrorCode::Abusive => "abusive",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::SfuRefused => "sfu_refused",
            ErrorCode::NoSfu => "no_sfu",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::NotGroupMember => "not_group_member",
            ErrorCode::BlobTooLarge => "blob_too_large",
            ErrorCode::TooManyOpenBlobs => "too_many_open_blobs",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The WebSocket close code the server uses when this error ends the connection.
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::MessageTooLarge => close::MESSAGE_TOO_BIG,
            ErrorCode::ServerFull => close::TRY_AGAIN_LATER,
            ErrorCode::ShuttingDown => close::GOING_AWAY,
            ErrorCode::Internal => close::INTERNAL_ERROR,
            ErrorCode::UnsupportedVersion => close::UNSUPPORTED_VERSION,
            ErrorCode::BadSignature | ErrorCode::ChallengeMismatch => close::AUTH_FAILED,
            ErrorCode::AuthTimeout => close::AUTH_TIMEOUT,
            ErrorCode::IdleTimeout => close::IDLE_TIMEOUT,
            ErrorCode::SessionReplaced => close::SESSION_REPLACED,
            _ => close::POLICY_VIOLATION,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes (RFC 6455 §7.4 and Sotto's private 4000-range).
pub mod close {
    /// The server is going down or restarting.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke a rule (abuse, flooding, repeated bad messages).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame exceeded the maximum message size.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is at capacity; try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Authentication failed (bad signature or a stale/replayed challenge).
    pub const AUTH_FAILED: u16 = 4001;
    /// No protocol version in common.
    pub const UNSUPPORTED_VERSION: u16 = 4002;
    /// The client did not authenticate in time.
    pub const AUTH_TIMEOUT: u16 = 4003;
    /// Nothing was heard from the client within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4004;
    /// The same identity connected again elsewhere.
    pub const SESSION_REPLACED: u16 = 4005;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_serde() {
        for code in [
            ErrorCode::MalformedJson,
            ErrorCode::BadSignature,
            ErrorCode::InviteInvalid,
            ErrorCode::TooManyKeyPackages,
            ErrorCode::SessionReplaced,
            ErrorCode::SfuRefused,
            ErrorCode::NoSfu,
            ErrorCode::BlobTooLarge,
            ErrorCode::TooManyOpenBlobs,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let unknown: ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(unknown, ErrorCode::Unknown);
    }
}
