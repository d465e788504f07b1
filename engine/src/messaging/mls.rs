//! The MLS layer (RFC 9420, via openmls): the identity's Ed25519 key is both the MLS
//! credential (a basic credential whose content is the 32-byte public key) and the leaf
//! signature key, so a member *is* the identity the signaling server authenticated. Owns
//! key packages, group creation, add and remove commits, welcomes, application messages
//! and the exporter. Sans-IO: every call takes the SQLite connection (usually inside the
//! caller's transaction) and returns bytes; sending them is the messenger's job.
//!
//! Policy: one cipher suite (X25519, AES-128-GCM, SHA-256, Ed25519), commits and
//! application messages always encrypted (the server never sees a plaintext handshake),
//! the ratchet tree inside welcomes, five past epochs kept so messages sent just before a
//! commit still decrypt.

use std::collections::BTreeSet;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use rusqlite::Connection;
use sotto_signaling::protocol::IdentityKey;

use crate::Identity;
use crate::e2ee::media::MediaEpoch;
use crate::e2ee::sframe_keys;
use zeroize::Zeroizing;

/// The only cipher suite Sotto speaks.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How many past epochs' secrets a member keeps for late messages.
const MAX_PAST_EPOCHS: usize = 5;

/// Application messages are padded to a multiple of this, so lengths leak less.
const PADDING: usize = 64;

/// serde_json for openmls's stored values (the sqlite storage wants a codec).
#[derive(Default)]
pub struct JsonCodec;

impl openmls_sqlite_storage::Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// openmls's provider over a borrowed connection (so it joins the caller's transaction).
pub struct Provider<'c> {
    crypto: RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, &'c Connection>,
}

impl<'c> Provider<'c> {
    /// A provider whose state lives in `conn`.
    pub fn new(conn: &'c Connection) -> Self {
        Provider {
            crypto: RustCrypto::default(),
            storage: SqliteStorageProvider::new(conn),
        }
    }
}

impl<'c> OpenMlsProvider for Provider<'c> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, &'c Connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

/// An MLS operation failed. Messages name what the user should know, not openmls types.
#[derive(Debug, thiserror::Error)]
pub enum MlsError {
    /// The bytes are not an MLS message.
    #[error("not an MLS message: {0}")]
    Malformed(String),
    /// A key package from the directory is invalid or belongs to someone else.
    #[error("the key package is not valid for {who}: {why}")]
    BadKeyPackage {
        /// Whose it should have been.
        who: String,
        /// What is wrong.
        why: String,
    },
    /// A member's credential is not a Sotto identity (content and signature key differ).
    #[error("a member's credential does not match its signature key")]
    BadCredential,
    /// No local state for this group.
    #[error("unknown conversation")]
    UnknownGroup,
    /// This identity was removed from the group.
    #[error("you are no longer a member of this conversation")]
    NotAMember,
    /// Decryption or authentication failed: tampered, forged, or too old.
    #[error("the message could not be decrypted or authenticated: {0}")]
    Rejected(String),
    /// A welcome could not be used.
    #[error("the invitation could not be used: {0}")]
    BadWelcome(String),
    /// A group operation failed.
    #[error("MLS: {0}")]
    Group(String),
    /// The local store failed.
    #[error("local store: {0}")]
    Store(#[from] rusqlite::Error),
}

fn group_err(e: impl std::fmt::Display) -> MlsError {
    MlsError::Group(e.to_string())
}

/// Signs MLS structures with the identity's Ed25519 key.
pub struct IdentitySigner<'a>(pub &'a Identity);

impl Signer for IdentitySigner<'_> {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// The credential of `identity`: its public key as both content and signature key.
pub fn credential_of(identity: &IdentityKey) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
        signature_key: identity.as_bytes().to_vec().into(),
    }
}

/// The identity a member's credential names, checked against its signature key: a
/// credential that claims one identity and signs with another key is refused.
pub fn identity_of(credential: &Credential, signature_key: &[u8]) -> Result<IdentityKey, MlsError> {
    let basic =
        BasicCredential::try_from(credential.clone()).map_err(|_| MlsError::BadCredential)?;
    let content: [u8; 32] = basic
        .identity()
        .try_into()
        .map_err(|_| MlsError::BadCredential)?;
    if content != signature_key {
        return Err(MlsError::BadCredential);
    }
    Ok(IdentityKey(content))
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .padding_size(PADDING)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .padding_size(PADDING)
        .build()
}

/// Fresh key packages for the directory: `count` one-time ones and a last-resort one.
/// Their private keys are stored; a welcome made for one of them finds them there.
pub fn new_key_packages(
    conn: &Connection,
    identity: &Identity,
    count: usize,
) -> Result<(Vec<Vec<u8>>, Vec<u8>), MlsError> {
    let provider = Provider::new(conn);
    let signer = IdentitySigner(identity);
    let make = |last_resort: bool| -> Result<Vec<u8>, MlsError> {
        let mut builder = KeyPackage::builder();
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &provider,
                &signer,
                credential_of(&identity.public()),
            )
            .map_err(group_err)?;
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .map_err(group_err)
    };
    let regular = (0..count).map(|_| make(false)).collect::<Result<_, _>>()?;
    Ok((regular, make(true)?))
}

/// Parse and verify `who`'s key package from the directory.
pub fn validate_key_package(bytes: &[u8], who: &IdentityKey) -> Result<KeyPackage, MlsError> {
    let bad = |why: String| MlsError::BadKeyPackage {
        who: crate::identity::fingerprint(who),
        why,
    };
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| bad(e.to_string()))?;
    let MlsMessageBodyIn::KeyPackage(package) = message.extract() else {
        return Err(bad("not a key package".into()));
    };
    let package = package
        .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
        .map_err(|e| bad(e.to_string()))?;
    if package.ciphersuite() != CIPHERSUITE {
        return Err(bad("another cipher suite".into()));
    }
    let leaf = package.leaf_node();
    let owner = identity_of(leaf.credential(), leaf.signature_key().as_slice())
        .map_err(|e| bad(e.to_string()))?;
    if owner != *who {
        return Err(bad("it belongs to another identity".into()));
    }
    Ok(package)
}

/// A commit ready to submit with `group_commit`; merge it once the server accepts.
#[derive(Debug, Clone)]
pub struct CommitOut {
    /// The group.
    pub group_id: Vec<u8>,
    /// The epoch it was built on.
    pub epoch: u64,
    /// The commit message.
    pub commit: Vec<u8>,
    /// The welcome, when members are added.
    pub welcome: Option<Vec<u8>>,
    /// Members before the commit other than this identity (removed ones included).
    pub to: Vec<IdentityKey>,
    /// Members the commit adds.
    pub welcome_to: Vec<IdentityKey>,
    /// Members after the commit, this identity included.
    pub members: Vec<IdentityKey>,
}

fn load(provider: &Provider<'_>, group_id: &[u8]) -> Result<MlsGroup, MlsError> {
    MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id))?
        .ok_or(MlsError::UnknownGroup)
}

fn load_active(provider: &Provider<'_>, group_id: &[u8]) -> Result<MlsGroup, MlsError> {
    let group = load(provider, group_id)?;
    if !group.is_active() {
        return Err(MlsError::NotAMember);
    }
    Ok(group)
}

/// The group's members, by identity, in leaf order.
pub fn members_of(group: &MlsGroup) -> Result<Vec<IdentityKey>, MlsError> {
    group
        .members()
        .map(|m| identity_of(&m.credential, &m.signature_key))
        .collect()
}

/// Create a group with this identity as its only member.
pub fn create_group(
    conn: &Connection,
    identity: &Identity,
    group_id: &[u8],
) -> Result<(), MlsError> {
    let provider = Provider::new(conn);
    MlsGroup::new_with_group_id(
        &provider,
        &IdentitySigner(identity),
        &create_config(),
        GroupId::from_slice(group_id),
        credential_of(&identity.public()),
    )
    .map_err(group_err)?;
    Ok(())
}

/// Build a commit adding the owners of `packages` (validated ones). Pending until
/// [`merge_pending`] or [`clear_pending`].
pub fn add_members(
    conn: &Connection,
    identity: &Identity,
    group_id: &[u8],
    packages: &[KeyPackage],
) -> Result<CommitOut, MlsError> {
    let provider = Provider::new(conn);
    let mut group = load_active(&provider, group_id)?;
    let me = identity.public();
    let before = members_of(&group)?;
    let added = packages
        .iter()
        .map(|p| {
            identity_of(
                p.leaf_node().credential(),
                p.leaf_node().signature_key().as_slice(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(already) = added.iter().find(|a| before.contains(a)) {
        return Err(MlsError::Group(format!(
            "{} is already a member",
            crate::identity::fingerprint(already)
        )));
    }
    let epoch = group.epoch().as_u64();
    let (commit, welcome, _info) = group
        .add_members(&provider, &IdentitySigner(identity), packages)
        .map_err(group_err)?;
    let mut members = before.clone();
    members.extend(added.iter().copied());
    Ok(CommitOut {
        group_id: group_id.to_vec(),
        epoch,
        commit: commit.tls_serialize_detached().map_err(group_err)?,
        welcome: Some(welcome.tls_serialize_detached().map_err(group_err)?),
        to: before.into_iter().filter(|m| *m != me).collect(),
        welcome_to: added,
        members,
    })
}

/// Build a commit removing `who`. Pending until merged or cleared.
pub fn remove_members(
    conn: &Connection,
    identity: &Identity,
    group_id: &[u8],
    who: &[IdentityKey],
) -> Result<CommitOut, MlsError> {
    let provider = Provider::new(conn);
    let mut group = load_active(&provider, group_id)?;
    let me = identity.public();
    let mut leaves = Vec::new();
    for member in group.members() {
        let id = identity_of(&member.credential, &member.signature_key)?;
        if who.contains(&id) {
            leaves.push(member.index);
        }
    }
    if leaves.len() != who.iter().collect::<BTreeSet<_>>().len() {
        return Err(MlsError::Group("not every one of them is a member".into()));
    }
    if who.contains(&me) {
        return Err(MlsError::Group("use leave to remove yourself".into()));
    }
    let before = members_of(&group)?;
    let epoch = group.epoch().as_u64();
    let (commit, _welcome, _info) = group
        .remove_members(&provider, &IdentitySigner(identity), &leaves)
        .map_err(group_err)?;
    Ok(CommitOut {
        group_id: group_id.to_vec(),
        epoch,
        commit: commit.tls_serialize_detached().map_err(group_err)?,
        welcome: None,
        to: before.iter().copied().filter(|m| *m != me).collect(),
        welcome_to: Vec::new(),
        members: before.into_iter().filter(|m| !who.contains(m)).collect(),
    })
}

/// Build a commit that only refreshes this identity's leaf (new HPKE and path secrets):
/// post-compromise security for a member whose keys may have leaked. Pending until merged
/// or cleared.
pub fn self_update(
    conn: &Connection,
    identity: &Identity,
    group_id: &[u8],
) -> Result<CommitOut, MlsError> {
    let provider = Provider::new(conn);
    let mut group = load_active(&provider, group_id)?;
    let me = identity.public();
    let members = members_of(&group)?;
    let epoch = group.epoch().as_u64();
    let bundle = group
        .self_update(
            &provider,
            &IdentitySigner(identity),
            LeafNodeParameters::default(),
        )
        .map_err(group_err)?;
    let (commit, _welcome, _info) = bundle.into_messages();
    Ok(CommitOut {
        group_id: group_id.to_vec(),
        epoch,
        commit: commit.tls_serialize_detached().map_err(group_err)?,
        welcome: None,
        to: members.iter().copied().filter(|m| *m != me).collect(),
        welcome_to: Vec::new(),
        members,
    })
}

/// The server accepted this identity's pending commit: move to the new epoch.
pub fn merge_pending(conn: &Connection, group_id: &[u8]) -> Result<u64, MlsError> {
    let provider = Provider::new(conn);
    let mut group = load(&provider, group_id)?;
    group.merge_pending_commit(&provider).map_err(group_err)?;
    Ok(group.epoch().as_u64())
}

/// The server refused this identity's pending commit: forget it.
pub fn clear_pending(conn: &Connection, group_id: &[u8]) -> Result<(), MlsError> {
    let provider = Provider::new(conn);
    let mut group = load(&provider, group_id)?;
    group.clear_pending_commit(provider.storage())?;
    Ok(())
}

/// Encrypt an application message; returns the ciphertext and the other members.
pub fn encrypt(
    conn: &Connection,
    identity: &Identity,
    group_id: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<IdentityKey>), MlsError> {
    let provider = Provider::new(conn);
    let mut group = load_active(&provider, group_id)?;
    let me = identity.public();
    let others = members_of(&group)?
        .into_iter()
        .filter(|m| *m != me)
        .collect();
    let message = group
        .create_message(&provider, &IdentitySigner(identity), plaintext)
        .map_err(group_err)?;
    Ok((message.tls_serialize_detached().map_err(group_err)?, others))
}

/// What an incoming MLS message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A welcome: this identity joined a group.
    Joined {
        /// The group.
        group_id: Vec<u8>,
        /// Who sent the welcome.
        by: IdentityKey,
        /// Everyone in it now.
        members: Vec<IdentityKey>,
    },
    /// Another member's commit moved the group to a new epoch.
    Commit {
        /// The group.
        group_id: Vec<u8>,
        /// The committer.
        by: IdentityKey,
        /// Members it added.
        added: Vec<IdentityKey>,
        /// Members it removed.
        removed: Vec<IdentityKey>,
        /// The new epoch.
        epoch: u64,
    },
    /// An application message, authenticated as `sender`'s.
    Application {
        /// The group.
        group_id: Vec<u8>,
        /// The authenticated sender.
        sender: IdentityKey,
        /// The decrypted bytes.
        plaintext: Vec<u8>,
    },
}

/// Process one incoming MLS message (from the mailbox or a data channel). On error the
/// caller rolls its transaction back, so a rejected message changes nothing.
pub fn receive(conn: &Connection, bytes: &[u8]) -> Result<Incoming, MlsError> {
    let provider = Provider::new(conn);
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| MlsError::Malformed(e.to_string()))?;
    match message.extract() {
        MlsMessageBodyIn::Welcome(welcome) => join(&provider, welcome),
        MlsMessageBodyIn::PrivateMessage(m) => process(&provider, ProtocolMessage::from(m)),
        MlsMessageBodyIn::PublicMessage(_) => Err(MlsError::Rejected(
            "plaintext handshake messages are not accepted".into(),
        )),
        _ => Err(MlsError::Malformed("not a message for a group".into())),
    }
}

fn join(provider: &Provider<'_>, welcome: Welcome) -> Result<Incoming, MlsError> {
    let staged = StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
        .map_err(|e| MlsError::BadWelcome(e.to_string()))?;
    let sender = staged
        .welcome_sender()
        .map_err(|e| MlsError::BadWelcome(e.to_string()))?;
    let by = identity_of(sender.credential(), sender.signature_key().as_slice())?;
    let group_id = staged.group_context().group_id().as_slice().to_vec();
    // A member removed earlier and invited again: its old, inactive state makes way.
    if let Some(mut old) = MlsGroup::load(provider.storage(), &GroupId::from_slice(&group_id))? {
        if old.is_active() {
            return Err(MlsError::BadWelcome(
                "already a member of that group".into(),
            ));
        }
        old.delete(provider.storage())?;
    }
    let group = staged
        .into_group(provider)
        .map_err(|e| MlsError::BadWelcome(e.to_string()))?;
    Ok(Incoming::Joined {
        group_id,
        by,
        members: members_of(&group)?,
    })
}

fn process(provider: &Provider<'_>, message: ProtocolMessage) -> Result<Incoming, MlsError> {
    let group_id = message.group_id().as_slice().to_vec();
    let mut group = load_active(provider, &group_id)?;
    let processed = group
        .process_message(provider, message)
        .map_err(|e| MlsError::Rejected(e.to_string()))?;
    let sender = {
        let credential = processed.credential().clone();
        let key = match processed.sender() {
            Sender::Member(index) => group
                .member_at(*index)
                .map(|m| m.signature_key)
                .ok_or_else(|| MlsError::Rejected("unknown sender".into()))?,
            _ => return Err(MlsError::Rejected("only members may send".into())),
        };
        identity_of(&credential, &key)?
    };
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => Ok(Incoming::Application {
            group_id,
            sender,
            plaintext: app.into_bytes(),
        }),
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            let added = staged
                .add_proposals()
                .map(|p| {
                    let leaf = p.add_proposal().key_package().leaf_node();
                    identity_of(leaf.credential(), leaf.signature_key().as_slice())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut removed = Vec::new();
            for p in staged.remove_proposals() {
                let index = p.remove_proposal().removed();
                let member = group
                    .member_at(index)
                    .ok_or_else(|| MlsError::Rejected("removes an unknown member".into()))?;
                removed.push(identity_of(&member.credential, &member.signature_key)?);
            }
            // An update path may replace a leaf: its credential must still be a Sotto
            // identity, and the same one.
            if let Some(leaf) = staged.update_path_leaf_node() {
                let id = identity_of(leaf.credential(), leaf.signature_key().as_slice())?;
                if id != sender {
                    return Err(MlsError::BadCredential);
                }
            }
            group
                .merge_staged_commit(provider, *staged)
                .map_err(group_err)?;
            Ok(Incoming::Commit {
                group_id,
                by: sender,
                added,
                removed,
                epoch: group.epoch().as_u64(),
            })
        }
        ProcessedMessageContent::ProposalMessage(_)
        | ProcessedMessageContent::ExternalJoinProposalMessage(_) => Err(MlsError::Rejected(
            "standalone proposals are not used by Sotto".into(),
        )),
        #[allow(unreachable_patterns)]
        _ => Err(MlsError::Rejected("unsupported message content".into())),
    }
}

/// The group's current epoch, this identity's leaf index, and an exporter secret
/// (RFC 9420 §8.5), e.g. SFrame's base key (RFC 9605 §5.2).
pub fn export_secret(
    conn: &Connection,
    group_id: &[u8],
    label: &str,
    length: usize,
) -> Result<(u64, u32, Vec<u8>), MlsError> {
    let provider = Provider::new(conn);
    let group = load_active(&provider, group_id)?;
    let secret = group
        .export_secret(provider.crypto(), label, &[], length)
        .map_err(group_err)?;
    Ok((group.epoch().as_u64(), group.own_leaf_index().u32(), secret))
}

/// The SFrame keying material of the group's current epoch (RFC 9605 §5.2): the exporter
/// secret, this member's leaf index, and `group_size`, one more than the largest leaf
/// index in the tree (every member computes the same value, blank leaves included).
pub fn media_epoch(conn: &Connection, group_id: &[u8]) -> Result<MediaEpoch, MlsError> {
    let provider = Provider::new(conn);
    let group = load_active(&provider, group_id)?;
    let secret = group
        .export_secret(
            provider.crypto(),
            sframe_keys::EXPORTER_LABEL,
            sframe_keys::EXPORTER_CONTEXT,
            sframe_keys::EXPORTER_LENGTH,
        )
        .map_err(group_err)?;
    let group_size = group
        .members()
        .map(|m| m.index.u32())
        .max()
        .map_or(1, |max| max.saturating_add(1));
    Ok(MediaEpoch {
        group: group_id.to_vec(),
        epoch: group.epoch().as_u64(),
        secret: Zeroizing::new(secret),
        group_size,
        my_index: group.own_leaf_index().u32(),
    })
}

/// The current members of a group this identity is in.
pub fn members(conn: &Connection, group_id: &[u8]) -> Result<Vec<IdentityKey>, MlsError> {
    let provider = Provider::new(conn);
    members_of(&load_active(&provider, group_id)?)
}

/// The group's current epoch.
pub fn epoch(conn: &Connection, group_id: &[u8]) -> Result<u64, MlsError> {
    let provider = Provider::new(conn);
    Ok(load(&provider, group_id)?.epoch().as_u64())
}
