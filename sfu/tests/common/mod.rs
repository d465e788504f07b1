//! Shared by the SFU's integration tests: engine participants joining a room on an SFU
//! driven on one loopback socket, answering its offers, and numbered RTP packets.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::{Header, Packet};
use sotto_engine::call::IceConfig;
use sotto_engine::call::peer::{self, Peer, PeerEvent};
use sotto_sfu::core::SignalOut;
use sotto_sfu::driver::SfuHandle;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

/// Failure guard for waits, never a speed assertion.
pub const WAIT: Duration = Duration::from_secs(20);
pub const ROOM: &str = "room-1";

/// An engine peer connection (loopback ICE) that has made and applied its offer.
pub async fn offering_participant() -> (Peer, String) {
    offering_participant_with(false).await
}

/// The same, offering RED over Opus too with `red`.
pub async fn offering_participant_with(red: bool) -> (Peer, String) {
    let participant = peer::build(&IceConfig::loopback(), red, None, Default::default())
        .await
        .unwrap();
    let offer = participant.pc.create_offer(None).await.unwrap();
    participant
        .pc
        .set_local_description(offer.clone())
        .await
        .unwrap();
    (participant, offer.sdp)
}

/// Joins `who` to [`ROOM`]: signaling membership, its offer, the SFU's answer (returned
/// too, for its ICE credentials).
pub async fn join_with_answer(sfu: &SfuHandle, who: &str) -> (Peer, String) {
    join_offering(sfu, who, false).await
}

/// Joins `who` to [`ROOM`], offering RED with `red`; returns the SFU's answer too.
pub async fn join_offering(sfu: &SfuHandle, who: &str, red: bool) -> (Peer, String) {
    sfu.with(|s| s.participant_joined(ROOM, who));
    let (participant, offer) = offering_participant_with(red).await;
    let answer = sfu
        .with(|s| s.handle_offer(ROOM, who, &offer, Instant::now()))
        .unwrap();
    participant
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
        .await
        .unwrap();
    (participant, answer)
}

/// Joins `who` to [`ROOM`].
pub async fn join(sfu: &SfuHandle, who: &str) -> Peer {
    join_with_answer(sfu, who).await.0
}

/// Answers every SFU offer for `who` until `until` says stop; returns the tracks seen.
pub async fn until_track(
    sfu: &SfuHandle,
    signals: &mut mpsc::UnboundedReceiver<SignalOut>,
    who: &str,
    participant: &mut Peer,
) -> Arc<dyn TrackRemote> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(SignalOut::Offer { to, sdp, .. }) = signals.try_recv() {
                assert_eq!(to, who, "only one participant is being offered to here");
                let answer = answer_offer(participant, sdp).await;
                sfu.with(|s| s.handle_answer(ROOM, who, &answer, Instant::now()))
                    .unwrap();
            }
            match tokio::time::timeout(Duration::from_millis(20), participant.events.recv()).await {
                Ok(Some(PeerEvent::Track(track))) => return track,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("events ended"),
            }
        }
    })
    .await
    .expect("the SFU forwards a track")
}

pub async fn until_connected(participant: &mut Peer) {
    tokio::time::timeout(WAIT, async {
        while let Some(event) = participant.events.recv().await {
            if let PeerEvent::State(RTCPeerConnectionState::Connected) = event {
                return;
            }
        }
    })
    .await
    .expect("connects");
}

pub fn packet(ssrc: u32, i: u16) -> Packet {
    Packet {
        header: Header {
            version: 2,
            payload_type: 111,
            sequence_number: 500 + i,
            timestamp: u32::from(i) * 960,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(vec![0xF8, (i & 0xff) as u8, (i >> 8) as u8]),
    }
}

/// Writes `make(ssrc, i)` for i = 0, 1, … on `peer`'s track every `every`, until aborted
/// or the track closes.
pub fn publish_with(
    peer: &Peer,
    every: Duration,
    make: fn(u32, u16) -> Packet,
) -> tokio::task::JoinHandle<()> {
    let (track, ssrc) = (Arc::clone(&peer.track), peer.ssrc);
    tokio::spawn(async move {
        for i in 0u16.. {
            if track
                .write_rtp_with_extensions(make(ssrc, i), &[])
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// [`publish_with`] of numbered [`packet`]s.
pub fn publish_numbered(peer: &Peer, every: Duration) -> tokio::task::JoinHandle<()> {
    publish_with(peer, every, packet)
}

/// Answers the SFU's offers for each named listener until every one has a track; the
/// tracks in the listeners' order.
pub async fn until_tracks(
    sfu: &SfuHandle,
    signals: &mut mpsc::UnboundedReceiver<SignalOut>,
    listeners: &mut [(&str, &mut Peer)],
) -> Vec<Arc<dyn TrackRemote>> {
    let mut tracks: Vec<Option<Arc<dyn TrackRemote>>> = vec![None; listeners.len()];
    tokio::time::timeout(WAIT, async {
        while tracks.iter().any(Option::is_none) {
            while let Ok(SignalOut::Offer { to, sdp, .. }) = signals.try_recv() {
                let (_, who) = listeners
                    .iter()
                    .find(|(name, _)| *name == to)
                    .unwrap_or_else(|| panic!("an offer to {to}, not a listener"));
                let answer = answer_offer(who, sdp).await;
                sfu.with(|s| s.handle_answer(ROOM, &to, &answer, Instant::now()))
                    .unwrap();
            }
            for ((_, who), track) in listeners.iter_mut().zip(&mut tracks) {
                if let Ok(PeerEvent::Track(got)) = who.events.try_recv() {
                    *track = Some(got);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every listener gets the track");
    tracks.into_iter().flatten().collect()
}

/// The first `n` RTP packets arriving on `track` (fewer if it ends or [`WAIT`] passes).
pub async fn first_packets(track: &Arc<dyn TrackRemote>, n: usize) -> Vec<Packet> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(p) = event {
                got.push(p);
                if got.len() >= n {
                    return;
                }
            }
        }
    })
    .await;
    got
}

/// The participant applies an SFU-side offer and returns its answer.
pub async fn answer_offer(participant: &Peer, offer: String) -> String {
    participant
        .pc
        .set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = participant.pc.create_answer(None).await.unwrap();
    participant
        .pc
        .set_local_description(answer.clone())
        .await
        .unwrap();
    answer.sdp
}
