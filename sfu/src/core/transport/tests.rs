//! The transport against a real DTLS client (rtc-dtls, as the engine's webrtc-rs uses it)
//! and connectivity checks built as a browser's full agent sends them, stepped with a
//! fake clock.

use std::time::Duration;

use super::peer::Peer;
use super::*;
use crate::ice_lite::tests::check;

const UFRAG: &str = "sfuUfrag";
const PASSWORD: &str = "a-password-of-22-chars+";
const SFU: &str = "10.0.0.1:5000";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("an address")
}

fn new_peer(profiles: Vec<SrtpProtectionProfile>) -> Peer {
    Peer::new(addr("10.0.0.2:40000"), addr(SFU), profiles).expect("a peer")
}

fn username() -> String {
    format!("{UFRAG}:peerUfrag")
}

/// Moves datagrams both ways until neither side has any; `keep` decides, per datagram
/// in order, whether it arrives (a lossy path). Returns what the transport said about
/// each datagram it got.
fn exchange(
    peer: &mut Peer,
    transport: &mut Transport,
    now: Instant,
    keep: &mut dyn FnMut() -> bool,
) -> Vec<Result<Inbound, TransportError>> {
    let mut said = Vec::new();
    loop {
        let mut moved = false;
        while let Some(mut datagram) = peer.poll_transmit() {
            moved = true;
            if keep() {
                said.push(transport.handle_datagram(now, peer.addr(), &mut datagram));
            }
        }
        while let Some(transmit) = transport.poll_transmit() {
            moved = true;
            assert_eq!(transmit.to, peer.addr(), "sent to the checked address");
            if keep() {
                let mut payload = transmit.payload;
                let _ = peer.handle_datagram(now, &mut payload);
            }
        }
        if !moved {
            return said;
        }
    }
}

/// Checks, then a handshake under `keep`'s loss, stepping a fake clock through the
/// retransmission timers. Returns the time it ended at.
fn connect(
    peer: &mut Peer,
    transport: &mut Transport,
    mut now: Instant,
    keep: &mut dyn FnMut() -> bool,
) -> Instant {
    let start = now;
    let mut checked = false;
    let mut dtls_started = false;
    while now.duration_since(start) < Duration::from_secs(30) {
        if !checked {
            // A browser checks every 50 ms or so until answered.
            let mut request = peer.check(&username(), PASSWORD, true).expect("a check");
            if keep() {
                transport
                    .handle_datagram(now, peer.addr(), &mut request)
                    .expect("a valid check");
                let answer = transport.poll_transmit().expect("an answer");
                checked = keep() && answer.payload.first() == Some(&0x01);
            }
        }
        if checked && !dtls_started {
            peer.start_dtls(now).expect("DTLS starts");
            dtls_started = true;
        }
        exchange(peer, transport, now, keep);
        if transport.state() == TransportState::Connected && peer.is_connected() {
            return now;
        }
        now += Duration::from_millis(50);
        peer.handle_timeout(now);
        transport
            .handle_timeout(now)
            .expect("the handshake goes on");
    }
    panic!("not connected after 30 s");
}

fn transport_for(peer: &Peer) -> (DtlsIdentity, Transport) {
    let identity = DtlsIdentity::generate().expect("an identity");
    let transport = Transport::new(
        &identity,
        LiteAgent::new(UFRAG, PASSWORD),
        Fingerprint::parse(peer.fingerprint()).expect("the peer's fingerprint"),
    );
    (identity, transport)
}

/// An Opus-like RTP packet.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 111];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend((0..60).map(|i| i as u8 ^ seq as u8));
    packet
}

/// A receiver report from `ssrc` with no report blocks.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 201, 0, 1];
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet
}

fn always() -> impl FnMut() -> bool {
    || true
}

#[test]
fn a_dtls_client_connects_and_media_flows_both_ways_in_place() {
    use SrtpProtectionProfile::{Srtp_Aead_Aes_128_Gcm as Gcm, Srtp_Aes128_Cm_Hmac_Sha1_80 as Cm};
    for (offered, expected) in [
        (vec![Gcm, Cm], Profile::AeadAes128Gcm),
        (vec![Cm], Profile::Aes128CmHmacSha1_80),
    ] {
        let mut peer = new_peer(offered);
        let (identity, mut transport) = transport_for(&peer);
        assert!(identity.fingerprint().starts_with("sha-256 "));
        assert_eq!(transport.state(), TransportState::Connecting);
        connect(&mut peer, &mut transport, Instant::now(), &mut always());
        assert_eq!(transport.srtp_profile(), Some(expected));
        assert_eq!(transport.remote_addr(), Some(peer.addr()));
        assert_eq!(transport.remote_ufrag(), Some("peerUfrag"));

        for seq in 0..20 {
            // Participant → SFU: decrypted in the same buffer.
            let plain = rtp(seq, 0x1111);
            let mut packet = plain.clone();
            peer.protect_rtp(&mut packet).expect("protect");
            let said = transport.handle_datagram(Instant::now(), peer.addr(), &mut packet);
            assert_eq!(said.expect("accepted"), Inbound::Rtp);
            assert_eq!(packet, plain);

            // SFU → participant: encrypted in place, without reallocating when the
            // buffer has room for the tag.
            let plain = rtp(seq, 0x2222);
            let mut packet = Vec::with_capacity(plain.len() + expected.rtp_overhead());
            packet.extend_from_slice(&plain);
            let before = packet.as_ptr();
            transport.protect_rtp(&mut packet).expect("protect");
            assert_eq!(packet.as_ptr(), before, "no reallocation");
            assert!(
                peer.handle_datagram(Instant::now(), &mut packet)
                    .expect("the peer reads it")
            );
            assert_eq!(packet, plain);
        }
        let plain = rtcp(0x1111);
        let mut packet = plain.clone();
        peer.protect_rtcp(&mut packet).expect("protect");
        let said = transport.handle_datagram(Instant::now(), peer.addr(), &mut packet);
        assert_eq!(said.expect("accepted"), Inbound::Rtcp);
        assert_eq!(packet, plain);
        let mut packet = rtcp(0x2222);
        transport.protect_rtcp(&mut packet).expect("protect");
        assert!(
            peer.handle_datagram(Instant::now(), &mut packet)
                .expect("the peer reads it")
        );
        assert_eq!(packet, rtcp(0x2222));
    }
}

#[test]
fn the_handshake_completes_when_a_third_of_the_datagrams_are_lost() {
    // A third of all datagrams lost at random, both ways, from the first one; ten seeds.
    for seed in 1..=10u64 {
        let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
        let (_identity, mut transport) = transport_for(&peer);
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut keep = move || {
            // xorshift64*: a repeatable coin per datagram.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D) % 3 != 0
        };
        connect(&mut peer, &mut transport, Instant::now(), &mut keep);
        assert_eq!(transport.state(), TransportState::Connected, "seed {seed}");
    }
}

#[test]
fn a_certificate_other_than_the_sdp_fingerprint_is_refused() {
    let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
    let impostor = new_peer(vec![]);
    let identity = DtlsIdentity::generate().expect("an identity");
    let mut transport = Transport::new(
        &identity,
        LiteAgent::new(UFRAG, PASSWORD),
        Fingerprint::parse(impostor.fingerprint()).expect("a fingerprint"),
    );
    let now = Instant::now();
    let mut request = peer.check(&username(), PASSWORD, true).expect("a check");
    transport
        .handle_datagram(now, peer.addr(), &mut request)
        .expect("the check passes");
    peer.start_dtls(now).expect("DTLS starts");
    let said = exchange(&mut peer, &mut transport, now, &mut always());
    assert!(
        said.iter()
            .any(|r| matches!(r, Err(TransportError::FingerprintMismatch))),
        "{said:?}"
    );
    assert_eq!(transport.state(), TransportState::Closed);
    assert_eq!(transport.srtp_profile(), None);
    // Nothing more is accepted, not even a valid check.
    let mut request = peer.check(&username(), PASSWORD, true).expect("a check");
    let after = transport.handle_datagram(now, peer.addr(), &mut request);
    assert!(matches!(after, Err(TransportError::Closed)));
}

#[test]
fn packets_from_an_unchecked_address_are_refused() {
    let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
    let (_identity, mut transport) = transport_for(&peer);
    let now = connect(&mut peer, &mut transport, Instant::now(), &mut always());
    let mut packet = rtp(1, 0x1111);
    peer.protect_rtp(&mut packet).expect("protect");
    let elsewhere = addr("10.9.9.9:1234");
    let mut copy = packet.clone();
    let said = transport.handle_datagram(now, elsewhere, &mut copy);
    assert!(matches!(said, Err(TransportError::UncheckedAddress)));
    assert_eq!(
        said.map(|_| ()).expect_err("refused").counter(),
        "unchecked_address"
    );
    // A DTLS record from there too.
    let mut dtls = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        transport.handle_datagram(now, elsewhere, &mut dtls),
        Err(TransportError::UncheckedAddress)
    ));
    // The checked address still works.
    let said = transport.handle_datagram(now, peer.addr(), &mut packet);
    assert_eq!(said.expect("accepted"), Inbound::Rtp);
}

#[test]
fn a_nominated_check_from_a_new_address_moves_the_transport() {
    let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
    let (_identity, mut transport) = transport_for(&peer);
    let now = connect(&mut peer, &mut transport, Instant::now(), &mut always());
    let moved = addr("10.0.7.2:50000");
    // Checked but not nominated: answered, media accepted from it, still sent to the old.
    let mut request = check(&format!("{UFRAG}:peerUfrag"), PASSWORD, true, false);
    transport
        .handle_datagram(now, moved, &mut request)
        .expect("a valid check");
    let answer = transport.poll_transmit().expect("an answer");
    assert_eq!(answer.to, moved);
    assert_eq!(transport.remote_addr(), Some(peer.addr()));
    // Nominated: the transport follows.
    let mut request = check(&format!("{UFRAG}:peerUfrag"), PASSWORD, true, true);
    transport
        .handle_datagram(now, moved, &mut request)
        .expect("a valid check");
    assert_eq!(transport.remote_addr(), Some(moved));
    let mut packet = rtp(7, 0x1111);
    peer.protect_rtp(&mut packet).expect("protect");
    let said = transport.handle_datagram(now, moved, &mut packet);
    assert_eq!(said.expect("accepted"), Inbound::Rtp);
}

#[test]
fn replayed_forged_truncated_and_garbage_datagrams_are_refused_and_nothing_breaks() {
    let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
    let (_identity, mut transport) = transport_for(&peer);
    let now = connect(&mut peer, &mut transport, Instant::now(), &mut always());
    let mut packet = rtp(1, 0x1111);
    peer.protect_rtp(&mut packet).expect("protect");
    let protected = packet.clone();
    transport
        .handle_datagram(now, peer.addr(), &mut packet)
        .expect("the first copy");
    // The same packet again.
    let mut replay = protected.clone();
    let said = transport.handle_datagram(now, peer.addr(), &mut replay);
    assert_eq!(
        said.map(|_| ()).expect_err("a replay").counter(),
        "srtp_replay"
    );
    // Every single-bit flip past the header, and every truncation.
    let mut fresh = rtp(2, 0x1111);
    peer.protect_rtp(&mut fresh).expect("protect");
    for i in 12..fresh.len() {
        let mut bad = fresh.clone();
        bad[i] ^= 0x10;
        assert!(
            transport
                .handle_datagram(now, peer.addr(), &mut bad)
                .is_err(),
            "bit flip at {i}"
        );
    }
    for len in 0..fresh.len() {
        let mut short = fresh[..len].to_vec();
        assert!(
            transport
                .handle_datagram(now, peer.addr(), &mut short)
                .is_err(),
            "{len} bytes"
        );
    }
    // Random bytes of every first byte.
    for first in 0..=255u8 {
        let mut junk = vec![first; 48];
        junk[1] = first.wrapping_mul(7);
        let _ = transport.handle_datagram(now, peer.addr(), &mut junk);
    }
    // Unknown first bytes are named.
    let mut unknown = vec![100u8; 20];
    assert!(matches!(
        transport.handle_datagram(now, peer.addr(), &mut unknown),
        Err(TransportError::Unknown)
    ));
    // The untouched packet still goes through, and so does the other direction.
    assert_eq!(transport.state(), TransportState::Connected);
    let said = transport.handle_datagram(now, peer.addr(), &mut fresh);
    assert_eq!(said.expect("accepted"), Inbound::Rtp);
    let mut out = rtp(3, 0x2222);
    transport.protect_rtp(&mut out).expect("protect");
    assert!(
        peer.handle_datagram(Instant::now(), &mut out)
            .expect("read")
    );
}

#[test]
fn media_before_the_handshake_is_refused() {
    let peer = new_peer(vec![]);
    let (_identity, mut transport) = transport_for(&peer);
    let now = Instant::now();
    let mut request = peer.check(&username(), PASSWORD, true).expect("a check");
    transport
        .handle_datagram(now, peer.addr(), &mut request)
        .expect("a check");
    let mut packet = rtp(1, 0x1111);
    assert!(matches!(
        transport.handle_datagram(now, peer.addr(), &mut packet),
        Err(TransportError::NotConnected)
    ));
    let mut out = rtp(1, 0x2222);
    assert!(matches!(
        transport.protect_rtp(&mut out),
        Err(TransportError::NotConnected)
    ));
}

#[test]
fn fingerprints_parse_as_sdp_writes_them_and_nothing_else() {
    let good = format!("sha-256 {}", vec!["AB"; 32].join(":"));
    assert!(Fingerprint::parse(&good).is_ok());
    assert!(Fingerprint::parse(&good.to_lowercase()).is_ok());
    for bad in [
        String::new(),
        "sha-256".to_owned(),
        format!("md5 {}", vec!["AB"; 16].join(":")),
        format!("sha-256 {}", vec!["AB"; 31].join(":")),
        format!("sha-256 {}", vec!["ZZ"; 32].join(":")),
        format!("sha-256 {}", vec!["ABC"; 32].join(":")),
        format!("sha-256 {}:", vec!["AB"; 32].join(":")),
    ] {
        assert!(Fingerprint::parse(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_dtls_association_is_released_after_the_linger_and_media_goes_on() {
    let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
    let (_identity, mut transport) = transport_for(&peer);
    let now = connect(&mut peer, &mut transport, Instant::now(), &mut always());
    let release = transport.poll_timeout().expect("the release is due");
    assert_eq!(release, now + DTLS_LINGER);
    transport.handle_timeout(release).expect("no error");
    assert_eq!(transport.poll_timeout(), None);
    // A late DTLS record is refused and counted; media both ways still works.
    assert_released_and_media_flows(&mut peer, &mut transport, release, 1);
}

/// With the association released: a DTLS record is refused and counted as `dtls`, the
/// peer's RTP numbered `seq` is accepted, ours reaches the peer, and the transport stays
/// connected.
fn assert_released_and_media_flows(
    peer: &mut Peer,
    transport: &mut Transport,
    now: Instant,
    seq: u16,
) {
    let mut record = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0];
    let said = transport.handle_datagram(now, peer.addr(), &mut record);
    assert_eq!(said.map(|_| ()).expect_err("refused").counter(), "dtls");
    let mut packet = rtp(seq, 0x1111);
    peer.protect_rtp(&mut packet).expect("protect");
    let said = transport.handle_datagram(now, peer.addr(), &mut packet);
    assert_eq!(said.expect("accepted"), Inbound::Rtp);
    let mut out = rtp(1, 0x2222);
    transport.protect_rtp(&mut out).expect("protect");
    assert!(peer.handle_datagram(now, &mut out).expect("read"));
    assert_eq!(transport.state(), TransportState::Connected);
}

#[test]
fn the_dtls_association_is_released_at_the_peers_first_authenticated_media() {
    let mut peer = new_peer(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]);
    let (_identity, mut transport) = transport_for(&peer);
    let now = connect(&mut peer, &mut transport, Instant::now(), &mut always());
    // A forged packet proves nothing: the association stays.
    let mut forged = rtp(1, 0x1111);
    forged.extend_from_slice(&[0; 16]);
    assert!(
        transport
            .handle_datagram(now, peer.addr(), &mut forged)
            .is_err()
    );
    assert_eq!(transport.poll_timeout(), Some(now + DTLS_LINGER));
    // The peer's first SRTCP does: released at once, media still flows both ways.
    let mut report = rtcp(0x1111);
    peer.protect_rtcp(&mut report).expect("protect");
    let said = transport.handle_datagram(now, peer.addr(), &mut report);
    assert_eq!(said.expect("accepted"), Inbound::Rtcp);
    assert_eq!(transport.poll_timeout(), None, "nothing left to release");
    assert_released_and_media_flows(&mut peer, &mut transport, now, 2);
}
