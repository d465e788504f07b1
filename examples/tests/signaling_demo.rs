//! Runs the README's demo and checks what it reports.
#![allow(clippy::unwrap_used)]

#[tokio::test]
async fn signaling_demo_meets_and_exchanges_messages() {
    let summary = sotto_examples::signaling_demo::run().await.unwrap();
    assert_eq!(summary["room_members"], 2);
    assert_eq!(summary["alice_saw_bob_join_as"], "Bob");
    assert_eq!(summary["bob_received"], "Hello Bob, this is Alice.");
    assert_eq!(summary["alice_received"], "Hi Alice, Bob here.");
    assert_ne!(summary["alice"]["id"], summary["bob"]["id"]);
}
