//! Time-stretching of the playout, sans-IO: the jitter buffer changes its delay by making
//! the audio a little shorter (accelerate) or longer (pre-emptive expand) instead of
//! dropping or concealing whole 20 ms frames.
//!
//! The method is the one NetEq and WSOLA share (the idea, not their code): in voiced
//! speech, cut out or repeat exactly one pitch period, found as the lag where the signal
//! best matches itself, and join the two sides with a cross-fade over that period, so the
//! waveform stays continuous and periodic; in a pause, cut or repeat a longer stretch of
//! the background behind a short raised-cosine fade. Unvoiced speech (noise-like, no
//! period) is left alone: the next frame is tried instead.
//!
//! Every sample that is played passes through [`Stretcher::process`], which keeps the
//! last [`HISTORY`] samples played: a splice may reach back into audio already out (to
//! repeat a period) but never changes it.

use super::SAMPLES_PER_MS;

/// Shortest pitch period searched: 2.5 ms (400 Hz).
pub const MIN_LAG: usize = 5 * SAMPLES_PER_MS / 2;

/// Longest pitch period searched: 15 ms (67 Hz, below the lowest speaking voices).
pub const MAX_LAG: usize = 15 * SAMPLES_PER_MS;

/// Samples of played audio kept to splice against.
pub const HISTORY: usize = MAX_LAG;

/// Normalised correlation at the pitch lag from which a segment counts as voiced and a
/// period may be cut or repeated (NetEq's threshold is the same, 0.9).
pub const VOICED_CORRELATION: f64 = 0.9;

/// A frame whose RMS is this far below the loudest recent frame is a pause (dB).
pub const PAUSE_BELOW_PEAK_DB: f64 = 30.0;

/// A frame with RMS at or under this (−55 dBFS in 16-bit samples) is a pause whatever
/// came before.
const SILENT_RMS: f64 = 58.0;

/// The cross-fade at a splice in a pause: 2.5 ms.
const PAUSE_FADE: usize = 5 * SAMPLES_PER_MS / 2;

/// The pitch search runs at 8 kHz: 48 kHz decimated by this.
const DECIMATION: usize = 6;

/// The correlation window of the pitch search: 5 ms.
const WINDOW: usize = 5 * SAMPLES_PER_MS;

/// How fast the loudness reference falls: per frame of 20 ms, about −10 dB a second.
const PEAK_DECAY_PER_SAMPLE: f64 = 0.999_976;

/// What the jitter buffer asks of the next frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Want {
    /// Play it as it is.
    Keep,
    /// Make the playout up to `samples` shorter. In speech only when `in_speech` (the
    /// delay is well over target); otherwise the cut waits for a pause.
    Shorter {
        /// The most to take out.
        samples: usize,
        /// Whether voiced speech may be cut too.
        in_speech: bool,
    },
    /// Make the playout up to `samples` longer. In speech only when `in_speech` (the
    /// delay is short of what the network's jitter needs); otherwise the repeat waits for
    /// a pause.
    Longer {
        /// The most to add.
        samples: usize,
        /// Whether voiced speech may be lengthened too.
        in_speech: bool,
    },
}

/// How a frame was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splice {
    /// Not changed.
    None,
    /// A pitch period was cut or repeated in voiced speech.
    Voiced,
    /// A stretch of a pause was cut or repeated.
    Pause,
}

/// The outcome of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretched {
    /// Samples added (positive) or taken out (negative).
    pub samples: isize,
    /// Where it happened. A splice always begins with the frame's first sample.
    pub splice: Splice,
}

impl Stretched {
    const NONE: Stretched = Stretched {
        samples: 0,
        splice: Splice::None,
    };
}

/// The playout's time-stretcher.
#[derive(Debug, Clone)]
pub struct Stretcher {
    /// The last [`HISTORY`] samples played (zeros before the first).
    history: Vec<i16>,
    /// Played history and the new frame, end to end (reused).
    joined: Vec<i16>,
    /// A slowly falling maximum of the frames' RMS: the level speech reaches.
    peak_rms: f64,
}

impl Default for Stretcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Stretcher {
    /// A stretcher that has played nothing yet.
    pub fn new() -> Self {
        Stretcher {
            history: vec![0; HISTORY],
            joined: Vec::new(),
            peak_rms: 0.0,
        }
    }

    /// Plays `frame` into `out` (replacing its contents), changed as `want` asks where the
    /// audio allows. `quiet` says the sender marked the frame as a pause (DTX, or a low
    /// audio level); the stretcher also judges that from the samples.
    pub fn process(
        &mut self,
        frame: &[i16],
        want: Want,
        quiet: bool,
        out: &mut Vec<i16>,
    ) -> Stretched {
        out.clear();
        let frame_rms = rms(frame);
        let pause = quiet || self.is_pause(frame_rms);
        self.peak_rms =
            (self.peak_rms * PEAK_DECAY_PER_SAMPLE.powi(frame.len() as i32)).max(frame_rms);
        if want != Want::Keep {
            // Played history and the new frame end to end: what a splice works on.
            self.joined.clear();
            self.joined.extend_from_slice(&self.history);
            self.joined.extend_from_slice(frame);
        }
        let done = match want {
            Want::Keep => None,
            Want::Shorter { samples, in_speech } => self.shorten(samples, pause, in_speech, out),
            // A repeat in a pause repeats what was just played: that must be the pause too.
            Want::Longer { samples, in_speech } => {
                let pause = pause && self.is_pause(rms(&self.history));
                self.lengthen(samples, pause, in_speech, out)
            }
        };
        let stretched = done.unwrap_or_else(|| {
            out.clear();
            out.extend_from_slice(frame);
            Stretched::NONE
        });
        self.remember(out);
        stretched
    }

    /// Whether a frame of this RMS is a pause next to the speech heard recently.
    fn is_pause(&self, frame_rms: f64) -> bool {
        frame_rms <= SILENT_RMS
            || frame_rms < self.peak_rms * 10f64.powf(-PAUSE_BELOW_PEAK_DB / 20.0)
    }

    /// Keeps the last [`HISTORY`] samples played.
    fn remember(&mut self, played: &[i16]) {
        if played.len() >= HISTORY {
            self.history.clear();
            self.history
                .extend_from_slice(&played[played.len() - HISTORY..]);
        } else {
            self.history.drain(..played.len());
            self.history.extend_from_slice(played);
        }
    }

    /// Cuts `cut` samples out at the start of the new frame: the output fades from the
    /// frame's start into the audio `cut` samples later over `fade` samples, then goes on
    /// from there.
    fn cut(&self, cut: usize, fade: usize, raised_cosine: bool, out: &mut Vec<i16>) {
        let x = &self.joined;
        let p = HISTORY;
        for i in 0..fade {
            let w = weight(i, fade, raised_cosine);
            out.push(mix(x[p + i], x[p + cut + i], w));
        }
        out.extend_from_slice(&x[p + cut + fade..]);
    }

    /// Repeats the `added` samples before the new frame ahead of it: the inserted stretch
    /// fades from the frame's start (which continues what was played) into the played
    /// audio `added` samples back over `fade` samples, and so ends where the frame begins.
    fn repeat(&self, added: usize, fade: usize, raised_cosine: bool, out: &mut Vec<i16>) {
        let x = &self.joined;
        let p = HISTORY;
        for i in 0..added {
            let w = if i < fade {
                weight(i, fade, raised_cosine)
            } else {
                1.0
            };
            out.push(mix(x[p + i], x[p - added + i], w));
        }
        out.extend_from_slice(&x[p..]);
    }

    fn shorten(
        &self,
        samples: usize,
        pause: bool,
        in_speech: bool,
        out: &mut Vec<i16>,
    ) -> Option<Stretched> {
        let frame = self.joined.len() - HISTORY;
        if pause {
            let cut = samples.min(frame.saturating_sub(PAUSE_FADE));
            if cut == 0 {
                return None;
            }
            self.cut(cut, PAUSE_FADE, true, out);
            return Some(Stretched {
                samples: -(cut as isize),
                splice: Splice::Pause,
            });
        }
        if !in_speech {
            return None;
        }
        // The period and the cross-fade after it must both fit in the frame.
        let longest = MAX_LAG.min(samples).min(frame.saturating_sub(WINDOW));
        let lag = self.pitch(HISTORY, MIN_LAG..=longest, Direction::Ahead)?;
        let fade = lag.min(frame - lag);
        self.cut(lag, fade, false, out);
        Some(Stretched {
            samples: -(lag as isize),
            splice: Splice::Voiced,
        })
    }

    fn lengthen(
        &self,
        samples: usize,
        pause: bool,
        in_speech: bool,
        out: &mut Vec<i16>,
    ) -> Option<Stretched> {
        let frame = self.joined.len() - HISTORY;
        if pause {
            let added = samples.min(HISTORY).min(frame);
            if added < PAUSE_FADE {
                return None;
            }
            self.repeat(added, PAUSE_FADE, true, out);
            return Some(Stretched {
                samples: added as isize,
                splice: Splice::Pause,
            });
        }
        if !in_speech {
            return None;
        }
        // A period a little longer than asked is fine (the buffer's margins absorb it); a
        // much longer one would overshoot, so the search stops there.
        let longest = MAX_LAG.min(samples + 5 * SAMPLES_PER_MS).min(frame);
        let lag = self.pitch(HISTORY, MIN_LAG..=longest, Direction::Behind)?;
        self.repeat(lag, lag, false, out);
        Some(Stretched {
            samples: lag as isize,
            splice: Splice::Voiced,
        })
    }

    /// The pitch period at the splice point `p` of the joined signal: the lag in `lags`
    /// where the window at `p` best matches the window `lag` samples away (ahead, inside
    /// the new frame, for a cut; behind, in what was played, for a repeat). `None` when
    /// no lag reaches [`VOICED_CORRELATION`] (unvoiced speech or noise).
    fn pitch(
        &self,
        p: usize,
        lags: std::ops::RangeInclusive<usize>,
        direction: Direction,
    ) -> Option<usize> {
        let (low, high) = (*lags.start(), *lags.end());
        if high < low {
            return None;
        }
        let x = &self.joined;
        let window = WINDOW.min(x.len() - p);
        let segments = |lag: usize| match direction {
            Direction::Ahead => (p, p + lag),
            Direction::Behind => (p - lag, p),
        };
        let fits = |lag: usize| {
            let (a, b) = segments(lag);
            a.max(b) + window <= x.len()
        };
        // Coarse search at 8 kHz on a box-filtered copy, then the best lag refined at the
        // full rate around it.
        let coarse: Vec<f64> = x
            .chunks(DECIMATION)
            .map(|c| c.iter().map(|&s| f64::from(s)).sum::<f64>())
            .collect();
        let coarse_window = window / DECIMATION;
        let mut best: Option<(usize, f64)> = None;
        for lag in low.div_ceil(DECIMATION)..=high / DECIMATION {
            if !fits(lag * DECIMATION) {
                continue;
            }
            let (a, b) = segments(lag * DECIMATION);
            let (a, b) = (a / DECIMATION, b / DECIMATION);
            let c = normalised(&coarse[a..a + coarse_window], &coarse[b..b + coarse_window]);
            if best.is_none_or(|(_, bc)| c > bc) {
                best = Some((lag * DECIMATION, c));
            }
        }
        let (coarse_lag, _) = best?;
        let mut refined: Option<(usize, f64)> = None;
        let from = coarse_lag.saturating_sub(DECIMATION).max(low);
        let to = (coarse_lag + DECIMATION).min(high);
        for lag in from..=to {
            if !fits(lag) {
                continue;
            }
            let (a, b) = segments(lag);
            let c = normalised_i16(&x[a..a + window], &x[b..b + window]);
            if refined.is_none_or(|(_, rc)| c > rc) {
                refined = Some((lag, c));
            }
        }
        let (lag, c) = refined?;
        (c >= VOICED_CORRELATION).then_some(lag)
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Ahead,
    Behind,
}

/// The cross-fade weight of the second signal at step `i` of `len`: rising from 0 towards
/// 1, linearly for correlated signals (their sum keeps the amplitude) or as a raised cosine
/// (smoother edges, for a pause's uncorrelated noise).
fn weight(i: usize, len: usize, raised_cosine: bool) -> f64 {
    let t = (i as f64 + 0.5) / len as f64;
    if raised_cosine {
        0.5 - 0.5 * (std::f64::consts::PI * t).cos()
    } else {
        t
    }
}

fn mix(a: i16, b: i16, w: f64) -> i16 {
    (f64::from(a) * (1.0 - w) + f64::from(b) * w)
        .round()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

fn rms(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return 0.0;
    }
    (frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / frame.len() as f64).sqrt()
}

/// Normalised cross-correlation of two equally long windows (0 when either is silent).
fn normalised(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= 0.0 || bb <= 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

fn normalised_i16(a: &[i16], b: &[i16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0i64, 0i64, 0i64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (i64::from(x), i64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0 || bb == 0 {
        return 0.0;
    }
    ab as f64 / ((aa as f64) * (bb as f64)).sqrt()
}

#[cfg(test)]
#[path = "stretch_tests.rs"]
mod tests;
