//! The blob store's front: `blob_create` on an authenticated WebSocket, and the HTTP
//! routes that move ciphertext chunks (see "Blob store" in `PROTOCOL.md`):
//!
//! * `PUT /v1/blobs/{blob_id}/{index}` with `Authorization: Bearer <upload_token>`
//!   stores one chunk, streamed to a temporary file and renamed into place;
//! * `GET /v1/blobs/{blob_id}` answers the blob's status (for resuming);
//! * `GET /v1/blobs/{blob_id}/{index}` serves one chunk. The 128-bit blob id is the read
//!   capability; it only ever travels inside end-to-end encrypted messages.
//!
//! Every refusal is a JSON [`BlobHttpError`] with a stable code, counted in
//! `sotto_signaling_blob_requests{op, outcome}`; nothing here logs ids, tokens or
//! addresses. The bytes are ciphertext this server cannot read; it checks sizes only.
//! State and files live in [`super::blob_store`].

use std::future::poll_fn;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use super::blob_store::{BlobStore, Created, GetCheck, PutCheck, parse_index};
use super::connection::{Conn, Flow};
use super::{Shared, StoreError, current_hour, stopped};
use crate::protocol::{
    BlobHttpError, BlobId, BlobShapeError, ErrorCode, IdentityKey, ServerMessage, max_chunk_bytes,
    validate_blob_shape,
};

/// Chunk transfers (uploads and downloads) served at once; more wait. Bounds the memory
/// chunks take (a download holds one chunk, an upload a 64 KiB buffer).
const MAX_TRANSFERS: usize = 64;

/// How long one chunk's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Incoming bytes are written to disk in pieces of this size.
const WRITE_PIECE: usize = 64 * 1024;

/// The blob store and what bounds its use.
pub(crate) struct Blobs {
    pub store: BlobStore,
    transfers: Semaphore,
}

impl Blobs {
    /// Open the store under `data_dir`.
    pub(crate) fn open(data_dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Blobs {
            store: BlobStore::open(data_dir)?,
            transfers: Semaphore::new(MAX_TRANSFERS),
        })
    }
}

/// The HTTP routes of the blob store.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/blobs/{blob_id}", get(status))
        .route("/v1/blobs/{blob_id}/{index}", get(get_chunk).put(put_chunk))
}

impl Conn {
    /// `blob_create`: check the declared shape and the creator's open blobs, then record
    /// the blob (not its creator).
    pub(crate) async fn blob_create(
        &self,
        me: IdentityKey,
        size: u64,
        chunks: u32,
    ) -> Result<Result<ServerMessage, (ErrorCode, String)>, Flow> {
        let config = &self.shared.config;
        match validate_blob_shape(size, chunks, config.max_blob_bytes) {
            Ok(()) => {}
            Err(BlobShapeError::TooLarge) => {
                return Ok(Err((
                    ErrorCode::BlobTooLarge,
                    format!(
                        "this server stores blobs of at most {} bytes",
                        config.max_blob_bytes
                    ),
                )));
            }
            Err(e @ BlobShapeError::BadChunkCount) => {
                return Ok(Err((ErrorCode::InvalidMessage, e.to_string())));
            }
        }
        let cap = config.max_open_blobs_per_identity;
        let shared = self.shared.clone();
        let created = tokio::task::spawn_blocking(move || {
            shared
                .blobs
                .store
                .create(me, size, chunks, current_hour(), cap)
        })
        .await;
        match created {
            Ok(Ok(Created::Blob(blob_id, upload_token))) => {
                self.shared.metrics.blob("create", "ok");
                Ok(Ok(ServerMessage::BlobCreated {
                    blob_id,
                    upload_token,
                }))
            }
            Ok(Ok(Created::TooManyOpen)) => Ok(Err((
                ErrorCode::TooManyOpenBlobs,
                format!("at most {cap} blobs may be open (unfinished) per identity"),
            ))),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "blob store failed");
                Err(Flow::Close(
                    ErrorCode::Internal,
                    "the server's store failed".into(),
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "blob store task failed");
                Err(Flow::Close(
                    ErrorCode::Internal,
                    "the server's store failed".into(),
                ))
            }
        }
    }
}

/// A refusal: HTTP status, stable code, sentence.
struct Refusal(StatusCode, &'static str, &'static str);

impl Refusal {
    fn into_response(self, shared: &Shared, op: &'static str) -> Response {
        let Refusal(status, code, message) = self;
        shared.metrics.blob(op, code);
        let body = serde_json::to_string(&BlobHttpError {
            code: code.to_owned(),
            message: message.to_owned(),
        })
        .unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

const BAD_ID: Refusal = Refusal(
    StatusCode::BAD_REQUEST,
    "bad_blob_id",
    "a blob id is 22 characters of base64url (128 bits)",
);
const BAD_INDEX: Refusal = Refusal(
    StatusCode::BAD_REQUEST,
    "bad_index",
    "a chunk index is a decimal number below the blob's chunk count",
);
const NOT_FOUND: Refusal = Refusal(
    StatusCode::NOT_FOUND,
    "blob_not_found",
    "no blob has that id (it may have expired)",
);
const CHUNK_MISSING: Refusal = Refusal(
    StatusCode::NOT_FOUND,
    "chunk_missing",
    "that chunk has not been uploaded",
);
const UNAUTHORIZED: Refusal = Refusal(
    StatusCode::UNAUTHORIZED,
    "unauthorized",
    "uploading needs the blob's upload token as `Authorization: Bearer <token>`",
);
const COMPLETE: Refusal = Refusal(
    StatusCode::CONFLICT,
    "blob_complete",
    "every chunk of this blob is stored; it can no longer be written",
);
const TOO_LARGE: Refusal = Refusal(
    StatusCode::PAYLOAD_TOO_LARGE,
    "chunk_too_large",
    "a chunk has at most 262,208 bytes, and at most the blob's declared size",
);
const BODY_TIMED_OUT: Refusal = Refusal(
    StatusCode::REQUEST_TIMEOUT,
    "body_timeout",
    "the chunk did not arrive in time",
);
const BAD_BODY: Refusal = Refusal(
    StatusCode::BAD_REQUEST,
    "bad_body",
    "the request body could not be read",
);
const INTERNAL: Refusal = Refusal(
    StatusCode::INTERNAL_SERVER_ERROR,
    "internal",
    "the server's blob store failed; the request may be retried",
);

fn parse_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(BlobId, u32), Refusal> {
    let Ok(Path((id, index))) = path else {
        return Err(BAD_ID);
    };
    let id = BlobId::parse(&id).ok_or(BAD_ID)?;
    let index = parse_index(&index).ok_or(BAD_INDEX)?;
    Ok((id, index))
}

/// Run a store operation off the async threads.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&BlobStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    let shared = shared.clone();
    match tokio::task::spawn_blocking(move || f(&shared.blobs.store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "blob store failed");
            Err(INTERNAL)
        }
        Err(e) => {
            tracing::error!(error = %e, "blob store task failed");
            Err(INTERNAL)
        }
    }
}

async fn status(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(id) = path.ok().and_then(|Path(id)| BlobId::parse(&id)) else {
        return BAD_ID.into_response(&shared, "status");
    };
    match blocking(&shared, move |store| store.status(&id)).await {
        Ok(Some(status)) => {
            shared.metrics.blob("status", "ok");
            let body = serde_json::to_string(&status).unwrap_or_default();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(None) => NOT_FOUND.into_response(&shared, "status"),
        Err(refusal) => refusal.into_response(&shared, "status"),
    }
}

async fn get_chunk(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    match serve_chunk(&shared, path).await {
        Ok(bytes) => {
            shared.metrics.blob("get", "ok");
            shared.metrics.blob_bytes_out.inc_by(bytes.len() as u64);
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::from(bytes),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(&shared, "get"),
    }
}

async fn serve_chunk(
    shared: &Arc<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Vec<u8>, Refusal> {
    let (id, index) = parse_path(path)?;
    let _permit = shared
        .blobs
        .transfers
        .acquire()
        .await
        .map_err(|_| INTERNAL)?;
    blocking(shared, move |store| {
        Ok(match store.check_get(&id, index)? {
            GetCheck::Unknown => Err(NOT_FOUND),
            GetCheck::BadIndex => Err(BAD_INDEX),
            GetCheck::Allowed => match std::fs::read(store.chunk_path(&id, index)) {
                Ok(bytes) => Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CHUNK_MISSING),
                Err(e) => return Err(e.into()),
            },
        })
    })
    .await?
}

async fn put_chunk(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match store_chunk(&shared, path, &headers, body).await {
        Ok(bytes) => {
            shared.metrics.blob("put", "ok");
            shared.metrics.blob_bytes_in.inc_by(bytes);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => refusal.into_response(&shared, "put"),
    }
}

async fn store_chunk(
    shared: &Arc<Shared>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<u64, Refusal> {
    let (id, index) = parse_path(path)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or(UNAUTHORIZED)?;
    let check_id = id.clone();
    let size = match blocking(shared, move |s| s.check_put(&check_id, index, &token)).await? {
        PutCheck::Allowed { size } => size,
        PutCheck::Unknown => return Err(NOT_FOUND),
        PutCheck::BadToken => return Err(UNAUTHORIZED),
        PutCheck::BadIndex => return Err(BAD_INDEX),
        PutCheck::Complete => return Err(COMPLETE),
    };
    let limit = max_chunk_bytes(size);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) || body.size_hint().lower() > limit {
        return Err(TOO_LARGE);
    }

    let _permit = shared
        .blobs
        .transfers
        .acquire()
        .await
        .map_err(|_| INTERNAL)?;
    let mut temp = TempChunk::create(shared).await?;
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_PIECE);
    let mut total: u64 = 0;
    loop {
        let frame =
            tokio::time::timeout_at(deadline, poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)))
                .await
                .map_err(|_| BODY_TIMED_OUT)?;
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(|_| BAD_BODY)?.into_data() else {
            continue; // trailers carry nothing we need
        };
        total += data.len() as u64;
        if total > limit {
            return Err(TOO_LARGE);
        }
        pending.extend_from_slice(&data);
        if pending.len() >= WRITE_PIECE {
            pending = temp.write(pending).await?;
        }
    }
    temp.write(pending).await?;
    let stored = temp.commit(shared, id, index).await?;
    if !stored {
        return Err(NOT_FOUND);
    }
    Ok(total)
}

/// A chunk being received: a file under `.tmp`, removed unless committed (also when the
/// request is cancelled halfway).
struct TempChunk {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl TempChunk {
    async fn create(shared: &Arc<Shared>) -> Result<Self, Refusal> {
        let path = shared.blobs.store.temp_path();
        let open = path.clone();
        let file = blocking(shared, move |_| Ok(std::fs::File::create_new(open)?)).await?;
        Ok(TempChunk {
            file: Some(file),
            path,
        })
    }

    /// Append `bytes`; hands the (emptied) buffer back for reuse.
    async fn write(&mut self, mut bytes: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        let Some(mut file) = self.file.take() else {
            return Err(INTERNAL);
        };
        let done = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&bytes);
            bytes.clear();
            (file, bytes, result)
        })
        .await;
        match done {
            Ok((file, bytes, Ok(()))) => {
                self.file = Some(file);
                Ok(bytes)
            }
            Ok((_, _, Err(e))) => {
                tracing::error!(error = %e, "writing a blob chunk failed");
                Err(INTERNAL)
            }
            Err(_) => Err(INTERNAL),
        }
    }

    /// Flush to disk and move into place.
    async fn commit(
        mut self,
        shared: &Arc<Shared>,
        id: BlobId,
        index: u32,
    ) -> Result<bool, Refusal> {
        let Some(file) = self.file.take() else {
            return Err(INTERNAL);
        };
        let temp = std::mem::take(&mut self.path);
        blocking(shared, move |store| {
            file.sync_data()?;
            drop(file);
            let stored = store.commit_chunk(&id, index, &temp);
            if !matches!(stored, Ok(true)) {
                let _ = std::fs::remove_file(&temp);
            }
            stored
        })
        .await
    }
}

impl Drop for TempChunk {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Delete blobs older than the mailbox retention, at start and then hourly.
pub(crate) async fn expire_blobs(shared: Arc<Shared>) {
    let retention_hours =
        i64::try_from(shared.config.mailbox_retention.as_secs() / 3600).unwrap_or(i64::MAX);
    let mut stop = shared.shutdown.clone();
    loop {
        let before = current_hour().saturating_sub(retention_hours);
        let task = shared.clone();
        match tokio::task::spawn_blocking(move || task.blobs.store.expire(before)).await {
            Ok(Ok(n)) => {
                if n > 0 {
                    shared.metrics.blobs_expired.inc_by(n);
                    tracing::info!(expired = n, "deleted expired blobs");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "blob expiry failed"),
            Err(e) => tracing::warn!(error = %e, "blob expiry task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}
