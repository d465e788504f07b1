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
