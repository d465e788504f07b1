//! The loop against real transports: every subscriber is a DTLS client that completed a
//! handshake with its own transport, and reads its copy with its own keys.

use std::net::SocketAddr;

use super::*;
use crate::core::sdp::ExtensionIds;
use crate::core::transport::peer::{Peer, connected_pair};
use crate::core::transport::{DtlsIdentity, Fingerprint};
use crate::ice_lite::LiteAgent;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;

const SFU: &str = "10.0.0.1:5000";
const PASSWORD: &str = "sfu-password-0123456789";

/// `n` subscribers, each connected: their peers, and the SFU's side.
fn subscribers(n: usize, now: Instant) -> (Vec<Peer>, Vec<Option<Subscriber>>) {
    let identity = DtlsIdentity::generate().expect("identity");
    let sfu: SocketAddr = SFU.parse().expect("address");
    let mut peers = Vec::new();
    let mut subscribers = Vec::new();
    for i in 0..n {
        let addr = SocketAddr::from(([10, 0, 1, i as u8 + 1], 40_000));
        let profile = if i % 2 == 0 {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm
        } else {
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80
        };
        let (peer, transport) = connected_pair(
            &identity,
            addr,
            sfu,
            profile,
            &format!("sub{i}"),
            PASSWORD,
            now,
        )
        .expect("connected");
        peers.push(peer);
        subscribers.push(Some(Subscriber::new(transport)));
    }
    (peers, subscribers)
}

/// Audio from the publisher: audio level on id 1, its own transport-cc on id 3 (never
/// forwarded), mid on id 4.
fn published(seq: u16, payload_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_forwarded(
        &mut out,
        Header {
            payload_type,
            seq,
            timestamp: u32::from(seq) * 960,
            ssrc: PUBLISHER,
            marker: false,
        },
        &[(1, &[0x85]), (3, &[0x12, 0x34]), (4, b"0")],
        payload,
    )
    .expect("written");
    out
}

/// The publisher's SSRC.
const PUBLISHER: u32 = 0xAAAA;

/// A consumer of [`PUBLISHER`]'s audio, waiting for its first packet.
fn consumer(subscriber: usize, ssrc: u32, mid: &str) -> Consumer {
    let mut consumer = Consumer::new(subscriber, ssrc, 111, subscriber_ids(), mid);
    consumer.target = Some(PUBLISHER);
    consumer
}

fn publisher_ids() -> ExtensionIds {
    ExtensionIds {
        audio_level: Some(1),
        transport_cc: Some(3),
        mid: Some(4),
        ..ExtensionIds::default()
    }
}

/// What a subscriber asked for: its own ids (not the publisher's).
fn subscriber_ids() -> ExtensionIds {
    ExtensionIds {
        audio_level: Some(2),
        transport_cc: Some(5),
        mid: Some(9),
        ..ExtensionIds::default()
    }
}

/// Delivers the outbox to the peers; returns each peer's decrypted packets.
fn deliver(outbox: &Outbox, peers: &mut [Peer], now: Instant) -> Vec<Vec<Vec<u8>>> {
    let mut got = vec![Vec::new(); peers.len()];
    for (datagram, to) in outbox.datagrams() {
        let i = peers
            .iter()
            .position(|p| p.addr() == to)
            .expect("sent to a subscriber");
        let mut packet = datagram.to_vec();
        assert!(
            peers[i]
                .handle_datagram(now, &mut packet)
                .expect("decrypts")
        );
        got[i].push(packet);
    }
    got
}

#[test]
fn every_subscriber_reads_its_own_copy_under_its_own_keys_ids_and_numbering() {
    let now = Instant::now();
    let (mut peers, mut subs) = subscribers(6, now);
    let mut consumers: Vec<Consumer> = (0..6)
        .map(|i| consumer(i, 0x5000 + i as u32, &format!("m{i}")))
        .collect();
    let mut outbox = Outbox::new();
    let ids = publisher_ids();
    let pointers: Vec<*const u8> = outbox.buffers.iter().map(|b| b.as_ptr()).collect();
    for seq in 100..110u16 {
        let raw = published(seq, 111, b"opus!");
        let source = Source {
            packet: RtpView::parse(&raw).expect("parses"),
            extensions: &ids,
            red: false,
            keyframe: None,
            clock_rate: 48_000,
            withheld: false,
            count_loss: false,
        };
        let done = fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
        assert_eq!(done.sent, 6);
        let got = deliver(&outbox, &mut peers, now);
        for (i, packets) in got.iter().enumerate() {
            let view = RtpView::parse(&packets[0]).expect("parses");
            assert_eq!(view.ssrc(), 0x5000 + i as u32);
            assert_eq!(view.payload_type(), 111);
            assert_eq!(view.payload(), b"opus!");
            // The first layer keeps its numbering.
            assert_eq!(view.seq(), seq);
            assert_eq!(view.extension(2), Some(&[0x85][..]), "the level, our id");
            assert_eq!(view.extension(9), Some(format!("m{i}").as_bytes()));
            // Transport-wide numbers are the subscriber's own, from 0.
            let twcc = view.extension(5).expect("transport-cc");
            assert_eq!(u16::from_be_bytes([twcc[0], twcc[1]]), seq - 100);
            assert_eq!(view.extension(1), None, "nothing under the publisher's ids");
        }
        outbox.clear();
    }
    // The buffers were reused, never reallocated.
    let after: Vec<*const u8> = outbox.buffers.iter().map(|b| b.as_ptr()).collect();
    assert_eq!(pointers, after);
    assert_eq!(consumers[0].packets, 10);
}

#[test]
fn red_goes_as_it_came_to_those_who_took_it_and_as_its_primary_to_the_others() {
    let now = Instant::now();
    let (mut peers, mut subs) = subscribers(2, now);
    let mut with_red = consumer(0, 1, "a");
    with_red.red_payload_type = Some(63);
    let without = consumer(1, 2, "b");
    let mut consumers = vec![with_red, without];
    // RED: one redundant block (PT 111, offset 960, 3 bytes), then the primary.
    let mut red = vec![0x80 | 111, 0x03, 0xC0, 0x03, 111];
    red.extend_from_slice(b"old");
    red.extend_from_slice(b"new!");
    let raw = published(7, 63, &red);
    let ids = publisher_ids();
    let source = Source {
        packet: RtpView::parse(&raw).expect("parses"),
        extensions: &ids,
        red: true,
        keyframe: None,
        clock_rate: 48_000,
        withheld: false,
        count_loss: false,
    };
    let mut outbox = Outbox::new();
    let done = fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
    assert_eq!(done.sent, 2);
    let got = deliver(&outbox, &mut peers, now);
    let red_copy = RtpView::parse(&got[0][0]).expect("parses");
    assert_eq!(red_copy.payload_type(), 63);
    assert_eq!(red_copy.payload(), &red[..]);
    let plain = RtpView::parse(&got[1][0]).expect("parses");
    assert_eq!(plain.payload_type(), 111);
    assert_eq!(plain.payload(), b"new!");

    // A RED payload that does not unpack fails that copy only.
    let raw = published(8, 63, &[0x80 | 111, 0x03]);
    let source = Source {
        packet: RtpView::parse(&raw).expect("parses"),
        extensions: &ids,
        red: true,
        keyframe: None,
        clock_rate: 48_000,
        withheld: false,
        count_loss: false,
    };
    outbox.clear();
    let done = fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
    assert_eq!((done.sent, done.failed), (1, 1));
}

/// A packet of [`PUBLISHER`] as the core hands it over.
fn source<'a>(raw: &'a [u8], ids: &'a ExtensionIds) -> Source<'a> {
    Source {
        packet: RtpView::parse(raw).expect("parses"),
        extensions: ids,
        red: false,
        keyframe: None,
        clock_rate: 48_000,
        withheld: false,
        count_loss: false,
    }
}

#[test]
fn last_n_leaves_no_gap_and_a_full_outbox_resumes_where_it_stopped() {
    let now = Instant::now();
    let (mut peers, mut subs) = subscribers(3, now);
    let mut consumers: Vec<Consumer> = (0..3).map(|i| consumer(i, 10 + i as u32, "0")).collect();
    let ids = publisher_ids();
    let mut outbox = Outbox::new();
    let mut seqs = vec![Vec::new(); 3];
    for seq in 0..20u16 {
        let raw = published(seq, 111, b"x");
        let mut source = source(&raw, &ids);
        // Last-N holds the publisher back for five packets (all its consumers).
        source.withheld = (5..10).contains(&seq);
        fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
        for (i, packets) in deliver(&outbox, &mut peers, now).into_iter().enumerate() {
            seqs[i].extend(
                packets
                    .iter()
                    .map(|p| RtpView::parse(p).expect("rtp").seq()),
            );
        }
        outbox.clear();
    }
    // Fifteen arrive, numbered without a gap.
    assert_eq!(seqs[0], (0..15).collect::<Vec<_>>());
    assert_eq!(seqs[2], (0..15).collect::<Vec<_>>());

    // An outbox with room for two: the third consumer waits for the next call.
    let mut small = Outbox {
        buffers: (0..2).map(|_| Vec::with_capacity(MAX_DATAGRAM)).collect(),
        to: vec![SocketAddr::from(([0, 0, 0, 0], 0)); 2],
        len: 0,
    };
    let raw = published(20, 111, b"x");
    let source = source(&raw, &ids);
    let first = fan_out(now, &source, &mut consumers, 0, &mut subs, &mut small);
    assert_eq!((first.sent, first.resume_at), (2, Some(2)));
    small.clear();
    let rest = fan_out(now, &source, &mut consumers, 2, &mut subs, &mut small);
    assert_eq!((rest.sent, rest.resume_at), (1, None));
}

#[test]
fn subscribers_not_connected_or_gone_are_skipped() {
    let now = Instant::now();
    let (_peers, mut subs) = subscribers(1, now);
    let identity = DtlsIdentity::generate().expect("identity");
    let fresh = Transport::new(
        &identity,
        LiteAgent::new("x", PASSWORD),
        Fingerprint::parse(&format!("sha-256 {}", vec!["AB"; 32].join(":"))).expect("fp"),
    );
    subs.push(Some(Subscriber::new(fresh)));
    let mut consumers = vec![
        consumer(0, 1, "0"),
        consumer(1, 2, "0"),
        consumer(7, 3, "0"),
    ];
    let raw = published(1, 111, b"x");
    let ids = publisher_ids();
    let source = Source {
        packet: RtpView::parse(&raw).expect("parses"),
        extensions: &ids,
        red: false,
        keyframe: None,
        clock_rate: 48_000,
        withheld: false,
        count_loss: false,
    };
    let mut outbox = Outbox::new();
    let done = fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
    assert_eq!((done.sent, done.skipped), (1, 2));
}

/// Video of one layer with a keyframe flag, as the core reads it from the descriptor.
fn video(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    write_forwarded(
        &mut out,
        Header {
            payload_type: 96,
            seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
            marker: true,
        },
        &[(4, b"1")],
        &[0x90, seq as u8],
    )
    .expect("written");
    out
}

#[test]
fn a_consumer_switches_layers_only_where_a_keyframe_starts_and_continues_its_numbering() {
    let now = Instant::now();
    let (mut peers, mut subs) = subscribers(1, now);
    let mut consumers = vec![Consumer::new(0, 77, 96, subscriber_ids(), "1")];
    consumers[0].target = Some(1);
    let ids = publisher_ids();
    let mut outbox = Outbox::new();
    let mut got = Vec::new();
    // Layer 1 (SSRC 1) from seq 500, layer 2 (SSRC 2) from seq 9000; the target moves to
    // layer 2 at packet 3, whose keyframe comes at packet 6.
    for i in 0..10u16 {
        if i == 3 {
            consumers[0].target = Some(2);
        }
        for (ssrc, base) in [(1u32, 500u16), (2, 9000)] {
            let raw = video(base + i, ssrc);
            let mut source = source(&raw, &ids);
            source.clock_rate = 90_000;
            source.keyframe = Some(i == 0 || i == 6);
            fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
            for packet in deliver(&outbox, &mut peers, now).remove(0) {
                let view = RtpView::parse(&packet).expect("rtp");
                got.push((view.seq(), view.payload()[1]));
            }
            outbox.clear();
        }
    }
    // Layer 1 until its replacement's keyframe (layer 1's packet of that instant came
    // first), then layer 2, numbering unbroken.
    let expected: Vec<(u16, u8)> = (0..7u16)
        .map(|i| (500 + i, (500 + i) as u8))
        .chain((6..10u16).map(|i| (501 + i, (9000 + i) as u8)))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(consumers[0].current, Some(2));
}

#[test]
fn a_nack_is_answered_with_rtx_from_the_producer_s_history_in_the_subscriber_s_numbers() {
    use crate::core::history::History;
    use std::time::Duration;
    let now = Instant::now();
    let (mut peers, mut subs) = subscribers(2, now);
    let mut consumers: Vec<Consumer> = (0..2).map(|i| consumer(i, 40 + i as u32, "0")).collect();
    consumers[0].rtx = Some(Rtx {
        ssrc: 1040,
        payload_type: 97,
        seq: 7,
    });
    let ids = publisher_ids();
    let mut history = History::new(64);
    let mut outbox = Outbox::new();
    // The publisher's numbering starts at 1000; the consumer's at 1000 too (first layer);
    // one packet withheld by last-N shifts the consumer's numbers from 1005 on.
    for seq in 1000..1010u16 {
        let raw = published(seq, 111, &[seq as u8; 3]);
        history.store(seq, &raw, now);
        let mut source = source(&raw, &ids);
        source.withheld = seq == 1004;
        fan_out(now, &source, &mut consumers, 0, &mut subs, &mut outbox);
        outbox.clear();
    }
    // The subscriber lost its 1006th (outgoing 1005 after the shift: the publisher's 1006).
    let done = retransmit(
        now,
        &[1005, 1003, 2000],
        &history,
        &ids,
        Duration::from_secs(1),
        &mut consumers[0],
        subs[0].as_mut().expect("a subscriber"),
        &mut outbox,
    );
    assert_eq!(
        (done.sent, done.missed),
        (1, 2),
        "1003 is from before the shift"
    );
    let packets = deliver(&outbox, &mut peers, now);
    let rtx = RtpView::parse(&packets[0][0]).expect("rtp");
    assert_eq!((rtx.ssrc(), rtx.payload_type(), rtx.seq()), (1040, 97, 7));
    assert_eq!(
        rtx.payload(),
        &[0x03, 0xED, 0xEE, 0xEE, 0xEE],
        "OSN 1005, then 1006's"
    );
    outbox.clear();

    // Without RTX negotiated, nothing is resent; too old, nothing either.
    let none = retransmit(
        now,
        &[1005],
        &history,
        &ids,
        Duration::from_secs(1),
        &mut consumers[1],
        subs[1].as_mut().expect("a subscriber"),
        &mut outbox,
    );
    assert_eq!((none.sent, none.missed), (0, 1));
    let late = retransmit(
        now + Duration::from_secs(2),
        &[1005],
        &history,
        &ids,
        Duration::from_secs(1),
        &mut consumers[0],
        subs[0].as_mut().expect("a subscriber"),
        &mut outbox,
    );
    assert_eq!((late.sent, late.missed), (0, 1));
}

#[test]
fn a_sender_report_extrapolates_the_newest_timestamp_to_now() {
    use std::time::Duration;
    let now = Instant::now();
    let (_peers, mut subs) = subscribers(1, now);
    let mut consumers = vec![consumer(0, 5, "0")];
    assert!(
        sender_report(&consumers[0], 48_000, now, 7).is_none(),
        "nothing sent yet"
    );
    let ids = publisher_ids();
    let mut outbox = Outbox::new();
    for seq in 0..10u16 {
        let raw = published(seq, 111, b"abc");
        fan_out(
            now,
            &source(&raw, &ids),
            &mut consumers,
            0,
            &mut subs,
            &mut outbox,
        );
        outbox.clear();
    }
    // The newest packet's timestamp is 9 * 960; 100 ms later at 48 kHz, 4,800 more.
    let report = sender_report(&consumers[0], 48_000, now + Duration::from_millis(100), 7)
        .expect("a report");
    assert_eq!(report.ssrc, 5);
    assert_eq!(report.ntp_time, 7);
    assert_eq!(report.rtp_time, 9 * 960 + 4_800);
    assert_eq!((report.packet_count, report.octet_count), (10, 30));
}
