//! The media pipeline one-to-one and group calls share: what we send (a capture thread
//! feeding the encoder, an RTP sender task) and what we receive (per remote stream, a
//! receiver task filling a jitter buffer and a playout thread draining it), the counters
//! they keep, and the summaries made from them. It owns every thread and task it starts:
//! [`Pipeline::stop`] ends and joins them, and dropping a pipeline (an early return on an
//! error) still tells them all to stop. Video rides on the same clock and stop flag (see
//! [`super::video`]): one capture thread and sender task for our layers, and per remote
//! video stream a receiver task and a decode thread. Must not touch signaling or call
//! state; the call task decides when sending starts and which streams to play.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;

use super::media::{
    self, CaptureEnd, EncoderControl, InputGate, MediaCounters, OutFrame, PayloadTypes, Receive,
};
use super::peer::VideoTrack;
use super::video::{
    self as video_media, DecodeThread, ExtensionIds, LayerPlan, VideoCaptureEnd, VideoControl,
    VideoReceiveStats, VideoReceivedSummary, VideoSend, VideoSendCounters, VideoSentSummary,
};
use super::{ReceivedSummary, SentSummary};
use crate::audio::codec::EncoderConfig;
use crate::audio::jitter::JitterConfig;
use crate::audio::{AudioError, AudioSink, AudioSource};
use crate::e2ee::media::MediaCrypto;
use crate::video::{VideoError, VideoSink, VideoSource};

/// Encoded frames waiting for the RTP sender (a second of 20 ms frames).
const SEND_QUEUE_FRAMES: usize = 50;

/// How the pipeline's send side runs.
pub(super) struct SendParams {
    /// Our track on the peer connection.
    pub track: Arc<TrackLocalStaticRTP>,
    /// Its SSRC.
    pub ssrc: u32,
    /// The payload types agreed with the other end.
    pub payload_types: PayloadTypes,
    /// What we say.
    pub source: Box<dyn AudioSource>,
    /// Opus settings at the start (the rate controller changes them through
    /// [`Pipeline::control`]).
    pub encoder: EncoderConfig,
    /// Holds a file input at its start until the call opens it.
    pub gate: Arc<InputGate>,
}

/// Our video before it starts: how the pipeline's video send side will run.
pub(super) struct VideoParams {
    /// Our video track and its layers.
    pub track: VideoTrack,
    /// The pictures.
    pub source: Box<dyn VideoSource>,
    /// The layers, lowest first (as many as the track has).
    pub plan: Vec<LayerPlan>,
}

/// Our video while it is sent.
pub(super) struct VideoOut {
    /// The layers, lowest first.
    pub plan: Vec<LayerPlan>,
    codec: crate::video::VideoCodec,
    /// Each layer's bitrate, set by the call's rate control.
    pub control: Arc<VideoControl>,
    counters: Arc<VideoSendCounters>,
    keyframe_requests: Arc<super::keyframes::KeyframeRequests>,
    retransmissions_dropped: Arc<std::sync::atomic::AtomicU64>,
    ended: Mutex<mpsc::UnboundedReceiver<VideoCaptureEnd>>,
}

/// One remote video stream being received and decoded.
pub(super) struct VideoInbound {
    /// Its statistics.
    pub stats: Arc<VideoReceiveStats>,
    decode: Option<DecodeThread>,
}

/// One remote stream being received and played.
pub(super) struct Inbound {
    /// Its jitter buffer.
    pub receive: Arc<Receive>,
    /// What arrived and what was played.
    pub counters: Arc<MediaCounters>,
    playout: Option<JoinHandle<Result<(), AudioError>>>,
}

/// The media of one call. See the module's comment.
pub(super) struct Pipeline {
    stop: Arc<AtomicBool>,
    /// What we sent.
    pub counters: Arc<MediaCounters>,
    /// The encoder's settings while running, set by the rate controller.
    pub control: Arc<EncoderControl>,
    e2ee: Option<Arc<MediaCrypto>>,
    capture_end: mpsc::UnboundedSender<CaptureEnd>,
    /// The media clock's origin: capture and every playout count time from here.
    started: Option<Instant>,
    /// When our input began (after the gate opened), once sending has started.
    input: Option<Arc<InputGate>>,
    threads: Vec<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    inbound: BTreeMap<String, Inbound>,
    video_out: Option<VideoOut>,
    video_inbound: BTreeMap<String, VideoInbound>,
}

impl Pipeline {
    /// A pipeline that has started nothing yet; the receiver hears why capture ends.
    pub fn new(
        encoder: &EncoderConfig,
        e2ee: Option<Arc<MediaCrypto>>,
    ) -> (Pipeline, mpsc::UnboundedReceiver<CaptureEnd>) {
        let (capture_end, capture_end_rx) = mpsc::unbounded_channel();
        let pipeline = Pipeline {
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(MediaCounters::default()),
            control: Arc::new(EncoderControl::new(encoder)),
            e2ee,
            capture_end,
            started: None,
            input: None,
            threads: Vec::new(),
            tasks: Vec::new(),
            inbound: BTreeMap::new(),
            video_out: None,
            video_inbound: BTreeMap::new(),
        };
        (pipeline, capture_end_rx)
    }

    /// The media clock's origin, once started.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// When our input's first frame was due: the media clock's origin for a device, later
    /// for a file held until the call opened its gate.
    pub fn input_started(&self) -> Option<Instant> {
        self.input.as_ref().and_then(|gate| gate.started())
    }

    /// Starts the media clock now (once; later calls return the first instant).
    pub fn start_clock(&mut self) -> Instant {
        *self.started.get_or_insert_with(Instant::now)
    }

    /// Starts sending: the RTP sender task and the capture thread, on the media clock.
    pub fn start_sending(&mut self, send: SendParams) -> Result<(), String> {
        let started = self.start_clock();
        let (frames_tx, frames_rx) = mpsc::channel::<OutFrame>(SEND_QUEUE_FRAMES);
        self.tasks.push(tokio::spawn(media::run_sender(
            send.track,
            send.ssrc,
            send.payload_types,
            frames_rx,
            self.control.clone(),
            self.counters.clone(),
            self.e2ee.clone(),
        )));
        let capture = media::spawn_capture(media::Capture {
            source: send.source,
            config: send.encoder,
            control: self.control.clone(),
            counters: self.counters.clone(),
            stop: self.stop.clone(),
            started,
            frames: frames_tx,
            ended: self.capture_end.clone(),
            gate: send.gate.clone(),
        })
        .map_err(|err| format!("starting the capture thread: {err}"))?;
        self.threads.push(capture);
        self.input = Some(send.gate);
        Ok(())
    }

    /// Starts sending video on the media clock: the capture thread (scaling, encoding)
    /// and the sender task, with the MID and extension ids of our video section in
    /// `local_sdp` (our current local description). Once; a second call is refused.
    pub fn start_video(
        &mut self,
        send: VideoParams,
        local_sdp: Option<&str>,
    ) -> Result<(), String> {
        if self.video_out.is_some() {
            return Err("video is already being sent".into());
        }
        let ids = local_sdp
            .and_then(ExtensionIds::from_sdp)
            .unwrap_or_default();
        if send.plan.len() > 1 && (ids.mid_id.is_none() || ids.rid_id.is_none()) {
            tracing::warn!("no MID or RID extension negotiated; simulcast may not be routed");
        }
        let started = self.start_clock();
        let control = Arc::new(VideoControl::new(&send.plan));
        let counters = Arc::new(VideoSendCounters::default());
        let (ended, ended_rx) = mpsc::unbounded_channel();
        let keyframe_requests = send.track.keyframes.clone();
        let retransmissions_dropped = send.track.retransmissions_dropped.clone();
        let codec = send.track.codec;
        let (thread, task) = video_media::start_send(VideoSend {
            codec,
            track: send.track,
            ids,
            source: send.source,
            plan: send.plan.clone(),
            control: control.clone(),
            counters: counters.clone(),
            crypto: self.e2ee.clone(),
            stop: self.stop.clone(),
            started,
            ended,
        })
        .map_err(|err| format!("starting the video capture thread: {err}"))?;
        self.threads.push(thread);
        self.tasks.push(task);
        self.video_out = Some(VideoOut {
            plan: send.plan,
            codec,
            control,
            counters,
            keyframe_requests,
            retransmissions_dropped,
            ended: Mutex::new(ended_rx),
        });
        Ok(())
    }

    /// Divides the send-side estimate between audio (first, at the rate its controller
    /// chose) and our video layers ([`video_media::allocate_layers`]: the top layer is
    /// the first to stop); a layer with `wanted[rank]` false (nobody receives it) is not
    /// encoded at all.
    pub fn share_video_bandwidth(&self, estimate_bps: u64, wanted: &[bool]) {
        /// A rise of less than 1/20 of a layer's rate is left for later.
        const SMALL_CHANGE: u32 = 20;
        let Some(out) = &self.video_out else {
            return;
        };
        let audio = u64::from(self.control.bitrate_bps.load(Ordering::Relaxed));
        let current: Vec<u32> = out
            .control
            .bitrate_bps
            .iter()
            .map(|rate| rate.load(Ordering::Relaxed))
            .collect();
        let rates = video_media::allocate_layers(&out.plan, estimate_bps, audio, &current);
        for (rank, (slot, rate)) in out.control.bitrate_bps.iter().zip(rates).enumerate() {
            let wanted = wanted.get(rank).copied().unwrap_or(true);
            let rate = if wanted { rate } else { 0 };
            let now = slot.load(Ordering::Relaxed);
            // Run ten times a second: small moves are left out, so the encoder is not
            // reconfigured for every wobble of the estimate. Stops, starts and falls are
            // never left out.
            let small_rise = now > 0 && rate > now && rate - now < now / SMALL_CHANGE;
            if !small_rise {
                slot.store(rate, Ordering::Relaxed);
            }
        }
    }

    /// Receives and decodes the remote video `track` of stream `key` into `sink`. Once
    /// per stream: later tracks under the same key are ignored (the SFU switches layers
    /// on one track).
    pub fn receive_video(
        &mut self,
        key: &str,
        track: Arc<dyn TrackRemote>,
        sink: Box<dyn VideoSink>,
    ) -> Result<(), String> {
        self.start_clock();
        if self.video_inbound.contains_key(key) {
            return Ok(());
        }
        let stats = Arc::new(VideoReceiveStats::default());
        let (decode, task) = video_media::start_receive(
            track,
            self.e2ee.clone(),
            sink,
            stats.clone(),
            self.stop.clone(),
        )
        .map_err(|err| format!("starting a video decode thread: {err}"))?;
        self.tasks.push(task);
        self.video_inbound.insert(
            key.to_owned(),
            VideoInbound {
                stats,
                decode: Some(decode),
            },
        );
        Ok(())
    }

    /// Whether video is received under `key`.
    pub fn has_video_inbound(&self, key: &str) -> bool {
        self.video_inbound.contains_key(key)
    }

    /// The video streams received, by key.
    pub fn video_inbound(&self, key: &str) -> Option<&VideoInbound> {
        self.video_inbound.get(key)
    }

    /// What our video did over `duration` of connected time, if we sent any.
    pub fn video_sent_summary(&self, duration: Duration) -> Option<VideoSentSummary> {
        let out = self.video_out.as_ref()?;
        let c = &out.counters;
        let seconds = duration.as_secs_f64().max(1e-3);
        let mut end = None;
        {
            let mut ended = out
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while let Ok(reason) = ended.try_recv() {
                end = Some(reason);
            }
        }
        Some(VideoSentSummary {
            codec: out.codec,
            layers: out.plan.clone(),
            frames_captured: load(&c.frames_captured),
            frames_encoded: load(&c.frames_encoded),
            layer_frames: c
                .layer_frames
                .iter()
                .take(out.plan.len())
                .map(load)
                .collect(),
            keyframes: load(&c.keyframes),
            keyframe_requests: load(&out.keyframe_requests.received),
            frames_dropped: load(&c.frames_dropped),
            packets: load(&c.packets_sent),
            retransmissions_dropped: load(&out.retransmissions_dropped),
            kbps: kbps(load(&c.bytes_sent), duration),
            encode_cpu_percent: round(load(&c.encode_us) as f64 / 1e6 / seconds * 100.0, 2),
            final_layer_kbps: out
                .control
                .bitrate_bps
                .iter()
                .map(|rate| rate.load(Ordering::Relaxed) / 1000)
                .collect(),
            input_failed: match end {
                Some(VideoCaptureEnd::Failed(message)) => Some(message),
                _ => None,
            },
        })
    }

    /// Whether a stream is known under `key`.
    pub fn has_inbound(&self, key: &str) -> bool {
        self.inbound.contains_key(key)
    }

    /// The stream under `key`, made (with nothing running) if it is new.
    pub fn inbound(&mut self, key: &str) -> &Inbound {
        self.inbound
            .entry(key.to_owned())
            .or_insert_with(|| Inbound {
                receive: Arc::new(Receive::default()),
                counters: Arc::new(MediaCounters::default()),
                playout: None,
            })
    }

    /// Reads `track` into the jitter buffer of stream `key` until the track ends.
    pub fn receive(
        &mut self,
        key: &str,
        track: Arc<dyn TrackRemote>,
        payload_types: PayloadTypes,
        audio_level_id: Option<u8>,
        jitter: JitterConfig,
    ) {
        let (receive, counters) = {
            let inbound = self.inbound(key);
            (inbound.receive.clone(), inbound.counters.clone())
        };
        self.tasks.push(tokio::spawn(media::run_receiver(
            track,
            payload_types,
            audio_level_id,
            jitter,
            receive,
            counters,
            self.e2ee.clone(),
        )));
    }

    /// Plays stream `key` into `sink` on the media clock (started now if it was not).
    /// Once per stream: a second call leaves the first playout running.
    pub fn play(
        &mut self,
        key: &str,
        sink: Box<dyn AudioSink>,
        decoder_complexity: u8,
    ) -> Result<(), String> {
        let started = self.start_clock();
        let stop = self.stop.clone();
        self.inbound(key);
        let Some(inbound) = self.inbound.get_mut(key) else {
            return Ok(());
        };
        if inbound.playout.is_some() {
            return Ok(());
        }
        let playout = media::spawn_playout(
            sink,
            inbound.receive.clone(),
            inbound.counters.clone(),
            stop,
            started,
            decoder_complexity,
        )
        .map_err(|err| format!("starting a playout thread: {err}"))?;
        inbound.playout = Some(playout);
        Ok(())
    }

    /// The streams received, by key.
    pub fn inbound_streams(&self) -> impl Iterator<Item = (&String, &Inbound)> {
        self.inbound.iter()
    }

    /// What we sent over `duration` of connected time.
    pub fn sent_summary(&self, duration: Duration) -> SentSummary {
        let c = &self.counters;
        SentSummary {
            packets: load(&c.packets_sent),
            payload_kbps: kbps(load(&c.payload_bytes_sent), duration),
            dtx_frames: load(&c.dtx_frames),
            final_bitrate_bps: c.bitrate_bps.load(Ordering::Relaxed),
            final_loss_percent: c.loss_percent.load(Ordering::Relaxed),
        }
    }

    /// Stops everything and waits for the threads; the errors the playouts and decoders
    /// ended with (an output file that could not be written).
    pub async fn stop(&mut self) -> Vec<StopError> {
        self.signal_stop();
        let threads = std::mem::take(&mut self.threads);
        let playouts: Vec<_> = self
            .inbound
            .values_mut()
            .filter_map(|inbound| inbound.playout.take())
            .collect();
        let decoders: Vec<_> = self
            .video_inbound
            .values_mut()
            .filter_map(|inbound| inbound.decode.take())
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
            let mut failed: Vec<StopError> = playouts
                .into_iter()
                .filter_map(|playout| match playout.join() {
                    Ok(Err(err)) => Some(StopError::Audio(err)),
                    _ => None,
                })
                .collect();
            failed.extend(
                decoders
                    .into_iter()
                    .filter_map(|decode| match decode.join() {
                        Ok(Err(err)) => Some(StopError::Video(err)),
                        _ => None,
                    }),
            );
            failed
        })
        .await;
        joined.unwrap_or_default()
    }

    /// Tells every thread to stop and ends every task, without waiting.
    fn signal_stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Pipeline {
    /// A call that ends on an error path still stops its capture and playout threads
    /// (they see the flag within a frame) and its sender and receiver tasks.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Why a playout or a decoder stopped early.
#[derive(Debug, thiserror::Error)]
pub(super) enum StopError {
    /// An audio output failed.
    #[error(transparent)]
    Audio(AudioError),
    /// A video output failed.
    #[error(transparent)]
    Video(VideoError),
}

impl VideoInbound {
    /// What this stream delivered over `duration` of connected time.
    pub fn summary(&self, duration: Duration) -> VideoReceivedSummary {
        self.stats.summary(duration)
    }
}

impl Inbound {
    /// What this stream delivered over `duration` of connected time.
    pub fn summary(&self, duration: Duration) -> ReceivedSummary {
        let c = &self.counters;
        let jitter = self.receive.stats().unwrap_or_default();
        let expected = jitter.played + jitter.lost;
        ReceivedSummary {
            packets: load(&c.packets_received),
            payload_kbps: kbps(load(&c.payload_bytes_received), duration),
            lost: jitter.lost,
            loss_percent: if expected == 0 {
                0.0
            } else {
                round(jitter.lost as f64 * 100.0 / expected as f64, 2)
            },
            late: jitter.late,
            duplicate: jitter.duplicate,
            jitter_buffer_mean_ms: round(
                load(&c.delay_sum_us) as f64 / load(&c.delay_samples).max(1) as f64 / 1000.0,
                1,
            ),
            jitter_buffer_target_ms: round(jitter.target_delay_ms, 1),
            concealed_ms: round(jitter.concealed_ms, 1),
            fec_frames: jitter.fec,
            plc_frames: jitter.concealed,
            accelerated: jitter.accelerated,
            shortened_ms: round(jitter.shortened_ms, 1),
            lengthened_ms: round(jitter.lengthened_ms, 1),
            path_changes: jitter.path_changes,
            expanded: jitter.expanded,
            comfort_noise_frames: jitter.comfort_noise,
            red_recovered: jitter.recovered,
            late_copies: jitter.late_copies,
            dred_rebuilt: jitter.rebuilt,
            decode_errors: load(&c.decode_errors),
        }
    }
}

fn load(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// `bytes` over `duration` in kbit/s, to two places.
fn kbps(bytes: u64, duration: Duration) -> f64 {
    round(
        bytes as f64 * 8.0 / duration.as_secs_f64().max(1e-3) / 1000.0,
        2,
    )
}

/// `value` rounded to `places` decimals.
pub(super) fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}
