//! The video half of a call's media. Send: a capture thread reads the source at its frame
//! rate, scales it to every simulcast layer, encodes them (VP8: one multi-resolution
//! libvpx encoder; H.264: an OpenH264 encoder per layer; keyframes when a receiver asks,
//! each layer's bitrate as the rate control says) and hands the frames to a sender task,
//! which seals each with SFrame (VP8: the codec's first bytes left clear; H.264: NAL unit
//! by NAL unit, headers clear), packetizes it (RFC 7741 or RFC 6184) and writes it on its
//! layer's SSRC with the MID, RID and dependency-descriptor extensions. Receive: per
//! remote video track, a receiver task puts frames back together (waiting a little for
//! NACKed packets) in the codec negotiated for the stream, opens them and hands them to a
//! decode thread, which decodes, asks for a keyframe (PLI) when it cannot go on, keeps the
//! statistics and writes pictures to a sink.
//!
//! Must not touch signaling or call state; it reports through its counters.

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::{Header, Packet as RtpPacket};
use rtc::sdp::description::session::SessionDescription;
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use serde::Serialize;
use sotto_vpx::{EncoderConfig, SimulcastLayer};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::keyframes::{KeyframePacer, KeyframeRequests};
use super::peer::{DEPENDENCY_DESCRIPTOR_URI, H264_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE, VideoTrack};
use crate::e2ee::media::MediaCrypto;
use crate::video::code::FrameCode;
use crate::video::encode::Encoders;
use crate::video::h264_rtp;
use crate::video::receive::{Decoded, FrameDecoder, VideoReceiver};
use crate::video::scale::Scaler;
use crate::video::vp8_rtp::{FrameMeta, Vp8Payloader, clear_prefix};
use crate::video::{FrameTime, VideoCodec, VideoError, VideoSink, VideoSource};

/// RTP's video clock rate.
const CLOCK_RATE: u64 = 90_000;
/// The most bytes of one RTP payload (descriptor included): under a 1200-byte packet with
/// headers, extensions and SRTP's tag.
const MAX_PAYLOAD: usize = 1100;
/// Encoded frames waiting for the sender (a few frames of three layers).
const SEND_QUEUE: usize = 16;
/// Frames waiting for the decoder.
const DECODE_QUEUE: usize = 32;
/// The least time between two PLIs for one stream.
/// After the top layers stop, the next layer down sends a keyframe this much later: the
/// SFU moves a subscriber down at a keyframe once its layer has been silent for
/// `sotto_sfu::layers::LAYER_SILENT` (70 ms), so a keyframe sent at once would come too
/// early to be used.
const STOPPED_LAYER_KEYFRAME: Duration = Duration::from_millis(100);

/// One simulcast layer to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerPlan {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Its bitrate with enough bandwidth, bit/s.
    pub max_bitrate_bps: u32,
}

/// The layers for a source of `width`x`height`, lowest first: the source size, then a
/// half and a quarter of it (while at least 64 pixels wide), `layers` at most.
pub fn plan_layers(width: u32, height: u32, layers: usize) -> Vec<LayerPlan> {
    let mut plan = Vec::new();
    for step in 0..layers.max(1) as u32 {
        let (w, h) = (width >> step, height >> step);
        if step > 0 && (w < 64 || h < 36) {
            break;
        }
        // About 0.13 bits per pixel at 30 fps at the top, a little more per pixel below
        // (small pictures need more bits per pixel for the same look).
        let pixels = f64::from(w) * f64::from(h) * 30.0;
        let bpp = 0.13 * (1.0 + 0.25 * f64::from(step));
        let max_bitrate_bps = ((pixels * bpp) as u32).clamp(60_000, 2_500_000);
        plan.push(LayerPlan {
            width: w & !1,
            height: h & !1,
            max_bitrate_bps,
        });
    }
    plan.reverse();
    plan
}

/// Bytes per second of headers on top of a layer's payload rate (RTP, extensions, SRTP,
/// UDP/IP: about 60 bytes on each of a layer's packets at 30 fps and a few packets a
/// frame), as a share of its rate.
const OVERHEAD: f64 = 1.08;

/// The least a layer is worth sending at, as a share of its maximum: below it the
/// picture is mostly blocks, and a lower layer does better.
const LAYER_FLOOR: f64 = 0.4;

/// The lowest layer (the only one of a one-to-one call's stream) goes down to this, or
/// its [`LAYER_FLOOR`] if lower: a 640x360 stream held at 40 % of its 899 kbit/s sent 420
/// kbit/s into a 300 kbit/s link and took the call's audio down with it (PESQ-WB 1.35,
/// `sotto-bench run cap-300k.toml --video`; Chromium's call on the same link: 206
/// kbit/s, PESQ-WB 2.43).
const LOWEST_LAYER_FLOOR_BPS: u64 = 60_000;

/// A stopped layer starts again only when the budget keeps it this far above its floor,
/// so that an estimate hovering at the floor does not start and stop it every tick (each
/// start costs a keyframe, each stop a layer switch at every subscriber).
const RESUME_MARGIN: f64 = 1.25;

/// Each layer's bitrate (lowest first) when the send-side estimate is `estimate_bps`
/// and audio takes `audio_bps` first, given what each layer runs at now (`current`, 0:
/// stopped): the layers are filled lowest first up to their maximum, and a layer the
/// remaining budget cannot keep above [`LAYER_FLOOR`] of its maximum is stopped (0), so
/// the top layer is the first to go; a stopped one needs [`RESUME_MARGIN`] more to start
/// again. Without an estimate yet (0), every layer runs at its maximum. The lowest layer
/// never stops: it keeps the picture alive at its floor (at most
/// [`LOWEST_LAYER_FLOOR_BPS`]), however small the budget.
pub fn allocate_layers(
    plan: &[LayerPlan],
    estimate_bps: u64,
    audio_bps: u64,
    current: &[u32],
) -> Vec<u32> {
    if estimate_bps == 0 {
        return plan.iter().map(|l| l.max_bitrate_bps).collect();
    }
    let mut left = (estimate_bps.saturating_sub(audio_bps) as f64 / OVERHEAD) as u64;
    let mut rates = Vec::with_capacity(plan.len());
    for (i, layer) in plan.iter().enumerate() {
        let max = u64::from(layer.max_bitrate_bps);
        let mut floor = (max as f64 * LAYER_FLOOR) as u64;
        if current.get(i) == Some(&0) {
            floor = (floor as f64 * RESUME_MARGIN) as u64;
        }
        let rate = if i == 0 {
            left.clamp(floor.min(LOWEST_LAYER_FLOOR_BPS), max)
        } else if left >= floor && rates.last() != Some(&0) {
            // (A layer above a stopped one would have nobody to fall back to.)
            left.min(max)
        } else {
            0
        };
        left = left.saturating_sub(rate);
        rates.push(rate as u32);
    }
    rates
}

/// `plan`'s layers as libvpx's multi-resolution encoder takes them: largest first, each
/// at its maximum bitrate.
pub fn simulcast_layers(plan: &[LayerPlan]) -> Vec<SimulcastLayer> {
    plan.iter()
        .rev()
        .map(|l| SimulcastLayer {
            width: l.width,
            height: l.height,
            bitrate_bps: l.max_bitrate_bps,
        })
        .collect()
}

/// What the rate control sets for each layer while running (lowest first); 0 stops
/// encoding a layer (nobody receives it, or the budget does not reach it).
#[derive(Debug)]
pub struct VideoControl {
    /// Each layer's bitrate, bit/s.
    pub bitrate_bps: Vec<AtomicU32>,
}

impl VideoControl {
    /// Every layer at its maximum.
    pub fn new(plan: &[LayerPlan]) -> Self {
        VideoControl {
            bitrate_bps: plan
                .iter()
                .map(|l| AtomicU32::new(l.max_bitrate_bps))
                .collect(),
        }
    }
}

/// What the video sender did.
#[derive(Debug, Default)]
pub struct VideoSendCounters {
    /// Pictures read from the source.
    pub frames_captured: AtomicU64,
    /// Frames encoded, all layers.
    pub frames_encoded: AtomicU64,
    /// Keyframes encoded, all layers.
    pub keyframes: AtomicU64,
    /// RTP packets sent.
    pub packets_sent: AtomicU64,
    /// Payload bytes sent.
    pub bytes_sent: AtomicU64,
    /// Frames dropped because the sender fell behind.
    pub frames_dropped: AtomicU64,
    /// Time spent encoding (scaling included), µs.
    pub encode_us: AtomicU64,
    /// Frames encoded per layer, lowest first.
    pub layer_frames: [AtomicU64; 3],
}

/// The video summary of what we sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VideoSentSummary {
    /// The codec.
    pub codec: VideoCodec,
    /// The layers, lowest first.
    pub layers: Vec<LayerPlan>,
    /// Pictures captured.
    pub frames_captured: u64,
    /// Frames encoded over all layers.
    pub frames_encoded: u64,
    /// Frames encoded per layer, lowest first.
    pub layer_frames: Vec<u64>,
    /// Keyframes over all layers.
    pub keyframes: u64,
    /// Keyframe requests received (PLI, FIR).
    pub keyframe_requests: u64,
    /// Encoded frames dropped because the network side fell behind.
    pub frames_dropped: u64,
    /// RTP packets sent (first transmissions).
    pub packets: u64,
    /// Retransmissions asked for (NACK) and not sent: too old to be played, or over
    /// their share of the bandwidth estimate.
    pub retransmissions_dropped: u64,
    /// Mean bitrate of all layers, kbit/s.
    pub kbps: f64,
    /// Share of one core spent scaling and encoding, %.
    pub encode_cpu_percent: f64,
    /// Each layer's bitrate at the end as the rate control set it, kbit/s (0: stopped).
    pub final_layer_kbps: Vec<u32>,
    /// Why the video input stopped, when it failed.
    pub input_failed: Option<String>,
}

/// Why video capture stopped.
#[derive(Debug)]
pub enum VideoCaptureEnd {
    /// The input ran out.
    InputEnded,
    /// Asked to stop.
    Stopped,
    /// The source or the encoder failed.
    Failed(String),
}

/// What the video capture thread and sender need.
pub struct VideoSend {
    /// Our video track and its layers.
    pub track: VideoTrack,
    /// The video m-line's MID and the extension ids negotiated for it.
    pub ids: ExtensionIds,
    /// The pictures.
    pub source: Box<dyn VideoSource>,
    /// The layers, lowest first (as many as the track has).
    pub plan: Vec<LayerPlan>,
    /// Bitrates while running.
    pub control: Arc<VideoControl>,
    /// Counters.
    pub counters: Arc<VideoSendCounters>,
    /// SFrame keys, when the call has them.
    pub crypto: Option<Arc<MediaCrypto>>,
    /// The codec the track was negotiated with.
    pub codec: VideoCodec,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// The media clock's origin.
    pub started: Instant,
    /// Told why capture stopped.
    pub ended: mpsc::UnboundedSender<VideoCaptureEnd>,
}

/// The MID and header-extension ids of our video m-line, read from our own SDP (an
/// answer keeps the offer's ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    /// The m-line's MID.
    pub mid: String,
    /// `sdes:mid`.
    pub mid_id: Option<u8>,
    /// `sdes:rtp-stream-id`.
    pub rid_id: Option<u8>,
    /// The dependency descriptor.
    pub dd_id: Option<u8>,
}

impl ExtensionIds {
    /// Reads them from the first video section of `sdp`.
    pub fn from_sdp(sdp: &str) -> Option<ExtensionIds> {
        let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).ok()?;
        let video = parsed
            .media_descriptions
            .iter()
            .find(|m| m.media_name.media == "video")?;
        let mut ids = ExtensionIds::default();
        for attribute in &video.attributes {
            let Some(value) = attribute.value.as_deref() else {
                continue;
            };
            match attribute.key.as_str() {
                "mid" => ids.mid = value.to_owned(),
                "extmap" => {
                    let mut parts = value.split_whitespace();
                    let (Some(id), Some(uri)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let id = id
                        .split('/')
                        .next()
                        .and_then(|id| id.parse::<u8>().ok())
                        .filter(|id| (1..=14).contains(id));
                    match uri {
                        SDES_MID_URI => ids.mid_id = id,
                        SDES_RTP_STREAM_ID_URI => ids.rid_id = id,
                        DEPENDENCY_DESCRIPTOR_URI => ids.dd_id = id,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Some(ids)
    }
}

/// One encoded frame on its way to the sender.
struct OutVideo {
    layer: usize,
    frame: sotto_vpx::EncodedFrame,
    rtp_timestamp: u32,
}

/// Starts sending video: the capture thread and the sender task (which ends when the
/// thread does).
pub fn start_send(
    send: VideoSend,
) -> std::io::Result<(thread::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let (frames_tx, frames_rx) = mpsc::channel::<OutVideo>(SEND_QUEUE);
    let task = tokio::spawn(run_sender(
        Sender {
            track: send.track.track.clone(),
            ssrcs: send.track.ssrcs.clone(),
            rids: send.track.rids.clone(),
            ids: send.ids.clone(),
            counters: send.counters.clone(),
            crypto: send.crypto.clone(),
            codec: send.codec,
        },
        frames_rx,
    ));
    let spawned = thread::Builder::new()
        .name("sotto-video-capture".into())
        .spawn(move || {
            let ended = send.ended.clone();
            let end = match capture_loop(send, &frames_tx) {
                Ok(end) => end,
                Err(err) => VideoCaptureEnd::Failed(err.to_string()),
            };
            let _ = ended.send(end);
        });
    match spawned {
        Ok(thread) => Ok((thread, task)),
        Err(err) => {
            task.abort();
            Err(err)
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn capture_loop(
    mut send: VideoSend,
    frames: &mpsc::Sender<OutVideo>,
) -> Result<VideoCaptureEnd, VideoError> {
    let fps = send.source.fps().max(1);
    let layers = send.plan.len();
    let simulcast = simulcast_layers(&send.plan);
    let (top_w, top_h) = (send.plan[layers - 1].width, send.plan[layers - 1].height);
    let base = EncoderConfig {
        frame_dropping: true,
        ..EncoderConfig::realtime(top_w, top_h, fps, 0)
    };
    let mut encoder = Encoders::new(send.codec, simulcast, base.clone())?;
    // A single stream (one-to-one) is encoded smaller when its bitrate is low, as a
    // simulcast subscriber would be moved to a smaller layer: 1, 2 or 4 (the divisor).
    let mut divisor = 1u32;
    let mut scaler = Scaler::default();
    let mut pacer = KeyframePacer::new(layers);
    let requests: &KeyframeRequests = &send.track.keyframes;
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut due = send.started;
    let mut current_bitrates: Vec<u32> = send.plan.iter().map(|l| l.max_bitrate_bps).collect();
    // A keyframe due on a layer after the layers above it stopped, and when.
    let mut stop_keyframe: Option<(usize, Instant)> = None;
    for index in 0u64.. {
        if send.stop.load(Ordering::Relaxed) {
            return Ok(VideoCaptureEnd::Stopped);
        }
        if !send.source.is_realtime() {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            } else if now - due > period * 4 {
                // Far behind (a slow machine): skip ahead instead of bursting.
                due = now;
            }
            due += period;
        }
        let captured = Instant::now();
        let at = FrameTime {
            index,
            wall_ms: wall_ms(),
        };
        let Some(picture) = send.source.read(at)? else {
            return Ok(VideoCaptureEnd::InputEnded);
        };
        send.counters
            .frames_captured
            .fetch_add(1, Ordering::Relaxed);
        let work = Instant::now();
        let mut stopped = None;
        for (layer, bitrate) in current_bitrates.iter_mut().enumerate() {
            let want = send.control.bitrate_bps[layer].load(Ordering::Relaxed);
            if want != *bitrate {
                encoder.set_bitrate(layers - 1 - layer, want)?;
                if *bitrate == 0 && want > 0 {
                    // A layer that resumes starts with a keyframe.
                    send.track.keyframes.want(layer);
                }
                if *bitrate > 0 && want == 0 {
                    stopped = Some(layer);
                }
                tracing::debug!(
                    layer,
                    from = *bitrate,
                    to = want,
                    "a layer's bitrate changes"
                );
                *bitrate = want;
            }
        }
        if let Some(stopped) = stopped
            && let Some(below) = (0..stopped).rev().find(|&l| current_bitrates[l] > 0)
            && current_bitrates[stopped..].iter().all(|&rate| rate == 0)
        {
            // The top layer stopped: its subscribers move down, and the SFU switches a
            // subscriber whose layer went silent at the next keyframe of a lower one.
            // Make one as soon as the SFU can tell the silence from jitter, instead of
            // waiting for it to call the layer stalled and ask.
            stop_keyframe = Some((below, captured + STOPPED_LAYER_KEYFRAME));
        }
        if let Some((layer, at)) = stop_keyframe
            && captured >= at
        {
            send.track.keyframes.want(layer);
            stop_keyframe = None;
        }
        if current_bitrates.iter().all(|&rate| rate == 0) {
            // Nobody receives any layer (dynacast): capture goes on, encoding does not.
            continue;
        }
        if layers == 1 {
            let wanted =
                single_stream_divisor(send.plan[0].max_bitrate_bps, current_bitrates[0], divisor);
            if wanted != divisor {
                tracing::debug!(from = divisor, to = wanted, "the stream's size changes");
                divisor = wanted;
                let layer = SimulcastLayer {
                    width: scaled(top_w, divisor),
                    height: scaled(top_h, divisor),
                    bitrate_bps: current_bitrates[0],
                };
                let config = EncoderConfig {
                    width: layer.width,
                    height: layer.height,
                    ..base.clone()
                };
                // A new encoder starts with a keyframe at its size.
                encoder = Encoders::new(send.codec, vec![layer], config)?;
            }
        }
        let mut pictures = Vec::with_capacity(layers);
        for plan in send.plan.iter().rev() {
            let (width, height) = if layers == 1 {
                (scaled(plan.width, divisor), scaled(plan.height, divisor))
            } else {
                (plan.width, plan.height)
            };
            pictures.push(scaler.scale(&picture, width, height)?);
        }
        let mut keyframes = pacer.take(requests, captured);
        keyframes.reverse();
        let elapsed = captured.saturating_duration_since(send.started);
        let pts = (elapsed.as_micros() as u64 * CLOCK_RATE / 1_000_000) as i64;
        let encoded = encoder.encode(&pictures, pts, &keyframes)?;
        send.counters
            .encode_us
            .fetch_add(work.elapsed().as_micros() as u64, Ordering::Relaxed);
        for (reversed, layer_frames) in encoded.into_iter().enumerate() {
            let layer = layers - 1 - reversed;
            for frame in layer_frames {
                send.counters.frames_encoded.fetch_add(1, Ordering::Relaxed);
                if let Some(count) = send.counters.layer_frames.get(layer) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                if frame.keyframe {
                    send.counters.keyframes.fetch_add(1, Ordering::Relaxed);
                    pacer.made(layer, captured);
                }
                let out = OutVideo {
                    layer,
                    rtp_timestamp: pts as u32,
                    frame,
                };
                match frames.try_send(out) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // The network side is behind: this layer's next frame must not
                        // depend on the one dropped.
                        send.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                        requests.want(layer);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Ok(VideoCaptureEnd::Stopped);
                    }
                }
            }
        }
    }
    Ok(VideoCaptureEnd::Stopped)
}

/// `size` divided by `divisor`, even (4:2:0 chroma).
fn scaled(size: u32, divisor: u32) -> u32 {
    (size / divisor.max(1)).max(2) & !1
}

/// A single stream's size divisor (1, 2 or 4) at `bps` of its `max_bps`, given the one
/// it is at now: half size below 35 % of the maximum, a quarter below 12 %, back up
/// only above 50 % and 20 % (so that a bitrate near a threshold does not switch sizes,
/// each switch costing a keyframe).
fn single_stream_divisor(max_bps: u32, bps: u32, now: u32) -> u32 {
    let share = f64::from(bps) / f64::from(max_bps.max(1));
    let (down_to_half, down_to_quarter, up_to_full, up_to_half) = (0.35, 0.12, 0.5, 0.2);
    match now {
        1 if share < down_to_quarter => 4,
        1 if share < down_to_half => 2,
        2 if share < down_to_quarter => 4,
        2 if share > up_to_full => 1,
        4 if share > up_to_full => 1,
        4 if share > up_to_half => 2,
        other => other,
    }
}

/// A minimal dependency descriptor (the AV1 RTP specification's mandatory fields, and on a
/// keyframe's first packet one byte of extended fields whose first flag says a template
/// structure follows): what the SFU reads to find keyframes. The SFU does not pass it on,
/// so no decoder ever parses it.
fn dependency_descriptor(start: bool, end: bool, keyframe: bool, frame_number: u16) -> Bytes {
    let [hi, lo] = frame_number.to_be_bytes();
    let mut first = 0u8;
    if start {
        first |= 0x80;
    }
    if end {
        first |= 0x40;
    }
    if start && keyframe {
        Bytes::from(vec![first, hi, lo, 0x80])
    } else {
        Bytes::from(vec![first, hi, lo])
    }
}

/// Per layer: its RTP sequence, payloader and frame numbering.
struct LayerSender {
    ssrc: u32,
    rid: &'static str,
    seq: u16,
    payloader: Vp8Payloader,
    frame_number: u16,
}

/// Seals a frame of `codec` with SFrame into `out`: VP8 whole, its first bytes clear;
/// H.264 NAL unit by NAL unit, headers clear.
fn seal(
    crypto: &MediaCrypto,
    codec: VideoCodec,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), crate::e2ee::sframe_keys::MediaKeyError> {
    match codec {
        VideoCodec::Vp8 => crypto.seal_video(frame, clear_prefix(frame), out),
        VideoCodec::H264 => h264_rtp::seal(crypto, frame, out),
    }
}

/// Opens a frame sealed by [`seal`] into `out`.
fn open(
    crypto: &MediaCrypto,
    codec: VideoCodec,
    frame: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> Result<(), crate::e2ee::sframe_keys::MediaKeyError> {
    match codec {
        VideoCodec::Vp8 => crypto.open_video(frame, clear_prefix(frame), now, out),
        VideoCodec::H264 => h264_rtp::open(crypto, frame, now, out),
    }
}

/// What the sender task writes with.
struct Sender {
    track: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    /// Each layer's SSRC and RID, lowest first.
    ssrcs: Vec<u32>,
    rids: Vec<&'static str>,
    ids: ExtensionIds,
    counters: Arc<VideoSendCounters>,
    crypto: Option<Arc<MediaCrypto>>,
    codec: VideoCodec,
}

async fn run_sender(sender: Sender, mut frames: mpsc::Receiver<OutVideo>) {
    let Sender {
        track,
        ssrcs,
        rids,
        ids,
        counters,
        crypto,
        codec,
    } = sender;
    let payload_type = match codec {
        VideoCodec::Vp8 => VP8_PAYLOAD_TYPE,
        VideoCodec::H264 => H264_PAYLOAD_TYPE,
    };
    let mut layers: Vec<LayerSender> = ssrcs
        .iter()
        .zip(&rids)
        .map(|(&ssrc, &rid)| LayerSender {
            ssrc,
            rid,
            seq: rand::random(),
            payloader: Vp8Payloader::new(MAX_PAYLOAD, rand::random()),
            frame_number: rand::random(),
        })
        .collect();
    let timestamp_base: u32 = rand::random();
    let mut sealed = Vec::new();
    while let Some(out) = frames.recv().await {
        let Some(layer) = layers.get_mut(out.layer) else {
            continue;
        };
        let data = &out.frame.data;
        let payload: &[u8] = match &crypto {
            Some(crypto) => match seal(crypto, codec, data, &mut sealed) {
                Ok(()) => &sealed,
                Err(err) => {
                    // Never sent in the clear instead.
                    tracing::warn!(%err, "a video frame could not be encrypted; not sent");
                    continue;
                }
            },
            None => data,
        };
        let meta = FrameMeta {
            temporal_layer: out.frame.temporal_layer,
            layer_sync: out.frame.layer_sync,
            non_reference: false,
        };
        let packets = match codec {
            VideoCodec::Vp8 => layer.payloader.packetize(payload, meta),
            VideoCodec::H264 => h264_rtp::packetize(payload, MAX_PAYLOAD),
        };
        let count = packets.len();
        let frame_number = layer.frame_number;
        layer.frame_number = layer.frame_number.wrapping_add(1);
        for (i, packet_payload) in packets.into_iter().enumerate() {
            let (start, end) = (i == 0, i + 1 == count);
            let mut packet = RtpPacket {
                header: Header {
                    version: 2,
                    marker: end,
                    payload_type,
                    sequence_number: layer.seq,
                    timestamp: timestamp_base.wrapping_add(out.rtp_timestamp),
                    ssrc: layer.ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(packet_payload),
            };
            layer.seq = layer.seq.wrapping_add(1);
            let mut extensions: Vec<(u8, Bytes)> = Vec::new();
            if !layer.rid.is_empty()
                && let (Some(mid_id), Some(rid_id)) = (ids.mid_id, ids.rid_id)
            {
                extensions.push((mid_id, Bytes::from(ids.mid.clone())));
                extensions.push((rid_id, Bytes::from(layer.rid)));
            }
            if let Some(dd_id) = ids.dd_id {
                extensions.push((
                    dd_id,
                    dependency_descriptor(start, end, out.frame.keyframe, frame_number),
                ));
            }
            if !extensions.is_empty() {
                packet.header.extension = true;
                packet.header.extension_profile = 0xBEDE;
                for (id, value) in extensions {
                    if let Err(err) = packet.header.set_extension(id, value) {
                        tracing::debug!(%err, "a video header extension was not set");
                    }
                }
            }
            let bytes = packet.payload.len() as u64;
            match track.write_rtp(packet).await {
                Ok(()) => {
                    counters.packets_sent.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                }
                Err(err) => tracing::debug!(%err, "a video packet was not sent"),
            }
        }
    }
}

/// One second of a received video stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VideoSecond {
    /// Seconds since the stream's first packet (or picture).
    pub t_s: u32,
    /// Pictures shown in this second.
    pub frames: u32,
    /// The height of the last one (0: none).
    pub height: u32,
    /// RTP payload that arrived, kbit/s (0 where not known: a browser's pictures).
    pub kbps: f64,
}

/// What one received video stream looked like.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VideoReceivedSummary {
    /// The codec of the last stream (VP8 before any came).
    pub codec: VideoCodec,
    /// RTP packets received.
    pub packets: u64,
    /// Frames put together from them.
    pub frames_received: u64,
    /// Frames decoded.
    pub frames_decoded: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Frames that did not decode (corrupt, missing reference, refused by SFrame).
    pub frames_dropped: u64,
    /// PLIs we sent.
    pub plis_sent: u64,
    /// Packets that filled a hole behind the newest (retransmissions, reordering).
    pub packets_filled: u64,
    /// Packets that came after their frame had been given up (too late to use).
    pub packets_late: u64,
    /// Frames given up because a packet did not come within
    /// [`REORDER_WAIT`](crate::video::receive::REORDER_WAIT).
    pub frames_given_up: u64,
    /// Frames not decoded because a frame they may reference was missing (they would have
    /// shown damaged pictures), until the next keyframe.
    pub frames_skipped: u64,
    /// Decoded frames per second over the time between the first and the last.
    pub fps: f64,
    /// Second by second: pictures shown, their height, what arrived.
    pub timeline: Vec<VideoSecond>,
    /// Freezes: a gap between decoded frames longer than max(3 × the mean frame interval,
    /// mean + 150 ms), as WebRTC's statistics count them.
    pub freezes: u64,
    /// Their total duration, ms.
    pub freeze_ms: f64,
    /// Resolution changes (layer switches).
    pub resolution_changes: u64,
    /// The last resolution.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Frames whose frame code was read (test pattern senders).
    pub coded_frames: u64,
    /// Coded frames that came after a higher frame number (out of order).
    pub out_of_order: u64,
    /// Glass-to-glass delay from the frame code, ms, median.
    pub delay_p50_ms: Option<f64>,
    /// 95th percentile of it.
    pub delay_p95_ms: Option<f64>,
    /// Share of one core spent decoding, %.
    pub decode_cpu_percent: f64,
}

/// The receive side's statistics, kept by the decode thread.
#[derive(Debug, Default)]
pub struct VideoReceiveStats {
    inner: Mutex<ReceiveStats>,
    /// RTP packets received.
    pub packets: AtomicU64,
    /// Frames assembled.
    pub frames_received: AtomicU64,
    /// PLIs sent.
    pub plis_sent: AtomicU64,
    /// See [`VideoReceivedSummary::packets_filled`].
    pub filled: AtomicU64,
    /// See [`VideoReceivedSummary::packets_late`].
    pub late: AtomicU64,
    /// See [`VideoReceivedSummary::frames_given_up`].
    pub given_up: AtomicU64,
    /// See [`VideoReceivedSummary::frames_skipped`].
    pub skipped: AtomicU64,
}

#[derive(Debug, Default)]
struct ReceiveStats {
    codec: VideoCodec,
    decoded: u64,
    keyframes: u64,
    dropped: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    intervals: VecDeque<f64>,
    freezes: u64,
    freeze_ms: f64,
    size: (u32, u32),
    resolution_changes: u64,
    coded: u64,
    highest_code: Option<u32>,
    out_of_order: u64,
    delays: Vec<f64>,
    decode_us: u64,
    /// When the stream's first packet or picture came: the timeline's zero.
    origin: Option<Instant>,
    timeline: Vec<VideoSecond>,
}

/// The window of frame intervals a freeze is judged against.
const FREEZE_WINDOW: usize = 30;

impl ReceiveStats {
    fn decoded(
        &mut self,
        now: Instant,
        size: (u32, u32),
        keyframe: bool,
        code: Option<FrameCode>,
        delay_ms: Option<f64>,
    ) {
        self.decoded += 1;
        if keyframe {
            self.keyframes += 1;
        }
        let second = self.second(now);
        second.frames += 1;
        second.height = size.1;
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
            if self.intervals.len() >= 5 {
                let mean = self.intervals.iter().sum::<f64>() / self.intervals.len() as f64;
                if gap > (3.0 * mean).max(mean + 150.0) {
                    tracing::debug!(gap_ms = gap, keyframe, ?size, "video froze");
                    self.freezes += 1;
                    self.freeze_ms += gap;
                }
            }
            self.intervals.push_back(gap);
            if self.intervals.len() > FREEZE_WINDOW {
                self.intervals.pop_front();
            }
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.size != size {
            if self.size != (0, 0) {
                self.resolution_changes += 1;
            }
            self.size = size;
        }
        if let Some(code) = code {
            self.coded += 1;
            if self.highest_code.is_some_and(|h| code.frame <= h) {
                self.out_of_order += 1;
            }
            self.highest_code = Some(self.highest_code.map_or(code.frame, |h| h.max(code.frame)));
            if let Some(delay) = delay_ms {
                self.delays.push(delay);
            }
        }
    }

    /// The timeline's entry for the second `now` falls in.
    fn second(&mut self, now: Instant) -> &mut VideoSecond {
        let origin = *self.origin.get_or_insert(now);
        let index = now.saturating_duration_since(origin).as_secs() as usize;
        while self.timeline.len() <= index {
            let t_s = self.timeline.len() as u32;
            self.timeline.push(VideoSecond {
                t_s,
                ..VideoSecond::default()
            });
        }
        &mut self.timeline[index]
    }

    fn summary(
        &self,
        packets: u64,
        frames_received: u64,
        plis: u64,
        wall: Duration,
    ) -> VideoReceivedSummary {
        let span = match (self.first, self.last) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let mut delays = self.delays.clone();
        delays.sort_by(f64::total_cmp);
        let pick = |q: f64| -> Option<f64> {
            if delays.is_empty() {
                return None;
            }
            let i = ((delays.len() - 1) as f64 * q).round() as usize;
            delays.get(i).copied()
        };
        VideoReceivedSummary {
            codec: self.codec,
            packets,
            frames_received,
            frames_decoded: self.decoded,
            keyframes: self.keyframes,
            frames_dropped: self.dropped,
            plis_sent: plis,
            packets_filled: 0,
            packets_late: 0,
            frames_given_up: 0,
            frames_skipped: 0,
            fps: if span > 0.0 {
                round2((self.decoded.saturating_sub(1)) as f64 / span)
            } else {
                0.0
            },
            timeline: self.timeline.clone(),
            freezes: self.freezes,
            freeze_ms: round2(self.freeze_ms),
            resolution_changes: self.resolution_changes,
            width: self.size.0,
            height: self.size.1,
            coded_frames: self.coded,
            out_of_order: self.out_of_order,
            delay_p50_ms: pick(0.5),
            delay_p95_ms: pick(0.95),
            decode_cpu_percent: round2(
                self.decode_us as f64 / 1e6 / wall.as_secs_f64().max(1e-3) * 100.0,
            ),
        }
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

impl VideoReceiveStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReceiveStats> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A picture decoded elsewhere (a browser's) was shown `at`: its size, whether it was
    /// a keyframe, its frame code and its glass-to-glass delay, counted as the decode
    /// thread counts its own.
    pub fn shown(
        &self,
        at: Instant,
        size: (u32, u32),
        keyframe: bool,
        code: Option<FrameCode>,
        delay_ms: Option<f64>,
    ) {
        self.lock().decoded(at, size, keyframe, code, delay_ms);
    }

    /// `bytes` of RTP payload arrived `at`.
    pub fn arrived(&self, at: Instant, bytes: usize) {
        self.lock().second(at).kbps += bytes as f64 * 8.0 / 1000.0;
    }

    /// The summary over `wall` of connected time.
    pub fn summary(&self, wall: Duration) -> VideoReceivedSummary {
        VideoReceivedSummary {
            packets_filled: self.filled.load(Ordering::Relaxed),
            packets_late: self.late.load(Ordering::Relaxed),
            frames_given_up: self.given_up.load(Ordering::Relaxed),
            frames_skipped: self.skipped.load(Ordering::Relaxed),
            ..self.lock().summary(
                self.packets.load(Ordering::Relaxed),
                self.frames_received.load(Ordering::Relaxed),
                self.plis_sent.load(Ordering::Relaxed),
                wall,
            )
        }
    }
}

/// A frame on its way to the decoder.
struct InVideo {
    codec: VideoCodec,
    data: Vec<u8>,
}

/// The decode thread of a received video stream (its result: whether the sink took
/// every picture).
pub type DecodeThread = thread::JoinHandle<Result<(), VideoError>>;

/// Receives one remote video track until it ends: assembles frames, opens them, and
/// decodes them on a thread of its own into `sink`. Returns the decode thread and the
/// receiver task.
pub fn start_receive(
    track: Arc<dyn TrackRemote>,
    crypto: Option<Arc<MediaCrypto>>,
    sink: Box<dyn VideoSink>,
    stats: Arc<VideoReceiveStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(DecodeThread, tokio::task::JoinHandle<()>)> {
    let (frames_tx, frames_rx) = std::sync::mpsc::sync_channel::<InVideo>(DECODE_QUEUE);
    let need_keyframe = Arc::new(AtomicBool::new(false));
    let decode_stats = stats.clone();
    let decode_need = need_keyframe.clone();
    let thread = thread::Builder::new()
        .name("sotto-video-decode".into())
        .spawn(move || decode_loop(frames_rx, sink, &decode_stats, &decode_need, &stop))?;
    let task = tokio::spawn(run_receiver(track, crypto, frames_tx, stats, need_keyframe));
    Ok((thread, task))
}

async fn run_receiver(
    track: Arc<dyn TrackRemote>,
    crypto: Option<Arc<MediaCrypto>>,
    frames: std::sync::mpsc::SyncSender<InVideo>,
    stats: Arc<VideoReceiveStats>,
    need_keyframe: Arc<AtomicBool>,
) {
    let mut receiver = VideoReceiver::new();
    let mut codec = VideoCodec::Vp8;
    let mut opened = Vec::new();
    let mut ssrc = 0u32;
    loop {
        // Wake up now and then even when nothing arrives: a waiting frame's time may run
        // out, and a keyframe may be due.
        let event = tokio::time::timeout(Duration::from_millis(20), track.poll()).await;
        let now = Instant::now();
        let mut done = match event {
            Ok(Some(TrackRemoteEvent::OnRtpPacket(packet))) => {
                if packet.header.ssrc != ssrc {
                    // A new stream (the first, or the peer's encoder restarted): its
                    // codec is the one negotiated for its payload type.
                    let negotiated = track
                        .codec(packet.header.ssrc)
                        .await
                        .and_then(|c| VideoCodec::from_mime(&c.mime_type))
                        .unwrap_or_default();
                    if negotiated != codec || ssrc == 0 {
                        codec = negotiated;
                        stats.lock().codec = codec;
                        receiver = VideoReceiver::with_codec(codec);
                    }
                }
                ssrc = packet.header.ssrc;
                stats.packets.fetch_add(1, Ordering::Relaxed);
                stats.arrived(now, packet.payload.len());
                receiver.packet(
                    packet.header.sequence_number,
                    packet.header.timestamp,
                    packet.header.marker,
                    &packet.payload,
                    now,
                )
            }
            Ok(Some(TrackRemoteEvent::OnEnded) | None) => break,
            Ok(Some(_)) => continue,
            Err(_) => receiver.poll(now),
        };
        let assembler = receiver.assembler();
        stats.filled.store(assembler.filled, Ordering::Relaxed);
        stats.late.store(assembler.late, Ordering::Relaxed);
        stats.given_up.store(assembler.gaps, Ordering::Relaxed);
        stats.skipped.store(receiver.skipped, Ordering::Relaxed);
        for frame in done.drain(..) {
            stats.frames_received.fetch_add(1, Ordering::Relaxed);
            let data = match &crypto {
                Some(crypto) => match open(crypto, codec, &frame.data, now, &mut opened) {
                    Ok(()) => std::mem::take(&mut opened),
                    Err(err) => {
                        tracing::debug!(%err, "a video frame was refused");
                        continue;
                    }
                },
                None => frame.data,
            };
            if frames.try_send(InVideo { codec, data }).is_err() {
                // The decoder is behind: the next frames need a keyframe.
                receiver.want_keyframe();
            }
        }
        if need_keyframe.swap(false, Ordering::Relaxed) {
            receiver.want_keyframe();
        }
        if ssrc != 0 && receiver.pli_due(now) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                stats.plis_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn decode_loop(
    frames: std::sync::mpsc::Receiver<InVideo>,
    mut sink: Box<dyn VideoSink>,
    stats: &VideoReceiveStats,
    need_keyframe: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), VideoError> {
    let mut decoder = FrameDecoder::new(1)?;
    let mut codec = VideoCodec::Vp8;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let frame = match frames.recv_timeout(Duration::from_millis(50)) {
            Ok(frame) => frame,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
        };
        if frame.codec != codec {
            codec = frame.codec;
            decoder = FrameDecoder::with_codec(codec, 1)?;
        }
        let started = Instant::now();
        let decoded = decoder.decode(&frame.data);
        let spent = started.elapsed().as_micros() as u64;
        stats.lock().decode_us += spent;
        match decoded {
            Decoded::Picture { picture, keyframe } => {
                let code = FrameCode::read(&picture.y, picture.width, picture.height);
                let delay = code.map(|code| f64::from(code.age_ms(wall_ms())));
                stats.lock().decoded(
                    Instant::now(),
                    (picture.width, picture.height),
                    keyframe,
                    code,
                    delay,
                );
                if let Err(err) = sink.write(&picture) {
                    break Err(err);
                }
            }
            Decoded::Nothing => {}
            Decoded::Dropped => {
                // Damaged, undecodable or not a keyframe while one is awaited.
                stats.lock().dropped += 1;
                need_keyframe.store(true, Ordering::Relaxed);
            }
        }
    };
    let finished = sink.finish();
    result.and(finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::VideoFrame;

    #[test]
    fn layers_halve_down_from_the_source() {
        let plan = plan_layers(640, 360, 3);
        let sizes: Vec<(u32, u32)> = plan.iter().map(|l| (l.width, l.height)).collect();
        assert_eq!(sizes, vec![(160, 90), (320, 180), (640, 360)]);
        assert!(plan[0].max_bitrate_bps < plan[1].max_bitrate_bps);
        assert!(plan[2].max_bitrate_bps > 700_000 && plan[2].max_bitrate_bps < 1_200_000);
        // Small sources get fewer layers.
        assert_eq!(plan_layers(160, 90, 3).len(), 2);
        assert_eq!(plan_layers(1280, 720, 3)[0].width, 320);
    }

    #[test]
    fn the_top_layer_stops_first() {
        let plan = plan_layers(640, 360, 3);
        let max: Vec<u32> = plan.iter().map(|l| l.max_bitrate_bps).collect();
        // No estimate yet: everything at its maximum.
        assert_eq!(allocate_layers(&plan, 0, 32_000, &max), max);
        // Plenty: everything at its maximum.
        assert_eq!(allocate_layers(&plan, 5_000_000, 32_000, &max), max);
        // 500 kbit/s: the top layer stops, the others run.
        let mid = allocate_layers(&plan, 500_000, 32_000, &max);
        assert_eq!(mid[2], 0);
        assert!(mid[0] > 0 && mid[1] > 0, "{mid:?}");
        assert!(u64::from(mid[0] + mid[1]) <= 500_000 - 32_000);
        // Starved: only the lowest layer, at its floor.
        let low = allocate_layers(&plan, 50_000, 32_000, &mid);
        assert!(low[0] > 0 && low[1] == 0 && low[2] == 0, "{low:?}");
        // Just above the top layer's floor: a running top layer stays, a stopped one
        // waits for more.
        let floor = f64::from(plan[2].max_bitrate_bps) * LAYER_FLOOR;
        let lower = u64::from(plan[0].max_bitrate_bps + plan[1].max_bitrate_bps);
        let estimate = ((lower as f64 + floor * 1.1) * OVERHEAD) as u64 + 32_000;
        assert!(allocate_layers(&plan, estimate, 32_000, &max)[2] > 0);
        assert_eq!(allocate_layers(&plan, estimate, 32_000, &mid)[2], 0);
        // One stream (a one-to-one call) goes far below its floor rather than overfill
        // a thin link.
        let single = plan_layers(640, 360, 1);
        let one = allocate_layers(&single, 150_000, 32_000, &[single[0].max_bitrate_bps]);
        assert!(u64::from(one[0]) <= 150_000 - 32_000, "{one:?}");
        let starved = allocate_layers(&single, 40_000, 32_000, &one);
        assert_eq!(u64::from(starved[0]), LOWEST_LAYER_FLOOR_BPS);
    }

    #[test]
    fn a_single_stream_gets_smaller_at_low_bitrates_and_back() {
        let max = 900_000;
        assert_eq!(single_stream_divisor(max, 800_000, 1), 1);
        assert_eq!(single_stream_divisor(max, 300_000, 1), 2);
        assert_eq!(single_stream_divisor(max, 100_000, 1), 4);
        // Hysteresis: between the thresholds, the size stays.
        assert_eq!(single_stream_divisor(max, 400_000, 2), 2);
        assert_eq!(single_stream_divisor(max, 400_000, 1), 1);
        assert_eq!(single_stream_divisor(max, 150_000, 4), 4);
        assert_eq!(single_stream_divisor(max, 200_000, 4), 2);
        assert_eq!(single_stream_divisor(max, 500_000, 4), 1);
        assert_eq!((scaled(640, 4), scaled(360, 4)), (160, 90));
        assert_eq!(scaled(90, 4), 22);
    }

    #[test]
    fn freezes_follow_webrtcs_definition() {
        let mut stats = ReceiveStats::default();
        let start = Instant::now();
        let mut t = 0u64;
        for _ in 0..20 {
            stats.decoded(
                start + Duration::from_millis(t),
                (640, 360),
                false,
                None,
                None,
            );
            t += 33;
        }
        // 200 ms: above mean + 150 (183) and 3 × mean (99): a freeze.
        t += 167;
        stats.decoded(
            start + Duration::from_millis(t),
            (640, 360),
            false,
            None,
            None,
        );
        // 150 ms: under mean + 150: not one.
        t += 150;
        stats.decoded(
            start + Duration::from_millis(t),
            (320, 180),
            false,
            None,
            None,
        );
        let summary = stats.summary(0, 0, 0, Duration::from_secs(1));
        assert_eq!(summary.freezes, 1);
        assert_eq!(summary.resolution_changes, 1);
        assert_eq!((summary.width, summary.height), (320, 180));
    }

    /// A recording sink that keeps the sizes it was given.
    struct Sizes(Arc<Mutex<Vec<(u32, u32)>>>);

    impl VideoSink for Sizes {
        fn write(&mut self, frame: &VideoFrame) -> Result<(), VideoError> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((frame.width, frame.height));
            Ok(())
        }

        fn finish(&mut self) -> Result<(), VideoError> {
            Ok(())
        }
    }

    fn encoded(width: u32, height: u32, frames: u64, keyframe_every: u64) -> Vec<Vec<u8>> {
        let mut encoder = sotto_vpx::Vp8Encoder::new(sotto_vpx::EncoderConfig {
            frame_dropping: false,
            ..sotto_vpx::EncoderConfig::realtime(width, height, 30, 300_000)
        })
        .unwrap();
        let mut out = Vec::new();
        for i in 0..frames {
            let picture = crate::video::pattern::render(width, height, i, i * 33);
            for frame in encoder
                .encode(&picture.as_i420(), i as i64 * 3000, i % keyframe_every == 0)
                .unwrap()
            {
                out.push(frame.data);
            }
        }
        out
    }

    /// The decode thread against bad streams: one that starts without a keyframe, a
    /// corrupt frame in the middle, garbage, and a resolution change at a keyframe. It
    /// drops (and counts) what it cannot show, asks for keyframes, never shows a damaged
    /// picture, and recovers at the next keyframe.
    #[test]
    fn bad_streams_are_counted_and_recovered_from() {
        let small = encoded(160, 90, 10, 5);
        let large = encoded(320, 180, 4, 100);
        let mut corrupt = small[7].clone();
        for byte in corrupt.iter_mut().skip(3) {
            *byte ^= 0x5a;
        }
        let stream: Vec<Vec<u8>> = vec![
            // Delta frames before any keyframe: dropped.
            small[1].clone(),
            small[2].clone(),
            // A keyframe and its deltas: shown.
            small[5].clone(),
            small[6].clone(),
            // Damaged, then a delta that depends on it: dropped until a keyframe.
            corrupt,
            small[8].clone(),
            vec![],
            vec![0xff; 7],
            // A keyframe of another size, and a delta: shown at the new size.
            large[0].clone(),
            large[1].clone(),
        ];
        let (tx, rx) = std::sync::mpsc::sync_channel(stream.len());
        for data in stream {
            tx.send(InVideo {
                codec: VideoCodec::Vp8,
                data,
            })
            .unwrap();
        }
        drop(tx);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let stats = VideoReceiveStats::default();
        let need_keyframe = AtomicBool::new(false);
        decode_loop(
            rx,
            Box::new(Sizes(sizes.clone())),
            &stats,
            &need_keyframe,
            &AtomicBool::new(false),
        )
        .unwrap();
        let shown = sizes.lock().unwrap().clone();
        assert_eq!(
            shown,
            vec![(160, 90), (160, 90), (320, 180), (320, 180)],
            "{:?}",
            stats.summary(Duration::from_secs(1))
        );
        let summary = stats.summary(Duration::from_secs(1));
        assert_eq!(summary.frames_decoded, 4);
        assert_eq!(summary.frames_dropped, 6, "{summary:?}");
        assert_eq!(summary.resolution_changes, 1);
        assert_eq!(summary.coded_frames, 4, "{summary:?}");
        assert!(need_keyframe.load(Ordering::Relaxed));
    }

    #[test]
    fn extension_ids_come_from_the_video_section() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
            a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
            a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
            a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
            a=extmap:12 https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension\r\n";
        let ids = ExtensionIds::from_sdp(sdp).unwrap();
        assert_eq!(ids.mid, "1");
        assert_eq!(
            (ids.mid_id, ids.rid_id, ids.dd_id),
            (Some(4), Some(10), Some(12))
        );
        assert_eq!(ExtensionIds::from_sdp("garbage"), None);
    }
}
