//! The client's local database: `store.sqlite` in the data dir (mode 0600). One SQLite
//! file holds Sotto's own tables (contacts, conversations, history, seen envelopes) and
//! OpenMLS's group state (its `openmls_sqlite_storage` tables), so one transaction can
//! cover an MLS state change and the history it produces: a message that fails to
//! decrypt leaves neither behind.
//!
//! Owns the schema and opening; the messaging layer owns the queries on its tables.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::data_dir::create_private_dir;

/// File name of the store inside a data dir.
pub const STORE_FILE: &str = "store.sqlite";

/// The version of Sotto's own tables (OpenMLS migrates its tables itself).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
-- People this identity knows. `name` is the user's own label (a petname).
CREATE TABLE IF NOT EXISTS contacts (
    identity BLOB PRIMARY KEY,
    name TEXT UNIQUE,
    verified INTEGER NOT NULL DEFAULT 0,
    added_at INTEGER NOT NULL
) STRICT;
-- Every conversation is an MLS group. `kind` is 'direct' (one peer) or 'room'.
CREATE TABLE IF NOT EXISTS conversations (
    group_id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    peer BLOB,
    name TEXT,
    created_at INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX IF NOT EXISTS conversations_by_peer ON conversations (peer);
-- History. `msg_id` is the sender's random id (dedupe); ordering is (sent_at, sender, seq).
CREATE TABLE IF NOT EXISTS messages (
    msg_id BLOB PRIMARY KEY,
    group_id BLOB NOT NULL,
    sender BLOB NOT NULL,
    seq INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    edited INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (group_id, sent_at);
CREATE TABLE IF NOT EXISTS receipts (
    msg_id BLOB NOT NULL,
    reader BLOB NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (msg_id, reader)
) STRICT, WITHOUT ROWID;
-- Digests of envelopes already processed: a replay is refused before MLS sees it.
CREATE TABLE IF NOT EXISTS seen (
    digest BLOB PRIMARY KEY,
    at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
";

/// A failure opening or using the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("local store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// OpenMLS's tables could not be created or migrated.
    #[error("local store: migrating the MLS tables: {0}")]
    Migration(String),
    /// The file could not be created or its mode set.
    #[error("local store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A newer Sotto wrote this store.
    #[error("the local store has schema version {0}; this Sotto knows {SCHEMA_VERSION}")]
    TooNew(i64),
}

/// Open (or create) `data_dir/store.sqlite` and bring both schemas up to date.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    create_private_dir(data_dir).map_err(|source| StoreError::Io {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(STORE_FILE);
    // Create it 0600 before SQLite does, so history is never readable by others.
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    let mut conn = Connection::open(&path)?;
    prepare(&mut conn)?;
    Ok(conn)
}

/// An in-memory store (tests and benches).
pub fn open_in_memory() -> Result<Connection, StoreError> {
    let mut conn = Connection::open_in_memory()?;
    prepare(&mut conn)?;
    Ok(conn)
}

fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    let version: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match version.and_then(|v| v.parse::<i64>().ok()) {
        Some(v) if v > SCHEMA_VERSION => return Err(StoreError::TooNew(v)),
        Some(_) => {}
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )?;
        }
    }
    SqliteStorageProvider::<crate::messaging::mls::JsonCodec, &mut Connection>::new(conn)
        .run_migrations()
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(())
}

/// A value from the `meta` table.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
        r.get(0)
    })
    .optional()
}

/// Set a value in the `meta` table.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn the_store_is_private_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let conn = open(dir.path()).expect("open");
            meta_set(&conn, "k", "v").expect("set");
        }
        let mode = fs::metadata(dir.path().join(STORE_FILE))
            .expect("stat")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let conn = open(dir.path()).expect("reopen");
        assert_eq!(meta_get(&conn, "k").expect("get").as_deref(), Some("v"));
    }
}
