//! Capture: the callback averages each frame to mono and queues it; `read` takes the
//! queue, converts it to 48 kHz and hands out whole frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, Sample as _, SizedSample, SupportedStreamConfig};

use super::config::{device_config, device_name, find_device};
use super::{
    BUILD_TIMEOUT, CAPTURE_QUEUE_MS, CAPTURE_STALL_TIMEOUT, DeviceStats, Direction, OpenedDevice,
    Shared, StreamThread, on_stream_error, stats_of, with_sample_type,
};
use crate::audio::resample::{StreamResampler, f32_to_i16};
use crate::audio::{AudioError, AudioSource, SAMPLE_RATE};

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
    let stream = with_sample_type!(
        config.sample_format(),
        capture_stream(&device, &config, shared)
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
