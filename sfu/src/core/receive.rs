//! What the SFU owes a publisher for the streams it receives, sans-IO: receiver reports
//! (with its listeners' loss raised into them), NACKs for packets its uplink lost, and
//! transport-wide congestion-control feedback. One per publishing participant, fed each
//! packet's header once (not per subscriber).
//!
//! The generators are rtc's receiver-report and TWCC-receiver interceptors and our own NACK
//! generator (`sotto_interceptors::nack`), driven directly as sans-IO objects in a chain of
//! their own: no peer connection, no packets but headers (rtc's helpers keep their state
//! private; driving them this way is what their public API allows, and their RTCP is
//! what browsers and the engine already trust). RTX from the publisher is unwrapped here,
//! in the caller's buffer, before anything reads sequence numbers ([`ReceiveSide::unwrap_rtx`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{
    AttributedPacket, Interceptor, Packet, RTCPFeedback, RTPHeaderExtension, ReceiverReportBuilder,
    Registry, Slot, StreamInfo, TaggedPacket, TwccReceiverBuilder,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;
use rtc::sdp::extmap::TRANSPORT_CC_URI;
use rtc::shared::TransportContext;
use rtc::shared::marshal::Unmarshal;
use sotto_interceptors::nack::NackGenerator;

/// How often receiver reports go to a publisher (browsers send theirs about once a
/// second too).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How often transport-wide feedback goes to a publisher (Chrome's and rtc's default).
pub const TWCC_INTERVAL: Duration = Duration::from_millis(100);

/// One stream the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Its SSRC.
    pub ssrc: u32,
    /// Its RTP clock rate.
    pub clock_rate: u32,
    /// Lost packets are NACKed (video, where `nack` was negotiated).
    pub nack: bool,
    /// Its RTX SSRC and RTX payload type, when the publisher sends RTX.
    pub rtx: Option<(u32, u8)>,
    /// Its payload type (what unwrapped RTX becomes).
    pub payload_type: u8,
}

/// The receive side of one publisher's transport. Its generators are set up at the first
/// stream bound: a participant that only subscribes carries none.
pub struct ReceiveSide {
    chain: Option<Box<dyn Interceptor>>,
    bound: HashSet<u32>,
    /// RTX SSRC → (media SSRC, media payload type).
    rtx: HashMap<u32, (u32, u8)>,
    /// Per received SSRC, the loss its listeners report (`fraction_lost`), until when.
    listener_loss: HashMap<u32, (u8, Instant)>,
    transport_cc: Option<u8>,
}

impl std::fmt::Debug for ReceiveSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveSide")
            .field("streams", &self.bound.len())
            .finish_non_exhaustive()
    }
}

impl Default for ReceiveSide {
    fn default() -> Self {
        ReceiveSide::new(None)
    }
}

impl ReceiveSide {
    /// A receive side; `transport_cc` is the id the publisher gave the transport-wide
    /// sequence number (no feedback without it).
    pub fn new(transport_cc: Option<u8>) -> ReceiveSide {
        ReceiveSide {
            chain: None,
            bound: HashSet::new(),
            rtx: HashMap::new(),
            listener_loss: HashMap::new(),
            transport_cc,
        }
    }

    fn generators() -> Box<dyn Interceptor> {
        let registry = Registry::new()
            .with(Slot::NackGenerator, NackGenerator::new())
            .with(
                Slot::TwccReceiver,
                TwccReceiverBuilder::new()
                    .with_interval(TWCC_INTERVAL)
                    .build(),
            )
            .with(
                Slot::ReceiverReport,
                ReceiverReportBuilder::new()
                    .with_interval(REPORT_INTERVAL)
                    .build(),
            );
        Box::new(registry.build())
    }

    /// Starts reporting on `stream` (again: nothing changes).
    pub fn bind(&mut self, stream: Stream) {
        if !self.bound.insert(stream.ssrc) {
            return;
        }
        if let Some((rtx_ssrc, _)) = stream.rtx {
            self.rtx
                .insert(rtx_ssrc, (stream.ssrc, stream.payload_type));
        }
        let info = StreamInfo {
            ssrc: stream.ssrc,
            clock_rate: stream.clock_rate,
            payload_type: stream.payload_type,
            rtcp_feedback: if stream.nack {
                vec![RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: String::new(),
                }]
            } else {
                Vec::new()
            },
            rtp_header_extensions: self
                .transport_cc
                .map(|id| {
                    vec![RTPHeaderExtension {
                        uri: TRANSPORT_CC_URI.to_owned(),
                        id: u16::from(id),
                    }]
                })
                .unwrap_or_default(),
            ..StreamInfo::default()
        };
        self.chain
            .get_or_insert_with(ReceiveSide::generators)
            .bind_remote_stream(&info);
    }

    /// Takes `rtx_ssrc` as the RTX stream of `ssrc` (whose payload type is
    /// `payload_type`): a simulcast layer's repair stream, which browsers name only in
    /// its packets (`repaired-rtp-stream-id`).
    pub fn add_rtx(&mut self, rtx_ssrc: u32, ssrc: u32, payload_type: u8) {
        self.rtx.insert(rtx_ssrc, (ssrc, payload_type));
    }

    /// Whether `ssrc` is one of the publisher's RTX streams.
    pub fn is_rtx(&self, ssrc: u32) -> bool {
        self.rtx.contains_key(&ssrc)
    }

    /// Turns an RTX packet (RFC 4588) in `packet` into the packet it repairs, in place:
    /// the media SSRC, payload type and original sequence number, the two bytes of it
    /// cut from the payload. `false` (and the buffer as it was) when it is not RTX of a
    /// known stream or carries no original (padding only).
    pub fn unwrap_rtx(&self, packet: &mut Vec<u8>) -> bool {
        let Ok(view) = crate::core::rtp::RtpView::parse(packet) else {
            return false;
        };
        let Some(&(ssrc, payload_type)) = self.rtx.get(&view.ssrc()) else {
            return false;
        };
        let range = view.payload_range();
        if range.len() < 2 {
            return false;
        }
        let original = [packet[range.start], packet[range.start + 1]];
        // Drop the padding (it counted into the range's end) and the OSN.
        packet.truncate(range.end);
        packet.drain(range.start..range.start + 2);
        packet[0] &= !0x20;
        packet[1] = (packet[1] & 0x80) | (payload_type & 0x7f);
        packet[2..4].copy_from_slice(&original);
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        true
    }

    /// A decrypted RTP packet from the publisher (RTX already unwrapped): its header is
    /// what the generators read.
    pub fn on_rtp(&mut self, now: Instant, packet: &[u8]) {
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        let Ok(header) = rtc::rtp::Header::unmarshal(&mut &packet[..]) else {
            return;
        };
        let _ = chain.handle_read(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header,
                payload: Bytes::new(),
            })),
        });
        while chain.poll_read().is_some() {}
    }

    /// RTCP from the publisher (its sender reports give the reports' LSR and DLSR).
    pub fn on_rtcp(&mut self, now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) {
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        let _ = chain.handle_read(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        });
        while chain.poll_read().is_some() {}
    }

    /// The publisher's listeners lose `fraction_lost` (RTCP's 0..=255) of `ssrc` until
    /// `until`: reports about it say at least that much (LiveKit's "loss proxying").
    pub fn set_listener_loss(&mut self, ssrc: u32, fraction_lost: u8, until: Instant) {
        self.listener_loss.insert(ssrc, (fraction_lost, until));
    }

    /// When [`ReceiveSide::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.chain.as_mut()?.poll_timeout()
    }

    /// Runs due generators.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(chain) = self.chain.as_mut() {
            let _ = chain.handle_timeout(now);
        }
    }

    /// The next RTCP compound packet for the publisher, plaintext, ready for SRTCP.
    pub fn poll_rtcp(&mut self, now: Instant) -> Option<Vec<u8>> {
        loop {
            let tagged = self.chain.as_mut()?.poll_write()?;
            let Packet::Rtcp(mut packets) = tagged.message.packet else {
                continue;
            };
            for packet in &mut packets {
                self.raise_loss(packet, now);
            }
            if let Ok(raw) = rtc::rtcp::packet::marshal(&packets) {
                return Some(raw.to_vec());
            }
        }
    }

    /// Raises a receiver report's blocks to what listeners lose (rtcp's packets are
    /// trait objects without mutable access: a raised report is a copy).
    fn raise_loss(&self, packet: &mut Box<dyn rtc::rtcp::Packet>, now: Instant) {
        let Some(report) = packet.as_any().downcast_ref::<ReceiverReport>() else {
            return;
        };
        let mut raised = report.clone();
        let mut moved = false;
        for block in &mut raised.reports {
            if let Some(&(fraction, until)) = self.listener_loss.get(&block.ssrc)
                && now < until
                && fraction > block.fraction_lost
            {
                block.fraction_lost = fraction;
                moved = true;
            }
        }
        if moved {
            *packet = Box::new(raised);
        }
    }
}

#[cfg(test)]
mod tests;
