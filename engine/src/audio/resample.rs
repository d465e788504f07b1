//! Streaming sample-rate conversion for mono audio: chunks of any size in, converted
//! samples out, and a `flush` at the end that emits the tail. WAV files use it to reach
//! [`SAMPLE_RATE`](super::SAMPLE_RATE) from the file's rate; devices use it between their
//! own rate and the engine's.
//!
//! It wraps [rubato]: a maintained, pure-Rust resampler whose synchronous FFT resampler
//! and asynchronous sinc resampler both give properly band-limited output (no aliasing
//! from a naive linear interpolation), with no allocation while processing. Fixed,
//! well-behaved rate pairs (44.1 k, 16 k, 96 k ... to 48 k) use the FFT resampler, which is
//! both the fastest and the best; a rate pair whose smallest exact block would be huge
//! (say 44 101 Hz) uses the sinc resampler instead.
//!
//! The resampler's own delay is trimmed from the start of the output, and `flush` pads the
//! end so that `n` input samples always give `round(n * to / from)` output samples: a
//! file keeps its duration, to the sample.
//!
//! This module owns only the conversion; it knows nothing of files or devices.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters,
    WindowFunction,
};

use super::AudioError;

/// Input block, in milliseconds, the resampler asks for (it rounds up to an exact block).
const CHUNK_MS: usize = 10;

/// Above this many input frames in the smallest exact FFT block, use the sinc resampler.
const MAX_FFT_BLOCK: usize = 2048;

/// Flushing never needs more calls than this (the delay is far below this many blocks).
const MAX_FLUSH_CALLS: usize = 1000;

/// The highest rate accepted on either side.
pub const MAX_RATE: u32 = 768_000;

/// Converts a stream of mono samples from one rate to another.
///
/// Feed it with [`process_f32`](Self::process_f32) or [`process_i16`](Self::process_i16)
/// in chunks of any size; each call appends whatever converted samples are ready. At the
/// end of the stream call the matching `flush_*` once. When both rates are equal it copies.
pub struct StreamResampler {
    from_rate: u32,
    to_rate: u32,
    inner: Option<Box<dyn Resampler<f32>>>,
    /// Input not yet handed to rubato (less than one block).
    pending: Vec<f32>,
    /// rubato's output block.
    scratch: Vec<f32>,
    /// f32 staging for the i16 entry points.
    staging_in: Vec<f32>,
    staging_out: Vec<f32>,
    /// Output samples still to drop: rubato's delay.
    delay_left: usize,
    input_total: u64,
    output_total: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from_rate", &self.from_rate)
            .field("to_rate", &self.to_rate)
            .field("input_total", &self.input_total)
            .field("output_total", &self.output_total)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A converter from `from_rate` to `to_rate` (both in Hz, 1 ..= [`MAX_RATE`]).
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Self, AudioError> {
        for rate in [from_rate, to_rate] {
            if rate == 0 || rate > MAX_RATE {
                return Err(AudioError::Resample(format!(
                    "unsupported sample rate {rate} Hz (1 to {MAX_RATE} Hz)"
                )));
            }
        }
        let inner = if from_rate == to_rate {
            None
        } else {
            Some(build(from_rate, to_rate)?)
        };
        let delay_left = inner.as_ref().map_or(0, |r| r.output_delay());
        let scratch = vec![0.0; inner.as_ref().map_or(0, |r| r.output_frames_max())];
        Ok(Self {
            from_rate,
            to_rate,
            inner,
            pending: Vec::new(),
            scratch,
            staging_in: Vec::new(),
            staging_out: Vec::new(),
            delay_left,
            input_total: 0,
            output_total: 0,
        })
    }

    /// The input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    /// The output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to_rate
    }

    /// True when the rates are equal and samples pass through untouched.
    pub fn is_passthrough(&self) -> bool {
        self.inner.is_none()
    }

    /// Converts `input` (samples in -1.0 ..= 1.0) and appends the ready output to `out`.
    pub fn process_f32(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.input_total += input.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            self.output_total += input.len() as u64;
            return Ok(());
        };
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() - pos < need {
                break;
            }
            let chunk = &self.pending[pos..pos + need];
            let produced = run(inner.as_mut(), &mut self.scratch, chunk, None)?;
            pos += need;
            emit(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output_total,
                out,
            );
        }
        self.pending.drain(..pos);
        Ok(())
    }

    /// Ends the stream: converts what is pending, pads the tail, and appends output until
    /// the total is `round(input * to / from)`. The converter is then ready for a new
    /// stream.
    pub fn flush_f32(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let target = self.expected_output();
        if let Some(inner) = self.inner.as_mut() {
            let mut first = true;
            let mut calls = 0;
            while self.output_total < target {
                calls += 1;
                if calls > MAX_FLUSH_CALLS {
                    return Err(AudioError::Resample(format!(
                        "flush did not reach {target} samples"
                    )));
                }
                // The first call takes the last partial block, the others feed silence.
                let partial = if first { self.pending.len() } else { 0 };
                first = false;
                let need = inner.input_frames_next();
                self.pending.resize(need.max(self.pending.len()), 0.0);
                let indexing = Indexing::new().partial_len(partial.min(need));
                let produced = run(
                    inner.as_mut(),
                    &mut self.scratch,
                    &self.pending[..need],
                    Some(&indexing),
                )?;
                self.pending.clear();
                let room = usize::try_from(target - self.output_total).unwrap_or(usize::MAX);
                let produced = produced.min(room + self.delay_left);
                emit(
                    &self.scratch[..produced],
                    &mut self.delay_left,
                    &mut self.output_total,
                    out,
                );
            }
            inner.reset();
            self.delay_left = inner.output_delay();
        }
        self.pending.clear();
        self.input_total = 0;
        self.output_total = 0;
        Ok(())
    }

    /// Like [`process_f32`](Self::process_f32) for 16-bit samples.
    pub fn process_i16(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), AudioError> {
        if self.inner.is_none() {
            self.input_total += input.len() as u64;
            self.output_total += input.len() as u64;
            out.extend_from_slice(input);
            return Ok(());
        }
        let mut staging_in = std::mem::take(&mut self.staging_in);
        let mut staging_out = std::mem::take(&mut self.staging_out);
        staging_in.clear();
        staging_in.extend(input.iter().map(|&s| i16_to_f32(s)));
        staging_out.clear();
        let result = self.process_f32(&staging_in, &mut staging_out);
        out.extend(staging_out.iter().map(|&s| f32_to_i16(s)));
        self.staging_in = staging_in;
        self.staging_out = staging_out;
        result
    }

    /// Like [`flush_f32`](Self::flush_f32) for 16-bit samples.
    pub fn flush_i16(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        let mut staging_out = std::mem::take(&mut self.staging_out);
        staging_out.clear();
        let result = self.flush_f32(&mut staging_out);
        out.extend(staging_out.iter().map(|&s| f32_to_i16(s)));
        self.staging_out = staging_out;
        result
    }

    /// Output samples the input so far should give: `round(input * to / from)`.
    fn expected_output(&self) -> u64 {
        let num = u128::from(self.input_total) * u128::from(self.to_rate)
            + u128::from(self.from_rate / 2);
        u64::try_from(num / u128::from(self.from_rate)).unwrap_or(u64::MAX)
    }
}

/// Converts a 16-bit sample to -1.0 ..< 1.0.
pub fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32_768.0
}

/// Converts a sample in -1.0 ..= 1.0 to 16 bits, rounding and clipping.
pub fn f32_to_i16(s: f32) -> i16 {
    // `as` saturates (and maps NaN to 0), which is the clipping wanted here.
    (s * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

fn build(from_rate: u32, to_rate: u32) -> Result<Box<dyn Resampler<f32>>, AudioError> {
    let (from, to) = (from_rate as usize, to_rate as usize);
    let chunk = (from * CHUNK_MS / 1000).max(1);
    let construction = |e: rubato::ResamplerConstructionError| {
        AudioError::Resample(format!(
            "cannot convert {from_rate} Hz to {to_rate} Hz: {e}"
        ))
    };
    if from / gcd(from, to) <= MAX_FFT_BLOCK {
        let fft = Fft::<f32>::new(from, to, chunk, 1, FixedSync::Input).map_err(construction)?;
        Ok(Box::new(fft))
    } else {
        let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2);
        let sinc = Async::<f32>::new_sinc(
            to as f64 / from as f64,
            1.0,
            &params,
            chunk,
            1,
            FixedAsync::Input,
        )
        .map_err(construction)?;
        Ok(Box::new(sinc))
    }
}

/// One rubato call over `input` (exactly `input_frames_next` samples); returns how many
/// samples it wrote to `scratch`.
fn run(
    inner: &mut dyn Resampler<f32>,
    scratch: &mut Vec<f32>,
    input: &[f32],
    indexing: Option<&Indexing>,
) -> Result<usize, AudioError> {
    let bad = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
    let out_len = inner.output_frames_next();
    if scratch.len() < out_len {
        scratch.resize(out_len, 0.0);
    }
    let adapter_in = InterleavedSlice::new(input, 1, input.len()).map_err(|e| bad(&e))?;
    let frames = scratch.len();
    let mut adapter_out = InterleavedSlice::new_mut(scratch, 1, frames).map_err(|e| bad(&e))?;
    let (_, produced) = inner
        .process_into_buffer(&adapter_in, &mut adapter_out, indexing)
        .map_err(|e| bad(&e))?;
    Ok(produced)
}

/// Appends `block` to `out` after dropping what is left of the resampler's delay.
fn emit(block: &[f32], delay_left: &mut usize, output_total: &mut u64, out: &mut Vec<f32>) {
    let skip = (*delay_left).min(block.len());
    *delay_left -= skip;
    let kept = &block[skip..];
    out.extend_from_slice(kept);
    *output_total += kept.len() as u64;
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| 0.5 * (2.0 * std::f32::consts::PI * hz * n as f32 / rate as f32).sin())
            .collect()
    }

    /// Estimates a tone's frequency by counting upward zero crossings.
    fn frequency(samples: &[f32], rate: u32) -> f32 {
        let crossings = samples
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        crossings as f32 * rate as f32 / samples.len() as f32
    }

    fn convert_in_odd_chunks(from: u32, to: u32, input: &[f32]) -> Vec<f32> {
        let mut r = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        let mut rest = input;
        let mut size = 1;
        while !rest.is_empty() {
            let n = size.min(rest.len());
            r.process_f32(&rest[..n], &mut out).unwrap();
            rest = &rest[n..];
            size = size * 3 % 997 + 1;
        }
        r.flush_f32(&mut out).unwrap();
        out
    }

    #[test]
    fn lengths_are_exact_for_common_rates() {
        for (from, to) in [
            (44_100, 48_000),
            (16_000, 48_000),
            (8_000, 48_000),
            (96_000, 48_000),
            (48_000, 44_100),
            (22_050, 48_000),
            (44_101, 48_000),
        ] {
            let input = sine(from, 440.0, from as usize * 3 / 4 + 17);
            let out = convert_in_odd_chunks(from, to, &input);
            let expected =
                (input.len() as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from);
            assert_eq!(out.len() as u64, expected, "{from} -> {to}");
            let hz = frequency(&out, to);
            assert!((hz - 440.0).abs() < 4.0, "{from} -> {to}: {hz} Hz");
        }
    }

    #[test]
    fn delay_is_trimmed_so_the_signal_lines_up() {
        let input = sine(16_000, 300.0, 16_000);
        let out = convert_in_odd_chunks(16_000, 48_000, &input);
        // Sample 3n of the output is sample n of the input, give or take filter ripple.
        let worst = (100..5000)
            .map(|n| (out[3 * n] - input[n]).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.02, "misaligned by up to {worst}");
    }

    #[test]
    fn equal_rates_pass_through_and_i16_round_trips() {
        let mut r = StreamResampler::new(48_000, 48_000).unwrap();
        assert!(r.is_passthrough());
        let input: Vec<i16> = (0..1000)
            .map(|n| (n * 37 % 65_536 - 32_768) as i16)
            .collect();
        let mut out = Vec::new();
        r.process_i16(&input, &mut out).unwrap();
        r.flush_i16(&mut out).unwrap();
        assert_eq!(out, input);
        for s in [i16::MIN, -1, 0, 1, i16::MAX] {
            assert_eq!(f32_to_i16(i16_to_f32(s)), s);
        }
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(f32::NAN), 0);
    }

    #[test]
    fn reusable_after_flush_and_rejects_bad_rates() {
        let mut r = StreamResampler::new(44_100, 48_000).unwrap();
        for _ in 0..2 {
            let mut out = Vec::new();
            r.process_i16(&[1000; 4410], &mut out).unwrap();
            r.flush_i16(&mut out).unwrap();
            assert_eq!(out.len(), 4800);
        }
        assert!(matches!(
            StreamResampler::new(0, 48_000),
            Err(AudioError::Resample(_))
        ));
        assert!(StreamResampler::new(48_000, MAX_RATE + 1).is_err());
    }
}
