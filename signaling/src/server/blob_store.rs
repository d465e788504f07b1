//! The blob store's state: one SQLite row per blob (in the server's database file, its
//! own table and connection) and the ciphertext chunks as files under
//! `<data_dir>/blobs/<blob_id>/<index>`. Synchronous; the HTTP handlers in
//! [`super::blobs`] call it through `spawn_blocking`.
//!
//! Per blob the row keeps the id, a SHA-256 of the upload token (never the token), the
//! declared size and chunk count, the hour it was created (for expiry with the mailbox
//! retention) and whether it is complete. It does not keep who created it: the identity
//! is held in memory only, while the blob is open, for the per-identity cap on open
//! blobs, and is gone on restart.
//!
//! Which chunks are present is the set of chunk files; it is cached in memory for blobs
//! touched since start (rebuilt from a directory listing the first time). A chunk is
//! written to `<data_dir>/blobs/.tmp/` and renamed into place, so a partial chunk never
//! appears under its final name; `.tmp` is emptied at start, before anything is served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::StoreError;
use crate::protocol::{
    BLOB_ID_BYTES, BlobId, BlobStatus, IdentityKey, UPLOAD_TOKEN_BYTES, UploadToken, encode_b64,
};

/// Blobs kept in the memory cache before completed ones are dropped from it (they are
/// loaded again from SQLite when asked for).
const CACHE_SOFT_MAX: usize = 10_000;

/// An open blob counts against its creator's cap for this long; after that it is
/// forgotten by the cap (it still expires with the retention).
const OPEN_BLOB_WINDOW: Duration = Duration::from_secs(24 * 3600);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    blob_id BLOB PRIMARY KEY,
    token_hash BLOB NOT NULL,
    size INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    created_hour INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_hour ON blobs (created_hour);
";

/// What the store knows of one blob.
struct Entry {
    token_hash: [u8; 32],
    size: u64,
    chunks: u32,
    /// One bit per chunk, set once its file is in place.
    present: Vec<u64>,
    received: u32,
    complete: bool,
    /// When this process created it (None when loaded after a restart).
    created_at: Option<Instant>,
}

impl Entry {
    fn has(&self, index: u32) -> bool {
        self.present
            .get(index as usize / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Mark a chunk present; true when it was not before.
    fn set(&mut self, index: u32) -> bool {
        let Some(word) = self.present.get_mut(index as usize / 64) else {
            return false;
        };
        let bit = 1 << (index % 64);
        let new = *word & bit == 0;
        *word |= bit;
        if new {
            self.received += 1;
        }
        new
    }

    fn status(&self) -> BlobStatus {
        let mut bitmap = vec![0u8; (self.chunks as usize).div_ceil(8)];
        let mut prefix = None;
        for i in 0..self.chunks {
            if self.complete || self.has(i) {
                bitmap[i as usize / 8] |= 1 << (i % 8);
            } else if prefix.is_none() {
                prefix = Some(i);
            }
        }
        BlobStatus {
            size: self.size,
            chunks: self.chunks,
            received: if self.complete {
                self.chunks
            } else {
                self.received
            },
            prefix: prefix.unwrap_or(self.chunks),
            bitmap: encode_b64(&bitmap),
            complete: self.complete,
        }
    }
}

fn empty_bitmap(chunks: u32) -> Vec<u64> {
    vec![0; (chunks as usize).div_ceil(64)]
}

/// What an upload of one chunk may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutCheck {
    /// Go ahead; the body may have at most this many bytes.
    Allowed {
        /// Declared size of the blob (bounds each chunk).
        size: u64,
    },
    /// No such blob (never created, or expired).
    Unknown,
    /// The token is not this blob's.
    BadToken,
    /// The index is not below the declared chunk count.
    BadIndex,
    /// Every chunk is stored; the blob is read-only.
    Complete,
}

/// What a read of one chunk finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetCheck {
    /// The chunk's file may be read.
    Allowed,
    /// No such blob.
    Unknown,
    /// The index is not below the declared chunk count.
    BadIndex,
}

/// The result of a `blob_create` by one identity.
#[derive(Debug)]
pub(crate) enum Created {
    /// The new blob.
    Blob(BlobId, UploadToken),
    /// The identity already has `cap` open blobs.
    TooManyOpen,
}

struct State {
    cache: HashMap<[u8; BLOB_ID_BYTES], Entry>,
    /// Open blobs per creator, in memory only (for the cap).
    open_by: HashMap<IdentityKey, Vec<[u8; BLOB_ID_BYTES]>>,
}

/// The blob store.
pub(crate) struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    db: Mutex<Connection>,
    state: Mutex<State>,
}

impl BlobStore {
    /// Open the `blobs` table in `dir/signaling.sqlite3` and the chunk directory
    /// `dir/blobs`, emptying its `.tmp` (partial chunks of a previous run).
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let root = dir.join("blobs");
        let tmp = root.join(".tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let conn = Connection::open(dir.join("signaling.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(BlobStore {
            root,
            tmp,
            db: Mutex::new(conn),
            state: Mutex::new(State {
                cache: HashMap::new(),
                open_by: HashMap::new(),
            }),
        })
    }

    fn db(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.db.lock().map_err(|_| StoreError::Poisoned)
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Poisoned)
    }

    /// The directory of a blob's chunks.
    fn dir_of(&self, id: &BlobId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Where chunk `index` of `id` lives once stored.
    pub(crate) fn chunk_path(&self, id: &BlobId, index: u32) -> PathBuf {
        self.dir_of(id).join(index.to_string())
    }

    /// A fresh temporary path for an incoming chunk.
    pub(crate) fn temp_path(&self) -> PathBuf {
        self.tmp
            .join(encode_b64(&rand::random::<[u8; BLOB_ID_BYTES]>()))
    }

    /// Record a new blob for `creator` (held in memory only) unless it has `open_cap`
    /// open blobs already.
    pub(crate) fn create(
        &self,
        creator: IdentityKey,
        size: u64,
        chunks: u32,
        hour: i64,
        open_cap: usize,
    ) -> Result<Created, StoreError> {
        {
            let mut state = self.state()?;
            let State { cache, open_by } = &mut *state;
            let open = open_by.entry(creator).or_default();
            open.retain(|key| {
                cache.get(key).is_some_and(|e| {
                    !e.complete && e.created_at.is_some_and(|t| t.elapsed() < OPEN_BLOB_WINDOW)
                })
            });
            if open.len() >= open_cap {
                return Ok(Created::TooManyOpen);
            }
        }
        let raw: [u8; BLOB_ID_BYTES] = rand::random();
        let id = BlobId(encode_b64(&raw));
        let token = UploadToken(encode_b64(&rand::random::<[u8; UPLOAD_TOKEN_BYTES]>()));
        let token_hash = hash_token(&token);
        std::fs::create_dir(self.dir_of(&id))?;
        self.db()?.execute(
            "INSERT INTO blobs (blob_id, token_hash, size, chunks, created_hour, complete)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![
                raw.as_slice(),
                token_hash.as_slice(),
                i64::try_from(size).unwrap_or(i64::MAX),
                i64::from(chunks),
                hour
            ],
        )?;
        let mut state = self.state()?;
        state.cache.insert(
            raw,
            Entry {
                token_hash,
                size,
                chunks,
                present: empty_bitmap(chunks),
                received: 0,
                complete: false,
                created_at: Some(Instant::now()),
            },
        );
        state.open_by.entry(creator).or_default().push(raw);
        if state.cache.len() > CACHE_SOFT_MAX {
            state.cache.retain(|_, e| !e.complete);
        }
        Ok(Created::Blob(id, token))
    }

    /// Make sure `id` is in the cache (loading it from SQLite and its directory);
    /// false when no such blob exists.
    fn load(&self, raw: &[u8; BLOB_ID_BYTES], id: &BlobId) -> Result<bool, StoreError> {
        if self.state()?.cache.contains_key(raw) {
            return Ok(true);
        }
        let row: Option<(Vec<u8>, i64, i64, i64)> = self
            .db()?
            .query_row(
                "SELECT token_hash, size, chunks, complete FROM blobs WHERE blob_id = ?1",
                params![raw.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((token_hash, size, chunks, complete)) = row else {
            return Ok(false);
        };
        let chunks = u32::try_from(chunks).unwrap_or(0);
        let mut entry = Entry {
            token_hash: token_hash.try_into().unwrap_or([0; 32]),
            size: u64::try_from(size).unwrap_or(0),
            chunks,
            present: empty_bitmap(chunks),
            received: 0,
            complete: complete != 0,
            created_at: None,
        };
        if !entry.complete {
            match std::fs::read_dir(self.dir_of(id)) {
                Ok(files) => {
                    for file in files.flatten() {
                        let index = file.file_name().to_str().and_then(parse_index);
                        if let Some(index) = index.filter(|i| *i < chunks) {
                            entry.set(index);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        self.state()?.cache.entry(*raw).or_insert(entry);
        Ok(true)
    }

    /// May chunk `index` of `id` be uploaded with `token`?
    pub(crate) fn check_put(
        &self,
        id: &BlobId,
        index: u32,
        token: &str,
    ) -> Result<PutCheck, StoreError> {
        let Some(raw) = id.to_bytes() else {
            return Ok(PutCheck::Unknown);
        };
        if !self.load(&raw, id)? {
            return Ok(PutCheck::Unknown);
        }
        let state = self.state()?;
        let Some(entry) = state.cache.get(&raw) else {
            return Ok(PutCheck::Unknown);
        };
        let given = hash_token(&UploadToken(token.to_owned()));
        if !bool::from(given.ct_eq(&entry.token_hash)) {
            return Ok(PutCheck::BadToken);
        }
        if index >= entry.chunks {
            return Ok(PutCheck::BadIndex);
        }
        if entry.complete {
            return Ok(PutCheck::Complete);
        }
        Ok(PutCheck::Allowed { size: entry.size })
    }

    /// Move a fully written chunk from `temp` into place and mark it present; marks the
    /// blob complete when it was the last one missing. `Ok(false)` when the blob is gone
    /// (expired meanwhile).
    pub(crate) fn commit_chunk(
        &self,
        id: &BlobId,
        index: u32,
        temp: &Path,
    ) -> Result<bool, StoreError> {
        let Some(raw) = id.to_bytes() else {
            return Ok(false);
        };
        match std::fs::rename(temp, self.chunk_path(id, index)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(temp);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        let now_complete = {
            let mut state = self.state()?;
            let Some(entry) = state.cache.get_mut(&raw) else {
                return Ok(false);
            };
            entry.set(index);
            let done = !entry.complete && entry.received == entry.chunks;
            if done {
                entry.complete = true;
                entry.present = Vec::new();
            }
            done
        };
        if now_complete {
            // Make the chunks and their names durable before the blob is reported whole.
            sync_dir(&self.dir_of(id))?;
            self.db()?.execute(
                "UPDATE blobs SET complete = 1 WHERE blob_id = ?1",
                params![raw.as_slice()],
            )?;
        }
        Ok(true)
    }

    /// May chunk `index` of `id` be read?
    pub(crate) fn check_get(&self, id: &BlobId, index: u32) -> Result<GetCheck, StoreError> {
        let Some(raw) = id.to_bytes() else {
            return Ok(GetCheck::Unknown);
        };
        if !self.load(&raw, id)? {
            return Ok(GetCheck::Unknown);
        }
        let state = self.state()?;
        match state.cache.get(&raw) {
            None => Ok(GetCheck::Unknown),
            Some(e) if index >= e.chunks => Ok(GetCheck::BadIndex),
            Some(_) => Ok(GetCheck::Allowed),
        }
    }

    /// The status of `id`, if it exists.
    pub(crate) fn status(&self, id: &BlobId) -> Result<Option<BlobStatus>, StoreError> {
        let Some(raw) = id.to_bytes() else {
            return Ok(None);
        };
        if !self.load(&raw, id)? {
            return Ok(None);
        }
        Ok(self.state()?.cache.get(&raw).map(Entry::status))
    }

    /// Delete blobs created before `before_hour` (rows, cache entries and chunk files);
    /// returns how many.
    pub(crate) fn expire(&self, before_hour: i64) -> Result<u64, StoreError> {
        let ids: Vec<Vec<u8>> = {
            let conn = self.db()?;
            let mut stmt = conn.prepare("SELECT blob_id FROM blobs WHERE created_hour < ?1")?;
            let rows = stmt.query_map(params![before_hour], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for raw in &ids {
            let id = BlobId(encode_b64(raw));
            if let Ok(key) = <[u8; BLOB_ID_BYTES]>::try_from(raw.as_slice()) {
                self.state()?.cache.remove(&key);
            }
            self.db()?
                .execute("DELETE FROM blobs WHERE blob_id = ?1", params![raw])?;
            match std::fs::remove_dir_all(self.dir_of(&id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(ids.len() as u64)
    }
}

/// A chunk index as written in a path or a file name: decimal digits only, no sign, no
/// leading zeros (so one chunk has one name).
pub(crate) fn parse_index(text: &str) -> Option<u32> {
    if text.is_empty()
        || text.len() > 10
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

fn hash_token(token: &UploadToken) -> [u8; 32] {
    Sha256::digest(token.as_str().as_bytes()).into()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // fsync of a directory makes the renames into it durable (Linux); elsewhere opening
    // a directory may fail, which is not worth failing the upload over.
    match std::fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn created(c: Created) -> (BlobId, UploadToken) {
        match c {
            Created::Blob(id, token) => (id, token),
            Created::TooManyOpen => panic!("refused"),
        }
    }

    fn put(store: &BlobStore, id: &BlobId, index: u32, bytes: &[u8]) -> bool {
        let temp = store.temp_path();
        std::fs::write(&temp, bytes).unwrap();
        store.commit_chunk(id, index, &temp).unwrap()
    }

    #[test]
    fn indexes_have_one_spelling() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("17"), Some(17));
        assert_eq!(parse_index("017"), None);
        assert_eq!(parse_index("+1"), None);
        assert_eq!(parse_index("-1"), None);
        assert_eq!(parse_index(""), None);
        assert_eq!(parse_index("99999999999"), None);
        assert_eq!(parse_index("4294967296"), None);
    }

    #[test]
    fn chunks_complete_a_blob_and_survive_a_reopen() {
        let (dir, store) = open();
        let me = IdentityKey([1; 32]);
        let (id, token) = created(store.create(me, 100, 3, 10, 4).unwrap());
        assert_eq!(
            store.check_put(&id, 0, token.as_str()).unwrap(),
            PutCheck::Allowed { size: 100 }
        );
        assert_eq!(
            store.check_put(&id, 0, "wrong").unwrap(),
            PutCheck::BadToken
        );
        assert_eq!(
            store.check_put(&id, 3, token.as_str()).unwrap(),
            PutCheck::BadIndex
        );
        assert!(put(&store, &id, 0, b"a"));
        assert!(put(&store, &id, 2, b"c"));
        let status = store.status(&id).unwrap().unwrap();
        assert_eq!((status.received, status.prefix), (2, 1));
        assert!(status.has(0) && !status.has(1) && status.has(2));
        drop(store);

        // A restart rebuilds what is present from the directory.
        let store = BlobStore::open(dir.path()).unwrap();
        let status = store.status(&id).unwrap().unwrap();
        assert_eq!((status.received, status.complete), (2, false));
        assert!(put(&store, &id, 1, b"b"));
        let status = store.status(&id).unwrap().unwrap();
        assert!(status.complete);
        assert_eq!(status.prefix, 3);
        assert_eq!(
            store.check_put(&id, 1, token.as_str()).unwrap(),
            PutCheck::Complete
        );
        assert_eq!(store.check_get(&id, 2).unwrap(), GetCheck::Allowed);
        assert_eq!(store.check_get(&id, 3).unwrap(), GetCheck::BadIndex);
        drop(store);
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.status(&id).unwrap().unwrap().complete);
    }

    #[test]
    fn open_blobs_are_capped_per_identity_and_expire() {
        let (dir, store) = open();
        let (a, b) = (IdentityKey([1; 32]), IdentityKey([2; 32]));
        let (first, _) = created(store.create(a, 1, 1, 5, 2).unwrap());
        created(store.create(a, 1, 1, 5, 2).unwrap());
        assert!(matches!(
            store.create(a, 1, 1, 5, 2).unwrap(),
            Created::TooManyOpen
        ));
        created(store.create(b, 1, 1, 9, 2).unwrap());
        // Completing one frees a place.
        assert!(put(&store, &first, 0, b"x"));
        created(store.create(a, 1, 1, 5, 2).unwrap());

        assert_eq!(store.expire(6).unwrap(), 3);
        assert!(store.status(&first).unwrap().is_none());
        assert!(!dir.path().join("blobs").join(first.as_str()).exists());
        assert_eq!(store.expire(10).unwrap(), 1);
    }
}
