//! A whole call set up through a real server: two identities meet in a room, see each
//! other's presence, and exchange offer, answer, candidates and hang-up, each stamped with
//! its authenticated sender.

#![cfg(feature = "server")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Client, TestServer, identity_of, key};
use sotto_signaling::protocol::{
    Answer, Candidate, ClientMessage, ErrorCode, Hangup, HangupReason, IdentityKey, Incoming,
    InviteToken, Offer, Outgoing, Participant, PresenceState, RoomId, ServerFrame, ServerMessage,
    Subscription,
};

const CALL: &str = "c-81f2";

fn participant(identity: IdentityKey, name: &str) -> Participant {
    Participant {
        identity,
        display_name: Some(name.to_owned()),
    }
}

/// Send a call-setup message from `sender` to `recipient`: the sender gets `relayed`
/// and the recipient the frame it returns.
async fn relay(sender: &mut Client, recipient: &mut Client, message: ClientMessage) -> ServerFrame {
    let reply = sender.request(message).await;
    assert_eq!(reply.message, ServerMessage::Relayed {});
    let pushed = recipient.recv().await;
    assert_eq!(pushed.id, None, "relayed messages are pushed events");
    pushed
}

async fn create_room(client: &mut Client) -> (RoomId, InviteToken) {
    let reply = client
        .request(ClientMessage::RoomCreate {
            max_participants: Some(2),
            sfu: false,
        })
        .await;
    let ServerMessage::RoomCreated {
        room_id,
        invite_token,
        max_participants,
        sfu: None,
    } = reply.message
    else {
        panic!("expected room_created, got {reply:?}");
    };
    assert_eq!(max_participants, 2);
    (room_id, invite_token)
}

#[tokio::test]
async fn two_identities_meet_in_a_room_and_set_up_a_call() {
    let server = TestServer::start().await;
    let (alice_key, bob_key) = (key(1), key(2));
    let (alice, bob) = (identity_of(&alice_key), identity_of(&bob_key));
    let mut a = Client::login(&server.url(), &alice_key, Some("Alice")).await;
    let mut b = Client::login(&server.url(), &bob_key, Some("Bob")).await;

    // Alice creates a room; Bob joins with the token; both see each other.
    let (room_id, invite_token) = create_room(&mut a).await;
    let reply = b
        .request(ClientMessage::RoomJoin {
            room_id: room_id.clone(),
            invite_token,
        })
        .await;
    let ServerMessage::RoomJoined {
        room_id: joined,
        participants,
        sfu: None,
    } = reply.message
    else {
        panic!("expected room_joined, got {reply:?}");
    };
    assert_eq!(joined, room_id);
    let everyone: BTreeSet<_> = participants
        .into_iter()
        .map(|p| (p.identity, p.display_name))
        .collect();
    let expected: BTreeSet<_> = [
        (alice, Some("Alice".to_owned())),
        (bob, Some("Bob".to_owned())),
    ]
    .into();
    assert_eq!(everyone, expected);
    let presence = a.recv().await;
    assert_eq!(presence.id, None);
    assert_eq!(
        presence.message,
        ServerMessage::Presence {
            room_id: room_id.clone(),
            participant: participant(bob, "Bob"),
            state: PresenceState::Joined,
        }
    );

    // Offer, answer, two candidates (the second is end-of-candidates), hang-up.
    let sdp_offer = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let offer = Offer {
        call_id: CALL.into(),
        sdp: sdp_offer.into(),
        ice_restart: false,
        e2ee: None,
    };
    let pushed = relay(
        &mut a,
        &mut b,
        ClientMessage::Offer(Outgoing {
            to: bob,
            body: offer.clone(),
        }),
    )
    .await;
    assert_eq!(
        pushed.message,
        ServerMessage::Offer(Incoming {
            from: alice,
            body: offer,
        })
    );

    let answer = Answer {
        call_id: CALL.into(),
        sdp: "v=0\r\no=- 9920 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".into(),
        e2ee: None,
    };
    let pushed = relay(
        &mut b,
        &mut a,
        ClientMessage::Answer(Outgoing {
            to: alice,
            body: answer.clone(),
        }),
    )
    .await;
    assert_eq!(
        pushed.message,
        ServerMessage::Answer(Incoming {
            from: bob,
            body: answer,
        })
    );

    let candidates = [
        Candidate {
            call_id: CALL.into(),
            candidate: "candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        },
        Candidate {
            call_id: CALL.into(),
            candidate: String::new(),
            sdp_mid: None,
            sdp_mline_index: None,
        },
    ];
    for candidate in candidates {
        let pushed = relay(
            &mut a,
            &mut b,
            ClientMessage::Candidate(Outgoing {
                to: bob,
                body: candidate.clone(),
            }),
        )
        .await;
        assert_eq!(
            pushed.message,
            ServerMessage::Candidate(Incoming {
                from: alice,
                body: candidate,
            })
        );
    }

    // A subscription request (meant for an SFU) is relayed the same way, stamped too.
    let wish = Subscription {
        call_id: CALL.into(),
        track: "alice-1234".into(),
        paused: Some(true),
        max_quality: None,
    };
    let pushed = relay(
        &mut b,
        &mut a,
        ClientMessage::Subscription(Outgoing {
            to: alice,
            body: wish.clone(),
        }),
    )
    .await;
    assert_eq!(
        pushed.message,
        ServerMessage::Subscription(Incoming {
            from: bob,
            body: wish,
        })
    );

    let hangup = Hangup {
        call_id: CALL.into(),
        reason: HangupReason::Normal,
    };
    let pushed = relay(
        &mut b,
        &mut a,
        ClientMessage::Hangup(Outgoing {
            to: alice,
            body: hangup.clone(),
        }),
    )
    .await;
    assert_eq!(
        pushed.message,
        ServerMessage::Hangup(Incoming {
            from: bob,
            body: hangup,
        })
    );

    // Nothing else was pushed to either side.
    a.expect_silence(Duration::from_millis(100)).await;
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn relays_to_an_identity_without_a_connection_are_peer_offline() {
    let server = TestServer::start().await;
    let mut a = Client::login(&server.url(), &key(1), Some("Alice")).await;
    let nobody = identity_of(&key(9));
    let reply = a
        .request(ClientMessage::Offer(Outgoing {
            to: nobody,
            body: Offer {
                call_id: CALL.into(),
                sdp: "v=0\r\n".into(),
                ice_restart: false,
                e2ee: None,
            },
        }))
        .await;
    let ServerMessage::Error { code, .. } = reply.message else {
        panic!("expected peer_offline, got {reply:?}");
    };
    assert_eq!(code, ErrorCode::PeerOffline);

    // Once Bob has come and gone, he is offline again.
    let bob_key = key(2);
    let b = Client::login(&server.url(), &bob_key, Some("Bob")).await;
    b.close().await;
    let reply = a
        .request(ClientMessage::Hangup(Outgoing {
            to: identity_of(&bob_key),
            body: Hangup {
                call_id: CALL.into(),
                reason: HangupReason::NoAnswer,
            },
        }))
        .await;
    assert!(
        matches!(
            reply.message,
            ServerMessage::Error {
                code: ErrorCode::PeerOffline,
                ..
            }
        ),
        "{reply:?}"
    );
    // Call setup is never stored: nothing waits in Bob's mailbox.
    let b = Client::login(&server.url(), &bob_key, Some("Bob")).await;
    assert_eq!(b.mailbox_depth, Some(0));
}

#[tokio::test]
async fn invalid_call_ids_are_refused() {
    let server = TestServer::start().await;
    let mut a = Client::login(&server.url(), &key(1), None).await;
    let mut b = Client::login(&server.url(), &key(2), None).await;
    for call_id in [String::new(), "has space".into(), "c".repeat(65)] {
        let reply = a
            .request(ClientMessage::Hangup(Outgoing {
                to: identity_of(&key(2)),
                body: Hangup {
                    call_id,
                    reason: HangupReason::Normal,
                },
            }))
            .await;
        assert!(
            matches!(
                reply.message,
                ServerMessage::Error {
                    code: ErrorCode::InvalidMessage,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn leaving_and_disconnecting_are_presence_left() {
    let server = TestServer::start().await;
    let (alice_key, bob_key) = (key(1), key(2));
    let bob = identity_of(&bob_key);
    let mut a = Client::login(&server.url(), &alice_key, Some("Alice")).await;
    let mut b = Client::login(&server.url(), &bob_key, Some("Bob")).await;
    let (room_id, invite_token) = create_room(&mut a).await;

    let join = ClientMessage::RoomJoin {
        room_id: room_id.clone(),
        invite_token: invite_token.clone(),
    };
    let joined = |state| ServerMessage::Presence {
        room_id: room_id.clone(),
        participant: participant(bob, "Bob"),
        state,
    };

    // Join, then leave explicitly.
    let reply = b.request(join.clone()).await;
    assert!(
        matches!(reply.message, ServerMessage::RoomJoined { .. }),
        "{reply:?}"
    );
    assert_eq!(a.recv().await.message, joined(PresenceState::Joined));
    let reply = b
        .request(ClientMessage::RoomLeave {
            room_id: room_id.clone(),
        })
        .await;
    assert_eq!(
        reply.message,
        ServerMessage::RoomLeft {
            room_id: room_id.clone()
        }
    );
    assert_eq!(a.recv().await.message, joined(PresenceState::Left));

    // Join again, then disconnect: a disconnect is a `left` too.
    let reply = b.request(join).await;
    assert!(
        matches!(reply.message, ServerMessage::RoomJoined { .. }),
        "{reply:?}"
    );
    assert_eq!(a.recv().await.message, joined(PresenceState::Joined));
    b.close().await;
    assert_eq!(a.recv().await.message, joined(PresenceState::Left));

    // Alice is alone in the room and still served.
    a.expect_silence(Duration::from_millis(100)).await;
    let reply = a
        .request(ClientMessage::RoomLeave {
            room_id: room_id.clone(),
        })
        .await;
    assert_eq!(reply.message, ServerMessage::RoomLeft { room_id });
}

#[tokio::test]
async fn a_room_at_its_cap_is_full() {
    let server = TestServer::start().await;
    let mut a = Client::login(&server.url(), &key(1), Some("Alice")).await;
    let mut b = Client::login(&server.url(), &key(2), Some("Bob")).await;
    let mut c = Client::login(&server.url(), &key(3), Some("Carol")).await;
    let (room_id, invite_token) = create_room(&mut a).await;
    let join = ClientMessage::RoomJoin {
        room_id,
        invite_token,
    };
    let reply = b.request(join.clone()).await;
    assert!(
        matches!(reply.message, ServerMessage::RoomJoined { .. }),
        "{reply:?}"
    );
    let reply = c.request(join).await;
    assert!(
        matches!(
            reply.message,
            ServerMessage::Error {
                code: ErrorCode::RoomFull,
                ..
            }
        ),
        "{reply:?}"
    );
}
