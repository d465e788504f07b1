//! Encrypted files. A file is encrypted on the sender's device under a fresh key, its
//! ciphertext chunks are uploaded to the signaling server's blob store, and a
//! [`FileOffer`] (blob id, key, digest, size, name) travels to the recipients inside an MLS
//! application message. The server sees ciphertext, its size and timing: never the name,
//! the key or the content.
//!
//! # Format (version 1)
//!
//! * **Key**: 32 random bytes per file, for AES-256-GCM; never used for another file.
//! * **Chunks**: the plaintext in 256 KiB chunks, numbered from 0; the last one is shorter
//!   (a file of exactly k × 256 KiB has k chunks; an empty file has one empty chunk), so
//!   a file of `size` bytes has `n = max(1, ceil(size / 262144))` chunks.
//! * **Chunk `i`** is sealed with AES-256-GCM under the file key:
//!   - nonce = `i` as u64 big-endian ‖ `final` as u32 big-endian (1 when `i = n − 1`);
//!   - associated data = `"sotto/file/chunk/v1\0"` ‖ `i` as u64 big-endian ‖ `final` as u8;
//!   - stored chunk = ciphertext ‖ 16-byte tag (its plaintext length + 16 bytes).
//!
//!   A chunk moved to another index, a chunk of another file (another key), a file cut
//!   short (its last stored chunk lacks the final flag), a chunk of the wrong length or
//!   one flipped bit all fail authentication, as [`FileError::ChunkTampered`].
//! * **Digest**: SHA-256 of the whole plaintext, carried in the offer and checked after
//!   the last chunk, before the file gets its name.
//! * **Deterministic**: the same key, index and plaintext always give the same chunk, so
//!   a resumed upload sends identical bytes again. A (key, nonce) pair must never seal two
//!   different plaintexts, so resuming refuses a file whose size or modification time
//!   changed since the upload began ([`FileError::FileChanged`]).
//! * The blob holds `n` chunks, `size + 16 n` bytes in all.
//!
//! # Transfers
//!
//! [`create_upload`] opens a blob over the signaling connection and returns an
//! [`UploadState`] (serializable: persist it to resume after a crash); [`upload`] streams
//! the file chunk by chunk (never more than a few chunks in memory), asks the server which
//! chunks it already holds and sends only the others, then returns the [`FileOffer`].
//! [`fetch`] downloads into a directory: each chunk is checked as it arrives and appended
//! to `NAME.part`; a later call resumes after the chunks already there; the file gets its
//! (sanitized) name only once the digest matches.
//!
//! Owns the format and the transfers. Does not send offers (the caller's MLS
//! conversation does) and uses the signaling connection for `blob_create` only.

mod crypto;
mod download;
mod http;
mod upload;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sotto_signaling::protocol::{BlobId, ErrorCode};

use crate::signaling::ClientError;

pub use crypto::{CHUNK_BYTES, FileKey, TAG_BYTES, chunk_count, ciphertext_size, plaintext_len};
pub use download::{fetch, sanitize_file_name};
pub use http::{BlobClient, blob_base_url};
pub use upload::{UploadState, create_upload, send_file, upload};

/// How many chunks an upload or download keeps in flight at once.
pub const IN_FLIGHT: usize = 4;

/// What a recipient needs to fetch and decrypt a file: sent inside an MLS application
/// message, never in the clear. Its `Debug` does not show the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    /// The blob holding the ciphertext (also the read capability).
    pub blob_id: BlobId,
    /// The file's key.
    pub key: FileKey,
    /// SHA-256 of the plaintext.
    #[serde(with = "crypto::b64_32")]
    pub digest: [u8; 32],
    /// Plaintext size in bytes.
    pub size: u64,
    /// Number of chunks (`max(1, ceil(size / 256 KiB))`).
    pub chunks: u32,
    /// The file's name as the sender had it (sanitized again by the recipient).
    pub name: String,
    /// The media type, when the sender knew it (e.g. `image/png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl FileOffer {
    /// Check that the chunk count fits the size.
    pub fn check(&self) -> Result<(), FileError> {
        if u64::from(self.chunks) != chunk_count(self.size) {
            return Err(FileError::BadOffer(
                "its chunk count does not match its size",
            ));
        }
        Ok(())
    }
}

/// How a transfer is going, reported after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transfer {
    /// Chunks in place (sent and stored, or verified and written), skipped ones included.
    pub chunks_done: u32,
    /// Chunks of the file.
    pub chunks_total: u32,
    /// Chunks found already in place when the transfer (re)started.
    pub chunks_skipped: u32,
    /// Ciphertext bytes moved over the network by this call.
    pub bytes_moved: u64,
}

/// A failed file transfer.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// `blob_create` failed on the signaling connection.
    #[error("signaling: {0}")]
    Signaling(ClientError),
    /// The file is larger than the server accepts.
    #[error("the file is too large for this server ({size} bytes): {message}")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The server's sentence.
        message: String,
    },
    /// The blob store refused a request.
    #[error("the blob store refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable code (see "Blob store" in PROTOCOL.md).
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The HTTP exchange itself failed (connection, timeout, unreadable answer).
    #[error("blob store: {0}")]
    Http(String),
    /// The signaling URL has no plain-HTTP blob store (only `ws://` is supported).
    #[error("no blob store URL for {0}: only ws:// signaling URLs are supported")]
    BadUrl(String),
    /// A downloaded chunk failed authentication: altered, truncated, moved, or from
    /// another file. Nothing of it was written.
    #[error(
        "chunk {index} of the file failed authentication: it was altered, cut short, \
         moved, or belongs to another file"
    )]
    ChunkTampered {
        /// The chunk's index.
        index: u32,
    },
    /// Every chunk authenticated but the whole plaintext's digest is not the offer's.
    #[error("the downloaded file does not match the offer's digest")]
    DigestMismatch,
    /// The offer does not describe a possible file.
    #[error("the file offer is invalid: {0}")]
    BadOffer(&'static str),
    /// The blob on the server does not have the shape the upload expects.
    #[error("the server's blob does not match this upload: {0}")]
    BlobMismatch(&'static str),
    /// The file changed since its upload began; resuming would reuse nonces.
    #[error("{path} changed since its upload began; start a new upload")]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
    /// The destination file exists already.
    #[error("{path} already exists")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The server does not report the blob complete after every chunk was sent.
    #[error("the server holds {received} of {chunks} chunks after the upload")]
    Incomplete {
        /// Chunks stored.
        received: u32,
        /// Chunks of the blob.
        chunks: u32,
    },
    /// Encrypting failed (a message beyond the cipher's limits).
    #[error("encrypting chunk {index} failed")]
    Seal {
        /// The chunk's index.
        index: u32,
    },
    /// A background task of the transfer died.
    #[error("a transfer task failed: {0}")]
    Task(String),
}

impl From<ClientError> for FileError {
    fn from(e: ClientError) -> Self {
        FileError::Signaling(e)
    }
}

impl FileError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.into();
        move |source| FileError::Io { path, source }
    }

    pub(crate) fn from_create(e: ClientError, size: u64) -> FileError {
        match e {
            ClientError::Server {
                code: ErrorCode::BlobTooLarge,
                message,
            } => FileError::TooLarge { size, message },
            other => FileError::Signaling(other),
        }
    }
}

impl From<tokio::task::JoinError> for FileError {
    fn from(e: tokio::task::JoinError) -> Self {
        FileError::Task(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_round_trips_through_json_and_hides_its_key_from_debug() {
        let offer = FileOffer {
            blob_id: BlobId("74qPUe_AhjoAuvUxa_-xfQ".into()),
            key: FileKey::from_bytes([0x5a; 32]),
            digest: [7; 32],
            size: 300_000,
            chunks: 2,
            name: "notes.txt".into(),
            media_type: Some("text/plain".into()),
        };
        let json = serde_json::to_string(&offer).unwrap();
        assert_eq!(serde_json::from_str::<FileOffer>(&json).unwrap(), offer);
        let debug = format!("{offer:?}");
        let key_b64 = sotto_signaling::protocol::encode_b64(&[0x5a; 32]);
        assert!(!json.is_empty() && json.contains(&key_b64));
        assert!(!debug.contains(&key_b64) && !debug.contains("90, 90"));
        assert!(!debug.contains("74qPUe_AhjoAuvUxa_-xfQ"));
        assert!(offer.check().is_ok());
        let bad = FileOffer { chunks: 3, ..offer };
        assert!(matches!(bad.check(), Err(FileError::BadOffer(_))));
    }
}
