//! Keeps a lost feedback packet from reading as lost media. rtc's send history (0.21.1,
//! `History::take_reports`) reports every packet older than the newest one acknowledged
//! and not yet reported as lost: when a transport-cc feedback packet is itself lost, the
//! 100 ms of packets it covered come out as lost in the next batch. On a path with 5 %
//! loss each way that is a run of about 20 "losses" in one feedback in twenty, and GCC's
//! loss-based half averaged about 20 % and cut the estimate of a group-call publisher
//! until its top layer stopped (`RUST_LOG=sotto_engine::call::peer=trace sotto-bench run
//! loss-5.toml --group 3 --video`: batches of 38-49 packets whose first 20 were "lost",
//! while the SFU saw every one of them arrive in order). libwebrtc counts only packets a
//! feedback names as not received.
//!
//! [`LostFeedbackFilter`] wraps an estimator and leaves out of each batch the run of
//! unacknowledged packets it starts with, when that run is at least [`MIN_RUN`] long:
//! random loss almost never loses that many consecutive packets (5 at 5 % loss: about
//! one run in three million), and a drop-tail queue drops packets between the ones it
//! passes. What the feedback itself says was lost still counts.

use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, PacketReport};

/// The shortest leading run of unacknowledged packets taken for a lost feedback packet.
pub const MIN_RUN: usize = 5;

/// An estimator whose input leaves out what only a lost feedback packet made look lost.
pub struct LostFeedbackFilter<E> {
    inner: E,
    /// Packets left out so far.
    left_out: u64,
}

impl<E> LostFeedbackFilter<E> {
    /// Wraps `inner`.
    pub fn new(inner: E) -> Self {
        LostFeedbackFilter { inner, left_out: 0 }
    }

    /// The wrapped estimator.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Packets left out so far.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }
}

/// How many of `reports` (in send order) to leave out: the leading run of packets not
/// acknowledged, when it is [`MIN_RUN`] or longer and something after it was.
pub fn unreported_run(reports: &[PacketReport]) -> usize {
    let run = reports.iter().take_while(|report| !report.arrived).count();
    if run >= MIN_RUN && run < reports.len() {
        run
    } else {
        0
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for LostFeedbackFilter<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let skip = unreported_run(reports);
        self.left_out += skip as u64;
        self.inner.on_reports(now, &reports[skip..]);
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
    use std::time::Duration;

    fn batch(arrived: &[bool]) -> Vec<PacketReport> {
        let t0 = Instant::now();
        arrived
            .iter()
            .enumerate()
            .map(|(i, &arrived)| PacketReport {
                ssrc: 1,
                id: i as u64,
                rtp_sequence_number: i as u16,
                is_twcc: true,
                twcc_sequence_number: i as u16,
                size: 1000,
                arrived,
                departure: t0 + Duration::from_millis(i as u64 * 5),
                arrival: arrived.then(|| Duration::from_millis(i as u64 * 5 + 20)),
                ecn: Ecn::NotEct,
            })
            .collect()
    }

    #[test]
    fn only_a_long_leading_run_is_left_out() {
        // What a lost feedback packet leaves: 20 unacknowledged, then a feedback's worth.
        let mut arrived = vec![false; 20];
        arrived.extend([true, true, false, true, true]);
        assert_eq!(unreported_run(&batch(&arrived)), 20);
        // Random losses, at the start or not: counted.
        assert_eq!(
            unreported_run(&batch(&[false, false, true, true, false])),
            0
        );
        assert_eq!(
            unreported_run(&batch(&[true, false, false, false, false, false, false])),
            0
        );
        // Nothing acknowledged at all (an outage): counted.
        assert_eq!(unreported_run(&batch(&[false; 10])), 0);
    }

    /// Counts what it is given.
    #[derive(Default)]
    struct Counting {
        packets: usize,
        lost: usize,
    }

    impl BandwidthEstimator for Counting {
        fn on_reports(&mut self, _now: Instant, reports: &[PacketReport]) {
            self.packets += reports.len();
            self.lost += reports.iter().filter(|r| !r.arrived).count();
        }

        fn target_bitrate(&self) -> f64 {
            0.0
        }
    }

    #[test]
    fn the_wrapped_estimator_sees_the_rest() {
        let mut filter = LostFeedbackFilter::new(Counting::default());
        let mut arrived = vec![false; 8];
        arrived.extend([true, false, true]);
        filter.on_reports(Instant::now(), &batch(&arrived));
        assert_eq!((filter.inner().packets, filter.inner().lost), (3, 1));
        assert_eq!(filter.left_out(), 8);
    }
}
