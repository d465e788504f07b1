//! Known answers from the RFCs and libsrtp, interop with rtc's SRTP (which browsers
//! already talk to through the engine), and bad input.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| b.is_ascii_hexdigit())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| (pair[0] << 4) | pair[1])
        .collect()
}

/// RFC 3711 Appendix B.3.
const B3_MASTER_KEY: &str = "E1F97A0D3E018BE0D64FA32C06DE4139";
const B3_MASTER_SALT: &str = "0EC675AD498AFEEBB6960B3AABE6";

#[test]
fn rfc3711_b3_key_derivation() {
    let master = MasterKey::new(
        Profile::Aes128CmHmacSha1_80,
        &hex(B3_MASTER_KEY),
        &hex(B3_MASTER_SALT),
    )
    .expect("lengths of the profile");
    let mut key = [0u8; 16];
    master.derive(LABEL_RTP_KEY, &mut key).expect("derive");
    assert_eq!(key[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
    let mut salt = [0u8; 14];
    master.derive(LABEL_RTP_SALT, &mut salt).expect("derive");
    assert_eq!(salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    let mut auth = [0u8; 20];
    master.derive(LABEL_RTP_AUTH, &mut auth).expect("derive");
    assert_eq!(
        auth[..],
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]
    );
}

/// RFC 3711 Appendix B.2: with session key 2B7E…, salt F0F1…FD, SSRC 0 and index 0, a
/// zero payload encrypts to the keystream itself.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let session = Session::from_session_keys(
        Profile::Aes128CmHmacSha1_80,
        &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
        &[0; 20],
        &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
    )
    .expect("session");
    let mut packet = vec![0u8; 12 + 48];
    packet[0] = 0x80;
    session.protect_rtp(&mut packet, 12, 0, 0).expect("protect");
    let keystream = hex(
        "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB \
         41E95B3BB0A2E8DD477901E4FCA894C0",
    );
    assert_eq!(packet[12..60], keystream[..]);
    assert_eq!(packet.len(), 60 + CM_TAG_LEN);
}

/// libsrtp's test/srtp_driver.c packet: master key in, so the key derivation, AES-CM and
/// HMAC-SHA1 are checked together.
const CM_PLAIN: &str = "800f1234 decafbad cafebabe abababab abababab abababab abababab";
const CM_PROTECTED: &str = "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 \
                            b78d6acc 99ea179b 8dbb";

fn cm_master() -> MasterKey {
    MasterKey::new(
        Profile::Aes128CmHmacSha1_80,
        &hex(B3_MASTER_KEY),
        &hex(B3_MASTER_SALT),
    )
    .expect("master key")
}

#[test]
fn aes_cm_hmac_sha1_80_packet_both_ways() {
    let mut packet = hex(CM_PLAIN);
    Protector::new(&cm_master())
        .expect("keys")
        .protect_rtp(&mut packet)
        .expect("protect");
    assert_eq!(packet, hex(CM_PROTECTED));

    let mut receiver = Unprotector::new(&cm_master()).expect("keys");
    receiver.unprotect_rtp(&mut packet).expect("unprotect");
    assert_eq!(packet, hex(CM_PLAIN));
}

/// RFC 7714 §16.1.1 (AEAD_AES_128_GCM, session key and salt given).
const GCM_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_SALT: &str = "517569642070726f2071756f";
const GCM_RTP_PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 \
                             20646976 69736120 696e2070 61727465 73207472 6573";
const GCM_RTP_PROTECTED: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c \
                                 9d7e4bca be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf \
                                 8833899d 7f27beb1 6a9152cf 765ee439 0cce";
/// RFC 7714 §17.1.1: a sender report, SRTCP index 0x5d4; E || index goes after the tag.
const GCM_RTCP_PLAIN: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 \
                              4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
const GCM_RTCP_PROTECTED: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 \
                                  7ff5c0f7 6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded \
                                  0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4";

fn gcm_session() -> Session {
    Session::from_session_keys(Profile::AeadAes128Gcm, &hex(GCM_KEY), &[], &hex(GCM_SALT))
        .expect("session")
}

#[test]
fn rfc7714_rtp_packet_both_ways() {
    let session = gcm_session();
    let mut packet = hex(GCM_RTP_PLAIN);
    session
        .protect_rtp(&mut packet, 12, 0x5501_a0b2, 0xf17b)
        .expect("protect");
    assert_eq!(packet, hex(GCM_RTP_PROTECTED));
    session
        .unprotect_rtp(&mut packet, 12, 0x5501_a0b2, 0xf17b)
        .expect("unprotect");
    assert_eq!(packet, hex(GCM_RTP_PLAIN));

    // One bit of ciphertext flipped, or the index guessed wrong: refused.
    let mut forged = hex(GCM_RTP_PROTECTED);
    forged[20] ^= 1;
    assert_eq!(
        session.unprotect_rtp(&mut forged, 12, 0x5501_a0b2, 0xf17b),
        Err(Error::Auth)
    );
    let mut other_roc = hex(GCM_RTP_PROTECTED);
    assert_eq!(
        session.unprotect_rtp(&mut other_roc, 12, 0x5501_a0b2, 0x1_f17b),
        Err(Error::Auth)
    );
}

#[test]
fn rfc7714_rtcp_packet_both_ways() {
    let session = gcm_session();
    let mut packet = hex(GCM_RTCP_PLAIN);
    session
        .protect_rtcp(&mut packet, 0x4d61_7273, 0x5d4)
        .expect("protect");
    assert_eq!(packet, hex(GCM_RTCP_PROTECTED));
    let at = session.rtcp_trailer_at(packet.len());
    session
        .unprotect_rtcp(&mut packet, 0x4d61_7273, 0x5d4, at)
        .expect("unprotect");
    assert_eq!(packet, hex(GCM_RTCP_PLAIN));
}

/// RTP as the engine and the SFU build it: version 2, Opus payload type, one header
/// extension (an audio level), `payload` bytes.
fn rtp(seq: u16, ssrc: u32, payload: usize) -> Vec<u8> {
    let mut packet = vec![0x90, 111];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    // RFC 8285 one-byte extension: id 1, one byte.
    packet.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x7f, 0x00, 0x00]);
    packet.extend((0..payload).map(|i| (i as u8).wrapping_mul(31) ^ seq as u8));
    packet
}

/// A receiver report from `ssrc` with one report block.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut packet = vec![0x81, 201, 0x00, 0x07];
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend_from_slice(&[0x05, 0, 0, 3, 0, 0, 0x10, 0x20, 0, 0, 0, 9]);
    packet.extend_from_slice(&[0; 8]);
    packet
}

/// Keying material as DTLS would export it for `profile`: a fixed pattern.
fn material(profile: Profile) -> Vec<u8> {
    (0..profile.keying_material_len())
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(3))
        .collect()
}

fn rtc_profile(profile: Profile) -> rtc::srtp::protection_profile::ProtectionProfile {
    use rtc::srtp::protection_profile::ProtectionProfile as Theirs;
    match profile {
        Profile::Aes128CmHmacSha1_80 => Theirs::Aes128CmHmacSha1_80,
        Profile::AeadAes128Gcm => Theirs::AeadAes128Gcm,
    }
}

/// rtc's SRTP context for `master` (the same code the engine's calls run on).
fn rtc_context(master: &MasterKey) -> rtc::srtp::context::Context {
    let provider = rtc::crypto::default_provider().expect("rtc's crypto");
    rtc::srtp::context::Context::new(
        master.key(),
        master.salt(),
        rtc_profile(master.profile()),
        None,
        None,
        provider.crypto(),
    )
    .expect("rtc context")
}

/// Both profiles, both ways, across a sequence-number wrap: what we protect rtc reads,
/// and what rtc protects we read. GCM's key derivation has no RFC vector (RFC 7714 gives
/// session keys), so this is where its derivation is checked.
#[test]
fn interoperates_with_rtc_across_a_rollover() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let (client, server) = MasterKey::from_dtls(profile, &material(profile)).expect("split");
        let mut ours = Protector::new(&client).expect("keys");
        let mut theirs = rtc_context(&client);
        let mut back = rtc_context(&server);
        let mut ours_in = Unprotector::new(&server).expect("keys");
        for seq in (65_530..=65_535).chain(0..6) {
            let plain = rtp(seq, 0xabcd_0001, 60);
            let mut packet = Vec::with_capacity(plain.len() + profile.rtp_overhead());
            packet.extend_from_slice(&plain);
            let capacity = packet.capacity();
            ours.protect_rtp(&mut packet).expect("protect");
            assert_eq!(packet.capacity(), capacity, "{profile:?}: no allocation");
            assert_eq!(packet.len(), plain.len() + profile.rtp_overhead());
            let read = theirs.decrypt_rtp(&packet).expect("rtc reads ours");
            assert_eq!(read[..], plain[..], "{profile:?} seq {seq}");

            let sent = back.encrypt_rtp(&plain).expect("rtc protects");
            let mut packet = sent.to_vec();
            ours_in.unprotect_rtp(&mut packet).expect("we read rtc's");
            assert_eq!(packet, plain, "{profile:?} seq {seq}");
        }
        for _ in 0..3 {
            let plain = rtcp(0xabcd_0001);
            let mut packet = plain.clone();
            ours.protect_rtcp(&mut packet).expect("protect");
            assert_eq!(packet.len(), plain.len() + profile.rtcp_overhead());
            let read = theirs.decrypt_rtcp(&packet).expect("rtc reads ours");
            assert_eq!(read[..], plain[..], "{profile:?}");

            let mut packet = back.encrypt_rtcp(&plain).expect("rtc protects").to_vec();
            ours_in.unprotect_rtcp(&mut packet).expect("we read rtc's");
            assert_eq!(packet, plain, "{profile:?}");
        }
    }
}

/// A pair of our own contexts over one master key.
fn pair(profile: Profile) -> (Protector, Unprotector) {
    let (client, _) = MasterKey::from_dtls(profile, &material(profile)).expect("split");
    (
        Protector::new(&client).expect("keys"),
        Unprotector::new(&client).expect("keys"),
    )
}

fn protected(sender: &mut Protector, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut packet = rtp(seq, ssrc, 40);
    sender.protect_rtp(&mut packet).expect("protect");
    packet
}

#[test]
fn replays_and_packets_older_than_the_window_are_refused_reordering_is_not() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let (mut sender, mut receiver) = pair(profile);
        let packets: Vec<Vec<u8>> = (0..100).map(|seq| protected(&mut sender, seq, 7)).collect();
        // 0..=20, then 30, then 25 (late but inside the window), then 25 again.
        for packet in packets.iter().take(21) {
            receiver
                .unprotect_rtp(&mut packet.clone())
                .expect("in order");
        }
        receiver
            .unprotect_rtp(&mut packets[30].clone())
            .expect("a jump ahead");
        receiver
            .unprotect_rtp(&mut packets[25].clone())
            .expect("reordered, inside the window");
        assert_eq!(
            receiver.unprotect_rtp(&mut packets[25].clone()),
            Err(Error::Replay)
        );
        assert_eq!(
            receiver.unprotect_rtp(&mut packets[30].clone()),
            Err(Error::Replay)
        );
        receiver
            .unprotect_rtp(&mut packets[99].clone())
            .expect("far ahead");
        assert_eq!(
            receiver.unprotect_rtp(&mut packets[22].clone()),
            Err(Error::TooOld)
        );
        // A stream of its own per SSRC.
        receiver
            .unprotect_rtp(&mut protected(&mut sender, 22, 8))
            .expect("another SSRC");

        // SRTCP: its own window.
        let mut reports = Vec::new();
        for _ in 0..3 {
            let mut packet = rtcp(7);
            sender.protect_rtcp(&mut packet).expect("protect");
            reports.push(packet);
        }
        receiver
            .unprotect_rtcp(&mut reports[2].clone())
            .expect("report");
        receiver
            .unprotect_rtcp(&mut reports[0].clone())
            .expect("reordered");
        assert_eq!(
            receiver.unprotect_rtcp(&mut reports[2].clone()),
            Err(Error::Replay)
        );
    }
}

#[test]
fn a_forged_packet_moves_no_state() {
    let (mut sender, mut receiver) = pair(Profile::AeadAes128Gcm);
    receiver
        .unprotect_rtp(&mut protected(&mut sender, 10, 7))
        .expect("first");
    // Far ahead and forged: refused, and the window stays where it was, so packet 11
    // (which a moved window would call too old) still gets in.
    let mut forged = protected(&mut sender, 5000, 7);
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    assert_eq!(receiver.unprotect_rtp(&mut forged), Err(Error::Auth));
    let (mut sender2, _) = pair(Profile::AeadAes128Gcm);
    receiver
        .unprotect_rtp(&mut protected(&mut sender2, 11, 7))
        .expect("the stream is where it was");
    // Keys of another session: refused.
    let (_, server) =
        MasterKey::from_dtls(Profile::AeadAes128Gcm, &material(Profile::AeadAes128Gcm))
            .expect("split");
    let mut stranger = Protector::new(&server).expect("keys");
    assert_eq!(
        receiver.unprotect_rtp(&mut protected(&mut stranger, 12, 7)),
        Err(Error::Auth)
    );
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let (mut sender, mut receiver) = pair(profile);
        let good = protected(&mut sender, 1, 9);
        // Every truncation of a good packet.
        for len in 0..good.len() {
            let mut cut = good[..len].to_vec();
            assert!(receiver.unprotect_rtp(&mut cut).is_err(), "{len} bytes");
            let mut cut = good[..len].to_vec();
            assert!(receiver.unprotect_rtcp(&mut cut).is_err(), "{len} bytes");
        }
        // Wrong version; an extension that runs past the end; CSRCs past the end.
        let mut wrong = good.clone();
        wrong[0] = 0x50;
        assert_eq!(receiver.unprotect_rtp(&mut wrong), Err(Error::Malformed));
        let mut long_extension = good.clone();
        long_extension[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(
            receiver.unprotect_rtp(&mut long_extension),
            Err(Error::Malformed)
        );
        let mut csrcs = vec![0x8f, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        csrcs.extend_from_slice(&[0; 20]);
        assert_eq!(receiver.unprotect_rtp(&mut csrcs), Err(Error::Malformed));
        // SRTCP with the E flag clear.
        let mut report = rtcp(9);
        sender.protect_rtcp(&mut report).expect("protect");
        let at = match profile {
            Profile::AeadAes128Gcm => report.len() - 4,
            Profile::Aes128CmHmacSha1_80 => report.len() - 14,
        };
        report[at] &= 0x7f;
        assert_eq!(
            receiver.unprotect_rtcp(&mut report),
            Err(Error::Unencrypted)
        );
        // Pseudo-random garbage of every length up to 200 bytes.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let mut junk: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = receiver.unprotect_rtp(&mut junk.clone());
            let _ = receiver.unprotect_rtcp(&mut junk);
        }
        // Sending: a packet too short to be RTP is refused, not protected.
        assert_eq!(sender.protect_rtp(&mut vec![0x80; 8]), Err(Error::Short));
        assert_eq!(sender.protect_rtcp(&mut vec![0x80; 4]), Err(Error::Short));
    }
}

#[test]
fn keying_material_splits_as_rfc_5764_lays_it_out() {
    let profile = Profile::AeadAes128Gcm;
    let material: Vec<u8> = (0..56).collect();
    let (client, server) = MasterKey::from_dtls(profile, &material).expect("56 bytes");
    assert_eq!(client.key[..], material[..16]);
    assert_eq!(server.key[..], material[16..32]);
    assert_eq!(client.salt[..12], material[32..44]);
    assert_eq!(server.salt[..12], material[44..56]);
    assert_eq!(client.salt[12..], [0, 0]);
    assert_eq!(
        MasterKey::from_dtls(profile, &material[..55]),
        Err(Error::KeyLength)
    );
    assert_eq!(
        MasterKey::from_dtls(Profile::Aes128CmHmacSha1_80, &[0; 60]).map(|(c, _)| c.profile()),
        Ok(Profile::Aes128CmHmacSha1_80)
    );
    assert_eq!(Profile::from_id(7), Some(Profile::AeadAes128Gcm));
    assert_eq!(Profile::from_id(2), None);
    // No key bytes in debug output.
    assert!(!format!("{client:?}").contains('['));
}

#[test]
fn the_index_estimate_follows_rfc_3711_appendix_a() {
    // Near the wrap: a small sequence number after a large one is the next rollover.
    assert_eq!(estimate_index(0xfff0, 2), Some(0x1_0002));
    // A large one after a small one is from before the last rollover.
    assert_eq!(estimate_index(0x1_0002, 0xfff0), Some(0xfff0));
    // ... and before the first there is nothing.
    assert_eq!(estimate_index(0x0002, 0xfff0), None);
    assert_eq!(estimate_index(0x5_1000, 0x1100), Some(0x5_1100));
}

#[test]
fn a_peer_inventing_ssrcs_is_refused_past_the_cap_and_known_ones_go_on() {
    let (mut sender, mut receiver) = pair(Profile::AeadAes128Gcm);
    for ssrc in 0..MAX_INBOUND_STREAMS as u32 {
        let mut packet = protected(&mut sender, 1, 0x1000 + ssrc);
        receiver.unprotect_rtp(&mut packet).expect("within the cap");
    }
    let mut one_more = protected(&mut sender, 1, 0x9999);
    assert_eq!(
        receiver.unprotect_rtp(&mut one_more),
        Err(Error::TooManyStreams)
    );
    let mut rtcp_one_more = rtcp(0x9998);
    sender.protect_rtcp(&mut rtcp_one_more).expect("protect");
    assert_eq!(
        receiver.unprotect_rtcp(&mut rtcp_one_more),
        Err(Error::TooManyStreams)
    );
    // A known SSRC still passes.
    let mut known = protected(&mut sender, 2, 0x1000);
    receiver.unprotect_rtp(&mut known).expect("a known stream");
}
