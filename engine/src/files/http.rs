//! The blob store's HTTP side, as a client: chunk upload (`PUT`), chunk download and the
//! blob's status (`GET`), on the signaling server's own address (see "Blob store" in
//! `signaling/PROTOCOL.md`). Moves opaque ciphertext; knows nothing of keys or files.
//!
//! The client is hyper-util's pooled HTTP/1.1 client over hyper, which the signaling
//! server's axum already builds; its client side adds only two tiny crates (`want`,
//! `try-lock`), where reqwest would add its own layer, URL parsing and redirect and
//! cookie machinery we do not use. No TLS: the signaling URL is `ws://` today; a `wss://`
//! one is refused with a clear error until it is not.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sotto_signaling::protocol::{BlobHttpError, BlobId, BlobStatus, UploadToken};

use super::FileError;

/// How long one request (a chunk, or a status) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest status or error body read.
const SMALL_BODY: usize = 64 * 1024;

/// An HTTP client for one server's blob store. Cheap to clone (connections are pooled
/// and shared).
#[derive(Clone)]
pub struct BlobClient {
    base: Arc<str>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for BlobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobClient")
            .field("base", &self.base)
            .finish()
    }
}

/// The blob store's base URL for a signaling WebSocket URL: `ws://host:port/v1/ws` gives
/// `http://host:port`.
pub fn blob_base_url(signaling_url: &str) -> Result<String, FileError> {
    let bad = || FileError::BadUrl(signaling_url.to_owned());
    let uri: Uri = signaling_url.parse().map_err(|_| bad())?;
    match uri.scheme_str() {
        Some("ws" | "http") => {}
        _ => return Err(bad()),
    }
    let authority = uri.authority().ok_or_else(bad)?;
    Ok(format!("http://{authority}"))
}

impl BlobClient {
    /// A client for the blob store of the signaling server at `signaling_url`
    /// (`ws://host:port/v1/ws`).
    pub fn for_signaling_url(signaling_url: &str) -> Result<Self, FileError> {
        Ok(Self::new(&blob_base_url(signaling_url)?))
    }

    /// A client for the blob store at `base` (`http://host:port`, no trailing slash).
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        BlobClient {
            base: base.trim_end_matches('/').into(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The base URL in use.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The blob's status: which chunks are stored, whether it is complete.
    pub async fn status(&self, blob_id: &BlobId) -> Result<BlobStatus, FileError> {
        let uri = format!("{}/v1/blobs/{}", self.base, blob_id.as_str());
        let body = self
            .send(Method::GET, &uri, None, Bytes::new(), SMALL_BODY)
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| FileError::Http(format!("unreadable blob status: {e}")))
    }

    /// Upload chunk `index` of a blob.
    pub async fn put_chunk(
        &self,
        blob_id: &BlobId,
        index: u32,
        token: &UploadToken,
        chunk: Bytes,
    ) -> Result<(), FileError> {
        let uri = format!("{}/v1/blobs/{}/{index}", self.base, blob_id.as_str());
        self.send(Method::PUT, &uri, Some(token), chunk, SMALL_BODY)
            .await
            .map(drop)
    }

    /// Download chunk `index` of a blob; a body longer than `limit` is refused.
    pub async fn get_chunk(
        &self,
        blob_id: &BlobId,
        index: u32,
        limit: usize,
    ) -> Result<Bytes, FileError> {
        let uri = format!("{}/v1/blobs/{}/{index}", self.base, blob_id.as_str());
        self.send(Method::GET, &uri, None, Bytes::new(), limit)
            .await
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&UploadToken>,
        body: Bytes,
        limit: usize,
    ) -> Result<Bytes, FileError> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.as_str()));
        }
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/octet-stream");
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| FileError::Http(format!("building a request: {e}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| FileError::Http(format!("{e}")))?;
            let status = response.status();
            let limit = if status.is_success() {
                limit
            } else {
                SMALL_BODY
            };
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| FileError::Http(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, FileError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| FileError::Http("the blob store did not answer in time".into()))??;
        if status.is_success() {
            return Ok(body);
        }
        Err(refused(status, &body))
    }
}

fn refused(status: StatusCode, body: &[u8]) -> FileError {
    let (code, message) = match serde_json::from_slice::<BlobHttpError>(body) {
        Ok(e) => (e.code, e.message),
        Err(_) => (
            "unknown".to_owned(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    FileError::Refused {
        status: status.as_u16(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_base_url_comes_from_the_signaling_url() {
        assert_eq!(
            blob_base_url("ws://127.0.0.1:7000/v1/ws").unwrap(),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            blob_base_url("ws://example.test/v1/ws").unwrap(),
            "http://example.test"
        );
        assert!(matches!(
            blob_base_url("wss://example.test/v1/ws"),
            Err(FileError::BadUrl(_))
        ));
        assert!(blob_base_url("not a url").is_err());
    }
}
