//! Synthetic audio for tests, benchmarks and headless calls: a sine tone, digital silence,
//! and a sink that discards. None of them keeps its own time; the caller paces them.

use super::{AudioError, AudioSink, AudioSource, SAMPLE_RATE};

/// The tone's default level: -12 dBFS, loud enough to measure, far from clipping.
pub const TONE_DBFS: f32 = -12.0;

/// A sine tone at a fixed frequency, 48 kHz mono, endless. The phase carries over from one
/// frame to the next, so frames of any size join without clicks.
#[derive(Debug, Clone)]
pub struct ToneSource {
    frequency_hz: f64,
    amplitude: f64,
    /// Position in the cycle, 0.0 ..< 1.0.
    phase: f64,
}

impl ToneSource {
    /// A tone at `frequency_hz` and [`TONE_DBFS`].
    pub fn new(frequency_hz: f32) -> Self {
        Self::with_level(frequency_hz, TONE_DBFS)
    }

    /// A tone at `frequency_hz` with its peak at `dbfs` (0 is full scale).
    pub fn with_level(frequency_hz: f32, dbfs: f32) -> Self {
        let amplitude = 10f64.powf(f64::from(dbfs.min(0.0)) / 20.0) * f64::from(i16::MAX);
        Self {
            frequency_hz: f64::from(frequency_hz),
            amplitude,
            phase: 0.0,
        }
    }

    /// The tone's frequency in Hz.
    pub fn frequency_hz(&self) -> f32 {
        self.frequency_hz as f32
    }
}

impl AudioSource for ToneSource {
    fn read(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        let step = self.frequency_hz / f64::from(SAMPLE_RATE);
        for sample in frame.iter_mut() {
            let value = (self.phase * std::f64::consts::TAU).sin() * self.amplitude;
            *sample = value.round() as i16;
            self.phase = (self.phase + step).fract();
        }
        Ok(true)
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

/// Digital silence, endless.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn read(&mut self, frame: &mut [i16]) -> Result<bool, AudioError> {
        frame.fill(0);
        Ok(true)
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

/// A sink that discards everything (and counts what it was given).
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink {
    samples: u64,
}

impl NullSink {
    /// A new sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.samples
    }
}

impl AudioSink for NullSink {
    fn write(&mut self, frame: &[i16]) -> Result<(), AudioError> {
        self.samples += frame.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }

    fn is_realtime(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_its_frequency_and_level_across_frames() {
        for hz in [100.0f32, 440.0, 1000.0, 3000.5] {
            let mut tone = ToneSource::new(hz);
            let mut all = Vec::new();
            // Odd frame sizes: the phase must carry over.
            for size in [480, 7, 960, 1, 333].iter().cycle().take(200) {
                let mut frame = vec![1i16; *size];
                assert!(tone.read(&mut frame).unwrap());
                all.extend_from_slice(&frame);
            }
            let crossings = all.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
            let measured = crossings as f32 * SAMPLE_RATE as f32 / all.len() as f32;
            assert!(
                (measured - hz).abs() < 1.5,
                "{hz} Hz measured as {measured}"
            );
            let peak = all.iter().map(|s| s.unsigned_abs()).max().unwrap();
            // -12 dBFS of 32767 is 8230.
            assert!((8200..=8231).contains(&peak), "peak {peak}");
            // No click: neighbouring samples never jump more than the slope allows.
            let max_step = all
                .windows(2)
                .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
                .max()
                .unwrap();
            let slope = 8231.0 * std::f32::consts::TAU * hz / SAMPLE_RATE as f32;
            assert!(max_step as f32 <= slope + 2.0, "step {max_step} > {slope}");
        }
    }

    #[test]
    fn silence_and_null() {
        let mut frame = [5i16; 960];
        assert!(SilenceSource.read(&mut frame).unwrap());
        assert!(frame.iter().all(|&s| s == 0));
        assert!(!SilenceSource.is_realtime());
        let mut sink = NullSink::new();
        sink.write(&frame).unwrap();
        sink.finish().unwrap();
        sink.finish().unwrap();
        assert_eq!(sink.samples_written(), 960);
    }
}
