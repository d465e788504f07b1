//! The backup's plaintext: a manifest and the data dir's state files, streamed. Owns the
//! consistent snapshot of each file (SQLite through `VACUUM INTO`), the archive layout,
//! and unpacking into a staging directory; knows nothing of encryption (see `container`).
//!
//! # Layout (inside the encrypted payload)
//!
//! ```text
//! u32 big-endian   manifest length
//! …                manifest, JSON: {"format":1,"created_at":<unix s>,"sotto_version":"…",
//!                  "files":[{"name":"identity.json","size":412,"sqlite":false}, …]}
//! …                each file's bytes, in manifest order
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::container::ChunkReader;
use super::{BackupError, hex, io_at};

/// The archive format inside the payload.
const ARCHIVE_FORMAT: u32 = 1;
/// Largest manifest an import reads.
const MAX_MANIFEST: u32 = 64 * 1024;
/// Most files a manifest may list.
const MAX_FILES: usize = 64;

/// How a state file is read for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Copied as it is (small files written atomically, like `identity.json`).
    Plain,
    /// A SQLite database, snapshotted consistently with `VACUUM INTO` while it may be in
    /// use; on restore its `-wal`, `-shm` and `-journal` files are removed.
    Sqlite,
}

/// One file of the data dir that backups carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupFile {
    /// Its name inside the data dir (no directories).
    pub name: &'static str,
    /// How to read it.
    pub kind: FileKind,
    /// Whether a backup without it is refused (only the identity).
    pub required: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub created_at: u64,
    pub sotto_version: String,
    pub files: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestEntry {
    pub name: String,
    pub size: u64,
    pub sqlite: bool,
}

/// A file ready to be archived: where to read it from and how big it is.
struct Source {
    entry: ManifestEntry,
    path: PathBuf,
}

/// Consistent copies of the data dir's files, taken before anything is written; temporary
/// SQLite snapshots are removed when this is dropped.
pub(crate) struct Snapshot {
    sources: Vec<Source>,
    temporary: Vec<PathBuf>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for path in &self.temporary {
            let _ = fs::remove_file(path);
        }
    }
}

impl Snapshot {
    /// Snapshots each file of `files` that exists in `data_dir`.
    pub fn take(data_dir: &Path, files: &[BackupFile]) -> Result<Snapshot, BackupError> {
        let mut snapshot = Snapshot {
            sources: Vec::new(),
            temporary: Vec::new(),
        };
        for file in files {
            let path = data_dir.join(file.name);
            if !path.exists() {
                if file.required {
                    return Err(BackupError::IdentityMissing(path));
                }
                continue;
            }
            let path = match file.kind {
                FileKind::Plain => path,
                FileKind::Sqlite => {
                    let copy = data_dir.join(format!(
                        ".sotto-backup-{}.sqlite",
                        hex(&rand::random::<[u8; 8]>())
                    ));
                    // VACUUM INTO accepts an existing empty file: create it private first,
                    // so the plaintext copy is never readable by others, whatever the umask.
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&copy)
                        .map_err(io_at(&copy))?;
                    snapshot.temporary.push(copy.clone());
                    vacuum_into(&path, &copy).map_err(|source| BackupError::Snapshot {
                        file: file.name.to_owned(),
                        source,
                    })?;
                    copy
                }
            };
            let size = fs::metadata(&path).map_err(io_at(&path))?.len();
            snapshot.sources.push(Source {
                entry: ManifestEntry {
                    name: file.name.to_owned(),
                    size,
                    sqlite: file.kind == FileKind::Sqlite,
                },
                path,
            });
        }
        Ok(snapshot)
    }

    /// Writes the archive (manifest, then every file) to `out`.
    pub fn write_archive(
        &self,
        created_at: u64,
        out: &mut impl Write,
    ) -> Result<Manifest, BackupError> {
        let manifest = Manifest {
            format: ARCHIVE_FORMAT,
            created_at,
            sotto_version: env!("CARGO_PKG_VERSION").to_owned(),
            files: self.sources.iter().map(|s| s.entry.clone()).collect(),
        };
        let json =
            serde_json::to_vec(&manifest).map_err(|e| BackupError::Write(io::Error::other(e)))?;
        let len = u32::try_from(json.len())
            .map_err(|_| BackupError::Write(io::Error::other("manifest too large")))?;
        out.write_all(&len.to_be_bytes())
            .map_err(BackupError::Write)?;
        out.write_all(&json).map_err(BackupError::Write)?;
        for source in &self.sources {
            let file = File::open(&source.path).map_err(io_at(&source.path))?;
            let copied =
                io::copy(&mut file.take(source.entry.size), out).map_err(BackupError::Write)?;
            if copied != source.entry.size {
                return Err(BackupError::Io {
                    path: source.path.clone(),
                    source: io::Error::other("the file shrank while it was backed up; try again"),
                });
            }
        }
        Ok(manifest)
    }
}

/// A consistent copy of a live SQLite database at `from` into the empty file `to`.
fn vacuum_into(from: &Path, to: &Path) -> Result<(), rusqlite::Error> {
    use rusqlite::{Connection, OpenFlags};
    let target = to
        .to_str()
        .ok_or_else(|| rusqlite::Error::InvalidPath(to.to_owned()))?;
    // Read-write without create (a WAL database needs its -shm writable even to read); the
    // statement only reads the source.
    let conn = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(())
}

/// Whether `name` is safe to create inside the data dir.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads the archive from `reader` into files in `staging` (mode 0600); returns the
/// manifest. Nothing outside `staging` is touched.
pub(crate) fn unpack(
    reader: &mut ChunkReader<impl io::BufRead>,
    staging: &Path,
    identity_file: &str,
) -> Result<Manifest, BackupError> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MANIFEST {
        return Err(BackupError::Corrupted("the manifest is too large"));
    }
    let mut json = vec![0u8; len as usize];
    reader.read_exact(&mut json)?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|_| BackupError::Corrupted("the manifest is not valid"))?;
    if manifest.format != ARCHIVE_FORMAT {
        return Err(BackupError::Corrupted("unknown archive format"));
    }
    if manifest.files.len() > MAX_FILES {
        return Err(BackupError::Corrupted("too many files"));
    }
    for (i, entry) in manifest.files.iter().enumerate() {
        if !valid_name(&entry.name) || manifest.files[..i].iter().any(|e| e.name == entry.name) {
            return Err(BackupError::Corrupted(
                "a file name in it is not acceptable",
            ));
        }
    }
    if !manifest.files.iter().any(|e| e.name == identity_file) {
        return Err(BackupError::Corrupted("it holds no identity"));
    }
    for entry in &manifest.files {
        let path = staging.join(&entry.name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        reader.copy_to(entry.size, &mut file)?;
        file.sync_all().map_err(io_at(&path))?;
    }
    Ok(manifest)
}
