//! `sotto room create` and `sotto room join` as two processes, with a real signaling
//! server and SFU in the test: both publish a speech file through the SFU and record each
//! other.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sotto_engine::signaling::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_signaling::server::{Config, start};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

fn sotto(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sotto"));
    cmd.env_remove("SOTTO_DATA_DIR")
        .env_remove("SOTTO_SERVER")
        .arg("--data-dir")
        .arg(data);
    cmd
}

fn speech(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/data")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_create_and_join_hear_each_other_through_the_sfu() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("sfu-secret");
    std::fs::write(&secret_file, "a secret shared by signaling and the SFU").unwrap();
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("server"));
    config.sfu_secret_file = Some(secret_file.clone());
    let server = start(config).await.unwrap();
    let url = server.ws_url();

    let sfu = sotto_sfu::driver::start("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let mut sfu_config = ClientConfig::new(&url);
    sfu_config.sfu_secret = Some(std::fs::read(&secret_file).unwrap());
    let sfu_client = SignalingClient::connect(
        sfu_config,
        Arc::new(KeyAuthenticator::new(
            ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
            None,
        )),
    )
    .await
    .unwrap();
    let (sender, events) = sfu_client.split();
    let control = tokio::spawn(sotto_sfu::control::run(
        sender,
        events,
        sfu.handle.clone(),
        sfu.signals,
    ));

    let (ada, bo) = (dir.path().join("ada"), dir.path().join("bo"));
    for data in [&ada, &bo] {
        let out = sotto(data).args(["id", "new"]).output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let (ada_rec, bo_rec) = (dir.path().join("ada-heard"), dir.path().join("bo-heard"));
    let mut creator = sotto(&ada)
        .args(["room", "create", "--server", &url, "--bind", "127.0.0.1:0"])
        .arg("--input")
        .arg(speech("speech-en-us-1.wav"))
        .arg("--record")
        .arg(&ada_rec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The creator prints how to join.
    let mut lines = BufReader::new(creator.stderr.take().unwrap()).lines();
    let join_line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("sotto room join ") {
                return rest.to_owned();
            }
        }
        panic!("the creator printed no join line");
    })
    .await
    .unwrap();
    let mut parts = join_line.split_whitespace();
    let (room, token) = (parts.next().unwrap(), parts.next().unwrap());
    let joiner = sotto(&bo)
        .args([
            "room",
            "join",
            room,
            token,
            "--server",
            &url,
            "--bind",
            "127.0.0.1:0",
        ])
        .arg("--input")
        .arg(speech("speech-en-gb-2.wav"))
        .arg("--record")
        .arg(&bo_rec)
        .output()
        .await
        .unwrap();
    let creator = creator.wait_with_output().await.unwrap();
    assert!(joiner.status.success(), "{joiner:?}");
    assert!(creator.status.success(), "{creator:?}");
    for (out, recordings) in [(&creator.stdout, &ada_rec), (&joiner.stdout, &bo_rec)] {
        let summary: serde_json::Value = serde_json::from_slice(out).unwrap();
        assert_eq!(summary["connected"], true, "{summary}");
        let received = summary["received"].as_array().unwrap();
        assert_eq!(received.len(), 1, "{summary}");
        assert!(received[0]["packets"].as_u64().unwrap() > 100, "{summary}");
        let files: Vec<_> = std::fs::read_dir(recordings).unwrap().collect();
        assert_eq!(files.len(), 1);
    }
    control.abort();
    sfu.task.abort();
    server.shutdown().await.unwrap();
}
