//! Calls that go wrong: an unknown peer, a peer that hangs up or declines during setup,
//! a malformed SDP, an offer with no codec we support. Each ends the call with a clear
//! reason and nothing panics. The misbehaving peer is a raw signaling client driven by the
//! test, against a real signaling server on loopback.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use sotto_engine::audio::{InputSpec, OutputSpec};
use sotto_engine::call::{CallConfig, CallSummary, IceConfig, Phone, Side};
use sotto_engine::{CallSignal, ClientConfig, Event, Identity, SignalingClient};
use sotto_signaling::protocol::{Answer, HangupReason, Offer};
use sotto_signaling::server::{Config, RunningServer, start};

/// Failure guard for waits, never a speed assertion.
const WAIT: Duration = Duration::from_secs(20);

async fn server(dir: &tempfile::TempDir) -> RunningServer {
    start(Config::new("127.0.0.1:0".parse().unwrap(), dir.path()))
        .await
        .unwrap()
}

async fn client(server: &RunningServer, name: &str) -> SignalingClient {
    let identity = Arc::new(Identity::generate(Some(name.into())).unwrap());
    SignalingClient::connect(ClientConfig::new(server.ws_url()), identity)
        .await
        .unwrap()
}

fn quiet_config() -> CallConfig {
    CallConfig {
        input: InputSpec::Silence,
        output: OutputSpec::Null,
        ice: IceConfig::loopback(),
        ring_timeout: Duration::from_secs(15),
        ..CallConfig::default()
    }
}

async fn finished(handle: sotto_engine::call::CallHandle) -> CallSummary {
    tokio::time::timeout(WAIT, handle.finished())
        .await
        .expect("the call ends within the guard time")
        .unwrap()
}

/// The next call signal the raw client receives.
async fn next_signal(client: &mut SignalingClient) -> CallSignal {
    loop {
        match client.next_event_within(WAIT).await.expect("a signal") {
            Event::Call { signal, .. } => return signal,
            _ => continue,
        }
    }
}

/// A well-formed offer whose only audio codec is PCMU.
const PCMU_ONLY_SDP: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:h0Bq\r\n\
a=ice-pwd:V6n1WnX0Ck1RdZbTh7cj6p0X\r\n\
a=fingerprint:sha-256 9D:5A:2C:63:76:1B:0C:2F:4D:B6:5B:29:2C:27:6B:0C:8F:61:2A:4B:7E:1A:06:E3:1D:8E:3A:04:0F:85:37:8D\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:0 PCMU/8000\r\n";

#[tokio::test]
async fn a_call_to_an_unknown_identity_ends_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let alice = Phone::new(client(&server, "Alice").await);
    let nobody = Identity::generate(None).unwrap().public();
    let summary = finished(alice.call(nobody, quiet_config()).unwrap()).await;
    assert!(!summary.connected);
    assert_eq!(summary.end.by, Side::Local);
    assert_eq!(summary.end.reason, HangupReason::Failed);
    assert!(
        summary.end.detail.contains("could not be reached"),
        "{:?}",
        summary.end
    );
}

#[tokio::test]
async fn the_peer_declining_or_hanging_up_during_setup_ends_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let alice = Phone::new(client(&server, "Alice").await);
    let mut bob = Phone::new(client(&server, "Bob").await);

    // Declined while ringing.
    let call = alice.call(bob.identity(), quiet_config()).unwrap();
    let incoming = tokio::time::timeout(WAIT, bob.next_incoming())
        .await
        .unwrap()
        .unwrap();
    incoming.decline().await;
    let summary = finished(call).await;
    assert!(!summary.connected);
    assert_eq!(summary.end.by, Side::Remote);
    assert_eq!(summary.end.reason, HangupReason::Declined);

    // Answered, then the caller hangs up before media is up: the callee's call ends with
    // the remote hang-up as its reason.
    let call = alice.call(bob.identity(), quiet_config()).unwrap();
    let incoming = tokio::time::timeout(WAIT, bob.next_incoming())
        .await
        .unwrap()
        .unwrap();
    call.hang_up();
    let answered = incoming.answer(quiet_config()).await.unwrap();
    let caller = finished(call).await;
    let callee = finished(answered).await;
    assert_eq!(caller.end.by, Side::Local);
    assert_eq!(callee.end.by, Side::Remote);
    assert_eq!(callee.end.reason, HangupReason::Normal);
}

#[tokio::test]
async fn a_malformed_answer_ends_the_callers_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let alice = Phone::new(client(&server, "Alice").await);
    let mut mallory = client(&server, "Mallory").await;

    let call = alice.call(mallory.identity(), quiet_config()).unwrap();
    let CallSignal::Offer(offer) = next_signal(&mut mallory).await else {
        panic!("expected the offer first");
    };
    mallory
        .send_call_signal(
            alice.identity(),
            CallSignal::Answer(Answer {
                call_id: offer.call_id.clone(),
                sdp: "this is not SDP\r\nm=nonsense\r\n".into(),
                e2ee: None,
            }),
        )
        .await
        .unwrap();
    let summary = finished(call).await;
    assert!(!summary.connected);
    assert_eq!(summary.end.by, Side::Local);
    assert_eq!(summary.end.reason, HangupReason::Failed);
    assert!(
        summary.end.detail.contains("malformed SDP"),
        "{:?}",
        summary.end
    );
    // Mallory is told the call failed.
    loop {
        if let CallSignal::Hangup(hangup) = next_signal(&mut mallory).await {
            assert_eq!(hangup.call_id, offer.call_id);
            assert_eq!(hangup.reason, HangupReason::Failed);
            break;
        }
    }
}

#[tokio::test]
async fn offers_that_are_malformed_or_have_no_common_codec_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let mut bob = Phone::new(client(&server, "Bob").await);
    let mut mallory = client(&server, "Mallory").await;

    for (call_id, sdp, expected) in [
        ("garbage", "v=0\r\nthis is not SDP at all", "malformed SDP"),
        ("pcmu-only", PCMU_ONLY_SDP, "no common codec"),
    ] {
        mallory
            .send_call_signal(
                bob.identity(),
                CallSignal::Offer(Offer {
                    call_id: call_id.into(),
                    sdp: sdp.into(),
                    ice_restart: false,
                    e2ee: None,
                }),
            )
            .await
            .unwrap();
        let incoming = tokio::time::timeout(WAIT, bob.next_incoming())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(incoming.call_id, call_id);
        let summary = finished(incoming.answer(quiet_config()).await.unwrap()).await;
        assert!(!summary.connected);
        assert_eq!(summary.end.reason, HangupReason::Failed);
        assert!(
            summary.end.detail.contains(expected),
            "{call_id}: {:?}",
            summary.end
        );
        loop {
            if let CallSignal::Hangup(hangup) = next_signal(&mut mallory).await {
                assert_eq!(hangup.call_id, call_id);
                assert_eq!(hangup.reason, HangupReason::Failed);
                break;
            }
        }
    }
}
