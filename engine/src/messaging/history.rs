//! Reading the local history and the contact list: what `sotto inbox`, `sotto chat` and
//! `sotto contact` show. Read-only queries plus the few updates the user makes directly
//! (marking read, naming and verifying contacts). Writes from the network live in
//! `conversations`.

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;
use sotto_signaling::protocol::{IdentityKey, encode_b64};

use super::content::MessageId;
use super::conversations::GroupId;

/// One line of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The message id (hex).
    pub id: String,
    /// The conversation (hex).
    pub conversation: String,
    /// The sender's identity (base64url).
    pub sender: String,
    /// `text`, `file` or `system`.
    pub kind: String,
    /// The text (empty once deleted).
    pub body: String,
    /// The sender's clock, ms since the Unix epoch.
    pub sent_at: i64,
    /// Edited after sending.
    pub edited: bool,
    /// Deleted by its sender.
    pub deleted: bool,
}

/// A conversation as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Its id (hex).
    pub conversation: String,
    /// `direct` or `room`.
    pub kind: String,
    /// The peer of a direct conversation (base64url).
    pub peer: Option<String>,
    /// A room's title.
    pub title: Option<String>,
    /// This identity is still a member.
    pub active: bool,
    /// Unread messages.
    pub unread: u64,
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let id: Vec<u8> = r.get(0)?;
    let group: Vec<u8> = r.get(1)?;
    let sender: Vec<u8> = r.get(2)?;
    let kind: String = r.get(3)?;
    let mut body: String = r.get(4)?;
    if kind == "file" {
        body = file_summary(&body);
    }
    Ok(Entry {
        id: id.iter().map(|b| format!("{b:02x}")).collect(),
        conversation: GroupId(group).to_hex(),
        sender: encode_b64(&sender),
        kind,
        body,
        sent_at: r.get(5)?,
        edited: r.get(6)?,
        deleted: r.get(7)?,
    })
}

const COLUMNS: &str = "msg_id, group_id, sender, kind, body, sent_at, edited, deleted";

/// What a file entry shows: name, size and type, never the key (the stored offer keeps
/// it, for `fetch-file`).
fn file_summary(offer: &str) -> String {
    let offer: serde_json::Value = serde_json::from_str(offer).unwrap_or_default();
    serde_json::json!({
        "name": offer["name"],
        "size": offer["size"],
        "media_type": offer["media_type"],
    })
    .to_string()
}

/// The stored offer of a file message whose id starts with `prefix` (hex). Errors
/// when the prefix matches several.
pub fn file_offer(conn: &Connection, prefix: &str) -> Result<Option<serde_json::Value>, String> {
    let prefix = prefix.to_ascii_lowercase();
    let mut stmt = conn
        .prepare("SELECT msg_id, body FROM messages WHERE kind = 'file' AND deleted = 0")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(|e| e.to_string())?;
    let mut hits = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(|e| e.to_string())?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        if hex.starts_with(&prefix) {
            hits.push(body);
        }
    }
    match hits.as_slice() {
        [] => Ok(None),
        [one] => serde_json::from_str(one)
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Err(format!(
            "{prefix} matches several files; give more of the id"
        )),
    }
}

/// The last `limit` entries of a conversation, oldest first.
pub fn recent(conn: &Connection, group: &GroupId, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT * FROM (SELECT {COLUMNS}, seq, rowid FROM messages WHERE group_id = ?1
         ORDER BY sent_at DESC, rowid DESC LIMIT ?2) ORDER BY sent_at, rowid"
    ))?;
    let rows = stmt.query_map(
        params![group.0, i64::try_from(limit).unwrap_or(i64::MAX)],
        entry,
    )?;
    rows.collect()
}

/// Every unread entry, in arrival order.
pub fn unread(conn: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM messages WHERE unread = 1 ORDER BY received_at, rowid"
    ))?;
    let rows = stmt.query_map([], entry)?;
    rows.collect()
}

/// Mark a conversation's messages read; returns the ids of other people's messages that
/// were unread (to send a read receipt for).
pub fn mark_read(conn: &Connection, group: &GroupId) -> rusqlite::Result<Vec<MessageId>> {
    let mut stmt = conn.prepare(
        "SELECT msg_id FROM messages WHERE group_id = ?1 AND unread = 1 AND kind != 'system'",
    )?;
    let ids = stmt
        .query_map(params![group.0], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    conn.execute(
        "UPDATE messages SET unread = 0 WHERE group_id = ?1",
        params![group.0],
    )?;
    Ok(ids
        .into_iter()
        .filter_map(|id| id.try_into().ok().map(MessageId))
        .collect())
}

/// Every conversation, most recently active first.
pub fn conversations(conn: &Connection) -> rusqlite::Result<Vec<Summary>> {
    let mut stmt = conn.prepare(
        "SELECT c.group_id, c.kind, c.peer, c.name, c.active,
                (SELECT count(*) FROM messages m WHERE m.group_id = c.group_id AND m.unread = 1),
                coalesce((SELECT max(received_at) FROM messages m WHERE m.group_id = c.group_id),
                         c.created_at) AS last
         FROM conversations c ORDER BY last DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        let group: Vec<u8> = r.get(0)?;
        let peer: Option<Vec<u8>> = r.get(2)?;
        let unread: i64 = r.get(5)?;
        Ok(Summary {
            conversation: GroupId(group).to_hex(),
            kind: r.get(1)?,
            peer: peer.map(|p| encode_b64(&p)),
            title: r.get(3)?,
            active: r.get(4)?,
            unread: u64::try_from(unread).unwrap_or(0),
        })
    })?;
    rows.collect()
}

/// A room by its title (rooms the user created or was told the title of).
pub fn room_by_title(conn: &Connection, title: &str) -> rusqlite::Result<Option<GroupId>> {
    conn.query_row(
        "SELECT group_id FROM conversations WHERE kind = 'room' AND name = ?1
         ORDER BY active DESC, created_at DESC LIMIT 1",
        params![title],
        |r| r.get(0),
    )
    .optional()
    .map(|g| g.map(GroupId))
}

/// A contact as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contact {
    /// The user's name for them.
    pub name: String,
    /// Their identity.
    #[serde(serialize_with = "as_b64")]
    pub identity: IdentityKey,
    /// The user compared safety numbers with them.
    pub verified: bool,
}

fn as_b64<S: serde::Serializer>(key: &IdentityKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key.to_string())
}

/// What saving a contact changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChange {
    /// A new contact.
    Added,
    /// The same name and key as before: nothing changed.
    Unchanged,
    /// The name was known with a different key. Their identity changed (a new device, a
    /// lost key, or someone else): the old verification no longer holds.
    KeyChanged {
        /// The key the name had.
        old: IdentityKey,
    },
}

/// Save `name` → `identity`. A name that had another key is re-pointed, unverified, and
/// reported as [`ContactChange::KeyChanged`] so the caller can warn loudly.
pub fn save_contact(
    conn: &Connection,
    name: &str,
    identity: &IdentityKey,
) -> rusqlite::Result<ContactChange> {
    let tx = conn.unchecked_transaction()?;
    let old: Option<Vec<u8>> = tx
        .query_row(
            "SELECT identity FROM contacts WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    let change = match old {
        Some(old) if old == identity.as_bytes() => return Ok(ContactChange::Unchanged),
        Some(old) => {
            tx.execute("DELETE FROM contacts WHERE name = ?1", params![name])?;
            let old: [u8; 32] = old.try_into().unwrap_or([0; 32]);
            ContactChange::KeyChanged {
                old: IdentityKey(old),
            }
        }
        None => ContactChange::Added,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    tx.execute(
        "INSERT INTO contacts (identity, name, verified, added_at) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (identity) DO UPDATE SET name = excluded.name",
        params![identity.as_bytes(), name, i64::try_from(now).unwrap_or(0)],
    )?;
    tx.commit()?;
    Ok(change)
}

/// Mark a contact verified (safety numbers compared).
pub fn set_verified(conn: &Connection, identity: &IdentityKey) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE contacts SET verified = 1 WHERE identity = ?1",
        params![identity.as_bytes()],
    )? > 0)
}

/// A contact by name.
pub fn contact(conn: &Connection, name: &str) -> rusqlite::Result<Option<Contact>> {
    conn.query_row(
        "SELECT name, identity, verified FROM contacts WHERE name = ?1",
        params![name],
        contact_row,
    )
    .optional()
}

/// A contact by identity.
pub fn contact_by_key(conn: &Connection, key: &IdentityKey) -> rusqlite::Result<Option<Contact>> {
    conn.query_row(
        "SELECT name, identity, verified FROM contacts WHERE identity = ?1",
        params![key.as_bytes()],
        contact_row,
    )
    .optional()
}

/// Every contact, by name.
pub fn contacts(conn: &Connection) -> rusqlite::Result<Vec<Contact>> {
    let mut stmt = conn.prepare("SELECT name, identity, verified FROM contacts ORDER BY name")?;
    let rows = stmt.query_map([], contact_row)?;
    rows.collect()
}

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    let key: Vec<u8> = r.get(1)?;
    let key: [u8; 32] = key.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "an identity is 32 bytes".into(),
        )
    })?;
    Ok(Contact {
        name: r.get(0)?,
        identity: IdentityKey(key),
        verified: r.get(2)?,
    })
}
