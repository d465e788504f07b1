//! The typed `SignalingClient` against a real signaling server on a loopback port.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use sotto_engine::{CallSignal, ClientConfig, ClientError, Event, Identity, SignalingClient};
use sotto_signaling::protocol::{Answer, Candidate, ErrorCode, HangupReason, Offer, PresenceState};
use sotto_signaling::server::{Config, RunningServer, start};

/// Failure guard for waits, never a speed assertion.
const WAIT: Duration = Duration::from_secs(10);

async fn server(dir: &tempfile::TempDir) -> RunningServer {
    start(Config::new("127.0.0.1:0".parse().unwrap(), dir.path()))
        .await
        .unwrap()
}

fn config(server: &RunningServer) -> ClientConfig {
    let mut config = ClientConfig::new(server.ws_url());
    config.reconnect_initial = Duration::from_millis(50);
    config.reconnect_max = Duration::from_millis(400);
    config
}

fn identity(name: &str) -> Arc<Identity> {
    Arc::new(Identity::generate(Some(name.into())).unwrap())
}

async fn next(client: &mut SignalingClient) -> Event {
    client
        .next_event_within(WAIT)
        .await
        .expect("an event within the guard time")
}

#[tokio::test]
async fn two_identities_meet_relay_call_setup_and_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let mut alice = SignalingClient::connect(config(&server), identity("Alice"))
        .await
        .unwrap();
    let mut bob = SignalingClient::connect(config(&server), identity("Bob"))
        .await
        .unwrap();
    assert_eq!(alice.server_id(), server.server_id());

    let invite = alice.create_room(Some(4)).await.unwrap();
    assert_eq!(invite.max_participants, 4);
    let participants = bob
        .join_room(&invite.room_id, &invite.invite_token)
        .await
        .unwrap();
    let ids: Vec<_> = participants.iter().map(|p| p.identity).collect();
    assert!(ids.contains(&alice.identity()) && ids.contains(&bob.identity()));
    match next(&mut alice).await {
        Event::Presence {
            room_id,
            participant,
            state,
        } => {
            assert_eq!(room_id, invite.room_id);
            assert_eq!(participant.identity, bob.identity());
            assert_eq!(participant.display_name.as_deref(), Some("Bob"));
            assert_eq!(state, PresenceState::Joined);
        }
        other => panic!("expected presence, got {other:?}"),
    }

    let offer = Offer {
        call_id: "call-1".into(),
        sdp: "v=0 offer".into(),
        ice_restart: false,
        e2ee: None,
    };
    alice
        .send_call_signal(bob.identity(), CallSignal::Offer(offer.clone()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut bob).await,
        Event::Call {
            from: alice.identity(),
            signal: CallSignal::Offer(offer)
        }
    );

    let answer = Answer {
        call_id: "call-1".into(),
        sdp: "v=0 answer".into(),
        e2ee: None,
    };
    bob.send_call_signal(alice.identity(), CallSignal::Answer(answer.clone()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut alice).await,
        Event::Call {
            from: bob.identity(),
            signal: CallSignal::Answer(answer)
        }
    );

    for (i, (from, to)) in [(&alice, &bob), (&bob, &alice)].into_iter().enumerate() {
        let candidate = Candidate {
            call_id: "call-1".into(),
            candidate: format!("candidate:{i} 1 udp 2130706431 10.0.0.{i} 5000{i} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        };
        from.send_call_signal(to.identity(), CallSignal::Candidate(candidate))
            .await
            .unwrap();
    }
    match next(&mut bob).await {
        Event::Call {
            signal: CallSignal::Candidate(c),
            from,
        } => {
            assert_eq!(from, alice.identity());
            assert!(c.candidate.starts_with("candidate:0"));
        }
        other => panic!("expected a candidate, got {other:?}"),
    }
    match next(&mut alice).await {
        Event::Call {
            signal: CallSignal::Candidate(c),
            ..
        } => assert!(c.candidate.starts_with("candidate:1")),
        other => panic!("expected a candidate, got {other:?}"),
    }

    alice
        .hang_up(bob.identity(), "call-1", HangupReason::Normal)
        .await
        .unwrap();
    match next(&mut bob).await {
        Event::Call {
            signal: CallSignal::Hangup(h),
            ..
        } => {
            assert_eq!(
                (h.call_id.as_str(), h.reason),
                ("call-1", HangupReason::Normal)
            );
        }
        other => panic!("expected a hang-up, got {other:?}"),
    }

    bob.leave_room(&invite.room_id).await.unwrap();
    match next(&mut alice).await {
        Event::Presence {
            state, participant, ..
        } => {
            assert_eq!(
                (state, participant.identity),
                (PresenceState::Left, bob.identity())
            );
        }
        other => panic!("expected presence left, got {other:?}"),
    }

    // Someone who is not connected cannot be called.
    let nobody = identity("Nobody").public();
    let err = alice
        .send_call_signal(
            nobody,
            CallSignal::Offer(Offer {
                call_id: "c2".into(),
                sdp: "v=0".into(),
                ice_restart: false,
                e2ee: None,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PeerOffline));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn key_packages_and_mailbox_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let alice = SignalingClient::connect(config(&server), identity("Alice"))
        .await
        .unwrap();
    let bob_id = identity("Bob");

    assert_eq!(
        alice
            .publish_key_packages(
                vec![b"kp1".to_vec(), b"kp2".to_vec()],
                Some(b"last".to_vec())
            )
            .await
            .unwrap(),
        (2, true)
    );
    let bob_probe = SignalingClient::connect(config(&server), bob_id.clone())
        .await
        .unwrap();
    let fetched: Vec<_> = [
        bob_probe.fetch_key_package(alice.identity()).await.unwrap(),
        bob_probe.fetch_key_package(alice.identity()).await.unwrap(),
        bob_probe.fetch_key_package(alice.identity()).await.unwrap(),
    ]
    .into();
    assert_eq!(
        fetched,
        vec![
            (b"kp1".to_vec(), false),
            (b"kp2".to_vec(), false),
            (b"last".to_vec(), true)
        ]
    );
    assert_eq!(alice.key_package_count().await.unwrap(), (0, true));
    let err = alice
        .fetch_key_package(bob_probe.identity())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoKeyPackage));
    bob_probe.close().await;

    // Bob is offline: envelopes wait for him.
    let mut ids = Vec::new();
    for i in 0..3u8 {
        ids.push(
            alice
                .mailbox_send(bob_id.public(), vec![i; 10])
                .await
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut bob = SignalingClient::connect(config(&server), bob_id)
        .await
        .unwrap();
    assert_eq!(bob.mailbox_depth_at_connect(), 3);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            next(&mut bob).await,
            Event::Envelope {
                message_id: *id,
                envelope: vec![i as u8; 10]
            }
        );
    }
    assert_eq!(bob.mailbox_ack(ids[2]).await.unwrap(), 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reconnects_with_backoff_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = server(&dir).await;
    let addr = first.local_addr();
    let cfg = config(&first);
    let mut alice = SignalingClient::connect(cfg.clone(), identity("Alice"))
        .await
        .unwrap();
    let invite = alice.create_room(None).await.unwrap();
    let server_id = first.server_id().to_owned();
    first.shutdown().await.unwrap();

    match next(&mut alice).await {
        Event::Disconnected { .. } => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // While the server is down, requests fail promptly instead of hanging.
    let err = alice.create_room(None).await.unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");

    let second = start(Config::new(addr, dir.path())).await.unwrap();
    assert_eq!(
        second.server_id(),
        server_id,
        "the server id lives in the data dir"
    );
    match next(&mut alice).await {
        Event::Reconnected { mailbox_depth } => assert_eq!(mailbox_depth, 0),
        other => panic!("expected Reconnected, got {other:?}"),
    }
    // Rooms live in memory: the restarted server no longer has it.
    match next(&mut alice).await {
        Event::RoomLost { room_id, reason } => {
            assert_eq!(room_id, invite.room_id);
            assert!(reason.contains("invite_invalid"), "{reason}");
        }
        other => panic!("expected RoomLost, got {other:?}"),
    }
    // The reconnected client is fully usable and receives new envelopes.
    let carol = SignalingClient::connect(config(&second), identity("Carol"))
        .await
        .unwrap();
    let id = carol
        .mailbox_send(alice.identity(), b"after restart".to_vec())
        .await
        .unwrap();
    assert_eq!(
        next(&mut alice).await,
        Event::Envelope {
            message_id: id,
            envelope: b"after restart".to_vec()
        }
    );
    alice.create_room(None).await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn pinning_and_session_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let mut pinned = config(&server);
    pinned.expected_server_id = Some("some-other-server".into());
    let err = SignalingClient::connect(pinned, identity("Alice"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::ServerIdMismatch { .. }),
        "{err:?}"
    );

    let alice_id = identity("Alice");
    let mut first = SignalingClient::connect(config(&server), alice_id.clone())
        .await
        .unwrap();
    let second = SignalingClient::connect(config(&server), alice_id)
        .await
        .unwrap();
    match next(&mut first).await {
        Event::Closed { code, .. } => assert_eq!(code, ErrorCode::SessionReplaced),
        other => panic!("expected Closed, got {other:?}"),
    }
    // The replaced client does not fight back by reconnecting.
    assert!(
        first
            .next_event_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    second.create_room(None).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_sfu_client_registers_with_the_secret_and_hears_its_group_rooms() {
    use sotto_engine::signaling::KeyAuthenticator;
    let dir = tempfile::tempdir().unwrap();
    let secret = b"sixteen or more bytes of shared secret".to_vec();
    let secret_file = dir.path().join("sfu-secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let mut server_config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path());
    server_config.sfu_secret_file = Some(secret_file);
    let server = start(server_config).await.unwrap();

    let sfu_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let mut sfu_config = config(&server);
    sfu_config.sfu_secret = Some(b"not the right secret, though long".to_vec());
    let refused = SignalingClient::connect(
        sfu_config.clone(),
        Arc::new(KeyAuthenticator::new(sfu_key.clone(), Some("sfu".into()))),
    )
    .await;
    match refused {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::SfuRefused),
        Err(other) => panic!("expected sfu_refused, got {other:?}"),
        Ok(_) => panic!("a wrong secret must be refused"),
    }

    sfu_config.sfu_secret = Some(secret);
    let sfu_config_secret = sfu_config.sfu_secret.clone();
    let sfu_key_again = sfu_key.clone();
    let mut sfu = SignalingClient::connect(
        sfu_config,
        Arc::new(KeyAuthenticator::new(sfu_key, Some("sfu".into()))),
    )
    .await
    .unwrap();
    let alice = SignalingClient::connect(config(&server), identity("Alice"))
        .await
        .unwrap();
    let invite = alice.create_group_room(Some(4)).await.unwrap();
    assert_eq!(invite.sfu, Some(sfu.identity()));
    expect_joined(&mut sfu, &invite.room_id, alice.identity()).await;

    // The SFU restarts with the same key: registering again, it hears who is in its rooms.
    sfu.close().await;
    let mut again_config = config(&server);
    again_config.sfu_secret = sfu_config_secret.clone();
    let mut sfu = SignalingClient::connect(
        again_config,
        Arc::new(KeyAuthenticator::new(sfu_key_again, Some("sfu".into()))),
    )
    .await
    .unwrap();
    expect_joined(&mut sfu, &invite.room_id, alice.identity()).await;
}

/// The next event must say `who` is in `room`.
async fn expect_joined(
    client: &mut SignalingClient,
    room: &sotto_signaling::protocol::RoomId,
    who: sotto_signaling::protocol::IdentityKey,
) {
    match next(client).await {
        Event::Presence {
            room_id,
            participant,
            state,
        } => {
            assert_eq!(&room_id, room);
            assert_eq!(participant.identity, who);
            assert_eq!(state, PresenceState::Joined);
        }
        other => panic!("expected presence, got {other:?}"),
    }
}
