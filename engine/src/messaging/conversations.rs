//! Conversations: the sans-IO core of encrypted messaging. Every conversation is an MLS
//! group; this owns which groups exist (direct or room), turns user actions into MLS
//! bytes to send, and turns received bytes into history, each step in one SQLite
//! transaction so a rejected message (tampered, replayed, forged) stores nothing. It does
//! no I/O: the messenger sends what it returns and feeds it what arrives.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};
use sotto_signaling::protocol::IdentityKey;

use super::content::{Body, Content, MessageId};
use super::mls::{self, CommitOut, Incoming, MlsError};
use crate::Identity;
use crate::e2ee::media::MediaEpoch;
use crate::identity::fingerprint;
use crate::store::{self, StoreError};

/// The first byte of a group id says what kind of conversation it is. The server sees
/// group ids, and could tell the kinds apart by member count anyway.
const DIRECT: u8 = 1;
const ROOM: u8 = 2;

/// A group id: a kind byte and 16 random bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub Vec<u8>);

impl GroupId {
    fn new(kind: u8) -> Self {
        let mut id = vec![kind];
        id.extend_from_slice(&rand::random::<[u8; 16]>());
        GroupId(id)
    }

    /// Whether this is a one-to-one conversation.
    pub fn is_direct(&self) -> bool {
        self.0.first() == Some(&DIRECT)
    }

    /// The hex form users see and type.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse the hex form.
    pub fn parse(text: &str) -> Option<Self> {
        if !text.len().is_multiple_of(2) || text.len() > 128 || !text.is_ascii() {
            return None;
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(GroupId)
    }
}

/// Why an incoming message was not accepted. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The same ciphertext was processed before.
    #[error("replayed message: this ciphertext was already received")]
    Replayed,
    /// MLS refused it (tampered, forged, too old, unknown group, not a member).
    #[error(transparent)]
    Mls(#[from] MlsError),
    /// It decrypted but is not a valid Sotto message.
    #[error("invalid message content: {0}")]
    BadContent(String),
    /// A valid message that asks for something its sender may not do.
    #[error("refused: {0}")]
    NotAllowed(String),
    /// The local store failed.
    #[error("local store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// A failed user action.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// MLS failed.
    #[error(transparent)]
    Mls(#[from] MlsError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A conversation that does not exist here.
    #[error("no such conversation")]
    Unknown,
    /// Something the user asked for that does not make sense.
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for ConversationError {
    fn from(e: rusqlite::Error) -> Self {
        ConversationError::Store(StoreError::Sqlite(e))
    }
}

/// An application message ready to go: the ciphertext and who gets it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The conversation.
    pub group: GroupId,
    /// The MLS ciphertext.
    pub bytes: Vec<u8>,
    /// The other members.
    pub to: Vec<IdentityKey>,
    /// What was sent (already in the sender's history unless ephemeral).
    pub content: Content,
}

/// What an accepted incoming message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// This identity was added to a conversation.
    Joined {
        /// The conversation.
        group: GroupId,
        /// Who added it.
        by: IdentityKey,
        /// Its members.
        members: Vec<IdentityKey>,
    },
    /// Members were added or removed by another member's commit.
    Membership {
        /// The conversation.
        group: GroupId,
        /// The committer.
        by: IdentityKey,
        /// Added.
        added: Vec<IdentityKey>,
        /// Removed.
        removed: Vec<IdentityKey>,
    },
    /// An application message.
    Message {
        /// The conversation.
        group: GroupId,
        /// The authenticated sender.
        sender: IdentityKey,
        /// What it says.
        content: Content,
    },
}

/// The conversations of one identity, over its local store.
pub struct Conversations {
    conn: Connection,
    identity: Arc<Identity>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Conversations {
    /// Open the store in `data_dir` for `identity`.
    pub fn open(data_dir: &Path, identity: Arc<Identity>) -> Result<Self, StoreError> {
        Ok(Conversations {
            conn: store::open(data_dir)?,
            identity,
        })
    }

    /// An in-memory store (tests, benches).
    pub fn in_memory(identity: Arc<Identity>) -> Result<Self, StoreError> {
        Ok(Conversations {
            conn: store::open_in_memory()?,
            identity,
        })
    }

    /// This identity.
    pub fn me(&self) -> IdentityKey {
        self.identity.public()
    }

    /// The connection, for the history and contact queries.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Key packages to publish: `count` one-time ones and a last-resort one.
    pub fn key_packages(&self, count: usize) -> Result<(Vec<Vec<u8>>, Vec<u8>), MlsError> {
        let tx = self.conn.unchecked_transaction()?;
        let out = mls::new_key_packages(&tx, &self.identity, count)?;
        tx.commit()?;
        Ok(out)
    }

    /// The direct conversation with `peer`, if there is one. If both sides started one
    /// at once there are two; both sides pick the lower id, and read both.
    pub fn direct_with(&self, peer: &IdentityKey) -> Result<Option<GroupId>, rusqlite::Error> {
        self.conn
            .query_row(
                "SELECT group_id FROM conversations
                 WHERE kind = 'direct' AND peer = ?1 AND active = 1
                 ORDER BY group_id LIMIT 1",
                params![peer.as_bytes()],
                |r| r.get(0),
            )
            .optional()
            .map(|g| g.map(GroupId))
    }

    /// Start a direct conversation with the owner of `key_package` (fetched from the
    /// directory): a new group and the commit that adds the peer. Submit the commit,
    /// then call [`Conversations::commit_accepted`].
    pub fn start_direct(
        &self,
        peer: &IdentityKey,
        key_package: &[u8],
    ) -> Result<CommitOut, ConversationError> {
        if *peer == self.me() {
            return Err(ConversationError::Invalid(
                "a conversation with yourself needs no encryption".into(),
            ));
        }
        let package = mls::validate_key_package(key_package, peer)?;
        let group = GroupId::new(DIRECT);
        let tx = self.conn.unchecked_transaction()?;
        mls::create_group(&tx, &self.identity, &group.0)?;
        let out = mls::add_members(&tx, &self.identity, &group.0, &[package])?;
        tx.commit()?;
        Ok(out)
    }

    /// Create a room (a group conversation) with this identity alone in it.
    pub fn create_room(&self, title: Option<&str>) -> Result<GroupId, ConversationError> {
        let group = GroupId::new(ROOM);
        let tx = self.conn.unchecked_transaction()?;
        mls::create_group(&tx, &self.identity, &group.0)?;
        tx.execute(
            "INSERT INTO conversations (group_id, kind, peer, name, created_at)
             VALUES (?1, 'room', NULL, ?2, ?3)",
            params![group.0, title, now_ms()],
        )?;
        tx.commit()?;
        Ok(group)
    }

    /// Build the commit adding the owners of these key packages to a room.
    pub fn add(
        &self,
        group: &GroupId,
        key_packages: &[(IdentityKey, Vec<u8>)],
    ) -> Result<CommitOut, ConversationError> {
        if group.is_direct() {
            return Err(ConversationError::Invalid(
                "a direct conversation has two members; create a room to add more".into(),
            ));
        }
        let packages = key_packages
            .iter()
            .map(|(who, bytes)| mls::validate_key_package(bytes, who))
            .collect::<Result<Vec<_>, _>>()?;
        let tx = self.conn.unchecked_transaction()?;
        let out = mls::add_members(&tx, &self.identity, &group.0, &packages)?;
        tx.commit()?;
        Ok(out)
    }

    /// Build the commit removing members from a room.
    pub fn remove(
        &self,
        group: &GroupId,
        who: &[IdentityKey],
    ) -> Result<CommitOut, ConversationError> {
        if group.is_direct() {
            return Err(ConversationError::Invalid(
                "members cannot be removed from a direct conversation".into(),
            ));
        }
        let tx = self.conn.unchecked_transaction()?;
        let out = mls::remove_members(&tx, &self.identity, &group.0, who)?;
        tx.commit()?;
        Ok(out)
    }

    /// Build a commit that refreshes this identity's keys in a conversation (see
    /// [`Conversations::stale`]).
    pub fn update(&self, group: &GroupId) -> Result<CommitOut, ConversationError> {
        let tx = self.conn.unchecked_transaction()?;
        let out = mls::self_update(&tx, &self.identity, &group.0)?;
        tx.commit()?;
        Ok(out)
    }

    /// Active conversations where this identity has not committed (every commit it makes
    /// refreshes its leaf) for `max_age` ms, joined or created at least that long ago: the
    /// ones whose keys [`Conversations::update`] should refresh, so that a leaked key stops
    /// opening new messages (post-compromise security).
    pub fn stale(&self, max_age_ms: i64) -> Result<Vec<GroupId>, rusqlite::Error> {
        let cutoff = now_ms() - max_age_ms;
        let mut stmt = self.conn.prepare(
            "SELECT c.group_id FROM conversations c
             LEFT JOIN meta m ON m.key = 'own_commit:' || hex(c.group_id)
             WHERE c.active = 1 AND c.created_at <= ?1
               AND (m.value IS NULL OR CAST(m.value AS INTEGER) <= ?1)",
        )?;
        let rows = stmt.query_map(params![cutoff], |row| row.get::<_, Vec<u8>>(0))?;
        rows.map(|r| r.map(GroupId)).collect()
    }

    /// The server accepted `out`: merge it, note the change in history, and record a
    /// new direct conversation.
    pub fn commit_accepted(&self, out: &CommitOut) -> Result<(), ConversationError> {
        let group = GroupId(out.group_id.clone());
        let me = self.me();
        let tx = self.conn.unchecked_transaction()?;
        mls::merge_pending(&tx, &group.0)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('own_commit:' || hex(?1), ?2)",
            params![group.0, now_ms().to_string()],
        )?;
        if group.is_direct() {
            let peer = out.welcome_to.first().copied();
            tx.execute(
                "INSERT OR IGNORE INTO conversations (group_id, kind, peer, name, created_at)
                 VALUES (?1, 'direct', ?2, NULL, ?3)",
                params![group.0, peer.map(|p| p.0.to_vec()), now_ms()],
            )?;
        } else {
            let removed: Vec<IdentityKey> = out
                .to
                .iter()
                .copied()
                .filter(|m| !out.members.contains(m))
                .collect();
            record_membership(&tx, &group, &me, &out.welcome_to, &removed)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The server refused `out` (another commit won): forget it. A direct conversation
    /// that never got going is dropped.
    pub fn commit_refused(&self, out: &CommitOut) -> Result<(), ConversationError> {
        let tx = self.conn.unchecked_transaction()?;
        mls::clear_pending(&tx, &out.group_id)?;
        tx.commit()?;
        Ok(())
    }

    /// Encrypt `body` for a conversation; text, edits, deletes, titles and files go into
    /// this identity's own history at once.
    pub fn send(&self, group: &GroupId, body: Body) -> Result<Outgoing, ConversationError> {
        let me = self.me();
        let tx = self.conn.unchecked_transaction()?;
        let known: bool = tx
            .query_row(
                "SELECT 1 FROM conversations WHERE group_id = ?1 AND active = 1",
                params![group.0],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if !known {
            return Err(ConversationError::Unknown);
        }
        let seq: i64 = tx.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE group_id = ?1 AND sender = ?2",
            params![group.0, me.as_bytes()],
            |r| r.get(0),
        )?;
        let content = Content {
            id: MessageId::random(),
            seq: u64::try_from(seq).unwrap_or(0),
            sent_at: now_ms(),
            body,
        };
        let (bytes, to) = mls::encrypt(&tx, &self.identity, &group.0, &content.to_bytes())?;
        apply(&tx, group, &me, &content, true).map_err(|e| match e {
            ReceiveError::Store(e) => ConversationError::from(e),
            other => ConversationError::Invalid(other.to_string()),
        })?;
        tx.commit()?;
        Ok(Outgoing {
            group: group.clone(),
            bytes,
            to,
            content,
        })
    }

    /// Process one incoming MLS message. All or nothing: on error, no MLS state moved
    /// and no history was written.
    pub fn receive(&self, bytes: &[u8]) -> Result<Received, ReceiveError> {
        let digest = Sha256::digest(bytes).to_vec();
        let tx = self.conn.unchecked_transaction()?;
        let seen: bool = tx
            .query_row(
                "SELECT 1 FROM seen WHERE digest = ?1",
                params![digest],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if seen {
            return Err(ReceiveError::Replayed);
        }
        let received = match mls::receive(&tx, bytes)? {
            Incoming::Joined {
                group_id,
                by,
                members,
            } => {
                let group = GroupId(group_id);
                let (kind, peer) = if group.is_direct() {
                    ("direct", Some(by.0.to_vec()))
                } else {
                    ("room", None)
                };
                tx.execute(
                    "INSERT INTO conversations (group_id, kind, peer, name, created_at)
                     VALUES (?1, ?2, ?3, NULL, ?4)
                     ON CONFLICT (group_id) DO UPDATE SET active = 1",
                    params![group.0, kind, peer, now_ms()],
                )?;
                if !group.is_direct() {
                    record_membership(&tx, &group, &by, &[self.me()], &[])?;
                }
                Received::Joined { group, by, members }
            }
            Incoming::Commit {
                group_id,
                by,
                added,
                removed,
                ..
            } => {
                let group = GroupId(group_id);
                record_membership(&tx, &group, &by, &added, &removed)?;
                if removed.contains(&self.me()) {
                    tx.execute(
                        "UPDATE conversations SET active = 0 WHERE group_id = ?1",
                        params![group.0],
                    )?;
                }
                Received::Membership {
                    group,
                    by,
                    added,
                    removed,
                }
            }
            Incoming::Application {
                group_id,
                sender,
                plaintext,
            } => {
                let group = GroupId(group_id);
                let content = Content::from_bytes(&plaintext).map_err(ReceiveError::BadContent)?;
                apply(&tx, &group, &sender, &content, false)?;
                Received::Message {
                    group,
                    sender,
                    content,
                }
            }
        };
        tx.execute(
            "INSERT INTO seen (digest, at) VALUES (?1, ?2)",
            params![digest, now_ms()],
        )?;
        tx.commit()?;
        Ok(received)
    }

    /// The members of a conversation.
    pub fn members(&self, group: &GroupId) -> Result<Vec<IdentityKey>, MlsError> {
        mls::members(&self.conn, &group.0)
    }

    /// The SFrame keying material of this conversation's current epoch, for a call in it.
    pub fn media_epoch(&self, group: &GroupId) -> Result<MediaEpoch, MlsError> {
        mls::media_epoch(&self.conn, &group.0)
    }

    /// The MLS exporter for this conversation's current epoch: (epoch, own leaf index,
    /// secret). SFrame media keys come from here.
    pub fn export_secret(
        &self,
        group: &GroupId,
        label: &str,
        length: usize,
    ) -> Result<(u64, u32, Vec<u8>), MlsError> {
        mls::export_secret(&self.conn, &group.0, label, length)
    }
}

/// Write a system line ("x added y") into history.
fn record_membership(
    tx: &Connection,
    group: &GroupId,
    by: &IdentityKey,
    added: &[IdentityKey],
    removed: &[IdentityKey],
) -> Result<(), rusqlite::Error> {
    let names = |ids: &[IdentityKey]| ids.iter().map(fingerprint).collect::<Vec<_>>().join(", ");
    let mut lines = Vec::new();
    if !added.is_empty() {
        lines.push(format!("added {}", names(added)));
    }
    if !removed.is_empty() {
        lines.push(format!("removed {}", names(removed)));
    }
    if lines.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    tx.execute(
        "INSERT INTO messages (msg_id, group_id, sender, seq, sent_at, received_at, kind, body)
         VALUES (?1, ?2, ?3, 0, ?4, ?4, 'system', ?5)",
        params![
            MessageId::random().0,
            group.0,
            by.as_bytes(),
            now,
            lines.join("; ")
        ],
    )?;
    Ok(())
}

/// Apply one message to history (`own`: sent by this identity).
fn apply(
    tx: &Connection,
    group: &GroupId,
    sender: &IdentityKey,
    content: &Content,
    own: bool,
) -> Result<(), ReceiveError> {
    let now = now_ms();
    let insert = |kind: &str, body: &str| -> Result<(), ReceiveError> {
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO messages
                 (msg_id, group_id, sender, seq, sent_at, received_at, kind, body, unread)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                content.id.0,
                group.0,
                sender.as_bytes(),
                i64::try_from(content.seq).unwrap_or(i64::MAX),
                content.sent_at,
                now,
                kind,
                body,
                !own
            ],
        )?;
        if inserted == 0 {
            return Err(ReceiveError::NotAllowed(
                "a message with this id exists".into(),
            ));
        }
        Ok(())
    };
    // Edits and deletes apply only to the sender's own messages in this conversation.
    let own_target = |target: &MessageId| -> Result<(), ReceiveError> {
        let owner: Option<Vec<u8>> = tx
            .query_row(
                "SELECT sender FROM messages WHERE msg_id = ?1 AND group_id = ?2",
                params![target.0, group.0],
                |r| r.get(0),
            )
            .optional()?;
        match owner {
            Some(owner) if owner == sender.as_bytes() => Ok(()),
            Some(_) => Err(ReceiveError::NotAllowed(
                "only a message's sender may edit or delete it".into(),
            )),
            None => Err(ReceiveError::NotAllowed("no such message".into())),
        }
    };
    match &content.body {
        Body::Text { text } => insert("text", text),
        Body::File { offer } => insert("file", &offer.to_string()),
        Body::Title { title } => {
            tx.execute(
                "UPDATE conversations SET name = ?2 WHERE group_id = ?1",
                params![group.0, title],
            )?;
            insert("system", &format!("set the title to {title:?}"))
        }
        Body::Edit { target, text } => {
            own_target(target)?;
            tx.execute(
                "UPDATE messages SET body = ?2, edited = 1 WHERE msg_id = ?1 AND deleted = 0",
                params![target.0, text],
            )?;
            Ok(())
        }
        Body::Delete { target } => {
            own_target(target)?;
            tx.execute(
                "UPDATE messages SET body = '', deleted = 1 WHERE msg_id = ?1",
                params![target.0],
            )?;
            Ok(())
        }
        Body::Read { targets } => {
            for target in targets.iter().take(512) {
                tx.execute(
                    "INSERT OR IGNORE INTO receipts (msg_id, reader, read_at)
                     SELECT msg_id, ?2, ?3 FROM messages WHERE msg_id = ?1 AND group_id = ?4",
                    params![target.0, sender.as_bytes(), now, group.0],
                )?;
            }
            Ok(())
        }
        Body::Typing { .. } => Ok(()),
    }
}
