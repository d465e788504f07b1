//! Requests of an authenticated connection: rooms, call-setup relay, the key-package
//! directory and the mailbox. Each handler replies on the requesting socket and pushes
//! events to other sessions through the hub; none of them reads a payload.

use axum::extract::ws::WebSocket;

use super::connection::{Conn, Flow, encode};
use super::hub::PushError;
use super::{MailboxFull, TooManyKeyPackages, current_hour};
use crate::protocol::{
    ClientMessage, ErrorCode, IceServer, IdentityKey, Incoming, InviteToken, Participant,
    PresenceState, RoomId, ServerMessage, encode_b64, validate_call_id, verify_sfu_proof,
};

impl Conn {
    /// Handle one request from the authenticated identity `me`.
    pub(crate) async fn dispatch(
        &mut self,
        socket: &mut WebSocket,
        me: IdentityKey,
        id: Option<u64>,
        message: ClientMessage,
    ) -> Flow {
        let reply = match message {
            // Handled before dispatch; kept for exhaustiveness.
            ClientMessage::Auth(_) => Err((
                ErrorCode::AlreadyAuthenticated,
                "already authenticated".into(),
            )),
            ClientMessage::RoomCreate {
                max_participants,
                sfu,
            } => self.room_create(me, max_participants, sfu),
            ClientMessage::SfuRegister { proof } => {
                let registered = self.sfu_register(me, &proof.0);
                if registered.is_ok() {
                    // From now on this connection speaks for every participant of its rooms.
                    let config = &self.shared.config;
                    self.guard = super::limiter::FloodGuard::new(
                        config.sfu_rate_per_sec,
                        config.sfu_rate_burst,
                        config.max_strikes,
                        std::time::Instant::now(),
                    );
                }
                registered
            }
            ClientMessage::RoomJoin {
                room_id,
                invite_token,
            } => self.room_join(me, room_id, invite_token),
            ClientMessage::RoomLeave { room_id } => self.room_leave(me, room_id),
            ClientMessage::Offer(m) => self.relay(
                m.to,
                ServerMessage::Offer(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::Answer(m) => self.relay(
                m.to,
                ServerMessage::Answer(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::Candidate(m) => self.relay(
                m.to,
                ServerMessage::Candidate(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::Hangup(m) => self.relay(
                m.to,
                ServerMessage::Hangup(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::RestartRequest(m) => self.relay(
                m.to,
                ServerMessage::RestartRequest(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::Subscription(m) => self.relay(
                m.to,
                ServerMessage::Subscription(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::Layers(m) => self.relay(
                m.to,
                ServerMessage::Layers(Incoming {
                    from: me,
                    body: m.body,
                }),
            ),
            ClientMessage::KeyPackagesPublish {
                key_packages,
                last_resort,
            } => {
                let cap = self.shared.config.max_key_packages;
                let regular: Vec<Vec<u8>> = key_packages.into_iter().map(|b| b.0).collect();
                if regular
                    .iter()
                    .chain(last_resort.as_ref().map(|b| &b.0))
                    .any(Vec::is_empty)
                {
                    Err((
                        ErrorCode::InvalidMessage,
                        "a key package may not be empty".into(),
                    ))
                } else {
                    let last_resort = last_resort.map(|b| b.0);
                    match self
                        .db(move |s| {
                            s.key_packages_publish(&me, &regular, last_resort.as_deref(), cap)
                        })
                        .await
                    {
                        Err(flow) => return flow,
                        Ok(Err(TooManyKeyPackages)) => Err((
                            ErrorCode::TooManyKeyPackages,
                            format!("at most {cap} one-time key packages may be stored"),
                        )),
                        Ok(Ok(stock)) => Ok(ServerMessage::KeyPackagesStored {
                            regular: stock.regular,
                            last_resort: stock.last_resort,
                        }),
                    }
                }
            }
            ClientMessage::GroupCommit(commit) => match self.group_commit(me, commit).await {
                Err(flow) => return flow,
                Ok(reply) => reply,
            },
            ClientMessage::TurnCredentials {} => Ok(match &self.shared.turn {
                Some(relay) => {
                    let minted = relay.mint(me.as_bytes(), std::time::SystemTime::now());
                    ServerMessage::TurnCredentials {
                        servers: vec![IceServer {
                            urls: minted.urls,
                            username: minted.username,
                            credential: minted.credential,
                        }],
                        expires: minted.expires,
                    }
                }
                None => ServerMessage::TurnCredentials {
                    servers: Vec::new(),
                    expires: 0,
                },
            }),
            ClientMessage::BlobCreate { size, chunks } => {
                match self.blob_create(me, size, chunks).await {
                    Err(flow) => return flow,
                    Ok(reply) => reply,
                }
            }
            ClientMessage::KeyPackageCount {} => {
                match self.db(move |s| s.key_package_stock(&me)).await {
                    Err(flow) => return flow,
                    Ok(stock) => Ok(ServerMessage::KeyPackagesStored {
                        regular: stock.regular,
                        last_resort: stock.last_resort,
                    }),
                }
            }
            ClientMessage::KeyPackageFetch { identity } => {
                match self.db(move |s| s.key_package_take(&identity)).await {
                    Err(flow) => return flow,
                    Ok(None) => Err((
                        ErrorCode::NoKeyPackage,
                        "that identity has no key package published".into(),
                    )),
                    Ok(Some((package, last_resort))) => Ok(ServerMessage::KeyPackage {
                        identity,
                        key_package: package.into(),
                        last_resort,
                    }),
                }
            }
            ClientMessage::MailboxSend { to, envelope } => {
                if envelope.is_empty() {
                    Err((
                        ErrorCode::InvalidMessage,
                        "an envelope may not be empty".into(),
                    ))
                } else {
                    let cap = self.shared.config.mailbox_max_envelopes;
                    let hour = current_hour();
                    match self
                        .db(move |s| s.mailbox_push(&to, &envelope.0, hour, cap))
                        .await
                    {
                        Err(flow) => return flow,
                        Ok(Err(MailboxFull)) => Err((
                            ErrorCode::MailboxFull,
                            "the recipient's mailbox is full; try again later".into(),
                        )),
                        Ok(Ok(message_id)) => {
                            self.shared.metrics.mailbox_depth.inc();
                            if let Ok(hub) = self.shared.hub.lock() {
                                hub.poke_mailbox(&to);
                            }
                            Ok(ServerMessage::MailboxAccepted { message_id })
                        }
                    }
                }
            }
            ClientMessage::MailboxAck { up_to } => {
                // Only what this connection delivered can be acknowledged.
                let up_to = up_to.min(self.sent_up_to);
                match self.db(move |s| s.mailbox_ack(&me, up_to)).await {
                    Err(flow) => return flow,
                    Ok(removed) => {
                        self.shared
                            .metrics
                            .mailbox_depth
                            .dec_by(i64::try_from(removed).unwrap_or(0));
                        while self.inflight.front().is_some_and(|m| *m <= up_to) {
                            self.inflight.pop_front();
                        }
                        let flow = self
                            .send(socket, id, ServerMessage::MailboxAcked { up_to, removed })
                            .await;
                        if !matches!(flow, Flow::Continue) {
                            return flow;
                        }
                        return self.pump_mailbox(socket).await;
                    }
                }
            }
        };
        match reply {
            Ok(message) => self.send(socket, id, message).await,
            Err((code, text)) => {
                self.send(socket, id, ServerMessage::error(code, text))
                    .await
            }
        }
    }

    fn me_as_participant(&self, me: IdentityKey) -> Participant {
        Participant {
            identity: me,
            display_name: self.display_name.clone(),
        }
    }

    fn sfu_register(
        &self,
        me: IdentityKey,
        proof: &[u8],
    ) -> Result<ServerMessage, (ErrorCode, String)> {
        let Some(secret) = &self.shared.sfu_secret else {
            return Err((
                ErrorCode::SfuRefused,
                "this server takes no SFU (it has no --sfu-secret-file)".into(),
            ));
        };
        let server_id = self.shared.store.server_id();
        if !verify_sfu_proof(secret, server_id, &self.challenge, proof) {
            return Err((
                ErrorCode::SfuRefused,
                "the SFU proof does not match this server's secret and this connection's challenge"
                    .into(),
            ));
        }
        let hosted = {
            let mut rooms = self.shared.rooms.lock().map_err(|_| internal())?;
            rooms.register_sfu(me);
            rooms.rooms_of_sfu(&me)
        };
        // An SFU that registers again (after a reconnect) missed the joins and leaves in
        // between: it hears who is in each of its rooms now.
        for (room_id, members) in hosted {
            for member in members {
                self.broadcast_presence(room_id.clone(), member, PresenceState::Joined, &[me]);
            }
        }
        tracing::info!("an SFU registered");
        Ok(ServerMessage::SfuRegistered {})
    }

    fn room_create(
        &self,
        me: IdentityKey,
        cap: Option<u32>,
        with_sfu: bool,
    ) -> Result<ServerMessage, (ErrorCode, String)> {
        let room_id = RoomId(encode_b64(&rand::random::<[u8; 16]>()));
        let invite_token = InviteToken(encode_b64(&rand::random::<[u8; 32]>()));
        let (max_participants, sfu) = {
            let mut rooms = self.shared.rooms.lock().map_err(|_| internal())?;
            let created = rooms
                .create(
                    self.me_as_participant(me),
                    room_id.clone(),
                    invite_token.clone(),
                    cap,
                    with_sfu,
                )
                .map_err(|e| (e.code, e.message.to_owned()))?;
            self.shared.metrics.rooms.set(rooms.len() as i64);
            created
        };
        // The SFU learns of the room through its creator joining it.
        if let Some(sfu) = sfu {
            self.broadcast_presence(
                room_id.clone(),
                self.me_as_participant(me),
                PresenceState::Joined,
                &[sfu],
            );
        }
        Ok(ServerMessage::RoomCreated {
            room_id,
            invite_token,
            max_participants,
            sfu,
        })
    }

    fn room_join(
        &self,
        me: IdentityKey,
        room_id: RoomId,
        token: InviteToken,
    ) -> Result<ServerMessage, (ErrorCode, String)> {
        let joined = {
            let mut rooms = self.shared.rooms.lock().map_err(|_| internal())?;
            rooms
                .join(self.me_as_participant(me), &room_id, &token)
                .map_err(|e| (e.code, e.message.to_owned()))?
        };
        self.broadcast_presence(
            room_id.clone(),
            self.me_as_participant(me),
            PresenceState::Joined,
            &joined.notify,
        );
        Ok(ServerMessage::RoomJoined {
            room_id,
            participants: joined.participants,
            sfu: joined.sfu,
        })
    }

    fn room_leave(
        &self,
        me: IdentityKey,
        room_id: RoomId,
    ) -> Result<ServerMessage, (ErrorCode, String)> {
        let (participant, notify) = {
            let mut rooms = self.shared.rooms.lock().map_err(|_| internal())?;
            let left = rooms
                .leave(&me, &room_id)
                .map_err(|e| (e.code, e.message.to_owned()))?;
            self.shared.metrics.rooms.set(rooms.len() as i64);
            left
        };
        self.broadcast_presence(room_id.clone(), participant, PresenceState::Left, &notify);
        Ok(ServerMessage::RoomLeft { room_id })
    }

    /// Push a presence event to each of `notify`; a full queue drops it (counted).
    pub(crate) fn broadcast_presence(
        &self,
        room_id: RoomId,
        participant: Participant,
        state: PresenceState,
        notify: &[IdentityKey],
    ) {
        if notify.is_empty() {
            return;
        }
        let text = encode(
            None,
            ServerMessage::Presence {
                room_id,
                participant,
                state,
            },
        );
        let Ok(hub) = self.shared.hub.lock() else {
            return;
        };
        for to in notify {
            if hub.push(to, text.clone()) == Err(PushError::Busy) {
                self.shared.metrics.dropped_events.inc();
            }
        }
    }

    fn relay(
        &self,
        to: IdentityKey,
        message: ServerMessage,
    ) -> Result<ServerMessage, (ErrorCode, String)> {
        let call_id = match &message {
            ServerMessage::Offer(m) => m.body.call_id.as_str(),
            ServerMessage::Answer(m) => m.body.call_id.as_str(),
            ServerMessage::Candidate(m) => m.body.call_id.as_str(),
            ServerMessage::Hangup(m) => m.body.call_id.as_str(),
            ServerMessage::RestartRequest(m) => m.body.call_id.as_str(),
            ServerMessage::Subscription(m) => m.body.call_id.as_str(),
            ServerMessage::Layers(m) => m.body.call_id.as_str(),
            _ => "",
        };
        validate_call_id(call_id).map_err(|why| (ErrorCode::InvalidMessage, why.to_owned()))?;
        let hub = self.shared.hub.lock().map_err(|_| internal())?;
        match hub.push(&to, encode(None, message)) {
            Ok(()) => Ok(ServerMessage::Relayed {}),
            Err(PushError::Offline) => Err((
                ErrorCode::PeerOffline,
                "that identity is not connected".into(),
            )),
            Err(PushError::Busy) => {
                self.shared.metrics.dropped_events.inc();
                Err((
                    ErrorCode::PeerBusy,
                    "that identity cannot take more messages right now".into(),
                ))
            }
        }
    }
}

fn internal() -> (ErrorCode, String) {
    (ErrorCode::Internal, "internal server error".into())
}
