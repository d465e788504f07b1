//! SFrame media keys from MLS, as RFC 9605 §5.2 ("MLS") specifies, and the per-frame
//! encryption and decryption around them. Owns key derivation from an epoch's exporter
//! secret, the key ids (KIDs), a sender's frame counter, a receiver's keys for the current
//! and a few previous epochs, and replay protection. It does not touch MLS state (the
//! caller computes the exporter secret and passes the bytes in), RTP packetization, or the
//! network, and it never reads a clock: time comes in as `now`.
//!
//! # What RFC 9605 §5.2 says, and how it maps here
//!
//! - One `base_key` per MLS epoch, the same for every member:
//!   `base_key = MLS-Exporter("SFrame 1.0 Base Key", "", AEAD.Nk)`. The caller computes it
//!   with [`EXPORTER_LABEL`], [`EXPORTER_CONTEXT`] and [`EXPORTER_LENGTH`] (openmls:
//!   `group.export_secret(crypto, EXPORTER_LABEL, EXPORTER_CONTEXT, EXPORTER_LENGTH)`).
//! - Each member owns a set of KIDs, and the per-sender key and salt come from §4.4.2's
//!   `derive_key_salt(KID, base_key)` (HKDF over the base key with the KID and cipher suite
//!   in the labels; the `sframe` crate implements it). So senders never share a key even
//!   though they share the base key.
//! - `KID = (context << (S + E)) + (sender_index << E) + (epoch % (1 << E))`, where `E` is
//!   an application constant ([`EPOCH_BITS`] = 4 here, as in the RFC's example) and `S` is
//!   "the smallest value such that `group_size <= (1 << S)`" ([`index_bits`]). The
//!   caller passes `group_size` per epoch; every member must compute it the same way: one
//!   more than the largest leaf index in the epoch's tree (with openmls,
//!   `group.members().map(|m| m.index.u32()).max() + 1`), which is at least the member
//!   count and covers blank leaves left by removals.
//! - "Receivers MUST remove an old epoch when a new epoch with the same low-order E bits is
//!   introduced": [`MediaReceiver::rekey`] does. Besides that, a superseded epoch is kept
//!   only for [`ReceiverConfig::grace`] and at most [`ReceiverConfig::previous_epochs`] of
//!   them, so frames in flight across a rekey still decrypt, but a member removed by the
//!   new epoch cannot keep sending under the old one for long.
//!
//! # Cipher suite
//!
//! `AES_128_GCM_SHA256_128` ([`CIPHER_SUITE`]): a full 16-byte tag (the AES-CTR suites with
//! short tags trade forgery resistance for bytes, see RFC 9605 §9.5, and the `sframe` crate's
//! ring backend, which this tree builds for WebRTC anyway, has no AES-CTR), hardware AES
//! on every current CPU, and 128-bit keys, which is also what the MLS cipher suite
//! `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` gives. AES-256-GCM-SHA512 would cost more
//! per frame for no gain against a 128-bit MLS group key.
//!
//! # Using the sender safely
//!
//! A (base key, KID, counter) triple must never encrypt twice (RFC 9605 §9.1). The counter
//! lives in [`MediaSender`] and restarts at 0 with each epoch, so: one `MediaSender` per
//! outgoing stream, each with its own `context` (or one sender shared by all streams), and
//! never two senders for the same epoch, index and context, also not across a restart of the
//! process: after a restart, send media only once MLS has moved to a new epoch (an update
//! commit), or the counter would start over under a key that already encrypted frames.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use sframe::CipherSuite;
use sframe::error::SframeError;
use sframe::frame::validation::{ReplayAttackProtection, ReplayAttackProtectionError, Tolerance};
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::mls::{MlsKeyId, MlsKeyIdBitRange};
use zeroize::Zeroizing;

/// The SFrame cipher suite of every Sotto media stream (see the module documentation).
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

/// The MLS exporter label of RFC 9605 §5.2.
pub const EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";

/// The MLS exporter context of RFC 9605 §5.2 (empty).
pub const EXPORTER_CONTEXT: &[u8] = b"";

/// The MLS exporter output length of RFC 9605 §5.2: the cipher suite's `AEAD.Nk` (16).
pub const EXPORTER_LENGTH: usize = CIPHER_SUITE.key_len();

/// `E` of RFC 9605 §5.2: how many low-order bits of the epoch a KID carries. At most
/// 2^E epochs can be told apart, far more than a receiver keeps.
pub const EPOCH_BITS: u8 = 4;

/// How many frames a sender's counter may lag behind its newest one and still be accepted
/// by default (reordering window of the replay protection): 2.5 s of 20 ms audio frames.
pub const DEFAULT_REPLAY_WINDOW: usize = 128;

/// An SFrame sender or receiver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaKeyError {
    /// The exporter secret has the wrong length.
    #[error(
        "the SFrame epoch secret is {got} bytes; RFC 9605 §5.2 exports AEAD.Nk = {expected} (use EXPORTER_LENGTH)"
    )]
    SecretLength {
        /// Bytes passed in.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// `group_size` was 0.
    #[error("an MLS group has at least one member; group_size 0 is not valid")]
    EmptyGroup,
    /// The sender's leaf index does not fit `group_size`.
    #[error("leaf index {index} is outside a group of size {group_size}")]
    LeafIndexOutOfRange {
        /// The index.
        index: u32,
        /// The group size it was checked against.
        group_size: u32,
    },
    /// The context id does not fit the bits the KID leaves for it.
    #[error("context id {0} does not fit in the SFrame key id")]
    ContextOutOfRange(u64),
    /// A rekey to an epoch that is not newer than the current one (it would restart the
    /// counter under a key already used, or bring back old keys).
    #[error("epoch {new} is not newer than the current epoch {current}")]
    StaleEpoch {
        /// The current epoch.
        current: u64,
        /// The epoch passed in.
        new: u64,
    },
    /// The sender's counter ran out (2^64 frames); rekey.
    #[error("the SFrame frame counter is exhausted; a new epoch is needed")]
    CounterExhausted,
    /// The bytes are not an SFrame ciphertext.
    #[error("not an SFrame ciphertext: {0}")]
    Malformed(&'static str),
    /// The KID names an epoch this receiver has no keys for: not yet known (the MLS commit
    /// has not been processed here), or already dropped.
    #[error("no keys for the epoch of SFrame key id {kid:#x} (not yet known here, or expired)")]
    UnknownEpoch {
        /// The frame's key id.
        kid: u64,
    },
    /// The KID's sender index is not a leaf of its epoch's group.
    #[error("SFrame key id {kid:#x} names sender {index}, outside the group of that epoch")]
    UnknownSender {
        /// The frame's key id.
        kid: u64,
        /// The sender index in it.
        index: u64,
    },
    /// The KID is this receiver's own: a frame reflected back (receivers never decrypt with a
    /// sender's key of their own, RFC 9605 §4.4.1).
    #[error("SFrame key id {kid:#x} is our own sending key; a reflected frame")]
    OwnKeyId {
        /// The frame's key id.
        kid: u64,
    },
    /// Too many distinct KIDs (contexts) in one epoch.
    #[error("too many SFrame key ids in epoch {epoch}; refusing key id {kid:#x}")]
    TooManyKeys {
        /// The epoch.
        epoch: u64,
        /// The frame's key id.
        kid: u64,
    },
    /// The frame did not authenticate: tampered with, or not encrypted with the key its KID
    /// names (for example by someone who is not a member of that epoch).
    #[error("SFrame frame {counter} of key id {kid:#x} failed authentication (tampered or forged)")]
    Authentication {
        /// The frame's key id.
        kid: u64,
        /// The frame's counter.
        counter: u64,
    },
    /// The frame's counter was already received under this KID.
    #[error("SFrame frame {counter} of key id {kid:#x} was already received (replay)")]
    Replayed {
        /// The frame's key id.
        kid: u64,
        /// The frame's counter.
        counter: u64,
    },
    /// The frame's counter is older than the replay window allows.
    #[error("SFrame frame {counter} of key id {kid:#x} is older than the replay window")]
    TooOld {
        /// The frame's key id.
        kid: u64,
        /// The frame's counter.
        counter: u64,
    },
    /// An error of the `sframe` library that none of the above describes.
    #[error("SFrame library error: {0}")]
    Library(String),
}

/// The number of index bits `S` for a group: the smallest `S` with
/// `group_size <= 1 << S` (RFC 9605 §5.2). `group_size` 0 counts as 1.
pub fn index_bits(group_size: u32) -> u8 {
    if group_size <= 1 {
        0
    } else {
        // Bits needed for the largest index, group_size - 1; at most 32.
        (u32::BITS - (group_size - 1).leading_zeros()) as u8
    }
}

/// The KID layout of one epoch (RFC 9605 §5.2, Figure 7):
/// `context (64-S-E bits) | sender index (S bits) | epoch (E bits)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidLayout {
    group_size: u32,
    range: MlsKeyIdBitRange,
}

/// The fields of a KID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidParts {
    /// The sender-chosen context (0 gives the shortest header).
    pub context: u64,
    /// The sender's MLS leaf index.
    pub sender_index: u64,
    /// The low [`EPOCH_BITS`] bits of the epoch.
    pub epoch_lsb: u64,
}

impl KidLayout {
    /// The layout for a group of `group_size` leaves (see the module documentation).
    pub fn for_group(group_size: u32) -> Result<Self, MediaKeyError> {
        if group_size == 0 {
            return Err(MediaKeyError::EmptyGroup);
        }
        let range = MlsKeyIdBitRange::try_new(EPOCH_BITS, index_bits(group_size))
            .map_err(|e| MediaKeyError::Library(e.to_string()))?;
        Ok(KidLayout { group_size, range })
    }

    /// The group size this layout was made for.
    pub fn group_size(&self) -> u32 {
        self.group_size
    }

    /// `S`: the bits of the sender index.
    pub fn index_bits(&self) -> u8 {
        index_bits(self.group_size)
    }

    /// The KID of `sender_index` in `epoch` with `context`.
    pub fn key_id(
        &self,
        context: u64,
        epoch: u64,
        sender_index: u32,
    ) -> Result<u64, MediaKeyError> {
        if sender_index >= self.group_size {
            return Err(MediaKeyError::LeafIndexOutOfRange {
                index: sender_index,
                group_size: self.group_size,
            });
        }
        let kid = MlsKeyId::try_new(context, epoch, sender_index, self.range)
            .map_err(|_| MediaKeyError::ContextOutOfRange(context))?;
        Ok(kid.into())
    }

    /// Splits a KID into its fields.
    pub fn split(&self, kid: u64) -> KidParts {
        let id = MlsKeyId::from_key_id(kid, self.range);
        KidParts {
            context: id.context_id(),
            sender_index: id.member_index(),
            epoch_lsb: id.epoch_lsb(),
        }
    }
}

/// The low [`EPOCH_BITS`] bits of an epoch, as a KID carries them.
fn epoch_lsb(epoch_or_kid: u64) -> u64 {
    epoch_or_kid & ((1 << EPOCH_BITS) - 1)
}

fn check_secret(secret: &[u8]) -> Result<(), MediaKeyError> {
    if secret.len() != EXPORTER_LENGTH {
        return Err(MediaKeyError::SecretLength {
            got: secret.len(),
            expected: EXPORTER_LENGTH,
        });
    }
    Ok(())
}

fn library(e: SframeError) -> MediaKeyError {
    MediaKeyError::Library(e.to_string())
}

/// Encrypts this member's outgoing frames for one stream.
pub struct MediaSender {
    my_leaf_index: u32,
    context: u64,
    epoch: u64,
    key_id: u64,
    key: EncryptionKey,
    counter: MonotonicCounter,
}

impl fmt::Debug for MediaSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaSender")
            .field("my_leaf_index", &self.my_leaf_index)
            .field("context", &self.context)
            .field("epoch", &self.epoch)
            .field("key_id", &format_args!("{:#x}", self.key_id))
            .field("next_counter", &self.counter.current())
            .finish_non_exhaustive()
    }
}

impl MediaSender {
    /// A sender for member `my_leaf_index` in `epoch` of a group of `group_size` leaves,
    /// with context 0. `epoch_secret` is the epoch's MLS exporter output (see the module
    /// documentation); it is not kept, only the key derived from it.
    pub fn new(
        epoch: u64,
        epoch_secret: &[u8],
        group_size: u32,
        my_leaf_index: u32,
    ) -> Result<Self, MediaKeyError> {
        Self::with_context(epoch, epoch_secret, group_size, my_leaf_index, 0)
    }

    /// Like [`MediaSender::new`] with a context id of the sender's choosing, one per
    /// outgoing stream (audio 0, video 1, ...), so streams never share a counter.
    pub fn with_context(
        epoch: u64,
        epoch_secret: &[u8],
        group_size: u32,
        my_leaf_index: u32,
        context: u64,
    ) -> Result<Self, MediaKeyError> {
        let (key_id, key) = Self::derive(epoch, epoch_secret, group_size, my_leaf_index, context)?;
        Ok(MediaSender {
            my_leaf_index,
            context,
            epoch,
            key_id,
            key,
            counter: MonotonicCounter::default(),
        })
    }

    fn derive(
        epoch: u64,
        epoch_secret: &[u8],
        group_size: u32,
        my_leaf_index: u32,
        context: u64,
    ) -> Result<(u64, EncryptionKey), MediaKeyError> {
        check_secret(epoch_secret)?;
        let key_id = KidLayout::for_group(group_size)?.key_id(context, epoch, my_leaf_index)?;
        let key =
            EncryptionKey::derive_from(CIPHER_SUITE, key_id, epoch_secret).map_err(library)?;
        Ok((key_id, key))
    }

    /// Moves to a new, later epoch: a new KID and key, the counter back at 0.
    pub fn rekey(
        &mut self,
        epoch: u64,
        epoch_secret: &[u8],
        group_size: u32,
    ) -> Result<(), MediaKeyError> {
        if epoch <= self.epoch {
            return Err(MediaKeyError::StaleEpoch {
                current: self.epoch,
                new: epoch,
            });
        }
        let (key_id, key) = Self::derive(
            epoch,
            epoch_secret,
            group_size,
            self.my_leaf_index,
            self.context,
        )?;
        self.epoch = epoch;
        self.key_id = key_id;
        self.key = key;
        self.counter = MonotonicCounter::default();
        Ok(())
    }

    /// Encrypts one media frame into `out` (replacing its contents; its capacity is reused,
    /// so a sender that keeps one buffer does not allocate per frame). `out` then holds the
    /// whole SFrame ciphertext: header, encrypted frame, 16-byte tag.
    pub fn encrypt(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), MediaKeyError> {
        self.encrypt_with_clear(frame, 0, out)
    }

    /// Like [`MediaSender::encrypt`], leaving the first `clear` bytes of `frame` in the
    /// clear ahead of the SFrame header (RFC 9605's metadata): authenticated by the tag but
    /// readable on the way, as browsers' encoded transforms leave a video codec's first
    /// bytes so that a forwarder still sees keyframes. `out` is those bytes, then the
    /// SFrame ciphertext.
    pub fn encrypt_with_clear(
        &mut self,
        frame: &[u8],
        clear: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), MediaKeyError> {
        let clear = clear.min(frame.len());
        let (meta, payload) = frame.split_at(clear);
        let media = MediaFrameView::try_with_meta_data(&mut self.counter, payload, meta)
            .map_err(|_| MediaKeyError::CounterExhausted)?;
        media.encrypt_into(&self.key, out).map_err(library)?;
        Ok(())
    }

    /// The epoch this sender encrypts for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The KID its frames carry.
    pub fn key_id(&self) -> u64 {
        self.key_id
    }
}

/// How long a [`MediaReceiver`] keeps superseded epochs, and its replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// How many superseded epochs to keep besides the current one (at most 2^E - 1 = 15).
    pub previous_epochs: usize,
    /// How long after being superseded an epoch's keys still decrypt. Long enough for
    /// frames in flight and for members that process the commit a little later than this
    /// one; short, because a member removed by the new epoch still knows the old keys.
    pub grace: Duration,
    /// The replay window per KID, in frames (see [`DEFAULT_REPLAY_WINDOW`]).
    pub replay_window: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            previous_epochs: 2,
            grace: Duration::from_secs(5),
            replay_window: DEFAULT_REPLAY_WINDOW,
        }
    }
}

/// What a decrypted frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The MLS epoch it was encrypted in.
    pub epoch: u64,
    /// The sender's MLS leaf index.
    pub sender_index: u32,
    /// The sender's context id (its stream).
    pub context: u64,
    /// The SFrame counter.
    pub counter: u64,
}

struct SenderKey {
    key: DecryptionKey,
    replay: ReplayAttackProtection,
}

struct EpochKeys {
    epoch: u64,
    layout: KidLayout,
    base_key: Zeroizing<Vec<u8>>,
    superseded_at: Option<Instant>,
    senders: HashMap<u64, SenderKey>,
}

impl EpochKeys {
    /// The most KIDs one epoch derives keys for: a few streams per member.
    fn key_limit(&self) -> usize {
        (self.layout.group_size() as usize)
            .saturating_mul(8)
            .max(64)
    }
}

/// Decrypts the frames of the other members: keys for the current epoch and a few previous
/// ones, derived per sender on first use, with replay protection per KID.
pub struct MediaReceiver {
    my_leaf_index: u32,
    config: ReceiverConfig,
    /// Oldest first; the last one is current.
    epochs: Vec<EpochKeys>,
}

impl fmt::Debug for MediaReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaReceiver")
            .field("my_leaf_index", &self.my_leaf_index)
            .field("config", &self.config)
            .field("epochs", &self.epochs())
            .finish_non_exhaustive()
    }
}

impl MediaReceiver {
    /// A receiver for member `my_leaf_index` (frames under its own KIDs are refused), with
    /// no keys yet: call [`MediaReceiver::rekey`] with the first epoch.
    pub fn new(my_leaf_index: u32, config: ReceiverConfig) -> Self {
        let mut config = config;
        config.previous_epochs = config.previous_epochs.min((1 << EPOCH_BITS) - 1);
        config.replay_window = config
            .replay_window
            .clamp(Tolerance::MIN, DEFAULT_REPLAY_WINDOW * 64);
        MediaReceiver {
            my_leaf_index,
            config,
            epochs: Vec::new(),
        }
    }

    /// Adds the keys of a new, later epoch (it becomes current; the previous current one
    /// starts its grace period at `now`). An older epoch with the same low-order epoch bits
    /// is dropped, as RFC 9605 §5.2 requires.
    pub fn rekey(
        &mut self,
        epoch: u64,
        epoch_secret: &[u8],
        group_size: u32,
        now: Instant,
    ) -> Result<(), MediaKeyError> {
        check_secret(epoch_secret)?;
        let layout = KidLayout::for_group(group_size)?;
        if let Some(current) = self.epochs.last_mut() {
            if epoch <= current.epoch {
                return Err(MediaKeyError::StaleEpoch {
                    current: current.epoch,
                    new: epoch,
                });
            }
            current.superseded_at = Some(now);
        }
        self.epochs
            .retain(|keys| epoch_lsb(keys.epoch) != epoch_lsb(epoch));
        self.epochs.push(EpochKeys {
            epoch,
            layout,
            base_key: Zeroizing::new(epoch_secret.to_vec()),
            superseded_at: None,
            senders: HashMap::new(),
        });
        self.expire(now);
        Ok(())
    }

    /// Drops superseded epochs past their grace period, and the oldest beyond
    /// [`ReceiverConfig::previous_epochs`].
    pub fn expire(&mut self, now: Instant) {
        let grace = self.config.grace;
        self.epochs.retain(|keys| match keys.superseded_at {
            None => true,
            Some(at) => now.saturating_duration_since(at) < grace,
        });
        let keep = self.config.previous_epochs + 1;
        if self.epochs.len() > keep {
            let excess = self.epochs.len() - keep;
            self.epochs.drain(..excess);
        }
    }

    /// The epochs this receiver holds keys for, oldest first.
    pub fn epochs(&self) -> Vec<u64> {
        self.epochs.iter().map(|keys| keys.epoch).collect()
    }

    /// Decrypts one SFrame ciphertext into `out` (replacing its contents, reusing its
    /// capacity). Rejects frames of unknown or expired epochs, of senders outside the
    /// group, our own KID, tampered frames and replays; nothing is recorded for a frame
    /// that fails, so a forged frame cannot disturb the replay window.
    pub fn decrypt(
        &mut self,
        frame: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Received, MediaKeyError> {
        self.decrypt_with_clear(frame, 0, now, out)
    }

    /// Like [`MediaReceiver::decrypt`] for a frame whose first `clear` bytes were left in
    /// the clear ([`MediaSender::encrypt_with_clear`]): they must authenticate with the
    /// rest, and `out` is the whole original frame, clear bytes first.
    pub fn decrypt_with_clear(
        &mut self,
        frame: &[u8],
        clear: usize,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<Received, MediaKeyError> {
        self.expire(now);
        if clear > frame.len() {
            return Err(MediaKeyError::Malformed("shorter than its clear bytes"));
        }
        let (meta, sframe) = frame.split_at(clear);
        let view = EncryptedFrameView::try_with_meta_data(sframe, meta)
            .map_err(|_| MediaKeyError::Malformed("bad SFrame header"))?;
        let kid = view.header().key_id();
        let counter = view.header().counter();
        let lsb = epoch_lsb(kid);
        let keys = self
            .epochs
            .iter_mut()
            .find(|keys| epoch_lsb(keys.epoch) == lsb)
            .ok_or(MediaKeyError::UnknownEpoch { kid })?;
        let parts = keys.layout.split(kid);
        if parts.sender_index >= u64::from(keys.layout.group_size()) {
            return Err(MediaKeyError::UnknownSender {
                kid,
                index: parts.sender_index,
            });
        }
        if parts.sender_index == u64::from(self.my_leaf_index) {
            return Err(MediaKeyError::OwnKeyId { kid });
        }
        let failed = |e: SframeError| decrypt_error(e, kid, counter);
        match keys.senders.get_mut(&kid) {
            Some(sender) => {
                view.validated_decrypt_into(&sender.key, out, &mut sender.replay)
                    .map_err(failed)?;
            }
            None => {
                if keys.senders.len() >= keys.key_limit() {
                    return Err(MediaKeyError::TooManyKeys {
                        epoch: keys.epoch,
                        kid,
                    });
                }
                // Derived on first use; kept only once a frame authenticated under it, so
                // forged KIDs do not grow the table.
                let tolerance = Tolerance::try_new(self.config.replay_window).map_err(library)?;
                let mut sender = SenderKey {
                    key: DecryptionKey::derive_from(CIPHER_SUITE, kid, keys.base_key.as_slice())
                        .map_err(library)?,
                    replay: ReplayAttackProtection::new(kid, tolerance),
                };
                view.validated_decrypt_into(&sender.key, out, &mut sender.replay)
                    .map_err(failed)?;
                keys.senders.insert(kid, sender);
            }
        }
        Ok(Received {
            epoch: keys.epoch,
            // Below group_size, which is a u32.
            sender_index: u32::try_from(parts.sender_index).unwrap_or(u32::MAX),
            context: parts.context,
            counter,
        })
    }
}

fn decrypt_error(e: SframeError, kid: u64, counter: u64) -> MediaKeyError {
    if let Some(replay) = e.source_as::<ReplayAttackProtectionError>() {
        return match replay {
            ReplayAttackProtectionError::DuplicatedFrame { .. } => {
                MediaKeyError::Replayed { kid, counter }
            }
            ReplayAttackProtectionError::CounterTooOld { .. } => {
                MediaKeyError::TooOld { kid, counter }
            }
            other => MediaKeyError::Library(other.to_string()),
        };
    }
    match e {
        SframeError::DecryptionFailure => MediaKeyError::Authentication { kid, counter },
        SframeError::InvalidBuffer(_) => MediaKeyError::Malformed("frame too short"),
        other => library(other),
    }
}

#[cfg(test)]
mod tests;
