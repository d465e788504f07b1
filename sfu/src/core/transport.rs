//! One participant's transport, owned by the SFU (issue 19), sans-IO: ICE-lite answers to
//! the participant's connectivity checks ([`LiteAgent`]), DTLS 1.2 as the server
//! (`a=setup:passive`) on rtc-dtls with the peer's certificate checked against the
//! fingerprint its SDP gave, and SRTP/SRTCP keyed once from the DTLS exporter
//! ([`crate::srtp`]). What it owns: which address the participant uses, the handshake, and
//! the SRTP contexts of both directions. What it must not touch: RTP and RTCP contents
//! (the core reads and writes those), rooms and other transports.
//!
//! In: [`Transport::handle_datagram`] with the datagram in a buffer the caller owns; RTP
//! and RTCP come back decrypted in that same buffer. Out: [`Transport::poll_transmit`]
//! for what the transport itself sends (STUN answers, DTLS flights), and
//! [`Transport::protect_rtp`] / [`Transport::protect_rtcp`] encrypt the core's packets in
//! place. Time comes in as `now`; [`Transport::poll_timeout`] says when DTLS wants it.
//!
//! Addresses: media and DTLS are accepted only from an address that passed a
//! connectivity check under our password (RFC 8445 §7.3; an unchecked address could be
//! anyone's). The address sent to is the latest one the participant nominated, or before
//! any nomination the first that passed a check, so a participant that changes network
//! moves the transport with its next nominated check.
//!
//! rtc-dtls keys its associations by remote address; this transport keys its one
//! association by a fixed placeholder ([`DTLS_ASSOCIATION`]) and sends the flights to the
//! selected address itself, so the handshake survives an address change.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;

use crate::demux::{DatagramKind, classify};
use crate::ice_lite::{CheckError, LiteAgent};
use crate::srtp::{self, MasterKey, Profile, Protector, Unprotector};

/// RFC 5764 §4.2's exporter label for SRTP keys.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The key of the transport's one DTLS association inside rtc-dtls's endpoint (see the
/// module comment); never an address anything is sent to.
const DTLS_ASSOCIATION: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9);

/// How long the DTLS association is kept once the handshake is done, unless the peer's
/// media shows sooner that it has our last flight: long enough to answer a client that
/// lost that flight and sends its own again (it retries for seconds, not minutes). After
/// that only SRTP is needed, and the association's state (the handshake's messages and
/// certificates, about 15 KiB) is memory every participant would carry.
pub const DTLS_LINGER: Duration = Duration::from_secs(30);

/// How many distinct checked addresses a transport remembers (a browser checks one pair
/// per local candidate; more than this and the oldest is forgotten).
const MAX_CHECKED_ADDRESSES: usize = 8;

/// The SFU's DTLS identity: one certificate for every transport (as mediasoup's worker
/// has), its fingerprint for the SDP, and the server configuration built once.
#[derive(Clone)]
pub struct DtlsIdentity {
    provider: Arc<dyn RTCCryptoProvider>,
    config: Arc<HandshakeConfig>,
    fingerprint: String,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DtlsIdentity {
    /// A fresh self-signed certificate (ECDSA P-256, rtc's default) and the server
    /// configuration: both SRTP profiles, GCM first as browsers prefer; the client must
    /// present a certificate (its fingerprint is checked after the handshake); extended
    /// master secret required.
    pub fn generate() -> Result<DtlsIdentity, TransportError> {
        let (provider, certificate, fingerprint) = self_signed("sotto-sfu")?;
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider.clone())
            .with_certificates(vec![certificate])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            // Self-signed on both sides: WebRTC trusts the fingerprint from the SDP
            // instead of a chain, checked in `Transport::handshake_complete`.
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(false, None)
            .map_err(TransportError::crypto)?;
        Ok(DtlsIdentity {
            provider,
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// `a=fingerprint:` for the SFU's SDP: `sha-256 AB:CD:…`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The crypto provider (the ICE-lite answers' HMAC comes from it too).
    pub fn provider(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.provider
    }
}

/// rtc's crypto provider, a fresh self-signed certificate for `name`, and its
/// `a=fingerprint` value (`sha-256 AB:CD:…`).
fn self_signed(
    name: &str,
) -> Result<(Arc<dyn RTCCryptoProvider>, Certificate, String), TransportError> {
    let provider = rtc::crypto::default_provider().map_err(TransportError::crypto)?;
    let certificate = Certificate::generate_self_signed(vec![name.to_owned()], provider.crypto())
        .map_err(TransportError::crypto)?;
    let der = certificate
        .certificate
        .first()
        .ok_or_else(|| TransportError::Crypto("no certificate generated".to_owned()))?;
    let fingerprint = format!(
        "sha-256 {}",
        colon_hex(digest::digest(&digest::SHA256, der.as_ref()).as_ref())
    );
    Ok((provider, certificate, fingerprint))
}

/// Uppercase hex pairs joined by `:`, as `a=fingerprint` writes a digest.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate fingerprint a participant's SDP announced (`a=fingerprint:ALG HEX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    algorithm: &'static digest::Algorithm,
    digest: Vec<u8>,
}

impl Fingerprint {
    /// Parses the value of `a=fingerprint:` (`sha-256 AB:CD:…`; sha-256, sha-384 and
    /// sha-512, the hashes browsers use).
    pub fn parse(value: &str) -> Result<Fingerprint, TransportError> {
        let bad = || TransportError::BadFingerprint(value.chars().take(120).collect());
        let (algorithm, hex) = value.trim().split_once(' ').ok_or_else(bad)?;
        let algorithm = match algorithm.to_ascii_lowercase().as_str() {
            "sha-256" => &digest::SHA256,
            "sha-384" => &digest::SHA384,
            "sha-512" => &digest::SHA512,
            _ => return Err(bad()),
        };
        let digest = hex
            .trim()
            .split(':')
            .map(|pair| match pair.len() {
                2 => u8::from_str_radix(pair, 16).map_err(|_| bad()),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if digest.len() != algorithm.output_len() {
            return Err(bad());
        }
        Ok(Fingerprint { algorithm, digest })
    }

    /// Whether `certificate` (DER) is the one announced.
    pub fn matches(&self, certificate: &[u8]) -> bool {
        digest::digest(self.algorithm, certificate).as_ref() == self.digest.as_slice()
    }
}

/// What went wrong. Errors about one datagram leave the transport as it was; the caller
/// drops the datagram and counts it ([`TransportError::counter`]).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A STUN message that is not a valid check for this transport.
    #[error("STUN refused: {0}")]
    Stun(#[from] CheckError),
    /// DTLS, RTP or RTCP from an address that never passed a connectivity check.
    #[error("a packet from an address that did not pass a connectivity check")]
    UncheckedAddress,
    /// A DTLS record rtc-dtls refused (a handshake failure ends the transport).
    #[error("DTLS: {0}")]
    Dtls(String),
    /// The peer's certificate is not the one its SDP announced.
    #[error("the DTLS certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    /// The SDP's fingerprint attribute does not parse.
    #[error("unusable a=fingerprint: {0}")]
    BadFingerprint(String),
    /// DTLS negotiated an SRTP profile this transport does not speak.
    #[error("DTLS negotiated no SRTP profile we support")]
    NoSrtpProfile,
    /// RTP or RTCP before the handshake finished.
    #[error("media before the DTLS handshake completed")]
    NotConnected,
    /// SRTP or SRTCP refused the packet (forged, replayed, truncated).
    #[error("SRTP: {0}")]
    Srtp(#[from] srtp::Error),
    /// A first byte RFC 7983 gives to no protocol we speak.
    #[error("a datagram of no known protocol")]
    Unknown,
    /// The transport has failed or was closed; nothing more is accepted.
    #[error("the transport is closed")]
    Closed,
    /// The crypto library failed to set something up.
    #[error("crypto setup: {0}")]
    Crypto(String),
}

impl TransportError {
    fn crypto(err: impl std::fmt::Display) -> TransportError {
        TransportError::Crypto(err.to_string())
    }

    fn dtls(err: impl std::fmt::Display) -> TransportError {
        TransportError::Dtls(err.to_string())
    }

    /// A stable name for the `/metrics` counter of dropped datagrams.
    pub fn counter(&self) -> &'static str {
        match self {
            TransportError::Stun(_) => "stun",
            TransportError::UncheckedAddress => "unchecked_address",
            TransportError::Dtls(_) => "dtls",
            TransportError::FingerprintMismatch | TransportError::BadFingerprint(_) => {
                "fingerprint"
            }
            TransportError::NoSrtpProfile => "srtp_profile",
            TransportError::NotConnected => "not_connected",
            TransportError::Srtp(srtp::Error::Replay | srtp::Error::TooOld) => "srtp_replay",
            TransportError::Srtp(_) => "srtp",
            TransportError::Unknown => "unknown",
            TransportError::Closed => "closed",
            TransportError::Crypto(_) => "crypto",
        }
    }
}

/// What a datagram turned out to be, once the transport handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// STUN or DTLS, handled here; anything to send back is queued.
    Handled,
    /// The handshake finished with this datagram: media may flow both ways now.
    Connected,
    /// The peer closed DTLS (`close_notify`): the transport is closed.
    Closed,
    /// The buffer now holds a plaintext RTP packet.
    Rtp,
    /// The buffer now holds a plaintext RTCP compound packet.
    Rtcp,
}

/// Where the transport is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// Waiting for connectivity checks and the DTLS handshake.
    Connecting,
    /// SRTP keys in place both ways.
    Connected,
    /// The handshake failed, the fingerprint did not match, or the peer closed.
    Closed,
}

/// A datagram for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// SRTP both ways, once DTLS has finished.
struct Srtp {
    inbound: Unprotector,
    outbound: Protector,
}

/// One participant's ICE-lite + DTLS + SRTP.
pub struct Transport {
    ice: LiteAgent,
    identity: DtlsIdentity,
    remote_fingerprint: Fingerprint,
    /// The DTLS association, until [`DTLS_LINGER`] after the handshake.
    dtls: Option<Endpoint>,
    connected_at: Option<Instant>,
    /// Addresses that passed a check, most recent last.
    checked: Vec<SocketAddr>,
    /// Where to send: the latest nominated address, or the first checked one.
    selected: Option<SocketAddr>,
    nominated: bool,
    remote_ufrag: Option<String>,
    srtp: Option<Srtp>,
    state: TransportState,
    transmits: VecDeque<Transmit>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No addresses and no keys in logs.
        f.debug_struct("Transport")
            .field("ice", &self.ice)
            .field("state", &self.state)
            .field("nominated", &self.nominated)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport answering checks under `ice`'s credentials and taking a DTLS client
    /// whose certificate is `remote_fingerprint`.
    pub fn new(
        identity: &DtlsIdentity,
        ice: LiteAgent,
        remote_fingerprint: Fingerprint,
    ) -> Transport {
        Transport {
            ice,
            identity: identity.clone(),
            remote_fingerprint,
            dtls: Some(Endpoint::new(
                DTLS_ASSOCIATION,
                TransportProtocol::UDP,
                Some(identity.config.clone()),
            )),
            connected_at: None,
            checked: Vec::new(),
            selected: None,
            nominated: false,
            remote_ufrag: None,
            srtp: None,
            state: TransportState::Connecting,
            transmits: VecDeque::new(),
        }
    }

    /// Where it is.
    pub fn state(&self) -> TransportState {
        self.state
    }

    /// The address media goes to, once a check has passed.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// The peer's ufrag, from its first valid check.
    pub fn remote_ufrag(&self) -> Option<&str> {
        self.remote_ufrag.as_deref()
    }

    /// The negotiated SRTP profile, once connected.
    pub fn srtp_profile(&self) -> Option<Profile> {
        self.srtp.as_ref().map(|s| s.outbound.profile())
    }

    /// Handles one datagram that arrived from `from`, in `datagram`. RTP and RTCP are
    /// decrypted in place (the buffer shrinks by the tag); STUN and DTLS are consumed and
    /// may queue datagrams for [`Transport::poll_transmit`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut Vec<u8>,
    ) -> Result<Inbound, TransportError> {
        if self.state == TransportState::Closed {
            return Err(TransportError::Closed);
        }
        match classify(datagram) {
            DatagramKind::Stun => self.handle_stun(from, datagram),
            DatagramKind::Dtls => {
                self.require_checked(from)?;
                self.handle_dtls(now, datagram)
            }
            DatagramKind::Rtp => {
                self.require_checked(from)?;
                let srtp = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
                srtp.inbound.unprotect_rtp(datagram)?;
                self.dtls = None;
                Ok(Inbound::Rtp)
            }
            DatagramKind::Rtcp => {
                self.require_checked(from)?;
                let srtp = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
                srtp.inbound.unprotect_rtcp(datagram)?;
                // A client sends media only once its handshake is done, so authenticated
                // SRTP or SRTCP means our last flight arrived: nothing is left for the
                // association to answer, and it is released now, not at DTLS_LINGER.
                self.dtls = None;
                Ok(Inbound::Rtcp)
            }
            DatagramKind::Unknown => Err(TransportError::Unknown),
        }
    }

    /// Encrypts the plaintext RTP packet in `packet` in place for the participant (leave
    /// [`Profile::rtp_overhead`] bytes of spare capacity and nothing is allocated).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), TransportError> {
        let srtp = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
        Ok(srtp.outbound.protect_rtp(packet)?)
    }

    /// Encrypts the plaintext RTCP compound packet in `packet` in place.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), TransportError> {
        let srtp = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
        Ok(srtp.outbound.protect_rtcp(packet)?)
    }

    /// The next datagram the transport itself wants sent (STUN answers, DTLS).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When DTLS next needs [`Transport::handle_timeout`]: handshake retransmissions, then
    /// the release of the association [`DTLS_LINGER`] after the handshake.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dtls = self.dtls.as_ref()?;
        match self.state {
            TransportState::Connecting => dtls.poll_timeout(&DTLS_ASSOCIATION),
            TransportState::Connected => self.connected_at.map(|at| at + DTLS_LINGER),
            TransportState::Closed => None,
        }
    }

    /// Advances the handshake's timers to `now`. A handshake that ran out of
    /// retransmissions closes the transport.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TransportError> {
        if self.state == TransportState::Connected
            && self.connected_at.is_some_and(|at| now >= at + DTLS_LINGER)
        {
            self.dtls = None;
        }
        if self.state != TransportState::Connecting {
            return Ok(());
        }
        let Some(dtls) = self.dtls.as_mut() else {
            return Ok(());
        };
        let result = dtls.handle_timeout(DTLS_ASSOCIATION, now);
        self.drain_dtls();
        match result {
            // No association yet (the client has not spoken): nothing to time out.
            Err(rtc::shared::error::Error::InvalidRemoteAddress(_)) | Ok(()) => Ok(()),
            Err(err) => {
                self.state = TransportState::Closed;
                Err(TransportError::dtls(err))
            }
        }
    }

    /// Sends `close_notify` and closes the transport.
    pub fn close(&mut self, now: Instant) {
        if self.state == TransportState::Closed {
            return;
        }
        if let Some(dtls) = self.dtls.as_mut() {
            let _ = dtls.close(now);
        }
        self.drain_dtls();
        self.state = TransportState::Closed;
    }

    fn require_checked(&self, from: SocketAddr) -> Result<(), TransportError> {
        if self.checked.contains(&from) {
            Ok(())
        } else {
            Err(TransportError::UncheckedAddress)
        }
    }

    fn handle_stun(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Inbound, TransportError> {
        let answered = self
            .ice
            .answer(datagram, from, self.identity.provider.crypto())?;
        if self.remote_ufrag.is_none() {
            self.remote_ufrag = Some(answered.remote_ufrag);
        }
        if !self.checked.contains(&from) {
            if self.checked.len() == MAX_CHECKED_ADDRESSES {
                let forgotten = self.checked.remove(0);
                if self.selected == Some(forgotten) {
                    self.selected = None;
                }
            }
            self.checked.push(from);
        }
        if answered.nominated {
            self.selected = Some(from);
            self.nominated = true;
        } else if self.selected.is_none() {
            self.selected = Some(from);
        }
        self.transmits.push_back(Transmit {
            to: from,
            payload: answered.response,
        });
        Ok(Inbound::Handled)
    }

    fn handle_dtls(&mut self, now: Instant, datagram: &[u8]) -> Result<Inbound, TransportError> {
        let Some(dtls) = self.dtls.as_mut() else {
            return Err(TransportError::Dtls(
                "the DTLS association was released after the handshake".to_owned(),
            ));
        };
        let result = dtls.read(now, DTLS_ASSOCIATION, None, BytesMut::from(datagram));
        let gone = dtls.get_connection_state(DTLS_ASSOCIATION).is_none();
        self.drain_dtls();
        let events = match result {
            Ok(events) => events,
            Err(err) => {
                // A record that does not decrypt is dropped; a handshake that cannot go
                // on (no association left) ends the transport.
                if gone {
                    self.state = TransportState::Closed;
                }
                return Err(TransportError::dtls(err));
            }
        };
        let mut inbound = Inbound::Handled;
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => {
                    if let Err(err) = self.handshake_complete() {
                        self.close(now);
                        return Err(err);
                    }
                    self.connected_at = Some(now);
                    inbound = Inbound::Connected;
                }
                EndpointEvent::PeerClosed => {
                    self.state = TransportState::Closed;
                    inbound = Inbound::Closed;
                }
                // No data channel on the SFU: application data is ignored.
                _ => {}
            }
        }
        Ok(inbound)
    }

    /// Checks the peer's certificate against its SDP and sets up SRTP both ways.
    fn handshake_complete(&mut self) -> Result<(), TransportError> {
        let state = self
            .dtls
            .as_ref()
            .and_then(|dtls| dtls.get_connection_state(DTLS_ASSOCIATION))
            .ok_or_else(|| TransportError::Dtls("no association after handshake".to_owned()))?;
        let certificate = state
            .peer_certificates
            .first()
            .ok_or(TransportError::FingerprintMismatch)?;
        if !self.remote_fingerprint.matches(certificate) {
            return Err(TransportError::FingerprintMismatch);
        }
        let profile = Profile::from_id(state.srtp_protection_profile() as u16)
            .ok_or(TransportError::NoSrtpProfile)?;
        let material = state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
            .map_err(TransportError::dtls)?;
        // We are the DTLS server: the client's key is what the participant protects with.
        let (client, server) = MasterKey::from_dtls(profile, material.as_ref())?;
        self.srtp = Some(Srtp {
            inbound: Unprotector::new(&client)?,
            outbound: Protector::new(&server)?,
        });
        self.state = TransportState::Connected;
        Ok(())
    }

    /// Moves rtc-dtls's queued records to our queue, addressed to the selected address.
    fn drain_dtls(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        while let Some(message) = dtls.poll_transmit() {
            if let Some(to) = self.selected {
                self.transmits.push_back(Transmit {
                    to,
                    payload: message.message.to_vec(),
                });
            }
        }
    }
}

pub mod peer;

#[cfg(test)]
mod tests;
