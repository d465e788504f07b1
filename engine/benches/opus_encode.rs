//! What the Opus encoder costs a call: encoding one second (50 frames of 20 ms at 32 kbit/s,
//! FEC and DTX on) of speech at complexity 5, 7, 8, 9 (the default) and 10; and one second
//! of a muted microphone: digital silence (all but the refresh frames left out, see
//! `SILENCE_REFRESH_MS`) against the quietest noise that is not silence (encoded at the
//! pause complexity). Each measurement starts from an encoder that has already had 3 s of
//! the same input, as in a call.
//!
//! `cargo bench -p sotto-engine --bench opus_encode`; results in BENCHMARKS.md ("CPU").

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sotto_engine::audio::codec::{EncoderConfig, OpusEncoder};
use sotto_engine::audio::wav::read_48k_mono;

const FRAME: usize = 960;

/// Seconds 1 to 5 of the reference speech, in frames.
fn speech() -> Vec<Vec<i16>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../benches/data/speech-en-us-1.wav"
    );
    let speech = read_48k_mono(path).expect("the reference speech");
    speech
        .chunks_exact(FRAME)
        .skip(50)
        .take(200)
        .map(<[i16]>::to_vec)
        .collect()
}

/// An encoder at `complexity` that has had `warm_up`; `input` cycles from there.
fn warmed(complexity: u8, warm_up: &[Vec<i16>]) -> OpusEncoder {
    let config = EncoderConfig {
        complexity,
        ..EncoderConfig::default()
    };
    let mut encoder = OpusEncoder::new(&config).expect("encoder");
    for frame in warm_up.iter().cycle().take(150) {
        encoder.encode(frame).expect("encode");
    }
    encoder
}

fn encode(c: &mut Criterion) {
    let speech = speech();
    let mut group = c.benchmark_group("opus_encode_1s");
    group.throughput(Throughput::Elements(50));
    for complexity in [5u8, 7, 8, 9, 10] {
        group.bench_function(format!("speech_complexity_{complexity}"), |b| {
            b.iter_batched_ref(
                || warmed(complexity, &speech),
                |encoder| {
                    for frame in speech.iter().take(50) {
                        black_box(encoder.encode(black_box(frame)).expect("encode"));
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    let muted = vec![vec![0i16; FRAME]];
    // ±1 LSB: -90 dBov, quieter than any microphone, but not zero.
    let hiss: Vec<Vec<i16>> = (0..50)
        .map(|f| {
            (0..FRAME)
                .map(|n| if (n * 7 + f * 13) % 3 == 0 { 1 } else { -1 })
                .collect()
        })
        .collect();
    for (name, input) in [("digital_silence", &muted), ("quiet_noise", &hiss)] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || warmed(9, input),
                |encoder| {
                    for frame in input.iter().cycle().take(50) {
                        black_box(encoder.encode(black_box(frame)).expect("encode"));
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
