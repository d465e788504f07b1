//! Abuse cases against a real server: each gets its documented error or limit (the error
//! table in PROTOCOL.md), and a bystander that authenticated beforehand is still served
//! afterwards.

#![cfg(feature = "server")]

mod common;

use std::time::Duration;

use common::{Client, Event, TestServer, http_get, identity_of, key};
use ed25519_dalek::Signer as _;
use futures_util::SinkExt as _;
use sotto_signaling::protocol::{ClientMessage, ErrorCode, ServerMessage, auth_payload, close};
use tokio_tungstenite::tungstenite::Message;

/// A server and a bystander authenticated on it before anything bad happens.
async fn server_with_bystander(
    tune: impl FnOnce(&mut sotto_signaling::server::Config),
) -> (TestServer, Client) {
    let server = TestServer::start_with(tune).await;
    let mut bystander = Client::login(&server.url(), &key(200), Some("Bystander")).await;
    bystander.assert_served().await;
    (server, bystander)
}

#[tokio::test]
async fn forged_signature_is_refused_and_closes_4001() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut mallory = Client::connect(&server.url()).await;
    // Claim Alice's identity but sign with Mallory's key.
    let mut auth = mallory.auth(&key(2), None);
    auth.identity = identity_of(&key(1));
    mallory.send(Some(1), ClientMessage::Auth(auth)).await;
    mallory.expect_closed_with(ErrorCode::BadSignature).await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn signature_over_another_server_id_is_refused() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut client = Client::connect(&server.url()).await;
    let alice = key(1);
    let mut auth = client.auth(&alice, None);
    let payload = auth_payload("some-other-server", &client.challenge);
    auth.signature = alice.sign(&payload).to_bytes().to_vec().into();
    client.send(Some(1), ClientMessage::Auth(auth)).await;
    client.expect_closed_with(ErrorCode::BadSignature).await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn replayed_auth_from_another_connection_is_a_challenge_mismatch() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let alice = key(1);
    let mut a = Client::connect(&server.url()).await;
    let captured = serde_json::to_string(&sotto_signaling::protocol::ClientFrame {
        id: Some(1),
        message: ClientMessage::Auth(a.auth(&alice, None)),
    })
    .expect("encoding auth");
    a.send_text(&captured).await;
    let welcome = a.recv().await;
    assert!(
        matches!(welcome.message, ServerMessage::Welcome { .. }),
        "{welcome:?}"
    );

    // The eavesdropper replays connection A's auth, byte for byte, on connection B.
    let mut b = Client::connect(&server.url()).await;
    assert_ne!(
        a.challenge, b.challenge,
        "every connection gets a fresh challenge"
    );
    b.send_text(&captured).await;
    b.expect_closed_with(ErrorCode::ChallengeMismatch).await;

    // A was not disturbed by the replay.
    a.assert_served().await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn second_auth_is_refused_and_the_connection_stays() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let alice = key(1);
    let mut a = Client::login(&server.url(), &alice, None).await;
    let again = a.auth(&alice, None);
    a.send(Some(77), ClientMessage::Auth(again)).await;
    assert_eq!(
        a.expect_error(ErrorCode::AlreadyAuthenticated).await,
        Some(77)
    );
    a.assert_served().await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn unsupported_version_closes_4002() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut client = Client::connect(&server.url()).await;
    let mut auth = client.auth(&key(1), None);
    auth.version = 2;
    client.send(Some(1), ClientMessage::Auth(auth)).await;
    client
        .expect_closed_with(ErrorCode::UnsupportedVersion)
        .await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn malformed_json_is_an_error_and_the_connection_stays_usable() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut a = Client::login(&server.url(), &key(1), None).await;
    a.send_text(r#"{"type":"room_create","id":5"#).await;
    assert_eq!(a.expect_error(ErrorCode::MalformedJson).await, None);
    a.assert_served().await;

    // Before authentication too: the client can still authenticate afterwards.
    let mut b = Client::connect(&server.url()).await;
    b.send_text("this is not json").await;
    b.expect_error(ErrorCode::MalformedJson).await;
    b.authenticate(&key(2), None).await;
    b.assert_served().await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn unknown_type_echoes_the_request_id() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut a = Client::login(&server.url(), &key(1), None).await;
    a.send_text(r#"{"type":"teleport","id":42,"to":"mars"}"#)
        .await;
    assert_eq!(a.expect_error(ErrorCode::UnknownType).await, Some(42));
    a.send_text(r#"{"id":43}"#).await;
    assert_eq!(a.expect_error(ErrorCode::MissingType).await, Some(43));
    a.send_text(r#"{"type":"room_join","id":44}"#).await;
    assert_eq!(a.expect_error(ErrorCode::InvalidMessage).await, Some(44));
    a.assert_served().await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn binary_frames_are_invalid_and_the_connection_stays() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut a = Client::login(&server.url(), &key(1), None).await;
    a.ws.send(Message::binary(b"{\"type\":\"room_create\"}".to_vec()))
        .await
        .expect("sending a binary frame");
    assert_eq!(a.expect_error(ErrorCode::InvalidMessage).await, None);
    a.assert_served().await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn requests_before_auth_are_not_authenticated() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut client = Client::connect(&server.url()).await;
    client
        .send(
            Some(9),
            ClientMessage::RoomCreate {
                max_participants: None,
                sfu: false,
            },
        )
        .await;
    assert_eq!(
        client.expect_error(ErrorCode::NotAuthenticated).await,
        Some(9)
    );
    client
        .send(
            Some(10),
            ClientMessage::MailboxSend {
                to: identity_of(&key(200)),
                envelope: b"sneaky".to_vec().into(),
            },
        )
        .await;
    assert_eq!(
        client.expect_error(ErrorCode::NotAuthenticated).await,
        Some(10)
    );
    // Nothing was queued for the bystander, and the client may still authenticate.
    client.authenticate(&key(1), None).await;
    client.assert_served().await;
    bystander.assert_served().await;
    bystander.expect_silence(Duration::from_millis(100)).await;
}

/// A 70 KiB frame against the default 64 KiB limit: the `message_too_large` error, then
/// close 1009. The server stops reading at the frame header, so it drops the socket with
/// the rest of the frame unread and the kernel resets the connection; the error and close
/// frame still arrive because the server sends without Nagle delay (TCP_NODELAY).
#[tokio::test]
async fn oversized_frame_closes_1009() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut a = Client::login(&server.url(), &key(1), None).await;
    assert_eq!(a.limits.max_message_bytes, 64 * 1024);
    let padding = "x".repeat(70 * 1024);
    let text = format!(r#"{{"type":"room_create","id":1,"pad":"{padding}"}}"#);
    a.send_text(&text).await;
    let mut saw_error = false;
    let close = loop {
        match a.next_event().await {
            Event::Frame(frame) => {
                assert!(!saw_error, "only one frame before the close: {frame:?}");
                let ServerMessage::Error { code, .. } = frame.message else {
                    panic!("the oversized frame must not be served: {frame:?}");
                };
                assert_eq!(code, ErrorCode::MessageTooLarge);
                saw_error = true;
            }
            Event::Close(close) => break close,
            Event::Ended(why) => panic!("the connection ended without a close frame: {why:?}"),
        }
    };
    // The rest of the oversized frame is never read, so the end may be a reset.
    a.expect_end().await;
    assert!(
        saw_error,
        "the close is preceded by a message_too_large error"
    );
    assert_eq!(
        close,
        Some((close::MESSAGE_TOO_BIG, "message_too_large".to_owned()))
    );
    bystander.assert_served().await;
}

/// Just under the limit is fine (the limit is on the frame, not a lower hidden one).
#[tokio::test]
async fn frame_just_under_the_limit_is_served() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut a = Client::login(&server.url(), &key(1), None).await;
    let prefix = r#"{"type":"room_create","id":1,"pad":""#;
    let padding = "x".repeat(64 * 1024 - prefix.len() - 2);
    let text = format!("{prefix}{padding}\"}}");
    assert_eq!(text.len(), 64 * 1024);
    a.send_text(&text).await;
    let reply = a.recv().await;
    assert!(
        matches!(reply.message, ServerMessage::RoomCreated { .. }),
        "{reply:?}"
    );
    bystander.assert_served().await;
}

/// 1,000 requests as fast as possible: about the burst is served, then `rate_limited`,
/// then the strikes run out and the server closes with 1008 `abusive`. Counts depend on
/// timing (the buckets refill while the server works), so only the shape is asserted.
#[tokio::test]
async fn a_burst_is_served_then_rate_limited_then_closed_as_abusive() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let mut flooder = Client::login(&server.url(), &key(1), None).await;
    let burst = flooder.limits.rate_burst;
    assert_eq!(burst, 100);

    let frame = r#"{"type":"key_package_count","id":1}"#;
    for _ in 0..1000 {
        // The server may close (and reset) the connection before the flood is written.
        if flooder.ws.feed(Message::text(frame)).await.is_err() {
            break;
        }
    }
    let _ = flooder.ws.flush().await;

    let mut served = 0_u32;
    let mut rate_limited = 0_u32;
    let mut last_error = None;
    let close = loop {
        match flooder.next_event().await {
            Event::Frame(reply) => match reply.message {
                ServerMessage::KeyPackagesStored { .. } => {
                    assert_eq!(reply.id, Some(1));
                    served += 1;
                }
                ServerMessage::Error { code, .. } => {
                    assert!(
                        last_error != Some(ErrorCode::Abusive),
                        "nothing after the abusive error"
                    );
                    if code == ErrorCode::RateLimited {
                        // The burst allowance is used up before the first drop.
                        if rate_limited == 0 {
                            assert!(served >= burst - 1, "limited after {served} served");
                        }
                        rate_limited += 1;
                    } else {
                        assert_eq!(code, ErrorCode::Abusive);
                    }
                    last_error = Some(code);
                }
                other => panic!("unexpected reply {other:?}"),
            },
            Event::Close(close) => break close,
            Event::Ended(why) => panic!(
                "ended without a close frame after {served} served, {rate_limited} limited: {why:?}"
            ),
        }
    };
    flooder.expect_end().await;
    // The auth message took one token of the burst.
    assert!(served >= burst - 1, "{served} served");
    assert!(served < 1000, "the flood was not all served");
    assert!(rate_limited >= 1, "{rate_limited} rate_limited");
    assert_eq!(last_error, Some(ErrorCode::Abusive));
    assert_eq!(close, Some((close::POLICY_VIOLATION, "abusive".to_owned())));
    bystander.assert_served().await;
}

#[tokio::test]
async fn a_client_that_never_authenticates_times_out_4003() {
    let (server, mut bystander) = server_with_bystander(|c| {
        c.auth_timeout = Duration::from_millis(300);
    })
    .await;
    let mut idle = Client::connect(&server.url()).await;
    idle.expect_closed_with(ErrorCode::AuthTimeout).await;
    // The bystander authenticated in time and is not affected by the auth timeout.
    bystander.assert_served().await;
}

#[tokio::test]
async fn upgrades_above_max_connections_get_503() {
    let (server, mut bystander) = server_with_bystander(|c| c.max_connections = 2).await;
    let second = Client::login(&server.url(), &key(1), None).await;

    let refused = tokio_tungstenite::connect_async(server.url()).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the third upgrade must be refused with HTTP 503, got {refused:?}");
    };
    assert_eq!(response.status().as_u16(), 503);
    if let Some(body) = response.body() {
        let body = String::from_utf8_lossy(body);
        assert!(body.starts_with("server_full"), "body: {body}");
    }
    let (status, metrics) = http_get(server.addr(), "/metrics").await;
    assert_eq!(status, 200, "plain HTTP is not counted as a connection");
    assert!(
        metrics.contains(r#"sotto_signaling_connections_refused_total{reason="server_full"} 1"#),
        "{metrics}"
    );
    bystander.assert_served().await;

    // Once a connection is gone its slot is free again.
    second.close().await;
    let mut third = Client::login(&server.url(), &key(2), None).await;
    third.assert_served().await;
    bystander.assert_served().await;
}

#[tokio::test]
async fn same_identity_again_replaces_the_old_session_4005() {
    let (server, mut bystander) = server_with_bystander(|_| {}).await;
    let alice = key(1);
    let mut old = Client::login(&server.url(), &alice, Some("Alice")).await;
    let mut new = Client::login(&server.url(), &alice, Some("Alice")).await;
    old.expect_closed_with(ErrorCode::SessionReplaced).await;
    new.assert_served().await;

    // Relays for Alice now reach the new connection.
    let reply = bystander
        .request(ClientMessage::Hangup(sotto_signaling::protocol::Outgoing {
            to: identity_of(&alice),
            body: sotto_signaling::protocol::Hangup {
                call_id: "c-1".into(),
                reason: sotto_signaling::protocol::HangupReason::Normal,
            },
        }))
        .await;
    assert_eq!(reply.message, ServerMessage::Relayed {});
    let relayed = new.recv().await;
    let ServerMessage::Hangup(hangup) = relayed.message else {
        panic!("expected the hangup, got {relayed:?}");
    };
    assert_eq!(hangup.from, identity_of(&key(200)));
    bystander.assert_served().await;
}

/// A client that stops reading cannot hold its connection task forever: once one frame
/// to it cannot be written within `send_timeout`, the server drops it.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let (server, mut bystander) = server_with_bystander(|c| {
        c.max_message_bytes = 1 << 20;
        c.rate_burst = 1000;
        c.send_timeout = Duration::from_millis(300);
    })
    .await;
    let stalled_key = key(77);
    // Logs in, then never reads again: everything the server sends piles up.
    let stalled = Client::login(&server.url(), &stalled_key, None).await;
    let mut sender = Client::login(&server.url(), &key(78), None).await;
    // 120 envelopes of 700 kB (84 MB) are far more than loopback socket buffers hold,
    // and the mailbox pump pushes up to 128 of them without waiting for an ack.
    for i in 0..120u8 {
        let reply = sender
            .request(ClientMessage::MailboxSend {
                to: identity_of(&stalled_key),
                envelope: vec![i; 700_000].into(),
            })
            .await;
        assert!(
            matches!(reply.message, ServerMessage::MailboxAccepted { .. }),
            "{reply:?}"
        );
    }
    // Wait (failure guard only) until only the bystander and the sender are left.
    let mut authenticated = None;
    for _ in 0..200 {
        let (_, text) = http_get(server.addr(), "/metrics").await;
        authenticated = common::metric(&text, "sotto_signaling_authenticated_connections");
        if authenticated == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        authenticated,
        Some(2.0),
        "the stalled client was never dropped"
    );
    drop(stalled);
    bystander.assert_served().await;
}
