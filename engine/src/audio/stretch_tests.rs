//! Time-stretching on synthetic voiced sound, noise and pauses, and on recorded speech.

use super::*;
use crate::audio::analysis::{align, largest_step};

const FRAME: usize = 20 * SAMPLES_PER_MS;

/// A vowel-like sound: harmonics of a fundamental that glides from `f0_start` to `f0_end`
/// over `len` samples, at about −12 dBFS.
fn voiced(len: usize, f0_start: f64, f0_end: f64) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..len)
        .map(|n| {
            let f0 = f0_start + (f0_end - f0_start) * n as f64 / len as f64;
            phase += f0 / 48_000.0;
            let value: f64 = (1..=8)
                .map(|k| (2.0 * std::f64::consts::PI * k as f64 * phase).sin() / k as f64)
                .sum();
            (value * 4000.0).round() as i16
        })
        .collect()
}

/// Loud white noise (unvoiced): nothing repeats.
fn noise(len: usize, amplitude: f64, seed: u64) -> Vec<i16> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = ((state >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
            (unit * amplitude).round() as i16
        })
        .collect()
}

/// Plays `signal` frame by frame, asking `want(frame index)`; returns the output and each
/// frame's outcome with where its output starts.
fn play(signal: &[i16], want: impl Fn(usize) -> Want) -> (Vec<i16>, Vec<(usize, Stretched)>) {
    let mut stretcher = Stretcher::new();
    let mut output = Vec::new();
    let mut outcomes = Vec::new();
    let mut out = Vec::new();
    for (i, frame) in signal.chunks_exact(FRAME).enumerate() {
        let stretched = stretcher.process(frame, want(i), false, &mut out);
        assert_eq!(
            out.len() as isize,
            frame.len() as isize + stretched.samples,
            "frame {i}: the output is as long as the outcome says"
        );
        outcomes.push((output.len(), stretched));
        output.extend_from_slice(&out);
    }
    (output, outcomes)
}

/// No click: around every splice (from the sample before it to the end of its cross-fade),
/// no step between neighbouring samples is larger than the largest step in the source.
fn assert_no_click(source: &[i16], output: &[i16], outcomes: &[(usize, Stretched)]) {
    let limit = largest_step(source) + 2;
    for &(start, stretched) in outcomes {
        if stretched.splice == Splice::None {
            continue;
        }
        let from = start.saturating_sub(1);
        let to = (start + MAX_LAG + 1).min(output.len());
        let step = largest_step(&output[from..to]);
        assert!(
            step <= limit,
            "a splice at {start} ({stretched:?}) steps by {step}, the source at most by {limit}"
        );
    }
}

/// Every 10 ms window of the output matches the source somewhere near where it should be
/// (within the whole stretching, plus 20 ms): correlation at least `floor`.
fn assert_windows_match(source: &[i16], output: &[i16], floor: f64) {
    let window = 10 * SAMPLES_PER_MS;
    let stretched = output.len().abs_diff(source.len());
    let search = stretched + 20 * SAMPLES_PER_MS;
    let mut worst = f64::INFINITY;
    for (i, piece) in output.chunks_exact(window).enumerate() {
        let at = i * window;
        let from = at.saturating_sub(search).min(source.len() - window);
        let to = (at + window + search).min(source.len());
        let correlation =
            align(piece, &source[from..to], 2 * search).map_or(0.0, |a| a.correlation);
        worst = worst.min(correlation);
    }
    assert!(
        worst >= floor,
        "the worst 10 ms window correlates {worst:.3} with the source"
    );
}

#[test]
fn keeping_plays_the_frame_as_it_is() {
    let signal = voiced(10 * FRAME, 120.0, 140.0);
    let (output, outcomes) = play(&signal, |_| Want::Keep);
    assert_eq!(output, signal);
    assert!(outcomes.iter().all(|(_, s)| *s == Stretched::NONE));
}

#[test]
fn voiced_speech_is_shortened_by_one_pitch_period_without_a_click() {
    // 137 Hz: a period of 350 samples (7.3 ms).
    let signal = voiced(50 * FRAME, 137.0, 137.0);
    let ask = Want::Shorter {
        samples: 15 * SAMPLES_PER_MS,
        in_speech: true,
    };
    let (output, outcomes) = play(&signal, |i| if i % 5 == 2 { ask } else { Want::Keep });
    let cuts: Vec<isize> = outcomes
        .iter()
        .map(|(_, s)| s.samples)
        .filter(|&s| s != 0)
        .collect();
    assert_eq!(
        cuts.len(),
        10,
        "every request in voiced speech is met: {cuts:?}"
    );
    for cut in &cuts {
        // One period, or two when the longer lag matched a hair better: a multiple of 350.
        let periods = -*cut as f64 / (48_000.0 / 137.0);
        assert!(
            (periods - periods.round()).abs() < 0.02 && periods.round() >= 1.0,
            "a cut of {cut} samples is {periods:.3} periods"
        );
    }
    assert!(outcomes.iter().all(|(_, s)| s.splice != Splice::Pause));
    assert_no_click(&signal, &output, &outcomes);
    assert_windows_match(&signal, &output, 0.97);
}

#[test]
fn voiced_speech_is_lengthened_by_one_pitch_period_without_a_click() {
    // A gliding voice, 110 to 180 Hz.
    let signal = voiced(50 * FRAME, 110.0, 180.0);
    let ask = Want::Longer {
        samples: 5 * SAMPLES_PER_MS,
        in_speech: true,
    };
    let (output, outcomes) = play(&signal, |i| if i % 4 == 1 { ask } else { Want::Keep });
    let added: Vec<isize> = outcomes
        .iter()
        .map(|(_, s)| s.samples)
        .filter(|&s| s != 0)
        .collect();
    assert!(added.len() >= 10, "nearly every request is met: {added:?}");
    // At most the asked 5 ms plus the 5 ms the search may overshoot, at least a period
    // of the highest voice (180 Hz: 267 samples).
    assert!(
        added
            .iter()
            .all(|&a| (260..=10 * SAMPLES_PER_MS as isize).contains(&a)),
        "{added:?}"
    );
    assert_eq!(
        output.len() as isize,
        signal.len() as isize + added.iter().sum::<isize>()
    );
    assert_no_click(&signal, &output, &outcomes);
    assert_windows_match(&signal, &output, 0.97);
}

#[test]
fn unvoiced_sound_is_left_alone_and_a_pause_is_not_waited_for_when_not_in_speech() {
    let loud_noise = noise(20 * FRAME, 6000.0, 7);
    let (output, _) = play(&loud_noise, |_| Want::Shorter {
        samples: 20 * SAMPLES_PER_MS,
        in_speech: true,
    });
    assert_eq!(output, loud_noise, "noise has no period to cut");
    let (_, lengthened) = play(&loud_noise, |_| Want::Longer {
        samples: 10 * SAMPLES_PER_MS,
        in_speech: true,
    });
    assert!(lengthened.iter().all(|(_, s)| s.samples == 0));
    // Voiced speech when stretching is only allowed in pauses: untouched.
    let vowel = voiced(20 * FRAME, 120.0, 130.0);
    let (output, _) = play(&vowel, |_| Want::Shorter {
        samples: 20 * SAMPLES_PER_MS,
        in_speech: false,
    });
    assert_eq!(output, vowel);
    let (output, _) = play(&vowel, |_| Want::Longer {
        samples: 20 * SAMPLES_PER_MS,
        in_speech: false,
    });
    assert_eq!(output, vowel);
}

#[test]
fn a_pause_after_speech_is_cut_and_stretched_in_large_steps() {
    // Half a second of vowel, then a quiet room (noise 40 dB below it), then the vowel.
    let mut signal = voiced(25 * FRAME, 120.0, 120.0);
    signal.extend(noise(25 * FRAME, 40.0, 3));
    signal.extend(voiced(10 * FRAME, 120.0, 120.0));
    let (output, outcomes) = play(&signal, |_| Want::Shorter {
        samples: 30 * SAMPLES_PER_MS,
        in_speech: false,
    });
    let in_pause: Vec<_> = outcomes[25..50].iter().map(|(_, s)| *s).collect();
    assert!(in_pause.iter().all(|s| s.splice == Splice::Pause));
    // Each pause frame keeps only its fade.
    assert!(
        in_pause
            .iter()
            .all(|s| s.samples == -((FRAME - PAUSE_FADE) as isize))
    );
    assert!(
        outcomes[..25]
            .iter()
            .chain(&outcomes[50..])
            .all(|(_, s)| s.samples == 0)
    );
    assert_eq!(&output[..25 * FRAME], &signal[..25 * FRAME]);
    assert_eq!(
        &output[output.len() - 10 * FRAME..],
        &signal[signal.len() - 10 * FRAME..]
    );

    let (output, outcomes) = play(&signal, |_| Want::Longer {
        samples: 30 * SAMPLES_PER_MS,
        in_speech: true,
    });
    // The first pause frame is not lengthened: that would repeat the vowel's end.
    assert_eq!(outcomes[25].1, Stretched::NONE);
    let in_pause: Vec<_> = outcomes[26..50].iter().map(|(_, s)| *s).collect();
    assert!(
        in_pause
            .iter()
            .all(|s| s.splice == Splice::Pause && s.samples == HISTORY as isize),
        "{in_pause:?}"
    );
    // In the vowel, lengthening goes by pitch periods.
    assert!(
        outcomes[..25]
            .iter()
            .chain(&outcomes[50..])
            .all(|(_, s)| s.splice != Splice::Pause)
    );
    let pause = &output[outcomes[25].0 + 1..outcomes[50].0];
    assert!(largest_step(pause) <= largest_step(&signal[25 * FRAME..50 * FRAME]) + 2);
}

#[test]
fn recorded_speech_takes_many_splices_without_a_click() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/data/speech-en-us-1.wav");
    let signal = crate::audio::wav::read_48k_mono(&path).expect("the bench's speech file");
    // Alternate: shorten for a second (in speech too), then lengthen for a second.
    let (output, outcomes) = play(&signal, |i| {
        if (i / 50) % 2 == 0 {
            Want::Shorter {
                samples: 10 * SAMPLES_PER_MS,
                in_speech: true,
            }
        } else {
            Want::Longer {
                samples: 10 * SAMPLES_PER_MS,
                in_speech: true,
            }
        }
    });
    let voiced_splices = outcomes
        .iter()
        .filter(|(_, s)| s.splice == Splice::Voiced)
        .count();
    let pause_splices = outcomes
        .iter()
        .filter(|(_, s)| s.splice == Splice::Pause)
        .count();
    assert!(voiced_splices >= 50, "{voiced_splices} splices in speech");
    assert!(pause_splices >= 20, "{pause_splices} splices in pauses");
    assert_no_click(&signal, &output, &outcomes);
}
