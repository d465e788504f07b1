//! One participant's connection as the SFU sees it: a sans-IO wrapper over rtc's
//! `RTCPeerConnection` in ICE-lite mode, with the SFU's one UDP address as its only host
//! candidate. Owns: negotiation (the participant's offer, the SFU's answer; SFU-side
//! offers for new send tracks), datagrams in and out, timers, and turning rtc's events and
//! messages into [`LegOutput`]s. Must not know about rooms or other legs.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
    TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::rtp_transceiver::{
    RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit, SSRC,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

/// The Opus payload type the SFU registers (the engine and browsers use it too).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

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
}

fn rtc_err(err: impl std::fmt::Display) -> LegError {
    LegError::Rtc(err.to_string())
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
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// The connection failed or closed; the leg is done.
    Closed,
    /// The participant's stream with this SSRC started.
    TrackOpened {
        /// Its SSRC.
        ssrc: SSRC,
        /// Audio or video.
        kind: RtpCodecKind,
    },
    /// An RTP packet from the participant (already SRTP-decrypted).
    Rtp(rtc::rtp::Packet),
}

/// A send track on a leg (a stream forwarded to this participant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendTrack {
    sender: RTCRtpSenderId,
    /// The SSRC this leg sends the stream with.
    pub ssrc: SSRC,
}

/// One participant's connection.
pub struct Leg {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    ufrag: String,
    outputs: VecDeque<LegOutput>,
    track_kinds: HashMap<String, RtpCodecKind>,
    state: RTCPeerConnectionState,
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1;usedtx=1".to_owned(),
        rtcp_feedback: vec![RTCPFeedback {
            typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
            parameter: String::new(),
        }],
    }
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
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
        let mut media_engine = MediaEngine::default();
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(rtc_err)?;
        for uri in [AUDIO_LEVEL_URI, SDES_MID_URI] {
            media_engine
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: uri.to_owned(),
                    },
                    RtpCodecKind::Audio,
                    None,
                )
                .map_err(rtc_err)?;
        }
        let registry = configure_nack(Registry::new(), &mut media_engine);
        let registry = configure_rtcp_reports(registry);
        let registry =
            configure_twcc_receiver_only(registry, &mut media_engine).map_err(rtc_err)?;
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
            track_kinds: HashMap::new(),
            state: RTCPeerConnectionState::New,
        })
    }

    /// The local ICE ufrag: a STUN binding request for this leg carries it before the `:`
    /// of its USERNAME.
    pub fn local_ufrag(&self) -> &str {
        &self.ufrag
    }

    /// Applies the participant's offer and returns the SFU's answer (with its host
    /// candidate in it: ICE-lite does not trickle).
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
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local_addr.ip().to_string(),
                port: self.local_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(rtc_err)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(rtc_err)?;
        // A second add after renegotiation is refused as a duplicate; that is fine.
        let _ = self.pc.add_local_candidate(init);
        Ok(())
    }

    /// Adds a stream the SFU will forward to this participant. Takes effect after the
    /// next [`Leg::create_offer`] / [`Leg::accept_answer`] round.
    pub fn add_send_track(
        &mut self,
        stream_id: &str,
        track_id: &str,
        ssrc: SSRC,
    ) -> Result<SendTrack, LegError> {
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.to_owned(),
            track_id.to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: opus(),
                ..Default::default()
            }],
        );
        // A new sendonly transceiver per forwarded stream (never `add_track`, which would
        // reuse the participant's own audio m-line): every stream gets its own m-line and
        // msid, so the participant can tell whose voice it is.
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
            ssrc,
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

    /// Sends an RTP packet on a send track (SSRC and payload type are set here).
    pub fn write_rtp(
        &mut self,
        track: SendTrack,
        mut packet: rtc::rtp::Packet,
        now: Instant,
    ) -> Result<(), LegError> {
        packet.header.ssrc = track.ssrc;
        packet.header.payload_type = OPUS_PAYLOAD_TYPE;
        let mut sender = self
            .pc
            .rtp_sender(track.sender)
            .ok_or(LegError::NoSuchTrack(track.ssrc))?;
        sender.write_rtp(now, packet).map_err(rtc_err)
    }

    /// Feeds one datagram from `from`. Bad input is the caller's to count; it never
    /// panics.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), LegError> {
        self.pc
            .handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: self.local_addr,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(datagram),
            })
            .map_err(rtc_err)?;
        self.drain();
        Ok(())
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pc.poll_write().map(|tagged| Transmit {
            to: tagged.transport.peer_addr,
            payload: tagged.message,
        })
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

    /// Whether the leg is up.
    pub fn is_connected(&self) -> bool {
        self.state == RTCPeerConnectionState::Connected
    }

    fn drain(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.state = state;
                    match state {
                        RTCPeerConnectionState::Connected => {
                            self.outputs.push_back(LegOutput::Connected);
                        }
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                            self.outputs.push_back(LegOutput::Closed);
                        }
                        _ => {}
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = self
                        .pc
                        .rtp_receiver(init.receiver_id)
                        .map_or(RtpCodecKind::Audio, |receiver| receiver.track().kind());
                    self.track_kinds.insert(init.track_id.clone(), kind);
                    self.outputs.push_back(LegOutput::TrackOpened {
                        ssrc: init.ssrc,
                        kind,
                    });
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_track_id, packet) = message {
                self.outputs.push_back(LegOutput::Rtp(packet));
            }
        }
    }
}
