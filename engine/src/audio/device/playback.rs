//! Playback: `write` converts from 48 kHz and queues (bounded, oldest dropped); the
//! callback copies the queue to every channel and plays silence when it runs dry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample, SupportedStreamConfig};

use super::config::{device_config, device_name, find_device};
use super::{
    BUILD_TIMEOUT, DeviceStats, Direction, OpenedDevice, PLAYBACK_QUEUE_MS, Shared, StreamThread,
    on_stream_error, stats_of, with_sample_type,
};
use crate::audio::resample::{StreamResampler, i16_to_f32};
use crate::audio::{AudioError, AudioSink, SAMPLE_RATE};

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
    let stream = with_sample_type!(
        config.sample_format(),
        playback_stream(&device, &config, shared)
    )?;
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
