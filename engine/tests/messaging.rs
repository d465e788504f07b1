//! Encrypted messaging through a real signaling server on a loopback port: key packages
//! from the directory, commits ordered by `group_commit`, welcomes and messages through
//! the mailbox, each member with its own data dir.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sotto_engine::messaging::messenger::Messenger;
use sotto_engine::messaging::{Body, Received, history};
use sotto_engine::{ClientConfig, Identity};
use sotto_signaling::server::{Config, RunningServer, start};

/// How long a sync waits for more envelopes once the backlog is in (a guard, not a speed
/// assertion).
const QUIET: Duration = Duration::from_millis(500);

async fn member(server: &RunningServer, dir: &Path, name: &str) -> Messenger {
    let identity = Arc::new(Identity::generate(Some(name.into())).unwrap());
    Messenger::connect(ClientConfig::new(server.ws_url()), identity, dir)
        .await
        .unwrap()
}

fn texts(deliveries: &[Result<Received, sotto_engine::messaging::ReceiveError>]) -> Vec<String> {
    deliveries
        .iter()
        .filter_map(|d| match d {
            Ok(Received::Message { content, .. }) => match &content.body {
                Body::Text { text } => Some(text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_room_of_three_through_the_server_and_the_server_keeps_no_plaintext() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        server_dir.path(),
    ))
    .await
    .unwrap();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = member(&server, dirs[0].path(), "alice").await;
    let mut bob = member(&server, dirs[1].path(), "bob").await;
    let mut carol = member(&server, dirs[2].path(), "carol").await;
    let (bob_id, carol_id) = (bob.core().me(), carol.core().me());

    let room = alice
        .create_room(Some("weekend plans"), &[bob_id, carol_id])
        .await
        .unwrap();
    const FIRST: &str = "the secret meeting point is the old lighthouse";
    alice
        .send(&room, Body::Text { text: FIRST.into() })
        .await
        .unwrap();
    for m in [&mut bob, &mut carol] {
        let got = m.sync(QUIET).await.unwrap();
        assert!(
            matches!(got.first(), Some(Ok(Received::Joined { .. }))),
            "a welcome first: {got:?}"
        );
        assert_eq!(texts(&got), vec![FIRST.to_owned()]);
    }

    // Bob and Carol answer; Alice removes Carol; what follows, Carol cannot read.
    bob.send(
        &room,
        Body::Text {
            text: "bob here".into(),
        },
    )
    .await
    .unwrap();
    carol
        .send(
            &room,
            Body::Text {
                text: "carol here".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        texts(&alice.sync(QUIET).await.unwrap()),
        vec!["bob here", "carol here"]
    );
    alice.remove(&room, &[carol_id]).await.unwrap();
    const AFTER: &str = "now that carol is out: the lighthouse is off";
    let after = alice
        .send(&room, Body::Text { text: AFTER.into() })
        .await
        .unwrap();
    assert!(!after.to.contains(&carol_id), "carol is not sent it");
    let bob_got = bob.sync(QUIET).await.unwrap();
    assert!(texts(&bob_got).contains(&AFTER.to_owned()), "{bob_got:?}");
    let carol_got = carol.sync(QUIET).await.unwrap();
    assert!(!texts(&carol_got).contains(&AFTER.to_owned()));
    assert!(
        carol_got.iter().any(
            |d| matches!(d, Ok(Received::Membership { removed, .. }) if removed.contains(&carol_id))
        ),
        "carol learns she was removed: {carol_got:?}"
    );
    // Even handed the ciphertext (say, by a curious server), Carol cannot read it.
    let refused = carol.core().receive(&after.bytes).unwrap_err();
    assert!(
        refused.to_string().contains("no longer a member"),
        "{refused}"
    );

    // Dave joins later: he reads what comes next, not what came before.
    let mut dave = member(&server, dirs[3].path(), "dave").await;
    alice.add(&room, &[dave.core().me()]).await.unwrap();
    // Bob learns of Dave from the commit in his mailbox, then greets him.
    bob.sync(QUIET).await.unwrap();
    bob.send(
        &room,
        Body::Text {
            text: "hi dave".into(),
        },
    )
    .await
    .unwrap();
    let dave_got = dave.sync(QUIET).await.unwrap();
    assert_eq!(texts(&dave_got), vec!["hi dave"]);
    let dave_history = history::recent(dave.core().conn(), &room, 100).unwrap();
    assert!(
        dave_history
            .iter()
            .all(|e| e.body != FIRST && e.body != AFTER)
    );

    // Bob and Alice commit at once: one loses the race, catches up and retries.
    let erin = member(&server, &dirs[0].path().join("erin"), "erin").await;
    let frank = member(&server, &dirs[0].path().join("frank"), "frank").await;
    let (erin_id, frank_id) = (erin.core().me(), frank.core().me());
    bob.sync(QUIET).await.unwrap();
    let (erins, franks) = ([erin_id], [frank_id]);
    let (a, b) = tokio::join!(alice.add(&room, &erins), bob.add(&room, &franks));
    a.unwrap();
    b.unwrap();
    for m in [&mut alice, &mut bob, &mut dave] {
        m.sync(QUIET).await.unwrap();
    }
    let members = alice.core().members(&room).unwrap();
    assert_eq!(members.len(), 5, "alice, bob, dave, erin, frank");
    assert_eq!(members, bob.core().members(&room).unwrap());

    // The server's data dir holds none of what was said or the room's title.
    drop((alice, bob, carol, dave, erin, frank));
    server.shutdown().await.unwrap();
    for (path, bytes) in all_bytes(server_dir.path()) {
        for needle in [
            FIRST,
            AFTER,
            "bob here",
            "hi dave",
            "weekend plans",
            "lighthouse",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{path} contains {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn stale_keys_are_refreshed_by_an_update_commit() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        server_dir.path(),
    ))
    .await
    .unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let mut alice = member(&server, &dirs.path().join("a"), "alice").await;
    let mut bob = member(&server, &dirs.path().join("b"), "bob").await;
    let group = alice
        .create_room(Some("Keys"), &[bob.core().me()])
        .await
        .unwrap();
    bob.sync(QUIET).await.unwrap();
    let before = bob.core().media_epoch(&group).unwrap().epoch;

    // Nothing is an hour old yet; Alice just committed (the creation), Bob never has.
    assert_eq!(
        alice.refresh_keys(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(bob.core().stale(0).unwrap(), vec![group.clone()]);
    assert_eq!(bob.refresh_keys(Duration::ZERO).await.unwrap(), 1);
    assert!(bob.core().stale(3_600_000).unwrap().is_empty());

    // Alice follows Bob's update into the new epoch; the conversation goes on.
    alice.sync(QUIET).await.unwrap();
    let after = alice.core().media_epoch(&group).unwrap().epoch;
    assert_eq!(after, before + 1);
    assert_eq!(bob.core().media_epoch(&group).unwrap().epoch, after);
    assert_eq!(alice.core().members(&group).unwrap().len(), 2);
    alice
        .send(
            &group,
            Body::Text {
                text: "after the update".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        texts(&bob.sync(QUIET).await.unwrap()),
        vec!["after the update"]
    );
}
