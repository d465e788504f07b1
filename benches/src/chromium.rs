//! `sotto-bench run --peer chromium`: the same scenario between two headless Chromium
//! pages, so Chrome's own WebRTC audio stack is scored beside Sotto's through the same
//! relay. `benches/chromium/pair.mjs` drives Debian's Chromium with playwright-core inside
//! a network namespace this module makes ([`crate::netns`]; Chromium ignores 127.0.0.1 ICE
//! candidates); the relay listens on our side of the veth pair. The caller's fake
//! microphone plays the reference WAV; the callee records in the page. Needs root,
//! `chromium`, Node.js and `npm ci` in `examples/tests/browser/` (`scripts/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use sotto_engine::audio::SAMPLE_RATE;
use sotto_engine::call::ReceivedSummary;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::netns::Netns;
use crate::quality::{CallResult, Measured, Peer, Scoring, read_wav, score};
use crate::relay::{Relay, RelayConfig};
use crate::scenario::Scenario;

/// Where the browser calls run.
pub struct ChromiumPeer {
    netns: Netns,
    chromium: PathBuf,
    script: PathBuf,
}

impl ChromiumPeer {
    /// Checks what the browser side needs and makes the namespace. `chromium` is the
    /// browser binary; `script` is `benches/chromium/pair.mjs`.
    pub fn new(chromium: PathBuf, script: PathBuf) -> anyhow::Result<ChromiumPeer> {
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
        Ok(ChromiumPeer {
            netns,
            chromium,
            script,
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
        let done = done.with_context(|| {
            format!(
                "{}: the Chromium call failed (see {})",
                scenario.name,
                out.join(format!("{stem}.log")).display()
            )
        })?;
        score(
            scenario,
            seed,
            Peer::Chromium,
            &reference,
            input,
            recording,
            measured(&done),
            relay,
            scoring,
        )
    }
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
