//! Building the WebRTC peer connection of a one-to-one call (the `webrtc` crate) and the
//! few SDP checks the call needs. Owns: the media engine (Opus, RFC 6464 audio level,
//! transport-wide cc), the interceptor chain, ICE configuration, and the bridge from the
//! connection's event handler to the call task. Must not touch audio or signaling.

use sotto_interceptors::lost_feedback::LostFeedbackFilter;
use sotto_interceptors::rtx_budget::{self, RtxBudget};
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, PacketReport, Slot,
    TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_NACK,
    TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sdp::description::session::SessionDescription;
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, TRANSPORT_CC_URI};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    Registry, configure_rtcp_reports,
};

use super::keyframes::{KeyframeRequests, keyframe_tap};
use super::reports::{ReportedLoss, report_tap};
use super::{CallError, IceConfig};
use crate::video::VideoCodec;

/// The payload type we offer Opus on (what browsers use too).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// The Opus format parameters we offer: in-band FEC and DTX on, 10 ms minimum packet.
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;usedtx=1";

/// The payload type we offer RED (RFC 2198) over Opus on, and its MIME type.
pub use sotto_interceptors::red::{MIME_TYPE_RED, RED_PAYLOAD_TYPE};

/// The payload type we offer VP8 on (the SFU's and browsers' choice).
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// The payload type we offer H.264 on (the SFU's).
pub const H264_PAYLOAD_TYPE: u8 = 102;

/// The RIDs of our simulcast layers, lowest first (the SFU ranks `q`, `h`, `f`).
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// The dependency descriptor extension: the SFU learns from it where keyframes start
/// without reading the payload (which is SFrame ciphertext).
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Bounds of the send-side bandwidth estimate, matching the encoder's range.
pub const MIN_BITRATE_BPS: u32 = 16_000;
/// Upper bound of the send-side bandwidth estimate.
pub const MAX_BITRATE_BPS: u32 = 64_000;

/// Where the send-side estimate starts when we send video: every layer of a 360p source
/// with audio, the top one near its floor. (A browser starts at 300 kbit/s and probes
/// up within the first second; rtc's GCC does not probe, and climbs a few percent a
/// second, so a low start would hold the top layer back for many seconds.)
pub const VIDEO_START_BPS: u32 = 1_000_000;
/// The estimate's ceiling when we send video: every layer of a 720p source with audio.
pub const VIDEO_MAX_BPS: u32 = 4_000_000;

/// ICE checks a candidate pair every 100 ms, for as long as a call may take to connect
/// (`CallConfig::connect_timeout`, 20 s). rtc's default, 7 checks 200 ms apart, gives a
/// pair up after 1.4 s: at 20 % loss both ways from the first packet, 1 setup in 100 found
/// every check of its only pair lost or unanswered and never connected
/// (sotto-sfu tests/handshake_loss.rs). Chromium keeps checking for about 30 s.
pub const ICE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// See [`ICE_CHECK_INTERVAL`].
pub const ICE_CHECKS_PER_PAIR: u16 = 200;
/// How often a connected pair's consent is checked (rtc's default: 2 s). rtc's ICE agent
/// calls a pair disconnected after 5 s without a check getting through; at 2 s, two or
/// three lost in a row do it, which 20 % loss each way brought about in about one call
/// leg in three over 15 s (`RUST_LOG=rtc_ice=info sotto-bench run loss-20.toml --group
/// 3`), and an SFU stopped forwarding to the leg until the next check came. At 1 s it
/// takes five. A binding request is about 100 bytes.
pub const ICE_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the connection's event handler reports to the call task.
#[derive(Clone)]
pub enum PeerEvent {
    /// A local ICE candidate to trickle to the peer (`None`: gathering finished).
    Candidate(Option<webrtc::peer_connection::RTCIceCandidateInit>),
    /// The connection state changed.
    State(RTCPeerConnectionState),
    /// The peer's audio track arrived.
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.events.send(PeerEvent::Candidate(Some(init)));
            }
            Err(err) => tracing::debug!(%err, "a local candidate could not be serialised"),
        }
    }

    async fn on_ice_gathering_state_change(
        &self,
        state: webrtc::peer_connection::RTCIceGatheringState,
    ) {
        if state == webrtc::peer_connection::RTCIceGatheringState::Complete {
            let _ = self.events.send(PeerEvent::Candidate(None));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track(track));
    }
}

/// Wraps the GCC estimator so its target bitrate can be read from outside the interceptor
/// chain (the chain owns the estimator and offers no way to reach it).
struct PublishingEstimator {
    inner: LostFeedbackFilter<Gcc>,
    target_bps: Arc<AtomicU64>,
    /// Feedback batches that said a packet of ours arrived.
    heard: Arc<AtomicU64>,
}

impl PublishingEstimator {
    fn publish(&self) {
        let target = self.inner.target_bitrate() as u64;
        let before = self.target_bps.swap(target, Ordering::Relaxed);
        if before > 0 && target.abs_diff(before) * 10 > before {
            let stats = self.inner.stats();
            tracing::debug!(
                before,
                target,
                delay_based = ?stats.delay_based_bitrate,
                loss_based = ?stats.loss_based_bitrate,
                loss = ?stats.packet_loss,
                "the send-side estimate moved"
            );
        }
    }
}

impl BandwidthEstimator for PublishingEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if tracing::enabled!(tracing::Level::TRACE) {
            let lost: Vec<(u32, u16, u16)> = reports
                .iter()
                .filter(|r| !r.arrived)
                .map(|r| (r.ssrc, r.rtp_sequence_number, r.twcc_sequence_number))
                .collect();
            let first = reports.first().map(|r| r.twcc_sequence_number);
            let last = reports.last().map(|r| r.twcc_sequence_number);
            tracing::trace!(total = reports.len(), ?first, ?last, ?lost, "feedback");
        }
        if reports.iter().any(|report| report.arrived) {
            self.heard.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.on_reports(now, reports);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// Our video track: simulcast layers on their own SSRCs, named by RID.
pub struct VideoTrack {
    /// The track (RTP written by the video sender).
    pub track: Arc<TrackLocalStaticRTP>,
    /// Each layer's SSRC, lowest first.
    pub ssrcs: Vec<u32>,
    /// Each layer's RID, lowest first (empty strings without simulcast).
    pub rids: Vec<&'static str>,
    /// Keyframe requests (PLI, FIR) for the layers, raised by an interceptor.
    pub keyframes: Arc<KeyframeRequests>,
    /// Retransmissions the budget dropped (too old, or over its share of the estimate).
    pub retransmissions_dropped: Arc<AtomicU64>,
    /// The codec it sends.
    pub codec: VideoCodec,
}

/// A built connection with what the call task needs from it.
pub struct Peer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// Our audio track (RTP written by the media sender).
    pub track: Arc<TrackLocalStaticRTP>,
    /// The SSRC of our audio stream (every packet we write must carry it).
    pub ssrc: u32,
    /// The send-side bandwidth estimate (GCC over transport-wide cc feedback), in bit/s;
    /// 0 until the first feedback.
    pub estimate_bps: Arc<AtomicU64>,
    /// The loss the peer reports about our stream (RTCP report blocks).
    pub reported_loss: Arc<ReportedLoss>,
    /// Transport-wide feedback batches from the peer that acknowledge a packet of ours:
    /// our media reaches it.
    pub heard: Arc<AtomicU64>,
    /// Events from the connection.
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    /// Our video, when the call sends any.
    pub video: Option<VideoTrack>,
}

/// Whether this host can join a multicast group (it has a route for 224.0.0.0/4). rtc
/// resolves a peer's mDNS (`.local`) candidates on a multicast socket it opens with every
/// peer connection, and in a network namespace with no default route that socket fails
/// and takes the connection with it ("creating the peer connection: No such device",
/// found running the CLI in two namespaces). Without a route, calls go on without mDNS:
/// only candidates named by address can be used then.
/// Probed once per process: each probe binds a port, which another socket may want.
fn multicast_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let group = std::net::Ipv4Addr::new(224, 0, 0, 251);
        std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|socket| socket.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED))
            .is_ok()
    })
}

/// The codec a callee sends in, given the caller's offer: `preferred` when offered, else
/// the other one we speak when that is offered, else `preferred` (the peer takes no video
/// of ours then).
pub fn answer_video_codec(offer: &str, preferred: VideoCodec) -> VideoCodec {
    let Ok(parsed) = SessionDescription::unmarshal(&mut Cursor::new(offer.as_bytes())) else {
        return preferred;
    };
    let offered: Vec<VideoCodec> = parsed
        .media_descriptions
        .iter()
        .filter(|m| m.media_name.media == "video")
        .flat_map(|m| &m.attributes)
        .filter(|a| a.key == "rtpmap")
        .filter_map(|a| {
            let name = a
                .value
                .as_deref()?
                .split_whitespace()
                .nth(1)?
                .split('/')
                .next()?;
            VideoCodec::from_mime(name)
        })
        .collect();
    if offered.contains(&preferred) {
        preferred
    } else {
        offered.first().copied().unwrap_or(preferred)
    }
}

/// The video codecs we speak with their payload types, `first` first.
fn video_codecs(first: VideoCodec) -> Vec<RTCRtpCodecParameters> {
    let mut codecs = vec![
        RTCRtpCodecParameters {
            rtp_codec: video_codec(VideoCodec::Vp8),
            payload_type: VP8_PAYLOAD_TYPE,
        },
        RTCRtpCodecParameters {
            rtp_codec: video_codec(VideoCodec::H264),
            payload_type: H264_PAYLOAD_TYPE,
        },
    ];
    if first == VideoCodec::H264 {
        codecs.reverse();
    }
    codecs
}

/// H.264 Constrained Baseline level 3.1, packetization mode 1: what browsers and the
/// SFU offer first.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// `codec` with the feedback a video receiver gives: NACK, PLI, transport-wide cc. (The
/// SFU offers the same; see sfu/src/leg.rs.)
fn video_codec(codec: VideoCodec) -> RTCRtpCodec {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    let (mime_type, fmtp) = match codec {
        VideoCodec::Vp8 => (MIME_TYPE_VP8, ""),
        VideoCodec::H264 => (MIME_TYPE_H264, H264_FMTP),
    };
    RTCRtpCodec {
        mime_type: mime_type.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![
            feedback(TYPE_RTCP_FB_NACK, ""),
            feedback(TYPE_RTCP_FB_NACK, "pli"),
            feedback(TYPE_RTCP_FB_TRANSPORT_CC, ""),
        ],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![RTCPFeedback {
            typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
            parameter: String::new(),
        }],
    }
}

/// RED over Opus: every block is Opus (RFC 2198 §5's "<pt>/<pt>" format parameter).
fn red_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RED.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: format!("{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"),
        rtcp_feedback: Vec::new(),
    }
}

/// Builds a connection with one send-and-receive Opus audio track. With `red`, RED (RFC
/// 2198) over Opus is offered too, for redundancy under loss. With `video`, VP8 is
/// negotiated (NACK and PLI both ways) so that video can be received, and H.264 after it,
/// and with `Some(n)`, n > 0, we send a track of `codec` too, in n simulcast layers (by
/// RID when more than one).
pub async fn build(
    ice: &IceConfig,
    red: bool,
    video: Option<usize>,
    codec: VideoCodec,
) -> Result<Peer, CallError> {
    let mut media_engine = MediaEngine::default();
    let mut codecs = vec![RTCRtpCodecParameters {
        rtp_codec: opus_codec(),
        payload_type: OPUS_PAYLOAD_TYPE,
    }];
    if red {
        codecs.push(RTCRtpCodecParameters {
            rtp_codec: red_codec(),
            payload_type: RED_PAYLOAD_TYPE,
        });
    }
    for codec in codecs {
        media_engine
            .register_codec(codec, RtpCodecKind::Audio)
            .map_err(media_err)?;
    }
    for uri in [AUDIO_LEVEL_URI, TRANSPORT_CC_URI] {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(media_err)?;
    }
    let video_layers = video.unwrap_or(0).min(SIMULCAST_RIDS.len());
    if video.is_some() {
        for codec in video_codecs(VideoCodec::Vp8) {
            media_engine
                .register_codec(codec, RtpCodecKind::Video)
                .map_err(media_err)?;
        }
        // sdes:mid, rtp-stream-id, repaired-rtp-stream-id for simulcast, then ours.
        configure_simulcast_extension_headers(&mut media_engine).map_err(media_err)?;
        for uri in [TRANSPORT_CC_URI, DEPENDENCY_DESCRIPTOR_URI] {
            media_engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: uri.to_owned(),
                    },
                    RtpCodecKind::Video,
                    None,
                )
                .map_err(media_err)?;
        }
    }

    // Interceptors: sender and receiver reports; transport-wide cc sequence numbers on
    // what we send and feedback on what we receive; GCC over that feedback for our own
    // estimate. rtc's `configure_congestion_control` also adds a pacer, which would
    // queue audio behind a falling estimate and add delay; audio at 16-64 kbit/s does not
    // need pacing, so the estimator is registered here without it.
    let estimate_bps = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let (start, max) = if video_layers > 0 {
        (VIDEO_START_BPS, VIDEO_MAX_BPS)
    } else {
        (MAX_BITRATE_BPS, MAX_BITRATE_BPS)
    };
    let estimator = PublishingEstimator {
        inner: LostFeedbackFilter::new(Gcc::new(
            f64::from(start),
            f64::from(MIN_BITRATE_BPS),
            f64::from(max),
        )),
        target_bps: estimate_bps.clone(),
        heard: heard.clone(),
    };
    let registry = Registry::new()
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build());
    let registry = configure_rtcp_reports(registry);
    // Video: NACK both ways (our generator asks for what our receivers miss, at once and
    // again after a round trip; rtc's responder
    // resends from its cache, within a budget: a share of the estimate, nothing too old to
    // be played), keyframe requests to the capture thread.
    let video_ssrcs: Vec<u32> = (0..video_layers).map(|_| rand::random()).collect();
    let keyframes = Arc::new(KeyframeRequests::new(video_ssrcs.clone()));
    let retransmissions_dropped = Arc::new(AtomicU64::new(0));
    let registry = if video.is_some() {
        sotto_interceptors::nack::configure(registry, &mut media_engine)
            .with(
                Slot::from(rtx_budget::SLOT),
                RtxBudget::new(estimate_bps.clone(), retransmissions_dropped.clone()),
            )
            .with(Slot::from(14_100), keyframe_tap(keyframes.clone()))
    } else {
        registry
    };
    // Last in the chain, after everything that reads RTCP.
    let ssrc: u32 = rand::random();
    let reported_loss = Arc::new(ReportedLoss::default());
    let registry = registry.with(Slot::from(14_000), report_tap(ssrc, reported_loss.clone()));

    let servers = ice
        .servers
        .iter()
        .map(|server| RTCIceServer {
            urls: server.urls.clone(),
            username: server.username.clone().unwrap_or_default(),
            credential: server.credential.clone().unwrap_or_default(),
        })
        .collect();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .build();

    let (events_tx, events) = mpsc::unbounded_channel();
    let mdns = if multicast_available() {
        MulticastDnsMode::QueryOnly
    } else {
        MulticastDnsMode::Disabled
    };
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(mdns)
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECKS_PER_PAIR))
        .with_ice_timeouts(None, None, Some(ICE_KEEPALIVE))
        // An ICE restart binds afresh on the addresses there are then (a wildcard is
        // expanded again), so a call follows its host to another network. Not when the
        // peer is told one fixed address (`Advertise::Address`, a relay in front of
        // us): a new socket would have another port than the one the relay sends to.
        .with_discard_local_candidates_during_ice_restart(matches!(
            ice.advertise,
            super::Advertise::Gathered
        ))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { events: events_tx }))
        .with_udp_addrs(ice.bind.clone())
        .build()
        .await
        .map_err(|err| CallError::Media(format!("creating the peer connection: {err}")))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "sotto".to_owned(),
        "sotto-audio".to_owned(),
        "microphone".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )));
    pc.add_track(track.clone() as Arc<dyn webrtc::media_stream::track_local::TrackLocal>)
        .await
        .map_err(|err| CallError::Media(format!("adding the audio track: {err}")))?;

    let video = if video_layers > 0 {
        let rids: Vec<&'static str> = if video_layers > 1 {
            SIMULCAST_RIDS[..video_layers].to_vec()
        } else {
            vec![""]
        };
        let encodings = video_ssrcs
            .iter()
            .zip(&rids)
            .map(|(&ssrc, rid)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_owned(),
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: video_codec(codec),
                ..Default::default()
            })
            .collect();
        let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "sotto".to_owned(),
            "sotto-video".to_owned(),
            "camera".to_owned(),
            RtpCodecKind::Video,
            encodings,
        )));
        pc.add_track(video.clone() as Arc<dyn webrtc::media_stream::track_local::TrackLocal>)
            .await
            .map_err(|err| CallError::Media(format!("adding the video track: {err}")))?;
        // rtc offers only the track's codec on its m-line; offer (and accept) the other
        // one too, after ours, so that the peer's video may come in either.
        let preferences = video_codecs(codec);
        for transceiver in pc.get_transceivers().await {
            let ours = match transceiver.sender().await {
                Ok(Some(sender)) => {
                    std::ptr::addr_eq(Arc::as_ptr(sender.track()), Arc::as_ptr(&video))
                }
                _ => false,
            };
            if ours {
                transceiver
                    .set_codec_preferences(preferences.clone())
                    .await
                    .map_err(|err| CallError::Media(format!("video codec preferences: {err}")))?;
            }
        }
        Some(VideoTrack {
            track: video,
            ssrcs: video_ssrcs,
            rids,
            keyframes,
            retransmissions_dropped,
            codec,
        })
    } else {
        None
    };

    Ok(Peer {
        pc,
        track,
        ssrc,
        estimate_bps,
        reported_loss,
        heard,
        events,
        video,
    })
}

fn media_err(err: impl std::fmt::Display) -> CallError {
    CallError::Media(format!("configuring the media engine: {err}"))
}

/// What the peer's SDP says about the audio we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAudio {
    /// The Opus payload type the peer uses.
    pub opus_payload_type: u8,
    /// The payload type of the peer's RED over Opus, if it offers that.
    pub red_payload_type: Option<u8>,
    /// The extension id the peer gave the RFC 6464 audio level, if any.
    pub audio_level_id: Option<u8>,
    /// The audio section's `mid`, if it has one.
    pub mid: Option<String>,
}

/// Checks a peer's SDP before it reaches the connection: it must parse, have an audio
/// section, and offer Opus at 48 kHz there. The error says which, for the call's end
/// reason.
pub fn check_remote_sdp(sdp: &str) -> Result<RemoteAudio, CallError> {
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|err| CallError::MalformedSdp(err.to_string()))?;
    let audio = parsed
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio")
        .ok_or_else(|| CallError::NoCommonCodec("the peer's SDP has no audio section".into()))?;
    let mut offered = Vec::new();
    let mut opus = None;
    let mut red = Vec::new();
    let mut fmtp = Vec::new();
    let mut audio_level_id = None;
    let mut mid = None;
    for attribute in &audio.attributes {
        let Some(value) = attribute.value.as_deref() else {
            continue;
        };
        match attribute.key.as_str() {
            "rtpmap" => {
                // "<pt> <name>/<rate>[/<channels>]"
                let mut parts = value.splitn(2, ' ');
                let (Some(pt), Some(format)) = (parts.next(), parts.next()) else {
                    continue;
                };
                offered.push(format.to_owned());
                let mut format = format.split('/');
                let name = format.next().unwrap_or_default();
                let rate = format.next().unwrap_or_default();
                if name.eq_ignore_ascii_case("opus")
                    && rate == "48000"
                    && let Ok(pt) = pt.parse::<u8>()
                    && opus.is_none()
                {
                    opus = Some(pt);
                }
                if name.eq_ignore_ascii_case("red")
                    && rate == "48000"
                    && let Ok(pt) = pt.parse::<u8>()
                {
                    red.push(pt);
                }
            }
            "fmtp" => {
                // "<pt> <parameters>"
                if let Some((pt, parameters)) = value.split_once(' ')
                    && let Ok(pt) = pt.parse::<u8>()
                {
                    fmtp.push((pt, parameters.trim().to_owned()));
                }
            }
            "mid" => mid = Some(value.to_owned()),
            "extmap" => {
                // "<id>[/<direction>] <uri> ..."
                let mut parts = value.split_whitespace();
                let (Some(id), Some(uri)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let id = id.split('/').next().unwrap_or_default();
                if uri == AUDIO_LEVEL_URI {
                    audio_level_id = id.parse::<u8>().ok().filter(|id| (1..=14).contains(id));
                }
            }
            _ => {}
        }
    }
    match opus {
        Some(opus_payload_type) => Ok(RemoteAudio {
            opus_payload_type,
            // Only RED whose blocks are all this Opus ("111/111"; any depth).
            red_payload_type: red.into_iter().find(|pt| {
                fmtp.iter().any(|(fmtp_pt, parameters)| {
                    fmtp_pt == pt
                        && parameters
                            .split('/')
                            .all(|block| block.trim().parse::<u8>() == Ok(opus_payload_type))
                })
            }),
            audio_level_id,
            mid,
        }),
        None => Err(CallError::NoCommonCodec(if offered.is_empty() {
            "the peer offered no audio codec".into()
        } else {
            format!(
                "the peer offered {} and we need opus/48000",
                offered.join(", ")
            )
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(rtpmaps: &[&str]) -> String {
        let mut sdp = String::from(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\n",
        );
        for rtpmap in rtpmaps {
            sdp.push_str(&format!("a=rtpmap:{rtpmap}\r\n"));
        }
        sdp
    }

    #[test]
    fn a_callee_sends_what_the_offer_takes() {
        let both = offer(&["96 VP8/90000", "102 H264/90000"]);
        assert_eq!(answer_video_codec(&both, VideoCodec::Vp8), VideoCodec::Vp8);
        assert_eq!(
            answer_video_codec(&both, VideoCodec::H264),
            VideoCodec::H264
        );
        // A peer that offers no VP8 gets H.264, and the other way round.
        let h264 = offer(&["102 H264/90000", "103 rtx/90000"]);
        assert_eq!(answer_video_codec(&h264, VideoCodec::Vp8), VideoCodec::H264);
        let vp8 = offer(&["96 VP8/90000"]);
        assert_eq!(answer_video_codec(&vp8, VideoCodec::H264), VideoCodec::Vp8);
        // Nothing we speak, or no SDP at all: our choice (no video of ours then).
        let av1 = offer(&["45 AV1/90000"]);
        assert_eq!(answer_video_codec(&av1, VideoCodec::Vp8), VideoCodec::Vp8);
        assert_eq!(
            answer_video_codec("garbage", VideoCodec::H264),
            VideoCodec::H264
        );
    }

    #[test]
    fn the_video_codecs_come_in_the_order_asked() {
        let names = |first| {
            video_codecs(first)
                .iter()
                .map(|c| c.rtp_codec.mime_type.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(VideoCodec::Vp8), vec!["video/VP8", "video/H264"]);
        assert_eq!(names(VideoCodec::H264), vec!["video/H264", "video/VP8"]);
    }
}
