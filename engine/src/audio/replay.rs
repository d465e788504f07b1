//! Offline replay of one direction of a call's audio, on a virtual clock: speech encoded
//! as the sender does (Opus, DTX frames not sent, RFC 2198 copies of the frames before),
//! a seeded lossy path, and the receive side (jitter buffer, decoder, time-stretching) as
//! the playout thread runs it. The jitter-buffer tests and the bench's buffer comparison
//! replay the same traces through it, many times faster than real time.

use std::time::{Duration, Instant};

use super::codec::{EncoderConfig, OpusEncoder};
use super::jitter::{Decision, JitterBuffer, JitterConfig, JitterStats, Packet};
use super::level::{QUIET_LEVEL, audio_level_dbov};
use super::playout::Playout;
use super::stretch::Splice;
use super::{AudioError, SAMPLES_PER_MS};

/// One packet as the sender sent it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp: the first sample of its frame in the source.
    pub timestamp: u32,
    /// When it was sent, ms from the start of the source.
    pub sent_ms: f64,
    /// The Opus frame.
    pub payload: Vec<u8>,
    /// Marked quiet (RFC 6464 level at or under [`QUIET_LEVEL`]).
    pub quiet: bool,
    /// Copies of the frames sent just before it, nearest first: (seq, timestamp, payload).
    pub copies: Vec<(u16, u32, Vec<u8>)>,
}

/// Encodes `pcm` (48 kHz mono) frame by frame as a sender does: each packet carries
/// copies of the `red_depth` packets sent back to back before it; frames the encoder
/// marks DTX are not sent (the sequence number does not move, the timestamp does).
pub fn encode(
    pcm: &[i16],
    config: &EncoderConfig,
    red_depth: usize,
) -> Result<Vec<Sent>, AudioError> {
    let mut encoder = OpusEncoder::new(config)?;
    let frame = encoder.frame_samples();
    let mut sent: Vec<Sent> = Vec::new();
    let mut seq = 0u16;
    for (index, chunk) in pcm.chunks_exact(frame).enumerate() {
        let level = audio_level_dbov(chunk);
        let encoded = encoder.encode(chunk)?;
        if encoded.dtx {
            continue;
        }
        let timestamp = (index * frame) as u32;
        // Copies only of frames sent back to back with this one.
        let copies = sent
            .iter()
            .rev()
            .take(red_depth)
            .enumerate()
            .take_while(|(back, earlier)| {
                earlier.timestamp as usize + (back + 1) * frame == timestamp as usize
            })
            .map(|(_, earlier)| (earlier.seq, earlier.timestamp, earlier.payload.clone()))
            .collect();
        sent.push(Sent {
            seq,
            timestamp,
            sent_ms: (index * frame) as f64 / SAMPLES_PER_MS as f64,
            payload: encoded.payload,
            quiet: level >= QUIET_LEVEL,
            copies,
        });
        seq = seq.wrapping_add(1);
    }
    Ok(sent)
}

/// A path: each packet is lost with probability `loss` (independently, from the first
/// packet on), else delayed by `delay_ms` plus up to `jitter_ms` more (uniform, so packets
/// may be reordered); a `change` may move it to another network mid-call.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    /// Share of packets lost, 0..1.
    pub loss: f64,
    /// The fixed delay, ms.
    pub delay_ms: f64,
    /// The most extra delay, ms.
    pub jitter_ms: f64,
    /// The seed of the path's randomness.
    pub seed: u64,
    /// A change of network during the call.
    pub change: Option<PathChange>,
}

/// A change of network (Wi-Fi to mobile): nothing gets through for a while, then the
/// fixed delay is another.
#[derive(Debug, Clone, Copy)]
pub struct PathChange {
    /// When, ms of send time.
    pub at_ms: f64,
    /// How long nothing gets through, ms.
    pub outage_ms: f64,
    /// The fixed delay after it, ms.
    pub delay_ms: f64,
}

/// When each packet that gets through arrives, ms, with its index in `sent`, in order of
/// arrival.
pub fn arrivals(sent: &[Sent], path: &Path) -> Vec<(f64, usize)> {
    let mut random = SplitMix(path.seed);
    let mut out: Vec<(f64, usize)> = sent
        .iter()
        .enumerate()
        .filter_map(|(i, packet)| {
            let lost = random.unit() < path.loss;
            let extra = random.unit() * path.jitter_ms;
            let mut delay_ms = path.delay_ms;
            if let Some(change) = path.change
                && packet.sent_ms >= change.at_ms
            {
                if packet.sent_ms < change.at_ms + change.outage_ms {
                    return None;
                }
                delay_ms = change.delay_ms;
            }
            (!lost).then_some((packet.sent_ms + delay_ms + extra, i))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// A frame that played from its own packet (or a copy): where it starts in the source and
/// in the output, in samples. The difference is its delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayedFrame {
    /// First sample of the frame in the source (its RTP timestamp).
    pub source: usize,
    /// First sample of its audio in the output.
    pub output: usize,
}

/// What the receive side played.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The output, 48 kHz mono, from the first pull on.
    pub samples: Vec<i16>,
    /// Every frame played from a packet, in order.
    pub played: Vec<PlayedFrame>,
    /// Where in the output each time-stretch splice begins.
    pub splices: Vec<usize>,
    /// The buffer's counters at the end.
    pub stats: JitterStats,
}

/// Plays `arrivals` of `sent` through the receive side for `duration_ms` of output, as the
/// playout thread does: insert what arrived (copies only where wanted), pull, decode,
/// stretch, and pull again when the audio played has run out.
pub fn replay(
    sent: &[Sent],
    arrivals: &[(f64, usize)],
    config: JitterConfig,
    decoder_complexity: u8,
    duration_ms: f64,
) -> Result<Replayed, AudioError> {
    let start = Instant::now();
    let at = |ms: f64| start + Duration::from_secs_f64(ms.max(0.0) / 1000.0);
    let mut buffer = JitterBuffer::new(config);
    let mut playout = Playout::new(decoder_complexity)?;
    let mut replayed = Replayed {
        samples: Vec::new(),
        played: Vec::new(),
        splices: Vec::new(),
        stats: JitterStats::default(),
    };
    let mut next = 0;
    let mut now_ms = 0.0;
    while now_ms < duration_ms {
        while let Some(&(arrive_ms, index)) = arrivals.get(next)
            && arrive_ms <= now_ms
        {
            deliver(&mut buffer, &sent[index], at(arrive_ms));
            next += 1;
        }
        let decision = buffer.pull(at(now_ms));
        let want = buffer.time_scale();
        let rendered = playout.render(&decision, buffer.frame(), want);
        if rendered.stretched.samples != 0 {
            buffer.stretched(rendered.stretched.samples);
        }
        if rendered.stretched.splice != Splice::None {
            replayed.splices.push(replayed.samples.len());
        }
        if let Decision::Play(packet) = &decision {
            replayed.played.push(PlayedFrame {
                source: packet.timestamp as usize,
                output: replayed.samples.len(),
            });
        }
        replayed.samples.extend_from_slice(rendered.samples);
        now_ms = replayed.samples.len() as f64 / SAMPLES_PER_MS as f64;
    }
    replayed.stats = buffer.stats();
    Ok(replayed)
}

/// Hands one arriving packet to the buffer as the receiver does.
fn deliver(buffer: &mut JitterBuffer, packet: &Sent, now: Instant) {
    buffer.insert(
        Packet {
            seq: packet.seq,
            timestamp: packet.timestamp,
            payload: packet.payload.clone(),
            quiet: packet.quiet,
        },
        now,
    );
    buffer.note_redundancy(packet.copies.len(), now);
    for (seq, timestamp, payload) in &packet.copies {
        if buffer.wants(*seq) {
            buffer.insert_redundant(
                Packet {
                    seq: *seq,
                    timestamp: *timestamp,
                    payload: payload.clone(),
                    quiet: false,
                },
                packet.copies.len(),
                now,
            );
        }
    }
}

/// How steady the delay stayed during speech.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Steadiness {
    /// The widest spread (highest − lowest delay) inside one stretch of speech, ms.
    pub widest_spread_ms: f64,
    /// The largest change of delay between frames played one after the other inside a
    /// stretch of speech, ms.
    pub largest_step_ms: f64,
    /// Changes of a whole frame or more inside stretches of speech.
    pub whole_frame_steps: usize,
    /// Stretches of speech (runs of at least `min_frames` loud source frames).
    pub talkspurts: usize,
}

/// The delay of the frames played during speech: `source` is what was sent, `frame` its
/// frame length in samples; a stretch of speech is a run of at least `min_frames` frames
/// of the source louder than [`QUIET_LEVEL`].
pub fn steadiness(
    source: &[i16],
    played: &[PlayedFrame],
    frame: usize,
    min_frames: usize,
) -> Steadiness {
    let loud: Vec<bool> = source
        .chunks(frame)
        .map(|chunk| audio_level_dbov(chunk) < QUIET_LEVEL)
        .collect();
    // The talkspurt each source frame belongs to.
    let mut spurt_of = vec![None; loud.len()];
    let mut talkspurts = 0;
    let mut i = 0;
    while i < loud.len() {
        let run = loud[i..].iter().take_while(|&&l| l).count();
        if run >= min_frames {
            spurt_of[i..i + run]
                .iter_mut()
                .for_each(|s| *s = Some(talkspurts));
            talkspurts += 1;
        }
        i += run.max(1);
    }
    let mut result = Steadiness {
        talkspurts,
        ..Steadiness::default()
    };
    let ms = |samples: f64| samples / SAMPLES_PER_MS as f64;
    let delay = |p: &PlayedFrame| p.output as f64 - p.source as f64;
    let mut spread: Option<(usize, f64, f64)> = None;
    let mut previous: Option<(usize, f64)> = None;
    for p in played {
        let Some(spurt) = spurt_of.get(p.source / frame).copied().flatten() else {
            previous = None;
            continue;
        };
        let d = delay(p);
        if let Some((prev_spurt, prev_d)) = previous
            && prev_spurt == spurt
        {
            let step = (d - prev_d).abs();
            result.largest_step_ms = result.largest_step_ms.max(ms(step));
            if step >= frame as f64 {
                result.whole_frame_steps += 1;
            }
        }
        previous = Some((spurt, d));
        spread = match spread {
            Some((s, low, high)) if s == spurt => Some((s, low.min(d), high.max(d))),
            _ => Some((spurt, d, d)),
        };
        if let Some((_, low, high)) = spread {
            result.widest_spread_ms = result.widest_spread_ms.max(ms(high - low));
        }
    }
    result
}

/// A small seeded generator (SplitMix64): the paths must replay identically everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
