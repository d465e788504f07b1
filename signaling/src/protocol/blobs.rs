//! Wire types of the blob store: the ids and tokens `blob_create` hands out, the JSON the
//! HTTP routes answer, and the size rules both sides check. See "Blob store" in
//! `PROTOCOL.md`. Owns no I/O and no crypto: the bytes stored are ciphertext the client
//! made (the engine's `files` module), and nothing here can read them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::bytes::{decode_b64, encode_b64};

/// The unit chunk counts are measured in: a blob of `size` bytes has at most
/// `ceil(size / BLOB_CHUNK_UNIT)` chunks (and at least one).
pub const BLOB_CHUNK_UNIT: u64 = 256 * 1024;

/// The largest chunk body a server accepts: 256 KiB of ciphertext payload plus room for a
/// small per-chunk overhead (an AEAD tag).
pub const MAX_BLOB_CHUNK_BYTES: u64 = BLOB_CHUNK_UNIT + 64;

/// The default cap on a blob: a 2 GiB file encrypted in 256 KiB chunks, each with a
/// 16-byte AEAD tag.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = (2 << 30) + 16 * ((2 << 30) / BLOB_CHUNK_UNIT);

/// Length of a blob id in bytes (128 random bits).
pub const BLOB_ID_BYTES: usize = 16;

/// Length of an upload token in bytes (256 random bits).
pub const UPLOAD_TOKEN_BYTES: usize = 32;

/// A blob's id: 128 random bits chosen by the server, base64url. Whoever holds it may read
/// the blob's chunks, so it only travels inside end-to-end encrypted messages.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobId(pub String);

impl BlobId {
    /// Parse and check a blob id: canonical unpadded base64url of exactly 16 bytes.
    pub fn parse(text: &str) -> Option<BlobId> {
        let bytes = decode_b64(text).ok()?;
        if bytes.len() != BLOB_ID_BYTES || encode_b64(&bytes) != text {
            return None;
        }
        Some(BlobId(text.to_owned()))
    }

    /// The 16 raw bytes, when the id is well formed.
    pub fn to_bytes(&self) -> Option<[u8; BLOB_ID_BYTES]> {
        decode_b64(&self.0).ok()?.try_into().ok()
    }

    /// The id as text (also its directory name in the server's store).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A read capability: shown only as a short prefix, so logs and panics do not carry it.
impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.0.chars().take(4).collect();
        write!(f, "BlobId({prefix}..)")
    }
}

/// The secret that lets its holder upload a blob's chunks (256 random bits, base64url).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadToken(pub String);

impl UploadToken {
    /// The token as text (sent as `Authorization: Bearer <token>`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UploadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadToken(..)")
    }
}

/// The answer to `GET /v1/blobs/{blob_id}`: what a resuming uploader (or a patient
/// downloader) needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStatus {
    /// Total bytes declared at `blob_create`.
    pub size: u64,
    /// Chunks declared at `blob_create`.
    pub chunks: u32,
    /// How many chunks are stored.
    pub received: u32,
    /// Length of the run of stored chunks starting at chunk 0.
    pub prefix: u32,
    /// Which chunks are stored: bit `i % 8` of byte `i / 8` is chunk `i`, base64url.
    pub bitmap: String,
    /// Every chunk is stored; the blob can no longer be written.
    pub complete: bool,
}

impl BlobStatus {
    /// Whether chunk `index` is stored, according to `bitmap`.
    pub fn has(&self, index: u32) -> bool {
        let Ok(bits) = decode_b64(&self.bitmap) else {
            return false;
        };
        bits.get(index as usize / 8)
            .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
    }
}

/// The JSON body of every error answer of the blob routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobHttpError {
    /// Stable code, e.g. `bad_blob_id`, `unauthorized`, `chunk_too_large`.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
}

/// The most chunks a blob of `size` bytes may declare.
pub fn max_blob_chunks(size: u64) -> u64 {
    size.div_ceil(BLOB_CHUNK_UNIT).max(1)
}

/// The largest body one chunk of a blob of `size` bytes may have.
pub fn max_chunk_bytes(size: u64) -> u64 {
    MAX_BLOB_CHUNK_BYTES.min(size)
}

/// Check the shape `blob_create` declares, against the server's cap on `size`.
pub fn validate_blob_shape(size: u64, chunks: u32, max_size: u64) -> Result<(), BlobShapeError> {
    if size > max_size {
        return Err(BlobShapeError::TooLarge);
    }
    if chunks == 0 || u64::from(chunks) > max_blob_chunks(size) {
        return Err(BlobShapeError::BadChunkCount);
    }
    Ok(())
}

/// What is wrong with a declared blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlobShapeError {
    /// Above the server's `--max-blob-bytes`.
    #[error("the blob is larger than this server accepts")]
    TooLarge,
    /// Zero chunks, or more than `ceil(size / 256 KiB)`.
    #[error("a blob has at least one chunk and at most one per started 256 KiB")]
    BadChunkCount,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_must_be_canonical_16_bytes() {
        let id = encode_b64(&[7; 16]);
        assert_eq!(BlobId::parse(&id).map(|b| b.0), Some(id.clone()));
        assert!(BlobId::parse(&encode_b64(&[7; 15])).is_none());
        assert!(BlobId::parse("../../etc/passwd").is_none());
        assert!(BlobId::parse(&format!("{id}=")).is_none());
        assert!(!format!("{:?}", BlobId(id.clone())).contains(&id));
    }

    #[test]
    fn chunk_counts_follow_the_size() {
        assert_eq!(max_blob_chunks(0), 1);
        assert_eq!(max_blob_chunks(16), 1);
        assert_eq!(max_blob_chunks(BLOB_CHUNK_UNIT), 1);
        assert_eq!(max_blob_chunks(BLOB_CHUNK_UNIT + 1), 2);
        assert!(validate_blob_shape(10, 1, 100).is_ok());
        assert_eq!(
            validate_blob_shape(101, 1, 100),
            Err(BlobShapeError::TooLarge)
        );
        assert_eq!(
            validate_blob_shape(10, 0, 100),
            Err(BlobShapeError::BadChunkCount)
        );
        assert_eq!(
            validate_blob_shape(10, 2, 100),
            Err(BlobShapeError::BadChunkCount)
        );
    }

    #[test]
    fn status_bitmap_reads_bits_lsb_first() {
        let status = BlobStatus {
            size: 1,
            chunks: 10,
            received: 2,
            prefix: 1,
            bitmap: encode_b64(&[0b0000_0001, 0b0000_0010]),
            complete: false,
        };
        assert!(status.has(0));
        assert!(!status.has(1));
        assert!(status.has(9));
        assert!(!status.has(80));
    }
}
