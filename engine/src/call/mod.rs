//! One-to-one voice calls: a [`Phone`] owns a signaling connection, places calls and hands
//! out incoming ones; each call runs as one task ([`session`]) that drives the WebRTC peer
//! connection ([`peer`]) and the audio pipeline ([`media`]), and reports its state as
//! [`CallEvent`]s and, at the end, a [`CallSummary`].

mod addresses;
mod flow;
pub mod group;
pub mod keyframes;
pub mod media;
pub mod peer;
mod phone;
mod pipeline;
pub mod reports;
mod session;
pub mod video;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use sotto_signaling::protocol::HangupReason;

use crate::audio::codec::{DEFAULT_DECODER_COMPLEXITY, EncoderConfig};
use crate::audio::jitter::JitterConfig;
use crate::audio::{AudioError, InputSpec, OutputSpec};
use crate::e2ee::media::MediaCrypto;
use crate::video::{VideoCodec, VideoOutput, VideoSpec};

pub use phone::{CallHandle, IncomingCall, Phone};

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// How the call finds a path to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceConfig {
    /// STUN and TURN servers (none by default: host candidates only).
    pub servers: Vec<IceServer>,
    /// Local addresses to gather host candidates on. `0.0.0.0:0` (the default) means every
    /// interface except loopback and link-local; name `127.0.0.1:0` to allow loopback (tests,
    /// one-machine demos).
    pub bind: Vec<String>,
    /// Which candidates the peer is told about.
    pub advertise: Advertise,
}

/// Which local candidates a call tells the peer about. Anything but the default is for
/// putting a call through a relay that impairs it (`sotto-bench relay`): the peer must
/// reach us only through the relay, and the relay's address is not one we gathered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Advertise {
    /// Every gathered candidate, as gathered.
    #[default]
    Gathered,
    /// None: the peer learns our address from our connectivity checks (peer-reflexive),
    /// i.e. from wherever they come from.
    Nothing,
    /// One host candidate, at this address instead of ours (the relay's).
    Address(std::net::SocketAddr),
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            servers: Vec::new(),
            bind: vec!["0.0.0.0:0".to_owned()],
            advertise: Advertise::Gathered,
        }
    }
}

impl IceConfig {
    /// Host candidates on loopback only: both ends on this machine.
    pub fn loopback() -> Self {
        IceConfig {
            servers: Vec::new(),
            bind: vec!["127.0.0.1:0".to_owned()],
            advertise: Advertise::Gathered,
        }
    }
}

/// Everything a call needs to know up front.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Where our voice comes from.
    pub input: InputSpec,
    /// Where the peer's voice goes.
    pub output: OutputSpec,
    /// Opus settings (bitrate is then adapted between 16 and 64 kbit/s).
    pub encoder: EncoderConfig,
    /// Jitter buffer tuning.
    pub jitter: JitterConfig,
    /// ICE.
    pub ice: IceConfig,
    /// How long the caller waits for an answer.
    pub ring_timeout: Duration,
    /// How long the media path may take to come up after the answer.
    pub connect_timeout: Duration,
    /// How long a lost media path may take to come back before the call ends.
    pub reconnect_timeout: Duration,
    /// Hang up after this long connected (`--duration`).
    pub max_duration: Option<Duration>,
    /// When the input is a file and it ends, hang up after this much more (so the last
    /// words still reach the peer). `None`: keep the call up, sending silence.
    pub hang_up_after_input: Option<Duration>,
    /// SFrame keys from the MLS group of the conversation with the peer: every audio
    /// frame is encrypted end to end, and the peer must do the same (a call where one side
    /// does and the other does not fails rather than falls back). `None`: media is
    /// protected by DTLS-SRTP only (calls with browsers).
    pub e2ee: Option<Arc<MediaCrypto>>,
    /// Offer RED (RFC 2198) over Opus; when the peer takes it, packets repeat earlier
    /// frames while the peer reports loss (see [`crate::audio::rate`]).
    pub red: bool,
    /// The Opus decoder's complexity (0..=10): 5 and up conceal loss with deep PLC and
    /// decode DRED, 6 and 7 add the LACE and NoLACE enhancers (default: 7, NoLACE).
    pub decoder_complexity: u8,
    /// What we show ([`VideoSpec::None`]: no video of ours; one stream otherwise, its
    /// bitrate from the bandwidth estimate after audio's share).
    pub video: VideoSpec,
    /// The codec we send video in: the callee takes the other one when the caller's offer
    /// lacks it. Both are offered to receive.
    pub video_codec: VideoCodec,
    /// Where the peer's video goes; `None` does not ask for it (an audio call, unless
    /// we send video, in which case it is received and dropped).
    pub video_output: Option<VideoOutput>,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            input: InputSpec::DefaultDevice,
            output: OutputSpec::DefaultDevice,
            // No DRED by default: next to RED it took the primary frame's bits and cost
            // 0.3–0.45 PESQ under random loss, for +0.2 under bursts (BENCHMARKS.md).
            // `CALL_DRED_UNITS` turns it on.
            encoder: EncoderConfig::default(),
            jitter: JitterConfig::default(),
            ice: IceConfig::default(),
            ring_timeout: Duration::from_secs(45),
            connect_timeout: Duration::from_secs(20),
            reconnect_timeout: Duration::from_secs(30),
            max_duration: None,
            hang_up_after_input: None,
            e2ee: None,
            red: true,
            decoder_complexity: DEFAULT_DECODER_COMPLEXITY,
            video: VideoSpec::None,
            video_codec: VideoCodec::default(),
            video_output: None,
        }
    }
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// The offer reached the peer (caller) or is waiting to be answered (callee).
    Ringing,
    /// Answered; ICE and DTLS are setting up the media path, then the first media has to
    /// go both ways.
    Connecting,
    /// Media flows both ways.
    Connected,
    /// The media path was lost or media stopped arriving; ICE is restarting.
    Reconnecting,
    /// Over; see the summary.
    Ended,
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// This end.
    Local,
    /// The peer.
    Remote,
}

/// Why and by whom a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndReason {
    /// Who ended it.
    pub by: Side,
    /// The reason as the signaling protocol names it.
    pub reason: HangupReason,
    /// Details for humans ("no answer within 45 s", "malformed SDP from the peer: …").
    pub detail: String,
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The call moved to a new state (never `Ended`: that comes as [`CallEvent::Ended`]).
    State(CallState),
    /// The call is over.
    Ended(Box<CallSummary>),
    /// An end-to-end encrypted message from the peer on the call's data channel (calls
    /// keyed from a conversation): the bytes of an MLS message, for
    /// `Conversations::receive`.
    Message(Vec<u8>),
}

/// What the sender side did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SentSummary {
    /// RTP packets sent.
    pub packets: u64,
    /// Mean Opus payload bitrate over the connected time, kbit/s.
    pub payload_kbps: f64,
    /// Frames not sent because the encoder was in DTX.
    pub dtx_frames: u64,
    /// The encoder's bitrate at the end, bit/s.
    pub final_bitrate_bps: u32,
    /// The loss percentage the encoder's FEC was tuned for at the end.
    pub final_loss_percent: u8,
}

/// One second of a call, as the rate controller and the jitter buffer saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Time since connected, seconds.
    pub t_s: f64,
    /// The encoder's bitrate, bit/s.
    pub bitrate_bps: u32,
    /// The loss percentage the encoder's FEC is tuned for.
    pub fec_loss_percent: u8,
    /// Earlier frames each packet repeats (RED).
    pub red_depth: u8,
    /// How much audio each packet carries, ms (longer on narrow links).
    pub frame_ms: u32,
    /// The loss the peer last reported about our stream, %.
    pub reported_loss_percent: Option<f64>,
    /// The latest round trip, ms.
    pub rtt_ms: Option<f64>,
    /// Whether the rate controller saw congestion.
    pub congested: bool,
    /// The jitter buffer's target delay, ms.
    pub jitter_target_ms: Option<f64>,
    /// Audio buffered now, ms.
    pub jitter_current_ms: Option<f64>,
}

/// What the receiver side saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReceivedSummary {
    /// RTP packets received on the audio track.
    pub packets: u64,
    /// Mean Opus payload bitrate over the connected time, kbit/s.
    pub payload_kbps: f64,
    /// Packets that never arrived in time (concealed by FEC or PLC).
    pub lost: u64,
    /// `lost` as a share of the packets expected, in percent.
    pub loss_percent: f64,
    /// Packets that came after their playout time.
    pub late: u64,
    /// Duplicates dropped.
    pub duplicate: u64,
    /// Mean jitter-buffer delay over the played frames, ms.
    pub jitter_buffer_mean_ms: f64,
    /// The jitter buffer's target delay at the end, ms.
    pub jitter_buffer_target_ms: f64,
    /// Audio played that was not decoded from its own packet (FEC, PLC, expansion), ms.
    pub concealed_ms: f64,
    /// Frames rebuilt from the next packet's in-band FEC.
    pub fec_frames: u64,
    /// Frames concealed by PLC.
    pub plc_frames: u64,
    /// Frames dropped whole to bring the delay down (far over target).
    pub accelerated: u64,
    /// Frames of concealment played while waiting for late packets.
    pub expanded: u64,
    /// Audio cut out by time-stretching to bring the delay down, ms.
    pub shortened_ms: f64,
    /// Audio added by time-stretching to bring the delay up, ms.
    pub lengthened_ms: f64,
    /// Times the path became lastingly slower or faster and the jitter buffer took the
    /// new path's delay as its base (not as jitter).
    pub path_changes: u64,
    /// Comfort-noise frames played while the peer was silent (DTX), not counted as
    /// concealment.
    pub comfort_noise_frames: u64,
    /// Frames that failed to decode.
    pub decode_errors: u64,
    /// Frames played from a redundant copy in a later packet (RFC 2198).
    pub red_recovered: u64,
    /// Redundant copies that came after their frame had been concealed or taken from FEC:
    /// repairs the jitter buffer did not wait long enough for.
    pub late_copies: u64,
    /// Frames rebuilt from a later packet's deep redundancy (DRED), in runs of 2 or more.
    pub dred_rebuilt: u64,
}

/// What SFrame did in a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct E2eeSummary {
    /// The MLS epoch our frames were last sealed in.
    pub epoch: u64,
    /// Frames we encrypted.
    pub sealed: u64,
    /// Frames we decrypted.
    pub opened: u64,
    /// Frames refused (tampered, replayed, unknown key, not encrypted): never played.
    pub rejected: u64,
    /// Messages that came on the call's data channel (one-to-one calls).
    pub messages_received: u64,
    /// Messages dropped there: too large, or beyond the rate a peer may send.
    pub messages_dropped: u64,
}

impl E2eeSummary {
    /// The counters of a call's SFrame state.
    pub fn of(crypto: &MediaCrypto) -> Self {
        E2eeSummary {
            epoch: crypto.epoch(),
            sealed: crypto.sealed.load(Ordering::Relaxed),
            opened: crypto.opened.load(Ordering::Relaxed),
            rejected: crypto.rejected.load(Ordering::Relaxed),
            messages_received: 0,
            messages_dropped: 0,
        }
    }
}

/// The call summary printed at the end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    /// The call's id.
    pub call_id: String,
    /// The peer's identity key.
    pub peer: String,
    /// "caller" or "callee".
    pub role: &'static str,
    /// Whether media ever flowed.
    pub connected: bool,
    /// From the offer (or answer) to the first connection, ms.
    pub setup_ms: Option<f64>,
    /// Connected time, seconds.
    pub duration_s: f64,
    /// ICE restarts done.
    pub ice_restarts: u32,
    /// How the media went at the end (or when it last went): `relay` through a TURN
    /// server, `direct` otherwise; `None` if no path was ever chosen.
    pub media_path: Option<&'static str>,
    /// Times our local addresses changed during the call (each one repaired with an ICE
    /// restart: the caller starts it, the callee asks the caller for it).
    pub address_changes: u32,
    /// Times media stopped arriving for 2 s while connected (each one repaired with an
    /// ICE restart by the caller; see `CallState::Reconnecting`).
    pub media_stalls: u32,
    /// Sending.
    pub sent: SentSummary,
    /// Receiving.
    pub received: ReceivedSummary,
    /// End-to-end media encryption, when the call had it.
    pub e2ee: Option<E2eeSummary>,
    /// Our video, when we sent any.
    pub video_sent: Option<video::VideoSentSummary>,
    /// The peer's video, when it came.
    pub video_received: Option<video::VideoReceivedSummary>,
    /// How it ended.
    pub end: EndReason,
    /// Once a second while connected: what the sender and receiver sides were doing.
    pub timeline: Vec<TimelinePoint>,
    /// When this end's media clock started (capture and playout time 0), for aligning
    /// recordings of two ends in one process.
    #[serde(skip)]
    pub media_started: Option<std::time::Instant>,
    /// When our input's first frame was due: a file input waits until media flows both
    /// ways, a device starts with the media clock.
    #[serde(skip)]
    pub input_started: Option<std::time::Instant>,
}

/// What can stop a call from starting.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The audio input or output could not be opened.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The video input or output could not be opened.
    #[error(transparent)]
    Video(#[from] crate::video::VideoError),
    /// The peer connection could not be built or driven.
    #[error("media: {0}")]
    Media(String),
    /// The peer's SDP does not parse.
    #[error("malformed SDP from the peer: {0}")]
    MalformedSdp(String),
    /// The peer offers nothing we can decode.
    #[error("no common codec: {0}")]
    NoCommonCodec(String),
    /// Signaling failed (peer offline or unknown, connection lost).
    #[error("signaling: {0}")]
    Signaling(String),
    /// The call already ended.
    #[error("the call has ended")]
    Ended,
}
