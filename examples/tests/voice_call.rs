//! End to end: a real signaling server, two engines, a WebRTC call over loopback. A
//! reference speech file goes in on one side; what comes out on the other, aligned by
//! cross-correlation, must correlate with it and keep its duration.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sotto_engine::call::Side;
use sotto_examples::voice_demo;
use sotto_signaling::protocol::HangupReason;

fn reference(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/data")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_crosses_a_loopback_call_intact() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("received.wav");
    let call = voice_demo::run(
        &reference("speech-en-us-1.wav"),
        &output,
        Default::default(),
        None,
    )
    .await
    .unwrap();
    let line = call.to_json();
    println!("{line}");

    // The caller's input ran out and it hung up normally; the callee heard that.
    assert_eq!(call.caller.end.by, Side::Local);
    assert_eq!(call.caller.end.reason, HangupReason::Normal);
    assert_eq!(call.callee.end.by, Side::Remote);
    assert!(call.caller.sent.packets > 100, "{line}");
    assert!(call.callee.received.packets > 100, "{line}");
    // End-to-end encrypted: every frame Bob played was SFrame opened under the keys of the
    // MLS conversation, none refused.
    let e2ee = call
        .callee
        .e2ee
        .clone()
        .expect("the call is end-to-end encrypted");
    assert!(e2ee.opened > 100, "{line}");
    assert_eq!(e2ee.rejected, 0, "{line}");

    // Segmental: one frame a loaded machine made the jitter buffer stretch shifts the rest
    // of the recording by 20 ms, which drags one global correlation down to about 0.5 (seen
    // in CI) though every word arrived.
    let correlation = call
        .segmental_correlation
        .expect("the recording aligns with the input");
    assert!(correlation >= 0.8, "correlation {correlation}: {line}");
    let sent = call.sent_speech_s.unwrap();
    let received = call.received_speech_s.unwrap();
    let ratio = received / sent;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "speech lasted {sent} s sent and {received} s received: {line}"
    );
    let delay = call.mouth_to_ear_ms.unwrap();
    assert!(delay > 0.0, "{line}");
}
