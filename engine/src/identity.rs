//! The user's identity: an Ed25519 key pair whose public key is the whole account (no
//! phone number, no e-mail). Owns generation, the on-disk file (mode 0600, written
//! atomically) and signing. It must never log or print the secret key.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sotto_signaling::protocol::{
    Auth, Blob, IdentityKey, PROTOCOL_VERSION, auth_payload, decode_b64, encode_b64,
    validate_display_name,
};

/// File name of the identity inside a data dir.
pub const IDENTITY_FILE: &str = "identity.json";

/// A failure loading, creating or saving an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No identity file yet.
    #[error("no identity at {0}; create one with `sotto id new`")]
    Missing(PathBuf),
    /// `id new` would overwrite an existing identity.
    #[error(
        "an identity already exists at {0}; it is your account, so it is not overwritten (use --force to replace it)"
    )]
    Exists(PathBuf),
    /// The file is readable by others.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a valid identity.
    #[error("{path} is not a valid Sotto identity file: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The display name was refused.
    #[error("display name: {0}")]
    DisplayName(&'static str),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u32,
    secret_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
}

/// An Ed25519 key pair and an optional self-chosen display name.
pub struct Identity {
    signing: SigningKey,
    display_name: Option<String>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .field("display_name", &self.display_name)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate(display_name: Option<String>) -> Result<Self, IdentityError> {
        if let Some(name) = &display_name {
            validate_display_name(name).map_err(IdentityError::DisplayName)?;
        }
        Ok(Identity {
            signing: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
            display_name,
        })
    }

    /// The public key: the identity others address.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.signing.verifying_key().to_bytes())
    }

    /// The self-chosen display name, if any.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// Sign `message` (Ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The `auth` answer to a signaling server's `hello`: a signature over the server's id
    /// and this connection's challenge (see PROTOCOL.md), with the display name.
    pub fn signaling_auth(&self, server_id: &str, challenge: Blob) -> Auth {
        let signature = self.sign(&auth_payload(server_id, challenge.as_bytes()));
        Auth {
            version: PROTOCOL_VERSION,
            identity: self.public(),
            challenge,
            signature: signature.to_vec().into(),
            display_name: self.display_name.clone(),
        }
    }

    /// A short fingerprint for people to compare by eye: the first 80 bits of
    /// SHA-256("sotto/fingerprint/v1" || public key) as five groups of four hex digits.
    /// (Safety numbers for verifying a contact come with the E2EE issue.)
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public())
    }

    /// Load from `path`, refusing a file that others can read.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(path.to_owned()));
            }
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let invalid = |why: String| IdentityError::Invalid {
            path: path.to_owned(),
            why,
        };
        let file: IdentityFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.version != 1 {
            return Err(invalid(format!("unknown version {}", file.version)));
        }
        let secret: [u8; 32] = decode_b64(&file.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("secret_key is not 32 bytes of base64url".into()))?;
        if let Some(name) = &file.display_name {
            validate_display_name(name).map_err(|why| invalid(why.into()))?;
        }
        Ok(Identity {
            signing: SigningKey::from_bytes(&secret),
            display_name: file.display_name,
        })
    }

    /// Write to `path` with mode 0600 (atomically: a temporary file, then a rename).
    /// Refuses to replace an existing file unless `overwrite`.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), IdentityError> {
        if !overwrite && path.exists() {
            return Err(IdentityError::Exists(path.to_owned()));
        }
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::data_dir::create_private_dir(dir).map_err(io)?;
        }
        let file = IdentityFile {
            version: 1,
            secret_key: encode_b64(&self.signing.to_bytes()),
            display_name: self.display_name.clone(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
        out.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}

/// The fingerprint of any identity (see [`Identity::fingerprint`]).
pub fn fingerprint(key: &IdentityKey) -> String {
    let digest = Sha256::new()
        .chain_update(b"sotto/fingerprint/v1")
        .chain_update(key.as_bytes())
        .finalize();
    digest[..10]
        .chunks(2)
        .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

impl sotto_signaling::client::Authenticator for Identity {
    fn public(&self) -> sotto_signaling::protocol::IdentityKey {
        Identity::public(self)
    }

    fn auth(&self, server_id: &str, challenge: Blob) -> Auth {
        self.signaling_auth(server_id, challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

    #[test]
    fn save_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(IDENTITY_FILE);
        let id = Identity::generate(Some("Ada".into())).unwrap();
        id.save(&path, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.public(), id.public());
        assert_eq!(loaded.display_name(), Some("Ada"));
        assert!(matches!(
            id.save(&path, false),
            Err(IdentityError::Exists(_))
        ));
    }

    #[test]
    fn refuses_open_permissions_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        Identity::generate(None)
            .unwrap()
            .save(&path, false)
            .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::TooOpen { .. })
        ));
        fs::write(&path, "{\"version\":1,\"secret_key\":\"AAAA\"}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Invalid { .. })
        ));
        assert!(matches!(
            Identity::load(&dir.path().join("none")),
            Err(IdentityError::Missing(_))
        ));
    }

    #[test]
    fn signatures_verify_and_fingerprints_are_stable() {
        let id = Identity::generate(None).unwrap();
        let sig = Signature::from_bytes(&id.sign(b"hello"));
        let key = VerifyingKey::from_bytes(id.public().as_bytes()).unwrap();
        assert!(key.verify(b"hello", &sig).is_ok());
        assert_eq!(id.fingerprint(), fingerprint(&id.public()));
        assert_eq!(id.fingerprint().len(), 24);
        assert!(Identity::generate(Some("bad\nname".into())).is_err());
    }
}
