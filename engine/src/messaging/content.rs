//! What travels inside an MLS application message: a small JSON object with the sender's
//! random message id (for dedupe across the mailbox and the data channel), a per-sender
//! sequence number and send time (for ordering), and one kind of body. The sender's
//! identity is not in here: MLS authenticates it.

use serde::{Deserialize, Serialize};

/// Bodies larger than this are refused on receipt (text is for text; files go as blobs).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;

/// A message id: 16 random bytes chosen by the sender, shown as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(#[serde(with = "hex16")] pub [u8; 16]);

impl MessageId {
    /// A fresh random id.
    pub fn random() -> Self {
        MessageId(rand::random())
    }

    /// Parse the hex form.
    pub fn parse(text: &str) -> Option<Self> {
        hex16::decode(text).map(MessageId)
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex16::encode(&self.0))
    }
}

/// One application message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The sender's id for this message.
    pub id: MessageId,
    /// Increases by one per message the sender sends in this conversation.
    pub seq: u64,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// What it says.
    pub body: Body,
}

/// The kinds of application message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// A text message.
    Text {
        /// The text.
        text: String,
    },
    /// Replace the text of one of the sender's own earlier messages.
    Edit {
        /// The message edited.
        target: MessageId,
        /// Its new text.
        text: String,
    },
    /// Delete one of the sender's own earlier messages for everyone.
    Delete {
        /// The message deleted.
        target: MessageId,
    },
    /// The sender has read these messages.
    Read {
        /// The messages read.
        targets: Vec<MessageId>,
    },
    /// The sender is typing (or stopped). Never stored.
    Typing {
        /// Typing now.
        active: bool,
    },
    /// A conversation's title, set by a member (rooms).
    Title {
        /// The title.
        title: String,
    },
    /// An encrypted file: where its ciphertext is and the key to read it, as the files
    /// module describes it (JSON).
    File {
        /// The file's offer (blob id, key, digest, size, name).
        offer: serde_json::Value,
    },
}

impl Content {
    /// Serialize for encryption.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A derive-only struct of strings and numbers cannot fail to serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse decrypted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_CONTENT_BYTES {
            return Err(format!("a message of {} bytes is too large", bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not a Sotto message: {e}"))
    }
}

mod hex16 {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn encode(bytes: &[u8; 16]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(text: &str) -> Option<[u8; 16]> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("a message id is 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_and_bad_bytes_are_refused() {
        let content = Content {
            id: MessageId::random(),
            seq: 3,
            sent_at: 1_700_000_000_000,
            body: Body::Edit {
                target: MessageId([7; 16]),
                text: "fixed".into(),
            },
        };
        let bytes = content.to_bytes();
        assert_eq!(Content::from_bytes(&bytes), Ok(content.clone()));
        assert_eq!(MessageId::parse(&content.id.to_string()), Some(content.id));
        assert!(Content::from_bytes(b"{\"id\":1}").is_err());
        assert!(Content::from_bytes(&vec![b' '; MAX_CONTENT_BYTES + 1]).is_err());
    }
}
