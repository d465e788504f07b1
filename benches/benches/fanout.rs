//! The cost of the SFU's own forwarding loop (issue 19) per forwarded copy, in user
//! space: `sotto_sfu::core::fanout::fan_out` writing one publisher's packet for N
//! subscribers (header, extensions under each subscriber's ids, its transport-wide number,
//! SRTP in place under its keys) into a reused outbox. Every subscriber's transport
//! completed a real DTLS handshake with a `core::transport::peer::Peer` first; half
//! negotiated AES-GCM, half AES-CM with HMAC-SHA1, as a mixed room would.
//!
//! Not in this figure: the kernel's send (`sendmmsg`), which the whole-system load run
//! measures. One iteration is one publisher packet: N copies; criterion's throughput is
//! in copies.
//!
//! `cargo bench -p sotto-bench --bench fanout`; results in BENCHMARKS.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sotto_sfu::core::fanout::{Consumer, Outbox, Source, Subscriber, fan_out};
use sotto_sfu::core::rtp::{Header, RtpView, write_forwarded};
use sotto_sfu::core::sdp::ExtensionIds;
use sotto_sfu::core::transport::DtlsIdentity;
use sotto_sfu::core::transport::peer::connected_pair;

const PASSWORD: &str = "sfu-password-0123456789";
const PUBLISHER: u32 = 0xAAAA;

fn subscribers(n: usize) -> Vec<Option<Subscriber>> {
    let identity = DtlsIdentity::generate().expect("identity");
    let sfu: SocketAddr = "10.0.0.1:5000".parse().expect("address");
    let now = Instant::now();
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 40_000));
            let profile = if i % 2 == 0 {
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm
            } else {
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80
            };
            let (_peer, transport) = connected_pair(
                &identity,
                addr,
                sfu,
                profile,
                &format!("s{i}"),
                PASSWORD,
                now,
            )
            .expect("connected");
            Some(Subscriber::new(transport))
        })
        .collect()
}

fn ids() -> ExtensionIds {
    ExtensionIds {
        audio_level: Some(1),
        transport_cc: Some(3),
        mid: Some(4),
        ..ExtensionIds::default()
    }
}

fn packet(seq: u16, payload: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
    let mut out = Vec::new();
    write_forwarded(
        &mut out,
        Header {
            payload_type: 111,
            seq,
            timestamp: u32::from(seq) * 960,
            ssrc: PUBLISHER,
            marker: false,
        },
        &[(1, &[0x85]), (3, &seq.to_be_bytes()), (4, b"0")],
        &body,
    )
    .expect("a packet");
    out
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for n in [1usize, 500, 2000] {
        let mut subs = subscribers(n);
        for payload in [80usize, 1200] {
            let mut consumers: Vec<Consumer> = (0..n)
                .map(|i| {
                    let mut consumer = Consumer::new(i, 0x1000 + i as u32, 111, ids(), "1");
                    consumer.target = Some(PUBLISHER);
                    consumer
                })
                .collect();
            let mut outbox = Outbox::new();
            let publisher = ids();
            let mut seq = 0u16;
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(format!("{payload}B"), n), |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    let raw = packet(seq, payload);
                    let source = Source {
                        packet: RtpView::parse(&raw).expect("parses"),
                        extensions: &publisher,
                        red: false,
                        keyframe: None,
                        clock_rate: 48_000,
                        withheld: false,
                        count_loss: false,
                    };
                    let now = Instant::now();
                    let mut start = 0;
                    let mut sent = 0;
                    loop {
                        let done =
                            fan_out(now, &source, &mut consumers, start, &mut subs, &mut outbox);
                        sent += done.sent;
                        black_box(outbox.parts());
                        outbox.clear();
                        match done.resume_at {
                            Some(at) => start = at,
                            None => break,
                        }
                    }
                    assert_eq!(sent, n, "every subscriber got its copy");
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
