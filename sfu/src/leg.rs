//! One participant's connection as the SFU sees it: a sans-IO wrapper over rtc's
//! `RTCPeerConnection` in ICE-lite mode, with the SFU's one UDP address as its only host
//! candidate. Owns: negotiation (the participant's offer, the SFU's answer; SFU-side
//! offers for new send tracks), datagrams in and out, timers, and turning rtc's events and
//! messages into [`LegOutput`]s. Must not know about rooms or other legs.
//!
//! What a leg negotiates (the engine's `call::peer` offers a subset of it, browsers more):
//! - Opus, PT 111, 48000/2, `minptime=10;useinbandfec=1;usedtx=1`, transport-cc feedback;
//!   RED over it (RFC 2198, PT 63, `111/111`), forwarded as it came to participants that
//!   took it and stripped to its primary for those that did not ([`Leg::write_rtp`]);
//! - VP8 (PT 96) and H.264 (PT 102, `packetization-mode=1;profile-level-id=42e01f`), each
//!   with `nack`, `nack pli` and `transport-cc` feedback;
//! - header extensions: RFC 6464 audio level (audio), transport-wide cc and `sdes:mid`
//!   (audio and video), `rtp-stream-id` and `repaired-rtp-stream-id` (video, simulcast);
//! - RTX (RFC 4588, PT 97 for VP8 and 103 for H.264): each video send track retransmits on
//!   its own SSRC (`a=ssrc-group:FID`);
//! - interceptors: rtc's NACK responder (answers from its per-stream cache, wrapped in RTX)
//!   and our NACK generator (`sotto_interceptors::nack`: at once, again after a round
//!   trip), sender and receiver reports, TWCC receiver (feedback to the publisher; the
//!   SFU's own send-side estimate comes later), and two more of our own: `rtx` unwraps inbound
//!   RTX before the NACK generator sees it, `rtx_budget` drops retransmissions that are
//!   too old or over a quarter of the estimate, `feedback` lets PLI, FIR, NACK and
//!   report blocks through to the core (rtc ends inbound RTCP inside the chain
//!   otherwise), and `loss_proxy` raises the loss the leg's own reports give a publisher
//!   to what its listeners lose.
//!
//! Notes on rtc 0.21.1:
//! - `nack::configure` and `configure_twcc_receiver_only` add their feedback only to codecs
//!   registered *before* they run (`MediaEngine::register_feedback`), so codecs go in first.
//! - ICE-lite never gathers: the one host candidate is added by hand with
//!   `add_local_candidate`, then the empty end-of-candidates sentinel; both must come after
//!   the remote description is set, and a second add is refused as a duplicate.
//! - `RTCRtpSender::write_rtp` refuses a packet whose SSRC, payload type or header extension
//!   ids are not negotiated on that sender; [`Leg::write_rtp`] sets the SSRC and payload
//!   type, the caller owns the extensions.
//! - Received RTP comes out of `poll_read` tagged with the *track id*, not the mid; the leg
//!   maps one to the other from the track's transceiver when the track opens.

use sotto_interceptors::lost_feedback::LostFeedbackFilter;
use sotto_interceptors::rtx_budget::{self, RtxBudget};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use rtc::interceptor::{CongestionControlBuilder, Gcc, Registry, Slot, TwccSenderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind,
    TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit, SSRC,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::layers::DEPENDENCY_DESCRIPTOR_URI;

/// The Opus payload type the SFU registers (the engine and browsers use it too).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The VP8 payload type the SFU registers.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// The H.264 (constrained baseline, packetization mode 1) payload type the SFU registers.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// RTX (RFC 4588) for VP8: `apt=96`.
pub const VP8_RTX_PAYLOAD_TYPE: u8 = 97;
/// RTX (RFC 4588) for H.264: `apt=102`.
pub const H264_RTX_PAYLOAD_TYPE: u8 = 103;
/// RED (RFC 2198) over Opus, `111/111`: the engine's payload type, and its MIME type.
pub use sotto_interceptors::red::{MIME_TYPE_RED, RED_PAYLOAD_TYPE};

/// Opus parameters, exactly as the engine offers them.
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;usedtx=1";
/// H.264 parameters: constrained baseline 3.1, non-interleaved.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// What can go wrong with a leg.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    /// The participant's SDP does not parse or cannot be applied.
    #[error("the participant's SDP was refused: {0}")]
    BadSdp(String),
    /// rtc refused an operation.
    #[error("rtc: {0}")]
    Rtc(String),
    /// No such send track.
    #[error("no send track {0}")]
    NoSuchTrack(u32),
    /// A RED packet to strip for a participant without RED does not parse.
    #[error("a malformed RED payload")]
    MalformedRed,
}

pub(crate) fn rtc_err(err: impl std::fmt::Display) -> LegError {
    LegError::Rtc(err.to_string())
}

/// Sends a PLI for the received stream `ssrc` on its receiver (shared by legs and the
/// test client).
pub(crate) fn send_pli(
    pc: &mut RTCPeerConnection,
    receiver: Option<RTCRtpReceiverId>,
    ssrc: SSRC,
    now: Instant,
) -> Result<(), LegError> {
    let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    pc.rtp_receiver(receiver.ok_or(LegError::NoSuchTrack(ssrc))?)
        .ok_or(LegError::NoSuchTrack(ssrc))?
        .write_rtcp(now, vec![Box::new(pli)])
        .map_err(rtc_err)
}

/// Feeds one UDP datagram, received on `local` from `from`, to a peer connection.
pub(crate) fn read_datagram(
    pc: &mut RTCPeerConnection,
    local: SocketAddr,
    now: Instant,
    from: SocketAddr,
    datagram: &[u8],
) -> Result<(), LegError> {
    pc.handle_read(TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(datagram),
    })
    .map_err(rtc_err)
}

/// A peer connection's next datagram to send.
pub(crate) fn next_transmit(pc: &mut RTCPeerConnection) -> Option<Transmit> {
    pc.poll_write().map(|tagged| Transmit {
        to: tagged.transport.peer_addr,
        payload: tagged.message,
    })
}

/// A codec the SFU negotiates and can send on a send track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus, [`OPUS_PAYLOAD_TYPE`].
    Opus,
    /// VP8, [`VP8_PAYLOAD_TYPE`].
    Vp8,
    /// H.264, [`H264_PAYLOAD_TYPE`].
    H264,
}

impl Codec {
    /// Every codec a leg registers.
    pub const ALL: [Codec; 3] = [Codec::Opus, Codec::Vp8, Codec::H264];

    /// The payload type the SFU registers for it.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Opus => OPUS_PAYLOAD_TYPE,
            Codec::Vp8 => VP8_PAYLOAD_TYPE,
            Codec::H264 => H264_PAYLOAD_TYPE,
        }
    }

    /// The codec of a negotiated MIME type (`audio/opus`, `video/VP8`, `video/H264`), if
    /// the SFU forwards it. RED is Opus with copies of earlier frames: an audio stream
    /// whose first packet is RED is an Opus stream.
    pub fn from_mime(mime: &str) -> Option<Codec> {
        if mime.eq_ignore_ascii_case(MIME_TYPE_RED) {
            return Some(Codec::Opus);
        }
        Codec::ALL
            .into_iter()
            .find(|codec| codec.mime_type().eq_ignore_ascii_case(mime))
    }

    /// Its MIME type.
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Opus => MIME_TYPE_OPUS,
            Codec::Vp8 => MIME_TYPE_VP8,
            Codec::H264 => MIME_TYPE_H264,
        }
    }

    /// Its RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 | Codec::H264 => 90_000,
        }
    }

    /// The payload type of its RFC 4588 retransmission stream (video only).
    pub fn rtx_payload_type(self) -> Option<u8> {
        match self {
            Codec::Opus => None,
            Codec::Vp8 => Some(VP8_RTX_PAYLOAD_TYPE),
            Codec::H264 => Some(H264_RTX_PAYLOAD_TYPE),
        }
    }

    /// Audio or video.
    pub fn kind(self) -> RtpCodecKind {
        match self {
            Codec::Opus => RtpCodecKind::Audio,
            Codec::Vp8 | Codec::H264 => RtpCodecKind::Video,
        }
    }

    /// rtc's description of it, with the feedback the SFU asks for. (The media engine
    /// adds the interceptors' feedback again; duplicates are ignored.)
    pub(crate) fn rtp_codec(self) -> RTCRtpCodec {
        let feedback = |typ: &str, parameter: &str| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        };
        let video_feedback = vec![
            feedback(TYPE_RTCP_FB_NACK, ""),
            feedback(TYPE_RTCP_FB_NACK, "pli"),
            feedback(TYPE_RTCP_FB_TRANSPORT_CC, ""),
        ];
        match self {
            Codec::Opus => RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: OPUS_FMTP.to_owned(),
                rtcp_feedback: vec![feedback(TYPE_RTCP_FB_TRANSPORT_CC, "")],
            },
            Codec::Vp8 => RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: video_feedback,
            },
            Codec::H264 => RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: H264_FMTP.to_owned(),
                rtcp_feedback: video_feedback,
            },
        }
    }
}

/// RED over Opus, every block Opus (RFC 2198 §5's `<pt>/<pt>`), with Opus's feedback.
fn red_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RED.to_owned(),
        sdp_fmtp_line: format!("{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"),
        ..Codec::Opus.rtp_codec()
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The bytes.
    pub payload: BytesMut,
}

/// What a leg tells the SFU core.
#[derive(Debug)]
pub enum LegOutput {
    /// ICE and DTLS are up: media can flow. (Again after a [`LegOutput::Disconnected`]
    /// that recovered.)
    Connected,
    /// The participant's consent checks stopped; it may come back (it keeps the leg).
    Disconnected,
    /// The connection failed or closed; the leg is done.
    Closed,
    /// The participant's stream with this SSRC started (its first RTP packet arrived).
    TrackOpened {
        /// Its SSRC.
        ssrc: SSRC,
        /// Audio or video.
        kind: RtpCodecKind,
        /// Its codec, when it is one the SFU forwards.
        codec: Option<Codec>,
        /// The m-line it belongs to.
        mid: Option<Arc<str>>,
        /// Its simulcast layer, when it carries an RTP stream id.
        rid: Option<String>,
    },
    /// An RTP packet from the participant (already SRTP-decrypted).
    Rtp {
        /// The m-line of the track it arrived on.
        mid: Option<Arc<str>>,
        /// `packet.header.ssrc`, for convenience.
        ssrc: SSRC,
        /// The packet, header extensions as the participant sent them.
        packet: rtc::rtp::Packet,
    },
    /// RTCP from the participant about one of this leg's streams, received or sent (PLI,
    /// FIR and NACK about a forwarded stream, NACKs answered by the leg itself; receiver
    /// and sender reports, for their report blocks). rtc routes a compound packet by the
    /// first media SSRC in it.
    Rtcp {
        /// The packets of one compound RTCP datagram.
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
    },
}

/// A send track on a leg (a stream forwarded to this participant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendTrack {
    sender: RTCRtpSenderId,
    codec: Codec,
    /// The SSRC this leg sends the stream with.
    pub ssrc: SSRC,
    /// The SSRC of its retransmissions (video).
    pub rtx_ssrc: Option<SSRC>,
}

impl SendTrack {
    /// The codec it was added with.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

/// One participant's connection.
pub struct Leg {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    ufrag: String,
    outputs: VecDeque<LegOutput>,
    /// Received tracks: rtc's track id → the m-line's mid.
    track_mids: HashMap<String, Option<Arc<str>>>,
    /// The mid of each received SSRC (see [`Leg::mid_of`]).
    ssrc_mids: HashMap<SSRC, Arc<str>>,
    /// The receiver of each received SSRC (for keyframe requests).
    ssrc_receivers: HashMap<SSRC, RTCRtpReceiverId>,
    candidates_added: bool,
    state: RTCPeerConnectionState,
    /// The send-side estimate and dropped retransmissions.
    gauges: LegGauges,
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// The host candidate for a UDP address, as rtc takes local candidates.
pub(crate) fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, LegError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(rtc_err)?;
    RTCIceCandidate::from(&candidate).to_json().map_err(rtc_err)
}

/// What a leg's interceptors report, readable from outside the chain that owns them.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegGauges {
    /// The congestion controller's target, bit/s (0 until the first feedback).
    pub(crate) estimate_bps: Arc<AtomicU64>,
    /// Retransmissions the budget dropped (too old, or over budget).
    pub(crate) retransmissions_dropped: Arc<AtomicU64>,
    /// What the listeners of each received audio stream lose (see [`loss_proxy`]).
    pub(crate) listener_loss: loss_proxy::ListenerLoss,
}

/// The send-side estimate's bounds and starting point, bit/s: a subscriber starts as if it
/// could take two megabits and the estimate moves from there.
const ESTIMATE_INITIAL_BPS: f64 = 2_000_000.0;
const ESTIMATE_MIN_BPS: f64 = 50_000.0;
const ESTIMATE_MAX_BPS: f64 = 20_000_000.0;

/// The SFU's codecs, header extensions and interceptors (a [`crate::client::Client`] uses
/// the same, so what it offers is what a leg accepts), and where the congestion
/// controller's estimate of this connection's send rate will appear.
pub(crate) fn media_engine() -> Result<(MediaEngine, Registry, LegGauges), LegError> {
    let mut media_engine = MediaEngine::default();
    // Codecs first: the interceptor helpers below add their feedback to registered codecs.
    for codec in Codec::ALL {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec.rtp_codec(),
                    payload_type: codec.payload_type(),
                },
                codec.kind(),
            )
            .map_err(rtc_err)?;
    }
    // RED over Opus, forwarded as it came to subscribers that take it and stripped to its
    // primary for those that do not (`Leg::write_rtp`).
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: red_codec(),
                payload_type: RED_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )
        .map_err(rtc_err)?;
    // Retransmissions of video go on their own SSRC (RFC 4588): rtc's NACK responder
    // wraps a cached packet in RTX when the send track has an RTX SSRC and the
    // participant accepted the RTX codec, and unwraps a publisher's RTX on receipt.
    for codec in [Codec::Vp8, Codec::H264] {
        let (Some(payload_type), apt) = (codec.rtx_payload_type(), codec.payload_type()) else {
            continue;
        };
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_RTX.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={apt}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type,
                },
                RtpCodecKind::Video,
            )
            .map_err(rtc_err)?;
    }
    let extensions = [
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (SDES_MID_URI, RtpCodecKind::Audio),
    ];
    for (uri, kind) in extensions {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                kind,
                None,
            )
            .map_err(rtc_err)?;
    }
    // Video: sdes:mid, rtp-stream-id, repaired-rtp-stream-id; the dependency descriptor,
    // from which the core learns where keyframes start.
    configure_simulcast_extension_headers(&mut media_engine).map_err(rtc_err)?;
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: DEPENDENCY_DESCRIPTOR_URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(rtc_err)?;
    // The send-side estimate: transport-wide sequence numbers on what the leg sends and GCC
    // (delay- and loss-based) over the feedback. No pacer (rtc's
    // `configure_congestion_control` would add one): the SFU forwards at the rate packets
    // arrive and matches a subscriber's budget by choosing layers, and queueing audio
    // behind video would add delay the SFU is measured on.
    let gauges = LegGauges::default();
    let registry = sotto_interceptors::nack::configure(Registry::new(), &mut media_engine)
        .with(Slot::from(rtx::SLOT), rtx::RtxUnwrap::default())
        .with(
            Slot::from(rtx_budget::SLOT),
            RtxBudget::new(
                gauges.estimate_bps.clone(),
                gauges.retransmissions_dropped.clone(),
            ),
        )
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(LostFeedbackFilter::new(Gcc::new(
                ESTIMATE_INITIAL_BPS,
                ESTIMATE_MIN_BPS,
                ESTIMATE_MAX_BPS,
            )))
            .build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(
            Slot::from(feedback::SLOT),
            feedback::FeedbackTap::new(gauges.estimate_bps.clone()),
        )
        .with(
            Slot::from(loss_proxy::SLOT),
            loss_proxy::LossProxy::new(gauges.listener_loss.clone()),
        );
    let registry = configure_rtcp_reports(registry);
    // Feedback and the transport-cc extension, audio and video.
    let registry = configure_twcc_receiver_only(registry, &mut media_engine).map_err(rtc_err)?;
    Ok((media_engine, registry, gauges))
}

impl Leg {
    /// A leg whose only candidate is `local_addr` (the SFU's public UDP address), with
    /// fresh ICE credentials.
    pub fn new(local_addr: SocketAddr, now: Instant) -> Result<Leg, LegError> {
        let ufrag = random_token(16);
        let setting_engine = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), random_token(32))
            .build();
        let (media_engine, registry, gauges) = media_engine()?;
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(rtc_err)?;
        Ok(Leg {
            pc,
            local_addr,
            ufrag,
            outputs: VecDeque::new(),
            track_mids: HashMap::new(),
            ssrc_mids: HashMap::new(),
            ssrc_receivers: HashMap::new(),
            candidates_added: false,
            state: RTCPeerConnectionState::New,
            gauges,
        })
    }

    /// The local ICE ufrag: a STUN binding request for this leg carries it before the `:`
    /// of its USERNAME.
    pub fn local_ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The UDP address in this leg's candidate.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies the participant's offer and returns the SFU's answer (with its host
    /// candidate and `a=end-of-candidates` in it: ICE-lite does not trickle).
    pub fn accept_offer(&mut self, offer_sdp: &str, now: Instant) -> Result<String, LegError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| LegError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(|e| LegError::BadSdp(e.to_string()))?;
        self.add_host_candidate()?;
        let answer = self.pc.create_answer(None).map_err(rtc_err)?;
        self.pc
            .set_local_description(now, answer)
            .map_err(rtc_err)?;
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| LegError::Rtc("no local description after answering".into()))
    }

    fn add_host_candidate(&mut self) -> Result<(), LegError> {
        if self.candidates_added {
            return Ok(());
        }
        let init = host_candidate(self.local_addr)?;
        self.pc.add_local_candidate(init).map_err(rtc_err)?;
        // The end-of-candidates sentinel: gathering is complete.
        self.pc
            .add_local_candidate(RTCIceCandidateInit::default())
            .map_err(rtc_err)?;
        self.candidates_added = true;
        Ok(())
    }

    /// A candidate the participant trickled. An ICE-lite leg never checks candidates (it
    /// learns the participant's address from its binding requests), so this is optional;
    /// it is accepted for participants that send them anyway. Needs the remote description.
    pub fn add_remote_candidate(&mut self, candidate: &str) -> Result<(), LegError> {
        self.pc
            .add_remote_candidate(RTCIceCandidateInit {
                candidate: candidate.to_owned(),
                ..Default::default()
            })
            .map_err(rtc_err)
    }

    /// Adds an Opus stream the SFU will forward to this participant, in the stream (msid)
    /// `stream_id`. Takes effect after the next [`Leg::create_offer`] /
    /// [`Leg::accept_answer`] round.
    pub fn add_send_track(
        &mut self,
        stream_id: &str,
        track_id: &str,
        ssrc: SSRC,
    ) -> Result<SendTrack, LegError> {
        self.add_send_track_with_codec(Codec::Opus, stream_id, track_id, ssrc)
    }

    /// Adds a stream of `codec` (its kind follows) the SFU will forward to this
    /// participant. Takes effect after the next [`Leg::create_offer`] /
    /// [`Leg::accept_answer`] round.
    pub fn add_send_track_with_codec(
        &mut self,
        codec: Codec,
        stream_id: &str,
        track_id: &str,
        ssrc: SSRC,
    ) -> Result<SendTrack, LegError> {
        // Video retransmits on an SSRC of its own, announced with `a=ssrc-group:FID`.
        let rtx_ssrc = codec.rtx_payload_type().map(|_| ssrc.wrapping_add(1));
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.to_owned(),
            track_id.to_owned(),
            codec.kind(),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                    ..Default::default()
                },
                codec: codec.rtp_codec(),
                ..Default::default()
            }],
        );
        // A new sendonly transceiver per forwarded stream (never `add_track`, which would
        // reuse the participant's own m-line of that kind): every stream gets its own
        // m-line and msid, so the participant can tell whose it is.
        let transceiver = self
            .pc
            .add_transceiver_from_track(
                track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![stream_id.to_owned()],
                    send_encodings: vec![],
                }),
            )
            .map_err(rtc_err)?;
        Ok(SendTrack {
            sender: transceiver.into(),
            codec,
            ssrc,
            rtx_ssrc,
        })
    }

    /// An SFU-side offer (after adding send tracks).
    pub fn create_offer(&mut self, now: Instant) -> Result<String, LegError> {
        let offer = self.pc.create_offer(None).map_err(rtc_err)?;
        self.pc.set_local_description(now, offer).map_err(rtc_err)?;
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| LegError::Rtc("no local description after offering".into()))
    }

    /// The participant's answer to [`Leg::create_offer`].
    pub fn accept_answer(&mut self, answer_sdp: &str, now: Instant) -> Result<(), LegError> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
            .map_err(|e| LegError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(|e| LegError::BadSdp(e.to_string()))
    }

    /// Sends an RTP packet on a send track. The SSRC and payload type are set here: the
    /// track's, and the payload type the participant's answer gave the codec. That is
    /// usually the SFU's own, but a browser keeps the numbers it chose for a codec for the
    /// whole session (Chromium answers H.264 with its 108 where the SFU offered 102, and
    /// rtc refuses a packet whose type is not negotiated). An audio packet that comes with
    /// [`RED_PAYLOAD_TYPE`] is RED: it goes out as RED where the participant took RED,
    /// else as its primary block alone. Header extensions go out as given, and rtc refuses
    /// the packet if an extension id is not negotiated on this leg.
    pub fn write_rtp(
        &mut self,
        track: SendTrack,
        mut packet: rtc::rtp::Packet,
        now: Instant,
    ) -> Result<(), LegError> {
        packet.header.ssrc = track.ssrc;
        let mut sender = self
            .pc
            .rtp_sender(track.sender)
            .ok_or(LegError::NoSuchTrack(track.ssrc))?;
        let codecs = &sender.get_parameters().rtp_parameters.codecs;
        let negotiated = |mime: &str| {
            codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .map(|c| c.payload_type)
        };
        let red = track.codec == Codec::Opus && packet.header.payload_type == RED_PAYLOAD_TYPE;
        packet.header.payload_type = match red.then(|| negotiated(MIME_TYPE_RED)).flatten() {
            Some(payload_type) => payload_type,
            None => {
                if red {
                    let (_, primary) =
                        crate::red::primary(&packet.payload).ok_or(LegError::MalformedRed)?;
                    packet.payload = packet.payload.slice(primary);
                }
                negotiated(track.codec.mime_type()).unwrap_or(track.codec.payload_type())
            }
        };
        sender.write_rtp(now, packet).map_err(rtc_err)
    }

    /// Asks the participant for a keyframe on its stream `ssrc` (a PLI, RFC 4585).
    pub fn request_keyframe(&mut self, ssrc: SSRC, now: Instant) -> Result<(), LegError> {
        let receiver = self.ssrc_receivers.get(&ssrc).copied();
        send_pli(&mut self.pc, receiver, ssrc, now)
    }

    /// Feeds one datagram from `from`. Bad input is the caller's to count; it never
    /// panics. (The leg's local address is its candidate's: a driver whose socket is bound
    /// to a wildcard address still hands the datagram to the leg the demultiplexer chose.)
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), LegError> {
        read_datagram(&mut self.pc, self.local_addr, now, from, datagram)?;
        self.drain();
        Ok(())
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        next_transmit(&mut self.pc)
    }

    /// The next thing the core should know.
    pub fn poll_output(&mut self) -> Option<LegOutput> {
        self.drain();
        self.outputs.pop_front()
    }

    /// When [`Leg::handle_timeout`] is due next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Runs timers (ICE keepalives, DTLS retransmits, RTCP reports).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), LegError> {
        self.pc.handle_timeout(now).map_err(rtc_err)?;
        self.drain();
        Ok(())
    }

    /// The congestion controller's estimate of what this participant can receive, bit/s,
    /// once its first transport-wide feedback has arrived.
    pub fn estimate_bps(&self) -> Option<u64> {
        Some(self.gauges.estimate_bps.load(Ordering::Relaxed)).filter(|bps| *bps > 0)
    }

    /// The worst loss the listeners of the received stream `ssrc` report (RTCP
    /// `fraction_lost`), until `until`: the leg's own reports about that stream say at
    /// least that much from now on.
    pub fn set_listener_loss(&mut self, ssrc: SSRC, fraction_lost: u8, until: Instant) {
        self.gauges
            .listener_loss
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ssrc, (fraction_lost, until));
    }

    /// Retransmissions dropped so far: too old to be played, or over the budget.
    pub fn retransmissions_dropped(&self) -> u64 {
        self.gauges.retransmissions_dropped.load(Ordering::Relaxed)
    }

    /// Whether the leg is up.
    pub fn is_connected(&self) -> bool {
        self.state == RTCPeerConnectionState::Connected
    }

    /// Whether media may go out on the leg: it connected and has not failed or closed.
    /// A leg whose consent checks paused is `Disconnected` but still the participant's
    /// (RFC 7675 lets consent run 30 s): under heavy loss a few lost checks in a row made
    /// a listener miss half a second of audio when forwarding stopped there.
    pub fn can_send(&self) -> bool {
        matches!(
            self.state,
            RTCPeerConnectionState::Connected | RTCPeerConnectionState::Disconnected
        )
    }

    /// The mid of the m-line a received SSRC arrived on, once its track opened.
    pub fn mid_of(&self, ssrc: SSRC) -> Option<&str> {
        self.ssrc_mids.get(&ssrc).map(|mid| &**mid)
    }

    fn drain(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.state = state;
                    let output = match state {
                        RTCPeerConnectionState::Connected => LegOutput::Connected,
                        RTCPeerConnectionState::Disconnected => LegOutput::Disconnected,
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                            LegOutput::Closed
                        }
                        _ => continue,
                    };
                    self.outputs.push_back(output);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let (kind, codec) = self.pc.rtp_receiver(init.receiver_id).map_or(
                        (RtpCodecKind::Audio, None),
                        |receiver| {
                            let track = receiver.track();
                            let codec = track
                                .codec(init.ssrc)
                                .and_then(|codec| Codec::from_mime(&codec.mime_type));
                            (track.kind(), codec)
                        },
                    );
                    self.ssrc_receivers.insert(init.ssrc, init.receiver_id);
                    let mid: Option<Arc<str>> = self
                        .pc
                        .rtp_transceiver(init.receiver_id.into())
                        .and_then(|transceiver| transceiver.mid().as_deref().map(Arc::from));
                    self.track_mids.insert(init.track_id.clone(), mid.clone());
                    if let Some(mid) = &mid {
                        self.ssrc_mids.insert(init.ssrc, Arc::clone(mid));
                    }
                    self.outputs.push_back(LegOutput::TrackOpened {
                        ssrc: init.ssrc,
                        kind,
                        codec,
                        mid,
                        rid: init.rid.map(|rid| rid.to_string()),
                    });
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                    self.track_mids.remove(&track_id);
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let mid = self.track_mids.get(&track_id).cloned().flatten();
                    self.outputs.push_back(LegOutput::Rtp {
                        mid,
                        ssrc: packet.header.ssrc,
                        packet,
                    });
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    self.outputs.push_back(LegOutput::Rtcp { packets });
                }
                _ => {}
            }
        }
    }
}

mod feedback;
mod loss_proxy;
mod rtx;
#[cfg(test)]
mod tests;
