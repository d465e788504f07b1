//! The [`Phone`]: one signaling connection, any number of calls. It routes call signals
//! by (peer, call id) to the call they belong to — a signal from anyone else for that id is
//! dropped — turns new offers into [`IncomingCall`]s, and answers `busy` when a call is
//! already up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sotto_signaling::protocol::{HangupReason, IdentityKey, MediaE2ee, Offer};
use tokio::sync::mpsc;

use super::session::{self, Command, Role, Routes, SessionParams};
use super::{CallConfig, CallError, CallEvent, CallSummary};
use crate::audio::{open_sink, open_source};
use crate::signaling::{CallSignal, Event, SignalingClient, SignalingSender};

/// Places and receives calls over one signaling connection.
pub struct Phone {
    sender: SignalingSender,
    routes: Routes,
    incoming: mpsc::UnboundedReceiver<IncomingCall>,
    other: mpsc::UnboundedReceiver<Event>,
}

/// A call someone is placing to us; answer or decline it.
pub struct IncomingCall {
    /// Who is calling (authenticated by the signaling server).
    pub from: IdentityKey,
    /// The call's id.
    pub call_id: String,
    offer: Offer,
    signals: mpsc::UnboundedReceiver<CallSignal>,
    sender: SignalingSender,
    routes: Routes,
}

/// A call in progress.
pub struct CallHandle {
    /// The call's id.
    pub call_id: String,
    /// The peer.
    pub peer: IdentityKey,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<CallEvent>,
    summary: Option<CallSummary>,
    channel_open: Arc<AtomicBool>,
}

fn lock(
    routes: &Routes,
) -> std::sync::MutexGuard<'_, HashMap<(IdentityKey, String), mpsc::UnboundedSender<CallSignal>>> {
    routes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Phone {
    /// Takes over a connected signaling client. Its non-call events stay available through
    /// [`Phone::next_signaling_event`].
    pub fn new(client: SignalingClient) -> Phone {
        let (sender, mut events) = client.split();
        let routes: Routes = Arc::default();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (other_tx, other) = mpsc::unbounded_channel();
        let pump_routes = routes.clone();
        let pump_sender = sender.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Event::Call { from, signal } = event else {
                    let _ = other_tx.send(event);
                    continue;
                };
                let key = (from, signal.call_id().to_owned());
                let route = lock(&pump_routes).get(&key).cloned();
                if let Some(route) = route {
                    let _ = route.send(signal);
                    continue;
                }
                let CallSignal::Offer(offer) = signal else {
                    tracing::debug!("a call signal for no known call was dropped");
                    continue;
                };
                if offer.ice_restart {
                    continue;
                }
                if !lock(&pump_routes).is_empty() {
                    let sender = pump_sender.clone();
                    tokio::spawn(async move {
                        let _ = sender
                            .hang_up(from, &offer.call_id, HangupReason::Busy)
                            .await;
                    });
                    continue;
                }
                let (signals_tx, signals) = mpsc::unbounded_channel();
                lock(&pump_routes).insert(key, signals_tx);
                let call = IncomingCall {
                    from,
                    call_id: offer.call_id.clone(),
                    offer,
                    signals,
                    sender: pump_sender.clone(),
                    routes: pump_routes.clone(),
                };
                let _ = incoming_tx.send(call);
            }
        });
        Phone {
            sender,
            routes,
            incoming,
            other,
        }
    }

    /// Our identity.
    pub fn identity(&self) -> IdentityKey {
        self.sender.identity()
    }

    /// Calls `peer`. Fails at once when the audio input or output cannot be opened;
    /// everything later (peer unreachable, no answer, media failure) ends the call with a
    /// reason in its summary.
    pub fn call(&self, peer: IdentityKey, config: CallConfig) -> Result<CallHandle, CallError> {
        let source = open_source(&config.input)?;
        let sink = open_sink(&config.output)?;
        let call_id = new_call_id();
        let (signals_tx, signals) = mpsc::unbounded_channel();
        lock(&self.routes).insert((peer, call_id.clone()), signals_tx);
        Ok(start(SessionParams {
            role: Role::Caller,
            call_id,
            peer,
            config,
            sender: self.sender.clone(),
            signals,
            source,
            sink,
            offer: None,
            routes: self.routes.clone(),
            channel_open: Arc::default(),
        }))
    }

    /// Joins the media of group room `room` through its SFU `sfu` (both from
    /// `room_created` / `room_joined`) and runs the group call to its end.
    pub async fn group_call(
        &self,
        room: sotto_signaling::protocol::RoomId,
        sfu: IdentityKey,
        config: super::group::GroupConfig,
    ) -> Result<super::group::GroupSummary, CallError> {
        let key = (sfu, room.0.clone());
        let (signals_tx, signals) = mpsc::unbounded_channel();
        lock(&self.routes).insert(key.clone(), signals_tx);
        let result = super::group::run(self.sender.clone(), signals, room, sfu, config).await;
        lock(&self.routes).remove(&key);
        result
    }

    /// The next incoming call; `None` once the signaling connection is gone for good.
    pub async fn next_incoming(&mut self) -> Option<IncomingCall> {
        self.incoming.recv().await
    }

    /// The next signaling event that is not about calls (presence, mailbox, reconnects).
    pub async fn next_signaling_event(&mut self) -> Option<Event> {
        self.other.recv().await
    }
}

impl IncomingCall {
    /// The end-to-end media encryption the caller asks for (an MLS group and epoch), if
    /// any. Answer with [`CallConfig::e2ee`] keyed from that group, or the call fails.
    pub fn e2ee(&self) -> Option<&MediaE2ee> {
        self.offer.e2ee.as_ref()
    }

    /// Answers with this configuration. Fails at once when the audio input or output
    /// cannot be opened (the caller is then told `failed`); a bad offer ends the call with
    /// a reason in its summary.
    pub async fn answer(self, config: CallConfig) -> Result<CallHandle, CallError> {
        let opened = open_source(&config.input)
            .and_then(|source| open_sink(&config.output).map(|sink| (source, sink)));
        let (source, sink) = match opened {
            Ok(pair) => pair,
            Err(err) => {
                self.give_up(HangupReason::Failed).await;
                return Err(err.into());
            }
        };
        Ok(start(SessionParams {
            role: Role::Callee,
            call_id: self.call_id,
            peer: self.from,
            config,
            sender: self.sender,
            signals: self.signals,
            source,
            sink,
            offer: Some(self.offer),
            routes: self.routes,
            channel_open: Arc::default(),
        }))
    }

    /// Declines the call.
    pub async fn decline(self) {
        self.give_up(HangupReason::Declined).await;
    }

    async fn give_up(&self, reason: HangupReason) {
        lock(&self.routes).remove(&(self.from, self.call_id.clone()));
        if let Err(err) = self.sender.hang_up(self.from, &self.call_id, reason).await {
            tracing::debug!(%err, "the hang-up did not reach the caller");
        }
    }
}

fn start(params: SessionParams) -> CallHandle {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let call_id = params.call_id.clone();
    let peer = params.peer;
    let channel_open = params.channel_open.clone();
    tokio::spawn(session::run(params, commands, events_tx));
    CallHandle {
        call_id,
        peer,
        channel_open,
        commands: commands_tx,
        events,
        summary: None,
    }
}

fn new_call_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CallHandle {
    /// The next event; `None` after [`CallEvent::Ended`] was delivered.
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        let event = self.events.recv().await?;
        if let CallEvent::Ended(summary) = &event {
            self.summary = Some((**summary).clone());
        }
        Some(event)
    }

    /// Hangs up (a no-op when the call already ended).
    pub fn hang_up(&self) {
        let _ = self.commands.send(Command::HangUp);
    }

    /// Restarts ICE now, e.g. because the device changed networks. Only the caller
    /// restarts; on the callee this asks nothing of the peer and is ignored.
    pub fn restart_ice(&self) {
        let _ = self.commands.send(Command::RestartIce);
    }

    /// Sends an MLS message (the bytes `Conversations::send` made) to the peer over the
    /// call's data channel. Returns false when the call has no open channel (not keyed
    /// from a conversation, not connected yet, or over) or the message is too large for
    /// it: send it through the mailbox then.
    /// Delivery is not confirmed: a message that matters should also be acknowledged by
    /// the application or sent through the mailbox when the call ends.
    pub fn send_message(&self, bytes: Vec<u8>) -> bool {
        if !self.channel_open.load(Ordering::Relaxed) || bytes.len() > session::MAX_CHANNEL_MESSAGE
        {
            return false;
        }
        self.commands.send(Command::SendMessage(bytes)).is_ok()
    }

    /// Waits for the call to end and returns its summary.
    pub async fn finished(mut self) -> Result<CallSummary, CallError> {
        while self.summary.is_none() {
            if self.next_event().await.is_none() {
                break;
            }
        }
        self.summary.ok_or(CallError::Ended)
    }
}
