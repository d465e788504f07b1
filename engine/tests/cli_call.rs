//! `sotto answer` and `sotto call` as two real processes against a real signaling server:
//! the caller plays a reference speech file, the answerer records it, both print a call
//! summary JSON line and exit 0. Also: a clear error without an identity or device; and
//! `sotto room create` / `sotto room join` through a real SFU started in the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sotto_engine::signaling::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_engine::video::code::FrameCode;
use sotto_engine::video::y4m::Y4mSource;
use sotto_engine::video::{FrameTime, VideoSource as _};
use sotto_signaling::server::{Config, start};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use common::{new_identity, sotto};

fn speech(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/data")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_and_call_commands_carry_a_file_across() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("server"),
    ))
    .await
    .unwrap();
    let url = server.ws_url();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    new_identity(&alice);
    let bob_id = new_identity(&bob);
    let heard = dir.path().join("heard.wav");
    // A message first: the two then share an MLS conversation, and the call's media is
    // end-to-end encrypted with SFrame keyed from it. (Bob connects once to publish key
    // packages.)
    let first = sotto(&bob)
        .args(["inbox", "--server", &url])
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let sent = sotto(&alice)
        .args(["send", "--server", &url, &bob_id, "calling you now"])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    let inbox = sotto(&bob)
        .args(["inbox", "--server", &url])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&inbox.stdout).contains("calling you now"),
        "{inbox:?}"
    );

    let answer = sotto(&bob)
        .args([
            "answer",
            "--server",
            &url,
            "--input",
            "silence",
            "--bind",
            "127.0.0.1:0",
        ])
        .args(["--wait", "60s", "--output"])
        .arg(&heard)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The answerer is listening once its signaling connection is up; calling before that
    // only fails the call (peer offline), so retry a few times.
    let mut caller = None;
    for _ in 0..50 {
        let out = tokio::task::spawn_blocking({
            let (alice, url, bob_id) = (alice.clone(), url.clone(), bob_id.clone());
            move || {
                sotto(&alice)
                    .args(["call", &bob_id, "--server", &url, "--output", "null"])
                    .args(["--bind", "127.0.0.1:0", "--duration", "30s", "--input"])
                    .arg(speech("speech-en-us-3.wav"))
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        if out.status.success() {
            caller = Some(out);
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("could not be reached"), "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let caller = caller.expect("the call connects once the answerer listens");
    let answer = tokio::task::spawn_blocking(move || answer.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(answer.status.success(), "{answer:?}");

    let caller_summary: serde_json::Value = serde_json::from_slice(&caller.stdout).unwrap();
    let answer_summary: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(caller_summary["role"], "caller");
    assert_eq!(caller_summary["connected"], true);
    assert_eq!(caller_summary["end"]["detail"], "the input ended");
    assert_eq!(answer_summary["role"], "callee");
    assert_eq!(answer_summary["end"]["by"], "remote");
    assert!(answer_summary["received"]["packets"].as_u64().unwrap() > 100);
    assert!(caller_summary["e2ee"]["sealed"].as_u64().unwrap() > 100);
    assert!(answer_summary["e2ee"]["opened"].as_u64().unwrap() > 100);
    assert_eq!(answer_summary["e2ee"]["rejected"], 0);
    let stderr = String::from_utf8_lossy(&caller.stderr);
    assert!(
        stderr.contains("Ringing") && stderr.contains("Connected"),
        "{stderr}"
    );
    assert!(stderr.contains("end-to-end encrypted"), "{stderr}");

    let recorded = hound::WavReader::open(&heard).unwrap();
    assert_eq!(recorded.spec().sample_rate, 48_000);
    assert!(
        recorded.duration() > 48_000,
        "a recording of more than a second"
    );
    server.shutdown().await.unwrap();
}

#[test]
fn call_without_identity_or_device_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = sotto(dir.path())
        .args(["call", "AAAA", "--input", "silence", "--output", "null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sotto id new"));

    // A bad input spec names the accepted forms.
    new_identity(dir.path());
    let out = sotto(dir.path())
        .args(["call", "AAAA", "--input", "mic.mp3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tone:HZ") && err.contains(".wav"), "{err}");
}

/// `sotto` as a tokio child process (for reading its stderr while it runs).
fn tokio_sotto(data: &Path) -> tokio::process::Command {
    tokio::process::Command::from(sotto(data))
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
    new_identity(&ada);
    let bo_id = new_identity(&bo);
    // A group conversation keys the call: the SFU forwards SFrame it cannot read.
    let run = |data: &Path, args: &[&str]| {
        let out = sotto(data)
            .env("SOTTO_SERVER", &url)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    run(&bo, &["inbox"]);
    run(&ada, &["group", "new", "Team", &bo_id]);
    run(&bo, &["inbox"]);
    let (ada_rec, bo_rec) = (dir.path().join("ada-heard"), dir.path().join("bo-heard"));
    let mut creator = tokio_sotto(&ada)
        .args(["room", "create", "--server", &url, "--bind", "127.0.0.1:0"])
        .args(["--group", "Team", "--video", "test-pattern:320x180"])
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
    let joiner = tokio_sotto(&bo)
        .args([
            "room",
            "join",
            room,
            token,
            "--server",
            &url,
            "--bind",
            "127.0.0.1:0",
            "--group",
            "Team",
            "--video",
            "test-pattern:320x180@15",
            "--video-layers",
            "2",
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
    // Each sees the other's test pattern (the joiner sends 15 fps in two layers), the
    // frame numbers recorded in order.
    for (out, recordings, sent_layers, fps) in [
        (&creator.stdout, &ada_rec, 3, 15.0),
        (&joiner.stdout, &bo_rec, 2, 30.0),
    ] {
        let summary: serde_json::Value = serde_json::from_slice(out).unwrap();
        assert_eq!(summary["connected"], true, "{summary}");
        let received = summary["received"].as_array().unwrap();
        assert_eq!(received.len(), 1, "{summary}");
        assert!(received[0]["packets"].as_u64().unwrap() > 100, "{summary}");
        assert!(
            summary["e2ee"]["opened"].as_u64().unwrap() > 100,
            "{summary}"
        );
        assert_eq!(summary["e2ee"]["rejected"], 0, "{summary}");
        let layers = summary["video_sent"]["layers"].as_array().unwrap();
        assert_eq!(layers.len(), sent_layers, "{summary}");
        let video = &received[0]["video"];
        assert!(video["frames_decoded"].as_u64().unwrap() > 40, "{summary}");
        assert!(video["fps"].as_f64().unwrap() > fps * 0.8, "{summary}");
        let mut files: Vec<_> = std::fs::read_dir(recordings)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].extension().unwrap(), "wav");
        assert_eq!(files[1].extension().unwrap(), "y4m");
        let mut recorded = Y4mSource::open(&files[1], false).unwrap();
        let (width, height) = recorded.size();
        let mut codes = Vec::new();
        for index in 0.. {
            let Some(picture) = recorded.read(FrameTime { index, wall_ms: 0 }).unwrap() else {
                break;
            };
            codes.extend(FrameCode::read(&picture.y, width, height).map(|c| c.frame));
        }
        assert!(codes.len() > 40, "{} codes", codes.len());
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
    }
    control.abort();
    sfu.task.abort();
    server.shutdown().await.unwrap();
}
