//! Identities are isolated from each other: no one reads another's mailbox, joins a room
//! without its token, or speaks under another identity.

#![cfg(feature = "server")]

mod common;

use std::time::Duration;

use common::{Client, TestServer, http_get, identity_of, key};
use sotto_signaling::protocol::{
    ClientMessage, ErrorCode, InviteToken, RoomId, ServerMessage, encode_b64,
};

#[tokio::test]
async fn a_client_cannot_read_or_acknowledge_another_identitys_mailbox() {
    let server = TestServer::start().await;
    let (alice_key, bob_key, mallory_key) = (key(1), key(2), key(3));
    let (bob, mallory) = (identity_of(&bob_key), identity_of(&mallory_key));

    let mut alice = Client::login(&server.url(), &alice_key, None).await;
    let mut bob_ids = Vec::new();
    for i in 0..5 {
        let reply = alice
            .request(ClientMessage::MailboxSend {
                to: bob,
                envelope: format!("for-bob-{i}").into_bytes().into(),
            })
            .await;
        let ServerMessage::MailboxAccepted { message_id } = reply.message else {
            panic!("not accepted: {reply:?}");
        };
        bob_ids.push(message_id);
    }
    // Mallory has one envelope of her own; ids are per recipient, so hers overlaps Bob's.
    let reply = alice
        .request(ClientMessage::MailboxSend {
            to: mallory,
            envelope: b"for-mallory".to_vec().into(),
        })
        .await;
    let ServerMessage::MailboxAccepted {
        message_id: mallory_id,
    } = reply.message
    else {
        panic!("not accepted: {reply:?}");
    };

    // Mallory sees only her own envelope, and acknowledging "everything" removes only it.
    let mut mallory_conn = Client::login(&server.url(), &mallory_key, None).await;
    assert_eq!(mallory_conn.mailbox_depth, Some(1));
    let frame = mallory_conn.recv().await;
    assert_eq!(
        frame.message,
        ServerMessage::Envelope {
            message_id: mallory_id,
            envelope: b"for-mallory".to_vec().into(),
        }
    );
    let reply = mallory_conn
        .request(ClientMessage::MailboxAck { up_to: u64::MAX })
        .await;
    let ServerMessage::MailboxAcked { up_to, removed } = reply.message else {
        panic!("expected mailbox_acked, got {reply:?}");
    };
    assert_eq!(removed, 1, "only Mallory's own envelope");
    assert_eq!(up_to, mallory_id, "an ack is capped at what was delivered");
    mallory_conn
        .expect_silence(Duration::from_millis(200))
        .await;

    // Bob still gets all of his.
    let mut bob_conn = Client::login(&server.url(), &bob_key, None).await;
    assert_eq!(bob_conn.mailbox_depth, Some(5));
    for (i, id) in bob_ids.iter().enumerate() {
        let frame = bob_conn.recv().await;
        assert_eq!(
            frame.message,
            ServerMessage::Envelope {
                message_id: *id,
                envelope: format!("for-bob-{i}").into_bytes().into(),
            }
        );
    }
    mallory_conn
        .expect_silence(Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn an_ack_before_delivery_removes_nothing() {
    let server = TestServer::start().await;
    let bob_key = key(2);
    let mut alice = Client::login(&server.url(), &key(1), None).await;
    let mut bob_conn = Client::login(&server.url(), &bob_key, None).await;
    assert_eq!(bob_conn.mailbox_depth, Some(0));
    // Bob acknowledges ids he has not been sent yet; then an envelope arrives.
    let reply = bob_conn
        .request(ClientMessage::MailboxAck { up_to: 1_000 })
        .await;
    assert_eq!(
        reply.message,
        ServerMessage::MailboxAcked {
            up_to: 0,
            removed: 0
        }
    );
    let reply = alice
        .request(ClientMessage::MailboxSend {
            to: identity_of(&bob_key),
            envelope: b"hi".to_vec().into(),
        })
        .await;
    let ServerMessage::MailboxAccepted { message_id } = reply.message else {
        panic!("not accepted: {reply:?}");
    };
    let frame = bob_conn.recv().await;
    assert_eq!(
        frame.message,
        ServerMessage::Envelope {
            message_id,
            envelope: b"hi".to_vec().into(),
        }
    );
}

#[tokio::test]
async fn rooms_need_their_invite_token_and_failures_look_alike() {
    let server = TestServer::start().await;
    let mut alice = Client::login(&server.url(), &key(1), Some("Alice")).await;
    let mut mallory = Client::login(&server.url(), &key(3), None).await;
    let reply = alice
        .request(ClientMessage::RoomCreate {
            max_participants: None,
            sfu: false,
        })
        .await;
    let ServerMessage::RoomCreated {
        room_id,
        invite_token,
        ..
    } = reply.message
    else {
        panic!("expected room_created, got {reply:?}");
    };

    let wrong_token = InviteToken(encode_b64(&[7; 32]));
    let missing_room = RoomId(encode_b64(&[7; 16]));
    let mut sentences = Vec::new();
    for (room_id, invite_token) in [
        (room_id.clone(), wrong_token),
        (missing_room, invite_token.clone()),
        (room_id.clone(), InviteToken(String::new())),
    ] {
        let reply = mallory
            .request(ClientMessage::RoomJoin {
                room_id,
                invite_token,
            })
            .await;
        let ServerMessage::Error { code, message } = reply.message else {
            panic!("expected invite_invalid, got {reply:?}");
        };
        assert_eq!(code, ErrorCode::InviteInvalid);
        sentences.push(message);
    }
    assert!(
        sentences.windows(2).all(|w| w[0] == w[1]),
        "a wrong token and a missing room are indistinguishable: {sentences:?}"
    );
    // Mallory was never in the room: leaving it is refused and Alice heard nothing.
    let reply = mallory
        .request(ClientMessage::RoomLeave {
            room_id: room_id.clone(),
        })
        .await;
    assert!(
        matches!(
            reply.message,
            ServerMessage::Error {
                code: ErrorCode::NotInRoom,
                ..
            }
        ),
        "{reply:?}"
    );
    alice.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn relayed_messages_carry_the_authenticated_sender_not_a_chosen_one() {
    let server = TestServer::start().await;
    let (alice_key, bob_key, mallory_key) = (key(1), key(2), key(3));
    let alice = identity_of(&alice_key);
    let bob = identity_of(&bob_key);
    let mallory = identity_of(&mallory_key);
    let _alice_conn = Client::login(&server.url(), &alice_key, Some("Alice")).await;
    let mut bob_conn = Client::login(&server.url(), &bob_key, Some("Bob")).await;
    let mut mallory_conn = Client::login(&server.url(), &mallory_key, Some("Alice")).await;

    // Mallory writes `from: Alice` into her offer; the field is not hers to choose.
    let forged = format!(
        r#"{{"type":"offer","id":1,"to":"{bob}","from":"{alice}","call_id":"c-1","sdp":"v=0\r\n"}}"#
    );
    mallory_conn.send_text(&forged).await;
    let reply = mallory_conn.recv().await;
    assert_eq!(reply.id, Some(1));
    assert_eq!(reply.message, ServerMessage::Relayed {});

    let offer = bob_conn.recv().await;
    assert_eq!(offer.id, None);
    let ServerMessage::Offer(offer) = offer.message else {
        panic!("expected the offer, got {offer:?}");
    };
    assert_eq!(offer.from, mallory, "stamped with the real sender");
    assert_ne!(offer.from, alice);
    assert_eq!(offer.body.call_id, "c-1");
    assert_eq!(offer.body.sdp, "v=0\r\n");
}

#[tokio::test]
async fn health_answers_200() {
    let server = TestServer::start().await;
    let (status, body) = http_get(server.addr(), "/health").await;
    assert_eq!(status, 200);
    assert_eq!(body, "ok\n");
    let (status, _) = http_get(server.addr(), "/no-such-page").await;
    assert_eq!(status, 404);
}
