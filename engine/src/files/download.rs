//! Downloading an encrypted file: chunks fetched a few at a time, each authenticated as it
//! arrives and appended in order to `NAME.part`, the digest checked at the end, and only
//! then the rename to `NAME`. A later call resumes after the whole chunks already in the
//! `.part` file. Names from offers are sanitized here.

use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sotto_signaling::protocol::{BlobId, MAX_BLOB_CHUNK_BYTES};
use tokio::task::JoinHandle;

use super::crypto::{CHUNK_BYTES, ChunkCipher, TAG_BYTES, plaintext_len};
use super::{BlobClient, FileError, FileOffer, IN_FLIGHT, Transfer};

/// Longest file name produced, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// A file name from an offer, made safe to create inside a chosen directory: path
/// separators, control characters and bidirectional overrides become `_`; leading and
/// trailing dots and spaces go (no `.`, `..` or hidden files); at most 200 bytes; never
/// empty (`file`).
pub fn sanitize_file_name(name: &str) -> String {
    let replaced: String = name
        .chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c == '/' || c == '\\' || c.is_control() || bidi {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    if out.is_empty() {
        "file".to_owned()
    } else {
        out.to_owned()
    }
}

/// Fetch the file an offer describes into `dir`; returns its path. Each chunk is
/// authenticated before any of it is written; the file appears under its name only once
/// every chunk and the digest check out. A tampered chunk fails with
/// [`FileError::ChunkTampered`] and leaves no file under the final name.
pub async fn fetch(
    blobs: &BlobClient,
    offer: &FileOffer,
    dir: impl AsRef<Path>,
    mut progress: impl FnMut(&Transfer),
) -> Result<PathBuf, FileError> {
    offer.check()?;
    let dir = dir.as_ref();
    let name = sanitize_file_name(&offer.name);
    let final_path = dir.join(&name);
    let part_path = dir.join(format!("{name}.part"));
    if exists(&final_path).await? {
        return Err(FileError::Exists { path: final_path });
    }
    let cipher = Arc::new(ChunkCipher::new(&offer.key));
    let (mut writer, start) = resume(blobs, offer, &cipher, part_path.clone()).await?;
    let mut transfer = Transfer {
        chunks_total: offer.chunks,
        chunks_skipped: start,
        chunks_done: start,
        bytes_moved: 0,
    };
    if start > 0 {
        progress(&transfer);
    }

    let mut queue: VecDeque<Abortable> = VecDeque::new();
    let mut next = start;
    while next < offer.chunks || !queue.is_empty() {
        while next < offer.chunks && queue.len() < IN_FLIGHT {
            queue.push_back(Abortable(tokio::spawn(fetch_chunk(
                blobs.clone(),
                cipher.clone(),
                offer.blob_id.clone(),
                offer.size,
                offer.chunks,
                next,
            ))));
            next += 1;
        }
        let Some(mut head) = queue.pop_front() else {
            break;
        };
        let (plaintext, moved) = (&mut head.0).await??;
        writer = writer.append(plaintext).await?;
        transfer.chunks_done += 1;
        transfer.bytes_moved += moved;
        progress(&transfer);
    }

    let digest = writer.finish().await?;
    if digest != offer.digest {
        let _ = remove(&part_path).await;
        return Err(FileError::DigestMismatch);
    }
    if exists(&final_path).await? {
        return Err(FileError::Exists { path: final_path });
    }
    let (from, to) = (part_path.clone(), final_path.clone());
    tokio::task::spawn_blocking(move || std::fs::rename(from, to))
        .await?
        .map_err(FileError::io(&final_path))?;
    Ok(final_path)
}

/// A task aborted when dropped (the transfer failed or was cancelled).
struct Abortable(JoinHandle<Result<(Vec<u8>, u64), FileError>>);

impl Drop for Abortable {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Download and open chunk `index`; returns the plaintext and the bytes moved.
async fn fetch_chunk(
    blobs: BlobClient,
    cipher: Arc<ChunkCipher>,
    blob_id: BlobId,
    size: u64,
    chunks: u32,
    index: u32,
) -> Result<(Vec<u8>, u64), FileError> {
    let expected = plaintext_len(size, u64::from(index)) + TAG_BYTES;
    let limit = usize::try_from(MAX_BLOB_CHUNK_BYTES).unwrap_or(usize::MAX);
    let body = blobs.get_chunk(&blob_id, index, limit).await?;
    let moved = body.len() as u64;
    if body.len() != expected {
        return Err(FileError::ChunkTampered { index });
    }
    let last = index + 1 == chunks;
    let plaintext = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::from(body);
        cipher
            .open(u64::from(index), last, &mut chunk)
            .map(|()| chunk)
    })
    .await?
    .map_err(|()| FileError::ChunkTampered { index })?;
    Ok((plaintext, moved))
}

/// Open `NAME.part` and find where to resume: after the whole chunks it holds, when the
/// last of them matches the server's chunk (so the file belongs to this offer). Hashes
/// the kept prefix and cuts anything after it.
async fn resume(
    blobs: &BlobClient,
    offer: &FileOffer,
    cipher: &Arc<ChunkCipher>,
    part_path: PathBuf,
) -> Result<(Writer, u32), FileError> {
    let open_path = part_path.clone();
    let (file, len) = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&open_path)?;
        let len = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, len))
    })
    .await?
    .map_err(FileError::io(&part_path))?;

    let whole = if len > offer.size {
        0
    } else {
        len / CHUNK_BYTES as u64
    };
    // The last chunk is always fetched again: it is small, and it carries the final flag.
    let mut keep = u32::try_from(whole)
        .unwrap_or(u32::MAX)
        .min(offer.chunks.saturating_sub(1));
    let mut check = None;
    if keep > 0 {
        let (plaintext, _) = fetch_chunk(
            blobs.clone(),
            cipher.clone(),
            offer.blob_id.clone(),
            offer.size,
            offer.chunks,
            keep - 1,
        )
        .await?;
        check = Some(plaintext);
    }
    let path = part_path.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut writer = Writer {
            file,
            hasher: Sha256::new(),
            path,
        };
        if let Some(expected) = check {
            let mut tail = vec![0u8; CHUNK_BYTES];
            writer
                .file
                .seek(SeekFrom::Start(u64::from(keep - 1) * CHUNK_BYTES as u64))?;
            writer.file.read_exact(&mut tail)?;
            if tail != expected {
                keep = 0;
            }
        }
        let kept = u64::from(keep) * CHUNK_BYTES as u64;
        writer.file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        for _ in 0..keep {
            writer.file.read_exact(&mut buf)?;
            writer.hasher.update(&buf);
        }
        writer.file.set_len(kept)?;
        writer.file.seek(SeekFrom::Start(kept))?;
        Ok::<_, std::io::Error>((writer, keep))
    })
    .await?
    .map_err(FileError::io(&part_path))?;
    Ok(writer)
}

/// `NAME.part`, written in order and hashed as it goes.
struct Writer {
    file: std::fs::File,
    hasher: Sha256,
    path: PathBuf,
}

impl Writer {
    /// Append one authenticated chunk (off the async threads).
    async fn append(mut self, plaintext: Vec<u8>) -> Result<Writer, FileError> {
        tokio::task::spawn_blocking(move || {
            self.file
                .write_all(&plaintext)
                .map_err(FileError::io(&self.path))?;
            self.hasher.update(&plaintext);
            Ok(self)
        })
        .await?
    }

    /// Flush to disk; the digest of everything written.
    async fn finish(self) -> Result<[u8; 32], FileError> {
        tokio::task::spawn_blocking(move || {
            self.file.sync_all().map_err(FileError::io(&self.path))?;
            Ok(self.hasher.finalize().into())
        })
        .await?
    }
}

async fn exists(path: &Path) -> Result<bool, FileError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || owned.try_exists())
        .await?
        .map_err(FileError::io(path))
}

async fn remove(path: &Path) -> Result<(), FileError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::remove_file(owned))
        .await?
        .map_err(FileError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory_or_hide_control_characters() {
        for (given, want) in [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("..", "file"),
            (".", "file"),
            ("", "file"),
            ("/abs/path.txt", "_abs_path.txt"),
            ("C:\\Windows\\x.exe", "C:_Windows_x.exe"),
            (".bashrc", "bashrc"),
            ("a\nb\u{0}c\u{7f}", "a_b_c_"),
            ("photo\u{202e}gpj.exe", "photo_gpj.exe"),
            ("trailing. . ", "trailing"),
            ("  spaced  ", "spaced"),
            ("résumé.txt", "résumé.txt"),
        ] {
            assert_eq!(sanitize_file_name(given), want, "for {given:?}");
        }
        let long = "é".repeat(300);
        let cut = sanitize_file_name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
