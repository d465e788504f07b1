//! Per-connection flood control, sans-IO (the caller passes `now`).
//!
//! Two token buckets: one meters messages (rate and burst), the other meters strikes
//! (rejected messages). A client that runs out of strikes is abusive and is disconnected.

use std::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `per_sec` tokens a second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, per_sec: f64, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            per_sec,
            tokens: capacity,
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with an incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Accept,
    /// Drop it and answer `rate_limited`.
    Drop,
    /// Close the connection as abusive.
    Disconnect,
}

/// A connection's message meter and strike count.
#[derive(Debug, Clone)]
pub struct FloodGuard {
    messages: TokenBucket,
    strikes: TokenBucket,
}

impl FloodGuard {
    /// `rate_per_sec` sustained with `burst` on top; `max_strikes` rejections allowed,
    /// refilled at a tenth of that per second.
    pub fn new(rate_per_sec: u32, burst: u32, max_strikes: u32, now: Instant) -> Self {
        FloodGuard {
            messages: TokenBucket::new(burst, f64::from(rate_per_sec), now),
            strikes: TokenBucket::new(max_strikes, f64::from(max_strikes) / 10.0, now),
        }
    }

    /// Meter one incoming message.
    pub fn on_message(&mut self, now: Instant) -> Verdict {
        if self.messages.try_take(now) {
            Verdict::Accept
        } else {
            self.strike(now)
        }
    }

    /// Count one rejected message (invalid, unauthenticated, or rate-limited).
    pub fn strike(&mut self, now: Instant) -> Verdict {
        if self.strikes.try_take(now) {
            Verdict::Drop
        } else {
            Verdict::Disconnect
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_drops_then_disconnect() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(10, 20, 5, t0);
        let verdicts: Vec<Verdict> = (0..30).map(|_| guard.on_message(t0)).collect();
        assert!(verdicts[..20].iter().all(|v| *v == Verdict::Accept));
        assert!(verdicts[20..25].iter().all(|v| *v == Verdict::Drop));
        assert_eq!(verdicts[25], Verdict::Disconnect);
    }

    #[test]
    fn sustained_rate_is_never_limited() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(10, 1, 1, t0);
        for i in 1..=1000u32 {
            let now = t0 + Duration::from_millis(100) * i;
            assert_eq!(guard.on_message(now), Verdict::Accept, "message {i}");
        }
    }

    #[test]
    fn strikes_refill_over_time() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(1, 1, 10, t0);
        for _ in 0..10 {
            assert_eq!(guard.strike(t0), Verdict::Drop);
        }
        assert_eq!(guard.strike(t0), Verdict::Disconnect);
        // 10 strikes refill at 1/s: after 3 s three more are allowed.
        let later = t0 + Duration::from_secs(3);
        for _ in 0..3 {
            assert_eq!(guard.strike(later), Verdict::Drop);
        }
        assert_eq!(guard.strike(later), Verdict::Disconnect);
    }
}
