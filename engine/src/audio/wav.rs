//! WAV files as audio sources and sinks (hound). A source reads any PCM layout hound
//! understands (8, 16, 24 or 32-bit integers, 32-bit float, any channel count, any rate)
//! and hands out 48 kHz mono; a sink writes 48 kHz mono 16-bit.
//!
//! File input is untrusted: a missing, truncated or garbage file gives
//! [`AudioError::Wav`] naming the file, never a panic. This module owns the file format
//! only; rate conversion lives in [`resample`](super::resample).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::resample::{StreamResampler, f32_to_i16};
use super::{AudioError, AudioSink, AudioSource, SAMPLE_RATE};

/// Frames read from the file per step.
const BLOCK_FRAMES: usize = 1024;

/// The lowest file rate accepted (telephone audio is 8 kHz; below 1 kHz is not speech).
pub const MIN_FILE_RATE: u32 = 1_000;

/// The highest file rate accepted.
pub const MAX_FILE_RATE: u32 = 384_000;

/// The most channels accepted in a file.
pub const MAX_FILE_CHANNELS: u16 = 64;

/// The most 16-bit samples a WAV file can hold (its sizes are 32-bit), less room for the
/// header.
const MAX_SINK_SAMPLES: u64 = (u32::MAX as u64 - 1024) / 2;

/// The smallest possible header before the samples: RIFF (12) + fmt (8 + 16) + data (8).
const MIN_HEADER_BYTES: u64 = 44;

fn wav_error(path: &Path, message: impl std::fmt::Display) -> AudioError {
    AudioError::Wav {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads a WAV file as 48 kHz mono: channels are averaged, the rate is converted.
pub struct WavSource {
    path: PathBuf,
    reader: hound::WavReader<BufReader<File>>,
    spec: hound::WavSpec,
    /// Frames (per channel) in the file.
    file_frames: u64,
    resampler: StreamResampler,
    /// Mono samples at the file's rate, one block.
    block: Vec<f32>,
    /// Converted samples at 48 kHz, not yet handed out.
    converted: Vec<f32>,
    /// How much of `converted` has been handed out.
    taken: usize,
    /// The file is read to its end and the resampler flushed.
    drained: bool,
}

/// Reads a whole 48 kHz mono 16-bit file (what the sink writes, and the reference speech
/// of the examples and benches) into memory, for analysis; other layouts are refused
/// rather than converted, so a comparison never hides a resampler.
pub fn read_48k_mono(path: impl AsRef<Path>) -> Result<Vec<i16>, AudioError> {
    let path = path.as_ref();
    let mut reader = hound::WavReader::open(path).map_err(|e| wav_error(path, e))?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(wav_error(path, "not 48 kHz mono 16-bit"));
    }
    reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| wav_error(path, e))
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("file_frames", &self.file_frames)
            .finish_non_exhaustive()
    }
}

impl WavSource {
    /// Opens `path` and checks its header (format, rate, channels, and that the file holds
    /// as many samples as the header announces).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| wav_error(path, format!("cannot open: {e}")))?;
        let file_len = file
            .metadata()
            .map_err(|e| wav_error(path, format!("cannot read: {e}")))?
            .len();
        let reader = hound::WavReader::new(BufReader::new(file))
            .map_err(|e| wav_error(path, format!("not a readable WAV file: {e}")))?;
        let spec = reader.spec();
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 8 | 16 | 24 | 32) | (hound::SampleFormat::Float, 32) => {}
            (format, bits) => {
                return Err(wav_error(
                    path,
                    format!(
                        "unsupported sample format: {bits}-bit {format:?} \
                         (use 8, 16, 24 or 32-bit integer, or 32-bit float)"
                    ),
                ));
            }
        }
        if !(MIN_FILE_RATE..=MAX_FILE_RATE).contains(&spec.sample_rate) {
            return Err(wav_error(
                path,
                format!(
                    "unsupported sample rate {} Hz ({MIN_FILE_RATE} to {MAX_FILE_RATE} Hz)",
                    spec.sample_rate
                ),
            ));
        }
        if spec.channels == 0 || spec.channels > MAX_FILE_CHANNELS {
            return Err(wav_error(
                path,
                format!(
                    "unsupported channel count {} (1 to {MAX_FILE_CHANNELS})",
                    spec.channels
                ),
            ));
        }
        let samples = u64::from(reader.len());
        let needed = samples * u64::from(spec.bits_per_sample / 8) + MIN_HEADER_BYTES;
        if file_len < needed {
            return Err(wav_error(
                path,
                format!(
                    "truncated: the header announces {samples} samples ({needed} bytes with \
                     the header) but the file has {file_len} bytes"
                ),
            ));
        }
        let resampler =
            StreamResampler::new(spec.sample_rate, SAMPLE_RATE).map_err(|e| wav_error(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            file_frames: samples / u64::from(spec.channels),
            reader,
            spec,
            resampler,
            block: Vec::with_capacity(BLOCK_FRAMES),
            converted: Vec::new(),
            taken: 0,
            drained: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's own sample rate in Hz.
    pub fn file_rate(&self) -> u32 {
        self.spec.sample_rate
    }

    /// The file's channel count.
    pub fn file_channels(&self) -> u16 {
        self.spec.channels
    }

    /// Samples the whole file gives at 48 kHz mono.
    pub fn len_samples(&self) -> u64 {
        let rate = u64::from(self.spec.sample_rate);
        (self.file_frames * u64::from(SAMPLE_RATE) + rate / 2) / rate
    }

    /// How long the file plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.file_frames as f64 / f64::from(self.spec.sample_rate))
    }

    /// Reads, mixes and converts the next block; flushes the resampler at the end.
    fn refill(&mut self) -> Result<(), AudioError> {
        if self.taken > 0 {
            self.converted.drain(..self.taken);
            self.taken = 0;
        }
        self.block.clear();
        let channels = usize::from(self.spec.channels);
        let read = match self.spec.sample_format {
            hound::SampleFormat::Float => read_mono(
                self.reader.samples::<f32>(),
                channels,
                &mut self.block,
                |s| s,
            ),
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (self.spec.bits_per_sample - 1)) as f32;
                read_mono(
                    self.reader.samples::<i32>(),
                    channels,
                    &mut self.block,
                    |s| s as f32 * scale,
                )
            }
        };
        read.map_err(|e| {
            let message = match e {
                hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                    "truncated: the file ends before the samples its header announces".to_owned()
                }
                e => format!("cannot read samples: {e}"),
            };
            wav_error(&self.path, message)
        })?;
        let path = &self.path;
        if self.block.is_empty() {
            self.resampler
                .flush_f32(&mut self.converted)
                .map_err(|e| wav_error(path, e))?;
            self.drained = true;
        } else {
            self.resampler
                .process_f32(&self.block, &mut self.converted)
                .map_err(|e| wav_error(path, e))?;
        }
        Ok(())
    }
}

/// Reads up to [`BLOCK_FRAMES`] frames and appends their channel average to `out`. An
/// incomplete last frame is dropped; samples that are not finite count as silence.
fn read_mono<S, I>(
    mut samples: I,
    channels: usize,
    out: &mut Vec<f32>,
    to_f32: impl Fn(S) -> f32,
) -> Result<(), hound::Error>
where
    I: Iterator<Item = Result<S, hound::Error>>,
{
    let gain = 1.0 / channels as f32;
    for _ in 0..BLOCK_FRAMES {
        let mut sum = 0.0;
        for _ in 0..channels {
            match samples.next() {
                None => return Ok(()),
                Some(sample) => {
                    let value = to_f32(sample?);
                    if value.is_finite() {
                        sum += value;
                    }
                }
            }
        }
        out.push(sum * gain);
    }
    Ok(())
}

impl AudioSource for WavSource {
    fn read(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        if frame.is_empty() {
            return Ok(!self.drained || self.converted.len() > self.taken);
        }
        while self.converted.len() - self.taken < frame.len() && !self.drained {
            self.refill()?;
        }
        let available = &self.converted[self.taken..];
        if available.is_empty() {
            frame.fill(0);
            return Ok(false);
        }
        let n = available.len().min(frame.len());
        for (out, &s) in frame.iter_mut().zip(&available[..n]) {
            *out = f32_to_i16(s);
        }
        frame[n..].fill(0);
        self.taken += n;
        Ok(true)
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

/// Writes 48 kHz mono 16-bit WAV. [`finish`](AudioSink::finish) writes the final header;
/// dropping an unfinished sink finishes it too (an error is then only logged).
pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    samples: u64,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .field("samples", &self.samples)
            .field("finished", &self.writer.is_none())
            .finish()
    }
}

impl WavSink {
    /// Creates (or replaces) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let path = path.as_ref();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| wav_error(path, format!("cannot create: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            writer: Some(writer),
            samples: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.samples
    }
}

impl AudioSink for WavSink {
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(wav_error(&self.path, "write after finish"));
        };
        if self.samples + frame.len() as u64 > MAX_SINK_SAMPLES {
            return Err(wav_error(
                &self.path,
                "full: a WAV file holds at most 4 GiB (about 12 hours at 48 kHz)",
            ));
        }
        for &s in frame {
            writer
                .write_sample(s)
                .map_err(|e| wav_error(&self.path, format!("cannot write: {e}")))?;
        }
        self.samples += frame.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(writer) => writer
                .finalize()
                .map_err(|e| wav_error(&self.path, format!("cannot finish: {e}"))),
            None => Ok(()),
        }
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("{e}");
        }
    }
}
