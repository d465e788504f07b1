//! The core's single output: a call through it, driven by `poll_output` alone (datagrams,
//! then signaling, then the next deadline), works as with the separate polls.

mod sim;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sotto_sfu::client::{Client, ClientEvent, Publish};
use sotto_sfu::core::{Output, Sfu, SignalOut};

#[test]
fn a_call_driven_by_poll_output_alone_connects_and_forwards() {
    let start = Instant::now();
    let mut now = start;
    let sfu_addr: SocketAddr = "10.0.0.1:5000".parse().expect("address");
    let mut sfu = Sfu::with_seed(sfu_addr, 5);
    let mut clients = Vec::new();
    for (i, name) in ["alice", "bob"].into_iter().enumerate() {
        let addr: SocketAddr = format!("10.0.1.{}:40000", i + 1).parse().expect("address");
        let mut client =
            Client::new(name, addr, &[Publish::audio(0xA000 + i as u32)], now).expect("client");
        sfu.participant_joined(sim::ROOM, name);
        let offer = client.offer(now).expect("offer");
        let answer = sfu
            .handle_offer(sim::ROOM, name, &offer, now)
            .expect("answer");
        client.apply_answer(&answer, now).expect("applied");
        clients.push((name, client));
    }
    let mut signals = 0;
    let mut timeouts = 0;
    let mut packets = 0u32;
    let mut rtp_at_bob = 0;
    while now.duration_since(start) < Duration::from_secs(5) {
        loop {
            match sfu.poll_output() {
                Output::Transmit(transmit) => {
                    if let Some((_, client)) =
                        clients.iter_mut().find(|(_, c)| c.addr() == transmit.to)
                    {
                        let _ = client.handle_datagram(now, sfu_addr, &transmit.payload);
                    }
                }
                Output::Signal(SignalOut::Offer { to, sdp, .. }) => {
                    signals += 1;
                    let (_, client) = clients
                        .iter_mut()
                        .find(|(name, _)| *name == to)
                        .expect("a participant");
                    let answer = client.accept_offer(&sdp, now).expect("answered");
                    sfu.handle_answer(sim::ROOM, &to, &answer, now)
                        .expect("taken");
                }
                Output::Signal(_) => signals += 1,
                Output::Timeout(due) => {
                    if due.is_some_and(|due| due <= now) {
                        timeouts += 1;
                        sfu.handle_timeout(now);
                        continue;
                    }
                    break;
                }
            }
        }
        for (name, client) in &mut clients {
            while let Some(transmit) = client.poll_transmit() {
                sfu.handle_datagram(now, client.addr(), &transmit.payload);
            }
            while let Some(event) = client.poll_event() {
                if let ClientEvent::Rtp(_) = event
                    && *name == "bob"
                {
                    rtp_at_bob += 1;
                }
            }
            let _ = client.handle_timeout(now);
        }
        // Alice speaks every 20 ms once the SFU has answered her.
        if now.duration_since(start) > Duration::from_secs(1) && packets < 150 {
            let (_, alice) = &mut clients[0];
            let outgoing = sotto_sfu::client::Outgoing {
                seq: packets as u16,
                timestamp: packets * 960,
                marker: false,
                frame: None,
                payload: bytes::Bytes::from_static(&[0xF8, 0xFF, 0xFE]),
            };
            let _ = alice.send_rtp(0xA000, outgoing, now);
            packets += 1;
        }
        now += Duration::from_millis(20);
    }
    assert!(signals >= 2, "the SFU offered each the other's stream");
    assert!(timeouts > 0);
    assert!(
        rtp_at_bob > 100,
        "bob heard {rtp_at_bob} of alice's packets"
    );
}
