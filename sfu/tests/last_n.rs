//! Last-N: in a room with more audio publishers than N, the SFU forwards only the loudest
//! N, judged by the RFC 6464 audio level on each packet (never the payload).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ROOM, WAIT, answer_offer, join, packet, until_connected};
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use sotto_engine::call::peer::{Peer, PeerEvent};
use sotto_sfu::core::SignalOut;
use sotto_sfu::driver;
use webrtc::media_stream::track_remote::TrackRemoteEvent;

/// Publishes numbered packets at `level` every 20 ms until aborted.
fn publish(peer: &Peer, level: u8) -> tokio::task::JoinHandle<()> {
    let (track, ssrc) = (Arc::clone(&peer.track), peer.ssrc);
    tokio::spawn(async move {
        for i in 0u16.. {
            let ext = HeaderExtension::AudioLevel(AudioLevelExtension {
                level,
                voice: level < 60,
            });
            if track
                .write_rtp_with_extensions(packet(ssrc, i), &[ext])
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_loudest_publisher_is_forwarded_when_n_is_one() {
    let running = driver::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let (sfu, mut signals) = (running.handle, running.signals);
    sfu.with(|s| s.set_last_n(1));
    let mut peers: HashMap<&str, Peer> = HashMap::new();
    for who in ["loud", "quiet", "listener"] {
        let mut peer = join(&sfu, who).await;
        until_connected(&mut peer).await;
        peers.insert(who, peer);
    }
    let publishers = [publish(&peers["loud"], 10), publish(&peers["quiet"], 90)];

    // Answer every SFU offer; count what the listener receives per publisher.
    let counts: Arc<HashMap<String, AtomicU64>> = Arc::new(
        ["loud", "quiet"]
            .iter()
            .map(|p| (p.to_string(), AtomicU64::new(0)))
            .collect(),
    );
    // The listener's own id for the audio level (the SFU must remap to it).
    let listener_sdp = peers["listener"].pc.local_description().await.unwrap().sdp;
    let level_id: u8 = listener_sdp
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("a=extmap:")?;
            let (id, uri) = rest.split_once(' ')?;
            (uri.trim() == "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
                .then(|| id.parse().ok())?
        })
        .unwrap();
    let with_level = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tracks = 0;
    tokio::time::timeout(WAIT, async {
        while Instant::now() < deadline {
            if let Ok(SignalOut::Offer { to, sdp, .. }) = signals.try_recv() {
                let answer = answer_offer(&peers[to.as_str()], sdp).await;
                sfu.with(|s| s.handle_answer(ROOM, &to, &answer, Instant::now()))
                    .unwrap();
            }
            let listener = peers.get_mut("listener").unwrap();
            if let Ok(Some(PeerEvent::Track(track))) =
                tokio::time::timeout(Duration::from_millis(10), listener.events.recv()).await
            {
                tracks += 1;
                let counts = Arc::clone(&counts);
                let with_level = Arc::clone(&with_level);
                tokio::spawn(async move {
                    let from = track.stream_id().await;
                    while let Some(event) = track.poll().await {
                        if let TrackRemoteEvent::OnRtpPacket(p) = event
                            && let Some(count) = counts.get(&from)
                        {
                            count.fetch_add(1, Ordering::Relaxed);
                            if p.header
                                .get_extension(level_id)
                                .is_some_and(|e| e.first().map(|b| b & 0x7f) == Some(10))
                            {
                                with_level.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        }
    })
    .await
    .unwrap();
    for p in publishers {
        p.abort();
    }
    let loud = counts["loud"].load(Ordering::Relaxed);
    let quiet = counts["quiet"].load(Ordering::Relaxed);
    assert!(tracks >= 1, "the listener got a track");
    assert!(
        with_level.load(Ordering::Relaxed) > 50,
        "the loud publisher's level arrives under the listener's extension id"
    );
    assert!(loud > 50, "the loud publisher is forwarded: {loud} packets");
    // Before the SFU has heard both, a few of the quiet one's packets may pass.
    assert!(
        quiet * 10 < loud,
        "the quiet publisher is held back: {quiet} vs {loud}"
    );
    assert_eq!(
        sfu.with(|s| s.dominant_speaker(ROOM)).as_deref(),
        Some("loud")
    );
    running.task.abort();
}
