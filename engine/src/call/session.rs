//! One call as one task: the offer/answer exchange and trickled candidates over
//! signaling, the connection's state changes, ICE restarts, timeouts, hang-up from either
//! side, the rate controller's tick, and the summary at the end. All call state lives in
//! [`Session`]; the task's `select!` loop is the only thing that changes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sotto_signaling::protocol::{
    Answer, Candidate, Hangup, HangupReason, IdentityKey, MediaE2ee, Offer, RestartRequest,
};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

use super::addresses::{ADDRESS_CHECK, AddressWatch};
use super::flow::{FlowSample, FlowWatch};
use super::media::{CaptureEnd, InputGate, PayloadTypes};
use super::peer::{self, OPUS_PAYLOAD_TYPE, Peer, PeerEvent, RemoteAudio};
use super::pipeline::{Pipeline, SendParams, VideoParams, round};
use super::reports::{ReportedLoss, SendFeedback};
use super::video::plan_layers;
use super::{
    Advertise, CallConfig, CallError, CallEvent, CallState, CallSummary, E2eeSummary, EndReason,
    IceConfig, IceServer, ReceivedSummary, SentSummary, Side, TimelinePoint,
};
use crate::audio::rate::{PACKET_OVERHEAD_BYTES, RateController};
use crate::audio::{AudioSink, AudioSource};
use crate::e2ee::media::SFRAME_OVERHEAD_BYTES;
use crate::messaging::GroupId;
use crate::signaling::{CallSignal, ClientError, SignalingSender};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// Calls by (peer, call id), shared with the [`super::Phone`] that routes signals to them.
pub type Routes = Arc<Mutex<HashMap<(IdentityKey, String), mpsc::UnboundedSender<CallSignal>>>>;

/// The input and output a call opened before it started.
type OpenedAudio = (Box<dyn AudioSource>, Box<dyn AudioSink>);

/// Which end of the call we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We placed the call (and are the one who restarts ICE).
    Caller,
    /// We answered.
    Callee,
}

/// What the handle asks of the call.
#[derive(Debug)]
pub enum Command {
    /// End the call.
    HangUp,
    /// Restart ICE (caller only).
    RestartIce,
    /// Send an end-to-end encrypted message over the call's data channel.
    SendMessage(Vec<u8>),
}

/// The data channel of a call keyed from a conversation: both ends create it, negotiated
/// out of band on this SCTP stream id, so neither waits for the other to open it.
const MESSAGE_CHANNEL_ID: u16 = 0;
const MESSAGE_CHANNEL_LABEL: &str = "sotto-mls";
/// The largest message the channel carries (webrtc-rs delivers at most 16 KiB per
/// message); larger ones go through the mailbox.
pub const MAX_CHANNEL_MESSAGE: usize = 16 * 1024;
/// A peer may send this many messages at once on the channel, then this many a second;
/// more are dropped and counted (the application's event queue must not grow without
/// bound because a peer floods it).
const MESSAGE_BURST: f64 = 100.0;
const MESSAGES_PER_SECOND: f64 = 20.0;

/// What arrived on the message channel.
#[derive(Debug, Default)]
struct MessageCounters {
    received: AtomicU64,
    dropped: AtomicU64,
}

/// What a session starts with.
pub struct SessionParams {
    pub role: Role,
    pub call_id: String,
    pub peer: IdentityKey,
    pub config: CallConfig,
    pub sender: SignalingSender,
    pub signals: mpsc::UnboundedReceiver<CallSignal>,
    pub source: Box<dyn AudioSource>,
    pub sink: Box<dyn AudioSink>,
    /// The offer being answered (callee).
    pub offer: Option<Offer>,
    pub routes: Routes,
    /// Set while the message data channel is open (shared with the call's handle).
    pub channel_open: Arc<AtomicBool>,
}

/// The key of the peer's stream in the pipeline.
const PEER_STREAM: &str = "peer";

/// Rate control and stats run this often.
pub(super) const TICK: Duration = Duration::from_secs(1);

/// The most call signals kept while the signaling connection is down (the oldest go).
const MAX_UNSENT: usize = 64;
/// The video layers follow the bandwidth estimate this often: a second was long enough
/// for a sender whose link fell from 2.5 to 0.5 Mbit/s to fill the queue and freeze every
/// subscriber for 2.6-3.5 s (`sotto-bench run video-drop.toml --group 3 --video`).
pub(super) const VIDEO_TICK: Duration = Duration::from_millis(100);
/// Least time between two ICE restarts the caller starts on its own.
const RESTART_SPACING: Duration = Duration::from_secs(3);
/// While the connection is up and media has not gone both ways yet (or is coming back
/// after a stall), the counters are looked at this often.
const FLOW_CHECK: Duration = Duration::from_millis(20);

struct Session {
    role: Role,
    call_id: String,
    peer_key: IdentityKey,
    config: CallConfig,
    signaling: SignalingSender,
    events: mpsc::UnboundedSender<CallEvent>,
    pc: Arc<dyn PeerConnection>,
    track: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    ssrc: u32,
    /// One point per tick while connected.
    timeline: Vec<TimelinePoint>,
    state: CallState,
    remote_audio: Option<RemoteAudio>,
    remote_description_set: bool,
    pending_candidates: Vec<RTCIceCandidateInit>,
    created: Instant,
    /// When the connection (ICE and DTLS) first came up: media starts, a file input held
    /// at its start (`gate`) until media goes both ways.
    transport_up_at: Option<Instant>,
    /// When media first went both ways: the call is connected from then.
    connected_at: Option<Instant>,
    setup_ms: Option<f64>,
    gate: Arc<InputGate>,
    /// Transport feedback batches from the peer that acknowledge our packets.
    heard: Arc<AtomicU64>,
    /// The peer's report blocks about our stream, and what its sender reports say it sent.
    reported: Arc<ReportedLoss>,
    /// Whether media keeps flowing, from when the call connected.
    flow: Option<FlowWatch>,
    media_stalls: u32,
    deadline: Option<Instant>,
    input_ended_at: Option<Instant>,
    last_restart: Option<Instant>,
    ice_restarts: u32,
    /// Our local addresses, when the call binds a wildcard.
    addresses: Option<AddressWatch>,
    address_changes: u32,
    /// How the media goes (see [`CallSummary::media_path`]), as of the last check.
    media_path: Option<&'static str>,
    /// Call signals waiting for the signaling connection (see [`Session::send`]).
    unsent: std::collections::VecDeque<CallSignal>,
    /// The opened input and output until media starts (behind a lock only so that the
    /// session is `Sync` across awaits; nothing contends for it).
    media: Mutex<Option<OpenedAudio>>,
    /// Our video track, source and layer until media starts (locked for the same reason).
    video: Mutex<Option<VideoParams>>,
    /// The send-side bandwidth estimate, bit/s (0 before the first feedback).
    estimate_bps: Arc<std::sync::atomic::AtomicU64>,
    /// Capture, sending, receiving and playout (the peer's stream is [`PEER_STREAM`]).
    pipeline: Pipeline,
    /// From the peer's reports, through the rate controller, to the encoder.
    feedback: SendFeedback,
    /// The data channel for MLS messages (calls keyed from a conversation only).
    channel: Option<Arc<dyn DataChannel>>,
    /// `Advertise::Address` has sent its one candidate.
    advertised_once: bool,
    messages: Arc<MessageCounters>,
}

/// Runs the call to its end.
pub async fn run(
    params: SessionParams,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<CallEvent>,
) {
    let SessionParams {
        role,
        call_id,
        peer: peer_key,
        config,
        sender,
        mut signals,
        source,
        sink,
        offer,
        routes,
        channel_open,
    } = params;
    let route_key = (peer_key, call_id.clone());
    let cleanup = move || {
        routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&route_key);
    };

    // Our video, if any: one VP8 stream (no simulcast between two peers) of the source's
    // size. VP8 is negotiated to receive too when the peer's video is wanted.
    let opened_video = crate::video::open_source(&config.video).map(|source| {
        source.map(|source| {
            let (width, height) = source.size();
            (source, plan_layers(width, height, 1))
        })
    });
    let built = match opened_video {
        Ok(video) => {
            let layers = match (&video, &config.video_output) {
                (Some(_), _) => Some(1),
                (None, Some(_)) => Some(0),
                (None, None) => None,
            };
            // A callee sends what the offer takes: our choice if it is there.
            let codec = offer.as_ref().map_or(config.video_codec, |offer| {
                peer::answer_video_codec(&offer.sdp, config.video_codec)
            });
            let ice = with_relay(&config.ice, &sender).await;
            peer::build(&ice, config.red, layers, codec)
                .await
                .map(|peer| (peer, video))
        }
        Err(err) => Err(CallError::Video(err)),
    };
    let (mut peer, video) = match built {
        Ok(built) => built,
        Err(err) => {
            let _ = sender
                .hang_up(peer_key, &call_id, HangupReason::Failed)
                .await;
            let end = EndReason {
                by: Side::Local,
                reason: HangupReason::Failed,
                detail: err.to_string(),
            };
            let summary = empty_summary(role, &call_id, peer_key, end);
            let _ = events.send(CallEvent::Ended(Box::new(summary)));
            cleanup();
            return;
        }
    };
    let pending_video = match (peer.video.take(), video) {
        (Some(track), Some((source, plan))) => Some(VideoParams {
            track,
            source,
            plan,
        }),
        _ => None,
    };
    let Peer {
        pc,
        track,
        ssrc,
        estimate_bps,
        reported_loss,
        heard,
        events: mut peer_events,
        video: _,
    } = peer;

    // A call keyed from a conversation also carries that conversation's MLS messages.
    let messages = Arc::new(MessageCounters::default());
    let channel = if config.e2ee.is_some() {
        match message_channel(&pc, events.clone(), channel_open, messages.clone()).await {
            Ok(channel) => Some(channel),
            Err(err) => {
                tracing::debug!(%err, "no data channel for messages in this call");
                None
            }
        }
    } else {
        None
    };
    let (pipeline, mut capture_end) = Pipeline::new(&config.encoder, config.e2ee.clone());
    let mut session = Session {
        role,
        call_id,
        peer_key,
        signaling: sender,
        events,
        pc,
        track,
        ssrc,
        timeline: Vec::new(),
        state: CallState::Ringing,
        remote_audio: None,
        remote_description_set: false,
        pending_candidates: Vec::new(),
        created: Instant::now(),
        transport_up_at: None,
        connected_at: None,
        setup_ms: None,
        gate: Arc::new(InputGate::default()),
        heard,
        reported: reported_loss.clone(),
        flow: None,
        media_stalls: 0,
        deadline: None,
        input_ended_at: None,
        last_restart: None,
        ice_restarts: 0,
        addresses: AddressWatch::new(&config.ice.bind, Instant::now()),
        address_changes: 0,
        media_path: None,
        unsent: std::collections::VecDeque::new(),
        media: Mutex::new(Some((source, sink))),
        video: Mutex::new(pending_video),
        estimate_bps: estimate_bps.clone(),
        pipeline,
        feedback: SendFeedback::new(
            send_rate_controller(&config.encoder, config.e2ee.is_some()),
            reported_loss,
            estimate_bps,
        ),
        channel,
        messages,
        advertised_once: false,
        config,
    };

    let opened = match (role, offer) {
        (Role::Caller, _) => session.send_offer(false).await,
        (Role::Callee, Some(offer)) => session.answer(offer).await,
        (Role::Callee, None) => Err(local_failure("no offer to answer")),
    };
    let mut ended = opened.err();
    if ended.is_none() {
        session.set_state(match role {
            Role::Caller => CallState::Ringing,
            Role::Callee => CallState::Connecting,
        });
        session.deadline = Some(
            Instant::now()
                + match role {
                    Role::Caller => session.config.ring_timeout,
                    Role::Callee => session.config.connect_timeout,
                },
        );
    }

    let mut tick = tokio::time::interval(TICK);
    let mut network_tick = tokio::time::interval(ADDRESS_CHECK);
    let mut video_tick = tokio::time::interval(VIDEO_TICK);
    while ended.is_none() {
        let deadline = session
            .deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let checking_flow = session.checking_flow();
        ended = tokio::select! {
            _ = tokio::time::sleep(FLOW_CHECK), if checking_flow => {
                session.check_flow();
                None
            }
            signal = signals.recv() => match signal {
                Some(signal) => session.on_signal(signal).await.err(),
                None => Some(local_failure("the signaling connection was closed")),
            },
            command = commands.recv() => match command {
                Some(Command::HangUp) | None => Some(EndReason {
                    by: Side::Local,
                    reason: HangupReason::Normal,
                    detail: "hung up".into(),
                }),
                Some(Command::RestartIce) => session.restart_ice(true).await.err(),
                Some(Command::SendMessage(bytes)) => {
                    session.send_message(bytes);
                    None
                }
            },
            event = peer_events.recv() => match event {
                Some(event) => session.on_peer_event(event).await.err(),
                None => Some(local_failure("the peer connection stopped")),
            },
            end = capture_end.recv() => match end {
                Some(CaptureEnd::InputEnded) => {
                    session.input_ended_at = Some(Instant::now());
                    session.refresh_deadline();
                    None
                }
                Some(CaptureEnd::Failed(message)) => Some(local_failure(&format!("audio input: {message}"))),
                Some(CaptureEnd::Stopped) | None => None,
            },
            _ = tokio::time::sleep_until(deadline.into()) => session.on_deadline(),
            _ = tick.tick() => {
                session.on_tick().await;
                session.watch_flow().await.err()
            }
            _ = network_tick.tick() => {
                session.flush_unsent().await;
                session.watch_addresses().await.err()
            }
            _ = video_tick.tick() => {
                session.share_video_bandwidth();
                None
            }
        };
    }
    let end = ended.unwrap_or_else(|| local_failure("ended"));
    if end.by == Side::Local {
        let reason = end.reason;
        if let Err(err) = session
            .signaling
            .hang_up(session.peer_key, &session.call_id, reason)
            .await
        {
            tracing::debug!(%err, "the hang-up did not reach the peer");
        }
    }
    let events = session.events.clone();
    let summary = session.finish(end).await;
    cleanup();
    let _ = events.send(CallEvent::Ended(Box::new(summary)));
}

/// Creates the negotiated message channel and a task that hands what arrives on it to the
/// call's events.
async fn message_channel(
    pc: &Arc<dyn PeerConnection>,
    events: mpsc::UnboundedSender<CallEvent>,
    open: Arc<AtomicBool>,
    counters: Arc<MessageCounters>,
) -> Result<Arc<dyn DataChannel>, String> {
    let init = RTCDataChannelInit {
        ordered: true,
        negotiated: Some(MESSAGE_CHANNEL_ID),
        ..Default::default()
    };
    let channel = pc
        .create_data_channel(MESSAGE_CHANNEL_LABEL, Some(init))
        .await
        .map_err(|e| e.to_string())?;
    let reader = channel.clone();
    tokio::spawn(async move {
        let mut tokens = MESSAGE_BURST;
        let mut last = Instant::now();
        while let Some(event) = reader.poll().await {
            match event {
                DataChannelEvent::OnMessage(message) => {
                    let now = Instant::now();
                    tokens = (tokens
                        + now.duration_since(last).as_secs_f64() * MESSAGES_PER_SECOND)
                        .min(MESSAGE_BURST);
                    last = now;
                    if tokens < 1.0 || message.data.len() > MAX_CHANNEL_MESSAGE {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    tokens -= 1.0;
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    // Opaque bytes: the application decrypts them with its MLS state.
                    if events
                        .send(CallEvent::Message(message.data.to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
                DataChannelEvent::OnOpen => open.store(true, Ordering::Relaxed),
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        open.store(false, Ordering::Relaxed);
    });
    Ok(channel)
}

fn local_failure(detail: &str) -> EndReason {
    EndReason {
        by: Side::Local,
        reason: HangupReason::Failed,
        detail: detail.to_owned(),
    }
}

fn empty_summary(role: Role, call_id: &str, peer: IdentityKey, end: EndReason) -> CallSummary {
    CallSummary {
        call_id: call_id.to_owned(),
        peer: peer.to_string(),
        role: match role {
            Role::Caller => "caller",
            Role::Callee => "callee",
        },
        connected: false,
        setup_ms: None,
        duration_s: 0.0,
        ice_restarts: 0,
        address_changes: 0,
        media_path: None,
        media_stalls: 0,
        sent: SentSummary::default(),
        received: ReceivedSummary::default(),
        e2ee: None,
        video_sent: None,
        video_received: None,
        end,
        timeline: Vec::new(),
        media_started: None,
        input_started: None,
    }
}

impl Session {
    fn set_state(&mut self, state: CallState) {
        if self.state != state || state == CallState::Ringing {
            self.state = state;
            let _ = self.events.send(CallEvent::State(state));
        }
    }

    /// Sends a call signal to the peer. Before the call has a media path, one that does
    /// not get through ends the call (the peer cannot be reached). After, it does not: the
    /// signaling connection may be reconnecting (a network change takes it down too), so
    /// the signal waits in [`unsent`](Self::unsent), in order, and goes again each tick
    /// until it gets through or the reconnect deadline ends the call.
    async fn send(&mut self, signal: CallSignal) -> Result<(), EndReason> {
        let call_up = self.transport_up_at.is_some();
        if call_up && !self.unsent.is_empty() {
            self.keep_unsent(signal);
            return Ok(());
        }
        match self
            .signaling
            .send_call_signal(self.peer_key, signal.clone())
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if call_up && connection_trouble(&err) => {
                tracing::debug!(%err, "a call signal waits for the signaling connection");
                self.keep_unsent(signal);
                Ok(())
            }
            Err(err) => Err(EndReason {
                by: Side::Local,
                reason: HangupReason::Failed,
                detail: format!("the peer could not be reached: {err}"),
            }),
        }
    }

    fn keep_unsent(&mut self, signal: CallSignal) {
        if self.unsent.len() >= MAX_UNSENT {
            self.unsent.pop_front();
        }
        self.unsent.push_back(signal);
    }

    /// Sends what waits in [`unsent`](Self::unsent), oldest first, until one fails again
    /// (each [`ADDRESS_CHECK`]: the signaling client reconnects within about that).
    async fn flush_unsent(&mut self) {
        while let Some(signal) = self.unsent.front().cloned() {
            match self.signaling.send_call_signal(self.peer_key, signal).await {
                Err(err) if connection_trouble(&err) => {
                    tracing::debug!(%err, waiting = self.unsent.len(), "call signals still wait");
                    return;
                }
                // Refused (an older server, a peer gone): trying again will not help.
                Err(err) => tracing::debug!(%err, "a call signal was refused"),
                Ok(()) => {}
            }
            self.unsent.pop_front();
        }
    }

    async fn send_offer(&mut self, ice_restart: bool) -> Result<(), EndReason> {
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|err| local_failure(&format!("creating the offer: {err}")))?;
        let sdp = self.outgoing_sdp(&offer.sdp);
        // A new round of gathering (an ICE restart): `Advertise::Address` sends its one
        // candidate again, or the restarted path would bypass the relay.
        self.advertised_once = false;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|err| local_failure(&format!("applying our offer: {err}")))?;
        self.send(CallSignal::Offer(Offer {
            call_id: self.call_id.clone(),
            sdp,
            ice_restart,
            e2ee: self.e2ee_info(),
        }))
        .await
    }

    /// What we tell the peer about our end-to-end media encryption.
    fn e2ee_info(&self) -> Option<MediaE2ee> {
        self.config.e2ee.as_ref().map(|crypto| MediaE2ee {
            group: GroupId(crypto.group().to_vec()).to_hex(),
            epoch: crypto.epoch(),
        })
    }

    /// Both ends must agree on end-to-end media encryption: the same MLS group, or none
    /// at all. A mismatch ends the call instead of playing noise, or, worse, of one side
    /// sending in the clear while the user believes the call is encrypted.
    fn check_e2ee(&self, theirs: Option<&MediaE2ee>) -> Result<(), EndReason> {
        let ours = self.config.e2ee.as_ref();
        let detail = match (ours, theirs) {
            (None, None) => return Ok(()),
            (Some(_), None) => {
                "the peer does not encrypt media end to end; the call was not connected"
            }
            (None, Some(_)) => {
                "the peer encrypts media end to end (SFrame) but this call has no keys for it; answer with the conversation's keys"
            }
            (Some(crypto), Some(theirs)) => {
                if theirs.group != GroupId(crypto.group().to_vec()).to_hex() {
                    "the peer's media keys are for another conversation"
                } else {
                    // Epochs may differ for a moment (a commit in flight): the receiver
                    // keeps recent epochs, and frames of a later one are refused until we
                    // have processed its commit.
                    return Ok(());
                }
            }
        };
        Err(local_failure(detail))
    }

    /// Callee: checks and applies the offer, sends the answer.
    async fn answer(&mut self, offer: Offer) -> Result<(), EndReason> {
        self.check_e2ee(offer.e2ee.as_ref())?;
        self.apply_remote(&offer.sdp, true).await?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|err| local_failure(&format!("creating the answer: {err}")))?;
        let sdp = self.outgoing_sdp(&answer.sdp);
        self.advertised_once = false;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|err| local_failure(&format!("applying our answer: {err}")))?;
        self.send(CallSignal::Answer(Answer {
            call_id: self.call_id.clone(),
            sdp,
            e2ee: self.e2ee_info(),
        }))
        .await
    }

    /// Checks the peer's SDP (parses, offers Opus) and applies it; then the candidates
    /// that came early.
    async fn apply_remote(&mut self, sdp: &str, is_offer: bool) -> Result<(), EndReason> {
        let remote = peer::check_remote_sdp(sdp).map_err(|err| local_failure(&err.to_string()))?;
        let description = if is_offer {
            RTCSessionDescription::offer(sdp.to_owned())
        } else {
            RTCSessionDescription::answer(sdp.to_owned())
        }
        .map_err(|err| local_failure(&CallError::MalformedSdp(err.to_string()).to_string()))?;
        self.pc
            .set_remote_description(description)
            .await
            .map_err(|err| local_failure(&format!("the peer's SDP was refused: {err}")))?;
        self.remote_audio = Some(remote);
        self.remote_description_set = true;
        for candidate in std::mem::take(&mut self.pending_candidates) {
            self.add_candidate(candidate).await;
        }
        Ok(())
    }

    async fn add_candidate(&self, candidate: RTCIceCandidateInit) {
        if let Err(err) = self.pc.add_ice_candidate(candidate).await {
            // One bad candidate is not the end of the call: others may work.
            tracing::debug!(%err, "a remote candidate was refused");
        }
    }

    async fn on_signal(&mut self, signal: CallSignal) -> Result<(), EndReason> {
        match signal {
            CallSignal::Answer(answer) => {
                if self.role != Role::Caller || self.remote_description_set && !self.restarting() {
                    return Ok(());
                }
                let first = !self.remote_description_set;
                self.check_e2ee(answer.e2ee.as_ref())?;
                self.apply_remote(&answer.sdp, false).await?;
                if first {
                    self.set_state(CallState::Connecting);
                    self.deadline = Some(Instant::now() + self.config.connect_timeout);
                }
                Ok(())
            }
            CallSignal::Offer(offer) => {
                // Only an ICE restart from the caller is expected once the call is set up.
                if self.role != Role::Callee || !offer.ice_restart {
                    return Ok(());
                }
                self.ice_restarts += 1;
                self.answer(offer).await
            }
            CallSignal::Candidate(candidate) => {
                if candidate.candidate.is_empty() {
                    return Ok(());
                }
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                    ..Default::default()
                };
                if self.remote_description_set {
                    self.add_candidate(init).await;
                } else if self.pending_candidates.len() < 64 {
                    self.pending_candidates.push(init);
                }
                Ok(())
            }
            // The callee's network changed: only the caller restarts.
            CallSignal::RestartRequest(_) => {
                if self.role == Role::Caller && self.transport_up_at.is_some() {
                    tracing::info!("the peer's network changed; restarting ICE");
                    self.restart_ice(true).await
                } else {
                    Ok(())
                }
            }
            // Meant for an SFU; a peer in a one-to-one call has nothing to do with it.
            CallSignal::Subscription(_) | CallSignal::Layers(_) => Ok(()),
            CallSignal::Hangup(Hangup { reason, .. }) => Err(EndReason {
                by: Side::Remote,
                reason,
                detail: match reason {
                    HangupReason::Normal => "the peer hung up".into(),
                    HangupReason::Busy => "the peer is busy".into(),
                    HangupReason::Declined => "the peer declined".into(),
                    HangupReason::NoAnswer => "the peer gave up waiting".into(),
                    HangupReason::Failed => "the peer's side failed".into(),
                    HangupReason::Other => "the peer ended the call".into(),
                },
            }),
        }
    }

    /// Our description as the peer should see it. webrtc-rs writes the candidates
    /// gathered so far into a description (an ICE restart's has them all, and no new
    /// candidate events follow), so unless every candidate is advertised they are
    /// rewritten as [`advertised`](Self::advertised) would: none, or the one host
    /// candidate at the relay's address. Left in, they told the peer our real address
    /// and the path went around the relay.
    fn outgoing_sdp(&self, sdp: &str) -> String {
        advertised_description(sdp, self.config.ice.advertise)
    }

    /// The candidate as the peer should see it (see [`super::Advertise`]); `None`: not
    /// sent.
    fn advertised(&mut self, candidate: &str) -> Option<String> {
        match self.config.ice.advertise {
            Advertise::Gathered => Some(candidate.to_owned()),
            Advertise::Nothing => None,
            Advertise::Address(addr) => {
                // One candidate only: the first host one, at the relay's address.
                if self.advertised_once {
                    return None;
                }
                let rewritten = at_address(candidate, addr)?;
                self.advertised_once = true;
                Some(rewritten)
            }
        }
    }

    fn restarting(&self) -> bool {
        self.state == CallState::Reconnecting || self.last_restart.is_some()
    }

    async fn on_peer_event(&mut self, event: PeerEvent) -> Result<(), EndReason> {
        match event {
            PeerEvent::Candidate(candidate) => {
                let candidate = match candidate {
                    Some(init) => {
                        let Some(text) = self.advertised(&init.candidate) else {
                            return Ok(());
                        };
                        Candidate {
                            call_id: self.call_id.clone(),
                            candidate: text,
                            sdp_mid: init.sdp_mid,
                            sdp_mline_index: init.sdp_mline_index,
                        }
                    }
                    None => Candidate {
                        call_id: self.call_id.clone(),
                        candidate: String::new(),
                        sdp_mid: None,
                        sdp_mline_index: None,
                    },
                };
                // A lost candidate is not fatal while others get through (once the call is
                // up, one that does not get through waits for the next try).
                if let Err(err) = self.send(CallSignal::Candidate(candidate)).await {
                    tracing::debug!(detail = %err.detail, "a local candidate did not reach the peer");
                }
                Ok(())
            }
            PeerEvent::State(state) => self.on_connection_state(state).await,
            PeerEvent::Track(track) if track.kind().await == RtpCodecKind::Video => {
                let sink = match &self.config.video_output {
                    Some(output) => crate::video::open_sink(output)
                        .map_err(|err| local_failure(&format!("video output: {err}")))?,
                    None => Box::new(crate::video::NullSink),
                };
                self.pipeline
                    .receive_video(PEER_STREAM, track, sink)
                    .map_err(|err| local_failure(&err))
            }
            PeerEvent::Track(track) => {
                let audio_level_id = self.remote_audio.as_ref().and_then(|r| r.audio_level_id);
                let payload_types = self.payload_types();
                self.pipeline.receive(
                    PEER_STREAM,
                    track,
                    payload_types,
                    audio_level_id,
                    self.config.jitter.clone(),
                );
                Ok(())
            }
        }
    }

    /// The audio payload types agreed with the peer (ours until its SDP is known).
    fn payload_types(&self) -> PayloadTypes {
        match &self.remote_audio {
            Some(remote) => PayloadTypes {
                opus: remote.opus_payload_type,
                red: remote.red_payload_type.filter(|_| self.config.red),
            },
            None => PayloadTypes {
                opus: OPUS_PAYLOAD_TYPE,
                red: None,
            },
        }
    }

    async fn on_connection_state(
        &mut self,
        state: RTCPeerConnectionState,
    ) -> Result<(), EndReason> {
        match state {
            RTCPeerConnectionState::Connected => {
                if self.transport_up_at.is_none() {
                    // Media starts now, a file input held at its start: the call is
                    // connected once media has gone both ways (`check_flow`).
                    self.transport_up_at = Some(Instant::now());
                    self.start_media().await?;
                    if self.state == CallState::Ringing {
                        self.set_state(CallState::Connecting);
                    }
                    self.check_flow();
                } else if self.connected_at.is_some()
                    && self.flow.as_ref().is_none_or(FlowWatch::recovered)
                {
                    self.set_state(CallState::Connected);
                    self.refresh_deadline();
                }
                Ok(())
            }
            RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed => {
                if self.connected_at.is_none() {
                    if state == RTCPeerConnectionState::Failed {
                        return Err(local_failure("no media path to the peer (ICE failed)"));
                    }
                    return Ok(());
                }
                if self.state != CallState::Reconnecting {
                    self.set_state(CallState::Reconnecting);
                    self.deadline = Some(Instant::now() + self.config.reconnect_timeout);
                }
                self.restart_ice(false).await
            }
            _ => Ok(()),
        }
    }

    /// Caller only: new ICE credentials, a new offer flagged as a restart.
    async fn restart_ice(&mut self, asked: bool) -> Result<(), EndReason> {
        if self.role != Role::Caller || !self.remote_description_set {
            return Ok(());
        }
        let now = Instant::now();
        if !asked
            && self
                .last_restart
                .is_some_and(|at| now - at < RESTART_SPACING)
        {
            return Ok(());
        }
        self.last_restart = Some(now);
        self.ice_restarts += 1;
        self.pc
            .restart_ice()
            .await
            .map_err(|err| local_failure(&format!("restarting ICE: {err}")))?;
        self.send_offer(true).await
    }

    /// Sends one message on the data channel, without waiting (a message that cannot go
    /// now is dropped and the application falls back to the mailbox, see
    /// [`super::CallHandle::send_message`]).
    fn send_message(&self, bytes: Vec<u8>) {
        let Some(channel) = self.channel.clone() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(err) = channel.try_send(BytesMut::from(&bytes[..])).await {
                tracing::debug!(%err, "a message did not go out on the data channel");
            }
        });
    }

    async fn start_media(&mut self) -> Result<(), EndReason> {
        let pending = self
            .video
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(video) = pending {
            let local = self.pc.local_description().await;
            self.pipeline
                .start_video(video, local.as_ref().map(|desc| desc.sdp.as_str()))
                .map_err(|err| local_failure(&err))?;
        }
        let taken = self
            .media
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((source, sink)) = taken else {
            return Ok(());
        };
        self.feedback
            .start(self.payload_types().red.is_some(), &self.pipeline.control);
        self.pipeline
            .start_sending(SendParams {
                track: self.track.clone(),
                ssrc: self.ssrc,
                payload_types: self.payload_types(),
                source,
                encoder: self.config.encoder.clone(),
                gate: self.gate.clone(),
            })
            .map_err(|err| local_failure(&err))?;
        self.pipeline
            .play(PEER_STREAM, sink, self.config.decoder_complexity)
            .map_err(|err| local_failure(&err))
    }

    /// The counters media flow is judged by.
    fn flow_sample(&mut self) -> FlowSample {
        let received = if self.pipeline.has_inbound(PEER_STREAM) {
            self.pipeline
                .inbound(PEER_STREAM)
                .counters
                .packets_received
                .load(Ordering::Relaxed)
        } else {
            0
        };
        FlowSample {
            received,
            heard: self.heard.load(Ordering::Relaxed) + self.reported.acknowledgements(),
            sent: self.pipeline.counters.packets_sent.load(Ordering::Relaxed),
            peer_sent: self.reported.peer_sent(),
        }
    }

    /// Whether the counters need watching closely: the connection is up and media has not
    /// gone both ways yet, or is coming back after a stall.
    fn checking_flow(&self) -> bool {
        self.transport_up_at.is_some()
            && (self.connected_at.is_none()
                || self.flow.as_ref().is_some_and(|flow| !flow.recovered()))
    }

    /// Connects the call once media has gone both ways (and opens the input); leaves
    /// `Reconnecting` once media moves both ways again after a stall.
    fn check_flow(&mut self) {
        let now = Instant::now();
        let sample = self.flow_sample();
        if self.connected_at.is_none() {
            if !sample.both_ways() {
                return;
            }
            self.connected_at = Some(now);
            self.setup_ms = Some(ms(now - self.created));
            self.gate.open();
            self.flow = Some(FlowWatch::new(now, sample));
            tracing::debug!(
                setup_ms = self.setup_ms,
                transport_ms = self.transport_up_at.map(|at| ms(at - self.created)),
                "media goes both ways"
            );
            self.set_state(CallState::Connected);
            self.refresh_deadline();
            return;
        }
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        flow.update(now, sample);
        if flow.recovered() && self.state == CallState::Reconnecting {
            tracing::info!("media flows both ways again");
            self.set_state(CallState::Connected);
            self.refresh_deadline();
        }
    }

    /// Once a tick while connected: media that stopped arriving is reported (the state
    /// goes to `Reconnecting`, with its deadline) and the caller restarts ICE; the callee
    /// waits for that restart, which the caller starts on the same signs (what one end
    /// stops receiving, the other stops hearing acknowledged).
    async fn watch_flow(&mut self) -> Result<(), EndReason> {
        if self.state != CallState::Connected {
            return Ok(());
        }
        let now = Instant::now();
        let sample = self.flow_sample();
        let Some(stall) = self.flow.as_mut().and_then(|flow| flow.update(now, sample)) else {
            return Ok(());
        };
        self.media_stalls += 1;
        tracing::info!(
            stall = stall.describe(),
            received = sample.received,
            sent = sample.sent,
            "media stalled; repairing the path"
        );
        self.set_state(CallState::Reconnecting);
        self.deadline = Some(now + self.config.reconnect_timeout);
        self.restart_ice(false).await
    }

    /// Each [`ADDRESS_CHECK`]: when one of our local addresses went (another network), the
    /// path the call uses may be gone with it, so ICE restarts at once (webrtc-rs binds
    /// afresh on a restart) rather than after the media has stalled. The caller restarts;
    /// the callee asks the caller to.
    async fn watch_addresses(&mut self) -> Result<(), EndReason> {
        let Some(change) = self
            .addresses
            .as_mut()
            .and_then(|watch| watch.poll(Instant::now()))
        else {
            return Ok(());
        };
        if self.transport_up_at.is_none() {
            // Still setting up: gathering binds on what there is now.
            return Ok(());
        }
        if change.removed.is_empty() && self.state != CallState::Reconnecting {
            // Only a new address (a cable plugged in beside the Wi-Fi): the path in use is
            // still there, and a restart would cost a moment of audio for nothing. A call
            // whose media has stopped restarts anyway (the new one may be the way out).
            tracing::debug!(?change, "a local address came; the call's path stays");
            return Ok(());
        }
        self.address_changes += 1;
        tracing::info!(
            added = change.added.len(),
            removed = change.removed.len(),
            "our network changed; restarting ICE"
        );
        tracing::debug!(?change, "local addresses");
        if self.connected_at.is_some() && self.state != CallState::Reconnecting {
            self.set_state(CallState::Reconnecting);
            self.deadline = Some(Instant::now() + self.config.reconnect_timeout);
        }
        // The signaling connection went out from an address that may be gone too.
        self.signaling.reconnect().await;
        match self.role {
            Role::Caller => self.restart_ice(true).await,
            Role::Callee => {
                let request = RestartRequest {
                    call_id: self.call_id.clone(),
                };
                self.send(CallSignal::RestartRequest(request)).await
            }
        }
    }

    /// The deadline while connected: the end of `--duration`, or the tail after the input
    /// ended, whichever is first.
    fn refresh_deadline(&mut self) {
        if self.state != CallState::Connected {
            return;
        }
        let by_duration = self
            .connected_at
            .zip(self.config.max_duration)
            .map(|(at, max)| at + max);
        let by_input = self
            .input_ended_at
            .zip(self.config.hang_up_after_input)
            .map(|(at, tail)| at + tail);
        self.deadline = match (by_duration, by_input) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn on_deadline(&mut self) -> Option<EndReason> {
        let (reason, detail) = match self.state {
            CallState::Ringing => (
                HangupReason::NoAnswer,
                format!("no answer within {:?}", self.config.ring_timeout),
            ),
            CallState::Connecting => (HangupReason::Failed, self.not_connected()),
            CallState::Reconnecting => (
                HangupReason::Failed,
                format!(
                    "the media path did not come back within {:?}",
                    self.config.reconnect_timeout
                ),
            ),
            CallState::Connected => (
                HangupReason::Normal,
                if self.input_ended_at.is_some() {
                    "the input ended".to_owned()
                } else {
                    "the call reached its duration".to_owned()
                },
            ),
            CallState::Ended => return None,
        };
        Some(EndReason {
            by: Side::Local,
            reason,
            detail,
        })
    }

    /// Why a call that was not connected in time was not.
    fn not_connected(&mut self) -> String {
        let within = self.config.connect_timeout;
        if self.transport_up_at.is_none() {
            return format!("no media path within {within:?}");
        }
        let sample = self.flow_sample();
        format!(
            "the connection came up but media did not go both ways within {within:?} \
             ({} packets received from the peer, {} of ours acknowledged by it)",
            sample.received,
            if sample.heard > 0 { "some" } else { "none" }
        )
    }

    /// Divides the send-side estimate between audio and our video layers.
    fn share_video_bandwidth(&self) {
        if self.connected_at.is_some() {
            self.pipeline
                .share_video_bandwidth(self.estimate_bps.load(Ordering::Relaxed), &[true]);
        }
    }

    /// Once a second: feed the receiver reports' loss and the bandwidth estimate to the
    /// rate controller, and the result to the encoder.
    async fn on_tick(&mut self) {
        if self.connected_at.is_none() {
            return;
        }
        if let Some(path) = self.current_media_path().await {
            if self.media_path != Some(path) {
                tracing::info!(path, "the media path");
            }
            self.media_path = Some(path);
        }
        let now = Instant::now();
        let red = self.payload_types().red.is_some();
        let tick = self.feedback.tick(now, red, &self.pipeline.control);
        let decision = tick.decision;
        let jitter = self.pipeline.inbound(PEER_STREAM).receive.stats();
        self.timeline.push(TimelinePoint {
            t_s: self.connected_at.map_or(0.0, |at| {
                round(now.saturating_duration_since(at).as_secs_f64(), 2)
            }),
            bitrate_bps: decision.bitrate_bps,
            fec_loss_percent: decision.loss_percent,
            red_depth: decision.red_depth,
            frame_ms: decision.frame.millis(),
            reported_loss_percent: tick
                .reported_loss
                .map(|fraction| round(fraction * 100.0, 2)),
            rtt_ms: tick.rtt.map(ms),
            congested: self.feedback.rate.congested(),
            jitter_target_ms: jitter.map(|j| round(j.target_delay_ms, 1)),
            jitter_current_ms: jitter.map(|j| round(j.current_delay_ms, 1)),
        });
    }

    async fn finish(mut self, end: EndReason) -> CallSummary {
        self.state = CallState::Ended;
        if let Err(err) = self.pc.close().await {
            tracing::debug!(%err, "closing the peer connection");
        }
        for err in self.pipeline.stop().await {
            tracing::warn!(%err, "media output");
        }
        self.summary(end)
    }

    fn summary(&mut self, end: EndReason) -> CallSummary {
        let mut summary = empty_summary(self.role, &self.call_id, self.peer_key, end);
        let duration = self.connected_at.map_or(Duration::ZERO, |at| at.elapsed());
        summary.connected = self.connected_at.is_some();
        summary.media_started = self.pipeline.started();
        summary.input_started = self.pipeline.input_started();
        summary.media_stalls = self.media_stalls;
        summary.timeline = std::mem::take(&mut self.timeline);
        summary.setup_ms = self.setup_ms;
        summary.duration_s = round(duration.as_secs_f64(), 3);
        summary.ice_restarts = self.ice_restarts;
        summary.address_changes = self.address_changes;
        summary.media_path = self.media_path;
        summary.sent = self.pipeline.sent_summary(duration);
        summary.received = self.pipeline.inbound(PEER_STREAM).summary(duration);
        summary.video_sent = self.pipeline.video_sent_summary(duration);
        summary.video_received = self
            .pipeline
            .video_inbound(PEER_STREAM)
            .map(|video| video.summary(duration));
        summary.e2ee = self.config.e2ee.as_deref().map(|crypto| E2eeSummary {
            messages_received: self.messages.received.load(Ordering::Relaxed),
            messages_dropped: self.messages.dropped.load(Ordering::Relaxed),
            ..E2eeSummary::of(crypto)
        });
        summary
    }
}

impl Session {
    /// `relay` when either end of the selected candidate pair is a TURN relay, `direct`
    /// otherwise; `None` while no pair is selected.
    async fn current_media_path(&self) -> Option<&'static str> {
        use rtc::peer_connection::transport::RTCIceCandidateType;
        use rtc::statistics::StatsSelector;
        use rtc::statistics::report::RTCStatsReportEntry;
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let selected = &report.transport()?.selected_candidate_pair_id;
        let pair = report
            .candidate_pairs()
            .find(|pair| &pair.stats.id == selected)?;
        // rtc names the candidates `RTCLocalIceCandidate_<id>` and `RTCRemoteIceCandidate_<id>`
        // but the pair only `<id>`.
        let relayed = report.iter().any(|entry| match entry {
            RTCStatsReportEntry::LocalCandidate(candidate)
            | RTCStatsReportEntry::RemoteCandidate(candidate) => {
                candidate.candidate_type == RTCIceCandidateType::Relay
                    && [&pair.local_candidate_id, &pair.remote_candidate_id]
                        .into_iter()
                        .any(|id| {
                            candidate.stats.id == *id
                                || candidate
                                    .stats
                                    .id
                                    .strip_suffix(id.as_str())
                                    .is_some_and(|prefix| prefix.ends_with('_'))
                        })
            }
            _ => false,
        });
        Some(if relayed { "relay" } else { "direct" })
    }
}

/// How long a call waits for the signaling server's TURN credentials before it goes on
/// without its relay.
const RELAY_ASK: Duration = Duration::from_secs(2);

/// The call's ICE servers and, unless a TURN server is named already, the signaling
/// server's TURN relay with fresh credentials (none when it runs none or does not answer
/// within [`RELAY_ASK`]). Only the relay's UDP URLs: webrtc-rs's client speaks TURN over
/// UDP only (webrtc-rs/webrtc#848).
async fn with_relay(ice: &IceConfig, signaling: &SignalingSender) -> IceConfig {
    let mut ice = ice.clone();
    let has_turn = ice
        .servers
        .iter()
        .any(|server| server.urls.iter().any(|url| url.starts_with("turn")));
    if has_turn {
        return ice;
    }
    match tokio::time::timeout(RELAY_ASK, signaling.turn_credentials()).await {
        Ok(Ok(servers)) => {
            for server in servers {
                let urls: Vec<String> = server
                    .urls
                    .into_iter()
                    .filter(|url| url.starts_with("turn:") && !url.contains("transport=tcp"))
                    .collect();
                if !urls.is_empty() {
                    ice.servers.push(IceServer {
                        urls,
                        username: Some(server.username),
                        credential: Some(server.credential),
                    });
                }
            }
        }
        Ok(Err(err)) => tracing::debug!(%err, "no TURN credentials from signaling"),
        Err(_) => tracing::debug!("signaling did not answer for TURN credentials in time"),
    }
    ice
}

/// Whether a signal failed for want of a connection (worth sending again once the client
/// has reconnected), not because the server refused it.
fn connection_trouble(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Disconnected | ClientError::Timeout | ClientError::Connect { .. }
    )
}

fn ms(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0, 1)
}

/// The rate controller of a call's audio sender: within the bandwidth estimator's bounds,
/// starting at the configured bitrate, with the configured frame, and SFrame's bytes in the
/// overhead when the call is encrypted end to end.
pub(super) fn send_rate_controller(
    encoder: &crate::audio::codec::EncoderConfig,
    e2ee: bool,
) -> RateController {
    let mut rate = RateController::new(
        peer::MIN_BITRATE_BPS,
        peer::MAX_BITRATE_BPS,
        encoder.bitrate_bps,
    );
    rate.set_frame(encoder.frame);
    if e2ee {
        // SFrame's bytes share the link with the Opus payload.
        rate.set_overhead_bytes(PACKET_OVERHEAD_BYTES + SFRAME_OVERHEAD_BYTES);
    }
    rate
}

/// A host candidate moved to `addr` (the relay's), or `None` for any other kind:
/// `candidate:<foundation> <component> <transport> <priority> <ip> <port> typ host ...`.
fn at_address(candidate: &str, addr: std::net::SocketAddr) -> Option<String> {
    let mut fields: Vec<String> = candidate.split_whitespace().map(str::to_owned).collect();
    if fields.len() < 8 || fields[7] != "host" {
        return None;
    }
    fields[4] = addr.ip().to_string();
    fields[5] = addr.port().to_string();
    Some(fields.join(" "))
}

/// `sdp` as the peer should see it with `advertise` (see [`Session::outgoing_sdp`]).
fn advertised_description(sdp: &str, advertise: Advertise) -> String {
    let relay = match advertise {
        Advertise::Gathered => return sdp.to_owned(),
        Advertise::Nothing => None,
        Advertise::Address(addr) => Some(addr),
    };
    let mut placed = false;
    sdp.split_inclusive('\n')
        .filter_map(|line| {
            if line.starts_with("a=end-of-candidates") {
                return None;
            }
            let Some(candidate) = line.strip_prefix("a=") else {
                return Some(line.to_owned());
            };
            if !candidate.starts_with("candidate:") {
                return Some(line.to_owned());
            }
            let rewritten = relay.and_then(|addr| at_address(candidate.trim_end(), addr));
            match rewritten {
                Some(candidate) if !placed => {
                    placed = true;
                    Some(format!("a={candidate}\r\n"))
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n\
        a=candidate:2 1 udp 2130706431 192.168.1.9 50002 typ host\r\n\
        a=candidate:3 1 udp 1694498815 203.0.113.7 40000 typ srflx raddr 10.0.0.5 rport 50000\r\n\
        a=end-of-candidates\r\na=mid:0\r\n";

    #[test]
    fn descriptions_carry_only_the_advertised_candidate() {
        assert_eq!(advertised_description(SDP, Advertise::Gathered), SDP);
        let none = advertised_description(SDP, Advertise::Nothing);
        assert!(!none.contains("candidate"), "{none}");
        assert!(
            none.contains("a=mid:0\r\n") && none.starts_with("v=0\r\n"),
            "{none}"
        );
        let relay: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let one = advertised_description(SDP, Advertise::Address(relay));
        let candidates: Vec<&str> = one.lines().filter(|l| l.contains("candidate")).collect();
        assert_eq!(
            candidates,
            ["a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host"],
            "{one}"
        );
        assert!(
            !one.contains("10.0.0.5") && !one.contains("203.0.113.7"),
            "{one}"
        );
    }

    #[test]
    fn only_host_candidates_move_to_the_relay() {
        let relay: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            at_address("candidate:1 1 udp 1 10.0.0.5 5 typ host", relay).as_deref(),
            Some("candidate:1 1 udp 1 127.0.0.1 4000 typ host")
        );
        assert_eq!(
            at_address("candidate:3 1 udp 1 1.2.3.4 5 typ srflx", relay),
            None
        );
        assert_eq!(at_address("candidate:garbage", relay), None);
    }
}
