//! Encrypted backup of the data dir's state (identity, and the SQLite store with MLS state,
//! contacts and history) under a random 128-bit recovery code, and its restore. Owns the
//! recovery code ([`RecoveryCode`]), the file format (`container`: header, Argon2id,
//! chunked AEAD) and the archive inside it (`archive`: manifest and files). It reads the
//! state files but never changes them, and writes into a data dir only on import.
//!
//! # Key derivation parameters
//!
//! Argon2id with 128 MiB, 3 passes, 1 lane ([`KdfParams::STRONG`]), written into the file
//! header and bound into every chunk. The recovery code already has 128 random bits, which
//! no amount of guessing reaches, so the KDF is defence in depth: should part of a code
//! leak (a photo of 20 of its 28 characters still leaves 40 unknown bits), every guess costs
//! a 128 MiB, three-pass computation (about a fifth of a second of one core here, see the
//! tests' note) instead of a hash. 128 MiB is what a phone can spare for a moment; one
//! lane because the `argon2` crate computes lanes one after another, so more lanes would
//! only cost time, not buy memory hardness. Import refuses parameters below
//! [`KdfParams::FLOOR`] (64 MiB, 2 passes), so a doctored file cannot make the derivation
//! cheap, and above a ceiling (4 GiB, 64 passes, 16 lanes), so it cannot exhaust memory.
//!
//! # Import
//!
//! The code is checked for typos first ([`BackupError::MistypedCode`], no KDF run), then
//! the header's key check tells a wrong code ([`BackupError::WrongRecoveryCode`]) from a
//! damaged file ([`BackupError::Corrupted`], [`BackupError::Truncated`]) before anything is
//! written. The files are unpacked into a staging directory inside the data dir; only when
//! the whole payload has authenticated are they renamed into place (the identity last),
//! so a bad file or code leaves the data dir as it was. The store must not be open while
//! importing (the CLI imports before opening it).

mod archive;
mod code;
mod container;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use archive::{BackupFile, FileKind};
pub use code::{CODE_CHARS, RecoveryCode};

use crate::identity::IDENTITY_FILE;
use container::{ChunkReader, ChunkWriter, HEADER_LEN, Header};

/// The files a backup carries, in the order they are archived. The identity is required;
/// the store is the client's SQLite database (MLS state, contacts, history), the same name
/// as `store::STORE_FILE`. Add new state files here.
pub const BACKUP_FILES: &[BackupFile] = &[
    BackupFile {
        name: IDENTITY_FILE,
        kind: FileKind::Plain,
        required: true,
    },
    BackupFile {
        name: "store.sqlite",
        kind: FileKind::Sqlite,
        required: false,
    },
];

/// Argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB (m).
    pub memory_kib: u32,
    /// Passes over the memory (t).
    pub passes: u32,
    /// Lanes (p).
    pub lanes: u32,
}

impl KdfParams {
    /// What every backup the CLI makes uses: 128 MiB, 3 passes, 1 lane.
    pub const STRONG: KdfParams = KdfParams {
        memory_kib: 128 * 1024,
        passes: 3,
        lanes: 1,
    };

    /// The weakest parameters an import accepts by default: 64 MiB, 2 passes, 1 lane.
    pub const FLOOR: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        passes: 2,
        lanes: 1,
    };

    /// The most an import is willing to spend.
    const CEILING: KdfParams = KdfParams {
        memory_kib: 4 * 1024 * 1024,
        passes: 64,
        lanes: 16,
    };

    fn at_least(&self, floor: &KdfParams) -> bool {
        self.memory_kib >= floor.memory_kib
            && self.passes >= floor.passes
            && self.lanes >= floor.lanes
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Argon2id m = {} KiB, t = {}, p = {}",
            self.memory_kib, self.passes, self.lanes
        )
    }
}

/// A backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The text cannot be a recovery code.
    #[error("that is not a recovery code: {0}")]
    MalformedCode(&'static str),
    /// The text has the shape of a code but its check characters disagree: a typo.
    #[error(
        "that recovery code is mistyped (its check characters do not match); compare it with what you wrote down, group by group"
    )]
    MistypedCode,
    /// A well-formed code that does not open this backup.
    #[error("wrong recovery code: it is a valid code, but not the one for this backup")]
    WrongRecoveryCode,
    /// The file is not a Sotto backup.
    #[error("not a Sotto backup file")]
    NotABackup,
    /// A backup from a newer Sotto.
    #[error("backup format version {0} is newer than this Sotto understands; update Sotto")]
    UnsupportedVersion(u8),
    /// The header asks for key derivation below the floor.
    #[error(
        "the backup's key derivation ({found}) is weaker than the minimum ({floor}); refusing it"
    )]
    WeakKdf {
        /// What the file says.
        found: KdfParams,
        /// The floor.
        floor: KdfParams,
    },
    /// The file is damaged or was tampered with (the code is right).
    #[error("the backup file is damaged: {0}")]
    Corrupted(&'static str),
    /// The file is cut short.
    #[error("the backup file is truncated (incomplete copy?)")]
    Truncated,
    /// Import into a data dir that already has an identity.
    #[error(
        "{0} already exists: importing would replace this identity (use --force to replace it)"
    )]
    IdentityExists(PathBuf),
    /// Import into a data dir that already has state files (but no identity).
    #[error("{0} already exists: import into an empty data dir (or use --force to replace it)")]
    TargetNotEmpty(PathBuf),
    /// Export of a data dir without an identity.
    #[error("no identity at {0}: nothing to back up")]
    IdentityMissing(PathBuf),
    /// Export to a file that exists.
    #[error("{0} already exists; choose another file name")]
    OutputExists(PathBuf),
    /// Snapshotting a SQLite file failed.
    #[error("snapshot of {file}: {source}")]
    Snapshot {
        /// The file.
        file: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// Argon2 refused its parameters.
    #[error("key derivation: {0}")]
    Kdf(String),
    /// Reading the backup file failed.
    #[error("reading the backup: {0}")]
    Read(#[source] io::Error),
    /// Writing the backup or a restored file failed.
    #[error("writing: {0}")]
    Write(#[source] io::Error),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// How to export.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions<'a> {
    /// Key derivation parameters ([`KdfParams::STRONG`]; weaker ones only in tests, since
    /// import refuses them by default).
    pub kdf: KdfParams,
    /// The state files to carry ([`BACKUP_FILES`]).
    pub files: &'a [BackupFile],
}

impl Default for ExportOptions<'static> {
    fn default() -> Self {
        ExportOptions {
            kdf: KdfParams::STRONG,
            files: BACKUP_FILES,
        }
    }
}

/// How to import.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Replace an existing identity and state files (those the backup lacks are removed, so
    /// no state of the old identity stays behind).
    pub force: bool,
    /// The weakest key derivation accepted ([`KdfParams::FLOOR`]; lower only in tests).
    pub kdf_floor: KdfParams,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            force: false,
            kdf_floor: KdfParams::FLOOR,
        }
    }
}

/// What an import restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// When the backup was made (Unix seconds).
    pub created_at: u64,
    /// The Sotto version that made it.
    pub sotto_version: String,
    /// The files restored, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// Backs up `data_dir` into the new file `out` (mode 0600) under a fresh recovery code,
/// which is returned to be shown to the user once.
pub fn export(data_dir: &Path, out: &Path) -> Result<RecoveryCode, BackupError> {
    export_with(data_dir, out, &ExportOptions::default())
}

/// [`export`] with explicit options.
pub fn export_with(
    data_dir: &Path,
    out: &Path,
    options: &ExportOptions<'_>,
) -> Result<RecoveryCode, BackupError> {
    if out.exists() {
        return Err(BackupError::OutputExists(out.to_owned()));
    }
    let snapshot = archive::Snapshot::take(data_dir, options.files)?;
    let code = RecoveryCode::generate();
    let mut header = Header {
        kdf: options.kdf,
        salt: rand::random(),
        nonce_prefix: rand::random(),
        chunk_len: container::CHUNK_LEN as u32,
        key_check: [0; 16],
    };
    let keys = container::derive_keys(code.secret(), &header.salt, header.kdf)?;
    header.key_check = keys.check;

    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", hex(&rand::random::<[u8; 6]>())));
    let result: Result<(), BackupError> = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        let mut writer =
            ChunkWriter::new(BufWriter::new(file), &header, &keys).map_err(BackupError::Write)?;
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        snapshot.write_archive(created_at, &mut writer)?;
        let file = writer
            .finish()
            .map_err(BackupError::Write)?
            .into_inner()
            .map_err(|e| BackupError::Write(e.into_error()))?;
        file.sync_all().map_err(io_at(&tmp))?;
        if out.exists() {
            return Err(BackupError::OutputExists(out.to_owned()));
        }
        fs::rename(&tmp, out).map_err(io_at(out))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(code)
}

/// Restores the backup at `backup` into `data_dir` with the recovery code the user typed.
/// Refuses a data dir that already has an identity or state files.
pub fn import(backup: &Path, code: &str, data_dir: &Path) -> Result<ImportSummary, BackupError> {
    import_with(backup, code, data_dir, &ImportOptions::default())
}

/// [`import`] with explicit options.
pub fn import_with(
    backup: &Path,
    code: &str,
    data_dir: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, BackupError> {
    let code = RecoveryCode::parse(code)?;
    let identity = data_dir.join(IDENTITY_FILE);
    if !options.force {
        if identity.exists() {
            return Err(BackupError::IdentityExists(identity));
        }
        if let Some(file) = BACKUP_FILES
            .iter()
            .map(|f| data_dir.join(f.name))
            .find(|p| p.exists())
        {
            return Err(BackupError::TargetNotEmpty(file));
        }
    }

    let file = File::open(backup).map_err(io_at(backup))?;
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let mut raw = [0u8; HEADER_LEN];
    let got = container::read_full(&mut input, &mut raw).map_err(BackupError::Read)?;
    if got < HEADER_LEN {
        return Err(if got >= 8 && &raw[..8] != container::MAGIC {
            BackupError::NotABackup
        } else {
            BackupError::Truncated
        });
    }
    let header = Header::parse(&raw)?;
    if !header.kdf.at_least(&options.kdf_floor) {
        return Err(BackupError::WeakKdf {
            found: header.kdf,
            floor: options.kdf_floor,
        });
    }
    if !KdfParams::CEILING.at_least(&header.kdf) {
        return Err(BackupError::Corrupted(
            "implausible key-derivation parameters",
        ));
    }
    let keys = container::derive_keys(code.secret(), &header.salt, header.kdf)?;
    if !container::key_matches(&keys, &header) {
        return Err(BackupError::WrongRecoveryCode);
    }

    crate::data_dir::create_private_dir(data_dir).map_err(io_at(data_dir))?;
    let staging = data_dir.join(format!(
        ".sotto-restore-{}",
        hex(&rand::random::<[u8; 6]>())
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_at(&staging))?;
    let result: Result<ImportSummary, BackupError> = (|| {
        let mut reader = ChunkReader::new(input, &header, &keys);
        let manifest = archive::unpack(&mut reader, &staging, IDENTITY_FILE)?;
        reader.finish()?;
        install(&staging, data_dir, &manifest, options.force)?;
        Ok(ImportSummary {
            created_at: manifest.created_at,
            sotto_version: manifest.sotto_version,
            files: manifest
                .files
                .into_iter()
                .map(|f| (f.name, f.size))
                .collect(),
        })
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Moves the authenticated files from `staging` into `data_dir`, the identity last.
fn install(
    staging: &Path,
    data_dir: &Path,
    manifest: &archive::Manifest,
    force: bool,
) -> Result<(), BackupError> {
    let restored = |name: &str| manifest.files.iter().any(|f| f.name == name);
    if force {
        // No state of the replaced identity may stay beside the restored one.
        for file in BACKUP_FILES.iter().filter(|f| !restored(f.name)) {
            remove_if_present(&data_dir.join(file.name))?;
            if file.kind == FileKind::Sqlite {
                remove_sqlite_sidecars(data_dir, file.name)?;
            }
        }
    }
    let mut order: Vec<&archive::ManifestEntry> = manifest.files.iter().collect();
    order.sort_by_key(|f| f.name == IDENTITY_FILE);
    for entry in order {
        if entry.sqlite {
            // A stale write-ahead log would be replayed into the restored database.
            remove_sqlite_sidecars(data_dir, &entry.name)?;
        }
        let to = data_dir.join(&entry.name);
        fs::rename(staging.join(&entry.name), &to).map_err(io_at(&to))?;
    }
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_at(data_dir))
}

fn remove_sqlite_sidecars(data_dir: &Path, name: &str) -> Result<(), BackupError> {
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_present(&data_dir.join(format!("{name}{suffix}")))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), BackupError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BackupError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
