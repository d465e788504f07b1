//! The send-side audio bitrate controller, sans-IO: receiver reports (fraction lost) and
//! bandwidth estimates go in with the time, an Opus bitrate and FEC loss percentage come
//! out. No clock, no tokio; the caller applies the decision to the
//! [`OpusEncoder`](super::codec::OpusEncoder).
//!
//! Policy, in the order it is applied on every report:
//! 1. Loss is smoothed (EWMA, weight [`LOSS_SMOOTHING`] per report, starting from 0), so
//!    one bad report does not count as "sustained".
//! 2. Smoothed loss above [`HIGH_LOSS`]: multiply the bitrate by [`DECREASE_FACTOR`], at
//!    most once per [`DECREASE_INTERVAL`]. Below [`LOW_LOSS`]: add
//!    [`INCREASE_BPS_PER_SEC`] for the time since the previous report (at most
//!    [`MAX_INCREASE_INTERVAL`] of it) toward the maximum. In between: hold.
//! 3. Never above the last bandwidth estimate minus the packet overhead
//!    ([`PACKET_OVERHEAD_BYTES`] per packet at the frame rate), and always within
//!    min..=max. The minimum wins over the estimate: libopus's FEC needs bits, and a link
//!    that cannot carry the minimum is better served by longer frames (less overhead).
//! 4. The encoder's expected loss is the smoothed loss in percent, rounded up, capped at
//!    [`MAX_LOSS_PERCENT`].

use std::time::{Duration, Instant};

use super::codec::FrameDuration;

/// Bytes each audio packet costs on the wire besides the Opus payload: RTP header (12),
/// RTP header-extension block header (4), SRTP authentication tag (10, HMAC-SHA1-80),
/// header-extension elements (8: audio level and transport-wide sequence number, padded),
/// IPv4 (20) and UDP (8). SFrame's header and tag come on top: calls with end-to-end
/// encryption add them with [`RateController::set_overhead_bytes`]. IPv6 adds 20.
pub const PACKET_OVERHEAD_BYTES: u32 = 12 + 4 + 10 + 8 + 20 + 8;

/// Weight of a new report in the smoothed loss (0..1).
pub const LOSS_SMOOTHING: f64 = 0.3;

/// Smoothed loss above which the bitrate steps down.
pub const HIGH_LOSS: f64 = 0.10;

/// Smoothed loss below which the bitrate creeps back up.
pub const LOW_LOSS: f64 = 0.02;

/// Factor applied to the bitrate per step down.
pub const DECREASE_FACTOR: f64 = 0.85;

/// Shortest time between two steps down, however often reports come.
pub const DECREASE_INTERVAL: Duration = Duration::from_secs(1);

/// How fast the bitrate recovers under low loss.
pub const INCREASE_BPS_PER_SEC: f64 = 2_000.0;

/// The most time one report may count for when recovering (after a long gap without
/// reports the bitrate does not jump).
pub const MAX_INCREASE_INTERVAL: Duration = Duration::from_secs(5);

/// Cap on the loss percentage handed to the encoder: beyond it more FEC only starves the
/// primary frames.
pub const MAX_LOSS_PERCENT: u8 = 30;

/// What the encoder should use from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Target bitrate in bit/s (for [`OpusEncoder::set_bitrate`](super::codec::OpusEncoder::set_bitrate)).
    pub bitrate_bps: u32,
    /// Expected loss in percent (for [`OpusEncoder::set_loss_percent`](super::codec::OpusEncoder::set_loss_percent)).
    pub loss_percent: u8,
}

/// The controller. See the module documentation for the policy.
#[derive(Debug, Clone)]
pub struct RateController {
    min_bps: u32,
    max_bps: u32,
    bitrate_bps: f64,
    frame: FrameDuration,
    overhead_bytes: u32,
    smoothed_loss: f64,
    /// The last bandwidth estimate, in bit/s.
    bandwidth_bps: Option<u64>,
    last_report: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl RateController {
    /// A controller that starts at `start_bps` and stays within `min_bps..=max_bps`
    /// (`max_bps` is raised to `min_bps` if lower; `start_bps` is clamped). Assumes 20 ms
    /// frames until told otherwise. The encoder clamps to
    /// [`MIN_BITRATE_BPS`](super::codec::MIN_BITRATE_BPS), so a lower `min_bps` is moot.
    pub fn new(min_bps: u32, max_bps: u32, start_bps: u32) -> Self {
        let max_bps = max_bps.max(min_bps);
        RateController {
            min_bps,
            max_bps,
            bitrate_bps: f64::from(start_bps.clamp(min_bps, max_bps)),
            frame: FrameDuration::default(),
            overhead_bytes: PACKET_OVERHEAD_BYTES,
            smoothed_loss: 0.0,
            bandwidth_bps: None,
            last_report: None,
            last_decrease: None,
        }
    }

    /// Sets the frame duration the encoder uses (it decides the packet rate, hence the
    /// overhead). Applies from the next report.
    pub fn set_frame(&mut self, frame: FrameDuration) {
        self.frame = frame;
    }

    /// Sets the per-packet overhead in bytes (default [`PACKET_OVERHEAD_BYTES`]).
    pub fn set_overhead_bytes(&mut self, bytes: u32) {
        self.overhead_bytes = bytes;
    }

    /// Bits per second the packet overhead costs at the current frame rate.
    pub fn overhead_bps(&self) -> u64 {
        (u64::from(self.overhead_bytes) * 8 * 1000).div_ceil(u64::from(self.frame.millis()))
    }

    /// The current target bitrate.
    pub fn bitrate_bps(&self) -> u32 {
        self.bitrate_bps.round() as u32
    }

    /// The smoothed loss fraction (0..1).
    pub fn smoothed_loss(&self) -> f64 {
        self.smoothed_loss
    }

    /// Takes one receiver report that arrived at `now`: the fraction of packets lost
    /// since the previous one (0..1; RTCP's 8-bit value divided by 256) and, when the
    /// transport has one, its bandwidth estimate for this stream in bit/s. A fraction
    /// that is not a number leaves the loss estimate as it was.
    pub fn on_report(
        &mut self,
        now: Instant,
        fraction_lost: f64,
        bandwidth_estimate_bps: Option<u64>,
    ) -> RateDecision {
        if !fraction_lost.is_nan() {
            let loss = fraction_lost.clamp(0.0, 1.0);
            self.smoothed_loss += LOSS_SMOOTHING * (loss - self.smoothed_loss);
        }
        if bandwidth_estimate_bps.is_some() {
            self.bandwidth_bps = bandwidth_estimate_bps;
        }
        let elapsed = self
            .last_report
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last))
            .min(MAX_INCREASE_INTERVAL);
        self.last_report = Some(now);

        if self.smoothed_loss > HIGH_LOSS {
            let due = self
                .last_decrease
                .is_none_or(|last| now.saturating_duration_since(last) >= DECREASE_INTERVAL);
            if due {
                self.bitrate_bps *= DECREASE_FACTOR;
                self.last_decrease = Some(now);
            }
        } else if self.smoothed_loss < LOW_LOSS {
            self.bitrate_bps += INCREASE_BPS_PER_SEC * elapsed.as_secs_f64();
        }

        if let Some(bandwidth) = self.bandwidth_bps {
            let room = bandwidth.saturating_sub(self.overhead_bps());
            self.bitrate_bps = self.bitrate_bps.min(room as f64);
        }
        self.bitrate_bps = self
            .bitrate_bps
            .clamp(f64::from(self.min_bps), f64::from(self.max_bps));

        RateDecision {
            bitrate_bps: self.bitrate_bps(),
            loss_percent: self.loss_percent(),
        }
    }

    /// The smoothed loss in percent, rounded up and capped; under half a percent is 0, so
    /// the tail of an old loss burst does not keep FEC bits reserved forever.
    fn loss_percent(&self) -> u8 {
        let percent = self.smoothed_loss * 100.0;
        if percent < 0.5 {
            0
        } else {
            // Allow for float noise: 0.3 × 0.1 must give 3 %, not 4 %.
            (percent - 1e-6).ceil().min(f64::from(MAX_LOSS_PERCENT)) as u8
        }
    }
}

#[cfg(test)]
#[path = "rate_tests.rs"]
mod tests;
