//! Sound devices through cpal: capture ([`DeviceSource`]), playback ([`DeviceSink`]) and
//! [`list_devices`].
//!
//! A device runs at whatever it prefers (48 kHz when it offers it), with any channel count
//! and sample format; conversion happens here: capture is averaged to mono, playback is
//! copied to every channel, and [`StreamResampler`](super::resample::StreamResampler)
//! bridges the rate when it is not 48 kHz.
//!
//! cpal's `Stream` is not `Send` on every platform, so each stream lives on its own thread,
//! which builds it, starts it and then parks until told to stop. The audio callback and
//! the engine meet at a bounded queue behind a mutex: the callback only moves samples
//! (no resampling, no allocation); the engine's thread converts.
//!
//! A machine without a sound card is normal (CI, servers): opening then fails with
//! [`AudioError::NoDevice`], whose message names the file options.
//!
//! Files: `device/list.rs` lists devices, `device/config.rs` picks a device and its stream
//! configuration, `device/capture.rs` and `device/playback.rs` run the two directions;
//! this file holds what they share (the stream thread and the queue).

mod capture;
mod config;
mod list;
mod playback;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

pub use capture::DeviceSource;
pub use list::{Capabilities, DeviceInfo, list_devices};
pub use playback::DeviceSink;

use super::AudioError;

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

/// Calls `$build::<T>($args)` with `T` the Rust type of the cpal sample format `$format`,
/// or fails for formats Sotto does not convert (DSD).
macro_rules! with_sample_type {
    ($format:expr, $build:ident($($arg:expr),*)) => {
        match $format {
            cpal::SampleFormat::F32 => $build::<f32>($($arg),*),
            cpal::SampleFormat::I16 => $build::<i16>($($arg),*),
            cpal::SampleFormat::I32 => $build::<i32>($($arg),*),
            cpal::SampleFormat::I24 => $build::<cpal::I24>($($arg),*),
            cpal::SampleFormat::F64 => $build::<f64>($($arg),*),
            cpal::SampleFormat::U16 => $build::<u16>($($arg),*),
            cpal::SampleFormat::U32 => $build::<u32>($($arg),*),
            cpal::SampleFormat::U24 => $build::<cpal::U24>($($arg),*),
            cpal::SampleFormat::I8 => $build::<i8>($($arg),*),
            cpal::SampleFormat::U8 => $build::<u8>($($arg),*),
            cpal::SampleFormat::I64 => $build::<i64>($($arg),*),
            cpal::SampleFormat::U64 => $build::<u64>($($arg),*),
            other => Err(AudioError::Device(format!(
                "sample format {other} is not supported"
            ))),
        }
    };
}
use with_sample_type;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioSink, AudioSource};

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
