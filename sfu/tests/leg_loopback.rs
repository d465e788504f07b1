//! One SFU leg against the engine's real WebRTC stack on loopback: the engine offers, the
//! leg (ICE-lite, one UDP socket) answers, ICE and DTLS-SRTP come up, and RTP the engine
//! writes arrives at the leg decrypted, with its SSRC and payload.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::{Header, Packet};
use sotto_engine::call::IceConfig;
use sotto_engine::call::peer::{self, PeerEvent};
use sotto_sfu::demux::stun_local_ufrag;
use sotto_sfu::leg::{Leg, LegOutput};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

/// Failure guard for waits, never a speed assertion.
const WAIT: Duration = Duration::from_secs(20);

/// Drives one leg on one socket until the test ends; reports outputs and the first
/// STUN request's USERNAME ufrag.
async fn drive(
    mut leg: Leg,
    socket: UdpSocket,
    out: mpsc::UnboundedSender<(Option<String>, LegOutput)>,
) {
    let mut buf = vec![0u8; 2048];
    let mut first_ufrag = None;
    loop {
        while let Some(transmit) = leg.poll_transmit() {
            let _ = socket.send_to(&transmit.payload, transmit.to).await;
        }
        while let Some(output) = leg.poll_output() {
            if out.send((first_ufrag.clone(), output)).is_err() {
                return;
            }
        }
        let deadline = leg
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { return };
                if first_ufrag.is_none() {
                    first_ufrag = stun_local_ufrag(&buf[..n]);
                }
                let _ = leg.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let _ = leg.handle_timeout(Instant::now());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_connects_to_a_leg_and_its_rtp_arrives() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sfu_addr = socket.local_addr().unwrap();
    let mut leg = Leg::new(sfu_addr, Instant::now()).unwrap();
    let leg_ufrag = leg.local_ufrag().to_owned();

    let mut participant = peer::build(&IceConfig::loopback()).await.unwrap();
    let offer = participant.pc.create_offer(None).await.unwrap();
    participant
        .pc
        .set_local_description(offer.clone())
        .await
        .unwrap();
    let answer = leg.accept_offer(&offer.sdp, Instant::now()).unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains(&sfu_addr.port().to_string()), "{answer}");
    participant
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    let (out_tx, mut out) = mpsc::unbounded_channel();
    let driver = tokio::spawn(drive(leg, socket, out_tx));

    // The participant's side comes up.
    tokio::time::timeout(WAIT, async {
        while let Some(event) = participant.events.recv().await {
            if let PeerEvent::State(RTCPeerConnectionState::Connected) = event {
                return;
            }
        }
        panic!("the participant's events ended");
    })
    .await
    .expect("the participant connects");

    let track = Arc::clone(&participant.track);
    let ssrc = participant.ssrc;
    for i in 0..100u16 {
        let packet = Packet {
            header: Header {
                version: 2,
                payload_type: 111,
                sequence_number: 1000 + i,
                timestamp: u32::from(i) * 960,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(vec![0xF8, i as u8, 0xAA]),
        };
        track.write_rtp_with_extensions(packet, &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut connected = false;
    let mut received = Vec::new();
    let mut ufrag_seen = None;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some((ufrag, output)) = out.recv().await {
            ufrag_seen = ufrag.or(ufrag_seen.take());
            match output {
                LegOutput::Connected => connected = true,
                LegOutput::Rtp(packet) => {
                    received.push(packet);
                    if received.len() == 100 {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    driver.abort();

    assert!(connected, "the leg saw the connection come up");
    assert_eq!(ufrag_seen.as_deref(), Some(leg_ufrag.as_str()));
    assert!(received.len() >= 95, "{} of 100 packets", received.len());
    for packet in &received {
        assert_eq!(packet.header.ssrc, ssrc);
        let i = packet.header.sequence_number - 1000;
        assert_eq!(&packet.payload[..], &[0xF8, i as u8, 0xAA]);
    }
}
