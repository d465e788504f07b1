use super::*;

fn frame(id: Option<u64>, message: ClientMessage) -> ClientFrame {
    ClientFrame { id, message }
}

#[test]
fn client_frames_round_trip_with_type_tag_and_id() {
    let to = IdentityKey([3; 32]);
    let msg = frame(
        Some(9),
        ClientMessage::Offer(Outgoing {
            to,
            body: Offer {
                call_id: "c1".into(),
                sdp: "v=0".into(),
                ice_restart: false,
                e2ee: None,
            },
        }),
    );
    let text = serde_json::to_string(&msg).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["type"], "offer");
    assert_eq!(value["id"], 9);
    assert_eq!(value["to"], to.to_string());
    assert_eq!(parse_client_frame(&text).unwrap(), msg);
}

#[test]
fn type_names_match_the_serialized_tag() {
    let id = IdentityKey([1; 32]);
    let room_id = RoomId("r".into());
    let samples = vec![
        ClientMessage::RoomCreate {
            max_participants: None,
            sfu: false,
        },
        ClientMessage::RoomJoin {
            room_id: room_id.clone(),
            invite_token: InviteToken("t".into()),
        },
        ClientMessage::RoomLeave { room_id },
        ClientMessage::Hangup(Outgoing {
            to: id,
            body: Hangup {
                call_id: "c".into(),
                reason: HangupReason::Busy,
            },
        }),
        ClientMessage::KeyPackageCount {},
        ClientMessage::KeyPackageFetch { identity: id },
        ClientMessage::MailboxSend {
            to: id,
            envelope: Blob(vec![1, 2]),
        },
        ClientMessage::MailboxAck { up_to: 4 },
    ];
    for message in samples {
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(value["type"], message.type_name());
        assert!(ClientMessage::TYPES.contains(&message.type_name()));
    }
}

#[test]
fn parse_classifies_what_is_wrong() {
    let cases = [
        ("{not json", ErrorCode::MalformedJson, None),
        ("[1,2]", ErrorCode::InvalidMessage, None),
        (r#"{"id":3}"#, ErrorCode::MissingType, Some(3)),
        (
            r#"{"id":4,"type":"teleport"}"#,
            ErrorCode::UnknownType,
            Some(4),
        ),
        (
            r#"{"id":5,"type":"room_join","room_id":"x"}"#,
            ErrorCode::InvalidMessage,
            Some(5),
        ),
        (
            r#"{"id":6,"type":"mailbox_send","to":"short","envelope":""}"#,
            ErrorCode::InvalidMessage,
            Some(6),
        ),
        (
            r#"{"id":-1,"type":"room_create"}"#,
            ErrorCode::InvalidMessage,
            None,
        ),
    ];
    for (text, code, id) in cases {
        let err = parse_client_frame(text).unwrap_err();
        assert_eq!((err.code, err.id), (code, id), "{text}: {}", err.message);
        assert!(!err.message.is_empty());
    }
}

#[test]
fn unknown_type_message_is_bounded() {
    let long = "x".repeat(10_000);
    let err = parse_client_frame(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownType);
    assert!(err.message.len() < 200);
}

#[test]
fn auth_payload_is_domain_separated_and_length_prefixed() {
    let a = auth_payload("ab", b"c");
    let b = auth_payload("a", b"bc");
    assert_ne!(a, b);
    assert!(a.starts_with(AUTH_DOMAIN));
    assert_eq!(&a[AUTH_DOMAIN.len()..], &[0, 2, b'a', b'b', b'c']);
}

#[test]
fn display_names_and_call_ids_are_validated() {
    assert!(validate_display_name("Ada Lovelace").is_ok());
    assert!(validate_display_name("tab\tname").is_err());
    assert!(validate_display_name(&"é".repeat(65)).is_err());
    assert!(validate_call_id("call-1").is_ok());
    assert!(validate_call_id("").is_err());
    assert!(validate_call_id("has space").is_err());
    assert!(validate_call_id(&"c".repeat(65)).is_err());
}

/// Every JSON example in PROTOCOL.md parses as the message it claims to be and
/// re-serializes to the same JSON, and every message type has an example.
#[test]
fn protocol_md_examples_are_valid() {
    let doc = include_str!("../../PROTOCOL.md");
    let mut client_types = std::collections::BTreeSet::new();
    let mut server_types = std::collections::BTreeSet::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let side = match line.trim() {
            "```json client" => "client",
            "```json server" => "server",
            _ => continue,
        };
        let block: String = lines
            .by_ref()
            .take_while(|l| l.trim() != "```")
            .collect::<Vec<_>>()
            .join("\n");
        let original: serde_json::Value =
            serde_json::from_str(&block).unwrap_or_else(|e| panic!("{e}: {block}"));
        let kind = original["type"].as_str().unwrap().to_owned();
        let reencoded = if side == "client" {
            client_types.insert(kind);
            let parsed = parse_client_frame(&block).unwrap_or_else(|e| panic!("{e}: {block}"));
            serde_json::to_value(parsed).unwrap()
        } else {
            server_types.insert(kind);
            let parsed: ServerFrame =
                serde_json::from_str(&block).unwrap_or_else(|e| panic!("{e}: {block}"));
            serde_json::to_value(parsed).unwrap()
        };
        assert_eq!(reencoded, original, "example does not round-trip: {block}");
    }
    for kind in ClientMessage::TYPES {
        assert!(
            client_types.contains(*kind),
            "PROTOCOL.md lacks a `{kind}` example"
        );
    }
    for kind in [
        "hello",
        "welcome",
        "room_created",
        "room_joined",
        "room_left",
        "presence",
        "offer",
        "answer",
        "candidate",
        "hangup",
        "restart_request",
        "subscription",
        "relayed",
        "key_packages_stored",
        "key_package",
        "mailbox_accepted",
        "envelope",
        "mailbox_acked",
        "sfu_registered",
        "blob_created",
        "turn_credentials",
        "error",
    ] {
        assert!(
            server_types.contains(kind),
            "PROTOCOL.md lacks a server `{kind}` example"
        );
    }
}
