//! Audio input and output through the public interface: WAV files in every layout hound
//! reads, rate and channel conversion to 48 kHz mono, bad files, the synthetic sources,
//! and the command-line specs.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sotto_engine::audio::synth::ToneSource;
use sotto_engine::audio::wav::{WavSink, WavSource};
use sotto_engine::audio::{
    AudioError, AudioSink, AudioSource, InputSpec, OutputSpec, SAMPLE_RATE, open_sink, open_source,
};

/// A sine at `hz`, -6 dBFS, as f64 in -1..1, `frames` long at `rate`.
fn sine(rate: u32, hz: f64, frames: usize) -> Vec<f64> {
    (0..frames)
        .map(|n| 0.5 * (std::f64::consts::TAU * hz * n as f64 / f64::from(rate)).sin())
        .collect()
}

/// Writes `mono` to every channel of a WAV file in the given layout.
fn write_wav(
    path: &Path,
    rate: u32,
    channels: u16,
    format: hound::SampleFormat,
    bits: u16,
    mono: &[f64],
) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &x in mono {
        for _ in 0..channels {
            match format {
                hound::SampleFormat::Float => w.write_sample(x as f32).unwrap(),
                hound::SampleFormat::Int => {
                    let full = ((1i64 << (bits - 1)) - 1) as f64;
                    w.write_sample((x * full).round() as i32).unwrap()
                }
            }
        }
    }
    w.finalize().unwrap();
}

/// Reads a source to its end one sample at a time (so zero padding of a last short frame
/// cannot be mistaken for audio).
fn read_all(source: &mut dyn AudioSource) -> Result<Vec<i16>, AudioError> {
    let mut out = Vec::new();
    let mut one = [0i16; 1];
    while source.read(&mut one)? {
        out.push(one[0]);
    }
    Ok(out)
}

/// Frequency from the first and last upward zero crossings (interpolated) over the middle
/// of the signal (the edges are skipped).
fn frequency(samples: &[i16]) -> f64 {
    let middle = &samples[samples.len() / 10..samples.len() * 9 / 10];
    let crossings: Vec<f64> = middle
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
        .map(|(i, w)| {
            let (a, b) = (f64::from(w[0]), f64::from(w[1]));
            i as f64 + a / (a - b)
        })
        .collect();
    assert!(crossings.len() > 2, "no tone");
    let span = crossings[crossings.len() - 1] - crossings[0];
    (crossings.len() - 1) as f64 * f64::from(SAMPLE_RATE) / span
}

fn wav_error_path(result: Result<Vec<i16>, AudioError>) -> (PathBuf, String) {
    match result {
        Err(AudioError::Wav { path, message }) => (path, message),
        other => panic!("expected a WAV error, got {other:?}"),
    }
}

fn open_and_read(path: &Path) -> Result<Vec<i16>, AudioError> {
    let mut source = WavSource::open(path)?;
    read_all(&mut source)
}

#[test]
fn wav_round_trip_is_sample_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tone.wav");
    let mut tone = ToneSource::new(440.0);
    let mut written = Vec::new();
    {
        let mut sink = WavSink::create(&path).unwrap();
        let mut frame = [0i16; 960];
        for _ in 0..50 {
            tone.read(&mut frame).unwrap();
            sink.write(&frame).unwrap();
            written.extend_from_slice(&frame);
        }
        sink.finish().unwrap();
        sink.finish().unwrap();
        assert!(matches!(sink.write(&frame), Err(AudioError::Wav { .. })));
    }
    assert_eq!(written.len(), SAMPLE_RATE as usize);

    let mut source = WavSource::open(&path).unwrap();
    assert_eq!(source.len_samples(), 48_000);
    assert_eq!(source.duration(), std::time::Duration::from_secs(1));
    let mut read = Vec::new();
    let mut frame = [0i16; 960];
    for _ in 0..50 {
        assert!(source.read(&mut frame).unwrap());
        read.extend_from_slice(&frame);
    }
    assert_eq!(read, written);
    frame.fill(7);
    assert!(!source.read(&mut frame).unwrap(), "the file has ended");
    assert!(
        frame.iter().all(|&s| s == 0),
        "an ended source gives silence"
    );
    assert!(!source.read(&mut frame).unwrap());
}

#[test]
fn an_unfinished_sink_is_finalized_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.wav");
    let mut sink = open_sink(&OutputSpec::Wav(path.clone())).unwrap();
    sink.write(&[1000; 4800]).unwrap();
    drop(sink);
    let back = open_and_read(&path).unwrap();
    assert_eq!(back, vec![1000; 4800]);
}

#[test]
fn a_44k1_stereo_file_comes_out_48k_mono_with_its_duration_and_pitch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cd.wav");
    write_wav(
        &path,
        44_100,
        2,
        hound::SampleFormat::Int,
        16,
        &sine(44_100, 1000.0, 44_100),
    );
    let mut source = open_source(&InputSpec::Wav(path)).unwrap();
    assert!(!source.is_realtime());
    let out = read_all(source.as_mut()).unwrap();
    assert!(out.len().abs_diff(48_000) <= 1, "{} samples", out.len());
    let hz = frequency(&out);
    assert!((hz - 1000.0).abs() < 0.5, "{hz} Hz");
    let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!((16_000..=16_800).contains(&peak), "level kept: peak {peak}");
}

#[test]
fn a_16k_file_comes_out_48k_with_its_duration_and_pitch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wideband.wav");
    // 0.75 s plus an odd sample, so the length is not a whole number of blocks.
    write_wav(
        &path,
        16_000,
        1,
        hound::SampleFormat::Int,
        16,
        &sine(16_000, 440.0, 12_001),
    );
    let out = open_and_read(&path).unwrap();
    assert!(out.len().abs_diff(36_003) <= 1, "{} samples", out.len());
    let hz = frequency(&out);
    assert!((hz - 440.0).abs() < 0.5, "{hz} Hz");
}

#[test]
fn every_sample_format_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let reference = sine(48_000, 440.0, 4_800);
    let expected: Vec<i16> = reference
        .iter()
        .map(|&x| (x * 32_768.0).round() as i16)
        .collect();
    for (format, bits, channels, tolerance) in [
        (hound::SampleFormat::Int, 8, 1, 300),
        (hound::SampleFormat::Int, 16, 2, 2),
        (hound::SampleFormat::Int, 24, 1, 2),
        (hound::SampleFormat::Int, 32, 6, 2),
        (hound::SampleFormat::Float, 32, 3, 2),
    ] {
        let path = dir.path().join(format!("{format:?}{bits}x{channels}.wav"));
        write_wav(&path, 48_000, channels, format, bits, &reference);
        let out = open_and_read(&path).unwrap();
        assert_eq!(out.len(), expected.len(), "{format:?} {bits}");
        let worst = out
            .iter()
            .zip(&expected)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max()
            .unwrap();
        assert!(
            worst <= tolerance,
            "{format:?} {bits}-bit x{channels}: off by {worst}"
        );
    }
}

#[test]
fn channels_are_averaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lr.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..100 {
        w.write_sample(8000i16).unwrap();
        w.write_sample(-2000i16).unwrap();
    }
    w.finalize().unwrap();
    assert_eq!(open_and_read(&path).unwrap(), vec![3000; 100]);
}

#[test]
fn missing_truncated_and_garbage_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.wav");
    let (path, message) = wav_error_path(open_and_read(&missing));
    assert_eq!(path, missing);
    assert!(message.contains("cannot open"), "{message}");

    let good = dir.path().join("good.wav");
    write_wav(
        &good,
        44_100,
        2,
        hound::SampleFormat::Int,
        16,
        &sine(44_100, 440.0, 4_410),
    );
    let bytes = std::fs::read(&good).unwrap();
    for cut in [0, 4, 11, 30, 43, 44, 45, 1000, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{cut}.wav"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (err_path, message) = wav_error_path(open_and_read(&path));
        assert_eq!(err_path, path);
        if cut > 44 {
            assert!(message.contains("truncated"), "cut at {cut}: {message}");
        }
    }

    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"this is not a WAV file, it is a text file").unwrap();
    let (_, message) = wav_error_path(open_and_read(&garbage));
    assert!(message.contains("not a readable WAV"), "{message}");

    // A header announcing a sample rate of 0 Hz.
    let mut zero_rate = bytes.clone();
    zero_rate[24..28].copy_from_slice(&0u32.to_le_bytes());
    zero_rate[28..32].copy_from_slice(&0u32.to_le_bytes());
    let path = dir.path().join("zero_rate.wav");
    std::fs::write(&path, &zero_rate).unwrap();
    wav_error_path(open_and_read(&path));

    // Through the spec, the error names the file.
    let Err(error) = open_source(&InputSpec::Wav(garbage)) else {
        panic!("garbage opened");
    };
    assert!(error.to_string().contains("garbage.wav"), "{error}");
}

#[test]
fn mutated_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("seed.wav");
    write_wav(
        &good,
        22_050,
        2,
        hound::SampleFormat::Int,
        16,
        &sine(22_050, 440.0, 2_205),
    );
    let seed = std::fs::read(&good).unwrap();
    let path = dir.path().join("mutant.wav");
    // A fixed xorshift so failures reproduce.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut opened, mut refused) = (0, 0);
    for round in 0..400 {
        let mut bytes = seed.clone();
        let edits = 1 + next() % 4;
        for _ in 0..edits {
            // Mostly the header, where the interesting fields are.
            let limit = if next() % 4 == 0 { bytes.len() } else { 64 };
            let at = (next() as usize) % limit;
            bytes[at] = next() as u8;
        }
        if round % 10 == 0 {
            let keep = (next() as usize) % bytes.len();
            bytes.truncate(keep);
        }
        std::fs::write(&path, &bytes).unwrap();
        match open_and_read(&path) {
            Ok(samples) => {
                assert!(samples.len() < 1_000_000);
                opened += 1;
            }
            Err(AudioError::Wav { .. }) => refused += 1,
            Err(other) => panic!("round {round}: not a WAV error: {other}"),
        }
    }
    // Both paths were exercised: files still readable after a harmless edit, and refusals.
    assert!(
        opened > 20 && refused > 20,
        "{opened} opened, {refused} refused"
    );
}

#[test]
fn specs_parse() {
    assert_eq!(
        "tone:440".parse::<InputSpec>().unwrap(),
        InputSpec::Tone(440.0)
    );
    assert_eq!(
        "x.wav".parse::<InputSpec>().unwrap(),
        InputSpec::Wav(PathBuf::from("x.wav"))
    );
    assert_eq!(
        "dir/Take 1.WAV".parse::<OutputSpec>().unwrap(),
        OutputSpec::Wav(PathBuf::from("dir/Take 1.WAV"))
    );
    assert_eq!(
        "default".parse::<InputSpec>().unwrap(),
        InputSpec::DefaultDevice
    );
    assert_eq!("silence".parse::<InputSpec>().unwrap(), InputSpec::Silence);
    assert_eq!(
        "device:USB".parse::<InputSpec>().unwrap(),
        InputSpec::Device("USB".into())
    );
    assert_eq!("null".parse::<OutputSpec>().unwrap(), OutputSpec::Null);
    for bad in [
        "tone:abc",
        "tone:0",
        "tone:30000",
        "x.mp3",
        "",
        ".wav",
        "silence ",
    ] {
        let err = bad.parse::<InputSpec>().unwrap_err();
        assert!(matches!(err, AudioError::BadSpec(_)), "{bad:?}");
        assert!(err.to_string().contains("tone:HZ"), "{err}");
    }
    assert!(matches!(
        "tone:440".parse::<OutputSpec>(),
        Err(AudioError::BadSpec(_))
    ));
}

#[test]
fn synthetic_sources_and_null_sink_open_from_specs() {
    let mut tone = open_source(&InputSpec::Tone(1000.0)).unwrap();
    let mut samples = vec![0i16; 48_000];
    assert!(tone.read(&mut samples).unwrap());
    let hz = frequency(&samples);
    assert!((hz - 1000.0).abs() < 0.1, "{hz} Hz");

    let mut silence = open_source(&InputSpec::Silence).unwrap();
    assert!(silence.read(&mut samples).unwrap());
    assert!(samples.iter().all(|&s| s == 0));

    let mut null = open_sink(&OutputSpec::Null).unwrap();
    null.write(&samples).unwrap();
    null.finish().unwrap();
    assert!(!null.is_realtime());
}

/// The machine running the tests may have no sound card: the default devices must then
/// fail with `NoDevice` or `Device`, and never panic.
#[test]
fn default_devices_open_or_fail_cleanly() {
    match open_source(&InputSpec::DefaultDevice) {
        Ok(source) => assert!(source.is_realtime()),
        Err(e) => assert!(
            matches!(e, AudioError::NoDevice { .. } | AudioError::Device(_)),
            "{e}"
        ),
    }
    match open_sink(&OutputSpec::DefaultDevice) {
        Ok(mut sink) => {
            assert!(sink.is_realtime());
            let _ = sink.finish();
        }
        Err(e) => assert!(
            matches!(e, AudioError::NoDevice { .. } | AudioError::Device(_)),
            "{e}"
        ),
    }
    let err = AudioError::NoDevice {
        kind: "capture",
        detail: String::new(),
    };
    assert!(err.to_string().contains("--input FILE.wav"), "{err}");
}
