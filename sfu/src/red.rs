//! What the SFU does with RED (RFC 2198) over Opus, sans-IO. It reads only the block
//! headers, which are in the clear even when the blocks are SFrame ciphertext (the engine
//! seals each block on its own), so all of it works on end-to-end encrypted audio too.
//! - [`primary`]: where a RED payload's primary block lies, for a subscriber that did not
//!   negotiate RED and gets plain Opus.
//! - [`Repair`]: a publisher's packet lost on its uplink is rebuilt from the copy a later
//!   packet carries, and forwarded right after that packet. Through an SFU the audio
//!   crosses two lossy hops; forwarded as it came, a frame survives only if its packet or
//!   a copy crosses both (at 20 % loss per hop, 36 % of packets are lost end to end and
//!   depth-2 copies leave about 5 % of frames lost). Rebuilt at the SFU, the uplink's
//!   losses are repaired there, and the listeners' copies cover their own hop only
//!   (about 1 % each). LiveKit rebuilds the same way for subscribers without RED; here
//!   subscribers with RED get the rebuilt packet with as many copies as the publisher's
//!   packets carry: those of the packet it came from, and older frames the SFU holds. (With
//!   only the copies the later packet had, the frames just before an uplink loss kept one
//!   copy fewer on the downlink, and a listener lost 2-4 % of frames at 20 % per hop.)
//!
//! A rebuilt packet takes the lost packet's sequence number. The original may still come
//! late; it is then dropped: SRTP on the subscriber's leg would otherwise encrypt a second,
//! different payload under the same packet index (a reused nonce).

use std::collections::VecDeque;
use std::ops::Range;

use sotto_interceptors::red::{self, Block};

/// Most packets in a row rebuilt from one RED packet (the engine repeats two frames;
/// Chrome one).
pub const MAX_REBUILT: u16 = 4;

/// The largest packet spacing taken for a steady stream, in RTP ticks (120 ms at 48 kHz,
/// Opus's longest frame); a wider one is a pause (DTX), across which copies are not
/// placed.
pub const MAX_STEP: u32 = 5_760;

/// A packet further behind the newest than this is no late packet but a new numbering.
const MAX_LATE: u16 = 1_000;

/// A late packet further behind the newest than this (a second of 20 ms frames) is
/// dropped: too late to be played, and older than the memory below is sure to cover.
const MAX_FORWARDED_LATE: u16 = 50;

/// Rebuilt sequence numbers remembered, to drop their originals if they come late: more
/// than can fall within [`MAX_FORWARDED_LATE`] ([`MAX_REBUILT`] per packet, but at most one
/// per number).
const REBUILT_MEMORY: usize = 64;

/// Frames of a stream held for the copies of rebuilt packets: more than the deepest
/// redundancy (the engine's two, Chrome's one) plus [`MAX_REBUILT`].
const FRAME_MEMORY: usize = 8;

/// The primary block of a RED payload: its payload type and where its data lies in
/// `payload` (always its tail). `None` when the payload does not unpack.
pub fn primary(payload: &[u8]) -> Option<(u8, Range<usize>)> {
    let blocks = red::unpack(payload).ok()?;
    let primary = blocks.last()?;
    Some((
        primary.payload_type,
        payload.len() - primary.data.len()..payload.len(),
    ))
}

/// A packet rebuilt from a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The lost packet's sequence number.
    pub seq: u16,
    /// Its timestamp.
    pub timestamp: u32,
    /// A RED payload: the copy as primary, the copies older than it as redundancy.
    pub payload: Vec<u8>,
}

/// What becomes of a packet that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Forward it, then the packets rebuilt from its copies (oldest first).
    Forward(Vec<Rebuilt>),
    /// Drop it: a packet with its sequence number was rebuilt and forwarded already (or
    /// it is over a second late).
    Superseded,
}

/// One published audio stream's repair state.
#[derive(Debug, Clone, Default)]
pub struct Repair {
    /// The newest packet seen: sequence number and timestamp.
    last: Option<(u16, u32)>,
    /// Sequence numbers rebuilt lately, newest last.
    rebuilt: VecDeque<u16>,
    /// The latest frames of the stream (primaries that came, and rebuilt ones), newest
    /// last.
    frames: VecDeque<Frame>,
}

/// One frame of a RED stream, as its primary block came (ciphertext under end-to-end
/// encryption).
#[derive(Debug, Clone)]
struct Frame {
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    data: Vec<u8>,
}

impl Repair {
    /// A packet with `seq` and `timestamp` arrived; `red` is its payload when it is RED.
    /// Missing packets between the newest one seen and this one are rebuilt when the
    /// stream's spacing is steady across the gap (the timestamps step evenly, at most
    /// [`MAX_STEP`]) and this payload carries a copy at exactly that packet's offset.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, red: Option<&[u8]>) -> Arrival {
        let blocks = red.and_then(|payload| red::unpack(payload).ok());
        let Some((last_seq, last_ts)) = self.last else {
            self.last = Some((seq, timestamp));
            self.remember(seq, timestamp, blocks.as_deref());
            return Arrival::Forward(Vec::new());
        };
        let ahead = seq.wrapping_sub(last_seq);
        if ahead >= 0x8000 && ahead.wrapping_neg() > MAX_LATE {
            // Too far behind to be late: the sender started its numbering again.
            self.last = Some((seq, timestamp));
            self.rebuilt.clear();
            self.frames.clear();
            self.remember(seq, timestamp, blocks.as_deref());
            return Arrival::Forward(Vec::new());
        }
        if ahead == 0 || ahead >= 0x8000 {
            // A duplicate or a late packet: dropped when its number was rebuilt, or when
            // it is so late that the memory of rebuilt numbers may no longer cover it
            // (nor would anyone play it).
            let behind = ahead.wrapping_neg();
            return if self.rebuilt.contains(&seq) || behind > MAX_FORWARDED_LATE {
                Arrival::Superseded
            } else {
                if ahead != 0 {
                    self.remember(seq, timestamp, blocks.as_deref());
                }
                Arrival::Forward(Vec::new())
            };
        }
        self.last = Some((seq, timestamp));
        let rebuilt = match blocks.as_deref() {
            Some(blocks) => self.rebuild(seq, timestamp, last_ts, ahead, blocks),
            None => Vec::new(),
        };
        self.remember(seq, timestamp, blocks.as_deref());
        Arrival::Forward(rebuilt)
    }

    /// The packets missing before `seq` (`ahead` − 1 of them, the newest seen before at
    /// `last_ts`) that `blocks`' copies rebuild, oldest first.
    fn rebuild(
        &mut self,
        seq: u16,
        timestamp: u32,
        last_ts: u32,
        ahead: u16,
        blocks: &[Block<'_>],
    ) -> Vec<Rebuilt> {
        let missing = ahead - 1;
        let span = timestamp.wrapping_sub(last_ts);
        let packets = u32::from(ahead);
        if !(1..=MAX_REBUILT).contains(&missing)
            || !span.is_multiple_of(packets)
            || span / packets == 0
            || span / packets > MAX_STEP
        {
            return Vec::new();
        }
        let step = span / packets;
        let Some((_, copies)) = blocks.split_last() else {
            return Vec::new();
        };
        let copy_at = |offset: u32| {
            copies
                .iter()
                .find(|b| b.timestamp_offset == offset && !b.data.is_empty())
                .copied()
        };
        // As deep as the publisher's redundancy.
        let depth = copies.len() as u32;
        let mut rebuilt = Vec::new();
        for k in (1..=missing).rev() {
            // The packet k before this one.
            let offset = u32::from(k) * step;
            let Some(copy) = copy_at(offset) else {
                continue;
            };
            let lost_seq = seq.wrapping_sub(k);
            let lost_ts = timestamp.wrapping_sub(offset);
            // Its copies, oldest first: from this packet's, or the frames held.
            let older: Vec<Block<'_>> = (1..=depth)
                .rev()
                .filter_map(|j| {
                    let block = copy_at(offset + j * step).or_else(|| {
                        self.frames
                            .iter()
                            .find(|f| {
                                f.seq == lost_seq.wrapping_sub(j as u16)
                                    && f.timestamp == lost_ts.wrapping_sub(j * step)
                            })
                            .map(|f| Block {
                                payload_type: f.payload_type,
                                timestamp_offset: 0,
                                data: &f.data,
                            })
                    })?;
                    Some(Block {
                        timestamp_offset: j * step,
                        ..block
                    })
                })
                .collect();
            let mut payload = Vec::new();
            red::pack(copy.payload_type, &older, copy.data, &mut payload);
            rebuilt.push(Rebuilt {
                seq: lost_seq,
                timestamp: lost_ts,
                payload,
            });
            if self.rebuilt.len() == REBUILT_MEMORY {
                self.rebuilt.pop_front();
            }
            self.rebuilt.push_back(lost_seq);
            self.hold(Frame {
                seq: lost_seq,
                timestamp: lost_ts,
                payload_type: copy.payload_type,
                data: copy.data.to_vec(),
            });
        }
        rebuilt
    }

    /// Holds the primary of a RED packet that came.
    fn remember(&mut self, seq: u16, timestamp: u32, blocks: Option<&[Block<'_>]>) {
        if let Some(primary) = blocks.and_then(<[Block<'_>]>::last) {
            self.hold(Frame {
                seq,
                timestamp,
                payload_type: primary.payload_type,
                data: primary.data.to_vec(),
            });
        }
    }

    fn hold(&mut self, frame: Frame) {
        if self.frames.len() == FRAME_MEMORY {
            self.frames.pop_front();
        }
        self.frames.push_back(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RED payload: `copies` as (offset, data), oldest first, then `primary`.
    fn red_payload(copies: &[(u32, &[u8])], primary: &[u8]) -> Vec<u8> {
        let blocks: Vec<Block<'_>> = copies
            .iter()
            .map(|(offset, data)| Block {
                payload_type: 111,
                timestamp_offset: *offset,
                data,
            })
            .collect();
        let mut out = Vec::new();
        red::pack(111, &blocks, primary, &mut out);
        out
    }

    fn forwarded(arrival: Arrival) -> Vec<Rebuilt> {
        match arrival {
            Arrival::Forward(rebuilt) => rebuilt,
            Arrival::Superseded => panic!("superseded"),
        }
    }

    #[test]
    fn a_primary_is_the_payloads_tail() {
        assert_eq!(primary(&[111, 1, 2, 3]), Some((111, 1..4)));
        let payload = red_payload(&[(1920, &[0xa, 0xa]), (960, &[0xb; 3])], &[0xc; 4]);
        let (payload_type, range) = primary(&payload).expect("a primary");
        assert_eq!(payload_type, 111);
        assert_eq!(&payload[range], &[0xc; 4]);
        assert_eq!(primary(&[]), None);
        assert_eq!(primary(&[0x80 | 111, 0, 0]), None);
        assert_eq!(primary(&[0x80 | 111, 0, 0, 200, 111, 1, 2]), None);
    }

    #[test]
    fn lost_packets_are_rebuilt_from_the_next_ones_copies() {
        let mut repair = Repair::default();
        assert!(forwarded(repair.on_packet(10, 9600, None)).is_empty());
        // 11 and 12 lost; 13 repeats 12 (960 back) and 11 (1920 back).
        let payload = red_payload(&[(1920, b"eleven"), (960, b"twelve")], b"thirteen");
        let rebuilt = forwarded(repair.on_packet(13, 9600 + 3 * 960, Some(&payload)));
        assert_eq!(rebuilt.len(), 2);
        assert_eq!((rebuilt[0].seq, rebuilt[0].timestamp), (11, 9600 + 960));
        assert_eq!((rebuilt[1].seq, rebuilt[1].timestamp), (12, 9600 + 1920));
        // 11 alone; 12 carries 11 as its copy, a frame back.
        let blocks = red::unpack(&rebuilt[0].payload).expect("RED");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].data, b"eleven");
        let blocks = red::unpack(&rebuilt[1].payload).expect("RED");
        assert_eq!(
            (blocks[0].timestamp_offset, blocks[0].data),
            (960, &b"eleven"[..])
        );
        assert_eq!(
            (blocks[1].timestamp_offset, blocks[1].data),
            (0, &b"twelve"[..])
        );
        // The originals, late: dropped, as is a duplicate of what came.
        assert_eq!(repair.on_packet(12, 9600 + 1920, None), Arrival::Superseded);
        assert!(forwarded(repair.on_packet(10, 9600, None)).is_empty());
    }

    #[test]
    fn rebuilt_packets_carry_as_many_copies_as_the_publishers() {
        let mut repair = Repair::default();
        let ten = red_payload(&[(1920, b"eight"), (960, b"nine")], b"ten");
        let eleven = red_payload(&[(1920, b"nine"), (960, b"ten")], b"eleven");
        assert!(forwarded(repair.on_packet(10, 9600, Some(&ten))).is_empty());
        assert!(forwarded(repair.on_packet(11, 9600 + 960, Some(&eleven))).is_empty());
        // 12 and 13 lost; 14 repeats them. Their copies of 10 and 11 come from what the
        // SFU holds; 13's copy of 12 from 14.
        let payload = red_payload(&[(1920, b"twelve"), (960, b"thirteen")], b"fourteen");
        let rebuilt = forwarded(repair.on_packet(14, 9600 + 4 * 960, Some(&payload)));
        let blocks = |payload: &[u8]| -> Vec<(u32, Vec<u8>)> {
            red::unpack(payload)
                .expect("RED")
                .iter()
                .map(|b| (b.timestamp_offset, b.data.to_vec()))
                .collect()
        };
        assert_eq!(rebuilt.len(), 2);
        assert_eq!(
            blocks(&rebuilt[0].payload),
            [
                (1920, b"ten".to_vec()),
                (960, b"eleven".to_vec()),
                (0, b"twelve".to_vec())
            ]
        );
        assert_eq!(
            blocks(&rebuilt[1].payload),
            [
                (1920, b"eleven".to_vec()),
                (960, b"twelve".to_vec()),
                (0, b"thirteen".to_vec())
            ]
        );
        // 15 lost and 16 repeats only it (its publisher went down to one copy): one copy.
        let payload = red_payload(&[(960, b"fifteen")], b"sixteen");
        let rebuilt = forwarded(repair.on_packet(16, 9600 + 6 * 960, Some(&payload)));
        assert_eq!(
            blocks(&rebuilt[0].payload),
            [(960, b"fourteen".to_vec()), (0, b"fifteen".to_vec())]
        );
    }

    #[test]
    fn nothing_is_placed_across_a_pause_or_without_a_copy() {
        let mut repair = Repair::default();
        repair.on_packet(10, 0, None);
        // 11 lost, and the timestamps do not step evenly (a DTX pause): nothing rebuilt.
        let payload = red_payload(&[(960, b"x")], b"y");
        assert!(forwarded(repair.on_packet(12, 960 + 50_000, Some(&payload))).is_empty());
        // 13 lost; 14 is not RED.
        assert!(forwarded(repair.on_packet(14, 960 + 50_000 + 1920, None)).is_empty());
        // 15, 16 lost; 17's copy is only one back: 16 comes back, 15 does not.
        let payload = red_payload(&[(960, b"sixteen")], b"seventeen");
        let rebuilt =
            forwarded(repair.on_packet(17, 960 + 50_000 + 1920 * 2 + 960, Some(&payload)));
        assert_eq!(rebuilt.len(), 1);
        assert_eq!(rebuilt[0].seq, 16);
        // A gap too long to be worth it.
        let payload = red_payload(&[(960, b"x")], b"y");
        assert!(forwarded(repair.on_packet(27, 960 * 100, Some(&payload))).is_empty());
    }

    #[test]
    fn a_packet_over_a_second_late_is_dropped() {
        let mut repair = Repair::default();
        repair.on_packet(1_000, 0, None);
        assert!(forwarded(repair.on_packet(960, 0, None)).is_empty());
        assert_eq!(repair.on_packet(940, 0, None), Arrival::Superseded);
    }

    #[test]
    fn a_new_numbering_starts_over() {
        let mut repair = Repair::default();
        repair.on_packet(30_000, 0, None);
        // Far behind: a restart, not a late packet; the gap after it is repaired again.
        assert!(forwarded(repair.on_packet(100, 0, None)).is_empty());
        let payload = red_payload(&[(960, b"hundred-one")], b"hundred-two");
        let rebuilt = forwarded(repair.on_packet(102, 1920, Some(&payload)));
        assert_eq!(rebuilt.len(), 1);
        assert_eq!(rebuilt[0].seq, 101);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut repair = Repair::default();
        repair.on_packet(65_535, 0, None);
        let payload = red_payload(&[(960, b"zero")], b"one");
        let rebuilt = forwarded(repair.on_packet(1, 1920, Some(&payload)));
        assert_eq!(rebuilt.len(), 1);
        assert_eq!((rebuilt[0].seq, rebuilt[0].timestamp), (0, 960));
    }
}
