//! RED (RFC 2198) through the SFU: a publisher's RED packets reach a subscriber that took
//! RED as they were sent, and one that did not as their primary block alone (plain
//! Opus); the loss a listener reports comes back to the publisher in the receiver reports
//! the SFU sends it, so that its encoder plans for both hops.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    WAIT, first_packets, join_offering, packet, publish_with, until_connected, until_tracks,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use sotto_engine::audio::red::{self, Block};
use sotto_engine::call::peer::RED_PAYLOAD_TYPE;
use sotto_sfu::driver;

/// Frame `i` as the test's publisher encodes it.
fn frame(i: u16) -> Vec<u8> {
    vec![0xF8, (i & 0xff) as u8, (i >> 8) as u8, 0x5a]
}

/// Packet `i`: RED carrying frame `i - 1` as a copy (from the second packet on) and frame
/// `i` as its primary.
fn red_packet(ssrc: u32, i: u16) -> rtc::rtp::Packet {
    let mut packet = packet(ssrc, i);
    let previous = i.checked_sub(1).map(frame);
    let copies: Vec<Block<'_>> = previous
        .iter()
        .map(|data| Block {
            payload_type: 111,
            timestamp_offset: 960,
            data,
        })
        .collect();
    let mut payload = Vec::new();
    red::pack(111, &copies, &frame(i), &mut payload);
    packet.header.payload_type = RED_PAYLOAD_TYPE;
    packet.payload = Bytes::from(payload);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_reaches_who_takes_it_and_its_primary_the_others() {
    let running = driver::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let (sfu, mut signals, _driver) = (running.handle, running.signals, running.task);
    let (mut alice, answer) = join_offering(&sfu, "alice", true).await;
    assert!(
        answer.contains(" red/48000/2"),
        "the SFU takes the publisher's RED"
    );
    let (mut bob, _) = join_offering(&sfu, "bob", true).await;
    let (mut carol, _) = join_offering(&sfu, "carol", false).await;
    for participant in [&mut alice, &mut bob, &mut carol] {
        until_connected(participant).await;
    }

    // Alice sends RED until both listeners have her track.
    let sender = publish_with(&alice, Duration::from_millis(10), red_packet);
    let tracks = until_tracks(
        &sfu,
        &mut signals,
        &mut [("bob", &mut bob), ("carol", &mut carol)],
    )
    .await;

    // Bob took RED: he gets Alice's packets as she sent them. Carol did not: she gets
    // each primary frame alone, as Opus.
    let (bob_track, carol_track) = (&tracks[0], &tracks[1]);
    let (at_bob, at_carol) =
        tokio::join!(first_packets(bob_track, 50), first_packets(carol_track, 50));
    assert!(at_bob.len() >= 50 && at_carol.len() >= 50);
    for p in &at_bob {
        assert_eq!(p.header.payload_type, RED_PAYLOAD_TYPE);
        let blocks = red::unpack(&p.payload).expect("RED arrives whole");
        let i = u16::from_le_bytes([
            blocks[blocks.len() - 1].data[1],
            blocks[blocks.len() - 1].data[2],
        ]);
        assert_eq!(&p.payload[..], &red_packet(0, i).payload[..]);
    }
    for p in &at_carol {
        assert_eq!(p.header.payload_type, 111, "Opus, not RED");
        let i = u16::from_le_bytes([p.payload[1], p.payload[2]]);
        assert_eq!(&p.payload[..], &frame(i)[..], "the primary alone");
    }

    // Bob says he loses a quarter of Alice's audio; the SFU's reports to Alice say so
    // (her uplink, on loopback, loses nothing).
    let bob_ssrc = bob_track.ssrcs().await[0];
    let told = tokio::time::timeout(WAIT, async {
        loop {
            let report = ReceiverReport {
                ssrc: 1,
                reports: vec![ReceptionReport {
                    ssrc: bob_ssrc,
                    fraction_lost: 64,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let _ = bob_track.write_rtcp(vec![Box::new(report)]).await;
            if alice
                .reported_loss
                .latest()
                .is_some_and(|(fraction, _)| fraction >= 0.25)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(told.is_ok(), "Alice never heard what Bob loses");
    sender.abort();
}
