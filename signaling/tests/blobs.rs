//! The blob store through a real server: `blob_create` on the WebSocket, chunks over HTTP,
//! and every refusal (bad ids and indexes, wrong tokens, oversized bodies, the size cap,
//! the open-blob cap) answered with a clear status and counted in `/metrics`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{Client, TIMEOUT, TestServer, http_get, key};
use sotto_signaling::protocol::{
    BlobHttpError, BlobId, BlobStatus, ClientMessage, ErrorCode, ServerMessage, UploadToken,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One HTTP/1.1 request; returns the status and the body bytes.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // A refused body may be cut short by the server; that is its right.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        response
    };
    let response = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

async fn create(client: &mut Client, size: u64, chunks: u32) -> ServerMessage {
    client
        .request(ClientMessage::BlobCreate { size, chunks })
        .await
        .message
}

async fn created(client: &mut Client, size: u64, chunks: u32) -> (BlobId, UploadToken) {
    match create(client, size, chunks).await {
        ServerMessage::BlobCreated {
            blob_id,
            upload_token,
        } => (blob_id, upload_token),
        other => panic!("expected blob_created, got {other:?}"),
    }
}

fn refusal_code(body: &[u8]) -> String {
    serde_json::from_slice::<BlobHttpError>(body).unwrap().code
}

async fn status(addr: SocketAddr, id: &BlobId) -> BlobStatus {
    let (code, body) = http(addr, "GET", &format!("/v1/blobs/{}", id.0), None, b"").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn chunks_upload_in_any_order_and_the_complete_blob_is_read_only() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut alice = Client::login(&server.url(), &key(1), None).await;
    let (id, token) = created(&mut alice, 600_000, 3).await;
    assert_eq!(id.0.len(), 22);
    assert_eq!(token.0.len(), 43);

    let chunk = |i: u8, n: usize| vec![i; n];
    for (index, len) in [(2u8, 10_000), (0, 262_160)] {
        let path = format!("/v1/blobs/{}/{index}", id.0);
        let (code, _) = http(addr, "PUT", &path, Some(&token.0), &chunk(index, len)).await;
        assert_eq!(code, 204);
    }
    let half = status(addr, &id).await;
    assert_eq!((half.chunks, half.received, half.prefix), (3, 2, 1));
    assert!(half.has(0) && !half.has(1) && half.has(2) && !half.complete);

    // A missing chunk is a 404 with its own code, not an empty body.
    let (code, body) = http(addr, "GET", &format!("/v1/blobs/{}/1", id.0), None, b"").await;
    assert_eq!((code, refusal_code(&body).as_str()), (404, "chunk_missing"));

    let path1 = format!("/v1/blobs/{}/1", id.0);
    let (code, _) = http(addr, "PUT", &path1, Some(&token.0), &chunk(1, 262_160)).await;
    assert_eq!(code, 204);
    let done = status(addr, &id).await;
    assert!(done.complete);
    assert_eq!((done.received, done.prefix), (3, 3));

    for (index, len) in [(0u8, 262_160), (1, 262_160), (2, 10_000)] {
        let (code, body) = http(
            addr,
            "GET",
            &format!("/v1/blobs/{}/{index}", id.0),
            None,
            b"",
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(body, chunk(index, len));
    }
    let (code, body) = http(addr, "PUT", &path1, Some(&token.0), b"again").await;
    assert_eq!((code, refusal_code(&body).as_str()), (409, "blob_complete"));

    // Nothing is left in the temporary directory.
    let tmp = server.dir.path().join("blobs").join(".tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_are_counted() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut alice = Client::login(&server.url(), &key(1), None).await;
    let (id, token) = created(&mut alice, 300_000, 2).await;
    let put = |index: &str| format!("/v1/blobs/{}/{index}", id.0);

    // (path, token, body, HTTP status, code)
    type Case<'a> = (String, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (put("0"), None, vec![1], 401, "unauthorized"),
        (
            put("0"),
            Some("not-the-token"),
            vec![1],
            401,
            "unauthorized",
        ),
        (put("2"), Some(&token.0), vec![1], 400, "bad_index"),
        (put("01"), Some(&token.0), vec![1], 400, "bad_index"),
        (put("-1"), Some(&token.0), vec![1], 400, "bad_index"),
        (
            put("0"),
            Some(&token.0),
            vec![0; 262_209],
            413,
            "chunk_too_large",
        ),
        (
            "/v1/blobs/..%2F..%2Fetc/0".into(),
            Some(&token.0),
            vec![1],
            400,
            "bad_blob_id",
        ),
        (
            "/v1/blobs/AAAAAAAAAAAAAAAAAAAAAA/0".into(),
            Some(&token.0),
            vec![1],
            404,
            "blob_not_found",
        ),
    ];
    for (path, auth, body, want_status, want_code) in &cases {
        let (code, reply) = http(addr, "PUT", path, *auth, body).await;
        assert_eq!(code, *want_status, "PUT {path}");
        assert_eq!(refusal_code(&reply), *want_code, "PUT {path}");
    }
    let (code, reply) = http(addr, "GET", "/v1/blobs/short", None, b"").await;
    assert_eq!((code, refusal_code(&reply).as_str()), (400, "bad_blob_id"));
    let (code, reply) = http(addr, "GET", &put("7"), None, b"").await;
    assert_eq!((code, refusal_code(&reply).as_str()), (400, "bad_index"));

    // Nothing was stored by any of them.
    let st = status(addr, &id).await;
    assert_eq!(st.received, 0);

    let (_, metrics) = http_get(addr, "/metrics").await;
    for (op, outcome, n) in [
        ("put", "unauthorized", 2),
        ("put", "bad_index", 3),
        ("put", "chunk_too_large", 1),
        ("put", "bad_blob_id", 1),
        ("put", "blob_not_found", 1),
        ("get", "bad_index", 1),
        ("status", "bad_blob_id", 1),
        ("create", "ok", 1),
    ] {
        let line =
            format!("sotto_signaling_blob_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn blob_create_enforces_the_size_cap_the_chunk_count_and_the_open_blob_cap() {
    let server = TestServer::start_with(|c| {
        c.max_blob_bytes = 1_000_000;
        c.max_open_blobs_per_identity = 2;
    })
    .await;
    let mut alice = Client::login(&server.url(), &key(1), None).await;
    let mut bob = Client::login(&server.url(), &key(2), None).await;

    match create(&mut alice, 1_000_001, 4).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::BlobTooLarge),
        other => panic!("{other:?}"),
    }
    for (size, chunks) in [(1000, 0), (1000, 2), (300_000, 3)] {
        match create(&mut alice, size, chunks).await {
            ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::InvalidMessage),
            other => panic!("{other:?}"),
        }
    }
    created(&mut alice, 1_000_000, 4).await;
    created(&mut alice, 10, 1).await;
    match create(&mut alice, 10, 1).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::TooManyOpenBlobs),
        other => panic!("{other:?}"),
    }
    // The cap is per identity.
    created(&mut bob, 10, 1).await;
    alice.assert_served().await;
}

#[tokio::test]
async fn a_blob_and_its_chunks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    let config = sotto_signaling::server::Config::new(listen, dir.path());
    let server = sotto_signaling::server::start(config.clone())
        .await
        .unwrap();
    let url = server.ws_url();
    let mut alice = Client::login(&url, &key(1), None).await;
    let (id, token) = created(&mut alice, 400_000, 2).await;
    let path0 = format!("/v1/blobs/{}/0", id.0);
    let (code, _) = http(
        server.local_addr(),
        "PUT",
        &path0,
        Some(&token.0),
        &[5; 1000],
    )
    .await;
    assert_eq!(code, 204);
    alice.close().await;
    server.shutdown().await.unwrap();

    let server = sotto_signaling::server::start(config).await.unwrap();
    let addr = server.local_addr();
    let st = status(addr, &id).await;
    assert_eq!((st.received, st.prefix, st.complete), (1, 1, false));
    let path1 = format!("/v1/blobs/{}/1", id.0);
    let (code, _) = http(addr, "PUT", &path1, Some(&token.0), &[6; 1000]).await;
    assert_eq!(code, 204);
    assert!(status(addr, &id).await.complete);
    let (code, body) = http(addr, "GET", &path0, None, b"").await;
    assert_eq!((code, body), (200, vec![5; 1000]));
    server.shutdown().await.unwrap();
}
