//! Simulcast, sans-IO: which layer a RID names, when a layer may be switched to (a
//! keyframe, known from a header extension: the payload may be SFrame ciphertext), how
//! fast each layer runs, and which layer fits a subscriber's bandwidth.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The header extension that tells frames and keyframes apart without the payload (the AV1
/// RTP specification's dependency descriptor; Chrome sends it for VP8 too).
pub const DEPENDENCY_DESCRIPTOR_URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// A layer's rank, 0 the lowest. Browsers' conventional RIDs are `q`/`h`/`f` (quarter, half,
/// full) or `l`/`m`/`h`, or digits; anything else ranks as full.
pub fn rid_quality(rid: &str) -> u8 {
    match rid {
        "q" | "l" | "0" | "low" => 0,
        "h" | "m" | "1" | "mid" => 1,
        _ => 2,
    }
}

/// Whether a dependency descriptor opens a keyframe: the first packet of a frame that
/// carries a template dependency structure (sent with keyframes, where decoding can start).
/// Reads the mandatory fields and the first flag of the extended ones.
pub fn dd_keyframe_start(descriptor: &[u8]) -> bool {
    let (Some(first), Some(extended)) = (descriptor.first(), descriptor.get(3)) else {
        return false;
    };
    let start_of_frame = first & 0x80 != 0;
    let structure_present = extended & 0x80 != 0;
    start_of_frame && structure_present
}

/// A stream's bitrate over the last second.
#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    samples: VecDeque<(Instant, u32)>,
    bytes: u64,
}

/// The window [`RateMeter`] averages over.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// A video layer with no packet for this long has stopped (its publisher paused it, or
/// lost its uplink). Frames come every 33-200 ms at 30-5 fps.
pub const LAYER_STALL: Duration = Duration::from_millis(400);

/// A subscriber whose layer sent nothing for this long moves to a lower layer at that
/// layer's next keyframe, before the layer counts as stalled: a publisher that drops its
/// top layer for lack of bandwidth sends a keyframe on the next one a little later (the
/// engine 100 ms later), and waiting for [`LAYER_STALL`] and a keyframe request froze the
/// video for about 650 ms (measured: `sotto-bench run loss-5.toml --group 3 --video`). Two
/// frame intervals at 30 fps: at lower frame rates a keyframe that happens to come on a
/// lower layer during an ordinary pause moves the subscriber down early, and the
/// allocation brings it back up.
pub const LAYER_SILENT: Duration = Duration::from_millis(70);

impl RateMeter {
    /// `bytes` arrived `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.samples.push_back((now, bytes));
        self.bytes += u64::from(bytes);
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while let Some((at, bytes)) = self.samples.front().copied() {
            if now.saturating_duration_since(at) <= RATE_WINDOW {
                break;
            }
            self.samples.pop_front();
            self.bytes -= u64::from(bytes);
        }
    }

    /// Bits per second over the window ending `now`.
    pub fn bps(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.bytes * 8 * 1000 / RATE_WINDOW.as_millis() as u64
    }

    /// When the last packet came, if one came within the window.
    pub fn last_at(&self) -> Option<Instant> {
        self.samples.back().map(|(at, _)| *at)
    }

    /// Like [`RateMeter::bps`], but 0 once nothing came for [`LAYER_STALL`]: a layer its
    /// publisher stopped is gone now, not when the window has emptied (a second in which
    /// its subscribers would see nothing).
    pub fn live_bps(&mut self, now: Instant) -> u64 {
        match self.samples.back() {
            Some((at, _)) if now.saturating_duration_since(*at) <= LAYER_STALL => self.bps(now),
            _ => 0,
        }
    }
}

/// How long a subscriber's budget stays below the rate its link last failed to carry.
pub const CEILING_HOLD: Duration = Duration::from_secs(8);
/// The longest hold, after repeated failed climbs.
pub const CEILING_HOLD_MAX: Duration = Duration::from_secs(64);
/// A congestion this soon after a hold ended means the climb failed: the next hold doubles.
/// A climb that lasts longer resets the hold to [`CEILING_HOLD`].
pub const CLIMB_TRIAL: Duration = Duration::from_secs(10);

/// Keeps a subscriber from climbing straight back into the rate its link just failed to
/// carry. rtc's GCC (0.21.1) raises its estimate without bound while a lower layer flows:
/// unlike libwebrtc's AIMD it does not cap an increase near what was delivered, and the SFU
/// has no probing yet. Without this, a subscriber on a 700 kbit/s link went back to the top
/// layer every 7 s and lost about 2 s of video to the queue each time. With it, the rate
/// that failed is a ceiling for [`CEILING_HOLD`], doubling (to [`CEILING_HOLD_MAX`]) each
/// time the climb past it fails again within [`CLIMB_TRIAL`].
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// The allocated rate that failed, and until when the budget stays below it.
    limit: Option<(u64, Instant)>,
    hold: Duration,
    /// When the last hold ended (a climb past it may follow).
    trial_since: Option<Instant>,
}

impl Default for Ceiling {
    fn default() -> Ceiling {
        Ceiling {
            limit: None,
            hold: CEILING_HOLD,
            trial_since: None,
        }
    }
}

impl Ceiling {
    /// The budget to allocate from, given the subscriber's `estimate_bps` and what is
    /// being sent to it now (`allocated_bps`). An estimate below what is sent is a
    /// congestion: that rate becomes the ceiling, and so does a lower one that fails during
    /// the hold.
    pub fn budget(&mut self, now: Instant, estimate_bps: u64, allocated_bps: u64) -> u64 {
        if let Some((_, until)) = self.limit
            && now >= until
        {
            self.limit = None;
            self.trial_since = Some(now);
        }
        if let Some(since) = self.trial_since
            && now.saturating_duration_since(since) > CLIMB_TRIAL
        {
            self.trial_since = None;
            self.hold = CEILING_HOLD;
        }
        if allocated_bps > 0 && estimate_bps < allocated_bps {
            match self.limit {
                None => {
                    if self.trial_since.take().is_some() {
                        self.hold = (self.hold * 2).min(CEILING_HOLD_MAX);
                    }
                    self.limit = Some((allocated_bps, now + self.hold));
                }
                // A lower rate failed too: it is the ceiling now, for a whole hold.
                Some((limit, _)) if allocated_bps < limit => {
                    self.limit = Some((allocated_bps, now + self.hold));
                }
                Some(_) => {}
            }
        }
        match self.limit {
            // Just below the rate that failed, so the same allocation does not fit.
            Some((limit, _)) => estimate_bps.min(limit - limit / 20),
            None => estimate_bps,
        }
    }
}

/// Above this fraction of video lost, a subscriber's budget comes down at once.
pub const HIGH_LOSS: f64 = 0.10;
/// Fewer video packets than this in a period say nothing about loss; they carry over. A
/// small sample reads a 5 % link as heavy loss: with 10 packets (a quarter second of the
/// middle layer) more than 10 % are lost in one period in twelve, which dropped the
/// subscribers of a uniformly 5 % lossy link to the lowest layer every few seconds. With
/// 50, in one period in twenty-six.
const LOSS_MIN_SAMPLE: u64 = 50;
/// After a subscriber's layers go down, losses are still reported for what was sent
/// before: they say nothing about the new rate for this long.
pub const LOSS_GRACE: Duration = Duration::from_secs(1);

/// The video a subscriber reports lost (distinct sequence numbers it NACKs) against what it
/// was sent, period by period. rtc's GCC takes over a second to act on heavy loss after a
/// good spell: its loss-based target grows 5% every 200 ms while loss is low (to 20 Mbit/s
/// here) and must shrink from there. The SFU reacts from the rate it actually sends.
/// Only NACKs for what was sent in this period or the last count, each once: a subscriber
/// keeps asking for packets whose retransmission was dropped as too old. A NACK for a
/// sequence number that was never sent to the subscriber (a gap the publisher's uplink
/// left, kept as a gap by the rewrite) is upstream loss, not this link's; so is a NACK for
/// a packet sent late into such a gap once the SFU recovered it (the subscriber's NACKs
/// for it cross it on the way). Counting them pushed every subscriber of a publisher on a
/// 5 % lossy uplink to the lowest layer (measured 13-25 % "loss" on a 5 % link).
#[derive(Debug, Default, Clone)]
pub struct LossMeter {
    sent: u64,
    /// What was sent in order in this period, and in the last.
    sent_now: HashSet<(u32, u16)>,
    sent_before: HashSet<(u32, u16)>,
    /// Per stream: the newest sequence number sent.
    newest: HashMap<u32, u16>,
    nacked: HashSet<(u32, u16)>,
    /// The last period's NACKs: a NACK repeated across periods counts once.
    previous: HashSet<(u32, u16)>,
}

impl LossMeter {
    /// Video packet `seq` was sent on stream `ssrc`.
    pub fn sent(&mut self, ssrc: u32, seq: u16) {
        let newest = self.newest.entry(ssrc).or_insert(seq);
        let ahead = seq.wrapping_sub(*newest);
        if ahead >= 0x8000 {
            // Behind the newest: it fills a gap left upstream, and NACKs for it say nothing
            // about this link.
            return;
        }
        *newest = seq;
        self.sent += 1;
        self.sent_now.insert((ssrc, seq));
    }

    /// The subscriber NACKed `seq` of its stream `ssrc`.
    pub fn nacked(&mut self, ssrc: u32, seq: u16) {
        let key = (ssrc, seq);
        let recent = self.sent_now.contains(&key) || self.sent_before.contains(&key);
        if recent && !self.previous.contains(&key) {
            self.nacked.insert(key);
        }
    }

    /// The fraction lost since the last period that said anything, and starts a new one;
    /// `None` while too few packets were sent.
    pub fn take(&mut self) -> Option<f64> {
        if self.sent < LOSS_MIN_SAMPLE {
            return None;
        }
        let lost = (self.nacked.len() as f64 / self.sent as f64).min(1.0);
        self.sent = 0;
        self.previous = std::mem::take(&mut self.nacked);
        self.sent_before = std::mem::take(&mut self.sent_now);
        Some(lost)
    }
}

/// What heavy loss leaves of the rate being sent (`allocated_bps`): GCC's loss rule,
/// applied to what is sent rather than to an estimate that may have run far above it.
pub fn loss_bound(allocated_bps: u64, lost: Option<f64>) -> Option<u64> {
    let lost = lost.filter(|l| *l > HIGH_LOSS)?;
    Some((allocated_bps as f64 * (1.0 - 0.5 * lost)) as u64)
}

/// The layer (by quality) to forward: the best at or below `max_quality` whose bitrate fits
/// `budget_bps`, else the lowest. Going up needs 15% headroom over the layer's rate, so a
/// budget hovering at a layer's rate does not flap between two layers. `layers` holds each
/// layer's quality and current bitrate; a layer that sends nothing (0 bit/s, e.g. paused by
/// its publisher) is never chosen while another is live.
pub fn choose_layer(
    layers: &[(u8, u64)],
    budget_bps: u64,
    max_quality: u8,
    current: Option<u8>,
) -> Option<u8> {
    let live: Vec<(u8, u64)> = layers.iter().copied().filter(|(_, bps)| *bps > 0).collect();
    let candidates = if live.is_empty() {
        layers.to_vec()
    } else {
        live
    };
    let fits = |quality: u8, bps: u64| {
        let needed = if current.is_some_and(|c| quality > c) {
            bps + bps * 15 / 100
        } else {
            bps
        };
        quality <= max_quality && needed <= budget_bps
    };
    candidates
        .iter()
        .filter(|(quality, bps)| fits(*quality, *bps))
        .map(|(quality, _)| *quality)
        .max()
        .or_else(|| candidates.iter().map(|(quality, _)| *quality).min())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_distinct_recent_nacks_against_packets_sent() {
        let mut meter = LossMeter::default();
        for seq in 0..20 {
            meter.sent(7, seq);
        }
        // Two losses in 20 packets happen one period in eight on a 5 % link.
        meter.nacked(7, 1);
        meter.nacked(7, 2);
        assert_eq!(meter.take(), None, "too few packets to say");
        for seq in 20..50 {
            meter.sent(7, seq);
        }
        for seq in [3, 3, 21] {
            meter.nacked(7, seq);
        }
        // Never sent (a gap left upstream, or not yet), or another stream: not counted.
        meter.nacked(7, 70);
        meter.nacked(8, 1);
        assert_eq!(meter.take(), Some(4.0 / 50.0));
        // A NACK repeated in the next period is not a new loss; the last period's packets
        // still count.
        for seq in 50..100 {
            meter.sent(7, seq);
        }
        meter.nacked(7, 21);
        meter.nacked(7, 22);
        meter.nacked(7, 60);
        assert_eq!(meter.take(), Some(2.0 / 50.0));
        // Two periods on, the first period's packets are too old to count.
        for seq in 100..150 {
            meter.sent(7, seq);
        }
        meter.nacked(7, 23);
        meter.nacked(7, 61);
        assert_eq!(meter.take(), Some(1.0 / 50.0));
    }

    #[test]
    fn a_gap_left_upstream_is_not_this_links_loss() {
        let mut meter = LossMeter::default();
        // Packet 10 never reached the SFU, so it was never sent on: its sequence number
        // stays a gap in what the subscriber gets, and the subscriber NACKs it.
        for seq in (0..51).filter(|seq| *seq != 10) {
            meter.sent(7, seq);
        }
        meter.nacked(7, 10);
        meter.nacked(7, 4);
        // The SFU recovers packet 10 from the publisher and sends it late; the subscriber's
        // NACKs for it were already on their way.
        meter.sent(7, 10);
        meter.nacked(7, 10);
        assert_eq!(meter.take(), Some(1.0 / 50.0));
    }

    #[test]
    fn only_heavy_loss_bounds_the_budget() {
        assert_eq!(loss_bound(1_000_000, None), None);
        assert_eq!(loss_bound(1_000_000, Some(0.05)), None);
        assert_eq!(loss_bound(1_000_000, Some(0.5)), Some(750_000));
    }

    #[test]
    fn a_failed_rate_is_a_ceiling_for_a_while() {
        let t0 = Instant::now();
        let mut ceiling = Ceiling::default();
        // Fine while the estimate covers what is sent.
        assert_eq!(ceiling.budget(t0, 3_000_000, 2_000_000), 3_000_000);
        // The estimate falls below it: congestion at 2 Mbit/s.
        assert_eq!(ceiling.budget(t0, 600_000, 2_000_000), 600_000);
        // The estimate climbs back, but the budget stays under 2 Mbit/s for the hold.
        let later = t0 + CEILING_HOLD / 2;
        assert_eq!(ceiling.budget(later, 5_000_000, 500_000), 1_900_000);
        // After the hold, the estimate rules again.
        let after = t0 + CEILING_HOLD;
        assert_eq!(ceiling.budget(after, 5_000_000, 500_000), 5_000_000);
    }

    #[test]
    fn a_climb_that_fails_again_doubles_the_hold_and_one_that_lasts_resets_it() {
        let t0 = Instant::now();
        let mut ceiling = Ceiling::default();
        ceiling.budget(t0, 600_000, 2_000_000);
        // The hold ends; the climb fails within the trial.
        let retry = t0 + CEILING_HOLD;
        assert_eq!(ceiling.budget(retry, 5_000_000, 500_000), 5_000_000);
        let failed = retry + Duration::from_secs(2);
        ceiling.budget(failed, 600_000, 2_000_000);
        // Held twice as long now.
        let capped = failed + CEILING_HOLD * 3 / 2;
        assert_eq!(ceiling.budget(capped, 5_000_000, 500_000), 1_900_000);
        let released = failed + CEILING_HOLD * 2;
        assert_eq!(ceiling.budget(released, 5_000_000, 500_000), 5_000_000);
        // This climb lasts: the hold is back to the start.
        let lasted = released + CLIMB_TRIAL + Duration::from_secs(1);
        assert_eq!(ceiling.budget(lasted, 5_000_000, 2_000_000), 5_000_000);
        ceiling.budget(lasted, 600_000, 2_000_000);
        let end = lasted + CEILING_HOLD;
        assert_eq!(ceiling.budget(end, 5_000_000, 500_000), 5_000_000);
    }

    #[test]
    fn rids_rank_low_to_high() {
        assert_eq!(
            ["q", "h", "f", "l", "m", "0", "1", "2", "x"].map(rid_quality),
            [0, 1, 2, 0, 1, 0, 1, 2, 2]
        );
    }

    #[test]
    fn a_keyframe_start_needs_the_start_bit_and_a_structure() {
        // start_of_frame | template 0, frame 5, structure present.
        assert!(dd_keyframe_start(&[0x80, 0, 5, 0x80, 0, 0]));
        // Not the first packet of the frame.
        assert!(!dd_keyframe_start(&[0x40, 0, 5, 0x80]));
        // A delta frame: mandatory fields only, or no structure flag.
        assert!(!dd_keyframe_start(&[0x80, 0, 6]));
        assert!(!dd_keyframe_start(&[0x80, 0, 6, 0x40]));
        assert!(!dd_keyframe_start(&[]));
    }

    #[test]
    fn the_meter_averages_over_one_second() {
        let start = Instant::now();
        let mut meter = RateMeter::default();
        for i in 0..200u64 {
            // 1,000 bytes every 10 ms: 800 kbit/s.
            meter.add(start + Duration::from_millis(10 * i), 1000);
        }
        let now = start + Duration::from_millis(1990);
        assert_eq!(meter.bps(now), 808_000); // 101 samples in the closed window
        assert_eq!(meter.bps(now + Duration::from_secs(2)), 0);
    }

    #[test]
    fn the_best_layer_that_fits_is_chosen_with_headroom_to_go_up() {
        let layers = [(0, 150_000), (1, 500_000), (2, 1_500_000)];
        assert_eq!(choose_layer(&layers, 5_000_000, 2, None), Some(2));
        assert_eq!(choose_layer(&layers, 1_000_000, 2, Some(2)), Some(1));
        assert_eq!(
            choose_layer(&layers, 100_000, 2, Some(1)),
            Some(0),
            "lowest"
        );
        // The subscriber asked for no more than the middle layer.
        assert_eq!(choose_layer(&layers, 5_000_000, 1, None), Some(1));
        // Up from 1 to 2 needs 1.725 Mbit/s, staying at 2 needs 1.5.
        assert_eq!(choose_layer(&layers, 1_600_000, 2, Some(1)), Some(1));
        assert_eq!(choose_layer(&layers, 1_600_000, 2, Some(2)), Some(2));
        // A layer its publisher stopped sending is skipped.
        let paused = [(0, 150_000), (1, 0), (2, 0)];
        assert_eq!(choose_layer(&paused, 5_000_000, 2, None), Some(0));
        assert_eq!(choose_layer(&[], 5_000_000, 2, None), None);
    }
}
