//! A sans-IO participant for the SFU's own tests and its load generator: an rtc peer
//! connection (full ICE) with the SFU's codecs, extensions and interceptors, one host
//! candidate, tracks to publish, and whatever the SFU offers it received. Time is passed
//! in; datagrams go in and out as bytes. An application uses the engine instead; this
//! exists so that many participants can run in one process, on an injected clock, through
//! a simulated network, with real DTLS-SRTP.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
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
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::leg::{Codec, LegError, Transmit, host_candidate, media_engine};

fn rtc_err(err: impl std::fmt::Display) -> LegError {
    LegError::Rtc(err.to_string())
}

/// A stream the client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// Its codec.
    pub codec: Codec,
    /// Its SSRC.
    pub ssrc: SSRC,
    /// The SSRC of its retransmissions (video; `None` turns RTX off for it).
    pub rtx_ssrc: Option<SSRC>,
}

impl Publish {
    /// An Opus stream.
    pub fn audio(ssrc: SSRC) -> Publish {
        Publish {
            codec: Codec::Opus,
            ssrc,
            rtx_ssrc: None,
        }
    }

    /// A VP8 stream with RTX on `ssrc + 1`.
    pub fn video(ssrc: SSRC) -> Publish {
        Publish {
            codec: Codec::Vp8,
            ssrc,
            rtx_ssrc: Some(ssrc.wrapping_add(1)),
        }
    }
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
    senders: HashMap<SSRC, (Codec, RTCRtpSenderId)>,
    receivers: HashMap<SSRC, RTCRtpReceiverId>,
    events: VecDeque<ClientEvent>,
    candidates_added: bool,
}

impl Client {
    /// A client at `addr` that will publish `streams` (its stream id is `name`).
    pub fn new(
        name: &str,
        addr: SocketAddr,
        streams: &[Publish],
        now: Instant,
    ) -> Result<Client, LegError> {
        let (media_engine, registry, _) = media_engine()?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(rtc_err)?;
        let mut senders = HashMap::new();
        for (i, stream) in streams.iter().enumerate() {
            let label = format!("{name}-{i}");
            let track = MediaStreamTrack::new(
                name.to_owned(),
                label.clone(),
                label,
                stream.codec.kind(),
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(stream.ssrc),
                        rtx: stream.rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                        ..Default::default()
                    },
                    codec: stream.codec.rtp_codec(),
                    ..Default::default()
                }],
            );
            let sender = pc.add_track(track).map_err(rtc_err)?;
            senders.insert(stream.ssrc, (stream.codec, sender));
        }
        Ok(Client {
            pc,
            addr,
            senders,
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
        if !self.candidates_added {
            self.pc
                .add_local_candidate(host_candidate(self.addr)?)
                .map_err(rtc_err)?;
            self.pc
                .add_local_candidate(RTCIceCandidateInit::default())
                .map_err(rtc_err)?;
            self.candidates_added = true;
        }
        self.local_sdp()
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
        self.local_sdp()
    }

    fn local_sdp(&self) -> Result<String, LegError> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| LegError::Rtc("no local description".into()))
    }

    /// Sends one RTP packet on the published stream `ssrc`.
    pub fn send_rtp(
        &mut self,
        ssrc: SSRC,
        sequence_number: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), LegError> {
        let (codec, sender) = *self.senders.get(&ssrc).ok_or(LegError::NoSuchTrack(ssrc))?;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: codec.payload_type(),
                sequence_number,
                timestamp,
                ssrc,
                marker,
                ..Default::default()
            },
            payload,
        };
        self.pc
            .rtp_sender(sender)
            .ok_or(LegError::NoSuchTrack(ssrc))?
            .write_rtp(now, packet)
            .map_err(rtc_err)
    }

    /// Asks for a keyframe on the forwarded stream `ssrc` (a PLI).
    pub fn request_keyframe(&mut self, ssrc: SSRC, now: Instant) -> Result<(), LegError> {
        let receiver = *self
            .receivers
            .get(&ssrc)
            .ok_or(LegError::NoSuchTrack(ssrc))?;
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        self.pc
            .rtp_receiver(receiver)
            .ok_or(LegError::NoSuchTrack(ssrc))?
            .write_rtcp(now, vec![Box::new(pli)])
            .map_err(rtc_err)
    }

    /// One datagram from `from`.
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
                    local_addr: self.addr,
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
