//! The call-quality run end to end, short: 5 s of reference speech through the relay under
//! the clean and the 10 % loss scenarios, scored with PESQ (the ITU reference code, from
//! the Python that `scripts/setup.sh` makes with `benches/setup-scoring.sh`), STOI, the
//! E-model and the delay. The clean call must score better than the lossy one.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sotto_bench::chromium::ChromiumPeer;
use sotto_bench::quality::{Peer, Scoring, Tuning, read_wav, report_markdown, run_call};
use sotto_bench::scenario::Scenario;
use sotto_signaling::server::{Config, start};

/// Each test here runs whole calls (engines, two Chromium pages, or a group through the
/// SFU) and scores their audio. Beside one another on a 2-core machine they starve each
/// other's audio: CI saw Chromium's clean call score PESQ-WB 2.79 against the 3.0 it
/// asserts (it passes alone). They take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first 5 s of a reference file, written into `dir`.
fn short_input(dir: &Path) -> PathBuf {
    let speech = read_wav(&bench_dir().join("data/speech-en-us-1.wav")).unwrap();
    let input = dir.join("speech-5s.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&input, spec).unwrap();
    for sample in &speech[..5 * 48_000] {
        writer.write_sample(*sample).unwrap();
    }
    writer.finalize().unwrap();
    input
}

fn python() -> PathBuf {
    let python = bench_dir().join("../target/bench-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup.sh` (it runs benches/setup-scoring.sh)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_call_scores_better_than_a_lossy_one() {
    let _turn = TURN.lock().await;
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let input = short_input(dir.path());
    let server = start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("server"),
    ))
    .await
    .unwrap();
    let scoring = Scoring {
        python: Some(python),
        script: bench_dir().join("score.py"),
    };
    let mut results = Vec::new();
    for name in ["clean", "loss-10"] {
        let scenario = Scenario::load(&bench_dir().join(format!("scenarios/{name}.toml"))).unwrap();
        results.push(
            run_call(
                &server,
                &scenario,
                1,
                &input,
                dir.path(),
                &scoring,
                &Tuning::default(),
            )
            .await
            .unwrap(),
        );
    }
    server.shutdown().await.unwrap();
    let (clean, lossy) = (&results[0], &results[1]);
    let pesq = |r: &sotto_bench::quality::CallResult| r.pesq_wb.expect("a PESQ-WB score");
    assert!(pesq(clean) > pesq(lossy), "{clean:?}\n{lossy:?}");
    assert!(pesq(clean) > 3.0, "{clean:?}");
    // Intelligibility: RED recovers nearly all of 10 % random loss and the input starts
    // only once media flows both ways, so both score about 0.99 and either may be ahead
    // by a thousandth (seen: clean 0.990, loss-10 0.991); more than 0.01 would be news.
    assert!(
        clean.stoi.unwrap() + 0.01 >= lossy.stoi.unwrap(),
        "{clean:?}\n{lossy:?}"
    );
    eprintln!(
        "ViSQOL: clean {:?}, loss-10 {:?}",
        clean.visqol, lossy.visqol
    );
    assert!(clean.visqol.unwrap() > 3.0, "{clean:?}");
    assert!(lossy.visqol.is_some(), "{lossy:?}");
    assert!(clean.mos.unwrap() > lossy.mos.unwrap());
    assert!(clean.mouth_to_ear_ms.unwrap() > 0.0);
    // The callee felt the loss (frames missing from their own packets) ...
    let got = &lossy.received;
    assert!(
        (got.lost + got.red_recovered) as f64 > 0.04 * (got.packets + got.lost) as f64,
        "{lossy:?}"
    );
    // ... its reports of it reached the caller (in its sender reports, which rtc's own
    // statistics ignore), and the caller sent redundancy (RED) for it, which brought most
    // frames back. The clean call's reports said nothing was lost, and it ends without
    // redundancy (its starting copies stop RED_START_HOLD after the first report).
    assert!(
        lossy
            .caller_timeline
            .iter()
            .any(|p| p.reported_loss_percent.is_some_and(|l| l > 0.0)),
        "{lossy:?}"
    );
    let last_depth =
        |r: &sotto_bench::quality::CallResult| r.caller_timeline.last().map_or(0, |p| p.red_depth);
    assert!(last_depth(lossy) > 0, "{lossy:?}");
    assert!(
        clean
            .caller_timeline
            .iter()
            .all(|p| p.reported_loss_percent.is_none_or(|l| l == 0.0)),
        "{clean:?}"
    );
    assert_eq!(last_depth(clean), 0, "{clean:?}");
    assert!(got.red_recovered > got.lost, "{lossy:?}");
    assert!(lossy.relay.forward.lost > 10, "{:?}", lossy.relay);
    let report = report_markdown(&results);
    assert!(report.contains("| clean | sotto | 1 |") && report.contains("| loss-10 | sotto | 1 |"));
    // One record per scenario and metric.
    assert!(clean.records().iter().any(|r| r.metric == "pesq_wb"));
}

/// The Chromium peer (`--peer chromium --video`): two headless Chromium pages in a
/// network namespace, through the same relay, scored the same way, audio and video. Needs root, chromium, Node.js
/// and `npm ci` in examples/tests/browser (`bash scripts/setup.sh`);
/// `SOTTO_SKIP_BROWSER=1` skips it, as it does the browser interop test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_pages_call_through_the_relay_and_are_scored() {
    let _turn = TURN.lock().await;
    if std::env::var_os("SOTTO_SKIP_BROWSER").is_some() {
        eprintln!("SOTTO_SKIP_BROWSER is set: not running Chromium");
        return;
    }
    let scoring = Scoring {
        python: Some(python()),
        script: bench_dir().join("score.py"),
    };
    let dir = tempfile::tempdir().unwrap();
    let input = short_input(dir.path());
    let chromium = std::env::var_os("SOTTO_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let peer = ChromiumPeer::new(chromium, bench_dir().join("chromium/pair.mjs"), true).unwrap();
    let mut results = Vec::new();
    for name in ["clean", "loss-10"] {
        let scenario = Scenario::load(&bench_dir().join(format!("scenarios/{name}.toml"))).unwrap();
        results.push(
            peer.run_call(&scenario, 1, &input, dir.path(), &scoring)
                .await
                .unwrap(),
        );
    }
    let (clean, lossy) = (&results[0], &results[1]);
    assert!(clean.peer == Peer::Chromium && lossy.peer == Peer::Chromium);
    // Every datagram went through the relay, which dropped about a tenth under loss-10,
    // and Chromium's own statistics saw it.
    assert!(clean.relay.forward.forwarded > 100, "{:?}", clean.relay);
    assert_eq!(clean.relay.forward.lost, 0, "{:?}", clean.relay);
    assert!(lossy.relay.forward.lost > 10, "{:?}", lossy.relay);
    assert!(lossy.loss_percent > 4.0, "{lossy:?}");
    // What the callee page recorded carries the speech, better without loss.
    let pesq = |r: &sotto_bench::quality::CallResult| r.pesq_wb.expect("a PESQ-WB score");
    assert!(pesq(clean) > 3.0, "{clean:?}");
    assert!(pesq(clean) > pesq(lossy), "{clean:?}\n{lossy:?}");
    assert!(clean.mouth_to_ear_ms.unwrap() > 0.0, "{clean:?}");
    // The page read the frame code of the pictures Chrome decoded, and the ones that came
    // back whole were scored against their sources.
    let video = clean.video.as_ref().expect("video results");
    assert!(video.received.coded_frames > 100, "{video:?}");
    assert!(video.received.fps > 20.0, "{video:?}");
    assert_eq!(video.received.out_of_order, 0, "{video:?}");
    assert!(video.quality.scored > 5, "{video:?}");
    assert!(video.quality.psnr.is_some_and(|p| p > 30.0), "{video:?}");
    assert!(video.sent_kbps > 100.0, "{video:?}");
}

/// Group mode (`--group 3`): one engine speaks through the SFU to two listeners, every leg
/// through the relay; each listener's recording is scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_through_the_sfu_and_the_relay_is_scored_per_listener() {
    let _turn = TURN.lock().await;
    let scoring = Scoring {
        python: Some(python()),
        script: bench_dir().join("score.py"),
    };
    let dir = tempfile::tempdir().unwrap();
    let input = short_input(dir.path());
    // Three participants, seed 1, the default tuning.
    let group_call = async |scenario: &Scenario| {
        sotto_bench::group::run_group_call(
            scenario,
            1,
            3,
            &input,
            dir.path(),
            &scoring,
            &Tuning::default(),
        )
        .await
        .unwrap()
    };
    let scenario = Scenario::load(&bench_dir().join("scenarios/clean.toml")).unwrap();
    let results = group_call(&scenario).await;
    assert_eq!(results.len(), 2, "one result per listener");
    for result in &results {
        assert_eq!(result.scenario, "clean/group3");
        assert!(result.pesq_wb.unwrap() > 3.0, "{result:?}");
        assert!(result.received.packets > 150, "{result:?}");
        // No mouth-to-ear delay is claimed for group streams.
        assert_eq!(result.mouth_to_ear_ms, None);
    }
    // Three participants' legs went through the relay: the speaker's audio once up, and
    // down twice.
    let relay = &results[0].relay;
    assert!(relay.forward.received > 250, "{relay:?}");
    assert!(relay.backward.forwarded > 2 * 200, "{relay:?}");
    // Charts of a run with nothing to draw a line through (one scenario, no delay) are
    // skipped, not drawn over an empty range.
    let charts = sotto_bench::charts::draw_all(dir.path(), &[scenario], &results).unwrap();
    assert!(charts.is_empty(), "{charts:?}");
    // A clean uplink: the SFU reports no loss, and the speaker's FEC expects none.
    assert_eq!(results[0].fec_loss_percent, 0, "{:?}", results[0]);

    // Under 10 % loss per leg the SFU's reports about the speaker's uplink reach its rate
    // controller, which sizes the encoder's in-band FEC for them.
    let lossy = Scenario::load(&bench_dir().join("scenarios/loss-10.toml")).unwrap();
    let results = group_call(&lossy).await;
    assert!(results[0].relay.forward.lost > 10, "{:?}", results[0].relay);
    assert!(results[0].fec_loss_percent > 0, "{:?}", results[0]);
}
