//! An interceptor that reads the loss the peer reports about our stream, from the
//! reception report blocks of both its receiver reports and its sender reports. Written
//! here because rtc 0.21.1's statistics read report blocks only from receiver reports, and
//! a peer that sends media (every one-to-one call) reports in sender reports: its
//! `remote-inbound-rtp` loss then stays 0, and Opus FEC was never switched on. It also
//! keeps the latest block's LSR and DLSR with the packet's arrival time, from which the
//! call computes the round trip (RFC 3550 §6.4.1) that the rate controller reads as a
//! queueing signal. Passes every packet through unchanged; sans-IO, no clock (the call
//! gives the wall clock when it asks for the round trip: our sender reports carry
//! wall-clock NTP time).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use sotto_interceptors::rtcp_tap::{OnRtcp, RtcpTap};

use super::media::EncoderControl;
use crate::audio::rate::{RateController, RateDecision};

/// The latest loss the peer reported about one of our streams, shared with the call.
#[derive(Debug, Default)]
pub struct ReportedLoss {
    /// `fraction_lost` of the latest report block about our SSRC (0..=255) plus 1 per
    /// report (so a reader can tell a new report from an old one), packed as
    /// `count << 8 | fraction`.
    latest: AtomicU32,
    /// The latest report block's timing about our SSRC, and how many have come.
    timing: std::sync::Mutex<Option<(BlockTiming, u32)>>,
    /// What the peer's sender reports say it has sent: the latest packet count of each of
    /// its SSRCs, and the sum of their increases (how a call tells a peer that stopped
    /// sending from media that stopped arriving).
    peer_sent: std::sync::Mutex<(std::collections::HashMap<u32, u32>, u64)>,
    /// The highest extended sequence number of ours a report block acknowledged, and
    /// how many blocks moved it (a block that repeats the last one says nothing new
    /// arrived: a peer keeps reporting while our packets stop reaching it).
    acknowledged: std::sync::Mutex<(Option<u32>, u64)>,
}

/// A lock that a panicking holder cannot poison for the rest of the call (every value
/// here is whole after any single store).
fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a round trip is computed from.
#[derive(Debug, Clone, Copy)]
struct BlockTiming {
    /// The middle 32 bits of the NTP time of our last sender report the peer had.
    lsr: u32,
    /// How long the peer held it before sending the block, 1/65536 s.
    dlsr: u32,
    /// When the block arrived.
    arrival: Instant,
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The middle 32 bits of the NTP timestamp of `since_unix` (16.16 fixed point seconds).
fn ntp_middle(since_unix: Duration) -> u32 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET_SECS;
    let frac = (u64::from(since_unix.subsec_nanos()) << 16) / 1_000_000_000;
    ((secs << 16) | frac) as u32
}

/// The round trip of a report block with `lsr` and `dlsr` that arrived at `arrival` (all
/// NTP middle 32 bits): arrival − LSR − DLSR, or `None` when the peer has not had a sender
/// report from us yet (LSR 0) or the result is nonsense (negative, or over a minute).
pub fn round_trip(lsr: u32, dlsr: u32, arrival: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let units = arrival.wrapping_sub(lsr).checked_sub(dlsr)?;
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

    /// The round trip of the latest report block and how many blocks have come, given
    /// the wall clock `wall` at the monotonic `now`; `None` before the first block, or
    /// while the peer has had no sender report from us.
    pub fn latest_rtt(&self, wall: SystemTime, now: Instant) -> Option<(Duration, u32)> {
        let (timing, count) = (*locked(&self.timing))?;
        let arrival = wall
            .checked_sub(now.saturating_duration_since(timing.arrival))?
            .duration_since(UNIX_EPOCH)
            .ok()?;
        round_trip(timing.lsr, timing.dlsr, ntp_middle(arrival)).map(|rtt| (rtt, count))
    }

    fn record_timing(&self, block: &ReceptionReport, arrival: Instant) {
        let mut timing = locked(&self.timing);
        let count = timing.map_or(0, |(_, count)| count).wrapping_add(1);
        *timing = Some((
            BlockTiming {
                lsr: block.last_sender_report,
                dlsr: block.delay,
                arrival,
            },
            count,
        ));
    }

    /// Packets the peer's sender reports say it sent since they began (all its streams).
    pub fn peer_sent(&self) -> u64 {
        locked(&self.peer_sent).1
    }

    /// How many report blocks about our stream said that more of it had arrived.
    pub fn acknowledgements(&self) -> u64 {
        locked(&self.acknowledged).1
    }

    fn record_acknowledged(&self, block: &ReceptionReport) {
        let mut acknowledged = locked(&self.acknowledged);
        let (highest, count) = &mut *acknowledged;
        // Extended sequence numbers only grow; one more than 2^31 behind is a wrap.
        let newer = highest.is_none_or(|before| {
            let ahead = block.last_sequence_number.wrapping_sub(before);
            ahead != 0 && ahead < 1 << 31
        });
        if newer {
            *highest = Some(block.last_sequence_number);
            *count += 1;
        }
    }

    fn record_sender(&self, report: &SenderReport) {
        let mut peer_sent = locked(&self.peer_sent);
        let (counts, total) = &mut *peer_sent;
        // A map of the peer's SSRCs; a flood of forged ones is bounded by SRTCP's
        // authentication, and the map by this cap.
        if counts.len() >= 64 && !counts.contains_key(&report.ssrc) {
            return;
        }
        let before = counts.insert(report.ssrc, report.packet_count);
        let increase = before.map_or(report.packet_count, |before| {
            report.packet_count.wrapping_sub(before)
        });
        // A count that went backwards (wrapped past 2^31 the wrong way) adds nothing.
        if increase < 1 << 31 {
            *total += u64::from(increase);
        }
    }

    fn record(&self, block: &ReceptionReport) {
        let count = (self.latest.load(Ordering::Relaxed) >> 8).wrapping_add(1) & 0x00ff_ffff;
        self.latest.store(
            count << 8 | u32::from(block.fraction_lost),
            Ordering::Relaxed,
        );
    }
}

/// The sender's side of the feedback loop, once a second: what the peer reported since the
/// last tick goes to the rate controller, and its decision to the capture thread and the
/// RTP sender. One-to-one calls and group calls (whose peer is the SFU, reporting on the
/// uplink) share it.
pub struct SendFeedback {
    /// The controller.
    pub rate: RateController,
    reported: Arc<ReportedLoss>,
    estimate_bps: Arc<AtomicU64>,
    reports_seen: u32,
    rtts_seen: u32,
}

/// One tick's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// What the controller decided (already applied).
    pub decision: RateDecision,
    /// The latest round trip, if one is known.
    pub rtt: Option<Duration>,
    /// The latest reported loss, 0..1, if any report came.
    pub reported_loss: Option<f64>,
}

impl SendFeedback {
    /// The loop around `rate`, fed from `reported` and the bandwidth estimate.
    pub fn new(
        rate: RateController,
        reported: Arc<ReportedLoss>,
        estimate_bps: Arc<AtomicU64>,
    ) -> Self {
        SendFeedback {
            rate,
            reported,
            estimate_bps,
            reports_seen: 0,
            rtts_seen: 0,
        }
    }

    /// Before the first packet goes out: a call with RED starts with copies on (see
    /// `RateController::set_red_available`), so that the receiver's buffer plans for
    /// them from its first packet instead of growing in the middle of speech.
    pub fn start(&mut self, red_available: bool, control: &EncoderControl) {
        self.rate.set_red_available(red_available);
        control
            .red_depth
            .store(self.rate.red_depth(), Ordering::Relaxed);
    }

    /// One tick at `now`; `red_available` says whether the peer takes RED. The decision is
    /// stored in `control`.
    pub fn tick(&mut self, now: Instant, red_available: bool, control: &EncoderControl) -> Tick {
        // The peer's latest report about our stream; NaN (no news) when none came since the
        // last tick, so the smoothed loss is not pulled toward a stale value.
        let latest = self.reported.latest();
        let fraction_lost = match latest {
            Some((fraction, count)) if count != self.reports_seen => {
                self.reports_seen = count;
                fraction
            }
            _ => f64::NAN,
        };
        let rtt = self.reported.latest_rtt(SystemTime::now(), now);
        if let Some((rtt, count)) = rtt
            && count != self.rtts_seen
        {
            self.rtts_seen = count;
            self.rate.on_rtt(now, rtt);
        }
        self.rate.set_red_available(red_available);
        let estimate = self.estimate_bps.load(Ordering::Relaxed);
        let decision = self
            .rate
            .on_report(now, fraction_lost, (estimate > 0).then_some(estimate));
        control.apply(&decision);
        Tick {
            decision,
            rtt: rtt.map(|(rtt, _)| rtt),
            reported_loss: latest.map(|(fraction, _)| fraction),
        }
    }
}

/// The interceptor (see the module documentation): records the report blocks about
/// `ssrc` (our audio stream) in `loss`, and what the peer's sender reports say it sent.
pub fn report_tap(ssrc: u32, loss: Arc<ReportedLoss>) -> RtcpTap<impl OnRtcp> {
    RtcpTap::new(
        move |packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant| {
            for packet in packets {
                let any = packet.as_any();
                let blocks = if let Some(sr) = any.downcast_ref::<SenderReport>() {
                    if sr.ssrc != ssrc {
                        loss.record_sender(sr);
                    }
                    &sr.reports
                } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                    &rr.reports
                } else {
                    continue;
                };
                for block in blocks.iter().filter(|b| b.ssrc == ssrc) {
                    loss.record(block);
                    loss.record_timing(block, now);
                    loss.record_acknowledged(block);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_block_that_moved_acknowledges_anything() {
        let shared = ReportedLoss::default();
        let block = |last_sequence_number| ReceptionReport {
            last_sequence_number,
            ..Default::default()
        };
        shared.record_acknowledged(&block(100));
        shared.record_acknowledged(&block(100));
        assert_eq!(shared.acknowledgements(), 1);
        shared.record_acknowledged(&block(150));
        // Older (reordered) and repeated blocks add nothing; across the wrap counts.
        shared.record_acknowledged(&block(120));
        assert_eq!(shared.acknowledgements(), 2);
        let shared = ReportedLoss::default();
        shared.record_acknowledged(&block(u32::MAX));
        shared.record_acknowledged(&block(3));
        assert_eq!(shared.acknowledgements(), 2);
    }

    #[test]
    fn what_the_peer_says_it_sent_adds_up_per_stream() {
        let shared = ReportedLoss::default();
        let report = |ssrc, packet_count| SenderReport {
            ssrc,
            packet_count,
            ..Default::default()
        };
        shared.record_sender(&report(1, 50));
        shared.record_sender(&report(2, 10));
        shared.record_sender(&report(1, 80));
        shared.record_sender(&report(1, 80));
        assert_eq!(shared.peer_sent(), 90);
    }

    #[test]
    fn round_trip_is_arrival_minus_lsr_minus_dlsr() {
        // RFC 3550 §6.4.1's example: A = 0xb710_8000 (46864.500 s), LSR = 0xb705_2000
        // (46853.125 s), DLSR = 0x0005_4000 (5.250 s): RTT = 6.125 s.
        let rtt = round_trip(0xb705_2000, 0x0005_4000, 0xb710_8000);
        assert_eq!(rtt, Some(Duration::from_micros(6_125_000)));
        // Across the 16-bit seconds wrap.
        let rtt = round_trip(0xffff_8000, 0x0000_4000, 0x0000_4000);
        assert_eq!(rtt, Some(Duration::from_millis(500)));
        // No sender report yet, or a DLSR larger than the time since: no round trip.
        assert_eq!(round_trip(0, 0, 0x1000), None);
        assert_eq!(round_trip(0x1000, 0x2000, 0x1800), None);
    }

    #[test]
    fn ntp_middle_bits() {
        // 1970-01-01 plus 1.5 s: NTP seconds 2208988801, fraction 0x8000.
        let middle = ntp_middle(Duration::from_millis(1500));
        assert_eq!(middle, (((2_208_988_801u64) << 16) as u32) | 0x8000);
    }

    #[test]
    fn the_round_trip_counts_from_the_blocks_arrival() {
        let shared = ReportedLoss::default();
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(shared.latest_rtt(wall, now), None);
        // Our sender report left at wall − 100 ms; the peer held it 20 ms; its block came
        // back at wall − 30 ms, read 30 ms later: a 50 ms round trip.
        let sent = ntp_middle(Duration::from_secs(1_000_000) - Duration::from_millis(100));
        let block = ReceptionReport {
            last_sender_report: sent,
            delay: 65_536 / 50,
            ..Default::default()
        };
        shared.record_timing(&block, now - Duration::from_millis(30));
        let (rtt, count) = shared.latest_rtt(wall, now).expect("a round trip");
        assert_eq!(count, 1);
        assert!(
            rtt.abs_diff(Duration::from_millis(50)) < Duration::from_millis(1),
            "{rtt:?}"
        );
    }
}
