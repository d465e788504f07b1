//! Uploading an encrypted file: open a blob over signaling, then read, hash, seal and
//! `PUT` the file chunk by chunk, a few chunks in flight, skipping the chunks the server
//! already holds (a resumed upload). The whole file is never in memory.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sotto_signaling::protocol::{BlobId, UploadToken};
use tokio::task::JoinSet;

use super::crypto::{ChunkCipher, FileKey, chunk_count, ciphertext_size, plaintext_len};
use super::{BlobClient, FileError, FileOffer, IN_FLIGHT, Transfer, sanitize_file_name};
use crate::signaling::SignalingSender;

/// Attempts per chunk when the connection (not the server) fails.
const ATTEMPTS: u32 = 3;

/// Everything needed to resume an upload after a crash: persist it (it holds the file key
/// and the upload token, so keep it as private as the identity) and pass it to [`upload`]
/// again. Its `Debug` shows neither secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// The file being sent.
    pub path: PathBuf,
    /// The name the offer will carry.
    pub name: String,
    /// The media type the offer will carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The blob on the server.
    pub blob_id: BlobId,
    /// The secret that uploads its chunks.
    pub upload_token: UploadToken,
    /// The file key.
    pub key: FileKey,
    /// The file's size when the upload began.
    pub size: u64,
    /// The file's modification time when the upload began (seconds, nanoseconds since
    /// the Unix epoch), when the platform has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<(u64, u32)>,
    /// Number of chunks.
    pub chunks: u32,
    /// Chunks known to be stored (a hint for progress; the server's status is the truth).
    #[serde(default)]
    pub chunks_done: u32,
}

/// Open a blob for the file at `path` (a regular file) and make its upload state. Nothing
/// is sent yet but the blob's size; call [`upload`] next.
pub async fn create_upload(
    signaling: &SignalingSender,
    path: impl AsRef<Path>,
    media_type: Option<String>,
) -> Result<UploadState, FileError> {
    let path = path.as_ref().to_path_buf();
    let (size, modified) = file_identity(&path).await?;
    let chunks = u32::try_from(chunk_count(size)).map_err(|_| FileError::TooLarge {
        size,
        message: "more chunks than the protocol counts".into(),
    })?;
    let name = sanitize_file_name(
        &path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let (blob_id, upload_token) = signaling
        .blob_create(ciphertext_size(size), chunks)
        .await
        .map_err(|e| FileError::from_create(e, size))?;
    Ok(UploadState {
        path,
        name,
        media_type,
        blob_id,
        upload_token,
        key: FileKey::generate(),
        size,
        modified,
        chunks,
        chunks_done: 0,
    })
}

/// Upload (or resume uploading) the file of `state`; returns the offer to send once the
/// server holds every chunk. `progress` hears after each chunk; `state.chunks_done`
/// follows along.
pub async fn upload(
    blobs: &BlobClient,
    state: &mut UploadState,
    mut progress: impl FnMut(&Transfer),
) -> Result<FileOffer, FileError> {
    let status = blobs.status(&state.blob_id).await?;
    if status.chunks != state.chunks || status.size != ciphertext_size(state.size) {
        return Err(FileError::BlobMismatch(
            "its size or chunk count is not this file's",
        ));
    }
    if file_identity(&state.path).await? != (state.size, state.modified) {
        return Err(FileError::FileChanged {
            path: state.path.clone(),
        });
    }
    let file = std::fs::File::open(&state.path).map_err(FileError::io(&state.path))?;
    let mut reader = Reader {
        file,
        hasher: Sha256::new(),
        path: state.path.clone(),
    };
    let cipher = Arc::new(ChunkCipher::new(&state.key));
    let mut transfer = Transfer {
        chunks_total: state.chunks,
        ..Transfer::default()
    };
    let mut in_flight: JoinSet<Result<u64, FileError>> = JoinSet::new();
    for index in 0..state.chunks {
        let len = plaintext_len(state.size, u64::from(index));
        let (next, chunk) = reader.read(len).await?;
        reader = next;
        if status.complete || status.has(index) {
            transfer.chunks_skipped += 1;
            transfer.chunks_done += 1;
            state.chunks_done = transfer.chunks_done;
            progress(&transfer);
            continue;
        }
        while in_flight.len() >= IN_FLIGHT {
            if let Some(done) = in_flight.join_next().await {
                transfer.bytes_moved += done??;
                transfer.chunks_done += 1;
                state.chunks_done = transfer.chunks_done;
                progress(&transfer);
            }
        }
        let last = index + 1 == state.chunks;
        in_flight.spawn(send_chunk(
            blobs.clone(),
            cipher.clone(),
            state.blob_id.clone(),
            state.upload_token.clone(),
            index,
            last,
            chunk,
        ));
    }
    while let Some(done) = in_flight.join_next().await {
        transfer.bytes_moved += done??;
        transfer.chunks_done += 1;
        state.chunks_done = transfer.chunks_done;
        progress(&transfer);
    }
    let digest: [u8; 32] = reader.hasher.finalize().into();
    // Changed while being read: what was sent may not be what was hashed.
    if file_identity(&state.path).await? != (state.size, state.modified) {
        return Err(FileError::FileChanged {
            path: state.path.clone(),
        });
    }
    let status = blobs.status(&state.blob_id).await?;
    if !status.complete {
        return Err(FileError::Incomplete {
            received: status.received,
            chunks: status.chunks,
        });
    }
    Ok(FileOffer {
        blob_id: state.blob_id.clone(),
        key: state.key.clone(),
        digest,
        size: state.size,
        chunks: state.chunks,
        name: state.name.clone(),
        media_type: state.media_type.clone(),
    })
}

/// Create the upload and run it: the offer for the file at `path`.
pub async fn send_file(
    signaling: &SignalingSender,
    blobs: &BlobClient,
    path: impl AsRef<Path>,
    media_type: Option<String>,
) -> Result<FileOffer, FileError> {
    let mut state = create_upload(signaling, path, media_type).await?;
    upload(blobs, &mut state, |_| {}).await
}

/// Seal one chunk and `PUT` it (retrying a failed connection); returns the bytes sent.
async fn send_chunk(
    blobs: BlobClient,
    cipher: Arc<ChunkCipher>,
    blob_id: BlobId,
    token: UploadToken,
    index: u32,
    last: bool,
    mut chunk: Vec<u8>,
) -> Result<u64, FileError> {
    let sealed = tokio::task::spawn_blocking(move || {
        cipher
            .seal(u64::from(index), last, &mut chunk)
            .map(|()| Bytes::from(chunk))
    })
    .await?
    .map_err(|()| FileError::Seal { index })?;
    let mut attempt = 1;
    loop {
        match blobs
            .put_chunk(&blob_id, index, &token, sealed.clone())
            .await
        {
            Ok(()) => return Ok(sealed.len() as u64),
            Err(FileError::Http(_)) if attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The file read in order, hashed as it goes.
struct Reader {
    file: std::fs::File,
    hasher: Sha256,
    path: PathBuf,
}

impl Reader {
    /// The next `len` bytes (off the async threads).
    async fn read(mut self, len: usize) -> Result<(Reader, Vec<u8>), FileError> {
        tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(len + super::TAG_BYTES);
            chunk.resize(len, 0);
            match self.file.read_exact(&mut chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(FileError::FileChanged { path: self.path });
                }
                Err(e) => return Err(FileError::io(&self.path)(e)),
            }
            self.hasher.update(&chunk);
            Ok((self, chunk))
        })
        .await?
    }
}

/// A regular file's size and modification time.
async fn file_identity(path: &Path) -> Result<(u64, Option<(u64, u32)>), FileError> {
    let owned = path.to_path_buf();
    let meta = tokio::task::spawn_blocking(move || std::fs::metadata(owned))
        .await?
        .map_err(FileError::io(path))?;
    if !meta.is_file() {
        return Err(FileError::io(path)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| (d.as_secs(), d.subsec_nanos()));
    Ok((meta.len(), modified))
}
