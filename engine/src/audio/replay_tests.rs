//! Replays of recorded speech over lossy paths with redundancy, as a call carries it: the
//! delay holds still during speech, the output matches the source, and no splice clicks.

use super::*;
use crate::audio::analysis::{align, largest_step, segmental_correlation};
use crate::audio::wav::read_48k_mono;

const FRAME: usize = 20 * SAMPLES_PER_MS;

fn speech(name: &str) -> Vec<i16> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/data")
        .join(name);
    read_48k_mono(&path).expect("the bench's speech file")
}

/// The sender's encoder on a lossy path: RED on (so in-band FEC off), loss expected.
fn lossy_encoder(loss_percent: u8) -> EncoderConfig {
    EncoderConfig {
        fec: false,
        loss_percent,
        ..EncoderConfig::default()
    }
}

fn run(source: &[i16], loss: f64, jitter_ms: f64, seed: u64) -> Replayed {
    let sent = encode(source, &lossy_encoder((loss * 100.0) as u8), 2).expect("encoding");
    let path = Path {
        loss,
        delay_ms: 30.0,
        jitter_ms,
        seed,
        change: None,
    };
    let arrivals = arrivals(&sent, &path);
    let duration = source.len() as f64 / SAMPLES_PER_MS as f64 + 500.0;
    replay(&sent, &arrivals, JitterConfig::default(), 7, duration).expect("replay")
}

#[test]
fn loss_with_redundancy_never_steps_the_delay_a_whole_frame_in_speech() {
    let source = speech("speech-en-us-1.wav");
    let clean = run(&source, 0.0, 0.0, 1);
    let lag = |r: &Replayed| align(&source, &r.samples, 48_000).map(|a| a.lag as isize);
    let correlation = |r: &Replayed| {
        let lag = lag(r).expect("the speech is found in the output");
        segmental_correlation(&source, &r.samples, lag, FRAME, FRAME).unwrap_or(0.0)
    };
    let clean_correlation = correlation(&clean);
    // The sharpest edge the decoded speech has on its own: no splice may make a sharper.
    let edge = largest_step(&source).max(largest_step(&clean.samples));
    for (loss, jitter_ms, seed) in [(0.1, 0.0, 1), (0.2, 0.0, 2), (0.1, 10.0, 3), (0.2, 20.0, 4)] {
        let lossy = run(&source, loss, jitter_ms, seed);
        let steady = steadiness(&source, &lossy.played, FRAME, 5);
        let what = format!(
            "{loss} loss, {jitter_ms} ms jitter: {steady:?} {:?}",
            lossy.stats
        );
        assert!(steady.talkspurts >= 10, "{what}");
        assert_eq!(steady.whole_frame_steps, 0, "{what}");
        assert!(steady.largest_step_ms < 20.0, "{what}");
        assert!(steady.widest_spread_ms <= 30.0, "{what}");
        // Losses were repaired by the copies, and the delay moved by stretching.
        assert!(
            lossy.stats.recovered > 0 && !lossy.splices.is_empty(),
            "{what}"
        );
        assert_eq!(lossy.stats.accelerated, 0, "{what}");
        // Jitter is not a change of path.
        assert_eq!(lossy.stats.path_changes, 0, "{what}");
        // Every 20 ms of speech matches the source about as well as the clean call does.
        let c = correlation(&lossy);
        assert!(
            c >= clean_correlation - 0.07,
            "{what}: correlation {c:.3}, clean {clean_correlation:.3}"
        );
        // No click at any splice.
        for &at in &lossy.splices {
            let around =
                &lossy.samples[at.saturating_sub(1)..(at + FRAME).min(lossy.samples.len())];
            let step = largest_step(around);
            assert!(
                step <= edge + edge / 10,
                "{what}: a splice at {at} steps by {step} (edge {edge})"
            );
        }
    }
}

#[test]
fn a_clean_path_plays_every_frame_and_keeps_its_delay() {
    let source = speech("speech-en-gb-2.wav");
    let sent = encode(&source, &EncoderConfig::default(), 0).expect("encoding");
    let path = Path {
        loss: 0.0,
        delay_ms: 30.0,
        jitter_ms: 0.0,
        seed: 1,
        change: None,
    };
    let duration = source.len() as f64 / SAMPLES_PER_MS as f64 + 500.0;
    let clean = replay(
        &sent,
        &arrivals(&sent, &path),
        JitterConfig::default(),
        7,
        duration,
    )
    .expect("replay");
    assert_eq!(clean.played.len(), sent.len(), "{:?}", clean.stats);
    let steady = steadiness(&source, &clean.played, FRAME, 5);
    assert_eq!(steady.widest_spread_ms, 0.0, "{steady:?}");
    let stats = clean.stats;
    assert_eq!(
        (stats.lost, stats.expanded, stats.accelerated),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn a_change_of_network_costs_one_step_and_the_buffer_then_keeps_to_the_new_path() {
    // Wi-Fi to mobile, 4 s in: 300 ms with nothing through, then 60 ms more delay, with
    // some loss throughout. The buffer must take the step once (it cannot play what has
    // not come) and then treat the slower path as the path: neither hold the step on top
    // of the jitter nor wait for each lost packet as if it were only late.
    let source = speech("speech-en-us-1.wav");
    let sent = encode(&source, &EncoderConfig::default(), 0).expect("encoding");
    let duration = source.len() as f64 / SAMPLES_PER_MS as f64 + 500.0;
    for seed in 1..=3 {
        let path = Path {
            loss: 0.03,
            delay_ms: 20.0,
            jitter_ms: 0.0,
            seed,
            change: Some(PathChange {
                at_ms: 4000.0,
                outage_ms: 300.0,
                delay_ms: 80.0,
            }),
        };
        let played = replay(
            &sent,
            &arrivals(&sent, &path),
            JitterConfig::default(),
            7,
            duration,
        )
        .expect("replay");
        let stats = played.stats;
        let what = format!("seed {seed}: {stats:?}");
        assert_eq!(stats.path_changes, 1, "{what}");
        // The target ends near where a path without the step would have it.
        let unchanged = Path {
            change: None,
            ..path
        };
        let before = replay(
            &sent,
            &arrivals(&sent, &unchanged),
            JitterConfig::default(),
            7,
            duration,
        )
        .expect("replay")
        .stats;
        assert!(
            (stats.target_delay_ms - before.target_delay_ms).abs() <= 20.0,
            "{what}; without the change {before:?}"
        );
        // The outage and the step are waited through once (15 + 3 frames); lost packets
        // after it are not waited for.
        assert!(stats.expanded <= 15 + 3 + 2, "{what}");
    }
}
