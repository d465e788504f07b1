//! The cost of SFrame per media frame: `MediaSender::encrypt` and `MediaReceiver::decrypt`
//! (RFC 9605, AES_128_GCM_SHA256_128 on ring) for an 80-byte Opus frame and a 1,200-byte
//! video frame, in a two-member group, keys already derived (steady state of a call).
//!
//! - `round_trip`: encrypt then decrypt one frame (the figure BENCHMARKS.md quotes).
//! - `encrypt` and `decrypt` alone (decrypt gets a freshly encrypted frame per iteration,
//!   encrypted outside the timing, since the replay window refuses a frame twice).
//!
//! `cargo bench -p sotto-engine --bench sframe`; results in BENCHMARKS.md ("SFrame").

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sotto_engine::e2ee::sframe_keys::{
    EXPORTER_LENGTH, MediaReceiver, MediaSender, ReceiverConfig,
};

const EPOCH: u64 = 3;
const SECRET: [u8; EXPORTER_LENGTH] = [0x42; EXPORTER_LENGTH];

fn pair() -> (MediaSender, MediaReceiver) {
    let sender = MediaSender::new(EPOCH, &SECRET, 2, 0).expect("sender");
    let mut receiver = MediaReceiver::new(1, ReceiverConfig::default());
    receiver
        .rekey(EPOCH, &SECRET, 2, Instant::now())
        .expect("receiver");
    (sender, receiver)
}

fn sframe(c: &mut Criterion) {
    let now = Instant::now();
    for (name, size) in [("opus_80B", 80usize), ("video_1200B", 1_200)] {
        let frame: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut group = c.benchmark_group(format!("sframe/{name}"));
        group.throughput(Throughput::Elements(1));

        let (mut sender, mut receiver) = pair();
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        group.bench_function("round_trip", |b| {
            b.iter(|| {
                sender
                    .encrypt(black_box(&frame), &mut wire)
                    .expect("encrypt");
                receiver
                    .decrypt(black_box(&wire), now, &mut plain)
                    .expect("decrypt");
            });
            assert_eq!(plain, frame);
        });

        let (mut sender, _) = pair();
        group.bench_function("encrypt", |b| {
            b.iter(|| {
                sender
                    .encrypt(black_box(&frame), &mut wire)
                    .expect("encrypt")
            });
        });

        let (mut sender, mut receiver) = pair();
        group.bench_function("decrypt", |b| {
            b.iter_batched_ref(
                || {
                    let mut wire = Vec::with_capacity(size + 64);
                    sender.encrypt(&frame, &mut wire).expect("encrypt");
                    wire
                },
                |wire| {
                    receiver
                        .decrypt(black_box(wire), now, &mut plain)
                        .expect("decrypt");
                },
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
}

criterion_group!(benches, sframe);
criterion_main!(benches);
