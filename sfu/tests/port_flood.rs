//! A flood at the SFU's port while a call goes on (issue 19): DTLS handshakes from
//! thousands of addresses that never passed a connectivity check, random bytes of every
//! kind, and checks naming a transport that does not exist. Each datagram is dropped and
//! counted without touching any transport, and the participants in the call notice
//! nothing: every packet the publisher sends meanwhile arrives.

mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sim::Sim;
use sotto_sfu::client::Publish;

const VIDEO: u32 = 0x5150;

/// A deterministic byte source for the flood.
fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[test]
fn a_flood_from_strangers_is_dropped_and_counted_and_the_call_goes_on() {
    let mut sim = Sim::new(23, 0.0, Duration::from_millis(20));
    sim.join("publisher", &[Publish::video(VIDEO)]);
    sim.join("listener", &[]);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.participants.iter().all(|p| p.connected));
    let before = sim.sfu.counters();
    let from = sim.now;

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut flood = 0u64;
    for round in 0..40u32 {
        let now = sim.now;
        for i in 0..100u32 {
            let n = round * 100 + i;
            let addr = SocketAddr::from(([10, 9, (n / 250) as u8, (n % 250) as u8 + 1], 5000));
            // A DTLS ClientHello's record header, then noise.
            let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
            hello.extend(bytes(&mut seed, 120));
            // STUN naming a transport nobody has.
            let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
            stun.extend(bytes(&mut seed, 12));
            // Random bytes of every first byte, and SRTP-looking ones.
            let mut junk = bytes(&mut seed, 60);
            junk[0] = n as u8;
            let mut srtp = bytes(&mut seed, 100);
            srtp[0] = 0x80;
            for datagram in [hello, stun, junk, srtp, Vec::new()] {
                sim.sfu.handle_datagram(now, addr, &datagram);
                flood += 1;
            }
        }
        sim.run_for(Duration::from_millis(50));
    }
    let to = sim.now;
    sim.run_for(Duration::from_secs(1));

    let after = sim.sfu.counters();
    assert!(
        after.dropped - before.dropped >= flood,
        "{} dropped of {flood}",
        after.dropped - before.dropped
    );
    // Nothing answered a stranger.
    assert_eq!(sim.sfu.legs_in(sim::ROOM), 2);
    let listener = &sim.participants[1];
    let ssrc = listener
        .receiving("publisher", RtpCodecKind::Video)
        .expect("the listener gets the video");
    let sent = sim.participants[0].sent_between(VIDEO, from, to);
    let (received, _) = listener.received(ssrc);
    assert!(sent.len() > 100);
    let missing: Vec<&u16> = sent.iter().filter(|seq| !received.contains(seq)).collect();
    assert!(missing.is_empty(), "missing during the flood: {missing:?}");
}
