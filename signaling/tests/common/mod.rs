//! Shared by the signaling integration tests: an in-process server on an ephemeral
//! loopback port, and a raw WebSocket test client that speaks protocol v1 frame by frame
//! (so tests can also send what a well-behaved client never would).
//!
//! Every read has a timeout ([`TIMEOUT`]) so a broken server fails the test instead of
//! hanging it. Timeouts are failure guards only; no test asserts how fast anything is.

#![allow(dead_code)] // Each test crate uses a different subset of these helpers.

use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use futures_util::{SinkExt as _, StreamExt as _};
use sotto_signaling::protocol::{
    Auth, ClientFrame, ClientMessage, ErrorCode, IdentityKey, Limits, PROTOCOL_VERSION,
    ServerFrame, ServerMessage, auth_payload,
};
use sotto_signaling::server::{Config, RunningServer, start};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in this process, with its data directory.
pub struct TestServer {
    /// The running server.
    pub server: RunningServer,
    /// Its SQLite data directory (deleted on drop).
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with the default limits on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose default config is first adjusted by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let listen = "127.0.0.1:0".parse().expect("a socket address");
        let mut config = Config::new(listen, dir.path());
        tune(&mut config);
        let server = start(config).await.expect("starting the server");
        TestServer { server, dir }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        self.server.ws_url()
    }

    /// The bound address (for plain HTTP requests).
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// A fixed signing key per seed, so every run uses the same identities.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The identity (public key) of a signing key.
pub fn identity_of(key: &SigningKey) -> IdentityKey {
    IdentityKey(key.verifying_key().to_bytes())
}

/// What the server did next on a connection.
#[derive(Debug)]
pub enum Event {
    /// A text frame, parsed.
    Frame(ServerFrame),
    /// A close frame: code and reason (`None` when the frame had no payload).
    Close(Option<(u16, String)>),
    /// The stream ended, or failed, without a close frame.
    Ended(Option<String>),
}

/// A raw protocol-v1 client over a real WebSocket.
pub struct Client {
    /// The socket, for tests that need to write frames the helpers do not cover.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `hello.server_id`.
    pub server_id: String,
    /// `hello.challenge`.
    pub challenge: Vec<u8>,
    /// `hello.limits`.
    pub limits: Limits,
    /// `welcome.mailbox_depth`, once authenticated.
    pub mailbox_depth: Option<u64>,
    next_id: u64,
}

impl Client {
    /// Connect and read `hello`; not authenticated yet.
    pub async fn connect(url: &str) -> Client {
        let (ws, _response) = tokio::time::timeout(TIMEOUT, connect_async(url))
            .await
            .expect("timed out connecting")
            .expect("the WebSocket upgrade failed");
        let mut client = Client {
            ws,
            server_id: String::new(),
            challenge: Vec::new(),
            limits: Limits {
                max_message_bytes: 0,
                rate_per_sec: 0,
                rate_burst: 0,
                idle_timeout_ms: 0,
                max_room_participants: 0,
            },
            mailbox_depth: None,
            next_id: 1,
        };
        let hello = client.recv().await;
        assert_eq!(hello.id, None, "hello answers no request");
        let ServerMessage::Hello {
            versions,
            server_id,
            challenge,
            limits,
        } = hello.message
        else {
            panic!("expected hello first, got {hello:?}");
        };
        assert!(
            versions.contains(&PROTOCOL_VERSION),
            "versions {versions:?}"
        );
        assert_eq!(challenge.len(), sotto_signaling::protocol::CHALLENGE_LEN);
        client.server_id = server_id;
        client.challenge = challenge.0;
        client.limits = limits;
        client
    }

    /// Connect and authenticate as `key`; panics unless `welcome` comes back.
    pub async fn login(url: &str, key: &SigningKey, display_name: Option<&str>) -> Client {
        let mut client = Client::connect(url).await;
        client.authenticate(key, display_name).await;
        client
    }

    /// A correctly signed `auth` for this connection's challenge.
    pub fn auth(&self, key: &SigningKey, display_name: Option<&str>) -> Auth {
        let payload = auth_payload(&self.server_id, &self.challenge);
        Auth {
            version: PROTOCOL_VERSION,
            identity: identity_of(key),
            challenge: self.challenge.clone().into(),
            signature: key.sign(&payload).to_bytes().to_vec().into(),
            display_name: display_name.map(str::to_owned),
        }
    }

    /// Send a valid `auth` and expect `welcome` for this identity. Returns the mailbox
    /// depth announced in it.
    pub async fn authenticate(&mut self, key: &SigningKey, display_name: Option<&str>) -> u64 {
        let auth = self.auth(key, display_name);
        let reply = self.request(ClientMessage::Auth(auth)).await;
        let ServerMessage::Welcome {
            version,
            identity,
            mailbox_depth,
        } = reply.message
        else {
            panic!("expected welcome, got {reply:?}");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        assert_eq!(identity, identity_of(key));
        self.mailbox_depth = Some(mailbox_depth);
        mailbox_depth
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Send one frame.
    pub async fn send(&mut self, id: Option<u64>, message: ClientMessage) {
        let text = serde_json::to_string(&ClientFrame { id, message }).expect("encoding a frame");
        self.send_text(&text).await;
    }

    /// Send raw text as one text frame.
    pub async fn send_text(&mut self, text: &str) {
        tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(text)))
            .await
            .expect("timed out sending")
            .expect("sending a frame");
    }

    /// Send `message` with a fresh id and return the next frame, which must echo the id.
    pub async fn request(&mut self, message: ClientMessage) -> ServerFrame {
        let id = self.next_id();
        self.send(Some(id), message).await;
        let reply = self.recv().await;
        assert_eq!(reply.id, Some(id), "the reply must echo the request id");
        reply
    }

    /// The next thing the server does, skipping pings and pongs.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for the server");
            let message = match next {
                None => return Event::Ended(None),
                Some(Err(e)) => return Event::Ended(Some(e.to_string())),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    let frame = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent an unparseable frame {e}: {text}"));
                    return Event::Frame(frame);
                }
                Message::Close(frame) => {
                    return Event::Close(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    );
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("the server sent a non-text frame: {other:?}"),
            }
        }
    }

    /// The next text frame; panics on a close or the end of the stream.
    pub async fn recv(&mut self) -> ServerFrame {
        match self.next_event().await {
            Event::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame must be an `error` with `code`. Returns the echoed id.
    pub async fn expect_error(&mut self, code: ErrorCode) -> Option<u64> {
        let frame = self.recv().await;
        match frame.message {
            ServerMessage::Error { code: got, message } => {
                assert_eq!(got, code, "error message: {message}");
                assert!(!message.is_empty(), "an error carries a sentence");
                frame.id
            }
            _ => panic!("expected error {code}, got {frame:?}"),
        }
    }

    /// The next event must be a close frame. Returns its code and reason, after
    /// finishing the closing handshake: nothing but the end of the stream may follow.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let close = match self.next_event().await {
            Event::Close(Some(close)) => close,
            other => panic!("expected a close frame, got {other:?}"),
        };
        self.expect_end().await;
        close
    }

    /// Read until the server drops the connection; no frame may arrive meanwhile.
    /// (Reading also flushes our automatic reply to the server's close frame.)
    pub async fn expect_end(&mut self) {
        match self.next_event().await {
            Event::Ended(_) => {}
            other => panic!("expected the end of the connection, got {other:?}"),
        }
    }

    /// The documented way the server ends a connection: an `error` with `code`, then a
    /// close frame with the code's close code and the code as the reason.
    pub async fn expect_closed_with(&mut self, code: ErrorCode) {
        self.expect_error(code).await;
        let (close_code, reason) = self.expect_close().await;
        assert_eq!(close_code, code.close_code(), "close code for {code}");
        assert_eq!(reason, code.as_str(), "close reason");
    }

    /// Nothing arrives for `quiet`. This is a check that nothing more is coming (an
    /// "exactly once" check), not a speed assertion: the wait only has to be long
    /// enough for a wrongly sent frame to show up.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(next) = tokio::time::timeout(quiet, self.ws.next()).await {
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected nothing more, got {other:?}"),
            }
        }
    }

    /// Prove the server still serves this (authenticated) connection: a room
    /// create/leave round trip.
    pub async fn assert_served(&mut self) {
        let reply = self
            .request(ClientMessage::RoomCreate {
                max_participants: None,
                sfu: false,
            })
            .await;
        let ServerMessage::RoomCreated { room_id, .. } = reply.message else {
            panic!("expected room_created, got {reply:?}");
        };
        let reply = self
            .request(ClientMessage::RoomLeave {
                room_id: room_id.clone(),
            })
            .await;
        assert_eq!(reply.message, ServerMessage::RoomLeft { room_id });
    }

    /// Close politely and wait until the server has dropped the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for the server to close")
            {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A plain HTTP/1.1 GET. Returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connecting");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("writing the request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("reading the response");
        response
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("timed out on an HTTP request");
    let text = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    (status, body.to_owned())
}

/// The value of an unlabelled metric in Prometheus/OpenMetrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
