//! The adaptive jitter buffer, sans-IO: packets go in with their arrival time, and the
//! playout clock pulls one decision per frame with the current time. No tokio, no clock.
//!
//! In the spirit of WebRTC's NetEq (not its code): the target delay comes from a high
//! percentile of the observed relative arrival delay, plus, while frames go missing, one
//! frame for the packet that carries the repair (a RED copy or in-band FEC; more for deeper
//! copies only after runs of missing frames needed them); it grows at once when packets
//! arrive late and shrinks slowly; the buffer reorders, drops duplicates and late packets.
//! It keeps its delay near the target by asking the playout to stretch time
//! ([`JitterBuffer::time_scale`], done by [`super::stretch`]), in pauses first and in
//! speech a pitch period at a time only when it must; a DTX gap plays as long as it was
//! (from the timestamps) and is where the delay moves most. Whole frames are dropped only
//! when far over (after an outage), and concealed while waiting only when it runs dry.
//! Decoding (Opus, FEC, DRED, PLC) is the caller's: this module only says which one to do.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::SAMPLES_PER_MS;
use super::stretch::Want;

/// RTP clock rate of the audio (Opus always uses 48 kHz).
pub const CLOCK_RATE: u32 = 48_000;

/// Tuning of the buffer.
#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// Duration of one frame (the pull period).
    pub frame: Duration,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay (and the most the buffer holds).
    pub max_delay: Duration,
    /// Percentile of the relative arrival delay the target covers (0..1).
    pub percentile: f64,
    /// How far back arrivals count for the estimate.
    pub window: Duration,
    /// How fast the target may fall, in milliseconds per second.
    pub shrink_ms_per_sec: f64,
    /// The longest run of missing frames rebuilt at once from the first packet after it
    /// ([`Decision::Rebuild`], for DRED); 0 or 1 never rebuilds (a single missing frame
    /// is the next packet's FEC). Runs that reach past it are concealed frame by frame.
    pub rebuild_frames: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(1000),
            percentile: 0.95,
            window: Duration::from_secs(10),
            shrink_ms_per_sec: 20.0,
            rebuild_frames: 6,
        }
    }
}

/// One received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// The encoded frame.
    pub payload: Vec<u8>,
    /// True when the frame is quiet (DTX, or a low RFC 6464 audio level): dropping it to
    /// catch up is inaudible.
    pub quiet: bool,
}

/// What became of an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Buffered for playout.
    Accepted,
    /// Already buffered: dropped.
    Duplicate,
    /// Its playout time has passed: dropped (and counted as late).
    Late,
}

/// What to play for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet: the buffer is filling up to its target before playout starts.
    Waiting,
    /// Decode this packet normally.
    Play(Packet),
    /// The packet is missing but the next one is here: decode the in-band FEC of `next`.
    Fec {
        /// The packet after the missing one (it stays buffered for its own turn).
        next: Packet,
    },
    /// The packet is missing and so are the next `frames - 1`, but the one after them is
    /// here: rebuild all `frames` at once from the deep redundancy (DRED) `later` carries
    /// (it stays buffered for its own turn). Playout then moves on by `frames` frames.
    Rebuild {
        /// The first packet after the missing run.
        later: Packet,
        /// Frames missing before it (at least 2).
        frames: usize,
    },
    /// The packet is missing: run the decoder's loss concealment.
    Conceal,
    /// Nothing is buffered and the last frame played was quiet: the sender is most likely
    /// in DTX (RFC 7587 §3.1.3), so this is silence, not loss. Decode as concealment (Opus
    /// then continues its comfort noise); it is not counted as concealed.
    ComfortNoise,
}

/// Counters, as the call summary and the bench report them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets in the buffer now.
    pub buffered: usize,
    /// Buffered audio now, in ms.
    pub current_delay_ms: f64,
    /// The delay the buffer aims for, in ms.
    pub target_delay_ms: f64,
    /// Frames played from packets.
    pub played: u64,
    /// Frames rebuilt from the next packet's FEC.
    pub fec: u64,
    /// Frames rebuilt from a later packet's deep redundancy (DRED), in runs of 2 or more.
    pub rebuilt: u64,
    /// Lost frames concealed by PLC (FEC and expansion not included).
    pub concealed: u64,
    /// Audio not played from its own packet (FEC, PLC and expansion), in ms.
    pub concealed_ms: f64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets that never arrived before their time (FEC and PLC frames).
    pub lost: u64,
    /// Duplicate packets dropped.
    pub duplicate: u64,
    /// Concealment frames played while waiting for a packet that may still come
    /// (stretching time: underrun, or building up delay after the target grew).
    pub expanded: u64,
    /// Frames dropped whole to bring the delay down (far over target, after an outage).
    pub accelerated: u64,
    /// Audio cut out by time-stretching to bring the delay down, in ms.
    pub shortened_ms: f64,
    /// Audio added by time-stretching to bring the delay up, in ms.
    pub lengthened_ms: f64,
    /// Comfort-noise frames played while the sender was silent (DTX).
    pub comfort_noise: u64,
    /// Frames that came only as a redundant copy in a later packet (RFC 2198), in time.
    pub recovered: u64,
    /// Times the path became lastingly slower or faster and the buffer followed it.
    pub path_changes: u64,
    /// Redundant copies that came after their frame's turn, when it had not been played
    /// from a packet (it was concealed or taken from FEC): repairs the buffer did not
    /// wait long enough for.
    pub late_copies: u64,
}

/// The buffer.
pub struct JitterBuffer {
    config: JitterConfig,
    /// Buffered packets by extended sequence number.
    packets: BTreeMap<u64, Held>,
    /// Highest extended sequence number seen (for unwrapping).
    highest: Option<u64>,
    /// Next extended sequence number to play; `None` until playout starts.
    next: Option<u64>,
    /// (arrival, transit = arrival − send time) of recent packets, in ms.
    arrivals: VecDeque<(Instant, f64)>,
    /// The first arrival and its RTP timestamp: the origin of both clocks.
    origin: Option<(Instant, u32)>,
    target_ms: f64,
    last_pull: Option<Instant>,
    /// Whether the last packet played was quiet (a DTX gap may follow).
    last_played_quiet: bool,
    /// Whether playout is in a DTX gap (comfort noise since the last packet played).
    in_dtx: bool,
    /// The RTP timestamp playout has reached: the next frame's, had the sender gone on.
    expected_ts: Option<u32>,
    /// The part of the target that waits for repairs (copies, FEC), ms, as of the last
    /// pull: the delay grows by it only in pauses...
    pause_only_growth_ms: f64,
    /// ...unless a repair came too late since this (its frame had been concealed while
    /// waiting): then the wait is needed now, in speech too.
    last_late_repair: Option<Instant>,
    /// The sender's redundancy depth (RFC 2198 copies per packet) and when it was last
    /// seen: the target waits that many frames longer, so that a copy can arrive in time.
    redundancy: Option<(usize, Instant)>,
    /// When a frame last went missing (lost, or saved only by a redundant copy).
    last_gap: Option<Instant>,
    /// When a frame last came only as a copy two or more packets later (a run of missing
    /// frames): only then does the target wait for the deeper copies too.
    last_deep_gap: Option<Instant>,
    /// When a copy last came later than the deepest copy plus the jitter would: through
    /// an SFU, a packet lost on the uplink is rebuilt only when the next one reaches it,
    /// so its copies of a frame the downlink lost come a frame or more late.
    last_late_copy: Option<Instant>,
    /// Frames played (expansion, comfort noise) since playout last moved on: time the
    /// sender's clock went on without ours.
    stretched: u64,
    /// Of those, the frames of concealment played while waiting for a packet.
    waited: u64,
    /// The playout delay, ms: how long after the fastest path would have brought it the
    /// last packet played, plus one frame (the unit of the target). Set by each packet
    /// played, moved by each stretch.
    level_ms: Option<f64>,
    /// The last [`PLAYED_MEMORY`] frames played from a packet (extended sequence numbers):
    /// a copy behind the playout point of a frame not among them came too late.
    played: VecDeque<u64>,
    stats: JitterStats,
}

/// How many frames played from packets the buffer remembers (see `late_copies`).
const PLAYED_MEMORY: usize = 64;

/// A buffered packet and how much audio it holds, ms: the frame duration when it came (a
/// sender may change it mid-call; until the older packets have played, the buffer holds
/// both lengths).
struct Held {
    packet: Packet,
    ms: f64,
    /// It came only as a redundant copy in a later packet.
    copy: bool,
}

/// Frames of stretch (expansion while nothing came, or comfort noise) after which the
/// missing frames are skipped rather than concealed again (their time was played): 100
/// ms, more than a loss burst, less than an outage. After a shorter stretch the packet
/// that came carries the missing frame's FEC or DRED, worth a frame of delay.
pub const SKIP_AFTER_STRETCH: u64 = 5;

/// The same while redundant copies come: then the packet that came has no FEC, and its
/// copies, had they covered the missing frame, would already have filled it.
pub const SKIP_AFTER_STRETCH_WITH_COPIES: u64 = 1;

/// With nothing buffered and nothing arrived for this long, the sender has stopped (a
/// participant left without the stream ending, a path went down): playout gives comfort
/// noise instead of concealment, and the time is not counted as concealed. Longer than a
/// burst of loss, shorter than the tail a listener stays after a speaker left.
pub const STREAM_STOPPED: Duration = Duration::from_secs(1);

/// How long the target keeps waiting for redundant copies after the last one came.
pub const REDUNDANCY_HOLD: Duration = Duration::from_secs(10);

/// The playout delay aims this far over the target (ms): at the target itself, a packet
/// as late as the target covers arrives just as its turn comes, and any wobble of the
/// playout clock makes it miss.
pub const AIM_OVER_TARGET_MS: f64 = 5.0;

/// How long a new path must hold before the buffer takes it for the path (see
/// `follow_path_change`).
pub const PATH_SETTLE: Duration = Duration::from_millis(500);

/// The fewest packets in [`PATH_SETTLE`] to judge a path by (a sender in DTX sends few).
pub const PATH_SETTLE_PACKETS: usize = 10;

/// The smallest change of the fastest path taken for a new path, ms.
pub const PATH_STEP_MS: f64 = 20.0;

/// Over the aim by more than this (ms), the playout is made shorter in pauses.
pub const SHORTEN_OVER_MS: f64 = 10.0;

/// Over the aim by more than this (ms), the playout is made shorter in speech too, a pitch
/// period at a time.
pub const SHORTEN_IN_SPEECH_OVER_MS: f64 = 40.0;

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        let target_ms = ms(config.min_delay).max(ms(config.frame));
        JitterBuffer {
            config,
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            arrivals: VecDeque::new(),
            origin: None,
            target_ms,
            last_pull: None,
            last_played_quiet: false,
            in_dtx: false,
            expected_ts: None,
            pause_only_growth_ms: 0.0,
            last_late_repair: None,
            redundancy: None,
            last_gap: None,
            last_deep_gap: None,
            last_late_copy: None,
            stretched: 0,
            waited: 0,
            level_ms: None,
            played: VecDeque::new(),
            stats: JitterStats::default(),
        }
    }

    /// The frame duration it plays out in (the pull period).
    pub fn frame(&self) -> Duration {
        self.config.frame
    }

    /// Frames of another duration come from now on (the sender changed it mid-call): the
    /// pull period and the delay arithmetic follow it, and `rebuild_frames` replaces the
    /// longest rebuild. Packets already buffered keep their own length in the delay
    /// arithmetic.
    pub fn set_frame(&mut self, frame: Duration, rebuild_frames: usize) {
        self.config.frame = frame;
        self.config.rebuild_frames = rebuild_frames;
        self.target_ms = self.target_ms.max(ms(frame));
    }

    /// Counters and delays now.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            buffered: self.packets.len(),
            current_delay_ms: self.current_delay_ms(),
            target_delay_ms: self.target_ms,
            ..self.stats
        }
    }

    /// Extend a 16-bit sequence number to 64 bits around the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Start well above zero so reordering before the first packet cannot underflow.
            let ext = (1u64 << 32) + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let base = highest & !0xffff;
        let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
        let ext = candidates
            .into_iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(base + u64::from(seq));
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    /// Take in a packet that arrived at `now`.
    pub fn insert(&mut self, packet: Packet, now: Instant) -> Inserted {
        let ext = self.extend(packet.seq);
        // A packet that comes after a newer one that carried its copy (no further ahead
        // than the copies reach): its own delay is nothing the target must cover. (An
        // SFU sends a packet it rebuilt from a copy right after the packet that carried
        // it.)
        let covered = match (self.highest, self.copies_coming(now)) {
            (Some(highest), Some(depth)) => highest > ext && highest - ext <= depth as u64,
            _ => false,
        };
        if !covered {
            self.observe_arrival(packet.timestamp, now);
        }
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            return Inserted::Late;
        }
        if self.packets.contains_key(&ext) {
            self.stats.duplicate += 1;
            return Inserted::Duplicate;
        }
        let length = ms(self.config.frame);
        self.packets.insert(
            ext,
            Held {
                packet,
                ms: length,
                copy: false,
            },
        );
        // Never hold more than the maximum delay: drop the oldest beyond it.
        while self.packets.len() > 1
            && self.packets.values().map(|held| held.ms).sum::<f64>() > ms(self.config.max_delay)
        {
            if let Some((seq, _)) = self.packets.pop_first() {
                self.stats.accelerated += 1;
                if let Some(next) = self.next.as_mut() {
                    *next = (*next).max(seq + 1);
                }
            }
        }
        Inserted::Accepted
    }

    /// Whether the frame `seq` is still wanted: not buffered and not yet played. A
    /// receiver asks before it decrypts or decodes a redundant copy.
    pub fn wants(&mut self, seq: u16) -> bool {
        let ext = self.extend(seq);
        self.next.is_none_or(|next| ext >= next) && !self.packets.contains_key(&ext)
    }

    /// Takes a redundant copy of frame `seq` (from a later packet's RFC 2198 block) that
    /// arrived at `now`. Unlike [`insert`](Self::insert) it says nothing about the
    /// network's delay, and one that is not wanted is dropped without being counted as
    /// duplicate or late (copies of frames that arrived are the normal case). `depth` is
    /// how many earlier frames the carrying packet repeats: from now on the target waits
    /// that much longer. Returns whether the copy was kept.
    pub fn insert_redundant(&mut self, packet: Packet, depth: usize, now: Instant) -> bool {
        self.note_redundancy(depth, now);
        if !self.wants(packet.seq) {
            self.drop_copy(packet.seq);
            return false;
        }
        let ext = self.extend(packet.seq);
        if self.highest.is_some_and(|highest| highest >= ext + 2) {
            self.last_deep_gap = Some(now);
        }
        if let Some(lateness) = self.transit_over_fastest_ms(packet.timestamp, now) {
            let frame = ms(self.config.frame);
            let jitter = self.estimate_ms() - frame;
            if lateness > depth as f64 * frame + jitter + frame / 2.0 {
                self.last_late_copy = Some(now);
            }
        }
        let length = ms(self.config.frame);
        self.packets.insert(
            ext,
            Held {
                packet,
                ms: length,
                copy: true,
            },
        );
        self.stats.recovered += 1;
        self.last_gap = Some(now);
        true
    }

    /// A redundant copy of frame `seq` that is not [wanted](Self::wants) is dropped; it
    /// counts in `late_copies` when the frame's turn passed without it being played.
    pub fn drop_copy(&mut self, seq: u16) {
        let ext = self.extend(seq);
        let passed = self
            .next
            .is_some_and(|next| ext < next && next - ext <= PLAYED_MEMORY as u64);
        if passed && !self.played.contains(&ext) {
            self.stats.late_copies += 1;
        }
    }

    /// The packet that arrived at `now` repeats `depth` earlier frames. Depth 0 (plain
    /// packets) ends the wait for copies at once: none will come.
    pub fn note_redundancy(&mut self, depth: usize, now: Instant) {
        self.redundancy = (depth > 0).then_some((depth, now));
        if depth > 0 && self.last_gap.is_none() {
            // A sender that starts with copies does not know the path yet, nor do we:
            // loss from the first packet on must not cost a delay step. Until the hold
            // passes without a gap, wait for the next packet's copy as if one was seen.
            self.last_gap = Some(now);
        }
    }

    /// The extra wait for what repairs a missing frame, in ms: only while frames go
    /// missing (a clean path pays no delay for it). The base target (jitter + one frame)
    /// has the frame due in hand; its repair (a redundant copy, or the in-band FEC) rides
    /// in the next packet, a frame later: one frame more. Copies further back are waited
    /// for only while runs of missing frames need them.
    fn repair_wait_ms(&self, now: Instant) -> f64 {
        let recent = |at: Instant| now.saturating_duration_since(at) <= REDUNDANCY_HOLD;
        if !self.last_gap.is_some_and(recent) {
            return 0.0;
        }
        let frames = match self.copies_coming(now) {
            Some(depth) if self.last_deep_gap.is_some_and(recent) => depth,
            _ => 1,
        };
        // Copies came later than their depth and the jitter account for: wait a frame more.
        let late = usize::from(self.last_late_copy.is_some_and(recent));
        (frames + late) as f64 * ms(self.config.frame)
    }

    /// The depth of the redundant copies, while they come.
    fn copies_coming(&self, now: Instant) -> Option<usize> {
        self.redundancy
            .filter(|(_, seen)| now.saturating_duration_since(*seen) <= REDUNDANCY_HOLD)
            .map(|(depth, _)| depth)
    }

    /// The lowest transit (arrival − send time) seen in the window: the fastest path.
    fn fastest_transit_ms(&self) -> Option<f64> {
        self.arrivals.iter().map(|(_, t)| *t).reduce(f64::min)
    }

    /// How much later than the fastest path would have brought it the frame sent at
    /// `timestamp` arrives at `now`, ms.
    fn transit_over_fastest_ms(&self, timestamp: u32, now: Instant) -> Option<f64> {
        let (origin_at, origin_ts) = self.origin?;
        let sent_ms =
            f64::from(timestamp.wrapping_sub(origin_ts) as i32) * 1000.0 / f64::from(CLOCK_RATE);
        Some(ms(now.saturating_duration_since(origin_at)) - sent_ms - self.fastest_transit_ms()?)
    }

    /// Records the playout delay of a packet played at `now`.
    fn measure_level(&mut self, timestamp: u32, now: Instant) {
        let (Some((origin_at, origin_ts)), Some(fastest)) =
            (self.origin, self.fastest_transit_ms())
        else {
            return;
        };
        let sent_ms =
            f64::from(timestamp.wrapping_sub(origin_ts) as i32) * 1000.0 / f64::from(CLOCK_RATE);
        let now_ms = ms(now.saturating_duration_since(origin_at));
        self.level_ms = Some(now_ms - sent_ms - fastest + ms(self.config.frame));
    }

    /// How the playout should stretch the frame it is about to play, to bring the delay
    /// to its aim, [`AIM_OVER_TARGET_MS`] over the target: longer when under the target
    /// (in speech too only when under what the network's jitter alone needs: the wait
    /// for repairs is built in pauses), shorter in pauses when over the aim by
    /// [`SHORTEN_OVER_MS`], in speech too when by [`SHORTEN_IN_SPEECH_OVER_MS`].
    pub fn time_scale(&self) -> Want {
        let Some(level) = self.level_ms else {
            return Want::Keep;
        };
        let over = level - (self.target_ms + AIM_OVER_TARGET_MS);
        let samples = |ms: f64| (ms * SAMPLES_PER_MS as f64).round() as usize;
        if over > SHORTEN_OVER_MS {
            Want::Shorter {
                samples: samples(over),
                in_speech: over > SHORTEN_IN_SPEECH_OVER_MS,
            }
        } else if level < self.target_ms {
            Want::Longer {
                samples: samples(-over),
                in_speech: level < self.target_ms - self.pause_only_growth_ms,
            }
        } else {
            Want::Keep
        }
    }

    /// The playout stretched the last frame by `samples` (positive: longer).
    pub fn stretched(&mut self, samples: isize) {
        let change = samples as f64 / SAMPLES_PER_MS as f64;
        if let Some(level) = self.level_ms.as_mut() {
            *level += change;
        }
        if change > 0.0 {
            self.stats.lengthened_ms += change;
        } else {
            self.stats.shortened_ms -= change;
        }
    }

    /// The playout delay now (see [`time_scale`](Self::time_scale)), in ms; `None` before
    /// the first packet plays.
    pub fn level_ms(&self) -> Option<f64> {
        self.level_ms
    }

    /// Update the delay estimate with one arrival.
    fn observe_arrival(&mut self, timestamp: u32, now: Instant) {
        let (origin_at, origin_ts) = *self.origin.get_or_insert((now, timestamp));
        // Send time relative to the first packet, from the RTP clock (valid for ±12 h).
        let ticks = timestamp.wrapping_sub(origin_ts) as i32;
        let sent_ms = f64::from(ticks) * 1000.0 / f64::from(CLOCK_RATE);
        let arrived_ms = ms(now.saturating_duration_since(origin_at));
        self.arrivals.push_back((now, arrived_ms - sent_ms));
        while self
            .arrivals
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.config.window)
        {
            self.arrivals.pop_front();
        }
        self.follow_path_change(now);
        // Grow at once: the target covers this packet's delay, however rare. The
        // percentile only decides how far the target may shrink back.
        let min = self
            .arrivals
            .iter()
            .map(|(_, t)| *t)
            .fold(f64::INFINITY, f64::min);
        let needed = (arrived_ms - sent_ms - min + ms(self.config.frame))
            .clamp(ms(self.config.min_delay), ms(self.config.max_delay));
        if needed > self.target_ms {
            self.target_ms = needed;
        }
    }

    /// A path that became slower or faster for good (a new network, a route change, a
    /// standing queue) is not jitter. Each packet's delay counts above the fastest path,
    /// so after a step up every packet of the new path would look late by the step: the
    /// target would hold it on top of the jitter, and (worse) the buffered audio, which
    /// only holds the jitter's share, would look short of the target, so each lost packet
    /// would be waited for as if late, a frame of concealment at a time. After a step down
    /// the old path's packets look late instead. Once the whole last [`PATH_SETTLE`] sat
    /// at least [`PATH_STEP_MS`] above (or below) every packet before it, and further than
    /// its own spread (a jittery path is not a stepped one), the earlier packets' delays
    /// move by the step: they keep their jitter, told against the new path. The target
    /// and the playout delay, measured against the fastest path, move with it, so the
    /// audio buffered keeps its meaning (NetEq forgets the old path the same way, by
    /// timing arrivals against the fastest of the last two seconds only).
    fn follow_path_change(&mut self, now: Instant) {
        let recent_from = self
            .arrivals
            .partition_point(|(at, _)| now.saturating_duration_since(*at) > PATH_SETTLE);
        if recent_from == 0 || self.arrivals.len() - recent_from < PATH_SETTLE_PACKETS {
            return;
        }
        let (mut before_low, mut recent_low, mut recent_high) =
            (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for (i, (_, transit)) in self.arrivals.iter().enumerate() {
            if i < recent_from {
                before_low = before_low.min(*transit);
            } else {
                recent_low = recent_low.min(*transit);
                recent_high = recent_high.max(*transit);
            }
        }
        let step = recent_low - before_low;
        if step.abs() < PATH_STEP_MS.max(recent_high - recent_low) {
            return;
        }
        let fastest = before_low.min(recent_low);
        for (_, transit) in self.arrivals.range_mut(..recent_from) {
            *transit += step;
        }
        // The fastest path is now the recent one: the playout delay, told against it,
        // moves by what it moved.
        if let Some(level) = self.level_ms.as_mut() {
            *level -= recent_low - fastest;
        }
        self.target_ms = (self.target_ms - step.abs()).max(self.estimate_ms());
        self.stats.path_changes += 1;
    }

    /// The delay that covers `percentile` of recent arrivals, plus one frame.
    fn estimate_ms(&self) -> f64 {
        let Some(min) = self.arrivals.iter().map(|(_, t)| *t).reduce(f64::min) else {
            return self.target_ms;
        };
        let mut relative: Vec<f64> = self.arrivals.iter().map(|(_, t)| t - min).collect();
        let index = ((relative.len() - 1) as f64 * self.config.percentile).round() as usize;
        // The percentile only (a full sort on every pull was a visible part of playout).
        let jitter = if index < relative.len() {
            *relative.select_nth_unstable_by(index, f64::total_cmp).1
        } else {
            0.0
        };
        (jitter + ms(self.config.frame)).clamp(ms(self.config.min_delay), ms(self.config.max_delay))
    }

    /// Audio buffered ahead of the playout point, in ms.
    fn current_delay_ms(&self) -> f64 {
        let Some((&first, _)) = self.packets.first_key_value() else {
            return 0.0;
        };
        self.current_delay_ms_from(self.next.unwrap_or(first).min(first))
    }

    /// The playout clock asks what to play for the next frame.
    pub fn pull(&mut self, now: Instant) -> Decision {
        let wait = self.repair_wait_ms(now);
        self.pause_only_growth_ms = if self
            .last_late_repair
            .is_some_and(|at| now.saturating_duration_since(at) <= REDUNDANCY_HOLD)
        {
            0.0
        } else {
            wait
        };
        if let Some(last) = self.last_pull {
            let elapsed = ms(now.saturating_duration_since(last)) / 1000.0;
            let estimate = (self.estimate_ms() + wait).min(ms(self.config.max_delay));
            if estimate > self.target_ms {
                // Redundant copies just started: wait for them.
                self.target_ms = estimate;
            } else if estimate < self.target_ms {
                // Shrink slowly.
                self.target_ms =
                    (self.target_ms - self.config.shrink_ms_per_sec * elapsed).max(estimate);
            }
        }
        self.last_pull = Some(now);
        let next = match self.next {
            Some(next) => next,
            None => {
                let Some((&first, _)) = self.packets.first_key_value() else {
                    return Decision::Waiting;
                };
                if self.current_delay_ms() < self.target_ms {
                    return Decision::Waiting;
                }
                first
            }
        };
        let mut next = next;
        // After a stretch (a run of lost frames, an outage) the packets that come back are
        // later ones: the missing frames' time was already played as expansion, so they
        // are skipped (lost), not concealed a second time behind the audio that is here,
        // which would step the delay up by a frame mid-speech. Only when enough is
        // buffered that the missing one is not just late (nor a copy still to come).
        let skip_after = if self.copies_coming(now).is_some() {
            SKIP_AFTER_STRETCH_WITH_COPIES
        } else {
            SKIP_AFTER_STRETCH
        };
        if self.stretched >= skip_after
            && !self.packets.contains_key(&next)
            && self.current_delay_ms_from(next) >= self.target_ms - wait
            && let Some((&first, _)) = self.packets.first_key_value()
            && first > next
        {
            let skip = (first - next).min(self.stretched);
            next += skip;
            self.advance_expected(skip);
            self.stats.lost += skip;
            self.stretched -= skip;
            self.waited = self.waited.saturating_sub(skip);
            self.last_gap = Some(now);
        }
        // A frame whose time was already played as concealment while waiting for it, and
        // that then came only as a copy (so it was lost, not late): playing it now would
        // step the delay up a whole frame mid-speech. Its concealment stands; playout goes
        // on with the frame after it, and a target that grew is reached by stretching.
        while self.waited > 0
            && self.packets.get(&next).is_some_and(|held| held.copy)
            && self.packets.contains_key(&(next + 1))
        {
            self.packets.remove(&next);
            self.advance_expected(1);
            self.last_late_repair = Some(now);
            self.stats.recovered = self.stats.recovered.saturating_sub(1);
            self.stats.lost += 1;
            self.waited -= 1;
            self.stretched = self.stretched.saturating_sub(1);
            next += 1;
        }
        // Far too much buffered (an outage's backlog, a spike that passed): drop frames
        // to come back towards the target. Nearer the target, the playout's stretching
        // does it without cutting whole frames.
        let frame = ms(self.config.frame);
        let far_over = (2.0 * self.target_ms).max(self.target_ms + 4.0 * frame);
        while self.current_delay_ms_from(next) > far_over {
            // Only frames that are here are dropped; a missing one is the loss logic's.
            if self.packets.remove(&next).is_none() {
                break;
            }
            self.stats.accelerated += 1;
            self.advance_expected(1);
            if let Some(level) = self.level_ms.as_mut() {
                *level -= frame;
            }
            next += 1;
        }
        if self.dtx_goes_on(next) {
            return self.comfort_noise(next);
        }
        if let Some(Held {
            packet, ms: length, ..
        }) = self.packets.remove(&next)
        {
            self.next = Some(next + 1);
            self.expected_ts = Some(
                packet
                    .timestamp
                    .wrapping_add((length * SAMPLES_PER_MS as f64).round() as u32),
            );
            self.in_dtx = false;
            self.stretched = 0;
            self.waited = 0;
            self.stats.played += 1;
            if self.played.len() == PLAYED_MEMORY {
                self.played.pop_front();
            }
            self.played.push_back(next);
            self.last_played_quiet = packet.quiet;
            self.measure_level(packet.timestamp, now);
            return Decision::Play(packet);
        }
        let stopped = self
            .arrivals
            .back()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= STREAM_STOPPED);
        if self.packets.is_empty() && stopped {
            // Nothing has come for so long that the sender has stopped (it left, or its
            // path is down): neither a loss to conceal nor a packet to wait for. Comfort
            // noise until packets come again (concealment would have faded to it).
            return self.comfort_noise(next);
        }
        if self.packets.is_empty() && self.last_played_quiet {
            // DTX: the sender stopped after a quiet frame. Its next packet carries the next
            // sequence number whenever it comes, so playout just waits, in comfort noise.
            return self.comfort_noise(next);
        }
        self.in_dtx = false;
        self.advance_expected(1);
        self.stats.concealed_ms += ms(self.config.frame);
        if !stopped && self.current_delay_ms_from(next) < self.target_ms - wait {
            // The packet may still come: stretch time with concealment and wait for it.
            // (Not once the sender has stopped: what is buffered plays out instead.)
            // (Not for a copy: once the packets that would carry one are here, the frame
            // is overdue; and a target that grew is reached by stretching, not here.)
            self.next = Some(next);
            if let Some(level) = self.level_ms.as_mut() {
                *level += frame;
            }
            self.stretched += 1;
            self.waited += 1;
            self.stats.expanded += 1;
            return Decision::Conceal;
        }
        // Enough is buffered behind it that it is overdue: count it lost and move on.
        self.next = Some(next + 1);
        self.stretched = 0;
        self.waited = 0;
        self.stats.lost += 1;
        self.last_gap = Some(now);
        if let Some(following) = self.packets.get(&(next + 1)) {
            self.stats.fec += 1;
            return Decision::Fec {
                next: following.packet.clone(),
            };
        }
        if let Some((&later, Held { packet, .. })) = self.packets.range(next + 1..).next()
            && later - next <= self.config.rebuild_frames as u64
            && self.current_delay_ms_from(later - 1) >= self.target_ms
        {
            // `next + 1 .. later` are missing too, and overdue as well (were one of them
            // only late it would still have its turn): all of them are rebuilt now.
            let frames = (later - next) as usize;
            let extra = frames as u64 - 1;
            let later_packet = packet.clone();
            self.advance_expected(extra);
            self.next = Some(later);
            self.stats.lost += extra;
            self.stats.rebuilt += frames as u64;
            self.stats.concealed_ms += extra as f64 * ms(self.config.frame);
            return Decision::Rebuild {
                later: later_packet,
                frames,
            };
        }
        self.stats.concealed += 1;
        Decision::Conceal
    }

    /// Whether the sender's silence (DTX after a quiet frame) still has time to play before
    /// frame `next`: its packet keeps the sequence number but its timestamp moved on by
    /// the silence, which is played as comfort noise of its own length, so the delay holds
    /// through the pause. The pause also takes the delay to the target: it ends early by
    /// what the delay is over the aim, late by what it is under the target.
    fn dtx_goes_on(&self, next: u64) -> bool {
        let (Some(expected), Some(held)) = (self.expected_ts, self.packets.get(&next)) else {
            return false;
        };
        if !self.last_played_quiet {
            return false;
        }
        let gap_ms =
            f64::from(held.packet.timestamp.wrapping_sub(expected) as i32) / SAMPLES_PER_MS as f64;
        if gap_ms <= 0.0 && !self.in_dtx {
            return false;
        }
        let level = self.level_ms.unwrap_or(self.target_ms);
        let slack_ms = if level > self.target_ms + AIM_OVER_TARGET_MS {
            level - (self.target_ms + AIM_OVER_TARGET_MS)
        } else if level < self.target_ms {
            level - self.target_ms
        } else {
            0.0
        };
        gap_ms - slack_ms > ms(self.config.frame) / 2.0
    }

    /// One frame of comfort noise in a DTX gap before frame `next`.
    fn comfort_noise(&mut self, next: u64) -> Decision {
        self.next = Some(next);
        self.in_dtx = true;
        self.advance_expected(1);
        self.stretched += 1;
        self.stats.comfort_noise += 1;
        Decision::ComfortNoise
    }

    /// Playout moved on by `frames` frames that were not played from their packets.
    fn advance_expected(&mut self, frames: u64) {
        let samples = (ms(self.config.frame) * SAMPLES_PER_MS as f64).round() as u32;
        if let Some(expected) = self.expected_ts.as_mut() {
            *expected = expected.wrapping_add(samples.wrapping_mul(frames as u32));
        }
    }

    /// Audio from frame `from` to the last buffered one, ms: each buffered packet at its own
    /// length, each missing one at the current frame duration.
    fn current_delay_ms_from(&self, from: u64) -> f64 {
        let Some((&last, _)) = self.packets.last_key_value() else {
            return 0.0;
        };
        if last < from {
            return 0.0;
        }
        let (held, held_ms) = self
            .packets
            .range(from..)
            .fold((0u64, 0.0), |(n, total), (_, h)| (n + 1, total + h.ms));
        let missing = (last + 1 - from).saturating_sub(held);
        held_ms + missing as f64 * ms(self.config.frame)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
#[path = "jitter_tests.rs"]
mod tests;
