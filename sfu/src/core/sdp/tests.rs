//! Our SDP against a real WebRTC stack (rtc's peer connection, as the engine's webrtc-rs
//! uses it, through the SFU's test [`Client`]), and against offers written the way
//! Chromium writes them.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::client::{Client, ClientEvent, Outgoing, Publish};
use crate::core::transport::{DtlsIdentity, Inbound, Transport, TransportState};
use crate::ice_lite::LiteAgent;

const SFU: &str = "10.0.0.1:5000";

fn local(identity: &DtlsIdentity) -> LocalParameters {
    LocalParameters {
        ufrag: "sfuUfrag0123".to_owned(),
        password: "sfu-password-0123456789".to_owned(),
        fingerprint: identity.fingerprint().to_owned(),
        candidate: SFU.parse().expect("address"),
    }
}

/// Moves datagrams both ways; RTP the transport decrypts is collected.
fn exchange(
    client: &mut Client,
    transport: &mut Transport,
    now: Instant,
    received: &mut Vec<Vec<u8>>,
) {
    let sfu: SocketAddr = SFU.parse().expect("address");
    loop {
        let mut moved = false;
        while let Some(transmit) = client.poll_transmit() {
            moved = true;
            assert_eq!(transmit.to, sfu);
            let mut buffer = transmit.payload.to_vec();
            if let Ok(Inbound::Rtp) = transport.handle_datagram(now, client.addr(), &mut buffer) {
                received.push(buffer);
            }
        }
        while let Some(transmit) = transport.poll_transmit() {
            moved = true;
            let _ = client.handle_datagram(now, sfu, &transmit.payload);
        }
        if !moved {
            return;
        }
    }
}

/// Steps a fake clock until `done`, exchanging datagrams and running both timers.
fn run_until(
    client: &mut Client,
    transport: &mut Transport,
    now: &mut Instant,
    received: &mut Vec<Vec<u8>>,
    mut done: impl FnMut(&mut Client, &Transport) -> bool,
) {
    let start = *now;
    while now.duration_since(start) < Duration::from_secs(10) {
        exchange(client, transport, *now, received);
        if done(client, transport) {
            return;
        }
        *now += Duration::from_millis(10);
        let _ = client.handle_timeout(*now);
        let _ = transport.handle_timeout(*now);
    }
    panic!("not done within 10 s");
}

fn rtp_header(packet: &[u8]) -> (u8, u16, u32) {
    (
        packet[1] & 0x7f,
        u16::from_be_bytes([packet[2], packet[3]]),
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    )
}

/// An RTP packet with one one-byte header extension (`id` = `value`).
fn rtp_with_extension(pt: u8, seq: u16, ssrc: u32, id: u8, value: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x90, pt];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    let mut extension = vec![(id << 4) | (value.len() as u8 - 1)];
    extension.extend_from_slice(value);
    while extension.len() % 4 != 0 {
        extension.push(0);
    }
    packet.extend_from_slice(&[0xBE, 0xDE]);
    packet.extend_from_slice(&((extension.len() / 4) as u16).to_be_bytes());
    packet.extend_from_slice(&extension);
    packet.extend_from_slice(&[0x55; 40]);
    packet
}

#[test]
fn a_webrtc_participant_publishes_and_receives_on_our_sdp_and_transport() {
    let mut now = Instant::now();
    let identity = DtlsIdentity::generate().expect("identity");
    let mut negotiation = Negotiation::new(local(&identity), 42);
    let mut client = Client::new(
        "alice",
        "10.0.0.2:40000".parse().expect("address"),
        &[Publish::audio(0xA1), Publish::video(0xB1)],
        now,
    )
    .expect("a client");

    // The participant offers; we answer; its stack accepts the answer.
    let offer = client.offer(now).expect("an offer");
    let answer = negotiation.accept_offer(&offer).expect("answered");
    assert!(answer.sdp.contains("a=ice-lite"));
    assert!(answer.sdp.contains("a=setup:passive"));
    client.apply_answer(&answer.sdp, now).expect("accepted");
    let published = &answer.published;
    assert_eq!(published.len(), 2);
    assert_eq!(published[0].kind, Kind::Audio);
    assert_eq!(published[0].formats[0].codec, Codec::Opus);
    assert_eq!(published[0].ssrcs, vec![(0xA1, None)]);
    assert!(
        published[0].red_payload_type.is_some(),
        "RED offered, RED taken"
    );
    assert!(published[0].extensions.transport_cc.is_some());
    assert_eq!(published[1].kind, Kind::Video);
    assert_eq!(published[1].formats[0].codec, Codec::Vp8);
    assert_eq!(published[1].formats[0].rtx_payload_type, Some(97));
    assert_eq!(published[1].ssrcs, vec![(0xB1, Some(0xB2))]);
    assert_eq!(
        published[0]
            .msid
            .as_ref()
            .map(|(stream, _)| stream.as_str()),
        Some("alice")
    );

    // ICE and DTLS through our transport, keyed by what the SDP said.
    let mut transport = Transport::new(
        &identity,
        LiteAgent::new("sfuUfrag0123", "sfu-password-0123456789"),
        negotiation
            .remote_fingerprint()
            .cloned()
            .expect("fingerprint"),
    );
    let mut received = Vec::new();
    run_until(
        &mut client,
        &mut transport,
        &mut now,
        &mut received,
        |client, transport| {
            let connected = std::iter::from_fn(|| client.poll_event())
                .any(|e| matches!(e, ClientEvent::Connected));
            connected && transport.state() == TransportState::Connected
        },
    );

    // Its audio arrives decrypted, with the payload type our answer took.
    for seq in 0..5u16 {
        let outgoing = Outgoing {
            seq,
            timestamp: u32::from(seq) * 960,
            marker: false,
            frame: None,
            payload: Bytes::from_static(&[0xF8, 0xFF, 0xFE]),
        };
        client.send_rtp(0xA1, outgoing, now).expect("sent");
    }
    run_until(
        &mut client,
        &mut transport,
        &mut now,
        &mut received,
        |_, _| true,
    );
    let audio: Vec<_> = received
        .iter()
        .map(|p| rtp_header(p))
        .filter(|(_, _, ssrc)| *ssrc == 0xA1)
        .collect();
    assert_eq!(audio.len(), 5, "every packet arrived");
    assert!(
        audio
            .iter()
            .all(|(pt, _, _)| *pt == published[0].formats[0].payload_type)
    );

    // The SFU forwards someone's audio to it: our offer, its answer, our packet.
    let mid = negotiation.add_sending(Codec::Opus, false, 0xC1, "bob", "bob-audio");
    let sfu_offer = negotiation.create_offer().expect("an offer");
    assert!(sfu_offer.contains("a=setup:actpass"));
    let client_answer = client.accept_offer(&sfu_offer, now).expect("its answer");
    let sending = negotiation
        .accept_answer(&client_answer)
        .expect("its answer taken");
    assert_eq!(sending.len(), 1);
    assert_eq!(sending[0].mid, mid);
    let (format, _, extensions) = sending[0].accepted.expect("accepted");
    let mid_id = extensions.mid.expect("sdes:mid negotiated");
    let mut opened = false;
    let mut arrived = 0;
    for seq in 0..5u16 {
        let mut packet = rtp_with_extension(format.payload_type, seq, 0xC1, mid_id, mid.as_bytes());
        transport.protect_rtp(&mut packet).expect("protected");
        let _ = client.handle_datagram(now, SFU.parse().expect("address"), &packet);
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::TrackOpened {
                    ssrc, stream_id, ..
                } => {
                    assert_eq!((ssrc, stream_id.as_str()), (0xC1, "bob"));
                    opened = true;
                }
                ClientEvent::Rtp(packet) => {
                    assert_eq!(packet.header.ssrc, 0xC1);
                    arrived += 1;
                }
                _ => {}
            }
        }
    }
    assert!(opened, "the participant's stack opened the forwarded track");
    assert_eq!(arrived, 5);
}

/// An offer laid out as Chromium writes one: audio with Opus, RED and codecs the SFU
/// does not take, simulcast video in three layers with VP8, VP9 and H.264 profiles, a
/// data channel.
fn chromium_style_offer() -> String {
    let fingerprint = format!("sha-256 {}", vec!["4A"; 32].join(":"));
    let lines = [
        "v=0".to_owned(),
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1".to_owned(),
        "s=-".to_owned(),
        "t=0 0".to_owned(),
        "a=group:BUNDLE 0 1 2".to_owned(),
        "a=extmap-allow-mixed".to_owned(),
        "a=msid-semantic: WMS stream".to_owned(),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126".to_owned(),
        "c=IN IP4 0.0.0.0".to_owned(),
        "a=rtcp:9 IN IP4 0.0.0.0".to_owned(),
        "a=ice-ufrag:Ch7r".to_owned(),
        "a=ice-pwd:chromiumPasswordOf24Chars".to_owned(),
        "a=ice-options:trickle".to_owned(),
        format!("a=fingerprint:{fingerprint}"),
        "a=setup:actpass".to_owned(),
        "a=mid:0".to_owned(),
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level".to_owned(),
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".to_owned(),
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            .to_owned(),
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid".to_owned(),
        "a=sendrecv".to_owned(),
        "a=msid:stream audio-track".to_owned(),
        "a=rtcp-mux".to_owned(),
        "a=rtcp-rsize".to_owned(),
        "a=rtpmap:111 opus/48000/2".to_owned(),
        "a=rtcp-fb:111 transport-cc".to_owned(),
        "a=fmtp:111 minptime=10;useinbandfec=1".to_owned(),
        "a=rtpmap:63 red/48000/2".to_owned(),
        "a=fmtp:63 111/111".to_owned(),
        "a=rtpmap:9 G722/8000".to_owned(),
        "a=rtpmap:0 PCMU/8000".to_owned(),
        "a=rtpmap:8 PCMA/8000".to_owned(),
        "a=rtpmap:13 CN/8000".to_owned(),
        "a=rtpmap:110 telephone-event/48000".to_owned(),
        "a=rtpmap:126 telephone-event/8000".to_owned(),
        "a=ssrc:1001 cname:chromecname".to_owned(),
        "a=ssrc:1001 msid:stream audio-track".to_owned(),
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 35 36".to_owned(),
        "c=IN IP4 0.0.0.0".to_owned(),
        "a=ice-ufrag:Ch7r".to_owned(),
        "a=ice-pwd:chromiumPasswordOf24Chars".to_owned(),
        format!("a=fingerprint:{fingerprint}"),
        "a=setup:actpass".to_owned(),
        "a=mid:1".to_owned(),
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            .to_owned(),
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid".to_owned(),
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id".to_owned(),
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id".to_owned(),
        "a=extmap:13 urn:3gpp:video-orientation".to_owned(),
        "a=sendonly".to_owned(),
        "a=msid:stream video-track".to_owned(),
        "a=rtcp-mux".to_owned(),
        "a=rtcp-rsize".to_owned(),
        "a=rtpmap:96 VP8/90000".to_owned(),
        "a=rtcp-fb:96 goog-remb".to_owned(),
        "a=rtcp-fb:96 transport-cc".to_owned(),
        "a=rtcp-fb:96 ccm fir".to_owned(),
        "a=rtcp-fb:96 nack".to_owned(),
        "a=rtcp-fb:96 nack pli".to_owned(),
        "a=rtpmap:97 rtx/90000".to_owned(),
        "a=fmtp:97 apt=96".to_owned(),
        "a=rtpmap:98 VP9/90000".to_owned(),
        "a=fmtp:98 profile-id=0".to_owned(),
        "a=rtpmap:99 rtx/90000".to_owned(),
        "a=fmtp:99 apt=98".to_owned(),
        "a=rtpmap:100 H264/90000".to_owned(),
        "a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"
            .to_owned(),
        "a=rtpmap:101 rtx/90000".to_owned(),
        "a=fmtp:101 apt=100".to_owned(),
        "a=rtpmap:35 H264/90000".to_owned(),
        "a=fmtp:35 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        "a=rtpmap:36 rtx/90000".to_owned(),
        "a=fmtp:36 apt=35".to_owned(),
        "a=rid:q send".to_owned(),
        "a=rid:h send".to_owned(),
        "a=rid:f send".to_owned(),
        "a=simulcast:send q;h;f".to_owned(),
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel".to_owned(),
        "c=IN IP4 0.0.0.0".to_owned(),
        "a=mid:2".to_owned(),
        "a=sctp-port:5000".to_owned(),
    ];
    lines.join("\r\n") + "\r\n"
}

#[test]
fn a_chromium_style_offer_is_answered_in_its_own_numbers_with_simulcast_and_no_data() {
    let identity = DtlsIdentity::generate().expect("identity");
    let mut negotiation = Negotiation::new(local(&identity), 7);
    let answer = negotiation
        .accept_offer(&chromium_style_offer())
        .expect("answered");
    let sdp = &answer.sdp;
    assert_eq!(answer.remote_ufrag, "Ch7r");
    let published = &answer.published;
    assert_eq!(
        published.len(),
        2,
        "audio and video; the data channel refused"
    );

    // Audio: RED and Opus in Chromium's numbers, nothing else.
    assert!(
        sdp.contains("m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\n"),
        "{sdp}"
    );
    assert_eq!(published[0].red_payload_type, Some(63));
    assert_eq!(published[0].extensions.audio_level, Some(1));
    assert_eq!(published[0].extensions.transport_cc, Some(3));
    assert_eq!(published[0].extensions.mid, Some(4));
    assert!(!sdp.contains("G722") && !sdp.contains("telephone-event"));
    assert!(
        !sdp.contains("abs-send-time"),
        "an extension we do not read"
    );

    // Video: VP8 and the packetization-mode-1 H.264, each with its RTX; not VP9, not
    // mode 0; three layers received.
    assert!(
        sdp.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97 35 36\r\n"),
        "{sdp}"
    );
    let video = &published[1];
    assert_eq!(
        video.formats,
        vec![
            Format {
                codec: Codec::Vp8,
                payload_type: 96,
                rtx_payload_type: Some(97)
            },
            Format {
                codec: Codec::H264,
                payload_type: 35,
                rtx_payload_type: Some(36)
            },
        ]
    );
    assert_eq!(video.rids, vec!["q", "h", "f"]);
    assert_eq!(video.extensions.rid, Some(10));
    assert_eq!(video.extensions.repaired_rid, Some(11));
    assert_eq!(video.extensions.audio_level, None);
    assert!(sdp.contains("a=rid:q recv\r\n") && sdp.contains("a=simulcast:recv q;h;f\r\n"));
    assert!(!sdp.contains("goog-remb") && !sdp.contains("video-orientation"));
    assert!(sdp.contains("a=recvonly"));

    // The data channel: port 0, still in order; not in the bundle.
    assert!(sdp.contains("m=application 0 "), "{sdp}");
    assert!(sdp.contains("a=group:BUNDLE 0 1\r\n"));
    // Our answer parses, and has our ICE and DTLS parameters.
    let parsed = parse(sdp).expect("our answer parses");
    assert_eq!(parsed.media_descriptions.len(), 3);
    assert!(sdp.contains(&format!("a=fingerprint:{}", identity.fingerprint())));
    assert!(sdp.contains("a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host"));

    // The SFU's offers keep Chromium's numbers: H.264 goes out as 35 with RTX 36, VP8 as
    // 96, and a new extension takes a free id.
    negotiation.add_sending(Codec::H264, false, 0x5000, "bob", "bob-video");
    negotiation.add_sending(Codec::Opus, true, 0x6000, "bob", "bob-audio");
    let offer = negotiation.create_offer().expect("an offer");
    assert!(
        offer.contains("m=video 9 UDP/TLS/RTP/SAVPF 35 36\r\n"),
        "{offer}"
    );
    assert!(
        offer.contains("m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\n"),
        "{offer}"
    );
    assert!(offer.contains("a=ssrc-group:FID 20480 20481"));
    let parsed = parse(&offer).expect("our offer parses");
    assert_eq!(parsed.media_descriptions.len(), 5);
    // The forwarded video carries transport-cc and mid under Chromium's ids, and no
    // dependency descriptor or simulcast ids (a subscriber sees one plain stream).
    let ids: Vec<(String, u8)> = extmaps(&parsed.media_descriptions[3]);
    assert!(ids.contains(&(TRANSPORT_CC_URI.to_owned(), 3)), "{ids:?}");
    assert!(ids.contains(&(SDES_MID_URI.to_owned(), 4)), "{ids:?}");
    assert!(
        ids.iter().all(|(uri, _)| uri != DEPENDENCY_DESCRIPTOR_URI
            && uri != SDES_RTP_STREAM_ID_URI
            && uri != AUDIO_LEVEL_URI),
        "{ids:?}"
    );
    let audio: Vec<(String, u8)> = extmaps(&parsed.media_descriptions[4]);
    assert!(
        audio.contains(&(AUDIO_LEVEL_URI.to_owned(), 1)),
        "{audio:?}"
    );
}

#[test]
fn offers_missing_what_a_session_needs_or_not_sdp_are_refused() {
    let identity = DtlsIdentity::generate().expect("identity");
    let good = chromium_style_offer();
    for (what, bad) in [
        ("not SDP", "hello".to_owned()),
        ("empty", String::new()),
        (
            "no fingerprint",
            good.lines()
                .filter(|l| !l.starts_with("a=fingerprint"))
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n",
        ),
        (
            "no ufrag",
            good.lines()
                .filter(|l| !l.starts_with("a=ice-ufrag"))
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n",
        ),
        ("no mid", good.replace("a=mid:1\r\n", "")),
        ("no rtcp-mux", good.replace("a=rtcp-mux\r\n", "")),
        (
            "passive",
            good.replace("a=setup:actpass", "a=setup:passive"),
        ),
        ("md5", good.replace("sha-256", "md5")),
    ] {
        let mut negotiation = Negotiation::new(local(&identity), 7);
        assert!(negotiation.accept_offer(&bad).is_err(), "{what}");
        // Nothing half-applied: the session is still empty.
        assert!(negotiation.published().is_empty(), "{what}");
    }
    // Every truncation of a good offer: an answer or an error, never a panic.
    for len in (0..good.len()).step_by(7) {
        let mut negotiation = Negotiation::new(local(&identity), 7);
        let _ = negotiation.accept_offer(&good[..len]);
    }
    // An answer with no offer of ours, and a certificate that changes mid-session.
    let mut negotiation = Negotiation::new(local(&identity), 7);
    assert!(negotiation.accept_answer(&good).is_err());
    negotiation.accept_offer(&good).expect("answered");
    let other = good.replace(&vec!["4A"; 32].join(":"), &vec!["4B"; 32].join(":"));
    assert!(negotiation.accept_offer(&other).is_err());
    assert_eq!(negotiation.published().len(), 2, "the session as it was");
}

#[test]
fn a_receive_only_section_is_answered_inactive_but_whole() {
    let identity = DtlsIdentity::generate().expect("identity");
    let mut negotiation = Negotiation::new(local(&identity), 7);
    // A listener: its video section only receives, its audio section is gone.
    let offer = chromium_style_offer()
        .replace("a=sendonly\r\n", "a=recvonly\r\n")
        .replace("m=audio 9 ", "m=audio 0 ");
    let answer = negotiation.accept_offer(&offer).expect("answered");
    assert!(answer.published.is_empty(), "nothing published");
    let parsed = parse(&answer.sdp).expect("parses");
    let video = &parsed.media_descriptions[1];
    assert_eq!(video.media_name.port.value, 9, "kept, not rejected");
    assert!(video.has_attribute("inactive"));
    assert!(video.has_attribute("ice-ufrag") && video.has_attribute("fingerprint"));
    assert!(
        answer.sdp.contains("a=group:BUNDLE 1\r\n"),
        "{}",
        answer.sdp
    );
    assert_eq!(parsed.media_descriptions[0].media_name.port.value, 0);
}
