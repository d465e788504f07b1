//! Which earlier frames a RED (RFC 2198) packet repeats, sans-IO; the wire format is
//! `sotto_interceptors::red`, re-exported here.
//!
//! Why: under random loss, Opus's in-band FEC carries only a coarse copy of one previous
//! frame. RED repeats whole earlier frames, so a frame is lost only when its own packet
//! and every packet carrying a copy are lost (p³ at depth 2: 0.1 % of frames at 10 %
//! packet loss).
//!
//! This module owns which earlier frames a packet repeats. It must not decide *when* to
//! use RED (the rate controller does) nor touch the jitter buffer.

use std::collections::VecDeque;

pub use sotto_interceptors::red::{
    Block, MAX_BLOCK_BYTES, MAX_BLOCKS, MAX_TIMESTAMP_OFFSET, RedError, pack, unpack,
};

/// Deepest redundancy we send: each packet repeats at most this many earlier frames.
pub const MAX_DEPTH: usize = 2;

/// The sender's memory of recent frames, to repeat them in later packets.
///
/// A frame is repeated only in packets that follow it without a gap: its sequence number
/// and its frame index are both exactly `k` behind the new packet's. After a DTX pause
/// the timestamp jumps while the sequence number does not, and a receiver that places a
/// repeated frame by `sequence number − k` would put it in the wrong slot, so nothing from
/// before a pause is repeated.
#[derive(Debug, Clone, Default)]
pub struct RedHistory {
    /// (sequence number, frame index, payload), newest last.
    frames: VecDeque<(u16, u64, Vec<u8>)>,
}

impl RedHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Packs the frame `index`, about to go out as `sequence_number`, with up to `depth`
    /// earlier frames (at most [`MAX_DEPTH`]) into `out`, then remembers it. Each frame is
    /// `frame_samples` long (the timestamp offset is `k × frame_samples`).
    #[allow(clippy::too_many_arguments)]
    pub fn pack_next(
        &mut self,
        sequence_number: u16,
        index: u64,
        payload: &[u8],
        depth: usize,
        payload_type: u8,
        frame_samples: u32,
        out: &mut Vec<u8>,
    ) {
        let depth = depth.min(MAX_DEPTH);
        let redundant: Vec<Block<'_>> = self
            .frames
            .iter()
            .filter_map(|(seq, frame_index, data)| {
                let k = index.checked_sub(*frame_index)?;
                let consecutive =
                    k >= 1 && k <= depth as u64 && sequence_number.wrapping_sub(*seq) as u64 == k;
                consecutive.then(|| Block {
                    payload_type,
                    timestamp_offset: (k as u32).saturating_mul(frame_samples),
                    data,
                })
            })
            .collect();
        pack(payload_type, &redundant, payload, out);
        self.frames
            .push_back((sequence_number, index, payload.to_vec()));
        while self.frames.len() > MAX_DEPTH {
            self.frames.pop_front();
        }
    }

    /// Replaces what later packets will repeat of the frame just packed: a leaner copy
    /// (the frame without its DRED extension, which a copy does not need).
    pub fn repeat_last_as(&mut self, copy: Vec<u8>) {
        if let Some(last) = self.frames.back_mut() {
            last.2 = copy;
        }
    }

    /// Forgets everything (after a long pause, or when RED is switched off).
    pub fn clear(&mut self) {
        self.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Opus block `offset` ticks back.
    fn block(offset: u32, data: &[u8]) -> Block<'_> {
        Block {
            payload_type: 111,
            timestamp_offset: offset,
            data,
        }
    }

    #[test]
    fn only_consecutive_frames_are_repeated() {
        let mut history = RedHistory::new();
        let mut out = Vec::new();
        // Frames 0, 1, 2 as packets 10, 11, 12: packet 12 repeats 11 and 10.
        history.pack_next(10, 0, &[0], 2, 111, 960, &mut out);
        assert_eq!(unpack(&out).expect("unpacks").len(), 1);
        history.pack_next(11, 1, &[1], 2, 111, 960, &mut out);
        history.pack_next(12, 2, &[2], 2, 111, 960, &mut out);
        assert_eq!(
            unpack(&out).expect("unpacks"),
            vec![block(1920, &[0]), block(960, &[1]), block(0, &[2])]
        );
        // Depth 1 repeats only the last.
        history.pack_next(13, 3, &[3], 1, 111, 960, &mut out);
        assert_eq!(
            unpack(&out).expect("unpacks"),
            vec![block(960, &[2]), block(0, &[3])]
        );
        // After a DTX pause (frame index jumps, sequence number does not) nothing from
        // before it is repeated.
        history.pack_next(14, 9, &[9], 2, 111, 960, &mut out);
        assert_eq!(unpack(&out).expect("unpacks"), vec![block(0, &[9])]);
        // Sequence numbers wrap.
        let mut history = RedHistory::new();
        history.pack_next(u16::MAX, 0, &[0], 2, 111, 960, &mut out);
        history.pack_next(0, 1, &[1], 2, 111, 960, &mut out);
        assert_eq!(
            unpack(&out).expect("unpacks"),
            vec![block(960, &[0]), block(0, &[1])]
        );
    }
}
