//! The receiving end of a video stream, sans-IO: packets in (with the instant they came),
//! frames out in order, keyframe requests when a frame is given up or the decoder cannot
//! go on, and the decoder's side of it (a frame that cannot be decoded waits for a
//! keyframe). The call's receiver task and decode thread drive these with real packets and
//! clocks; the tests drive them through a simulated network with injected time.

use std::time::{Duration, Instant};

use sotto_h264::H264Decoder;
use sotto_vpx::Vp8Decoder;

use super::vp8_rtp::{AssembledFrame, FrameAssembler};
use super::{VideoCodec, VideoError, VideoFrame};

/// Whether a frame of `codec` is a keyframe.
pub fn is_keyframe(codec: VideoCodec, frame: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => super::vp8_rtp::is_keyframe(frame),
        VideoCodec::H264 => sotto_h264::is_keyframe(frame),
    }
}

/// How long a complete frame waits for an earlier incomplete one (its NACKed packets)
/// before the earlier one is given up.
///
/// A packet whose retransmission is lost too needs a second NACK: about two round trips
/// and a NACK delay after its gap opened, plus a frame interval when it ended its frame
/// (the gap shows only when the next frame begins). Giving the frame up sooner costs a
/// keyframe round trip on top (measured at 5 % loss per hop: 150 ms gave up 1-2 frames a
/// listener in 20 s, each a freeze of 300-400 ms).
pub const REORDER_WAIT: Duration = Duration::from_millis(250);

/// The least time between two keyframe requests (PLI) for one stream: a keyframe takes a
/// round trip and an encode to come, and asking again meanwhile only makes more of them.
pub const PLI_SPACING: Duration = Duration::from_millis(300);

/// Frames from packets, and when to ask for a keyframe. A frame that follows a missing
/// one it may depend on is not handed on, nor is anything after it until a keyframe: VP8
/// has no frame numbers of its own, so a decoder fed such a frame decodes it against the
/// wrong reference without an error and shows a damaged picture. What is missing is read
/// from the payload descriptors (RFC 7741): a break in TL0PICIDX when the stream has
/// temporal layers, else in the picture id, else a frame given up (H.264 frames carry no
/// such numbers here: a frame given up is what tells).
#[derive(Debug)]
pub struct VideoReceiver {
    codec: VideoCodec,
    assembler: FrameAssembler,
    given_up: u64,
    /// A frame was given up since the last one handed on.
    gave_up_since: bool,
    need_keyframe: bool,
    last_pli: Option<Instant>,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
    /// A frame that later ones may reference is missing: wait for a keyframe.
    broken: bool,
    /// Frames not handed on because one they may depend on is missing.
    pub skipped: u64,
}

impl Default for VideoReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl VideoReceiver {
    /// A VP8 receiver that waits [`REORDER_WAIT`] for missing packets.
    pub fn new() -> VideoReceiver {
        Self::with_codec(VideoCodec::Vp8)
    }

    /// A receiver of `codec` that waits [`REORDER_WAIT`] for missing packets.
    pub fn with_codec(codec: VideoCodec) -> VideoReceiver {
        VideoReceiver {
            codec,
            assembler: FrameAssembler::with_codec(REORDER_WAIT, codec),
            given_up: 0,
            gave_up_since: false,
            need_keyframe: false,
            last_pli: None,
            last_picture_id: None,
            last_tl0: None,
            broken: false,
            skipped: 0,
        }
    }

    /// One RTP packet of the stream, arrived `now`; the frames it completes, in order.
    pub fn packet(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        now: Instant,
    ) -> Vec<AssembledFrame> {
        let frames = self.assembler.insert(seq, timestamp, marker, payload, now);
        self.hand_on(frames)
    }

    /// The frames whose wait ran out by `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<AssembledFrame> {
        let frames = self.assembler.poll(now);
        self.hand_on(frames)
    }

    /// The frames the decoder can use, of those the assembler let out.
    fn hand_on(&mut self, frames: Vec<AssembledFrame>) -> Vec<AssembledFrame> {
        if self.assembler.gaps != self.given_up {
            self.given_up = self.assembler.gaps;
            self.gave_up_since = true;
        }
        let mut usable = Vec::with_capacity(frames.len());
        for frame in frames {
            if self.follows_a_missing_frame(&frame) {
                self.broken = true;
            }
            if is_keyframe(self.codec, &frame.data) {
                // What the frames held back asked for has come.
                self.broken = false;
                self.need_keyframe = false;
            }
            self.gave_up_since = false;
            let descriptor = frame.descriptor;
            if descriptor.picture_id.is_some() {
                self.last_picture_id = descriptor.picture_id;
            }
            if descriptor.temporal_layer == Some(0) {
                self.last_tl0 = descriptor.tl0_pic_idx;
            }
            if self.broken {
                self.skipped += 1;
                self.need_keyframe = true;
            } else {
                usable.push(frame);
            }
        }
        usable
    }

    /// Whether a frame that `frame` may reference is missing.
    fn follows_a_missing_frame(&self, frame: &AssembledFrame) -> bool {
        let descriptor = &frame.descriptor;
        match (
            descriptor.temporal_layer,
            descriptor.tl0_pic_idx,
            self.last_tl0,
        ) {
            // A base-layer frame references the base-layer frame before it.
            (Some(0), Some(tl0), Some(last)) => tl0 != last.wrapping_add(1),
            // An upper-layer frame: its base-layer frame must be the last one seen (a
            // missing upper-layer frame it might reference goes unnoticed).
            (Some(_), Some(tl0), Some(last)) => tl0 != last,
            _ => match (descriptor.picture_id, self.last_picture_id) {
                (Some(id), Some(last)) => {
                    // 15-bit picture ids wrap at 2^15, 7-bit ones at 2^7.
                    id != last.wrapping_add(1) & 0x7fff && id != last.wrapping_add(1) & 0x7f
                }
                _ => self.gave_up_since,
            },
        }
    }

    /// The decoder (or whatever is behind it) cannot go on without a keyframe.
    pub fn want_keyframe(&mut self) {
        self.need_keyframe = true;
    }

    /// Whether to send a keyframe request `now` (then it counts as sent).
    pub fn pli_due(&mut self, now: Instant) -> bool {
        let spaced = self
            .last_pli
            .is_none_or(|at| now.saturating_duration_since(at) >= PLI_SPACING);
        if self.need_keyframe && spaced {
            self.need_keyframe = false;
            self.last_pli = Some(now);
            return true;
        }
        false
    }

    /// The assembler, for its counters.
    pub fn assembler(&self) -> &FrameAssembler {
        &self.assembler
    }
}

/// What became of one frame at the decoder.
#[derive(Debug)]
pub enum Decoded {
    /// A picture to show.
    Picture {
        /// The picture.
        picture: VideoFrame,
        /// Whether the frame was a keyframe.
        keyframe: bool,
    },
    /// Not shown: damaged, undecodable, or not a keyframe while one is awaited. A keyframe
    /// is needed.
    Dropped,
    /// Decoded, but no picture came out (yet).
    Nothing,
}

/// The codec library behind a [`FrameDecoder`].
enum Inner {
    Vp8(Vp8Decoder),
    H264(Box<H264Decoder>),
}

/// A decoder (VP8 or H.264) that, after a frame it cannot decode, shows nothing until a
/// keyframe.
pub struct FrameDecoder {
    decoder: Inner,
    codec: VideoCodec,
    waiting_for_keyframe: bool,
}

impl FrameDecoder {
    /// A VP8 decoder on `threads` threads, waiting for its first keyframe.
    pub fn new(threads: u32) -> Result<FrameDecoder, VideoError> {
        Self::with_codec(VideoCodec::Vp8, threads)
    }

    /// A decoder of `codec` (VP8 on `threads` threads; OpenH264 on one).
    pub fn with_codec(codec: VideoCodec, threads: u32) -> Result<FrameDecoder, VideoError> {
        let decoder = match codec {
            VideoCodec::Vp8 => Inner::Vp8(Vp8Decoder::new(threads)?),
            VideoCodec::H264 => Inner::H264(Box::new(H264Decoder::new()?)),
        };
        Ok(FrameDecoder {
            decoder,
            codec,
            waiting_for_keyframe: true,
        })
    }

    /// Decodes one frame.
    pub fn decode(&mut self, frame: &[u8]) -> Decoded {
        let keyframe = is_keyframe(self.codec, frame);
        if self.waiting_for_keyframe && !keyframe {
            return Decoded::Dropped;
        }
        let picture = match &mut self.decoder {
            Inner::Vp8(decoder) => match decoder.decode(frame) {
                Ok(Some(picture)) if !picture.corrupted => {
                    Ok(Some(VideoFrame::from_decoded(picture)))
                }
                Ok(None) => Ok(None),
                Ok(Some(_)) | Err(_) => Err(()),
            },
            Inner::H264(decoder) => match decoder.decode(frame) {
                Ok(Some(picture)) => Ok(Some(VideoFrame::from_h264(picture))),
                Ok(None) => Ok(None),
                Err(_) => Err(()),
            },
        };
        match picture {
            Ok(Some(picture)) => {
                self.waiting_for_keyframe = false;
                Decoded::Picture { picture, keyframe }
            }
            Ok(None) => Decoded::Nothing,
            Err(()) => {
                self.waiting_for_keyframe = true;
                Decoded::Dropped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::vp8_rtp::{FrameMeta, Vp8Payloader};

    const KEY: &[u8] = &[0x00, 1, 2, 3];
    const DELTA: &[u8] = &[0x01, 1, 2, 3];

    /// Feeds frames (each one packet) through a receiver; returns the frames handed on, by
    /// their index in `frames`. `lost` frames are never sent (their sequence numbers
    /// stay gaps, so they are given up once the wait runs out).
    fn feed(frames: &[(FrameMeta, &[u8])], lost: &[usize], strip: bool) -> Vec<usize> {
        let t0 = Instant::now();
        let mut payloader = Vp8Payloader::new(1200, 5);
        let mut receiver = VideoReceiver::new();
        let mut out = Vec::new();
        for (index, (meta, data)) in frames.iter().enumerate() {
            let mut payload = payloader.packetize(data, *meta).remove(0);
            if strip {
                // No picture id, no TL0PICIDX: only X and S over the frame.
                payload = [&[payload[0] & !0x80][..], &payload[6..]].concat();
            }
            if lost.contains(&index) {
                continue;
            }
            let now = t0 + REORDER_WAIT * 2 * index as u32;
            for frame in receiver.packet(index as u16, index as u32 * 3000, true, &payload, now) {
                out.push(frame.timestamp as usize / 3000);
            }
        }
        out
    }

    fn layer(temporal_layer: u8) -> FrameMeta {
        FrameMeta {
            temporal_layer,
            layer_sync: false,
            non_reference: false,
        }
    }

    #[test]
    fn frames_after_a_missing_one_wait_for_a_keyframe() {
        let base = |data| (layer(0), data);
        let frames = [
            base(KEY),
            base(DELTA),
            base(DELTA),
            base(DELTA),
            base(KEY),
            base(DELTA),
        ];
        assert_eq!(feed(&frames, &[2], false), vec![0, 1, 4, 5]);
        // Without descriptors' numbering, the frame given up says the same.
        assert_eq!(feed(&frames, &[2], true), vec![0, 1, 4, 5]);
        assert_eq!(feed(&frames, &[], true), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_missing_upper_temporal_layer_frame_does_not_stop_the_base_layer() {
        // L1T2: base, upper, base, upper, ...; the upper layer's frame 3 is lost.
        let frames: Vec<(FrameMeta, &[u8])> = (0..6)
            .map(|i| (layer((i % 2) as u8), if i == 0 { KEY } else { DELTA }))
            .collect();
        assert_eq!(feed(&frames, &[3], false), vec![0, 1, 2, 4, 5]);
        // A base-layer frame lost stops everything until a keyframe.
        assert_eq!(feed(&frames, &[2], false), vec![0, 1]);
    }
}
