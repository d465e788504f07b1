use std::time::{Duration, Instant};

use super::*;

const SECRET_1: [u8; EXPORTER_LENGTH] = [0x51; EXPORTER_LENGTH];
const SECRET_2: [u8; EXPORTER_LENGTH] = [0x52; EXPORTER_LENGTH];

fn opus_frame(n: u8) -> Vec<u8> {
    (0..80).map(|i| i ^ n).collect()
}

fn receiver(me: u32) -> MediaReceiver {
    MediaReceiver::new(me, ReceiverConfig::default())
}

/// Encrypts `frame` and returns the ciphertext.
fn seal(sender: &mut MediaSender, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    sender.encrypt(frame, &mut out).unwrap();
    out
}

#[test]
fn round_trip_audio_and_video_frames() {
    let now = Instant::now();
    let mut alice = MediaSender::new(7, &SECRET_1, 2, 0).unwrap();
    let mut bob = receiver(1);
    bob.rekey(7, &SECRET_1, 2, now).unwrap();

    let video: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
    let mut wire = Vec::new();
    let mut plain = Vec::new();
    for (n, frame) in [opus_frame(1), video.clone(), opus_frame(2)]
        .iter()
        .enumerate()
    {
        alice.encrypt(frame, &mut wire).unwrap();
        assert_ne!(&wire[wire.len() - frame.len()..], frame.as_slice());
        // Header (1 byte + KID byte + counter) plus the 16-byte tag.
        assert!(
            wire.len() <= frame.len() + 3 + 16,
            "overhead {}",
            wire.len() - frame.len()
        );
        let got = bob.decrypt(&wire, now, &mut plain).unwrap();
        assert_eq!(&plain, frame);
        assert_eq!(
            got,
            Received {
                epoch: 7,
                sender_index: 0,
                context: 0,
                counter: n as u64,
            }
        );
    }
}

#[test]
fn a_flipped_bit_is_rejected_and_leaves_no_trace() {
    let now = Instant::now();
    let mut alice = MediaSender::new(3, &SECRET_1, 2, 0).unwrap();
    let mut bob = receiver(1);
    bob.rekey(3, &SECRET_1, 2, now).unwrap();
    let wire = seal(&mut alice, &opus_frame(9));
    let mut out = Vec::new();
    // Body, tag, and the header's config byte, whose low bits hold the counter (the header
    // is authenticated as AAD).
    for at in [10, wire.len() - 1, 0] {
        let mut bad = wire.clone();
        bad[at] ^= 0x01;
        let err = bob.decrypt(&bad, now, &mut out).unwrap_err();
        assert!(
            matches!(err, MediaKeyError::Authentication { .. }),
            "byte {at}: {err}"
        );
    }
    // The failures recorded nothing: the real frame still decrypts, once.
    bob.decrypt(&wire, now, &mut out).unwrap();
    assert_eq!(out, opus_frame(9));
    assert!(bob.decrypt(&[], now, &mut out).is_err());
}

#[test]
fn replays_are_rejected_and_modest_reordering_is_allowed() {
    let now = Instant::now();
    let mut alice = MediaSender::new(1, &SECRET_1, 2, 0).unwrap();
    let mut bob = receiver(1);
    bob.rekey(1, &SECRET_1, 2, now).unwrap();
    let frames: Vec<Vec<u8>> = (0..300)
        .map(|n| seal(&mut alice, &opus_frame(n as u8)))
        .collect();
    let mut out = Vec::new();

    bob.decrypt(&frames[5], now, &mut out).unwrap();
    // Late but inside the window: fine, in any order.
    bob.decrypt(&frames[3], now, &mut out).unwrap();
    bob.decrypt(&frames[4], now, &mut out).unwrap();
    assert_eq!(out, opus_frame(4));
    // The same frame again: replay.
    assert_eq!(
        bob.decrypt(&frames[5], now, &mut out),
        Err(MediaKeyError::Replayed {
            kid: alice.key_id(),
            counter: 5
        })
    );
    assert!(matches!(
        bob.decrypt(&frames[3], now, &mut out),
        Err(MediaKeyError::Replayed { counter: 3, .. })
    ));
    // Far ahead, then a frame older than the window (128 frames).
    bob.decrypt(&frames[299], now, &mut out).unwrap();
    assert!(matches!(
        bob.decrypt(&frames[100], now, &mut out),
        Err(MediaKeyError::TooOld { counter: 100, .. })
    ));
    bob.decrypt(&frames[200], now, &mut out).unwrap();
}

#[test]
fn unknown_epochs_senders_and_own_key_ids_are_refused() {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut bob = receiver(1);
    let mut alice = MediaSender::new(4, &SECRET_1, 3, 0).unwrap();
    let frame = seal(&mut alice, &opus_frame(0));
    // No keys at all yet.
    assert!(matches!(
        bob.decrypt(&frame, now, &mut out),
        Err(MediaKeyError::UnknownEpoch { .. })
    ));
    bob.rekey(4, &SECRET_1, 3, now).unwrap();
    bob.decrypt(&frame, now, &mut out).unwrap();

    // A frame of an epoch this receiver has not reached.
    let mut ahead = MediaSender::new(5, &SECRET_2, 3, 0).unwrap();
    let kid = ahead.key_id();
    assert_eq!(
        bob.decrypt(&seal(&mut ahead, b"x"), now, &mut out),
        Err(MediaKeyError::UnknownEpoch { kid })
    );
    // Index 3 in a group of 3 (S = 2 for both 3 and 4 leaves, so the KID parses).
    let mut outsider = MediaSender::new(4, &SECRET_1, 4, 3).unwrap();
    assert!(matches!(
        bob.decrypt(&seal(&mut outsider, b"x"), now, &mut out),
        Err(MediaKeyError::UnknownSender { index: 3, .. })
    ));
    // Our own KID reflected back.
    let mut me = MediaSender::new(4, &SECRET_1, 3, 1).unwrap();
    assert!(matches!(
        bob.decrypt(&seal(&mut me, b"x"), now, &mut out),
        Err(MediaKeyError::OwnKeyId { .. })
    ));
    // A member of the right epoch whose secret is wrong (not a member at all).
    let mut forger = MediaSender::new(4, &SECRET_2, 3, 2).unwrap();
    assert!(matches!(
        bob.decrypt(&seal(&mut forger, b"x"), now, &mut out),
        Err(MediaKeyError::Authentication { .. })
    ));
}

#[test]
fn frames_sent_just_before_a_rekey_decrypt_after_it_for_a_while() {
    let t0 = Instant::now();
    let mut alice = MediaSender::new(10, &SECRET_1, 2, 0).unwrap();
    let mut bob = receiver(1);
    bob.rekey(10, &SECRET_1, 2, t0).unwrap();
    let in_flight: Vec<Vec<u8>> = (0..3).map(|n| seal(&mut alice, &opus_frame(n))).collect();

    // Bob processes the commit first, Alice a moment later.
    bob.rekey(11, &SECRET_2, 2, t0).unwrap();
    alice.rekey(11, &SECRET_2, 2).unwrap();
    assert_ne!(
        alice.key_id(),
        MediaSender::new(10, &SECRET_1, 2, 0).unwrap().key_id()
    );
    let mut out = Vec::new();
    let fresh = seal(&mut alice, &opus_frame(7));
    assert_eq!(bob.decrypt(&fresh, t0, &mut out).unwrap().epoch, 11);
    let got = bob
        .decrypt(&in_flight[0], t0 + Duration::from_millis(300), &mut out)
        .unwrap();
    assert_eq!((got.epoch, got.counter), (10, 0));
    assert_eq!(out, opus_frame(0));
    bob.decrypt(&in_flight[1], t0 + Duration::from_secs(4), &mut out)
        .unwrap();
    // Past the grace period the old epoch is gone.
    assert!(matches!(
        bob.decrypt(&in_flight[2], t0 + Duration::from_secs(5), &mut out),
        Err(MediaKeyError::UnknownEpoch { .. })
    ));
    assert_eq!(bob.epochs(), vec![11]);
}

#[test]
fn superseded_epochs_are_bounded_and_an_epoch_with_the_same_low_bits_replaces_its_twin() {
    let now = Instant::now();
    let mut bob = receiver(0);
    for epoch in 20..26 {
        bob.rekey(epoch, &SECRET_1, 2, now).unwrap();
    }
    assert_eq!(bob.epochs(), vec![23, 24, 25]);

    let mut patient = MediaReceiver::new(
        0,
        ReceiverConfig {
            previous_epochs: 15,
            grace: Duration::from_secs(3600),
            ..ReceiverConfig::default()
        },
    );
    patient.rekey(1, &SECRET_1, 2, now).unwrap();
    patient.rekey(2, &SECRET_1, 2, now).unwrap();
    // 17 has the same low four bits as 1 (RFC 9605 §5.2: remove the old one).
    patient.rekey(17, &SECRET_2, 2, now).unwrap();
    assert_eq!(patient.epochs(), vec![2, 17]);
    let mut old = MediaSender::new(1, &SECRET_1, 2, 1).unwrap();
    let mut out = Vec::new();
    // The epoch-1 frame's KID now maps to epoch 17, whose key does not open it.
    assert!(matches!(
        patient.decrypt(&seal(&mut old, b"x"), now, &mut out),
        Err(MediaKeyError::Authentication { .. })
    ));
}

#[test]
fn a_removed_member_cannot_send_into_a_later_epoch() {
    let t0 = Instant::now();
    // Epoch 1: Bob (leaf 0), Carol (1), Dave (2). Epoch 2: Carol removed, her leaf blank
    // (group_size stays 3); she never learns SECRET_2.
    let mut bob = receiver(0);
    bob.rekey(1, &SECRET_1, 3, t0).unwrap();
    let mut carol = MediaSender::new(1, &SECRET_1, 3, 1).unwrap();
    let mut out = Vec::new();
    bob.decrypt(&seal(&mut carol, b"hi"), t0, &mut out).unwrap();

    bob.rekey(2, &SECRET_2, 3, t0).unwrap();
    // Under her own index, or posing as Dave, she has only the old secret, from which no
    // key of epoch 2 follows: nothing carries over.
    let mut carol_2 = MediaSender::new(2, &SECRET_1, 3, 1).unwrap();
    assert!(matches!(
        bob.decrypt(&seal(&mut carol_2, b"x"), t0, &mut out),
        Err(MediaKeyError::Authentication { .. })
    ));
    let mut as_dave = MediaSender::new(2, &SECRET_1, 3, 2).unwrap();
    let mut dave = MediaSender::new(2, &SECRET_2, 3, 2).unwrap();
    assert_eq!(as_dave.key_id(), dave.key_id());
    assert!(matches!(
        bob.decrypt(&seal(&mut as_dave, b"x"), t0, &mut out),
        Err(MediaKeyError::Authentication { .. })
    ));
    bob.decrypt(&seal(&mut dave, b"ok"), t0, &mut out).unwrap();
    assert_eq!(out, b"ok");
    // Under the old epoch she is accepted only during the grace period.
    let late = seal(&mut carol, b"late");
    assert!(matches!(
        bob.decrypt(&late, t0 + Duration::from_secs(6), &mut out),
        Err(MediaKeyError::UnknownEpoch { .. })
    ));
}

#[test]
fn key_ids_follow_rfc_9605_section_5_2() {
    assert_eq!(index_bits(1), 0);
    assert_eq!(index_bits(2), 1);
    assert_eq!(index_bits(3), 2);
    assert_eq!(index_bits(4), 2);
    assert_eq!(index_bits(5), 3);
    assert_eq!(index_bits(64), 6);
    assert_eq!(index_bits(65), 7);
    assert_eq!(index_bits(u32::MAX), 32);

    // The RFC's example sequence (Figure 8: E = 4, S = 6, up to 64 members).
    let layout = KidLayout::for_group(64).unwrap();
    assert_eq!(layout.index_bits(), 6);
    for (context, epoch, index, kid) in [
        (0, 14, 3, 0x3e),
        (0, 14, 7, 0x7e),
        (0, 14, 20, 0x14e),
        (0, 15, 3, 0x3f),
        (0, 15, 5, 0x5f),
        (2, 16, 2, 0x820),
        (3, 16, 2, 0xc20),
        (0, 17, 33, 0x211),
        (0, 17, 51, 0x331),
    ] {
        assert_eq!(layout.key_id(context, epoch, index).unwrap(), kid);
        assert_eq!(
            layout.split(kid),
            KidParts {
                context,
                sender_index: u64::from(index),
                epoch_lsb: epoch % 16,
            }
        );
    }
    // The sender uses exactly that layout.
    let sender = MediaSender::with_context(16, &SECRET_1, 64, 2, 3).unwrap();
    assert_eq!(sender.key_id(), 0xc20);
    // A two-person call: S = 1, so KIDs stay below 32 (one extra header byte).
    assert_eq!(
        KidLayout::for_group(2).unwrap().key_id(0, 9, 1).unwrap(),
        0x19
    );

    assert_eq!(
        KidLayout::for_group(64).unwrap().key_id(0, 1, 64),
        Err(MediaKeyError::LeafIndexOutOfRange {
            index: 64,
            group_size: 64
        })
    );
    assert_eq!(KidLayout::for_group(0), Err(MediaKeyError::EmptyGroup));
    // 64 - 32 - 4 = 28 bits of context at most.
    let widest = KidLayout::for_group(u32::MAX).unwrap();
    assert!(widest.key_id((1 << 28) - 1, 0, 0).is_ok());
    assert_eq!(
        widest.key_id(1 << 28, 0, 0),
        Err(MediaKeyError::ContextOutOfRange(1 << 28))
    );
}

#[test]
fn bad_secrets_and_stale_epochs_are_refused() {
    let now = Instant::now();
    assert_eq!(
        MediaSender::new(1, &[0; 32], 2, 0).unwrap_err(),
        MediaKeyError::SecretLength {
            got: 32,
            expected: 16
        }
    );
    let mut alice = MediaSender::new(5, &SECRET_1, 2, 0).unwrap();
    assert!(matches!(
        alice.rekey(5, &SECRET_2, 2),
        Err(MediaKeyError::StaleEpoch { current: 5, new: 5 })
    ));
    assert!(alice.rekey(4, &SECRET_2, 2).is_err());
    assert!(MediaSender::new(1, &SECRET_1, 2, 2).is_err());

    let mut bob = receiver(1);
    bob.rekey(5, &SECRET_1, 2, now).unwrap();
    assert!(matches!(
        bob.rekey(5, &SECRET_2, 2, now),
        Err(MediaKeyError::StaleEpoch { .. })
    ));
    assert!(bob.rekey(6, &SECRET_2[..8], 2, now).is_err());
    assert_eq!(bob.epochs(), vec![5]);

    // Debug output names epochs and KIDs, never key material.
    let shown = format!("{alice:?} {bob:?}");
    assert!(
        !shown.contains("81, 81") && !shown.contains("5151"),
        "{shown}"
    );
}

#[test]
fn a_video_frame_keeps_its_first_bytes_in_the_clear_and_authenticated() {
    let now = Instant::now();
    let mut alice = MediaSender::with_context(7, &SECRET_1, 2, 0, 1).unwrap();
    let mut bob = receiver(1);
    bob.rekey(7, &SECRET_1, 2, now).unwrap();
    let frame: Vec<u8> = (0..900u32).map(|i| (i * 13) as u8).collect();
    let mut wire = Vec::new();
    alice.encrypt_with_clear(&frame, 10, &mut wire).unwrap();
    assert_eq!(
        &wire[..10],
        &frame[..10],
        "the clear prefix leads the payload"
    );
    assert_ne!(&wire[10..20], &frame[10..20]);
    let mut plain = Vec::new();
    bob.decrypt_with_clear(&wire, 10, now, &mut plain).unwrap();
    assert_eq!(plain, frame);
    // A changed clear byte fails authentication.
    alice.encrypt_with_clear(&frame, 10, &mut wire).unwrap();
    wire[1] ^= 1;
    assert!(bob.decrypt_with_clear(&wire, 10, now, &mut plain).is_err());
    // So does reading with another split.
    alice.encrypt_with_clear(&frame, 10, &mut wire).unwrap();
    assert!(bob.decrypt_with_clear(&wire, 3, now, &mut plain).is_err());
    assert!(
        bob.decrypt_with_clear(&wire[..5], 10, now, &mut plain)
            .is_err()
    );
}
