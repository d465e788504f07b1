//! The send-side audio bitrate controller, sans-IO: receiver reports (fraction lost) and
//! bandwidth estimates go in with the time, an Opus bitrate and FEC loss percentage come
//! out. No clock, no tokio; the caller applies the decision to the
//! [`OpusEncoder`](super::codec::OpusEncoder).
//!
//! Policy, in the order it is applied on every report:
//! 1. Loss is smoothed (EWMA, weight [`LOSS_SMOOTHING`] per report, starting from 0), so
//!    one bad report does not count as "sustained".
//! 2. Is the path congested? Once round-trip times come in ([`RateController::on_rtt`]),
//!    congestion means a queue: the latest round trip is more than [`QUEUE_RTT`] over the
//!    lowest of the last [`RTT_WINDOW`]; or loss so heavy ([`HEAVY_LOSS`]) that it cannot
//!    be random. Lighter loss is taken as random loss, which a lower bitrate does not
//!    cure (it only starves the redundancy that does). Until round trips come (under
//!    heavy loss the first can take seconds), only heavy loss counts.
//! 3. Congested: multiply the bitrate by [`DECREASE_FACTOR`], at most once per
//!    [`DECREASE_INTERVAL`], and never go above the last bandwidth estimate minus the
//!    packet overhead ([`PACKET_OVERHEAD_BYTES`] per packet at the frame rate). The
//!    estimate counts only then: rtc's GCC mixes in a loss-based estimate that falls to
//!    its floor under a few percent of random loss.
//!    Not congested and smoothed loss below [`LOW_LOSS`]: add [`INCREASE_BPS_PER_SEC`]
//!    for the time since the previous report (at most [`MAX_INCREASE_INTERVAL`] of it)
//!    toward the maximum. Otherwise hold. Always within min..=max: the minimum wins over
//!    the estimate.
//! 4. Redundancy, when the peer takes RED (RFC 2198; [`RateController::set_red_available`]),
//!    the path is not congested and not narrow (frames at their configured length): each packet repeats the last [`MAX_RED_DEPTH`] frames
//!    above [`RED_LOSS`] smoothed loss, until it falls below half of that and no report
//!    has said anything was lost for [`RED_HOLD`]. RED carries whole frames, so the
//!    encoder's in-band FEC (LBRR, a coarse copy of one frame) is then off.
//! 5. The encoder's expected loss is always the smoothed loss in percent, rounded up,
//!    capped at [`MAX_LOSS_PERCENT`]: it sizes the FEC when FEC is on, and DRED's share
//!    (when the call enables DRED) whether or not it is.
//! 6. Frame duration, for narrow links: each packet's headers cost as much as 25 kbit/s
//!    of Opus at 20 ms frames, a third of that at 60 ms. When the path is congested and
//!    either the bandwidth estimate leaves the codec less than [`NARROW_ROOM_BPS`] at the
//!    configured frame or the bitrate is down at the minimum, frames become
//!    [`LONG_FRAME`] long and the floor drops to [`NARROW_MIN_BPS`]. They come back once
//!    the path is clear and the same bytes on the wire would give the codec
//!    [`RESTORE_ROOM_BPS`] at the configured frame (the switch keeps the wire rate).

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

/// A round trip this much over the recent lowest means a queue is building: congestion.
pub const QUEUE_RTT: Duration = Duration::from_millis(60);

/// How far back the lowest round trip is taken from (a network change may raise it for
/// good).
pub const RTT_WINDOW: Duration = Duration::from_secs(20);

/// Smoothed loss above which the path counts as congested even when round trips do not
/// grow. A full drop-tail queue loses most of what is sent without its delay showing in
/// the round trips the peer's reports give (measured: a 150 ms queue at 24 kbit/s, round
/// trips 17 ms up, 60 to 80 % lost), and RED's extra copies then make it worse.
pub const HEAVY_LOSS: f64 = 0.45;

/// Smoothed loss above which each packet repeats the previous [`MAX_RED_DEPTH`] frames
/// (RED); below half of it, RED stops. (Depth 1 was tried between 1 and 3 %: at 5 %
/// random loss it scored lower PESQ than depth 2 at 10 %, for a third less bandwidth.)
pub const RED_LOSS: f64 = 0.01;

/// Once on, RED stays on until no report has said anything was lost for this long: the
/// smoothed loss dips below the threshold between lucky reports on a lossy path, and each
/// time RED went off the next burst hit unprotected frames (5 % loss scored lower than
/// 10 %).
pub const RED_HOLD: Duration = Duration::from_secs(10);
/// How long after the first report the redundancy a call starts with is kept whatever
/// the reports say. The first report covers the call's first packets only: on the
/// report set at 5 % loss, half the calls' first reports said nothing was lost, RED went
/// off for 1-3 s at the start of the speech, and loss-5 scored below loss-10 (3.72
/// against 3.81). Three seconds of reports on a lossy path raise the smoothed loss over
/// [`RED_LOSS`]; a clean call sends its copies for about four seconds. (Held for
/// [`RED_HOLD`] instead, a 10 s clean call sent 95 kbit/s against 38.)
pub const RED_START_HOLD: Duration = Duration::from_secs(3);

/// The deepest redundancy the controller asks for.
pub const MAX_RED_DEPTH: u8 = 2;

/// The frame duration on narrow links (see the module documentation, step 6).
pub const LONG_FRAME: FrameDuration = FrameDuration::Ms60;

/// Below this much room for the codec at the configured frame (the bandwidth estimate
/// less the packet overhead), a congested path takes [`LONG_FRAME`]s.
pub const NARROW_ROOM_BPS: u64 = 24_000;

/// The lowest bitrate while frames are long: libopus's wideband speech holds up down to
/// about here, and a 24 kbit/s link leaves about 15 kbit/s of it at 60 ms frames.
pub const NARROW_MIN_BPS: u32 = 12_000;

/// Long frames end when the wire rate they use would give the codec this much at the
/// configured frame.
pub const RESTORE_ROOM_BPS: f64 = 32_000.0;

/// What the encoder should use from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Target bitrate in bit/s (for [`OpusEncoder::set_bitrate`](super::codec::OpusEncoder::set_bitrate)).
    pub bitrate_bps: u32,
    /// Expected loss in percent (for [`OpusEncoder::set_loss_percent`](super::codec::OpusEncoder::set_loss_percent)).
    pub loss_percent: u8,
    /// Whether the encoder's in-band FEC is on (off while RED repeats whole frames).
    pub fec: bool,
    /// Earlier frames each packet repeats (RED, RFC 2198); 0: plain Opus.
    pub red_depth: u8,
    /// How much audio each packet carries.
    pub frame: FrameDuration,
}

/// The controller. See the module documentation for the policy.
#[derive(Debug, Clone)]
pub struct RateController {
    min_bps: u32,
    max_bps: u32,
    bitrate_bps: f64,
    /// The configured frame duration, and the one in force (longer on narrow links).
    base_frame: FrameDuration,
    frame: FrameDuration,
    overhead_bytes: u32,
    smoothed_loss: f64,
    /// The last bandwidth estimate, in bit/s.
    bandwidth_bps: Option<u64>,
    last_report: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Recent round trips (when measured, the value), oldest first.
    rtts: std::collections::VecDeque<(Instant, Duration)>,
    red_available: bool,
    red_depth: u8,
    /// Whether any report has said how much was lost.
    loss_reported: bool,
    /// When a report last said something was lost.
    last_loss: Option<Instant>,
    /// Until when the starting redundancy is kept ([`RED_START_HOLD`]).
    start_hold_until: Option<Instant>,
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
            base_frame: FrameDuration::default(),
            frame: FrameDuration::default(),
            overhead_bytes: PACKET_OVERHEAD_BYTES,
            smoothed_loss: 0.0,
            bandwidth_bps: None,
            last_report: None,
            last_decrease: None,
            rtts: std::collections::VecDeque::new(),
            red_available: false,
            red_depth: 0,
            loss_reported: false,
            last_loss: None,
            start_hold_until: None,
        }
    }

    /// Whether the peer takes RED (default: no, and the depth stays 0). A call with RED
    /// starts repeating two frames: the start of a call is worth protecting, and clean
    /// reports turn it off only [`RED_START_HOLD`] after the first report, which covers
    /// just the first packets.
    pub fn set_red_available(&mut self, available: bool) {
        if available && !self.red_available && self.last_report.is_none() {
            self.red_depth = MAX_RED_DEPTH;
        }
        self.red_available = available;
        if !available {
            self.red_depth = 0;
        }
    }

    /// The redundancy in force now (also between reports).
    pub fn red_depth(&self) -> u8 {
        self.red_depth
    }

    /// Takes one round-trip time measured at `now` (from an RTCP report block's LSR and
    /// DLSR). From the first one on, congestion is judged by queueing delay.
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        self.rtts.push_back((now, rtt));
        while self
            .rtts
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RTT_WINDOW)
            && self.rtts.len() > 1
        {
            self.rtts.pop_front();
        }
    }

    /// Whether the path looks congested now (see the module documentation).
    pub fn congested(&self) -> bool {
        let queue = self.rtts.back().is_some_and(|(_, latest)| {
            let lowest = self
                .rtts
                .iter()
                .map(|(_, rtt)| *rtt)
                .min()
                .unwrap_or(*latest);
            latest.saturating_sub(lowest) > QUEUE_RTT
        });
        queue || self.smoothed_loss > HEAVY_LOSS
    }

    /// Sets the frame duration the encoder is configured with (it decides the packet
    /// rate, hence the overhead); narrow links may lengthen it for a while. Applies from
    /// the next report.
    pub fn set_frame(&mut self, frame: FrameDuration) {
        self.base_frame = frame;
        self.frame = frame;
    }

    /// The frame duration in force now.
    pub fn frame(&self) -> FrameDuration {
        self.frame
    }

    /// Sets the per-packet overhead in bytes (default [`PACKET_OVERHEAD_BYTES`]).
    pub fn set_overhead_bytes(&mut self, bytes: u32) {
        self.overhead_bytes = bytes;
    }

    /// Bits per second the packet overhead costs at the current frame rate.
    pub fn overhead_bps(&self) -> u64 {
        self.overhead_bps_at(self.frame)
    }

    fn overhead_bps_at(&self, frame: FrameDuration) -> u64 {
        (u64::from(self.overhead_bytes) * 8 * 1000).div_ceil(u64::from(frame.millis()))
    }

    /// Step 6 of the policy: long frames on a narrow, congested path; back when clear.
    fn choose_frame(&mut self, congested: bool) {
        let long = self.frame != self.base_frame;
        if !long && congested && LONG_FRAME.millis() > self.base_frame.millis() {
            let narrow = self.bandwidth_bps.is_some_and(|bandwidth| {
                bandwidth.saturating_sub(self.overhead_bps_at(self.base_frame)) < NARROW_ROOM_BPS
            });
            if narrow || self.bitrate_bps <= f64::from(self.min_bps) {
                self.frame = LONG_FRAME;
            }
        } else if long && !congested {
            let saved = self.overhead_bps_at(self.base_frame) as f64 - self.overhead_bps() as f64;
            let at_base = self.bitrate_bps - saved;
            if at_base >= RESTORE_ROOM_BPS {
                self.frame = self.base_frame;
                self.bitrate_bps = at_base;
            }
        }
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
        let news = !fraction_lost.is_nan();
        if news {
            if !self.loss_reported && self.red_depth > 0 {
                self.start_hold_until = Some(now + RED_START_HOLD);
            }
            self.loss_reported = true;
            if fraction_lost > 0.0 {
                self.last_loss = Some(now);
            }
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

        let congested = self.congested();
        if congested {
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

        self.choose_frame(congested);
        if let Some(bandwidth) = self.bandwidth_bps
            && congested
        {
            let room = bandwidth.saturating_sub(self.overhead_bps());
            self.bitrate_bps = self.bitrate_bps.min(room as f64);
        }
        let floor = if self.frame == self.base_frame {
            self.min_bps
        } else {
            self.min_bps.min(NARROW_MIN_BPS)
        };
        self.bitrate_bps = self
            .bitrate_bps
            .clamp(f64::from(floor), f64::from(self.max_bps.max(floor)));

        // On a narrow link (long frames) RED's copies would not fit either.
        self.red_depth = if !self.red_available || congested || self.frame != self.base_frame {
            0
        } else if !self.loss_reported {
            // No word on loss yet: keep the starting depth.
            self.red_depth
        } else {
            let on = self.red_depth > 0;
            let threshold = if on { RED_LOSS / 2.0 } else { RED_LOSS };
            let held = on
                && (self
                    .last_loss
                    .is_some_and(|at| now.saturating_duration_since(at) < RED_HOLD)
                    || self.start_hold_until.is_some_and(|until| now < until));
            if self.smoothed_loss > threshold || held {
                MAX_RED_DEPTH
            } else {
                0
            }
        };
        RateDecision {
            bitrate_bps: self.bitrate_bps(),
            loss_percent: self.loss_percent(),
            fec: self.red_depth == 0,
            red_depth: self.red_depth,
            frame: self.frame,
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
