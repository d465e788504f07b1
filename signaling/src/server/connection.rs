//! One WebSocket connection: the hello/auth handshake, flood control, timeouts, pushes
//! from other connections, and the mailbox pump. Requests after authentication are
//! handled in [`super::dispatch`]. This task is the only writer to its socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use super::Shared;
use super::hub::SessionHandle;
use super::limiter::{FloodGuard, Verdict};
use crate::protocol::{
    Auth, CHALLENGE_LEN, ErrorCode, IdentityKey, PROTOCOL_VERSION, ServerFrame, ServerMessage,
    auth_payload, parse_client_frame, validate_display_name,
};

/// Envelopes delivered but not yet acknowledged, per connection.
const MAILBOX_WINDOW: usize = 128;
/// Frames other connections may queue for this one before it counts as too slow.
const PUSH_QUEUE: usize = 256;
/// After the server sends a close frame, how long it waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Whether the connection goes on after handling something.
pub(crate) enum Flow {
    Continue,
    /// Send this error, then close with its close code.
    Close(ErrorCode, String),
    /// The peer is gone; just stop.
    Gone,
}

pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub conn_id: u64,
    pub challenge: [u8; CHALLENGE_LEN],
    pub identity: Option<IdentityKey>,
    pub display_name: Option<String>,
    pub guard: FloodGuard,
    push_tx: mpsc::Sender<Utf8Bytes>,
    mailbox: Arc<Notify>,
    replaced: Arc<Notify>,
    /// Highest envelope id sent on this connection.
    pub sent_up_to: u64,
    /// Ids sent and not yet acknowledged, in order.
    pub inflight: VecDeque<u64>,
}

/// Serve one upgraded WebSocket until it closes.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut socket: WebSocket,
    permit: OwnedSemaphorePermit,
) {
    shared.metrics.connections.inc();
    shared.metrics.connections_accepted.inc();
    let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
    let now = Instant::now();
    let config = &shared.config;
    let mut conn = Conn {
        conn_id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
        challenge: rand::random(),
        identity: None,
        display_name: None,
        guard: FloodGuard::new(
            config.rate_per_sec,
            config.rate_burst,
            config.max_strikes,
            now,
        ),
        push_tx,
        mailbox: Arc::new(Notify::new()),
        replaced: Arc::new(Notify::new()),
        sent_up_to: 0,
        inflight: VecDeque::new(),
        shared: shared.clone(),
    };
    let closed_by_us = conn.run(&mut socket, push_rx).await;
    conn.cleanup();
    if closed_by_us {
        finish_closing_handshake(&mut socket).await;
    }
    shared.metrics.connections.dec();
    drop(permit);
}

impl Conn {
    /// Returns true when the server ended the connection (and sent a close frame).
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        mut push_rx: mpsc::Receiver<Utf8Bytes>,
    ) -> bool {
        let hello = ServerMessage::Hello {
            versions: vec![PROTOCOL_VERSION],
            server_id: self.shared.store.server_id().to_owned(),
            challenge: self.challenge.to_vec().into(),
            limits: self.shared.config.limits(),
        };
        if !matches!(self.send(socket, None, hello).await, Flow::Continue) {
            return false;
        }
        let config = self.shared.config.clone();
        let started = tokio::time::Instant::now();
        let mut last_heard = started;
        let mut ping =
            tokio::time::interval_at(started + config.ping_interval, config.ping_interval);
        let mut shutdown = self.shared.shutdown.clone();
        let replaced = self.replaced.clone();
        let mailbox = self.mailbox.clone();
        loop {
            let idle = last_heard + config.idle_timeout;
            let auth = started + config.auth_timeout;
            let (deadline, timeout) = if self.identity.is_none() && auth <= idle {
                (
                    auth,
                    (
                        ErrorCode::AuthTimeout,
                        "the client did not authenticate in time",
                    ),
                )
            } else {
                (
                    idle,
                    (
                        ErrorCode::IdleTimeout,
                        "nothing heard from the client within the idle timeout",
                    ),
                )
            };
            let flow = tokio::select! {
                _ = super::stopped(&mut shutdown) => {
                    Flow::Close(ErrorCode::ShuttingDown, "the server is shutting down".into())
                }
                _ = replaced.notified() => Flow::Close(
                    ErrorCode::SessionReplaced,
                    "this identity connected again; this connection is replaced".into(),
                ),
                incoming = socket.recv() => {
                    last_heard = tokio::time::Instant::now();
                    self.on_incoming(socket, incoming).await
                }
                Some(frame) = push_rx.recv() => send_or_give_up(socket, Message::Text(frame), self.shared.config.send_timeout).await,
                _ = mailbox.notified(), if self.identity.is_some() => self.pump_mailbox(socket).await,
                _ = ping.tick() => send_or_give_up(socket, Message::Ping(Default::default()), self.shared.config.send_timeout).await,
                _ = tokio::time::sleep_until(deadline) => Flow::Close(timeout.0, timeout.1.into()),
            };
            match flow {
                Flow::Continue => {}
                Flow::Gone => return false,
                Flow::Close(code, message) => {
                    self.close(socket, code, message).await;
                    return true;
                }
            }
        }
    }

    async fn on_incoming(
        &mut self,
        socket: &mut WebSocket,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Flow {
        match incoming {
            None | Some(Ok(Message::Close(_))) => Flow::Gone,
            Some(Err(e)) => {
                if is_capacity_error(e) {
                    self.shared.metrics.message("invalid");
                    Flow::Close(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "a message exceeded the limit of {} bytes",
                            self.shared.config.max_message_bytes
                        ),
                    )
                } else {
                    Flow::Gone
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
            Some(Ok(Message::Binary(_))) => {
                self.shared.metrics.message("invalid");
                self.reject(
                    socket,
                    None,
                    ErrorCode::InvalidMessage,
                    "protocol v1 uses text frames only",
                )
                .await
            }
            Some(Ok(Message::Text(text))) => self.on_text(socket, text.as_str()).await,
        }
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
        match self.guard.on_message(Instant::now()) {
            Verdict::Accept => {}
            Verdict::Drop => {
                self.shared.metrics.message("rate_limited");
                self.shared.metrics.error(ErrorCode::RateLimited);
                let reply = ServerMessage::error(
                    ErrorCode::RateLimited,
                    "too many messages; this one was dropped",
                );
                return self.send(socket, None, reply).await;
            }
            Verdict::Disconnect => return abusive(),
        }
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(rejection) => {
                self.shared.metrics.message("invalid");
                return self
                    .reject(socket, rejection.id, rejection.code, rejection.message)
                    .await;
            }
        };
        self.shared.metrics.message(frame.message.type_name());
        match (self.identity, frame.message) {
            (None, crate::protocol::ClientMessage::Auth(auth)) => {
                self.authenticate(socket, frame.id, auth).await
            }
            (None, _) => {
                self.reject(
                    socket,
                    frame.id,
                    ErrorCode::NotAuthenticated,
                    "authenticate first: answer `hello` with `auth`",
                )
                .await
            }
            (Some(_), crate::protocol::ClientMessage::Auth(_)) => {
                self.reject(
                    socket,
                    frame.id,
                    ErrorCode::AlreadyAuthenticated,
                    "this connection is already authenticated",
                )
                .await
            }
            (Some(me), message) => self.dispatch(socket, me, frame.id, message).await,
        }
    }

    async fn authenticate(&mut self, socket: &mut WebSocket, id: Option<u64>, auth: Auth) -> Flow {
        if auth.version != PROTOCOL_VERSION {
            return Flow::Close(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol version {PROTOCOL_VERSION}; the client asked for {}",
                    auth.version
                ),
            );
        }
        if auth.challenge.as_bytes() != self.challenge {
            return Flow::Close(
                ErrorCode::ChallengeMismatch,
                "the signed challenge is not this connection's; sign the one from this connection's hello".into(),
            );
        }
        let payload = auth_payload(self.shared.store.server_id(), &self.challenge);
        let verified = VerifyingKey::from_bytes(auth.identity.as_bytes())
            .ok()
            .zip(Signature::from_slice(auth.signature.as_bytes()).ok())
            .is_some_and(|(key, sig)| key.verify_strict(&payload, &sig).is_ok());
        if !verified {
            return Flow::Close(
                ErrorCode::BadSignature,
                "the signature does not verify for that identity".into(),
            );
        }
        if let Some(name) = &auth.display_name
            && let Err(why) = validate_display_name(name)
        {
            return self
                .reject(socket, id, ErrorCode::InvalidMessage, why)
                .await;
        }
        self.identity = Some(auth.identity);
        self.display_name = auth.display_name;
        self.shared.metrics.authenticated.inc();
        if let Ok(mut hub) = self.shared.hub.lock() {
            hub.register(
                auth.identity,
                SessionHandle {
                    conn_id: self.conn_id,
                    tx: self.push_tx.clone(),
                    mailbox: self.mailbox.clone(),
                    replaced: self.replaced.clone(),
                },
            );
        }
        let me = auth.identity;
        let depth = match self.db(move |s| s.mailbox_depth(&me)).await {
            Ok(depth) => depth,
            Err(flow) => return flow,
        };
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            identity: auth.identity,
            mailbox_depth: depth,
        };
        match self.send(socket, id, welcome).await {
            Flow::Continue => self.pump_mailbox(socket).await,
            other => other,
        }
    }

    /// Send envelopes the client has not seen, up to the unacknowledged window.
    pub(crate) async fn pump_mailbox(&mut self, socket: &mut WebSocket) -> Flow {
        let Some(me) = self.identity else {
            return Flow::Continue;
        };
        let room = MAILBOX_WINDOW.saturating_sub(self.inflight.len());
        if room == 0 {
            return Flow::Continue;
        }
        let after = self.sent_up_to;
        let batch = match self.db(move |s| s.mailbox_after(&me, after, room)).await {
            Ok(batch) => batch,
            Err(flow) => return flow,
        };
        for stored in batch {
            self.sent_up_to = stored.message_id;
            self.inflight.push_back(stored.message_id);
            let envelope = ServerMessage::Envelope {
                message_id: stored.message_id,
                envelope: stored.envelope.into(),
            };
            if !matches!(self.send(socket, None, envelope).await, Flow::Continue) {
                return Flow::Gone;
            }
        }
        Flow::Continue
    }

    /// Run a store operation off the async threads. A failure becomes an `internal` close.
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&super::Store) -> Result<T, super::StoreError> + Send + 'static,
    ) -> Result<T, Flow> {
        let store = self.shared.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store operation failed");
                Err(Flow::Close(
                    ErrorCode::Internal,
                    "the server's store failed".into(),
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "store task failed");
                Err(Flow::Close(
                    ErrorCode::Internal,
                    "the server's store failed".into(),
                ))
            }
        }
    }

    /// Serialize and send one frame.
    pub(crate) async fn send(
        &self,
        socket: &mut WebSocket,
        id: Option<u64>,
        message: ServerMessage,
    ) -> Flow {
        if let ServerMessage::Error { code, .. } = &message {
            self.shared.metrics.error(*code);
        }
        let text = encode(id, message);
        send_or_give_up(socket, Message::Text(text), self.shared.config.send_timeout).await
    }

    /// Answer a bad message with an error and count a strike against the client.
    pub(crate) async fn reject(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Flow {
        if self.guard.strike(Instant::now()) == Verdict::Disconnect {
            return abusive();
        }
        self.send(socket, id, ServerMessage::error(code, message))
            .await
    }

    async fn close(&self, socket: &mut WebSocket, code: ErrorCode, message: String) {
        let _ = self
            .send(socket, None, ServerMessage::error(code, message))
            .await;
        let frame = CloseFrame {
            code: code.close_code(),
            reason: code.as_str().into(),
        };
        let _ = send_or_give_up(
            socket,
            Message::Close(Some(frame)),
            self.shared.config.send_timeout,
        )
        .await;
    }

    fn cleanup(&self) {
        let Some(me) = self.identity else {
            return;
        };
        self.shared.metrics.authenticated.dec();
        let still_current = match self.shared.hub.lock() {
            Ok(mut hub) => hub.unregister(&me, self.conn_id),
            Err(_) => true,
        };
        // Room membership belongs to the identity: when a newer connection of the same
        // identity has taken over, it keeps the rooms (and nobody sees a `left`).
        let left = match self.shared.rooms.lock() {
            Ok(mut rooms) if still_current => {
                rooms.unregister_sfu(&me);
                let left = rooms.leave_all(&me);
                self.shared.metrics.rooms.set(rooms.len() as i64);
                left
            }
            _ => Vec::new(),
        };
        for (room_id, participant, notify) in left {
            self.broadcast_presence(
                room_id,
                participant,
                crate::protocol::PresenceState::Left,
                &notify,
            );
        }
    }
}

/// Serialize a frame into WebSocket text.
pub(crate) fn encode(id: Option<u64>, message: ServerMessage) -> Utf8Bytes {
    let frame = ServerFrame { id, message };
    // Serializing these plain structs cannot fail; fall back to an internal error frame.
    serde_json::to_string(&frame)
        .unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_owned()
        })
        .into()
}

/// Send one frame; a client that does not read for `send_timeout` (its TCP window stays
/// full) is dropped, so it cannot stall its task, the idle timeout or shutdown.
async fn send_or_give_up(socket: &mut WebSocket, message: Message, limit: Duration) -> Flow {
    match tokio::time::timeout(limit, socket.send(message)).await {
        Ok(Ok(())) => Flow::Continue,
        Ok(Err(_)) | Err(_) => Flow::Gone,
    }
}

/// After our close frame: read and discard until the client's close frame or the end of
/// the stream, for at most [`CLOSE_LINGER`]. Dropping a socket with unread input makes the
/// kernel reset the connection and discard what is still queued for the client, which
/// would lose the `error` and close frame just sent (a flooding client always has unread
/// input).
async fn finish_closing_handshake(socket: &mut WebSocket) {
    let drain = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

fn abusive() -> Flow {
    Flow::Close(
        ErrorCode::Abusive,
        "too many rejected messages; the connection is closed".into(),
    )
}

/// True when the error is tungstenite's message/frame size limit.
fn is_capacity_error(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
