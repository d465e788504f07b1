//! The cost of SRTP per packet: the SFU's in-place SRTP (`sotto_sfu::srtp`, issue 19)
//! against rtc's SRTP context, the one every rtc leg runs (it returns a new buffer per
//! packet). Both profiles browsers negotiate, for an Opus packet (12-byte header, an
//! 8-byte extension block, 80 bytes of payload) and a 1,200-byte video packet.
//!
//! Protect: one packet, its sequence number moving on each iteration (so the rollover
//! tracking is in the figure); ours writes into a buffer kept from the last iteration,
//! as the fan-out will. Unprotect: a window of packets protected beforehand, each given
//! to a fresh copy, so the replay check passes.
//!
//! `cargo bench -p sotto-bench --bench srtp`; results in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sotto_sfu::srtp::{MasterKey, Profile, Protector, Unprotector};

const SSRC: u32 = 0x1234_5678;

fn rtp(seq: u16, payload: usize) -> Vec<u8> {
    let mut packet = vec![0x90, 111];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    packet.extend_from_slice(&SSRC.to_be_bytes());
    packet.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x7f, 0x00, 0x00]);
    packet.extend((0..payload).map(|i| i as u8));
    packet
}

fn master(profile: Profile) -> MasterKey {
    let material: Vec<u8> = (0..profile.keying_material_len())
        .map(|i| (i as u8).wrapping_mul(13))
        .collect();
    MasterKey::from_dtls(profile, &material)
        .expect("keying material of the profile's length")
        .0
}

fn rtc_context(profile: Profile) -> rtc::srtp::context::Context {
    use rtc::srtp::protection_profile::ProtectionProfile as Theirs;
    let master = master(profile);
    let provider = rtc::crypto::default_provider().expect("rtc's crypto");
    let theirs = match profile {
        Profile::AeadAes128Gcm => Theirs::AeadAes128Gcm,
        Profile::Aes128CmHmacSha1_80 => Theirs::Aes128CmHmacSha1_80,
    };
    rtc::srtp::context::Context::new(
        master.key(),
        master.salt(),
        theirs,
        None,
        None,
        provider.crypto(),
    )
    .expect("rtc context")
}

fn name(profile: Profile) -> &'static str {
    match profile {
        Profile::AeadAes128Gcm => "gcm",
        Profile::Aes128CmHmacSha1_80 => "cm_sha1_80",
    }
}

fn protect(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_protect");
    for payload in [80usize, 1_200] {
        group.throughput(Throughput::Elements(1));
        for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
            let id = format!("{}/{payload}", name(profile));
            let plain: Vec<Vec<u8>> = (0..1024u16).map(|seq| rtp(seq, payload)).collect();
            let mut ours = Protector::new(&master(profile)).expect("keys");
            let mut buffer = Vec::with_capacity(payload + 64);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("ours", &id), |b| {
                b.iter(|| {
                    buffer.clear();
                    buffer.extend_from_slice(&plain[i % plain.len()]);
                    i += 1;
                    ours.protect_rtp(&mut buffer).expect("protect");
                    black_box(buffer.len())
                })
            });
            let mut theirs = rtc_context(profile);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("rtc", &id), |b| {
                b.iter(|| {
                    let out = theirs
                        .encrypt_rtp(&plain[i % plain.len()])
                        .expect("protect");
                    i += 1;
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

fn unprotect(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_unprotect");
    for payload in [80usize, 1_200] {
        group.throughput(Throughput::Elements(1));
        for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
            let id = format!("{}/{payload}", name(profile));
            let mut sender = Protector::new(&master(profile)).expect("keys");
            let sealed: Vec<Vec<u8>> = (0..60_000u16)
                .map(|seq| {
                    let mut packet = rtp(seq, payload);
                    sender.protect_rtp(&mut packet).expect("protect");
                    packet
                })
                .collect();
            // A fresh receiver per pass over the packets: each is new to it.
            let mut ours = Unprotector::new(&master(profile)).expect("keys");
            let mut buffer = Vec::with_capacity(payload + 64);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("ours", &id), |b| {
                b.iter(|| {
                    if i == sealed.len() {
                        ours = Unprotector::new(&master(profile)).expect("keys");
                        i = 0;
                    }
                    buffer.clear();
                    buffer.extend_from_slice(&sealed[i]);
                    i += 1;
                    ours.unprotect_rtp(&mut buffer).expect("unprotect");
                    black_box(buffer.len())
                })
            });
            let mut theirs = rtc_context(profile);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("rtc", &id), |b| {
                b.iter(|| {
                    if i == sealed.len() {
                        theirs = rtc_context(profile);
                        i = 0;
                    }
                    let out = theirs.decrypt_rtp(&sealed[i]).expect("unprotect");
                    i += 1;
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, protect, unprotect);
criterion_main!(benches);
