//! A sans-IO, seeded model of one direction of a network path, shared by unit tests, the
//! SFU tests and `sotto-bench` (whose UDP relay puts it between real processes). Owns the
//! impairments: loss (uniform, or bursty after Gilbert–Elliott), a fixed delay, jitter with
//! or without reordering, duplication, a bandwidth cap with a drop-tail queue, and changes
//! on a schedule (a bandwidth drop at 10 s, a 2 s outage). It owns no socket and reads no
//! clock: time comes in as the [`Duration`] since the link started, packets go in with
//! [`Link::send`] and come out of [`Link::poll`] when due.
//!
//! The same configuration and seed give the same trace: every packet draws its random
//! numbers in a fixed order from a ChaCha8 generator (named, so that the stream does not
//! change with `rand`'s choice of `StdRng`).
//!
//! Order of events for a packet: an outage drops it; else the bottleneck queue (if capped)
//! either takes it, after the bytes already queued, or drops it when it would wait longer
//! than the queue allows (drop-tail); then the loss model may lose it on the wire; then it
//! arrives after the delay plus jitter (never before an earlier packet unless reordering
//! is on); and it may arrive twice (duplication, the copy with its own jitter).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What happens to packets on the link. Durations in milliseconds, rates as fractions
/// (0.1 = 10 %), so that scenario files read naturally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Impairment {
    /// Packet loss.
    pub loss: Loss,
    /// One-way delay added to every packet, ms.
    pub delay_ms: f64,
    /// Delay variation.
    pub jitter: Option<Jitter>,
    /// The chance that a delivered packet arrives twice.
    pub duplicate: f64,
    /// A bottleneck: a rate and a drop-tail queue in front of it.
    pub bandwidth: Option<Bandwidth>,
    /// Changes at given times since the link started.
    pub schedule: Vec<Change>,
}

/// A loss model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Nothing is lost.
    #[default]
    None,
    /// Each packet is lost with the same chance, independently.
    Uniform {
        /// The chance.
        rate: f64,
    },
    /// Gilbert–Elliott: a good and a bad state with their own loss chances; after each
    /// packet the state flips with the given chances. Losses come in bursts.
    GilbertElliott {
        /// Good → bad, per packet.
        p_good_to_bad: f64,
        /// Bad → good, per packet (the mean burst is 1 / this, in packets).
        p_bad_to_good: f64,
        /// Loss chance in the good state.
        #[serde(default)]
        loss_in_good: f64,
        /// Loss chance in the bad state.
        #[serde(default = "one")]
        loss_in_bad: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl Loss {
    /// Bursty loss with this long-run rate and mean burst length (packets), everything
    /// lost in the bad state and nothing in the good one.
    pub fn bursty(rate: f64, mean_burst: f64) -> Loss {
        let p_bad_to_good = 1.0 / mean_burst.max(1.0);
        let rate = rate.clamp(0.0, 0.999);
        Loss::GilbertElliott {
            p_good_to_bad: rate * p_bad_to_good / (1.0 - rate),
            p_bad_to_good,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        }
    }

    /// The long-run loss rate.
    pub fn mean_rate(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Uniform { rate } => rate,
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let total = p_good_to_bad + p_bad_to_good;
                if total <= 0.0 {
                    return loss_in_good;
                }
                let bad = p_good_to_bad / total;
                bad * loss_in_bad + (1.0 - bad) * loss_in_good
            }
        }
    }
}

/// Delay variation: a normal distribution around the delay, cut at zero extra delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jitter {
    /// The standard deviation, ms.
    pub std_dev_ms: f64,
    /// Whether a packet may overtake an earlier one. Without it, a packet that would arrive
    /// before the previous one waits for it (the path keeps order, as most do).
    #[serde(default)]
    pub reorder: bool,
}

/// A bottleneck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// The rate, kbit/s.
    pub kbps: f64,
    /// The queue in front of it, as the longest a packet may wait in it, ms; a packet that
    /// would wait longer is dropped (drop-tail).
    #[serde(default = "default_queue_ms")]
    pub queue_ms: f64,
}

fn default_queue_ms() -> f64 {
    100.0
}

/// A change on the schedule. (Unknown fields are refused by [`ChangeKind`]: serde cannot
/// refuse them here, beside a flattened field.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// When, ms since the link started.
    pub at_ms: f64,
    /// What changes.
    #[serde(flatten)]
    pub what: ChangeKind,
}

/// What a [`Change`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChangeKind {
    /// A new bottleneck (or none).
    Bandwidth {
        /// The new cap; absent: no cap.
        #[serde(default)]
        bandwidth: Option<Bandwidth>,
    },
    /// Nothing gets through for a while.
    Outage {
        /// How long, ms.
        duration_ms: f64,
    },
    /// A new loss model.
    Loss {
        /// The new model.
        loss: Loss,
    },
    /// A new delay (a route change).
    Delay {
        /// The new delay, ms.
        delay_ms: f64,
    },
}

/// What happened to a packet handed to [`Link::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It will arrive at this time (and, if duplicated, once more at the second time).
    Delivered {
        /// Arrival.
        at: Duration,
        /// The duplicate's arrival.
        duplicate_at: Option<Duration>,
    },
    /// Lost on the wire (the loss model).
    Lost,
    /// Dropped by the full bottleneck queue.
    QueueDropped,
    /// Dropped during an outage.
    Outage,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed to the link.
    pub sent: u64,
    /// Copies that came out of [`Link::poll`] (duplicates included).
    pub delivered: u64,
    /// Lost by the loss model.
    pub lost: u64,
    /// Dropped by the queue.
    pub queue_dropped: u64,
    /// Dropped in an outage.
    pub outage_dropped: u64,
    /// Packets that arrived twice.
    pub duplicated: u64,
    /// Copies delivered after a packet sent later than them.
    pub reordered: u64,
    /// Bytes delivered.
    pub bytes_delivered: u64,
}

struct InFlight<P> {
    at: Duration,
    order: u64,
    index: u64,
    size: usize,
    packet: P,
}

impl<P> PartialEq for InFlight<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<P> Eq for InFlight<P> {}
impl<P> PartialOrd for InFlight<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for InFlight<P> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// One direction of a path.
pub struct Link<P> {
    current: Impairment,
    schedule: Vec<Change>,
    next_change: usize,
    rng: ChaCha8Rng,
    in_bad_state: bool,
    /// When the bottleneck finishes sending what is queued.
    queue_free_at: Duration,
    outage_until: Duration,
    /// The latest arrival so far (for in-order delivery).
    last_arrival: Duration,
    in_flight: BinaryHeap<Reverse<InFlight<P>>>,
    next_order: u64,
    next_index: u64,
    highest_delivered: Option<u64>,
    stats: Stats,
}

impl<P> std::fmt::Debug for Link<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("current", &self.current)
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Clone> Link<P> {
    /// A link with these impairments, its randomness from `seed`.
    pub fn new(config: Impairment, seed: u64) -> Self {
        let mut schedule = config.schedule.clone();
        schedule.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        Link {
            current: config,
            schedule,
            next_change: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_bad_state: false,
            queue_free_at: Duration::ZERO,
            outage_until: Duration::ZERO,
            last_arrival: Duration::ZERO,
            in_flight: BinaryHeap::new(),
            next_order: 0,
            next_index: 0,
            highest_delivered: None,
            stats: Stats::default(),
        }
    }

    /// The impairments in force now (after the changes applied so far).
    pub fn current(&self) -> &Impairment {
        &self.current
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Hands a packet of `size` bytes to the link at `now`.
    pub fn send(&mut self, now: Duration, size: usize, packet: P) -> Fate {
        self.apply_schedule(now);
        let index = self.next_index;
        self.next_index += 1;
        self.stats.sent += 1;
        // Every packet draws the same numbers in the same order, whatever its fate, so
        // one packet's fate never shifts another's draws.
        let loss_draw: f64 = self.rng.random();
        let flip_draw: f64 = self.rng.random();
        let duplicate_draw: f64 = self.rng.random();
        let jitter = self.jitter_sample();
        let duplicate_jitter = self.jitter_sample();
        let lost = self.loss_decision(loss_draw, flip_draw);

        if now < self.outage_until {
            self.stats.outage_dropped += 1;
            return Fate::Outage;
        }
        let departure = match &self.current.bandwidth {
            None => now,
            Some(cap) => {
                let start = self.queue_free_at.max(now);
                if start - now > ms(cap.queue_ms) {
                    self.stats.queue_dropped += 1;
                    return Fate::QueueDropped;
                }
                let serialize =
                    Duration::from_secs_f64(size as f64 * 8.0 / (cap.kbps.max(0.001) * 1000.0));
                self.queue_free_at = start + serialize;
                self.queue_free_at
            }
        };
        if lost {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let at = self.arrival(departure, jitter);
        self.push(at, index, size, packet.clone());
        let duplicate_at = (duplicate_draw < self.current.duplicate).then(|| {
            self.stats.duplicated += 1;
            let at = self.arrival(departure, duplicate_jitter);
            self.push(at, index, size, packet);
            at
        });
        Fate::Delivered { at, duplicate_at }
    }

    /// The next packet due by `now`, if any.
    pub fn poll(&mut self, now: Duration) -> Option<P> {
        self.apply_schedule(now);
        if self
            .in_flight
            .peek()
            .is_none_or(|Reverse(next)| next.at > now)
        {
            return None;
        }
        let Reverse(next) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.bytes_delivered += next.size as u64;
        match self.highest_delivered {
            Some(highest) if next.index < highest => self.stats.reordered += 1,
            _ => self.highest_delivered = Some(next.index),
        }
        Some(next.packet)
    }

    /// Applies `what` at `now`, off the schedule: for a driver that decides changes as it
    /// goes (a test capping a link mid-run). Scheduled changes still come at their times.
    pub fn change_now(&mut self, now: Duration, what: ChangeKind) {
        self.apply_schedule(now);
        self.apply(now, what);
    }

    /// When the next packet is due (for a driver's timer).
    pub fn next_due(&self) -> Option<Duration> {
        self.in_flight.peek().map(|Reverse(next)| next.at)
    }

    fn push(&mut self, at: Duration, index: u64, size: usize, packet: P) {
        let order = self.next_order;
        self.next_order += 1;
        self.in_flight.push(Reverse(InFlight {
            at,
            order,
            index,
            size,
            packet,
        }));
    }

    /// Departure plus the delay and a jitter sample (the sum cut at zero: a packet never
    /// arrives before it left).
    fn arrival(&mut self, departure: Duration, jitter_ms: f64) -> Duration {
        let at = departure + ms(self.current.delay_ms + jitter_ms);
        let reorder = self.current.jitter.as_ref().is_some_and(|j| j.reorder);
        let at = if reorder {
            at
        } else {
            at.max(self.last_arrival)
        };
        self.last_arrival = self.last_arrival.max(at);
        at
    }

    /// A jitter sample in ms: N(0, σ) by Box–Muller, 0 without jitter. (Both uniforms are
    /// drawn either way, to keep the draws in step.)
    fn jitter_sample(&mut self) -> f64 {
        let (u1, u2): (f64, f64) = (self.rng.random(), self.rng.random());
        let Some(jitter) = &self.current.jitter else {
            return 0.0;
        };
        let normal = (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        normal * jitter.std_dev_ms
    }

    fn loss_decision(&mut self, loss_draw: f64, flip_draw: f64) -> bool {
        match self.current.loss {
            Loss::None => false,
            Loss::Uniform { rate } => loss_draw < rate,
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let lost = loss_draw
                    < if self.in_bad_state {
                        loss_in_bad
                    } else {
                        loss_in_good
                    };
                let flip = if self.in_bad_state {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if flip_draw < flip {
                    self.in_bad_state = !self.in_bad_state;
                }
                lost
            }
        }
    }

    fn apply_schedule(&mut self, now: Duration) {
        while let Some(change) = self.schedule.get(self.next_change) {
            if ms(change.at_ms) > now {
                break;
            }
            let (at, what) = (ms(change.at_ms), change.what.clone());
            self.apply(at, what);
            self.next_change += 1;
        }
    }

    fn apply(&mut self, at: Duration, what: ChangeKind) {
        match what {
            ChangeKind::Bandwidth { bandwidth } => self.current.bandwidth = bandwidth,
            ChangeKind::Outage { duration_ms } => {
                self.outage_until = self.outage_until.max(at + ms(duration_ms));
            }
            ChangeKind::Loss { loss } => {
                self.current.loss = loss;
                self.in_bad_state = false;
            }
            ChangeKind::Delay { delay_ms } => self.current.delay_ms = delay_ms,
        }
    }
}

/// Milliseconds (negative and NaN count as 0) as a duration.
fn ms(value: f64) -> Duration {
    if value.is_finite() && value > 0.0 {
        Duration::from_secs_f64(value / 1000.0)
    } else {
        Duration::ZERO
    }
}
