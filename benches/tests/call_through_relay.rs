//! A real one-to-one call (two engines, in-process signaling, WebRTC with DTLS-SRTP) put
//! through `sotto-bench`'s UDP relay: the callee advertises the relay's address instead of
//! its own, the caller advertises nothing (the callee learns it from its checks, which come
//! through the relay), so every datagram of the call crosses the relay and its impairments.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use sotto_bench::ports::{Proto, unused_port};
use sotto_bench::relay::{Relay, RelayConfig};
use sotto_engine::audio::{InputSpec, OutputSpec};
use sotto_engine::call::{Advertise, CallConfig, IceConfig, Phone};
use sotto_engine::{ClientConfig, Identity, SignalingClient};
use sotto_netsim::{Impairment, Loss};
use sotto_signaling::server::{Config, start};

/// A signaling server, Alice and Bob on it, and the relay in front of Bob's address with
/// `forward` (Alice to Bob) and `backward` impairments.
struct ThroughRelay {
    _dir: tempfile::TempDir,
    server: sotto_signaling::server::RunningServer,
    alice: Phone,
    bob: Phone,
    bob_key: sotto_signaling::protocol::IdentityKey,
    bob_addr: std::net::SocketAddr,
    relay_addr: std::net::SocketAddr,
    relay_task: tokio::task::JoinHandle<std::io::Result<sotto_bench::relay::RelayReport>>,
}

/// A call that plays a tone and discards what it hears, gathering on `bind` and telling
/// the peer `advertise`, for at most `seconds`.
fn tone_call(hz: f32, bind: &str, advertise: Advertise, seconds: u64) -> CallConfig {
    CallConfig {
        input: InputSpec::Tone(hz),
        output: OutputSpec::Null,
        ice: IceConfig {
            bind: vec![bind.into()],
            advertise,
            ..IceConfig::default()
        },
        max_duration: Some(Duration::from_secs(seconds)),
        ..CallConfig::default()
    }
}

async fn through_relay(
    forward: Impairment,
    backward: Impairment,
    seed: u64,
    duration: Duration,
) -> ThroughRelay {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Config::new("127.0.0.1:0".parse().unwrap(), dir.path()))
        .await
        .unwrap();
    let bob_addr: std::net::SocketAddr = format!("127.0.0.1:{}", unused_port(Proto::Udp).unwrap())
        .parse()
        .unwrap();
    let relay = Relay::bind(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target: bob_addr,
        via: "127.0.0.1:0".parse().unwrap(),
        forward,
        backward,
        seed,
        duration,
    })
    .await
    .unwrap();
    let relay_addr = relay.listen_addr().unwrap();
    let relay_task = tokio::spawn(relay.run());
    let config = ClientConfig::new(server.ws_url());
    let phone = |identity: Arc<Identity>| {
        let config = config.clone();
        async move { Phone::new(SignalingClient::connect(config, identity).await.unwrap()) }
    };
    let bob_id = Arc::new(Identity::generate(None).unwrap());
    ThroughRelay {
        alice: phone(Arc::new(Identity::generate(None).unwrap())).await,
        bob: phone(bob_id.clone()).await,
        bob_key: bob_id.public(),
        _dir: dir,
        server,
        bob_addr,
        relay_addr,
        relay_task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_through_the_relay_and_feels_its_loss() {
    let lossy = Impairment {
        loss: Loss::Uniform { rate: 0.1 },
        delay_ms: 20.0,
        ..Default::default()
    };
    // The call (about 4.5 s) and a margin; the relay's report is read at the end.
    let ThroughRelay {
        _dir,
        server,
        alice,
        mut bob,
        bob_key,
        bob_addr,
        relay_addr,
        relay_task,
    } = through_relay(lossy.clone(), lossy, 3, Duration::from_secs(7)).await;

    let call = alice
        .call(
            bob_key,
            tone_call(440.0, "127.0.0.1:0", Advertise::Nothing, 4),
        )
        .unwrap();
    let incoming = bob.next_incoming().await.unwrap();
    let answered = incoming
        .answer(tone_call(
            660.0,
            &bob_addr.to_string(),
            Advertise::Address(relay_addr),
            4,
        ))
        .await
        .unwrap();
    let (alice_summary, bob_summary) = tokio::join!(call.finished(), answered.finished());
    let (alice_summary, bob_summary) = (alice_summary.unwrap(), bob_summary.unwrap());
    let report = relay_task.await.unwrap().unwrap();
    // Every datagram crossed the relay: the audio alone is 50 a second each way, some 200
    // over the call.
    assert!(report.forward.received > 150, "{report:?}");
    assert!(report.backward.received > 150, "{report:?}");
    assert!(
        report.forward.lost > 10 && report.backward.lost > 10,
        "{report:?}"
    );
    assert!(alice_summary.connected, "{alice_summary:?}");
    assert!(bob_summary.received.packets > 100, "{bob_summary:?}");
    assert!(alice_summary.received.packets > 100, "{alice_summary:?}");
    // 10 % loss each way: the receivers feel it (well above what loopback loses alone),
    // and RED's copies bring most of it back.
    for summary in [&bob_summary, &alice_summary] {
        let got = &summary.received;
        let missing = got.lost + got.red_recovered;
        assert!(
            missing as f64 > 0.04 * (got.packets + got.lost) as f64,
            "{got:?}"
        );
        assert!(got.red_recovered > got.lost, "{got:?}");
    }
    server.shutdown().await.unwrap();
}

/// Media that stops one way while the connection stays up (the held-out check's silent
/// call, issue 18): for 4 s nothing of the caller's reaches the callee. The callee sees
/// nothing arrive while the caller's sender reports count on, the caller sees nothing of
/// its own acknowledged; both report the stall (`Reconnecting`, `media_stalls`), the
/// caller restarts ICE, and media flows both ways again before the call ends.
///
/// The restart goes through the relay too: the callee's restart answer carries its one
/// candidate at the relay's address (webrtc-rs writes the gathered candidates into it,
/// and no new candidate events follow a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_that_stops_one_way_is_noticed_and_the_call_recovers() {
    use sotto_netsim::{Change, ChangeKind};

    let clean = Impairment {
        delay_ms: 10.0,
        ..Default::default()
    };
    // The relay starts before the call; at 3 s the call has been up for about 2 s.
    let blackout = Impairment {
        schedule: vec![Change {
            at_ms: 3000.0,
            what: ChangeKind::Outage {
                duration_ms: 4000.0,
            },
        }],
        ..clean.clone()
    };
    let ThroughRelay {
        _dir,
        server,
        alice,
        mut bob,
        bob_key,
        bob_addr,
        relay_addr,
        relay_task,
    } = through_relay(blackout, clean, 5, Duration::from_secs(16)).await;
    let call = alice
        .call(
            bob_key,
            tone_call(440.0, "127.0.0.1:0", Advertise::Nothing, 12),
        )
        .unwrap();
    let incoming = bob.next_incoming().await.unwrap();
    let answered = incoming
        .answer(tone_call(
            440.0,
            &bob_addr.to_string(),
            Advertise::Address(relay_addr),
            12,
        ))
        .await
        .unwrap();
    let (alice_summary, bob_summary) = tokio::join!(call.finished(), answered.finished());
    let (alice_summary, bob_summary) = (alice_summary.unwrap(), bob_summary.unwrap());
    let report = relay_task.await.unwrap().unwrap();
    for summary in [&alice_summary, &bob_summary] {
        assert!(summary.connected, "{summary:?}");
        assert!(summary.media_stalls >= 1, "{summary:?}");
        // It ended normally (one end at its duration, the other hearing it hang up), not
        // failed in Reconnecting.
        assert_eq!(
            summary.end.reason,
            sotto_signaling::protocol::HangupReason::Normal,
            "{summary:?}"
        );
    }
    assert!(alice_summary.ice_restarts >= 1, "{alice_summary:?}");
    // Before and after the blackout Bob heard Alice: 12 s of 20 ms frames less the 4 s
    // and the repair.
    assert!(bob_summary.received.packets > 250, "{bob_summary:?}");
    // All of it through the relay, after the restart too: nothing went around it.
    assert!(
        report.forward.forwarded >= bob_summary.received.packets,
        "{report:?} {bob_summary:?}"
    );
    server.shutdown().await.unwrap();
}
