//! Two engine participants in one room through the SFU on one UDP port: each offers, the
//! SFU answers, then offers each the other's stream; RTP one writes reaches the other,
//! through the SFU, with the SFU's own SSRC and the publisher named in the stream id.
//! Someone not in the room is refused; a participant that leaves stops being forwarded.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ROOM, join, packet, until_connected, until_track};
use sotto_engine::call::IceConfig;
use sotto_engine::call::peer;
use sotto_sfu::core::CoreError;
use sotto_sfu::driver;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_is_forwarded_between_two_participants_on_one_port() {
    let running = driver::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let (sfu, mut signals, driver) = (running.handle, running.signals, running.task);

    // A stranger's offer is refused.
    let stranger = peer::build(&IceConfig::loopback()).await.unwrap();
    let offer = stranger.pc.create_offer(None).await.unwrap();
    let refused = sfu.with(|s| s.handle_offer(ROOM, "mallory", &offer.sdp, Instant::now()));
    assert!(matches!(refused, Err(CoreError::NotInRoom)));

    let mut alice = join(&sfu, "alice").await;
    let mut bob = join(&sfu, "bob").await;
    until_connected(&mut alice).await;
    until_connected(&mut bob).await;
    assert_eq!(sfu.with(|s| s.legs_in(ROOM)), 2);

    // Alice publishes: her first packets open her stream at the SFU, which then offers
    // it to Bob. Keep sending until Bob has the track, then send 100 numbered packets.
    let alice_track = Arc::clone(&alice.track);
    let alice_ssrc = alice.ssrc;
    let sender = tokio::spawn(async move {
        let mut i = 0u16;
        loop {
            if alice_track
                .write_rtp_with_extensions(packet(alice_ssrc, i), &[])
                .await
                .is_err()
            {
                return;
            }
            i = i.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let track = until_track(&sfu, &mut signals, "bob", &mut bob).await;
    assert_eq!(
        track.stream_id().await,
        "alice",
        "the stream names its publisher"
    );

    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(p) = event {
                received.push(p);
                if received.len() >= 100 {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        received.len() >= 100,
        "{} packets reached Bob",
        received.len()
    );
    // The SFU sends with its own SSRC; payloads are untouched and in order.
    assert!(received.iter().all(|p| p.header.ssrc != alice_ssrc));
    for pair in received.windows(2) {
        assert_eq!(
            pair[1].header.sequence_number,
            pair[0].header.sequence_number.wrapping_add(1)
        );
        let number =
            |p: &rtc::rtp::Packet| u16::from(p.payload[1]) | (u16::from(p.payload[2]) << 8);
        assert_eq!(number(&pair[1]), number(&pair[0]).wrapping_add(1));
    }
    let forwarded = sfu.with(|s| s.counters().forwarded);
    assert!(forwarded >= 100, "{forwarded}");

    // Alice leaves: nothing more is forwarded.
    sfu.with(|s| s.participant_left(ROOM, "alice", Instant::now()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_leave = sfu.with(|s| s.counters().forwarded);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sfu.with(|s| s.counters().forwarded), after_leave);
    assert_eq!(sfu.with(|s| s.legs_in(ROOM)), 1);

    sender.abort();
    driver.abort();
}
