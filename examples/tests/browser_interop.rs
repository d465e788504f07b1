//! Browser interop: headless Chromium (Debian's `chromium`, driven by playwright-core from
//! `examples/tests/browser/`) joins a group room through signaling and the SFU like an
//! engine does, hears a Sotto engine, and the engine hears it.
//!
//! Chromium ignores 127.0.0.1 ICE candidates, so it runs in a network namespace this test
//! makes (a veth pair: 10.99.N.1 on our side, 10.99.N.2 inside); signaling, the SFU and
//! the engine listen on 10.99.N.1 in this process. The engine plays one speech file and
//! Chromium another as its fake microphone; each recording must correlate with what the
//! other side sent. Both also send video: the engine its test pattern in three VP8
//! simulcast layers, Chromium a Y4M file of the same pattern as its fake camera, in its
//! own three layers. The engine must decode Chromium's video and read the frame codes in
//! it; Chromium must decode the engine's (`framesDecoded`) and show it (the code read from
//! pictures grabbed off its <video> element).
//!
//! Needs root (network namespaces), Chromium, Node.js and `npm ci` in
//! `examples/tests/browser/`: `bash scripts/setup.sh` installs them. Without them the test
//! fails and says so, unless `SOTTO_SKIP_BROWSER=1` is set. `SOTTO_CHROMIUM` names another
//! Chromium binary; `SOTTO_BROWSER_KEEP=1` keeps the recordings and prints where.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sotto_bench::netns::Netns;
use sotto_engine::Identity;
use sotto_engine::audio::InputSpec;
use sotto_engine::audio::codec::EncoderConfig;
use sotto_engine::call::group::GroupConfig;
use sotto_engine::call::{IceConfig, Phone};
use sotto_engine::signaling::{ClientConfig, KeyAuthenticator, SignalingClient};
use sotto_engine::video::code::FrameCode;
use sotto_engine::video::pattern::render;
use sotto_engine::video::y4m::Y4mSink;
use sotto_engine::video::{VideoCodec, VideoSink as _};
use sotto_examples::group_demo::speech_correlation;
use sotto_examples::voice_demo::read_wav;
use sotto_signaling::server::{Config, start};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

/// Below this, a recording does not carry the speech. Measured (segmental correlation,
/// see `group_demo::speech_correlation`): 0.93-0.95 Chromium -> engine, 0.92-0.93 engine
/// -> Chromium, and 0.14-0.17 for the control (the wrong speech file).
const MIN_CORRELATION: f64 = 0.8;
/// Seconds Chromium speaks and listens once the first stream arrives (its file is 9.5 s).
const RECORD_SECONDS: u32 = 13;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn speech(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/data")
        .join(name)
}

fn chromium_path() -> PathBuf {
    std::env::var_os("SOTTO_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the test, each with what to do about it.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chromium_path().exists() {
        missing.push(format!(
            "Chromium is not at {} (apt-get install chromium, or set SOTTO_CHROMIUM)",
            chromium_path().display()
        ));
    }
    if !runs("node", "--version") {
        missing.push("node is not on PATH (Node.js 20 or newer)".into());
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(format!(
            "playwright-core is not installed (npm ci in {})",
            browser_dir().display()
        ));
    }
    if !runs("ip", "-V") {
        missing.push("the ip command is missing (apt-get install iproute2)".into());
    }
    missing
}

fn setup_hint() -> &'static str {
    "run `bash scripts/setup.sh` as root (it installs chromium and iproute2 and runs `npm ci` \
     in examples/tests/browser), or set SOTTO_SKIP_BROWSER=1 to skip this test"
}

/// Reads the browser driver's JSON lines until one satisfies `wanted`, up to `limit`.
async fn next_event(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    limit: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let deadline = Instant::now() + limit;
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .map_err(|_| format!("no such event within {limit:?}"))?
            .map_err(|e| format!("reading the browser's output: {e}"))?
            .ok_or("the browser driver exited")?;
        println!("browser: {line}");
        if let Ok(event) = serde_json::from_str::<Value>(&line)
            && wanted(&event)
        {
            return Ok(event);
        }
    }
}

/// One browser run at a time: two Chromiums and their engines would share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_and_an_engine_hear_each_other_through_the_sfu() {
    interop(VideoCodec::Vp8, ("sotto-br", "sbr", 99)).await;
}

/// The same with H.264 both ways: Chromium offers no VP8 (its codec preferences hold
/// H.264 only) and publishes H.264 simulcast; the engine publishes in H.264 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_and_an_engine_exchange_h264_video_through_the_sfu() {
    interop(VideoCodec::H264, ("sotto-bh", "sbh", 98)).await;
}

/// A browser interop run with `codec` for both sides' video, in the network namespace
/// `netns` (prefix, interface prefix, subnet).
async fn interop(codec: VideoCodec, netns: (&str, &str, u8)) {
    let _alone = ONE_AT_A_TIME.lock().await;
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    if std::env::var("SOTTO_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        println!("skipped: SOTTO_SKIP_BROWSER=1 (browser interop not run)");
        return;
    }
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "browser interop cannot run: {}; {}",
        missing.join("; "),
        setup_hint()
    );
    let netns = Netns::create(netns.0, netns.1, netns.2).unwrap_or_else(|err| {
        panic!(
            "browser interop needs a network namespace (root): {err}; {}",
            setup_hint()
        )
    });
    let host = netns.host_addr.clone();
    let started = Instant::now();

    // Signaling and the SFU on our side of the veth pair.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("sfu-secret");
    std::fs::write(&secret_file, "a secret shared by signaling and the SFU").unwrap();
    let mut config = Config::new(
        format!("{host}:0").parse().unwrap(),
        dir.path().join("server"),
    );
    config.sfu_secret_file = Some(secret_file.clone());
    let server = start(config).await.unwrap();
    let url = server.ws_url();
    let sfu = sotto_sfu::driver::start(format!("{host}:0").parse().unwrap(), None)
        .await
        .unwrap();
    let mut sfu_config = ClientConfig::new(&url);
    sfu_config.sfu_secret = Some(std::fs::read(&secret_file).unwrap());
    let sfu_client = SignalingClient::connect(
        sfu_config,
        Arc::new(KeyAuthenticator::new(
            ed25519_dalek::SigningKey::from_bytes(&rand::random()),
            Some("sfu".into()),
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

    // The engine creates the room; Chromium joins it first, so that neither side has
    // spoken before the other listens.
    let engine_identity = Arc::new(Identity::generate(Some("engine".into())).unwrap());
    let engine_id = engine_identity.public().to_string();
    let client = SignalingClient::connect(ClientConfig::new(&url), engine_identity)
        .await
        .unwrap();
    let invite = client.create_group_room(Some(4)).await.unwrap();
    let sfu_identity = invite.sfu.unwrap();

    let (engine_input, browser_input) =
        (speech("speech-en-us-1.wav"), speech("speech-en-gb-2.wav"));
    let browser_out = dir.path().join("browser-heard");
    std::fs::create_dir_all(&browser_out).unwrap();
    // Chromium's camera: three seconds of the test pattern, looped.
    let camera = dir.path().join("pattern.y4m");
    let mut sink = Y4mSink::create(&camera).unwrap();
    for index in 0..90 {
        sink.write(&render(640, 360, index, index * 33)).unwrap();
    }
    sink.finish().unwrap();
    let options = json!({
        "signaling": url,
        "room_id": invite.room_id.0,
        "invite_token": invite.invite_token.0,
        "input": browser_input,
        "out_dir": browser_out,
        "record_seconds": RECORD_SECONDS,
        "timeout_seconds": 60,
        "chromium": chromium_path(),
        "netns": netns.name,
        "video": camera,
        "video_codec": match codec {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
        },
    });
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir().join("run.mjs"))
        .arg(options.to_string())
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = node.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let connected = next_event(&mut lines, Duration::from_secs(90), |e| {
        e["event"] == "state" && e["state"] == "connected"
    })
    .await;
    if let Err(err) = connected {
        let _ = node.kill().await;
        panic!(
            "Chromium did not connect to the SFU: {err}\nits log:\n{}",
            stderr.await.unwrap()
        );
    }
    let connected_after = started.elapsed();

    // The engine joins now and speaks as soon as its media path is up.
    let engine_heard = dir.path().join("engine-heard");
    let phone = Phone::new(client);
    let group = GroupConfig {
        input: InputSpec::Wav(engine_input.clone()),
        record_dir: Some(engine_heard.clone()),
        encoder: EncoderConfig::default(),
        jitter: Default::default(),
        ice: IceConfig {
            bind: vec![format!("{host}:0")],
            ..IceConfig::default()
        },
        max_duration: Some(Duration::from_secs(60)),
        leave_after_input: Some(Duration::from_secs(3)),
        e2ee: None,
        decoder_complexity: sotto_engine::audio::codec::DEFAULT_DECODER_COMPLEXITY,
        video: "test-pattern".parse().unwrap(),
        video_layers: 3,
        video_codec: codec,
        record_video: true,
        max_quality: None,
        control: None,
        video_sink: None,
    };
    let room = invite.room_id.clone();
    let engine = tokio::spawn(async move { phone.group_call(room, sfu_identity, group).await });

    let done = next_event(&mut lines, Duration::from_secs(120), |e| {
        e["event"] == "done"
    })
    .await;
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait()).await;
    let log = stderr.await.unwrap();
    let done =
        done.unwrap_or_else(|err| panic!("the browser participant failed: {err}\nits log:\n{log}"));
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "the browser driver: {status:?}\nits log:\n{log}"
    );
    let summary = tokio::time::timeout(Duration::from_secs(60), engine)
        .await
        .expect("the engine leaves after its input")
        .unwrap()
        .unwrap();
    control.abort();
    sfu.task.abort();
    server.shutdown().await.unwrap();
    let total = started.elapsed();
    let engine_line = serde_json::to_string(&summary).unwrap();
    println!("engine: {engine_line}");
    assert!(summary.connected, "{engine_line}");

    // What each side saw of the other.
    let browser_id = done["identity"].as_str().unwrap().to_owned();
    let from_chromium = summary
        .received
        .iter()
        .find(|s| s.participant == browser_id)
        .and_then(|s| s.video.clone())
        .unwrap_or_else(|| panic!("the engine got no video from Chromium: {engine_line}"));
    assert!(from_chromium.frames_decoded > 60, "{from_chromium:?}");
    assert_eq!(from_chromium.codec, codec, "{from_chromium:?}");
    assert!(
        from_chromium.coded_frames * 10 >= from_chromium.frames_decoded * 9,
        "frame codes in Chromium's video: {from_chromium:?}"
    );
    let chromium_inbound = done["stats"]["video_inbound"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let decoded_by_chromium: u64 = chromium_inbound
        .iter()
        .map(|s| s["frames_decoded"].as_u64().unwrap_or(0))
        .sum();
    assert!(decoded_by_chromium > 60, "Chromium's video stats: {done}");
    let mime = format!("video/{}", codec.sdp_name());
    assert!(
        chromium_inbound
            .iter()
            .filter(|s| s["frames_decoded"].as_u64().unwrap_or(0) > 0)
            .all(|s| s["codec"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case(&mime))),
        "Chromium decoded another codec than {mime}: {done}"
    );
    let mut codes_in_grabs = Vec::new();
    for grab in done["grabs"].as_array().cloned().unwrap_or_default() {
        if grab["participant"] != engine_id.as_str() {
            continue;
        }
        let (width, height) = (
            grab["width"].as_u64().unwrap() as u32,
            grab["height"].as_u64().unwrap() as u32,
        );
        let luma = std::fs::read(grab["path"].as_str().unwrap()).unwrap();
        codes_in_grabs.extend(FrameCode::read(&luma, width, height).map(|c| c.frame));
    }
    assert!(
        !codes_in_grabs.is_empty(),
        "no frame code in Chromium's pictures of the engine's video: {done}"
    );
    let stream = summary
        .received
        .iter()
        .find(|s| s.participant == browser_id)
        .unwrap_or_else(|| panic!("the engine got no stream from Chromium: {engine_line}"));
    let engine_recording = stream.recording.clone().unwrap();
    let browser_recording = done["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["participant"] == engine_id.as_str())
        .unwrap_or_else(|| panic!("Chromium got no stream from the engine: {done}"))["path"]
        .as_str()
        .map(PathBuf::from)
        .unwrap();

    let (engine_sent, browser_sent) = (
        read_wav(&engine_input).unwrap(),
        read_wav(&browser_input).unwrap(),
    );
    let (engine_got, browser_got) = (
        read_wav(&engine_recording).unwrap(),
        read_wav(&browser_recording).unwrap(),
    );
    let ms = |lag: isize| lag as f64 / 48.0;
    // Three comparisons, two at a time (the FFTs are slow in a debug build). The third is a
    // control: the wrong speech file against the same recording.
    let (b2e, e2b, unrelated) = std::thread::scope(|s| {
        let b2e = s.spawn(|| speech_correlation(&browser_sent, &engine_got));
        let e2b = s.spawn(|| speech_correlation(&engine_sent, &browser_got));
        let unrelated = speech_correlation(&browser_sent, &browser_got).map_or(0.0, |(_, c)| c);
        (b2e.join().unwrap(), e2b.join().unwrap(), unrelated)
    });
    let (lag_b2e, browser_to_engine) = b2e
        .unwrap_or_else(|| panic!("the engine's recording of Chromium is silent: {engine_line}"));
    let (lag_e2b, engine_to_browser) =
        e2b.unwrap_or_else(|| panic!("Chromium's recording of the engine is silent: {done}"));
    let report = json!({
        "chromium_to_engine": {"segmental_correlation": browser_to_engine, "lag_ms": ms(lag_b2e),
            "packets": stream.audio.packets, "lost": stream.audio.lost, "concealed_ms": stream.audio.concealed_ms},
        "engine_to_chromium": {"segmental_correlation": engine_to_browser, "lag_ms": ms(lag_e2b),
            "webrtc_stats": done["stats"]},
        "unrelated_speech_correlation": unrelated,
        "video_chromium_to_engine": from_chromium,
        "video_engine_to_chromium": {"webrtc_stats": chromium_inbound, "codes_in_grabs": codes_in_grabs},
        "chromium_connected_after_s": connected_after.as_secs_f64(),
        "test_s": total.as_secs_f64(),
    });
    println!("browser interop: {report}");
    if std::env::var_os("SOTTO_BROWSER_KEEP").is_some() {
        println!("recordings kept in {}", dir.keep().display());
    }
    assert!(
        browser_to_engine >= MIN_CORRELATION,
        "the engine's recording of Chromium: {report}"
    );
    assert!(
        engine_to_browser >= MIN_CORRELATION,
        "Chromium's recording of the engine: {report}"
    );
    assert!(unrelated < MIN_CORRELATION - 0.2, "the control: {report}");
    drop(netns);
}
