//! SFU control: an SFU proves the shared secret with `sfu_register`, group rooms are
//! assigned to it, it hears every join and leave, and participants reach it with the usual
//! call-setup messages (the room id as `call_id`). A wrong or replayed proof is refused.

mod common;

use common::{Client, TestServer, identity_of, key};
use sotto_signaling::protocol::{
    Answer, ClientMessage, ErrorCode, Offer, Outgoing, PresenceState, ServerMessage, sfu_proof,
};

const SECRET: &[u8] = b"a shared secret of at least sixteen bytes";

async fn server_with_secret() -> TestServer {
    let dir = tempfile::tempdir().expect("a temp dir");
    let secret_file = dir.path().join("sfu-secret");
    std::fs::write(&secret_file, [SECRET, b"\n"].concat()).expect("writing the secret");
    let server = TestServer::start_with(|config| config.sfu_secret_file = Some(secret_file)).await;
    // The secret is read at start; the directory may go.
    drop(dir);
    server
}

/// Registers `sfu` with the right proof for its connection.
async fn register(sfu: &mut Client) {
    let proof = sfu_proof(SECRET, &sfu.server_id, &sfu.challenge);
    let reply = sfu
        .request(ClientMessage::SfuRegister {
            proof: proof.to_vec().into(),
        })
        .await;
    assert_eq!(reply.message, ServerMessage::SfuRegistered {});
}

/// The next frame must be a presence event; returns (who, state).
async fn presence(client: &mut Client) -> (sotto_signaling::protocol::IdentityKey, PresenceState) {
    match client.recv().await.message {
        ServerMessage::Presence {
            participant, state, ..
        } => (participant.identity, state),
        other => panic!("expected presence, got {other:?}"),
    }
}

#[tokio::test]
async fn a_registered_sfu_hosts_group_rooms_and_hears_joins_leaves_and_offers() {
    let server = server_with_secret().await;
    let (sfu_key, alice_key, bob_key) = (key(10), key(1), key(2));
    let mut sfu = Client::login(&server.url(), &sfu_key, Some("sfu")).await;

    // Before an SFU registers, a group room cannot be made.
    let mut alice = Client::login(&server.url(), &alice_key, Some("Alice")).await;
    alice
        .send(
            Some(1),
            ClientMessage::RoomCreate {
                max_participants: None,
                sfu: true,
            },
        )
        .await;
    assert_eq!(alice.expect_error(ErrorCode::NoSfu).await, Some(1));

    // A wrong proof, and a right proof for another connection's challenge, are refused.
    for bad in [
        sfu_proof(
            b"not the secret at all, sixteen+",
            &sfu.server_id,
            &sfu.challenge,
        )
        .to_vec(),
        sfu_proof(SECRET, &sfu.server_id, &[7u8; 32]).to_vec(),
        vec![0u8; 3],
    ] {
        sfu.send(Some(2), ClientMessage::SfuRegister { proof: bad.into() })
            .await;
        sfu.expect_error(ErrorCode::SfuRefused).await;
    }
    register(&mut sfu).await;

    // A group room names the SFU; the SFU hears the creator join.
    let reply = alice
        .request(ClientMessage::RoomCreate {
            max_participants: None,
            sfu: true,
        })
        .await;
    let ServerMessage::RoomCreated {
        room_id,
        invite_token,
        sfu: Some(assigned),
        ..
    } = reply.message
    else {
        panic!("expected room_created with an sfu, got {reply:?}");
    };
    assert_eq!(assigned, identity_of(&sfu_key));
    assert_eq!(
        presence(&mut sfu).await,
        (identity_of(&alice_key), PresenceState::Joined)
    );

    // Bob joins: room_joined names the SFU, which is not listed as a participant.
    let mut bob = Client::login(&server.url(), &bob_key, Some("Bob")).await;
    let reply = bob
        .request(ClientMessage::RoomJoin {
            room_id: room_id.clone(),
            invite_token,
        })
        .await;
    let ServerMessage::RoomJoined {
        participants,
        sfu: joined_sfu,
        ..
    } = reply.message
    else {
        panic!("expected room_joined, got {reply:?}");
    };
    assert_eq!(joined_sfu, Some(assigned));
    assert_eq!(participants.len(), 2);
    assert!(participants.iter().all(|p| p.identity != assigned));
    assert_eq!(
        presence(&mut sfu).await,
        (identity_of(&bob_key), PresenceState::Joined)
    );
    assert_eq!(
        presence(&mut alice).await,
        (identity_of(&bob_key), PresenceState::Joined)
    );

    // Bob offers to the SFU with the room id as call id; the SFU answers.
    let reply = bob
        .request(ClientMessage::Offer(Outgoing {
            to: assigned,
            body: Offer {
                call_id: room_id.0.clone(),
                sdp: "v=0\r\n".into(),
                ice_restart: false,
                e2ee: None,
            },
        }))
        .await;
    assert_eq!(reply.message, ServerMessage::Relayed {});
    match sfu.recv().await.message {
        ServerMessage::Offer(m) => {
            assert_eq!(m.from, identity_of(&bob_key));
            assert_eq!(m.body.call_id, room_id.0);
        }
        other => panic!("expected the offer, got {other:?}"),
    }
    let reply = sfu
        .request(ClientMessage::Answer(Outgoing {
            to: identity_of(&bob_key),
            body: Answer {
                call_id: room_id.0.clone(),
                sdp: "v=0\r\n".into(),
                e2ee: None,
            },
        }))
        .await;
    assert_eq!(reply.message, ServerMessage::Relayed {});
    assert!(matches!(bob.recv().await.message, ServerMessage::Answer(m) if m.from == assigned));

    // Leaving and disconnecting are heard by the SFU too.
    bob.request(ClientMessage::RoomLeave {
        room_id: room_id.clone(),
    })
    .await;
    assert_eq!(
        presence(&mut sfu).await,
        (identity_of(&bob_key), PresenceState::Left)
    );
    alice.close().await;
    assert_eq!(
        presence(&mut sfu).await,
        (identity_of(&alice_key), PresenceState::Left)
    );

    // When the SFU goes, no new group room can be made.
    sfu.close().await;
    let mut carol = Client::login(&server.url(), &key(3), None).await;
    // The server notices the close asynchronously; retry briefly.
    let mut refused = false;
    for attempt in 0..50u64 {
        carol
            .send(
                Some(100 + attempt),
                ClientMessage::RoomCreate {
                    max_participants: None,
                    sfu: true,
                },
            )
            .await;
        match carol.recv().await.message {
            ServerMessage::Error {
                code: ErrorCode::NoSfu,
                ..
            } => {
                refused = true;
                break;
            }
            ServerMessage::RoomCreated { room_id, .. } => {
                carol.request(ClientMessage::RoomLeave { room_id }).await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused, "a departed SFU is no longer assigned");
}

#[tokio::test]
async fn without_a_secret_no_sfu_can_register() {
    let server = TestServer::start().await;
    let mut sfu = Client::login(&server.url(), &key(10), None).await;
    let proof = sfu_proof(SECRET, &sfu.server_id, &sfu.challenge);
    sfu.send(
        Some(1),
        ClientMessage::SfuRegister {
            proof: proof.to_vec().into(),
        },
    )
    .await;
    sfu.expect_error(ErrorCode::SfuRefused).await;
    // The connection is still served.
    sfu.assert_served().await;
}

#[tokio::test]
async fn a_short_secret_file_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret_file = dir.path().join("short");
    std::fs::write(&secret_file, b"short\n").unwrap_or_else(|e| panic!("{e}"));
    let mut config = sotto_signaling::server::Config::new(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        dir.path(),
    );
    config.sfu_secret_file = Some(secret_file);
    let started = sotto_signaling::server::start(config).await;
    let err = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("shorter than 16 bytes"), "{err}");
}

#[tokio::test]
async fn a_registered_sfu_may_speak_for_a_room_filling_at_once() {
    // A participant's allowance is 100 at once; an SFU answers and offers for everyone
    // joining its rooms, so it gets its own (`sfu_rate_burst`).
    let server = server_with_secret().await;
    let mut sfu = Client::login(&server.url(), &key(10), Some("sfu")).await;
    register(&mut sfu).await;
    let burst = 1000u64;
    for id in 0..burst {
        sfu.send(Some(id), ClientMessage::KeyPackageCount {}).await;
    }
    for id in 0..burst {
        let reply = sfu.recv().await;
        assert_eq!(reply.id, Some(id));
        assert!(
            !matches!(reply.message, ServerMessage::Error { .. }),
            "request {id} of the burst was refused: {:?}",
            reply.message
        );
    }

    // The same burst from a participant is cut at its allowance.
    let mut alice = Client::login(&server.url(), &key(1), Some("Alice")).await;
    for id in 0..200u64 {
        alice
            .send(Some(id), ClientMessage::KeyPackageCount {})
            .await;
    }
    let mut limited = 0;
    for _ in 0..200 {
        match alice.next_event().await {
            common::Event::Frame(frame) => {
                if let ServerMessage::Error { code, .. } = frame.message {
                    // Past its strikes it is told so, then closed.
                    assert!(
                        [ErrorCode::RateLimited, ErrorCode::Abusive].contains(&code),
                        "{code:?}"
                    );
                    limited += 1;
                }
            }
            _ => break,
        }
    }
    assert!(limited > 0, "a participant's burst of 200 was not limited");
}
