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
    /// RTP or RTCP, SRTP-protected (first byte 128–191).
    Rtp,
    /// Anything else: dropped and counted.
    Unknown,
}

/// Classifies a datagram by its first byte.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
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
    use rtc::stun::message::{BINDING_REQUEST, Setter, TransactionId};
    use rtc::stun::textattrs::TextAttribute;

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
