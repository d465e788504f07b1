//! Bad input at the SFU's UDP port: garbage, truncated RTP and RTCP, DTLS records from a
//! stranger, a STUN binding request for a real leg with the wrong password. Each is
//! dropped (counted), nothing panics, and the call in progress keeps forwarding. A
//! participant that goes silent is dropped after the leg timeout (injected time).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{first_packets, join_with_answer, publish_numbered, until_connected, until_track};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
use rtc::stun::textattrs::TextAttribute;
use sotto_engine::call::IceConfig;
use sotto_engine::call::peer;
use sotto_sfu::core::{LEG_TIMEOUT, Sfu};
use sotto_sfu::driver;
use tokio::net::UdpSocket;

fn stun_with_wrong_password(ufrag: &str) -> Vec<u8> {
    let provider = rtc::crypto::default_provider().unwrap();
    let mut message = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(TextAttribute::new(
            ATTR_USERNAME,
            format!("{ufrag}:intruder"),
        )),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            "not the password".to_owned(),
            provider.crypto(),
        )),
    ];
    message.build(&setters).unwrap();
    message.raw.clone()
}

fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_and_dropped_while_the_call_goes_on() {
    let running = driver::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let (sfu, mut signals) = (running.handle, running.signals);
    let (mut alice, answer) = join_with_answer(&sfu, "alice").await;
    let (mut bob, _) = join_with_answer(&sfu, "bob").await;
    until_connected(&mut alice).await;
    until_connected(&mut bob).await;

    let sender = publish_numbered(&alice, Duration::from_millis(10));
    let track = until_track(&sfu, &mut signals, "bob", &mut bob).await;

    // A stranger sends every kind of bad datagram.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dropped_before = sfu.with(|s| s.counters().dropped);
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 1200],
        vec![0x80],                         // truncated RTP
        vec![0x80, 111, 0, 1, 0, 0],        // RTP header cut short
        vec![0x81, 200, 0, 1],              // truncated RTCP
        vec![22, 254, 253, 0, 0, 0, 0, 0],  // a DTLS record from nobody
        vec![0, 1, 0, 0, 0x21, 0x12, 0xa4], // a STUN header cut short
        stun_with_wrong_password(&ice_ufrag(&answer)),
    ];
    for seed in 0..200u32 {
        junk.push(
            (0..(seed % 90) as usize)
                .map(|i| (seed * 31 + i as u32) as u8)
                .collect(),
        );
    }
    for datagram in &junk {
        stranger.send_to(datagram, sfu.local_addr()).await.unwrap();
    }

    // Bob still hears Alice, through the garbage.
    let received = first_packets(&track, 100).await.len();
    assert!(received >= 100, "{received} packets after the garbage");
    let dropped = sfu.with(|s| s.counters().dropped) - dropped_before;
    assert!(
        dropped >= junk.len() as u64 - 1,
        "{dropped} of {} bad datagrams counted as dropped",
        junk.len()
    );
    assert_eq!(sfu.with(|s| s.legs_in(common::ROOM)), 2);
    sender.abort();
    running.task.abort();
}

#[tokio::test]
async fn a_participant_that_goes_silent_is_dropped_after_the_leg_timeout() {
    // Sans-IO: no socket, the time is ours.
    let start = Instant::now();
    let mut sfu = Sfu::new("127.0.0.1:5000".parse().unwrap());
    sfu.participant_joined("room", "quiet");
    let participant = peer::build(&IceConfig::loopback(), false, None, Default::default())
        .await
        .unwrap();
    let offer = participant.pc.create_offer(None).await.unwrap();
    sfu.handle_offer("room", "quiet", &offer.sdp, start)
        .unwrap();
    assert_eq!(sfu.legs_in("room"), 1);
    sfu.handle_timeout(start + LEG_TIMEOUT - Duration::from_secs(1));
    assert_eq!(sfu.legs_in("room"), 1, "still within the timeout");
    sfu.handle_timeout(start + LEG_TIMEOUT + Duration::from_secs(1));
    assert_eq!(sfu.legs_in("room"), 0, "silent past the timeout");
    // A malformed offer is refused with an error, not a panic.
    sfu.participant_joined("room", "broken");
    assert!(
        sfu.handle_offer("room", "broken", "v=0\r\nnonsense", start)
            .is_err()
    );
}
