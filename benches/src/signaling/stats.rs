//! Latency summaries: exact percentiles over every recorded sample (a bench run records
//! at most a few hundred thousand, so sorting them all is cheap and needs no histogram
//! approximation).

use std::time::Duration;

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Summary {
    /// Summarize `samples` (nanoseconds; reordered in place). `None` when empty.
    pub fn of_nanos(samples: &mut [u64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Summary {
            count: samples.len(),
            p50_us: us(nearest_rank(samples, 500)),
            p90_us: us(nearest_rank(samples, 900)),
            p99_us: us(nearest_rank(samples, 990)),
            p999_us: us(nearest_rank(samples, 999)),
            max_us: us(samples[samples.len() - 1]),
            mean_us: sum as f64 / samples.len() as f64 / 1000.0,
        })
    }

    /// Summarize durations.
    pub fn of_durations(samples: &[Duration]) -> Option<Summary> {
        let mut ns: Vec<u64> = samples
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect();
        Summary::of_nanos(&mut ns)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} p90 {} p99 {} p99.9 {} max {} (mean {}, n={})",
            human_us(self.p50_us),
            human_us(self.p90_us),
            human_us(self.p99_us),
            human_us(self.p999_us),
            human_us(self.max_us),
            human_us(self.mean_us),
            self.count
        )
    }
}

/// `1234.5` µs as `"1.23 ms"`, `87.2` as `"87 µs"`.
pub fn human_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The nearest-rank percentile of sorted, non-empty samples: the smallest sample with at
/// least `per_mille`/1000 of the samples at or below it (integer arithmetic, so 99.9 % of
/// 1000 samples is exactly the 999th).
fn nearest_rank(sorted: &[u64], per_mille: usize) -> u64 {
    let n = sorted.len();
    let rank = (per_mille * n).div_ceil(1000);
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let s = Summary::of_nanos(&mut samples).unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p90_us, 900.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.mean_us, 500.5);
    }

    #[test]
    fn one_sample_and_none() {
        let s = Summary::of_nanos(&mut [7000]).unwrap();
        assert_eq!((s.p50_us, s.p999_us, s.max_us), (7.0, 7.0, 7.0));
        assert!(Summary::of_nanos(&mut []).is_none());
    }

    #[test]
    fn formats_micro_and_milliseconds() {
        assert_eq!(human_us(87.2), "87 µs");
        assert_eq!(human_us(1234.5), "1.23 ms");
    }
}
