//! A group call through an SFU: one peer connection to the SFU, our audio (and video, in
//! simulcast layers) published on it, and per other participant one received audio
//! stream and one video stream (each SFU-side offer adds streams; the stream id names the
//! participant). Each received audio stream has its own jitter buffer, decoder and
//! playout thread, recorded to `<dir>/<participant>.wav` when a directory is given; each
//! video stream its own decode thread, recorded to `<dir>/<participant>.y4m`. Signaling
//! to the SFU uses the room id as `call_id`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde::Serialize;
use sotto_signaling::protocol::{
    Answer, Hangup, HangupReason, IdentityKey, Offer, RoomId, Subscription,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, RTCSessionDescription};

use super::media::{CaptureEnd, InputGate, PayloadTypes};
use super::peer::{self, OPUS_PAYLOAD_TYPE, PeerEvent};
use super::pipeline::{Pipeline, SendParams, VideoParams, round};
use super::reports::SendFeedback;
use super::session::{TICK, VIDEO_TICK, send_rate_controller};
use super::video::{ExtensionIds, VideoReceivedSummary, VideoSentSummary, plan_layers};
use super::{CallError, E2eeSummary, IceConfig, ReceivedSummary, SentSummary};
use crate::audio::codec::EncoderConfig;
use crate::audio::jitter::JitterConfig;
use crate::audio::{AudioSink, AudioSource, InputSpec, OutputSpec, open_sink, open_source};
use crate::e2ee::media::MediaCrypto;
use crate::signaling::{CallSignal, SignalingSender};
use crate::video::{self, SinkFactory, VideoCodec, VideoOutput, VideoSpec};

/// Plain Opus on our payload type: what goes to and comes from the SFU until its SDP
/// says that it takes RED too.
const OPUS_ONLY: PayloadTypes = PayloadTypes {
    opus: OPUS_PAYLOAD_TYPE,
    red: None,
};

/// Wishes about the video a running group call receives, passed on to the SFU as
/// `subscription` messages (PROTOCOL.md): pause a participant's video, resume it, or
/// cap the simulcast layer (for a video shown small). Made with [`GroupControl::new`];
/// the other half goes in [`GroupConfig::control`].
#[derive(Debug, Clone)]
pub struct GroupControl(mpsc::UnboundedSender<Wish>);

/// The call's half of a [`GroupControl`].
#[derive(Debug, Default)]
pub struct GroupWishes(Mutex<Option<mpsc::UnboundedReceiver<Wish>>>);

/// One wish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wish {
    /// Stop receiving this participant's video.
    Pause(String),
    /// Receive it again (from its next keyframe).
    Resume(String),
    /// The largest layer wanted (0 the smallest, 2 the largest) of one participant, or
    /// of everyone (now and later) with `None`.
    MaxQuality(Option<String>, u8),
}

impl GroupControl {
    /// A control and the half that goes in [`GroupConfig::control`].
    pub fn new() -> (GroupControl, Arc<GroupWishes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            GroupControl(tx),
            Arc::new(GroupWishes(Mutex::new(Some(rx)))),
        )
    }

    /// Asks for `wish`; false once the call has ended.
    pub fn send(&self, wish: Wish) -> bool {
        self.0.send(wish).is_ok()
    }
}

/// How a group call is set up.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// What we say.
    pub input: InputSpec,
    /// Where each participant's audio is recorded (`<dir>/<participant>.wav`); `None`
    /// discards it (mixing to a device is not done yet).
    pub record_dir: Option<PathBuf>,
    /// Opus settings.
    pub encoder: EncoderConfig,
    /// Jitter buffer tuning (one buffer per participant).
    pub jitter: JitterConfig,
    /// ICE.
    pub ice: IceConfig,
    /// Leave after this long.
    pub max_duration: Option<Duration>,
    /// When the input is a file, leave this long after it ends.
    pub leave_after_input: Option<Duration>,
    /// SFrame keys from the room's MLS group: our audio is encrypted end to end, so the
    /// SFU forwards ciphertext it cannot read, and every stream we receive must open under
    /// the group's keys (others are dropped and counted). Rekey it
    /// ([`MediaCrypto::rekey`]) after every commit that changes the group. `None`: SRTP to
    /// the SFU only, which then sees the audio.
    pub e2ee: Option<Arc<MediaCrypto>>,
    /// The Opus decoder's complexity for every stream (see
    /// [`CallConfig::decoder_complexity`](super::CallConfig::decoder_complexity)).
    pub decoder_complexity: u8,
    /// What we show; [`VideoSpec::None`] joins with audio only (we still receive others'
    /// video).
    pub video: VideoSpec,
    /// Simulcast layers to send (1 to 3; fewer for small sources).
    pub video_layers: usize,
    /// The codec we send video in (H.264: one encoder per layer).
    pub video_codec: VideoCodec,
    /// Whether video is recorded too when there is a `record_dir` (Y4M is raw: about
    /// 10 MB a second a stream at 360p).
    pub record_video: bool,
    /// The largest simulcast layer wanted of everyone's video (0 to 2; a small window
    /// needs no more than the smallest); `None`: the largest the bandwidth allows.
    pub max_quality: Option<u8>,
    /// Live wishes about received video, from a [`GroupControl`].
    pub control: Option<Arc<GroupWishes>>,
    /// Where each participant's decoded video goes besides its recording (a window, a
    /// quality meter); `None` keeps only the recording.
    pub video_sink: Option<SinkFactory>,
}

impl GroupConfig {
    /// Audio from `input`, no video, no recording, no end-to-end encryption, defaults
    /// elsewhere.
    pub fn new(input: InputSpec) -> GroupConfig {
        GroupConfig {
            input,
            record_dir: None,
            encoder: EncoderConfig::default(),
            jitter: JitterConfig::default(),
            ice: IceConfig::default(),
            max_duration: None,
            leave_after_input: None,
            e2ee: None,
            decoder_complexity: crate::audio::codec::DEFAULT_DECODER_COMPLEXITY,
            video: VideoSpec::None,
            video_layers: 3,
            video_codec: VideoCodec::default(),
            record_video: true,
            max_quality: None,
            control: None,
            video_sink: None,
        }
    }
}

/// What one other participant's stream looked like.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReceivedStream {
    /// Their identity (the stream id the SFU gave).
    pub participant: String,
    /// Their audio, counted as a one-to-one call counts the peer's.
    #[serde(flatten)]
    pub audio: ReceivedSummary,
    /// The recording, if any.
    pub recording: Option<PathBuf>,
    /// Their video, when they sent any.
    pub video: Option<VideoReceivedSummary>,
    /// Its recording, if any.
    pub video_recording: Option<PathBuf>,
}

/// The summary of a group call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupSummary {
    /// The room.
    pub room: String,
    /// Whether media flowed.
    pub connected: bool,
    /// Connected time, s.
    pub duration_s: f64,
    /// What we sent.
    pub sent: SentSummary,
    /// Our video, when we sent any.
    pub video_sent: Option<VideoSentSummary>,
    /// What we heard, per participant.
    pub received: Vec<ReceivedStream>,
    /// End-to-end media encryption, when the call had it.
    pub e2ee: Option<E2eeSummary>,
    /// Why it ended.
    pub end: String,
}

/// How long the media path to the SFU may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A file input waits at its start until the SFU says someone receives our audio (a
/// `layers` message for its media section), but no longer than this after the media
/// path is up: a room may be empty, and an SFU may not say.
const HEARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a group call in room `room` through `sfu` until it ends; returns its summary.
/// `signals` carries what the SFU sends for this room. Whatever ends the call (an error
/// included), the SFU is told, the peer connection closed and every media thread joined.
pub async fn run(
    sender: SignalingSender,
    signals: mpsc::UnboundedReceiver<CallSignal>,
    room: RoomId,
    sfu: IdentityKey,
    config: GroupConfig,
) -> Result<GroupSummary, CallError> {
    let source = open_source(&config.input)?;
    let video_source = video::open_source(&config.video)?;
    if let Some(dir) = &config.record_dir {
        std::fs::create_dir_all(dir).map_err(|err| {
            CallError::Audio(crate::audio::AudioError::Wav {
                path: dir.clone(),
                message: err.to_string(),
            })
        })?;
    }
    let video_plan = video_source.as_ref().map(|source| {
        let (width, height) = source.size();
        plan_layers(width, height, config.video_layers.clamp(1, 3))
    });
    // RED offered: the SFU forwards it as it comes, so our copies repair the loss on
    // both hops (and the SFU reports our listeners' loss to our encoder). VP8 always, so
    // that we see the others.
    let layers = video_plan.as_ref().map_or(0, Vec::len);
    let mut peer = peer::build(&config.ice, true, Some(layers), config.video_codec).await?;
    let (pipeline, capture_end) = Pipeline::new(&config.encoder, config.e2ee.clone());
    let mut call = GroupCall {
        call_id: room.0.clone(),
        sender,
        sfu,
        pc: peer.pc,
        track: peer.track,
        ssrc: peer.ssrc,
        pipeline,
        source: Mutex::new(Some(source)),
        video: Mutex::new(match (peer.video.take(), video_source, video_plan) {
            (Some(track), Some(source), Some(plan)) => Some(VideoParams {
                track,
                source,
                plan,
            }),
            _ => None,
        }),
        estimate_bps: peer.estimate_bps.clone(),
        video_mid: None,
        layers_wanted: [true; 3],
        recordings: BTreeMap::new(),
        video_recordings: BTreeMap::new(),
        video_tracks: BTreeMap::new(),
        audio_level_id: None,
        audio_mid: None,
        gate: Arc::new(InputGate::default()),
        send_types: OPUS_ONLY,
        receive_types: OPUS_ONLY,
        connected_at: None,
        deadline: Instant::now() + CONNECT_TIMEOUT,
        config,
    };
    let feedback = SendFeedback::new(
        send_rate_controller(&call.config.encoder, call.config.e2ee.is_some()),
        peer.reported_loss,
        peer.estimate_bps,
    );
    let ended = call.run(signals, peer.events, capture_end, feedback).await;
    call.finish(room, ended).await
}

/// A group call's state, owned by its task.
struct GroupCall {
    call_id: String,
    sender: SignalingSender,
    sfu: IdentityKey,
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pipeline: Pipeline,
    /// Our input until sending starts (behind a lock only so that the call is `Sync`
    /// across awaits; nothing contends for it).
    source: Mutex<Option<Box<dyn AudioSource>>>,
    /// Our video track, source and layers until sending starts (locked for the same
    /// reason).
    video: Mutex<Option<VideoParams>>,
    /// The send-side bandwidth estimate, bit/s (0 before the first feedback).
    estimate_bps: Arc<std::sync::atomic::AtomicU64>,
    /// Our video's MID (which `layers` messages name).
    video_mid: Option<String>,
    /// Per layer rank: whether anyone receives it, as the SFU last said (all until it
    /// says otherwise).
    layers_wanted: [bool; 3],
    /// Where each participant's stream is recorded.
    recordings: BTreeMap<String, Option<PathBuf>>,
    /// Where each participant's video is recorded.
    video_recordings: BTreeMap<String, Option<PathBuf>>,
    /// Each participant's video track id, as the SFU named it (for `subscription`).
    video_tracks: BTreeMap<String, String>,
    /// The extension id of the RFC 6464 level in the SFU's SDP.
    audio_level_id: Option<u8>,
    /// Our audio's MID (which `layers` messages name).
    audio_mid: Option<String>,
    /// Holds a file input at its start until someone hears it ([`HEARD_TIMEOUT`]).
    gate: Arc<InputGate>,
    /// What we send in: Opus, and RED once the SFU's answer takes it.
    send_types: PayloadTypes,
    /// What the SFU sends others' audio in, from its last offer.
    receive_types: PayloadTypes,
    connected_at: Option<Instant>,
    deadline: Instant,
    config: GroupConfig,
}

impl GroupCall {
    /// Offers to the SFU and runs until the call ends: why it ended, or the error that
    /// ended it.
    async fn run(
        &mut self,
        mut signals: mpsc::UnboundedReceiver<CallSignal>,
        mut peer_events: mpsc::UnboundedReceiver<PeerEvent>,
        mut capture_end: mpsc::UnboundedReceiver<CaptureEnd>,
        mut feedback: SendFeedback,
    ) -> Result<String, CallError> {
        self.offer().await?;
        let mut tick = tokio::time::interval(TICK);
        let mut video_tick = tokio::time::interval(VIDEO_TICK);
        let mut wishes = self.config.control.as_ref().and_then(|w| {
            w.0.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        });
        loop {
            tokio::select! {
                Some(wish) = async {
                    match wishes.as_mut() {
                        Some(wishes) => wishes.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.on_wish(wish).await?,
                signal = signals.recv() => match signal {
                    Some(signal) => {
                        if let Some(end) = self.on_signal(signal).await {
                            return Ok(end);
                        }
                    }
                    None => return Ok("the signaling connection was closed".into()),
                },
                event = peer_events.recv() => match event {
                    Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => self.on_connected(&mut feedback).await?,
                    Some(PeerEvent::State(RTCPeerConnectionState::Failed)) => {
                        return Ok("the media path to the SFU failed".into());
                    }
                    Some(PeerEvent::Track(remote)) => self.on_track(remote).await?,
                    Some(_) => {}
                    None => return Ok("the peer connection stopped".into()),
                },
                ended = capture_end.recv() => match ended {
                    Some(CaptureEnd::InputEnded) => {
                        if let Some(tail) = self.config.leave_after_input {
                            self.deadline = self.deadline.min(Instant::now() + tail);
                        }
                    }
                    Some(CaptureEnd::Failed(message)) => return Ok(format!("audio input: {message}")),
                    Some(CaptureEnd::Stopped) | None => {}
                },
                _ = tick.tick() => {
                    if let Some(at) = self.connected_at {
                        if at.elapsed() >= HEARD_TIMEOUT {
                            self.gate.open();
                        }
                        let red = self.send_types.red.is_some();
                        feedback.tick(Instant::now(), red, &self.pipeline.control);
                    }
                }
                _ = video_tick.tick() => {
                    if self.connected_at.is_some() {
                        self.share_bandwidth();
                    }
                }
                _ = tokio::time::sleep_until(self.deadline.into()) => {
                    return Ok(if self.connected_at.is_some() {
                        "left the room".into()
                    } else {
                        format!("no media path to the SFU within {}s", CONNECT_TIMEOUT.as_secs())
                    });
                }
            }
        }
    }

    async fn offer(&mut self) -> Result<(), CallError> {
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|e| CallError::Media(format!("creating the offer: {e}")))?;
        let sdp = offer.sdp.clone();
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| CallError::Media(format!("applying our offer: {e}")))?;
        self.video_mid = ExtensionIds::from_sdp(&sdp).map(|ids| ids.mid);
        // Our own offer, read with the parser for the SFU's: the first audio section's mid.
        self.audio_mid = peer::check_remote_sdp(&sdp)
            .ok()
            .and_then(|audio| audio.mid);
        self.send(CallSignal::Offer(Offer {
            call_id: self.call_id.clone(),
            sdp,
            ice_restart: false,
            e2ee: None,
        }))
        .await
    }

    async fn send(&self, signal: CallSignal) -> Result<(), CallError> {
        self.sender
            .send_call_signal(self.sfu, signal)
            .await
            .map_err(|e| CallError::Signaling(format!("the SFU could not be reached: {e}")))
    }

    /// Handles what the SFU sent; `Some(reason)` ends the call.
    async fn on_signal(&mut self, signal: CallSignal) -> Option<String> {
        match signal {
            CallSignal::Answer(answer) => {
                if let Ok(remote) = peer::check_remote_sdp(&answer.sdp) {
                    self.audio_level_id = remote.audio_level_id;
                    // Our offer's numbers, as the SFU's answer echoes them.
                    self.send_types.red = remote.red_payload_type;
                }
                let applied = match RTCSessionDescription::answer(answer.sdp) {
                    Ok(desc) => self
                        .pc
                        .set_remote_description(desc)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                applied
                    .err()
                    .map(|err| format!("the SFU's answer was refused: {err}"))
            }
            CallSignal::Offer(offer) => {
                // The SFU adds streams: answer its renegotiation (in the SFU's numbers).
                if let Ok(remote) = peer::check_remote_sdp(&offer.sdp) {
                    self.receive_types = PayloadTypes {
                        opus: remote.opus_payload_type,
                        red: remote.red_payload_type,
                    };
                }
                let sdp = match self.answer(offer.sdp).await {
                    Ok(sdp) => sdp,
                    Err(err) => return Some(format!("the SFU's offer was refused: {err}")),
                };
                let reply = CallSignal::Answer(Answer {
                    call_id: self.call_id.clone(),
                    sdp,
                    e2ee: None,
                });
                self.send(reply).await.err().map(|err| err.to_string())
            }
            CallSignal::Hangup(Hangup { .. }) => Some("the SFU ended the call".into()),
            CallSignal::Layers(layers) => {
                // Someone receives our audio: a file input may start.
                if self.audio_mid.as_deref() == Some(layers.mid.as_str())
                    && !layers.active.is_empty()
                {
                    self.gate.open();
                }
                // Dynacast: the SFU says which of our layers anyone receives.
                if self.video_mid.as_deref() == Some(layers.mid.as_str()) {
                    for (rank, wanted) in self.layers_wanted.iter_mut().enumerate() {
                        *wanted = layers.active.iter().any(|&a| usize::from(a) == rank);
                    }
                    tracing::debug!(active = ?layers.active, "layers anyone receives");
                }
                None
            }
            // ICE-lite SFU candidates come in its SDP; subscription wishes go to SFUs.
            // and restart requests go to callers (the SFU restarts nothing).
            CallSignal::Candidate(_)
            | CallSignal::Subscription(_)
            | CallSignal::RestartRequest(_) => None,
        }
    }

    async fn answer(&self, offer: String) -> Result<String, String> {
        let desc = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
        self.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| e.to_string())?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(|e| e.to_string())?;
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(sdp)
    }

    /// Divides the send-side estimate between audio and our video layers (the layers
    /// nobody receives get nothing).
    fn share_bandwidth(&self) {
        let estimate = self.estimate_bps.load(std::sync::atomic::Ordering::Relaxed);
        self.pipeline
            .share_video_bandwidth(estimate, &self.layers_wanted);
    }

    /// The media path is up: start the clock and send.
    async fn on_connected(&mut self, feedback: &mut SendFeedback) -> Result<(), CallError> {
        if self.connected_at.is_some() {
            return Ok(());
        }
        let started = self.pipeline.start_clock();
        self.connected_at = Some(started);
        self.deadline = self
            .config
            .max_duration
            .map_or(started + Duration::from_secs(86_400), |d| started + d);
        let source = self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(source) = source {
            feedback.start(self.send_types.red.is_some(), &self.pipeline.control);
            self.pipeline
                .start_sending(SendParams {
                    track: self.track.clone(),
                    ssrc: self.ssrc,
                    payload_types: self.send_types,
                    source,
                    encoder: self.config.encoder.clone(),
                    gate: self.gate.clone(),
                })
                .map_err(CallError::Media)?;
        }
        let pending = self
            .video
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(video) = pending {
            let local = self.pc.local_description().await;
            self.pipeline
                .start_video(video, local.as_ref().map(|desc| desc.sdp.as_str()))
                .map_err(CallError::Media)?;
        }
        Ok(())
    }

    /// A participant's stream arrived: receive it and play it (to its recording).
    async fn on_track(&mut self, remote: Arc<dyn TrackRemote>) -> Result<(), CallError> {
        let participant = remote.stream_id().await;
        let participant = if participant.is_empty() {
            format!(
                "ssrc-{}",
                remote.ssrcs().await.first().copied().unwrap_or(0)
            )
        } else {
            participant
        };
        if remote.kind().await == RtpCodecKind::Video {
            return self.on_video_track(participant, remote).await;
        }
        if self.pipeline.has_inbound(&participant) {
            return Ok(());
        }
        let recording = self
            .config
            .record_dir
            .as_ref()
            .map(|dir| dir.join(format!("{participant}.wav")));
        let sink: Box<dyn AudioSink> = match &recording {
            Some(path) => open_sink(&OutputSpec::Wav(path.clone()))?,
            None => open_sink(&OutputSpec::Null)?,
        };
        self.recordings.insert(participant.clone(), recording);
        self.pipeline.receive(
            &participant,
            remote,
            self.receive_types,
            self.audio_level_id,
            self.config.jitter.clone(),
        );
        self.pipeline
            .play(&participant, sink, self.config.decoder_complexity)
            .map_err(CallError::Media)
    }

    /// Passes a wish about received video on to the SFU.
    async fn on_wish(&mut self, wish: Wish) -> Result<(), CallError> {
        let (who, paused, quality) = match wish {
            Wish::Pause(who) => (Some(who), Some(true), None),
            Wish::Resume(who) => (Some(who), Some(false), None),
            Wish::MaxQuality(who, quality) => {
                if who.is_none() {
                    self.config.max_quality = Some(quality);
                }
                (who, None, Some(quality))
            }
        };
        let tracks: Vec<String> = match &who {
            Some(who) => self.video_tracks.get(who).cloned().into_iter().collect(),
            None => self.video_tracks.values().cloned().collect(),
        };
        for track in tracks {
            self.subscribe(track, paused, quality).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        track: String,
        paused: Option<bool>,
        max_quality: Option<u8>,
    ) -> Result<(), CallError> {
        self.send(CallSignal::Subscription(Subscription {
            call_id: self.call_id.clone(),
            track,
            paused,
            max_quality,
        }))
        .await
    }

    /// A participant's video arrived: decode it (to its recording and the sink, if any).
    async fn on_video_track(
        &mut self,
        participant: String,
        remote: Arc<dyn TrackRemote>,
    ) -> Result<(), CallError> {
        if self.pipeline.has_video_inbound(&participant) {
            return Ok(());
        }
        let track = remote.track_id().await;
        if let Some(quality) = self.config.max_quality {
            self.subscribe(track.clone(), None, Some(quality)).await?;
        }
        self.video_tracks.insert(participant.clone(), track);
        let recording = self
            .config
            .record_dir
            .as_ref()
            .filter(|_| self.config.record_video)
            .map(|dir| dir.join(format!("{participant}.y4m")));
        let mut sinks = Vec::new();
        if let Some(path) = &recording {
            sinks.push(video::open_sink(&VideoOutput::Y4m(path.clone()))?);
        }
        if let Some(factory) = &self.config.video_sink {
            sinks.push(factory.open(&participant));
        }
        self.video_recordings.insert(participant.clone(), recording);
        self.pipeline
            .receive_video(&participant, remote, video::tee(sinks))
            .map_err(CallError::Media)
    }

    /// Tells the SFU we leave, closes the connection, stops the media and sums up.
    async fn finish(
        mut self,
        room: RoomId,
        ended: Result<String, CallError>,
    ) -> Result<GroupSummary, CallError> {
        let _ = self
            .send(CallSignal::Hangup(Hangup {
                call_id: self.call_id.clone(),
                reason: if ended.is_ok() {
                    HangupReason::Normal
                } else {
                    HangupReason::Failed
                },
            }))
            .await;
        if let Err(err) = self.pc.close().await {
            tracing::debug!(%err, "closing the connection to the SFU");
        }
        for err in self.pipeline.stop().await {
            tracing::warn!(%err, "a participant's output");
        }
        let end = ended?;
        let duration = self.connected_at.map_or(Duration::ZERO, |at| at.elapsed());
        let received = self
            .pipeline
            .inbound_streams()
            .map(|(participant, inbound)| ReceivedStream {
                participant: participant.clone(),
                audio: inbound.summary(duration),
                recording: self.recordings.get(participant).cloned().flatten(),
                video: self
                    .pipeline
                    .video_inbound(participant)
                    .map(|video| video.summary(duration)),
                video_recording: self.video_recordings.get(participant).cloned().flatten(),
            })
            .collect();
        Ok(GroupSummary {
            room: room.0,
            connected: self.connected_at.is_some(),
            duration_s: round(duration.as_secs_f64(), 3),
            sent: self.pipeline.sent_summary(duration),
            video_sent: self.pipeline.video_sent_summary(duration),
            received,
            e2ee: self.config.e2ee.as_deref().map(E2eeSummary::of),
            end,
        })
    }
}
