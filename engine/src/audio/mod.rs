//! Audio: one source/sink interface over devices (cpal), WAV files (hound), a synthetic
//! tone and silence; Opus encoding and decoding; the receive-side jitter buffer.
//!
//! Everything inside the engine runs at [`SAMPLE_RATE`] (48 kHz), mono, 16-bit. Sources
//! and sinks that run at another rate or channel count convert at the edge (rubato for
//! the rate), so the pipeline never sees anything else.

pub mod analysis;
pub mod codec;
pub mod device;
pub mod jitter;
pub mod level;
pub mod playout;
pub mod rate;
pub mod red;
pub mod replay;
pub mod resample;
pub mod stretch;
pub mod synth;
pub mod wav;

use std::path::PathBuf;
use std::str::FromStr;

/// The engine's sample rate: Opus's native rate and the RTP clock of the audio track.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in one millisecond at [`SAMPLE_RATE`].
pub const SAMPLES_PER_MS: usize = (SAMPLE_RATE / 1000) as usize;

/// Something that produces audio: 48 kHz mono `i16`, one frame at a time.
pub trait AudioSource: Send {
    /// Fills `frame` with the next samples. A real-time source (a device) blocks until they
    /// have been captured; the others return at once and leave pacing to the caller.
    /// Returns `Ok(false)` at the end of the input (a file that ran out); `frame` is then
    /// left as silence.
    fn read(&mut self, frame: &mut [i16]) -> Result<bool, AudioError>;

    /// True when the source keeps its own time (a capture device). Files, the tone and
    /// silence return false: the caller reads one frame per frame period of its clock.
    fn is_realtime(&self) -> bool;
}

/// Something that consumes audio: 48 kHz mono `i16`, one frame at a time.
pub trait AudioSink: Send {
    /// Takes the next frame. Never blocks for long: a device sink queues it for its
    /// callback (dropping the oldest audio if the queue is over its bound).
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError>;

    /// Flushes and closes (a WAV file gets its final header). Idempotent.
    fn finish(&mut self) -> Result<(), AudioError>;

    /// True when the sink keeps its own time (a playback device).
    fn is_realtime(&self) -> bool;
}

/// Where audio comes from, as a user names it on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSpec {
    /// The system's default capture device.
    DefaultDevice,
    /// A capture device by (part of) its name, as `sotto devices` lists it.
    Device(String),
    /// A WAV file (any rate and channel count; mixed to mono, resampled to 48 kHz).
    Wav(PathBuf),
    /// A sine tone at this frequency in Hz.
    Tone(f32),
    /// Digital silence.
    Silence,
}

/// Where audio goes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputSpec {
    /// The system's default playback device.
    DefaultDevice,
    /// A playback device by (part of) its name.
    Device(String),
    /// A WAV file, 48 kHz mono 16-bit.
    Wav(PathBuf),
    /// Discard.
    Null,
}

/// How the command line spells inputs: `default`, `device:NAME`, `tone:440`, `silence`,
/// or a path ending in `.wav`.
impl FromStr for InputSpec {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "default" {
            Ok(InputSpec::DefaultDevice)
        } else if s == "silence" {
            Ok(InputSpec::Silence)
        } else if let Some(name) = s.strip_prefix("device:") {
            Ok(InputSpec::Device(name.to_owned()))
        } else if let Some(hz) = s.strip_prefix("tone:") {
            let hz: f32 = hz.parse().map_err(|_| AudioError::BadSpec(s.to_owned()))?;
            if !(1.0..(SAMPLE_RATE as f32 / 2.0)).contains(&hz) {
                return Err(AudioError::BadSpec(s.to_owned()));
            }
            Ok(InputSpec::Tone(hz))
        } else if is_wav_path(s) {
            Ok(InputSpec::Wav(PathBuf::from(s)))
        } else {
            Err(AudioError::BadSpec(s.to_owned()))
        }
    }
}

/// How the command line spells outputs: `default`, `device:NAME`, `null`, or a path
/// ending in `.wav`.
impl FromStr for OutputSpec {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "default" {
            Ok(OutputSpec::DefaultDevice)
        } else if s == "null" {
            Ok(OutputSpec::Null)
        } else if let Some(name) = s.strip_prefix("device:") {
            Ok(OutputSpec::Device(name.to_owned()))
        } else if is_wav_path(s) {
            Ok(OutputSpec::Wav(PathBuf::from(s)))
        } else {
            Err(AudioError::BadSpec(s.to_owned()))
        }
    }
}

/// Opens what `spec` names: a capture device, a WAV file, a tone or silence.
pub fn open_source(spec: &InputSpec) -> Result<Box<dyn AudioSource>, AudioError> {
    Ok(match spec {
        InputSpec::DefaultDevice => Box::new(device::DeviceSource::open(None)?),
        InputSpec::Device(name) => Box::new(device::DeviceSource::open(Some(name))?),
        InputSpec::Wav(path) => Box::new(wav::WavSource::open(path)?),
        InputSpec::Tone(hz) => Box::new(synth::ToneSource::new(*hz)),
        InputSpec::Silence => Box::new(synth::SilenceSource),
    })
}

/// Opens what `spec` names: a playback device, a WAV file, or nothing.
pub fn open_sink(spec: &OutputSpec) -> Result<Box<dyn AudioSink>, AudioError> {
    Ok(match spec {
        OutputSpec::DefaultDevice => Box::new(device::DeviceSink::open(None)?),
        OutputSpec::Device(name) => Box::new(device::DeviceSink::open(Some(name))?),
        OutputSpec::Wav(path) => Box::new(wav::WavSink::create(path)?),
        OutputSpec::Null => Box::new(synth::NullSink::new()),
    })
}

fn is_wav_path(s: &str) -> bool {
    s.len() > 4 && s.to_ascii_lowercase().ends_with(".wav")
}

/// What can go wrong with audio input and output.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A spec the command line could not parse.
    #[error(
        "cannot read audio spec {0:?}: use default, device:NAME, tone:HZ, silence, null or a .wav path"
    )]
    BadSpec(String),
    /// No device of the kind asked for (CI machines have none).
    #[error(
        "no audio {kind} device found{detail}; use a file instead: --input FILE.wav, --input tone:440 or --input silence, --output FILE.wav or --output null"
    )]
    NoDevice {
        /// "capture" or "playback".
        kind: &'static str,
        /// More about why, starting with ": " when present.
        detail: String,
    },
    /// The device failed or disappeared.
    #[error("audio device error: {0}")]
    Device(String),
    /// A WAV file could not be read or written.
    #[error("WAV file {path}: {message}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Resampling failed.
    #[error("resampling: {0}")]
    Resample(String),
    /// The Opus codec refused.
    #[error("opus: {0}")]
    Codec(String),
}
