//! ICE-lite's answer to a connectivity check (RFC 8445 §2.5 and §7.3), sans-IO, for the
//! transport the SFU is to own (issue 19): a lite agent never checks, it only answers the
//! full agent's binding requests, and learns from them which address the peer uses and
//! whether the pair is nominated. Today's legs leave this to rtc's agent; this is the same
//! job without a peer connection around it.
//!
//! A request is answered only when it is a STUN binding request whose FINGERPRINT holds,
//! whose USERNAME is `<our ufrag>:<theirs>` and whose MESSAGE-INTEGRITY is keyed by our
//! password (RFC 8445 §7.3, RFC 5389 §10.1.2). Anything else is an error for the caller to
//! count, never a panic.

use std::net::SocketAddr;

use rtc::crypto::RTCCrypto;
use rtc::stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, is_stun_message};
use rtc::stun::xoraddr::XorMappedAddress;

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Not a STUN message, or one that does not parse.
    #[error("not a STUN message")]
    NotStun,
    /// STUN, but not a binding request (a response, an indication, another method).
    #[error("not a binding request")]
    NotABindingRequest,
    /// No FINGERPRINT, or one that does not match.
    #[error("missing or wrong FINGERPRINT")]
    Fingerprint,
    /// No USERNAME, or one that does not name us as `<our ufrag>:<theirs>`.
    #[error("USERNAME does not name this transport")]
    Username,
    /// No MESSAGE-INTEGRITY, or one not keyed by our password.
    #[error("MESSAGE-INTEGRITY does not match")]
    Integrity,
    /// The peer says it is controlled too: a lite agent is always controlled.
    #[error("role conflict: the peer is not controlling")]
    RoleConflict,
    /// The answer could not be built.
    #[error("could not build the response")]
    Build,
}

/// A connectivity check that passed, and what to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The binding success response, ready for the wire.
    pub response: Vec<u8>,
    /// The peer's ufrag (the part of USERNAME after `:`).
    pub remote_ufrag: String,
    /// USE-CANDIDATE was present: the controlling peer nominates this pair.
    pub nominated: bool,
}

/// Our side of ICE: the ufrag and password our description advertised.
#[derive(Clone)]
pub struct LiteAgent {
    ufrag: String,
    password: String,
}

impl std::fmt::Debug for LiteAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches logs.
        f.debug_struct("LiteAgent")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

impl LiteAgent {
    /// An agent with these credentials.
    pub fn new(ufrag: impl Into<String>, password: impl Into<String>) -> LiteAgent {
        LiteAgent {
            ufrag: ufrag.into(),
            password: password.into(),
        }
    }

    /// Checks `datagram`, a connectivity check that came from `from`, and builds the
    /// answer: a binding success with XOR-MAPPED-ADDRESS = `from`, MESSAGE-INTEGRITY under
    /// our password and FINGERPRINT (RFC 8445 §7.3.1.4).
    pub fn answer(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        crypto: &dyn RTCCrypto,
    ) -> Result<Answered, CheckError> {
        if !is_stun_message(datagram) {
            return Err(CheckError::NotStun);
        }
        let mut request = Message::new();
        request
            .unmarshal_binary(datagram)
            .map_err(|_| CheckError::NotStun)?;
        if request.typ != BINDING_REQUEST {
            return Err(CheckError::NotABindingRequest);
        }
        FINGERPRINT
            .check(&request)
            .map_err(|_| CheckError::Fingerprint)?;
        let username = request
            .get(ATTR_USERNAME)
            .map_err(|_| CheckError::Username)?;
        let username = String::from_utf8(username).map_err(|_| CheckError::Username)?;
        let remote_ufrag = match username.split_once(':') {
            Some((local, remote)) if local == self.ufrag && !remote.is_empty() => remote,
            _ => return Err(CheckError::Username),
        };
        MessageIntegrity::check(&mut request, self.password.as_bytes(), crypto)
            .map_err(|_| CheckError::Integrity)?;
        if !request.contains(ATTR_ICE_CONTROLLING) {
            return Err(CheckError::RoleConflict);
        }
        let nominated = request.contains(ATTR_USE_CANDIDATE);

        let mut response = Message::new();
        let mapped = XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        };
        let integrity =
            MessageIntegrity::new_short_term_integrity_with_provider(self.password.clone(), crypto);
        let setters: [&dyn Setter; 5] = [
            &BINDING_SUCCESS,
            &request.transaction_id,
            &mapped,
            &integrity,
            &FINGERPRINT,
        ];
        response.write_header();
        for setter in setters {
            setter
                .add_to(&mut response)
                .map_err(|_| CheckError::Build)?;
        }
        Ok(Answered {
            response: response.raw,
            remote_ufrag: remote_ufrag.to_owned(),
            nominated,
        })
    }
}

/// A connectivity check as a full ICE agent sends it (RFC 8445 §7.2.2): USERNAME
/// (`<their ufrag>:<ours>`), ICE-CONTROLLING or ICE-CONTROLLED, PRIORITY, USE-CANDIDATE
/// when `nominate`, MESSAGE-INTEGRITY under `password` (the answering side's), then
/// FINGERPRINT. For the SFU's tests and its load generator's participants.
pub fn connectivity_check(
    username: &str,
    password: &str,
    controlling: bool,
    nominate: bool,
    crypto: &dyn RTCCrypto,
) -> Result<Vec<u8>, CheckError> {
    use rtc::stun::attributes::{ATTR_ICE_CONTROLLED, ATTR_PRIORITY};
    use rtc::stun::message::TransactionId;
    use rtc::stun::textattrs::TextAttribute;
    let mut message = Message::new();
    message.typ = BINDING_REQUEST;
    message.transaction_id = TransactionId::new();
    message.write_header();
    TextAttribute::new(ATTR_USERNAME, username.to_owned())
        .add_to(&mut message)
        .map_err(|_| CheckError::Build)?;
    let role = if controlling {
        ATTR_ICE_CONTROLLING
    } else {
        ATTR_ICE_CONTROLLED
    };
    message.add(role, &0x1234_5678_9abc_def0u64.to_be_bytes());
    message.add(ATTR_PRIORITY, &2_130_706_431u32.to_be_bytes());
    if nominate {
        message.add(ATTR_USE_CANDIDATE, &[]);
    }
    MessageIntegrity::new_short_term_integrity_with_provider(password.to_owned(), crypto)
        .add_to(&mut message)
        .map_err(|_| CheckError::Build)?;
    FINGERPRINT
        .add_to(&mut message)
        .map_err(|_| CheckError::Build)?;
    Ok(message.raw)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rtc::crypto::default_provider;
    use rtc::stun::attributes::ATTR_MESSAGE_INTEGRITY;
    use rtc::stun::attributes::ATTR_XORMAPPED_ADDRESS;
    use rtc::stun::message::Getter;

    const UFRAG: &str = "sfuUfrag";
    const PASSWORD: &str = "a-password-of-22-chars+";

    /// A check as a browser's full agent sends it.
    pub(crate) fn check(
        username: &str,
        password: &str,
        controlling: bool,
        nominate: bool,
    ) -> Vec<u8> {
        let provider = default_provider().expect("crypto");
        connectivity_check(username, password, controlling, nominate, provider.crypto())
            .expect("a check")
    }

    fn from() -> SocketAddr {
        "10.0.0.2:40000".parse().expect("address")
    }

    #[test]
    fn a_browser_s_check_is_answered_with_its_address_under_our_password() {
        let provider = default_provider().expect("crypto");
        let agent = LiteAgent::new(UFRAG, PASSWORD);
        let request = check("sfuUfrag:peer", PASSWORD, true, true);
        let answered = agent
            .answer(&request, from(), provider.crypto())
            .expect("answered");
        assert_eq!(answered.remote_ufrag, "peer");
        assert!(answered.nominated);

        let mut response = Message::new();
        response
            .unmarshal_binary(&answered.response)
            .expect("a STUN message");
        assert_eq!(response.typ, BINDING_SUCCESS);
        let mut parsed_request = Message::new();
        parsed_request.unmarshal_binary(&request).expect("parse");
        assert_eq!(response.transaction_id, parsed_request.transaction_id);
        FINGERPRINT.check(&response).expect("fingerprint");
        MessageIntegrity::check(&mut response, PASSWORD.as_bytes(), provider.crypto())
            .expect("integrity under our password");
        assert!(response.contains(ATTR_XORMAPPED_ADDRESS));
        assert!(response.contains(ATTR_MESSAGE_INTEGRITY));
        let mut mapped = XorMappedAddress {
            ip: "0.0.0.0".parse().expect("ip"),
            port: 0,
        };
        mapped.get_from(&response).expect("XOR-MAPPED-ADDRESS");
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from());

        // Without USE-CANDIDATE: answered, not nominated.
        let plain = check("sfuUfrag:peer", PASSWORD, true, false);
        let answered = agent
            .answer(&plain, from(), provider.crypto())
            .expect("answered");
        assert!(!answered.nominated);
    }

    #[test]
    fn checks_for_others_forged_or_malformed_get_no_answer() {
        let provider = default_provider().expect("crypto");
        let crypto = provider.crypto();
        let agent = LiteAgent::new(UFRAG, PASSWORD);
        let wrong_password = check("sfuUfrag:peer", "someone-else's-password", true, true);
        assert_eq!(
            agent.answer(&wrong_password, from(), crypto),
            Err(CheckError::Integrity)
        );
        let other_ufrag = check("otherUfrag:peer", PASSWORD, true, true);
        assert_eq!(
            agent.answer(&other_ufrag, from(), crypto),
            Err(CheckError::Username)
        );
        let no_remote = check("sfuUfrag:", PASSWORD, true, true);
        assert_eq!(
            agent.answer(&no_remote, from(), crypto),
            Err(CheckError::Username)
        );
        let controlled = check("sfuUfrag:peer", PASSWORD, false, false);
        assert_eq!(
            agent.answer(&controlled, from(), crypto),
            Err(CheckError::RoleConflict)
        );
        // A flipped bit anywhere: FINGERPRINT (or the STUN framing) catches it.
        let good = check("sfuUfrag:peer", PASSWORD, true, true);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(agent.answer(&bad, from(), crypto).is_err(), "byte {i}");
        }
        // Every truncation.
        for len in 0..good.len() {
            assert!(
                agent.answer(&good[..len], from(), crypto).is_err(),
                "{len} bytes"
            );
        }
        // Our own answer is not a request.
        let answered = agent.answer(&good, from(), crypto).expect("answered");
        assert_eq!(
            agent.answer(&answered.response, from(), crypto),
            Err(CheckError::NotABindingRequest)
        );
        // Not STUN at all: DTLS and RTP first bytes.
        assert_eq!(
            agent.answer(&[22, 254, 253, 0, 0], from(), crypto),
            Err(CheckError::NotStun)
        );
        assert_eq!(
            agent.answer(&[0x80; 40], from(), crypto),
            Err(CheckError::NotStun)
        );
        // The password stays out of debug output.
        assert!(!format!("{agent:?}").contains(PASSWORD));
    }
}
