//! Forwarded media waiting for the driver, in one lane per send worker.
//!
//! Every subscriber belongs to one lane (its slot index modulo the lane count), and all of
//! its forwarded datagrams go into that lane's outboxes. A driver that gives each lane to
//! one worker, sending that lane's outboxes in the order they were filled, therefore keeps
//! each subscriber's packets in order while the workers send side by side on one socket.
//! With one lane (the default) this is the single queue the core always had.

use bytes::BytesMut;

use super::fanout::Outbox;
use crate::leg::Transmit;

/// Outboxes filled in turn for one send worker.
/// Emptied outboxes a lane keeps at least (1,024 datagrams), whatever its last batch.
const KEEP_OUTBOXES: usize = 16;

#[derive(Debug)]
struct Lane {
    outboxes: Vec<Outbox>,
    /// The outbox being filled (those before it are full).
    filling: usize,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            outboxes: vec![Outbox::new()],
            filling: 0,
        }
    }

    /// The outboxes holding anything.
    fn used(&self) -> usize {
        (self.filling + 1).min(self.outboxes.len())
    }
}

/// The lanes, and where [`Lanes::pop`] stands when the core is drained datagram by
/// datagram.
#[derive(Debug)]
pub(super) struct Lanes {
    lanes: Vec<Lane>,
    /// (lane, outbox, datagram) next for [`Lanes::pop`].
    drained: (usize, usize, usize),
}

impl Lanes {
    /// `count` lanes (at least one).
    pub(super) fn new(count: usize) -> Lanes {
        Lanes {
            lanes: (0..count.max(1)).map(|_| Lane::new()).collect(),
            drained: (0, 0, 0),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.lanes.len()
    }

    /// Outboxes holding anything, in every lane.
    pub(super) fn used_outboxes(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| {
                let current = lane.outboxes.get(lane.filling);
                lane.filling + usize::from(current.is_some_and(|o| !o.is_empty()))
            })
            .sum()
    }

    /// The lane of the subscriber in slot `index`.
    pub(super) fn of(&self, index: usize) -> usize {
        index % self.lanes.len()
    }

    /// The outbox `lane` is filling.
    pub(super) fn current(&mut self, lane: usize) -> &mut Outbox {
        let lane = &mut self.lanes[lane];
        if lane.filling >= lane.outboxes.len() {
            lane.outboxes.push(Outbox::new());
        }
        &mut lane.outboxes[lane.filling]
    }

    /// `lane`'s outbox is full: fill the next one.
    pub(super) fn advance(&mut self, lane: usize) {
        self.lanes[lane].filling += 1;
    }

    /// Trades `lane`'s filled outboxes for `spare` (emptied ones, or none). Gives the
    /// datagrams and bytes handed over.
    pub(super) fn swap(&mut self, lane: usize, spare: &mut Vec<Outbox>) -> (u64, u64) {
        let filled = &mut self.lanes[lane];
        let used = filled.used();
        let mut datagrams = 0;
        let mut bytes = 0;
        for outbox in &filled.outboxes[..filled.used()] {
            datagrams += outbox.len() as u64;
            bytes += outbox.datagrams().map(|(d, _)| d.len() as u64).sum::<u64>();
        }
        for outbox in spare.iter_mut() {
            outbox.clear();
        }
        std::mem::swap(&mut filled.outboxes, spare);
        // Room for twice this batch and at least KEEP_OUTBOXES: what a burst needed (a
        // backlog read at once) is freed once it has passed, not kept for good.
        filled
            .outboxes
            .truncate(used.saturating_mul(2).max(KEEP_OUTBOXES));
        if filled.outboxes.is_empty() {
            filled.outboxes.push(Outbox::new());
        }
        filled.filling = 0;
        self.drained = (0, 0, 0);
        (datagrams, bytes)
    }

    /// The next queued datagram, lane by lane; once all are taken, every outbox is
    /// emptied for reuse.
    pub(super) fn pop(&mut self) -> Option<Transmit> {
        loop {
            let (lane, outbox, at) = self.drained;
            let Some(current) = self.lanes.get(lane) else {
                self.reset();
                return None;
            };
            if outbox >= current.used() {
                self.drained = (lane + 1, 0, 0);
                continue;
            }
            let (buffers, addresses) = current.outboxes[outbox].parts();
            if at < buffers.len() {
                self.drained = (lane, outbox, at + 1);
                return Some(Transmit {
                    to: addresses[at],
                    payload: BytesMut::from(&buffers[at][..]),
                });
            }
            self.drained = (lane, outbox + 1, 0);
        }
    }

    fn reset(&mut self) {
        for lane in &mut self.lanes {
            for outbox in &mut lane.outboxes {
                outbox.clear();
            }
            lane.filling = 0;
        }
        self.drained = (0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_stays_in_its_lane_and_pop_drains_every_lane_in_order() {
        let mut lanes = Lanes::new(3);
        assert_eq!(lanes.count(), 3);
        assert_eq!((lanes.of(0), lanes.of(4), lanes.of(5)), (0, 1, 2));
        for (lane, byte) in [(0, 1u8), (2, 3), (0, 2), (1, 9)] {
            lanes
                .current(lane)
                .push_for_test(&[byte], ([10, 0, 0, byte], 5).into());
        }
        let popped: Vec<u8> = std::iter::from_fn(|| lanes.pop())
            .map(|t| t.payload[0])
            .collect();
        assert_eq!(popped, [1, 2, 9, 3]);
        // Drained: everything was cleared for reuse.
        assert!(lanes.pop().is_none());
        assert!(lanes.current(0).is_empty());
    }

    #[test]
    fn swap_hands_over_every_filled_outbox_and_counts_it() {
        let mut lanes = Lanes::new(2);
        for i in 0..(crate::core::fanout::OUTBOX_CAPACITY + 3) {
            if lanes.current(1).is_full() {
                lanes.advance(1);
            }
            lanes
                .current(1)
                .push_for_test(&[i as u8; 10], ([10, 0, 0, 1], 5).into());
        }
        let mut spare = Vec::new();
        assert_eq!(
            lanes.swap(1, &mut spare),
            (crate::core::fanout::OUTBOX_CAPACITY as u64 + 3, 10 * 67)
        );
        assert_eq!(spare.len(), 2);
        assert_eq!(spare[1].len(), 3);
        // The lane starts again with a fresh outbox; the other lane was untouched.
        assert!(lanes.current(1).is_empty());
        let mut other = Vec::new();
        assert_eq!(lanes.swap(0, &mut other), (0, 0));
    }

    #[test]
    fn a_bursts_outboxes_are_freed_once_it_has_passed() {
        let mut lanes = Lanes::new(1);
        let fill = |lanes: &mut Lanes, datagrams: usize| {
            for _ in 0..datagrams {
                if lanes.current(0).is_full() {
                    lanes.advance(0);
                }
                lanes
                    .current(0)
                    .push_for_test(&[0; 10], ([10, 0, 0, 1], 5).into());
            }
        };
        // A burst of 40 outboxes' worth, handed over, then handed back emptied.
        let burst = 40 * crate::core::fanout::OUTBOX_CAPACITY;
        fill(&mut lanes, burst);
        assert_eq!(lanes.used_outboxes(), 40);
        let mut spare = Vec::new();
        lanes.swap(0, &mut spare);
        assert_eq!(spare.len(), 40);
        assert_eq!(lanes.used_outboxes(), 0);
        // The next batch is small: the lane keeps room for twice it, at least the floor.
        fill(&mut lanes, 10);
        lanes.swap(0, &mut spare);
        assert_eq!(lanes.lanes[0].outboxes.len(), KEEP_OUTBOXES);
        // A batch of 12 outboxes keeps 24.
        fill(&mut lanes, 12 * crate::core::fanout::OUTBOX_CAPACITY);
        let mut spare2: Vec<Outbox> = (0..40).map(|_| Outbox::new()).collect();
        lanes.swap(0, &mut spare2);
        assert_eq!(spare2.iter().filter(|o| !o.is_empty()).count(), 12);
        assert_eq!(lanes.lanes[0].outboxes.len(), 24);
    }
}
