//! Byte-carrying wire types: opaque blobs and Ed25519 identity keys, both written on the
//! wire as unpadded base64url strings. Owns encoding only; no crypto happens here.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Encode bytes the way every Sotto wire field does (unpadded base64url).
pub fn encode_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode an unpadded base64url string.
pub fn decode_b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// Opaque bytes (ciphertext, key packages, challenges) carried as base64url text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of raw bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Self {
        Blob(bytes)
    }
}

impl From<&[u8]> for Blob {
    fn from(bytes: &[u8]) -> Self {
        Blob(bytes.to_vec())
    }
}

impl fmt::Debug for Blob {
    // Contents stay out of debug output: they may be ciphertext or key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_b64(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode_b64(&text)
            .map(Blob)
            .map_err(|e| serde::de::Error::custom(format!("not unpadded base64url: {e}")))
    }
}

/// An identity: the 32-byte Ed25519 public key of a user. It is the whole account.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(pub [u8; 32]);

impl IdentityKey {
    /// Parse the base64url form.
    pub fn parse(text: &str) -> Result<Self, IdentityParseError> {
        let bytes = decode_b64(text).map_err(|_| IdentityParseError)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| IdentityParseError)?;
        Ok(IdentityKey(arr))
    }

    /// The raw public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short form for humans and logs: the first 8 base64url characters. Not unique
    /// enough to authenticate anyone; safety numbers do that.
    pub fn short(&self) -> String {
        let mut full = encode_b64(&self.0);
        full.truncate(8);
        full
    }
}

/// The text was not an unpadded base64url encoding of 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an identity is 32 bytes written as unpadded base64url (43 characters)")]
pub struct IdentityParseError;

impl std::str::FromStr for IdentityKey {
    type Err = IdentityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdentityKey::parse(s)
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_b64(&self.0))
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.short())
    }
}

impl Serialize for IdentityKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_b64(&self.0))
    }
}

impl<'de> Deserialize<'de> for IdentityKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        IdentityKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_rejects_wrong_lengths() {
        let id = IdentityKey([7; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(IdentityKey::parse(&text), Ok(id));
        assert!(IdentityKey::parse(&encode_b64(&[1; 31])).is_err());
        assert!(IdentityKey::parse("not base64 at all!").is_err());
    }

    #[test]
    fn blob_serializes_as_base64url_and_hides_contents_in_debug() {
        let blob = Blob(b"secret".to_vec());
        let json = serde_json::to_string(&blob).unwrap();
        assert_eq!(json, "\"c2VjcmV0\"");
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), blob);
        assert_eq!(format!("{blob:?}"), "Blob(6 bytes)");
        assert!(serde_json::from_str::<Blob>("\"c2VjcmV0==\"").is_err());
    }
}
