//! Who is speaking, from the RFC 6464 audio level each publisher puts on its packets
//! (the payload stays unread: it will be SFrame ciphertext). Sans-IO, time passed in.
//!
//! Each publisher's loudness is smoothed over about 300 ms. The dominant speaker changes
//! only when someone else has been clearly louder (by [`SWITCH_MARGIN_DB`]) for
//! [`SWITCH_HOLD`], so a cough or a single loud word does not steal the floor. Last-N:
//! [`SpeakerTracker::loudest`] names the publishers whose audio a large room forwards.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How much louder (dB) a challenger must be to take the floor.
pub const SWITCH_MARGIN_DB: f64 = 6.0;
/// How long the challenger must stay louder.
pub const SWITCH_HOLD: Duration = Duration::from_millis(1000);
/// Smoothing time constant of the loudness.
pub const SMOOTHING: Duration = Duration::from_millis(300);
/// A publisher not heard for this long counts as silent.
pub const SILENT_AFTER: Duration = Duration::from_millis(1500);
/// Below this smoothed loudness nobody takes the floor: background noise is not a
/// speaker (the same threshold the engine uses to mark frames quiet, level 60).
pub const VOICE_DB: f64 = -60.0;
/// Loudness of silence, dB (RFC 6464's 127 is -127 dBov).
const SILENCE_DB: f64 = -127.0;

struct Loudness {
    /// Smoothed level in dBov (0 loudest, -127 silence).
    db: f64,
    last: Instant,
}

/// Tracks loudness per publisher and the dominant speaker.
pub struct SpeakerTracker<P> {
    publishers: HashMap<P, Loudness>,
    dominant: Option<P>,
    /// A challenger louder than the dominant speaker, and since when.
    challenger: Option<(P, Instant)>,
}

impl<P: Clone + Eq + Hash + Ord> Default for SpeakerTracker<P> {
    fn default() -> Self {
        SpeakerTracker {
            publishers: HashMap::new(),
            dominant: None,
            challenger: None,
        }
    }
}

impl<P: Clone + Eq + Hash + Ord> SpeakerTracker<P> {
    /// One packet's RFC 6464 level (0 = loudest … 127 = silence) from `publisher`.
    pub fn update(&mut self, publisher: &P, level: u8, now: Instant) {
        let sample = -f64::from(level.min(127));
        let entry = self
            .publishers
            .entry(publisher.clone())
            .or_insert(Loudness {
                db: SILENCE_DB,
                last: now,
            });
        let elapsed = now.saturating_duration_since(entry.last).as_secs_f64();
        let alpha = 1.0 - (-elapsed / SMOOTHING.as_secs_f64()).exp();
        entry.db += alpha.max(0.05) * (sample - entry.db);
        entry.last = now;
        self.decide(now);
    }

    /// Forgets a publisher that left.
    pub fn remove(&mut self, publisher: &P) {
        self.publishers.remove(publisher);
        if self.dominant.as_ref() == Some(publisher) {
            self.dominant = None;
        }
        if self
            .challenger
            .as_ref()
            .is_some_and(|(c, _)| c == publisher)
        {
            self.challenger = None;
        }
    }

    fn loudness(&self, publisher: &P, now: Instant) -> f64 {
        match self.publishers.get(publisher) {
            Some(l) if now.saturating_duration_since(l.last) < SILENT_AFTER => l.db,
            _ => SILENCE_DB,
        }
    }

    fn decide(&mut self, now: Instant) {
        let Some((loudest, loudest_db)) = self
            .publishers
            .keys()
            .map(|p| (p.clone(), self.loudness(p, now)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        else {
            return;
        };
        if loudest_db < VOICE_DB {
            self.challenger = None;
            return;
        }
        let Some(dominant) = self.dominant.clone() else {
            self.dominant = Some(loudest);
            return;
        };
        if loudest == dominant || loudest_db < self.loudness(&dominant, now) + SWITCH_MARGIN_DB {
            self.challenger = None;
            return;
        }
        match &self.challenger {
            Some((challenger, since)) if *challenger == loudest => {
                if now.saturating_duration_since(*since) >= SWITCH_HOLD {
                    self.dominant = Some(loudest);
                    self.challenger = None;
                }
            }
            _ => self.challenger = Some((loudest, now)),
        }
    }

    /// The dominant speaker, if anyone has spoken.
    pub fn dominant(&self) -> Option<&P> {
        self.dominant.as_ref()
    }

    /// The `n` loudest publishers now (the dominant speaker always among them).
    pub fn loudest(&self, n: usize, now: Instant) -> Vec<P> {
        let mut all: Vec<(P, f64)> = self
            .publishers
            .keys()
            .map(|p| (p.clone(), self.loudness(p, now)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut chosen: Vec<P> = self.dominant.iter().cloned().collect();
        for (p, _) in all {
            if chosen.len() >= n {
                break;
            }
            if !chosen.contains(&p) {
                chosen.push(p);
            }
        }
        chosen.truncate(n);
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms packets from each (publisher, level) for `ms` milliseconds.
    fn talk(
        t: &mut SpeakerTracker<&'static str>,
        at: &mut Instant,
        ms: u64,
        who: &[(&'static str, u8)],
    ) {
        for _ in 0..ms / 20 {
            *at += Duration::from_millis(20);
            for (p, level) in who {
                t.update(p, *level, *at);
            }
        }
    }

    #[test]
    fn the_floor_changes_only_after_a_clearly_louder_second() {
        let mut t = SpeakerTracker::default();
        let mut now = Instant::now();
        talk(&mut t, &mut now, 2000, &[("ann", 20), ("ben", 90)]);
        assert_eq!(t.dominant(), Some(&"ann"));
        // Ben coughs for 300 ms: Ann keeps the floor.
        talk(&mut t, &mut now, 300, &[("ann", 60), ("ben", 10)]);
        talk(&mut t, &mut now, 500, &[("ann", 20), ("ben", 90)]);
        assert_eq!(t.dominant(), Some(&"ann"));
        // Ben talks for 2 s while Ann listens: the floor moves, after the hold.
        talk(&mut t, &mut now, 800, &[("ann", 90), ("ben", 20)]);
        assert_eq!(t.dominant(), Some(&"ann"), "not before the hold");
        talk(&mut t, &mut now, 1200, &[("ann", 90), ("ben", 20)]);
        assert_eq!(t.dominant(), Some(&"ben"));
    }

    #[test]
    fn background_noise_never_takes_the_floor() {
        let mut t = SpeakerTracker::default();
        let mut now = Instant::now();
        talk(&mut t, &mut now, 3000, &[("hum", 80), ("fan", 95)]);
        assert_eq!(t.dominant(), None);
        talk(
            &mut t,
            &mut now,
            600,
            &[("hum", 80), ("fan", 95), ("voice", 25)],
        );
        assert_eq!(t.dominant(), Some(&"voice"));
    }

    #[test]
    fn last_n_keeps_the_loudest_and_the_dominant_speaker() {
        let mut t = SpeakerTracker::default();
        let mut now = Instant::now();
        talk(
            &mut t,
            &mut now,
            2000,
            &[("a", 30), ("b", 50), ("c", 40), ("d", 100), ("e", 127)],
        );
        assert_eq!(t.dominant(), Some(&"a"));
        assert_eq!(t.loudest(3, now), vec!["a", "c", "b"]);
        // Someone who stopped sending counts as silent.
        talk(&mut t, &mut now, 2000, &[("b", 50), ("c", 40), ("d", 100)]);
        assert_eq!(
            t.loudest(2, now),
            vec!["a", "c"],
            "the dominant speaker stays listed"
        );
        t.remove(&"a");
        assert_eq!(t.dominant(), None);
        assert_eq!(t.loudest(2, now), vec!["c", "b"]);
    }
}
