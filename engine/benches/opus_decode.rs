//! What the Opus decoder's complexity costs: decoding one second of speech (50 frames of
//! 20 ms at 32 kbit/s, the reference speech of the call-quality bench) at decoder
//! complexity 0 (classic concealment), 5 (deep PLC, the engine's default before OSCE), 6
//! (OSCE's LACE on SILK frames) and 7 (NoLACE). Every frame arrives: this is the cost of a
//! stream on a clean path, where the enhancers run on every SILK frame.
//!
//! `cargo bench -p sotto-engine --bench opus_decode`; results in BENCHMARKS.md ("OSCE").

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sotto_engine::audio::codec::{EncoderConfig, OpusDecoder, OpusEncoder};
use sotto_engine::audio::wav::read_48k_mono;

/// One second of speech, encoded as a call sends it.
fn packets() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../benches/data/speech-en-us-1.wav"
    );
    let speech = read_48k_mono(path).expect("the reference speech");
    let config = EncoderConfig::default();
    let mut encoder = OpusEncoder::new(&config).expect("encoder");
    let samples = encoder.frame_samples();
    speech
        .chunks_exact(samples)
        .skip(50)
        .take(50)
        .map(|frame| encoder.encode(frame).expect("encode").payload)
        .collect()
}

fn decode(c: &mut Criterion) {
    let packets = packets();
    let mut group = c.benchmark_group("opus_decode_1s");
    group.throughput(Throughput::Elements(packets.len() as u64));
    for complexity in [0u8, 5, 6, 7] {
        let mut decoder = OpusDecoder::with_complexity(complexity).expect("decoder");
        let mut out = vec![0i16; 960];
        group.bench_function(format!("complexity_{complexity}"), |b| {
            b.iter(|| {
                for packet in &packets {
                    decoder.decode(black_box(packet), &mut out).expect("decode");
                }
                black_box(&out);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
