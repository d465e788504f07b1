//! The backup file's outer layer: the header, the key derivation, and the payload
//! encrypted in chunks. Knows nothing of what the payload holds (see `archive`).
//!
//! # Layout (version 1)
//!
//! ```text
//! offset  size  field
//!      0     8  magic "SOTTOBAK"
//!      8     1  format version (1)
//!      9     1  KDF (1 = Argon2id, version 0x13)
//!     10     4  Argon2 memory, KiB (u32 big-endian)
//!     14     4  Argon2 passes (t)
//!     18     4  Argon2 lanes (p)
//!     22    16  Argon2 salt (random per backup)
//!     38     7  STREAM nonce prefix (random per backup)
//!     45     4  plaintext bytes per chunk
//!     49    16  key check value
//!     65     4  first 4 bytes of SHA-256 of bytes 0..65
//!     69     …  chunks: each the AEAD ciphertext of `chunk size` plaintext bytes (+ 16-byte
//!               tag); the last one shorter or equal, and flagged as last
//! ```
//!
//! # Keys
//!
//! `ikm = Argon2id(recovery code's 16 bytes, salt, m, t, p)`, 32 bytes; then HKDF-SHA256
//! (no salt) expands `ikm` into the payload key ("sotto backup v1 payload key", 32 bytes)
//! and the key check value ("sotto backup v1 key check", 16 bytes). The check value lets
//! import tell a wrong recovery code (it differs) from a damaged file (it matches, a chunk
//! does not authenticate) before writing anything; it is no shortcut for an attacker, who
//! still pays one Argon2id per guess. The header checksum only sorts accidental damage of
//! the header into "corrupted" rather than "wrong code"; it protects nothing.
//!
//! # Chunks
//!
//! The payload is encrypted with ChaCha20-Poly1305 in the STREAM construction (Hoang,
//! Reyhanitabar, Rogaway, Vizár: "Online authenticated-encryption and its nonce-reuse
//! misuse-resistance"), as the `aead` crate's `StreamBE32` implements it: each chunk's nonce
//! is the 7-byte prefix, a 32-bit big-endian chunk index, and a last-chunk flag byte, so
//! chunks cannot be reordered, dropped, duplicated or cut off at a chunk boundary without
//! failing authentication, and a long history never has to be in memory whole. Every chunk
//! also binds the whole header as associated data, so changing the parameters, salt or
//! anything else in it breaks the payload too. ChaCha20-Poly1305 rather than AES-256-GCM:
//! constant-time in pure Rust without AES instructions (phones, old laptops), a 256-bit
//! key, and a well-reviewed STREAM implementation to reuse instead of our own framing.
//! The key is fresh for every backup (random salt), so the nonce prefix could even be
//! fixed; it is random anyway.

use std::io::{self, BufRead, Read, Write};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit as _};
use hkdf::Hkdf;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::{BackupError, KdfParams};

pub(crate) const MAGIC: &[u8; 8] = b"SOTTOBAK";
pub(crate) const FORMAT_VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
pub(crate) const HEADER_LEN: usize = 69;
const CHECKED_LEN: usize = 65;
/// Plaintext bytes per chunk.
pub(crate) const CHUNK_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;
/// Chunk sizes a reader accepts (a header is untrusted until the key check passes).
const CHUNK_LEN_RANGE: std::ops::RangeInclusive<u32> = 1024..=(16 * 1024 * 1024);

/// The parsed header.
#[derive(Clone)]
pub(crate) struct Header {
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    pub nonce_prefix: [u8; 7],
    pub chunk_len: u32,
    pub key_check: [u8; 16],
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8] = FORMAT_VERSION;
        out[9] = KDF_ARGON2ID;
        out[10..14].copy_from_slice(&self.kdf.memory_kib.to_be_bytes());
        out[14..18].copy_from_slice(&self.kdf.passes.to_be_bytes());
        out[18..22].copy_from_slice(&self.kdf.lanes.to_be_bytes());
        out[22..38].copy_from_slice(&self.salt);
        out[38..45].copy_from_slice(&self.nonce_prefix);
        out[45..49].copy_from_slice(&self.chunk_len.to_be_bytes());
        out[49..65].copy_from_slice(&self.key_check);
        let sum = Sha256::digest(&out[..CHECKED_LEN]);
        out[65..69].copy_from_slice(&sum[..4]);
        out
    }

    /// Parses and sanity-checks a header (the KDF floor is checked by the caller).
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, BackupError> {
        if &bytes[0..8] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        if bytes[8] != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion(bytes[8]));
        }
        let sum = Sha256::digest(&bytes[..CHECKED_LEN]);
        if sum[..4] != bytes[65..69] {
            return Err(BackupError::Corrupted("its header is damaged"));
        }
        if bytes[9] != KDF_ARGON2ID {
            return Err(BackupError::Corrupted("unknown key derivation"));
        }
        let u32_at = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut header = Header {
            kdf: KdfParams {
                memory_kib: u32_at(10),
                passes: u32_at(14),
                lanes: u32_at(18),
            },
            salt: [0; 16],
            nonce_prefix: [0; 7],
            chunk_len: u32_at(45),
            key_check: [0; 16],
        };
        header.salt.copy_from_slice(&bytes[22..38]);
        header.nonce_prefix.copy_from_slice(&bytes[38..45]);
        header.key_check.copy_from_slice(&bytes[49..65]);
        if !CHUNK_LEN_RANGE.contains(&header.chunk_len) {
            return Err(BackupError::Corrupted("implausible chunk size"));
        }
        Ok(header)
    }
}

/// The payload key and the key check value of a backup.
pub(crate) struct Keys {
    pub payload: Zeroizing<[u8; 32]>,
    pub check: [u8; 16],
}

/// Runs Argon2id and HKDF (see the module documentation).
pub(crate) fn derive_keys(
    code: &[u8; 16],
    salt: &[u8; 16],
    kdf: KdfParams,
) -> Result<Keys, BackupError> {
    let params = Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(32))
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    let mut ikm = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(code, salt, ikm.as_mut_slice())
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    let hkdf = Hkdf::<Sha256>::new(None, ikm.as_slice());
    let mut keys = Keys {
        payload: Zeroizing::new([0u8; 32]),
        check: [0u8; 16],
    };
    // Both lengths are far below HKDF-SHA256's limit of 8160 bytes.
    hkdf.expand(b"sotto backup v1 payload key", keys.payload.as_mut_slice())
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    hkdf.expand(b"sotto backup v1 key check", &mut keys.check)
        .map_err(|e| BackupError::Kdf(e.to_string()))?;
    Ok(keys)
}

/// Whether `keys` match the header's key check value.
pub(crate) fn key_matches(keys: &Keys, header: &Header) -> bool {
    ct_eq(&keys.check, &header.key_check)
}

/// Encrypts what is written to it in chunks; [`ChunkWriter::finish`] writes the last one.
pub(crate) struct ChunkWriter<W: Write> {
    out: W,
    aad: [u8; HEADER_LEN],
    stream: EncryptorBE32<ChaCha20Poly1305>,
    buf: Zeroizing<Vec<u8>>,
    chunk_len: usize,
}

impl<W: Write> ChunkWriter<W> {
    /// Writes the header to `out` and returns a writer for the payload.
    pub fn new(mut out: W, header: &Header, keys: &Keys) -> io::Result<Self> {
        let aad = header.to_bytes();
        out.write_all(&aad)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(keys.payload.as_slice()));
        let chunk_len = header.chunk_len as usize;
        Ok(ChunkWriter {
            out,
            aad,
            stream: EncryptorBE32::from_aead(cipher, header.nonce_prefix.as_slice().into()),
            buf: Zeroizing::new(Vec::with_capacity(chunk_len + TAG_LEN)),
            chunk_len,
        })
    }

    /// Encrypts and writes the buffered full chunk (only once more data follows it, so the
    /// last chunk is always the one [`finish`](Self::finish) writes).
    fn flush_chunk(&mut self) -> io::Result<()> {
        self.stream
            .encrypt_next_in_place(&self.aad, &mut *self.buf)
            .map_err(|_| io::Error::other("backup too large for one stream (2^32 chunks)"))?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Encrypts the last chunk and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        let mut last = std::mem::take(&mut *self.buf);
        self.stream
            .encrypt_last_in_place(&self.aad, &mut last)
            .map_err(|_| io::Error::other("encrypting the last chunk failed"))?;
        self.out.write_all(&last)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.len() == self.chunk_len {
            self.flush_chunk()?;
        }
        let n = data.len().min(self.chunk_len - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a backup's payload chunk by chunk, authenticating each before handing it out.
pub(crate) struct ChunkReader<R: BufRead> {
    input: R,
    aad: [u8; HEADER_LEN],
    stream: Option<DecryptorBE32<ChaCha20Poly1305>>,
    chunk: Zeroizing<Vec<u8>>,
    pos: usize,
    chunk_len: usize,
}

impl<R: BufRead> ChunkReader<R> {
    /// `input` positioned just after the header.
    pub fn new(input: R, header: &Header, keys: &Keys) -> Self {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(keys.payload.as_slice()));
        let chunk_len = header.chunk_len as usize;
        ChunkReader {
            input,
            aad: header.to_bytes(),
            stream: Some(DecryptorBE32::from_aead(
                cipher,
                header.nonce_prefix.as_slice().into(),
            )),
            chunk: Zeroizing::new(Vec::with_capacity(chunk_len + TAG_LEN)),
            pos: 0,
            chunk_len,
        }
    }

    /// Makes plaintext available; `false` once the last chunk is consumed.
    fn fill(&mut self) -> Result<bool, BackupError> {
        while self.pos == self.chunk.len() {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(false);
            };
            self.chunk.clear();
            self.chunk.resize(self.chunk_len + TAG_LEN, 0);
            let got = read_full(&mut self.input, &mut self.chunk).map_err(BackupError::Read)?;
            self.chunk.truncate(got);
            self.pos = 0;
            let at_end = self.input.fill_buf().map_err(BackupError::Read)?.is_empty();
            if got < TAG_LEN {
                return Err(BackupError::Truncated);
            }
            if at_end {
                let full = got == self.chunk_len + TAG_LEN;
                let stream = self.stream.take().ok_or(BackupError::Truncated)?;
                stream
                    .decrypt_last_in_place(&self.aad, &mut *self.chunk)
                    .map_err(|_| {
                        // A last chunk of full length that is not flagged last: the file
                        // was cut at a chunk boundary.
                        if full {
                            BackupError::Truncated
                        } else {
                            BackupError::Corrupted("a part of it does not authenticate")
                        }
                    })?;
            } else {
                if got < self.chunk_len + TAG_LEN {
                    return Err(BackupError::Corrupted("a chunk is short"));
                }
                stream
                    .decrypt_next_in_place(&self.aad, &mut *self.chunk)
                    .map_err(|_| BackupError::Corrupted("a part of it does not authenticate"))?;
            }
        }
        Ok(true)
    }

    /// Fills `buf` completely from the payload.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        let mut done = 0;
        while done < buf.len() {
            if !self.fill()? {
                return Err(BackupError::Corrupted("the archive ends early"));
            }
            let n = (buf.len() - done).min(self.chunk.len() - self.pos);
            buf[done..done + n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        Ok(())
    }

    /// Copies exactly `len` payload bytes to `out`.
    pub fn copy_to(&mut self, mut len: u64, out: &mut impl Write) -> Result<(), BackupError> {
        while len > 0 {
            if !self.fill()? {
                return Err(BackupError::Corrupted("the archive ends early"));
            }
            let available = (self.chunk.len() - self.pos) as u64;
            let n = len.min(available) as usize;
            out.write_all(&self.chunk[self.pos..self.pos + n])
                .map_err(BackupError::Write)?;
            self.pos += n;
            len -= n as u64;
        }
        Ok(())
    }

    /// Checks that the payload is fully consumed and the last chunk authenticated.
    pub fn finish(mut self) -> Result<(), BackupError> {
        if self.fill()? {
            return Err(BackupError::Corrupted("unexpected data after the archive"));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub(crate) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Compares the key check without an early exit (it is derived from the key, so do not
/// leak how many bytes matched).
fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
