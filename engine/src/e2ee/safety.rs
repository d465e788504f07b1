//! Safety numbers: one number that two people compare (read out, or scan as a QR code) to
//! be sure each holds the other's real identity key, so no server swapped a key between
//! them. Owns the derivation and the QR payload; it does not store which contacts are
//! verified (the client store does) and never sees a secret key.
//!
//! # Derivation (version 1)
//!
//! Each identity key (a 32-byte Ed25519 public key, which in Sotto *is* the identity: there
//! is no separate phone number or account name to bind) gets a fingerprint:
//!
//! ```text
//! h_0 = SHA-512("sotto safety number" || 0x00 || version as u16 big-endian || key)
//! h_i = SHA-512(h_(i-1) || key)            for i = 1 ..= 8192
//! digits = for each of the first six 5-byte slices of h_8192:
//!              (the slice as a 40-bit big-endian integer) mod 100000, as 5 decimal digits
//! ```
//!
//! That is 30 digits (about 100 bits) per key. The 8192 rounds make each guess of an
//! attacker who grinds keys for one whose fingerprint matches a victim's cost 8192 hashes
//! instead of one (about 13 bits of extra work) while costing a phone a few milliseconds;
//! feeding the key into every round means no chain of hashes can be precomputed once and
//! reused for many keys. 2^40 mod 100000 leaves a bias below 10^-7 per group.
//!
//! The safety number is the two 30-digit fingerprints in ascending order, so both people
//! see the same 60 digits, shown as 12 groups of 5. The QR payload carries the version and
//! both keys themselves (in the same order), so a scan compares the keys exactly rather
//! than the 100-bit digests.

use std::fmt;

use sha2::{Digest as _, Sha512};

/// The version of the derivation and of the QR payload.
pub const SAFETY_NUMBER_VERSION: u16 = 1;

/// Hash rounds per fingerprint (see the module documentation).
pub const FINGERPRINT_ROUNDS: u32 = 8192;

/// Digits in one key's fingerprint.
pub const FINGERPRINT_DIGITS: usize = 30;

const DOMAIN: &[u8] = b"sotto safety number";
const QR_PREFIX: &str = "SOTTO-SN";

/// Why a scanned QR payload was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyError {
    /// The scanned text is not a Sotto safety-number code.
    #[error("that QR code is not a Sotto safety number ({0})")]
    Malformed(&'static str),
    /// The code comes from a newer (or unknown) version of Sotto.
    #[error(
        "that safety number uses version {0}, which this Sotto does not know; update both apps"
    )]
    UnsupportedVersion(u16),
    /// A well-formed code for a different pair of keys: one of the two people does not hold
    /// the other's real key (or scanned someone else's code).
    #[error(
        "the safety numbers do not match: one of you does not have the other's real key; do not trust this conversation until you find out why"
    )]
    Mismatch,
}

/// The safety number of two identities, the same whichever side computes it.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// The two keys, ordered as their fingerprints are.
    keys: [[u8; 32]; 2],
    /// 60 decimal digits: the two fingerprints in ascending order.
    digits: String,
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys and a digest of them: nothing secret, so show the digits.
        f.debug_tuple("SafetyNumber").field(&self.digits()).finish()
    }
}

impl SafetyNumber {
    /// The safety number of identities `a` and `b` (Ed25519 public keys), in either order.
    pub fn new(a: &[u8; 32], b: &[u8; 32]) -> SafetyNumber {
        let (fa, fb) = (fingerprint(a), fingerprint(b));
        let (keys, digits) = if fa <= fb {
            ([*a, *b], fa + &fb)
        } else {
            ([*b, *a], fb + &fa)
        };
        SafetyNumber { keys, digits }
    }

    /// The 60 digits as 12 groups of 5 separated by spaces ("12345 67890 …"), for people to
    /// compare by reading them out.
    pub fn digits(&self) -> String {
        let bytes = self.digits.as_bytes();
        bytes
            .chunks(5)
            .map(|group| String::from_utf8_lossy(group).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The text to show as a QR code: `SOTTO-SN:1:<key>:<key>`, each key as 64 upper-case
    /// hex digits (QR's compact alphanumeric mode), in the order of the digits.
    pub fn qr_payload(&self) -> String {
        format!(
            "{QR_PREFIX}:{SAFETY_NUMBER_VERSION}:{}:{}",
            hex_upper(&self.keys[0]),
            hex_upper(&self.keys[1])
        )
    }

    /// Checks a scanned QR payload against this safety number: `Ok` only when it carries
    /// exactly the same two keys.
    pub fn verify_qr(&self, scanned: &str) -> Result<(), SafetyError> {
        let mut parts = scanned.trim().split(':');
        if parts.next() != Some(QR_PREFIX) {
            return Err(SafetyError::Malformed("wrong prefix"));
        }
        let version: u16 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(SafetyError::Malformed("no version"))?;
        if version != SAFETY_NUMBER_VERSION {
            return Err(SafetyError::UnsupportedVersion(version));
        }
        let first = parts
            .next()
            .and_then(parse_key)
            .ok_or(SafetyError::Malformed("first key"))?;
        let second = parts
            .next()
            .and_then(parse_key)
            .ok_or(SafetyError::Malformed("second key"))?;
        if parts.next().is_some() {
            return Err(SafetyError::Malformed("trailing data"));
        }
        // Both sides order the keys the same way, but compare as a pair anyway so a scanner
        // that reorders them is not reported as an attack.
        let same = [first, second] == self.keys || [second, first] == self.keys;
        if same {
            Ok(())
        } else {
            Err(SafetyError::Mismatch)
        }
    }
}

/// One key's 30-digit fingerprint (see the module documentation).
pub fn fingerprint(key: &[u8; 32]) -> String {
    let mut hash = Sha512::new()
        .chain_update(DOMAIN)
        .chain_update([0u8])
        .chain_update(SAFETY_NUMBER_VERSION.to_be_bytes())
        .chain_update(key)
        .finalize();
    for _ in 0..FINGERPRINT_ROUNDS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key)
            .finalize();
    }
    let mut digits = String::with_capacity(FINGERPRINT_DIGITS);
    for slice in hash[..30].chunks(5) {
        let value = slice.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        digits.push_str(&format!("{:05}", value % 100_000));
    }
    digits
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [0x11; 32];
    const B: [u8; 32] = [0x22; 32];

    #[test]
    fn both_sides_see_the_same_number() {
        let ab = SafetyNumber::new(&A, &B);
        let ba = SafetyNumber::new(&B, &A);
        assert_eq!(ab, ba);
        assert_eq!(ab.digits(), ba.digits());
        assert_eq!(ab.qr_payload(), ba.qr_payload());
        let digits = ab.digits();
        assert_eq!(digits.len(), 60 + 11);
        assert_eq!(digits.split(' ').count(), 12);
        assert!(digits.split(' ').all(|g| g.len() == 5));
        assert!(digits.chars().all(|c| c.is_ascii_digit() || c == ' '));
    }

    #[test]
    fn changes_with_either_key() {
        let base = SafetyNumber::new(&A, &B).digits();
        let mut a2 = A;
        a2[31] ^= 1;
        let mut b2 = B;
        b2[0] ^= 0x80;
        assert_ne!(SafetyNumber::new(&a2, &B).digits(), base);
        assert_ne!(SafetyNumber::new(&A, &b2).digits(), base);
        // Each key's half of the number moves, the other's stays.
        let fa = fingerprint(&A);
        let number = SafetyNumber::new(&a2, &B).digits().replace(' ', "");
        assert!(!number.contains(&fa));
        assert!(number.contains(&fingerprint(&B)));
    }

    #[test]
    fn known_answer() {
        // Computed once with this implementation, checked against an independent Python
        // hashlib version of the documented derivation, and pinned: any change to the
        // derivation must come with a new SAFETY_NUMBER_VERSION, or apps disagree.
        assert_eq!(fingerprint(&A), "765168710612988704143717709310");
        assert_eq!(fingerprint(&B), "047709637258128889563748637075");
        assert_eq!(
            SafetyNumber::new(&A, &B).digits(),
            "04770 96372 58128 88956 37486 37075 76516 87106 12988 70414 37177 09310"
        );
        assert_eq!(
            SafetyNumber::new(&A, &B).qr_payload(),
            format!("SOTTO-SN:1:{}:{}", "22".repeat(32), "11".repeat(32))
        );
    }

    #[test]
    fn qr_verifies_exactly() {
        let ours = SafetyNumber::new(&A, &B);
        // What the other person's phone shows, computed from their side.
        let theirs = SafetyNumber::new(&B, &A).qr_payload();
        assert_eq!(ours.verify_qr(&theirs), Ok(()));
        assert_eq!(
            ours.verify_qr(&theirs.to_lowercase().replace("sotto-sn", "SOTTO-SN")),
            Ok(())
        );

        // A swapped key on either side is caught.
        let mut evil = B;
        evil[7] ^= 4;
        let mitm = SafetyNumber::new(&A, &evil).qr_payload();
        assert_eq!(ours.verify_qr(&mitm), Err(SafetyError::Mismatch));

        assert!(matches!(
            ours.verify_qr("hello"),
            Err(SafetyError::Malformed(_))
        ));
        assert!(matches!(
            ours.verify_qr(&theirs.replacen(":1:", ":2:", 1)),
            Err(SafetyError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            ours.verify_qr(&format!("{theirs}:00")),
            Err(SafetyError::Malformed(_))
        ));
        assert!(matches!(
            ours.verify_qr(&theirs[..theirs.len() - 2]),
            Err(SafetyError::Malformed(_))
        ));
    }
}
