//! The leg's unit tests: negotiation (SDP in and out) and a whole connection against
//! rtc's own full-ICE peer connection in memory, with an injected clock.

mod negotiation {
    use super::super::*;

    fn leg() -> Leg {
        Leg::new("127.0.0.1:5000".parse().unwrap(), Instant::now()).unwrap()
    }

    #[test]
    fn malformed_offers_are_refused_without_panicking() {
        let now = Instant::now();
        for garbage in [
            "",
            "garbage",
            "v=0\r\n",
            "v=0\r\no=- 1 1 IN IP4 x\r\nm=audio",
        ] {
            let mut leg = leg();
            assert!(
                matches!(leg.accept_offer(garbage, now), Err(LegError::BadSdp(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn an_sfu_offer_carries_every_codec_extension_and_feedback() {
        let now = Instant::now();
        let mut leg = leg();
        leg.add_send_track_with_codec(Codec::Opus, "alice", "alice-a", 1)
            .unwrap();
        leg.add_send_track_with_codec(Codec::Vp8, "alice", "alice-v", 2)
            .unwrap();
        // A send track's m-line lists only its own codec (rtc takes the codecs from the
        // track), so H.264 needs a track of its own.
        leg.add_send_track_with_codec(Codec::H264, "bob", "bob-v", 3)
            .unwrap();
        let offer = leg.create_offer(now).unwrap();
        for needle in [
            "a=ice-lite",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1",
            "a=rtpmap:96 VP8/90000",
            "a=rtpmap:102 H264/90000",
            "packetization-mode=1",
            "profile-level-id=42e01f",
            "a=rtcp-fb:96 nack\r\n",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 transport-cc",
            "a=rtcp-fb:111 transport-cc",
            AUDIO_LEVEL_URI,
            SDES_MID_URI,
            rtc::sdp::extmap::TRANSPORT_CC_URI,
            rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
            rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
            "a=sendonly",
            "a=rtcp-mux",
            "a=group:BUNDLE",
        ] {
            assert!(offer.contains(needle), "{needle} missing from\n{offer}");
        }
    }

    /// A browser-like offer (rtc's default codecs: Opus, VP8, VP9, H.264 in several
    /// profiles, AV1, ...) with audio and video to publish: the answer keeps the SFU's
    /// codecs at the offer's payload types, with their feedback.
    #[test]
    fn a_video_offer_is_answered_with_vp8_and_h264() {
        let now = Instant::now();
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        let mut browser = RTCPeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .build(now)
            .unwrap();
        for (kind, ssrc) in [(RtpCodecKind::Audio, 10), (RtpCodecKind::Video, 20)] {
            browser
                .add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        send_encodings: vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                ssrc: Some(ssrc),
                                ..Default::default()
                            },
                            ..Default::default()
                        }],
                    }),
                )
                .unwrap();
        }
        let offer = browser.create_offer(None).unwrap();
        browser.set_local_description(now, offer.clone()).unwrap();

        let answer = leg().accept_offer(&offer.sdp, now).unwrap();
        for needle in [
            "m=audio",
            "m=video",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:96 VP8/90000",
            // At the offer's payload type for the matching profile, as RFC 3264 wants.
            " H264/90000",
            "packetization-mode=1;profile-level-id=42e01f",
            "a=rtcp-fb:96 nack pli",
            "a=recvonly",
            "a=candidate:",
            "a=end-of-candidates",
        ] {
            assert!(answer.contains(needle), "{needle} missing from\n{answer}");
        }
    }
}

/// A leg against rtc's own full-ICE peer connection, entirely in memory with an injected
/// clock: no sockets, no tokio, no sleeps.
mod sans_io {
    use std::time::Duration;

    use super::super::*;

    const PARTICIPANT: &str = "10.0.0.2:40000";
    const SFU: &str = "10.0.0.1:5000";

    /// The participant: Opus like the engine's, one sendrecv audio track with `ssrc`.
    fn participant(ssrc: SSRC, now: Instant) -> (RTCPeerConnection, RTCRtpSenderId) {
        let (media_engine, registry, _) = media_engine().unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .unwrap();
        let track = MediaStreamTrack::new(
            "p".to_owned(),
            "p-audio".to_owned(),
            "mic".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: Codec::Opus.rtp_codec(),
                ..Default::default()
            }],
        );
        let sender = pc.add_track(track).unwrap();
        (pc, sender)
    }

    /// Our own ICE-lite answers in place of the leg's: each binding request the
    /// participant sends is answered by `agent` (and still reaches the leg, which goes on
    /// to DTLS), and the leg's own binding responses are dropped. Counts our answers.
    /// (Ours came out byte for byte the same as the leg's when compared.)
    struct OurIce {
        agent: crate::ice_lite::LiteAgent,
        answered: usize,
    }

    fn to_participant(pc: &mut RTCPeerConnection, leg: &Leg, now: Instant, payload: BytesMut) {
        let participant: SocketAddr = PARTICIPANT.parse().unwrap();
        let _ = pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: participant,
                peer_addr: leg.local_addr(),
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: payload,
        });
    }

    /// Moves every queued datagram between the two, both ways, until neither has any.
    fn exchange(
        pc: &mut RTCPeerConnection,
        leg: &mut Leg,
        now: Instant,
        mut ice: Option<&mut OurIce>,
    ) {
        let participant: SocketAddr = PARTICIPANT.parse().unwrap();
        let provider = rtc::crypto::default_provider().unwrap();
        loop {
            let mut moved = false;
            while let Some(datagram) = pc.poll_write() {
                moved = true;
                assert_eq!(datagram.transport.peer_addr, leg.local_addr());
                if let Some(ours) = ice.as_deref_mut()
                    && let Ok(answered) =
                        ours.agent
                            .answer(&datagram.message, participant, provider.crypto())
                {
                    ours.answered += 1;
                    to_participant(pc, leg, now, BytesMut::from(&answered.response[..]));
                }
                let _ = leg.handle_datagram(now, participant, &datagram.message);
            }
            while let Some(transmit) = leg.poll_transmit() {
                moved = true;
                assert_eq!(transmit.to, participant);
                // A binding success response (0x0101): ours went instead. (rtc's lite
                // agent also sends checks of its own; those pass.)
                let leg_answer = transmit.payload.starts_with(&[0x01, 0x01]);
                if ice.is_some() && leg_answer {
                    continue;
                }
                to_participant(pc, leg, now, transmit.payload);
            }
            while pc.poll_event().is_some() {}
            while pc.poll_read().is_some() {}
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn a_full_ice_peer_connects_and_its_rtp_arrives_with_injected_time() {
        connects_and_rtp_arrives(false);
    }

    /// rtc's full ICE agent accepts `ice_lite::LiteAgent`'s answers (issue 19's transport):
    /// with every binding response the participant gets coming from it, the connection
    /// comes up and the media arrives as with the leg's own.
    #[test]
    fn a_full_ice_peer_connects_on_our_ice_lite_answers() {
        connects_and_rtp_arrives(true);
    }

    fn connects_and_rtp_arrives(our_ice: bool) {
        let mut now = Instant::now();
        let ssrc = 0xA0D1_0000;
        let (mut pc, sender) = participant(ssrc, now);
        let mut leg = Leg::new(SFU.parse().unwrap(), now).unwrap();

        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(now, offer).unwrap();
        pc.add_local_candidate(host_candidate(PARTICIPANT.parse().unwrap()).unwrap())
            .unwrap();
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .unwrap();
        let offer = pc.local_description().unwrap().sdp;
        let answer = leg.accept_offer(&offer, now).unwrap();
        let attribute = |name: &str| {
            answer
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap()
        };
        let mut ice = our_ice.then(|| OurIce {
            agent: crate::ice_lite::LiteAgent::new(
                attribute("a=ice-ufrag:"),
                attribute("a=ice-pwd:"),
            ),
            answered: 0,
        });
        pc.set_remote_description(now, RTCSessionDescription::answer(answer).unwrap())
            .unwrap();

        // Step a fake clock: at most 10 ms at a time, or to the next deadline.
        let mut outputs = Vec::new();
        let mut sent = 0u16;
        let start = now;
        while now.duration_since(start) < Duration::from_secs(10) {
            exchange(&mut pc, &mut leg, now, ice.as_mut());
            while let Some(output) = leg.poll_output() {
                outputs.push(output);
            }
            let connected = outputs.iter().any(|o| matches!(o, LegOutput::Connected));
            if connected && sent < 100 {
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::Header {
                        version: 2,
                        payload_type: OPUS_PAYLOAD_TYPE,
                        sequence_number: sent,
                        timestamp: u32::from(sent) * 960,
                        ssrc,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from(vec![0xF8, sent as u8]),
                };
                pc.rtp_sender(sender)
                    .unwrap()
                    .write_rtp(now, packet)
                    .unwrap();
                sent += 1;
            }
            let rtp = outputs
                .iter()
                .filter(|o| matches!(o, LegOutput::Rtp { .. }))
                .count();
            if rtp == 100 {
                break;
            }
            let step = now + Duration::from_millis(10);
            now = [pc.poll_timeout(), leg.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map_or(step, |due| due.clamp(now, step));
            if pc.poll_timeout().is_some_and(|due| due <= now) {
                pc.handle_timeout(now).unwrap();
            }
            if leg.poll_timeout().is_some_and(|due| due <= now) {
                leg.handle_timeout(now).unwrap();
            }
        }

        assert!(
            outputs.iter().any(|o| matches!(o, LegOutput::Connected)),
            "{outputs:?}"
        );
        assert!(outputs.iter().any(|o| matches!(
            o,
            LegOutput::TrackOpened { ssrc: s, kind: RtpCodecKind::Audio, mid: Some(mid), .. }
                if *s == ssrc && &**mid == "0"
        )));
        let rtp: Vec<&rtc::rtp::Packet> = outputs
            .iter()
            .filter_map(|o| match o {
                LegOutput::Rtp { packet, .. } => Some(packet),
                _ => None,
            })
            .collect();
        assert_eq!(rtp.len(), 100, "no loss on a perfect in-memory link");
        if let Some(ice) = ice {
            assert!(ice.answered > 0, "no check answered by our agent");
        }
        for (i, packet) in rtp.iter().enumerate() {
            assert_eq!(packet.header.ssrc, ssrc);
            assert_eq!(packet.header.sequence_number, i as u16);
            assert_eq!(&packet.payload[..], &[0xF8, i as u8]);
        }
    }
}
