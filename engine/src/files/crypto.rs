//! The chunked AEAD of an encrypted file (format in the module comment of
//! [`crate::files`]): chunk geometry, sealing and opening one chunk. Sans-IO: bytes in,
//! bytes out; no files, no network.

use aes_gcm::aead::{AeadInPlace as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize as _;

use sotto_signaling::protocol::{MAX_BLOB_CHUNK_BYTES, decode_b64, encode_b64};

/// Plaintext bytes per chunk (the last chunk may be shorter, or empty for an empty file).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The AEAD tag that follows each chunk's ciphertext.
pub const TAG_BYTES: usize = 16;

/// Label at the start of every chunk's associated data.
const AAD_LABEL: &[u8] = b"sotto/file/chunk/v1\0";

// A sealed chunk must fit the blob store's chunk limit.
const _: () = assert!((CHUNK_BYTES + TAG_BYTES) as u64 <= MAX_BLOB_CHUNK_BYTES);

/// A file's 256-bit key: random per file, sent only inside an MLS message. Wiped on
/// drop; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey([u8; 32]);

impl Drop for FileKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl FileKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        FileKey(rand::random())
    }

    /// A key from its bytes (tests, or a key received in an offer).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FileKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl Serialize for FileKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_b64(&self.0))
    }
}

impl<'de> Deserialize<'de> for FileKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FileKey(b64_array(d)?))
    }
}

/// Serde for 32-byte values written as unpadded base64url.
pub(crate) mod b64_32 {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode_b64(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        super::b64_array(d)
    }
}

fn b64_array<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    use serde::de::Error as _;
    let text = String::deserialize(d)?;
    let bytes = decode_b64(&text).map_err(D::Error::custom)?;
    bytes
        .try_into()
        .map_err(|_| D::Error::custom("expected 32 bytes"))
}

/// How many chunks a file of `size` bytes has: one per started 256 KiB, and one (empty)
/// for an empty file.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64).max(1)
}

/// The plaintext length of chunk `index` of a file of `size` bytes.
pub fn plaintext_len(size: u64, index: u64) -> usize {
    let start = index.saturating_mul(CHUNK_BYTES as u64);
    // At most CHUNK_BYTES, so the cast cannot truncate.
    size.saturating_sub(start).min(CHUNK_BYTES as u64) as usize
}

/// Total ciphertext bytes of a file of `size` bytes (what the blob store holds).
pub fn ciphertext_size(size: u64) -> u64 {
    size + chunk_count(size) * TAG_BYTES as u64
}

/// Seals and opens the chunks of one file.
pub(crate) struct ChunkCipher {
    aead: Aes256Gcm,
}

impl ChunkCipher {
    pub(crate) fn new(key: &FileKey) -> Self {
        ChunkCipher {
            aead: Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key.as_bytes())),
        }
    }

    /// Encrypt chunk `index` in place (the tag is appended). Deterministic for a given
    /// key, index, flag and plaintext, so a resumed upload sends the same bytes again.
    /// `Err` only for a message beyond GCM's limit (64 GiB), which a chunk never is.
    pub(crate) fn seal(&self, index: u64, last: bool, chunk: &mut Vec<u8>) -> Result<(), ()> {
        chunk.reserve(TAG_BYTES);
        let (nonce, aad) = nonce_and_aad(index, last);
        self.aead
            .encrypt_in_place(Nonce::from_slice(&nonce), &aad, chunk)
            .map_err(|_| ())
    }

    /// Decrypt chunk `index` in place; `Err` when it does not authenticate (altered,
    /// truncated, reordered, from another file, or the final flag is wrong).
    pub(crate) fn open(&self, index: u64, last: bool, chunk: &mut Vec<u8>) -> Result<(), ()> {
        let (nonce, aad) = nonce_and_aad(index, last);
        self.aead
            .decrypt_in_place(Nonce::from_slice(&nonce), &aad, chunk)
            .map_err(|_| ())
    }
}

/// The nonce is `index` (u64 big-endian) followed by the final flag (u32 big-endian, 1
/// on the last chunk); the associated data is a label, `index` and the flag again.
fn nonce_and_aad(index: u64, last: bool) -> ([u8; 12], [u8; AAD_LABEL.len() + 9]) {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&index.to_be_bytes());
    nonce[8..].copy_from_slice(&u32::from(last).to_be_bytes());
    let mut aad = [0u8; AAD_LABEL.len() + 9];
    aad[..AAD_LABEL.len()].copy_from_slice(AAD_LABEL);
    aad[AAD_LABEL.len()..AAD_LABEL.len() + 8].copy_from_slice(&index.to_be_bytes());
    aad[AAD_LABEL.len() + 8] = u8::from(last);
    (nonce, aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        let c = CHUNK_BYTES as u64;
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(c), 1);
        assert_eq!(chunk_count(c + 1), 2);
        assert_eq!(plaintext_len(0, 0), 0);
        assert_eq!(plaintext_len(c + 5, 0), CHUNK_BYTES);
        assert_eq!(plaintext_len(c + 5, 1), 5);
        assert_eq!(plaintext_len(2 * c, 1), CHUNK_BYTES);
        assert_eq!(ciphertext_size(0), 16);
        assert_eq!(ciphertext_size(c + 5), c + 5 + 32);
    }

    #[test]
    fn sealing_is_deterministic_and_bound_to_index_flag_and_key() {
        let key = FileKey::from_bytes([9; 32]);
        let cipher = ChunkCipher::new(&key);
        let seal = |index, last| {
            let mut chunk = b"some plaintext".to_vec();
            cipher.seal(index, last, &mut chunk).unwrap();
            chunk
        };
        let sealed = seal(3, false);
        assert_eq!(sealed.len(), 14 + TAG_BYTES);
        assert_eq!(sealed, seal(3, false));
        assert_ne!(sealed, seal(4, false));
        assert_ne!(sealed, seal(3, true));

        let mut good = sealed.clone();
        assert!(cipher.open(3, false, &mut good).is_ok());
        assert_eq!(good, b"some plaintext");
        // Moved to another index, marked final, or opened under another key: refused.
        assert!(cipher.open(4, false, &mut sealed.clone()).is_err());
        assert!(cipher.open(3, true, &mut sealed.clone()).is_err());
        let other = ChunkCipher::new(&FileKey::from_bytes([8; 32]));
        assert!(other.open(3, false, &mut sealed.clone()).is_err());
        // One flipped bit anywhere: refused.
        for i in [0, 7, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(cipher.open(3, false, &mut bad).is_err());
        }
        let mut short = sealed[..sealed.len() - 1].to_vec();
        assert!(cipher.open(3, false, &mut short).is_err());
    }

    #[test]
    fn the_key_never_shows_in_debug_and_round_trips_through_serde() {
        let key = FileKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "FileKey(..)");
        let json = serde_json::to_string(&key).unwrap();
        let back: FileKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, key);
        assert!(serde_json::from_str::<FileKey>("\"AAAA\"").is_err());
    }
}
