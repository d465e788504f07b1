//! Whether a call's media flows, both ways: what decides that a call is connected (a
//! connection that is up is not enough: a lost DTLS flight can leave one end up seconds
//! before the other, and an end can be up while nothing it receives can be used) and what
//! notices, once it is, that media stopped arriving. Sans-IO: the call hands it counters
//! and instants.

use std::time::{Duration, Instant};

/// How long media may stop before the call calls it a stall (issue 18: "0 packets for 2 s
/// while the peer says it sends").
pub const STALL_AFTER: Duration = Duration::from_secs(2);

/// The counters the watch reads, all monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowSample {
    /// Audio packets we received from the peer.
    pub received: u64,
    /// Times the peer acknowledged our packets: transport-wide feedback batches that say
    /// one arrived, plus RTCP report blocks about our stream.
    pub heard: u64,
    /// Audio packets we sent.
    pub sent: u64,
    /// Packets the peer's sender reports say it sent.
    pub peer_sent: u64,
}

impl FlowSample {
    /// Media has gone both ways: we received the peer's and the peer acknowledged ours.
    pub fn both_ways(&self) -> bool {
        self.received > 0 && self.heard > 0
    }
}

/// Which way media stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Nothing arrived for [`STALL_AFTER`] while the peer's reports say it kept sending.
    Inbound,
    /// We kept sending and the peer acknowledged nothing for [`STALL_AFTER`].
    Outbound,
}

impl Stall {
    /// For the call's log and end reason.
    pub fn describe(self) -> &'static str {
        match self {
            Stall::Inbound => "the peer's media stopped arriving while it says it sends",
            Stall::Outbound => "the peer stopped acknowledging our media",
        }
    }
}

/// Watches the counters of a connected call.
#[derive(Debug, Clone)]
pub struct FlowWatch {
    last: FlowSample,
    received_moved: Instant,
    heard_moved: Instant,
    /// When the peer's sender reports last said it sent more.
    peer_sent_moved: Option<Instant>,
    sent_moved: Instant,
    /// The sample when a stall was found, until media moves both ways past it.
    stalled: Option<(Stall, FlowSample)>,
}

impl FlowWatch {
    /// Starts watching at `now`, with the counters as they are.
    pub fn new(now: Instant, sample: FlowSample) -> Self {
        FlowWatch {
            last: sample,
            received_moved: now,
            heard_moved: now,
            peer_sent_moved: None,
            sent_moved: now,
            stalled: None,
        }
    }

    /// Takes new counters at `now`. Returns a stall the first time one is found (not
    /// again until media has moved both ways past it).
    pub fn update(&mut self, now: Instant, sample: FlowSample) -> Option<Stall> {
        if sample.received > self.last.received {
            self.received_moved = now;
        }
        if sample.heard > self.last.heard {
            self.heard_moved = now;
        }
        if sample.sent > self.last.sent {
            self.sent_moved = now;
        }
        if sample.peer_sent > self.last.peer_sent {
            self.peer_sent_moved = Some(now);
        }
        self.last = sample;
        if let Some((_, at)) = self.stalled {
            if sample.received > at.received && sample.heard > at.heard {
                self.stalled = None;
            }
            return None;
        }
        let inbound = now.saturating_duration_since(self.received_moved) >= STALL_AFTER
            && self
                .peer_sent_moved
                .is_some_and(|moved| moved > self.received_moved);
        let outbound = now.saturating_duration_since(self.heard_moved) >= STALL_AFTER
            && self.sent_moved > self.heard_moved;
        let stall = if inbound {
            Stall::Inbound
        } else if outbound {
            Stall::Outbound
        } else {
            return None;
        };
        self.stalled = Some((stall, sample));
        Some(stall)
    }

    /// Whether a stall found earlier is over (media moved both ways since).
    pub fn recovered(&self) -> bool {
        self.stalled.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(received: u64, heard: u64, sent: u64, peer_sent: u64) -> FlowSample {
        FlowSample {
            received,
            heard,
            sent,
            peer_sent,
        }
    }

    #[test]
    fn both_ways_needs_arrivals_and_acknowledgements() {
        assert!(!sample(0, 0, 10, 0).both_ways());
        assert!(!sample(5, 0, 10, 0).both_ways());
        assert!(!sample(0, 3, 10, 0).both_ways());
        assert!(sample(1, 1, 10, 0).both_ways());
    }

    #[test]
    fn media_that_keeps_moving_is_no_stall() {
        let start = Instant::now();
        let mut watch = FlowWatch::new(start, sample(1, 1, 1, 0));
        for s in 1..30u64 {
            let now = start + Duration::from_secs(s);
            assert_eq!(
                watch.update(now, sample(50 * s, 10 * s, 50 * s, 50 * s)),
                None
            );
        }
    }

    #[test]
    fn a_peer_that_says_it_sends_while_nothing_arrives_is_an_inbound_stall() {
        let start = Instant::now();
        let mut watch = FlowWatch::new(start, sample(100, 10, 100, 100));
        let at = |s: u64| start + Duration::from_secs(s);
        // Arrivals stop; our packets are still acknowledged; its reports count on.
        assert_eq!(watch.update(at(1), sample(100, 20, 150, 150)), None);
        assert_eq!(
            watch.update(at(2), sample(100, 30, 200, 200)),
            Some(Stall::Inbound)
        );
        // Reported once, until media moves both ways again.
        assert_eq!(watch.update(at(3), sample(100, 40, 250, 250)), None);
        assert!(!watch.recovered());
        assert_eq!(watch.update(at(4), sample(120, 50, 300, 300)), None);
        assert!(watch.recovered());
    }

    #[test]
    fn a_peer_that_stopped_sending_is_no_stall() {
        // Its input ended: no arrivals, and its reports say it sends nothing more.
        let start = Instant::now();
        let mut watch = FlowWatch::new(start, sample(100, 10, 100, 100));
        for s in 1..10u64 {
            let now = start + Duration::from_secs(s);
            assert_eq!(watch.update(now, sample(100, 10 + s, 100 + s, 100)), None);
        }
    }

    #[test]
    fn sending_unacknowledged_is_an_outbound_stall() {
        let start = Instant::now();
        let mut watch = FlowWatch::new(start, sample(100, 10, 100, 100));
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(watch.update(at(1), sample(150, 10, 150, 150)), None);
        assert_eq!(
            watch.update(at(2), sample(200, 10, 200, 200)),
            Some(Stall::Outbound)
        );
        assert!(!watch.recovered());
    }

    #[test]
    fn not_sending_and_not_acknowledged_is_no_stall() {
        // Our input ended: nothing to acknowledge.
        let start = Instant::now();
        let mut watch = FlowWatch::new(start, sample(100, 10, 100, 100));
        for s in 1..10u64 {
            let now = start + Duration::from_secs(s);
            assert_eq!(
                watch.update(now, sample(100 + 50 * s, 10, 100, 100 + 50 * s)),
                None
            );
        }
    }
}
