//! ViSQOL v3.1 in speech mode: a MOS-LQO from 1 to 5 that compares the gammatone
//! spectrograms of the reference and the recording patch by patch (Google's Virtual Speech
//! Quality Objective Listener), through the `visqol-rs` crate.
//!
//! The crate is pinned to 0.1.3, the release that reproduces Google's own conformance value
//! for speech mode (`CA01_01.wav` against `transcoded_CA01_01.wav`, 2.3691150 in Google's
//! v3.1.0 `conformance.h`): 0.1.3 gives 2.369119, 0.4.1 gives 2.341749 (its speech mode
//! takes the audio mode's patch size). The check is the ignored test
//! `google_conformance` in `benches/tests/visqol.rs`; Google's test files are not ours to
//! ship, so it runs where someone points it at them.
//!
//! Two flaws of 0.1.3 are worked around here: its result swaps `moslqo` and `vnsim` (the
//! constructor takes them in the other order), and it panics rather than erring on some
//! inputs (an empty similarity, say), so a run is caught and reported as an error.

use std::path::Path;

use anyhow::{Context as _, bail};
use sotto_engine::audio::SAMPLE_RATE;
use sotto_engine::audio::resample::StreamResampler;

/// The rate ViSQOL's speech mode is made for (Google's README: resample speech to 16 kHz).
pub const SPEECH_RATE: u32 = 16_000;

/// The search window, in patches, Google's tool uses by default.
const SEARCH_WINDOW: usize = 60;

/// ViSQOL speech-mode MOS-LQO of `degraded` against `reference`, both files of one rate.
pub fn mos_lqo_files(reference: &Path, degraded: &Path) -> anyhow::Result<f64> {
    let (Some(reference), Some(degraded)) = (reference.to_str(), degraded.to_str()) else {
        bail!("ViSQOL takes UTF-8 paths");
    };
    let run = std::panic::catch_unwind(|| {
        // Speech mode (no SVR model file), the scaled MOS mapping, Google's search window.
        visqol_rs::visqol_manager::VisqolManager::new("", true, false, SEARCH_WINDOW)
            .run(reference, degraded)
            .map(|result| result.vnsim)
            .map_err(|e| e.to_string())
    });
    match run {
        Ok(Ok(mos)) if mos.is_finite() => Ok(mos),
        Ok(Ok(mos)) => bail!("ViSQOL gave {mos}"),
        Ok(Err(e)) => bail!("ViSQOL: {e}"),
        Err(_) => bail!("ViSQOL gave up on this pair (the crate panicked)"),
    }
}

/// ViSQOL speech-mode MOS-LQO of a 48 kHz recording against its 48 kHz reference, where
/// the reference starts `lag` samples into the recording (what the cross-correlation found).
/// The recording is cut to the reference's span (padded with silence if it ends early), both
/// are resampled to 16 kHz and scored through two files in `scratch`.
pub fn speech_mos(
    reference: &[i16],
    recording: &[i16],
    lag: usize,
    scratch: &Path,
) -> anyhow::Result<f64> {
    let start = lag.min(recording.len());
    let end = (lag + reference.len()).min(recording.len());
    let mut degraded = recording[start..end].to_vec();
    degraded.resize(reference.len(), 0);
    let reference_path = scratch.join("visqol-reference.wav");
    let degraded_path = scratch.join("visqol-degraded.wav");
    write_16k(&reference_path, reference)?;
    write_16k(&degraded_path, &degraded)?;
    let mos = mos_lqo_files(&reference_path, &degraded_path);
    for path in [&reference_path, &degraded_path] {
        let _ = std::fs::remove_file(path);
    }
    mos
}

/// Writes 48 kHz samples as a 16 kHz mono 16-bit WAV file.
fn write_16k(path: &Path, samples: &[i16]) -> anyhow::Result<()> {
    let mut resampler = StreamResampler::new(SAMPLE_RATE, SPEECH_RATE)?;
    let mut out = Vec::with_capacity(samples.len() / 3 + 1024);
    resampler.process_i16(samples, &mut out)?;
    resampler.flush_i16(&mut out)?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SPEECH_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer =
        hound::WavWriter::create(path, spec).with_context(|| format!("{}", path.display()))?;
    for sample in out {
        writer.write_sample(sample)?;
    }
    writer.finalize()?;
    Ok(())
}
