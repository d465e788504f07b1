//! The media pipeline of a call: capture → Opus → RTP out, and RTP in → jitter buffer →
//! Opus → playback. Owns the two audio threads (capture and playout, each owning its device
//! or file, paced by the frame clock unless the device keeps its own time) and the two
//! async tasks that move RTP in and out of the peer connection. Must not touch signaling or
//! call state; it reports through [`MediaCounters`] and the `ended` channel.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp::{Header, Packet as RtpPacket};
use rtc::shared::marshal::Unmarshal;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::audio::codec::{
    EncoderConfig, FrameDuration, MAX_FRAME_SAMPLES, OpusEncoder, packet_samples,
    without_extensions,
};
use crate::audio::jitter::{Decision, JitterBuffer, JitterConfig, JitterStats, Packet};
use crate::audio::level::{QUIET_LEVEL, audio_level_dbov};
use crate::audio::playout::Playout;
use crate::audio::red::{self, Block, RedHistory};
use crate::audio::stretch::Want;
use crate::audio::{AudioError, AudioSink, AudioSource, SAMPLES_PER_MS};
use crate::e2ee::media::MediaCrypto;

/// Counters shared by the pipeline's threads and tasks, read for the call summary.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// RTP packets sent.
    pub packets_sent: AtomicU64,
    /// Opus payload bytes sent.
    pub payload_bytes_sent: AtomicU64,
    /// Frames the encoder marked as DTX (not sent).
    pub dtx_frames: AtomicU64,
    /// RTP packets received on the audio track.
    pub packets_received: AtomicU64,
    /// Opus payload bytes received.
    pub payload_bytes_received: AtomicU64,
    /// Packets dropped before the jitter buffer (wrong payload type, undecodable size).
    pub packets_dropped: AtomicU64,
    /// Frames whose decode failed (then concealed).
    pub decode_errors: AtomicU64,
    /// Frames written to the sink since playout started.
    pub frames_played: AtomicU64,
    /// Sum of the jitter buffer's current delay over played frames, in µs (for the mean).
    pub delay_sum_us: AtomicU64,
    /// Frames counted in `delay_sum_us`.
    pub delay_samples: AtomicU64,
    /// The bitrate the encoder runs at now.
    pub bitrate_bps: AtomicU32,
    /// The loss percentage the encoder's FEC is tuned for now.
    pub loss_percent: AtomicU8,
}

/// What the capture thread and the RTP sender read while running (set by the rate
/// controller).
#[derive(Debug, Default)]
pub struct EncoderControl {
    /// Target bitrate.
    pub bitrate_bps: AtomicU32,
    /// Expected loss, for FEC and DRED.
    pub loss_percent: AtomicU8,
    /// Whether in-band FEC may run (the configuration must allow it too).
    pub fec: AtomicBool,
    /// Earlier frames each packet repeats (RFC 2198); 0 sends plain Opus.
    pub red_depth: AtomicU8,
    /// The frame duration in ms (a [`FrameDuration`]; others are ignored).
    pub frame_ms: AtomicU32,
}

impl EncoderControl {
    /// Control that starts the encoder as `config` says, without redundancy.
    pub fn new(config: &EncoderConfig) -> Self {
        EncoderControl {
            bitrate_bps: config.bitrate_bps.into(),
            loss_percent: config.loss_percent.into(),
            fec: true.into(),
            red_depth: 0.into(),
            frame_ms: config.frame.millis().into(),
        }
    }

    /// Hands the rate controller's decision to the capture thread and the sender.
    pub fn apply(&self, decision: &crate::audio::rate::RateDecision) {
        self.bitrate_bps
            .store(decision.bitrate_bps, Ordering::Relaxed);
        self.loss_percent
            .store(decision.loss_percent, Ordering::Relaxed);
        self.fec.store(decision.fec, Ordering::Relaxed);
        self.red_depth.store(decision.red_depth, Ordering::Relaxed);
        self.frame_ms
            .store(decision.frame.millis(), Ordering::Relaxed);
    }
}

/// The payload types both ends agreed on for audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTypes {
    /// Opus.
    pub opus: u8,
    /// RED (RFC 2198) over Opus, when the peer takes it.
    pub red: Option<u8>,
}

/// One encoded frame on its way to the RTP sender.
#[derive(Debug)]
pub struct OutFrame {
    /// Index of the frame since capture started (back-to-back frames have consecutive
    /// indices; DTX leaves gaps).
    pub index: u64,
    /// Samples captured before this frame began: its RTP timestamp, less the base.
    pub position: u64,
    /// Samples in the frame (the frame duration may change during a call).
    pub samples: u32,
    /// The Opus packet.
    pub payload: Vec<u8>,
    /// The packet without its DRED extension, when it carries one: what RED repeats.
    pub copy: Option<Vec<u8>>,
    /// RFC 6464 level, -dBov.
    pub level: u8,
}

/// Holds an input that has no clock of its own (a file, a tone, silence) at its start
/// until the call says media flows both ways, so that nothing of it is lost to a setup
/// that one end finished before the other: the capture thread sends encoded silence until
/// then. A device input runs from the first frame (what it captured is gone anyway).
#[derive(Debug, Default)]
pub struct InputGate {
    open: AtomicBool,
    /// When the input's first frame was due (set once, by the capture thread).
    started: std::sync::Mutex<Option<Instant>>,
}

impl InputGate {
    /// Lets the input start.
    pub fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// When the input's first frame was due, once it has started.
    pub fn started(&self) -> Option<Instant> {
        *self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark_started(&self, at: Instant) {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(at);
    }
}

/// Why the capture side stopped.
#[derive(Debug)]
pub enum CaptureEnd {
    /// The input ran out (a file).
    InputEnded,
    /// Asked to stop.
    Stopped,
    /// The device or encoder failed.
    Failed(String),
}

/// What the capture thread needs.
pub struct Capture {
    /// The microphone, file, tone or silence.
    pub source: Box<dyn AudioSource>,
    /// Opus settings.
    pub config: EncoderConfig,
    /// Bitrate and loss set by the rate controller while running.
    pub control: Arc<EncoderControl>,
    /// Where to count.
    pub counters: Arc<MediaCounters>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// The media clock's origin, shared with playout so that the output's time 0 is the
    /// input's time 0.
    pub started: Instant,
    /// Encoded frames, to the RTP sender.
    pub frames: mpsc::Sender<OutFrame>,
    /// Told why capture stopped.
    pub ended: mpsc::UnboundedSender<CaptureEnd>,
    /// Holds a file input at its start until the call opens it.
    pub gate: Arc<InputGate>,
}

/// Runs the capture loop on its own thread: read a frame, encode, hand it to the sender.
pub fn spawn_capture(capture: Capture) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("sotto-capture".into())
        .spawn(move || {
            let Capture {
                mut source,
                config,
                control,
                counters,
                stop,
                started,
                frames,
                ended,
                gate,
            } = capture;
            let end = match capture_loop(
                source.as_mut(),
                &config,
                &control,
                &counters,
                &stop,
                started,
                &frames,
                &gate,
            ) {
                Ok(end) => end,
                Err(err) => CaptureEnd::Failed(err.to_string()),
            };
            let _ = ended.send(end);
        })
}

#[allow(clippy::too_many_arguments)]
fn capture_loop(
    source: &mut dyn AudioSource,
    config: &EncoderConfig,
    control: &EncoderControl,
    counters: &MediaCounters,
    stop: &AtomicBool,
    started: Instant,
    frames: &mpsc::Sender<OutFrame>,
    gate: &InputGate,
) -> Result<CaptureEnd, AudioError> {
    let mut encoder = OpusEncoder::new(config)?;
    let mut frame = config.frame;
    let mut pcm = vec![0i16; encoder.frame_samples()];
    let mut due = started;
    let mut position = 0u64;
    let mut bitrate = config.bitrate_bps;
    let mut loss = config.loss_percent;
    let mut fec = config.fec;
    counters.bitrate_bps.store(bitrate, Ordering::Relaxed);
    // Once the input has started, the gate is not looked at again.
    let mut input_started = false;
    for index in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return Ok(CaptureEnd::Stopped);
        }
        // The frame duration changes between frames only (the rate controller lengthens
        // frames on narrow links).
        let want_frame =
            FrameDuration::from_millis(control.frame_ms.load(Ordering::Relaxed)).unwrap_or(frame);
        if want_frame != frame {
            encoder.set_frame(want_frame);
            frame = want_frame;
            pcm.resize(encoder.frame_samples(), 0);
        }
        let frame_due = due;
        if !source.is_realtime() {
            // Files, tones and silence have no clock of their own: one frame per period.
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            due += frame.duration();
        }
        if input_started || source.is_realtime() || gate.is_open() {
            if !input_started {
                input_started = true;
                gate.mark_started(if source.is_realtime() {
                    Instant::now()
                } else {
                    frame_due
                });
            }
            if !source.read(&mut pcm)? {
                return Ok(CaptureEnd::InputEnded);
            }
        } else {
            pcm.fill(0);
        }
        let frame_position = position;
        position += pcm.len() as u64;
        let want_bitrate = control.bitrate_bps.load(Ordering::Relaxed);
        if want_bitrate != bitrate {
            encoder.set_bitrate(want_bitrate)?;
            bitrate = want_bitrate;
            counters.bitrate_bps.store(bitrate, Ordering::Relaxed);
        }
        let want_fec = config.fec && control.fec.load(Ordering::Relaxed);
        if want_fec != fec {
            encoder.set_fec(want_fec)?;
            fec = want_fec;
        }
        let want_loss = control.loss_percent.load(Ordering::Relaxed);
        if want_loss != loss {
            encoder.set_loss_percent(want_loss)?;
            loss = want_loss;
            counters.loss_percent.store(loss, Ordering::Relaxed);
        }
        let level = audio_level_dbov(&pcm);
        let encoded = encoder.encode(&pcm)?;
        if encoded.dtx {
            counters.dtx_frames.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let copy = if config.dred_units > 0 {
            without_extensions(&encoded.payload)
        } else {
            None
        };
        let frame = OutFrame {
            index,
            position: frame_position,
            samples: pcm.len() as u32,
            payload: encoded.payload,
            copy,
            level,
        };
        // A full queue means the network side is stuck; drop rather than block capture.
        if let Err(mpsc::error::TrySendError::Closed(_)) = frames.try_send(frame) {
            return Ok(CaptureEnd::Stopped);
        }
    }
    Ok(CaptureEnd::Stopped)
}

/// `payload` sealed with SFrame when the call has end-to-end keys, as is when not; `None`
/// (logged) when sealing fails: a frame is never sent in the clear instead.
fn seal(crypto: Option<&MediaCrypto>, payload: Vec<u8>) -> Option<Vec<u8>> {
    let Some(crypto) = crypto else {
        return Some(payload);
    };
    let mut sealed = Vec::with_capacity(payload.len() + 32);
    match crypto.seal(&payload, &mut sealed) {
        Ok(()) => Some(sealed),
        Err(err) => {
            tracing::warn!(%err, "an audio frame could not be encrypted; not sent");
            None
        }
    }
}

/// Writes encoded frames as RTP on the track: our own sequence numbers and timestamps so
/// that DTX gaps advance the timestamp but not the sequence number (RFC 7587 §4.1), with
/// the marker bit on the first packet of each talkspurt and the RFC 6464 level on each.
/// With `crypto`, each Opus frame is sealed with SFrame first: the RTP payload is the
/// SFrame ciphertext, while the header and the level extension stay readable for the SFU.
/// When `control` asks for redundancy and the peer takes RED, each packet is RED (RFC
/// 2198) repeating that many earlier frames (each sealed on its own).
#[allow(clippy::too_many_arguments)]
pub async fn run_sender(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_types: PayloadTypes,
    mut frames: mpsc::Receiver<OutFrame>,
    control: Arc<EncoderControl>,
    counters: Arc<MediaCounters>,
    crypto: Option<Arc<MediaCrypto>>,
) {
    let mut sequence_number: u16 = rand::random();
    let timestamp_base: u32 = rand::random();
    let mut last_index: Option<u64> = None;
    let mut history = RedHistory::new();
    let mut red = Vec::new();
    let mut frame_samples = 0;
    while let Some(frame) = frames.recv().await {
        let marker = last_index.is_none_or(|last| frame.index != last + 1);
        last_index = Some(frame.index);
        let timestamp = timestamp_base.wrapping_add(frame.position as u32);
        if frame.samples != frame_samples {
            // RED places copies at whole frames back: frames of another length are not
            // repeated after a change of duration.
            history.clear();
            frame_samples = frame.samples;
        }
        let Some(payload) = seal(crypto.as_deref(), frame.payload) else {
            continue;
        };
        // The copy RED repeats is sealed on its own (its own SFrame counter), and only
        // while RED is negotiated.
        let copy = match (payload_types.red, frame.copy) {
            (Some(_), Some(copy)) => match seal(crypto.as_deref(), copy) {
                Some(sealed) => Some(sealed),
                None => continue,
            },
            _ => None,
        };
        // With RED negotiated, every frame is remembered (so that redundancy can start at
        // once); it is sent as RED while the controller asks for copies.
        let (payload_type, payload) = match payload_types.red {
            Some(red_type) => {
                let depth = usize::from(control.red_depth.load(Ordering::Relaxed));
                history.pack_next(
                    sequence_number,
                    frame.index,
                    &payload,
                    depth,
                    payload_types.opus,
                    frame_samples,
                    &mut red,
                );
                if let Some(copy) = copy {
                    history.repeat_last_as(copy);
                }
                if depth > 0 {
                    (red_type, red.clone())
                } else {
                    (payload_types.opus, payload)
                }
            }
            None => (payload_types.opus, payload),
        };
        let payload_len = payload.len() as u64;
        let packet = RtpPacket {
            header: Header {
                version: 2,
                marker,
                payload_type,
                sequence_number,
                timestamp,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        sequence_number = sequence_number.wrapping_add(1);
        let level = HeaderExtension::AudioLevel(AudioLevelExtension {
            level: frame.level.min(127),
            voice: frame.level < QUIET_LEVEL,
        });
        match track.write_rtp_with_extensions(packet, &[level]).await {
            Ok(()) => {
                counters.packets_sent.fetch_add(1, Ordering::Relaxed);
                counters
                    .payload_bytes_sent
                    .fetch_add(payload_len, Ordering::Relaxed);
            }
            Err(err) => tracing::debug!(%err, "an audio packet was not sent"),
        }
    }
}

/// The receive side's shared state: the jitter buffer (created on the first packet, when
/// the peer's frame duration is known) behind a lock the receiver task and the playout
/// thread share. Both hold it for microseconds.
#[derive(Default)]
pub struct Receive {
    buffer: Mutex<Option<JitterBuffer>>,
}

impl Receive {
    /// The buffer's statistics, if playout has started.
    pub fn stats(&self) -> Option<JitterStats> {
        self.lock().as_ref().map(JitterBuffer::stats)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JitterBuffer>> {
        // A panic while holding this lock would be a bug in the buffer; the data stays
        // consistent enough to read counters from.
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads RTP from the peer's track into the jitter buffer until the track ends. With
/// `crypto`, every payload must open as SFrame: one that does not (tampered, replayed,
/// under an unknown or expired key, or not encrypted at all) is counted by the crypto and
/// dropped before the jitter buffer, so nothing of it is ever played. A RED packet (RFC
/// 2198) gives its primary frame as any packet does; its redundant copies are opened only
/// for frames the buffer still misses.
pub async fn run_receiver(
    track: Arc<dyn TrackRemote>,
    payload_types: PayloadTypes,
    audio_level_id: Option<u8>,
    jitter: JitterConfig,
    receive: Arc<Receive>,
    counters: Arc<MediaCounters>,
    crypto: Option<Arc<MediaCrypto>>,
) {
    let mut opened = Vec::new();
    while let Some(event) = track.poll().await {
        let packet = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packet,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        let now = Instant::now();
        let pt = packet.header.payload_type;
        let blocks = if pt == payload_types.opus {
            vec![Block {
                payload_type: pt,
                timestamp_offset: 0,
                data: &packet.payload[..],
            }]
        } else if Some(pt) == payload_types.red {
            match red::unpack(&packet.payload) {
                Ok(blocks) => blocks,
                Err(err) => {
                    tracing::debug!(%err, "a RED packet was dropped");
                    counters.packets_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        } else {
            counters.packets_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some((primary, redundant)) = blocks.split_last() else {
            continue;
        };
        if primary.payload_type != payload_types.opus {
            counters.packets_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !open(&crypto, primary.data, now, &mut opened) {
            continue;
        }
        // The frame duration comes from the Opus packet itself (RFC 6716 §3.1); a packet
        // that does not parse is dropped here rather than fed to the decoder.
        let Ok(samples) = packet_samples(&opened) else {
            counters.packets_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        counters.packets_received.fetch_add(1, Ordering::Relaxed);
        counters
            .payload_bytes_received
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        let quiet = audio_level_id
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|mut raw| AudioLevelExtension::unmarshal(&mut raw).ok())
            .is_some_and(|ext| ext.level >= QUIET_LEVEL);
        let seq = packet.header.sequence_number;
        let timestamp = packet.header.timestamp;
        tracing::trace!(target: "sotto::receive", buffer = ?Arc::as_ptr(&receive), seq, timestamp,
            copies = redundant.len(), "audio packet");
        let mut guard = receive.lock();
        let frame = samples_duration(samples);
        // One rebuild is one decoder call, which covers at most 120 ms.
        let rebuild_frames = jitter
            .rebuild_frames
            .min(MAX_FRAME_SAMPLES / samples.max(1));
        let buffer = guard.get_or_insert_with(|| {
            JitterBuffer::new(JitterConfig {
                frame,
                rebuild_frames,
                ..jitter.clone()
            })
        });
        if buffer.frame() != frame {
            // The sender changed its frame duration (longer frames on a narrow link).
            buffer.set_frame(frame, rebuild_frames);
        }
        buffer.insert(
            Packet {
                seq,
                timestamp,
                payload: opened.clone(),
                quiet,
            },
            now,
        );
        buffer.note_redundancy(redundant.len(), now);
        // A copy of the frame k packets back sits at k frames' offset (our sender repeats
        // only frames sent back to back; see `RedHistory`). Copies at any other offset are
        // not placed: the buffer is ordered by sequence number.
        for block in redundant {
            let frames_back = block.timestamp_offset / samples.max(1) as u32;
            if block.payload_type != payload_types.opus
                || block.data.is_empty()
                || frames_back == 0
                || frames_back as usize > red::MAX_DEPTH
                || block.timestamp_offset % samples.max(1) as u32 != 0
            {
                continue;
            }
            let copy_seq = seq.wrapping_sub(frames_back as u16);
            if !buffer.wants(copy_seq) {
                buffer.drop_copy(copy_seq);
                continue;
            }
            if !open(&crypto, block.data, now, &mut opened) {
                continue;
            }
            if packet_samples(&opened).ok() != Some(samples) {
                continue;
            }
            buffer.insert_redundant(
                Packet {
                    seq: copy_seq,
                    timestamp: timestamp.wrapping_sub(block.timestamp_offset),
                    payload: opened.clone(),
                    quiet: false,
                },
                redundant.len(),
                now,
            );
        }
    }
}

/// Behind the media clock by this much before anything played, playout writes silence
/// to catch up instead of pulling from the buffer.
const CATCH_UP: Duration = Duration::from_millis(40);

/// How long `samples` samples at 48 kHz last.
fn samples_duration(samples: usize) -> Duration {
    Duration::from_micros(samples as u64 * 1000 / SAMPLES_PER_MS as u64)
}

/// Puts the Opus frame of `data` in `out`: decrypted with `crypto`, or as it is. False
/// when it does not open (counted by the crypto).
fn open(crypto: &Option<Arc<MediaCrypto>>, data: &[u8], now: Instant, out: &mut Vec<u8>) -> bool {
    match crypto {
        None => {
            out.clear();
            out.extend_from_slice(data);
            true
        }
        Some(crypto) => match crypto.open(data, now, out) {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(%err, "an audio frame was refused");
                false
            }
        },
    }
}

/// Runs playout on its own thread: every frame period, ask the jitter buffer what to play,
/// decode it (normally, from the next packet's FEC, or by concealment) and write it to the
/// sink. Before the first packet it writes silence, so the output's time line matches the
/// input's from `started` on.
pub fn spawn_playout(
    mut sink: Box<dyn AudioSink>,
    receive: Arc<Receive>,
    counters: Arc<MediaCounters>,
    stop: Arc<AtomicBool>,
    started: Instant,
    decoder_complexity: u8,
) -> std::io::Result<thread::JoinHandle<Result<(), AudioError>>> {
    thread::Builder::new()
        .name("sotto-playout".into())
        .spawn(move || {
            let result = playout_loop(
                sink.as_mut(),
                &receive,
                &counters,
                &stop,
                started,
                decoder_complexity,
            );
            let finished = sink.finish();
            result.and(finished)
        })
}

fn playout_loop(
    sink: &mut dyn AudioSink,
    receive: &Receive,
    counters: &MediaCounters,
    stop: &AtomicBool,
    started: Instant,
    decoder_complexity: u8,
) -> Result<(), AudioError> {
    let mut playout = Playout::new(decoder_complexity)?;
    let mut due = started;
    let mut playing = false;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let now = Instant::now();
        if !playing && now.saturating_duration_since(due) >= CATCH_UP {
            // A stream that joins a call under way plays on the call's clock, from its
            // start: the time until now is silence, written at once and without asking
            // the buffer. (Pulled while catching up, a first packet that came meanwhile
            // played at once and then every frame after it was waited for as missing,
            // hundreds of frames of concealment in a few milliseconds.)
            let rendered =
                playout.render(&Decision::Waiting, Duration::from_millis(20), Want::Keep);
            sink.write(rendered.samples)?;
            due += samples_duration(rendered.samples.len());
            continue;
        }
        let (decision, frame, delay_ms, want) = {
            let mut guard = receive.lock();
            match guard.as_mut() {
                None => (
                    Decision::Waiting,
                    Duration::from_millis(20),
                    0.0,
                    Want::Keep,
                ),
                Some(buffer) => {
                    // The audio buffered ahead of the playout point, this frame included.
                    let delay_ms = buffer.stats().current_delay_ms;
                    let decision = buffer.pull(now);
                    (decision, buffer.frame(), delay_ms, buffer.time_scale())
                }
            }
        };
        playing |= !matches!(decision, Decision::Waiting);
        let rendered = playout.render(&decision, frame, want);
        if tracing::enabled!(target: "sotto::playout", tracing::Level::TRACE) {
            let (level, target) = receive.lock().as_ref().map_or((None, 0.0), |buffer| {
                (buffer.level_ms(), buffer.stats().target_delay_ms)
            });
            let kind = match &decision {
                Decision::Waiting => "wait",
                Decision::Play(p) if p.quiet => "quiet",
                Decision::Play(_) => "play",
                Decision::Fec { .. } => "fec",
                Decision::Rebuild { .. } => "rebuild",
                Decision::Conceal => "conceal",
                Decision::ComfortNoise => "cn",
            };
            tracing::trace!(target: "sotto::playout", buffer = ?std::ptr::from_ref(receive), kind, ?level, target, ?want,
                stretched = rendered.stretched.samples, "frame");
        }
        if rendered.stretched.samples != 0
            && let Some(buffer) = receive.lock().as_mut()
        {
            buffer.stretched(rendered.stretched.samples);
        }
        if rendered.decode_error {
            counters.decode_errors.fetch_add(1, Ordering::Relaxed);
        }
        if !matches!(decision, Decision::Waiting | Decision::ComfortNoise) {
            counters
                .frames_played
                .fetch_add(rendered.frames as u64, Ordering::Relaxed);
            counters
                .delay_sum_us
                .fetch_add((delay_ms * 1000.0) as u64, Ordering::Relaxed);
            counters.delay_samples.fetch_add(1, Ordering::Relaxed);
        }
        sink.write(rendered.samples)?;
        due += samples_duration(rendered.samples.len());
    }
    Ok(())
}
