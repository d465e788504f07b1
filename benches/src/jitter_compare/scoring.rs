//! Scoring of the outputs: benches/userstyle/score.py on each WAV file, the whole of it and
//! from [`SETTLED_MS`] on; and the WAV writer.
//!
//! Owns: calling the script and reading what it prints. Must not touch: the runs.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use sotto_engine::audio::{SAMPLE_RATE, SAMPLES_PER_MS};

use super::{Record, SETTLED_MS};

/// What score.py prints.
#[derive(Debug, Default, Deserialize)]
struct Scores {
    pesq_wb: Option<f64>,
    lag_ms: Option<f64>,
    speech_windows_heard: Option<f64>,
    delay_spread_widest_ms: Option<f64>,
    delay_spread_median_ms: Option<f64>,
    delay_steps_20ms: Option<u32>,
}

/// Scores `record`'s output with score.py: the whole of it against `references[0]` (the
/// source), and from [`SETTLED_MS`] on against `references[1]` (the source from there on).
pub fn score(
    record: &mut Record,
    python: &Path,
    script: &Path,
    references: [&Path; 2],
    out: &Path,
) -> anyhow::Result<()> {
    let degraded = out.join(&record.wav);
    let scores = run_script(python, script, references[0], &degraded)?;
    record.pesq_wb = scores.pesq_wb;
    record.lag_ms = scores.lag_ms;
    record.speech_windows_heard = scores.speech_windows_heard;
    record.delay_spread_widest_ms = scores.delay_spread_widest_ms;
    record.delay_spread_median_ms = scores.delay_spread_median_ms;
    record.delay_steps_20ms = scores.delay_steps_20ms;
    let output = sotto_engine::audio::wav::read_48k_mono(&degraded)
        .with_context(|| format!("reading {}", degraded.display()))?;
    let settled = (SETTLED_MS as usize * SAMPLES_PER_MS).min(output.len());
    let cut = tempfile::Builder::new()
        .suffix(".wav")
        .tempfile_in(out)
        .context("a scratch file for the settled part")?;
    write_wav(cut.path(), &output[settled..])?;
    let scores = run_script(python, script, references[1], cut.path())?;
    record.settled_pesq_wb = scores.pesq_wb;
    record.settled_lag_ms = scores.lag_ms;
    Ok(())
}

/// score.py REFERENCE DEGRADED.
fn run_script(
    python: &Path,
    script: &Path,
    reference: &Path,
    degraded: &Path,
) -> anyhow::Result<Scores> {
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(reference)
        .arg(degraded)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} {}: {}",
            script.display(),
            degraded.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the scores of {}", degraded.display()))
}

/// Writes 48 kHz mono 16-bit samples as a WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for &sample in samples {
        writer.write_sample(sample)?;
    }
    writer
        .finalize()
        .with_context(|| format!("writing {}", path.display()))
}
