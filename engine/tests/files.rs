//! Encrypted files through a real signaling server on a loopback port: round trips of
//! several sizes, interrupted uploads and downloads resumed, tampering on the server's
//! disk refused, the size cap, a wrong upload token, and a scan of the server's data dir
//! for the plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sotto_engine::files::{
    BlobClient, CHUNK_BYTES, FileError, FileOffer, IN_FLIGHT, Transfer, UploadState, create_upload,
    fetch, send_file, upload,
};
use sotto_engine::{ClientConfig, Identity, SignalingClient};
use sotto_signaling::protocol::{UploadToken, encode_b64};
use sotto_signaling::server::{Config, RunningServer, start};
use tokio::sync::Notify;

struct World {
    server: RunningServer,
    client: SignalingClient,
    blobs: BlobClient,
    /// The server's data dir.
    data: tempfile::TempDir,
    /// Where files are made and fetched to.
    files: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        World::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut Config)) -> World {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), data.path());
        tune(&mut config);
        let server = start(config).await.unwrap();
        let client = SignalingClient::connect(
            ClientConfig::new(server.ws_url()),
            Arc::new(Identity::generate(Some("Alice".into())).unwrap()),
        )
        .await
        .unwrap();
        let blobs = BlobClient::for_signaling_url(&server.ws_url()).unwrap();
        World {
            server,
            client,
            blobs,
            data,
            files: tempfile::tempdir().unwrap(),
        }
    }

    /// A file of `size` bytes whose content depends on `seed`.
    fn make_file(&self, name: &str, size: usize, seed: u8) -> (PathBuf, Vec<u8>) {
        let content: Vec<u8> = (0..size)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect();
        let path = self.files.path().join(name);
        std::fs::write(&path, &content).unwrap();
        (path, content)
    }

    fn fetch_dir(&self, name: &str) -> PathBuf {
        let dir = self.files.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn chunk_path(&self, offer: &FileOffer, index: u32) -> PathBuf {
        self.data
            .path()
            .join("blobs")
            .join(offer.blob_id.as_str())
            .join(index.to_string())
    }

    async fn send(&self, path: &Path) -> FileOffer {
        send_file(&self.client, &self.blobs, path, None)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn files_of_every_shape_round_trip() {
    let world = World::start().await;
    for (i, size) in [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 3 * CHUNK_BYTES + 1234]
        .into_iter()
        .enumerate()
    {
        let (path, content) = world.make_file(&format!("file-{i}.bin"), size, i as u8);
        let mut state = create_upload(&world.client, &path, Some("application/x-test".into()))
            .await
            .unwrap();
        let mut reports = Vec::new();
        let offer = upload(&world.blobs, &mut state, |t| reports.push(*t))
            .await
            .unwrap();
        assert_eq!(offer.size, size as u64);
        assert_eq!(offer.chunks as usize, size.div_ceil(CHUNK_BYTES).max(1));
        assert_eq!(offer.media_type.as_deref(), Some("application/x-test"));
        assert_eq!(reports.last().unwrap().chunks_done, offer.chunks);
        assert_eq!(state.chunks_done, offer.chunks);

        // The offer crosses the wire as JSON (inside an MLS message).
        let offer: FileOffer =
            serde_json::from_str(&serde_json::to_string(&offer).unwrap()).unwrap();
        let dir = world.fetch_dir(&format!("into-{i}"));
        let mut seen = Transfer::default();
        let got = fetch(&world.blobs, &offer, &dir, |t| seen = *t)
            .await
            .unwrap();
        assert_eq!(got, dir.join(format!("file-{i}.bin")));
        assert_eq!(std::fs::read(&got).unwrap(), content, "size {size}");
        assert_eq!((seen.chunks_done, seen.chunks_skipped), (offer.chunks, 0));
        assert!(!dir.join(format!("file-{i}.bin.part")).exists());

        // The same offer again: the file is there, and is not overwritten.
        let again = fetch(&world.blobs, &offer, &dir, |_| {}).await;
        assert!(matches!(again, Err(FileError::Exists { .. })), "{again:?}");
    }
}

#[tokio::test]
async fn an_interrupted_upload_resumes_and_sends_only_the_missing_chunks() {
    let world = World::start().await;
    let (path, content) = world.make_file("big.bin", 20 * CHUNK_BYTES + 99, 1);
    let state = create_upload(&world.client, &path, None).await.unwrap();
    // What a caller persists before sending anything.
    let saved = serde_json::to_string(&state).unwrap();
    assert!(!format!("{state:?}").contains(state.upload_token.as_str()));

    // The upload is cut off (as by a crash) once three chunks are stored.
    let stop = Notify::new();
    let mut first = state.clone();
    tokio::select! {
        biased;
        _ = stop.notified() => {}
        result = upload(&world.blobs, &mut first, |t| if t.chunks_done == 3 { stop.notify_one() }) => {
            panic!("the upload should have been interrupted: {result:?}")
        }
    }
    let before = world.blobs.status(&state.blob_id).await.unwrap();
    assert!(before.received >= 3 && before.received < 21, "{before:?}");
    assert!(!before.complete);

    let mut resumed: UploadState = serde_json::from_str(&saved).unwrap();
    let mut last = Transfer::default();
    let offer = upload(&world.blobs, &mut resumed, |t| last = *t)
        .await
        .unwrap();
    // Chunks in flight at the interruption may still have landed after the status above.
    assert!(
        last.chunks_skipped >= before.received,
        "{last:?} {before:?}"
    );
    assert!(last.chunks_skipped <= before.received + IN_FLIGHT as u32);
    assert_eq!(last.chunks_done, 21);
    let sent = u64::from(21 - last.chunks_skipped);
    assert!(last.bytes_moved <= sent * (CHUNK_BYTES as u64 + 16));
    assert!(last.bytes_moved > 0);

    let dir = world.fetch_dir("into");
    let got = fetch(&world.blobs, &offer, &dir, |_| {}).await.unwrap();
    assert_eq!(std::fs::read(got).unwrap(), content);
}

#[tokio::test]
async fn a_changed_file_is_not_resumed() {
    let world = World::start().await;
    let (path, _) = world.make_file("doc.bin", 2 * CHUNK_BYTES, 1);
    let mut state = create_upload(&world.client, &path, None).await.unwrap();
    world.make_file("doc.bin", 2 * CHUNK_BYTES + 1, 2);
    let result = upload(&world.blobs, &mut state, |_| {}).await;
    assert!(
        matches!(result, Err(FileError::FileChanged { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_interrupted_download_resumes_after_the_verified_chunks() {
    let world = World::start().await;
    let (path, content) = world.make_file("movie.bin", 12 * CHUNK_BYTES + 7, 3);
    let offer = world.send(&path).await;
    let dir = world.fetch_dir("into");

    let stop = Notify::new();
    tokio::select! {
        biased;
        _ = stop.notified() => {}
        result = fetch(&world.blobs, &offer, &dir, |t| if t.chunks_done == 5 { stop.notify_one() }) => {
            panic!("the download should have been interrupted: {result:?}")
        }
    }
    let part = dir.join("movie.bin.part");
    assert!(!dir.join("movie.bin").exists());
    let written = std::fs::metadata(&part).unwrap().len();
    assert!(written >= 5 * CHUNK_BYTES as u64, "{written}");
    // A torn write at the end is cut off on resume.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .unwrap();
        std::io::Write::write_all(&mut f, &[0xee; 1000]).unwrap();
    }

    let mut first = None;
    let got = fetch(&world.blobs, &offer, &dir, |t| {
        first.get_or_insert(*t);
    })
    .await
    .unwrap();
    let first = first.unwrap();
    assert!(first.chunks_skipped >= 5, "{first:?}");
    assert_eq!(std::fs::read(&got).unwrap(), content);
    assert!(!part.exists());
}

#[tokio::test]
async fn a_part_file_of_another_offer_is_not_trusted() {
    let world = World::start().await;
    let (path, content) = world.make_file("same-name.bin", 4 * CHUNK_BYTES, 4);
    let offer = world.send(&path).await;
    let dir = world.fetch_dir("into");
    // A stale partial download of a different file with the same name.
    std::fs::write(dir.join("same-name.bin.part"), vec![0x42; 3 * CHUNK_BYTES]).unwrap();
    let mut first = None;
    let got = fetch(&world.blobs, &offer, &dir, |t| {
        first.get_or_insert(*t);
    })
    .await
    .unwrap();
    assert_eq!(first.unwrap().chunks_skipped, 0);
    assert_eq!(std::fs::read(got).unwrap(), content);
}

#[tokio::test]
async fn a_flipped_bit_on_the_servers_disk_is_refused_and_no_file_appears() {
    let world = World::start().await;
    let (path, _) = world.make_file("contract.pdf", 3 * CHUNK_BYTES - 10, 5);
    let offer = world.send(&path).await;
    let chunk = world.chunk_path(&offer, 1);
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[1000] ^= 0x04;
    std::fs::write(&chunk, bytes).unwrap();

    let dir = world.fetch_dir("into");
    let result = fetch(&world.blobs, &offer, &dir, |_| {}).await;
    assert!(
        matches!(result, Err(FileError::ChunkTampered { index: 1 })),
        "{result:?}"
    );
    let message = result.unwrap_err().to_string();
    assert!(message.contains("chunk 1") && message.contains("authentication"));
    assert!(!dir.join("contract.pdf").exists());
    // What was written is the verified chunk before it, nothing of the tampered one.
    let part = std::fs::metadata(dir.join("contract.pdf.part")).unwrap();
    assert!(part.len() <= CHUNK_BYTES as u64);
}

#[tokio::test]
async fn chunks_swapped_between_files_or_reordered_are_refused() {
    let world = World::start().await;
    let (a, _) = world.make_file("a.bin", 2 * CHUNK_BYTES + 5, 6);
    let (b, _) = world.make_file("b.bin", 2 * CHUNK_BYTES + 5, 7);
    let offer_a = world.send(&a).await;
    let offer_b = world.send(&b).await;

    // Chunk 0 of A put in place of chunk 0 of B: same length, another key.
    std::fs::copy(world.chunk_path(&offer_a, 0), world.chunk_path(&offer_b, 0)).unwrap();
    let result = fetch(&world.blobs, &offer_b, world.fetch_dir("b"), |_| {}).await;
    assert!(
        matches!(result, Err(FileError::ChunkTampered { index: 0 })),
        "{result:?}"
    );

    // Chunks 0 and 1 of A swapped: same key, wrong positions.
    let (c0, c1) = (world.chunk_path(&offer_a, 0), world.chunk_path(&offer_a, 1));
    let (x, y) = (std::fs::read(&c0).unwrap(), std::fs::read(&c1).unwrap());
    std::fs::write(&c0, y).unwrap();
    std::fs::write(&c1, x).unwrap();
    let dir = world.fetch_dir("a");
    let result = fetch(&world.blobs, &offer_a, &dir, |_| {}).await;
    assert!(
        matches!(result, Err(FileError::ChunkTampered { index: 0 })),
        "{result:?}"
    );
    assert!(!dir.join("a.bin").exists());
}

#[tokio::test]
async fn a_lying_offer_fails_the_digest_check() {
    let world = World::start().await;
    let (path, _) = world.make_file("x.bin", CHUNK_BYTES + 1, 8);
    let mut offer = world.send(&path).await;
    offer.digest[0] ^= 1;
    let dir = world.fetch_dir("into");
    let result = fetch(&world.blobs, &offer, &dir, |_| {}).await;
    assert!(
        matches!(result, Err(FileError::DigestMismatch)),
        "{result:?}"
    );
    assert!(!dir.join("x.bin").exists() && !dir.join("x.bin.part").exists());
}

#[tokio::test]
async fn a_file_above_the_servers_cap_is_refused() {
    let world = World::start_with(|c| c.max_blob_bytes = 1 << 20).await;
    let (small, _) = world.make_file("small.bin", (1 << 20) - 1024, 1);
    world.send(&small).await;
    let (big, _) = world.make_file("big.bin", 1 << 20, 1);
    let result = create_upload(&world.client, &big, None).await;
    assert!(
        matches!(result, Err(FileError::TooLarge { size, .. }) if size == 1 << 20),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_wrong_upload_token_is_refused() {
    let world = World::start().await;
    let (path, _) = world.make_file("t.bin", 1000, 1);
    let mut state = create_upload(&world.client, &path, None).await.unwrap();
    state.upload_token = UploadToken(encode_b64(&[1; 32]));
    let result = upload(&world.blobs, &mut state, |_| {}).await;
    match result {
        Err(FileError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (401, "unauthorized"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        world.blobs.status(&state.blob_id).await.unwrap().received,
        0
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn the_servers_data_dir_holds_none_of_the_plaintext() {
    let world = World::start().await;
    let marker = "SOTTO-PLAINTEXT-MARKER: the quarterly plan is to buy the moon. ";
    let text = marker.repeat(3 * CHUNK_BYTES / marker.len());
    let path = world.files.path().join("secret-plans.txt");
    std::fs::write(&path, &text).unwrap();
    let mut state = create_upload(&world.client, &path, Some("text/plain".into()))
        .await
        .unwrap();
    let offer = upload(&world.blobs, &mut state, |_| {}).await.unwrap();
    let got = fetch(&world.blobs, &offer, world.fetch_dir("into"), |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(got).unwrap(), text);
    world.server.shutdown().await.unwrap();

    let key = offer.key.as_bytes().to_vec();
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("the marker", b"SOTTO-PLAINTEXT-MARKER".to_vec()),
        ("a plaintext window", text.as_bytes()[1000..1032].to_vec()),
        ("the file name", b"secret-plans".to_vec()),
        ("the media type", b"text/plain".to_vec()),
        ("the key", key.clone()),
        ("the key in base64url", encode_b64(&key).into_bytes()),
        ("the digest", offer.digest.to_vec()),
        (
            "the upload token",
            state.upload_token.as_str().as_bytes().to_vec(),
        ),
    ];
    let files = files_under(world.data.path());
    assert!(files.iter().any(|f| f.ends_with("signaling.sqlite3")));
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                file.display()
            );
        }
    }
}
