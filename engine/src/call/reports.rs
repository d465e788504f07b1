//! An interceptor that reads the loss the peer reports about our stream, from the
//! reception report blocks of both its receiver reports and its sender reports. Written
//! here because rtc 0.21.1's statistics read report blocks only from receiver reports, and
//! a peer that sends media (every one-to-one call) reports in sender reports: its
//! `remote-inbound-rtp` loss then stays 0, and Opus FEC was never switched on. Passes every
//! packet through unchanged; sans-IO, no clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// The latest loss the peer reported about one of our streams, shared with the call.
#[derive(Debug, Default)]
pub struct ReportedLoss {
    /// `fraction_lost` of the latest report block about our SSRC (0..=255) plus 1 per
    /// report (so a reader can tell a new report from an old one), packed as
    /// `count << 8 | fraction`.
    latest: AtomicU32,
}

impl ReportedLoss {
    /// The latest reported fraction lost (0..1) and how many reports have come, or `None`
    /// before the first.
    pub fn latest(&self) -> Option<(f64, u32)> {
        let packed = self.latest.load(Ordering::Relaxed);
        let count = packed >> 8;
        (count > 0).then(|| (f64::from(packed & 0xff) / 256.0, count))
    }

    fn record(&self, block: &ReceptionReport) {
        let count = (self.latest.load(Ordering::Relaxed) >> 8).wrapping_add(1) & 0x00ff_ffff;
        self.latest.store(
            count << 8 | u32::from(block.fraction_lost),
            Ordering::Relaxed,
        );
    }
}

/// The interceptor (see the module documentation).
pub struct ReportTap {
    ssrc: u32,
    loss: Arc<ReportedLoss>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl ReportTap {
    /// Watches reports about `ssrc` (our audio stream).
    pub fn new(ssrc: u32, loss: Arc<ReportedLoss>) -> Self {
        ReportTap {
            ssrc,
            loss,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                let any = packet.as_any();
                let blocks = if let Some(sr) = any.downcast_ref::<SenderReport>() {
                    &sr.reports
                } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                    &rr.reports
                } else {
                    continue;
                };
                for block in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                    self.loss.record(block);
                }
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for ReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
