//! The mailbox survives a crash: envelopes accepted by the real `sotto-signaling` binary
//! are delivered, exactly once per connection and in order, after the process is killed
//! with SIGKILL and started again on the same data directory.

#![cfg(feature = "server")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Client, TIMEOUT, http_get, identity_of, key, metric};
use sotto_signaling::protocol::{ClientMessage, ServerMessage};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const ENVELOPES: u64 = 100;

/// The binary, running on an ephemeral port.
struct Binary {
    child: Child,
    addr: SocketAddr,
    url: String,
    // Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Binary {
    async fn start(data_dir: &Path) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-signaling"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            // The sender pipelines 100 sends after its auth: above the default burst of
            // 100. Rate limiting is not what this test is about.
            .arg("--rate-burst")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning sotto-signaling");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, stdout.read_line(&mut line))
            .await
            .expect("timed out waiting for the listening line")
            .expect("reading the server's stdout");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        let addr = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.strip_suffix("/v1/ws"))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected URL {url:?}"));
        Binary {
            child,
            addr,
            url,
            _stdout: stdout,
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap: no chance to clean up.
    async fn crash(mut self) {
        tokio::time::timeout(TIMEOUT, self.child.kill())
            .await
            .expect("timed out killing the server")
            .expect("killing the server");
    }

    async fn mailbox_depth_metric(&self) -> f64 {
        let (status, text) = http_get(self.addr, "/metrics").await;
        assert_eq!(status, 200);
        metric(&text, "sotto_signaling_mailbox_depth")
            .unwrap_or_else(|| panic!("no mailbox depth in {text}"))
    }
}

fn envelope_bytes(i: u64) -> Vec<u8> {
    format!("env-{i}").into_bytes()
}

#[tokio::test]
async fn accepted_envelopes_survive_sigkill_and_are_delivered_exactly_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let sender_key = key(1);
    let bob_key = key(2);
    let bob = identity_of(&bob_key);

    // 1. Bob is offline; the sender queues 100 envelopes for him.
    let server = Binary::start(dir.path()).await;
    let mut sender = Client::login(&server.url, &sender_key, None).await;
    for i in 0..ENVELOPES {
        sender
            .send(
                Some(i),
                ClientMessage::MailboxSend {
                    to: bob,
                    envelope: envelope_bytes(i).into(),
                },
            )
            .await;
    }
    let mut accepted = Vec::new();
    for i in 0..ENVELOPES {
        let reply = sender.recv().await;
        assert_eq!(reply.id, Some(i), "replies come in request order");
        let ServerMessage::MailboxAccepted { message_id } = reply.message else {
            panic!("envelope {i} was not accepted: {reply:?}");
        };
        accepted.push(message_id);
    }
    assert!(
        accepted.windows(2).all(|w| w[0] < w[1]),
        "message ids increase: {accepted:?}"
    );
    assert_eq!(server.mailbox_depth_metric().await, 100.0);

    // 2. Crash and restart on the same data directory.
    server.crash().await;
    let server = Binary::start(dir.path()).await;
    assert_eq!(
        server.mailbox_depth_metric().await,
        100.0,
        "the gauge starts from the store"
    );

    // 3. Bob connects: everything is there, in order, once.
    let mut bob_conn = Client::login(&server.url, &bob_key, None).await;
    assert_eq!(bob_conn.mailbox_depth, Some(ENVELOPES));
    let mut delivered = Vec::new();
    for i in 0..ENVELOPES {
        let frame = bob_conn.recv().await;
        assert_eq!(frame.id, None, "envelopes are pushed");
        let ServerMessage::Envelope {
            message_id,
            envelope,
        } = frame.message
        else {
            panic!("expected envelope {i}, got {frame:?}");
        };
        assert_eq!(envelope.as_bytes(), envelope_bytes(i), "envelope {i}");
        delivered.push(message_id);
    }
    assert_eq!(delivered, accepted, "delivered under the ids given at send");
    bob_conn.expect_silence(Duration::from_millis(300)).await;

    // 4. Acknowledge everything: all 100 are deleted, and nothing more is sent.
    let last = *delivered.last().expect("100 envelopes");
    let reply = bob_conn
        .request(ClientMessage::MailboxAck { up_to: last })
        .await;
    assert_eq!(
        reply.message,
        ServerMessage::MailboxAcked {
            up_to: last,
            removed: ENVELOPES
        }
    );
    assert_eq!(server.mailbox_depth_metric().await, 0.0);
    bob_conn.expect_silence(Duration::from_millis(300)).await;

    // 5. A new connection finds an empty mailbox.
    bob_conn.close().await;
    let mut bob_again = Client::login(&server.url, &bob_key, None).await;
    assert_eq!(bob_again.mailbox_depth, Some(0));
    bob_again.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(server.mailbox_depth_metric().await, 0.0);

    // The acknowledgement was durable too.
    bob_again.close().await;
    server.crash().await;
    let server = Binary::start(dir.path()).await;
    assert_eq!(server.mailbox_depth_metric().await, 0.0);
    let bob_last = Client::login(&server.url, &bob_key, None).await;
    assert_eq!(bob_last.mailbox_depth, Some(0));
    server.crash().await;
}

/// Unacknowledged envelopes are delivered again on the next connection (clients
/// deduplicate by `message_id`), and an acknowledgement of part of them keeps the rest.
#[tokio::test]
async fn unacknowledged_envelopes_are_redelivered_after_a_crash() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let bob_key = key(2);
    let bob = identity_of(&bob_key);

    let server = Binary::start(dir.path()).await;
    let mut sender = Client::login(&server.url, &key(1), None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = sender
            .request(ClientMessage::MailboxSend {
                to: bob,
                envelope: envelope_bytes(i).into(),
            })
            .await;
        let ServerMessage::MailboxAccepted { message_id } = reply.message else {
            panic!("not accepted: {reply:?}");
        };
        ids.push(message_id);
    }
    // Bob sees all three, acknowledges only the first, then the server crashes.
    let mut bob_conn = Client::login(&server.url, &bob_key, None).await;
    assert_eq!(bob_conn.mailbox_depth, Some(3));
    for id in &ids {
        let frame = bob_conn.recv().await;
        assert!(
            matches!(frame.message, ServerMessage::Envelope { message_id, .. } if message_id == *id),
            "{frame:?}"
        );
    }
    let reply = bob_conn
        .request(ClientMessage::MailboxAck { up_to: ids[0] })
        .await;
    assert_eq!(
        reply.message,
        ServerMessage::MailboxAcked {
            up_to: ids[0],
            removed: 1
        }
    );
    server.crash().await;

    let server = Binary::start(dir.path()).await;
    let mut bob_conn = Client::login(&server.url, &bob_key, None).await;
    assert_eq!(bob_conn.mailbox_depth, Some(2));
    for (i, id) in ids.iter().enumerate().skip(1) {
        let frame = bob_conn.recv().await;
        let ServerMessage::Envelope {
            message_id,
            envelope,
        } = frame.message
        else {
            panic!("expected an envelope, got {frame:?}");
        };
        assert_eq!(message_id, *id);
        assert_eq!(envelope.as_bytes(), envelope_bytes(i as u64));
    }
    bob_conn.expect_silence(Duration::from_millis(300)).await;
    server.crash().await;
}

/// A graceful stop (SIGTERM): every connected client gets `shutting_down` and close 1001
/// before the process exits with success, and accepted envelopes are still there after.
#[tokio::test]
async fn sigterm_closes_connections_with_1001_and_keeps_the_mailbox() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let bob_key = key(2);
    let mut server = Binary::start(dir.path()).await;
    let mut sender = Client::login(&server.url, &key(1), None).await;
    let mut idle = Client::login(&server.url, &key(3), None).await;
    let reply = sender
        .request(ClientMessage::MailboxSend {
            to: identity_of(&bob_key),
            envelope: envelope_bytes(0).into(),
        })
        .await;
    let ServerMessage::MailboxAccepted { message_id } = reply.message else {
        panic!("not accepted: {reply:?}");
    };

    let pid = server.child.id().expect("the server is running");
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await
        .expect("running kill");
    assert!(kill.success());
    for client in [&mut sender, &mut idle] {
        client
            .expect_closed_with(sotto_signaling::protocol::ErrorCode::ShuttingDown)
            .await;
    }
    let status = tokio::time::timeout(TIMEOUT, server.child.wait())
        .await
        .expect("timed out waiting for the server to exit")
        .expect("waiting for the server");
    assert!(status.success(), "{status:?}");

    let server = Binary::start(dir.path()).await;
    let mut bob_conn = Client::login(&server.url, &bob_key, None).await;
    assert_eq!(bob_conn.mailbox_depth, Some(1));
    let frame = bob_conn.recv().await;
    assert_eq!(
        frame.message,
        ServerMessage::Envelope {
            message_id,
            envelope: envelope_bytes(0).into(),
        }
    );
    server.crash().await;
}
