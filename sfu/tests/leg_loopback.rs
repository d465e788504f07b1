//! One SFU leg against the engine's real WebRTC stack on loopback: the engine offers, the
//! leg (ICE-lite, one UDP socket) answers, ICE and DTLS-SRTP come up, and RTP the engine
//! writes arrives at the leg decrypted, with its SSRC, payload type and payload. Then the
//! leg adds a send track, renegotiates with an SFU-side offer, and RTP it writes reaches
//! the engine's `on_track`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{answer_offer, offering_participant, packet};
use sotto_engine::call::peer::{Peer, PeerEvent};
use sotto_sfu::demux::stun_local_ufrag;
use sotto_sfu::leg::{Codec, Leg, LegOutput, OPUS_PAYLOAD_TYPE};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::{RTCPeerConnectionState, RTCSessionDescription};

/// Failure guard for waits, never a speed assertion.
const WAIT: Duration = Duration::from_secs(20);

type Command = Box<dyn FnOnce(&mut Leg) + Send>;

/// What the driver reports: the first STUN request's USERNAME ufrag, then each output.
type Report = (Option<String>, LegOutput);

/// A tiny driver: one socket, one leg; datagrams in, `poll_transmit` out, sleeping until
/// `poll_timeout`; commands run on the leg between datagrams.
struct Driver {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Driver {
    fn start(leg: Leg, socket: UdpSocket) -> (Driver, mpsc::UnboundedReceiver<Report>) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (out_tx, out) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(leg, socket, commands_rx, out_tx));
        (Driver { commands, task }, out)
    }

    /// Runs `f` on the leg inside the driver and returns its result.
    async fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Leg) -> R + Send + 'static) -> R {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |leg| {
            let _ = tx.send(f(leg));
        });
        assert!(self.commands.send(command).is_ok(), "the driver is gone");
        rx.await.unwrap()
    }
}

async fn drive(
    mut leg: Leg,
    socket: UdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::UnboundedSender<Report>,
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
            command = commands.recv() => match command {
                Some(command) => command(&mut leg),
                None => return,
            },
        }
    }
}

/// A participant (the engine's peer connection) offers, a leg on a fresh loopback socket
/// answers, and the participant's trickled candidates go to the leg. Returns when the
/// participant's side is connected.
async fn connect() -> (Peer, Driver, mpsc::UnboundedReceiver<Report>, String) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sfu_addr = socket.local_addr().unwrap();
    let mut leg = Leg::new(sfu_addr, Instant::now()).unwrap();
    let leg_ufrag = leg.local_ufrag().to_owned();

    let (mut participant, offer) = offering_participant().await;
    let answer = leg.accept_offer(&offer, Instant::now()).unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("a=end-of-candidates"), "{answer}");
    let host = format!("127.0.0.1 {} typ host", sfu_addr.port());
    assert!(answer.contains(&host), "{answer}");
    assert!(
        answer.contains("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1"),
        "{answer}"
    );
    participant
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    let (driver, out) = Driver::start(leg, socket);

    // Trickled candidates go to the leg until the participant is connected.
    let mut fed = 0;
    tokio::time::timeout(WAIT, async {
        while let Some(event) = participant.events.recv().await {
            match event {
                PeerEvent::Candidate(Some(candidate)) => {
                    let line = candidate.candidate.clone();
                    driver
                        .with(move |leg| leg.add_remote_candidate(&line))
                        .await
                        .unwrap();
                    fed += 1;
                }
                PeerEvent::State(RTCPeerConnectionState::Connected) => return,
                _ => {}
            }
        }
        panic!("the participant's events ended");
    })
    .await
    .expect("the participant connects");
    // The leg does not need them (ICE-lite), so how many came before connecting is only
    // reported.
    println!("{fed} trickled candidates fed to the leg before connecting");
    (participant, driver, out, leg_ufrag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_connects_to_a_leg_and_its_rtp_arrives() {
    let (participant, driver, mut out, leg_ufrag) = connect().await;

    let track = Arc::clone(&participant.track);
    let ssrc = participant.ssrc;
    for i in 0..100u16 {
        track
            .write_rtp_with_extensions(packet(ssrc, i), &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut connected = false;
    let mut opened = None;
    let mut received = Vec::new();
    let mut ufrag_seen = None;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some((ufrag, output)) = out.recv().await {
            ufrag_seen = ufrag.or(ufrag_seen.take());
            match output {
                LegOutput::Connected => connected = true,
                LegOutput::TrackOpened {
                    ssrc, kind, mid, ..
                } => opened = Some((ssrc, kind, mid)),
                LegOutput::Rtp { mid, ssrc, packet } => {
                    received.push((mid, ssrc, packet));
                    if received.len() == 100 {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await;

    assert!(connected, "the leg saw the connection come up");
    assert_eq!(ufrag_seen.as_deref(), Some(leg_ufrag.as_str()));
    let (opened_ssrc, kind, opened_mid) = opened.expect("the participant's track opened");
    assert_eq!(opened_ssrc, ssrc);
    assert_eq!(kind, rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio);
    assert_eq!(opened_mid.as_deref(), Some("0"));
    let mid_of = driver
        .with(move |leg| leg.mid_of(ssrc).map(str::to_owned))
        .await;
    assert_eq!(mid_of.as_deref(), Some("0"));
    println!("{} of 100 RTP packets arrived at the leg", received.len());
    assert!(received.len() >= 95, "{} of 100 packets", received.len());
    for (mid, out_ssrc, packet) in &received {
        assert_eq!(mid.as_deref(), Some("0"));
        assert_eq!(*out_ssrc, ssrc);
        assert_eq!(packet.header.ssrc, ssrc);
        assert_eq!(packet.header.payload_type, OPUS_PAYLOAD_TYPE);
        assert_eq!(
            packet.payload,
            common::packet(0, packet.header.sequence_number - 500).payload
        );
    }
    driver.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_track_reaches_the_participant_after_an_sfu_offer() {
    let (mut participant, driver, _out, _) = connect().await;

    // The leg adds a send track and offers; the participant answers.
    let send_ssrc = 0x5eed_0001;
    let (send_track, offer) = driver
        .with(move |leg| {
            let track = leg
                .add_send_track_with_codec(Codec::Opus, "alice", "alice-audio", send_ssrc)
                .unwrap();
            (track, leg.create_offer(Instant::now()).unwrap())
        })
        .await;
    assert!(offer.contains("a=msid:alice alice-audio"), "{offer}");
    let answer = answer_offer(&participant, offer).await;
    driver
        .with(move |leg| leg.accept_answer(&answer, Instant::now()))
        .await
        .unwrap();

    // The leg writes 100 packets, 5 ms apart; the participant's on_track sees them.
    let writer_commands = driver.commands.clone();
    let writer = tokio::spawn(async move {
        for i in 0..100u16 {
            let command: Command = Box::new(move |leg| {
                let _ = leg.write_rtp(send_track, packet(0, i), Instant::now());
            });
            if writer_commands.send(command).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let track = tokio::time::timeout(WAIT, async {
        loop {
            match participant.events.recv().await {
                Some(PeerEvent::Track(track)) => return track,
                Some(_) => {}
                None => panic!("the participant's events ended"),
            }
        }
    })
    .await
    .expect("the participant's on_track fires");
    assert_eq!(track.stream_id().await, "alice");

    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                received.push(packet);
                if received.len() == 100 {
                    return;
                }
            }
        }
    })
    .await;
    writer.await.unwrap();
    println!(
        "{} of 100 forwarded RTP packets reached the participant",
        received.len()
    );
    assert!(received.len() >= 95, "{} of 100 packets", received.len());
    for packet in &received {
        assert_eq!(packet.header.ssrc, send_ssrc);
        assert_eq!(packet.header.payload_type, OPUS_PAYLOAD_TYPE);
        assert_eq!(
            packet.payload,
            common::packet(0, packet.header.sequence_number - 500).payload
        );
    }
    driver.task.abort();
}
