//! The transport the SFU is to own (issue 19) keys its SRTP from DTLS itself: a real DTLS
//! 1.2 handshake between two rtc-dtls endpoints in memory, the RFC 5705 exporter with
//! RFC 5764's label, and `sotto_sfu::srtp` on both sides, for each profile a browser may
//! pick. rtc's own SRTP configuration splits the same material as a cross-check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use sotto_sfu::srtp::{MasterKey, Profile, Protector, Unprotector};

const LABEL: &str = "EXTRACTOR-dtls_srtp";

fn config(is_client: bool, profiles: Vec<SrtpProtectionProfile>) -> Arc<HandshakeConfig> {
    let provider = rtc::crypto::default_provider().expect("rtc's crypto");
    let certificate =
        Certificate::generate_self_signed(vec!["sotto".to_owned()], provider.crypto())
            .expect("a self-signed certificate");
    Arc::new(
        ConfigBuilder::default()
            .with_crypto_provider(provider)
            .with_certificates(vec![certificate])
            .with_srtp_protection_profiles(profiles)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            // The SFU checks the fingerprint from the SDP; not the subject of this test.
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(is_client, None)
            .expect("a DTLS configuration"),
    )
}

/// Runs a handshake between a client offering `offered` and a server taking `accepted`;
/// returns the two endpoints, connected.
fn handshake(
    offered: Vec<SrtpProtectionProfile>,
    accepted: Vec<SrtpProtectionProfile>,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
) -> (Endpoint, Endpoint) {
    let mut server = Endpoint::new(
        server_addr,
        TransportProtocol::UDP,
        Some(config(false, accepted)),
    );
    let mut client = Endpoint::new(client_addr, TransportProtocol::UDP, None);
    let mut now = Instant::now();
    client
        .connect(now, server_addr, config(true, offered), None)
        .expect("connect");
    let (mut client_done, mut server_done) = (false, false);
    for _ in 0..50 {
        while let Some(datagram) = client.poll_transmit() {
            for event in server
                .read(now, client_addr, None, datagram.message)
                .expect("the server reads")
            {
                server_done |= matches!(event, EndpointEvent::HandshakeComplete);
            }
        }
        while let Some(datagram) = server.poll_transmit() {
            for event in client
                .read(now, server_addr, None, datagram.message)
                .expect("the client reads")
            {
                client_done |= matches!(event, EndpointEvent::HandshakeComplete);
            }
        }
        if client_done && server_done {
            return (client, server);
        }
        now += Duration::from_millis(10);
        client
            .handle_timeout(server_addr, now)
            .expect("client timers");
        server
            .handle_timeout(client_addr, now)
            .expect("server timers");
    }
    panic!("no handshake: client done {client_done}, server done {server_done}");
}

/// An Opus-like RTP packet.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 111];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend((0..80).map(|i| i as u8 ^ seq as u8));
    packet
}

#[test]
fn srtp_keyed_from_a_dtls_handshake_carries_media_both_ways() {
    use SrtpProtectionProfile::{Srtp_Aead_Aes_128_Gcm as Gcm, Srtp_Aes128_Cm_Hmac_Sha1_80 as Cm};
    let client_addr: SocketAddr = "10.0.0.2:40000".parse().expect("address");
    let server_addr: SocketAddr = "10.0.0.1:5000".parse().expect("address");
    // What Chrome offers first, and what the SFU takes: GCM. A peer offering only the
    // HMAC profile gets that.
    for (offered, expected) in [
        (vec![Gcm, Cm], Profile::AeadAes128Gcm),
        (vec![Cm], Profile::Aes128CmHmacSha1_80),
    ] {
        let (client, server) = handshake(offered, vec![Gcm, Cm], client_addr, server_addr);
        let client_state = client
            .get_connection_state(server_addr)
            .expect("the client's association");
        let server_state = server
            .get_connection_state(client_addr)
            .expect("the server's association");
        let negotiated = server_state.srtp_protection_profile();
        assert_eq!(client_state.srtp_protection_profile(), negotiated);
        let profile = Profile::from_id(negotiated as u16).expect("one of ours");
        assert_eq!(profile, expected);

        let length = profile.keying_material_len();
        let client_material = client_state
            .export_keying_material(LABEL, &[], length)
            .expect("the client exports");
        let server_material = server_state
            .export_keying_material(LABEL, &[], length)
            .expect("the server exports");
        assert_eq!(client_material.as_ref(), server_material.as_ref());
        assert_eq!(client_material.as_ref().len(), length);

        // rtc's SRTP configuration splits the material the same way.
        let (client_key, server_key) =
            MasterKey::from_dtls(profile, client_material.as_ref()).expect("split");
        let mut theirs = rtc::srtp::config::Config {
            profile: match profile {
                Profile::AeadAes128Gcm => {
                    rtc::srtp::protection_profile::ProtectionProfile::AeadAes128Gcm
                }
                Profile::Aes128CmHmacSha1_80 => {
                    rtc::srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80
                }
            },
            ..Default::default()
        };
        theirs
            .set_session_keys_from_keying_material(client_material.as_ref(), true)
            .expect("rtc splits");
        let theirs_client = MasterKey::new(
            profile,
            &theirs.keys.local_master_key,
            &theirs.keys.local_master_salt,
        )
        .expect("lengths");
        let theirs_server = MasterKey::new(
            profile,
            &theirs.keys.remote_master_key,
            &theirs.keys.remote_master_salt,
        )
        .expect("lengths");
        assert!(theirs_client == client_key && theirs_server == server_key);

        // Each side protects with its own key and reads the other's.
        let mut client_out = Protector::new(&client_key).expect("keys");
        let mut server_in = Unprotector::new(&client_key).expect("keys");
        let mut server_out = Protector::new(&server_key).expect("keys");
        let mut client_in = Unprotector::new(&server_key).expect("keys");
        for seq in 0..50 {
            let plain = rtp(seq, 0x0101);
            let mut packet = plain.clone();
            client_out.protect_rtp(&mut packet).expect("protect");
            assert_ne!(packet[12..92], plain[12..]);
            server_in.unprotect_rtp(&mut packet).expect("unprotect");
            assert_eq!(packet, plain);

            let plain = rtp(seq, 0x0202);
            let mut packet = plain.clone();
            server_out.protect_rtp(&mut packet).expect("protect");
            client_in.unprotect_rtp(&mut packet).expect("unprotect");
            assert_eq!(packet, plain);
        }
        // The wrong direction's key does not open a packet.
        let mut packet = rtp(60, 0x0101);
        client_out.protect_rtp(&mut packet).expect("protect");
        assert!(client_in.unprotect_rtp(&mut packet).is_err());
    }
}
