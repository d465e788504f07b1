//! Three engines in a group call through the SFU (signaling and SFU in-process, WebRTC on
//! loopback), end-to-end encrypted from their MLS group: each hears the other two, and each
//! recording matches what its speaker sent.
#![allow(clippy::unwrap_used)]

use sotto_examples::group_demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_hears_everyone_else_through_the_sfu() {
    let inputs = group_demo::reference_inputs();
    let out = tempfile::tempdir().unwrap();
    let heard = group_demo::run(&inputs, out.path()).await.unwrap();
    assert_eq!(heard.len(), 3);
    // The SFU picked a dominant speaker from the audio-level extension alone.
    let dominant = heard[0]
        .dominant_speaker
        .clone()
        .expect("a dominant speaker");
    assert!(heard.iter().any(|h| h.identity == dominant), "{dominant}");
    for participant in &heard {
        let line = participant.to_json();
        println!("{line}");
        assert!(participant.summary.connected, "{line}");
        assert_eq!(participant.summary.received.len(), 2, "{line}");
        assert_eq!(participant.correlations.len(), 2, "{line}");
        // End to end encrypted by default: keyed from the participants' MLS group.
        let e2ee = participant.summary.e2ee.clone().expect("SFrame keys");
        assert!(e2ee.opened > 300, "{line}");
        assert_eq!(e2ee.rejected, 0, "{line}");
        for (from, correlation) in &participant.correlations {
            assert_ne!(from, &participant.name);
            let correlation = correlation.unwrap();
            assert!(
                correlation >= 0.8,
                "{} hearing {from}: {correlation}: {line}",
                participant.name
            );
        }
        for stream in &participant.summary.received {
            assert!(stream.audio.packets > 300, "{line}");
            assert!(stream.recording.as_ref().unwrap().exists());
        }
    }
}
