//! The participant's side of a [`Transport`], as small as it can be: connectivity checks
//! under the SFU's password, a DTLS client (rtc-dtls, as webrtc-rs uses it) and SRTP keyed
//! from it, no SDP and no peer connection. For the SFU's tests, its benchmarks and the
//! load generator, which need thousands of subscribers that cost little besides their
//! crypto. Applications use the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;

use super::{
    DtlsIdentity, Fingerprint, SRTP_EXPORTER_LABEL, Transport, TransportError, TransportState,
    self_signed,
};
use crate::demux::{DatagramKind, classify};
use crate::ice_lite::LiteAgent;
use crate::ice_lite::connectivity_check;
use crate::srtp::{MasterKey, Profile, Protector, Unprotector};

/// A participant's transport: the client side of ICE-lite, DTLS and SRTP.
pub struct Peer {
    addr: SocketAddr,
    sfu: SocketAddr,
    provider: Arc<dyn RTCCryptoProvider>,
    dtls: Endpoint,
    config: Arc<HandshakeConfig>,
    fingerprint: String,
    /// SRTP once the handshake is done: ours to protect, the SFU's to unprotect.
    srtp: Option<(Protector, Unprotector)>,
    dtls_started: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("connected", &self.srtp.is_some())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer at `addr` talking to the SFU at `sfu`, offering `profiles` in DTLS.
    pub fn new(
        addr: SocketAddr,
        sfu: SocketAddr,
        profiles: Vec<SrtpProtectionProfile>,
    ) -> Result<Peer, TransportError> {
        let (provider, certificate, fingerprint) = self_signed("peer")?;
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider.clone())
            .with_certificates(vec![certificate])
            .with_srtp_protection_profiles(profiles)
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, None)
            .map_err(TransportError::crypto)?;
        Ok(Peer {
            addr,
            sfu,
            provider,
            dtls: Endpoint::new(addr, TransportProtocol::UDP, None),
            config: Arc::new(config),
            fingerprint,
            srtp: None,
            dtls_started: false,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its certificate's fingerprint, as `a=fingerprint` gives it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Connected: SRTP keys in place.
    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// A connectivity check for the SFU (`username` is `<sfu ufrag>:<ours>`).
    pub fn check(
        &self,
        username: &str,
        password: &str,
        nominate: bool,
    ) -> Result<Vec<u8>, TransportError> {
        Ok(connectivity_check(
            username,
            password,
            true,
            nominate,
            self.provider.crypto(),
        )?)
    }

    /// Starts the DTLS handshake (after a check was answered).
    pub fn start_dtls(&mut self, now: Instant) -> Result<(), TransportError> {
        if !self.dtls_started {
            self.dtls
                .connect(now, self.sfu, self.config.clone(), None)
                .map_err(TransportError::dtls)?;
            self.dtls_started = true;
        }
        Ok(())
    }

    /// The next DTLS datagram for the SFU.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.dtls.poll_transmit().map(|m| m.message.to_vec())
    }

    /// Runs the handshake's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.dtls_started {
            let _ = self.dtls.handle_timeout(self.sfu, now);
        }
    }

    /// A datagram from the SFU: DTLS goes to the handshake (keying SRTP at its end); SRTP
    /// is decrypted in place and `Ok(true)` returned.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &mut Vec<u8>,
    ) -> Result<bool, TransportError> {
        match classify(datagram) {
            DatagramKind::Dtls => {
                let events = self
                    .dtls
                    .read(now, self.sfu, None, BytesMut::from(&datagram[..]))
                    .map_err(TransportError::dtls)?;
                if events
                    .iter()
                    .any(|e| matches!(e, EndpointEvent::HandshakeComplete))
                {
                    self.keys()?;
                }
                Ok(false)
            }
            DatagramKind::Rtp => {
                let (_, inbound) = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
                inbound.unprotect_rtp(datagram)?;
                Ok(true)
            }
            DatagramKind::Rtcp => {
                let (_, inbound) = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
                inbound.unprotect_rtcp(datagram)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Encrypts an RTP packet for the SFU in place.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), TransportError> {
        let (outbound, _) = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
        Ok(outbound.protect_rtp(packet)?)
    }

    /// Encrypts an RTCP packet for the SFU in place.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), TransportError> {
        let (outbound, _) = self.srtp.as_mut().ok_or(TransportError::NotConnected)?;
        Ok(outbound.protect_rtcp(packet)?)
    }

    fn keys(&mut self) -> Result<(), TransportError> {
        let state = self
            .dtls
            .get_connection_state(self.sfu)
            .ok_or_else(|| TransportError::Dtls("no association".to_owned()))?;
        let profile = Profile::from_id(state.srtp_protection_profile() as u16)
            .ok_or(TransportError::NoSrtpProfile)?;
        let material = state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
            .map_err(TransportError::dtls)?;
        let (client, server) = MasterKey::from_dtls(profile, material.as_ref())?;
        self.srtp = Some((Protector::new(&client)?, Unprotector::new(&server)?));
        Ok(())
    }
}

/// Connects `peer` to `transport` in memory, stepping a fake clock from `now` (checks
/// with USE-CANDIDATE, then the handshake); `username`/`password` are the SFU's ICE
/// credentials as the peer uses them. Returns the time it ended at.
pub fn connect_in_memory(
    peer: &mut Peer,
    transport: &mut Transport,
    username: &str,
    password: &str,
    mut now: Instant,
) -> Result<Instant, TransportError> {
    let deadline = now + Duration::from_secs(30);
    let mut request = peer.check(username, password, true)?;
    transport.handle_datagram(now, peer.addr, &mut request)?;
    peer.start_dtls(now)?;
    while now < deadline {
        loop {
            let mut moved = false;
            while let Some(mut datagram) = peer.poll_transmit() {
                moved = true;
                let _ = transport.handle_datagram(now, peer.addr, &mut datagram);
            }
            while let Some(transmit) = transport.poll_transmit() {
                moved = true;
                let mut payload = transmit.payload;
                let _ = peer.handle_datagram(now, &mut payload);
            }
            if !moved {
                break;
            }
        }
        if peer.is_connected() && transport.state() == TransportState::Connected {
            return Ok(now);
        }
        now += Duration::from_millis(50);
        peer.handle_timeout(now);
        transport.handle_timeout(now)?;
    }
    Err(TransportError::Dtls("no handshake within 30 s".to_owned()))
}

/// A peer at `addr` offering `profile`, and the SFU's transport for it (ICE credentials
/// `ufrag` and `password`), connected in memory at `now`: the subscribers of the SFU's
/// fan-out tests and benchmarks.
pub fn connected_pair(
    identity: &DtlsIdentity,
    addr: SocketAddr,
    sfu: SocketAddr,
    profile: SrtpProtectionProfile,
    ufrag: &str,
    password: &str,
    now: Instant,
) -> Result<(Peer, Transport), TransportError> {
    let mut peer = Peer::new(addr, sfu, vec![profile])?;
    let mut transport = Transport::new(
        identity,
        LiteAgent::new(ufrag, password),
        Fingerprint::parse(peer.fingerprint())?,
    );
    connect_in_memory(
        &mut peer,
        &mut transport,
        &format!("{ufrag}:peer"),
        password,
        now,
    )?;
    Ok((peer, transport))
}
