//! An interceptor that reads the loss the peer reports about our stream, from the
//! reception report blocks of both its receiver reports and its sender reports. Written
//! here because rtc 0.21.1's statistics read report blocks only from receiver reports, and
//! a peer that sends media (every one-to-one call) reports in sender reports: its
//! `remote-inbound-rtp` loss then stays 0, and Opus FEC was never switched on. It also
//! takes the round-trip time from the blocks' LSR and DLSR (RFC 3550 §6.4.1), which the
//! rate controller reads as a queueing signal. Passes every packet through unchanged.
//! The one clock it reads is the wall clock, to put the packet's arrival in NTP time, as
//! rtc stamps our sender reports from the wall clock too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// The latest round trip in µs plus a report count, packed as `count << 40 | µs`.
    rtt: AtomicU64,
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The middle 32 bits of the NTP timestamp of `since_unix` (16.16 fixed point seconds).
fn ntp_middle(since_unix: Duration) -> u32 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET_SECS;
    let frac = (u64::from(since_unix.subsec_nanos()) << 16) / 1_000_000_000;
    ((secs << 16) | frac) as u32
}

/// The round trip of one report block that arrived at `arrival` (NTP middle 32 bits):
/// arrival − LSR − DLSR, or `None` when the peer has not had a sender report from us yet
/// (LSR 0) or the result is nonsense (negative, or over a minute).
pub fn round_trip(block: &ReceptionReport, arrival: u32) -> Option<Duration> {
    if block.last_sender_report == 0 {
        return None;
    }
    let units = arrival
        .wrapping_sub(block.last_sender_report)
        .checked_sub(block.delay)?;
    let rtt = Duration::from_micros(u64::from(units) * 1_000_000 / 65_536);
    (rtt < Duration::from_secs(60)).then_some(rtt)
}

impl ReportedLoss {
    /// The latest reported fraction lost (0..1) and how many reports have come, or `None`
    /// before the first.
    pub fn latest(&self) -> Option<(f64, u32)> {
        let packed = self.latest.load(Ordering::Relaxed);
        let count = packed >> 8;
        (count > 0).then(|| (f64::from(packed & 0xff) / 256.0, count))
    }

    /// The latest round trip and how many have come, or `None` before the first.
    pub fn latest_rtt(&self) -> Option<(Duration, u32)> {
        let packed = self.rtt.load(Ordering::Relaxed);
        let count = (packed >> 40) as u32;
        (count > 0).then(|| (Duration::from_micros(packed & ((1 << 40) - 1)), count))
    }

    fn record_rtt(&self, rtt: Duration) {
        let count = ((self.rtt.load(Ordering::Relaxed) >> 40) + 1) & 0xff_ffff;
        let micros = (rtt.as_micros() as u64).min((1 << 40) - 1);
        self.rtt.store(count << 40 | micros, Ordering::Relaxed);
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
                    // When it arrived, on the wall clock.
                    let arrival = SystemTime::now()
                        .checked_sub(Instant::now().saturating_duration_since(msg.now))
                        .and_then(|at| at.duration_since(UNIX_EPOCH).ok());
                    if let Some(rtt) = arrival.and_then(|at| round_trip(block, ntp_middle(at))) {
                        self.loss.record_rtt(rtt);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block(lsr: u32, dlsr: u32) -> ReceptionReport {
        ReceptionReport {
            last_sender_report: lsr,
            delay: dlsr,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_is_arrival_minus_lsr_minus_dlsr() {
        // RFC 3550 §6.4.1's example: A = 0xb710_8000 (46864.500 s), LSR = 0xb705_2000
        // (46853.125 s), DLSR = 0x0005_4000 (5.250 s): RTT = 6.125 s.
        let rtt = round_trip(&block(0xb705_2000, 0x0005_4000), 0xb710_8000);
        assert_eq!(rtt, Some(Duration::from_micros(6_125_000)));
        // Across the 16-bit seconds wrap.
        let rtt = round_trip(&block(0xffff_8000, 0x0000_4000), 0x0000_4000);
        assert_eq!(rtt, Some(Duration::from_millis(500)));
        // No sender report yet, or a DLSR larger than the time since: no round trip.
        assert_eq!(round_trip(&block(0, 0), 0x1000), None);
        assert_eq!(round_trip(&block(0x1000, 0x2000), 0x1800), None);
    }

    #[test]
    fn ntp_middle_bits() {
        // 1970-01-01 plus 1.5 s: NTP seconds 2208988801, fraction 0x8000.
        let middle = ntp_middle(Duration::from_millis(1500));
        assert_eq!(middle, (((2_208_988_801u64) << 16) as u32) | 0x8000);
    }

    #[test]
    fn rtt_is_packed_with_a_count() {
        let shared = ReportedLoss::default();
        assert_eq!(shared.latest_rtt(), None);
        shared.record_rtt(Duration::from_millis(42));
        shared.record_rtt(Duration::from_millis(43));
        assert_eq!(shared.latest_rtt(), Some((Duration::from_millis(43), 2)));
    }
}
