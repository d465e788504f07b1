//! The `sotto-sfu` binary against a real signaling server: it registers with the secret,
//! serves /health and /metrics, group rooms get it as their SFU, and with --key-file a
//! restarted SFU comes back as the same identity (so its rooms stay its own).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sotto_signaling::client::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_signaling::server::{Config, start};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_sfu(url: &str, secret: &std::path::Path, key: &std::path::Path, http: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sotto-sfu"))
        .args(["--listen-udp", "127.0.0.1:0", "--signaling", url, "--http"])
        .arg(format!("127.0.0.1:{http}"))
        .arg("--secret-file")
        .arg(secret)
        .arg("--key-file")
        .arg(key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Creates a group room, retrying while the SFU is still registering.
async fn group_room_sfu(client: &SignalingClient) -> String {
    for _ in 0..100 {
        match client.create_group_room(None).await {
            Ok(invite) => {
                client.leave_room(&invite.room_id).await.unwrap();
                return invite.sfu.unwrap().to_string();
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("no SFU registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_registers_serves_metrics_and_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a secret for the binary test\n").unwrap();
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("db"));
    config.sfu_secret_file = Some(secret.clone());
    let server = start(config).await.unwrap();
    let url = server.ws_url();
    let alice = SignalingClient::connect(
        ClientConfig::new(&url),
        Arc::new(KeyAuthenticator::new(
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
            None,
        )),
    )
    .await
    .unwrap();

    let key = dir.path().join("sfu.key");
    let http = free_port();
    let mut sfu = spawn_sfu(&url, &secret, &key, http);
    let first = group_room_sfu(&alice).await;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(http_get(http, "/health").await.unwrap().trim(), "ok");
    let metrics = http_get(http, "/metrics").await.unwrap();
    assert!(metrics.contains("sotto_sfu_forwarded_total"), "{metrics}");
    assert!(!metrics.contains("127.0.0.1"), "no addresses in metrics");

    sfu.kill().unwrap();
    sfu.wait().unwrap();
    // Until the server notices, the old registration may still be assigned; either way
    // the identity must come back the same.
    let mut sfu = spawn_sfu(&url, &secret, &key, free_port());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = group_room_sfu(&alice).await;
    assert_eq!(first, second, "the restarted SFU is the same identity");
    sfu.kill().unwrap();
    sfu.wait().unwrap();
    server.shutdown().await.unwrap();
}
