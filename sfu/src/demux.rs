//! Telling apart what arrives on the SFU's one UDP port, sans-IO: RFC 7983 §7 sorts a
//! datagram by its first byte (STUN, DTLS, RTP/RTCP), and a STUN binding request's
//! USERNAME (`<our ufrag>:<their ufrag>`, RFC 8445 §7.2.2) names the leg it is for. The
//! driver uses this for a datagram from an address it has not seen; after that the
//! 5-tuple is enough.

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, is_stun_message};

/// What kind of packet a datagram holds (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (first byte 0–3).
    Stun,
    /// DTLS (first byte 20–63).
    Dtls,
    /// RTP, SRTP-protected (first byte 128–191, payload type outside 64–95).
    Rtp,
    /// RTCP, SRTCP-protected (first byte 128–191, packet type 192–223: RFC 5761 §4).
    Rtcp,
    /// Anything else: dropped and counted.
    Unknown,
}

/// Classifies a datagram by its first byte (RFC 7983), and RTP from RTCP by the second
/// (RFC 5761 §4: with rtcp-mux, RTCP packet types 192–223 never collide with the RTP
/// payload types a leg negotiates, which stay in 96–127 or below 64). Cheap enough for
/// every datagram; it validates nothing beyond those bytes.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => match datagram.get(1) {
            Some(192..=223) => DatagramKind::Rtcp,
            _ => DatagramKind::Rtp,
        },
        _ => DatagramKind::Unknown,
    }
}

/// The local ufrag a STUN message's USERNAME names (the part before `:`), if the
/// datagram is a well-formed STUN message with one.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<String> {
    if !is_stun_message(datagram) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = String::from_utf8(username).ok()?;
    let (local, _remote) = username.split_once(':')?;
    (!local.is_empty()).then(|| local.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::crypto::default_provider;
    use rtc::ice::attributes::control::AttrControlling;
    use rtc::ice::attributes::priority::PriorityAttr;
    use rtc::ice::attributes::use_candidate::UseCandidateAttr;
    use rtc::shared::marshal::Marshal;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Setter, TransactionId};
    use rtc::stun::textattrs::TextAttribute;

    /// A connectivity check as a full ICE agent (a browser, the engine) sends it to an
    /// ICE-lite leg: USERNAME, ICE-CONTROLLING, PRIORITY, USE-CANDIDATE, then
    /// MESSAGE-INTEGRITY keyed by the leg's password, then FINGERPRINT.
    fn connectivity_check(username: &str, password: &str) -> Vec<u8> {
        let provider = default_provider().unwrap();
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
            Box::new(AttrControlling(0x1234_5678_9abc_def0)),
            Box::new(PriorityAttr(2_130_706_431)),
            Box::new(UseCandidateAttr),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                password.to_owned(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        message.build(&setters).unwrap();
        message.raw.clone()
    }

    #[test]
    fn a_full_connectivity_check_names_its_leg() {
        let datagram = connectivity_check("sfuUfrag:peerUfrag", "a-password-of-22-chars+");
        assert_eq!(classify(&datagram), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&datagram).as_deref(), Some("sfuUfrag"));
        // The ufrag is read without the password: checking it is the leg's job.
        let wrong = connectivity_check("sfuUfrag:peerUfrag", "someone-else's-password");
        assert_eq!(stun_local_ufrag(&wrong).as_deref(), Some("sfuUfrag"));
    }

    #[test]
    fn a_stun_response_names_no_leg() {
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> =
            vec![Box::new(BINDING_SUCCESS), Box::new(TransactionId::new())];
        message.build(&setters).unwrap();
        assert_eq!(classify(&message.raw), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&message.raw), None);
    }

    #[test]
    fn rtp_and_rtcp_are_told_apart() {
        let rtp = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: true,
                payload_type: 111,
                sequence_number: 7,
                ssrc: 42,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0xF8, 1, 2]),
        };
        assert_eq!(classify(&rtp.marshal().unwrap()), DatagramKind::Rtp);
        let video = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                payload_type: 96,
                ..rtp.header.clone()
            },
            ..rtp
        };
        assert_eq!(classify(&video.marshal().unwrap()), DatagramKind::Rtp);

        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 42,
        };
        assert_eq!(classify(&pli.marshal().unwrap()), DatagramKind::Rtcp);
        let report = rtc::rtcp::receiver_report::ReceiverReport {
            ssrc: 1,
            ..Default::default()
        };
        assert_eq!(classify(&report.marshal().unwrap()), DatagramKind::Rtcp);
        let sender_report = rtc::rtcp::sender_report::SenderReport {
            ssrc: 1,
            ..Default::default()
        };
        assert_eq!(
            classify(&sender_report.marshal().unwrap()),
            DatagramKind::Rtcp
        );
    }

    fn binding_request(username: &str) -> Vec<u8> {
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        ];
        message.build(&setters).unwrap();
        message.raw.clone()
    }

    #[test]
    fn a_binding_request_names_its_leg_by_the_local_ufrag() {
        let datagram = binding_request("sfuUfrag:peerUfrag");
        assert_eq!(classify(&datagram), DatagramKind::Stun);
        assert_eq!(stun_local_ufrag(&datagram).as_deref(), Some("sfuUfrag"));
    }

    #[test]
    fn garbage_and_truncated_stun_name_no_leg() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0, 1, 0, 0]), None);
        let mut datagram = binding_request("a:b");
        datagram.truncate(datagram.len() - 3);
        assert_eq!(stun_local_ufrag(&datagram), None);
        assert_eq!(stun_local_ufrag(&binding_request(":b")), None);
        assert_eq!(stun_local_ufrag(&binding_request("nocolon")), None);
        assert_eq!(classify(&[0x80, 0]), DatagramKind::Rtp);
        assert_eq!(classify(&[22, 254, 253]), DatagramKind::Dtls);
        assert_eq!(classify(&[200]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
    }
}
