//! `sotto-bench run --peer chromium`: the same scenario between two headless Chromium
//! pages, so Chrome's own WebRTC audio stack is scored beside Sotto's through the same
//! relay. `benches/chromium/pair.mjs` drives Debian's Chromium with playwright-core inside
//! a network namespace this module makes ([`crate::netns`]; Chromium ignores 127.0.0.1 ICE
//! candidates); the relay listens on our side of the veth pair. The caller's fake
//! microphone plays the reference WAV; the callee records in the page. With `--video` the
//! caller's fake camera plays the test pattern from a Y4M file this module writes (the
//! same pictures the Sotto side sends, frame codes included), and the callee reads every
//! picture Chrome decodes (WebCodecs frames from the remote track): the frame codes give
//! fps, freezes and delay by the same code as the engine's, and one picture in
//! [`KEEP_EVERY`] comes back whole for PSNR and SSIM against its source. Needs root,
//! `chromium`, Node.js and `npm ci` in `examples/tests/browser/` (`scripts/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sotto_engine::audio::SAMPLE_RATE;
use sotto_engine::call::ReceivedSummary;
use sotto_engine::call::video::VideoReceiveStats;
use sotto_engine::video::code::FrameCode;
use sotto_engine::video::quality::QualityMeter;
use sotto_engine::video::y4m::Y4mSink;
use sotto_engine::video::{VideoFrame, VideoSink, pattern};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::netns::Netns;
use crate::quality::{
    CallResult, Measured, NotConnected, Peer, Scoring, VIDEO_FPS, VIDEO_SIZE, VideoResult,
    read_wav, score,
};
use crate::relay::{Relay, RelayConfig};
use crate::scenario::Scenario;

/// Seconds of test pattern in the fake camera's file (it starts again after).
const PATTERN_SECONDS: u64 = 16;
/// One decoded picture in this many comes back whole from the page, for PSNR and SSIM.
const KEEP_EVERY: u64 = 15;

/// Where the browser calls run.
pub struct ChromiumPeer {
    netns: Netns,
    chromium: PathBuf,
    script: PathBuf,
    /// The fake camera's test pattern, when the calls carry video (in its own directory,
    /// removed with it).
    video: Option<(tempfile::TempDir, PathBuf)>,
}

/// Writes [`PATTERN_SECONDS`] of the test pattern at [`VIDEO_FPS`] to a Y4M file: frame `n`'s
/// code carries `n` and, as its capture instant, `n` frame intervals in ms (the page
/// knows only when the camera started).
fn write_pattern(path: &Path) -> anyhow::Result<()> {
    let mut sink = Y4mSink::create(path)?;
    let fps = u64::from(VIDEO_FPS);
    for index in 0..PATTERN_SECONDS * fps {
        let picture = pattern::render(VIDEO_SIZE.0, VIDEO_SIZE.1, index, index * 1000 / fps);
        sink.write(&picture)?;
    }
    sink.finish()?;
    Ok(())
}

impl ChromiumPeer {
    /// Checks what the browser side needs and makes the namespace. `chromium` is the
    /// browser binary; `script` is `benches/chromium/pair.mjs`; with `video`, the calls
    /// carry the test pattern too.
    pub fn new(chromium: PathBuf, script: PathBuf, video: bool) -> anyhow::Result<ChromiumPeer> {
        if !chromium.exists() {
            bail!(
                "Chromium is not at {} (apt-get install chromium, or --chromium PATH)",
                chromium.display()
            );
        }
        let playwright = script
            .parent()
            .map(|dir| dir.join("../../examples/tests/browser/node_modules/playwright-core"));
        if !playwright.is_some_and(|p| p.exists()) {
            bail!("playwright-core is not installed: run `npm ci` in examples/tests/browser");
        }
        let netns = Netns::create("sotto-bb", "sbb", 98)
            .map_err(|err| anyhow!("making the network namespace (needs root): {err}"))?;
        let video = if video {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("pattern.y4m");
            write_pattern(&path).context("writing the fake camera's test pattern")?;
            Some((dir, path))
        } else {
            None
        };
        Ok(ChromiumPeer {
            netns,
            chromium,
            script,
            video,
        })
    }

    /// Runs and scores one Chromium call of `input` under `scenario` with `seed`.
    pub async fn run_call(
        &self,
        scenario: &Scenario,
        seed: u64,
        input: &Path,
        out: &Path,
        scoring: &Scoring,
    ) -> anyhow::Result<CallResult> {
        let stem = format!("{}-chromium-seed{seed}", scenario.name);
        let recording = out.join(format!("{stem}.wav"));
        let reference = read_wav(input)?;
        let speech = Duration::from_secs_f64(reference.len() as f64 / f64::from(SAMPLE_RATE));
        let host = &self.netns.host_addr;
        let mut relay = Relay::bind(RelayConfig::for_scenario(
            scenario,
            seed,
            format!("{host}:0").parse()?,
            // Set once the callee page says where it listens.
            format!("{}:9", self.netns.inner_addr).parse()?,
            speech + Duration::from_secs(60),
        ))
        .await
        .context("binding the relay")?;
        let relay_addr = relay.listen_addr()?;

        let log = std::fs::File::create(out.join(format!("{stem}.log")))?;
        let options = json!({
            "input": input.canonicalize()?,
            "out_wav": out.canonicalize()?.join(format!("{stem}.wav")),
            // The speech, and two seconds for its tail to arrive.
            "seconds": speech.as_secs_f64().ceil() + 2.0,
            "inner_addr": self.netns.inner_addr,
            "netns": self.netns.name,
            "chromium": self.chromium,
            "timeout_seconds": 30,
            "video": self.video.as_ref().map(|(_, path)| path),
            "keep_every": KEEP_EVERY,
        });
        let mut child = Command::new("node")
            .arg(&self.script)
            .arg(options.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting node (Node.js 20 or newer must be on PATH)")?;
        let stdout = child.stdout.take().context("the driver's stdout")?;
        let mut lines = BufReader::new(stdout).lines();

        let candidate = next_event(&mut lines, Duration::from_secs(60), "callee_candidate").await?;
        let target = candidate["address"]
            .as_str()
            .context("callee_candidate without an address")?
            .parse()
            .context("the callee's address")?;
        relay.set_target(target);
        let relay = relay.spawn();
        let mut stdin = child.stdin.take().context("the driver's stdin")?;
        stdin
            .write_all(format!("{}\n", json!({ "relay": relay_addr.to_string() })).as_bytes())
            .await?;
        let done = next_event(&mut lines, speech + Duration::from_secs(90), "done").await;
        let relay = relay.stop().await;
        finish(child).await;
        let log = out.join(format!("{stem}.log"));
        let done = match done {
            Ok(done) => done,
            // page.js's wait for `connectionState == "connected"` ran out.
            Err(err)
                if std::fs::read_to_string(&log)
                    .is_ok_and(|text| text.contains("timed out waiting for the connection")) =>
            {
                return Err(NotConnected(format!(
                    "{}: {err:#} (see {})",
                    scenario.name,
                    log.display()
                ))
                .into());
            }
            Err(err) => {
                return Err(err.context(format!(
                    "{}: the Chromium call failed (see {})",
                    scenario.name,
                    log.display()
                )));
            }
        };
        let mut result = score(
            scenario,
            seed,
            Peer::Chromium,
            &reference,
            input,
            recording,
            measured(&done),
            relay,
            scoring,
        )?;
        if self.video.is_some() {
            result.video = Some(video_result(&done)?);
        }
        Ok(result)
    }
}

/// What the page saw of the caller's video, scored as the engine scores its own.
fn video_result(done: &Value) -> anyhow::Result<VideoResult> {
    let number = |v: &Value| v.as_f64().unwrap_or(0.0);
    let video = &done["video"];
    let frames = video["frames"]
        .as_array()
        .context("the page read no video pictures")?;
    let capture_started = number(&done["capture_started_ms"]);
    let stats = VideoReceiveStats::default();
    let base = Instant::now();
    let first = frames.first().map_or(0.0, |f| number(&f[0]));
    let mut last = first;
    for frame in frames {
        let at = number(&frame[0]);
        last = at;
        let size = (number(&frame[1]) as u32, number(&frame[2]) as u32);
        let code = frame[3]
            .as_str()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .and_then(FrameCode::from_bits);
        // The camera file's codes count from its start, which is when capture started.
        let delay = code.map(|c| at - (capture_started + f64::from(c.capture_ms)));
        let offset = Duration::from_secs_f64((at - first).max(0.0) / 1000.0);
        stats.shown(base + offset, size, false, code, delay);
    }
    let meter = QualityMeter::default();
    let plane = |picture: &Value, name: &str| -> anyhow::Result<Vec<u8>> {
        let text = picture[name].as_str().context("a picture plane")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
    };
    for picture in video["pictures"].as_array().into_iter().flatten() {
        let frame = VideoFrame {
            width: number(&picture["width"]) as u32,
            height: number(&picture["height"]) as u32,
            y: plane(picture, "y")?,
            u: plane(picture, "u")?,
            v: plane(picture, "v")?,
        };
        meter.score_now(VIDEO_SIZE, &frame);
    }
    let inbound = &done["callee"]["video_inbound"];
    let outbound = &done["caller"]["video_outbound"];
    let mut received = stats.summary(Duration::from_secs_f64((last - first).max(0.0) / 1000.0));
    received.packets = number(&inbound["packets_received"]) as u64;
    received.frames_received = number(&inbound["frames_received"]) as u64;
    received.keyframes = number(&inbound["key_frames_decoded"]) as u64;
    received.frames_dropped = number(&inbound["frames_dropped"]) as u64;
    received.plis_sent = number(&inbound["pli_count"]) as u64;
    let speaking = number(&done["speaking_seconds"]).max(1e-3);
    Ok(VideoResult {
        received,
        quality: meter.summary(),
        sent_kbps: (number(&outbound["bytes_sent"]) * 8.0 / speaking / 10.0).round() / 100.0,
        final_layer_kbps: vec![(number(&outbound["target_bitrate"]) / 1000.0) as u32],
        keyframes_sent: number(&outbound["key_frames_encoded"]) as u64,
    })
}

/// Reads the driver's JSON lines until the event `wanted`, up to `limit`.
async fn next_event(
    lines: &mut tokio::io::Lines<BufReader<ChildStdout>>,
    limit: Duration,
    wanted: &str,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| anyhow!("no {wanted} from the browser within {limit:?}"))??
            .ok_or_else(|| anyhow!("the browser driver exited before {wanted}"))?;
        if let Ok(event) = serde_json::from_str::<Value>(&line)
            && event["event"] == wanted
        {
            return Ok(event);
        }
    }
}

async fn finish(mut child: Child) {
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// What Chromium's statistics say, in the bench's terms.
fn measured(done: &Value) -> Measured {
    let number = |v: &Value| v.as_f64().unwrap_or(0.0);
    let inbound = &done["callee"]["inbound"];
    let outbound = &done["caller"]["outbound"];
    let received = number(&inbound["packets_received"]);
    let lost = number(&inbound["packets_lost"]).max(0.0);
    let samples = number(&inbound["total_samples_received"]);
    let emitted = number(&inbound["jitter_buffer_emitted_count"]);
    let speaking = number(&done["speaking_seconds"]).max(1e-3);
    let ratio = |part: f64, whole: f64| {
        if whole > 0.0 {
            (part / whole * 10_000.0).round() / 100.0
        } else {
            0.0
        }
    };
    Measured {
        recording_offset_ms: Some(
            number(&done["recording_started_ms"]) - number(&done["capture_started_ms"]),
        ),
        loss_percent: ratio(lost, received + lost),
        concealed_percent: ratio(number(&inbound["concealed_samples"]), samples),
        jitter_buffer_ms: if emitted > 0.0 {
            (number(&inbound["jitter_buffer_delay"]) / emitted * 10_000.0).round() / 10.0
        } else {
            0.0
        },
        // pair.mjs: from the caller taking the answer until both pages say connected.
        setup_ms: done["setup_ms"].as_f64(),
        bitrate_kbps: (number(&outbound["bytes_sent"]) * 8.0 / speaking / 10.0).round() / 100.0,
        final_bitrate_bps: number(&outbound["target_bitrate"]) as u32,
        fec_loss_percent: 0,
        received: ReceivedSummary {
            packets: received as u64,
            lost: lost as u64,
            loss_percent: ratio(lost, received + lost),
            fec_frames: number(&inbound["fec_packets_received"]) as u64,
            ..ReceivedSummary::default()
        },
        caller_timeline: Vec::new(),
        callee_timeline: Vec::new(),
    }
}
