//! Each impairment over 100,000 packets lands within tolerance of its configured value,
//! and the same seed gives the same trace.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sotto_netsim::{Bandwidth, Change, ChangeKind, Fate, Impairment, Jitter, Link, Loss, Stats};

const PACKETS: u64 = 100_000;
const SPACING: Duration = Duration::from_millis(20);

/// What came out: (packet index, send time, arrival time), in arrival order.
struct Run {
    fates: Vec<Fate>,
    arrivals: Vec<(u64, Duration, Duration)>,
    stats: Stats,
}

/// Sends `PACKETS` packets of `size` bytes, one every `spacing`, and collects arrivals.
fn run(config: Impairment, seed: u64, size: usize, spacing: Duration) -> Run {
    let mut link = Link::new(config, seed);
    let mut fates = Vec::new();
    let mut arrivals = Vec::new();
    let mut drain = |link: &mut Link<(u64, Duration)>, now: Duration| {
        while let Some(due) = link.next_due().filter(|due| *due <= now) {
            let (index, sent) = link.poll(now).unwrap();
            arrivals.push((index, sent, due));
        }
    };
    for i in 0..PACKETS {
        let now = spacing * i as u32;
        drain(&mut link, now);
        fates.push(link.send(now, size, (i, now)));
    }
    drain(&mut link, Duration::from_secs(u64::MAX / 4));
    Run {
        fates,
        arrivals,
        stats: link.stats(),
    }
}

fn delays_ms(run: &Run) -> Vec<f64> {
    run.arrivals
        .iter()
        .map(|(_, sent, at)| (*at - *sent).as_secs_f64() * 1000.0)
        .collect()
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn near(value: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (value - expected).abs() <= tolerance,
        "{what}: {value} is not within {tolerance} of {expected}"
    );
}

#[test]
fn uniform_loss_rate() {
    for rate in [0.05, 0.1, 0.2, 0.3] {
        let config = Impairment {
            loss: Loss::Uniform { rate },
            ..Default::default()
        };
        let r = run(config, 7, 100, SPACING);
        // 5 standard deviations of a binomial proportion over 100,000 packets.
        let tolerance = 5.0 * (rate * (1.0 - rate) / PACKETS as f64).sqrt();
        near(
            r.stats.lost as f64 / PACKETS as f64,
            rate,
            tolerance,
            "loss",
        );
        assert_eq!(r.stats.delivered + r.stats.lost, PACKETS);
    }
}

#[test]
fn gilbert_elliott_loss_rate_and_burst_length() {
    let loss = Loss::bursty(0.1, 4.0);
    near(loss.mean_rate(), 0.1, 1e-9, "configured mean");
    let r = run(
        Impairment {
            loss,
            ..Default::default()
        },
        11,
        100,
        SPACING,
    );
    near(r.stats.lost as f64 / PACKETS as f64, 0.1, 0.01, "loss");
    // Mean burst: runs of consecutive losses.
    let mut bursts = Vec::new();
    let mut current = 0u32;
    for fate in &r.fates {
        if *fate == Fate::Lost {
            current += 1;
        } else if current > 0 {
            bursts.push(f64::from(current));
            current = 0;
        }
    }
    let (mean_burst, _) = mean_std(&bursts);
    near(mean_burst, 4.0, 0.3, "mean burst length");
    // Uniform loss at the same rate has bursts of about 1.1.
    let uniform = run(
        Impairment {
            loss: Loss::Uniform { rate: 0.1 },
            ..Default::default()
        },
        11,
        100,
        SPACING,
    );
    let runs = uniform
        .fates
        .windows(2)
        .filter(|w| w[0] == Fate::Lost && w[1] != Fate::Lost)
        .count() as f64;
    near(
        uniform.stats.lost as f64 / runs,
        1.11,
        0.05,
        "uniform burst length",
    );
}

#[test]
fn fixed_delay_is_exact_and_keeps_order() {
    let r = run(
        Impairment {
            delay_ms: 50.0,
            ..Default::default()
        },
        1,
        100,
        SPACING,
    );
    assert_eq!(r.arrivals.len() as u64, PACKETS);
    for (i, (index, sent, at)) in r.arrivals.iter().enumerate() {
        assert_eq!(*index, i as u64);
        assert_eq!(*at - *sent, Duration::from_millis(50));
    }
    assert_eq!(r.stats.reordered, 0);
}

#[test]
fn jitter_with_and_without_reordering() {
    let jitter = |reorder| Impairment {
        delay_ms: 40.0,
        jitter: Some(Jitter {
            std_dev_ms: 20.0,
            reorder,
        }),
        ..Default::default()
    };
    // With reordering every packet keeps its own sample: N(40, 20) cut at 0.
    let r = run(jitter(true), 3, 100, SPACING);
    let (mean, std) = mean_std(&delays_ms(&r));
    // The cut at 0 (2.3 % of samples) lifts the mean by about 0.17 ms and narrows σ a bit.
    near(mean, 40.17, 0.3, "mean delay");
    near(std, 19.6, 0.5, "delay standard deviation");
    assert!(r.stats.reordered > PACKETS / 10, "{:?}", r.stats);
    // Without: the same samples, but nobody overtakes; arrivals are in send order.
    let r = run(jitter(false), 3, 100, SPACING);
    assert_eq!(r.stats.reordered, 0);
    assert!(
        r.arrivals.windows(2).all(|w| w[0].0 < w[1].0),
        "arrivals out of order"
    );
    let (mean, _) = mean_std(&delays_ms(&r));
    assert!(mean > 40.17, "in-order delivery can only add delay: {mean}");
}

#[test]
fn duplication_rate() {
    let r = run(
        Impairment {
            duplicate: 0.05,
            delay_ms: 10.0,
            ..Default::default()
        },
        5,
        100,
        SPACING,
    );
    let tolerance = 5.0 * (0.05 * 0.95 / PACKETS as f64).sqrt();
    near(
        r.stats.duplicated as f64 / PACKETS as f64,
        0.05,
        tolerance,
        "duplication",
    );
    assert_eq!(r.stats.delivered, PACKETS + r.stats.duplicated);
}

#[test]
fn bandwidth_cap_with_a_drop_tail_queue() {
    // 1,250-byte packets every 20 ms offer 500 kbit/s to a 300 kbit/s bottleneck.
    let config = Impairment {
        bandwidth: Some(Bandwidth {
            kbps: 300.0,
            queue_ms: 100.0,
        }),
        ..Default::default()
    };
    let r = run(config, 9, 1250, SPACING);
    let span = r.arrivals.last().unwrap().2 - r.arrivals.first().unwrap().2;
    let kbps = r.stats.bytes_delivered as f64 * 8.0 / span.as_secs_f64() / 1000.0;
    near(kbps, 300.0, 3.0, "throughput");
    near(
        r.stats.queue_dropped as f64 / PACKETS as f64,
        0.4,
        0.01,
        "queue drops",
    );
    // No packet waits in the queue longer than allowed (plus its own serialization).
    let serialization_ms = 1250.0 * 8.0 / 300.0;
    let worst = delays_ms(&r).into_iter().fold(0.0, f64::max);
    assert!(worst <= 100.0 + serialization_ms + 1e-6, "{worst}");
}

#[test]
fn changes_on_a_schedule() {
    // 500 kbit/s offered; the cap drops from 1 Mbit/s to 200 kbit/s at 10 s; an outage of
    // 2 s at 30 s.
    let config = Impairment {
        bandwidth: Some(Bandwidth {
            kbps: 1000.0,
            queue_ms: 100.0,
        }),
        schedule: vec![
            Change {
                at_ms: 30_000.0,
                what: ChangeKind::Outage {
                    duration_ms: 2_000.0,
                },
            },
            Change {
                at_ms: 10_000.0,
                what: ChangeKind::Bandwidth {
                    bandwidth: Some(Bandwidth {
                        kbps: 200.0,
                        queue_ms: 100.0,
                    }),
                },
            },
        ],
        ..Default::default()
    };
    let r = run(config, 2, 1250, SPACING);
    let sent_at = |i: usize| SPACING * i as u32;
    let dropped_between = |from: Duration, to: Duration| {
        r.fates
            .iter()
            .enumerate()
            .filter(|(i, f)| sent_at(*i) >= from && sent_at(*i) < to && **f == Fate::QueueDropped)
            .count()
    };
    assert_eq!(dropped_between(Duration::ZERO, Duration::from_secs(10)), 0);
    // After the drop, 60 % of the offered packets do not fit.
    let after = dropped_between(Duration::from_secs(12), Duration::from_secs(28)) as f64;
    near(after / 800.0, 0.6, 0.02, "drops after the cap fell");
    for (i, fate) in r.fates.iter().enumerate() {
        let in_outage =
            sent_at(i) >= Duration::from_secs(30) && sent_at(i) < Duration::from_secs(32);
        assert_eq!(*fate == Fate::Outage, in_outage, "packet {i}: {fate:?}");
    }
    assert_eq!(r.stats.outage_dropped, 100);
}

#[test]
fn a_change_made_now_applies_from_now_and_keeps_the_schedule() {
    // A driver caps a clean link at 2 s (what the SFU tests do to a participant's
    // downlink); the schedule's outage at 4 s still comes.
    let mut link = Link::new(
        Impairment {
            schedule: vec![Change {
                at_ms: 4_000.0,
                what: ChangeKind::Outage { duration_ms: 500.0 },
            }],
            ..Default::default()
        },
        7,
    );
    let mut fates = Vec::new();
    for i in 0..300u32 {
        let now = SPACING * i;
        if now == Duration::from_secs(2) {
            link.change_now(
                now,
                ChangeKind::Bandwidth {
                    bandwidth: Some(Bandwidth {
                        kbps: 100.0,
                        queue_ms: 50.0,
                    }),
                },
            );
        }
        // 500 kbit/s offered.
        fates.push(link.send(now, 1250, i));
    }
    let count = |range: std::ops::Range<usize>, fate: fn(&Fate) -> bool| {
        fates[range].iter().filter(|f| fate(f)).count()
    };
    let delivered = |f: &Fate| matches!(f, Fate::Delivered { .. });
    assert_eq!(count(0..100, delivered), 100);
    // From 2 s on, a fifth of the offer fits.
    let fitted = count(110..200, delivered) as f64 / 90.0;
    near(fitted, 0.2, 0.03, "delivered under the cap");
    assert_eq!(count(200..225, |f| *f == Fate::Outage), 25);
    assert_eq!(
        link.current().bandwidth.as_ref().map(|b| b.kbps),
        Some(100.0)
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let config = Impairment {
        loss: Loss::bursty(0.05, 3.0),
        delay_ms: 30.0,
        jitter: Some(Jitter {
            std_dev_ms: 10.0,
            reorder: true,
        }),
        duplicate: 0.01,
        bandwidth: Some(Bandwidth {
            kbps: 2000.0,
            queue_ms: 50.0,
        }),
        schedule: vec![Change {
            at_ms: 5_000.0,
            what: ChangeKind::Delay { delay_ms: 80.0 },
        }],
    };
    let a = run(config.clone(), 42, 600, SPACING);
    let b = run(config.clone(), 42, 600, SPACING);
    assert_eq!(a.fates, b.fates);
    assert_eq!(a.arrivals, b.arrivals);
    assert_eq!(a.stats, b.stats);
    let c = run(config, 43, 600, SPACING);
    assert_ne!(a.fates, c.fates);
}
