//! The server's durable state in SQLite: the mailbox (opaque envelopes per recipient),
//! the key-package directory (opaque packages per identity) and each MLS group's epoch
//! and member list, which order commits (`groups`). Synchronous; the async side
//! calls it through `spawn_blocking`. Stores bytes it cannot read and, per envelope, only
//! the recipient, an id and the hour it arrived (for expiry). No sender, no addresses.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a reply sent after a write means
//! the write survives a crash of the process (and of the machine).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::protocol::{IdentityKey, encode_b64};

mod groups;
pub use groups::{CommitRefused, Delivery};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
    /// A previous panic poisoned the connection lock.
    #[error("store lock poisoned")]
    Poisoned,
}

/// The recipient's mailbox is at its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxFull;

/// Publishing would exceed the per-identity key-package cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyKeyPackages;

/// One stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Per-recipient increasing id.
    pub message_id: u64,
    /// Opaque bytes.
    pub envelope: Vec<u8>,
}

/// How many key packages an identity has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPackageStock {
    /// One-time packages.
    pub regular: u32,
    /// Whether a last-resort package is stored.
    pub last_resort: bool,
}

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    server_id: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS mailbox (
    recipient BLOB NOT NULL,
    message_id INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    received_hour INTEGER NOT NULL,
    PRIMARY KEY (recipient, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mailbox_by_hour ON mailbox (received_hour);
CREATE TABLE IF NOT EXISTS mailbox_next_id (
    recipient BLOB PRIMARY KEY,
    next_id INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_packages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner BLOB NOT NULL,
    package BLOB NOT NULL,
    last_resort INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS key_packages_by_owner ON key_packages (owner, last_resort, seq);
CREATE TABLE IF NOT EXISTS mls_groups (
    group_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    members BLOB NOT NULL,
    updated_hour INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
";

impl Store {
    /// Open (or create) `dir/signaling.sqlite3`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("signaling.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let existing: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'server_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let server_id = match existing {
            Some(id) => id,
            None => {
                let id = encode_b64(&rand::random::<[u8; 16]>());
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('server_id', ?1)",
                    params![id],
                )?;
                id
            }
        };
        Ok(Store {
            conn: Mutex::new(conn),
            server_id,
        })
    }

    /// This server's stable random id (signed into every authentication).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Queue an envelope; returns its id once it is on disk.
    pub fn mailbox_push(
        &self,
        recipient: &IdentityKey,
        envelope: &[u8],
        hour: i64,
        cap: u64,
    ) -> Result<Result<u64, MailboxFull>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let pushed = push_envelope(&tx, recipient, envelope, hour, cap)?;
        if pushed.is_ok() {
            tx.commit()?;
        }
        Ok(pushed)
    }

    /// Up to `limit` envelopes with ids above `after`, oldest first.
    pub fn mailbox_after(
        &self,
        recipient: &IdentityKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT message_id, envelope FROM mailbox
             WHERE recipient = ?1 AND message_id > ?2 ORDER BY message_id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                recipient.as_bytes(),
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                let id: i64 = r.get(0)?;
                Ok(StoredEnvelope {
                    message_id: u64::try_from(id).unwrap_or(0),
                    envelope: r.get(1)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Delete the recipient's envelopes with ids up to `up_to`; returns how many.
    pub fn mailbox_ack(&self, recipient: &IdentityKey, up_to: u64) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let removed = conn.execute(
            "DELETE FROM mailbox WHERE recipient = ?1 AND message_id <= ?2",
            params![
                recipient.as_bytes(),
                i64::try_from(up_to).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(removed as u64)
    }

    /// Envelopes queued for one recipient.
    pub fn mailbox_depth(&self, recipient: &IdentityKey) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM mailbox WHERE recipient = ?1",
            params![recipient.as_bytes()],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Envelopes queued for everyone.
    pub fn mailbox_total(&self) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: i64 = conn.query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Delete envelopes that arrived before `hour`; returns how many.
    pub fn mailbox_expire(&self, before_hour: i64) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n = conn.execute(
            "DELETE FROM mailbox WHERE received_hour < ?1",
            params![before_hour],
        )?;
        Ok(n as u64)
    }

    /// Add one-time packages and optionally replace the last-resort one.
    pub fn key_packages_publish(
        &self,
        owner: &IdentityKey,
        regular: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        cap: u32,
    ) -> Result<Result<KeyPackageStock, TooManyKeyPackages>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let stock = stock_of(&tx, owner)?;
        if u64::from(stock.regular) + regular.len() as u64 > u64::from(cap) {
            return Ok(Err(TooManyKeyPackages));
        }
        for package in regular {
            tx.execute(
                "INSERT INTO key_packages (owner, package, last_resort) VALUES (?1, ?2, 0)",
                params![owner.as_bytes(), package],
            )?;
        }
        if let Some(package) = last_resort {
            tx.execute(
                "DELETE FROM key_packages WHERE owner = ?1 AND last_resort = 1",
                params![owner.as_bytes()],
            )?;
            tx.execute(
                "INSERT INTO key_packages (owner, package, last_resort) VALUES (?1, ?2, 1)",
                params![owner.as_bytes(), package],
            )?;
        }
        let after = stock_of(&tx, owner)?;
        tx.commit()?;
        Ok(Ok(after))
    }

    /// Take the oldest one-time package (deleting it), else the last-resort one (kept).
    pub fn key_package_take(
        &self,
        owner: &IdentityKey,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let found: Option<(i64, Vec<u8>, bool)> = tx
            .query_row(
                "SELECT seq, package, last_resort FROM key_packages WHERE owner = ?1
                 ORDER BY last_resort, seq LIMIT 1",
                params![owner.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)),
            )
            .optional()?;
        let Some((seq, package, last_resort)) = found else {
            return Ok(None);
        };
        if !last_resort {
            tx.execute("DELETE FROM key_packages WHERE seq = ?1", params![seq])?;
        }
        tx.commit()?;
        Ok(Some((package, last_resort)))
    }

    /// How many packages an identity has left.
    pub fn key_package_stock(&self, owner: &IdentityKey) -> Result<KeyPackageStock, StoreError> {
        let conn = self.lock()?;
        stock_of(&conn, owner)
    }
}

/// Queue one envelope inside the caller's transaction.
fn push_envelope(
    tx: &Connection,
    recipient: &IdentityKey,
    envelope: &[u8],
    hour: i64,
    cap: u64,
) -> Result<Result<u64, MailboxFull>, StoreError> {
    let depth: i64 = tx.query_row(
        "SELECT count(*) FROM mailbox WHERE recipient = ?1",
        params![recipient.as_bytes()],
        |r| r.get(0),
    )?;
    if u64::try_from(depth).unwrap_or(u64::MAX) >= cap {
        return Ok(Err(MailboxFull));
    }
    let next: i64 = tx
        .query_row(
            "SELECT next_id FROM mailbox_next_id WHERE recipient = ?1",
            params![recipient.as_bytes()],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(1);
    tx.execute(
        "INSERT INTO mailbox_next_id (recipient, next_id) VALUES (?1, ?2)
         ON CONFLICT (recipient) DO UPDATE SET next_id = excluded.next_id",
        params![recipient.as_bytes(), next + 1],
    )?;
    tx.execute(
        "INSERT INTO mailbox (recipient, message_id, envelope, received_hour)
         VALUES (?1, ?2, ?3, ?4)",
        params![recipient.as_bytes(), next, envelope, hour],
    )?;
    Ok(Ok(u64::try_from(next).unwrap_or(0)))
}

fn stock_of(conn: &Connection, owner: &IdentityKey) -> Result<KeyPackageStock, StoreError> {
    let (regular, last_resort): (i64, i64) = conn.query_row(
        "SELECT count(*) FILTER (WHERE last_resort = 0), count(*) FILTER (WHERE last_resort = 1)
         FROM key_packages WHERE owner = ?1",
        params![owner.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(KeyPackageStock {
        regular: u32::try_from(regular).unwrap_or(u32::MAX),
        last_resort: last_resort > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn server_id_is_stable_across_opens() {
        let (dir, store) = open();
        let id = store.server_id().to_owned();
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().server_id(), id);
    }

    #[test]
    fn mailbox_is_per_recipient_ordered_and_capped() {
        let (_dir, store) = open();
        let (a, b) = (IdentityKey([1; 32]), IdentityKey([2; 32]));
        assert_eq!(store.mailbox_push(&a, b"one", 0, 2).unwrap(), Ok(1));
        assert_eq!(store.mailbox_push(&b, b"x", 0, 2).unwrap(), Ok(1));
        assert_eq!(store.mailbox_push(&a, b"two", 0, 2).unwrap(), Ok(2));
        assert_eq!(
            store.mailbox_push(&a, b"three", 0, 2).unwrap(),
            Err(MailboxFull)
        );
        let got = store.mailbox_after(&a, 0, 10).unwrap();
        assert_eq!(
            got.iter().map(|e| e.message_id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(store.mailbox_after(&a, 1, 10).unwrap()[0].envelope, b"two");
        assert_eq!(store.mailbox_ack(&a, 1).unwrap(), 1);
        assert_eq!(store.mailbox_depth(&a).unwrap(), 1);
        assert_eq!(store.mailbox_depth(&b).unwrap(), 1);
        // Ids keep increasing after acks: a client's dedupe by id stays sound.
        assert_eq!(store.mailbox_ack(&a, 2).unwrap(), 1);
        assert_eq!(store.mailbox_push(&a, b"four", 0, 2).unwrap(), Ok(3));
        assert_eq!(store.mailbox_total().unwrap(), 2);
        assert_eq!(store.mailbox_expire(1).unwrap(), 2);
        assert_eq!(store.mailbox_total().unwrap(), 0);
    }

    #[test]
    fn key_packages_are_consumed_once_and_last_resort_is_kept() {
        let (_dir, store) = open();
        let owner = IdentityKey([5; 32]);
        let stock = store
            .key_packages_publish(&owner, &[b"k1".to_vec(), b"k2".to_vec()], Some(b"lr"), 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            stock,
            KeyPackageStock {
                regular: 2,
                last_resort: true
            }
        );
        let too_many = store
            .key_packages_publish(&owner, &[vec![1], vec![2]], None, 3)
            .unwrap();
        assert_eq!(too_many, Err(TooManyKeyPackages));
        assert_eq!(
            store.key_package_take(&owner).unwrap(),
            Some((b"k1".to_vec(), false))
        );
        assert_eq!(
            store.key_package_take(&owner).unwrap(),
            Some((b"k2".to_vec(), false))
        );
        assert_eq!(
            store.key_package_take(&owner).unwrap(),
            Some((b"lr".to_vec(), true))
        );
        assert_eq!(
            store.key_package_take(&owner).unwrap(),
            Some((b"lr".to_vec(), true))
        );
        assert_eq!(store.key_package_take(&IdentityKey([6; 32])).unwrap(), None);
        let stock = store.key_package_stock(&owner).unwrap();
        assert_eq!(
            stock,
            KeyPackageStock {
                regular: 0,
                last_resort: true
            }
        );
    }
}
