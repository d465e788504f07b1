//! The SFrame state of one call: what the media pipeline calls to seal each outgoing frame
//! and open each incoming one, and what the application calls to move the call to a new
//! MLS epoch. Owns one [`MediaSender`] (our audio, context 0) and one [`MediaReceiver`]
//! shared by every incoming stream, each behind its own lock (the sender task and the
//! receiver tasks never wait on each other), plus counters. It does not read MLS state:
//! the application computes a [`MediaEpoch`] (`Conversations::media_epoch`) and passes it
//! in, at the start and after every commit that changes the group.
//!
//! # A fresh key per call
//!
//! Two calls in the same MLS epoch (two people can call many times between commits) must
//! never seal under the same key with the same counter: that would reuse AES-GCM nonces.
//! So each `MediaCrypto` (one per call) and each rekey draws a random SFrame context (RFC
//! 9605 §5.2 lets a sender use several contexts in one epoch, each with its own key and
//! counter): up to 48 bits, as many as the key id leaves next to the sender index and
//! epoch bits. The key id grows by a few bytes; receivers derive the key for any context of
//! a group member.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use zeroize::Zeroizing;

use super::sframe_keys::{
    EPOCH_BITS, MediaKeyError, MediaReceiver, MediaSender, ReceiverConfig, index_bits,
};

/// The most SFrame adds to a frame here: the 16-byte tag and a header of up to 10 bytes
/// (config byte, a key id of up to 7 bytes with the per-call context, a counter of up to
/// 2 bytes for the first 65,536 frames; longer calls add a byte at most).
pub const SFRAME_OVERHEAD_BYTES: u32 = 16 + 10;

/// One MLS epoch's media keying material, as seen by one member.
pub struct MediaEpoch {
    /// The MLS group id.
    pub group: Vec<u8>,
    /// The epoch.
    pub epoch: u64,
    /// `MLS-Exporter("SFrame 1.0 Base Key", "", 16)` of that epoch.
    pub secret: Zeroizing<Vec<u8>>,
    /// One more than the largest leaf index in the epoch's tree (RFC 9605 §5.2's
    /// `group_size`, computed the same way by every member).
    pub group_size: u32,
    /// This member's leaf index.
    pub my_index: u32,
}

impl fmt::Debug for MediaEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaEpoch")
            .field("epoch", &self.epoch)
            .field("group_size", &self.group_size)
            .field("my_index", &self.my_index)
            .finish_non_exhaustive()
    }
}

/// A call's SFrame sender and receiver.
pub struct MediaCrypto {
    group: Vec<u8>,
    sender: Mutex<MediaSender>,
    /// Video frames, under a context of their own: their own counter and, at receivers,
    /// their own replay window (a large video frame may arrive after later audio).
    video_sender: Mutex<MediaSender>,
    receiver: Mutex<MediaReceiver>,
    /// Frames sealed.
    pub sealed: AtomicU64,
    /// Frames opened.
    pub opened: AtomicU64,
    /// Frames refused (tampered, replayed, unknown or expired key, not SFrame at all).
    pub rejected: AtomicU64,
}

impl fmt::Debug for MediaCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaCrypto")
            .field("epoch", &self.epoch())
            .field("rejected", &self.rejected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MediaCrypto {
    /// Keys for a call starting in `first`'s epoch.
    pub fn new(first: &MediaEpoch, now: Instant) -> Result<Self, MediaKeyError> {
        let sender = fresh_sender(first)?;
        let video_sender = fresh_sender(first)?;
        let mut receiver = MediaReceiver::new(first.my_index, ReceiverConfig::default());
        receiver.rekey(first.epoch, &first.secret, first.group_size, now)?;
        Ok(MediaCrypto {
            group: first.group.clone(),
            sender: Mutex::new(sender),
            video_sender: Mutex::new(video_sender),
            receiver: Mutex::new(receiver),
            sealed: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The MLS group the keys come from.
    pub fn group(&self) -> &[u8] {
        &self.group
    }

    /// The epoch our frames are sealed in.
    pub fn epoch(&self) -> u64 {
        lock(&self.sender).epoch()
    }

    /// Moves to a later epoch (after a commit: a member added or removed, or an update).
    /// Frames of the previous epoch still open for a few seconds (in flight, or from
    /// members who process the commit a little later); our own frames use the new keys at
    /// once, so a removed member cannot read them.
    pub fn rekey(&self, next: &MediaEpoch, now: Instant) -> Result<(), MediaKeyError> {
        lock(&self.receiver).rekey(next.epoch, &next.secret, next.group_size, now)?;
        let mut sender = lock(&self.sender);
        if next.epoch <= sender.epoch() {
            return Err(MediaKeyError::StaleEpoch {
                current: sender.epoch(),
                new: next.epoch,
            });
        }
        *sender = fresh_sender(next)?;
        *lock(&self.video_sender) = fresh_sender(next)?;
        Ok(())
    }

    /// Encrypts one encoded frame (the RTP payload) into `out`.
    pub fn seal(&self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), MediaKeyError> {
        lock(&self.sender).encrypt(frame, out)?;
        self.sealed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Encrypts one encoded video frame into `out`, its first `clear` bytes left readable
    /// (and authenticated) ahead of the SFrame header.
    pub fn seal_video(
        &self,
        frame: &[u8],
        clear: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), MediaKeyError> {
        lock(&self.video_sender).encrypt_with_clear(frame, clear, out)?;
        self.sealed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Decrypts one received video frame sealed by [`MediaCrypto::seal_video`] with the
    /// same `clear` (0: an audio payload, [`MediaCrypto::open`]); `out` is the whole
    /// encoded frame. Refusals are counted.
    pub fn open_video(
        &self,
        frame: &[u8],
        clear: usize,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<(), MediaKeyError> {
        match lock(&self.receiver).decrypt_with_clear(frame, clear, now, out) {
            Ok(_) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Decrypts one received RTP payload into `out`; a refused frame is counted in
    /// [`MediaCrypto::rejected`] and leaves `out` to be ignored.
    pub fn open(
        &self,
        payload: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<(), MediaKeyError> {
        self.open_video(payload, 0, now, out)
    }
}

/// A sender in `epoch` under a random context (see the module documentation).
fn fresh_sender(epoch: &MediaEpoch) -> Result<MediaSender, MediaKeyError> {
    let free = 64 - u32::from(index_bits(epoch.group_size)) - u32::from(EPOCH_BITS);
    let bits = free.min(48);
    let context = if bits == 0 {
        0
    } else {
        rand::random::<u64>() >> (64 - bits)
    };
    MediaSender::with_context(
        epoch.epoch,
        &epoch.secret,
        epoch.group_size,
        epoch.my_index,
        context,
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Neither side panics while holding the lock; if one did, its state is still a valid
    // key schedule.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2ee::sframe_keys::EXPORTER_LENGTH;

    fn epoch(epoch: u64, secret: u8, my_index: u32) -> MediaEpoch {
        MediaEpoch {
            group: vec![1; 17],
            epoch,
            secret: Zeroizing::new(vec![secret; EXPORTER_LENGTH]),
            group_size: 3,
            my_index,
        }
    }

    #[test]
    fn members_open_each_others_frames_and_a_rekey_shuts_out_the_old_keys() {
        let now = Instant::now();
        let alice = MediaCrypto::new(&epoch(4, 7, 0), now).unwrap();
        let bob = MediaCrypto::new(&epoch(4, 7, 1), now).unwrap();
        let carol = MediaCrypto::new(&epoch(4, 7, 2), now).unwrap();
        let (mut wire, mut plain) = (Vec::new(), Vec::new());
        alice.seal(b"opus frame 1", &mut wire).unwrap();
        assert!(!wire.windows(5).any(|w| w == b"frame"));
        bob.open(&wire, now, &mut plain).unwrap();
        assert_eq!(plain, b"opus frame 1");
        carol.open(&wire, now, &mut plain).unwrap();
        // A replay and a flipped bit are refused and counted.
        assert!(bob.open(&wire, now, &mut plain).is_err());
        let last = wire.len() - 1;
        alice.seal(b"opus frame 2", &mut wire).unwrap();
        wire[last] ^= 1;
        assert!(bob.open(&wire, now, &mut plain).is_err());
        assert_eq!(bob.rejected.load(Ordering::Relaxed), 2);
        assert_eq!(bob.opened.load(Ordering::Relaxed), 1);

        // Carol is removed: Alice and Bob move to epoch 5, whose secret Carol lacks.
        alice.rekey(&epoch(5, 9, 0), now).unwrap();
        bob.rekey(&epoch(5, 9, 1), now).unwrap();
        assert_eq!(alice.epoch(), 5);
        alice.seal(b"after the removal", &mut wire).unwrap();
        bob.open(&wire, now, &mut plain).unwrap();
        assert_eq!(plain, b"after the removal");
        assert!(carol.open(&wire, now, &mut plain).is_err());
        // Rekeying backwards is refused.
        assert!(alice.rekey(&epoch(4, 7, 0), now).is_err());
    }

    #[test]
    fn two_calls_in_one_epoch_never_share_a_key() {
        let now = Instant::now();
        let first = MediaCrypto::new(&epoch(4, 7, 0), now).unwrap();
        let second = MediaCrypto::new(&epoch(4, 7, 0), now).unwrap();
        let kid = |c: &MediaCrypto| lock(&c.sender).key_id();
        assert_ne!(kid(&first), kid(&second));
        // Same frame, same counter (0), different calls: different ciphertexts, and a
        // member opens both.
        let (mut a, mut b, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        first.seal(b"the same opus frame", &mut a).unwrap();
        second.seal(b"the same opus frame", &mut b).unwrap();
        let header = |wire: &[u8]| wire.len() - b"the same opus frame".len() - 16;
        assert_ne!(&a[header(&a)..], &b[header(&b)..]);
        // The per-call context makes the key id a few bytes long; the header stays small.
        assert!((2..=10).contains(&header(&a)), "{}", header(&a));
        let bob = MediaCrypto::new(&epoch(4, 7, 1), now).unwrap();
        bob.open(&a, now, &mut plain).unwrap();
        bob.open(&b, now, &mut plain).unwrap();
        assert_eq!(plain, b"the same opus frame");
    }
}
