//! `sotto-bench run`: call quality under a scenario. For each scenario and seed, a real
//! one-to-one call (two engines, in-process signaling, WebRTC with DTLS-SRTP) goes through
//! the [`crate::relay`] with the scenario's impairments: the caller plays a reference
//! speech file, the callee records what it plays out. Then the recording is scored:
//! mouth-to-ear delay by cross-correlation, what the callee's jitter buffer reports
//! (loss, concealment, delay, bitrate), the E-model's R and MOS ([`crate::emodel`]) from
//! the measured delay and loss, and, when a Python with the scoring packages is at hand
//! (`benches/setup-scoring.sh`), PESQ-WB and PESQ-NB (ITU-T P.862, the `pesq` package's
//! reference code) and STOI (`pystoi`), through `benches/score.py`; and ViSQOL's speech
//! MOS-LQO in Rust ([`crate::visqol`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use sotto_engine::audio::analysis::align;
use sotto_engine::audio::codec::EncoderConfig;
use sotto_engine::audio::{InputSpec, OutputSpec, SAMPLE_RATE};
use sotto_engine::call::{Advertise, CallConfig, CallSummary, IceConfig, Phone};
use sotto_engine::video::quality::{QualityMeter, QualitySink};
use sotto_engine::video::{SinkFactory, VideoCodec, VideoOutput, VideoSink, VideoSpec};
use sotto_engine::{ClientConfig, Identity, SignalingClient};
use sotto_signaling::server::RunningServer;

use crate::emodel::{self, Inputs};
use crate::ports::{Proto, unused_port};
use crate::relay::{Relay, RelayConfig, RelayReport};
use crate::scenario::Scenario;

/// Codec parameters for the E-model. Opus is not tabulated in ITU-T G.113; these are G.113
/// Appendix I's G.711 with packet loss concealment (Ie 0, Bpl 25.1), a conservative
/// stand-in: Opus with in-band FEC conceals at least as well.
pub const EMODEL_IE: f64 = 0.0;
/// See [`EMODEL_IE`].
pub const EMODEL_BPL: f64 = 25.1;

/// How a call is scored.
#[derive(Debug, Clone)]
pub struct Scoring {
    /// A Python with `pesq`, `pystoi`, `numpy`, `scipy` (`None`: no PESQ or STOI).
    pub python: Option<PathBuf>,
    /// `benches/score.py`.
    pub script: PathBuf,
}

/// Whose WebRTC stack both ends of a call run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// Two Sotto engines.
    Sotto,
    /// Two headless Chromium pages (Chrome's own WebRTC audio stack).
    Chromium,
}

impl Peer {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Sotto => "sotto",
            Peer::Chromium => "chromium",
        }
    }
}

/// One scenario, one seed.
#[derive(Debug, Clone, Serialize)]
pub struct CallResult {
    /// The scenario's name.
    pub scenario: String,
    /// Whose stack.
    pub peer: Peer,
    /// The seed of the relay's links.
    pub seed: u64,
    /// What the callee recorded.
    pub recording: PathBuf,
    /// Mouth-to-ear delay, ms (cross-correlation of the recording with the reference).
    pub mouth_to_ear_ms: Option<f64>,
    /// Correlation at that lag.
    pub correlation: Option<f64>,
    /// Packets the callee's jitter buffer never got in time, %.
    pub loss_percent: f64,
    /// Audio played that was not decoded from its own packet, % of the played audio.
    pub concealed_percent: f64,
    /// Mean jitter-buffer delay, ms.
    pub jitter_buffer_ms: f64,
    /// From placing the call until both ends called it connected, ms (`None` where the
    /// stack does not say: group calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_ms: Option<f64>,
    /// Opus payload bitrate received, kbit/s.
    pub bitrate_kbps: f64,
    /// The caller's encoder bitrate at the end, bit/s.
    pub final_bitrate_bps: u32,
    /// The loss percentage the caller's FEC was tuned for at the end.
    pub fec_loss_percent: u8,
    /// E-model R.
    pub r: Option<f64>,
    /// E-model MOS.
    pub mos: Option<f64>,
    /// PESQ-WB (P.862.2).
    pub pesq_wb: Option<f64>,
    /// PESQ-NB (P.862).
    pub pesq_nb: Option<f64>,
    /// STOI.
    pub stoi: Option<f64>,
    /// ViSQOL v3.1 speech-mode MOS-LQO.
    pub visqol: Option<f64>,
    /// Everything the callee's receive side counted (FEC, PLC, expansion, ...).
    pub received: sotto_engine::call::ReceivedSummary,
    /// The caller's second-by-second view (its sender: bitrate, FEC, RED, round trip).
    pub caller_timeline: Vec<sotto_engine::call::TimelinePoint>,
    /// The callee's (its jitter buffer, receiving the caller's audio).
    pub callee_timeline: Vec<sotto_engine::call::TimelinePoint>,
    /// The relay's counters.
    pub relay: RelayReport,
    /// The speaker's video as this listener saw it (runs with `--video`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoResult>,
}

/// One received video stream of a bench call, scored against its source.
#[derive(Debug, Clone, Serialize)]
pub struct VideoResult {
    /// Frames, rate, freezes, layer switches, delay.
    pub received: sotto_engine::call::video::VideoReceivedSummary,
    /// PSNR and SSIM against the source pictures.
    pub quality: sotto_engine::video::quality::QualitySummary,
    /// The sender's video bitrate over the call, kbit/s (all layers).
    pub sent_kbps: f64,
    /// Its layers' bitrates at the end, kbit/s (0: stopped).
    pub final_layer_kbps: Vec<u32>,
    /// Keyframes it sent, all layers.
    pub keyframes_sent: u64,
}

/// The speaker's test pattern with `--video`: its size and frame rate.
pub const VIDEO_SIZE: (u32, u32) = (640, 360);
/// See [`VIDEO_SIZE`].
pub const VIDEO_FPS: u32 = 30;

/// The test pattern when `on`, else no video.
pub fn test_pattern(on: bool) -> VideoSpec {
    if on {
        VideoSpec::TestPattern {
            width: VIDEO_SIZE.0,
            height: VIDEO_SIZE.1,
            fps: VIDEO_FPS,
        }
    } else {
        VideoSpec::None
    }
}
/// Each listener scores one picture in this many.
const SCORE_EVERY: u64 = 5;

/// Sinks that score the test pattern they are given into `meter`.
pub fn scoring_sinks(meter: &QualityMeter) -> SinkFactory {
    let meter = meter.clone();
    let (width, height) = VIDEO_SIZE;
    SinkFactory(Arc::new(move |_: &str| {
        Box::new(QualitySink::new(width, height, SCORE_EVERY, meter.clone())) as Box<dyn VideoSink>
    }))
}

/// Engine settings a run compares: the defaults, or the neural tools turned down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The Opus decoder's complexity (5 and up: deep PLC and DRED decoding).
    pub decoder_complexity: u8,
    /// DRED carried by the sender, in 10 ms units (0: none).
    pub dred_units: u8,
    /// The speaker also sends the test pattern (group calls: 640x360 in three simulcast
    /// layers), and each listener scores what it decodes.
    pub video: bool,
    /// The codec the speaker sends its video in.
    pub video_codec: VideoCodec,
}

impl Default for Tuning {
    fn default() -> Self {
        let config = CallConfig::default();
        Tuning {
            decoder_complexity: config.decoder_complexity,
            dred_units: config.encoder.dred_units,
            video: false,
            video_codec: VideoCodec::default(),
        }
    }
}

impl Tuning {
    /// The call configuration with these settings, the rest default.
    pub fn call_config(&self) -> CallConfig {
        let config = CallConfig::default();
        CallConfig {
            decoder_complexity: self.decoder_complexity,
            encoder: EncoderConfig {
                dred_units: self.dred_units,
                ..config.encoder.clone()
            },
            video_codec: self.video_codec,
            ..config
        }
    }
}

/// Runs and scores one call of `input` under `scenario` with `seed`, recording into `out`.
pub async fn run_call(
    server: &RunningServer,
    scenario: &Scenario,
    seed: u64,
    input: &Path,
    out: &Path,
    scoring: &Scoring,
    tuning: &Tuning,
) -> anyhow::Result<CallResult> {
    let recording = out.join(format!("{}-sotto-seed{seed}.wav", scenario.name));
    let bob_addr: SocketAddr = format!("127.0.0.1:{}", unused_port(Proto::Udp)?).parse()?;
    let reference = read_wav(input)?;
    let speech = Duration::from_secs_f64(reference.len() as f64 / f64::from(SAMPLE_RATE));
    let relay = Relay::bind(RelayConfig::for_scenario(
        scenario,
        seed,
        "127.0.0.1:0".parse()?,
        bob_addr,
        // Setup, the speech, its tail, and a margin.
        speech + Duration::from_secs(20),
    ))
    .await
    .context("binding the relay")?;
    let relay_addr = relay.listen_addr()?;
    let relay = relay.spawn();

    let config = ClientConfig::new(server.ws_url());
    let alice = Phone::new(
        SignalingClient::connect(config.clone(), Arc::new(Identity::generate(None)?)).await?,
    );
    let bob_id = Arc::new(Identity::generate(None)?);
    let mut bob = Phone::new(SignalingClient::connect(config, bob_id.clone()).await?);
    let call = alice.call(
        bob_id.public(),
        CallConfig {
            input: InputSpec::Wav(input.to_owned()),
            output: OutputSpec::Null,
            ice: IceConfig {
                bind: vec!["127.0.0.1:0".into()],
                advertise: Advertise::Nothing,
                ..IceConfig::default()
            },
            hang_up_after_input: Some(Duration::from_secs(1)),
            max_duration: Some(speech + Duration::from_secs(10)),
            video: test_pattern(tuning.video),
            ..tuning.call_config()
        },
    )?;
    let meter = QualityMeter::default();
    let video_output = tuning
        .video
        .then(|| VideoOutput::Sink(scoring_sinks(&meter)));
    let incoming = tokio::time::timeout(Duration::from_secs(10), bob.next_incoming())
        .await
        .context("the callee saw no call")?
        .context("the callee's signaling closed")?;
    let answered = incoming
        .answer(CallConfig {
            input: InputSpec::Silence,
            output: OutputSpec::Wav(recording.clone()),
            ice: IceConfig {
                bind: vec![bob_addr.to_string()],
                advertise: Advertise::Address(relay_addr),
                ..IceConfig::default()
            },
            max_duration: Some(speech + Duration::from_secs(10)),
            video_output,
            ..tuning.call_config()
        })
        .await?;
    let (caller, callee) = tokio::join!(call.finished(), answered.finished());
    let (caller, callee) = (caller?, callee?);
    let relay = relay.stop().await;
    if !caller.connected || !callee.connected {
        return Err(NotConnected(format!("{}: {}", scenario.name, callee.end.detail)).into());
    }
    let mut result = score(
        scenario,
        seed,
        Peer::Sotto,
        &reference,
        input,
        recording,
        Measured::from_summaries(&caller, &callee),
        relay,
        scoring,
    )?;
    if tuning.video {
        let sent = caller.video_sent.clone().unwrap_or_default();
        result.video = Some(VideoResult {
            received: callee.video_received.clone().unwrap_or_default(),
            quality: meter.summary(),
            sent_kbps: sent.kbps,
            final_layer_kbps: sent.final_layer_kbps,
            keyframes_sent: sent.keyframes,
        });
    }
    Ok(result)
}

/// What the receiving side of a call measured, whichever stack it ran.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// From the caller's capture start to the callee's recording start, ms (one wall
    /// clock: both ends run on this machine); `None` when not known (no mouth-to-ear
    /// delay, and no E-model, is given then).
    pub recording_offset_ms: Option<f64>,
    /// Packets the callee never got in time, %.
    pub loss_percent: f64,
    /// Audio played that was not decoded from its own packet, %.
    pub concealed_percent: f64,
    /// Mean jitter-buffer delay, ms.
    pub jitter_buffer_ms: f64,
    /// From placing the call until both ends called it connected, ms.
    pub setup_ms: Option<f64>,
    /// Payload bitrate received, kbit/s.
    pub bitrate_kbps: f64,
    /// The caller's encoder bitrate at the end, bit/s.
    pub final_bitrate_bps: u32,
    /// The loss the caller's FEC was tuned for at the end, %.
    pub fec_loss_percent: u8,
    /// The callee's receive-side counters (Sotto's; Chromium's where it has them).
    pub received: sotto_engine::call::ReceivedSummary,
    /// Second-by-second views of the two ends (Sotto only).
    pub caller_timeline: Vec<sotto_engine::call::TimelinePoint>,
    /// See `caller_timeline`.
    pub callee_timeline: Vec<sotto_engine::call::TimelinePoint>,
}

impl Measured {
    /// What two Sotto engines' summaries say.
    pub fn from_summaries(caller: &CallSummary, callee: &CallSummary) -> Measured {
        // The recording starts when the callee's media clock does, the reference when the
        // caller's input does (one process, one clock; a file input waits until media goes
        // both ways).
        let input_started = caller.input_started.or(caller.media_started);
        let recording_offset_ms = match (input_started, callee.media_started) {
            (Some(a), Some(b)) if b >= a => (b - a).as_secs_f64() * 1000.0,
            (Some(a), Some(b)) => -((a - b).as_secs_f64() * 1000.0),
            _ => 0.0,
        };
        let got = &callee.received;
        let played_ms = callee.duration_s * 1000.0;
        Measured {
            recording_offset_ms: Some(recording_offset_ms),
            loss_percent: got.loss_percent,
            concealed_percent: if played_ms > 0.0 {
                round(got.concealed_ms * 100.0 / played_ms, 2)
            } else {
                0.0
            },
            jitter_buffer_ms: got.jitter_buffer_mean_ms,
            // Each end counts from its own start (the caller's offer, the callee's
            // answer); the call is up for both when the later of the two says so.
            setup_ms: match (caller.setup_ms, callee.setup_ms) {
                (Some(a), Some(b)) => Some(round(a.max(b), 1)),
                _ => None,
            },
            bitrate_kbps: got.payload_kbps,
            final_bitrate_bps: caller.sent.final_bitrate_bps,
            fec_loss_percent: caller.sent.final_loss_percent,
            received: got.clone(),
            caller_timeline: caller.timeline.clone(),
            callee_timeline: callee.timeline.clone(),
        }
    }
}

/// How late in a recording the reference may start, s. A group call's listener records
/// from its own connect: the speaker joins after it, and under 20 % loss its setup alone
/// has taken over 3 s (a 2 s window then scored a well-heard call at PESQ 1.4).
const MAX_LAG_SECS: usize = 10;

/// Scores a recording against the reference it should carry.
#[allow(clippy::too_many_arguments)]
pub fn score(
    scenario: &Scenario,
    seed: u64,
    peer: Peer,
    reference: &[i16],
    input: &Path,
    recording: PathBuf,
    measured: Measured,
    relay: Option<RelayReport>,
    scoring: &Scoring,
) -> anyhow::Result<CallResult> {
    let received = read_wav(&recording)?;
    let alignment = align(reference, &received, SAMPLE_RATE as usize * MAX_LAG_SECS);
    let mouth_to_ear_ms = alignment
        .zip(measured.recording_offset_ms)
        .map(|(a, offset)| round(a.lag as f64 * 1000.0 / f64::from(SAMPLE_RATE) + offset, 1));
    let rating = mouth_to_ear_ms.map(|delay| {
        emodel::rating(&Inputs::voip(
            delay,
            measured.loss_percent,
            1.0,
            EMODEL_IE,
            EMODEL_BPL,
        ))
    });
    let scores = match (&scoring.python, alignment) {
        (Some(python), Some(a)) => {
            python_scores(python, &scoring.script, input, &recording, a.lag)?
        }
        _ => PythonScores::default(),
    };
    let scratch = recording.parent().unwrap_or(Path::new("."));
    let visqol = alignment.and_then(|a| {
        match crate::visqol::speech_mos(reference, &received, a.lag, scratch) {
            Ok(mos) => Some(round(mos, 3)),
            Err(err) => {
                eprintln!("{}: no ViSQOL: {err:#}", recording.display());
                None
            }
        }
    });
    Ok(CallResult {
        scenario: scenario.name.clone(),
        peer,
        seed,
        recording,
        mouth_to_ear_ms,
        correlation: alignment.map(|a| round(a.correlation, 3)),
        loss_percent: measured.loss_percent,
        concealed_percent: measured.concealed_percent,
        jitter_buffer_ms: measured.jitter_buffer_ms,
        setup_ms: measured.setup_ms,
        bitrate_kbps: measured.bitrate_kbps,
        final_bitrate_bps: measured.final_bitrate_bps,
        fec_loss_percent: measured.fec_loss_percent,
        r: rating.map(|r| round(r.r, 1)),
        mos: rating.map(|r| round(r.mos(), 2)),
        video: None,
        pesq_wb: scores.pesq_wb,
        pesq_nb: scores.pesq_nb,
        stoi: scores.stoi,
        visqol,
        received: measured.received,
        caller_timeline: measured.caller_timeline,
        callee_timeline: measured.callee_timeline,
        relay: relay.unwrap_or_default(),
    })
}

#[derive(Debug, Default, serde::Deserialize)]
struct PythonScores {
    pesq_wb: Option<f64>,
    pesq_nb: Option<f64>,
    stoi: Option<f64>,
}

fn python_scores(
    python: &Path,
    script: &Path,
    reference: &Path,
    recording: &Path,
    lag: usize,
) -> anyhow::Result<PythonScores> {
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(reference)
        .arg(recording)
        .arg(lag.to_string())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the scores")
}

/// Reads a 48 kHz mono 16-bit WAV file (the reference files and recordings are).
pub fn read_wav(path: &Path) -> anyhow::Result<Vec<i16>> {
    Ok(sotto_engine::audio::wav::read_48k_mono(path)?)
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// One record of results.json: a scenario, a seed, a metric and its value.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The scenario.
    pub scenario: String,
    /// Whose stack.
    pub peer: Peer,
    /// The seed.
    pub seed: u64,
    /// The metric's name.
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
}

impl CallResult {
    /// The result as one record per metric.
    pub fn records(&self) -> Vec<Record> {
        let counted = |n: u64| Some(n as f64);
        let metrics: [(&'static str, Option<f64>); 22] = [
            ("pesq_wb", self.pesq_wb),
            ("pesq_nb", self.pesq_nb),
            ("stoi", self.stoi),
            ("visqol", self.visqol),
            ("mouth_to_ear_ms", self.mouth_to_ear_ms),
            ("emodel_r", self.r),
            ("emodel_mos", self.mos),
            ("loss_percent", Some(self.loss_percent)),
            ("concealed_percent", Some(self.concealed_percent)),
            ("jitter_buffer_ms", Some(self.jitter_buffer_ms)),
            ("setup_ms", self.setup_ms),
            ("bitrate_kbps", Some(self.bitrate_kbps)),
            ("correlation", self.correlation),
            ("fec_frames", counted(self.received.fec_frames)),
            ("plc_frames", counted(self.received.plc_frames)),
            ("expanded_frames", counted(self.received.expanded)),
            ("accelerated_frames", counted(self.received.accelerated)),
            ("shortened_ms", Some(self.received.shortened_ms)),
            ("lengthened_ms", Some(self.received.lengthened_ms)),
            ("path_changes", counted(self.received.path_changes)),
            ("red_recovered_frames", counted(self.received.red_recovered)),
            ("dred_rebuilt_frames", counted(self.received.dred_rebuilt)),
        ];
        let video = self.video.as_ref();
        let got = video.map(|v| &v.received);
        let video_metrics: [(&'static str, Option<f64>); 9] = [
            ("video_fps", got.map(|v| v.fps)),
            ("video_freezes", got.map(|v| v.freezes as f64)),
            ("video_freeze_ms", got.map(|v| v.freeze_ms)),
            (
                "video_layer_switches",
                got.map(|v| v.resolution_changes as f64),
            ),
            ("video_delay_p50_ms", got.and_then(|v| v.delay_p50_ms)),
            ("video_delay_p95_ms", got.and_then(|v| v.delay_p95_ms)),
            ("video_psnr", video.and_then(|v| v.quality.psnr)),
            ("video_ssim", video.and_then(|v| v.quality.ssim)),
            ("video_kbps", video.map(|v| v.sent_kbps)),
        ];
        metrics
            .into_iter()
            .chain(video_metrics)
            .filter_map(|(metric, value)| {
                value.map(|value| Record {
                    scenario: self.scenario.clone(),
                    peer: self.peer,
                    seed: self.seed,
                    metric,
                    value,
                })
            })
            .collect()
    }
}

/// A call that never connected (as against one that connected and then failed), so the
/// report can count setup failures apart from other errors.
#[derive(Debug, thiserror::Error)]
#[error("the call did not connect: {0}")]
pub struct NotConnected(pub String);

/// One call the bench tried, scored or not: the rows of the setup table.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The scenario (with the group suffix for group calls).
    pub scenario: String,
    /// Whose stack.
    pub peer: Peer,
    /// The seed.
    pub seed: u64,
    /// Whether it connected (a call that connected and then failed counts as connected).
    pub connected: bool,
    /// What went wrong, if anything did.
    pub error: Option<String>,
}

impl Attempt {
    /// What became of one try: `error` is `None` for a scored call.
    pub fn new(scenario: &str, peer: Peer, seed: u64, error: Option<&anyhow::Error>) -> Attempt {
        Attempt {
            scenario: scenario.to_owned(),
            peer,
            seed,
            connected: error.is_none_or(|e| e.downcast_ref::<NotConnected>().is_none()),
            error: error.map(|e| format!("{e:#}")),
        }
    }
}

/// The setup table: per scenario and peer, the calls tried, those that never connected,
/// those that failed later, and the setup time (placing the call until both ends say
/// connected) over the calls that were scored.
pub fn setup_markdown(attempts: &[Attempt], results: &[CallResult]) -> String {
    let mut text = String::from(
        "| scenario | peer | calls | never connected | failed after connecting | \
         setup p50 ms | setup p95 ms | setup max ms |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (name, peer) in rows(attempts.iter().map(|a| (a.scenario.as_str(), a.peer))) {
        let tried: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| a.scenario == name && a.peer == peer)
            .collect();
        let never = tried.iter().filter(|a| !a.connected).count();
        let later = tried
            .iter()
            .filter(|a| a.connected && a.error.is_some())
            .count();
        let mut setups: Vec<f64> = results
            .iter()
            .filter(|r| r.scenario == name && r.peer == peer)
            .filter_map(|r| r.setup_ms)
            .collect();
        setups.sort_by(f64::total_cmp);
        let at = |q: f64| nearest_rank(&setups, q).map_or("–".into(), |v| format!("{v:.0}"));
        text.push_str(&format!(
            "| {name} | {} | {} | {never} | {later} | {} | {} | {} |\n",
            peer.name(),
            tried.len(),
            at(0.5),
            at(0.95),
            at(1.0),
        ));
    }
    text
}

/// A report's rows: each scenario and peer once, in the order they first ran.
fn rows<'a>(runs: impl Iterator<Item = (&'a str, Peer)>) -> Vec<(&'a str, Peer)> {
    let mut rows = Vec::new();
    for row in runs {
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows
}

/// The `q` quantile of `sorted` by nearest rank (`None` when empty).
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// The report: per scenario and peer, the mean of each metric over the seeds (and a
/// second table for video, when the run had any).
pub fn report_markdown(results: &[CallResult]) -> String {
    let mut text = table(
        results,
        &[
            ("pesq_wb", "PESQ-WB"),
            ("pesq_nb", "PESQ-NB"),
            ("stoi", "STOI"),
            ("visqol", "ViSQOL"),
            ("mouth_to_ear_ms", "mouth-to-ear ms"),
            ("emodel_mos", "E-model MOS"),
            ("loss_percent", "loss %"),
            ("concealed_percent", "concealed %"),
            ("jitter_buffer_ms", "jitter buffer ms"),
            ("bitrate_kbps", "kbit/s"),
        ],
    );
    if results.iter().any(|r| r.video.is_some()) {
        text.push_str("\nVideo (the speaker's test pattern as each listener saw it):\n\n");
        text.push_str(&table(
            results,
            &[
                ("video_fps", "fps"),
                ("video_freezes", "freezes"),
                ("video_freeze_ms", "frozen ms"),
                ("video_layer_switches", "layer switches"),
                ("video_psnr", "PSNR dB"),
                ("video_ssim", "SSIM"),
                ("video_delay_p50_ms", "delay p50 ms"),
                ("video_delay_p95_ms", "delay p95 ms"),
                ("video_kbps", "sent kbit/s"),
            ],
        ));
    }
    text
}

/// One table: per scenario and peer, the mean of each of `columns` over the seeds.
fn table(results: &[CallResult], columns: &[(&str, &str)]) -> String {
    let mut text = String::from("| scenario | peer | seeds |");
    for (_, title) in columns {
        text.push_str(&format!(" {title} |"));
    }
    text.push_str("\n|---|---|---|");
    text.push_str(&"---|".repeat(columns.len()));
    text.push('\n');
    for (name, peer) in rows(results.iter().map(|r| (r.scenario.as_str(), r.peer))) {
        let runs: Vec<&CallResult> = results
            .iter()
            .filter(|r| r.scenario == name && r.peer == peer)
            .collect();
        text.push_str(&format!("| {name} | {} | {} |", peer.name(), runs.len()));
        let records: Vec<Record> = runs.iter().flat_map(|r| r.records()).collect();
        for (metric, _) in columns {
            let values: Vec<f64> = records
                .iter()
                .filter(|r| r.metric == *metric)
                .map(|r| r.value)
                .collect();
            if values.is_empty() {
                text.push_str(" – |");
            } else {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                text.push_str(&format!(" {mean:.2} |"));
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_rows_count_calls_that_never_connected_apart_from_later_failures() {
        let never: anyhow::Error = NotConnected("loss-20: no media path within 20s".into()).into();
        let later = anyhow::anyhow!("loss-20: no recording");
        let attempts = [
            Attempt::new("loss-20", Peer::Sotto, 1, None),
            Attempt::new("loss-20", Peer::Sotto, 2, Some(&never)),
            Attempt::new("loss-20", Peer::Sotto, 3, Some(&later)),
            Attempt::new("loss-20", Peer::Chromium, 1, None),
        ];
        assert!(!attempts[1].connected);
        assert!(attempts[2].connected);
        let table = setup_markdown(&attempts, &[]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| loss-20 | sotto | 3 | 1 | 1 | – | – | – |",
                "| loss-20 | chromium | 1 | 0 | 0 | – | – | – |",
            ]
        );
    }

    #[test]
    fn setup_quantiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 0.5), Some(10.0));
        assert_eq!(nearest_rank(&sorted, 0.95), Some(19.0));
        assert_eq!(nearest_rank(&sorted, 1.0), Some(20.0));
        assert_eq!(nearest_rank(&[7.0], 0.95), Some(7.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }
}
