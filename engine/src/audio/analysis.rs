//! Comparing what was sent with what arrived: delay by cross-correlation (FFT, via
//! realfft — the crate rubato already brings), correlation at that delay, and the span of
//! a signal that is not silence. Used by the end-to-end tests, the example and the bench.

use realfft::RealFftPlanner;
use realfft::num_complex::Complex;

/// Where `received` matches `reference` best.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    /// `received[n + lag]` lines up with `reference[n]`, in samples (≥ 0: received later).
    pub lag: usize,
    /// Pearson correlation of the two over their overlap at that lag (-1..1).
    pub correlation: f64,
}

/// Finds the lag in `0..=max_lag` at which `received` best matches `reference` and the
/// correlation there. Returns `None` when either is empty or silent.
pub fn align(reference: &[i16], received: &[i16], max_lag: usize) -> Option<Alignment> {
    if reference.is_empty() || received.is_empty() {
        return None;
    }
    let len = (reference.len() + received.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(len);
    let inverse = planner.plan_fft_inverse(len);

    let spectrum = |signal: &[i16]| -> Option<Vec<Complex<f64>>> {
        let mut input = forward.make_input_vec();
        for (slot, &sample) in input.iter_mut().zip(signal) {
            *slot = f64::from(sample);
        }
        let mut output = forward.make_output_vec();
        forward.process(&mut input, &mut output).ok()?;
        Some(output)
    };
    let reference_spectrum = spectrum(reference)?;
    let mut product = spectrum(received)?;
    for (p, r) in product.iter_mut().zip(&reference_spectrum) {
        *p *= r.conj();
    }
    let mut correlation = inverse.make_output_vec();
    inverse.process(&mut product, &mut correlation).ok()?;

    // correlation[k] = Σ received[n + k] · reference[n] (times len); only k ≥ 0 matters.
    let last = max_lag.min(received.len().saturating_sub(1));
    let lag = (0..=last).max_by(|&a, &b| correlation[a].total_cmp(&correlation[b]))?;
    let correlation = pearson(reference, &received[lag..])?;
    Some(Alignment { lag, correlation })
}

/// Like [`align`], but the recording may also have started late (it lacks the start of
/// the reference: a listener who joined after the speaker began). Returns the signed lag:
/// negative means `received[0]` lines up with `reference[-lag]`.
pub fn align_signed(reference: &[i16], received: &[i16], max_lag: usize) -> Option<(isize, f64)> {
    let late = align(received, reference, max_lag)
        .filter(|a| a.lag > 0)
        .map(|a| (-(a.lag as isize), a.correlation));
    let early = align(reference, received, max_lag).map(|a| (a.lag as isize, a.correlation));
    match (early, late) {
        (Some(e), Some(l)) => Some(if l.1 > e.1 { l } else { e }),
        (e, l) => e.or(l),
    }
}

/// Correlation that tolerates small shifts during the recording (a jitter buffer that
/// stretched or dropped a frame moves everything after it by 20 ms, which ruins one global
/// correlation though every word is intact): the reference is cut into `window`-sample
/// pieces, each piece with speech in it (RMS within 40 dB of the loudest piece) is aligned
/// on its own within `search` samples of the global `lag`, and the mean of the pieces'
/// correlations is returned.
pub fn segmental_correlation(
    reference: &[i16],
    received: &[i16],
    lag: isize,
    window: usize,
    search: usize,
) -> Option<f64> {
    let window = window.max(1);
    let rms = |s: &[i16]| {
        (s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    };
    let peak = reference.chunks(window).map(rms).fold(0.0, f64::max);
    if peak <= 0.0 {
        return None;
    }
    let mut scores = Vec::new();
    for (i, piece) in reference.chunks(window).enumerate() {
        if piece.len() < window / 2 || rms(piece) < peak / 100.0 {
            continue;
        }
        // Where this piece should start in the recording, minus the search margin.
        let expected = (i * window) as isize + lag;
        let from = (expected - search as isize).max(0) as usize;
        let to = ((expected + (window + search) as isize).max(0) as usize).min(received.len());
        if from >= to {
            scores.push(0.0);
            continue;
        }
        let score = align(piece, &received[from..to], 2 * search).map_or(0.0, |a| a.correlation);
        scores.push(score);
    }
    (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
}

/// The largest step between neighbouring samples: a click at a splice shows as a step
/// larger than any the speech itself takes.
pub fn largest_step(signal: &[i16]) -> i32 {
    signal
        .windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap_or(0)
}

/// Pearson correlation of `a` and `b` over their common length; `None` when either is
/// constant there.
pub fn pearson(a: &[i16], b: &[i16]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let mean = |s: &[i16]| s.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        cov += dx * dy;
        va += dx * dx;
        vb += dy * dy;
    }
    if va == 0.0 || vb == 0.0 {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}

/// The first and last sample (as a half-open range) of the 10 ms blocks whose RMS is
/// within `below_peak_db` of the loudest block: where the speech is. `None` for silence.
pub fn active_span(
    samples: &[i16],
    sample_rate: u32,
    below_peak_db: f64,
) -> Option<std::ops::Range<usize>> {
    let block = (sample_rate / 100).max(1) as usize;
    let rms: Vec<f64> = samples
        .chunks(block)
        .map(|chunk| {
            let energy: f64 = chunk.iter().map(|&s| f64::from(s).powi(2)).sum();
            (energy / chunk.len() as f64).sqrt()
        })
        .collect();
    let peak = rms.iter().copied().fold(0.0, f64::max);
    if peak <= 0.0 {
        return None;
    }
    let threshold = peak * 10f64.powf(-below_peak_db / 20.0);
    let first = rms.iter().position(|&r| r >= threshold)?;
    let last = rms.iter().rposition(|&r| r >= threshold)?;
    Some(first * block..((last + 1) * block).min(samples.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u32) -> Vec<i16> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 16) as i16) / 4
            })
            .collect()
    }

    #[test]
    fn finds_a_known_delay_and_full_correlation() {
        let reference = noise(48_000, 7);
        let mut received = vec![0i16; 3_517];
        received.extend_from_slice(&reference);
        received.extend(std::iter::repeat_n(0, 1000));
        let found = align(&reference, &received, 10_000).unwrap();
        assert_eq!(found.lag, 3_517);
        assert!(found.correlation > 0.999, "{found:?}");
    }

    #[test]
    fn a_recording_that_started_late_aligns_with_a_negative_lag() {
        let reference = noise(48_000, 9);
        let received = reference[2_000..40_000].to_vec();
        let (lag, correlation) = align_signed(&reference, &received, 5_000).unwrap();
        assert_eq!(lag, -2_000);
        assert!(correlation > 0.999);
        let mut delayed = vec![0i16; 700];
        delayed.extend_from_slice(&reference);
        assert_eq!(align_signed(&reference, &delayed, 5_000).unwrap().0, 700);
    }

    #[test]
    fn segmental_correlation_survives_a_frame_inserted_mid_stream() {
        let reference = noise(96_000, 11);
        // The recording repeats 960 samples (one 20 ms frame) halfway through.
        let mut received = vec![0i16; 1_000];
        received.extend_from_slice(&reference[..48_000]);
        received.extend_from_slice(&reference[47_040..48_000]);
        received.extend_from_slice(&reference[48_000..]);
        let global = align(&reference, &received, 5_000).unwrap();
        assert!(global.correlation < 0.6, "{global:?}");
        let segmental = segmental_correlation(&reference, &received, 1_000, 48_00, 2_400).unwrap();
        assert!(segmental > 0.95, "{segmental}");
    }

    #[test]
    fn unrelated_signals_correlate_poorly() {
        let found = align(&noise(20_000, 1), &noise(30_000, 2), 5_000).unwrap();
        assert!(found.correlation.abs() < 0.1, "{found:?}");
    }

    #[test]
    fn silence_has_no_alignment_or_span() {
        assert!(align(&[0; 100], &[0; 200], 50).is_none());
        assert!(active_span(&[0; 4800], 48_000, 40.0).is_none());
    }

    #[test]
    fn active_span_brackets_the_loud_part() {
        let mut signal = vec![0i16; 48_000];
        for s in &mut signal[12_000..36_000] {
            *s = 8_000;
        }
        assert_eq!(active_span(&signal, 48_000, 40.0), Some(12_000..36_000));
    }
}
