//! Sound devices through cpal: capture ([`DeviceSource`]), playback ([`DeviceSink`]) and
//! [`list_devices`].
//!
//! A device runs at whatever it prefers (48 kHz when it offers it), with any channel count
//! and sample format; conversion happens here: capture is averaged to mono, playback is
//! copied to every channel, and [`StreamResampler`] bridges the rate when it is not 48 kHz.
//!
//! cpal's `Stream` is not `Send` on every platform, so each stream lives on its own thread,
//! which builds it, starts it and then parks until told to stop. The audio callback and
//! the engine meet at a bounded queue behind a mutex: the callback only moves samples
//! (no resampling, no allocation); the engine's thread converts.
//!
//! A machine without a sound card is normal (CI, servers): opening then fails with
//! [`AudioError::NoDevice`], whose message names the file options.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample as _, SampleFormat, SizedSample, SupportedStreamConfig};

use super::resample::{StreamResampler, f32_to_i16, i16_to_f32};
use super::{AudioError, AudioSink, AudioSource, SAMPLE_RATE};

/// `read` fails when a capture device delivers nothing for this long.
pub const CAPTURE_STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The most captured audio held for the engine before the oldest is dropped.
pub const CAPTURE_QUEUE_MS: usize = 500;

/// The most audio queued for playback before the oldest is dropped.
pub const PLAYBACK_QUEUE_MS: usize = 200;

/// How long opening a device may take before it counts as failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the backend is given to set a stream up.
const BUILD_TIMEOUT: Duration = Duration::from_secs(5);

/// Capture or playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Capture,
    Playback,
}

impl Direction {
    fn kind(self) -> &'static str {
        match self {
            Direction::Capture => "capture",
            Direction::Playback => "playback",
        }
    }
}

/// One device as [`list_devices`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The human name (what `device:NAME` matches against, as is the id).
    pub name: String,
    /// The backend's id for the device (for ALSA the PCM name, such as `hw:CARD=0,DEV=0`).
    pub id: String,
    /// Whether it can capture.
    pub is_input: bool,
    /// Whether it can play.
    pub is_output: bool,
    /// Whether it is the system's default capture device.
    pub is_default_input: bool,
    /// Whether it is the system's default playback device.
    pub is_default_output: bool,
    /// What it captures, when that could be queried.
    pub input: Option<Capabilities>,
    /// What it plays, when that could be queried.
    pub output: Option<Capabilities>,
}

/// A summary of the stream configurations a device supports in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The lowest supported rate in Hz.
    pub min_rate: u32,
    /// The highest supported rate in Hz.
    pub max_rate: u32,
    /// Whether 48 kHz (the engine's rate, no resampling) is supported.
    pub has_48k: bool,
    /// Supported channel counts, ascending.
    pub channels: Vec<u16>,
    /// Supported sample formats, as cpal names them (`f32`, `i16`...).
    pub formats: Vec<String>,
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min_rate == self.max_rate {
            write!(f, "{} Hz", self.min_rate)?;
        } else {
            write!(f, "{}-{} Hz", self.min_rate, self.max_rate)?;
        }
        write!(
            f,
            ", {} ch, {}",
            runs(&self.channels),
            self.formats.join("/")
        )?;
        if !self.has_48k {
            f.write_str(" (resampled to 48 kHz)")?;
        }
        Ok(())
    }
}

/// `1/2/6` for scattered counts, `1-64` for a run (counts ascending, deduplicated).
fn runs(counts: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < counts.len() {
        let mut j = i;
        while j + 1 < counts.len() && counts[j + 1] == counts[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => counts[i].to_string(),
            1 => format!("{}/{}", counts[i], counts[j]),
            _ => format!("{}-{}", counts[i], counts[j]),
        });
        i = j + 1;
    }
    parts.join("/")
}

impl DeviceInfo {
    /// One line for `sotto devices`: name, id, directions, defaults and capabilities.
    pub fn summary(&self) -> String {
        let mut flags = Vec::new();
        if self.is_input {
            flags.push(if self.is_default_input {
                "input (default)"
            } else {
                "input"
            });
        }
        if self.is_output {
            flags.push(if self.is_default_output {
                "output (default)"
            } else {
                "output"
            });
        }
        let mut line = format!("{} [{}]: {}", self.name, self.id, flags.join(", "));
        if let Some(caps) = &self.input {
            line.push_str(&format!("; in: {caps}"));
        }
        if let Some(caps) = &self.output {
            line.push_str(&format!("; out: {caps}"));
        }
        line
    }
}

/// Lists the audio devices of the default host. An empty list is a normal answer on a
/// machine without sound hardware.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    let host = cpal::default_host();
    let default_in = host.default_input_device().and_then(|d| d.id().ok());
    let default_out = host.default_output_device().and_then(|d| d.id().ok());
    let devices = host
        .devices()
        .map_err(|e| AudioError::Device(format!("cannot list devices: {e}")))?;
    let mut list = Vec::new();
    for device in devices {
        let Ok(id) = device.id() else { continue };
        let name = device_name(&device);
        let input = if device.supports_input() {
            device
                .supported_input_configs()
                .ok()
                .and_then(|c| summarize(c.collect()))
        } else {
            None
        };
        let output = if device.supports_output() {
            device
                .supported_output_configs()
                .ok()
                .and_then(|c| summarize(c.collect()))
        } else {
            None
        };
        // A device that cannot be opened in either direction is no use to anyone.
        if input.is_none() && output.is_none() {
            continue;
        }
        list.push(DeviceInfo {
            name,
            id: id.id().to_owned(),
            is_input: input.is_some(),
            is_output: output.is_some(),
            is_default_input: input.is_some() && default_in.as_ref() == Some(&id),
            is_default_output: output.is_some() && default_out.as_ref() == Some(&id),
            input,
            output,
        });
    }
    Ok(list)
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .or_else(|_| device.id().map(|id| id.id().to_owned()))
        .unwrap_or_else(|_| "(unnamed)".to_owned())
}

fn summarize(ranges: Vec<cpal::SupportedStreamConfigRange>) -> Option<Capabilities> {
    let usable: Vec<_> = ranges
        .into_iter()
        .filter(|r| format_rank(r.sample_format()).is_some() && r.channels() > 0)
        .collect();
    let min_rate = usable.iter().map(|r| r.min_sample_rate()).min()?;
    let max_rate = usable.iter().map(|r| r.max_sample_rate()).max()?;
    let mut channels: Vec<u16> = usable.iter().map(|r| r.channels()).collect();
    channels.sort_unstable();
    channels.dedup();
    let mut formats = Vec::new();
    for r in &usable {
        let name = r.sample_format().to_string();
        if !formats.contains(&name) {
            formats.push(name);
        }
    }
    Some(Capabilities {
        min_rate,
        max_rate,
        has_48k: usable.iter().any(|r| r.contains_rate(SAMPLE_RATE)),
        channels,
        formats,
    })
}

/// How much we like a sample format (higher is better); `None` for formats we do not
/// convert (DSD).
fn format_rank(format: SampleFormat) -> Option<u8> {
    Some(match format {
        SampleFormat::F32 => 12,
        SampleFormat::I16 => 11,
        SampleFormat::I32 => 10,
        SampleFormat::I24 => 9,
        SampleFormat::F64 => 8,
        SampleFormat::U16 => 7,
        SampleFormat::U32 => 6,
        SampleFormat::U24 => 5,
        SampleFormat::I8 => 4,
        SampleFormat::U8 => 3,
        SampleFormat::I64 => 2,
        SampleFormat::U64 => 1,
        _ => return None,
    })
}

/// Picks the stream configuration: 48 kHz when offered, then the best sample format, then
/// the fewest channels (mono, then stereo...). Without 48 kHz: the device's default rate,
/// else 44.1 kHz, else the nearest rate to 48 kHz.
fn choose_config(
    ranges: Vec<cpal::SupportedStreamConfigRange>,
    default: Option<SupportedStreamConfig>,
) -> Option<SupportedStreamConfig> {
    let key = |r: &cpal::SupportedStreamConfigRange| {
        (
            r.contains_rate(SAMPLE_RATE),
            format_rank(r.sample_format()).unwrap_or(0),
            std::cmp::Reverse(r.channels()),
        )
    };
    let usable = ranges
        .into_iter()
        .filter(|r| format_rank(r.sample_format()).is_some() && r.channels() > 0);
    let best = usable.max_by_key(key)?;
    if best.contains_rate(SAMPLE_RATE) {
        return best.try_with_sample_rate(SAMPLE_RATE);
    }
    if let Some(default) = default
        && best.contains_rate(default.sample_rate())
    {
        return best.try_with_sample_rate(default.sample_rate());
    }
    let rate = SAMPLE_RATE.clamp(best.min_sample_rate(), best.max_sample_rate());
    best.try_with_sample_rate(rate)
}

/// The device `name` selects (any part of its name or id, ignoring case), or the default.
fn find_device(
    host: &cpal::Host,
    name: Option<&str>,
    direction: Direction,
) -> Result<cpal::Device, AudioError> {
    let kind = direction.kind();
    let Some(name) = name else {
        let device = match direction {
            Direction::Capture => host.default_input_device(),
            Direction::Playback => host.default_output_device(),
        };
        return device.ok_or(AudioError::NoDevice {
            kind,
            detail: String::new(),
        });
    };
    let wanted = name.to_lowercase();
    let devices = host
        .devices()
        .map_err(|e| AudioError::Device(format!("cannot list devices: {e}")))?;
    for device in devices {
        let supports = match direction {
            Direction::Capture => device.supports_input(),
            Direction::Playback => device.supports_output(),
        };
        if !supports {
            continue;
        }
        let id = device
            .id()
            .map(|id| id.id().to_lowercase())
            .unwrap_or_default();
        if device_name(&device).to_lowercase().contains(&wanted) || id.contains(&wanted) {
            return Ok(device);
        }
    }
    Err(AudioError::NoDevice {
        kind,
        detail: format!(": none matches {name:?} (`sotto devices` lists them)"),
    })
}

/// The configuration to open `device` with. A device whose configurations cannot even be
/// queried is treated as absent (ALSA offers a "default" device on machines without any
/// sound card).
fn device_config(
    device: &cpal::Device,
    direction: Direction,
) -> Result<SupportedStreamConfig, AudioError> {
    let (ranges, default) = match direction {
        Direction::Capture => (
            device.supported_input_configs().map(|r| r.collect()),
            device.default_input_config().ok(),
        ),
        Direction::Playback => (
            device.supported_output_configs().map(|r| r.collect()),
            device.default_output_config().ok(),
        ),
    };
    let ranges: Vec<_> = ranges.map_err(|e| AudioError::NoDevice {
        kind: direction.kind(),
        detail: format!(": {} cannot be opened ({e})", device_name(device)),
    })?;
    choose_config(ranges, default).ok_or_else(|| AudioError::NoDevice {
        kind: direction.kind(),
        detail: format!(
            ": {} offers no {} format Sotto can use",
            device_name(device),
            direction.kind()
        ),
    })
}

/// What was opened, for logs and for `sotto` to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedDevice {
    /// The device's name.
    pub name: String,
    /// The stream's rate in Hz (resampled to and from 48 kHz when different).
    pub rate: u32,
    /// The stream's channel count.
    pub channels: u16,
    /// The stream's sample format, as cpal names it.
    pub format: String,
}

/// Owns the thread that owns a cpal stream; dropping it stops the stream.
struct StreamThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl StreamThread {
    /// Runs `build` on a new thread, which keeps the stream it returns alive until stopped.
    fn spawn<F>(
        thread_name: &str,
        kind: &'static str,
        build: F,
    ) -> Result<(Self, OpenedDevice), AudioError>
    where
        F: FnOnce() -> Result<(cpal::Stream, OpenedDevice), AudioError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || match build() {
                Ok((stream, opened)) => {
                    if tx.send(Ok(opened)).is_err() {
                        return;
                    }
                    while !thread_stop.load(Ordering::Acquire) {
                        std::thread::park();
                    }
                    drop(stream);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| AudioError::Device(format!("cannot start the {kind} thread: {e}")))?;
        let mut thread = StreamThread {
            stop,
            handle: Some(handle),
        };
        match rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(opened)) => Ok((thread, opened)),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Do not wait for a thread stuck in the backend; let it go.
                thread.stop.store(true, Ordering::Release);
                thread.handle = None;
                Err(AudioError::Device(format!(
                    "the {kind} device did not open within {} s",
                    OPEN_TIMEOUT.as_secs()
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(AudioError::Device(format!(
                "the {kind} thread ended while opening the device"
            ))),
        }
    }
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            if handle.join().is_err() {
                tracing::warn!("an audio stream thread panicked");
            }
        }
    }
}

/// The stream error callback: glitches are counted, anything else ends the stream.
fn on_stream_error(shared: &Shared, err: cpal::Error) {
    let mut state = shared.lock();
    match err.kind() {
        cpal::ErrorKind::Xrun => state.xruns += 1,
        cpal::ErrorKind::DeviceChanged | cpal::ErrorKind::RealtimeDenied => {
            tracing::debug!("audio stream: {err}");
        }
        _ => {
            if state.error.is_none() {
                state.error = Some(err.to_string());
            }
        }
    }
    drop(state);
    shared.changed.notify_all();
}

/// The queue between a callback and the engine, plus what went wrong.
struct Shared {
    state: Mutex<QueueState>,
    changed: Condvar,
}

struct QueueState {
    /// Mono samples at the device's rate.
    queue: VecDeque<f32>,
    /// The most samples `queue` holds.
    capacity: usize,
    /// Samples dropped because the queue was full.
    dropped: u64,
    /// Playback callbacks that found the queue short (after the first write).
    underruns: u64,
    /// Glitches the backend reported.
    xruns: u64,
    /// Set once the engine has queued audio for playback.
    started: bool,
    /// A fatal stream error.
    error: Option<String>,
}

impl Shared {
    /// An empty queue; [`set_bound`](Self::set_bound) sizes it once the rate is known.
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                capacity: 0,
                dropped: 0,
                underruns: 0,
                xruns: 0,
                started: false,
                error: None,
            }),
            changed: Condvar::new(),
        })
    }

    /// Bounds the queue to `ms` of audio at `rate` and allocates it, so the callback never
    /// allocates.
    fn set_bound(&self, rate: u32, ms: usize) {
        let mut state = self.lock();
        state.capacity = (rate as usize * ms / 1000).max(1);
        let capacity = state.capacity;
        state.queue.reserve(capacity);
    }

    /// Locks the state; a poisoned lock (a panic elsewhere) still holds valid samples.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl QueueState {
    /// Appends samples, dropping the oldest over capacity.
    fn push(&mut self, samples: impl IntoIterator<Item = f32>) {
        for s in samples {
            if self.queue.len() >= self.capacity {
                self.queue.pop_front();
                self.dropped += 1;
            }
            self.queue.push_back(s);
        }
    }
}

/// Counters of a running device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Samples dropped because the queue was over its bound (capture: the engine read too
    /// slowly; playback: the engine wrote faster than the device plays).
    pub dropped_samples: u64,
    /// Playback callbacks that had to play silence because the queue ran dry.
    pub underruns: u64,
    /// Over- and underruns the backend itself reported.
    pub xruns: u64,
}

fn stats_of(shared: &Shared) -> DeviceStats {
    let state = shared.lock();
    DeviceStats {
        dropped_samples: state.dropped,
        underruns: state.underruns,
        xruns: state.xruns,
    }
}

/// Captures from a sound device: 48 kHz mono, blocking until each frame is there.
pub struct DeviceSource {
    shared: Arc<Shared>,
    opened: OpenedDevice,
    resampler: StreamResampler,
    raw: Vec<f32>,
    converted: Vec<f32>,
    taken: usize,
    /// Declared last: dropping it stops the stream after the rest is gone.
    _thread: StreamThread,
}

impl std::fmt::Debug for DeviceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSource")
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl DeviceSource {
    /// Opens the default capture device (`name` `None`) or the first whose name or id
    /// contains `name`, ignoring case, and starts capturing.
    pub fn open(name: Option<&str>) -> Result<Self, AudioError> {
        let name = name.map(str::to_owned);
        let shared = Shared::new();
        let callback_shared = shared.clone();
        let (thread, opened) = StreamThread::spawn("sotto-capture", "capture", move || {
            build_capture(name.as_deref(), callback_shared)
        })?;
        let resampler = StreamResampler::new(opened.rate, SAMPLE_RATE)?;
        tracing::info!(
            device = %opened.name,
            rate = opened.rate,
            channels = opened.channels,
            format = %opened.format,
            "capture started"
        );
        Ok(Self {
            shared,
            opened,
            resampler,
            raw: Vec::new(),
            converted: Vec::new(),
            taken: 0,
            _thread: thread,
        })
    }

    /// The device and stream configuration in use.
    pub fn opened(&self) -> &OpenedDevice {
        &self.opened
    }

    /// Drop and glitch counters.
    pub fn stats(&self) -> DeviceStats {
        stats_of(&self.shared)
    }

    /// Waits for captured samples and moves them all into `raw`.
    fn wait_for_samples(&mut self) -> Result<(), AudioError> {
        take_captured(&self.shared, CAPTURE_STALL_TIMEOUT, &mut self.raw).map_err(|e| {
            AudioError::Device(match e {
                CaptureFailure::Stalled => format!(
                    "capture from {} stalled: no audio for {} s",
                    self.opened.name,
                    CAPTURE_STALL_TIMEOUT.as_secs()
                ),
                CaptureFailure::Stream(error) => {
                    format!("capture from {} failed: {error}", self.opened.name)
                }
            })
        })
    }
}

/// Why no captured audio came.
#[derive(Debug, PartialEq, Eq)]
enum CaptureFailure {
    /// Nothing arrived within the timeout.
    Stalled,
    /// The stream reported a fatal error.
    Stream(String),
}

/// Waits up to `timeout` for the callback to queue samples, then moves them all to `out`.
fn take_captured(
    shared: &Shared,
    timeout: Duration,
    out: &mut Vec<f32>,
) -> Result<(), CaptureFailure> {
    let deadline = Instant::now() + timeout;
    let mut state = shared.lock();
    loop {
        if let Some(error) = &state.error {
            return Err(CaptureFailure::Stream(error.clone()));
        }
        if !state.queue.is_empty() {
            out.extend(state.queue.drain(..));
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(CaptureFailure::Stalled);
        }
        state = shared
            .changed
            .wait_timeout(state, deadline - now)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

impl AudioSource for DeviceSource {
    fn read(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        if self.taken > 0 {
            self.converted.drain(..self.taken);
            self.taken = 0;
        }
        while self.converted.len() < frame.len() {
            self.wait_for_samples()?;
            self.resampler.process_f32(&self.raw, &mut self.converted)?;
            self.raw.clear();
        }
        for (out, &s) in frame.iter_mut().zip(&self.converted) {
            *out = f32_to_i16(s);
        }
        self.taken = frame.len();
        Ok(true)
    }

    fn is_realtime(&self) -> bool {
        true
    }
}

fn build_capture(
    name: Option<&str>,
    shared: Arc<Shared>,
) -> Result<(cpal::Stream, OpenedDevice), AudioError> {
    let host = cpal::default_host();
    let device = find_device(&host, name, Direction::Capture)?;
    let config = device_config(&device, Direction::Capture)?;
    let opened = OpenedDevice {
        name: device_name(&device),
        rate: config.sample_rate(),
        channels: config.channels(),
        format: config.sample_format().to_string(),
    };
    shared.set_bound(opened.rate, CAPTURE_QUEUE_MS);
    macro_rules! build {
        ($t:ty) => {
            capture_stream::<$t>(&device, &config, shared)
        };
    }
    let stream = match config.sample_format() {
        SampleFormat::F32 => build!(f32),
        SampleFormat::I16 => build!(i16),
        SampleFormat::I32 => build!(i32),
        SampleFormat::I24 => build!(cpal::I24),
        SampleFormat::F64 => build!(f64),
        SampleFormat::U16 => build!(u16),
        SampleFormat::U32 => build!(u32),
        SampleFormat::U24 => build!(cpal::U24),
        SampleFormat::I8 => build!(i8),
        SampleFormat::U8 => build!(u8),
        SampleFormat::I64 => build!(i64),
        SampleFormat::U64 => build!(u64),
        other => Err(AudioError::Device(format!(
            "sample format {other} is not supported"
        ))),
    }?;
    stream
        .play()
        .map_err(|e| AudioError::Device(format!("cannot start capture on {}: {e}", opened.name)))?;
    Ok((stream, opened))
}

fn capture_stream<T>(
    device: &cpal::Device,
    config: &SupportedStreamConfig,
    shared: Arc<Shared>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels()).max(1);
    let gain = 1.0 / channels as f32;
    let data_shared = shared.clone();
    device
        .build_input_stream(
            config.config(),
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let mut state = data_shared.lock();
                state.push(
                    data.chunks_exact(channels).map(|frame| {
                        frame.iter().map(|&s| f32::from_sample(s)).sum::<f32>() * gain
                    }),
                );
                drop(state);
                data_shared.changed.notify_all();
            },
            move |err| on_stream_error(&shared, err),
            Some(BUILD_TIMEOUT),
        )
        .map_err(|e| AudioError::Device(format!("cannot open the capture stream: {e}")))
}

/// Plays to a sound device: `write` queues (at most [`PLAYBACK_QUEUE_MS`]) and returns.
pub struct DeviceSink {
    shared: Arc<Shared>,
    opened: OpenedDevice,
    resampler: StreamResampler,
    converted: Vec<f32>,
    finished: bool,
    /// Declared last: dropping it stops the stream after the rest is gone.
    thread: Option<StreamThread>,
}

impl std::fmt::Debug for DeviceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSink")
            .field("opened", &self.opened)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl DeviceSink {
    /// Opens the default playback device (`name` `None`) or the first whose name or id
    /// contains `name`, ignoring case, and starts playing (silence until written to).
    pub fn open(name: Option<&str>) -> Result<Self, AudioError> {
        let name = name.map(str::to_owned);
        let shared = Shared::new();
        let callback_shared = shared.clone();
        let (thread, opened) = StreamThread::spawn("sotto-playback", "playback", move || {
            build_playback(name.as_deref(), callback_shared)
        })?;
        let resampler = StreamResampler::new(SAMPLE_RATE, opened.rate)?;
        tracing::info!(
            device = %opened.name,
            rate = opened.rate,
            channels = opened.channels,
            format = %opened.format,
            "playback started"
        );
        Ok(Self {
            shared,
            opened,
            resampler,
            converted: Vec::new(),
            finished: false,
            thread: Some(thread),
        })
    }

    /// The device and stream configuration in use.
    pub fn opened(&self) -> &OpenedDevice {
        &self.opened
    }

    /// Drop, underrun and glitch counters.
    pub fn stats(&self) -> DeviceStats {
        stats_of(&self.shared)
    }

    /// Queues converted samples, failing if the stream has died.
    fn queue_converted(&mut self) -> Result<(), AudioError> {
        let mut state = self.shared.lock();
        if let Some(error) = &state.error {
            return Err(AudioError::Device(format!(
                "playback on {} failed: {error}",
                self.opened.name
            )));
        }
        state.started = true;
        state.push(self.converted.drain(..));
        Ok(())
    }
}

impl AudioSink for DeviceSink {
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        if self.finished {
            return Err(AudioError::Device(format!(
                "playback on {} is finished",
                self.opened.name
            )));
        }
        let input: Vec<f32> = frame.iter().map(|&s| i16_to_f32(s)).collect();
        self.resampler.process_f32(&input, &mut self.converted)?;
        self.queue_converted()
    }

    /// Plays out what is queued (waiting at most the queue's length plus a margin), then
    /// closes the device.
    fn finish(&mut self) -> Result<(), AudioError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.resampler.flush_f32(&mut self.converted)?;
        let queued = self.queue_converted();
        let deadline = Instant::now() + Duration::from_millis(PLAYBACK_QUEUE_MS as u64 * 2 + 500);
        let mut state = self.shared.lock();
        while !state.queue.is_empty() && state.error.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(state);
        self.thread = None;
        queued
    }

    fn is_realtime(&self) -> bool {
        true
    }
}

fn build_playback(
    name: Option<&str>,
    shared: Arc<Shared>,
) -> Result<(cpal::Stream, OpenedDevice), AudioError> {
    let host = cpal::default_host();
    let device = find_device(&host, name, Direction::Playback)?;
    let config = device_config(&device, Direction::Playback)?;
    let opened = OpenedDevice {
        name: device_name(&device),
        rate: config.sample_rate(),
        channels: config.channels(),
        format: config.sample_format().to_string(),
    };
    shared.set_bound(opened.rate, PLAYBACK_QUEUE_MS);
    macro_rules! build {
        ($t:ty) => {
            playback_stream::<$t>(&device, &config, shared)
        };
    }
    let stream = match config.sample_format() {
        SampleFormat::F32 => build!(f32),
        SampleFormat::I16 => build!(i16),
        SampleFormat::I32 => build!(i32),
        SampleFormat::I24 => build!(cpal::I24),
        SampleFormat::F64 => build!(f64),
        SampleFormat::U16 => build!(u16),
        SampleFormat::U32 => build!(u32),
        SampleFormat::U24 => build!(cpal::U24),
        SampleFormat::I8 => build!(i8),
        SampleFormat::U8 => build!(u8),
        SampleFormat::I64 => build!(i64),
        SampleFormat::U64 => build!(u64),
        other => Err(AudioError::Device(format!(
            "sample format {other} is not supported"
        ))),
    }?;
    stream.play().map_err(|e| {
        AudioError::Device(format!("cannot start playback on {}: {e}", opened.name))
    })?;
    Ok((stream, opened))
}

fn playback_stream<T>(
    device: &cpal::Device,
    config: &SupportedStreamConfig,
    shared: Arc<Shared>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample + FromSample<f32> + Send + 'static,
{
    let channels = usize::from(config.channels()).max(1);
    let data_shared = shared.clone();
    device
        .build_output_stream(
            config.config(),
            move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                let mut state = data_shared.lock();
                let mut short = false;
                for frame in data.chunks_mut(channels) {
                    let sample = state.queue.pop_front().unwrap_or_else(|| {
                        short = true;
                        0.0
                    });
                    frame.fill(T::from_sample(sample));
                }
                if short && state.started {
                    state.underruns += 1;
                }
                drop(state);
                data_shared.changed.notify_all();
            },
            move |err| on_stream_error(&shared, err),
            Some(BUILD_TIMEOUT),
        )
        .map_err(|e| AudioError::Device(format!("cannot open the playback stream: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::{SupportedBufferSize, SupportedStreamConfigRange};

    fn range(
        channels: u16,
        min: u32,
        max: u32,
        format: SampleFormat,
    ) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn config_prefers_48k_then_format_then_fewer_channels() {
        let chosen = choose_config(
            vec![
                range(2, 44_100, 44_100, SampleFormat::F32),
                range(2, 8_000, 96_000, SampleFormat::I16),
                range(1, 8_000, 96_000, SampleFormat::I16),
                range(6, 48_000, 48_000, SampleFormat::F32),
                range(2, 48_000, 48_000, SampleFormat::DsdU8),
            ],
            None,
        )
        .unwrap();
        assert_eq!(chosen.sample_rate(), 48_000);
        assert_eq!(chosen.sample_format(), SampleFormat::F32);
        assert_eq!(chosen.channels(), 6);

        let chosen = choose_config(
            vec![
                range(2, 8_000, 96_000, SampleFormat::I16),
                range(1, 8_000, 96_000, SampleFormat::I16),
            ],
            None,
        )
        .unwrap();
        assert_eq!((chosen.channels(), chosen.sample_rate()), (1, 48_000));
    }

    #[test]
    fn config_without_48k_takes_the_default_or_nearest_rate() {
        let only_44 = vec![range(2, 44_100, 44_100, SampleFormat::I16)];
        assert_eq!(choose_config(only_44, None).unwrap().sample_rate(), 44_100);
        let low = vec![range(1, 8_000, 16_000, SampleFormat::U8)];
        assert_eq!(choose_config(low, None).unwrap().sample_rate(), 16_000);
        assert!(
            choose_config(vec![range(2, 48_000, 48_000, SampleFormat::DsdU32)], None).is_none()
        );
        assert!(choose_config(Vec::new(), None).is_none());
    }

    #[test]
    fn queue_drops_the_oldest_over_its_bound() {
        let shared = Shared::new();
        shared.set_bound(4000, 1);
        let mut state = shared.lock();
        state.push([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            state.queue.iter().copied().collect::<Vec<_>>(),
            [3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(state.dropped, 2);
    }

    #[test]
    fn capture_wait_returns_samples_errors_or_a_stall() {
        let shared = Shared::new();
        shared.set_bound(48_000, 100);
        let mut out = Vec::new();
        // Nothing queued: a stall, after the (short) timeout.
        assert_eq!(
            take_captured(&shared, Duration::from_millis(20), &mut out),
            Err(CaptureFailure::Stalled)
        );
        // Samples pushed from another thread (as the callback does) wake the reader.
        let feeder = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                shared.lock().push([0.25; 480]);
                shared.changed.notify_all();
            })
        };
        take_captured(&shared, Duration::from_secs(60), &mut out).unwrap();
        feeder.join().unwrap();
        assert_eq!(out.len(), 480);
        assert!(shared.lock().queue.is_empty());
        // A stream error wins over waiting.
        shared.lock().error = Some("device unplugged".into());
        assert_eq!(
            take_captured(&shared, Duration::from_secs(60), &mut out),
            Err(CaptureFailure::Stream("device unplugged".into()))
        );
    }

    #[test]
    fn capabilities_read_well() {
        let caps = summarize(vec![
            range(2, 44_100, 48_000, SampleFormat::I16),
            range(1, 44_100, 48_000, SampleFormat::F32),
        ])
        .unwrap();
        assert_eq!(caps.to_string(), "44100-48000 Hz, 1/2 ch, i16/f32");
        assert_eq!(runs(&[1, 2, 3, 4, 6, 8, 9]), "1-4/6/8/9");
        assert_eq!(runs(&[]), "");
        let info = DeviceInfo {
            name: "USB Mic".into(),
            id: "hw:CARD=1,DEV=0".into(),
            is_input: true,
            is_output: false,
            is_default_input: true,
            is_default_output: false,
            input: Some(caps),
            output: None,
        };
        assert_eq!(
            info.summary(),
            "USB Mic [hw:CARD=1,DEV=0]: input (default); in: 44100-48000 Hz, 1/2 ch, i16/f32"
        );
    }

    /// This machine may have no sound card at all: opening must then fail cleanly, and
    /// when a device does open it must deliver audio or report a device error.
    #[test]
    fn default_devices_open_or_fail_cleanly() {
        match DeviceSource::open(None) {
            Ok(mut source) => {
                assert!(source.is_realtime());
                let mut frame = [0i16; 960];
                match source.read(&mut frame) {
                    Ok(more) => assert!(more),
                    Err(e) => assert!(matches!(e, AudioError::Device(_)), "{e}"),
                }
            }
            Err(e) => assert!(
                matches!(e, AudioError::NoDevice { .. } | AudioError::Device(_)),
                "{e}"
            ),
        }
        match DeviceSink::open(None) {
            Ok(mut sink) => {
                assert!(sink.is_realtime());
                let frame = [0i16; 960];
                if let Err(e) = sink.write(&frame) {
                    assert!(matches!(e, AudioError::Device(_)), "{e}");
                }
                let _ = sink.finish();
                assert!(sink.finish().is_ok(), "finish is idempotent");
            }
            Err(e) => assert!(
                matches!(e, AudioError::NoDevice { .. } | AudioError::Device(_)),
                "{e}"
            ),
        }
        let missing = DeviceSource::open(Some("no such device, surely 7f3a"));
        assert!(
            matches!(
                missing,
                Err(AudioError::NoDevice { .. } | AudioError::Device(_))
            ),
            "{missing:?}"
        );
    }
}
