//! Signaling protocol v1: JSON objects over WebSocket text frames.
//!
//! This module holds only wire types and pure helpers. It must not depend on the server's
//! crates (axum, tokio, SQLite), so that clients can use it with
//! `default-features = false`. `PROTOCOL.md` next to this crate is the prose version;
//! a test checks every example there against these types.

mod blobs;
mod bytes;
mod codes;
mod messages;

pub use blobs::{
    BLOB_CHUNK_UNIT, BLOB_ID_BYTES, BlobHttpError, BlobId, BlobShapeError, BlobStatus,
    DEFAULT_MAX_BLOB_BYTES, MAX_BLOB_CHUNK_BYTES, UPLOAD_TOKEN_BYTES, UploadToken, max_blob_chunks,
    max_chunk_bytes, validate_blob_shape,
};
pub use bytes::{Blob, IdentityKey, IdentityParseError, decode_b64, encode_b64};
pub use codes::{ErrorCode, close};
pub use messages::InviteToken;
pub use messages::{
    Answer, Auth, Candidate, ClientFrame, ClientMessage, GroupCommit, Hangup, HangupReason,
    IceServer, Incoming, Layers, Limits, MediaE2ee, Offer, Outgoing, Participant, PresenceState,
    RestartRequest, RoomId, ServerFrame, ServerMessage, Subscription,
};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Domain label that starts every signed authentication payload, so a signature made
/// for Sotto signaling can never be mistaken for a signature over anything else.
pub const AUTH_DOMAIN: &[u8] = b"sotto/signaling/auth/v1\0";

/// Size of the random challenge in `hello`, in bytes.
pub const CHALLENGE_LEN: usize = 32;

/// Longest display name accepted, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Longest `call_id` accepted, in bytes.
pub const MAX_CALL_ID_BYTES: usize = 64;

/// The bytes a client signs to authenticate: `AUTH_DOMAIN || len(server_id) as u16 BE ||
/// server_id || challenge`. The length prefix keeps the encoding unambiguous.
pub fn auth_payload(server_id: &str, challenge: &[u8]) -> Vec<u8> {
    auth_payload_with(AUTH_DOMAIN, server_id, challenge)
}

fn auth_payload_with(domain: &[u8], server_id: &str, challenge: &[u8]) -> Vec<u8> {
    let id = server_id.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(domain.len() + 2 + id.len() + challenge.len());
    out.extend_from_slice(domain);
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(&id[..usize::from(id_len).min(id.len())]);
    out.extend_from_slice(challenge);
    out
}

/// Domain separation for the SFU's proof of the shared secret.
pub const SFU_DOMAIN: &[u8] = b"sotto/signaling/sfu/v1\0";

/// The proof an SFU sends in `sfu_register`: HMAC-SHA256 keyed with the shared secret over
/// `SFU_DOMAIN || len(server_id) as u16 BE || server_id || challenge` (this connection's
/// challenge from `hello`). Bound to the server and the connection, so it cannot be
/// replayed elsewhere.
pub fn sfu_proof(secret: &[u8], server_id: &str, challenge: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    sfu_mac(secret, server_id, challenge)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks an SFU's proof in constant time.
pub fn verify_sfu_proof(secret: &[u8], server_id: &str, challenge: &[u8], proof: &[u8]) -> bool {
    use hmac::Mac;
    sfu_mac(secret, server_id, challenge)
        .verify_slice(proof)
        .is_ok()
}

fn sfu_mac(secret: &[u8], server_id: &str, challenge: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::{Hmac, Mac};
    #[allow(clippy::expect_used)]
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&auth_payload_with(SFU_DOMAIN, server_id, challenge));
    mac
}

/// A frame the server refuses, with the reply it deserves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The request id, when the frame had a readable one.
    pub id: Option<u64>,
    /// Stable code.
    pub code: ErrorCode,
    /// Human sentence.
    pub message: String,
}

impl Rejection {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Parse a client's text frame, classifying what is wrong with it when it is wrong:
/// not JSON, no `type`, an unknown `type`, or bad fields for a known one.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, Rejection> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            None,
            ErrorCode::MalformedJson,
            format!("the frame is not valid JSON: {e}"),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(Rejection::new(
            None,
            ErrorCode::InvalidMessage,
            "a message must be a JSON object",
        ));
    };
    let id = match object.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            Rejection::new(
                None,
                ErrorCode::InvalidMessage,
                "`id` must be a non-negative integer",
            )
        })?),
    };
    let Some(kind) = object.get("type").and_then(|t| t.as_str()) else {
        return Err(Rejection::new(
            id,
            ErrorCode::MissingType,
            "a message needs a string `type` field",
        ));
    };
    if !ClientMessage::TYPES.contains(&kind) {
        let mut shown: String = kind.chars().take(40).collect();
        if shown.len() < kind.len() {
            shown.push('…');
        }
        return Err(Rejection::new(
            id,
            ErrorCode::UnknownType,
            format!("protocol v{PROTOCOL_VERSION} has no message type `{shown}`"),
        ));
    }
    let kind = kind.to_owned();
    serde_json::from_value::<ClientFrame>(value).map_err(|e| {
        Rejection::new(
            id,
            ErrorCode::InvalidMessage,
            format!("bad `{kind}` message: {e}"),
        )
    })
}

/// Check a self-chosen display name: at most [`MAX_DISPLAY_NAME_CHARS`] characters, no
/// control characters.
pub fn validate_display_name(name: &str) -> Result<(), &'static str> {
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err("a display name has at most 64 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("a display name may not contain control characters");
    }
    Ok(())
}

/// Check a client-chosen call id: 1 to [`MAX_CALL_ID_BYTES`] bytes, printable ASCII.
pub fn validate_call_id(call_id: &str) -> Result<(), &'static str> {
    if call_id.is_empty() || call_id.len() > MAX_CALL_ID_BYTES {
        return Err("a call_id has 1 to 64 bytes");
    }
    if !call_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a call_id is printable ASCII without spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
