//! SRTP and SRTCP in place (RFC 3711, and RFC 7714 for AES-GCM), for the transport the SFU
//! is to own (issue 19). rtc's SRTP (0.21) lives inside its peer connection, encrypts into
//! a new allocation per packet and keeps no context a forwarding loop can hold per
//! consumer; this one derives its session keys once, then protects and unprotects in the
//! caller's buffer (a `Vec` with room for the tag allocates nothing), on aws-lc-rs.
//!
//! Two profiles, the ones browsers negotiate in DTLS-SRTP (RFC 5764):
//! `SRTP_AEAD_AES_128_GCM` (preferred by Chrome and Firefox) and
//! `SRTP_AES128_CM_HMAC_SHA1_80`. The key derivation rate is 0 and there is no MKI, as in
//! DTLS-SRTP. Every SSRC has its own rollover counter and a 64-packet replay window
//! (RFC 3711 §3.3.2), for RTP and for SRTCP apart.

use std::collections::HashMap;

/// Per-SSRC state by SSRC. foldhash with a random seed per map: SipHash (std's) cost more
/// than the AES-GCM of a small packet in the fan-out's profile, and SSRCs come from peers
/// (a seeded hash keeps them from choosing colliding ones).
type Streams<V> = HashMap<u32, V, foldhash::fast::RandomState>;

/// The most SSRCs one endpoint may send us under one key: a participant sends a few
/// (audio, video layers, their RTX); an authenticated peer inventing SSRCs by the
/// thousand would otherwise grow this state without bound.
pub const MAX_INBOUND_STREAMS: usize = 64;

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;

/// What went wrong with a packet or with keying material. Packets in error are dropped
/// and counted by the caller; nothing here panics on what arrives from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its headers, its tag or its SRTCP index say it must be.
    #[error("packet too short")]
    Short,
    /// Not version 2, or a header that runs past the packet.
    #[error("not an RTP or RTCP packet")]
    Malformed,
    /// The authentication tag does not match: forged, damaged or under other keys.
    #[error("authentication failed")]
    Auth,
    /// Already received once.
    #[error("replayed packet")]
    Replay,
    /// Older than the replay window reaches.
    #[error("packet older than the replay window")]
    TooOld,
    /// A new SSRC beyond [`MAX_INBOUND_STREAMS`].
    #[error("too many SSRCs from one peer")]
    TooManyStreams,
    /// SRTCP with the E flag clear: every endpoint we talk to encrypts its RTCP.
    #[error("unencrypted SRTCP is not accepted")]
    Unencrypted,
    /// The SRTCP index of a stream ran out (2^31 packets): the keys must change.
    #[error("SRTCP index exhausted")]
    Exhausted,
    /// Keying material of the wrong length for the profile.
    #[error("keying material of the wrong length")]
    KeyLength,
    /// The crypto library refused an operation it should not refuse.
    #[error("crypto backend failure")]
    Crypto,
}

/// A DTLS-SRTP protection profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 5764 §4.1.2): AES counter mode, an 80-bit
    /// HMAC-SHA1 tag, 112-bit salts.
    Aes128CmHmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714 §14.2): AES-GCM, a 128-bit tag, 96-bit salts.
    AeadAes128Gcm,
}

const MASTER_KEY_LEN: usize = 16;
const CM_TAG_LEN: usize = 10;
const GCM_TAG_LEN: usize = 16;
const SRTCP_INDEX_LEN: usize = 4;
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// The largest SRTCP index (31 bits).
const SRTCP_MAX_INDEX: u32 = 0x7fff_ffff;
/// PRF labels (RFC 3711 §4.3.1 and §4.3.2).
const LABEL_RTP_KEY: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_KEY: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

impl Profile {
    /// The profile with this DTLS `use_srtp` id, if it is one of ours.
    pub fn from_id(id: u16) -> Option<Profile> {
        match id {
            0x0001 => Some(Profile::Aes128CmHmacSha1_80),
            0x0007 => Some(Profile::AeadAes128Gcm),
            _ => None,
        }
    }

    /// Its DTLS `use_srtp` id.
    pub fn id(self) -> u16 {
        match self {
            Profile::Aes128CmHmacSha1_80 => 0x0001,
            Profile::AeadAes128Gcm => 0x0007,
        }
    }

    /// The master salt's length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 14,
            Profile::AeadAes128Gcm => 12,
        }
    }

    /// How many bytes to export from DTLS for both directions (RFC 5764 §4.2).
    pub fn keying_material_len(self) -> usize {
        2 * (MASTER_KEY_LEN + self.salt_len())
    }

    /// Bytes SRTP adds to an RTP packet: room to leave in the buffer.
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => CM_TAG_LEN,
            Profile::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet.
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_INDEX_LEN
    }
}

/// One direction's master key and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    profile: Profile,
    key: [u8; MASTER_KEY_LEN],
    /// The salt, left-aligned; bytes past the profile's salt length are zero (so a 96-bit
    /// salt enters the 112-bit key derivation padded at its end, as libsrtp has it).
    salt: [u8; 14],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach logs.
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key and salt of `profile`'s lengths.
    pub fn new(profile: Profile, key: &[u8], salt: &[u8]) -> Result<MasterKey, Error> {
        if key.len() != MASTER_KEY_LEN || salt.len() != profile.salt_len() {
            return Err(Error::KeyLength);
        }
        let mut master = MasterKey {
            profile,
            key: [0; MASTER_KEY_LEN],
            salt: [0; 14],
        };
        master.key.copy_from_slice(key);
        master.salt[..salt.len()].copy_from_slice(salt);
        Ok(master)
    }

    /// Splits keying material exported from DTLS ("EXTRACTOR-dtls_srtp", RFC 5764 §4.2:
    /// client key, server key, client salt, server salt) into the client's and the
    /// server's master keys. Each side protects with its own and unprotects with the
    /// other's.
    pub fn from_dtls(profile: Profile, material: &[u8]) -> Result<(MasterKey, MasterKey), Error> {
        if material.len() != profile.keying_material_len() {
            return Err(Error::KeyLength);
        }
        let salt = profile.salt_len();
        let (keys, salts) = material.split_at(2 * MASTER_KEY_LEN);
        let client = MasterKey::new(profile, &keys[..MASTER_KEY_LEN], &salts[..salt])?;
        let server = MasterKey::new(profile, &keys[MASTER_KEY_LEN..], &salts[salt..])?;
        Ok((client, server))
    }

    /// The profile it is for.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The master key's bytes (for handing to another SRTP implementation).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The master salt's bytes, the profile's length of them.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.profile.salt_len()]
    }

    /// `len` bytes of the AES-CM PRF for `label` (RFC 3711 §4.3.1 with a key derivation
    /// rate of 0, so the index plays no part).
    fn derive(&self, label: u8, out: &mut [u8]) -> Result<(), Error> {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        // key_id = label || r (r = 0, 48 bits), right-aligned under the 112-bit salt.
        iv[7] ^= label;
        out.fill(0);
        ctr(&self.key, iv, out)
    }
}

/// AES-128 in counter mode over `data` from the counter block `iv` (a one-off key: the KDF
/// and tests; packets use a key set up once).
fn ctr(key: &[u8; MASTER_KEY_LEN], iv: [u8; 16], data: &mut [u8]) -> Result<(), Error> {
    ctr_key(key)?
        .less_safe_encrypt(data, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| Error::Crypto)?;
    Ok(())
}

/// An AES-128 counter-mode key.
fn ctr_key(key: &[u8]) -> Result<EncryptingKey, Error> {
    UnboundCipherKey::new(&AES_128, key)
        .and_then(EncryptingKey::ctr)
        .map_err(|_| Error::Crypto)
}

/// The session keys of one kind of packet (RTP or RTCP) in one direction. (aws-lc-rs's
/// AES and HMAC keys hold their expanded state inline, about 1.7 KB: boxed.)
enum Session {
    Cm {
        cipher: Box<EncryptingKey>,
        auth: Box<hmac::Key>,
        salt: [u8; 14],
    },
    Gcm {
        aead: LessSafeKey,
        salt: [u8; 12],
    },
}

impl Session {
    /// Derives the session key, salt and (for AES-CM) authentication key with `labels`
    /// (key, auth, salt).
    fn new(master: &MasterKey, labels: [u8; 3]) -> Result<Session, Error> {
        let [key_label, auth_label, salt_label] = labels;
        let mut key = [0u8; MASTER_KEY_LEN];
        master.derive(key_label, &mut key)?;
        // Session salts are as long as the master salt (RFC 3711 §8.2, RFC 7714 §11).
        let mut salt = [0u8; 14];
        let salt = &mut salt[..master.profile.salt_len()];
        master.derive(salt_label, salt)?;
        let mut auth = [0u8; 20];
        let auth: &[u8] = match master.profile {
            Profile::Aes128CmHmacSha1_80 => {
                master.derive(auth_label, &mut auth)?;
                &auth
            }
            Profile::AeadAes128Gcm => &[],
        };
        Session::from_session_keys(master.profile, &key, auth, salt)
    }

    /// Session keys given directly (also how the RFCs' packet vectors start).
    fn from_session_keys(
        profile: Profile,
        key: &[u8],
        auth: &[u8],
        salt: &[u8],
    ) -> Result<Session, Error> {
        match profile {
            Profile::Aes128CmHmacSha1_80 => Ok(Session::Cm {
                cipher: Box::new(ctr_key(key)?),
                auth: Box::new(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth)),
                salt: salt.try_into().map_err(|_| Error::KeyLength)?,
            }),
            Profile::AeadAes128Gcm => Ok(Session::Gcm {
                aead: LessSafeKey::new(
                    UnboundKey::new(&AES_128_GCM, key).map_err(|_| Error::Crypto)?,
                ),
                salt: salt.try_into().map_err(|_| Error::KeyLength)?,
            }),
        }
    }

    /// AES-CM's counter block: the salt, XOR the SSRC at bytes 4..8 and the 48-bit index
    /// at 8..14 (RFC 3711 §4.1.1).
    fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(salt);
        xor(&mut iv[4..8], &ssrc.to_be_bytes());
        xor(&mut iv[8..14], &index.to_be_bytes()[2..]);
        iv
    }

    /// RTP under GCM: the salt XOR 00 00 || SSRC || ROC || SEQ (RFC 7714 §8.1).
    fn gcm_rtp_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> Nonce {
        let mut iv = *salt;
        xor(&mut iv[2..6], &ssrc.to_be_bytes());
        xor(&mut iv[6..12], &index.to_be_bytes()[2..]);
        Nonce::assume_unique_for_key(iv)
    }

    /// SRTCP under GCM: the salt XOR 00 00 || SSRC || 00 00 || 0 + index (RFC 7714 §9.1).
    fn gcm_rtcp_nonce(salt: &[u8; 12], ssrc: u32, index: u32) -> Nonce {
        let mut iv = *salt;
        xor(&mut iv[2..6], &ssrc.to_be_bytes());
        xor(&mut iv[8..12], &index.to_be_bytes());
        Nonce::assume_unique_for_key(iv)
    }

    /// HMAC-SHA1 of `parts`, truncated to 80 bits.
    fn cm_tag(auth: &hmac::Key, parts: &[&[u8]]) -> [u8; CM_TAG_LEN] {
        let mut context = hmac::Context::with_key(auth);
        for part in parts {
            context.update(part);
        }
        let full = context.sign();
        let mut tag = [0u8; CM_TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..CM_TAG_LEN]);
        tag
    }

    /// Encrypts `packet[header..]` and appends the tag.
    fn protect_rtp(
        &self,
        packet: &mut Vec<u8>,
        header: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), Error> {
        match self {
            Session::Cm { cipher, auth, salt } => {
                let iv = Self::cm_iv(salt, ssrc, index);
                cipher
                    .less_safe_encrypt(&mut packet[header..], EncryptionContext::Iv128(iv.into()))
                    .map_err(|_| Error::Crypto)?;
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = Self::cm_tag(auth, &[&packet[..], &roc]);
                packet.extend_from_slice(&tag);
            }
            Session::Gcm { aead, salt } => {
                let nonce = Self::gcm_rtp_nonce(salt, ssrc, index);
                let (head, payload) = packet.split_at_mut(header);
                let tag = aead
                    .seal_in_place_separate_tag(nonce, Aad::from(&*head), payload)
                    .map_err(|_| Error::Crypto)?;
                packet.extend_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }

    /// Checks the tag of `packet` (header, ciphertext, tag), decrypts in place and cuts
    /// the tag off.
    fn unprotect_rtp(
        &self,
        packet: &mut Vec<u8>,
        header: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), Error> {
        match self {
            Session::Cm { cipher, auth, salt } => {
                let body = packet.len() - CM_TAG_LEN;
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = Self::cm_tag(auth, &[&packet[..body], &roc]);
                if !constant_time_eq(&tag, &packet[body..]) {
                    return Err(Error::Auth);
                }
                packet.truncate(body);
                let iv = Self::cm_iv(salt, ssrc, index);
                cipher
                    .less_safe_encrypt(&mut packet[header..], EncryptionContext::Iv128(iv.into()))
                    .map_err(|_| Error::Crypto)?;
            }
            Session::Gcm { aead, salt } => {
                let nonce = Self::gcm_rtp_nonce(salt, ssrc, index);
                let (head, sealed) = packet.split_at_mut(header);
                let plain = aead
                    .open_in_place(nonce, Aad::from(&*head), sealed)
                    .map_err(|_| Error::Auth)?
                    .len();
                packet.truncate(header + plain);
            }
        }
        Ok(())
    }

    /// Encrypts an RTCP packet past its first 8 bytes and adds E || index and the tag,
    /// in each profile's order.
    fn protect_rtcp(&self, packet: &mut Vec<u8>, ssrc: u32, index: u32) -> Result<(), Error> {
        let trailer = (SRTCP_E_FLAG | index).to_be_bytes();
        match self {
            Session::Cm { cipher, auth, salt } => {
                let iv = Self::cm_iv(salt, ssrc, u64::from(index));
                cipher
                    .less_safe_encrypt(&mut packet[8..], EncryptionContext::Iv128(iv.into()))
                    .map_err(|_| Error::Crypto)?;
                packet.extend_from_slice(&trailer);
                let tag = Self::cm_tag(auth, &[&packet[..]]);
                packet.extend_from_slice(&tag);
            }
            Session::Gcm { aead, salt } => {
                let nonce = Self::gcm_rtcp_nonce(salt, ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&packet[..8]);
                aad[8..].copy_from_slice(&trailer);
                let tag = aead
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut packet[8..])
                    .map_err(|_| Error::Crypto)?;
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&trailer);
            }
        }
        Ok(())
    }

    /// Where E || index sits in a protected RTCP packet of `len` bytes.
    fn rtcp_trailer_at(&self, len: usize) -> usize {
        match self {
            Session::Cm { .. } => len - CM_TAG_LEN - SRTCP_INDEX_LEN,
            Session::Gcm { .. } => len - SRTCP_INDEX_LEN,
        }
    }

    /// Checks and decrypts an SRTCP packet whose index was read at `trailer_at`, leaving
    /// the plain RTCP packet.
    fn unprotect_rtcp(
        &self,
        packet: &mut Vec<u8>,
        ssrc: u32,
        index: u32,
        trailer_at: usize,
    ) -> Result<(), Error> {
        match self {
            Session::Cm { cipher, auth, salt } => {
                let body = packet.len() - CM_TAG_LEN;
                let tag = Self::cm_tag(auth, &[&packet[..body]]);
                if !constant_time_eq(&tag, &packet[body..]) {
                    return Err(Error::Auth);
                }
                packet.truncate(trailer_at);
                let iv = Self::cm_iv(salt, ssrc, u64::from(index));
                cipher
                    .less_safe_encrypt(&mut packet[8..], EncryptionContext::Iv128(iv.into()))
                    .map_err(|_| Error::Crypto)?;
            }
            Session::Gcm { aead, salt } => {
                let nonce = Self::gcm_rtcp_nonce(salt, ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&packet[..8]);
                aad[8..].copy_from_slice(&packet[trailer_at..]);
                let plain = aead
                    .open_in_place(nonce, Aad::from(aad), &mut packet[8..trailer_at])
                    .map_err(|_| Error::Auth)?
                    .len();
                packet.truncate(8 + plain);
            }
        }
        Ok(())
    }
}

fn xor(into: &mut [u8], from: &[u8]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a ^= b;
    }
}

/// Compares two tags without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The length of an RTP packet's header (fixed part, CSRCs, extension), checked against
/// the packet; and its SSRC and sequence number.
fn rtp_header(packet: &[u8]) -> Result<(usize, u32, u16), Error> {
    if packet.len() < 12 {
        return Err(Error::Short);
    }
    if packet[0] >> 6 != 2 {
        return Err(Error::Malformed);
    }
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut len = 12 + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let words = packet
            .get(len + 2..len + 4)
            .ok_or(Error::Malformed)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))?;
        len += 4 + 4 * words;
    }
    if len > packet.len() {
        return Err(Error::Malformed);
    }
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    Ok((len, ssrc, seq))
}

/// An RTCP packet's first SSRC (the sender's), after checking the fixed header.
fn rtcp_ssrc(packet: &[u8]) -> Result<u32, Error> {
    if packet.len() < 8 {
        return Err(Error::Short);
    }
    if packet[0] >> 6 != 2 {
        return Err(Error::Malformed);
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

/// The 48-bit packet index a sequence number stands for, given the highest one so far
/// (RFC 3711 §3.3.1 and Appendix A): the one of ROC - 1, ROC and ROC + 1 nearest to it.
/// `None` for a packet from before the first rollover counter.
fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = highest & 0xffff;
    let seq = u64::from(seq);
    let v = if s_l < 0x8000 {
        if seq > s_l + 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if seq + 0x8000 < s_l {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | seq)
}

/// A 64-packet sliding window over one stream's indices (RFC 3711 §3.3.2).
#[derive(Debug, Clone, Copy, Default)]
struct ReplayWindow {
    /// The highest index accepted; `None` before the first.
    highest: Option<u64>,
    /// Bit `i`: `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    const SIZE: u64 = 64;

    fn check(&self, index: u64) -> Result<(), Error> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        let behind = highest - index;
        if behind >= Self::SIZE {
            Err(Error::TooOld)
        } else if self.seen & (1 << behind) != 0 {
            Err(Error::Replay)
        } else {
            Ok(())
        }
    }

    /// Marks `index` received (after its tag checked out).
    fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => self.seen |= 1 << (highest - index),
            Some(highest) => {
                let ahead = index - highest;
                self.seen = if ahead >= Self::SIZE {
                    1
                } else {
                    (self.seen << ahead) | 1
                };
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// One SSRC we send: the highest index protected (for the rollover counter) and the next
/// SRTCP index.
#[derive(Debug, Clone, Copy, Default)]
struct Outbound {
    highest: Option<u64>,
    rtcp_index: u32,
}

/// One direction's session keys, RTP's and RTCP's, derived once from a master key.
struct Keys {
    profile: Profile,
    rtp: Session,
    rtcp: Session,
}

impl Keys {
    fn derive(master: &MasterKey) -> Result<Keys, Error> {
        Ok(Keys {
            profile: master.profile,
            rtp: Session::new(master, [LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT])?,
            rtcp: Session::new(master, [LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT])?,
        })
    }
}

/// The index of an RTP packet with sequence number `seq` on a stream whose highest index
/// so far is `highest` (`None`: the stream's first packet, with rollover counter 0).
fn packet_index(highest: Option<u64>, seq: u16) -> Result<u64, Error> {
    match highest {
        None => Ok(u64::from(seq)),
        Some(highest) => estimate_index(highest, seq).ok_or(Error::TooOld),
    }
}

/// Protects what one endpoint sends: RTP and RTCP under its master key.
pub struct Protector {
    keys: Keys,
    streams: Streams<Outbound>,
}

impl Protector {
    /// Derives the session keys of `master` once.
    pub fn new(master: &MasterKey) -> Result<Protector, Error> {
        Ok(Protector {
            keys: Keys::derive(master)?,
            streams: Streams::default(),
        })
    }

    /// Its profile.
    pub fn profile(&self) -> Profile {
        self.keys.profile
    }

    /// Encrypts the RTP packet in `packet` and appends its tag ([`Profile::rtp_overhead`]
    /// bytes: with that much spare capacity nothing is allocated). The rollover counter
    /// follows the sequence numbers of each SSRC; a resent packet (an older sequence
    /// number) is protected with the index it had.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let (header, ssrc, seq) = rtp_header(packet)?;
        let stream = self.streams.entry(ssrc).or_default();
        let index = packet_index(stream.highest, seq)?;
        self.keys.rtp.protect_rtp(packet, header, ssrc, index)?;
        if stream.highest.is_none_or(|h| index > h) {
            stream.highest = Some(index);
        }
        Ok(())
    }

    /// Encrypts the RTCP compound packet in `packet` and appends E || index and the tag
    /// ([`Profile::rtcp_overhead`] bytes). Each sending SSRC counts its own index.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let ssrc = rtcp_ssrc(packet)?;
        let stream = self.streams.entry(ssrc).or_default();
        let index = stream.rtcp_index;
        if index > SRTCP_MAX_INDEX {
            return Err(Error::Exhausted);
        }
        self.keys.rtcp.protect_rtcp(packet, ssrc, index)?;
        stream.rtcp_index = index + 1;
        Ok(())
    }
}

/// One SSRC we receive: the replay windows (the RTP one also keeps the rollover counter:
/// its highest index).
#[derive(Debug, Clone, Copy, Default)]
struct Inbound {
    rtp: ReplayWindow,
    rtcp: ReplayWindow,
}

/// Checks and decrypts what one endpoint receives from the other.
pub struct Unprotector {
    keys: Keys,
    streams: Streams<Inbound>,
}

impl Unprotector {
    /// Derives the session keys of the peer's `master` once.
    pub fn new(master: &MasterKey) -> Result<Unprotector, Error> {
        Ok(Unprotector {
            keys: Keys::derive(master)?,
            streams: Streams::default(),
        })
    }

    /// Its profile.
    pub fn profile(&self) -> Profile {
        self.keys.profile
    }

    /// Checks the SRTP packet in `packet`, decrypts it in place and cuts the tag off.
    /// Replays, packets older than the window and packets that fail authentication are
    /// refused and leave the stream's state as it was.
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let overhead = self.keys.profile.rtp_overhead();
        let (header, ssrc, seq) = rtp_header(packet)?;
        if packet.len() < header + overhead {
            return Err(Error::Short);
        }
        let window = match self.streams.get(&ssrc) {
            Some(stream) => stream.rtp,
            None if self.streams.len() >= MAX_INBOUND_STREAMS => {
                return Err(Error::TooManyStreams);
            }
            None => ReplayWindow::default(),
        };
        let index = packet_index(window.highest, seq)?;
        window.check(index)?;
        self.keys.rtp.unprotect_rtp(packet, header, ssrc, index)?;
        // Only an authentic packet creates or moves a stream's state.
        self.streams.entry(ssrc).or_default().rtp.accept(index);
        Ok(())
    }

    /// Checks the SRTCP packet in `packet`, decrypts it in place and cuts E || index and
    /// the tag off.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        let ssrc = rtcp_ssrc(packet)?;
        if packet.len() < 8 + self.keys.profile.rtcp_overhead() {
            return Err(Error::Short);
        }
        let at = self.keys.rtcp.rtcp_trailer_at(packet.len());
        let trailer =
            u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]);
        if trailer & SRTCP_E_FLAG == 0 {
            return Err(Error::Unencrypted);
        }
        let index = trailer & SRTCP_MAX_INDEX;
        let window = match self.streams.get(&ssrc) {
            Some(stream) => stream.rtcp,
            None if self.streams.len() >= MAX_INBOUND_STREAMS => {
                return Err(Error::TooManyStreams);
            }
            None => ReplayWindow::default(),
        };
        window.check(u64::from(index))?;
        self.keys.rtcp.unprotect_rtcp(packet, ssrc, index, at)?;
        self.streams
            .entry(ssrc)
            .or_default()
            .rtcp
            .accept(u64::from(index));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
