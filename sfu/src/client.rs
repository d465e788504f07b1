//! A sans-IO participant for the SFU's own tests and its load generator: an rtc peer
//! connection (full ICE) with the SFU's codecs, extensions and interceptors, one host
//! candidate, tracks to publish, and whatever the SFU offers it received. Time is passed
//! in; datagrams go in and out as bytes. An application uses the engine instead; this
//! exists so that many participants can run in one process, on an injected clock, through
//! a simulated network, with real DTLS-SRTP.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId, SSRC};
use rtc::sansio::Protocol;

use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};

use crate::core::extmap_id;
use crate::layers::DEPENDENCY_DESCRIPTOR_URI;
use crate::leg::{
    Codec, LegError, Transmit, host_candidate, media_engine, next_transmit, read_datagram, rtc_err,
    send_pli,
};

/// The RIDs of a simulcast source's layers, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// A stream the client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// Its codec.
    pub codec: Codec,
    /// Its SSRC (with simulcast, the lowest layer's; layer `i` uses `ssrc + 2i`).
    pub ssrc: SSRC,
    /// The SSRC of its retransmissions (video; `None` turns RTX off for it).
    pub rtx_ssrc: Option<SSRC>,
    /// Three simulcast layers by RID ([`SIMULCAST_RIDS`]), as browsers send them: SSRCs
    /// undeclared, each packet naming its m-line and RID in header extensions.
    pub simulcast: bool,
}

impl Publish {
    /// An Opus stream.
    pub fn audio(ssrc: SSRC) -> Publish {
        Publish {
            codec: Codec::Opus,
            ssrc,
            rtx_ssrc: None,
            simulcast: false,
        }
    }

    /// A VP8 stream with RTX on `ssrc + 1`.
    pub fn video(ssrc: SSRC) -> Publish {
        Publish {
            codec: Codec::Vp8,
            ssrc,
            rtx_ssrc: Some(ssrc.wrapping_add(1)),
            simulcast: false,
        }
    }

    /// VP8 in three simulcast layers on `ssrc`, `ssrc + 2`, `ssrc + 4` (no RTX: rtc does
    /// not yet tie a RID's repair stream to it).
    pub fn simulcast_video(ssrc: SSRC) -> Publish {
        Publish {
            codec: Codec::Vp8,
            ssrc,
            rtx_ssrc: None,
            simulcast: true,
        }
    }

    /// Its layers' SSRCs, lowest first (one unless simulcast).
    pub fn layer_ssrcs(&self) -> Vec<SSRC> {
        if self.simulcast {
            (0..SIMULCAST_RIDS.len() as u32)
                .map(|i| self.ssrc.wrapping_add(2 * i))
                .collect()
        } else {
            vec![self.ssrc]
        }
    }
}

/// One RTP packet to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its sequence number.
    pub seq: u16,
    /// Its timestamp.
    pub timestamp: u32,
    /// The last packet of a frame.
    pub marker: bool,
    /// For video: the frame's number, and whether this packet starts it and the frame is a
    /// keyframe; sent as a dependency descriptor.
    pub frame: Option<FrameInfo>,
    /// The payload.
    pub payload: Bytes,
}

/// Where a video packet sits in its frame (see [`Outgoing::frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's number.
    pub number: u16,
    /// The packet starts the frame.
    pub start: bool,
    /// The frame is a keyframe.
    pub keyframe: bool,
}

impl FrameInfo {
    /// A minimal dependency descriptor: the mandatory fields, and for the first packet of
    /// a keyframe one byte of extended fields whose first flag says a template structure
    /// follows (the SFU reads no further; a decoder would need the structure itself).
    fn descriptor(&self) -> Bytes {
        let [hi, lo] = self.number.to_be_bytes();
        let first = if self.start { 0x80 } else { 0 };
        if self.start && self.keyframe {
            Bytes::from(vec![first, hi, lo, 0x80])
        } else {
            Bytes::from(vec![first, hi, lo])
        }
    }
}

/// Header-extension ids the client's offer gave, read back from its SDP.
#[derive(Debug, Clone, Copy, Default)]
struct ExtensionIds {
    mid: Option<u8>,
    rid: Option<u8>,
    dependency_descriptor: Option<u8>,
}

/// What happened at the client.
#[derive(Debug)]
pub enum ClientEvent {
    /// ICE and DTLS are up.
    Connected,
    /// The connection failed or closed.
    Closed,
    /// A forwarded stream started.
    TrackOpened {
        /// The SSRC the SFU sends it with.
        ssrc: SSRC,
        /// Its media stream (msid): the publisher's participant id.
        stream_id: String,
        /// Its track id (msid), which names it in pause and quality requests.
        track_id: String,
        /// Audio or video.
        kind: RtpCodecKind,
    },
    /// RTP of a forwarded stream (retransmissions already unwrapped from RTX).
    Rtp(rtc::rtp::Packet),
    /// RTCP about one of the client's streams (keyframe requests, NACKs).
    Rtcp(Vec<Box<dyn rtc::rtcp::Packet>>),
}

/// One participant.
pub struct Client {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    /// Each SSRC sent: its codec, sender and RID (simulcast).
    senders: HashMap<SSRC, (Codec, RTCRtpSenderId, Option<&'static str>)>,
    extension_ids: ExtensionIds,
    receivers: HashMap<SSRC, RTCRtpReceiverId>,
    events: VecDeque<ClientEvent>,
    candidates_added: bool,
}

impl Client {
    /// A client at `addr` that will publish `streams` (its stream id is `name`); with none,
    /// it offers a receive-only audio section.
    pub fn new(
        name: &str,
        addr: SocketAddr,
        streams: &[Publish],
        now: Instant,
    ) -> Result<Client, LegError> {
        let (media_engine, registry, _) = media_engine()?;
        // Checks every 100 ms for 20 s, as the engine does (rtc's default gives a pair up
        // after 7 checks in 1.4 s, which loss from the first packet can exhaust).
        let setting_engine = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(std::time::Duration::from_millis(100)), Some(200))
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(rtc_err)?;
        let mut senders = HashMap::new();
        for (i, stream) in streams.iter().enumerate() {
            let label = format!("{name}-{i}");
            let layers: Vec<(SSRC, Option<&'static str>)> = if stream.simulcast {
                stream
                    .layer_ssrcs()
                    .into_iter()
                    .zip(SIMULCAST_RIDS.map(Some))
                    .collect()
            } else {
                vec![(stream.ssrc, None)]
            };
            let encodings = layers
                .iter()
                .map(|(ssrc, rid)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.unwrap_or_default().to_owned(),
                        ssrc: Some(*ssrc),
                        rtx: stream.rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                        ..Default::default()
                    },
                    codec: stream.codec.rtp_codec(),
                    ..Default::default()
                })
                .collect();
            let track = MediaStreamTrack::new(
                name.to_owned(),
                label.clone(),
                label,
                stream.codec.kind(),
                encodings,
            );
            let sender = pc.add_track(track).map_err(rtc_err)?;
            for (ssrc, rid) in layers {
                senders.insert(ssrc, (stream.codec, sender, rid));
            }
        }
        if streams.is_empty() {
            // A participant that only listens still offers one section, as a browser with
            // a receive-only transceiver does: ICE and DTLS need one to run on.
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                    direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .map_err(rtc_err)?;
        }
        Ok(Client {
            pc,
            addr,
            senders,
            extension_ids: ExtensionIds::default(),
            receivers: HashMap::new(),
            events: VecDeque::new(),
            candidates_added: false,
        })
    }

    /// The client's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client's offer, with its host candidate.
    pub fn offer(&mut self, now: Instant) -> Result<String, LegError> {
        let offer = self.pc.create_offer(None).map_err(rtc_err)?;
        self.pc.set_local_description(now, offer).map_err(rtc_err)?;
        self.add_candidate_once()?;
        let sdp = self.local_sdp()?;
        self.extension_ids = ExtensionIds {
            mid: extmap_id(&sdp, SDES_MID_URI),
            rid: extmap_id(&sdp, SDES_RTP_STREAM_ID_URI),
            dependency_descriptor: extmap_id(&sdp, DEPENDENCY_DESCRIPTOR_URI),
        };
        Ok(sdp)
    }

    /// The SFU's answer to [`Client::offer`].
    pub fn apply_answer(&mut self, sdp: &str, now: Instant) -> Result<(), LegError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned())
            .map_err(|e| LegError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(|e| LegError::BadSdp(e.to_string()))
    }

    /// An SFU offer (new streams to receive): returns the client's answer.
    pub fn accept_offer(&mut self, sdp: &str, now: Instant) -> Result<String, LegError> {
        let offer = RTCSessionDescription::offer(sdp.to_owned())
            .map_err(|e| LegError::BadSdp(e.to_string()))?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(|e| LegError::BadSdp(e.to_string()))?;
        let answer = self.pc.create_answer(None).map_err(rtc_err)?;
        self.pc
            .set_local_description(now, answer)
            .map_err(rtc_err)?;
        // A client that answers first (an SFU such as Janus offers to its subscribers)
        // gives its candidate here.
        self.add_candidate_once()?;
        self.local_sdp()
    }

    /// The host candidate and the end of candidates, with the first local description.
    fn add_candidate_once(&mut self) -> Result<(), LegError> {
        if !self.candidates_added {
            self.pc
                .add_local_candidate(host_candidate(self.addr)?)
                .map_err(rtc_err)?;
            self.pc
                .add_local_candidate(RTCIceCandidateInit::default())
                .map_err(rtc_err)?;
            self.candidates_added = true;
        }
        Ok(())
    }

    fn local_sdp(&self) -> Result<String, LegError> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| LegError::Rtc("no local description".into()))
    }

    /// Sends one RTP packet on the published stream (or simulcast layer) `ssrc`.
    pub fn send_rtp(
        &mut self,
        ssrc: SSRC,
        outgoing: Outgoing,
        now: Instant,
    ) -> Result<(), LegError> {
        let (codec, sender, rid) = *self.senders.get(&ssrc).ok_or(LegError::NoSuchTrack(ssrc))?;
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: codec.payload_type(),
                sequence_number: outgoing.seq,
                timestamp: outgoing.timestamp,
                ssrc,
                marker: outgoing.marker,
                ..Default::default()
            },
            payload: outgoing.payload,
        };
        let ids = self.extension_ids;
        let mut extensions: Vec<(u8, Bytes)> = Vec::new();
        if let (Some(rid), Some(rid_id), Some(mid_id)) = (rid, ids.rid, ids.mid) {
            // Simulcast layers are matched to their m-line and RID by these two.
            let mid = self
                .pc
                .rtp_transceiver(sender.into())
                .and_then(|t| t.mid().clone())
                .unwrap_or_default();
            extensions.push((mid_id, Bytes::from(mid)));
            extensions.push((rid_id, Bytes::from(rid)));
        }
        if let (Some(frame), Some(id)) = (outgoing.frame, ids.dependency_descriptor) {
            extensions.push((id, frame.descriptor()));
        }
        if !extensions.is_empty() {
            packet.header.extension = true;
            packet.header.extension_profile = 0xBEDE;
            for (id, value) in extensions {
                packet.header.set_extension(id, value).map_err(rtc_err)?;
            }
        }
        self.pc
            .rtp_sender(sender)
            .ok_or(LegError::NoSuchTrack(ssrc))?
            .write_rtp(now, packet)
            .map_err(rtc_err)
    }

    /// Asks for a keyframe on the forwarded stream `ssrc` (a PLI).
    pub fn request_keyframe(&mut self, ssrc: SSRC, now: Instant) -> Result<(), LegError> {
        let receiver = self.receivers.get(&ssrc).copied();
        send_pli(&mut self.pc, receiver, ssrc, now)
    }

    /// One datagram from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), LegError> {
        read_datagram(&mut self.pc, self.addr, now, from, datagram)?;
        self.drain();
        Ok(())
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        next_transmit(&mut self.pc)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.drain();
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), LegError> {
        self.pc.handle_timeout(now).map_err(rtc_err)?;
        self.drain();
        Ok(())
    }

    fn drain(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => {
                        self.events.push_back(ClientEvent::Connected);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.events.push_back(ClientEvent::Closed);
                    }
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    self.receivers.insert(init.ssrc, init.receiver_id);
                    let kind = self
                        .pc
                        .rtp_receiver(init.receiver_id)
                        .map_or(RtpCodecKind::Audio, |receiver| receiver.track().kind());
                    self.events.push_back(ClientEvent::TrackOpened {
                        ssrc: init.ssrc,
                        stream_id: init.stream_ids.first().cloned().unwrap_or_default(),
                        track_id: init.track_id.clone(),
                        kind,
                    });
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, packet) => self.events.push_back(ClientEvent::Rtp(packet)),
                RTCMessage::RtcpPacket(_, packets) => {
                    self.events.push_back(ClientEvent::Rtcp(packets));
                }
                _ => {}
            }
        }
    }
}
