//! The bench's side of the connections: a plain tokio-tungstenite client that performs
//! the hello/auth handshake and nothing else (for the relay pair and for light idle
//! connections), and a [`Fleet`] of idle authenticated connections opened with bounded
//! concurrency, either as `sotto_engine::SignalingClient`s or as plain sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use sotto_engine::{ClientConfig, Event, Identity, SignalingClient};
use sotto_signaling::protocol::{
    ClientFrame, ClientMessage, PROTOCOL_VERSION, ServerFrame, ServerMessage,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::stats::Summary;

/// A plain client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which client holds the idle connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// `sotto_engine::SignalingClient`: the product's client, one driver task per
    /// connection with its channels, keepalive watchdog and reconnect logic.
    Engine,
    /// A bare tokio-tungstenite socket per connection, one small task that answers pings.
    Raw,
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientKind::Engine => "engine (SignalingClient)",
            ClientKind::Raw => "raw tokio-tungstenite",
        })
    }
}

/// Connect and authenticate with a bare socket; returns it right after `welcome`.
/// `read_buffer` is tungstenite's per-connection read buffer.
pub async fn raw_connect(url: &str, identity: &Identity, read_buffer: usize) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let (server_id, challenge) = match next_frame(&mut ws).await?.message {
        ServerMessage::Hello {
            server_id,
            challenge,
            versions,
            ..
        } => {
            if !versions.contains(&PROTOCOL_VERSION) {
                bail!("the server speaks versions {versions:?}, not {PROTOCOL_VERSION}");
            }
            (server_id, challenge)
        }
        other => bail!("expected hello, got {}", kind(&other)),
    };
    let auth = ClientFrame {
        id: Some(0),
        message: ClientMessage::Auth(identity.signaling_auth(&server_id, challenge)),
    };
    let text = serde_json::to_string(&auth).context("encoding auth")?;
    ws.send(Message::Text(text.into()))
        .await
        .context("sending auth")?;
    match next_frame(&mut ws).await?.message {
        ServerMessage::Welcome { .. } => Ok(ws),
        ServerMessage::Error { code, message } => bail!("auth refused: {code}: {message}"),
        other => bail!("expected welcome, got {}", kind(&other)),
    }
}

/// The next text frame, parsed.
async fn next_frame(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).context("unreadable server frame");
            }
            Some(Ok(Message::Close(frame))) => {
                bail!(
                    "the server closed the connection: {}",
                    frame.map_or_else(String::new, |f| f.reason.to_string())
                )
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading from the server"),
            None => bail!("the server closed the connection"),
        }
    }
}

/// A short name of a server message for error texts (never its contents).
pub fn kind(message: &ServerMessage) -> String {
    serde_json::to_value(message)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "an unknown message".to_owned())
}

/// How opening a batch of connections went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenReport {
    /// Connections authenticated.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Wall time to open them all.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Connect + authenticate time per connection.
    pub handshake: Option<Summary>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Idle authenticated connections held open.
pub struct Fleet {
    kind: ClientKind,
    url: String,
    engine: Vec<SignalingClient>,
    raw: Vec<JoinHandle<()>>,
    raw_ended: Arc<AtomicUsize>,
    handshakes: Vec<Duration>,
}

enum Opened {
    Engine(SignalingClient),
    /// The task that holds the socket.
    Raw(JoinHandle<()>),
}

impl Fleet {
    /// An empty fleet for the server at `url`.
    pub fn new(kind: ClientKind, url: String) -> Fleet {
        Fleet {
            kind,
            url,
            engine: Vec::new(),
            raw: Vec::new(),
            raw_ended: Arc::new(AtomicUsize::new(0)),
            handshakes: Vec::new(),
        }
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.engine.len() + self.raw.len()
    }

    /// Open `n` more, at most `concurrency` handshakes at a time.
    pub async fn open(&mut self, n: usize, concurrency: usize) -> OpenReport {
        let started = Instant::now();
        let kind = self.kind;
        let url = self.url.as_str();
        let ended = &self.raw_ended;
        let mut attempts = futures_util::stream::iter(0..n)
            .map(|_| async move {
                let t0 = Instant::now();
                let opened = open_one(kind, url, ended).await;
                (opened, t0.elapsed())
            })
            .buffer_unordered(concurrency.max(1));
        let mut handshakes = Vec::with_capacity(n);
        let (mut failed, mut first_error) = (0, None);
        while let Some((opened, took)) = attempts.next().await {
            match opened {
                Ok(Opened::Engine(client)) => self.engine.push(client),
                Ok(Opened::Raw(task)) => self.raw.push(task),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                    continue;
                }
            }
            handshakes.push(took);
        }
        let report = OpenReport {
            opened: handshakes.len(),
            failed,
            first_error,
            elapsed: started.elapsed(),
            handshake: Summary::of_durations(&handshakes),
        };
        self.handshakes.extend(handshakes);
        report
    }

    /// Connect + authenticate times of every connection opened so far.
    pub fn handshakes(&self) -> Option<Summary> {
        Summary::of_durations(&self.handshakes)
    }

    /// Connections that dropped since they were opened. Engine clients reconnect on
    /// their own, so their drops are read from (and drain) their event queues: call this
    /// once, at the end.
    pub async fn dropped(&mut self) -> usize {
        let mut dropped = self.raw_ended.load(Ordering::Relaxed);
        for client in &mut self.engine {
            // A zero timeout still polls once, so queued events are drained.
            while let Some(event) = client.next_event_within(Duration::ZERO).await {
                if matches!(event, Event::Disconnected { .. } | Event::Closed { .. }) {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Close every connection.
    pub async fn close(self) {
        for handle in &self.raw {
            handle.abort();
        }
        for client in self.engine {
            client.close().await;
        }
    }
}

async fn open_one(kind: ClientKind, url: &str, ended: &Arc<AtomicUsize>) -> anyhow::Result<Opened> {
    let identity = Identity::generate(None).context("generating an identity")?;
    match kind {
        ClientKind::Engine => {
            let client = SignalingClient::connect(ClientConfig::new(url), Arc::new(identity))
                .await
                .context("SignalingClient::connect")?;
            Ok(Opened::Engine(client))
        }
        ClientKind::Raw => {
            let ws = raw_connect(url, &identity, 4096).await?;
            Ok(Opened::Raw(tokio::spawn(hold(ws, ended.clone()))))
        }
    }
}

/// Keep a bare connection alive: read (tungstenite queues a pong for each ping) and flush.
async fn hold(mut ws: Ws, ended: Arc<AtomicUsize>) {
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_))) => {
                if ws.flush().await.is_err() {
                    break;
                }
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    ended.fetch_add(1, Ordering::Relaxed);
}
