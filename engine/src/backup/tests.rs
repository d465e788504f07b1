use std::os::unix::fs::PermissionsExt as _;

use rusqlite::Connection;

use super::*;
use crate::identity::Identity;

/// Fast parameters for tests that are not about the KDF (the CLI always uses STRONG).
const WEAK: KdfParams = KdfParams {
    memory_kib: 64,
    passes: 1,
    lanes: 1,
};
const MARKER: &str = "the plaintext marker from the store";

fn export_weak(data_dir: &Path, out: &Path) -> RecoveryCode {
    export_with(
        data_dir,
        out,
        &ExportOptions {
            kdf: WEAK,
            files: BACKUP_FILES,
        },
    )
    .unwrap()
}

fn import_weak(
    backup: &Path,
    code: &str,
    data_dir: &Path,
    force: bool,
) -> Result<ImportSummary, BackupError> {
    import_with(
        backup,
        code,
        data_dir,
        &ImportOptions {
            force,
            kdf_floor: WEAK,
        },
    )
}

/// A data dir with an identity and a WAL-mode store whose last rows are still only in the
/// write-ahead log; the returned connection keeps it open (a live database). `blob_kib`
/// of random bytes make the payload span several chunks.
fn data_dir(root: &Path, name: &str, blob_kib: usize) -> (PathBuf, Connection) {
    let dir = root.join(name);
    Identity::generate(Some(name.into()))
        .unwrap()
        .save(&dir.join(IDENTITY_FILE), false)
        .unwrap();
    let conn = Connection::open(dir.join("store.sqlite")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT NOT NULL, blob BLOB);",
    )
    .unwrap();
    for i in 0..20 {
        conn.execute(
            "INSERT INTO messages (body) VALUES (?1)",
            [format!("{MARKER} {i}")],
        )
        .unwrap();
    }
    let blob: Vec<u8> = (0..blob_kib * 1024).map(|_| rand::random()).collect();
    conn.execute(
        "INSERT INTO messages (body, blob) VALUES ('blob', ?1)",
        [blob],
    )
    .unwrap();
    (dir, conn)
}

fn rows(store: &Path) -> Vec<String> {
    let conn = Connection::open(store).unwrap();
    let mut stmt = conn
        .prepare("SELECT body FROM messages WHERE blob IS NULL ORDER BY id")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip_into_an_empty_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let (source, live) = data_dir(root.path(), "ada", 150);
    let out = root.path().join("ada.sottobackup");
    let code = export_weak(&source, &out);
    assert_eq!(mode(&out), 0o600);
    // The snapshot's temporary copy is gone; the live store is untouched.
    assert!(
        names(&source).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        names(&source)
    );
    let raw = fs::read(&out).unwrap();
    assert!(!raw.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    assert!(raw.len() > 150 * 1024);

    let target = root.path().join("restored");
    let summary = import_weak(&out, &code.reveal(), &target, false).unwrap();
    drop(live);

    let identity = target.join(IDENTITY_FILE);
    assert_eq!(
        fs::read(&identity).unwrap(),
        fs::read(source.join(IDENTITY_FILE)).unwrap()
    );
    assert_eq!(mode(&identity), 0o600);
    assert_eq!(mode(&target.join("store.sqlite")), 0o600);
    assert_eq!(
        Identity::load(&identity).unwrap().public(),
        Identity::load(&source.join(IDENTITY_FILE))
            .unwrap()
            .public()
    );
    let restored = rows(&target.join("store.sqlite"));
    assert_eq!(restored.len(), 20);
    assert_eq!(restored, rows(&source.join("store.sqlite")));
    assert_eq!(
        names(&target),
        vec![IDENTITY_FILE.to_owned(), "store.sqlite".into()]
    );
    assert_eq!(summary.files.len(), 2);
    assert_eq!(summary.files[0].0, IDENTITY_FILE);
    assert_eq!(summary.sotto_version, env!("CARGO_PKG_VERSION"));
    assert!(summary.created_at > 1_700_000_000);
}

#[test]
fn strong_defaults_round_trip() {
    // The one test that pays for KdfParams::STRONG (slow in a debug build).
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("src");
    Identity::generate(None)
        .unwrap()
        .save(&source.join(IDENTITY_FILE), false)
        .unwrap();
    let out = root.path().join("b");
    let code = export(&source, &out).unwrap();
    let raw = fs::read(&out).unwrap();
    let header = Header::parse(raw[..HEADER_LEN].try_into().unwrap()).unwrap();
    assert_eq!(header.kdf, KdfParams::STRONG);
    let target = root.path().join("dst");
    let summary = import(&out, &code.reveal(), &target).unwrap();
    assert_eq!(summary.files.len(), 1);
    assert_eq!(
        fs::read(target.join(IDENTITY_FILE)).unwrap(),
        fs::read(source.join(IDENTITY_FILE)).unwrap()
    );
}

#[test]
fn wrong_and_mistyped_codes_are_told_apart_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (source, _live) = data_dir(root.path(), "bo", 1);
    let out = root.path().join("b");
    let code = export_weak(&source, &out);
    let target = root.path().join("t");

    let other = RecoveryCode::generate().reveal();
    assert!(matches!(
        import_weak(&out, &other, &target, false),
        Err(BackupError::WrongRecoveryCode)
    ));
    let text = code.reveal();
    let typo: String = text
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 6 {
                if c == 'Q' { 'R' } else { 'Q' }
            } else {
                c
            }
        })
        .collect();
    assert!(matches!(
        import_weak(&out, &typo, &target, false),
        Err(BackupError::MistypedCode)
    ));
    assert!(matches!(
        import_weak(&out, "1234", &target, false),
        Err(BackupError::MalformedCode(_))
    ));
    assert!(!target.exists());
    import_weak(&out, &text.to_lowercase(), &target, false).unwrap();
}

#[test]
fn truncated_and_tampered_files_are_refused_and_leave_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let (source, _live) = data_dir(root.path(), "cy", 150);
    let out = root.path().join("b");
    let code = export_weak(&source, &out).reveal();
    let raw = fs::read(&out).unwrap();
    let full_chunk = container::CHUNK_LEN + 16;
    assert!(raw.len() > HEADER_LEN + 2 * full_chunk);

    let target = root.path().join("t");
    fs::create_dir(&target).unwrap();
    let attempt = |bytes: &[u8]| {
        let bad = root.path().join("bad");
        fs::write(&bad, bytes).unwrap();
        let result = import_weak(&bad, &code, &target, false);
        // Nothing written: no identity, no store, no staging directory.
        assert_eq!(names(&target), Vec::<String>::new());
        result
    };

    assert!(matches!(attempt(&raw[..40]), Err(BackupError::Truncated)));
    assert!(matches!(attempt(&[]), Err(BackupError::Truncated)));
    // Cut at a chunk boundary: the last chunk present is not flagged last.
    let boundary = HEADER_LEN + 2 * full_chunk;
    assert!(matches!(
        attempt(&raw[..boundary]),
        Err(BackupError::Truncated)
    ));
    // Cut inside a chunk, or the last byte missing.
    for cut in [boundary + 1000, raw.len() - 1] {
        assert!(
            matches!(
                attempt(&raw[..cut]),
                Err(BackupError::Truncated | BackupError::Corrupted(_))
            ),
            "cut at {cut}"
        );
    }
    // One flipped bit: in a chunk, in the salt (header checksum), in the tag of the last
    // chunk.
    for at in [HEADER_LEN + full_chunk + 77, 30, raw.len() - 3] {
        let mut bad = raw.clone();
        bad[at] ^= 0x10;
        let err = attempt(&bad).unwrap_err();
        assert!(matches!(err, BackupError::Corrupted(_)), "byte {at}: {err}");
    }
    // Extra bytes appended after the last chunk.
    let mut longer = raw.clone();
    longer.extend_from_slice(&[0; 10]);
    assert!(attempt(&longer).is_err());
    assert!(matches!(
        attempt(b"PK\x03\x04 not a backup at all, but long enough for a header ......"),
        Err(BackupError::NotABackup)
    ));
    // The intact file still restores.
    import_weak(&out, &code, &target, false).unwrap();
}

#[test]
fn a_data_dir_with_an_identity_or_state_is_refused_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    let (source, live) = data_dir(root.path(), "di", 1);
    let out = root.path().join("b");
    let code = export_weak(&source, &out).reveal();
    drop(live);

    let (occupied, other_live) = data_dir(root.path(), "eve", 1);
    drop(other_live);
    let before = fs::read(occupied.join(IDENTITY_FILE)).unwrap();
    assert!(matches!(
        import_weak(&out, &code, &occupied, false),
        Err(BackupError::IdentityExists(_))
    ));
    assert_eq!(fs::read(occupied.join(IDENTITY_FILE)).unwrap(), before);

    // A store without an identity is state too.
    let half = root.path().join("half");
    fs::create_dir(&half).unwrap();
    fs::write(half.join("store.sqlite"), b"").unwrap();
    assert!(matches!(
        import_weak(&out, &code, &half, false),
        Err(BackupError::TargetNotEmpty(_))
    ));

    // Forced: the backup's identity and store replace the old ones, sidecars included.
    import_weak(&out, &code, &occupied, true).unwrap();
    assert_eq!(
        fs::read(occupied.join(IDENTITY_FILE)).unwrap(),
        fs::read(source.join(IDENTITY_FILE)).unwrap()
    );
    assert_eq!(
        rows(&occupied.join("store.sqlite")),
        rows(&source.join("store.sqlite"))
    );
}

#[test]
fn import_enforces_the_kdf_floor_and_ceiling() {
    let root = tempfile::tempdir().unwrap();
    let (source, _live) = data_dir(root.path(), "fa", 1);
    let out = root.path().join("b");
    let code = export_weak(&source, &out).reveal();
    // The default import refuses the weak parameters before deriving anything.
    let target = root.path().join("t");
    assert!(matches!(
        import(&out, &code, &target),
        Err(BackupError::WeakKdf {
            found: WEAK,
            floor: KdfParams::FLOOR
        })
    ));
    // A header (with a fixed-up checksum) asking for 64 GiB is refused, not attempted.
    let mut raw = fs::read(&out).unwrap();
    let mut header = Header::parse(raw[..HEADER_LEN].try_into().unwrap()).unwrap();
    header.kdf.memory_kib = 64 * 1024 * 1024;
    raw[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    fs::write(&out, &raw).unwrap();
    assert!(matches!(
        import_weak(&out, &code, &target, false),
        Err(BackupError::Corrupted(_))
    ));
    assert!(!target.exists());
}

#[test]
fn export_refuses_to_overwrite_or_to_back_up_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (source, _live) = data_dir(root.path(), "gu", 1);
    let out = root.path().join("b");
    fs::write(&out, b"keep me").unwrap();
    let options = ExportOptions {
        kdf: WEAK,
        files: BACKUP_FILES,
    };
    assert!(matches!(
        export_with(&source, &out, &options),
        Err(BackupError::OutputExists(_))
    ));
    assert_eq!(fs::read(&out).unwrap(), b"keep me");
    assert!(matches!(
        export_with(&root.path().join("empty"), &root.path().join("c"), &options),
        Err(BackupError::IdentityMissing(_))
    ));
    assert!(!root.path().join("c").exists());
}
