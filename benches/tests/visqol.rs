//! ViSQOL (speech mode, through `visqol-rs` 0.1.3) as the bench uses it: on our reference
//! speech it ranks recordings by how much of the speech they lost, it finds the speech
//! where the cross-correlation says it starts, and a recording of silence is an error or a
//! floor score, never a panic. `google_conformance` checks the crate against Google's own
//! value for speech mode; it needs Google's test files, which we do not ship.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sotto_bench::quality::read_wav;
use sotto_bench::visqol::{mos_lqo_files, speech_mos};

/// The first 8 s of a reference file (48 kHz).
fn speech() -> Vec<i16> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/speech-en-us-1.wav");
    let mut speech = read_wav(&path).unwrap();
    speech.truncate(8 * 48_000);
    speech
}

/// `speech` with every `every`-th 20 ms frame silenced (a receiver without concealment).
fn with_frames_lost(speech: &[i16], every: usize) -> Vec<i16> {
    let mut out = speech.to_vec();
    for (i, frame) in out.chunks_mut(960).enumerate() {
        if i % every == every - 1 {
            frame.fill(0);
        }
    }
    out
}

#[test]
fn recordings_rank_by_how_much_speech_they_lost() {
    let speech = speech();
    let dir = tempfile::tempdir().unwrap();
    let score = |recording: &[i16]| speech_mos(&speech, recording, 0, dir.path()).unwrap();
    let perfect = score(&speech);
    let tenth = score(&with_frames_lost(&speech, 10));
    let quarter = score(&with_frames_lost(&speech, 4));
    assert!(perfect > 4.0, "the reference against itself: {perfect}");
    assert!(perfect > tenth + 0.3, "{perfect} vs {tenth}");
    assert!(tenth > quarter + 0.3, "{tenth} vs {quarter}");
    assert!(quarter >= 1.0, "{quarter}");
}

#[test]
fn the_speech_is_found_at_the_lag() {
    let speech = speech();
    let dir = tempfile::tempdir().unwrap();
    let lag = 4_321;
    let mut recording = vec![0i16; lag];
    recording.extend_from_slice(&speech);
    let at_lag = speech_mos(&speech, &recording, lag, dir.path()).unwrap();
    let aligned = speech_mos(&speech, &speech, 0, dir.path()).unwrap();
    assert!((at_lag - aligned).abs() < 0.01, "{at_lag} vs {aligned}");
    // A recording that ends early is padded with silence, not refused.
    let short = speech_mos(
        &speech,
        &recording[..lag + speech.len() / 2],
        lag,
        dir.path(),
    );
    assert!(short.unwrap() < aligned);
}

#[test]
fn silence_is_an_error_or_a_floor_score_not_a_panic() {
    let speech = speech();
    let dir = tempfile::tempdir().unwrap();
    match speech_mos(&speech, &vec![0; speech.len()], 0, dir.path()) {
        Ok(mos) => assert!(mos < 1.5, "silence scored {mos}"),
        Err(err) => assert!(err.to_string().contains("ViSQOL"), "{err:#}"),
    }
    // And a lag past the end of the recording is silence too.
    match speech_mos(&speech, &speech[..1000], 5000, dir.path()) {
        Ok(mos) => assert!(mos < 1.5, "silence scored {mos}"),
        Err(err) => assert!(err.to_string().contains("ViSQOL"), "{err:#}"),
    }
}

/// Google's conformance value for ViSQOL v3.1.0 speech mode (`conformance.h`, October 2020:
/// `kConformanceSpeechCA01Transcoded`), scored at the files' own 48 kHz as Google's test
/// does. Run with `SOTTO_VISQOL_TESTDATA=DIR cargo test -p sotto-bench --test visqol --
/// --ignored`, where DIR holds `CA01_01.wav` and `transcoded_CA01_01.wav` from Google's
/// `testdata/clean_speech`.
#[test]
#[ignore = "needs Google's ViSQOL test files: SOTTO_VISQOL_TESTDATA=DIR"]
fn google_conformance() {
    let dir = PathBuf::from(std::env::var_os("SOTTO_VISQOL_TESTDATA").unwrap());
    let mos = mos_lqo_files(
        &dir.join("CA01_01.wav"),
        &dir.join("transcoded_CA01_01.wav"),
    )
    .unwrap();
    assert!((mos - 2.369_115_018_822_126).abs() < 1e-4, "{mos}");
}
