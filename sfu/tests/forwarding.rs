//! Two engine participants in one room through the SFU on one UDP port: each offers, the
//! SFU answers, then offers each the other's stream; RTP one writes reaches the other,
//! through the SFU, with the SFU's own SSRC and the publisher named in the stream id.
//! Someone not in the room is refused; a participant that leaves stops being forwarded.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    ROOM, first_packets, join, publish_numbered, until_connected, until_track, until_tracks,
};
use sotto_engine::call::IceConfig;
use sotto_engine::call::peer;
use sotto_sfu::core::CoreError;
use sotto_sfu::driver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_is_forwarded_between_two_participants_on_one_port() {
    let running = driver::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let (sfu, mut signals, driver) = (running.handle, running.signals, running.task);

    // A stranger's offer is refused.
    let stranger = peer::build(&IceConfig::loopback(), false, None, Default::default())
        .await
        .unwrap();
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
    let alice_ssrc = alice.ssrc;
    let sender = publish_numbered(&alice, Duration::from_millis(10));
    let track = until_track(&sfu, &mut signals, "bob", &mut bob).await;
    assert_eq!(
        track.stream_id().await,
        "alice",
        "the stream names its publisher"
    );

    let received = first_packets(&track, 100).await;
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

    // /metrics reports it, counts only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let http = tokio::spawn(sotto_sfu::http::serve_on(listener, sfu.clone()));
    let metrics = http_get(http_addr, "/metrics").await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert!(value("sotto_sfu_forwarded_total") >= 100.0, "{metrics}");
    assert!(
        value("sotto_sfu_forward_latency_seconds_count") > 0.0,
        "{metrics}"
    );
    assert_eq!(value("sotto_sfu_participants"), 2.0);
    // Audio only here: no NACKs or keyframe requests, but the series exist.
    assert_eq!(value("sotto_sfu_nacks_total"), 0.0);
    assert_eq!(value("sotto_sfu_keyframe_requests_sent_total"), 0.0);
    assert!(!metrics.contains("127.0.0.1"), "no addresses in metrics");
    assert_eq!(http_get(http_addr, "/health").await.trim(), "ok");
    http.abort();

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

/// Three send workers (threads, each with a share of the subscribers): every listener
/// gets the publisher's packets complete and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_send_workers_keep_every_listeners_stream_complete_and_in_order() {
    let running = driver::start_with_workers("127.0.0.1:0".parse().unwrap(), None, 3)
        .await
        .unwrap();
    let (sfu, mut signals, driver) = (running.handle, running.signals, running.task);
    assert_eq!(sfu.with(|s| s.lanes()), 3);
    let mut alice = join(&sfu, "alice").await;
    let names = ["bob", "carol", "dave", "erin"];
    let mut listeners = Vec::new();
    for name in names {
        listeners.push(join(&sfu, name).await);
    }
    until_connected(&mut alice).await;
    for listener in &mut listeners {
        until_connected(listener).await;
    }

    let sender = publish_numbered(&alice, Duration::from_millis(5));
    let mut named: Vec<(&str, &mut _)> = names.iter().copied().zip(&mut listeners).collect();
    let tracks = until_tracks(&sfu, &mut signals, &mut named).await;

    for (name, track) in names.iter().zip(&tracks) {
        let numbers: Vec<(u16, u16)> = first_packets(track, 200)
            .await
            .iter()
            .map(|p| {
                (
                    p.header.sequence_number,
                    u16::from(p.payload[1]) | (u16::from(p.payload[2]) << 8),
                )
            })
            .collect();
        assert!(numbers.len() >= 200, "{name} got {} packets", numbers.len());
        for pair in numbers.windows(2) {
            assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "{name}: {pair:?}");
            assert_eq!(pair[1].1, pair[0].1.wrapping_add(1), "{name}: {pair:?}");
        }
    }
    sender.abort();
    driver.abort();
}

/// A plain HTTP/1.0 GET; returns the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
