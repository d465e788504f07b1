//! Encrypted file transfer throughput on loopback: a real signaling server in this process
//! (its blob store on disk under a temporary directory), one client that encrypts and
//! uploads a file, then fetches, authenticates and decrypts it into another directory.
//! Every byte goes through the real paths: AES-256-GCM, SHA-256, HTTP over TCP, the
//! server's temp file + fdatasync + rename, and the `.part` file + digest + rename.
//!
//! A plain timing harness, not criterion: one measurement is a whole multi-second transfer
//! of a large file, and what we report is its throughput (the median of a few runs).
//!
//! `cargo bench -p sotto-engine --bench file_transfer` (always a release build);
//! `SOTTO_BENCH_FILE_MB` (default 256) and `SOTTO_BENCH_RUNS` (default 3) change the
//! size and the number of runs; `SOTTO_BENCH_DIR` puts the files and the server's data
//! dir somewhere else than the system's temporary directory (e.g. `/dev/shm`, to take the
//! disk out of the measurement). Figures go to BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use sotto_engine::files::{BlobClient, create_upload, fetch, upload};
use sotto_engine::{ClientConfig, Identity, SignalingClient};
use sotto_signaling::server::{Config, start};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) only
    // checks that the harness builds and runs on a tiny file.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mb = if quick {
        1
    } else {
        env_or("SOTTO_BENCH_FILE_MB", 256)
    };
    let runs = if quick {
        1
    } else {
        env_or("SOTTO_BENCH_RUNS", 3).max(1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(mb * 1024 * 1024 + 12_345, runs));
}

async fn run(size: u64, runs: u64) {
    let work = match std::env::var_os("SOTTO_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let server_dir = work.path().join("server");
    let server = start(Config::new("127.0.0.1:0".parse().unwrap(), &server_dir))
        .await
        .unwrap();
    let client = SignalingClient::connect(
        ClientConfig::new(server.ws_url()),
        Arc::new(Identity::generate(Some("bench".into())).unwrap()),
    )
    .await
    .unwrap();
    let blobs = BlobClient::for_signaling_url(&server.ws_url()).unwrap();

    let source = work.path().join("source.bin");
    {
        let mut file = std::fs::File::create(&source).unwrap();
        let mut rng = rand::rng();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            file.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        file.sync_all().unwrap();
    }

    let (mut ups, mut downs, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let t0 = Instant::now();
        let mut state = create_upload(&client, &source, None).await.unwrap();
        let offer = upload(&blobs, &mut state, |_| {}).await.unwrap();
        let up = t0.elapsed();

        let into = work.path().join(format!("fetched-{run}"));
        std::fs::create_dir(&into).unwrap();
        let t1 = Instant::now();
        let path = fetch(&blobs, &offer, &into, |_| {}).await.unwrap();
        let down = t1.elapsed();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        std::fs::remove_dir_all(&into).unwrap();

        println!(
            "run {run}: {:.1} MB in {:.2} s up ({:.0} MB/s), {:.2} s down ({:.0} MB/s)",
            size as f64 / 1e6,
            up.as_secs_f64(),
            mb_per_s(size, up),
            down.as_secs_f64(),
            mb_per_s(size, down),
        );
        ups.push(mb_per_s(size, up));
        downs.push(mb_per_s(size, down));
        both.push(mb_per_s(size, up + down));
    }
    println!(
        "{{\"bench\":\"file_transfer\",\"file_bytes\":{size},\"runs\":{runs},\"upload_mb_s\":{:.0},\"download_mb_s\":{:.0},\"round_trip_mb_s\":{:.0}}}",
        median(ups),
        median(downs),
        median(both),
    );
    client.close().await;
    server.shutdown().await.unwrap();
}
