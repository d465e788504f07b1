//! What the playout clock does with one jitter-buffer decision, sans-IO: decode it (a
//! packet, FEC, DRED or concealment) and time-stretch it as the buffer asks. The playout
//! thread and the tests that replay traces share it.

use std::time::Duration;

use super::codec::{OpusDecoder, packet_samples};
use super::jitter::Decision;
use super::stretch::{Stretched, Stretcher, Want};
use super::{AudioError, SAMPLES_PER_MS};

/// The decoder and the stretcher behind the playout.
#[derive(Debug)]
pub struct Playout {
    decoder: OpusDecoder,
    stretcher: Stretcher,
    decoded: Vec<i16>,
    out: Vec<i16>,
}

/// One rendered decision.
#[derive(Debug)]
pub struct Rendered<'a> {
    /// The audio to play.
    pub samples: &'a [i16],
    /// How it was stretched.
    pub stretched: Stretched,
    /// Frames of the sender's the decision covered (a rebuild covers several).
    pub frames: usize,
    /// The decoder refused the payload (concealment was played instead).
    pub decode_error: bool,
}

impl Playout {
    /// A playout decoding at `decoder_complexity`.
    pub fn new(decoder_complexity: u8) -> Result<Self, AudioError> {
        Ok(Playout {
            decoder: OpusDecoder::with_complexity(decoder_complexity)?,
            stretcher: Stretcher::new(),
            decoded: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Decodes `decision` (frames of `frame` each; a packet plays as long as it is) and
    /// stretches it as `want` asks.
    pub fn render(&mut self, decision: &Decision, frame: Duration, want: Want) -> Rendered<'_> {
        let frames = match decision {
            Decision::Rebuild { frames, .. } => (*frames).max(1),
            _ => 1,
        };
        let frame_samples = (frame.as_micros() as usize * SAMPLES_PER_MS) / 1000;
        let samples = match decision {
            Decision::Play(packet) => packet_samples(&packet.payload).unwrap_or(frame_samples),
            _ => frame_samples * frames,
        };
        self.decoded.clear();
        self.decoded.resize(samples, 0);
        let decoder = &mut self.decoder;
        let out = &mut self.decoded;
        let decoded = match decision {
            Decision::Waiting => Ok(samples),
            Decision::Play(packet) => decoder.decode(&packet.payload, out),
            Decision::Fec { next } => decoder.decode_fec(&next.payload, out),
            Decision::Rebuild { later, .. } => decoder.decode_dred(&later.payload, out),
            Decision::Conceal => decoder.conceal(out),
            Decision::ComfortNoise => decoder.comfort_noise(out),
        };
        let decode_error = decoded.is_err();
        if decode_error {
            out.iter_mut().for_each(|s| *s = 0);
            let _ = decoder.conceal(out);
        }
        // Only decoded audio is stretched: concealment while waiting for a packet already
        // stretches time, and comfort noise waits for speech by itself.
        let (want, quiet) = match decision {
            Decision::Play(packet) => (want, packet.quiet),
            Decision::Fec { .. } | Decision::Rebuild { .. } => (want, false),
            Decision::Waiting | Decision::Conceal | Decision::ComfortNoise => (Want::Keep, true),
        };
        let stretched = self
            .stretcher
            .process(&self.decoded, want, quiet, &mut self.out);
        Rendered {
            samples: &self.out,
            stretched,
            frames,
            decode_error,
        }
    }
}
