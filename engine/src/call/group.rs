//! A group call through an SFU: one peer connection to the SFU, our audio published on it,
//! and one received stream per other participant (each SFU-side offer adds streams; the
//! stream id names the participant). Each received stream has its own jitter buffer,
//! decoder and playout thread, recorded to `<dir>/<participant>.wav` when a directory is
//! given. Signaling to the SFU uses the room id as `call_id`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sotto_signaling::protocol::{Answer, Hangup, HangupReason, IdentityKey, Offer, RoomId};
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

use super::media::{
    self, CaptureEnd, EncoderControl, MediaCounters, OutFrame, PayloadTypes, Receive,
};
use super::peer::{self, OPUS_PAYLOAD_TYPE, Peer, PeerEvent};
use super::reports::SendFeedback;
use super::session::{TICK, send_rate_controller};
use super::{CallError, E2eeSummary, IceConfig, SentSummary};
use crate::audio::codec::EncoderConfig;
use crate::audio::jitter::JitterConfig;
use crate::audio::{AudioSink, InputSpec, OutputSpec, open_sink, open_source};
use crate::e2ee::media::MediaCrypto;
use crate::signaling::{CallSignal, SignalingSender};

/// Through the SFU: plain Opus on our payload type, no RED.
const OPUS_ONLY: PayloadTypes = PayloadTypes {
    opus: OPUS_PAYLOAD_TYPE,
    red: None,
};

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
}

/// What one other participant's stream looked like.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReceivedStream {
    /// Their identity (the stream id the SFU gave).
    pub participant: String,
    /// RTP packets received.
    pub packets: u64,
    /// Frames lost (concealed).
    pub lost: u64,
    /// Mean jitter-buffer delay, ms.
    pub jitter_buffer_mean_ms: f64,
    /// Audio concealed, ms.
    pub concealed_ms: f64,
    /// The recording, if any.
    pub recording: Option<PathBuf>,
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
    /// What we heard, per participant.
    pub received: Vec<ReceivedStream>,
    /// End-to-end media encryption, when the call had it.
    pub e2ee: Option<E2eeSummary>,
    /// Why it ended.
    pub end: String,
}

struct Stream {
    receive: Arc<Receive>,
    counters: Arc<MediaCounters>,
    playout: std::thread::JoinHandle<Result<(), crate::audio::AudioError>>,
    recording: Option<PathBuf>,
}

/// Runs a group call in room `room` through `sfu` until it ends; returns its summary.
/// `signals` carries what the SFU sends for this room.
pub async fn run(
    sender: SignalingSender,
    mut signals: mpsc::UnboundedReceiver<CallSignal>,
    room: RoomId,
    sfu: IdentityKey,
    config: GroupConfig,
) -> Result<GroupSummary, CallError> {
    let source = open_source(&config.input)?;
    if let Some(dir) = &config.record_dir {
        std::fs::create_dir_all(dir).map_err(|err| {
            CallError::Audio(crate::audio::AudioError::Wav {
                path: dir.clone(),
                message: err.to_string(),
            })
        })?;
    }
    let Peer {
        pc,
        track,
        ssrc,
        estimate_bps,
        reported_loss,
        events: mut peer_events,
    } = peer::build(&config.ice, false).await?; // The SFU forwards plain Opus.
    let call_id = room.0.clone();
    let offer = pc
        .create_offer(None)
        .await
        .map_err(|e| CallError::Media(format!("creating the offer: {e}")))?;
    let offer_sdp = offer.sdp.clone();
    pc.set_local_description(offer)
        .await
        .map_err(|e| CallError::Media(format!("applying our offer: {e}")))?;
    sender
        .send_call_signal(
            sfu,
            CallSignal::Offer(Offer {
                call_id: call_id.clone(),
                sdp: offer_sdp,
                ice_restart: false,
                e2ee: None,
            }),
        )
        .await
        .map_err(|e| CallError::Signaling(format!("the SFU could not be reached: {e}")))?;

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(MediaCounters::default());
    let control = Arc::new(EncoderControl::new(&config.encoder));
    // The SFU reports what it lost of our uplink: the encoder's FEC is sized for that (the
    // listeners' downlinks end at the SFU, which does not pass their reports on), and the
    // bitrate follows congestion as in a one-to-one call. No RED: the SFU forwards plain
    // Opus.
    let mut feedback = SendFeedback::new(
        send_rate_controller(&config.encoder, config.e2ee.is_some()),
        reported_loss,
        estimate_bps,
    );
    let mut tick = tokio::time::interval(TICK);
    let (capture_end_tx, mut capture_end) = mpsc::unbounded_channel();
    let mut source = Some(source);
    let mut audio_level_id = None;
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    let mut threads = Vec::new();
    let mut connected_at: Option<Instant> = None;
    let mut deadline = Instant::now() + Duration::from_secs(30);
    let end: String = loop {
        tokio::select! {
            signal = signals.recv() => match signal {
                Some(CallSignal::Answer(answer)) => {
                    if let Ok(remote) = peer::check_remote_sdp(&answer.sdp) {
                        audio_level_id = remote.audio_level_id;
                    }
                    let applied = match RTCSessionDescription::answer(answer.sdp) {
                        Ok(desc) => pc.set_remote_description(desc).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(err) = applied {
                        break format!("the SFU's answer was refused: {err}");
                    }
                }
                Some(CallSignal::Offer(offer)) => {
                    // The SFU adds streams: answer its renegotiation.
                    let answered = async {
                        let desc = RTCSessionDescription::offer(offer.sdp).map_err(|e| e.to_string())?;
                        pc.set_remote_description(desc).await.map_err(|e| e.to_string())?;
                        let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
                        let sdp = answer.sdp.clone();
                        pc.set_local_description(answer).await.map_err(|e| e.to_string())?;
                        Ok::<String, String>(sdp)
                    }
                    .await;
                    match answered {
                        Ok(sdp) => {
                            let reply = CallSignal::Answer(Answer { call_id: call_id.clone(), sdp, e2ee: None });
                            if let Err(err) = sender.send_call_signal(sfu, reply).await {
                                break format!("the SFU could not be reached: {err}");
                            }
                        }
                        Err(err) => break format!("the SFU's offer was refused: {err}"),
                    }
                }
                Some(CallSignal::Hangup(Hangup { .. })) => break "the SFU ended the call".into(),
                // ICE-lite SFU candidates come in its SDP; subscription wishes go to SFUs.
                Some(CallSignal::Candidate(_) | CallSignal::Subscription(_)) => {}
                None => break "the signaling connection was closed".into(),
            },
            event = peer_events.recv() => match event {
                Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => {
                    if connected_at.is_none() {
                        let started = Instant::now();
                        connected_at = Some(started);
                        deadline = config.max_duration.map_or(started + Duration::from_secs(86_400), |d| started + d);
                        let (frames_tx, frames_rx) = mpsc::channel::<OutFrame>(50);
                        tokio::spawn(media::run_sender(
                            track.clone(),
                            ssrc,
                            OPUS_ONLY,
                            frames_rx,
                            control.clone(),
                            counters.clone(),
                            config.e2ee.clone(),
                        ));
                        if let Some(source) = source.take() {
                            let capture = media::spawn_capture(media::Capture {
                                source,
                                config: config.encoder.clone(),
                                control: control.clone(),
                                counters: counters.clone(),
                                stop: stop.clone(),
                                started,
                                frames: frames_tx,
                                ended: capture_end_tx.clone(),
                            });
                            match capture {
                                Ok(thread) => threads.push(thread),
                                Err(err) => break format!("starting the capture thread: {err}"),
                            }
                        }
                    }
                }
                Some(PeerEvent::State(RTCPeerConnectionState::Failed)) => {
                    break "the media path to the SFU failed".into();
                }
                Some(PeerEvent::Track(remote)) => {
                    let participant = remote.stream_id().await;
                    let participant = if participant.is_empty() { format!("ssrc-{}", remote.ssrcs().await.first().copied().unwrap_or(0)) } else { participant };
                    if streams.contains_key(&participant) {
                        continue;
                    }
                    let recording = config.record_dir.as_ref().map(|dir| dir.join(format!("{participant}.wav")));
                    let sink: Box<dyn AudioSink> = match &recording {
                        Some(path) => open_sink(&OutputSpec::Wav(path.clone()))?,
                        None => open_sink(&OutputSpec::Null)?,
                    };
                    let receive = Arc::new(Receive::default());
                    let stream_counters = Arc::new(MediaCounters::default());
                    tokio::spawn(media::run_receiver(
                        remote,
                        OPUS_ONLY,
                        audio_level_id,
                        config.jitter.clone(),
                        receive.clone(),
                        stream_counters.clone(),
                        config.e2ee.clone(),
                    ));
                    let playout = media::spawn_playout(sink, receive.clone(), stream_counters.clone(), stop.clone(), Instant::now(), config.decoder_complexity)
                        .map_err(|e| CallError::Media(format!("starting a playout thread: {e}")))?;
                    streams.insert(participant, Stream { receive, counters: stream_counters, playout, recording });
                }
                Some(_) => {}
                None => break "the peer connection stopped".into(),
            },
            ended = capture_end.recv() => match ended {
                Some(CaptureEnd::InputEnded) => {
                    if let Some(tail) = config.leave_after_input {
                        deadline = deadline.min(Instant::now() + tail);
                    }
                }
                Some(CaptureEnd::Failed(message)) => break format!("audio input: {message}"),
                Some(CaptureEnd::Stopped) | None => {}
            },
            _ = tick.tick() => {
                if connected_at.is_some() {
                    feedback.tick(Instant::now(), false, &control);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                break if connected_at.is_some() { "left the room".into() } else { "no media path to the SFU within 30 s".into() };
            }
        }
    };

    let _ = sender
        .send_call_signal(
            sfu,
            CallSignal::Hangup(Hangup {
                call_id: call_id.clone(),
                reason: HangupReason::Normal,
            }),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let _ = pc.close().await;
    let duration = connected_at.map_or(Duration::ZERO, |at| at.elapsed());
    let mut received = Vec::new();
    let mut playouts = Vec::new();
    for (participant, stream) in streams {
        let stats = stream.receive.stats().unwrap_or_default();
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let samples = load(&stream.counters.delay_samples).max(1);
        received.push(ReceivedStream {
            participant,
            packets: load(&stream.counters.packets_received),
            lost: stats.lost,
            jitter_buffer_mean_ms: (load(&stream.counters.delay_sum_us) as f64
                / samples as f64
                / 100.0)
                .round()
                / 10.0,
            concealed_ms: stats.concealed_ms,
            recording: stream.recording,
        });
        playouts.push(stream.playout);
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
        for playout in playouts {
            let _ = playout.join();
        }
    })
    .await;
    let secs = duration.as_secs_f64().max(1e-3);
    Ok(GroupSummary {
        room: room.0,
        connected: connected_at.is_some(),
        duration_s: (duration.as_secs_f64() * 1000.0).round() / 1000.0,
        sent: SentSummary {
            packets: counters.packets_sent.load(Ordering::Relaxed),
            payload_kbps: (counters.payload_bytes_sent.load(Ordering::Relaxed) as f64 * 8.0
                / secs
                / 10.0)
                .round()
                / 100.0,
            dtx_frames: counters.dtx_frames.load(Ordering::Relaxed),
            final_bitrate_bps: counters.bitrate_bps.load(Ordering::Relaxed),
            final_loss_percent: counters.loss_percent.load(Ordering::Relaxed),
        },
        received,
        e2ee: config.e2ee.as_deref().map(E2eeSummary::of),
        end,
    })
}
