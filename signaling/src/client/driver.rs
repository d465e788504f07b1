//! The task that owns the signaling WebSocket: authentication, request/reply matching,
//! pushed events, and reconnection with backoff. The only place that touches the socket.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::protocol::{
    ClientFrame, ClientMessage, ErrorCode, InviteToken, PROTOCOL_VERSION, RoomId, ServerFrame,
    ServerMessage, close, sfu_proof,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Authenticator;
use super::{Backoff, CallSignal, ClientConfig, ClientError, Event};

/// How long closing the old socket may take before reconnecting anyway.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type Reply = oneshot::Sender<Result<ServerMessage, ClientError>>;

/// What the handle asks of the driver.
pub(crate) enum Command {
    Request {
        message: ClientMessage,
        reply: Reply,
    },
    /// Drop the connection and open a new one now.
    Reconnect,
    Close,
}

/// What a successful authentication tells.
pub(crate) struct Session {
    pub ws: Ws,
    pub server_id: String,
    pub mailbox_depth: u64,
    /// How long the server stays silent at most (its idle timeout: it pings well within).
    pub server_idle: std::time::Duration,
    /// Frames that arrived while the session was being set up (SFU registration), to be
    /// handled first.
    pub early: Vec<String>,
}

enum Pending {
    /// A caller waits for this reply.
    Caller(Reply),
    /// The caller waits, and a successful join is remembered for rejoining.
    Join(Reply, RoomId, InviteToken),
    /// An automatic rejoin after a reconnect.
    Rejoin(RoomId),
}

enum End {
    /// The handle was dropped or closed.
    ClientClosed,
    /// The server ended the session for good.
    Fatal(ErrorCode, String),
    /// The connection dropped; reconnect.
    Lost(String),
}

pub(crate) struct Driver {
    config: ClientConfig,
    identity: Arc<dyn Authenticator>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    rooms: BTreeMap<RoomId, InviteToken>,
    delivered_up_to: u64,
    last_error: Option<(ErrorCode, String)>,
}

/// Open the WebSocket and authenticate.
pub(crate) async fn open(
    config: &ClientConfig,
    identity: &dyn Authenticator,
) -> Result<Session, ClientError> {
    match tokio::time::timeout(config.connect_timeout, open_inner(config, identity)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Connect {
            url: config.url.clone(),
            reason: "timed out connecting and authenticating".into(),
        }),
    }
}

async fn open_inner(
    config: &ClientConfig,
    identity: &dyn Authenticator,
) -> Result<Session, ClientError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
        // Signaling frames are small; tungstenite's 128 KiB default read buffer would
        // dominate the memory of a process holding many clients (the load bench).
        .read_buffer_size(16 * 1024);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(&config.url, Some(ws_config), true)
            .await
            .map_err(|e| ClientError::Connect {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
    let (server_id, challenge, idle_ms) = match next_frame(&mut ws).await?.message {
        ServerMessage::Hello {
            versions,
            server_id,
            challenge,
            limits,
        } => {
            if !versions.contains(&PROTOCOL_VERSION) {
                return Err(ClientError::UnsupportedVersion(versions));
            }
            (server_id, challenge, limits.idle_timeout_ms)
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "expected hello, got {other:?}"
            )));
        }
    };
    if let Some(expected) = &config.expected_server_id
        && *expected != server_id
    {
        return Err(ClientError::ServerIdMismatch {
            expected: expected.clone(),
            got: server_id,
        });
    }
    let challenge_bytes = challenge.as_bytes().to_vec();
    let auth = ClientFrame {
        id: Some(0),
        message: ClientMessage::Auth(identity.auth(&server_id, challenge)),
    };
    send_frame(&mut ws, &auth).await?;
    let mailbox_depth = match next_frame(&mut ws).await?.message {
        ServerMessage::Welcome { mailbox_depth, .. } => mailbox_depth,
        ServerMessage::Error { code, message } => {
            return Err(ClientError::Server { code, message });
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "expected welcome, got {other:?}"
            )));
        }
    };
    let mut early = Vec::new();
    if let Some(secret) = &config.sfu_secret {
        register_sfu(&mut ws, secret, &server_id, &challenge_bytes, &mut early).await?;
    }
    Ok(Session {
        ws,
        server_id,
        mailbox_depth,
        server_idle: std::time::Duration::from_millis(idle_ms.max(1000)),
        early,
    })
}

/// Proves the SFU secret on a fresh connection (on every reconnect too). What the server
/// pushes before the reply (presence of the SFU's rooms, envelopes) is kept in `early`.
async fn register_sfu(
    ws: &mut Ws,
    secret: &[u8],
    server_id: &str,
    challenge: &[u8],
    early: &mut Vec<String>,
) -> Result<(), ClientError> {
    let proof = sfu_proof(secret, server_id, challenge);
    let frame = ClientFrame {
        id: Some(1),
        message: ClientMessage::SfuRegister {
            proof: proof.to_vec().into(),
        },
    };
    send_frame(ws, &frame).await?;
    loop {
        let reply = next_frame(ws).await?;
        if reply.id != Some(1) {
            if let Ok(text) = serde_json::to_string(&reply) {
                early.push(text);
            }
            continue;
        }
        return match reply.message {
            ServerMessage::SfuRegistered {} => Ok(()),
            ServerMessage::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Err(ClientError::Protocol(format!(
                "expected sfu_registered, got {other:?}"
            ))),
        };
    }
}

/// Read until the next text frame that parses as a server frame.
async fn next_frame(ws: &mut Ws) -> Result<ServerFrame, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| ClientError::Protocol(format!("unreadable frame: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map_or_else(|| "closed".to_owned(), |f| f.reason.to_string());
                return Err(ClientError::Connect {
                    url: String::new(),
                    reason: format!("the server closed the connection: {reason}"),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
            None => return Err(ClientError::Disconnected),
        }
    }
}

async fn send_frame(ws: &mut Ws, frame: &ClientFrame) -> Result<(), ClientError> {
    let text = serde_json::to_string(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|_| ClientError::Disconnected)
}

/// Close codes after which reconnecting would be pointless or harmful.
fn is_fatal_close(code: u16) -> bool {
    matches!(
        code,
        close::AUTH_FAILED
            | close::UNSUPPORTED_VERSION
            | close::SESSION_REPLACED
            | close::POLICY_VIOLATION
    )
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        identity: Arc<dyn Authenticator>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Driver {
            config,
            identity,
            commands,
            events,
            pending: HashMap::new(),
            next_id: 1,
            rooms: BTreeMap::new(),
            delivered_up_to: 0,
            last_error: None,
        }
    }

    pub(crate) async fn run(mut self, mut session: Session) {
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        loop {
            let end = self.serve(&mut session).await;
            // Answer (or send) the close frame so the server can let go at once.
            let _ = tokio::time::timeout(CLOSE_WAIT, session.ws.close(None)).await;
            for (_, pending) in self.pending.drain() {
                match pending {
                    Pending::Caller(reply) | Pending::Join(reply, ..) => {
                        let _ = reply.send(Err(ClientError::Disconnected));
                    }
                    Pending::Rejoin(_) => {}
                }
            }
            match end {
                End::ClientClosed => return,
                End::Fatal(code, message) => {
                    let _ = self.events.send(Event::Closed { code, message });
                    return;
                }
                End::Lost(reason) => {
                    tracing::debug!(%reason, "signaling connection lost");
                    let _ = self.events.send(Event::Disconnected { reason });
                }
            }
            match self.reconnect(&mut backoff).await {
                Some(new_session) => session = new_session,
                None => return,
            }
        }
    }

    /// Try until connected again; `None` when the client closed meanwhile or the server
    /// refused for good.
    async fn reconnect(&mut self, backoff: &mut Backoff) -> Option<Session> {
        loop {
            let delay = backoff.next_delay(rand::random::<f64>());
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    command = self.commands.recv() => match command {
                        None | Some(Command::Close) => return None,
                        Some(Command::Request { reply, .. }) => {
                            let _ = reply.send(Err(ClientError::Disconnected));
                        }
                        // Already reconnecting: try now rather than after the backoff.
                        Some(Command::Reconnect) => break,
                    },
                }
            }
            match open(&self.config, self.identity.as_ref()).await {
                Ok(mut session) => {
                    backoff.reset();
                    let _ = self.events.send(Event::Reconnected {
                        mailbox_depth: session.mailbox_depth,
                    });
                    self.rejoin(&mut session).await;
                    return Some(session);
                }
                Err(ClientError::Server { code, message })
                    if matches!(
                        code,
                        ErrorCode::BadSignature
                            | ErrorCode::UnsupportedVersion
                            | ErrorCode::ChallengeMismatch
                    ) =>
                {
                    let _ = self.events.send(Event::Closed { code, message });
                    return None;
                }
                Err(
                    e @ (ClientError::ServerIdMismatch { .. } | ClientError::UnsupportedVersion(_)),
                ) => {
                    let _ = self.events.send(Event::Closed {
                        code: ErrorCode::Unknown,
                        message: e.to_string(),
                    });
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt = backoff.attempts(), "reconnect failed")
                }
            }
        }
    }

    async fn rejoin(&mut self, session: &mut Session) {
        let rooms = std::mem::take(&mut self.rooms);
        for (room_id, invite_token) in rooms {
            let id = self.take_id();
            self.pending.insert(id, Pending::Rejoin(room_id.clone()));
            self.rooms.insert(room_id.clone(), invite_token.clone());
            let frame = ClientFrame {
                id: Some(id),
                message: ClientMessage::RoomJoin {
                    room_id,
                    invite_token,
                },
            };
            if send_frame(&mut session.ws, &frame).await.is_err() {
                return;
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn serve(&mut self, session: &mut Session) -> End {
        for text in std::mem::take(&mut session.early) {
            self.on_text(&text);
        }
        let silence_limit = session.server_idle + session.server_idle / 2;
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return End::ClientClosed,
                    Some(Command::Reconnect) => {
                        return End::Lost("asked to reconnect (the network changed)".into());
                    }
                    Some(Command::Request { message, reply }) => {
                        let id = self.take_id();
                        let pending = match &message {
                            ClientMessage::RoomJoin { room_id, invite_token } => {
                                Pending::Join(reply, room_id.clone(), invite_token.clone())
                            }
                            _ => Pending::Caller(reply),
                        };
                        self.pending.insert(id, pending);
                        let frame = ClientFrame { id: Some(id), message };
                        if send_frame(&mut session.ws, &frame).await.is_err() {
                            return End::Lost("sending failed".into());
                        }
                    }
                },
                incoming = session.ws.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        None => return End::Lost("the server closed the connection".into()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            let (err_code, message) = self
                                .last_error
                                .take()
                                .unwrap_or((ErrorCode::Unknown, reason.clone()));
                            if is_fatal_close(code) {
                                return End::Fatal(err_code, message);
                            }
                            return End::Lost(format!("the server closed the connection ({code} {reason})"));
                        }
                        Some(Ok(Message::Ping(_))) => {
                            // tungstenite queued the pong; push it out now.
                            if session.ws.flush().await.is_err() {
                                return End::Lost("sending a pong failed".into());
                            }
                        }
                        Some(Ok(_)) => {}
                    }
                }
                _ = tokio::time::sleep_until(last_heard + silence_limit) => {
                    return End::Lost("the server went silent".into());
                }
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        let frame: ServerFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                // A newer server may send types this client does not know yet.
                tracing::debug!(error = %e, "ignoring an unreadable server frame");
                return;
            }
        };
        if let Some(id) = frame.id
            && let Some(pending) = self.pending.remove(&id)
        {
            self.resolve(pending, frame.message);
            return;
        }
        let event = match frame.message {
            ServerMessage::Presence {
                room_id,
                participant,
                state,
            } => Event::Presence {
                room_id,
                participant,
                state,
            },
            ServerMessage::Offer(m) => call(m.from, CallSignal::Offer(m.body)),
            ServerMessage::Answer(m) => call(m.from, CallSignal::Answer(m.body)),
            ServerMessage::Candidate(m) => call(m.from, CallSignal::Candidate(m.body)),
            ServerMessage::Hangup(m) => call(m.from, CallSignal::Hangup(m.body)),
            ServerMessage::RestartRequest(m) => call(m.from, CallSignal::RestartRequest(m.body)),
            ServerMessage::Subscription(m) => call(m.from, CallSignal::Subscription(m.body)),
            ServerMessage::Layers(m) => call(m.from, CallSignal::Layers(m.body)),
            ServerMessage::Envelope {
                message_id,
                envelope,
            } => {
                if message_id <= self.delivered_up_to {
                    return;
                }
                self.delivered_up_to = message_id;
                Event::Envelope {
                    message_id,
                    envelope: envelope.0,
                }
            }
            ServerMessage::Error { code, message } => {
                tracing::debug!(%code, %message, "error from the signaling server");
                self.last_error = Some((code, message));
                return;
            }
            other => {
                tracing::debug!(?other, "ignoring an unexpected server frame");
                return;
            }
        };
        let _ = self.events.send(event);
    }

    fn resolve(&mut self, pending: Pending, message: ServerMessage) {
        let result = match message {
            ServerMessage::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Ok(other),
        };
        match pending {
            Pending::Caller(reply) => {
                if let Ok(ServerMessage::RoomCreated {
                    room_id,
                    invite_token,
                    ..
                }) = &result
                {
                    self.rooms.insert(room_id.clone(), invite_token.clone());
                }
                if let Ok(ServerMessage::RoomLeft { room_id }) = &result {
                    self.rooms.remove(room_id);
                }
                let _ = reply.send(result);
            }
            Pending::Join(reply, room_id, token) => {
                if result.is_ok() {
                    self.rooms.insert(room_id, token);
                }
                let _ = reply.send(result);
            }
            Pending::Rejoin(room_id) => {
                let event = match result {
                    Ok(ServerMessage::RoomJoined { participants, .. }) => Event::RoomRejoined {
                        room_id,
                        participants,
                    },
                    Ok(other) => Event::RoomLost {
                        room_id: room_id.clone(),
                        reason: format!("unexpected reply {other:?}"),
                    },
                    Err(e) => {
                        self.rooms.remove(&room_id);
                        Event::RoomLost {
                            room_id,
                            reason: e.to_string(),
                        }
                    }
                };
                let _ = self.events.send(event);
            }
        }
    }
}

fn call(from: crate::protocol::IdentityKey, signal: CallSignal) -> Event {
    Event::Call { from, signal }
}
