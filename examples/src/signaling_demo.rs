//! The foundation demo: a signaling server in this process on a free loopback port (its
//! SQLite store in a temporary directory), and two clients, Alice and Bob, that
//! authenticate with fresh identities, meet in a room, see each other's presence, and
//! exchange a message each way through the mailbox.
//!
//! The envelopes here are plain bytes: the server treats every envelope as opaque, and
//! end-to-end encryption (MLS) arrives with a later issue. Later issues turn this demo
//! into a real voice call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use sotto_engine::{Event, Identity, SignalingClient};
use sotto_signaling::protocol::PresenceState;
use sotto_signaling::server::{Config, start};

/// Longest wait for any one event before the demo gives up.
const WAIT: Duration = Duration::from_secs(10);

/// Run the demo; returns the one-line JSON summary it prints.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let data_dir = tempfile::tempdir().context("creating a temporary data dir")?;
    let server = start(Config::new("127.0.0.1:0".parse()?, data_dir.path()))
        .await
        .context("starting the signaling server")?;
    let config = sotto_engine::ClientConfig::new(server.ws_url());

    let alice_id = Arc::new(Identity::generate(Some("Alice".into()))?);
    let bob_id = Arc::new(Identity::generate(Some("Bob".into()))?);
    let mut alice = SignalingClient::connect(config.clone(), alice_id.clone()).await?;
    let mut bob = SignalingClient::connect(config, bob_id.clone()).await?;

    let invite = alice.create_room(Some(2)).await?;
    let members = bob.join_room(&invite.room_id, &invite.invite_token).await?;
    let presence = wait_for(&mut alice, |e| {
        matches!(e, Event::Presence { participant, state: PresenceState::Joined, .. }
            if participant.identity == bob_id.public())
    })
    .await?;
    let Event::Presence { participant, .. } = presence else {
        bail!("expected a presence event");
    };

    let started = Instant::now();
    let hello = "Hello Bob, this is Alice.";
    alice
        .mailbox_send(bob_id.public(), hello.as_bytes().to_vec())
        .await?;
    let (id, got) = envelope(&mut bob).await?;
    bob.mailbox_ack(id).await?;
    let reply = "Hi Alice, Bob here.";
    bob.mailbox_send(alice_id.public(), reply.as_bytes().to_vec())
        .await?;
    let (id, got_reply) = envelope(&mut alice).await?;
    alice.mailbox_ack(id).await?;
    let round_trip = started.elapsed();

    bob.leave_room(&invite.room_id).await?;
    alice.close().await;
    bob.close().await;
    server.shutdown().await?;

    Ok(json!({
        "demo": "signaling",
        "alice": {"id": alice_id.public().to_string(), "fingerprint": alice_id.fingerprint()},
        "bob": {"id": bob_id.public().to_string(), "fingerprint": bob_id.fingerprint()},
        "room_members": members.len(),
        "alice_saw_bob_join_as": participant.display_name,
        "bob_received": String::from_utf8_lossy(&got),
        "alice_received": String::from_utf8_lossy(&got_reply),
        "message_round_trip_ms": (round_trip.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
    }))
}

async fn wait_for(
    client: &mut SignalingClient,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<Event> {
    loop {
        match client.next_event_within(WAIT).await {
            Some(event) if wanted(&event) => return Ok(event),
            Some(_) => {}
            None => bail!("no expected event within {WAIT:?}"),
        }
    }
}

async fn envelope(client: &mut SignalingClient) -> anyhow::Result<(u64, Vec<u8>)> {
    match wait_for(client, |e| matches!(e, Event::Envelope { .. })).await? {
        Event::Envelope {
            message_id,
            envelope,
        } => Ok((message_id, envelope)),
        _ => bail!("expected an envelope"),
    }
}
