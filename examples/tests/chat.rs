//! Runs the chat example and checks what each member could read.
#![allow(clippy::unwrap_used)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_example_reads_as_designed() {
    let s = sotto_examples::chat_demo::run().await.unwrap();
    let strings = |key: &str| -> Vec<String> {
        s[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let before = vec![
        "Tickets are booked.".to_owned(),
        "file:itinerary.txt (380000 bytes)".to_owned(),
    ];
    assert_eq!(strings("bob_before_removal"), before);
    assert_eq!(strings("carol_before_removal"), before);
    assert_eq!(
        strings("bob_after_removal"),
        vec!["Carol is out; new meeting point: the pier."]
    );
    assert!(strings("carol_after_removal").is_empty());
    assert_eq!(s["group_members_at_end"], 2);
    assert!(strings("plaintext_found_on_server").is_empty(), "{s}");
}
