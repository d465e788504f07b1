//! VP8 over RTP (RFC 7741): our own payloader, because webrtc-rs's writes neither
//! TL0PICIDX nor the temporal layer index, which an SFU and a receiver need to drop upper
//! temporal layers, and only a 7-bit picture id when asked; and the receive side that
//! parses the payload descriptor and puts frames back together from their packets.
//!
//! Every packet starts with the full descriptor browsers send: X=1, a 15-bit picture id,
//! TL0PICIDX, and TID/Y (N set on frames nothing references). One partition per frame
//! (PID 0, S on the first packet). The payload after the descriptor is opaque here: it may
//! be SFrame ciphertext with the codec's first bytes in the clear.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::VideoCodec;
use super::h264_rtp;

/// Bytes of the payload descriptor we write.
pub const DESCRIPTOR_LEN: usize = 6;

/// What a frame's packets say about it (the payload descriptor's fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// Nothing references this frame: a receiver may drop it.
    pub non_reference: bool,
    /// This packet starts the frame (S=1 and partition 0).
    pub start: bool,
    /// The picture id (15 or 7 bits), when present.
    pub picture_id: Option<u16>,
    /// The base layer's picture index, when present.
    pub tl0_pic_idx: Option<u8>,
    /// The temporal layer, when present.
    pub temporal_layer: Option<u8>,
    /// The frame depends only on the base layer: a receiver may switch up here.
    pub layer_sync: bool,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Vp8RtpError {
    /// Shorter than its descriptor says.
    #[error("a VP8 payload of {0} bytes is shorter than its descriptor")]
    Truncated(usize),
}

/// Parses a payload's descriptor; returns it and where the frame bytes start.
pub fn parse(payload: &[u8]) -> Result<(Vp8Descriptor, usize), Vp8RtpError> {
    let truncated = || Vp8RtpError::Truncated(payload.len());
    let first = *payload.first().ok_or_else(truncated)?;
    let mut descriptor = Vp8Descriptor {
        non_reference: first & 0x20 != 0,
        start: first & 0x10 != 0 && first & 0x0f == 0,
        ..Default::default()
    };
    let mut at = 1;
    if first & 0x80 != 0 {
        let extension = *payload.get(at).ok_or_else(truncated)?;
        at += 1;
        if extension & 0x80 != 0 {
            let high = *payload.get(at).ok_or_else(truncated)?;
            at += 1;
            if high & 0x80 != 0 {
                let low = *payload.get(at).ok_or_else(truncated)?;
                at += 1;
                descriptor.picture_id = Some(u16::from(high & 0x7f) << 8 | u16::from(low));
            } else {
                descriptor.picture_id = Some(u16::from(high));
            }
        }
        if extension & 0x40 != 0 {
            descriptor.tl0_pic_idx = Some(*payload.get(at).ok_or_else(truncated)?);
            at += 1;
        }
        if extension & 0x30 != 0 {
            let byte = *payload.get(at).ok_or_else(truncated)?;
            at += 1;
            if extension & 0x20 != 0 {
                descriptor.temporal_layer = Some(byte >> 6);
                descriptor.layer_sync = byte & 0x20 != 0;
            }
        }
    }
    if at > payload.len() {
        return Err(truncated());
    }
    Ok((descriptor, at))
}

/// Whether a VP8 frame (its first bytes, RFC 6386 §9.1) is a keyframe.
pub fn is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x01 == 0)
}

/// The bytes of a VP8 frame that stay in the clear under SFrame, as browsers' encoded
/// transforms leave them: the frame tag, and on keyframes the start code and size too
/// (RFC 6386 §9.1), so that a forwarder can tell keyframes without the key.
pub fn clear_prefix(frame: &[u8]) -> usize {
    let want = if is_keyframe(frame) { 10 } else { 3 };
    want.min(frame.len())
}

/// Writes a stream's frames as packets: picture ids and TL0PICIDX count on from a random
/// start, as RFC 7741 asks.
#[derive(Debug, Clone)]
pub struct Vp8Payloader {
    picture_id: u16,
    tl0_pic_idx: u8,
    max_payload: usize,
}

/// One frame to packetize.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    /// Its temporal layer.
    pub temporal_layer: u8,
    /// It depends on the base layer only.
    pub layer_sync: bool,
    /// Nothing will reference it.
    pub non_reference: bool,
}

impl Vp8Payloader {
    /// A payloader whose packets carry at most `max_payload` bytes each (descriptor
    /// included), starting from `seed`'s picture id and TL0PICIDX.
    pub fn new(max_payload: usize, seed: u32) -> Vp8Payloader {
        Vp8Payloader {
            picture_id: (seed & 0x7fff) as u16,
            tl0_pic_idx: (seed >> 16) as u8,
            max_payload: max_payload.max(DESCRIPTOR_LEN + 1),
        }
    }

    /// The picture id the next frame gets.
    pub fn next_picture_id(&self) -> u16 {
        self.picture_id
    }

    /// Splits `frame` into packet payloads (descriptor and bytes), in order; the last one
    /// gets the RTP marker bit.
    pub fn packetize(&mut self, frame: &[u8], meta: FrameMeta) -> Vec<Vec<u8>> {
        if meta.temporal_layer == 0 {
            self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
        }
        let picture_id = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let room = self.max_payload - DESCRIPTOR_LEN;
        let chunks: Vec<&[u8]> = if frame.is_empty() {
            vec![&[]]
        } else {
            frame.chunks(room).collect()
        };
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut packet = Vec::with_capacity(DESCRIPTOR_LEN + chunk.len());
                let mut first = 0x80; // X: extensions follow
                if meta.non_reference {
                    first |= 0x20;
                }
                if i == 0 {
                    first |= 0x10; // S, partition 0
                }
                packet.push(first);
                packet.push(0x80 | 0x40 | 0x20); // I, L, T
                packet.push(0x80 | (picture_id >> 8) as u8); // M: 15-bit picture id
                packet.push(picture_id as u8);
                packet.push(self.tl0_pic_idx);
                packet.push(
                    (meta.temporal_layer.min(3) << 6) | if meta.layer_sync { 0x20 } else { 0 },
                );
                packet.extend_from_slice(chunk);
                packet
            })
            .collect()
    }
}

/// A frame put back together from its packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    /// The RTP timestamp all its packets share.
    pub timestamp: u32,
    /// The first packet's sequence number.
    pub first_seq: u16,
    /// The descriptor of its first packet (H.264 has none: only `start` is set).
    pub descriptor: Vp8Descriptor,
    /// The frame's bytes (descriptors removed).
    pub data: Vec<u8>,
}

/// Puts frames back together from packets arriving in any order: a frame is complete once
/// its first packet (VP8: S; H.264: a packet that can begin an access unit and does not
/// continue the one before it), its last (marker) and every sequence number between them
/// are there. Frames come out in order: a complete frame behind an incomplete one waits for it
/// (its missing packets may be on their way, NACKed) up to `max_wait`, then the incomplete
/// one is given up and counted. Sans-IO: time comes in with each call.
#[derive(Debug)]
pub struct FrameAssembler {
    /// Packets by extended sequence number: (timestamp, marker, descriptor, bytes).
    packets: BTreeMap<u64, (u32, bool, Vp8Descriptor, Vec<u8>)>,
    /// The highest extended sequence number seen.
    highest: Option<u64>,
    /// The sequence number the next frame should start at (frames before are done).
    next_seq: Option<u64>,
    /// Since when a complete frame has waited for an earlier one.
    blocked_since: Option<Instant>,
    max_wait: Duration,
    codec: VideoCodec,
    /// Packets refused (descriptor that does not parse, too old, over the bound).
    pub dropped: u64,
    /// Times frames were given up (their packets did not come in time).
    pub gaps: u64,
    /// Packets that filled a hole behind the newest one (retransmissions, reordering).
    pub filled: u64,
    /// Packets that came after their frame was released or given up.
    pub late: u64,
}

/// The most packets kept waiting for the rest of their frames.
const MAX_PENDING: usize = 2048;

impl FrameAssembler {
    /// A VP8 assembler that waits up to `max_wait` for a frame's missing packets.
    pub fn new(max_wait: Duration) -> Self {
        Self::with_codec(max_wait, VideoCodec::Vp8)
    }

    /// An assembler for `codec`'s packets (H.264: frames come out as Annex B).
    pub fn with_codec(max_wait: Duration, codec: VideoCodec) -> Self {
        FrameAssembler {
            codec,
            packets: BTreeMap::new(),
            highest: None,
            next_seq: None,
            blocked_since: None,
            max_wait,
            dropped: 0,
            gaps: 0,
            filled: 0,
            late: 0,
        }
    }

    fn extend(&self, seq: u16) -> u64 {
        match self.highest {
            None => u64::from(seq) + (1 << 16),
            Some(highest) => {
                let base = highest & !0xffff;
                let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
                candidates
                    .into_iter()
                    .map(|c| c + u64::from(seq))
                    .min_by_key(|c| c.abs_diff(highest))
                    .unwrap_or(base + u64::from(seq))
            }
        }
    }

    /// One packet in at `now`. Returns the frames it let out, in order.
    pub fn insert(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        now: Instant,
    ) -> Vec<AssembledFrame> {
        let parsed = match self.codec {
            VideoCodec::Vp8 => {
                { parse(payload).map(|(descriptor, offset)| (descriptor, &payload[offset..])) }
                    .map(|(descriptor, bytes)| (descriptor, bytes.to_vec()))
                    .ok()
            }
            VideoCodec::H264 => h264_rtp::depacketize(payload).ok().map(|(start, bytes)| {
                let descriptor = Vp8Descriptor {
                    start,
                    ..Vp8Descriptor::default()
                };
                (descriptor, bytes)
            }),
        };
        let Some((descriptor, bytes)) = parsed else {
            self.dropped += 1;
            return Vec::new();
        };
        let ext = self.extend(seq);
        if self.next_seq.is_some_and(|next| ext < next) {
            self.late += 1;
            self.dropped += 1;
            return Vec::new();
        }
        if self.packets.len() >= MAX_PENDING {
            self.dropped += 1;
            return Vec::new();
        }
        if self.highest.is_some_and(|h| ext < h) && !self.packets.contains_key(&ext) {
            self.filled += 1;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.packets
            .entry(ext)
            .or_insert((timestamp, marker, descriptor, bytes));
        self.poll(now)
    }

    /// The frames that may come out at `now` (a waiting frame whose wait ran out).
    pub fn poll(&mut self, now: Instant) -> Vec<AssembledFrame> {
        let mut out = Vec::new();
        while let Some((first, last)) = self.first_complete() {
            // Before the first frame went out, the lowest packet seen stands for the next
            // one expected: a frame after it waits for the frame it starts.
            let in_order = match self.next_seq {
                Some(next) => first <= next,
                None => self
                    .packets
                    .keys()
                    .next()
                    .is_none_or(|&lowest| first <= lowest),
            };
            if !in_order {
                let since = *self.blocked_since.get_or_insert(now);
                if now.saturating_duration_since(since) < self.max_wait {
                    break;
                }
                self.gaps += 1;
            }
            self.blocked_since = None;
            if let Some(frame) = self.take(first, last) {
                out.push(frame);
            }
        }
        out
    }

    /// The earliest complete frame's first and last extended sequence numbers.
    fn first_complete(&self) -> Option<(u64, u64)> {
        let mut start: Option<u64> = None;
        let mut expected = None;
        let mut run_timestamp = None;
        for (&ext, (timestamp, marker, descriptor, _)) in &self.packets {
            // An H.264 access unit may hold several packets that could begin one (SPS,
            // PPS, the first slice): the next in line with the same timestamp continues.
            let continues = expected == Some(ext) && run_timestamp == Some(*timestamp);
            if descriptor.start && !continues {
                start = Some(ext);
                expected = Some(ext);
                run_timestamp = Some(*timestamp);
            }
            match (start, expected) {
                (Some(first), Some(want)) if want == ext => {
                    expected = Some(ext + 1);
                    if *marker {
                        return Some((first, ext));
                    }
                }
                _ => {
                    start = None;
                    expected = None;
                }
            }
        }
        None
    }

    /// Removes the frame from `first` to `last` and everything before it.
    fn take(&mut self, first: u64, last: u64) -> Option<AssembledFrame> {
        let mut data = Vec::new();
        let mut head = None;
        let keys: Vec<u64> = self.packets.range(..=last).map(|(k, _)| *k).collect();
        for key in keys {
            if let Some((timestamp, _, descriptor, bytes)) = self.packets.remove(&key)
                && key >= first
            {
                if head.is_none() {
                    head = Some((timestamp, descriptor));
                }
                data.extend_from_slice(&bytes);
            }
        }
        self.next_seq = Some(last + 1);
        let (timestamp, descriptor) = head?;
        Some(AssembledFrame {
            timestamp,
            first_seq: (first & 0xffff) as u16,
            descriptor,
            data,
        })
    }

    /// Packets waiting.
    pub fn pending(&self) -> usize {
        self.packets.len()
    }

    /// Whether a complete frame is waiting for an earlier one.
    pub fn is_blocked(&self) -> bool {
        self.blocked_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(layer: u8) -> FrameMeta {
        FrameMeta {
            temporal_layer: layer,
            layer_sync: true,
            non_reference: layer == 2,
        }
    }

    #[test]
    fn descriptors_read_back_as_written() {
        let mut payloader = Vp8Payloader::new(100, 0x0042_7ffe);
        let frame: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let packets = payloader.packetize(&frame, meta(0));
        assert_eq!(packets.len(), 3);
        let (first, offset) = parse(&packets[0]).unwrap();
        assert_eq!(offset, DESCRIPTOR_LEN);
        assert!(first.start);
        assert_eq!(first.picture_id, Some(0x7ffe));
        assert_eq!(first.tl0_pic_idx, Some(0x43));
        assert_eq!(first.temporal_layer, Some(0));
        assert!(!first.non_reference);
        let (second, _) = parse(&packets[1]).unwrap();
        assert!(!second.start);
        // Picture ids wrap at 15 bits; TL0PICIDX counts base-layer frames only.
        let next = payloader.packetize(&frame[..10], meta(2));
        let (d, _) = parse(&next[0]).unwrap();
        assert_eq!(
            (d.picture_id, d.tl0_pic_idx, d.non_reference),
            (Some(0x7fff), Some(0x43), true)
        );
        let after = payloader.packetize(&frame[..10], meta(0));
        let (d, _) = parse(&after[0]).unwrap();
        assert_eq!((d.picture_id, d.tl0_pic_idx), (Some(0), Some(0x44)));
    }

    #[test]
    fn browser_style_short_descriptors_parse() {
        // X=0: just the first byte.
        assert_eq!(parse(&[0x10, 0xaa]).unwrap().1, 1);
        // 7-bit picture id only.
        let (d, at) = parse(&[0x90, 0x80, 0x05, 0xaa]).unwrap();
        assert_eq!((d.picture_id, at), (Some(5), 3));
        // Truncated descriptors are refused.
        for bad in [
            &[][..],
            &[0x80],
            &[0x80, 0x80],
            &[0x80, 0x80, 0x80],
            &[0x80, 0x40],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_reassemble_out_of_order_and_skip_a_lost_one() {
        let mut payloader = Vp8Payloader::new(50, 7);
        let frames: Vec<Vec<u8>> = (0..3u8).map(|n| vec![n; 120]).collect();
        let mut packets = Vec::new();
        let mut seq = 65_530u16;
        for (n, frame) in frames.iter().enumerate() {
            let parts = payloader.packetize(frame, meta(0));
            let count = parts.len();
            for (i, part) in parts.into_iter().enumerate() {
                packets.push((seq, n as u32 * 3000, i + 1 == count, part));
                seq = seq.wrapping_add(1);
            }
        }
        let wait = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut assembler = FrameAssembler::new(wait);
        // Frame 0 whole but reversed; frame 1 loses its middle packet; frame 2 whole.
        let mut out = Vec::new();
        for p in packets[..3].iter().rev() {
            out.extend(assembler.insert(p.0, p.1, p.2, &p.3, t0));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, frames[0]);
        assert_eq!(out[0].timestamp, 0);
        for (i, p) in packets[3..].iter().enumerate() {
            if i == 1 {
                continue;
            }
            out.extend(assembler.insert(p.0, p.1, p.2, &p.3, t0));
        }
        // Frame 2 waits for frame 1's missing packet...
        assert_eq!(out.len(), 1);
        assert!(assembler.is_blocked());
        assert!(assembler.poll(t0 + wait / 2).is_empty());
        // ... and goes out alone when the wait runs out.
        out.extend(assembler.poll(t0 + wait));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].data, frames[2]);
        assert_eq!(out[1].timestamp, 6000);
        assert_eq!(assembler.gaps, 1);
        // The late packet of the skipped frame is refused, not half-assembled.
        let late = &packets[4];
        assert!(
            assembler
                .insert(late.0, late.1, late.2, &late.3, t0 + wait)
                .is_empty()
        );
        assert_eq!(assembler.pending(), 0);
    }

    #[test]
    fn a_retransmission_in_time_completes_the_waiting_frame() {
        let mut payloader = Vp8Payloader::new(50, 1);
        let t0 = Instant::now();
        let mut assembler = FrameAssembler::new(Duration::from_millis(100));
        let mut packets = Vec::new();
        for (n, seq0) in [(0u32, 10u16), (1, 13)] {
            let parts = payloader.packetize(&[n as u8; 120], meta(0));
            let count = parts.len();
            for (i, part) in parts.into_iter().enumerate() {
                packets.push((seq0 + i as u16, n * 3000, i + 1 == count, part));
            }
        }
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i != 1 {
                out.extend(assembler.insert(p.0, p.1, p.2, &p.3, t0));
            }
        }
        assert!(
            out.is_empty(),
            "frame 0 is missing a packet and frame 1 waits for it"
        );
        let p = &packets[1];
        out.extend(assembler.insert(p.0, p.1, p.2, &p.3, t0 + Duration::from_millis(60)));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].data[0], out[1].data[0]), (0, 1));
        assert_eq!(assembler.gaps, 0);
    }

    #[test]
    fn garbage_is_counted_not_assembled() {
        let t0 = Instant::now();
        let mut assembler = FrameAssembler::new(Duration::from_millis(100));
        assert!(assembler.insert(1, 0, true, &[], t0).is_empty());
        assert!(assembler.insert(2, 0, true, &[0x80], t0).is_empty());
        assert_eq!(assembler.dropped, 2);
        // Packets with no start never complete; a flood stops at the bound.
        for seq in 0..5000u16 {
            assembler.insert(seq, 0, false, &[0x00, 1, 2], t0);
        }
        assert!(assembler.pending() <= MAX_PENDING);
        assert!(assembler.dropped > 2000);
    }

    #[test]
    fn keyframes_and_clear_prefixes() {
        assert!(is_keyframe(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!is_keyframe(&[0x11, 0x02]));
        assert_eq!(clear_prefix(&[0u8; 50]), 10);
        assert_eq!(clear_prefix(&[1u8; 50]), 3);
        assert_eq!(clear_prefix(&[1u8; 2]), 2);
    }
}
