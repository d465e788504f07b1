//! The conversation core without a network: three identities pass MLS bytes by hand, in
//! the order the signaling server's mailbox would deliver them.

use std::sync::Arc;

use sotto_signaling::protocol::IdentityKey;

use super::history;
use super::mls::{CommitOut, MlsError};
use super::{Body, Conversations, GroupId, ReceiveError, Received};
use crate::Identity;

fn person(name: &str) -> Conversations {
    let identity = Identity::generate(Some(name.into())).expect("identity");
    Conversations::in_memory(Arc::new(identity)).expect("store")
}

fn key_package(of: &Conversations) -> (IdentityKey, Vec<u8>) {
    let (mut regular, _last) = of.key_packages(1).expect("key packages");
    (of.me(), regular.remove(0))
}

fn text(s: &str) -> Body {
    Body::Text { text: s.into() }
}

fn read_text(who: &Conversations, bytes: &[u8]) -> Result<String, ReceiveError> {
    match who.receive(bytes)? {
        Received::Message { content, .. } => match content.body {
            Body::Text { text } => Ok(text),
            other => panic!("expected text, got {other:?}"),
        },
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Alice's room with Bob and Carol, everyone joined.
fn room_of_three() -> (Conversations, Conversations, Conversations, GroupId) {
    let (alice, bob, carol) = (person("alice"), person("bob"), person("carol"));
    let room = alice.create_room(Some("plans")).expect("room");
    let commit = alice
        .add(&room, &[key_package(&bob), key_package(&carol)])
        .expect("add");
    assert!(
        commit.to.is_empty(),
        "alice was alone: nobody gets the commit"
    );
    assert_eq!(commit.welcome_to, vec![bob.me(), carol.me()]);
    alice.commit_accepted(&commit).expect("merge");
    let welcome = commit.welcome.as_deref().expect("a welcome");
    for member in [&bob, &carol] {
        match member.receive(welcome).expect("join") {
            Received::Joined { group, by, members } => {
                assert_eq!(group, room);
                assert_eq!(by, alice.me());
                assert_eq!(members.len(), 3);
            }
            other => panic!("expected a join, got {other:?}"),
        }
    }
    (alice, bob, carol, room)
}

fn deliver_commit(commit: &CommitOut, to: &[&Conversations]) {
    for member in to {
        assert!(
            matches!(
                member.receive(&commit.commit).expect("commit"),
                Received::Membership { .. }
            ),
            "a commit changes membership"
        );
    }
}

#[test]
fn three_members_read_each_other_and_a_removed_member_reads_nothing_after() {
    let (alice, bob, carol, room) = room_of_three();

    let hello = alice.send(&room, text("hello both")).expect("send");
    assert_eq!(hello.to.len(), 2);
    assert_eq!(
        read_text(&bob, &hello.bytes).expect("bob reads"),
        "hello both"
    );
    assert_eq!(
        read_text(&carol, &hello.bytes).expect("carol reads"),
        "hello both"
    );
    let reply = carol.send(&room, text("hi alice")).expect("send");
    assert_eq!(
        read_text(&alice, &reply.bytes).expect("alice reads"),
        "hi alice"
    );
    assert_eq!(
        read_text(&bob, &reply.bytes).expect("bob reads"),
        "hi alice"
    );

    // Alice removes Carol; Bob and Carol get the commit.
    let removal = alice.remove(&room, &[carol.me()]).expect("remove");
    assert_eq!(removal.members, vec![alice.me(), bob.me()]);
    alice.commit_accepted(&removal).expect("merge");
    deliver_commit(&removal, &[&bob, &carol]);

    let secret = alice.send(&room, text("carol is gone")).expect("send");
    assert_eq!(secret.to, vec![bob.me()]);
    assert_eq!(
        read_text(&bob, &secret.bytes).expect("bob reads"),
        "carol is gone"
    );
    let err = carol
        .receive(&secret.bytes)
        .expect_err("carol must not read it");
    assert!(
        matches!(err, ReceiveError::Mls(MlsError::NotAMember)),
        "{err}"
    );
    assert!(
        carol.send(&room, text("still here?")).is_err(),
        "carol cannot send"
    );

    // Dave joins later and cannot read what came before.
    let dave = person("dave");
    let add = alice.add(&room, &[key_package(&dave)]).expect("add dave");
    alice.commit_accepted(&add).expect("merge");
    deliver_commit(&add, &[&bob]);
    dave.receive(add.welcome.as_deref().expect("welcome"))
        .expect("dave joins");
    for old in [&hello.bytes, &reply.bytes, &secret.bytes] {
        assert!(
            dave.receive(old).is_err(),
            "dave read a message from before he joined"
        );
    }
    let now = bob.send(&room, text("welcome dave")).expect("send");
    assert_eq!(
        read_text(&dave, &now.bytes).expect("dave reads"),
        "welcome dave"
    );
    assert_eq!(
        read_text(&alice, &now.bytes).expect("alice reads"),
        "welcome dave"
    );

    let carol_history = history::recent(carol.conn(), &room, 100).expect("history");
    assert!(
        carol_history
            .iter()
            .all(|e| e.body != "carol is gone" && e.body != "welcome dave")
    );
}

#[test]
fn tampered_and_replayed_messages_are_refused_and_change_nothing() {
    let (alice, bob, _carol, room) = room_of_three();
    let message = alice.send(&room, text("exactly this")).expect("send");
    for bit in [
        0usize,
        40,
        message.bytes.len() * 8 / 2,
        message.bytes.len() * 8 - 1,
    ] {
        let mut tampered = message.bytes.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(
            bob.receive(&tampered).is_err(),
            "a flipped bit {bit} was accepted"
        );
    }
    let stored = history::recent(bob.conn(), &room, 100).expect("history");
    assert!(
        stored.iter().all(|e| e.kind == "system"),
        "nothing but system lines"
    );
    // The untouched message still decrypts: the failures moved no MLS state.
    assert_eq!(
        read_text(&bob, &message.bytes).expect("bob reads"),
        "exactly this"
    );
    let again = bob.receive(&message.bytes).expect_err("a replay");
    assert!(matches!(again, ReceiveError::Replayed), "{again}");
    let texts = history::recent(bob.conn(), &room, 100).expect("history");
    assert_eq!(texts.iter().filter(|e| e.kind == "text").count(), 1);
}

#[test]
fn only_a_sender_edits_or_deletes_its_messages() {
    let (alice, bob, carol, room) = room_of_three();
    let original = alice.send(&room, text("tpyo")).expect("send");
    for member in [&bob, &carol] {
        read_text(member, &original.bytes).expect("read");
    }
    let edit = alice
        .send(
            &room,
            Body::Edit {
                target: original.content.id,
                text: "typo".into(),
            },
        )
        .expect("edit");
    bob.receive(&edit.bytes).expect("bob applies the edit");
    let entry = history::recent(bob.conn(), &room, 10).expect("history");
    assert!(entry.iter().any(|e| e.body == "typo" && e.edited));

    // Carol, a member, tries to delete Alice's message: refused, Bob's history intact.
    let forged = carol
        .send(
            &room,
            Body::Delete {
                target: original.content.id,
            },
        )
        .expect_err("carol may not delete alice's message locally either");
    assert!(
        forged.to_string().contains("only a message's sender"),
        "{forged}"
    );
}

#[test]
fn a_direct_conversation_starts_with_the_peers_key_package() {
    let (alice, bob) = (person("alice"), person("bob"));
    let start = alice
        .start_direct(&bob.me(), &key_package(&bob).1)
        .expect("start");
    let group = GroupId(start.group_id.clone());
    assert!(group.is_direct());
    alice.commit_accepted(&start).expect("merge");
    assert_eq!(
        alice.direct_with(&bob.me()).expect("query"),
        Some(group.clone())
    );
    bob.receive(start.welcome.as_deref().expect("welcome"))
        .expect("join");
    assert_eq!(
        bob.direct_with(&alice.me()).expect("query"),
        Some(group.clone())
    );
    let hi = bob.send(&group, text("hi")).expect("send");
    assert_eq!(read_text(&alice, &hi.bytes).expect("read"), "hi");

    // A key package of someone else is refused for Bob.
    let carol = person("carol");
    let err = alice
        .start_direct(&bob.me(), &key_package(&carol).1)
        .expect_err("mismatch");
    assert!(err.to_string().contains("another identity"), "{err}");
}

#[test]
fn a_commit_that_lost_the_race_is_rebuilt_on_the_new_epoch() {
    let (alice, bob, carol, room) = room_of_three();
    let dave = person("dave");
    let erin = person("erin");
    // Alice and Bob both commit on the same epoch; the server takes Bob's.
    let alices = alice
        .add(&room, &[key_package(&dave)])
        .expect("alice adds dave");
    let bobs = bob
        .add(&room, &[key_package(&erin)])
        .expect("bob adds erin");
    assert_eq!(alices.epoch, bobs.epoch);
    bob.commit_accepted(&bobs).expect("bob merges");
    alice.commit_refused(&alices).expect("alice forgets hers");
    deliver_commit(&bobs, &[&alice, &carol]);
    let retry = alice.add(&room, &[key_package(&dave)]).expect("rebuilt");
    assert_eq!(retry.epoch, bobs.epoch + 1);
    alice.commit_accepted(&retry).expect("merge");
    deliver_commit(&retry, &[&bob, &carol]);
    erin.receive(bobs.welcome.as_deref().expect("welcome"))
        .expect("erin joins");
    deliver_commit(&retry, &[&erin]);
    dave.receive(retry.welcome.as_deref().expect("welcome"))
        .expect("dave joins");
    let all = alice.send(&room, text("five of us")).expect("send");
    for member in [&bob, &carol, &dave, &erin] {
        assert_eq!(read_text(member, &all.bytes).expect("read"), "five of us");
    }
}
