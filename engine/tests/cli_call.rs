//! `sotto answer` and `sotto call` as two real processes against a real signaling server:
//! the caller plays a reference speech file, the answerer records it, both print a call
//! summary JSON line and exit 0. Also: a clear error without an identity or device.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sotto_signaling::server::{Config, start};

fn sotto(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sotto"));
    cmd.env_remove("SOTTO_DATA_DIR")
        .env_remove("SOTTO_SERVER")
        .arg("--data-dir")
        .arg(data);
    cmd
}

fn new_identity(data: &Path) -> String {
    let out = sotto(data).args(["id", "new"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = sotto(data).args(["id", "show", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    json["id"].as_str().unwrap().to_owned()
}

fn speech() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/data/speech-en-us-3.wav")
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
                    .arg(speech())
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
    let stderr = String::from_utf8_lossy(&caller.stderr);
    assert!(
        stderr.contains("Ringing") && stderr.contains("Connected"),
        "{stderr}"
    );

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
