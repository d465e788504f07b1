//! The recent packets of one published stream, kept once for all its subscribers (issue
//! 19: NACK is answered with RTX from one history per producer stream, not per
//! subscriber). A ring indexed by sequence number; each slot's buffer is reused, so
//! storing allocates only while the ring first fills.
//!
//! It stores the publisher's packet as it arrived (decrypted): a retransmission is then
//! written for the subscriber like any forwarded copy, with its numbering and ids.

use std::time::Instant;

use crate::rewrite::seq_after;

/// Packets kept for a video stream: over a second at 1 Mbit/s of 1,200-byte packets,
/// and several at audio rates.
pub const VIDEO_HISTORY: usize = 1024;

/// Packets kept for an audio stream: two seconds of 20 ms frames.
pub const AUDIO_HISTORY: usize = 128;

#[derive(Debug, Clone)]
struct Slot {
    seq: Option<u16>,
    at: Option<Instant>,
    packet: Vec<u8>,
}

/// One stream's recent packets by sequence number.
#[derive(Debug, Clone)]
pub struct History {
    slots: Vec<Slot>,
    newest: Option<u16>,
}

impl History {
    /// A history of `capacity` packets (rounded up to a power of two).
    pub fn new(capacity: usize) -> History {
        let capacity = capacity.max(1).next_power_of_two();
        History {
            slots: vec![
                Slot {
                    seq: None,
                    at: None,
                    packet: Vec::new(),
                };
                capacity
            ],
            newest: None,
        }
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.slots.len() - 1)
    }

    /// Keeps `packet`, whose sequence number is `seq`, received at `now`. A packet older
    /// than the ring reaches back is not kept.
    pub fn store(&mut self, seq: u16, packet: &[u8], now: Instant) {
        if let Some(newest) = self.newest {
            let behind = newest.wrapping_sub(seq);
            if seq_after(newest, seq) && usize::from(behind) >= self.slots.len() {
                return;
            }
            if seq_after(seq, newest) {
                self.newest = Some(seq);
            }
        } else {
            self.newest = Some(seq);
        }
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        slot.seq = Some(seq);
        slot.at = Some(now);
        slot.packet.clear();
        slot.packet.extend_from_slice(packet);
    }

    /// The packet `seq` and when it arrived, if it is still kept.
    pub fn get(&self, seq: u16) -> Option<(&[u8], Instant)> {
        let slot = &self.slots[self.index(seq)];
        match (slot.seq, slot.at) {
            (Some(kept), Some(at)) if kept == seq => Some((&slot.packet, at)),
            _ => None,
        }
    }

    /// Memory held by the packets, bytes.
    pub fn heap_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.packet.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_packets_across_wraparound_and_forgets_older_ones() {
        let now = Instant::now();
        let mut history = History::new(100);
        assert_eq!(history.slots.len(), 128);
        for i in 0..300u32 {
            let seq = (65_500 + i) as u16;
            history.store(seq, &seq.to_be_bytes(), now);
        }
        let newest = (65_500u32 + 299) as u16;
        for back in 0..128u16 {
            let seq = newest.wrapping_sub(back);
            let (packet, _) = history.get(seq).expect("kept");
            assert_eq!(packet, seq.to_be_bytes());
        }
        assert!(history.get(newest.wrapping_sub(128)).is_none());
        assert!(history.get(newest.wrapping_add(1)).is_none());
        // A late packet from beyond the ring's reach does not evict a newer one.
        history.store(newest.wrapping_sub(500), b"late", now);
        assert!(history.get(newest.wrapping_sub(500)).is_none());
        // One inside the reach that arrives late is kept.
        let mut gap = History::new(16);
        gap.store(10, b"a", now);
        gap.store(12, b"c", now);
        gap.store(11, b"b", now);
        assert_eq!(gap.get(11).map(|(p, _)| p), Some(&b"b"[..]));
        assert_eq!(gap.get(12).map(|(p, _)| p), Some(&b"c"[..]));
    }

    #[test]
    fn slot_buffers_are_reused_once_the_ring_is_full() {
        let now = Instant::now();
        let mut history = History::new(4);
        for seq in 0..4u16 {
            history.store(seq, &[0; 1200], now);
        }
        let held = history.heap_bytes();
        for seq in 4..400u16 {
            history.store(seq, &[1; 1000], now);
        }
        assert_eq!(history.heap_bytes(), held);
    }
}
